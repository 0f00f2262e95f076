//! What the bench tools share: reaching the nodes of a cluster started by `scripts/cluster.sh`, finding its leader,
//! and the histogram they all record latencies in.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use vigil::client::{Client, Response};

/// The token: `explicit`, else `VIGIL_TOKEN`, else `VAULT_TOKEN`, else `<cluster_dir>/root-token` when given.
pub fn token(explicit: Option<&str>, cluster_dir: Option<&Path>) -> Option<String> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    explicit
        .map(str::to_string)
        .or_else(|| env("VIGIL_TOKEN"))
        .or_else(|| env("VAULT_TOKEN"))
        .or_else(|| {
            let dir = cluster_dir?;
            std::fs::read_to_string(dir.join("root-token")).ok().filter(|t| !t.trim().is_empty())
        })
        .map(|t| t.trim().to_string())
}

/// An API client for `addr` with `token`.
pub fn client(addr: &str, token: Option<&str>, timeout: Duration) -> Client {
    let client = Client::new(addr).with_timeout(timeout);
    match token {
        Some(t) => client.with_token(t),
        None => client,
    }
}

/// A short description of a failed response.
pub fn describe(resp: &Response) -> String {
    let errors = resp.errors();
    if errors.is_empty() {
        format!("HTTP {}: {}", resp.status, resp.text().chars().take(200).collect::<String>())
    } else {
        format!("HTTP {}: {}", resp.status, errors.join("; "))
    }
}

/// A latency histogram in microseconds: 1 µs .. 5 min, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 300_000_000, 3).expect("histogram bounds")
}

/// An API address without surrounding blanks or trailing `/`.
pub fn normalize_addr(addr: &str) -> String {
    addr.trim().trim_end_matches('/').to_string()
}

/// A node of the cluster, from `<dir>/nodeN.addr` and `<dir>/nodeN.pid`.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub addr: String,
    pub pid: Option<i32>,
}

/// Reads the `nodeN.addr` files (and `nodeN.pid` where present) of `dir`, ordered by N.
pub fn read_nodes(dir: &Path) -> Result<Vec<Node>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    let mut nodes: Vec<(u32, Node)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else { continue };
        let Some(n) =
            name.strip_prefix("node").and_then(|rest| rest.strip_suffix(".addr")).and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let read = |ext: &str| std::fs::read_to_string(dir.join(format!("node{n}.{ext}")));
        let addr = normalize_addr(&read("addr").map_err(|e| format!("reading node{n}.addr: {e}"))?);
        let pid = match read("pid") {
            Ok(text) => Some(
                text.trim().parse::<i32>().map_err(|e| format!("node{n}.pid does not hold a pid ({e}): {text:?}"))?,
            ),
            Err(_) => None,
        };
        nodes.push((n, Node { name: format!("node{n}"), addr, pid: pid.filter(|p| *p > 0) }));
    }
    nodes.sort_by_key(|(n, _)| *n);
    Ok(nodes.into_iter().map(|(_, node)| node).collect())
}

/// Asks the nodes who leads; returns the index of the leader in `nodes`.
pub async fn find_leader(nodes: &[Node], token: Option<&str>) -> Result<usize, String> {
    let mut answers = Vec::new();
    for node in nodes {
        let c = client(&node.addr, token, Duration::from_secs(2));
        let leader = match c.get("/v1/sys/leader").await {
            Ok(resp) if resp.is_success() => match resp.json() {
                Ok(v) => v,
                Err(e) => {
                    answers.push(format!("{}: {e}", node.addr));
                    continue;
                }
            },
            Ok(resp) => {
                answers.push(format!("{}: {}", node.addr, describe(&resp)));
                continue;
            }
            Err(e) => {
                answers.push(format!("{}: {e}", node.addr));
                continue;
            }
        };
        let address = leader.get("leader_address").and_then(|v| v.as_str()).unwrap_or("").trim_end_matches('/');
        if let Some(i) = nodes.iter().position(|n| !address.is_empty() && n.addr == address) {
            return Ok(i);
        }
        if leader.get("is_self").and_then(|v| v.as_bool()) == Some(true) {
            return nodes.iter().position(|n| n.addr == node.addr).ok_or_else(|| "unreachable".to_string());
        }
        answers.push(format!("{}: leader_address {address:?} is none of the nodes", node.addr));
    }
    Err(format!("no leader found: {}", answers.join("; ")))
}

// ---------------------------------------------------------------------------------------------------------
// Targets: the same load shapes against Vigil or against etcd's v3 JSON gateway.

/// The system under test. Both are addressed by a logical path such as `kv/bench/<run>/<writer>/<n>`: Vigil
/// writes it as `PUT /v1/<path>` with `{"value": ...}` (so its events carry `<path>` as their metadata path), etcd
/// as the key `<path>` through `POST /v3/kv/put` (so its watch events carry `<path>` as their key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// A Vigil cluster (Vault's HTTP API).
    Vigil,
    /// An etcd v3 cluster, through its gRPC-gateway JSON API (`/v3/...`).
    Etcd,
}

/// Why a write failed.
pub struct PutError {
    pub message: String,
    /// No connection could be made (the request was certainly not delivered).
    pub connect: bool,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Vigil => "vigil",
            Target::Etcd => "etcd",
        }
    }

    /// The default cluster directory (`scripts/cluster.sh`'s for Vigil; bench.sh writes etcd's elsewhere).
    pub fn default_cluster_dir(self) -> &'static str {
        match self {
            Target::Vigil => ".cluster",
            Target::Etcd => ".etcd-cluster",
        }
    }

    /// A client for one node; etcd takes no token.
    pub fn client(self, addr: &str, token: Option<&str>, timeout: Duration) -> Client {
        match self {
            Target::Vigil => client(addr, token, timeout),
            Target::Etcd => client(addr, None, timeout),
        }
    }

    /// The request that writes `value` at the logical `path`: (method, URL path, body).
    pub fn put_request(self, path: &str, value: &str) -> (&'static str, String, Vec<u8>) {
        match self {
            Target::Vigil => {
                let body = serde_json::to_vec(&serde_json::json!({ "value": value })).expect("encode body");
                ("PUT", format!("/v1/{path}"), body)
            }
            Target::Etcd => {
                let body = format!(
                    r#"{{"key":"{}","value":"{}"}}"#,
                    base64_encode(path.as_bytes()),
                    base64_encode(value.as_bytes())
                );
                ("POST", "/v3/kv/put".to_string(), body.into_bytes())
            }
        }
    }

    /// Writes `value` at `path` and waits for the acknowledgement (2xx).
    pub async fn put(self, client: &Client, path: &str, value: &str) -> Result<(), PutError> {
        let (method, url, body) = self.put_request(path, value);
        match client.request_raw(method, &url, &[("Content-Type", "application/json")], body).await {
            Ok(resp) if resp.is_success() => Ok(()),
            Ok(resp) => Err(PutError { message: describe(&resp), connect: false }),
            Err(e) => Err(PutError { message: e.to_string(), connect: e.is_connect() }),
        }
    }

    /// Checks that the node behind `client` answers.
    pub async fn ping(self, client: &Client) -> Result<(), String> {
        let result = match self {
            Target::Vigil => client.get("/v1/sys/health?standbyok=true&perfstandbyok=true").await,
            Target::Etcd => client.post("/v3/maintenance/status", &serde_json::json!({})).await,
        };
        result.map(|_| ()).map_err(|e| format!("{} is not reachable: {e}", client.addr()))
    }

    /// Asks the nodes who leads; returns the index of the leader in `nodes`.
    pub async fn find_leader(self, nodes: &[Node], token: Option<&str>) -> Result<usize, String> {
        match self {
            Target::Vigil => find_leader(nodes, token).await,
            Target::Etcd => find_etcd_leader(nodes).await,
        }
    }
}

/// The etcd leader: the node whose `/v3/maintenance/status` names itself (`header.member_id == leader`).
async fn find_etcd_leader(nodes: &[Node]) -> Result<usize, String> {
    let mut answers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let c = client(&node.addr, None, Duration::from_secs(2));
        match c.post("/v3/maintenance/status", &serde_json::json!({})).await {
            Ok(resp) if resp.is_success() => {
                let status = resp.json().map_err(|e| e.to_string())?;
                let me = status.pointer("/header/member_id").and_then(|v| v.as_str()).unwrap_or("");
                let leader = status.get("leader").and_then(|v| v.as_str()).unwrap_or("");
                if !me.is_empty() && me == leader {
                    return Ok(i);
                }
                answers.push(format!("{}: member {me}, leader {leader:?}", node.addr));
            }
            Ok(resp) => answers.push(format!("{}: {}", node.addr, describe(&resp))),
            Err(e) => answers.push(format!("{}: {e}", node.addr)),
        }
    }
    Err(format!("no etcd leader found: {}", answers.join("; ")))
}

/// Appends `key value` lines to a results file (`--record`), for scripts/bench.sh to collect.
pub struct Recorder {
    path: Option<std::path::PathBuf>,
    prefix: String,
}

impl Recorder {
    /// Records into `path` (nothing when `None`), each key prefixed with `<target>.`.
    pub fn new(path: Option<&Path>, target: Target) -> Recorder {
        Recorder { path: path.map(Path::to_path_buf), prefix: format!("{}.", target.name()) }
    }

    pub fn record(&self, key: &str, value: impl std::fmt::Display) {
        let Some(path) = &self.path else { return };
        use std::io::Write;
        let line = format!("{}{key} {value}\n", self.prefix);
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            eprintln!("cannot append to {}: {e}", path.display());
        }
    }

    /// Records `key_p50`, `key_p99` (and `key_p999`, `key_max`) in milliseconds, unless `h` is empty.
    pub fn record_quantiles(&self, key: &str, h: &Histogram<u64>) {
        if h.is_empty() {
            return;
        }
        let ms = |v: u64| format!("{:.2}", v as f64 / 1000.0);
        self.record(&format!("{key}_p50_ms"), ms(h.value_at_quantile(0.5)));
        self.record(&format!("{key}_p99_ms"), ms(h.value_at_quantile(0.99)));
        self.record(&format!("{key}_p999_ms"), ms(h.value_at_quantile(0.999)));
        self.record(&format!("{key}_max_ms"), ms(h.max()));
    }
}

/// A process's resident memory in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: Option<i32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (what etcd's JSON gateway expects for `bytes` fields).
pub fn base64_encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional) into `out` (cleared first); false on a bad character.
pub fn base64_decode_into(input: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in input {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return false,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    true
}
