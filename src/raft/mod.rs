//! The Raft layer: openraft 0.9 wired to our storage, our transport and our state-machine contract.
//!
//! What a log entry carries is a [`RaftRequest`]: a *batch* of opaque commands (group commit: one entry, one fsync,
//! many client writes), stamped by the leader that accepted it with its wall-clock time and its node name. Raft does
//! not know what a command means; the engines layer does, through the [`CommandApplier`] trait. That keeps the
//! state-machine contract small and explicit:
//!
//! 1. **Deterministic apply.** A command's effect depends only on the command bytes, the [`ApplyContext`] (log id,
//!    leader time, leader name, position in the batch) and the state before it. Nothing reads the local clock or
//!    random numbers at apply; the leader stamps them into the entry.
//! 2. **Atomic apply.** All writes of one `apply` call plus the last-applied log id and membership go to storage in
//!    one atomic batch ([`StateTxn`]), so a crash replays cleanly from the log.
//! 3. **Deterministic failures are answers, storage failures stop the node.** A command that is invalid for the
//!    current state returns an error *output* (the same on every node); a storage error is returned to openraft,
//!    which stops the node rather than letting replicas diverge.
//!
//! Submodules: [`log_store`] (the durable log), [`state_machine`], [`network`] (cluster transport client),
//! [`transport`] (cluster transport server), [`proposer`] (group commit) and [`node`] (one node's Raft handle).

// openraft's `StorageError` is large (224 bytes) and its traits dictate it as our error type, so the lint that
// asks to box it does not apply to this layer.
#![allow(clippy::result_large_err)]

pub mod log_store;
pub mod network;
pub mod node;
pub mod proposer;
pub mod snapshot_data;
pub mod snapshot_schedule;
pub mod state_machine;
pub mod transport;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Cursor;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

pub use node::{RaftNode, RaftSettings, Role};
pub use proposer::{Applied, ProposeError};
pub use state_machine::{CommandApplier, StateTxn};

use crate::storage::{KeyValue, Keyspace, Storage, StorageError};

/// Raft node ids are a stable 64-bit hash of the node's configured name (`storage "raft" { node_id = ... }`).
///
/// openraft 0.9 requires `Copy` node ids, so the human-readable name travels in [`NodeInfo`] and the id is derived
/// from it; two names colliding in 64 bits is not a practical concern, and join rejects it anyway.
pub type NodeId = u64;

/// Derives the Raft node id from a node name (FNV-1a, 64 bit: stable across versions and platforms).
pub fn node_id_of(name: &str) -> NodeId {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// What the cluster knows about a member: stored in the Raft membership config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The configured node name, e.g. `node1` (shown as `node_id` in Vault's API).
    pub name: String,
    /// The member's API URL, e.g. `http://127.0.0.1:8200` (where writes are forwarded).
    pub api_addr: String,
    /// The member's cluster URL, e.g. `http://127.0.0.1:8201` (where Raft RPCs go).
    pub cluster_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(api={}, cluster={})", self.name, self.api_addr, self.cluster_addr)
    }
}

/// The application data of one Raft log entry: a batch of commands accepted by one leader at one instant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RaftRequest {
    /// The accepting leader's wall clock, nanoseconds since the Unix epoch.
    pub time_unix_nanos: i64,
    /// The accepting leader's node name (becomes an event's `source`).
    pub proposer: String,
    /// Encoded commands; their meaning belongs to the [`CommandApplier`].
    #[serde(with = "codec::bytes_list")]
    pub commands: Vec<Vec<u8>>,
}

/// The result of applying one log entry: one output per command, in order (empty for blank and membership entries).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RaftResponse {
    /// Encoded per-command outputs.
    #[serde(with = "codec::bytes_list")]
    pub outputs: Vec<Vec<u8>>,
}

openraft::declare_raft_types!(
    /// openraft's type configuration for Vigil.
    pub TypeConfig:
        D = RaftRequest,
        R = RaftResponse,
        NodeId = NodeId,
        Node = NodeInfo,
);

/// The openraft instance type.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<NodeId>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// Snapshot data as openraft streams it.
pub type SnapshotData = Cursor<Vec<u8>>;
/// Membership as stored with the state machine.
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
/// openraft's storage error.
pub type RaftStorageError = openraft::StorageError<NodeId>;

/// Errors of the Raft layer that callers see.
#[derive(Debug, thiserror::Error)]
pub enum RaftLayerError {
    /// The local storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// openraft refused or failed an operation.
    #[error("raft: {0}")]
    Raft(String),
    /// The node is not part of an initialized cluster.
    #[error("{0}")]
    NotInitialized(String),
    /// A request was invalid (for example joining with a name already in use).
    #[error("{0}")]
    Invalid(String),
    /// An operation needed the leader and this node is not it.
    #[error("not the active node")]
    NotLeader,
    /// A bounded wait ran out.
    #[error("{0}")]
    Timeout(String),
}

/// bincode encoding shared by the log, the state machine, snapshots and the transport.
pub mod codec {
    use super::*;

    /// Encodes `value` with bincode's standard configuration.
    pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
        bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(StorageError::new)
    }

    /// Decodes a complete bincode value; trailing bytes are an error.
    ///
    /// Safe on hostile input (Raft RPC bodies come from the network): bincode allocates a string's or byte
    /// buffer's whole claimed length before it reads the bytes, so without a limit ten bytes claiming a 2^40-byte
    /// string abort the process when that allocation fails. bincode counts, against its limit, every byte buffer's
    /// length and every number at its in-memory size — a `u64` or a length prefix counts 8 bytes however few its
    /// varint takes (a `u128`, the widest, 16 from 1 byte) — so a valid input counts at most [`CLAIM_PER_BYTE`]
    /// times its own size. The limit is a type parameter: the smallest of a few tiers that holds the input, times
    /// that factor, so nothing valid is refused and a malformed input never makes the decoder reserve more than
    /// 256 times its size. (The limit used to be the input's size itself, which refused valid values made of many
    /// small parts just below a tier: a 60 KB snapshot of ~500 keys counted more than 64 KiB.)
    pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
        const KIB_64: usize = 1 << 16;
        const MIB_1: usize = 1 << 20;
        const MIB_16: usize = 1 << 24;
        const MIB_256: usize = 1 << 28;
        let decoded = match bytes.len() {
            n if n <= KIB_64 => decode_within::<T, { KIB_64.saturating_mul(CLAIM_PER_BYTE) }>(bytes),
            n if n <= MIB_1 => decode_within::<T, { MIB_1.saturating_mul(CLAIM_PER_BYTE) }>(bytes),
            n if n <= MIB_16 => decode_within::<T, { MIB_16.saturating_mul(CLAIM_PER_BYTE) }>(bytes),
            n if n <= MIB_256 => decode_within::<T, { MIB_256.saturating_mul(CLAIM_PER_BYTE) }>(bytes),
            _ => decode_within::<T, LARGEST_VALUE>(bytes),
        };
        let (value, read) = decoded.map_err(|e| match e {
            bincode::error::DecodeError::LimitExceeded => {
                StorageError("a length prefix claims more bytes than the input holds".into())
            }
            e => StorageError::new(e),
        })?;
        if read != bytes.len() {
            return Err(StorageError(format!("{} trailing bytes after value", bytes.len() - read)));
        }
        Ok(value)
    }

    /// The most bytes bincode counts against its limit per input byte of a valid value (a `u128` in one byte).
    pub const CLAIM_PER_BYTE: usize = 16;

    /// The limit for inputs larger than 256 MiB, which only local snapshots reach (RPC bodies are capped at 64 MiB).
    const LARGEST_VALUE: usize = if usize::BITS >= 64 { (1u64 << 40) as usize } else { usize::MAX };

    fn decode_within<T: DeserializeOwned, const LIMIT: usize>(
        bytes: &[u8],
    ) -> Result<(T, usize), bincode::error::DecodeError> {
        bincode::serde::decode_from_slice(bytes, bincode::config::standard().with_limit::<LIMIT>())
    }

    /// serde `with` modules for byte buffers, so bincode copies them whole.
    ///
    /// serde treats a plain `Vec<u8>` as a sequence of numbers: bincode then encodes and decodes it one byte at a
    /// time, each byte a call and a `Result` (a few percent of a loaded node's CPU went to the commands and values
    /// of log entries, and whole snapshots were decoded that way). As bytes the encoding is the same — a length,
    /// then the bytes, since bincode writes a `u8` as one byte — so data written before reads back unchanged.
    pub mod bytes {
        use std::fmt;

        use serde::de::{SeqAccess, Visitor};
        use serde::{Deserializer, Serializer};

        /// Serializes a byte buffer as bytes.
        pub fn serialize<S: Serializer>(value: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(value)
        }

        /// Deserializes a byte buffer from bytes (or, from a format without them, a sequence of numbers).
        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
            deserializer.deserialize_byte_buf(ByteBuf)
        }

        /// A byte buffer that serializes as bytes, for the lists below.
        #[derive(serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub(super) struct Buf(#[serde(with = "self")] pub(super) Vec<u8>);

        /// A borrowed byte buffer that serializes as bytes.
        #[derive(serde::Serialize)]
        #[serde(transparent)]
        pub(super) struct Slice<'a>(#[serde(with = "self")] pub(super) &'a [u8]);

        struct ByteBuf;

        impl<'de> Visitor<'de> for ByteBuf {
            type Value = Vec<u8>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("bytes")
            }

            fn visit_bytes<E: serde::de::Error>(self, value: &[u8]) -> Result<Vec<u8>, E> {
                Ok(value.to_vec())
            }

            fn visit_byte_buf<E: serde::de::Error>(self, value: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(value)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(byte) = seq.next_element()? {
                    bytes.push(byte);
                }
                Ok(bytes)
            }
        }
    }

    /// serde `with` module for a list of byte buffers, each as bytes (see [`bytes`]).
    pub mod bytes_list {
        use serde::{Deserialize, Deserializer, Serializer};

        use super::bytes::{Buf, Slice};

        pub fn serialize<S: Serializer>(value: &[Vec<u8>], serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_seq(value.iter().map(|item| Slice(item)))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Vec<u8>>, D::Error> {
            Ok(Vec::<Buf>::deserialize(deserializer)?.into_iter().map(|Buf(item)| item).collect())
        }
    }

    /// serde `with` module for a list of key-value pairs of byte buffers, each as bytes (see [`bytes`]).
    pub mod byte_pairs {
        use serde::{Deserialize, Deserializer, Serializer};

        use super::bytes::{Buf, Slice};
        use crate::storage::KeyValue;

        pub fn serialize<S: Serializer>(value: &[KeyValue], serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_seq(value.iter().map(|(key, value)| (Slice(key), Slice(value))))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<KeyValue>, D::Error> {
            let pairs = Vec::<(Buf, Buf)>::deserialize(deserializer)?;
            Ok(pairs.into_iter().map(|(Buf(key), Buf(value))| (key, value)).collect())
        }
    }
}

/// Read access to the applied state, for engines serving reads on any node.
#[derive(Clone)]
pub struct StateReader {
    storage: std::sync::Arc<dyn Storage>,
}

impl StateReader {
    /// A reader over `storage`'s state keyspace.
    pub fn new(storage: std::sync::Arc<dyn Storage>) -> Self {
        StateReader { storage }
    }

    /// Reads one key of the applied state.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.storage.get(Keyspace::State, key)
    }

    /// Reads one key of the applied state decoded by `decode`, through the storage's
    /// [`crate::storage::ReadCache`]: for the records most requests read (tokens, mounts, policies).
    pub fn get_decoded<T, E>(&self, key: &[u8], decode: impl FnOnce(&[u8]) -> Result<T, E>) -> Result<Option<T>, E>
    where
        T: Clone + Send + Sync + 'static,
        E: From<StorageError>,
    {
        get_decoded(self.storage.as_ref(), key, decode)
    }

    /// Lists the applied state's entries under `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StorageError> {
        self.storage.scan_prefix(Keyspace::State, prefix).collect()
    }

    /// The entries under `prefix` decoded by `decode` as one value, through the storage's
    /// [`crate::storage::ReadCache`]: for small tables every request consults (the mount table).
    pub fn scan_decoded<T, E>(&self, prefix: &[u8], decode: impl FnOnce(Vec<KeyValue>) -> Result<T, E>) -> Result<T, E>
    where
        T: Clone + Send + Sync + 'static,
        E: From<StorageError>,
    {
        self.storage.read_cache().get_or_load_scan(prefix, || decode(self.scan_prefix(prefix)?))
    }
}

/// [`StateReader::get_decoded`] on any storage.
pub(crate) fn get_decoded<T, E>(
    storage: &dyn Storage,
    key: &[u8],
    decode: impl FnOnce(&[u8]) -> Result<T, E>,
) -> Result<Option<T>, E>
where
    T: Clone + Send + Sync + 'static,
    E: From<StorageError>,
{
    storage.read_cache().get_or_load(key, || storage.get(Keyspace::State, key)?.map(|bytes| decode(&bytes)).transpose())
}

/// Helper for the rare places that need a `BTreeMap` of members.
pub(crate) fn single_member(id: NodeId, info: NodeInfo) -> BTreeMap<NodeId, NodeInfo> {
    let mut members = BTreeMap::new();
    members.insert(id, info);
    members
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_decodes_values_of_many_small_parts_just_below_a_limit_tier() {
        // What a small snapshot is: ~3,000 tiny key/value pairs, just under 64 KiB encoded. bincode counts each
        // length prefix as 8 bytes, so this counts ~100 KiB against its limit.
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..3_000u32).map(|i| (i.to_be_bytes().to_vec(), vec![7; 15])).collect();
        let bytes = codec::encode(&pairs).expect("encode");
        assert!(bytes.len() > 60_000 && bytes.len() <= 1 << 16, "{} bytes", bytes.len());
        assert_eq!(codec::decode::<Vec<(Vec<u8>, Vec<u8>)>>(&bytes).expect("decode"), pairs);
        // Numbers count at their in-memory size: 8 bytes for a one-byte varint.
        let numbers: Vec<u64> = vec![1; 65_000];
        let bytes = codec::encode(&numbers).expect("encode");
        assert!(bytes.len() <= 1 << 16);
        assert_eq!(codec::decode::<Vec<u64>>(&bytes).expect("decode"), numbers);
    }

    #[test]
    fn byte_buffers_encode_as_before_and_data_written_before_reads_back() {
        // The same fields as plain `Vec<u8>`s, as versions before the `bytes` modules wrote them.
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Plain {
            one: Vec<u8>,
            list: Vec<Vec<u8>>,
            pairs: Vec<(Vec<u8>, Vec<u8>)>,
        }
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct AsBytes {
            #[serde(with = "codec::bytes")]
            one: Vec<u8>,
            #[serde(with = "codec::bytes_list")]
            list: Vec<Vec<u8>>,
            #[serde(with = "codec::byte_pairs")]
            pairs: Vec<(Vec<u8>, Vec<u8>)>,
        }
        let long: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let plain = Plain {
            one: long.clone(),
            list: vec![vec![], vec![0xff; 3], long.clone()],
            pairs: vec![(b"k".to_vec(), long.clone()), (vec![], vec![251, 252, 253, 254, 255])],
        };
        let as_bytes = AsBytes { one: plain.one.clone(), list: plain.list.clone(), pairs: plain.pairs.clone() };
        let encoded = codec::encode(&plain).expect("encode");
        assert_eq!(codec::encode(&as_bytes).expect("encode"), encoded, "the same bytes on disk and on the wire");
        assert_eq!(codec::decode::<AsBytes>(&encoded).expect("decode"), as_bytes);
        // Text formats without bytes hand over sequences of numbers, which read back too.
        let json = serde_json::to_string(&as_bytes).expect("json");
        assert_eq!(serde_json::from_str::<AsBytes>(&json).expect("from json"), as_bytes);
    }

    #[test]
    fn node_ids_are_stable_and_distinct() {
        // FNV-1a 64 of "" is the offset basis; pinned so a code change cannot silently renumber a cluster.
        assert_eq!(node_id_of(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(node_id_of("node1"), node_id_of("node1"));
        assert_ne!(node_id_of("node1"), node_id_of("node2"));
    }

    #[test]
    fn codec_rejects_trailing_bytes() {
        let mut bytes = codec::encode(&RaftResponse { outputs: vec![vec![1, 2]] }).expect("encode");
        let back: RaftResponse = codec::decode(&bytes).expect("decode");
        assert_eq!(back.outputs, vec![vec![1, 2]]);
        bytes.push(0);
        assert!(codec::decode::<RaftResponse>(&bytes).is_err());
    }

    #[test]
    fn codec_refuses_length_claims_beyond_the_input() {
        // RaftRequest { time_unix_nanos: 0, proposer: a string claiming 2^40 (then 2^60) bytes }: before the limit
        // the first aborted the process (allocation failure), the second panicked (capacity overflow).
        for claim in [1u64 << 40, 1 << 60] {
            let bytes: Vec<u8> = [&[0u8, 0xfd][..], &claim.to_le_bytes(), b"node1"].concat();
            let error = codec::decode::<RaftRequest>(&bytes).expect_err("must not decode").to_string();
            assert!(error.contains("claims more bytes than the input holds"), "{error}");
        }
        // Values whose strings fill the whole input still decode, in every size class.
        for len in [0, 10, (1 << 16) - 8, 1 << 16, 1 << 20, (1 << 22) + 1] {
            let request = RaftRequest { time_unix_nanos: -1, proposer: "x".repeat(len), commands: vec![vec![7; len]] };
            let back: RaftRequest = codec::decode(&codec::encode(&request).expect("encode")).expect("decode");
            assert_eq!((back.proposer.len(), back.commands[0].len()), (len, len));
        }
    }
}

/// openraft's storage conformance suite, run against our log store and state machine on real sled files.
#[cfg(test)]
mod conformance {
    use std::sync::Arc;

    use openraft::testing::{StoreBuilder, Suite};

    use super::log_store::LogStore;
    use super::state_machine::{ApplyContext, StateMachine};
    use super::*;
    use crate::storage::SledStorage;

    /// Applies nothing; the suite only exercises blank and membership entries.
    struct NoCommands;

    impl CommandApplier for NoCommands {
        fn apply(&self, _: &ApplyContext<'_>, _: &[u8], _: &mut StateTxn<'_>) -> Result<Vec<u8>, StorageError> {
            Ok(Vec::new())
        }
    }

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), RaftStorageError> {
            let dir = tempfile::tempdir().map_err(|e| openraft::StorageIOError::<NodeId>::read(&e))?;
            let storage: Arc<dyn Storage> =
                Arc::new(SledStorage::open(dir.path()).map_err(|e| openraft::StorageIOError::<NodeId>::read(&e))?);
            let sm = StateMachine::open(storage.clone(), &dir.path().join("snapshots"), Arc::new(NoCommands))
                .map_err(|e| openraft::StorageIOError::<NodeId>::read(&e))?;
            let log_store = LogStore::open(&dir.path().join("raft-log"), storage)
                .map_err(|e| openraft::StorageIOError::<NodeId>::read(&e))?;
            Ok((dir, log_store, sm))
        }
    }

    #[test]
    fn openraft_storage_suite() -> Result<(), RaftStorageError> {
        Suite::test_all(Builder)
    }
}
