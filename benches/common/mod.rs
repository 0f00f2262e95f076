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
