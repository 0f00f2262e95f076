//! Event-delivery load tool for a live Vigil or etcd cluster (a `harness = false` bench: it measures, it asserts
//! nothing).
//!
//! `--target etcd` runs the same load shapes against etcd's v3 JSON gateway: writes are `POST /v3/kv/put` of the
//! same paths (as keys), and a subscription is a watch (`POST /v3/watch`, a chunked stream of JSON messages, one
//! HTTP connection per watch) on the prefix `<mount>/`; an event's sequence is its `mod_revision`, its path its key.
//! The cluster directory then holds the etcd members' nodeN.addr (client URL) and nodeN.pid files, as written by
//! scripts/bench.sh, and the leader is the member whose `/v3/maintenance/status` names itself.
//!
//! Delivery latency to one subscriber on a follower (the default mode):
//!
//! ```text
//! cargo bench --bench events -- [--latency] [--cluster-dir .cluster] [--addr URL]... [--token T]
//!                               [--sub-addr URL] [--duration 10] [--warmup 1] [--pattern 'kv*'] [--mount kv]
//!                               [--target vigil|etcd] [--record FILE]
//! ```
//!
//! Finds the leader (`GET /v1/sys/leader`), subscribes (`/v1/sys/events/subscribe/<pattern>?json=true`) on a
//! follower (or `--sub-addr`), then writes one key at a time on the leader (`PUT /v1/<mount>/bench/ev-<run>/lat/<i>`)
//! and waits for its event (matched on `data.event.metadata.path`) before the next write. Rows: acknowledgement
//! (204 received) → event received, request sent → event received, request sent → acknowledgement.
//!
//! Fan-out to many subscriptions:
//!
//! ```text
//! cargo bench --bench events -- --fanout 1000,10000 [--sub-addr URL] [--rate 1000] [--writers 8]
//!                               [--duration 10] [--warmup 1] [--connect-batch 200] [--drain 10]
//! ```
//!
//! For each count N: opens N subscriptions to one node (default: the first follower), `--connect-batch` at a time,
//! one tokio task each; writes on the leader at `--rate` writes/s for `--duration` s (after `--warmup` s of the same
//! load on other keys) with `--writers` writers, each paced by its own interval; then waits until every subscription
//! has every event (or until nothing arrives for `--drain` s). The write path of each acknowledged write records the
//! acknowledgement time under the key's number; each subscription records arrival − acknowledgement per event (one
//! clock: the same process) into a shared HdrHistogram. Every subscription is checked for a missing, duplicated or
//! out-of-order event. The subscribed node's resident memory (`VmRSS`) is read before the subscriptions connect,
//! once they are connected and idle, and at the end; its CPU time (`utime + stime`) over the write phase is given
//! as a % of one core, as is this process's. The node's pid comes from `<cluster-dir>/nodeN.pid`, matched to the
//! address through `<cluster-dir>/nodeN.addr`; without it those columns are `-`.
//!
//! `--record FILE` appends `<target>.<measure> <value>` lines to FILE (for scripts/bench.sh).
//!
//! The token is `--token`, else `$VIGIL_TOKEN`, else `$VAULT_TOKEN`, else `<cluster-dir>/root-token`. Addresses are
//! the `--addr`s, else the `nodeN.addr` files of `--cluster-dir`.
//!
//! Cargo passes `--bench` when benchmarking; without it (e.g. `cargo test --benches`, which runs bench
//! targets as smoke tests) the tool prints a note and exits successfully instead of needing a live cluster.

use std::borrow::Cow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use bytes::Bytes;
use clap::Parser;
use common::{new_histogram, normalize_addr, read_nodes, rss_kib, Node, Recorder, Target};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use vigil::client::Client;

#[derive(Debug, Parser)]
#[command(
    name = "events",
    about = "Event delivery latency and fan-out measurements against a live Vigil or etcd cluster"
)]
struct Opts {
    /// The system under test.
    #[arg(long, value_enum, default_value = "vigil")]
    target: Target,
    /// A node's API address; repeatable [default: the nodeN.addr files in --cluster-dir].
    #[arg(long = "addr", value_name = "URL")]
    addrs: Vec<String>,
    /// The token [default: $VIGIL_TOKEN, else $VAULT_TOKEN, else <cluster-dir>/root-token].
    #[arg(long)]
    token: Option<String>,
    /// The directory with the cluster's nodeN.addr, nodeN.pid and root-token files [default: .cluster for Vigil,
    /// .etcd-cluster for etcd].
    #[arg(long, value_name = "DIR")]
    cluster_dir: Option<PathBuf>,
    /// Append `<target>.<measure> <value>` lines to this file.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Measure write-to-event latency with one subscriber (the default mode).
    #[arg(long, conflicts_with = "fanout")]
    latency: bool,
    /// Comma-separated subscription counts, one fan-out run each.
    #[arg(long, value_delimiter = ',', value_name = "N[,M...]")]
    fanout: Vec<usize>,
    /// The node to subscribe on [default: the first node that is not the leader].
    #[arg(long, value_name = "URL")]
    sub_addr: Option<String>,
    /// The event type pattern to subscribe to (Vigil; etcd watches the prefix `<mount>/`).
    #[arg(long, default_value = "kv*")]
    pattern: String,
    /// Seconds of each measured run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of unmeasured load before each run.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Writes per second in fan-out runs.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Concurrent writers in fan-out runs.
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Subscriptions opened concurrently while connecting (fan-out).
    #[arg(long, default_value_t = 200)]
    connect_batch: usize,
    /// Seconds without a new event after which a fan-out run stops waiting for missing events.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
    /// Seconds to let the node settle after the subscriptions connected, before reading its idle memory.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// The kv-v1 mount to write under (for etcd: the first segment of every key).
    #[arg(long, default_value = "kv")]
    mount: String,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
    /// Benchmark name filters passed on by cargo; ignored.
    #[arg(hide = true)]
    filters: Vec<String>,
}

fn main() -> ExitCode {
    let opts = Opts::parse();
    if !opts.bench {
        eprintln!("events: not run as a benchmark (no --bench flag); use `cargo bench --bench events -- [options]`");
        return ExitCode::SUCCESS;
    }
    if !opts.filters.is_empty() {
        eprintln!("events: ignoring benchmark filters {:?}", opts.filters);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async {
        if opts.fanout.is_empty() {
            latency(&opts).await
        } else {
            fanout(&opts).await
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("events: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Shared helpers: options, nodes, leader, subscriptions, /proc.

/// How long a write or a subscription handshake may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the latency mode waits for the event of one write.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

fn check_times(opts: &Opts) -> Result<(), String> {
    let finite = |v: f64| v.is_finite();
    if !finite(opts.duration) || opts.duration <= 0.0 || !finite(opts.warmup) || opts.warmup < 0.0 {
        return Err("--duration must be positive and --warmup non-negative".to_string());
    }
    if !finite(opts.drain) || opts.drain < 0.0 || !finite(opts.settle) || opts.settle < 0.0 {
        return Err("--drain and --settle must be non-negative".to_string());
    }
    Ok(())
}

impl Opts {
    fn cluster_dir(&self) -> PathBuf {
        self.cluster_dir.clone().unwrap_or_else(|| PathBuf::from(self.target.default_cluster_dir()))
    }

    fn recorder(&self) -> Recorder {
        Recorder::new(self.record.as_deref(), self.target)
    }

    /// What a subscription asks for: Vigil's event type pattern, or etcd's key prefix.
    fn topic(&self) -> String {
        match self.target {
            Target::Vigil => self.pattern.clone(),
            Target::Etcd => format!("{}/", self.mount.trim_matches('/')),
        }
    }
}

fn token(opts: &Opts) -> Option<String> {
    match opts.target {
        Target::Vigil => common::token(opts.token.as_deref(), Some(&opts.cluster_dir())),
        Target::Etcd => None,
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// `p50 | p99 | max` in milliseconds, or dashes for an empty histogram.
fn quantiles(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "- | - | -".to_string();
    }
    let ms = |v: u64| format!("{:.2}", v as f64 / 1000.0);
    format!("{} | {} | {}", ms(h.value_at_quantile(0.5)), ms(h.value_at_quantile(0.99)), ms(h.max()))
}

/// The nodes to use: the `--addr`s (with names and pids from the cluster directory where it knows them), else
/// the cluster directory's nodes.
fn nodes(opts: &Opts) -> Result<Vec<Node>, String> {
    let dir = opts.cluster_dir();
    let known = read_nodes(&dir);
    if opts.addrs.is_empty() {
        let nodes = known?;
        if nodes.is_empty() {
            return Err(format!("no nodeN.addr files in {} (and no --addr)", dir.display()));
        }
        return Ok(nodes);
    }
    let known = known.unwrap_or_default();
    Ok(opts.addrs.iter().map(|a| node_for(a, &known)).collect())
}

fn node_for(addr: &str, known: &[Node]) -> Node {
    let addr = normalize_addr(addr);
    known.iter().find(|n| n.addr == addr).cloned().unwrap_or_else(|| Node { name: addr.clone(), addr, pid: None })
}

/// The leader and the node to subscribe on.
async fn leader_and_subscriber(opts: &Opts, token: Option<&str>) -> Result<(Node, Node), String> {
    let nodes = nodes(opts)?;
    let leader = nodes[opts.target.find_leader(&nodes, token).await?].clone();
    let sub = match &opts.sub_addr {
        Some(addr) => {
            let known = read_nodes(&opts.cluster_dir()).unwrap_or_default();
            let mut node = node_for(addr, &nodes);
            if node.pid.is_none() {
                node.pid = node_for(addr, &known).pid;
            }
            node
        }
        None => match nodes.iter().find(|n| n.addr != leader.addr) {
            Some(n) => n.clone(),
            None => {
                eprintln!("events: warning: only the leader is known; subscribing on the leader itself");
                leader.clone()
            }
        },
    };
    Ok((leader, sub))
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One subscription: a Vigil WebSocket (`/v1/sys/events/subscribe/<pattern>?json=true`) or an etcd watch
/// (`POST /v3/watch` on its own HTTP/1.1 connection, answered by a chunked stream of newline-separated JSON).
enum EventStream {
    Vigil(Box<Ws>),
    Etcd(EtcdWatch),
}

struct EtcdWatch {
    body: hyper::body::Incoming,
    /// Received bytes not yet split into complete messages.
    buf: Vec<u8>,
    /// Scratch space for decoding keys.
    key: Vec<u8>,
    connection: tokio::task::JoinHandle<()>,
}

impl EventStream {
    /// Subscribes on the node at `addr` to `topic` (Vigil: an event type pattern; etcd: a key prefix), and
    /// returns once the subscription is in place (Vigil: the WebSocket handshake; etcd: the `created` message).
    async fn open(target: Target, addr: &str, topic: &str, token: Option<&str>) -> Result<EventStream, String> {
        let open = async {
            match target {
                Target::Vigil => {
                    subscribe(&subscribe_url(addr, topic), token).await.map(|ws| EventStream::Vigil(Box::new(ws)))
                }
                Target::Etcd => EtcdWatch::open(addr, topic).await.map(EventStream::Etcd),
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, open)
            .await
            .unwrap_or_else(|_| Err(format!("no subscription within {} s", REQUEST_TIMEOUT.as_secs())))
    }

    /// Waits for the next frame (Vigil) or chunk (etcd) and calls `on_event` for each event in it with its
    /// `(sequence, path)`, or with `None` for a frame that cannot be read. An error ends the subscription and says
    /// why.
    async fn next(&mut self, mut on_event: impl FnMut(Option<(u64, &str)>)) -> Result<(), String> {
        match self {
            EventStream::Vigil(ws) => match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    match frame_fields(text.as_str()) {
                        Some((sequence, path)) => on_event(Some((sequence, &path))),
                        None => on_event(None),
                    }
                    Ok(())
                }
                Some(Ok(Message::Close(frame))) => Err(format!("closed by the server: {frame:?}")),
                Some(Ok(_)) => Ok(()),
                Some(Err(e)) => Err(e.to_string()),
                None => Err("connection ended".to_string()),
            },
            EventStream::Etcd(watch) => watch.next(on_event).await,
        }
    }

    async fn close(self) {
        match self {
            EventStream::Vigil(mut ws) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
            }
            EventStream::Etcd(watch) => watch.connection.abort(),
        }
    }
}

impl EtcdWatch {
    async fn open(addr: &str, prefix: &str) -> Result<EtcdWatch, String> {
        let host = addr.strip_prefix("http://").unwrap_or(addr).trim_end_matches('/');
        let stream = TcpStream::connect(host).await.map_err(|e| format!("connecting to {host}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {host}: {e}"))?;
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        // The range [prefix, prefix with its last byte incremented) is every key under the prefix.
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let body = format!(
            r#"{{"create_request":{{"key":"{}","range_end":"{}"}}}}"#,
            common::base64_encode(prefix.as_bytes()),
            common::base64_encode(&end)
        );
        let request = hyper::Request::post("/v3/watch")
            .header(hyper::header::HOST, host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| format!("POST {host}/v3/watch: {e}"))?;
        let status = response.status();
        let mut watch = EtcdWatch { body: response.into_body(), buf: Vec::new(), key: Vec::new(), connection };
        if !status.is_success() {
            let text = match (&mut watch.body).collect().await {
                Ok(b) => String::from_utf8_lossy(&b.to_bytes()).chars().take(200).collect(),
                Err(e) => e.to_string(),
            };
            return Err(format!("HTTP {}: {text}", status.as_u16()));
        }
        // The first message confirms the watch.
        loop {
            if let Some(i) = watch.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = watch.buf.drain(..=i).collect();
                let text = String::from_utf8_lossy(&line);
                if text.contains("\"created\":true") {
                    return Ok(watch);
                }
                return Err(format!("unexpected first watch message: {}", text.chars().take(200).collect::<String>()));
            }
            watch.read().await?;
        }
    }

    /// Reads one more chunk of the response into `buf`.
    async fn read(&mut self) -> Result<(), String> {
        match self.body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    self.buf.extend_from_slice(&data);
                }
                Ok(())
            }
            Some(Err(e)) => Err(e.to_string()),
            None => Err("watch stream ended".to_string()),
        }
    }

    async fn next(&mut self, mut on_event: impl FnMut(Option<(u64, &str)>)) -> Result<(), String> {
        loop {
            let mut start = 0;
            while let Some(len) = self.buf[start..].iter().position(|&b| b == b'\n') {
                let line = &self.buf[start..start + len];
                start += len + 1;
                etcd_events(line, &mut self.key, &mut on_event)?;
            }
            if start > 0 {
                self.buf.drain(..start);
                return Ok(());
            }
            self.read().await?;
        }
    }
}

/// Calls `on_event` with `(mod_revision, key)` for each event of one watch response message. The gateway writes
/// compact JSON with the key before the revisions, and base64 has no quotes, so substring search suffices.
fn etcd_events(line: &[u8], key: &mut Vec<u8>, on_event: &mut impl FnMut(Option<(u64, &str)>)) -> Result<(), String> {
    let Ok(text) = std::str::from_utf8(line) else {
        on_event(None);
        return Ok(());
    };
    if text.contains("\"canceled\":true") || text.starts_with("{\"error\"") {
        return Err(format!("watch ended: {}", text.chars().take(300).collect::<String>()));
    }
    let mut rest = text;
    while let Some(at) = rest.find("\"key\":\"") {
        rest = &rest[at + 7..];
        let parsed = (|| {
            let key_end = rest.find('"')?;
            let encoded = &rest[..key_end];
            let revision_at = rest.find("\"mod_revision\":\"")? + 16;
            let revision_len = rest[revision_at..].find('"')?;
            let revision = rest[revision_at..revision_at + revision_len].parse::<u64>().ok()?;
            common::base64_decode_into(encoded.as_bytes(), key).then_some(revision)
        })();
        match parsed.and_then(|revision| Some((revision, std::str::from_utf8(key).ok()?))) {
            Some(event) => on_event(Some(event)),
            None => on_event(None),
        }
    }
    Ok(())
}

/// The `ws://` URL of the subscribe endpoint for `pattern` (JSON frames) on the node at `addr`.
fn subscribe_url(addr: &str, pattern: &str) -> String {
    let base = match addr.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}"),
        None => format!("ws://{}", addr.strip_prefix("http://").unwrap_or(addr)),
    };
    format!("{base}/v1/sys/events/subscribe/{pattern}?json=true")
}

/// Opens a WebSocket subscription; an error says why (HTTP status and body when the server refused the upgrade).
async fn subscribe(url: &str, token: Option<&str>) -> Result<Ws, String> {
    let mut request = url.into_client_request().map_err(|e| format!("bad URL {url}: {e}"))?;
    if let Some(t) = token {
        request.headers_mut().insert("x-vault-token", t.parse().map_err(|e| format!("bad token: {e}"))?);
    }
    // Frames are a few hundred bytes and the client sends nothing: small buffers keep 10,000 connections cheap.
    let config = WebSocketConfig::default().read_buffer_size(4 * 1024).write_buffer_size(0);
    match tokio_tungstenite::connect_async_with_config(request, Some(config), true).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => Err(format!(
            "HTTP {}: {}",
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// The `sequence` and `data.event.metadata.path` of a CloudEvents JSON frame.
///
/// The server writes compact JSON, so a substring search finds both fields without parsing the whole frame (the
/// fan-out mode handles millions of frames); anything unexpected falls back to a full parse.
fn frame_fields(text: &str) -> Option<(u64, Cow<'_, str>)> {
    fn quoted_after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
        let start = text.find(key)? + key.len();
        let len = text[start..].find('"')?;
        Some(&text[start..start + len])
    }
    let fast = || {
        let sequence = quoted_after(text, "\"sequence\":\"")?.parse::<u64>().ok()?;
        let path = quoted_after(text, "\"path\":\"")?;
        (!path.contains('\\')).then_some((sequence, Cow::Borrowed(path)))
    };
    fast().or_else(|| {
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        let sequence = value.get("sequence")?.as_str()?.parse::<u64>().ok()?;
        let path = value.pointer("/data/event/metadata/path")?.as_str()?.to_string();
        Some((sequence, Cow::Owned(path)))
    })
}

/// A process's CPU time so far (`utime + stime` of `/proc/<which>/stat`), in clock ticks; `which` is a pid or
/// `self`.
fn cpu_ticks(which: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{which}/stat")).ok()?;
    // The command name (field 2) may contain spaces; the fields after its closing parenthesis start at field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// The soft open-files limit of a process (`/proc/<pid>/limits`).
fn fd_limit_of(pid: i32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// Raises this process's open-files soft limit to its hard limit; returns the soft limit in force.
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 only on some targets
fn raise_fd_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only access the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let max = if limit.rlim_max == libc::RLIM_INFINITY { 1 << 20 } else { limit.rlim_max };
            let raised = libc::rlimit { rlim_cur: max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = max;
            }
        }
    }
    Some(limit.rlim_cur as u64)
}

/// Writes `path` and checks it is acknowledged, so that a bad token or mount fails before measuring.
async fn probe_write(target: Target, writer: &Client, path: &str) -> Result<(), String> {
    target
        .put(writer, path, "probe")
        .await
        .map_err(|e| format!("probe write {path} on {} fails: {}", writer.addr(), e.message))
}

fn run_id() -> String {
    format!("ev-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

// ---------------------------------------------------------------------------------------------------------
// Latency: one subscriber, one write at a time.

/// What the subscription's reader task hands to the writer.
enum Arrival {
    Event { path: String, at: Instant },
    Ended(String),
}

/// Reads a subscription, forwarding the events whose path starts with `prefix` with their arrival time, and
/// counting sequences that do not increase.
async fn latency_reader(
    mut stream: EventStream,
    prefix: String,
    tx: mpsc::UnboundedSender<Arrival>,
    disorder: Arc<AtomicU64>,
) {
    let mut last_sequence = 0u64;
    let mut stop: Option<String> = None;
    let reason = loop {
        let next = stream
            .next(|item| {
                let at = Instant::now();
                let Some((sequence, path)) = item else {
                    stop.get_or_insert_with(|| "unreadable frame".to_string());
                    return;
                };
                if sequence <= last_sequence {
                    disorder.fetch_add(1, Ordering::Relaxed);
                }
                last_sequence = sequence;
                if path.starts_with(&prefix) && tx.send(Arrival::Event { path: path.to_string(), at }).is_err() {
                    stop.get_or_insert_with(String::new);
                }
            })
            .await;
        if let Err(reason) = next {
            break reason;
        }
        if let Some(reason) = stop.take() {
            break reason;
        }
    };
    let _ = tx.send(Arrival::Ended(reason));
}

#[derive(Default)]
struct LatencyStats {
    ack_to_event: Option<Histogram<u64>>,
    sent_to_event: Option<Histogram<u64>>,
    sent_to_ack: Option<Histogram<u64>>,
    writes: u64,
    events: u64,
    lost: u64,
    /// Events that arrived before the write's acknowledgement did (recorded as 0 ms ack → event).
    before_ack: u64,
    errors: u64,
    first_error: Option<String>,
}

async fn latency(opts: &Opts) -> Result<(), String> {
    check_times(opts)?;
    let token = token(opts);
    if token.is_none() && opts.target == Target::Vigil {
        eprintln!("events: warning: no token (--token, VIGIL_TOKEN, <cluster-dir>/root-token)");
    }
    let (leader, sub) = leader_and_subscriber(opts, token.as_deref()).await?;
    let mount = opts.mount.trim_matches('/').to_string();
    let run = run_id();
    let target = opts.target;
    let writer = target.client(&leader.addr, token.as_deref(), REQUEST_TIMEOUT);
    probe_write(target, &writer, &format!("{mount}/bench/{run}/probe")).await?;

    let stream = EventStream::open(target, &sub.addr, &opts.topic(), token.as_deref())
        .await
        .map_err(|e| format!("subscribing on {}: {e}", sub.addr))?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let disorder = Arc::new(AtomicU64::new(0));
    let reader = tokio::spawn(latency_reader(stream, format!("{mount}/bench/{run}/"), tx, disorder.clone()));
    eprintln!(
        "events: {} run {run}: latency, writes on the leader {} ({}), subscription `{}` on {} ({}), {} s (+{} s \
         warm-up)",
        target.name(),
        leader.name,
        leader.addr,
        opts.topic(),
        sub.name,
        sub.addr,
        opts.duration,
        opts.warmup
    );

    if opts.warmup > 0.0 {
        let warm =
            latency_run(target, &writer, &mut rx, &format!("{mount}/bench/{run}/warm"), opts.warmup, false).await?;
        if warm.lost > 0 || warm.errors > 0 {
            eprintln!("events: warm-up: {} lost events, {} write errors", warm.lost, warm.errors);
        }
    }
    let stats = latency_run(target, &writer, &mut rx, &format!("{mount}/bench/{run}/lat"), opts.duration, true).await?;
    reader.abort();
    if let Some(e) = &stats.first_error {
        eprintln!("events: {} write errors, first: {e}", stats.errors);
    }
    let disorder = disorder.load(Ordering::Relaxed);
    let role = if sub.addr == leader.addr { "leader" } else { "follower" };
    let on = format!("{} ({role})", sub.name);
    let empty = new_histogram();
    println!("| measure | writes | events | lost | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let rows = [
        (format!("ack → event on {on}"), &stats.ack_to_event),
        (format!("sent → event on {on}"), &stats.sent_to_event),
        (format!("sent → ack ({})", leader.name), &stats.sent_to_ack),
    ];
    for (measure, h) in rows {
        let h = h.as_ref().unwrap_or(&empty);
        println!("| {measure} | {} | {} | {} | {} |", stats.writes, stats.events, stats.lost, quantiles(h));
    }
    let recorder = opts.recorder();
    recorder.record_quantiles("event_ack_to_event", stats.ack_to_event.as_ref().unwrap_or(&empty));
    recorder.record_quantiles("event_sent_to_event", stats.sent_to_event.as_ref().unwrap_or(&empty));
    recorder.record_quantiles("event_sent_to_ack", stats.sent_to_ack.as_ref().unwrap_or(&empty));
    recorder.record("event_writes", stats.writes);
    recorder.record("event_lost", stats.lost);
    recorder.record("event_disorder", disorder);
    if stats.before_ack > 0 {
        eprintln!("events: {} events arrived before their write's 204 (counted as 0 ms ack → event)", stats.before_ack);
    }
    if stats.lost > 0 || disorder > 0 {
        eprintln!(
            "events: LOSS OR DISORDER: {} events never arrived, {disorder} sequences did not increase",
            stats.lost
        );
    }
    Ok(())
}

/// Writes `<key_prefix>/<i>` one at a time for `seconds`, each time waiting for its event.
async fn latency_run(
    target: Target,
    writer: &Client,
    rx: &mut mpsc::UnboundedReceiver<Arrival>,
    key_prefix: &str,
    seconds: f64,
    record: bool,
) -> Result<LatencyStats, String> {
    let mut stats = LatencyStats::default();
    let (mut ack_to_event, mut sent_to_event, mut sent_to_ack) = (new_histogram(), new_histogram(), new_histogram());
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut i: u64 = 0;
    while Instant::now() < deadline {
        let event_path = format!("{key_prefix}/{i}");
        i += 1;
        let sent = Instant::now();
        let acked = match target.put(writer, &event_path, "x").await {
            Ok(()) => Instant::now(),
            Err(e) => {
                stats.errors += 1;
                stats.first_error.get_or_insert(e.message);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        stats.writes += 1;
        let wait_until = tokio::time::Instant::from_std(acked + EVENT_TIMEOUT);
        let arrived = loop {
            match tokio::time::timeout_at(wait_until, rx.recv()).await {
                Ok(Some(Arrival::Event { path, at })) if path == event_path => break Some(at),
                Ok(Some(Arrival::Event { .. })) => {} // a late event of a write given up on
                Ok(Some(Arrival::Ended(reason))) => return Err(format!("the subscription ended: {reason}")),
                Ok(None) => return Err("the subscription reader stopped".to_string()),
                Err(_) => break None,
            }
        };
        let Some(at) = arrived else {
            stats.lost += 1;
            eprintln!("events: no event for {event_path} within {} s of its 204", EVENT_TIMEOUT.as_secs());
            continue;
        };
        stats.events += 1;
        if at < acked {
            stats.before_ack += 1;
        }
        ack_to_event.saturating_record(micros(at.saturating_duration_since(acked)));
        sent_to_event.saturating_record(micros(at.duration_since(sent)));
        sent_to_ack.saturating_record(micros(acked.duration_since(sent)));
    }
    if record {
        stats.ack_to_event = Some(ack_to_event);
        stats.sent_to_event = Some(sent_to_event);
        stats.sent_to_ack = Some(sent_to_ack);
    }
    Ok(stats)
}

// ---------------------------------------------------------------------------------------------------------
// Fan-out: many subscriptions, paced writes.

/// Histogram shards subscriptions record into (fewer lock collisions than one).
const SHARDS: usize = 8;
/// Latencies a subscription collects before it records them in its shard.
const LOCAL_BATCH: usize = 256;

/// What the writers and subscriptions of one fan-out run share.
struct Shared {
    /// The clock origin of `acks` and arrival times.
    base: Instant,
    /// Per write number: nanoseconds after `base` at which its 204 arrived, plus one; 0 while unacknowledged.
    acks: Vec<AtomicU64>,
    /// The event path prefix of the measured writes (`<mount>/bench/<run>/f<N>/m/`), followed by the write number.
    prefix: String,
    /// Measured events received, over all subscriptions (duplicates excluded).
    received: AtomicU64,
    /// Arrival − acknowledgement, µs.
    histograms: Vec<Mutex<Histogram<u64>>>,
    /// Events that arrived before their write's acknowledgement had been recorded.
    before_ack: AtomicU64,
}

impl Shared {
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.base).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    fn record(&self, shard: usize, latencies: &mut Vec<u64>) {
        if latencies.is_empty() {
            return;
        }
        let mut h = self.histograms[shard % SHARDS].lock().unwrap_or_else(|p| p.into_inner());
        for &v in latencies.iter() {
            h.saturating_record(v);
        }
        latencies.clear();
    }

    /// Arrival − acknowledgement in µs (at least 1), counting an arrival before the acknowledgement.
    fn latency(&self, arrival: u64, ack_plus_one: u64) -> u64 {
        let ack = ack_plus_one - 1;
        if arrival < ack {
            self.before_ack.fetch_add(1, Ordering::Relaxed);
        }
        (arrival.saturating_sub(ack) / 1000).max(1)
    }
}

/// What one subscription saw.
#[derive(Default)]
struct SubStats {
    connected: bool,
    /// Bit i: the event of write i arrived.
    seen: Vec<u64>,
    duplicates: u64,
    /// Frames whose sequence did not increase.
    disorder: u64,
    /// Frames that could not be read.
    unreadable: u64,
    /// Events that arrived before their write was acknowledged: (write number, arrival nanos).
    pending: Vec<(usize, u64)>,
    /// Why the subscription ended before it was stopped.
    ended: Option<String>,
}

#[allow(clippy::too_many_arguments)]
async fn subscriber(
    id: usize,
    target: Target,
    addr: Arc<str>,
    topic: Arc<str>,
    token: Option<Arc<str>>,
    shared: Arc<Shared>,
    ready: oneshot::Sender<Result<(), String>>,
    mut stop: oneshot::Receiver<()>,
) -> SubStats {
    let mut stats = SubStats::default();
    let mut stream = match EventStream::open(target, &addr, &topic, token.as_deref()).await {
        Ok(stream) => stream,
        Err(e) => {
            let _ = ready.send(Err(e));
            return stats;
        }
    };
    stats.connected = true;
    stats.seen = vec![0u64; shared.acks.len().div_ceil(64)];
    let _ = ready.send(Ok(()));
    let mut latencies: Vec<u64> = Vec::with_capacity(LOCAL_BATCH);
    let mut last_sequence = 0u64;
    let mut on_event = |item: Option<(u64, &str)>| {
        let arrival = shared.nanos(Instant::now());
        let Some((sequence, path)) = item else {
            stats.unreadable += 1;
            return;
        };
        if sequence <= last_sequence {
            stats.disorder += 1;
        }
        last_sequence = sequence;
        let Some(n) = path.strip_prefix(shared.prefix.as_str()).and_then(|n| n.parse::<usize>().ok()) else {
            return; // warm-up or someone else's event
        };
        if n >= shared.acks.len() {
            return;
        }
        let (word, bit) = (n / 64, 1u64 << (n % 64));
        if stats.seen[word] & bit != 0 {
            stats.duplicates += 1;
            return;
        }
        stats.seen[word] |= bit;
        shared.received.fetch_add(1, Ordering::Relaxed);
        match shared.acks[n].load(Ordering::Acquire) {
            0 => stats.pending.push((n, arrival)),
            ack => {
                latencies.push(shared.latency(arrival, ack));
                if latencies.len() == LOCAL_BATCH {
                    shared.record(id, &mut latencies);
                }
            }
        }
    };
    let ended = loop {
        let next = tokio::select! {
            biased;
            // Each subscription has its own stop channel: nothing shared is touched per frame.
            _ = &mut stop => break None,
            next = stream.next(&mut on_event) => next,
        };
        if let Err(reason) = next {
            break Some(reason);
        }
    };
    stats.ended = ended;
    shared.record(id, &mut latencies);
    stream.close().await;
    stats
}

/// What the writers of one phase did.
#[derive(Default)]
struct WriteStats {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Writes `<key_prefix><n>` for n taken from `next`, paced at `rate / writers` per writer, until `deadline`
/// (or, with `shared`, until its `acks` are used up); records acknowledgements in `shared`.
#[allow(clippy::too_many_arguments)]
async fn paced_writer(
    target: Target,
    client: Client,
    w: usize,
    writers: usize,
    rate: f64,
    key_prefix: Arc<str>,
    next: Arc<AtomicU64>,
    shared: Option<Arc<Shared>>,
    deadline: Instant,
) -> WriteStats {
    let mut stats = WriteStats::default();
    let period = Duration::from_secs_f64(writers as f64 / rate);
    let start = tokio::time::Instant::now() + Duration::from_secs_f64(w as f64 / rate);
    let mut interval = tokio::time::interval_at(start, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        if Instant::now() >= deadline {
            break;
        }
        let n = next.fetch_add(1, Ordering::Relaxed) as usize;
        if shared.as_ref().is_some_and(|s| n >= s.acks.len()) {
            break;
        }
        match target.put(&client, &format!("{key_prefix}{n}"), "x").await {
            Ok(()) => {
                if let Some(s) = &shared {
                    s.acks[n].store(s.nanos(Instant::now()) + 1, Ordering::Release);
                }
                stats.ok += 1;
            }
            Err(e) => {
                stats.errors += 1;
                stats.first_error.get_or_insert(e.message);
            }
        }
    }
    stats
}

/// Runs `writers` paced writers for `seconds`.
async fn write_phase(
    client: &Client,
    opts: &Opts,
    key_prefix: &str,
    shared: Option<Arc<Shared>>,
    seconds: f64,
) -> WriteStats {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let next = Arc::new(AtomicU64::new(0));
    let key_prefix: Arc<str> = Arc::from(key_prefix);
    let tasks: Vec<_> = (0..opts.writers)
        .map(|w| {
            let (c, p, n, s) = (client.clone(), key_prefix.clone(), next.clone(), shared.clone());
            tokio::spawn(paced_writer(opts.target, c, w, opts.writers, opts.rate, p, n, s, deadline))
        })
        .collect();
    let mut total = WriteStats::default();
    for task in tasks {
        match task.await {
            Ok(s) => {
                total.ok += s.ok;
                total.errors += s.errors;
                if total.first_error.is_none() {
                    total.first_error = s.first_error;
                }
            }
            Err(e) => {
                total.errors += 1;
                total.first_error.get_or_insert_with(|| format!("writer task failed: {e}"));
            }
        }
    }
    total
}

async fn fanout(opts: &Opts) -> Result<(), String> {
    check_times(opts)?;
    if opts.fanout.contains(&0) || opts.writers == 0 || opts.connect_batch == 0 {
        return Err("--fanout counts, --writers and --connect-batch must be positive".to_string());
    }
    if !opts.rate.is_finite() || opts.rate <= 0.0 {
        return Err("--rate must be positive".to_string());
    }
    let most = opts.fanout.iter().copied().max().unwrap_or(0) as u64;
    match raise_fd_limit() {
        Some(limit) if limit < most + 256 => eprintln!(
            "events: warning: this process may open {limit} files, fewer than {most} subscriptions need; \
             raise the hard limit (ulimit -Hn)"
        ),
        Some(_) => {}
        None => eprintln!("events: warning: cannot read RLIMIT_NOFILE"),
    }
    let token = token(opts);
    if token.is_none() && opts.target == Target::Vigil {
        eprintln!("events: warning: no token (--token, VIGIL_TOKEN, <cluster-dir>/root-token)");
    }
    let (leader, sub) = leader_and_subscriber(opts, token.as_deref()).await?;
    let mount = opts.mount.trim_matches('/').to_string();
    let run = run_id();
    let writer = opts.target.client(&leader.addr, token.as_deref(), REQUEST_TIMEOUT);
    probe_write(opts.target, &writer, &format!("{mount}/bench/{run}/probe")).await?;
    match sub.pid {
        None => eprintln!(
            "events: no pid known for {} (no matching nodeN.addr/nodeN.pid in {}): no memory or CPU figures",
            sub.addr,
            opts.cluster_dir().display()
        ),
        Some(pid) => {
            if let Some(limit) = fd_limit_of(pid).filter(|l| *l < most + 256) {
                eprintln!("events: warning: {} (pid {pid}) may open only {limit} files", sub.name);
            }
        }
    }
    eprintln!(
        "events: {} run {run}: fan-out, writes on the leader {} ({}) at {}/s with {} writers, subscriptions `{}` on {} \
         ({}, pid {}), {} s (+{} s warm-up)",
        opts.target.name(),
        leader.name,
        leader.addr,
        opts.rate,
        opts.writers,
        opts.topic(),
        sub.name,
        sub.addr,
        sub.pid.map_or("?".to_string(), |p| p.to_string()),
        opts.duration,
        opts.warmup
    );
    println!(
        "| subscribers | connected | connect s | writes/s | events/sub | received min–max | lost | dup/disorder \
         | p50 ms | p99 ms | max ms | drain s | RSS before MiB | RSS idle MiB | RSS end MiB | KiB/idle sub \
         | node CPU % | client CPU % |"
    );
    println!("|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &opts.fanout {
        let row = fanout_run(opts, n, &run, &mount, &writer, &sub, token.as_deref()).await?;
        println!("{row}");
        // Let the node release the closed subscriptions before the next baseline.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(())
}

/// One fan-out run with `n` subscriptions; returns its table row.
async fn fanout_run(
    opts: &Opts,
    n: usize,
    run: &str,
    mount: &str,
    writer: &Client,
    sub: &Node,
    token: Option<&str>,
) -> Result<String, String> {
    let ticks_per_second = clock_ticks_per_second();
    let capacity = (opts.rate * opts.duration).ceil() as usize + opts.writers + 16;
    let key_prefix = format!("{mount}/bench/{run}/f{n}/m/");
    let shared = Arc::new(Shared {
        base: Instant::now(),
        acks: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
        prefix: key_prefix.clone(),
        received: AtomicU64::new(0),
        histograms: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect(),
        before_ack: AtomicU64::new(0),
    });

    // Connect, a batch at a time.
    let rss_before = rss_kib(sub.pid);
    let addr: Arc<str> = Arc::from(sub.addr.as_str());
    let topic: Arc<str> = Arc::from(opts.topic());
    let token: Option<Arc<str>> = token.map(Arc::from);
    let mut stops = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    let (mut connected, mut failed, mut first_failure) = (0usize, 0usize, None::<String>);
    let connect_started = Instant::now();
    for batch_start in (0..n).step_by(opts.connect_batch) {
        let mut readies = Vec::with_capacity(opts.connect_batch);
        for id in batch_start..(batch_start + opts.connect_batch).min(n) {
            let (ready_tx, ready_rx) = oneshot::channel();
            let (stop_tx, stop_rx) = oneshot::channel();
            stops.push(stop_tx);
            let task = subscriber(
                id,
                opts.target,
                addr.clone(),
                topic.clone(),
                token.clone(),
                shared.clone(),
                ready_tx,
                stop_rx,
            );
            tasks.push(tokio::spawn(task));
            readies.push(ready_rx);
        }
        for ready in readies {
            match ready.await {
                Ok(Ok(())) => connected += 1,
                Ok(Err(e)) => {
                    failed += 1;
                    first_failure.get_or_insert(e);
                }
                Err(_) => {
                    failed += 1;
                    first_failure.get_or_insert_with(|| "subscription task failed".to_string());
                }
            }
        }
    }
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    if let Some(e) = &first_failure {
        eprintln!("events: {n} subscriptions: {failed} failed to connect, first: {e}");
    }
    eprintln!("events: {n} subscriptions: {connected} connected in {connect_seconds:.1} s");
    tokio::time::sleep(Duration::from_secs_f64(opts.settle)).await;
    let rss_idle = rss_kib(sub.pid);

    // Warm-up, then the measured writes.
    if opts.warmup > 0.0 {
        let warm = write_phase(writer, opts, &format!("{mount}/bench/{run}/f{n}/w/"), None, opts.warmup).await;
        if let Some(e) = &warm.first_error {
            eprintln!("events: warm-up: {} write errors, first: {e}", warm.errors);
        }
    }
    let pid_text = sub.pid.map(|p| p.to_string());
    let node_cpu_before = pid_text.as_deref().and_then(cpu_ticks);
    let client_cpu_before = cpu_ticks("self");
    let write_started = Instant::now();
    let writes = write_phase(writer, opts, &key_prefix, Some(shared.clone()), opts.duration).await;
    let write_seconds = write_started.elapsed().as_secs_f64();
    let cpu_percent = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(b), Some(a)) => format!("{:.0}", (a.saturating_sub(b)) as f64 / ticks_per_second / write_seconds * 100.0),
        _ => "-".to_string(),
    };
    let node_cpu = cpu_percent(node_cpu_before, pid_text.as_deref().and_then(cpu_ticks));
    let client_cpu = cpu_percent(client_cpu_before, cpu_ticks("self"));
    if let Some(e) = &writes.first_error {
        eprintln!("events: {n} subscriptions: {} write errors, first: {e}", writes.errors);
    }
    let write_rate = writes.ok as f64 / write_seconds;
    if write_rate < opts.rate * 0.95 {
        eprintln!(
            "events: {n} subscriptions: {write_rate:.0} writes/s of the {} asked for (try more --writers)",
            opts.rate
        );
    }

    // Wait for every subscription to have every event, or for the events to stop coming.
    let expected = connected as u64 * writes.ok;
    let (mut last, mut last_progress) = (shared.received.load(Ordering::Relaxed), Instant::now());
    let drained = loop {
        let received = shared.received.load(Ordering::Relaxed);
        if received >= expected {
            break true;
        }
        if received != last {
            (last, last_progress) = (received, Instant::now());
        } else if last_progress.elapsed().as_secs_f64() >= opts.drain {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let drain_seconds = if drained { write_started.elapsed().as_secs_f64() - write_seconds } else { f64::NAN };
    let rss_end = rss_kib(sub.pid);
    for stop in stops {
        let _ = stop.send(());
    }

    // Collect and check what each subscription saw.
    let acked: Vec<bool> = shared.acks.iter().map(|a| a.load(Ordering::Acquire) != 0).collect();
    let mut histogram = new_histogram();
    let (mut min_received, mut max_received) = (u64::MAX, 0u64);
    let (mut lost, mut subs_with_loss, mut unacked_events, mut duplicates, mut disorder, mut unreadable) =
        (0u64, 0usize, 0u64, 0u64, 0u64, 0u64);
    let (mut ended, mut first_ended) = (0usize, None::<String>);
    let mut first_loss: Option<(usize, Vec<usize>)> = None;
    for (id, task) in tasks.into_iter().enumerate() {
        let stats = task.await.map_err(|e| format!("subscription task failed: {e}"))?;
        if !stats.connected {
            continue;
        }
        let mut received = 0u64;
        let mut missing = Vec::new();
        for (i, &was_acked) in acked.iter().enumerate() {
            let seen = stats.seen[i / 64] & (1 << (i % 64)) != 0;
            match (was_acked, seen) {
                (true, true) => received += 1,
                (true, false) => missing.push(i),
                (false, true) => unacked_events += 1,
                (false, false) => {}
            }
        }
        for &(i, arrival) in &stats.pending {
            match shared.acks[i].load(Ordering::Acquire) {
                0 => {}
                ack => histogram.saturating_record(shared.latency(arrival, ack)),
            }
        }
        min_received = min_received.min(received);
        max_received = max_received.max(received);
        if !missing.is_empty() {
            lost += missing.len() as u64;
            subs_with_loss += 1;
            first_loss.get_or_insert((id, missing));
        }
        duplicates += stats.duplicates;
        disorder += stats.disorder;
        unreadable += stats.unreadable;
        if let Some(reason) = stats.ended {
            ended += 1;
            first_ended.get_or_insert(reason);
        }
    }
    for shard in &shared.histograms {
        histogram.add(&*shard.lock().unwrap_or_else(|p| p.into_inner())).expect("same histogram bounds");
    }
    if lost > 0 {
        let (id, missing) = first_loss.as_ref().expect("a subscription lost events");
        let shown: Vec<String> = missing.iter().take(10).map(|i| format!("{key_prefix}{i}")).collect();
        eprintln!(
            "events: {n} subscriptions: LOST {lost} events over {subs_with_loss} subscriptions; subscription {id} \
             missed {} of {}, e.g. {}",
            missing.len(),
            writes.ok,
            shown.join(", ")
        );
    }
    if let Some(reason) = &first_ended {
        eprintln!("events: {n} subscriptions: {ended} ended before the run did, first: {reason}");
    }
    if duplicates + disorder + unreadable > 0 {
        eprintln!("events: {n} subscriptions: {duplicates} duplicates, {disorder} non-increasing sequences, {unreadable} unreadable frames");
    }
    if unacked_events > 0 {
        eprintln!("events: {n} subscriptions: {unacked_events} events of writes that were not acknowledged (errors)");
    }
    let before_ack = shared.before_ack.load(Ordering::Relaxed);
    if before_ack > 0 {
        eprintln!("events: {before_ack} events arrived before their write's 204 (counted as 0 ms)");
    }
    if !drained {
        eprintln!("events: {n} subscriptions: gave up waiting after {} s without a new event", opts.drain);
    }

    let mib = |kib: Option<u64>| kib.map_or("-".to_string(), |k| format!("{:.1}", k as f64 / 1024.0));
    let per_sub = match (rss_before, rss_idle) {
        (Some(b), Some(i)) if connected > 0 => format!("{:.1}", (i as f64 - b as f64) / connected as f64),
        _ => "-".to_string(),
    };
    let received_range = if connected == 0 { "-".to_string() } else { format!("{min_received}–{max_received}") };
    let drain_text = if drained { format!("{drain_seconds:.2}") } else { format!("> {:.0}", opts.drain) };
    let recorder = opts.recorder();
    let key = format!("fanout_{n}");
    recorder.record(&format!("{key}_connected"), connected);
    recorder.record(&format!("{key}_rate_asked"), opts.rate);
    recorder.record(&format!("{key}_writes_per_s"), format!("{write_rate:.0}"));
    recorder.record_quantiles(&key, &histogram);
    recorder.record(&format!("{key}_lost"), lost);
    recorder.record(&format!("{key}_dup"), duplicates + disorder);
    recorder.record(&format!("{key}_kib_per_sub"), &per_sub);
    recorder.record(&format!("{key}_rss_before_mib"), mib(rss_before));
    recorder.record(&format!("{key}_rss_idle_mib"), mib(rss_idle));
    recorder.record(&format!("{key}_rss_end_mib"), mib(rss_end));
    recorder.record(&format!("{key}_node_cpu_pct"), &node_cpu);
    recorder.record(&format!("{key}_client_cpu_pct"), &client_cpu);
    Ok(format!(
        "| {n} | {connected} | {connect_seconds:.2} | {write_rate:.0} | {} | {received_range} | {lost} | {} | {} | \
         {drain_text} | {} | {} | {} | {per_sub} | {node_cpu} | {client_cpu} |",
        writes.ok,
        duplicates + disorder,
        quantiles(&histogram),
        mib(rss_before),
        mib(rss_idle),
        mib(rss_end),
    ))
}
