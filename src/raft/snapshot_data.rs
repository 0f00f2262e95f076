//! The bytes of a state-machine snapshot, and their checksum.
//!
//! ```text
//! [magic: 0xff "VIGSNP1"] [crc32 of the contents: u32 LE] [contents: bincode of every engine key and value]
//! ```
//!
//! A snapshot replaces a follower's whole state, so a damaged one must never be installed: a flipped bit in a
//! value would decode fine and silently become a wrong secret on that node. The checksum is checked twice on a
//! follower: by the cluster transport as the chunks arrive ([`SnapshotCheck`]), which refuses a damaged snapshot
//! before openraft sees its last chunk — openraft treats a failed install as a storage failure and stops the node,
//! and the leader would send the same bytes again after a restart — and once more when the state machine decodes
//! it. Snapshots written before the checksum existed (plain bincode) are still read; their first byte is never
//! 0xff, which bincode's variable-length integers do not use.

use serde::{Deserialize, Serialize};

use super::codec;
use crate::storage::{KeyValue, StorageError};

/// The first bytes of checksummed snapshot data.
const MAGIC: [u8; 8] = *b"\xffVIGSNP1";
/// Magic and checksum.
const HEADER_BYTES: usize = MAGIC.len() + 4;

/// The serialized form of a snapshot's contents: every engine key and value.
#[derive(Serialize, Deserialize)]
struct Contents {
    #[serde(with = "codec::byte_pairs")]
    entries: Vec<KeyValue>,
}

/// Encodes `entries` as snapshot data, checksummed.
pub fn encode(entries: Vec<KeyValue>) -> Result<Vec<u8>, StorageError> {
    let contents = codec::encode(&Contents { entries })?;
    let mut data = Vec::with_capacity(HEADER_BYTES + contents.len());
    data.extend_from_slice(&MAGIC);
    data.extend_from_slice(&crc32fast::hash(&contents).to_le_bytes());
    data.extend_from_slice(&contents);
    Ok(data)
}

/// Decodes snapshot data, refusing it if its checksum does not match.
pub fn decode(data: &[u8]) -> Result<Vec<KeyValue>, StorageError> {
    let contents = match data.strip_prefix(&MAGIC) {
        Some(rest) => {
            let (checksum, contents) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| StorageError("the snapshot data ends inside its header".into()))?;
            verify(u32::from_le_bytes(*checksum), crc32fast::hash(contents))?;
            contents
        }
        None => data, // written before snapshots had a checksum
    };
    Ok(codec::decode::<Contents>(contents)?.entries)
}

fn verify(expected: u32, actual: u32) -> Result<(), StorageError> {
    if expected == actual {
        Ok(())
    } else {
        Err(StorageError(format!(
            "the snapshot data is damaged: its checksum is {actual:08x}, its header says {expected:08x}"
        )))
    }
}

/// Checks the checksum of snapshot data that arrives in chunks, as openraft sends it: in order, each chunk at the
/// offset where the previous one ended, a chunk sent again after a failed attempt at an offset already seen, and a
/// new attempt starting over at offset 0. Holds the header and a running checksum, not the data.
#[derive(Default)]
pub struct SnapshotCheck {
    /// The snapshot being received, if it was followed from its first byte.
    receiving: Option<Receiving>,
}

struct Receiving {
    id: String,
    /// Bytes seen so far (from offset 0, without gaps).
    seen: u64,
    /// The first [`HEADER_BYTES`] bytes, as far as they have arrived.
    header: Vec<u8>,
    hasher: crc32fast::Hasher,
}

/// What [`SnapshotCheck::chunk`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not the last chunk, or the data can be passed on.
    Pass,
    /// The whole snapshot arrived and its checksum does not match: the last chunk must not reach Raft.
    Damaged(String),
}

impl SnapshotCheck {
    /// Follows one chunk of snapshot `id` at `offset`; `last` marks the final one.
    pub fn chunk(&mut self, id: &str, offset: u64, data: &[u8], last: bool) -> Verdict {
        if offset == 0 {
            self.receiving = Some(Receiving {
                id: id.to_owned(),
                seen: 0,
                header: Vec::with_capacity(HEADER_BYTES),
                hasher: crc32fast::Hasher::new(),
            });
        }
        let Some(receiving) = self.receiving.as_mut().filter(|receiving| receiving.id == id) else {
            // Not followed from its start (openraft refuses a stream that does not begin at 0 itself).
            return Verdict::Pass;
        };
        if offset > receiving.seen {
            // A gap: openraft refuses it; nothing can be checked for this attempt.
            self.receiving = None;
            return Verdict::Pass;
        }
        // Skip what was seen already (a chunk sent again), follow the rest.
        let skip = usize::try_from(receiving.seen - offset).unwrap_or(usize::MAX).min(data.len());
        receiving.follow(&data[skip..]);
        if !last {
            return Verdict::Pass;
        }
        let verdict = receiving.verdict();
        if verdict == Verdict::Pass {
            self.receiving = None;
        }
        // A damaged snapshot stays followed, so the same last chunk sent again is refused again.
        verdict
    }
}

impl Receiving {
    fn follow(&mut self, mut bytes: &[u8]) {
        self.seen += bytes.len() as u64;
        if self.header.len() < HEADER_BYTES {
            let take = (HEADER_BYTES - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        if self.header.starts_with(&MAGIC) {
            self.hasher.update(bytes);
        }
    }

    fn verdict(&self) -> Verdict {
        let Some(checksum) = self.header.strip_prefix(&MAGIC) else {
            // Older data without a checksum, or too short to have one: the state machine's decoding judges it.
            return Verdict::Pass;
        };
        let Ok(checksum) = <[u8; 4]>::try_from(checksum) else {
            return Verdict::Damaged("the snapshot data ends inside its header".into());
        };
        match verify(u32::from_le_bytes(checksum), self.hasher.clone().finalize()) {
            Ok(()) => Verdict::Pass,
            Err(e) => Verdict::Damaged(e.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<KeyValue> {
        (0..200u32).map(|i| (format!("kv/key-{i}").into_bytes(), vec![i as u8; 40 + i as usize % 13])).collect()
    }

    /// Feeds `data` to a fresh check in chunks of `size`; the verdict of the last chunk.
    fn send(check: &mut SnapshotCheck, id: &str, data: &[u8], size: usize) -> Verdict {
        let chunks: Vec<&[u8]> = data.chunks(size).collect();
        let mut verdict = Verdict::Pass;
        for (n, chunk) in chunks.iter().enumerate() {
            let last = n + 1 == chunks.len();
            verdict = check.chunk(id, (n * size) as u64, chunk, last);
            if !last {
                assert_eq!(verdict, Verdict::Pass, "only the last chunk gets a verdict");
            }
        }
        verdict
    }

    #[test]
    fn data_round_trips_and_older_data_without_a_checksum_still_decodes() {
        let data = encode(entries()).expect("encode");
        assert!(data.starts_with(&MAGIC));
        assert_eq!(decode(&data).expect("decode"), entries());
        let plain = codec::encode(&Contents { entries: entries() }).expect("encode");
        assert_eq!(decode(&plain).expect("decode older data"), entries());
    }

    #[test]
    fn any_flipped_bit_or_cut_is_refused_when_decoded() {
        let data = encode(entries()).expect("encode");
        for at in [MAGIC.len(), MAGIC.len() + 3, HEADER_BYTES, data.len() / 2, data.len() - 1] {
            let mut damaged = data.clone();
            damaged[at] ^= 0x10;
            let err = decode(&damaged).expect_err("a flipped bit must be refused");
            assert!(err.0.contains("damaged"), "byte {at}: {err}");
        }
        assert!(decode(&data[..data.len() - 1]).expect_err("cut").0.contains("damaged"));
        assert!(decode(&data[..MAGIC.len() + 2]).expect_err("cut in the header").0.contains("header"));
    }

    #[test]
    fn chunks_of_intact_data_pass_whatever_their_size() {
        let data = encode(entries()).expect("encode");
        for size in [1, 5, HEADER_BYTES, 1000, data.len()] {
            let mut check = SnapshotCheck::default();
            assert_eq!(send(&mut check, "s1", &data, size), Verdict::Pass, "chunks of {size}");
            assert!(check.receiving.is_none(), "a passed snapshot is forgotten");
        }
        // Older data without a checksum is left to the state machine's decoding.
        let plain = codec::encode(&Contents { entries: entries() }).expect("encode");
        assert_eq!(send(&mut SnapshotCheck::default(), "s0", &plain, 700), Verdict::Pass);
    }

    #[test]
    fn damaged_data_is_refused_at_its_last_chunk_again_and_again_until_a_new_attempt() {
        let data = encode(entries()).expect("encode");
        let mut damaged = data.clone();
        damaged[data.len() / 3] ^= 1;
        let mut check = SnapshotCheck::default();
        let Verdict::Damaged(why) = send(&mut check, "s1", &damaged, 1000) else { panic!("damage passed") };
        assert!(why.contains("checksum"), "{why}");

        // openraft sends a failed chunk again: still refused, and the earlier chunks are not counted twice.
        let last_offset = (damaged.len() - 1) / 1000 * 1000;
        let again = check.chunk("s1", last_offset as u64, &damaged[last_offset..], true);
        assert!(matches!(again, Verdict::Damaged(_)));
        let resent = check.chunk("s1", 0, &damaged[..1000], false);
        assert_eq!(resent, Verdict::Pass, "offset 0 starts over");
        // A new attempt (or a new snapshot) with intact data passes.
        assert_eq!(send(&mut check, "s1", &data, 1000), Verdict::Pass);
        assert_eq!(send(&mut check, "s2", &data, 333), Verdict::Pass);
    }

    #[test]
    fn a_chunk_sent_again_is_not_counted_twice_and_gaps_or_strangers_are_not_judged() {
        let data = encode(entries()).expect("encode");
        let mut check = SnapshotCheck::default();
        assert_eq!(check.chunk("s1", 0, &data[..500], false), Verdict::Pass);
        assert_eq!(check.chunk("s1", 0, &data[..500], false), Verdict::Pass);
        assert_eq!(check.chunk("s1", 500, &data[500..900], false), Verdict::Pass);
        // Overlapping a seen range: only the new part is followed.
        assert_eq!(check.chunk("s1", 800, &data[800..], true), Verdict::Pass);

        // A chunk of another snapshot, or one after a gap, is not judged (openraft refuses those itself).
        let mut damaged = data.clone();
        damaged[HEADER_BYTES + 1] ^= 1;
        let mut check = SnapshotCheck::default();
        assert_eq!(check.chunk("s1", 0, &damaged[..500], false), Verdict::Pass);
        assert_eq!(check.chunk("s9", 500, &damaged[500..], true), Verdict::Pass);
        assert_eq!(check.chunk("s1", 900, &damaged[900..], true), Verdict::Pass);
        assert!(check.receiving.is_none());
    }
}
