//! When a node builds a snapshot.
//!
//! A snapshot here is a copy of the whole state, so its cost grows with the state, while what it buys — the log
//! it lets the node purge — does not. openraft's own policy (every `snapshot_threshold` entries) therefore gets
//! more expensive as the state grows: at 500,000 keys (145 MB) a snapshot takes every node about 3 s of CPU and
//! disk, and with one every 8,192 entries a single writer (one entry per write) would spend a quarter of its time
//! on them.
//!
//! So a snapshot is due when both
//! - at least `snapshot_threshold` entries were applied since the last one (Vault's setting, as before), and
//! - the log written since the last one, plus a [`FREE_SNAPSHOT_BYTES`] allowance, is at least as large as that
//!   snapshot,
//!
//! which keeps the bytes written for large snapshots at most the bytes written to the log, whatever the state's
//! size (the rule Redis applies to rewriting its append-only file, `auto-aof-rewrite-percentage 100`); the log then
//! grows to about the size of the state between purges, which is what it costs. Small states — snapshots cheaper
//! than the allowance — are snapshotted by the entry threshold alone, exactly as Vault does.
//!
//! Every node decides for itself, from its own applied index, kept snapshot and log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::log_store::LogReader;
use super::node::{still_running, RaftNode};

/// How often a node checks whether a snapshot is due.
const CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// Snapshots up to this size are cheap enough (~100 ms of a core here) to take every `snapshot_threshold` entries.
pub const FREE_SNAPSHOT_BYTES: u64 = 8 * 1024 * 1024;

/// What the decision looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotProgress {
    /// Entries applied since the last snapshot.
    pub entries_since: u64,
    /// Bytes of log written after the last snapshot.
    pub log_bytes_since: u64,
    /// Size of the last snapshot's data (0 if there is none).
    pub snapshot_bytes: u64,
}

/// Whether a snapshot is due (see the module comment).
pub fn snapshot_due(progress: SnapshotProgress, threshold: u64) -> bool {
    progress.entries_since >= threshold
        && progress.log_bytes_since.saturating_add(FREE_SNAPSHOT_BYTES) >= progress.snapshot_bytes
}

/// Checks every [`CHECK_INTERVAL`] and triggers a snapshot when one is due, until the node is dropped or shut down.
/// `log` reads the node's log, `kept_snapshot_bytes` is the state machine's
/// [`super::state_machine::StateMachine::kept_snapshot_bytes`].
pub(super) async fn run(node: Weak<RaftNode>, log: LogReader, kept_snapshot_bytes: Arc<AtomicU64>, threshold: u64) {
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some((node, metrics)) = still_running(&node) else { return };
        let Some(applied) = metrics.last_applied.map(|id| id.index) else { continue };
        // Log indexes start at 0, so with no snapshot yet every entry through `applied` counts.
        let first_after_snapshot = metrics.snapshot.map_or(0, |id| id.index + 1);
        let progress = SnapshotProgress {
            entries_since: (applied + 1).saturating_sub(first_after_snapshot),
            log_bytes_since: log.bytes_from(first_after_snapshot),
            snapshot_bytes: kept_snapshot_bytes.load(Ordering::SeqCst),
        };
        if snapshot_due(progress, threshold) {
            tracing::debug!(?progress, "snapshot due");
            // openraft ignores the trigger while a snapshot is being built.
            if node.raft().trigger().snapshot().await.is_err() {
                return; // Raft has stopped
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(entries_since: u64, log_bytes_since: u64, snapshot_bytes: u64) -> SnapshotProgress {
        SnapshotProgress { entries_since, log_bytes_since, snapshot_bytes }
    }

    #[test]
    fn a_large_snapshot_needs_enough_entries_and_about_as_much_log_since() {
        let threshold = 8192;
        let free = FREE_SNAPSHOT_BYTES;
        // (entries since, log bytes since, last snapshot bytes) → due?
        let cases = [
            // No snapshot yet: the entry threshold alone decides.
            ((8191, 10_000_000, 0), false),
            ((8192, 1, 0), true),
            // A small state: the threshold alone decides, as Vault's does.
            ((8191, 3_000_000, 2_000_000), false),
            ((8192, 1_000, 2_000_000), true),
            ((8192, 0, free), true),
            // A large state: many entries are not enough until the log since (plus the allowance) outweighs the
            // snapshot.
            ((8192, 0, free + 1), false),
            ((100_000, 65_000_000 - free - 1, 65_000_000), false),
            ((100_000, 65_000_000 - free, 65_000_000), true),
        ];
        for ((entries, log_bytes, snapshot_bytes), due) in cases {
            assert_eq!(
                snapshot_due(progress(entries, log_bytes, snapshot_bytes), threshold),
                due,
                "entries {entries}, log bytes {log_bytes}, snapshot bytes {snapshot_bytes}"
            );
        }
    }
}
