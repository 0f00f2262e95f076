//! The event bus of one node: tells subscriptions what this node has applied, and hands them the events.
//!
//! There is no per-subscription queue to overflow. After every applied batch the state machine calls
//! [`EventBus::on_applied`] with the batch it wrote, which takes the new events from it, appends them to a shared in-memory
//! ring of recent events and publishes the new head in a `watch` channel. Each subscription keeps only its cursor:
//! woken by the channel, it takes the events after its cursor from the ring, or — when it has fallen so far behind
//! that they left the ring — from the stored event log. So a slow subscriber never slows writes or other
//! subscribers, and never loses an event: it only reads from disk until it has caught up. Only trimming can take
//! events away from it, and then it is told so ([`BusError::Gone`]) instead of skipping them.
//!
//! The same channel carries an authorization epoch, bumped whenever an applied batch changed tokens or policies.
//! Because the epoch and the head are published together, a subscription that sees a head including events applied
//! after a revocation also sees the revocation, and re-checks its token before delivering them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use tokio::sync::watch;

use super::{meta, read_range, written_events, Event, EventLogMeta, META_KEY};
use crate::raft::{codec, StateReader};
use crate::storage::{StorageError, WriteBatch};

/// How many recent events the ring keeps in memory.
pub const RING_CAPACITY: usize = 4096;

/// What this node has applied, as published to subscriptions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusStatus {
    /// The newest applied event's sequence (0: none).
    pub last_sequence: u64,
    /// Events up to and including this sequence were trimmed.
    pub trimmed_through: u64,
    /// Changes whenever applied tokens or policies changed.
    pub auth_epoch: u64,
}

/// Why events could not be handed out.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The events after the cursor were trimmed from the log.
    #[error(
        "events after sequence {cursor} are no longer retained: the event log now starts after sequence \
         {trimmed_through}; subscribe again with since={trimmed_through} or later"
    )]
    Gone {
        /// The cursor asked for.
        cursor: u64,
        /// How far the log was trimmed.
        trimmed_through: u64,
    },
    /// Reading the log failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// An event as handed to subscriptions, with its wire encodings computed once for all of them.
#[derive(Debug)]
pub struct Published {
    /// The event.
    pub event: Event,
    encodings: [OnceLock<Bytes>; 2],
}

impl Published {
    fn new(event: Event) -> Arc<Published> {
        Arc::new(Published { event, encodings: [OnceLock::new(), OnceLock::new()] })
    }

    /// The event's encoding number `slot` (0 or 1; the caller decides which format is which), computed by `encode`
    /// on first use and shared by every subscription after that.
    pub fn encoded(&self, slot: usize, encode: impl FnOnce(&Event) -> Bytes) -> Bytes {
        match self.encodings.get(slot) {
            Some(cell) => cell.get_or_init(|| encode(&self.event)).clone(),
            None => encode(&self.event),
        }
    }
}

/// One node's event bus; see the module docs.
pub struct EventBus {
    state: StateReader,
    capacity: usize,
    ring: Mutex<VecDeque<Arc<Published>>>,
    status: watch::Sender<BusStatus>,
    auth_changed: AtomicBool,
}

impl EventBus {
    /// A bus over the applied state, starting at what is applied now.
    pub fn new(state: StateReader) -> Result<EventBus, StorageError> {
        EventBus::with_capacity(state, RING_CAPACITY)
    }

    /// A bus whose ring keeps `capacity` events.
    pub fn with_capacity(state: StateReader, capacity: usize) -> Result<EventBus, StorageError> {
        let meta = meta(&state)?;
        let status =
            BusStatus { last_sequence: meta.last_sequence, trimmed_through: meta.trimmed_through, auth_epoch: 0 };
        Ok(EventBus {
            state,
            capacity: capacity.max(1),
            ring: Mutex::new(VecDeque::with_capacity(capacity.max(1))),
            status: watch::Sender::new(status),
            auth_changed: AtomicBool::new(false),
        })
    }

    /// Marks that the batch being applied changes tokens or policies.
    pub fn note_auth_change(&self) {
        self.auth_changed.store(true, Ordering::Relaxed);
    }

    /// What is applied now.
    pub fn status(&self) -> BusStatus {
        *self.status.borrow()
    }

    /// A receiver that wakes on every change of [`BusStatus`].
    pub fn watch(&self) -> watch::Receiver<BusStatus> {
        self.status.subscribe()
    }

    /// Publishes what the last applied batch, `written` (`None`: an installed snapshot, which replaced
    /// everything), added. Called by the state machine after it wrote the batch, on its own task; takes the new
    /// events from the batch (or, after a snapshot, reads them) once for every subscription.
    pub fn on_applied(&self, written: Option<&WriteBatch>) -> Result<(), StorageError> {
        let before = self.status();
        // The event log's (last sequence, trimmed through) after this write.
        let (last_sequence, trimmed_through) =
            match written.and_then(|batch| batch.ops().iter().find(|(key, _)| key == META_KEY)) {
                Some((_, Some(bytes))) => {
                    let meta: EventLogMeta = codec::decode(bytes)?;
                    (meta.last_sequence, meta.trimmed_through)
                }
                // The batch did not touch the event log.
                None if written.is_some() => (before.last_sequence, before.trimmed_through),
                _ => {
                    let meta = meta(&self.state)?;
                    (meta.last_sequence, meta.trimmed_through)
                }
            };
        let auth_changed = self.auth_changed.swap(false, Ordering::Relaxed);
        if last_sequence == before.last_sequence && trimmed_through == before.trimmed_through && !auth_changed {
            return Ok(());
        }
        {
            let mut ring = self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if last_sequence < before.last_sequence {
                // A snapshot replaced the state with a shorter log: what the ring holds is no longer true.
                ring.clear();
            } else if last_sequence > before.last_sequence {
                let wanted = (last_sequence - before.last_sequence).min(self.capacity as u64);
                let from = (last_sequence - wanted + 1).max(trimmed_through + 1);
                if ring.back().is_some_and(|last| last.event.sequence + 1 != from) {
                    ring.clear(); // keep the ring contiguous
                }
                let events = match written.map(|batch| written_events(batch, from, last_sequence)) {
                    Some(Some(events)) => events?,
                    _ => read_range(&self.state, from, last_sequence)?,
                };
                for event in events {
                    if ring.len() == self.capacity {
                        ring.pop_front();
                    }
                    ring.push_back(Published::new(event));
                }
            }
            while ring.front().is_some_and(|first| first.event.sequence <= trimmed_through) {
                ring.pop_front();
            }
        }
        self.status.send_modify(|status| {
            status.last_sequence = last_sequence;
            status.trimmed_through = trimmed_through;
            if auth_changed {
                status.auth_epoch += 1;
            }
        });
        Ok(())
    }

    /// Up to `max` applied events after `cursor` and up to `through`, in order: from the ring when it still holds
    /// them, else from the stored log. Empty when there are none. `through` is the last sequence of the status the
    /// caller has acted on (re-checked its token for), so it never gets an event applied after that.
    pub fn events_after(&self, cursor: u64, through: u64, max: usize) -> Result<Vec<Arc<Published>>, BusError> {
        let status = self.status();
        if cursor < status.trimmed_through {
            return Err(BusError::Gone { cursor, trimmed_through: status.trimmed_through });
        }
        let through = through.min(status.last_sequence);
        if cursor >= through || max == 0 {
            return Ok(Vec::new());
        }
        let to = through.min(cursor.saturating_add(max as u64));
        {
            let ring = self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(first) = ring.front() {
                let first = first.event.sequence;
                if first <= cursor + 1 {
                    let skip = usize::try_from(cursor + 1 - first).unwrap_or(usize::MAX);
                    let events: Vec<_> =
                        ring.iter().skip(skip).take_while(|p| p.event.sequence <= to).cloned().collect();
                    if events.first().is_some_and(|p| p.event.sequence == cursor + 1) {
                        return Ok(events);
                    }
                }
            }
        }
        let events = read_range(&self.state, cursor + 1, to)?;
        // A trim applied since the status was read may have taken some of them: say so rather than skip them.
        if events.first().map(|e| e.sequence) != Some(cursor + 1) || events.len() as u64 != to - cursor {
            let trimmed_through = meta(&self.state)?.trimmed_through;
            if trimmed_through > cursor {
                return Err(BusError::Gone { cursor, trimmed_through });
            }
            return Err(StorageError(format!("the event log is missing events between {cursor} and {to}")).into());
        }
        Ok(events.into_iter().map(Published::new).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::events::{store_test_log, test_event};
    use crate::storage::SledStorage;

    /// Stores events `from..=to` and the log's bookkeeping the way apply does, then tells the bus.
    /// Every other call tells the bus what was written, the others make it read the new events back (as after
    /// a snapshot install): both must give the same result.
    fn append(storage: &SledStorage, bus: &EventBus, from: u64, to: u64, trimmed_through: u64) {
        let batch = store_test_log(storage, from, to, trimmed_through, |sequence| sequence as i64);
        let written = (from % 2 == 1).then_some(&batch);
        bus.on_applied(written).expect("on_applied");
    }

    fn sequences(events: &[Arc<Published>]) -> Vec<u64> {
        events.iter().map(|p| p.event.sequence).collect()
    }

    #[test]
    fn lagging_cursors_read_the_stored_log_and_trimmed_ones_are_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Arc::new(SledStorage::open(dir.path()).expect("open"));
        let bus = EventBus::with_capacity(StateReader::new(storage.clone()), 4).expect("bus");
        let mut watch = bus.watch();

        append(&storage, &bus, 1, 10, 0);
        assert!(watch.has_changed().expect("open"));
        assert_eq!(watch.borrow_and_update().last_sequence, 10);
        // The ring holds 7..=10; older cursors are served from storage, in order, without gaps.
        assert_eq!(sequences(&bus.events_after(8, 10, 100).expect("ring")), vec![9, 10]);
        assert_eq!(sequences(&bus.events_after(2, 10, 100).expect("log")), (3..=10).collect::<Vec<_>>());
        assert_eq!(sequences(&bus.events_after(0, 10, 3).expect("log")), vec![1, 2, 3]);
        // Nothing past `through`, even though more is applied.
        assert_eq!(sequences(&bus.events_after(0, 5, 100).expect("log")), vec![1, 2, 3, 4, 5]);
        assert!(bus.events_after(10, 10, 100).expect("caught up").is_empty());

        // A trim: cursors before it are gone, with the point to resume from; the rest is unaffected.
        append(&storage, &bus, 11, 12, 6);
        match bus.events_after(5, 12, 100) {
            Err(BusError::Gone { cursor: 5, trimmed_through: 6 }) => {}
            other => panic!("expected Gone, got {:?}", other.map(|e| sequences(&e))),
        }
        assert_eq!(sequences(&bus.events_after(6, 12, 100).expect("log")), (7..=12).collect::<Vec<_>>());

        // Token and policy changes bump the epoch, even without new events.
        let epoch = bus.status().auth_epoch;
        bus.note_auth_change();
        bus.on_applied(Some(&WriteBatch::new())).expect("on_applied");
        assert_eq!(bus.status().auth_epoch, epoch + 1);
    }

    #[test]
    fn encodings_are_computed_once_and_shared() {
        let published = Published::new(test_event(1, 0, "kv-v2/data-write", None));
        let calls = std::cell::Cell::new(0);
        let encode = |_: &Event| {
            calls.set(calls.get() + 1);
            Bytes::from_static(b"frame")
        };
        assert_eq!(published.encoded(0, encode), Bytes::from_static(b"frame"));
        assert_eq!(published.encoded(0, encode), Bytes::from_static(b"frame"));
        assert_eq!(calls.get(), 1);
    }
}
