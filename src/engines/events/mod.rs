//! The event log: every change the engines apply becomes an event, stored in the replicated state.
//!
//! An event is written by the state machine at apply, from the same command as the change it describes and in the
//! same atomic storage batch ([`append`]), so every node derives the identical event: the same `sequence` (a dense
//! counter kept in the state), the same `id` (a UUID derived from the cluster id and the sequence), and the same
//! `time` and `source`, both stamped by the leader that accepted the write. A command that fails leaves no event,
//! because its writes — the event included — are rolled back together.
//!
//! Events are kept under `event/<sequence, 20 digits>` in the state keyspace, so they are part of snapshots and a
//! node that installs one has the same event log as the others. The log is trimmed from the front by
//! [`crate::engines::Command::EventTrim`], which the active node proposes when events fall outside the retention
//! window ([`retention`]); [`EventLogMeta::trimmed_through`] remembers how far, so a cursor older than that is
//! answered with "gone" rather than with a silent gap.
//!
//! Delivery to subscribers is in [`bus`] (what has been applied on this node) and [`filter`] (which events a
//! subscription asked for).

pub mod bus;
pub mod filter;
pub mod retention;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::mounts::MountEntry;
use super::policy::Acl;
use super::{ApplyError, Output};
use crate::raft::state_machine::ApplyContext;
use crate::raft::{codec, StateReader, StateTxn};
use crate::storage::{StorageError, WriteBatch};

pub(crate) const META_KEY: &[u8] = b"sys/events";
const EVENT_PREFIX: &str = "event/";

/// The most events one trim command removes, so one apply stays short; the next trim takes the rest.
pub const MAX_TRIM_PER_COMMAND: u64 = 10_000;

/// Bookkeeping of the event log, updated in the same batch as every event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLogMeta {
    /// The sequence of the newest event (0: none yet). Sequences start at 1 and have no gaps.
    pub last_sequence: u64,
    /// Every event up to and including this sequence has been trimmed (0: none).
    pub trimmed_through: u64,
    /// Seed of event ids: the cluster id, so ids are unique across clusters too.
    pub id_seed: String,
}

/// Which plugin produced an event (Vault's `EventPluginInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// `secret` or `auth`.
    pub mount_class: String,
    /// The mount's accessor, e.g. `kv_1a2b3c4d`.
    pub mount_accessor: String,
    /// The mount path with trailing slash, e.g. `secret/`.
    pub mount_path: String,
    /// The plugin name, e.g. `kv`.
    pub plugin: String,
    /// The engine's version, e.g. `2` for kv-v2.
    pub version: String,
}

/// An event as stored in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the event log: the subscription cursor.
    pub sequence: u64,
    /// UUID, identical on every node.
    pub id: String,
    /// The accepting leader's clock, nanoseconds since the Unix epoch.
    pub time_unix_nanos: i64,
    /// The Raft node id (configured name) of the leader that accepted the write.
    pub source_node: String,
    /// E.g. `kv-v2/data-write`.
    pub event_type: String,
    /// String metadata: `path`, `data_path`, `operation`, `modified`, and per type more.
    pub metadata: BTreeMap<String, String>,
    /// The producing plugin.
    pub plugin_info: PluginInfo,
}

impl Event {
    /// The `path` metadata, which authorization checks; events without one are for root tokens only.
    pub fn path(&self) -> Option<&str> {
        self.metadata.get("path").map(String::as_str)
    }

    /// A metadata value, or `""`.
    pub fn metadata_str(&self, name: &str) -> &str {
        self.metadata.get(name).map(String::as_str).unwrap_or("")
    }

    /// The fields a subscription filter sees.
    pub fn filter_fields(&self) -> filter::FilterFields<'_> {
        filter::FilterFields {
            event_type: &self.event_type,
            operation: self.metadata_str("operation"),
            source_plugin_mount: &self.plugin_info.mount_path,
            data_path: self.metadata_str("data_path"),
            namespace: "",
        }
    }
}

/// Whether a token with `acl` may receive `event`: root tokens see every event; an event without `path` metadata
/// goes to root tokens only; otherwise the token needs `subscribe` on the path and a matching
/// `subscribe_event_types` entry ([`Acl::can_subscribe`]).
pub fn may_see(acl: &Acl, event: &Event) -> bool {
    if acl.is_root() {
        return true;
    }
    event.path().is_some_and(|path| acl.can_subscribe(path, &event.event_type))
}

/// What an engine reports about a change; [`append`] turns it into an [`Event`].
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// E.g. `kv-v2/data-write`.
    pub event_type: String,
    /// String metadata.
    pub metadata: BTreeMap<String, String>,
    /// The producing plugin.
    pub plugin_info: PluginInfo,
}

impl NewEvent {
    /// A kv event exactly as Vault's kv plugin sends it: type `kv-v<version>/<operation>`, metadata `modified`
    /// `"true"`, `operation`, `path` (below the mount, given here without the mount prefix, which is added), and
    /// `data_path` when the change has one.
    pub fn kv(mount: &MountEntry, operation: &str, path: &str, data_path: Option<&str>) -> NewEvent {
        let version = if mount.options.get("version").map(String::as_str) == Some("2") { "2" } else { "1" };
        let mut metadata = BTreeMap::from([
            ("modified".to_string(), "true".to_string()),
            ("operation".to_string(), operation.to_string()),
            ("path".to_string(), format!("{}{path}", mount.path)),
        ]);
        if let Some(data_path) = data_path {
            metadata.insert("data_path".to_string(), format!("{}{data_path}", mount.path));
        }
        NewEvent {
            event_type: format!("kv-v{version}/{operation}"),
            metadata,
            plugin_info: PluginInfo {
                mount_class: "secret".to_string(),
                mount_accessor: mount.accessor.clone(),
                mount_path: mount.path.clone(),
                plugin: mount.engine_type.clone(),
                version: version.to_string(),
            },
        }
    }

    /// Adds a metadata value.
    pub fn with(mut self, name: &str, value: impl ToString) -> NewEvent {
        self.metadata.insert(name.to_string(), value.to_string());
        self
    }

    /// Adds a list of versions the way Vault does: a JSON array as a string, e.g. `"[1,2]"`.
    pub fn with_versions(self, name: &str, versions: &[u64]) -> NewEvent {
        let list = versions.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        self.with(name, format!("[{list}]"))
    }
}

pub(crate) fn event_key(sequence: u64) -> Vec<u8> {
    format!("{EVENT_PREFIX}{sequence:020}").into_bytes()
}

fn load_meta_txn(txn: &StateTxn<'_>) -> Result<EventLogMeta, StorageError> {
    txn.get(META_KEY)?.map(|bytes| codec::decode(&bytes)).transpose().map(Option::unwrap_or_default)
}

/// The event log's bookkeeping as applied on this node.
pub fn meta(state: &StateReader) -> Result<EventLogMeta, StorageError> {
    state.get(META_KEY)?.map(|bytes| codec::decode(&bytes)).transpose().map(Option::unwrap_or_default)
}

/// Starts the event log of a new cluster (part of initialization).
pub(crate) fn apply_initialize(txn: &mut StateTxn<'_>, cluster_id: &str) -> Result<(), StorageError> {
    let meta = EventLogMeta { id_seed: cluster_id.to_string(), ..EventLogMeta::default() };
    txn.put(META_KEY, codec::encode(&meta)?);
    Ok(())
}

/// The id of the event at `sequence`: a version-8 UUID from SHA-256 of the cluster id and the sequence.
fn event_id(seed: &str, sequence: u64) -> String {
    let digest = Sha256::new().chain_update(seed.as_bytes()).chain_update(sequence.to_be_bytes()).finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8: custom
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    uuid::Uuid::from_bytes(bytes).to_string()
}

/// Appends the event describing the current command's change; it is rolled back with the command.
pub(crate) fn append(ctx: &ApplyContext<'_>, txn: &mut StateTxn<'_>, new: NewEvent) -> Result<(), StorageError> {
    let mut meta = load_meta_txn(txn)?;
    meta.last_sequence += 1;
    let event = Event {
        sequence: meta.last_sequence,
        id: event_id(&meta.id_seed, meta.last_sequence),
        time_unix_nanos: ctx.time_unix_nanos,
        source_node: ctx.proposer.to_string(),
        event_type: new.event_type,
        metadata: new.metadata,
        plugin_info: new.plugin_info,
    };
    txn.put(event_key(event.sequence), codec::encode(&event)?);
    txn.put(META_KEY, codec::encode(&meta)?);
    Ok(())
}

/// Removes the events up to and including `through` (at most [`MAX_TRIM_PER_COMMAND`] of them).
pub(crate) fn apply_trim(
    txn: &mut StateTxn<'_>,
    through: u64,
) -> Result<std::result::Result<Output, ApplyError>, StorageError> {
    let mut meta = load_meta_txn(txn)?;
    let through = through.min(meta.last_sequence).min(meta.trimmed_through.saturating_add(MAX_TRIM_PER_COMMAND));
    for sequence in meta.trimmed_through + 1..=through {
        txn.delete(event_key(sequence));
    }
    if through > meta.trimmed_through {
        meta.trimmed_through = through;
        txn.put(META_KEY, codec::encode(&meta)?);
    }
    Ok(Ok(Output::Done))
}

/// Reads the applied events with sequences in `from..=to`, in order.
pub fn read_range(state: &StateReader, from: u64, to: u64) -> Result<Vec<Event>, StorageError> {
    let mut events = Vec::new();
    for sequence in from..=to {
        if let Some(bytes) = state.get(&event_key(sequence))? {
            events.push(codec::decode(&bytes)?);
        }
    }
    Ok(events)
}

/// The events `from..=to` decoded from the writes of `written`, in order; `None` unless all of them are there.
pub(crate) fn written_events(written: &WriteBatch, from: u64, to: u64) -> Option<Result<Vec<Event>, StorageError>> {
    let (first, last) = (event_key(from), event_key(to));
    // Event keys sort by sequence (fixed-width digits), and nothing else is stored between them.
    let values = written.ops().iter().filter(|(key, _)| *key >= first && *key <= last).filter_map(|(_, v)| v.as_ref());
    let mut events = Vec::new();
    for bytes in values {
        match codec::decode::<Event>(bytes) {
            Ok(event) => events.push(event),
            Err(e) => return Some(Err(e)),
        }
    }
    events.sort_by_key(|event| event.sequence);
    let complete = events.len() as u64 == to - from + 1 && events.iter().zip(from..).all(|(e, s)| e.sequence == s);
    complete.then_some(Ok(events))
}

/// The applied event at `sequence`, if retained.
pub fn read(state: &StateReader, sequence: u64) -> Result<Option<Event>, StorageError> {
    state.get(&event_key(sequence))?.map(|bytes| codec::decode(&bytes)).transpose()
}

/// An event for tests: `sequence`, written at `time_unix_nanos`, with `path` metadata if given.
#[cfg(test)]
pub(crate) fn test_event(sequence: u64, time_unix_nanos: i64, event_type: &str, path: Option<&str>) -> Event {
    Event {
        sequence,
        id: event_id("test-cluster", sequence),
        time_unix_nanos,
        source_node: "node1".into(),
        event_type: event_type.into(),
        metadata: path.map(|p| ("path".to_string(), p.to_string())).into_iter().collect(),
        plugin_info: PluginInfo {
            mount_class: "secret".into(),
            mount_accessor: "kv_1".into(),
            mount_path: "secret/".into(),
            plugin: "kv".into(),
            version: "2".into(),
        },
    }
}

/// Stores a log for tests the way apply leaves it: events `from..=to` (event n written at `time_of(n)`), none up to
/// `trimmed_through`, and the bookkeeping; returns the batch written.
#[cfg(test)]
pub(crate) fn store_test_log(
    storage: &dyn crate::storage::Storage,
    from: u64,
    to: u64,
    trimmed_through: u64,
    time_of: impl Fn(u64) -> i64,
) -> WriteBatch {
    use crate::storage::Keyspace;
    let mut batch = WriteBatch::new();
    for sequence in from..=to {
        let event =
            test_event(sequence, time_of(sequence), "kv-v2/data-write", Some(&format!("secret/data/{sequence}")));
        batch.put(event_key(sequence), codec::encode(&event).expect("encode"));
    }
    for sequence in 1..=trimmed_through {
        batch.delete(event_key(sequence));
    }
    let meta = EventLogMeta { last_sequence: to, trimmed_through, id_seed: String::new() };
    batch.put(META_KEY, codec::encode(&meta).expect("encode"));
    storage.write(Keyspace::State, &batch).expect("write");
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_deterministic_uuids_unique_per_cluster_and_sequence() {
        let a = event_id("cluster-a", 1);
        assert_eq!(a, event_id("cluster-a", 1));
        assert_ne!(a, event_id("cluster-a", 2));
        assert_ne!(a, event_id("cluster-b", 1));
        let parsed = uuid::Uuid::parse_str(&a).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 8);
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
    }

    #[test]
    fn who_may_see_an_event() {
        let policy = crate::engines::policy::parse(
            "p",
            r#"path "secret/data/*" {
  capabilities = ["subscribe"]
  subscribe_event_types = ["kv-v2/data-*"]
}
path "secret/metadata/*" { capabilities = ["read", "list"] }"#,
        )
        .expect("policy");
        let acl = Acl::new(&[policy]);
        let cases = [
            // (event type, path, root may see, policy token may see)
            ("kv-v2/data-write", Some("secret/data/a"), true, true),
            ("kv-v2/data-delete", Some("secret/data/a"), true, true),
            ("kv-v2/delete", Some("secret/data/a"), true, false), // type not in subscribe_event_types
            ("kv-v2/metadata-write", Some("secret/metadata/a"), true, false), // no subscribe capability
            ("kv-v2/data-write", Some("kv/a"), true, false),      // no rule at all
            ("sys/audit-enabled", None, true, false),             // pathless: root only
        ];
        for (event_type, path, root, token) in cases {
            let e = test_event(1, 0, event_type, path);
            assert_eq!(may_see(&Acl::root(), &e), root, "root, {event_type} {path:?}");
            assert_eq!(may_see(&acl, &e), token, "token, {event_type} {path:?}");
        }
    }

    #[test]
    fn kv_events_carry_vaults_metadata() {
        let mount = MountEntry::new("secret/", "kv", "", BTreeMap::from([("version".to_string(), "2".to_string())]));
        let event = NewEvent::kv(&mount, "delete", "delete/foo", None)
            .with("current_version", 3)
            .with_versions("deleted_versions", &[1, 2]);
        assert_eq!(event.event_type, "kv-v2/delete");
        let expected: BTreeMap<String, String> = [
            ("current_version", "3"),
            ("deleted_versions", "[1,2]"),
            ("modified", "true"),
            ("operation", "delete"),
            ("path", "secret/delete/foo"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(event.metadata, expected);
        assert_eq!(event.plugin_info.mount_path, "secret/");
        assert_eq!(event.plugin_info.mount_class, "secret");
        assert_eq!(event.plugin_info.plugin, "kv");
        assert_eq!(event.plugin_info.version, "2");
        assert_eq!(event.plugin_info.mount_accessor, mount.accessor);
    }
}
