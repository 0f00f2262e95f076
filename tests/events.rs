//! Event notifications end to end: real node processes, real WebSocket subscriptions.
//!
//! Covers the kv event types and their exact metadata, both frame formats, wildcards and filters, the policy
//! matrix, revocation and policy changes mid-stream, which nodes serve subscriptions (307 from a plain standby),
//! identical event logs on every node, resume without gap or duplicate after the subscriber's node is killed and
//! across a leader failover, retention (410), and a slow subscriber catching up.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{ClusterOptions, TestCluster};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use vigil::client::Client;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a test waits for one frame.
const FRAME_WAIT: Duration = Duration::from_secs(15);

/// An answer other than 101 Switching Protocols.
#[derive(Debug)]
struct Refused {
    status: u16,
    body: String,
    location: Option<String>,
}

/// Opens `GET /v1/sys/events/subscribe/<path_and_query>` on `addr` (an `http://` API address).
async fn try_subscribe(addr: &str, token: &str, path_and_query: &str) -> Result<Ws, Refused> {
    let url = format!("{}/v1/sys/events/subscribe/{path_and_query}", addr.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert("x-vault-token", token.parse().expect("header"));
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => Err(Refused {
            status: response.status().as_u16(),
            body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
            location: response.headers().get("location").map(|v| v.to_str().unwrap_or_default().to_string()),
        }),
        Err(e) => Err(Refused { status: 0, body: e.to_string(), location: None }),
    }
}

async fn subscribe(addr: &str, token: &str, path_and_query: &str) -> Ws {
    match try_subscribe(addr, token, path_and_query).await {
        Ok(ws) => ws,
        Err(refused) => panic!("subscribing to {path_and_query} on {addr}: {refused:?}"),
    }
}

/// The next data frame (control frames skipped); panics on close or timeout.
async fn next_frame(ws: &mut Ws) -> Message {
    loop {
        let frame = tokio::time::timeout(FRAME_WAIT, ws.next()).await.expect("no frame in time");
        match frame {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(message)) => return message,
            other => panic!("subscription ended: {other:?}"),
        }
    }
}

/// The next JSON (CloudEvents) frame.
async fn next_json(ws: &mut Ws) -> Value {
    match next_frame(ws).await {
        Message::Text(text) => serde_json::from_str(text.as_str()).expect("JSON frame"),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// The next `count` JSON frames.
async fn next_jsons(ws: &mut Ws, count: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(next_json(ws).await);
    }
    out
}

/// Waits for a close frame and returns its code and reason; panics if an event arrives first.
async fn next_close(ws: &mut Ws) -> (u16, String) {
    match next_frame(ws).await {
        Message::Close(Some(frame)) => (u16::from(frame.code), frame.reason.as_str().to_string()),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

fn sequence(event: &Value) -> u64 {
    event["sequence"].as_str().expect("sequence is a string").parse().expect("numeric sequence")
}

fn metadata(pairs: &[(&str, &str)]) -> Value {
    Value::Object(pairs.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect())
}

/// Writes `kv/<key>` through `client`, expecting 204.
async fn put_kv(client: &Client, key: &str) {
    let resp = client.put(&format!("/v1/kv/{key}"), &json!({ "v": key })).await.expect("write");
    assert_eq!(resp.status, 204, "write {key}: {}", resp.text());
}

async fn expect_status(resp: vigil::client::Response, status: u16) -> Value {
    assert_eq!(resp.status, status, "{}", resp.text());
    if resp.text().is_empty() {
        Value::Null
    } else {
        resp.json().expect("json")
    }
}

/// Creates a token with `policy` (HCL) as its only policy (plus `default`).
async fn token_with_policy(cluster: &TestCluster, name: &str, policy: &str) -> String {
    let root = cluster.client(cluster.leader().await);
    expect_status(root.put(&format!("/v1/sys/policies/acl/{name}"), &json!({ "policy": policy })).await.unwrap(), 204)
        .await;
    let created =
        expect_status(root.post("/v1/auth/token/create", &json!({ "policies": [name] })).await.unwrap(), 200).await;
    created["auth"]["client_token"].as_str().expect("client_token").to_string()
}

#[tokio::test]
async fn every_kv_operation_emits_vaults_event_with_exact_metadata_in_both_formats() {
    let cluster = TestCluster::start(ClusterOptions { nodes: 1, ..Default::default() }).await;
    let addr = cluster.nodes[0].api_addr();
    let token = cluster.root_token.clone();
    let client = cluster.client(0);
    let mut json_ws = subscribe(&addr, &token, "*?json=true").await;
    let mut proto_ws = subscribe(&addr, &token, "*").await;

    let ok = |resp: vigil::client::Response| assert!(resp.is_success(), "{}", resp.text());
    ok(client.put("/v1/kv/a", &json!({ "x": 1 })).await.unwrap());
    ok(client.delete("/v1/kv/a").await.unwrap());
    ok(client.post("/v1/secret/config", &json!({ "max_versions": 5 })).await.unwrap());
    ok(client.post("/v1/secret/data/s", &json!({ "data": { "a": 1 } })).await.unwrap());
    let patch = client
        .request_raw(
            "PATCH",
            "/v1/secret/data/s",
            &[("Content-Type", "application/merge-patch+json")],
            br#"{"data":{"b":2}}"#.to_vec(),
        )
        .await
        .unwrap();
    ok(patch);
    ok(client.delete("/v1/secret/data/s").await.unwrap());
    ok(client.post("/v1/secret/delete/s", &json!({ "versions": [1] })).await.unwrap());
    ok(client.post("/v1/secret/undelete/s", &json!({ "versions": [1, 2] })).await.unwrap());
    ok(client.post("/v1/secret/destroy/s", &json!({ "versions": [2] })).await.unwrap());
    ok(client.post("/v1/secret/metadata/s", &json!({ "max_versions": 3 })).await.unwrap());
    let patch = client
        .request_raw(
            "PATCH",
            "/v1/secret/metadata/s",
            &[("Content-Type", "application/merge-patch+json")],
            br#"{"cas_required":false}"#.to_vec(),
        )
        .await
        .unwrap();
    ok(patch);
    ok(client.delete("/v1/secret/metadata/s").await.unwrap());

    let versions = |current: &'static str| [("current_version", current), ("oldest_version", "0")];
    let expected: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("kv-v1/write", vec![("data_path", "kv/a"), ("operation", "write"), ("path", "kv/a")]),
        ("kv-v1/delete", vec![("operation", "delete"), ("path", "kv/a")]),
        (
            "kv-v2/config-write",
            vec![("data_path", "secret/config"), ("operation", "config-write"), ("path", "secret/config")],
        ),
        (
            "kv-v2/data-write",
            [
                &versions("1")[..],
                &[("data_path", "secret/data/s"), ("operation", "data-write"), ("path", "secret/data/s")],
            ]
            .concat(),
        ),
        (
            "kv-v2/data-patch",
            [
                &versions("2")[..],
                &[("data_path", "secret/data/s"), ("operation", "data-patch"), ("path", "secret/data/s")],
            ]
            .concat(),
        ),
        (
            "kv-v2/data-delete",
            [&versions("2")[..], &[("operation", "data-delete"), ("path", "secret/data/s")]].concat(),
        ),
        (
            "kv-v2/delete",
            [&versions("2")[..], &[("deleted_versions", "[1]"), ("operation", "delete"), ("path", "secret/delete/s")]]
                .concat(),
        ),
        (
            "kv-v2/undelete",
            [
                &versions("2")[..],
                &[
                    ("data_path", "secret/data/s"),
                    ("operation", "undelete"),
                    ("path", "secret/undelete/s"),
                    ("undeleted_versions", "[1,2]"),
                ],
            ]
            .concat(),
        ),
        (
            "kv-v2/destroy",
            [
                &versions("2")[..],
                &[("destroyed_versions", "[2]"), ("operation", "destroy"), ("path", "secret/destroy/s")],
            ]
            .concat(),
        ),
        (
            "kv-v2/metadata-write",
            vec![("data_path", "secret/metadata/s"), ("operation", "metadata-write"), ("path", "secret/metadata/s")],
        ),
        (
            "kv-v2/metadata-patch",
            vec![("data_path", "secret/metadata/s"), ("operation", "metadata-patch"), ("path", "secret/metadata/s")],
        ),
        ("kv-v2/metadata-delete", vec![("operation", "metadata-delete"), ("path", "secret/metadata/s")]),
    ];

    let mounts = client.get("/v1/sys/mounts").await.unwrap().json().unwrap();
    let accessor = |mount: &str| mounts["data"][mount]["accessor"].as_str().expect("accessor").to_string();
    let events = next_jsons(&mut json_ws, expected.len()).await;
    let first = sequence(&events[0]);
    for (i, ((event_type, pairs), event)) in expected.iter().zip(&events).enumerate() {
        let mut pairs = pairs.clone();
        pairs.push(("modified", "true"));
        let mount = if event_type.starts_with("kv-v1") { "kv/" } else { "secret/" };
        let version = if event_type.starts_with("kv-v1") { "1" } else { "2" };
        let id = event["id"].as_str().expect("id");
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
        let time = event["time"].as_str().expect("time");
        assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok() && time.contains('.'), "{time}");
        let expected_event = json!({
            "id": id,
            "source": "vault://node1",
            "specversion": "1.0",
            "type": "*",
            "datacontenttype": "application/json",
            "time": time,
            "sequence": format!("{:020}", first + i as u64),
            "data": {
                "event": { "id": id, "metadata": metadata(&pairs) },
                "event_type": event_type,
                "plugin_info": {
                    "mount_class": "secret",
                    "mount_accessor": accessor(mount),
                    "mount_path": mount,
                    "plugin": "kv",
                    "version": version,
                },
            },
        });
        assert_eq!(event, &expected_event, "event {i}");

        // The protobuf frame of the same event carries the same fields, decoded with the generated types.
        let Message::Binary(bytes) = next_frame(&mut proto_ws).await else { panic!("expected a binary frame") };
        let frame = vigil::proto::EventReceived::decode(bytes.as_ref()).expect("protobuf frame");
        assert_eq!(frame.event_type, *event_type);
        assert_eq!(frame.sequence, first + i as u64);
        assert_eq!(frame.namespace, "");
        let data = frame.event.expect("event");
        assert_eq!(data.id, id);
        let fields: BTreeMap<String, Value> = data
            .metadata
            .expect("metadata")
            .fields
            .into_iter()
            .map(|(k, v)| match v.kind {
                Some(prost_types::value::Kind::StringValue(s)) => (k, Value::String(s)),
                other => panic!("metadata {k} is not a string: {other:?}"),
            })
            .collect();
        assert_eq!(serde_json::to_value(fields).unwrap(), metadata(&pairs));
        let info = frame.plugin_info.expect("plugin_info");
        assert_eq!(
            (info.mount_class.as_str(), info.mount_path.as_str(), info.plugin.as_str(), info.version.as_str()),
            ("secret", mount, "kv", version)
        );
        assert_eq!(info.mount_accessor, accessor(mount));
    }
}

#[tokio::test]
async fn wildcards_filters_and_bad_requests() {
    let cluster = TestCluster::start(ClusterOptions { nodes: 1, ..Default::default() }).await;
    let addr = cluster.nodes[0].api_addr();
    let token = cluster.root_token.clone();
    let client = cluster.client(0);

    let mut data_star = subscribe(&addr, &token, "kv-v2/data-*?json=true").await;
    let mut exact = subscribe(&addr, &token, "kv-v1/write?json=true").await;
    let filter = urlencode(r#"data_path == "secret/data/f1" or (operation == "write" and data_path matches "^kv/m")"#);
    let mut filtered = subscribe(&addr, &token, &format!("kv*?json=true&filter={filter}")).await;

    client.post("/v1/secret/data/f1", &json!({ "data": { "a": 1 } })).await.unwrap();
    client.post("/v1/secret/data/f2", &json!({ "data": { "a": 1 } })).await.unwrap();
    client.post("/v1/secret/metadata/f1", &json!({ "max_versions": 2 })).await.unwrap();
    client.delete("/v1/secret/data/f1").await.unwrap();
    put_kv(&client, "other").await;
    put_kv(&client, "marker").await;

    let types = |events: &[Value]| -> Vec<(String, String)> {
        events
            .iter()
            .map(|e| {
                let path = e["data"]["event"]["metadata"]["path"].as_str().unwrap_or_default().to_string();
                (e["data"]["event_type"].as_str().unwrap_or_default().to_string(), path)
            })
            .collect()
    };
    let pair = |t: &str, p: &str| (t.to_string(), p.to_string());
    assert_eq!(
        types(&next_jsons(&mut data_star, 3).await),
        vec![
            pair("kv-v2/data-write", "secret/data/f1"),
            pair("kv-v2/data-write", "secret/data/f2"),
            pair("kv-v2/data-delete", "secret/data/f1"),
        ]
    );
    assert_eq!(
        types(&next_jsons(&mut exact, 2).await),
        vec![pair("kv-v1/write", "kv/other"), pair("kv-v1/write", "kv/marker")]
    );
    // The filter matched f1's data-write (not its data-delete: that has no data_path) and the marker.
    assert_eq!(
        types(&next_jsons(&mut filtered, 2).await),
        vec![pair("kv-v2/data-write", "secret/data/f1"), pair("kv-v1/write", "kv/marker")]
    );

    // Bad requests are refused before the upgrade, with Vault's error body.
    let refused = |path: &'static str| {
        let addr = addr.clone();
        let token = token.clone();
        async move { try_subscribe(&addr, &token, path).await.expect_err("refused") }
    };
    let empty = refused("").await;
    assert_eq!(empty.status, 400, "{empty:?}");
    assert!(empty.body.contains("missing event type"), "{empty:?}");
    let bad_json = refused("kv*?json=maybe").await;
    assert_eq!(bad_json.status, 400);
    assert!(bad_json.body.contains("invalid value \\\"maybe\\\" for json"), "{bad_json:?}");
    let bad_since = refused("kv*?since=-1").await;
    assert_eq!(bad_since.status, 400);
    assert!(bad_since.body.contains("invalid since"), "{bad_since:?}");
    let bad_filter = try_subscribe(&addr, &token, &format!("kv*?filter={}", urlencode("event_type =="))).await;
    let bad_filter = bad_filter.expect_err("refused");
    assert_eq!(bad_filter.status, 400);
    assert!(bad_filter.body.contains("invalid filter expression at position"), "{bad_filter:?}");
    let no_token = try_subscribe(&addr, "hvs.unknown", "kv*").await.expect_err("refused");
    assert_eq!((no_token.status, no_token.body.as_str()), (403, r#"{"errors":["permission denied"]}"#));
    // Without a WebSocket upgrade the endpoint says what it needs.
    let plain = client.get("/v1/sys/events/subscribe/kv*").await.unwrap();
    assert_eq!(plain.status, 400, "{}", plain.text());
    assert!(plain.text().contains("WebSocket"), "{}", plain.text());
    // A body is never read on this endpoint, so the connection is not reused: the answer says so, and a pooling
    // client does not send its next request into a closing connection.
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", cluster.nodes[0].api_port)).unwrap();
    let request = format!(
        "GET /v1/sys/events/subscribe/kv* HTTP/1.1\r\nHost: x\r\nX-Vault-Token: {token}\r\nContent-Length: 5\r\n\r\nhello"
    );
    std::io::Write::write_all(&mut conn, request.as_bytes()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut conn, &mut answer).unwrap();
    let head = answer.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 400") && head.contains("\r\nconnection: close"), "{answer}");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn policies_decide_which_events_a_subscription_sees_and_changes_apply_at_once() {
    let options = ClusterOptions { plain_standbys: vec![1, 2], ..Default::default() };
    let cluster = TestCluster::start(options).await;
    let leader = cluster.leader().await;
    let addr = cluster.nodes[leader].api_addr();
    let root = cluster.client(leader);

    let watcher_policy = r#"
path "sys/events/subscribe/*" { capabilities = ["read"] }
path "secret/data/allowed/*" {
  capabilities = ["list", "subscribe"]
  subscribe_event_types = ["kv-v2/data-write"]
}
path "secret/data/hidden/*" { capabilities = ["read"] }
"#;
    let watcher = token_with_policy(&cluster, "watcher", watcher_policy).await;
    let no_read = token_with_policy(&cluster, "noread", r#"path "secret/*" { capabilities = ["subscribe"] }"#).await;
    let narrow = token_with_policy(
        &cluster,
        "narrow",
        r#"path "sys/events/subscribe/kv-v2/*" { capabilities = ["read"] }
path "secret/*" {
  capabilities = ["subscribe"]
  subscribe_event_types = ["*"]
}"#,
    )
    .await;

    // No `read` on the subscribe path: 403 before the upgrade; `read` on another pattern: 403 too.
    let refused = try_subscribe(&addr, &no_read, "kv*").await.expect_err("refused");
    assert_eq!(refused.status, 403, "{refused:?}");
    let refused = try_subscribe(&addr, &narrow, "kv*").await.expect_err("refused");
    assert_eq!(refused.status, 403, "{refused:?}");
    let mut narrow_ws = subscribe(&addr, &narrow, "kv-v2/*?json=true").await;

    let mut ws = subscribe(&addr, &watcher, "*?json=true").await;
    let write = |path: &'static str| {
        let root = root.clone();
        async move {
            let resp = root.post(&format!("/v1/secret/data/{path}"), &json!({ "data": { "v": path } })).await;
            assert!(resp.as_ref().is_ok_and(|r| r.is_success()), "{path}: {resp:?}");
        }
    };
    write("hidden/a").await; // no subscribe capability there
    write("allowed/b").await; // visible
    root.delete("/v1/secret/data/allowed/b").await.unwrap(); // data-delete: not in subscribe_event_types
    write("allowed/c").await; // visible
    let paths = |events: Vec<Value>| -> Vec<String> {
        events.iter().map(|e| e["data"]["event"]["metadata"]["path"].as_str().unwrap_or_default().to_string()).collect()
    };
    assert_eq!(paths(next_jsons(&mut ws, 2).await), vec!["secret/data/allowed/b", "secret/data/allowed/c"]);
    assert_eq!(
        paths(next_jsons(&mut narrow_ws, 4).await),
        vec!["secret/data/hidden/a", "secret/data/allowed/b", "secret/data/allowed/b", "secret/data/allowed/c"]
    );

    // A policy change applies to the very next event: hidden/ becomes visible, allowed/ does not any more.
    let changed = r#"
path "sys/events/subscribe/*" { capabilities = ["read"] }
path "secret/data/hidden/*" {
  capabilities = ["subscribe"]
  subscribe_event_types = ["kv-v2/*"]
}
"#;
    expect_status(root.put("/v1/sys/policies/acl/watcher", &json!({ "policy": changed })).await.unwrap(), 204).await;
    write("allowed/d").await;
    write("hidden/e").await;
    assert_eq!(paths(next_jsons(&mut ws, 1).await), vec!["secret/data/hidden/e"]);

    // Revoking the token closes the subscription with a policy-violation frame, before any later event.
    let revoke = root.post("/v1/auth/token/revoke", &json!({ "token": watcher })).await.unwrap();
    expect_status(revoke, 204).await;
    write("hidden/f").await;
    let (code, reason) = next_close(&mut ws).await;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("revoked"), "{reason}");

    // A plain standby redirects to the leader, keeping path and query.
    let standby = cluster.others(leader)[0];
    let refused = try_subscribe(&cluster.nodes[standby].api_addr(), &narrow, "kv-v2/*?json=true&since=3").await;
    let refused = refused.expect_err("redirected");
    assert_eq!(refused.status, 307, "{refused:?}");
    assert_eq!(
        refused.location.as_deref(),
        Some(
            format!(
                "ws://127.0.0.1:{}/v1/sys/events/subscribe/kv-v2/*?json=true&since=3",
                cluster.nodes[leader].api_port
            )
            .as_str()
        )
    );
    narrow_ws.close(None).await.ok();
}

/// The sequence numbers of `events`, checked to be exactly `from..from+len` (no gap, no duplicate).
fn assert_contiguous(events: &[Value], from: u64) {
    let sequences: Vec<u64> = events.iter().map(sequence).collect();
    let expected: Vec<u64> = (from..from + events.len() as u64).collect();
    assert_eq!(sequences, expected);
}

#[tokio::test]
async fn every_node_serves_the_same_events_and_subscribers_resume_across_failures() {
    let mut cluster = TestCluster::start3().await;
    let leader = cluster.leader().await;
    let token = cluster.root_token.clone();
    let mut subs: Vec<Ws> = Vec::new();
    for node in &cluster.nodes {
        subs.push(subscribe(&node.api_addr(), &token, "*?json=true&since=0").await);
    }
    let writer = cluster.client(leader);
    for n in 0..10 {
        put_kv(&writer, &format!("same/{n}")).await;
    }
    let mut seen: Vec<Vec<Value>> = Vec::new();
    for ws in subs.iter_mut() {
        seen.push(next_jsons(ws, 10).await);
    }
    assert_contiguous(&seen[0], 1);
    assert_eq!(seen[0], seen[1], "node 1 and 2 served different events");
    assert_eq!(seen[0], seen[2], "node 1 and 3 served different events");
    let source = format!("vault://{}", cluster.nodes[leader].name);
    assert!(seen[0].iter().all(|e| e["source"] == json!(source)), "{:?}", seen[0][0]);

    // Kill the leader: its subscriber reconnects elsewhere from its cursor; the others keep their streams.
    cluster.kill(leader);
    let survivors = cluster.others(leader);
    let mut resumed = subscribe(&cluster.nodes[survivors[0]].api_addr(), &token, "*?json=true&since=10").await;
    let writer = cluster.client(survivors[1]);
    for n in 10..20 {
        // Through a survivor: it forwards to the new leader once one is elected.
        common::wait_for("a write after failover", common::WAIT, || async {
            let resp = writer.put(&format!("/v1/kv/same/{n}"), &json!({ "v": n })).await.ok()?;
            (resp.status == 204).then_some(())
        })
        .await;
    }
    let after = next_jsons(&mut resumed, 10).await;
    assert_contiguous(&after, 11);
    for &i in &survivors {
        let live = next_jsons(&mut subs[i], 10).await;
        assert_eq!(live, after, "{} served a different stream", cluster.nodes[i].name);
    }

    // Kill the node a subscriber is on and resume with Last-Event-ID on the other survivor: no gap, no duplicate.
    let new_leader = cluster.leader().await;
    let follower = survivors.iter().copied().find(|&i| i != new_leader).expect("a follower");
    let mut on_follower = subscribe(&cluster.nodes[follower].api_addr(), &token, "kv*?json=true&since=20").await;
    put_kv(&cluster.client(new_leader), "same/20").await;
    let got = next_jsons(&mut on_follower, 1).await;
    assert_contiguous(&got, 21);
    cluster.restart(leader).await;
    cluster.kill(follower);
    put_kv(&cluster.client(new_leader), "same/21").await;
    let url =
        format!("{}/v1/sys/events/subscribe/kv*?json=true", cluster.nodes[leader].api_addr().replacen("http", "ws", 1));
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert("x-vault-token", token.parse().unwrap());
    request.headers_mut().insert("last-event-id", "21".parse().unwrap());
    let (mut resumed, _) = common::wait_for("the restarted node to serve", common::WAIT, || {
        let request = request.clone();
        async move { tokio_tungstenite::connect_async(request).await.ok() }
    })
    .await;
    put_kv(&cluster.client(new_leader), "same/22").await;
    let got = next_jsons(&mut resumed, 2).await;
    assert_contiguous(&got, 22);
    assert_eq!(got[1]["data"]["event"]["metadata"]["path"], json!("kv/same/22"));
}

#[tokio::test]
async fn retention_trims_old_events_and_old_cursors_get_410() {
    let options =
        ClusterOptions { nodes: 1, extra_config: "events {\n  retention_count = 5\n}\n".into(), ..Default::default() };
    let cluster = TestCluster::start(options).await;
    let addr = cluster.nodes[0].api_addr();
    let token = cluster.root_token.clone();
    let client = cluster.client(0);
    for n in 0..12 {
        put_kv(&client, &format!("r/{n}")).await;
    }
    // The active node trims in the background: 12 events, keep 5, so everything through 7 goes.
    let gone = common::wait_for("the event log to be trimmed", common::WAIT, || async {
        try_subscribe(&addr, &token, "kv*?since=6").await.err().filter(|r| r.status == 410)
    })
    .await;
    assert!(gone.body.contains("no longer retained"), "{gone:?}");
    assert!(gone.body.contains("since=7"), "{gone:?}");
    let mut ws = subscribe(&addr, &token, "kv*?json=true&since=7").await;
    let events = next_jsons(&mut ws, 5).await;
    assert_contiguous(&events, 8);
    assert_eq!(events[4]["data"]["event"]["metadata"]["path"], json!("kv/r/11"));
}

#[tokio::test]
async fn a_slow_subscriber_catches_up_without_loss() {
    let cluster = TestCluster::start(ClusterOptions { nodes: 1, ..Default::default() }).await;
    let addr = cluster.nodes[0].api_addr();
    let mut slow = subscribe(&addr, &cluster.root_token, "kv*?json=true").await;
    // Write while the subscriber reads nothing: 16 concurrent writers, 40 writes each.
    let mut writers = Vec::new();
    for w in 0..16 {
        let client = cluster.client(0);
        writers.push(tokio::spawn(async move {
            for n in 0..40 {
                put_kv(&client, &format!("slow/{w}/{n}")).await;
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let events = next_jsons(&mut slow, 640).await;
    assert_contiguous(&events, 1);
    let mut paths: Vec<String> = events
        .iter()
        .map(|e| e["data"]["event"]["metadata"]["path"].as_str().unwrap_or_default().to_string())
        .collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 640);
    slow.send(Message::Close(None)).await.ok();
}
