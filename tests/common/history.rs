//! A history checker for fault scenarios: concurrent writers and resuming subscribers record what they did and saw;
//! afterwards [`check`] proves the cluster kept its promises.
//!
//! Writers put kv-v2 values with unique payloads (`w<writer>-<n>`) to a few keys each (so versions interleave with
//! retries and failovers), through the node they are assigned to, moving on to the next node when theirs fails.
//! Each write ends acknowledged (with the version the cluster gave it), definitely failed (a 4xx), or unknown
//! (timeout, 5xx, lost connection). Subscribers follow `*` from sequence 0 on different nodes; when their
//! connection breaks or goes quiet they resume on the next node from the last sequence they received, as any
//! client would. When the faults are over, a fence write marks the end; subscribers stop at its event, and the
//! final state (every version of every key) and every node's whole event log are read back.
//!
//! [`check`] then proves: (a) every acknowledged write is present with its acknowledged version; (b) no value is
//! present that was never written, and no write is present twice (a retried write applied twice), and no definitely
//! failed write is present; (c) every subscriber's stream has no gap and no duplicate in `sequence` and its
//! data-write events match the stored versions one for one; (d) all nodes hold identical event logs, and every
//! subscriber's events are exactly the log's events at those sequences. A pure function over recorded data, so
//! `tests/faults.rs` also feeds it deliberately broken histories to show that it catches each kind of violation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use vigil::client::Client;

use super::{wait_for, TestCluster, WAIT};

/// The kv-v2 key prefix of history writes (under the `secret/` mount): `h/<run>/...`.
pub const PREFIX: &str = "h";
/// A subscriber that receives nothing for this long reconnects elsewhere (its node may be paused or cut off).
const SUBSCRIBER_IDLE: Duration = Duration::from_secs(2);

/// How one write ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Acknowledged with this version.
    Acked(u64),
    /// Rejected (4xx): must not be present.
    Failed(String),
    /// Timeout, 5xx or a lost connection: may or may not be present, but at most once.
    Unknown(String),
}

/// One attempted write.
#[derive(Debug, Clone)]
pub struct Write {
    /// Key under `secret/data/`.
    pub key: String,
    /// The unique payload.
    pub payload: String,
    /// The node it was sent to.
    pub node: usize,
    pub outcome: Outcome,
}

/// One event as a subscriber received it.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenEvent {
    pub sequence: u64,
    pub id: String,
    pub event_type: String,
    /// `data_path` metadata (`secret/data/<key>`), if any.
    pub data_path: String,
    /// `current_version` metadata, if any.
    pub version: Option<u64>,
}

/// What one subscriber received, in order.
#[derive(Debug, Clone, Default)]
pub struct Stream {
    pub name: String,
    pub events: Vec<SeenEvent>,
    /// Connections it opened (1 + reconnects).
    pub connections: usize,
    /// It saw the fence event (its stream is complete).
    pub complete: bool,
}

/// The recorded history and the final state.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// The workload's run name: its keys are `h/<run>/...`, its fence `h/<run>/fence`.
    pub run: String,
    pub writes: Vec<Write>,
    pub streams: Vec<Stream>,
    /// Per node: key → version → payload (`None` if the version is deleted or destroyed).
    pub state: Vec<BTreeMap<String, BTreeMap<u64, Option<String>>>>,
    /// Per node: the whole event log as CloudEvents JSON, from sequence 1 through the fence event.
    pub logs: Vec<Vec<Value>>,
}

impl History {
    /// Numbers worth printing after a scenario.
    pub fn summary(&self) -> String {
        let acked = self.writes.iter().filter(|w| matches!(w.outcome, Outcome::Acked(_))).count();
        let unknown = self.writes.iter().filter(|w| matches!(w.outcome, Outcome::Unknown(_))).count();
        let present: usize = self.state.first().map(|s| s.values().map(BTreeMap::len).sum()).unwrap_or(0);
        let connections: Vec<usize> = self.streams.iter().map(|s| s.connections).collect();
        let log_len = self.logs.first().map(Vec::len).unwrap_or(0);
        format!(
            "{} writes ({acked} acknowledged, {unknown} unknown), {present} versions stored, {log_len} events, \
             subscriber connections {connections:?}",
            self.writes.len()
        )
    }
}

/// Checks everything the module comment promises; returns every violation found (empty: the history is valid).
pub fn check(history: &History) -> Vec<String> {
    let mut violations = Vec::new();
    let Some(state) = history.state.first() else {
        return vec!["no final state was read".into()];
    };
    let run_prefix = format!("{PREFIX}/{}/", history.run);
    let fence = fence_key(&history.run);

    // Nodes agree on the data.
    for (i, other) in history.state.iter().enumerate().skip(1) {
        if other != state {
            violations.push(format!("node {} holds different data than node 0", i));
        }
    }

    // (b) nothing unwritten, nothing twice.
    let attempted: HashMap<&str, &Write> = history.writes.iter().map(|w| (w.payload.as_str(), w)).collect();
    let mut seen: HashMap<&str, (&str, u64)> = HashMap::new();
    for (key, versions) in state {
        for (version, payload) in versions {
            let Some(payload) = payload else { continue };
            match attempted.get(payload.as_str()) {
                None if *key == fence => {}
                None => violations.push(format!("{key} version {version} holds {payload:?}, which was never written")),
                Some(w) if w.key != *key => {
                    violations.push(format!("{payload:?} was written to {} but is stored in {key}", w.key))
                }
                Some(w) if matches!(w.outcome, Outcome::Failed(_)) => {
                    violations.push(format!("{payload:?} was rejected but is stored as {key} version {version}"))
                }
                Some(_) => {}
            }
            if let Some((first_key, first_version)) = seen.insert(payload, (key, *version)) {
                violations.push(format!(
                    "{payload:?} is stored twice: {first_key} version {first_version} and {key} version {version}"
                ));
            }
        }
    }

    // (a) every acknowledged write with its version.
    for w in &history.writes {
        if let Outcome::Acked(version) = w.outcome {
            match state.get(&w.key).and_then(|v| v.get(&version)) {
                Some(Some(stored)) if *stored == w.payload => {}
                Some(Some(stored)) => violations.push(format!(
                    "acknowledged write {:?} to {} version {version}: that version holds {stored:?}",
                    w.payload, w.key
                )),
                _ => violations
                    .push(format!("acknowledged write {:?} to {} version {version} is missing", w.payload, w.key)),
            }
        }
    }

    // (d) identical event logs, dense from 1.
    let log = history.logs.first().cloned().unwrap_or_default();
    for (i, other) in history.logs.iter().enumerate().skip(1) {
        if *other != log {
            let at = log.iter().zip(other).position(|(a, b)| a != b).unwrap_or(log.len().min(other.len()));
            violations.push(format!(
                "node {i}'s event log differs from node 0's at position {at} (lengths {} and {})",
                other.len(),
                log.len()
            ));
        }
    }
    let log_events: Vec<Option<SeenEvent>> = log.iter().map(seen_event).collect();
    for (position, event) in log_events.iter().enumerate() {
        match event {
            Some(e) if e.sequence == position as u64 + 1 => {}
            Some(e) => {
                violations.push(format!("event log position {position} has sequence {}", e.sequence));
                break;
            }
            None => violations.push(format!("event log position {position} is not a valid event")),
        }
    }

    // (c) streams: dense, no duplicates, matching the log and the stored versions one for one.
    let stored: BTreeSet<(String, u64)> = state
        .iter()
        .filter(|(key, _)| **key != fence)
        .flat_map(|(key, versions)| versions.keys().map(move |v| (key.clone(), *v)))
        .collect();
    for stream in &history.streams {
        let name = &stream.name;
        if !stream.complete {
            violations.push(format!("subscriber {name} never received the fence event"));
        }
        let mut expected = 1;
        for event in &stream.events {
            if event.sequence != expected {
                let what = if event.sequence < expected { "duplicate or reordered" } else { "gap" };
                violations.push(format!(
                    "subscriber {name}: {what}: sequence {} where {expected} was expected",
                    event.sequence
                ));
            }
            expected = event.sequence + 1;
            let in_log = usize::try_from(event.sequence).ok().and_then(|s| log_events.get(s.wrapping_sub(1)));
            if in_log.and_then(Option::as_ref) != Some(event) {
                violations.push(format!("subscriber {name}: event {} differs from the event log", event.sequence));
            }
        }
        let mut writes_seen: BTreeMap<(String, u64), usize> = BTreeMap::new();
        for event in &stream.events {
            if event.event_type != "kv-v2/data-write" {
                continue;
            }
            let Some(key) = event.data_path.strip_prefix("secret/data/") else { continue };
            if key == fence || !key.starts_with(&run_prefix) {
                continue;
            }
            *writes_seen.entry((key.to_string(), event.version.unwrap_or(0))).or_default() += 1;
        }
        for ((key, version), count) in &writes_seen {
            if *count > 1 {
                violations.push(format!("subscriber {name}: {count} events for {key} version {version}"));
            }
            if !stored.contains(&(key.clone(), *version)) {
                violations.push(format!("subscriber {name}: event for {key} version {version}, which is not stored"));
            }
        }
        for (key, version) in &stored {
            if stream.complete && !writes_seen.contains_key(&(key.clone(), *version)) {
                violations.push(format!("subscriber {name}: no event for stored {key} version {version}"));
            }
        }
    }
    violations
}

/// The fence key of a run.
pub fn fence_key(run: &str) -> String {
    format!("{PREFIX}/{run}/fence")
}

/// The fields the checker compares, from one CloudEvents JSON event.
pub fn seen_event(event: &Value) -> Option<SeenEvent> {
    let data = &event["data"];
    let metadata = &data["event"]["metadata"];
    Some(SeenEvent {
        sequence: event["sequence"].as_str()?.parse().ok()?,
        id: event["id"].as_str()?.to_string(),
        event_type: data["event_type"].as_str()?.to_string(),
        data_path: metadata["data_path"].as_str().unwrap_or_default().to_string(),
        version: metadata["current_version"].as_str().and_then(|v| v.parse().ok()),
    })
}

/// A running workload: writers and subscribers against a cluster.
pub struct Workload {
    run: String,
    addrs: Arc<Vec<String>>,
    token: String,
    stop_writers: watch::Sender<bool>,
    writers: Vec<JoinHandle<Vec<Write>>>,
    subscribers: Vec<JoinHandle<Stream>>,
    /// Subscribers give up (incomplete) once this passes.
    give_up: watch::Sender<bool>,
    /// Writes attempted so far, by all writers.
    attempted: Arc<AtomicUsize>,
}

/// Shape of a workload.
#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    pub writers: usize,
    /// Keys per writer (each key gets many versions).
    pub keys_per_writer: usize,
    /// Stop each writer after this many writes.
    pub max_writes_per_writer: usize,
    /// Subscribers, on nodes 0, 1, 2... in turn.
    pub subscribers: usize,
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        WorkloadOptions { writers: 4, keys_per_writer: 3, max_writes_per_writer: 150, subscribers: 3 }
    }
}

impl Workload {
    /// Prepares the mount (versions are never pruned) and starts subscribers, then writers.
    pub async fn start(cluster: &TestCluster, options: WorkloadOptions) -> Workload {
        let leader = cluster.leader().await;
        let resp = cluster.client(leader).post("/v1/secret/config", &json!({ "max_versions": 100000 })).await;
        assert_eq!(resp.expect("config").status, 204, "secret/config");
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let run = format!("r{}", RUNS.fetch_add(1, Ordering::Relaxed));
        let fence = fence_key(&run);
        let addrs: Arc<Vec<String>> = Arc::new(cluster.nodes.iter().map(|n| n.api_addr()).collect());
        let token = cluster.root_token.clone();
        let (stop_writers, stop_rx) = watch::channel(false);
        let (give_up, give_up_rx) = watch::channel(false);
        let subscribers = (0..options.subscribers)
            .map(|s| {
                let name = format!("sub{s}@node{}", s % addrs.len() + 1);
                let (node, fence, give_up) = (s % addrs.len(), fence.clone(), give_up_rx.clone());
                tokio::spawn(subscribe(name, addrs.clone(), node, token.clone(), fence, give_up))
            })
            .collect();
        let attempted = Arc::new(AtomicUsize::new(0));
        let writers = (0..options.writers)
            .map(|w| {
                let (addrs, token, options, stop) = (addrs.clone(), token.clone(), options.clone(), stop_rx.clone());
                tokio::spawn(write_loop(run.clone(), w, addrs, token, options, stop, attempted.clone()))
            })
            .collect();
        Workload { run, addrs, token, stop_writers, writers, subscribers, give_up, attempted }
    }

    /// Waits until the writers have attempted `count` writes in all.
    pub async fn wait_writes(&self, count: usize) {
        let what = format!("{count} writes");
        wait_for(&what, WAIT, || async { (self.attempted.load(Ordering::Relaxed) >= count).then_some(()) }).await
    }

    /// The full key for a write the test makes itself (under this run's prefix, so the checker judges it).
    pub fn key(&self, name: &str) -> String {
        format!("{PREFIX}/{}/{name}", self.run)
    }

    /// Stops the writers, writes the fence through the (healed, stable) cluster, waits for every subscriber to
    /// reach it, and reads back the final state and every node's event log.
    pub async fn finish(self, cluster: &TestCluster) -> History {
        self.finish_with(cluster, Vec::new()).await
    }

    /// [`Workload::finish`], judging also `extra` writes the test made itself (keys from [`Workload::key`]).
    pub async fn finish_with(self, cluster: &TestCluster, extra: Vec<Write>) -> History {
        let _ = self.stop_writers.send(true);
        let mut writes = extra;
        for writer in self.writers {
            writes.extend(writer.await.expect("writer task"));
        }
        let leader = cluster.wait_stable().await;
        let fence_body = json!({ "data": { "p": "fence" } });
        let fence = fence_key(&self.run);
        let written = cluster.client(leader).post(&format!("/v1/secret/data/{fence}"), &fence_body).await;
        assert_eq!(written.expect("fence").status, 200, "fence write");
        let give_up = self.give_up;
        let timer = tokio::spawn(async move {
            tokio::time::sleep(WAIT).await;
            let _ = give_up.send(true);
        });
        let mut streams = Vec::new();
        for subscriber in self.subscribers {
            streams.push(subscriber.await.expect("subscriber task"));
        }
        timer.abort();
        let keys: BTreeSet<String> = writes.iter().map(|w| w.key.clone()).chain([fence.clone()]).collect();
        let mut state = Vec::new();
        let mut logs = Vec::new();
        // Every running node, including any that joined after the workload started.
        for (i, node) in cluster.nodes.iter().enumerate() {
            if !node.is_running() {
                continue;
            }
            // The whole log through the fence: afterwards this node has applied everything written before it.
            logs.push(read_log(&node.api_addr(), &self.token, &fence).await);
            state.push(read_state(cluster, i, &keys).await);
        }
        History { run: self.run, writes, streams, state, logs }
    }
}

/// Rounds of a scenario: `short` in CI, `VIGIL_FAULT_ROUNDS` (or 10× with `VIGIL_FAULT_LONG=1`) for long runs.
pub fn rounds(short: usize) -> usize {
    if let Some(n) = std::env::var("VIGIL_FAULT_ROUNDS").ok().and_then(|v| v.parse().ok()) {
        return n;
    }
    if std::env::var("VIGIL_FAULT_LONG").is_ok_and(|v| v == "1") {
        return short * 10;
    }
    short
}

/// Scales per-writer write counts like [`rounds`].
pub fn long_factor() -> usize {
    rounds(1).max(1)
}

async fn write_loop(
    run: String,
    writer: usize,
    addrs: Arc<Vec<String>>,
    token: String,
    options: WorkloadOptions,
    stop: watch::Receiver<bool>,
    attempted: Arc<AtomicUsize>,
) -> Vec<Write> {
    let mut node = writer % addrs.len();
    let mut writes = Vec::new();
    for n in 0..options.max_writes_per_writer * long_factor() {
        if *stop.borrow() {
            break;
        }
        let key = format!("{PREFIX}/{run}/w{writer}/k{}", n % options.keys_per_writer);
        let payload = format!("{run}-w{writer}-{n}");
        let client = Client::new(&addrs[node]).with_token(token.clone()).with_timeout(Duration::from_secs(10));
        let body = json!({ "data": { "p": payload } });
        let outcome = match client.post(&format!("/v1/secret/data/{key}"), &body).await {
            Ok(resp) if resp.status == 200 => match resp.json().ok().and_then(|j| j["data"]["version"].as_u64()) {
                Some(version) => Outcome::Acked(version),
                None => Outcome::Unknown(format!("200 without a version: {}", resp.text())),
            },
            Ok(resp) if (400..500).contains(&resp.status) => {
                Outcome::Failed(format!("{}: {}", resp.status, resp.text()))
            }
            Ok(resp) => Outcome::Unknown(format!("{}: {}", resp.status, resp.text())),
            Err(e) => Outcome::Unknown(e.to_string()),
        };
        let failed = !matches!(outcome, Outcome::Acked(_));
        writes.push(Write { key, payload, node, outcome });
        attempted.fetch_add(1, Ordering::Relaxed);
        if failed {
            // Try another node, without hammering a dead one.
            node = (node + 1) % addrs.len();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    writes
}

/// Follows `*` from sequence 0, resuming on the next node whenever the connection fails or goes quiet, until the
/// fence event (or `give_up`).
async fn subscribe(
    name: String,
    addrs: Arc<Vec<String>>,
    mut node: usize,
    token: String,
    fence: String,
    give_up: watch::Receiver<bool>,
) -> Stream {
    let mut stream = Stream { name, ..Default::default() };
    let mut cursor = 0u64;
    while !*give_up.borrow() {
        let url = format!(
            "{}/v1/sys/events/subscribe/*?json=true&since={cursor}",
            addrs[node].replacen("http://", "ws://", 1)
        );
        let mut request = url.into_client_request().expect("request");
        request.headers_mut().insert("x-vault-token", token.parse().expect("token header"));
        let connected = tokio::time::timeout(Duration::from_secs(3), tokio_tungstenite::connect_async(request)).await;
        let Ok(Ok((mut ws, _))) = connected else {
            node = (node + 1) % addrs.len();
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        stream.connections += 1;
        loop {
            let frame = match tokio::time::timeout(SUBSCRIBER_IDLE, ws.next()).await {
                Ok(Some(Ok(frame))) => frame,
                // Quiet, closed or broken: resume elsewhere (a quiet node may be paused or cut off).
                _ => break,
            };
            let Message::Text(text) = frame else { continue };
            let event: Value = serde_json::from_str(&text).expect("event JSON");
            let Some(seen) = seen_event(&event) else { panic!("{}: unparsable event {event}", stream.name) };
            cursor = seen.sequence;
            let is_fence = seen.data_path == format!("secret/data/{fence}");
            stream.events.push(seen);
            if is_fence {
                stream.complete = true;
                return stream;
            }
        }
        node = (node + 1) % addrs.len();
    }
    stream
}

/// Node `addr`'s event log from sequence 1 through the fence event.
async fn read_log(addr: &str, token: &str, fence: &str) -> Vec<Value> {
    let url = format!("{}/v1/sys/events/subscribe/*?json=true&since=0", addr.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert("x-vault-token", token.parse().expect("token header"));
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("subscribe for the log");
    let deadline = Instant::now() + WAIT;
    let mut log = Vec::new();
    while Instant::now() < deadline {
        let frame = tokio::time::timeout(WAIT, ws.next()).await.expect("log frame in time");
        let Some(Ok(Message::Text(text))) = frame else { continue };
        let event: Value = serde_json::from_str(&text).expect("event JSON");
        let is_fence = event["data"]["event"]["metadata"]["data_path"] == json!(format!("secret/data/{fence}"));
        log.push(event);
        if is_fence {
            return log;
        }
    }
    panic!("no fence event in {addr}'s log after {WAIT:?}");
}

/// Every version of every key in `keys` as node `i` has it.
pub async fn read_state(
    cluster: &TestCluster,
    i: usize,
    keys: &BTreeSet<String>,
) -> BTreeMap<String, BTreeMap<u64, Option<String>>> {
    let client = cluster.client(i);
    let mut state = BTreeMap::new();
    for key in keys {
        let what = format!("metadata of {key} on node {}", i + 1);
        let metadata = wait_for(&what, WAIT, || async {
            let resp = client.get(&format!("/v1/secret/metadata/{key}")).await.ok()?;
            match resp.status {
                200 => Some(Some(resp.json().ok()?)),
                404 => Some(None),
                _ => None,
            }
        })
        .await;
        let Some(metadata) = metadata else { continue };
        let mut versions = BTreeMap::new();
        let listed = metadata["data"]["versions"].as_object().cloned().unwrap_or_default();
        for version in listed.keys() {
            let version: u64 = version.parse().expect("version number");
            let resp = client.get(&format!("/v1/secret/data/{key}?version={version}")).await.expect("read version");
            let payload = match resp.status {
                200 => Some(resp.json().expect("json")["data"]["data"]["p"].as_str().expect("payload").to_string()),
                _ => None,
            };
            versions.insert(version, payload);
        }
        state.insert(key.clone(), versions);
    }
    state
}
