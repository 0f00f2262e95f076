//! An append-only log of numbered records in segment files: the on-disk form of the Raft log.
//!
//! Why files and not a B-tree: the Raft log is appended at its end, read mostly near its end, cut back at its end
//! (truncation) and dropped from its front (purge). Segment files do each of those with sequential writes, one
//! `fdatasync` per group of appends and file deletions — where sled inserted every entry into a B-tree, rewrote
//! and later deleted its pages, and made it "durable" with `sync_file_range`, which (on Linux) flushes neither the
//! disk's write cache nor the file's size, so it is not an fsync.
//!
//! Layout: `<dir>/<index of the segment's first record, 20 digits>.seg`, each file a run of records
//!
//! ```text
//! [payload length: u32 LE] [crc32 of index and payload: u32 LE] [index: u64 LE] [payload]
//! ```
//!
//! with indexes consecutive within a segment and across segments. A new segment starts when the active one has
//! grown past [`SEGMENT_BYTES`]; the full one is synced first and the new file's directory entry is synced before
//! anything in it is acknowledged, so only the last segment can ever hold unsynced bytes.
//!
//! The active segment is kept zero-filled [`PREALLOCATE_BYTES`] past its last record. Appending into bytes the file
//! already has changes no file metadata (size, extents), so the `fdatasync` after an append writes only data and
//! need not wait for a commit of the file system's journal — one journal for the whole disk, which the other
//! nodes' syncs on the same machine (and every file's metadata) share. On ext4 here that made a sync of a small
//! append ~20% faster alone and ~35% faster with three nodes syncing at once (`docs/performance.md`). Zeros are
//! written, not `fallocate`d: an allocated-but-unwritten extent still needs a journal commit on its first write.
//! A closed segment is cut back to its records. Recovery takes an all-zero tail for the end of the records.
//!
//! Recovery ([`SegmentLog::open`]) reads every record back. A short or corrupt record in the last segment is taken
//! for a write the crash tore (unsynced pages reach the disk in any order), and the log is cut there; the node
//! then gets the rest from the leader like any follower that is behind. Damage in an earlier segment — synced
//! before the next one was started — means acknowledged data is gone, and opening fails rather than hide it.
//!
//! This type does no locking and no background work: the Raft log store serializes calls and decides when to
//! [`SegmentLog::sync`]. [`SegmentLog::sync_handle`] lets it fsync without holding its lock.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{io_error, sync_dir, Result, StorageError};

/// A segment is closed and a new one started once it holds more than this many bytes.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// How far past its last record the active segment is kept zero-filled; see the module documentation.
pub const PREALLOCATE_BYTES: u64 = 1024 * 1024;
/// Bytes before a record's payload: length, checksum, index.
const HEADER_BYTES: usize = 16;
/// Largest payload accepted (a Raft entry is capped far below this by the transport).
const MAX_PAYLOAD: usize = 1 << 30;

/// One segment file.
struct Segment {
    /// Index of the segment's first record (also its file name).
    first: u64,
    file: Arc<File>,
    /// Bytes of whole records in the file.
    len: u64,
    /// The file's size: `len` bytes of records, then zeros.
    size: u64,
}

/// Where one record's payload is.
#[derive(Clone, Copy)]
struct Position {
    /// Which segment, as its first index.
    segment: u64,
    /// Offset of the payload in the segment file.
    offset: u64,
    len: u32,
}

/// The log: segments on disk and the position of every live record.
pub struct SegmentLog {
    dir: PathBuf,
    /// Oldest first; the last one is the active (written) segment.
    segments: Vec<Segment>,
    /// The index of the first live record (or of the next record, when the log is empty).
    first: u64,
    /// Positions of the live records `first..first + positions.len()`.
    positions: VecDeque<Position>,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

fn checksum(index: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&index.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Appends the encoded record to `buf`.
fn encode_record(buf: &mut Vec<u8>, index: u64, payload: &[u8]) -> Result<()> {
    if payload.len() > MAX_PAYLOAD {
        return Err(StorageError(format!("a log record of {} bytes is too large", payload.len())));
    }
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&checksum(index, payload).to_le_bytes());
    buf.extend_from_slice(&index.to_le_bytes());
    buf.extend_from_slice(payload);
    Ok(())
}

/// One record decoded from the front of `bytes`: `(index, payload range in bytes, total length)`, or `None`
/// if `bytes` does not start with a whole, intact record.
fn decode_record(bytes: &[u8]) -> Option<(u64, std::ops::Range<usize>, usize)> {
    let header = bytes.get(..HEADER_BYTES)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let index = u64::from_le_bytes(header[8..16].try_into().ok()?);
    let end = HEADER_BYTES.checked_add(len)?;
    let payload = bytes.get(HEADER_BYTES..end)?;
    (checksum(index, payload) == crc).then_some((index, HEADER_BYTES..end, end))
}

impl SegmentLog {
    /// Opens the log in `dir` (created if missing), dropping records with index `<= purged_through` and
    /// deleting segments that hold nothing else.
    pub fn open(dir: &Path, purged_through: Option<u64>) -> Result<Self> {
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, e))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let mut firsts = Vec::new();
        for item in fs::read_dir(dir).map_err(|e| io_error("cannot list", dir, e))? {
            let name = item.map_err(|e| io_error("cannot list", dir, e))?.file_name();
            if let Some(first) = name.to_string_lossy().strip_suffix(".seg").and_then(|n| n.parse::<u64>().ok()) {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();

        let first_live = purged_through.map_or(0, |p| p + 1);
        let mut log =
            SegmentLog { dir: dir.to_path_buf(), segments: Vec::new(), first: first_live, positions: VecDeque::new() };
        // The index after the previous segment's last record: the next segment must start there.
        let mut continues_at: Option<u64> = None;
        let count = firsts.len();
        for (n, first) in firsts.into_iter().enumerate() {
            let path = segment_path(dir, first);
            if continues_at.is_some_and(|at| at != first) {
                return Err(StorageError(format!("the Raft log has a gap before segment {}", path.display())));
            }
            let is_last = n + 1 == count;
            let bytes = fs::read(&path).map_err(|e| io_error("cannot read", &path, e))?;
            let mut offset = 0;
            let mut expected = first;
            // Set when the records end in a torn write (not in the zeros kept ahead of them).
            let mut torn = false;
            while offset < bytes.len() {
                let Some((index, payload, record_len)) = decode_record(&bytes[offset..]) else {
                    if bytes[offset..].iter().all(|&b| b == 0) {
                        break; // the zero-filled space after the last record
                    }
                    if !is_last {
                        return Err(StorageError(format!(
                            "the Raft log segment {} is damaged at byte {offset}, before its end: refusing to start \
                             without acknowledged entries",
                            path.display()
                        )));
                    }
                    tracing::warn!(segment = %path.display(), offset, "cutting off a torn write at the end of the Raft log");
                    torn = true;
                    break;
                };
                if index != expected {
                    return Err(StorageError(format!(
                        "the Raft log segment {} holds index {index} where {expected} belongs",
                        path.display()
                    )));
                }
                if index >= first_live {
                    if log.positions.is_empty() {
                        if purged_through.is_some() && index != first_live {
                            return Err(StorageError(format!(
                                "the Raft log continues at index {index}, not right after its purge point {}",
                                first_live - 1
                            )));
                        }
                        log.first = index;
                    }
                    let offset = (offset + payload.start) as u64;
                    log.positions.push_back(Position { segment: first, offset, len: payload.len() as u32 });
                }
                offset += record_len;
                expected += 1;
            }
            continues_at = Some(expected);
            let file =
                OpenOptions::new().read(true).write(true).open(&path).map_err(|e| io_error("cannot open", &path, e))?;
            let mut size = bytes.len() as u64;
            if torn {
                // Cut it off, so no part of it can be read as a record later.
                file.set_len(offset as u64)
                    .and_then(|_| file.sync_all())
                    .map_err(|e| io_error("cannot cut", &path, e))?;
                size = offset as u64;
            }
            // A segment with no live record is deleted: its records are purged (or it has none), and the next
            // record does not continue it.
            if expected <= first_live {
                drop(file);
                fs::remove_file(&path).map_err(|e| io_error("cannot delete", &path, e))?;
                continue;
            }
            log.segments.push(Segment { first, file: Arc::new(file), len: offset as u64, size });
        }
        if log.positions.is_empty() {
            log.first = first_live.max(continues_at.unwrap_or(0));
        }
        Ok(log)
    }

    /// The index of the first live record (the next record's index when empty).
    pub fn first_index(&self) -> u64 {
        self.first
    }

    /// The index the next appended record must have.
    pub fn next_index(&self) -> u64 {
        self.first + self.positions.len() as u64
    }

    /// Writes records in one write. They must continue the log (indexes `next_index()..`); an empty log may
    /// start anywhere. They are durable after the next [`SegmentLog::sync`] (or the sync through a
    /// [`SegmentLog::sync_handle`] taken after this call).
    pub fn append<'a>(&mut self, records: impl IntoIterator<Item = (u64, &'a [u8])>) -> Result<()> {
        let mut buf = Vec::new();
        // (offset in `buf`, length) of each buffered record's payload.
        let mut pending: Vec<(usize, u32)> = Vec::new();
        let mut records = records.into_iter().peekable();
        if let Some((index, _)) = records.peek() {
            if self.positions.is_empty() && *index != self.first {
                // The segments hold no live record, and this one does not continue them: start afresh.
                let index = *index;
                self.remove_segments_while(|_| true)?;
                self.first = index;
            }
        }
        for (next, (index, payload)) in (self.next_index()..).zip(records) {
            if index != next {
                return Err(StorageError(format!("appending index {index} to a Raft log that continues at {next}")));
            }
            // Start a new segment before a record that would take the active one past its size.
            let record_len = (HEADER_BYTES + payload.len()) as u64;
            match self.segments.last().map(|s| s.len + buf.len() as u64) {
                None => self.start_segment(index)?,
                Some(filled) if filled > 0 && filled + record_len > SEGMENT_BYTES => {
                    self.write_pending(&mut buf, &mut pending)?;
                    self.start_segment(index)?;
                }
                Some(_) => {}
            }
            let offset = buf.len() + HEADER_BYTES;
            encode_record(&mut buf, index, payload)?;
            pending.push((offset, payload.len() as u32));
        }
        self.write_pending(&mut buf, &mut pending)
    }

    /// Writes the buffered records at the end of the active segment and records their positions.
    fn write_pending(&mut self, buf: &mut Vec<u8>, pending: &mut Vec<(usize, u32)>) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let segment = self.segments.last_mut().ok_or_else(|| StorageError("the Raft log has no segment".into()))?;
        let write_error = |e| io_error("cannot write", &segment_path(&self.dir, segment.first), e);
        segment.file.write_all_at(buf, segment.len).map_err(write_error)?;
        for (offset, len) in pending.drain(..) {
            self.positions.push_back(Position { segment: segment.first, offset: segment.len + offset as u64, len });
        }
        segment.len += buf.len() as u64;
        segment.size = segment.size.max(segment.len);
        buf.clear();
        // Keep zeros ahead of the next appends: extending by a chunk once it is half used means one sync in
        // `PREALLOCATE_BYTES / 2` of log writes the zeros and the new size, and the others write only records.
        if segment.size - segment.len < PREALLOCATE_BYTES / 2 {
            let target = segment.len + PREALLOCATE_BYTES;
            let zeros = [0u8; 64 * 1024];
            while segment.size < target {
                let n = (target - segment.size).min(zeros.len() as u64) as usize;
                segment.file.write_all_at(&zeros[..n], segment.size).map_err(write_error)?;
                segment.size += n as u64;
            }
        }
        Ok(())
    }

    /// Closes the active segment (syncing it) and starts a new, empty one whose first record is `first`.
    fn start_segment(&mut self, first: u64) -> Result<()> {
        if let Some(active) = self.segments.last_mut() {
            // Cut the zeros off, so a closed segment is just its records.
            active
                .file
                .set_len(active.len)
                .and_then(|_| active.file.sync_data())
                .map_err(|e| io_error("cannot close", &segment_path(&self.dir, active.first), e))?;
            active.size = active.len;
            if active.len == 0 {
                // An empty segment never got a record: replace it rather than leave an empty file behind.
                let path = segment_path(&self.dir, active.first);
                self.segments.pop();
                fs::remove_file(&path).map_err(|e| io_error("cannot delete", &path, e))?;
            }
        }
        let path = segment_path(&self.dir, first);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| io_error("cannot create", &path, e))?;
        sync_dir(&self.dir)?;
        self.segments.push(Segment { first, file: Arc::new(file), len: 0, size: 0 });
        Ok(())
    }

    /// Makes every appended record durable.
    pub fn sync(&self) -> Result<()> {
        match self.sync_handle() {
            Some(file) => file.sync_data().map_err(|e| io_error("cannot sync", &self.dir, e)),
            None => Ok(()),
        }
    }

    /// The file whose `sync_data` makes every record appended so far durable (earlier segments were synced when
    /// they were closed). Lets the caller sync without holding whatever lock guards this log.
    pub fn sync_handle(&self) -> Option<Arc<File>> {
        self.segments.last().map(|s| s.file.clone())
    }

    /// Reads the payload of record `index`, if it is live.
    pub fn read(&self, index: u64) -> Result<Option<Vec<u8>>> {
        let Some(pos) = index.checked_sub(self.first).and_then(|i| self.positions.get(i as usize)) else {
            return Ok(None);
        };
        let segment = self
            .segments
            .iter()
            .find(|s| s.first == pos.segment)
            .ok_or_else(|| StorageError(format!("the Raft log lost the segment of index {index}")))?;
        let mut payload = vec![0; pos.len as usize];
        segment
            .file
            .read_exact_at(&mut payload, pos.offset)
            .map_err(|e| io_error("cannot read", &segment_path(&self.dir, segment.first), e))?;
        Ok(Some(payload))
    }

    /// Bytes on disk, headers included, of the live records from index `from` on (of all of them when `from` is
    /// before the first): how much log a snapshot just before `from` stands in for.
    pub fn bytes_from(&self, from: u64) -> u64 {
        let skip = from.saturating_sub(self.first);
        let Some(start) = usize::try_from(skip).ok().and_then(|i| self.positions.get(i)) else {
            return 0;
        };
        let through_end: u64 = self.segments.iter().filter(|s| s.first >= start.segment).map(|s| s.len).sum();
        through_end - (start.offset - HEADER_BYTES as u64)
    }

    /// Removes every record with index `>= from`, durably.
    pub fn truncate(&mut self, from: u64) -> Result<()> {
        let keep = from.saturating_sub(self.first).min(self.positions.len() as u64) as usize;
        let cut = self.positions.get(keep).copied();
        self.positions.truncate(keep);
        let Some(cut) = cut else {
            return Ok(()); // nothing at or after `from`
        };
        // Later segments go first (newest first), so a crash part-way leaves a log that ends earlier, never a gap.
        while self.segments.last().is_some_and(|s| s.first > cut.segment) {
            if let Some(segment) = self.segments.pop() {
                let path = segment_path(&self.dir, segment.first);
                fs::remove_file(&path).map_err(|e| io_error("cannot delete", &path, e))?;
            }
        }
        let active = self.segments.last_mut().ok_or_else(|| StorageError("the Raft log has no segment".into()))?;
        let path = segment_path(&self.dir, active.first);
        let record_start = cut.offset - HEADER_BYTES as u64;
        active
            .file
            .set_len(record_start)
            .and_then(|_| active.file.sync_all())
            .map_err(|e| io_error("cannot cut", &path, e))?;
        active.len = record_start;
        active.size = record_start;
        sync_dir(&self.dir)
    }

    /// Drops every record with index `<= upto` and deletes the segments that held only those. The caller must
    /// have made durable whatever replaces them (a snapshot and the purge point) before calling this.
    pub fn purge(&mut self, upto: u64) -> Result<()> {
        if upto < self.first {
            return Ok(());
        }
        let drop_count = (upto + 1 - self.first).min(self.positions.len() as u64) as usize;
        self.positions.drain(..drop_count);
        self.first = upto + 1;
        // A segment can go when the next one starts at or before the new first index; the active one can go
        // when nothing live is left in it (the next append then starts a new segment at its index).
        let first = self.first;
        let empty = self.positions.is_empty();
        self.remove_segments_while(|next| next.map_or(empty, |next| next.first <= first))
    }

    /// Deletes segments from the oldest while `doomed(the segment after it)` holds, then syncs the directory.
    fn remove_segments_while(&mut self, doomed: impl Fn(Option<&Segment>) -> bool) -> Result<()> {
        let mut removed = false;
        while !self.segments.is_empty() && doomed(self.segments.get(1)) {
            let segment = self.segments.remove(0);
            let path = segment_path(&self.dir, segment.first);
            fs::remove_file(&path).map_err(|e| io_error("cannot delete", &path, e))?;
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(index: u64) -> Vec<u8> {
        format!("entry {index}").repeat(1 + (index % 7) as usize).into_bytes()
    }

    fn append_range(log: &mut SegmentLog, range: std::ops::RangeInclusive<u64>) {
        let payloads: Vec<(u64, Vec<u8>)> = range.map(|i| (i, payload(i))).collect();
        log.append(payloads.iter().map(|(i, p)| (*i, p.as_slice()))).expect("append");
    }

    /// The live indexes, checking each record reads back as written.
    fn indexes(log: &SegmentLog) -> Vec<u64> {
        (log.first_index()..log.next_index())
            .inspect(|&i| {
                let read = log.read(i).expect("read").expect("live record");
                assert_eq!(read, payload(i), "record {i} reads back wrong");
            })
            .collect()
    }

    fn segment_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn records_survive_reopen_and_read_back_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = SegmentLog::open(dir.path(), None).expect("open");
        assert!(indexes(&log).is_empty());
        append_range(&mut log, 1..=50);
        log.sync().expect("sync");
        assert_eq!(log.read(7).expect("read"), Some(payload(7)));
        assert_eq!(log.read(51).expect("read"), None);
        drop(log);

        let log = SegmentLog::open(dir.path(), None).expect("reopen");
        assert_eq!(indexes(&log), (1..=50).collect::<Vec<_>>());
        assert_eq!((log.first_index(), log.next_index()), (1, 51));
        assert_eq!(log.read(50).expect("read"), Some(payload(50)));
    }

    #[test]
    fn a_torn_or_damaged_tail_of_the_last_segment_is_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = SegmentLog::open(dir.path(), None).expect("open");
        append_range(&mut log, 1..=10);
        log.sync().expect("sync");
        let records = log.segments[0].len as usize;
        drop(log);
        let path = segment_path(dir.path(), 1);
        let full = fs::read(&path).expect("read");

        // The last record half written, then the zeros kept ahead: it is dropped, and the log continues at 10.
        let mut torn = full.clone();
        torn[records - 3..records].fill(0);
        fs::write(&path, &torn).expect("tear");
        let mut log = SegmentLog::open(dir.path(), None).expect("open torn");
        assert_eq!(indexes(&log), (1..=9).collect::<Vec<_>>());
        assert_eq!(fs::metadata(&path).expect("stat").len() as usize, records - HEADER_BYTES - payload(10).len());
        append_range(&mut log, 10..=10);
        drop(log);
        assert_eq!(indexes(&SegmentLog::open(dir.path(), None).expect("open")), (1..=10).collect::<Vec<_>>());

        // Damage inside the last segment looks like a write whose pages reached the disk out of order before a
        // crash (unsynced bytes may land in any order), so the log is cut there: the records after it were not
        // acknowledged by this node's fsync.
        let mut damaged = fs::read(&path).expect("read");
        damaged[HEADER_BYTES + 2] ^= 0x40;
        fs::write(&path, &damaged).expect("damage");
        let log = SegmentLog::open(dir.path(), None).expect("a damaged last segment is cut at the damage");
        assert!(indexes(&log).is_empty());
        assert_eq!(fs::metadata(&path).expect("stat").len(), 0);
    }

    #[test]
    fn the_active_segment_is_kept_zero_filled_ahead_of_its_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = segment_path(dir.path(), 1);
        let mut log = SegmentLog::open(dir.path(), None).expect("open");
        let record = vec![9u8; 1000];
        let mut next = 1;
        // Enough records to extend the zeros several times.
        loop {
            log.append([(next, record.as_slice())]).expect("append");
            next += 1;
            let (len, size) = (log.segments[0].len, log.segments[0].size);
            assert!(size >= len + PREALLOCATE_BYTES / 2, "only {} zero bytes ahead at record {next}", size - len);
            assert_eq!(fs::metadata(&path).expect("stat").len(), size);
            if len > 3 * PREALLOCATE_BYTES {
                break;
            }
        }
        log.sync().expect("sync");
        let (len, size) = (log.segments[0].len, log.segments[0].size);
        drop(log);
        let bytes = fs::read(&path).expect("read");
        assert!(bytes[len as usize..].iter().all(|&b| b == 0), "nothing but zeros after the records");

        // Reopened, the zeros are no damage: every record is there, and appends go on right after the last one.
        let mut log = SegmentLog::open(dir.path(), None).expect("reopen");
        assert_eq!((log.first_index(), log.next_index()), (1, next));
        assert_eq!((log.segments[0].len, log.segments[0].size), (len, size));
        log.append([(next, b"after the zeros".as_slice())]).expect("append");
        log.sync().expect("sync");
        drop(log);
        let log = SegmentLog::open(dir.path(), None).expect("reopen");
        assert_eq!(log.next_index(), next + 1);
        assert_eq!(log.read(next).expect("read"), Some(b"after the zeros".to_vec()));
        assert_eq!(log.read(next - 1).expect("read"), Some(record));
    }

    #[test]
    fn a_closed_segment_is_cut_to_its_records_and_zeros_after_them_are_no_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = SegmentLog::open(dir.path(), None).expect("open");
        append_range(&mut log, 1..=3);
        let records = log.segments[0].len;
        log.start_segment(4).expect("roll");
        append_range(&mut log, 4..=6);
        log.sync().expect("sync");
        drop(log);
        let path = segment_path(dir.path(), 1);
        assert_eq!(fs::metadata(&path).expect("stat").len(), records, "closed: its records and nothing else");

        // A crash between the close's sync and its cut leaves the zeros: still a whole, intact segment.
        let mut bytes = fs::read(&path).expect("read");
        bytes.extend_from_slice(&[0; 4096]);
        fs::write(&path, &bytes).expect("extend");
        let log = SegmentLog::open(dir.path(), None).expect("zeros after a closed segment's records");
        assert_eq!(indexes(&log), (1..=6).collect::<Vec<_>>());
    }

    #[test]
    fn damage_in_a_closed_segment_refuses_to_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = SegmentLog::open(dir.path(), None).expect("open");
        append_range(&mut log, 1..=3);
        log.start_segment(4).expect("roll");
        append_range(&mut log, 4..=6);
        log.sync().expect("sync");
        drop(log);
        let path = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).expect("damage");
        let err = SegmentLog::open(dir.path(), None).err().expect("must refuse");
        assert!(err.0.contains("damaged"), "{err}");
    }

    #[test]
    fn truncate_cuts_across_segments_and_appends_continue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = SegmentLog::open(dir.path(), None).expect("open");
        append_range(&mut log, 1..=4);
        log.start_segment(5).expect("roll");
        append_range(&mut log, 5..=8);
        log.start_segment(9).expect("roll");
        append_range(&mut log, 9..=12);
        log.truncate(7).expect("truncate");
        assert_eq!(log.next_index(), 7);
        assert_eq!(segment_files(dir.path()), vec![format!("{:020}.seg", 1), format!("{:020}.seg", 5)]);
        assert!(log.append([(8, b"x".as_slice())]).is_err(), "a gap must be refused");
        log.append([(7, b"seven".as_slice())]).expect("append after truncate");
        log.sync().expect("sync");
        drop(log);
        let log = SegmentLog::open(dir.path(), None).expect("reopen");
        assert_eq!((log.first_index(), log.next_index()), (1, 8));
        assert_eq!(log.read(7).expect("read"), Some(b"seven".to_vec()), "the new record 7, not the cut one");
        for index in 1..=6 {
            assert_eq!(log.read(index).expect("read"), Some(payload(index)));
        }
    }

    #[test]
    fn purge_deletes_whole_segments_and_may_go_past_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = SegmentLog::open(dir.path(), None).expect("open");
        append_range(&mut log, 1..=4);
        log.start_segment(5).expect("roll");
        append_range(&mut log, 5..=8);
        log.purge(6).expect("purge");
        assert_eq!(segment_files(dir.path()), vec![format!("{:020}.seg", 5)]);
        assert_eq!(
            (log.first_index(), log.read(6).expect("read"), log.read(7).expect("read")),
            (7, None, Some(payload(7)))
        );
        drop(log);
        let log = SegmentLog::open(dir.path(), Some(6)).expect("reopen");
        assert_eq!(indexes(&log), vec![7, 8]);
        assert_eq!(log.first_index(), 7);
        drop(log);

        // A snapshot install purges past the end: everything goes, and the log continues after the purge point.
        let mut log = SegmentLog::open(dir.path(), Some(6)).expect("reopen");
        log.purge(100).expect("purge past the end");
        assert!(segment_files(dir.path()).is_empty());
        assert_eq!(log.next_index(), 101);
        append_range(&mut log, 101..=102);
        log.sync().expect("sync");
        drop(log);
        let log = SegmentLog::open(dir.path(), Some(100)).expect("reopen");
        assert_eq!(indexes(&log), vec![101, 102]);
        assert_eq!(log.first_index(), 101);
    }

    #[test]
    fn bytes_from_counts_whole_records_across_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = SegmentLog::open(dir.path(), None).expect("open");
        append_range(&mut log, 1..=4);
        log.start_segment(5).expect("roll");
        append_range(&mut log, 5..=8);
        let record_bytes = |range: std::ops::RangeInclusive<u64>| -> u64 {
            range.map(|i| (HEADER_BYTES + payload(i).len()) as u64).sum()
        };
        assert_eq!(log.bytes_from(0), record_bytes(1..=8), "before the first: every record");
        assert_eq!(log.bytes_from(3), record_bytes(3..=8), "from the middle of the first segment");
        assert_eq!(log.bytes_from(5), record_bytes(5..=8), "from a segment boundary");
        assert_eq!(log.bytes_from(7), record_bytes(7..=8));
        assert_eq!((log.bytes_from(9), log.bytes_from(u64::MAX)), (0, 0), "nothing after the end");
        log.purge(5).expect("purge");
        assert_eq!((log.bytes_from(0), log.bytes_from(6)), (record_bytes(6..=8), record_bytes(6..=8)));
    }

    #[test]
    fn segments_roll_over_by_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = SegmentLog::open(dir.path(), None).expect("open");
        let big = vec![7u8; (SEGMENT_BYTES / 3) as usize];
        for index in 1..=4 {
            log.append([(index, big.as_slice())]).expect("append");
        }
        log.sync().expect("sync");
        assert_eq!(segment_files(dir.path()).len(), 2, "three records fit in a segment, the fourth starts one");
        drop(log);
        let log = SegmentLog::open(dir.path(), None).expect("reopen");
        assert_eq!((log.first_index(), log.next_index()), (1, 5));
    }
}
