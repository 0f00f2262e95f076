//! `vigil events subscribe` end to end: the real binary as a child process, against real node processes.
//!
//! Covers both output formats (exact lines, sequences), filters, a plain standby's redirect, failover to another
//! address of `VIGIL_ADDR` with resume (no gap, no duplicate), and the fatal errors: refused handshakes (400,
//! 403, 410), no reachable node, and a revoked token's close frame.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ClusterOptions, TestCluster};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use vigil::client::Client;

/// How long a test waits for one line of output.
const LINE_WAIT: Duration = Duration::from_secs(15);

/// A running `vigil events ...` process; killed on drop.
struct Subscriber {
    child: Child,
    stdout: UnboundedReceiver<String>,
    stderr_lines: UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Subscriber {
    /// Starts `vigil events <args>` with `VIGIL_ADDR=addr` and `VIGIL_TOKEN=token`.
    fn spawn(args: &[&str], addr: &str, token: &str) -> Subscriber {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .arg("events")
            .args(args)
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .env("VIGIL_ADDR", addr)
            .env("VIGIL_TOKEN", token)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vigil events");
        let (out_tx, stdout) = unbounded_channel();
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                if out_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (err_tx, stderr_lines) = unbounded_channel();
        let stderr = Arc::new(Mutex::new(String::new()));
        let all = stderr.clone();
        let mut err = BufReader::new(child.stderr.take().expect("stderr"));
        std::thread::spawn(move || loop {
            let mut line = String::new();
            match err.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    all.lock().unwrap().push_str(&line);
                    let _ = err_tx.send(line.trim_end().to_string());
                }
            }
        });
        Subscriber { child, stdout, stderr_lines, stderr }
    }

    /// Sends `signal` to the process.
    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0, "kill({signal})");
    }

    /// Everything the process wrote to stderr so far.
    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The next stdout line, parsed as JSON (it must be one JSON object per line).
    async fn next_event(&mut self) -> Value {
        match tokio::time::timeout(LINE_WAIT, self.stdout.recv()).await {
            Ok(Some(line)) => serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")),
            Ok(None) => panic!("stdout closed; stderr:\n{}", self.stderr()),
            Err(_) => panic!("no event within {LINE_WAIT:?}; stderr:\n{}", self.stderr()),
        }
    }

    async fn next_events(&mut self, count: usize) -> Vec<Value> {
        let mut events = Vec::with_capacity(count);
        for _ in 0..count {
            events.push(self.next_event().await);
        }
        events
    }

    /// Asserts that no further line arrives within `wait`.
    async fn assert_no_more_events(&mut self, wait: Duration) {
        if let Ok(Some(line)) = tokio::time::timeout(wait, self.stdout.recv()).await {
            panic!("unexpected extra line: {line}");
        }
    }

    /// Waits for the next stderr line that starts with `prefix` and returns it.
    async fn wait_stderr(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + LINE_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stderr_lines.recv()).await {
                Ok(Some(line)) if line.starts_with(prefix) => return line,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("stderr closed before {prefix:?}; stderr:\n{}", self.stderr()),
                Err(_) => panic!("no stderr line {prefix:?} within {LINE_WAIT:?}; stderr:\n{}", self.stderr()),
            }
        }
    }

    /// Waits for the process to exit and returns its exit code and everything it wrote to stdout and stderr.
    async fn wait_exit(&mut self, timeout: Duration) -> (i32, Vec<String>, String) {
        match self.exit_within(timeout).await {
            Some(exited) => exited,
            None => panic!("still running after {timeout:?}; stderr:\n{}", self.stderr()),
        }
    }

    /// Like [`Subscriber::wait_exit`], but `None` if the process is still running after `timeout`.
    async fn exit_within(&mut self, timeout: Duration) -> Option<(i32, Vec<String>, String)> {
        let deadline = Instant::now() + timeout;
        let code = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // The reader threads finish once the pipes close.
        let mut stdout = Vec::new();
        while let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(5), self.stdout.recv()).await {
            stdout.push(line);
        }
        while tokio::time::timeout(Duration::from_secs(5), self.stderr_lines.recv()).await.is_ok_and(|l| l.is_some()) {}
        Some((code, stdout, self.stderr()))
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `vigil events <args>` to completion (it must end by itself within 10 s).
async fn run_events(args: &[&str], addr: &str, token: &str) -> (i32, Vec<String>, String) {
    Subscriber::spawn(args, addr, token).wait_exit(Duration::from_secs(10)).await
}

fn sequence(event: &Value) -> u64 {
    event["sequence"].as_str().expect("sequence is a string").parse().expect("numeric sequence")
}

fn padded(sequence: u64) -> Value {
    json!(format!("{sequence:020}"))
}

fn path(event: &Value) -> &str {
    event["data"]["event"]["metadata"]["path"].as_str().unwrap_or_default()
}

/// Asserts that the sequences of `events` are exactly `from, from + 1, ...`.
fn assert_consecutive(events: &[Value], from: u64) {
    let got: Vec<u64> = events.iter().map(sequence).collect();
    let expected: Vec<u64> = (from..from + events.len() as u64).collect();
    assert_eq!(got, expected, "sequences");
}

fn ok(resp: vigil::client::Response) {
    assert!(resp.is_success(), "{} {}", resp.status, resp.text());
}

async fn put_secret(client: &Client, name: &str) {
    ok(client.post(&format!("/v1/secret/data/{name}"), &json!({ "data": { "x": 1 } })).await.expect("write"));
}

/// Creates a token whose only policy (besides `default`) is `policy` (HCL).
async fn token_with_policy(cluster: &TestCluster, name: &str, policy: &str) -> String {
    let root = cluster.client(cluster.leader().await);
    ok(root.put(&format!("/v1/sys/policies/acl/{name}"), &json!({ "policy": policy })).await.unwrap());
    let created = root.post("/v1/auth/token/create", &json!({ "policies": [name] })).await.unwrap();
    assert_eq!(created.status, 200, "{}", created.text());
    created.json().unwrap()["auth"]["client_token"].as_str().expect("client_token").to_string()
}

#[tokio::test]
async fn json_lines_are_the_cloud_events_with_consecutive_sequences() {
    let cluster = TestCluster::start(ClusterOptions { nodes: 1, ..Default::default() }).await;
    let addr = cluster.nodes[0].api_addr();
    let token = cluster.root_token.clone();
    let client = cluster.client(0);
    let mut all = Subscriber::spawn(&["subscribe", "kv-v2/data-write", "--format", "json"], &addr, &token);
    let filter = r#"data_path == "secret/data/b""#;
    let mut only_b = Subscriber::spawn(&["subscribe", "-filter", filter, "kv-v2/data-*"], &addr, &token);
    let note = all.wait_stderr("Subscribed").await;
    assert_eq!(
        note,
        format!(
            "Subscribed at {}/v1/sys/events/subscribe/kv-v2/data-write (after sequence 0)",
            addr.replace("http", "ws")
        )
    );
    only_b.wait_stderr("Subscribed").await;

    for name in ["a", "b", "c"] {
        put_secret(&client, name).await;
    }
    // Not a kv-v2/data-write: skipped, so the next line jumps one sequence.
    ok(client.put("/v1/kv/other", &json!({ "v": 1 })).await.unwrap());
    put_secret(&client, "d").await;

    let events = all.next_events(4).await;
    assert_consecutive(&events[..3], 1);
    assert_eq!(sequence(&events[3]), 5);
    for (event, name) in events.iter().zip(["a", "b", "c", "d"]) {
        let path = format!("secret/data/{name}");
        assert_eq!(event["data"]["event_type"], json!("kv-v2/data-write"), "{event}");
        assert_eq!(
            event["data"]["event"]["metadata"],
            json!({
                "current_version": "1",
                "data_path": path,
                "modified": "true",
                "oldest_version": "0",
                "operation": "data-write",
                "path": path,
            }),
            "{event}"
        );
        assert_eq!(event["data"]["event"]["id"], event["id"]);
        assert_eq!(
            (&event["specversion"], &event["type"], &event["source"], &event["datacontenttype"]),
            (&json!("1.0"), &json!("*"), &json!("vault://node1"), &json!("application/json"))
        );
        assert_eq!(event["data"]["plugin_info"]["mount_path"], json!("secret/"));
        assert_eq!(event["data"]["plugin_info"]["plugin"], json!("kv"));
        assert_eq!(event["data"]["plugin_info"]["version"], json!("2"));
    }
    assert_eq!(events[0]["sequence"], padded(1));
    all.assert_no_more_events(Duration::from_millis(300)).await;

    // The filtered subscription saw b only.
    let b = only_b.next_event().await;
    assert_eq!((path(&b), sequence(&b)), ("secret/data/b", 2));
    assert_eq!(b, events[1]);
    only_b.assert_no_more_events(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn protobuf_frames_print_the_same_event_fields() {
    let cluster = TestCluster::start(ClusterOptions { nodes: 1, ..Default::default() }).await;
    let addr = cluster.nodes[0].api_addr();
    let token = cluster.root_token.clone();
    let client = cluster.client(0);
    let mut proto = Subscriber::spawn(&["subscribe", "kv*", "-format=protobuf"], &addr, &token);
    let mut json_sub = Subscriber::spawn(&["subscribe", "kv*"], &addr, &token);
    proto.wait_stderr("Subscribed").await;
    json_sub.wait_stderr("Subscribed").await;

    ok(client.put("/v1/kv/p", &json!({ "v": 1 })).await.unwrap());
    put_secret(&client, "q").await;
    ok(client.delete("/v1/secret/data/q").await.unwrap());

    let from_proto = proto.next_events(3).await;
    let from_json = json_sub.next_events(3).await;
    assert_consecutive(&from_proto, 1);
    let types: Vec<&str> = from_proto.iter().map(|e| e["data"]["event_type"].as_str().unwrap_or_default()).collect();
    assert_eq!(types, ["kv-v1/write", "kv-v2/data-write", "kv-v2/data-delete"]);
    assert_eq!(
        from_proto[0]["data"]["event"]["metadata"],
        json!({ "data_path": "kv/p", "modified": "true", "operation": "write", "path": "kv/p" })
    );
    // Each protobuf line is exactly the JSON line's id, sequence and data.
    for (p, j) in from_proto.iter().zip(&from_json) {
        assert_eq!(p, &json!({ "id": j["id"], "sequence": j["sequence"], "data": j["data"] }));
    }
    assert_eq!(from_proto[2]["sequence"], padded(3));
    proto.assert_no_more_events(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_plain_standby_redirects_the_subscription_to_the_leader() {
    let cluster = TestCluster::start(ClusterOptions { plain_standbys: vec![1, 2], ..Default::default() }).await;
    let leader = cluster.leader().await;
    let standby = cluster.others(leader)[0];
    let token = cluster.root_token.clone();
    let mut sub = Subscriber::spawn(&["subscribe", "kv*", "--since", "0"], &cluster.nodes[standby].api_addr(), &token);
    let note = sub.wait_stderr("Subscribed").await;
    let leader_url = cluster.nodes[leader].api_addr().replace("http", "ws");
    assert_eq!(note, format!("Subscribed at {leader_url}/v1/sys/events/subscribe/kv* (after sequence 0)"));
    ok(cluster.client(standby).put("/v1/kv/r", &json!({ "v": 1 })).await.unwrap());
    let event = sub.next_event().await;
    assert_eq!((path(&event), sequence(&event)), ("kv/r", 1));
    assert_eq!(event["source"], json!(format!("vault://{}", cluster.nodes[leader].name)));
}

#[tokio::test]
async fn the_subscription_fails_over_to_the_next_address_without_gap_or_duplicate() {
    let mut cluster = TestCluster::start3().await;
    let leader = cluster.leader().await;
    let survivors = cluster.others(leader);
    let addrs: Vec<String> =
        std::iter::once(leader).chain(survivors.iter().copied()).map(|i| cluster.nodes[i].api_addr()).collect();
    let token = cluster.root_token.clone();
    let mut sub = Subscriber::spawn(&["subscribe", "kv*"], &addrs.join(","), &token);
    let note = sub.wait_stderr("Subscribed").await;
    assert_eq!(
        note,
        format!("Subscribed at {}/v1/sys/events/subscribe/kv* (after sequence 0)", addrs[0].replace("http", "ws"))
    );

    let writer = cluster.client(leader);
    for n in 0..3 {
        ok(writer.put(&format!("/v1/kv/f/{n}"), &json!({ "n": n })).await.unwrap());
    }
    let mut events = sub.next_events(3).await;
    let first = sequence(&events[0]);

    // Freeze the subscriber, kill its node and write two more values while it cannot be connected anywhere:
    // only resuming from its cursor can deliver them.
    sub.signal(libc::SIGSTOP);
    cluster.kill(leader);
    let new_leader = cluster.leader().await;
    let writer = cluster.client(new_leader);
    for n in 3..5 {
        ok(writer.put(&format!("/v1/kv/f/{n}"), &json!({ "n": n })).await.unwrap());
    }
    sub.signal(libc::SIGCONT);
    let lost = sub.wait_stderr("Lost the subscription").await;
    assert!(lost.contains(&addrs[0].replace("http", "ws")), "{lost}");
    // The next address accepted at once (a performance standby serves from its own log, leader or not).
    let resumed = sub.wait_stderr("Subscribed").await;
    let survivor_url = addrs[1].replace("http", "ws");
    assert_eq!(
        resumed,
        format!("Subscribed at {survivor_url}/v1/sys/events/subscribe/kv* (after sequence {})", first + 2)
    );
    ok(writer.put("/v1/kv/f/5", &json!({ "n": 5 })).await.unwrap());
    events.extend(sub.next_events(3).await);
    assert_consecutive(&events, first);
    let paths: Vec<&str> = events.iter().map(path).collect();
    assert_eq!(paths, ["kv/f/0", "kv/f/1", "kv/f/2", "kv/f/3", "kv/f/4", "kv/f/5"]);
    assert!(events.iter().all(|e| e["data"]["event_type"] == json!("kv-v1/write")));
    sub.assert_no_more_events(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_subscription_without_since_resumes_from_where_it_started() {
    let mut cluster = TestCluster::start(ClusterOptions { nodes: 1, ..Default::default() }).await;
    let addr = cluster.nodes[0].api_addr();
    let token = cluster.root_token.clone();
    ok(cluster.client(0).put("/v1/kv/before", &json!({ "n": 0 })).await.unwrap());
    let mut sub = Subscriber::spawn(&["subscribe", "kv*"], &addr, &token);
    // The handshake named the head at that moment (one event so far) as the starting cursor.
    let note = sub.wait_stderr("Subscribed").await;
    assert!(note.ends_with("/v1/sys/events/subscribe/kv* (after sequence 1)"), "{note}");

    // Before the command has printed anything, its node goes away and events are written while it is frozen: only
    // the cursor from the handshake can bring them back (resubscribing at the new head would skip them).
    sub.signal(libc::SIGSTOP);
    cluster.kill(0);
    cluster.restart(0).await;
    cluster.wait_health(0, &[200]).await;
    let client = cluster.client(0);
    for n in 1..3 {
        ok(client.put(&format!("/v1/kv/while-away/{n}"), &json!({ "n": n })).await.unwrap());
    }
    sub.signal(libc::SIGCONT);
    sub.wait_stderr("Lost the subscription").await;
    let resumed = sub.wait_stderr("Subscribed").await;
    assert!(resumed.ends_with("(after sequence 1)"), "{resumed}");
    let events = sub.next_events(2).await;
    assert_consecutive(&events, 2);
    assert_eq!(events.iter().map(path).collect::<Vec<_>>(), ["kv/while-away/1", "kv/while-away/2"]);
    sub.assert_no_more_events(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn refused_subscriptions_are_fatal_with_the_servers_message() {
    let options =
        ClusterOptions { nodes: 1, extra_config: "events {\n  retention_count = 5\n}\n".into(), ..Default::default() };
    let cluster = TestCluster::start(options).await;
    let addr = cluster.nodes[0].api_addr();
    let root = cluster.root_token.clone();

    // 400: a bad filter. The second address is never tried: the server's answer is final.
    let started = Instant::now();
    let unreachable = format!("http://127.0.0.1:{}", common::free_ports(1)[0]);
    let (code, stdout, stderr) =
        run_events(&["subscribe", "kv*", "--filter", "event_type =="], &format!("{addr},{unreachable}"), &root).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty(), "{stdout:?}");
    assert!(
        stderr.starts_with("Error subscribing to kv*: Code: 400. Errors:\n\n* invalid filter expression at position"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());

    // 403: a token that may not subscribe.
    let reader = token_with_policy(&cluster, "reader", r#"path "secret/*" { capabilities = ["read"] }"#).await;
    let (code, stdout, stderr) = run_events(&["subscribe", "kv*", "--since", "0"], &addr, &reader).await;
    assert_eq!(
        (code, stdout.len(), stderr.as_str()),
        (2, 0, "Error subscribing to kv*: Code: 403. Errors:\n\n* permission denied\n")
    );

    // 410: a cursor older than the retained events.
    let client = cluster.client(0);
    for n in 0..12 {
        ok(client.put(&format!("/v1/kv/r/{n}"), &json!({ "n": n })).await.unwrap());
    }
    let (code, stderr) = common::wait_for("the event log to be trimmed", common::WAIT, || {
        let (addr, root) = (addr.clone(), root.clone());
        async move {
            // Until the log is trimmed, the subscription is accepted (and kept running).
            let mut sub = Subscriber::spawn(&["subscribe", "kv*", "-since=6"], &addr, &root);
            let (code, _, stderr) = sub.exit_within(Duration::from_secs(1)).await?;
            stderr.contains("Code: 410").then_some((code, stderr))
        }
    })
    .await;
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with(
            "Error subscribing to kv*: Code: 410. Errors:\n\n* events after sequence 6 are no longer retained"
        ),
        "{stderr}"
    );
    // From the oldest retained cursor, everything that is left.
    let mut sub = Subscriber::spawn(&["subscribe", "kv*", "--since", "7"], &addr, &root);
    let events = sub.next_events(5).await;
    assert_consecutive(&events, 8);
    assert_eq!(path(&events[4]), "kv/r/11");

    // No node reachable at all: fatal at once, listing every address.
    let ports = common::free_ports(2);
    let nowhere = format!("http://127.0.0.1:{},http://127.0.0.1:{}", ports[0], ports[1]);
    let (code, _, stderr) = run_events(&["subscribe", "kv*"], &nowhere, &root).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.starts_with("Error subscribing to kv*: no node accepted the subscription:\n"), "{stderr}");
    assert_eq!(stderr.matches("Connection refused").count(), 2, "{stderr}");

    // A bad address or bad arguments: local and usage errors.
    let (code, _, stderr) = run_events(&["subscribe", "kv*"], "https://127.0.0.1:1", &root).await;
    assert_eq!(
        (code, stderr.as_str()),
        (1, "Error: https://127.0.0.1:1: https is not supported by Vigil's client; use http://\n")
    );
    let (code, _, stderr) = run_events(&["subscribe", "kv*", "--format", "yaml"], &addr, &root).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid value 'yaml' for '--format <FORMAT>'"), "{stderr}");
}

#[tokio::test]
async fn a_revoked_token_ends_the_command_without_reconnecting() {
    let cluster = TestCluster::start(ClusterOptions { nodes: 1, ..Default::default() }).await;
    let addr = cluster.nodes[0].api_addr();
    let policy = r#"
path "sys/events/subscribe/*" { capabilities = ["read"] }
path "kv/*" {
  capabilities = ["read", "subscribe"]
  subscribe_event_types = ["*"]
}
"#;
    let watcher = token_with_policy(&cluster, "watcher", policy).await;
    let mut sub = Subscriber::spawn(&["subscribe", "kv*"], &addr, &watcher);
    sub.wait_stderr("Subscribed").await;
    let client = cluster.client(0);
    ok(client.put("/v1/kv/seen", &json!({ "v": 1 })).await.unwrap());
    let event = sub.next_event().await;
    assert_eq!(path(&event), "kv/seen");

    ok(client.post("/v1/auth/token/revoke", &json!({ "token": watcher })).await.unwrap());
    let (code, stdout, stderr) = sub.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty(), "{stdout:?}");
    assert!(
        stderr
            .ends_with("Error: the server ended the subscription (code 1008): the subscription's token was revoked\n"),
        "{stderr}"
    );
    assert!(!stderr.contains("reconnecting"), "{stderr}");
}
