//! `scripts/cluster.sh`, the README's first command, run for real: start, status, kill the leader, restart, stop.
//!
//! The script and configs are copied into a temporary directory (the script works relative to its own location), and
//! every port is moved with `VIGIL_PORT_BASE` to a free range, so a developer's own cluster is never touched.

mod common;

use std::path::Path;
use std::process::Command;

use common::free_ports;
use vigil::client::Client;

fn script(dir: &Path, base: u16, args: &[&str]) -> (i32, String) {
    let out = Command::new("bash")
        .arg(dir.join("scripts/cluster.sh"))
        .args(args)
        .env("VIGIL_BIN", env!("CARGO_BIN_EXE_vigil"))
        .env("VIGIL_PORT_BASE", base.to_string())
        .env_remove("VIGIL_ADDR")
        .env_remove("VIGIL_TOKEN")
        .output()
        .expect("run cluster.sh");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// A base port whose nodes' ports (base..base+21) are all free right now.
fn free_base() -> u16 {
    for _ in 0..50 {
        let base = free_ports(1)[0].clamp(20_000, 60_000) / 10 * 10;
        let all_free = (0..3u16)
            .flat_map(|n| [base + 10 * n, base + 10 * n + 1])
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no free port range");
}

async fn health(base: u16, node: u16) -> u16 {
    let client = Client::new(&format!("http://127.0.0.1:{}", base + 10 * (node - 1)));
    client.get("/v1/sys/health").await.map(|r| r.status).unwrap_or(0)
}

#[tokio::test]
async fn cluster_script_starts_a_healthy_cluster_that_survives_losing_its_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    std::fs::create_dir_all(dir.path().join("cluster-configs")).unwrap();
    std::fs::copy(repo.join("scripts/cluster.sh"), dir.path().join("scripts/cluster.sh")).unwrap();
    for n in 1..=3 {
        let name = format!("cluster-configs/node{n}.hcl");
        std::fs::copy(repo.join(&name), dir.path().join(&name)).unwrap();
    }
    let base = free_base();
    let stop = StopOnDrop(dir.path().to_path_buf(), base);

    let (code, out) = script(dir.path(), base, &["start"]);
    assert_eq!(code, 0, "{out}");
    let token = std::fs::read_to_string(dir.path().join(".cluster/root-token")).unwrap();
    assert!(out.contains(&format!("export VIGIL_ADDR=http://127.0.0.1:{base}")), "{out}");
    assert!(out.contains(&format!("export VIGIL_TOKEN={}", token.trim())), "{out}");
    let mut codes = vec![health(base, 1).await, health(base, 2).await, health(base, 3).await];
    codes.sort();
    assert_eq!(codes, vec![200, 473, 473]);

    // Starting again changes nothing.
    let (code, out) = script(dir.path(), base, &["start"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("already running"), "{out}");

    // Kill the active node; a survivor takes over and accepts writes; restart the old one.
    let mut leader = 0;
    for n in 1..=3 {
        if health(base, n).await == 200 {
            leader = n;
        }
    }
    let (code, out) = script(dir.path(), base, &["kill", &leader.to_string()]);
    assert_eq!(code, 0, "{out}");
    let survivor = if leader == 1 { 2 } else { 1 };
    let client = Client::new(&format!("http://127.0.0.1:{}", base + 10 * (survivor - 1))).with_token(token.trim());
    let resp = client.put("/v1/kv/after-failover", &serde_json::json!({ "ok": true })).await.unwrap();
    assert_eq!(resp.status, 204, "{}", resp.text());
    let (code, out) = script(dir.path(), base, &["restart", &leader.to_string()]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = script(dir.path(), base, &["status"]);
    assert_eq!(code, 0, "{out}");
    drop(stop);
}

/// Stops the script's cluster even when the test fails.
struct StopOnDrop(std::path::PathBuf, u16);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let (_, out) = script(&self.0, self.1, &["stop"]);
        if std::thread::panicking() {
            eprintln!("{out}");
            for n in 1..=3 {
                let log = std::fs::read_to_string(self.0.join(format!(".cluster/node{n}.log"))).unwrap_or_default();
                eprintln!("----- node{n} -----\n{}", log.lines().rev().take(20).collect::<Vec<_>>().join("\n"));
            }
        }
    }
}
