//! Event retention: how long the event log keeps events, and the active node's task that trims it.
//!
//! An event is trimmed once it is older than [`Retention::age`] or more than [`Retention::count`] newer events
//! exist. Trimming is a replicated command ([`Command::EventTrim`]) proposed by the active node, so every node
//! trims the same prefix at the same log position, and the log — trimmed point included — is part of snapshots.
//! The active node's configuration decides; the other nodes' `events` settings take effect when they lead.

use std::time::Duration;

use super::{meta, read, MAX_TRIM_PER_COMMAND};
use crate::engines::{Command, Engines};
use crate::raft::StateReader;
use crate::storage::StorageError;

/// How often the active node checks whether events should be trimmed.
const TRIM_INTERVAL: Duration = Duration::from_secs(5);

/// How many events the log keeps (`events { retention_count, retention_age }` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// At most this many events are kept.
    pub count: u64,
    /// Events older than this are trimmed.
    pub age: Duration,
}

impl Default for Retention {
    /// One million events or 24 hours, whichever is reached first: a day of moderate traffic (about 10 writes/s)
    /// stays resumable.
    fn default() -> Self {
        Retention { count: 1_000_000, age: Duration::from_secs(24 * 3600) }
    }
}

/// The sequence through which the log should be trimmed now, if any (at most one command's worth).
pub fn trim_point(
    state: &StateReader,
    retention: &Retention,
    now_unix_nanos: i64,
) -> Result<Option<u64>, StorageError> {
    let meta = meta(state)?;
    let first = meta.trimmed_through + 1;
    if first > meta.last_sequence {
        return Ok(None);
    }
    let mut through = meta.last_sequence.saturating_sub(retention.count).max(meta.trimmed_through);
    // Events are in time order (leader clocks aside): find the last one older than the cutoff by bisection.
    let cutoff = now_unix_nanos.saturating_sub(i64::try_from(retention.age.as_nanos()).unwrap_or(i64::MAX));
    let is_old = |sequence: u64| -> Result<bool, StorageError> {
        Ok(read(state, sequence)?.is_some_and(|event| event.time_unix_nanos < cutoff))
    };
    if is_old(through + 1)? {
        let (mut old, mut young) = (through + 1, meta.last_sequence + 1);
        if is_old(meta.last_sequence)? {
            old = meta.last_sequence;
        } else {
            while young - old > 1 {
                let mid = old + (young - old) / 2;
                if is_old(mid)? {
                    old = mid;
                } else {
                    young = mid;
                }
            }
        }
        through = through.max(old);
    }
    if through <= meta.trimmed_through {
        return Ok(None);
    }
    Ok(Some(through.min(meta.trimmed_through + MAX_TRIM_PER_COMMAND)))
}

/// Runs forever: while this node is the active node, trims what falls outside `retention`.
pub async fn run(engines: Engines, retention: Retention) {
    let mut interval = tokio::time::interval(TRIM_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if !engines.node().is_leader() {
            continue;
        }
        // Trim in steps of one command until nothing is left to trim.
        loop {
            let now = crate::engines::tokens::now_unix_nanos();
            let through = match trim_point(&engines.state(), &retention, now) {
                Ok(Some(through)) => through,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the event log to trim it");
                    break;
                }
            };
            match engines.execute(&Command::EventTrim { through }).await {
                Ok(_) => tracing::debug!(through, "trimmed the event log"),
                Err(e) => {
                    tracing::debug!(error = %e, "event log trim not applied; retrying later");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engines::events::{store_test_log, EventLogMeta, META_KEY};
    use crate::raft::codec;
    use crate::storage::{Keyspace, SledStorage, Storage};

    const SECOND: i64 = 1_000_000_000;

    /// A log holding events `trimmed_through + 1 ..= last`, event `n` written at second `n`.
    fn log(storage: &SledStorage, trimmed_through: u64, last: u64) {
        store_test_log(storage, trimmed_through + 1, last, trimmed_through, |sequence| sequence as i64 * SECOND);
    }

    #[test]
    fn trims_by_count_and_by_age_whichever_removes_more() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Arc::new(SledStorage::open(dir.path()).expect("open"));
        let state = StateReader::new(storage.clone());
        let keep = |count: u64, age_secs: u64| Retention { count, age: Duration::from_secs(age_secs) };
        log(&storage, 0, 100);
        let now = 101 * SECOND; // event n is 101 - n seconds old

        assert_eq!(trim_point(&state, &keep(1000, 1000), now).expect("read"), None);
        // By count: keep the newest 30.
        assert_eq!(trim_point(&state, &keep(30, 1000), now).expect("read"), Some(70));
        // By age: events older than 20 s are 1..=80.
        assert_eq!(trim_point(&state, &keep(1000, 20), now).expect("read"), Some(80));
        assert_eq!(trim_point(&state, &keep(30, 20), now).expect("read"), Some(80));
        assert_eq!(trim_point(&state, &keep(10, 20), now).expect("read"), Some(90));
        // Everything is old.
        assert_eq!(trim_point(&state, &keep(1000, 1), 1000 * SECOND).expect("read"), Some(100));

        // After a trim, only what is left counts; nothing to do is None.
        log(&storage, 80, 100);
        assert_eq!(trim_point(&state, &keep(30, 20), now).expect("read"), None);
        assert_eq!(trim_point(&state, &keep(5, 1000), now).expect("read"), Some(95));
    }

    #[test]
    fn one_trim_removes_at_most_one_commands_worth() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Arc::new(SledStorage::open(dir.path()).expect("open"));
        let state = StateReader::new(storage.clone());
        // Only the bookkeeping matters for a count-based trim beyond the cap.
        let meta = EventLogMeta { last_sequence: 3 * MAX_TRIM_PER_COMMAND, trimmed_through: 0, id_seed: String::new() };
        storage.put(Keyspace::State, META_KEY, &codec::encode(&meta).expect("encode")).expect("put");
        let retention = Retention { count: 1, age: Duration::from_secs(1_000_000) };
        assert_eq!(trim_point(&state, &retention, 0).expect("read"), Some(MAX_TRIM_PER_COMMAND));
    }
}
