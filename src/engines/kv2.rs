//! The kv-v2 secrets engine: versioned JSON secrets with per-key metadata, as Vault's `kv` engine with
//! `options.version = "2"`.
//!
//! State keys, all under [`data_prefix`] (`kv2/<mount uuid>/`, deleted with the mount):
//!
//! | key | value |
//! |---|---|
//! | `kv2/<uuid>/config` | [`Config`] (bincode) — absent means the defaults |
//! | `kv2/<uuid>/meta/<key>` | [`KeyMetadata`] (bincode): versions and their times, settings, custom metadata |
//! | `kv2/<uuid>/data/<key>/<version, 20 digits>` | the version's secret, JSON object text |
//!
//! Every time (created, updated, deleted) is the leader's time stamped on the log entry
//! ([`ApplyContext::time_unix_nanos`]), so all replicas hold identical metadata. Whether a version is *deleted* is
//! decided as in Vault: its `deletion_time` is set and lies in the past — at apply for writes, and against the
//! reading node's clock for reads (`delete_version_after` sets future deletion times).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::events::{self, NewEvent};
use super::mounts::{self, MountEntry, MountRef};
use super::{decode_stored, ApplyError, Output, Result};
use crate::raft::state_machine::ApplyContext;
use crate::raft::{codec, StateReader, StateTxn};
use crate::storage::StorageError;

/// Versions kept per key when neither the mount config nor the key sets `max_versions`.
pub const DEFAULT_MAX_VERSIONS: u32 = 10;

/// `delete_version_after` of the mount config when it is disabled (any negative duration was given).
const DELETE_VERSION_AFTER_DISABLED: i64 = -1;

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Vault's messages for check-and-set failures.
pub const CAS_MISMATCH: &str = "check-and-set parameter did not match the current version";
/// See [`CAS_MISMATCH`].
pub const CAS_REQUIRED: &str = "check-and-set parameter required for this call";
/// See [`CAS_MISMATCH`].
pub const CAS_UNPARSABLE: &str = "error parsing check-and-set parameter";

/// The state-key prefix of everything a kv-v2 mount stores (delete it when unmounting).
pub fn data_prefix(mount_uuid: &str) -> String {
    format!("kv2/{mount_uuid}/")
}

fn config_key(mount_uuid: &str) -> Vec<u8> {
    format!("kv2/{mount_uuid}/config").into_bytes()
}

fn meta_prefix(mount_uuid: &str) -> String {
    format!("kv2/{mount_uuid}/meta/")
}

fn meta_key(mount_uuid: &str, key: &str) -> Vec<u8> {
    format!("kv2/{mount_uuid}/meta/{key}").into_bytes()
}

/// The version is the last segment, so keys of different secrets never collide (`a` v1 vs `a/<digits>` v1).
fn version_key(mount_uuid: &str, key: &str, version: u64) -> Vec<u8> {
    format!("kv2/{mount_uuid}/data/{key}/{version:020}").into_bytes()
}

/// Mount-wide settings (`<mount>/config`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Versions kept per key; 0 means [`DEFAULT_MAX_VERSIONS`].
    pub max_versions: u32,
    /// Every write needs `options.cas`.
    pub cas_required: bool,
    /// Seconds after creation at which new versions are deleted; 0 = unset, -1 = disabled for every key.
    pub delete_version_after: i64,
}

impl Config {
    fn delete_version_after_disabled(&self) -> bool {
        self.delete_version_after == DELETE_VERSION_AFTER_DISABLED
    }

    /// The `data` of `GET <mount>/config`.
    pub fn to_json(&self) -> Value {
        json!({
            "cas_required": self.cas_required,
            "delete_version_after": format_duration_secs(self.delete_version_after),
            "max_versions": self.max_versions,
        })
    }
}

/// What is known about one version of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionMetadata {
    /// When it was written (nanoseconds since the Unix epoch).
    pub created_time: i64,
    /// When it is (or was) deleted; `None` while it is not.
    pub deletion_time: Option<i64>,
    /// Its data is gone for good.
    pub destroyed: bool,
}

impl VersionMetadata {
    /// Deleted as of `now`: Vault treats a deletion time that is not yet reached as not deleted.
    pub fn is_deleted(&self, now_unix_nanos: i64) -> bool {
        self.deletion_time.is_some_and(|t| t < now_unix_nanos)
    }
}

/// The metadata of one key (`<mount>/metadata/<key>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMetadata {
    /// When the key (its metadata) was created; `None` only before its first version is added.
    pub created_time: Option<i64>,
    /// When the last version was added (or the metadata was created).
    pub updated_time: Option<i64>,
    /// The newest version number; 0 before the first write.
    pub current_version: u64,
    /// Vault's `oldest_version`: 0 until versions are first pruned, then the oldest kept version.
    pub oldest_version: u64,
    /// Key setting; the larger of this and the mount's wins (0 = unset).
    pub max_versions: u32,
    /// Key setting: writes need `options.cas`.
    pub cas_required: bool,
    /// Key setting, seconds (0 = unset).
    pub delete_version_after: i64,
    /// User metadata.
    pub custom_metadata: BTreeMap<String, String>,
    /// The versions kept.
    pub versions: BTreeMap<u64, VersionMetadata>,
}

impl KeyMetadata {
    /// Applies the settings a metadata write or patch gave (`None`: keep the current value).
    fn set(&mut self, max_versions: Option<u32>, cas_required: Option<bool>, delete_version_after: Option<i64>) {
        if let Some(v) = max_versions {
            self.max_versions = v;
        }
        if let Some(v) = cas_required {
            self.cas_required = v;
        }
        if let Some(v) = delete_version_after {
            self.delete_version_after = v;
        }
    }

    /// Adds a new current version created at `created` and prunes the versions beyond the limit (the larger of
    /// the key's and the mount's `max_versions`, 10 if both are 0), exactly as Vault does — including its
    /// `oldest_version` bookkeeping. Returns the pruned version numbers, whose data must be deleted.
    pub fn add_version(&mut self, created: i64, deletion: Option<i64>, config_max_versions: u32) -> Vec<u64> {
        self.current_version += 1;
        self.versions.insert(
            self.current_version,
            VersionMetadata { created_time: created, deletion_time: deletion, destroyed: false },
        );
        self.updated_time = Some(created);
        if self.created_time.is_none() {
            self.created_time = Some(created);
        }
        let max_versions = match self.max_versions.max(config_max_versions) {
            0 => DEFAULT_MAX_VERSIONS,
            n => n,
        };
        // Vault compares the difference truncated to 32 bits; so do we.
        if ((self.current_version - self.oldest_version) as u32) < max_versions {
            return Vec::new();
        }
        let last_pruned = self.current_version - u64::from(max_versions);
        let pruned: Vec<u64> = self.versions.range(..=last_pruned).map(|(v, _)| *v).collect();
        for v in &pruned {
            self.versions.remove(v);
        }
        self.oldest_version = last_pruned + 1;
        pruned
    }

    /// The `data` of `GET <mount>/metadata/<key>`.
    pub fn to_json(&self) -> Value {
        let versions: Map<String, Value> = self
            .versions
            .iter()
            .map(|(v, vm)| {
                let entry = json!({
                    "created_time": format_time(vm.created_time),
                    "deletion_time": vm.deletion_time.map(format_time).unwrap_or_default(),
                    "destroyed": vm.destroyed,
                });
                (v.to_string(), entry)
            })
            .collect();
        json!({
            "cas_required": self.cas_required,
            "created_time": self.created_time.map(format_time).unwrap_or_default(),
            "current_version": self.current_version,
            "custom_metadata": self.custom_metadata_json(),
            "delete_version_after": format_duration_secs(self.delete_version_after),
            "max_versions": self.max_versions,
            "oldest_version": self.oldest_version,
            "updated_time": self.updated_time.map(format_time).unwrap_or_default(),
            "versions": versions,
        })
    }

    /// `custom_metadata` as Vault shows it: `null` when there is none.
    fn custom_metadata_json(&self) -> Value {
        if self.custom_metadata.is_empty() {
            Value::Null
        } else {
            json!(self.custom_metadata)
        }
    }

    /// The per-version metadata Vault returns with data reads and writes.
    pub fn version_json(&self, version: u64, vm: &VersionMetadata) -> Value {
        json!({
            "created_time": format_time(vm.created_time),
            "custom_metadata": self.custom_metadata_json(),
            "deletion_time": vm.deletion_time.map(format_time).unwrap_or_default(),
            "destroyed": vm.destroyed,
            "version": version,
        })
    }
}

/// The deletion time of a version created at `created` (nanoseconds), given the mount's and the key's
/// `delete_version_after` (seconds, 0 = unset): the smaller non-zero one wins, as in Vault.
pub fn deletion_time(created: i64, mount_secs: i64, key_secs: i64) -> Option<i64> {
    if mount_secs == 0 && key_secs == 0 {
        return None;
    }
    let mut after = key_secs;
    if (mount_secs != 0 && mount_secs < after) || after == 0 {
        after = mount_secs;
    }
    Some(created.saturating_add(after.saturating_mul(NANOS_PER_SEC)))
}

/// The `options.cas` of a data write or patch, as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cas {
    /// Not given.
    Absent,
    /// Given: the write needs this to be the current version (0 = the key has no version yet).
    Version(i64),
    /// Given but not an integer: fails with Vault's "error parsing check-and-set parameter" (at apply, after
    /// the checks Vault makes first).
    Unparsable,
}

/// How `custom_metadata` changes in a metadata PATCH (JSON merge patch semantics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustomMetadataPatch {
    /// `"custom_metadata": null`: remove all of it.
    Clear,
    /// Set these keys (`Some`) and remove these (`None`).
    Merge(BTreeMap<String, Option<String>>),
}

/// A kv-v2 change. Validated on the active node; everything that depends on state is decided at apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kv2Command {
    /// `POST <mount>/config`: only the given settings change.
    ConfigWrite {
        /// New `max_versions`.
        max_versions: Option<u32>,
        /// New `cas_required`.
        cas_required: Option<bool>,
        /// New `delete_version_after` in seconds: negative disables it for all keys, 0 resets it.
        delete_version_after: Option<i64>,
    },
    /// `POST <mount>/data/<key>`: a new version.
    Write {
        /// The key.
        key: String,
        /// The secret, JSON object text.
        data: String,
        /// Check-and-set.
        cas: Cas,
    },
    /// `PATCH <mount>/data/<key>`: a new version, the current one merge-patched (RFC 7386).
    Patch {
        /// The key.
        key: String,
        /// The merge patch, JSON object text.
        patch: String,
        /// Check-and-set.
        cas: Cas,
    },
    /// `DELETE <mount>/data/<key>`: soft-deletes the current version.
    DeleteLatest {
        /// The key.
        key: String,
    },
    /// `POST <mount>/delete/<key>`: soft-deletes versions.
    DeleteVersions {
        /// The key.
        key: String,
        /// Version numbers (others than existing ones are ignored).
        versions: Vec<i64>,
    },
    /// `POST <mount>/undelete/<key>`.
    Undelete {
        /// The key.
        key: String,
        /// Version numbers.
        versions: Vec<i64>,
    },
    /// `POST <mount>/destroy/<key>`: removes versions' data for good.
    Destroy {
        /// The key.
        key: String,
        /// Version numbers.
        versions: Vec<i64>,
    },
    /// `POST <mount>/metadata/<key>`: creates the metadata if needed; only the given settings change.
    MetadataWrite {
        /// The key.
        key: String,
        /// New `max_versions`.
        max_versions: Option<u32>,
        /// New `cas_required`.
        cas_required: Option<bool>,
        /// New `delete_version_after`, seconds (not negative).
        delete_version_after: Option<i64>,
        /// New custom metadata (replaces it).
        custom_metadata: Option<BTreeMap<String, String>>,
    },
    /// `PATCH <mount>/metadata/<key>`: the metadata must exist.
    MetadataPatch {
        /// The key.
        key: String,
        /// New `max_versions`.
        max_versions: Option<u32>,
        /// New `cas_required`.
        cas_required: Option<bool>,
        /// New `delete_version_after`, seconds (not negative).
        delete_version_after: Option<i64>,
        /// Change of the custom metadata.
        custom_metadata: Option<CustomMetadataPatch>,
    },
    /// `DELETE <mount>/metadata/<key>`: the key, all its versions and metadata.
    MetadataDelete {
        /// The key.
        key: String,
    },
}

impl Kv2Command {
    /// The path below the mount the command came from (for error messages).
    fn route(&self) -> String {
        match self {
            Kv2Command::ConfigWrite { .. } => "config".into(),
            Kv2Command::Write { key, .. } | Kv2Command::Patch { key, .. } | Kv2Command::DeleteLatest { key } => {
                format!("data/{key}")
            }
            Kv2Command::DeleteVersions { key, .. } => format!("delete/{key}"),
            Kv2Command::Undelete { key, .. } => format!("undelete/{key}"),
            Kv2Command::Destroy { key, .. } => format!("destroy/{key}"),
            Kv2Command::MetadataWrite { key, .. }
            | Kv2Command::MetadataPatch { key, .. }
            | Kv2Command::MetadataDelete { key } => format!("metadata/{key}"),
        }
    }
}

/// The JSON output (`Output::Json`) of [`Kv2Command::Write`] and [`Kv2Command::Patch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", content = "data", rename_all = "snake_case")]
pub enum WriteOutput {
    /// A version was written; the answer's `data` (version, times, custom metadata).
    Written(Value),
    /// PATCH found the current version deleted or destroyed: Vault answers 404 with its metadata as `data`.
    Gone(Value),
}

type ApplyResult = std::result::Result<std::result::Result<Output, ApplyError>, StorageError>;

fn load_config(txn: &StateTxn<'_>, mount_uuid: &str) -> std::result::Result<Config, StorageError> {
    match txn.get(&config_key(mount_uuid))? {
        Some(bytes) => codec::decode(&bytes),
        None => Ok(Config::default()),
    }
}

fn load_meta(
    txn: &StateTxn<'_>,
    mount_uuid: &str,
    key: &str,
) -> std::result::Result<Option<KeyMetadata>, StorageError> {
    txn.get(&meta_key(mount_uuid, key))?.map(|bytes| codec::decode(&bytes)).transpose()
}

fn save_meta(
    txn: &mut StateTxn<'_>,
    mount_uuid: &str,
    key: &str,
    meta: &KeyMetadata,
) -> std::result::Result<(), StorageError> {
    txn.put(meta_key(mount_uuid, key), codec::encode(meta)?);
    Ok(())
}

fn check_cas(cas: Cas, config: &Config, meta: &KeyMetadata) -> std::result::Result<(), ApplyError> {
    match cas {
        Cas::Unparsable => Err(ApplyError::Invalid(CAS_UNPARSABLE.into())),
        // Vault converts the integer to an unsigned one: a negative cas never matches.
        Cas::Version(v) if v as u64 != meta.current_version => Err(ApplyError::Invalid(CAS_MISMATCH.into())),
        Cas::Version(_) => Ok(()),
        Cas::Absent if config.cas_required || meta.cas_required => Err(ApplyError::Invalid(CAS_REQUIRED.into())),
        Cas::Absent => Ok(()),
    }
}

/// When a successful command produces its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EmitWhen {
    /// Every time.
    Always,
    /// When the key's metadata changed (a write, or a soft delete of a live version).
    Changed,
    /// When the key existed (commands on a missing key succeed but do nothing).
    Existed,
}

/// The event a command produces, decided before it is applied: Vault's kv plugin event for the operation.
struct EventShape {
    operation: &'static str,
    /// Path below the mount (`data/foo`).
    path: String,
    /// `data_path` below the mount, for the operations that have one.
    data_path: Option<String>,
    /// Whether `current_version` and `oldest_version` are reported.
    versions: bool,
    /// A list of versions the operation touched, e.g. `deleted_versions`.
    touched: Option<(&'static str, Vec<u64>)>,
    when: EmitWhen,
}

impl Kv2Command {
    /// The key the command is about (`None` for the mount's config).
    fn key(&self) -> Option<&str> {
        match self {
            Kv2Command::ConfigWrite { .. } => None,
            Kv2Command::Write { key, .. }
            | Kv2Command::Patch { key, .. }
            | Kv2Command::DeleteLatest { key }
            | Kv2Command::DeleteVersions { key, .. }
            | Kv2Command::Undelete { key, .. }
            | Kv2Command::Destroy { key, .. }
            | Kv2Command::MetadataWrite { key, .. }
            | Kv2Command::MetadataPatch { key, .. }
            | Kv2Command::MetadataDelete { key } => Some(key),
        }
    }

    fn event_shape(&self) -> EventShape {
        let touched = |versions: &[i64]| versions.iter().filter_map(|v| u64::try_from(*v).ok()).collect::<Vec<_>>();
        let shape = |operation, path: String, data_path: Option<String>, versions, when| EventShape {
            operation,
            path,
            data_path,
            versions,
            touched: None,
            when,
        };
        match self {
            Kv2Command::ConfigWrite { .. } => {
                shape("config-write", "config".into(), Some("config".into()), false, EmitWhen::Always)
            }
            Kv2Command::Write { key, .. } => {
                let path = format!("data/{key}");
                shape("data-write", path.clone(), Some(path), true, EmitWhen::Changed)
            }
            Kv2Command::Patch { key, .. } => {
                let path = format!("data/{key}");
                shape("data-patch", path.clone(), Some(path), true, EmitWhen::Changed)
            }
            Kv2Command::DeleteLatest { key } => {
                shape("data-delete", format!("data/{key}"), None, true, EmitWhen::Changed)
            }
            Kv2Command::DeleteVersions { key, versions } => EventShape {
                touched: Some(("deleted_versions", touched(versions))),
                ..shape("delete", format!("delete/{key}"), None, true, EmitWhen::Existed)
            },
            Kv2Command::Undelete { key, versions } => EventShape {
                touched: Some(("undeleted_versions", touched(versions))),
                ..shape("undelete", format!("undelete/{key}"), Some(format!("data/{key}")), true, EmitWhen::Existed)
            },
            Kv2Command::Destroy { key, versions } => EventShape {
                touched: Some(("destroyed_versions", touched(versions))),
                ..shape("destroy", format!("destroy/{key}"), None, true, EmitWhen::Existed)
            },
            Kv2Command::MetadataWrite { key, .. } => {
                let path = format!("metadata/{key}");
                shape("metadata-write", path.clone(), Some(path), false, EmitWhen::Always)
            }
            Kv2Command::MetadataPatch { key, .. } => {
                let path = format!("metadata/{key}");
                shape("metadata-patch", path.clone(), Some(path), false, EmitWhen::Always)
            }
            Kv2Command::MetadataDelete { key } => {
                shape("metadata-delete", format!("metadata/{key}"), None, false, EmitWhen::Existed)
            }
        }
    }
}

/// Applies a kv-v2 command to the mount `mount` and appends the event describing it, as Vault's kv plugin
/// sends it.
pub(crate) fn apply(
    ctx: &ApplyContext<'_>,
    mount: &MountRef,
    command: Kv2Command,
    txn: &mut StateTxn<'_>,
) -> std::result::Result<std::result::Result<Output, ApplyError>, StorageError> {
    let Some(entry) = mounts::current(txn, mount)? else {
        return Ok(Err(ApplyError::NoRoute(format!("{}{}", mount.path, command.route()))));
    };
    let uuid = mount.uuid.as_str();
    let key = command.key().map(str::to_string);
    let meta_before = match &key {
        Some(key) => txn.get(&meta_key(uuid, key))?,
        None => None,
    };
    let shape = command.event_shape();
    let result = apply_change(ctx.time_unix_nanos, uuid, command, txn)?;
    if result.is_err() {
        return Ok(result);
    }
    let meta_after = match &key {
        Some(key) => txn.get(&meta_key(uuid, key))?,
        None => None,
    };
    let emit = match shape.when {
        EmitWhen::Always => true,
        EmitWhen::Changed => meta_after != meta_before,
        EmitWhen::Existed => meta_before.is_some(),
    };
    if emit {
        let mut event = NewEvent::kv(&entry, shape.operation, &shape.path, shape.data_path.as_deref());
        if shape.versions {
            // After a metadata delete nothing is left: report what the key had.
            let meta: KeyMetadata = match meta_after.as_ref().or(meta_before.as_ref()) {
                Some(bytes) => codec::decode(bytes)?,
                None => KeyMetadata::default(),
            };
            event = event.with("current_version", meta.current_version).with("oldest_version", meta.oldest_version);
        }
        if let Some((name, versions)) = &shape.touched {
            event = event.with_versions(name, versions);
        }
        events::append(ctx, txn, event)?;
    }
    Ok(result)
}

/// Applies a kv-v2 command's change to the state of the mount with uuid `uuid`.
fn apply_change(now: i64, uuid: &str, command: Kv2Command, txn: &mut StateTxn<'_>) -> ApplyResult {
    match command {
        Kv2Command::ConfigWrite { max_versions, cas_required, delete_version_after } => {
            let mut config = load_config(txn, uuid)?;
            if let Some(v) = max_versions {
                config.max_versions = v;
            }
            if let Some(v) = cas_required {
                config.cas_required = v;
            }
            if let Some(v) = delete_version_after {
                config.delete_version_after = if v < 0 { DELETE_VERSION_AFTER_DISABLED } else { v };
            }
            txn.put(config_key(uuid), codec::encode(&config)?);
            Ok(Ok(Output::Done))
        }
        Kv2Command::Write { key, data, cas } => {
            let config = load_config(txn, uuid)?;
            let meta = load_meta(txn, uuid, &key)?.unwrap_or_default();
            if let Err(e) = check_cas(cas, &config, &meta) {
                return Ok(Err(e));
            }
            add_version(txn, uuid, &key, meta, &config, data, now)
        }
        Kv2Command::Patch { key, patch, cas } => apply_patch(txn, uuid, &key, &patch, cas, now),
        Kv2Command::DeleteLatest { key } => {
            let Some(mut meta) = load_meta(txn, uuid, &key)? else { return Ok(Ok(Output::Done)) };
            let current = meta.current_version;
            let Some(vm) = meta.versions.get_mut(&current) else { return Ok(Ok(Output::Done)) };
            if vm.destroyed || vm.is_deleted(now) {
                return Ok(Ok(Output::Done));
            }
            vm.deletion_time = Some(now);
            save_meta(txn, uuid, &key, &meta)?;
            Ok(Ok(Output::Done))
        }
        Kv2Command::DeleteVersions { key, versions } => {
            let Some(mut meta) = load_meta(txn, uuid, &key)? else { return Ok(Ok(Output::Done)) };
            for v in versions {
                let Some(vm) = u64::try_from(v).ok().and_then(|v| meta.versions.get_mut(&v)) else { continue };
                if vm.destroyed || vm.is_deleted(now) {
                    continue;
                }
                vm.deletion_time = Some(now);
            }
            save_meta(txn, uuid, &key, &meta)?;
            Ok(Ok(Output::Done))
        }
        Kv2Command::Undelete { key, versions } => {
            let config = load_config(txn, uuid)?;
            let Some(mut meta) = load_meta(txn, uuid, &key)? else { return Ok(Ok(Output::Done)) };
            let key_after = meta.delete_version_after;
            for v in versions {
                let Some(vm) = u64::try_from(v).ok().and_then(|v| meta.versions.get_mut(&v)) else { continue };
                if vm.destroyed {
                    continue;
                }
                vm.deletion_time = None;
                if !config.delete_version_after_disabled() {
                    vm.deletion_time = deletion_time(now, config.delete_version_after, key_after);
                }
            }
            save_meta(txn, uuid, &key, &meta)?;
            Ok(Ok(Output::Done))
        }
        Kv2Command::Destroy { key, versions } => {
            let Some(mut meta) = load_meta(txn, uuid, &key)? else { return Ok(Ok(Output::Done)) };
            for v in &versions {
                if let Some(vm) = u64::try_from(*v).ok().and_then(|v| meta.versions.get_mut(&v)) {
                    vm.destroyed = true;
                }
            }
            save_meta(txn, uuid, &key, &meta)?;
            for v in versions.into_iter().filter_map(|v| u64::try_from(v).ok()) {
                txn.delete(version_key(uuid, &key, v));
            }
            Ok(Ok(Output::Done))
        }
        Kv2Command::MetadataWrite { key, max_versions, cas_required, delete_version_after, custom_metadata } => {
            let mut meta = load_meta(txn, uuid, &key)?.unwrap_or_else(|| KeyMetadata {
                created_time: Some(now),
                updated_time: Some(now),
                ..KeyMetadata::default()
            });
            meta.set(max_versions, cas_required, delete_version_after);
            if let Some(v) = custom_metadata {
                meta.custom_metadata = v;
            }
            save_meta(txn, uuid, &key, &meta)?;
            Ok(Ok(Output::Done))
        }
        Kv2Command::MetadataPatch { key, max_versions, cas_required, delete_version_after, custom_metadata } => {
            let Some(mut meta) = load_meta(txn, uuid, &key)? else { return Ok(Err(ApplyError::NotFound)) };
            meta.set(max_versions, cas_required, delete_version_after);
            match custom_metadata {
                None => {}
                Some(CustomMetadataPatch::Clear) => meta.custom_metadata.clear(),
                Some(CustomMetadataPatch::Merge(changes)) => {
                    for (k, v) in changes {
                        match v {
                            Some(v) => meta.custom_metadata.insert(k, v),
                            None => meta.custom_metadata.remove(&k),
                        };
                    }
                }
            }
            save_meta(txn, uuid, &key, &meta)?;
            Ok(Ok(Output::Done))
        }
        Kv2Command::MetadataDelete { key } => {
            let Some(meta) = load_meta(txn, uuid, &key)? else { return Ok(Ok(Output::Done)) };
            for v in meta.versions.keys() {
                txn.delete(version_key(uuid, &key, *v));
            }
            txn.delete(meta_key(uuid, &key));
            Ok(Ok(Output::Done))
        }
    }
}

/// Writes `data` as the key's next version, prunes old versions, and answers with the version's metadata.
fn add_version(
    txn: &mut StateTxn<'_>,
    uuid: &str,
    key: &str,
    mut meta: KeyMetadata,
    config: &Config,
    data: String,
    now: i64,
) -> ApplyResult {
    let deletion = if config.delete_version_after_disabled() {
        None
    } else {
        deletion_time(now, config.delete_version_after, meta.delete_version_after)
    };
    let pruned = meta.add_version(now, deletion, config.max_versions);
    let version = meta.current_version;
    txn.put(version_key(uuid, key, version), data.into_bytes());
    for v in pruned {
        txn.delete(version_key(uuid, key, v));
    }
    save_meta(txn, uuid, key, &meta)?;
    let vm = &meta.versions[&version];
    output_json(&WriteOutput::Written(meta.version_json(version, vm)))
}

fn apply_patch(txn: &mut StateTxn<'_>, uuid: &str, key: &str, patch: &str, cas: Cas, now: i64) -> ApplyResult {
    let Some(meta) = load_meta(txn, uuid, key)? else { return Ok(Err(ApplyError::NotFound)) };
    let config = load_config(txn, uuid)?;
    if let Err(e) = check_cas(cas, &config, &meta) {
        return Ok(Err(e));
    }
    let current = meta.current_version;
    let Some(vm) = meta.versions.get(&current) else { return Ok(Err(ApplyError::NotFound)) };
    if vm.is_deleted(now) || vm.destroyed {
        return output_json(&WriteOutput::Gone(meta.version_json(current, vm)));
    }
    let Some(existing) = txn.get(&version_key(uuid, key, current))? else {
        return Ok(Err(ApplyError::Invalid("could not find version data".into())));
    };
    let mut merged: Value = serde_json::from_slice(&existing).map_err(StorageError::new)?;
    let patch: Value = match serde_json::from_str(patch) {
        Ok(patch) => patch,
        // Validated on the leader; failing the same way everywhere keeps replicas identical.
        Err(e) => return Ok(Err(ApplyError::Invalid(format!("invalid merge patch: {e}")))),
    };
    merge_patch(&mut merged, &patch);
    let data = serde_json::to_string(&merged).map_err(StorageError::new)?;
    add_version(txn, uuid, key, meta, &config, data, now)
}

fn output_json(output: &WriteOutput) -> ApplyResult {
    Ok(Ok(Output::Json(serde_json::to_vec(output).map_err(StorageError::new)?)))
}

/// Applies an RFC 7386 JSON merge patch to `target`: objects merge recursively, `null` removes a member,
/// anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (k, v) in patch {
            if v.is_null() {
                target.remove(k);
            } else {
                merge_patch(target.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// The structure of `data` with every leaf (non-object value or empty object) replaced by `null`; objects at
/// `max_depth` (top level = 1) become leaves too. `max_depth` 0 means no limit (Vault's `subkeys`).
pub fn subkeys(data: &Map<String, Value>, max_depth: i64) -> Value {
    fn walk(map: &Map<String, Value>, depth: i64, max_depth: i64) -> Map<String, Value> {
        map.iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::Object(inner) if (max_depth == 0 || depth < max_depth) && !inner.is_empty() => {
                        Value::Object(walk(inner, depth + 1, max_depth))
                    }
                    _ => Value::Null,
                };
                (k.clone(), value)
            })
            .collect()
    }
    Value::Object(walk(data, 1, max_depth))
}

// ----- reads (on any node, from its applied state) -----

/// The mount's configuration (defaults if never written).
pub fn config(state: &StateReader, mount: &MountEntry) -> Result<Config> {
    match state.get(&config_key(&mount.uuid))? {
        Some(bytes) => decode_stored(&bytes),
        None => Ok(Config::default()),
    }
}

/// The metadata of `key`, if it exists.
pub fn metadata(state: &StateReader, mount: &MountEntry, key: &str) -> Result<Option<KeyMetadata>> {
    state.get(&meta_key(&mount.uuid, key))?.map(|bytes| decode_stored(&bytes)).transpose()
}

/// Whether a write to `rest` (the path below the mount) targets an existing key: `Some` for `data/` and
/// `metadata/` paths, which have Vault's existence check (ACL `create` vs `update`), `None` for the others.
pub fn exists(state: &StateReader, mount: &MountEntry, rest: &str) -> Result<Option<bool>> {
    let key = match rest.strip_prefix("data/").or_else(|| rest.strip_prefix("metadata/")) {
        Some(key) => key,
        None => return Ok(None),
    };
    Ok(Some(metadata(state, mount, key)?.is_some()))
}

/// One version of a key, as a data or subkeys read sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum VersionRead {
    /// No such key or version (404 with no body).
    Missing,
    /// The version is deleted or destroyed: 404 with its metadata.
    Gone {
        /// The version's metadata.
        metadata: Value,
    },
    /// The version and its data.
    Live {
        /// The version's metadata.
        metadata: Value,
        /// The secret.
        data: Map<String, Value>,
    },
}

/// Reads version `version` of `key` (the current one if `version` ≤ 0) as of `now_unix_nanos`.
pub fn read_version(
    state: &StateReader,
    mount: &MountEntry,
    key: &str,
    version: i64,
    now_unix_nanos: i64,
) -> Result<VersionRead> {
    let Some(meta) = metadata(state, mount, key)? else { return Ok(VersionRead::Missing) };
    let number = if version > 0 { version as u64 } else { meta.current_version };
    let Some(vm) = meta.versions.get(&number) else { return Ok(VersionRead::Missing) };
    let metadata = meta.version_json(number, vm);
    if vm.is_deleted(now_unix_nanos) || vm.destroyed {
        return Ok(VersionRead::Gone { metadata });
    }
    let bytes = state
        .get(&version_key(&mount.uuid, key, number))?
        .ok_or_else(|| super::Error::Internal("could not find version data".into()))?;
    let data = super::decode_json_object(&bytes).map_err(|e| super::Error::Internal(format!("corrupt secret: {e}")))?;
    Ok(VersionRead::Live { metadata, data })
}

/// Lists the immediate children of folder `folder` (empty or ending in `/`): keys, and folders ending in `/`.
/// With `exclude_deleted`, keys whose current version has a deletion time are left out (as Vault does).
pub fn list(state: &StateReader, mount: &MountEntry, folder: &str, exclude_deleted: bool) -> Result<Vec<String>> {
    let scan = format!("{}{folder}", meta_prefix(&mount.uuid));
    let mut children = BTreeSet::new();
    for (key, value) in state.scan_prefix(scan.as_bytes())? {
        let rest = String::from_utf8_lossy(&key[scan.len()..]).into_owned();
        match rest.find('/') {
            Some(i) => {
                children.insert(rest[..=i].to_string());
            }
            None => {
                if exclude_deleted {
                    let meta: KeyMetadata = decode_stored(&value)?;
                    if meta.versions.get(&meta.current_version).is_some_and(|vm| vm.deletion_time.is_some()) {
                        continue;
                    }
                }
                children.insert(rest);
            }
        }
    }
    Ok(children.into_iter().collect())
}

// ----- times and durations, formatted and parsed as Go does -----

/// Formats a time like Go's `time.RFC3339Nano` in UTC: `2018-03-22T02:24:06.945319214Z`, trailing zeros of the
/// fraction dropped (and the fraction with them when it is zero).
pub fn format_time(unix_nanos: i64) -> String {
    let t = chrono::DateTime::from_timestamp_nanos(unix_nanos);
    let mut out = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = unix_nanos.rem_euclid(NANOS_PER_SEC);
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

pub use super::duration::{format_duration_secs, go_parse_int_error, parse_duration_seconds, parse_go_duration};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        // The examples of RFC 7386, appendix A.
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (json!({"a":"b","b":"c"}), json!({"a":null}), json!({"b":"c"})),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (json!({"a":{"b":"c"}}), json!({"a":{"b":"d","c":null}}), json!({"a":{"b":"d"}})),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (json!({}), json!({"a":{"bb":{"ccc":null}}}), json!({"a":{"bb":{}}})),
        ];
        for (target, patch, expected) in cases {
            let mut result = target.clone();
            merge_patch(&mut result, &patch);
            assert_eq!(result, expected, "{target} + {patch}");
        }
    }

    #[test]
    fn subkeys_replace_leaves_with_null_up_to_a_depth() {
        let data = json!({"foo":"abc","bar":{"baz":"def","deep":{"x":1}},"quux":{}});
        let data = data.as_object().unwrap();
        assert_eq!(subkeys(data, 0), json!({"foo":null,"bar":{"baz":null,"deep":{"x":null}},"quux":null}));
        assert_eq!(subkeys(data, 1), json!({"foo":null,"bar":null,"quux":null}));
        assert_eq!(subkeys(data, 2), json!({"foo":null,"bar":{"baz":null,"deep":null},"quux":null}));
        assert_eq!(subkeys(data, -1), json!({"foo":null,"bar":null,"quux":null}));
    }

    #[test]
    fn durations_parse_like_go_and_vault() {
        assert_eq!(parse_go_duration("3h25m19s"), Ok((3 * 3600 + 25 * 60 + 19) * NANOS_PER_SEC));
        assert_eq!(parse_go_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_go_duration("-2m"), Ok(-120 * NANOS_PER_SEC));
        assert_eq!(parse_go_duration("300ms"), Ok(300_000_000));
        assert_eq!(parse_go_duration(".5h"), Ok(1800 * NANOS_PER_SEC));
        assert_eq!(parse_go_duration("1\u{b5}s"), Ok(1_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration(""), Err("time: invalid duration \"\"".into()));
        assert_eq!(parse_go_duration("abc"), Err("time: invalid duration \"abc\"".into()));
        assert_eq!(parse_go_duration("."), Err("time: invalid duration \".\"".into()));
        assert_eq!(parse_go_duration("1h3"), Err("time: missing unit in duration \"1h3\"".into()));
        assert_eq!(parse_go_duration("3x"), Err("time: unknown unit \"x\" in duration \"3x\"".into()));
        assert_eq!(parse_go_duration("9999999999999h"), Err("time: invalid duration \"9999999999999h\"".into()));

        assert_eq!(parse_duration_seconds(""), Ok(0));
        assert_eq!(parse_duration_seconds("90"), Ok(90));
        assert_eq!(parse_duration_seconds("-90"), Ok(-90));
        assert_eq!(parse_duration_seconds("2d"), Ok(172_800));
        assert_eq!(parse_duration_seconds("1500ms"), Ok(1));
        assert_eq!(parse_duration_seconds("-1.9s"), Ok(-1));
        assert_eq!(parse_duration_seconds("3h25m19s"), Ok(12_319));
        assert_eq!(parse_duration_seconds("xd"), Err("strconv.ParseInt: parsing \"x\": invalid syntax".into()));
        assert_eq!(parse_duration_seconds("1y"), Err("time: unknown unit \"y\" in duration \"1y\"".into()));
    }

    #[test]
    fn durations_and_times_format_like_go() {
        assert_eq!(format_duration_secs(0), "0s");
        assert_eq!(format_duration_secs(59), "59s");
        assert_eq!(format_duration_secs(60), "1m0s");
        assert_eq!(format_duration_secs(3600), "1h0m0s");
        assert_eq!(format_duration_secs(12_319), "3h25m19s");
        assert_eq!(format_duration_secs(-1), "-1s");
        assert_eq!(format_duration_secs(100 * 3600 + 1), "100h0m1s");

        assert_eq!(format_time(1_521_685_446_945_319_214), "2018-03-22T02:24:06.945319214Z");
        assert_eq!(format_time(1_631_287_568_684_999_000), "2021-09-10T15:26:08.684999Z");
        assert_eq!(format_time(1_631_287_568_000_000_000), "2021-09-10T15:26:08Z");
        assert_eq!(format_time(1_631_287_568_100_000_000), "2021-09-10T15:26:08.1Z");
    }

    #[test]
    fn versions_are_pruned_like_vault() {
        let mut meta = KeyMetadata::default();
        // Default limit: 10 versions; oldest_version stays 0 until the first prune.
        for v in 1..=9 {
            assert_eq!(meta.add_version(v, None, 0), Vec::<u64>::new());
        }
        assert_eq!((meta.current_version, meta.oldest_version), (9, 0));
        assert_eq!(meta.add_version(10, None, 0), Vec::<u64>::new());
        assert_eq!((meta.current_version, meta.oldest_version), (10, 1));
        assert_eq!(meta.add_version(11, None, 0), vec![1]);
        assert_eq!((meta.current_version, meta.oldest_version, meta.versions.len()), (11, 2, 10));
        assert_eq!(meta.created_time, Some(1));
        assert_eq!(meta.updated_time, Some(11));

        // Lowering the limit prunes several at the next write; the larger of key and mount limits wins.
        meta.max_versions = 3;
        assert_eq!(meta.add_version(12, None, 0), (2..=9).collect::<Vec<u64>>());
        assert_eq!((meta.oldest_version, meta.versions.keys().copied().collect::<Vec<_>>()), (10, vec![10, 11, 12]));
        assert_eq!(meta.add_version(13, None, 5), Vec::<u64>::new());
        assert_eq!(meta.versions.len(), 4);

        // A limit of 1 keeps only the newest.
        let mut one = KeyMetadata { max_versions: 1, ..KeyMetadata::default() };
        assert_eq!(one.add_version(1, None, 0), Vec::<u64>::new());
        assert_eq!(one.oldest_version, 1);
        assert_eq!(one.add_version(2, None, 0), vec![1]);
        assert_eq!((one.current_version, one.oldest_version, one.versions.len()), (2, 2, 1));
    }

    #[test]
    fn deletion_times_take_the_smaller_setting() {
        let s = NANOS_PER_SEC;
        assert_eq!(deletion_time(100, 0, 0), None);
        assert_eq!(deletion_time(100, 10, 0), Some(100 + 10 * s));
        assert_eq!(deletion_time(100, 0, 20), Some(100 + 20 * s));
        assert_eq!(deletion_time(100, 10, 20), Some(100 + 10 * s));
        assert_eq!(deletion_time(100, 30, 20), Some(100 + 20 * s));
    }

    #[test]
    fn cas_checks() {
        let config = Config::default();
        let meta = KeyMetadata { current_version: 2, ..KeyMetadata::default() };
        assert_eq!(check_cas(Cas::Absent, &config, &meta), Ok(()));
        assert_eq!(check_cas(Cas::Version(2), &config, &meta), Ok(()));
        assert_eq!(check_cas(Cas::Version(1), &config, &meta), Err(ApplyError::Invalid(CAS_MISMATCH.into())));
        assert_eq!(check_cas(Cas::Version(-1), &config, &meta), Err(ApplyError::Invalid(CAS_MISMATCH.into())));
        assert_eq!(check_cas(Cas::Unparsable, &config, &meta), Err(ApplyError::Invalid(CAS_UNPARSABLE.into())));
        let required = Config { cas_required: true, ..Config::default() };
        assert_eq!(check_cas(Cas::Absent, &required, &meta), Err(ApplyError::Invalid(CAS_REQUIRED.into())));
        let key_required = KeyMetadata { cas_required: true, ..meta };
        assert_eq!(check_cas(Cas::Absent, &config, &key_required), Err(ApplyError::Invalid(CAS_REQUIRED.into())));
    }

    #[test]
    fn metadata_json_matches_vault() {
        let mut meta = KeyMetadata::default();
        meta.add_version(1_521_685_446_945_319_214, None, 0);
        meta.versions.get_mut(&1).unwrap().deletion_time = Some(1_521_685_447_000_000_000);
        assert_eq!(
            meta.to_json(),
            json!({
                "cas_required": false,
                "created_time": "2018-03-22T02:24:06.945319214Z",
                "current_version": 1,
                "custom_metadata": null,
                "delete_version_after": "0s",
                "max_versions": 0,
                "oldest_version": 0,
                "updated_time": "2018-03-22T02:24:06.945319214Z",
                "versions": {"1": {
                    "created_time": "2018-03-22T02:24:06.945319214Z",
                    "deletion_time": "2018-03-22T02:24:07Z",
                    "destroyed": false,
                }},
            })
        );
        meta.custom_metadata.insert("owner".into(), "jdoe".into());
        assert_eq!(meta.version_json(1, &meta.versions[&1])["custom_metadata"], json!({"owner": "jdoe"}));
        assert_eq!(
            Config { max_versions: 5, cas_required: true, delete_version_after: -1 }.to_json(),
            json!({"cas_required": true, "delete_version_after": "-1s", "max_versions": 5})
        );
    }

    #[test]
    fn commands_survive_the_codec() {
        let command = Kv2Command::MetadataPatch {
            key: "a/b".into(),
            max_versions: Some(3),
            cas_required: None,
            delete_version_after: Some(60),
            custom_metadata: Some(CustomMetadataPatch::Merge(BTreeMap::from([
                ("k".to_string(), Some("v".to_string())),
                ("gone".to_string(), None),
            ]))),
        };
        let bytes = codec::encode(&command).unwrap();
        assert_eq!(codec::decode::<Kv2Command>(&bytes).unwrap(), command);
        let output = WriteOutput::Gone(json!({"version": 1}));
        let bytes = serde_json::to_vec(&output).unwrap();
        assert_eq!(serde_json::from_slice::<WriteOutput>(&bytes).unwrap(), output);
    }

    #[test]
    fn version_keys_never_collide() {
        assert_ne!(version_key("u", "a", 1), version_key("u", "a/00000000000000000001", 1));
        assert_eq!(version_key("u", "a", 1), b"kv2/u/data/a/00000000000000000001".to_vec());
        assert!(meta_key("u", "a").starts_with(data_prefix("u").as_bytes()));
        assert!(config_key("u").starts_with(data_prefix("u").as_bytes()));
    }
}
