//! Property tests ("fuzzing") of the HTTP API and of the cluster port, against one real node process.
//!
//! Every endpoint of the API (the routing of `src/http`) gets proptest-generated requests with the root token:
//! random bytes, text that is not JSON, JSON that is not an object, objects whose every known field holds a value of
//! a wrong type (strings for numbers, negative and huge numbers, nested objects, arrays, nulls, long strings),
//! unknown fields, wrong or missing content types, and malformed query strings (`?version=abc`, `?list=maybe`, bad
//! percent-escapes, invalid UTF-8). Every answer must be below 500, and a 4xx must carry Vault's
//! `{"errors":[...]}` with non-empty messages (a 404 may also be one of Vault's body-less or envelope-shaped
//! answers, which Vault clients expect). Afterwards the node must still be healthy and its log free of panics.
//!
//! The cluster port gets random bodies on `/raft/{append,vote,snapshot}` *with* the cluster secret, which the test
//! obtains the way a joining node does (`sys/storage/raft/bootstrap/join` with the root token, for a learner that
//! is then removed): each must be 400. Without the secret, or with a wrong one, the answer is 401.
//!
//! `VIGIL_FUZZ_CASES=<n>` sets the number of requests per endpoint (default 40); the test prints how many requests
//! it sent per target. See docs/fuzzing.md.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{ClusterOptions, TestCluster};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use serde_json::{json, Map, Value};
use vigil::client::{Client, Response};
use vigil::raft::{codec, NodeId, TypeConfig};

/// Requests per endpoint: `VIGIL_FUZZ_CASES`, else `default`.
fn cases(default: usize) -> usize {
    std::env::var("VIGIL_FUZZ_CASES").ok().and_then(|v| v.trim().parse().ok()).filter(|n| *n > 0).unwrap_or(default)
}

/// Draws one value of `strategy` (no shrinking: a failing request is reported as sent).
fn draw<S: Strategy>(runner: &mut TestRunner, strategy: &S) -> S::Value {
    strategy.new_tree(runner).expect("generate").current()
}

// ----- what is sent -----

/// One endpoint: the methods to use, the path (below `/v1/`), and the body fields its handler reads.
struct Endpoint {
    methods: &'static [&'static str],
    path: &'static str,
    fields: &'static [&'static str],
    /// Query parameters the handler reads.
    query: &'static [&'static str],
}

const fn ep(
    methods: &'static [&'static str],
    path: &'static str,
    fields: &'static [&'static str],
    query: &'static [&'static str],
) -> Endpoint {
    Endpoint { methods, path, fields, query }
}

const RW: &[&str] = &["GET", "PUT", "POST", "DELETE", "LIST", "PATCH"];
const TOKEN_FIELDS: &[&str] = &[
    "policies",
    "meta",
    "no_parent",
    "no_default_policy",
    "ttl",
    "explicit_max_ttl",
    "num_uses",
    "display_name",
    "renewable",
    "period",
    "type",
    "id",
];
const KV2_META_FIELDS: &[&str] = &["max_versions", "cas_required", "delete_version_after", "custom_metadata"];

/// Every endpoint of the API, enumerated from the routing in `src/http` (`mod.rs`, `sys.rs`, `token.rs`,
/// `logical.rs`, `kv2.rs`). `revoke-self` is fuzzed separately (it would revoke the root token).
const ENDPOINTS: &[Endpoint] = &[
    ep(&["GET", "PUT", "POST"], "sys/init", &["secret_shares", "secret_threshold", "pgp_keys"], &[]),
    ep(
        &["GET", "HEAD"],
        "sys/health",
        &[],
        &[
            "standbyok",
            "perfstandbyok",
            "activecode",
            "standbycode",
            "performancestandbycode",
            "uninitcode",
            "sealedcode",
        ],
    ),
    ep(&["GET"], "sys/leader", &[], &[]),
    ep(&["POST", "PUT"], "sys/storage/raft/join", &["leader_api_addr", "retry", "leader_ca_cert"], &[]),
    ep(&["GET", "POST"], "sys/storage/raft/configuration", &[], &[]),
    ep(&["POST", "GET"], "sys/storage/raft/remove-peer", &["server_id"], &[]),
    ep(&["POST"], "sys/storage/raft/bootstrap/join", &["node_id", "api_addr", "cluster_addr"], &[]),
    ep(&["GET", "POST"], "sys/mounts", &[], &[]),
    ep(RW, "sys/mounts/fuzzmnt", &["type", "description", "options", "config", "local", "seal_wrap"], &[]),
    ep(&["GET", "POST", "PUT"], "sys/mounts/secret/tune", &["description", "options", "max_lease_ttl"], &[]),
    ep(&["GET", "POST"], "sys/mounts/kv/tune", &["description", "options"], &[]),
    ep(&["GET", "LIST"], "sys/policies/acl", &[], &["list"]),
    ep(RW, "sys/policies/acl/fuzzpol", &["policy", "rules"], &[]),
    ep(&["GET", "LIST"], "sys/policy", &[], &["list"]),
    ep(RW, "sys/policy/fuzzpol", &["policy", "rules"], &[]),
    ep(&["POST", "GET"], "sys/capabilities", &["token", "path", "paths"], &[]),
    ep(&["POST", "GET"], "sys/capabilities-self", &["path", "paths"], &[]),
    ep(&["POST", "GET"], "sys/capabilities-accessor", &["accessor", "path", "paths"], &[]),
    ep(&["GET"], "sys/internal/ui/mounts/secret/data/x", &[], &[]),
    ep(&["POST", "GET"], "auth/token/create", TOKEN_FIELDS, &[]),
    ep(&["POST"], "auth/token/create-orphan", TOKEN_FIELDS, &[]),
    ep(&["POST", "GET"], "auth/token/lookup", &["token"], &[]),
    ep(&["GET", "POST"], "auth/token/lookup-self", &["token"], &[]),
    ep(&["POST"], "auth/token/lookup-accessor", &["accessor"], &[]),
    ep(&["POST"], "auth/token/renew", &["token", "increment"], &[]),
    ep(&["POST", "PUT"], "auth/token/renew-self", &["increment"], &[]),
    ep(&["POST"], "auth/token/revoke", &["token"], &[]),
    ep(&["POST"], "auth/token/revoke-orphan", &["token"], &[]),
    ep(&["POST"], "auth/token/revoke-accessor", &["accessor"], &[]),
    ep(&["GET", "POST"], "auth/token/unknown", &[], &[]),
    ep(RW, "kv/fuzz/a", &["value", "data", "ttl"], &["list"]),
    ep(&["GET", "LIST"], "kv/fuzz/", &[], &["list"]),
    ep(&["GET", "POST", "PUT"], "secret/config", &["max_versions", "cas_required", "delete_version_after"], &[]),
    ep(RW, "secret/data/fuzz/a", &["data", "options", "version"], &["version", "list"]),
    ep(RW, "secret/metadata/fuzz/a", KV2_META_FIELDS, &["list", "exclude_deleted"]),
    ep(&["GET", "LIST"], "secret/metadata/fuzz/", &[], &["list", "exclude_deleted"]),
    ep(&["POST", "PUT", "GET"], "secret/delete/fuzz/a", &["versions"], &[]),
    ep(&["POST", "PUT"], "secret/undelete/fuzz/a", &["versions"], &[]),
    ep(&["POST", "PUT"], "secret/destroy/fuzz/a", &["versions"], &[]),
    ep(&["GET"], "secret/subkeys/fuzz/a", &[], &["depth", "version"]),
    ep(RW, "secret/data", &["data"], &[]),
    ep(RW, "secret/elsewhere/x", &["data"], &[]),
    ep(RW, "nomount/x", &["data"], &[]),
    ep(&["GET"], "sys/events/subscribe/kv*", &[], &["filter", "json", "since", "namespaces"]),
];

/// Strings that might confuse a handler; none is a real token, accessor, node name or http URL.
fn odd_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            " ",
            "0",
            "-1",
            "1",
            "true",
            "false",
            "null",
            "abc",
            "1.5",
            "1e400",
            "-9223372036854775809",
            "18446744073709551616",
            "1,2,3",
            "1,a",
            "10s",
            "-5m",
            "99999999999999999999h",
            "768h",
            "1d",
            "kv",
            "kv-v2",
            "root",
            "default",
            "hvs.",
            "../..",
            "a/../b",
            "sys/",
            "*",
            "+",
            "%zz",
            "\u{0}",
            "\u{202e}abc",
            "é",
            "😀",
            "path \"x\" { capabilities = [\"read\"] }",
            "path",
            "{",
            "[",
            "\"",
        ])
        .prop_map(str::to_string),
        "[ -~]{0,32}",
        any::<String>().prop_map(|s| s.chars().take(64).collect()),
        (1..200_000usize).prop_map(|n| "x".repeat(n)),
    ]
}

/// A JSON value of any type, nested a little.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        prop::sample::select(vec![0.5, -0.0, 1e308, -1e308, f64::MIN_POSITIVE, 4294967296.0]).prop_map(|n| json!(n)),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        odd_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(odd_string(), inner, 0..6)
                .prop_map(|m: BTreeMap<String, Value>| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A body for an endpoint that reads `fields`.
fn body_strategy(fields: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    let field_names: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
    let object = if field_names.is_empty() {
        prop::collection::btree_map(odd_string(), any_json(), 0..4).boxed()
    } else {
        let known = prop::collection::btree_map(prop::sample::select(field_names), any_json(), 0..6);
        let unknown = prop::collection::btree_map(odd_string(), any_json(), 0..2);
        (known, unknown)
            .prop_map(|(mut known, unknown)| {
                known.extend(unknown);
                known
            })
            .boxed()
    };
    prop_oneof![
        6 => object.prop_map(|m| serde_json::to_vec(&Value::Object(m.into_iter().collect::<Map<_, _>>())).expect("json")),
        1 => prop::collection::vec(any::<u8>(), 0..512),
        1 => "[ -~\n]{0,64}".prop_map(String::into_bytes),
        1 => any_json().prop_map(|v| serde_json::to_vec(&v).expect("json")),
        1 => prop::sample::select(vec![
            b"{".to_vec(),
            b"{\"data\": {\"a\": \"\xff\xfe\"}}".to_vec(),
            b"{\"a\":1,\"a\":2}".to_vec(),
            format!("{}1{}", "[".repeat(2000), "]".repeat(2000)).into_bytes(),
            format!("{}{}", "{\"a\":".repeat(200), "}".repeat(200)).into_bytes(),
            b"\xef\xbb\xbf{}".to_vec(),
            b"null".to_vec(),
            b"{\"data\":{}} trailing".to_vec(),
            b"{\"n\": 1e999}".to_vec(),
        ]),
    ]
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        3 => Just(Some("application/json".to_string())),
        1 => Just(None),
        1 => prop::sample::select(vec![
            "application/merge-patch+json",
            "application/merge-patch+json; charset=utf-8",
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded",
            "",
            ";;;",
            "application/json; charset=latin1",
        ])
        .prop_map(|s| Some(s.to_string())),
    ]
}

/// Percent-encodes every byte that is not unreserved.
fn encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (*b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query_strategy(params: &'static [&'static str]) -> impl Strategy<Value = String> {
    let names: Vec<String> =
        params.iter().map(|p| p.to_string()).chain(["list", "version", "x"].map(String::from)).collect();
    let value = prop_oneof![
        prop::sample::select(vec![
            "abc",
            "maybe",
            "true",
            "false",
            "",
            "-1",
            "0",
            "1",
            "99999999999999999999",
            "1.5",
            "%zz",
            "%",
            "%f",
            "%ff%fe",
            "%00",
            "a+b",
            "%E2%80%AE",
            "yes",
            "-9223372036854775808",
            "600",
            "99",
        ])
        .prop_map(str::to_string),
        odd_string().prop_map(|s| encode(s.as_bytes())),
        prop::collection::vec(any::<u8>(), 0..16).prop_map(|b| encode(&b)),
    ];
    let pair = (prop::sample::select(names), value).prop_map(|(k, v)| format!("{k}={v}"));
    prop_oneof![
        2 => Just(String::new()),
        4 => prop::collection::vec(pair, 1..4).prop_map(|pairs| format!("?{}", pairs.join("&"))),
        1 => prop::sample::select(vec!["?", "?&&", "?=", "?list", "?version=abc", "?list=maybe", "?%zz=1", "?a=%"])
            .prop_map(str::to_string),
    ]
}

#[derive(Debug)]
struct Sent {
    method: String,
    path: String,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// The checks on one answer; `Err` describes what is wrong.
fn check_answer(sent: &Sent, response: &Response) -> Result<(), String> {
    let status = response.status;
    if status >= 500 {
        return Err(format!("status {status}: {}", response.text()));
    }
    if !(400..500).contains(&status) || sent.method == "HEAD" {
        return Ok(());
    }
    if status == 404 && response.body.is_empty() {
        return Ok(()); // Vault's body-less 404 (kv-v2 patch of a missing secret).
    }
    let value: Value = serde_json::from_slice(&response.body)
        .map_err(|e| format!("status {status} with a non-JSON body ({e}): {}", response.text()))?;
    match value.get("errors") {
        Some(Value::Array(errors)) => {
            if !errors.iter().all(|e| e.as_str().is_some_and(|s| !s.trim().is_empty())) {
                return Err(format!("status {status}: an error message is empty or not a string: {value}"));
            }
            // Vault answers a missing secret or policy with `404 {"errors":[]}`; every other rejection says why.
            if errors.is_empty() && status != 404 {
                return Err(format!("status {status} without a message: {value}"));
            }
            Ok(())
        }
        // Vault's 404s inside a kv-v2 mount are whole response envelopes (a deleted version with its metadata, a
        // warning for a path that is not a kv-v2 endpoint).
        _ if status == 404 && value.get("request_id").is_some() => Ok(()),
        _ => Err(format!("status {status} without an errors array: {value}")),
    }
}

/// Sends one request: `Ok(None)` when the client itself refuses to build the URI (the server never saw it),
/// `Err` when the server answered nothing (it closed the connection, or timed out).
async fn send(client: &Client, sent: &Sent) -> Result<Option<Response>, String> {
    let headers: Vec<(&str, &str)> = sent.content_type.iter().map(|c| ("Content-Type", c.as_str())).collect();
    match client.request_raw(&sent.method, &sent.path, &headers, sent.body.clone()).await {
        Ok(response) => Ok(Some(response)),
        Err(vigil::client::ClientError::InvalidAddress(_)) => Ok(None),
        Err(e) => Err(format!("no answer: {e}")),
    }
}

thread_local! {
    /// Statuses seen since the last [`take_statuses`], to show that the requests reach the handlers.
    static STATUSES: std::cell::RefCell<BTreeMap<u16, usize>> = const { std::cell::RefCell::new(BTreeMap::new()) };
}

fn take_statuses() -> String {
    let statuses = STATUSES.with(|s| std::mem::take(&mut *s.borrow_mut()));
    statuses.iter().map(|(status, n)| format!("{status}×{n}")).collect::<Vec<_>>().join(" ")
}

/// Describes a request for a failure report.
fn describe(sent: &Sent) -> String {
    let body: String = String::from_utf8_lossy(&sent.body).chars().take(300).collect();
    format!("{} {} (content type {:?}, body {body:?})", sent.method, sent.path, sent.content_type)
}

/// Sends `sent` and checks the answer; returns whether the server saw the request.
async fn fuzz_one(client: &Client, sent: &Sent, failures: &mut Vec<String>) -> Option<Response> {
    match send(client, sent).await {
        Ok(Some(response)) => {
            STATUSES.with(|s| *s.borrow_mut().entry(response.status).or_default() += 1);
            if let Err(why) = check_answer(sent, &response) {
                failures.push(format!("{}: {why}", describe(sent)));
            }
            Some(response)
        }
        Ok(None) => None,
        Err(why) => {
            failures.push(format!("{}: {why}", describe(sent)));
            None
        }
    }
}

/// A token that `revoke-self` may consume: a fresh child of the root token.
async fn victim_token(client: &Client) -> String {
    let resp = client.post("/v1/auth/token/create", &json!({ "policies": ["default"], "ttl": "1h" })).await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json().unwrap()["auth"]["client_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn every_endpoint_survives_fuzzed_requests() {
    let cluster = TestCluster::start(ClusterOptions { nodes: 1, ..Default::default() }).await;
    let client = cluster.client(0).with_timeout(Duration::from_secs(30));
    // Something to read, patch, delete and destroy.
    assert_eq!(client.put("/v1/kv/fuzz/a", &json!({ "a": 1 })).await.unwrap().status, 204);
    let written = client.put("/v1/secret/data/fuzz/a", &json!({ "data": { "a": 1, "b": { "c": [1] } } })).await;
    assert_eq!(written.unwrap().status, 200);

    let per_endpoint = cases(40);
    let mut runner = TestRunner::new(RunnerConfig { failure_persistence: None, ..RunnerConfig::default() });
    let mut failures: Vec<String> = Vec::new();
    let mut sent_total = 0usize;
    let started = Instant::now();
    for endpoint in ENDPOINTS {
        let strategy = (
            prop::sample::select(endpoint.methods.to_vec()),
            body_strategy(endpoint.fields),
            content_type(),
            query_strategy(endpoint.query),
        );
        let mut sent_here = 0usize;
        for _ in 0..per_endpoint {
            let (method, body, content_type, query) = draw(&mut runner, &strategy);
            let sent =
                Sent { method: method.to_string(), path: format!("/v1/{}{query}", endpoint.path), content_type, body };
            // The subscribe endpoint answers without reading the request body, after which the server closes the
            // keep-alive connection (see docs/fuzzing.md): each of its requests gets a connection of its own, so
            // a pooled connection closed by the previous answer is not mistaken for a failure of this request.
            let fresh;
            let via = if endpoint.path.starts_with("sys/events/subscribe/") {
                fresh = cluster.client(0);
                &fresh
            } else {
                &client
            };
            if fuzz_one(via, &sent, &mut failures).await.is_some() {
                sent_here += 1;
            }
        }
        eprintln!("fuzz http {:<40} {sent_here} requests: {}", endpoint.path, take_statuses());
        sent_total += sent_here;
    }

    // revoke-self, with tokens made to be revoked.
    let mut victim = victim_token(&client).await;
    let strategy = (body_strategy(&["token"]), content_type());
    let mut sent_here = 0usize;
    for _ in 0..per_endpoint {
        let (body, content_type) = draw(&mut runner, &strategy);
        let sent = Sent { method: "POST".into(), path: "/v1/auth/token/revoke-self".into(), content_type, body };
        let victim_client = client.clone().with_token(victim.clone());
        let Some(response) = fuzz_one(&victim_client, &sent, &mut failures).await else { continue };
        sent_here += 1;
        if response.status == 204 {
            victim = victim_token(&client).await;
        }
    }
    eprintln!("fuzz http {:<40} {sent_here} requests: {}", "auth/token/revoke-self", take_statuses());
    sent_total += sent_here;

    // Wrong methods and paths outside the API.
    for (method, path) in
        [("OPTIONS", "/v1/kv/a"), ("TRACE", "/v1/sys/health"), ("GET", "/v2/kv/a"), ("GET", "/"), ("FOO", "/v1/kv/a")]
    {
        let sent = Sent { method: method.into(), path: path.into(), content_type: None, body: Vec::new() };
        if fuzz_one(&client, &sent, &mut failures).await.is_some() {
            sent_total += 1;
        }
    }
    eprintln!("fuzz http: {sent_total} requests in total, {:.1}s", started.elapsed().as_secs_f64());

    // The node is still healthy, the root token still works, and nothing panicked.
    assert_eq!(cluster.health(0).await, Some(200), "node unhealthy after fuzzing");
    assert_eq!(client.get("/v1/auth/token/lookup-self").await.unwrap().status, 200);
    let log = cluster.nodes[0].log();
    assert!(!log.contains("panicked"), "the node panicked:\n{log}");
    assert!(
        failures.is_empty(),
        "{} bad answers, the first ones:\n{}",
        failures.len(),
        failures.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

// ----- the cluster port -----

/// The cluster secret, obtained as a joining node obtains it: the leader's `bootstrap/join` with the root token
/// (for a learner that does not exist, removed again right away).
async fn cluster_secret(client: &Client) -> String {
    let body = json!({
        "node_id": "fuzz-learner",
        "api_addr": "http://127.0.0.1:9",
        "cluster_addr": "http://127.0.0.1:9",
    });
    let resp = client.post("/v1/sys/storage/raft/bootstrap/join", &body).await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let secret = resp.json().unwrap()["data"]["cluster_secret"].as_str().expect("cluster_secret").to_string();
    let removed = client.post("/v1/sys/storage/raft/remove-peer", &json!({ "server_id": "fuzz-learner" })).await;
    assert_eq!(removed.unwrap().status, 204);
    secret
}

/// True if `body` decodes as the request of `route` (such a body would reach Raft, so it is not sent: a valid
/// vote with a higher term would legitimately depose the leader).
fn decodes(route: &str, body: &[u8]) -> bool {
    match route {
        "/raft/append" => codec::decode::<openraft::raft::AppendEntriesRequest<TypeConfig>>(body).is_ok(),
        "/raft/vote" => codec::decode::<openraft::raft::VoteRequest<NodeId>>(body).is_ok(),
        _ => codec::decode::<openraft::raft::InstallSnapshotRequest<TypeConfig>>(body).is_ok(),
    }
}

fn rpc_body() -> impl Strategy<Value = Vec<u8>> {
    let huge_claim =
        (prop::collection::vec(any::<u8>(), 0..12), prop::sample::select(vec![1u64 << 40, 1 << 60, u64::MAX]))
            .prop_map(|(head, claim)| [head, vec![0xfd], claim.to_le_bytes().to_vec(), b"tail".to_vec()].concat());
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..256),
        1 => huge_claim,
        1 => "[ -~]{0,64}".prop_map(String::into_bytes),
        1 => Just(Vec::new()),
    ]
}

#[tokio::test]
async fn cluster_port_rejects_malformed_rpcs() {
    let cluster = TestCluster::start(ClusterOptions { nodes: 1, ..Default::default() }).await;
    let secret = cluster_secret(&cluster.client(0)).await;
    let port = Client::new(&format!("http://127.0.0.1:{}", cluster.nodes[0].cluster_port))
        .with_timeout(Duration::from_secs(10));
    let mut runner = TestRunner::new(RunnerConfig { failure_persistence: None, ..RunnerConfig::default() });
    let strategy = rpc_body();
    let per_route = cases(300);
    let mut failures = Vec::new();
    for route in ["/raft/append", "/raft/vote", "/raft/snapshot"] {
        let (mut sent, mut skipped) = (0usize, 0usize);
        while sent < per_route {
            let body = draw(&mut runner, &strategy);
            if decodes(route, &body) {
                skipped += 1;
                continue;
            }
            let resp =
                port.request_raw("POST", route, &[("x-vigil-cluster-secret", &secret)], body.clone()).await.unwrap();
            sent += 1;
            if resp.status != 400 || resp.text().trim().is_empty() {
                failures.push(format!("{route} {body:?}: {} {}", resp.status, resp.text()));
            }
        }
        // Without the secret, and with a wrong one: 401 before anything is decoded.
        for headers in [vec![], vec![("x-vigil-cluster-secret", "wrong")]] {
            let resp = port.request_raw("POST", route, &headers, vec![0xfd; 10]).await.unwrap();
            assert_eq!(resp.status, 401, "{route} {headers:?}: {}", resp.text());
        }
        eprintln!("fuzz cluster-port {route}: {sent} malformed bodies sent ({skipped} generated bodies decoded and were not sent)");
    }
    assert_eq!(cluster.health(0).await, Some(200), "node unhealthy after fuzzing");
    let log = cluster.nodes[0].log();
    assert!(!log.contains("panicked"), "the node panicked:\n{log}");
    assert!(
        failures.is_empty(),
        "{} bad answers:\n{}",
        failures.len(),
        failures.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}
