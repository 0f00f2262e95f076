//! Security checks on real clusters.
//!
//! - Every authenticated endpoint refuses a request without a token, with a made-up, revoked or expired token, and
//!   with a valid token whose policies grant nothing there: 403 `{"errors":["permission denied"]}`, as Vault answers
//!   (Vault ≥ 1.16 adds a second message, "invalid token", for bad tokens; Vigil gives the one message for all, as
//!   `http::error::ApiError::permission_denied` documents). This holds on the active node and on a performance
//!   standby, which decides on its own before forwarding (shown with every other node paused), and the refused
//!   requests change nothing: no state, no Raft entry, no event. The self-service endpoints of the default policy
//!   stay open to any valid token; the open endpoints answer without one.
//! - The event subscription endpoint refuses the WebSocket upgrade the same way (403, never 101).
//! - The cluster port refuses Raft RPCs without the cluster secret (401) before decoding them, so they never reach
//!   Raft: the term, the leader and the log stay as they were.
//! - No secret — written values, token ids, accessors, the cluster secret — appears in any node's log, at `debug`
//!   and at `trace`, through forwarding, subscriptions, snapshots and restarts.

mod common;

use std::time::Duration;

use common::{wait_for, ClusterOptions, TestCluster, WAIT};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use vigil::client::{Client, Response};
use vigil::engines::tokens::random_base62;

/// Vault's answer to a missing, unknown, revoked or expired token and to a token that lacks the capability.
const DENIED: &str = r#"{"errors":["permission denied"]}"#;

/// Everything everywhere: the tokens that are refused below are refused for what they are, not for their policy.
const ADMIN_POLICY: &str =
    r#"path "*" { capabilities = ["create", "read", "update", "delete", "list", "patch", "sudo", "subscribe"] }"#;
/// Nothing any endpoint below needs (plus the default policy's self-service paths).
const NOTHING_POLICY: &str = r#"path "other/*" { capabilities = ["read"] }"#;

/// The credentials every authenticated endpoint must refuse (`NoCapability` excepted on self-service endpoints).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Credential {
    Missing,
    MadeUp,
    Revoked,
    Expired,
    NoCapability,
}

const CREDENTIALS: [Credential; 5] =
    [Credential::Missing, Credential::MadeUp, Credential::Revoked, Credential::Expired, Credential::NoCapability];

struct Tokens {
    made_up: String,
    revoked: String,
    expired: String,
    no_capability: String,
}

impl Tokens {
    fn get(&self, credential: Credential) -> Option<&str> {
        match credential {
            Credential::Missing => None,
            Credential::MadeUp => Some(&self.made_up),
            Credential::Revoked => Some(&self.revoked),
            Credential::Expired => Some(&self.expired),
            Credential::NoCapability => Some(&self.no_capability),
        }
    }
}

/// One request: method, path (with query), JSON body (`Null`: none).
struct Endpoint {
    method: &'static str,
    path: String,
    body: Value,
}

fn endpoint(method: &'static str, path: &str, body: Value) -> Endpoint {
    Endpoint { method, path: path.to_string(), body }
}

/// Every authenticated endpoint except the self-service ones, each with a body that would do harm if accepted.
/// `victim` is a valid admin token (and its accessor) that the token endpoints would renew or revoke.
fn authenticated_endpoints(victim: &str, victim_accessor: &str) -> Vec<Endpoint> {
    let none = Value::Null;
    let pwned = json!({ "a": "pwned" });
    let versions = json!({ "versions": [1] });
    let intruder =
        json!({ "node_id": "intruder", "api_addr": "http://127.0.0.1:9", "cluster_addr": "http://127.0.0.1:9" });
    vec![
        // sys/mounts
        endpoint("GET", "/v1/sys/mounts", none.clone()),
        endpoint("GET", "/v1/sys/mounts/kv", none.clone()),
        endpoint("POST", "/v1/sys/mounts/evil", json!({ "type": "kv" })),
        endpoint("DELETE", "/v1/sys/mounts/kv", none.clone()),
        endpoint("GET", "/v1/sys/mounts/kv/tune", none.clone()),
        endpoint("POST", "/v1/sys/mounts/kv/tune", json!({ "description": "pwned" })),
        // ACL policies, both APIs
        endpoint("LIST", "/v1/sys/policies/acl", none.clone()),
        endpoint("GET", "/v1/sys/policies/acl?list=true", none.clone()),
        endpoint("GET", "/v1/sys/policies/acl/admin", none.clone()),
        endpoint("PUT", "/v1/sys/policies/acl/evil", json!({ "policy": ADMIN_POLICY })),
        endpoint("PUT", "/v1/sys/policies/acl/nothing", json!({ "policy": ADMIN_POLICY })),
        endpoint("DELETE", "/v1/sys/policies/acl/admin", none.clone()),
        endpoint("GET", "/v1/sys/policy", none.clone()),
        endpoint("GET", "/v1/sys/policy/admin", none.clone()),
        endpoint("PUT", "/v1/sys/policy/evil", json!({ "rules": ADMIN_POLICY })),
        endpoint("DELETE", "/v1/sys/policy/admin", none.clone()),
        // capabilities of other tokens, mount lookup
        endpoint("POST", "/v1/sys/capabilities", json!({ "token": victim, "paths": ["kv/x"] })),
        endpoint("POST", "/v1/sys/capabilities-accessor", json!({ "accessor": victim_accessor, "paths": ["kv/x"] })),
        endpoint("GET", "/v1/sys/internal/ui/mounts/kv/x", none.clone()),
        // Raft membership
        endpoint("GET", "/v1/sys/storage/raft/configuration", none.clone()),
        endpoint("POST", "/v1/sys/storage/raft/remove-peer", json!({ "server_id": "node3" })),
        endpoint("POST", "/v1/sys/storage/raft/bootstrap/join", intruder),
        // the token auth method
        endpoint("POST", "/v1/auth/token/create", json!({ "policies": ["admin"] })),
        endpoint("POST", "/v1/auth/token/create-orphan", json!({ "policies": ["admin"] })),
        endpoint("POST", "/v1/auth/token/lookup", json!({ "token": victim })),
        endpoint("POST", "/v1/auth/token/lookup-accessor", json!({ "accessor": victim_accessor })),
        endpoint("POST", "/v1/auth/token/renew", json!({ "token": victim, "increment": "1h" })),
        endpoint("POST", "/v1/auth/token/revoke", json!({ "token": victim })),
        endpoint("POST", "/v1/auth/token/revoke-accessor", json!({ "accessor": victim_accessor })),
        endpoint("POST", "/v1/auth/token/revoke-orphan", json!({ "token": victim })),
        // kv-v1
        endpoint("GET", "/v1/kv/x", none.clone()),
        endpoint("PUT", "/v1/kv/x", pwned.clone()),
        endpoint("POST", "/v1/kv/new", pwned.clone()),
        endpoint("DELETE", "/v1/kv/x", none.clone()),
        endpoint("LIST", "/v1/kv/", none.clone()),
        endpoint("GET", "/v1/kv/?list=true", none.clone()),
        // kv-v2
        endpoint("GET", "/v1/secret/config", none.clone()),
        endpoint("POST", "/v1/secret/config", json!({ "max_versions": 1, "cas_required": true })),
        endpoint("GET", "/v1/secret/data/x", none.clone()),
        endpoint("GET", "/v1/secret/data/x?version=1", none.clone()),
        endpoint("POST", "/v1/secret/data/x", json!({ "data": pwned })),
        endpoint("PUT", "/v1/secret/data/new", json!({ "data": pwned })),
        endpoint("PATCH", "/v1/secret/data/x", json!({ "data": pwned })),
        endpoint("DELETE", "/v1/secret/data/x", none.clone()),
        endpoint("GET", "/v1/secret/metadata/x", none.clone()),
        endpoint("POST", "/v1/secret/metadata/x", json!({ "max_versions": 1, "custom_metadata": pwned })),
        endpoint("PATCH", "/v1/secret/metadata/x", json!({ "custom_metadata": pwned })),
        endpoint("DELETE", "/v1/secret/metadata/x", none.clone()),
        endpoint("LIST", "/v1/secret/metadata/", none.clone()),
        endpoint("POST", "/v1/secret/delete/x", versions.clone()),
        endpoint("POST", "/v1/secret/undelete/x", versions.clone()),
        endpoint("PUT", "/v1/secret/destroy/x", versions),
        endpoint("GET", "/v1/secret/subkeys/x", none.clone()),
        // no mount there: still 403, not 404 (the path's existence is not disclosed)
        endpoint("GET", "/v1/nomount/x", none),
    ]
}

/// The default policy's self-service endpoints: refused to bad credentials, open to any valid token.
fn self_endpoints() -> Vec<Endpoint> {
    vec![
        endpoint("GET", "/v1/auth/token/lookup-self", Value::Null),
        endpoint("POST", "/v1/auth/token/lookup-self", json!({})),
        endpoint("POST", "/v1/auth/token/renew-self", json!({ "increment": "1h" })),
        endpoint("POST", "/v1/auth/token/revoke-self", json!({})),
        endpoint("POST", "/v1/sys/capabilities-self", json!({ "paths": ["kv/x"] })),
    ]
}

/// A client for node `node` with `token` (none: no token header at all).
fn client(cluster: &TestCluster, node: usize, token: Option<&str>, timeout: Duration) -> Client {
    let client = Client::new(&cluster.nodes[node].api_addr()).with_timeout(timeout);
    match token {
        Some(token) => client.with_token(token),
        None => client,
    }
}

async fn send(client: &Client, endpoint: &Endpoint) -> Response {
    let content_type = if endpoint.method == "PATCH" { "application/merge-patch+json" } else { "application/json" };
    let body = if endpoint.body.is_null() { Vec::new() } else { endpoint.body.to_string().into_bytes() };
    let sent = client.request_raw(endpoint.method, &endpoint.path, &[("Content-Type", content_type)], body).await;
    sent.unwrap_or_else(|e| panic!("{} {}: {e}", endpoint.method, endpoint.path))
}

/// Asserts `resp` has `status` and returns its JSON body (`Null` when empty).
fn expect(resp: Response, status: u16) -> Value {
    assert_eq!(resp.status, status, "{}", resp.text());
    if resp.body.is_empty() {
        Value::Null
    } else {
        resp.json().expect("json body")
    }
}

async fn put_policy(cluster: &TestCluster, node: usize, name: &str, text: &str) {
    let resp = cluster.client(node).put(&format!("/v1/sys/policies/acl/{name}"), &json!({ "policy": text })).await;
    expect(resp.expect("policy write"), 204);
}

/// Creates a token through `client`; returns (id, accessor).
async fn create_token(client: &Client, body: Value) -> (String, String) {
    let auth = expect(client.post("/v1/auth/token/create", &body).await.expect("create token"), 200)["auth"].clone();
    (auth["client_token"].as_str().expect("id").to_string(), auth["accessor"].as_str().expect("accessor").to_string())
}

/// The outcome of a WebSocket handshake.
#[derive(Debug)]
struct Handshake {
    status: u16,
    body: String,
    location: Option<String>,
    /// `X-Vigil-Event-Sequence` of a 101.
    cursor: Option<u64>,
}

fn ws_base(cluster: &TestCluster, node: usize) -> String {
    cluster.nodes[node].api_addr().replacen("http://", "ws://", 1)
}

/// Attempts the upgrade at `url`; a successful subscription is closed at once.
async fn handshake(url: &str, token: Option<&str>) -> Handshake {
    let mut request = url.into_client_request().expect("request");
    if let Some(token) = token {
        request.headers_mut().insert("x-vault-token", token.parse().expect("header"));
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request)).await.expect("handshake in time") {
        Ok((mut ws, response)) => {
            let cursor = response.headers().get("x-vigil-event-sequence").map(|v| v.to_str().unwrap().parse().unwrap());
            let _ = ws.close(None).await;
            Handshake { status: response.status().as_u16(), body: String::new(), location: None, cursor }
        }
        Err(tungstenite::Error::Http(response)) => Handshake {
            status: response.status().as_u16(),
            body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
            location: response.headers().get("location").map(|v| v.to_str().unwrap().to_string()),
            cursor: None,
        },
        Err(e) => panic!("handshake with {url}: {e}"),
    }
}

fn subscribe_url(cluster: &TestCluster, node: usize, pattern_and_query: &str) -> String {
    format!("{}/v1/sys/events/subscribe/{pattern_and_query}", ws_base(cluster, node))
}

/// Waits until the leader's log is quiet: the last entry is the membership in force (so no promotion is half
/// done) and it is committed and applied. Returns the committed index.
async fn wait_raft_quiet(cluster: &TestCluster, leader: usize) -> u64 {
    let root = cluster.client(leader);
    wait_for("a quiet Raft log", WAIT, || async {
        let config = root.get("/v1/sys/storage/raft/configuration").await.ok()?.json().ok()?;
        let info = root.get("/v1/sys/leader").await.ok()?.json().ok()?;
        let membership = config["data"]["config"]["index"].as_u64()?;
        let (committed, applied) = (info["raft_committed_index"].as_u64()?, info["raft_applied_index"].as_u64()?);
        (info["is_self"] == json!(true) && committed == applied && committed == membership).then_some(committed)
    })
    .await
}

/// Removes what changes between two identical reads (request ids, the remaining TTL).
fn scrub(mut value: Value) -> Value {
    if let Some(object) = value.as_object_mut() {
        object.remove("request_id");
    }
    if let Some(data) = value.get_mut("data").and_then(Value::as_object_mut) {
        data.remove("ttl");
    }
    value
}

/// Everything a refused request could have changed, read with the root token on `node` (the leader): the data,
/// mounts, policies, membership, the victim token, the committed Raft index and the head of the event log.
async fn observe(cluster: &TestCluster, node: usize, victim: &str) -> Value {
    let root = cluster.client(node);
    let mut seen = serde_json::Map::new();
    let reads = [
        ("GET", "/v1/kv/x"),
        ("GET", "/v1/kv/new"),
        ("LIST", "/v1/kv/"),
        ("GET", "/v1/secret/config"),
        ("GET", "/v1/secret/data/x"),
        ("GET", "/v1/secret/data/new"),
        ("GET", "/v1/secret/metadata/x"),
        ("LIST", "/v1/secret/metadata/"),
        ("GET", "/v1/sys/mounts"),
        ("GET", "/v1/sys/mounts/kv/tune"),
        ("LIST", "/v1/sys/policies/acl"),
        ("GET", "/v1/sys/policies/acl/admin"),
        ("GET", "/v1/sys/policies/acl/nothing"),
        ("GET", "/v1/sys/storage/raft/configuration"),
    ];
    for (method, path) in reads {
        let resp = root.request(method, path, None).await.expect("observe");
        let body = if resp.body.is_empty() { Value::Null } else { scrub(resp.json().expect("json")) };
        seen.insert(format!("{method} {path}"), json!([resp.status, body]));
    }
    let lookup = root.post("/v1/auth/token/lookup", &json!({ "token": victim })).await.expect("lookup");
    seen.insert("victim".into(), json!([lookup.status, scrub(lookup.json().expect("json"))]));
    let leader = expect(root.get("/v1/sys/leader").await.expect("leader"), 200);
    seen.insert("leader".into(), json!([leader["leader_address"], leader["raft_committed_index"]]));
    let head = handshake(&subscribe_url(cluster, node, "*"), Some(&cluster.root_token)).await;
    assert_eq!(head.status, 101, "{head:?}");
    seen.insert("event head".into(), json!(head.cursor));
    Value::Object(seen)
}

#[tokio::test]
async fn every_authenticated_endpoint_refuses_missing_bad_and_insufficient_tokens() {
    let mut cluster = TestCluster::start3().await;
    let leader = cluster.leader().await;
    // The promotion of the joined nodes is over: from here on, only this test appends to the log.
    wait_raft_quiet(&cluster, leader).await;
    let follower = cluster.others(leader)[0];
    let root = cluster.client(leader);
    let timeout = Duration::from_secs(15);

    // What refused requests would change, and the tokens.
    expect(root.put("/v1/kv/x", &json!({ "a": "original" })).await.unwrap(), 204);
    expect(root.post("/v1/secret/data/x", &json!({ "data": { "a": "original" } })).await.unwrap(), 200);
    expect(root.post("/v1/secret/metadata/x", &json!({ "custom_metadata": { "a": "original" } })).await.unwrap(), 204);
    put_policy(&cluster, leader, "admin", ADMIN_POLICY).await;
    put_policy(&cluster, leader, "nothing", NOTHING_POLICY).await;
    let admin = json!({ "policies": ["admin"] });
    let (victim, victim_accessor) = create_token(&root, admin.clone()).await;
    let (revoked, _) = create_token(&root, admin.clone()).await;
    let (expired, _) = create_token(&root, json!({ "policies": ["admin"], "ttl": "1s" })).await;
    let (no_capability, _) = create_token(&root, json!({ "policies": ["nothing"] })).await;
    let self_revokers = [
        create_token(&root, json!({ "policies": ["nothing"] })).await.0,
        create_token(&root, json!({ "policies": ["nothing"] })).await.0,
    ];
    put_policy(&cluster, leader, "kv2-events", r#"path "sys/events/subscribe/kv-v2*" { capabilities = ["read"] }"#)
        .await;
    let (events_only, _) = create_token(&root, json!({ "policies": ["kv2-events"] })).await;
    let tokens = Tokens { made_up: format!("hvs.{}", random_base62(24).unwrap()), revoked, expired, no_capability };

    // Control: the admin policy opens everything on both nodes, so what is refused below is refused for the
    // credential alone.
    for node in [leader, follower] {
        let admin = client(&cluster, node, Some(&victim), timeout);
        wait_for("the admin token on every node", WAIT, || async {
            (admin.get("/v1/kv/x").await.ok()?.status == 200).then_some(())
        })
        .await;
        let revoked_client = client(&cluster, node, Some(&tokens.revoked), timeout);
        assert_eq!(expect(revoked_client.get("/v1/kv/x").await.unwrap(), 200)["data"], json!({ "a": "original" }));
        let subscribed = handshake(&subscribe_url(&cluster, node, "kv*"), Some(&victim)).await;
        assert_eq!(subscribed.status, 101, "{subscribed:?}");
    }
    expect(root.post("/v1/auth/token/revoke", &json!({ "token": tokens.revoked })).await.unwrap(), 204);
    // Wait on the conditions themselves: the revocation applied and the expiry passed, on both nodes.
    wait_for("the 1s token to expire", WAIT, || async {
        let resp = root.post("/v1/auth/token/lookup", &json!({ "token": tokens.expired })).await.ok()?;
        (resp.status == 400 && resp.errors() == ["bad token"]).then_some(())
    })
    .await;
    for node in [leader, follower] {
        for token in [&tokens.revoked, &tokens.expired] {
            let c = client(&cluster, node, Some(token), timeout);
            wait_for("the revocation and the expiry on every node", WAIT, || async {
                (c.get("/v1/auth/token/lookup-self").await.ok()?.status == 403).then_some(())
            })
            .await;
        }
    }

    let before = observe(&cluster, leader, &victim).await;
    let endpoints = authenticated_endpoints(&victim, &victim_accessor);
    let self_service = self_endpoints();

    // 1. HTTP: every endpoint, every bad credential, on the active node and on a performance standby.
    let mut refused = 0;
    for node in [leader, follower] {
        for credential in CREDENTIALS {
            let c = client(&cluster, node, tokens.get(credential), timeout);
            let checked = if credential == Credential::NoCapability { &endpoints[..0] } else { &self_service[..] };
            for e in endpoints.iter().chain(checked) {
                let resp = send(&c, e).await;
                let name = &cluster.nodes[node].name;
                assert_eq!(
                    (resp.status, resp.text().as_str()),
                    (403, DENIED),
                    "{credential:?} {} {} on {name}",
                    e.method,
                    e.path
                );
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 2 * (5 * endpoints.len() + 4 * self_service.len()));

    // A granted prefix does not stretch: `..` is not resolved, so `other/../kv/x` leads nowhere.
    for node in [leader, follower] {
        let c = client(&cluster, node, Some(&tokens.no_capability), timeout);
        for (raw, decoded) in [("other/../kv/x", "other/../kv/x"), ("other/%2E%2E/kv/x", "other/../kv/x")] {
            let resp = c.get(&format!("/v1/{raw}")).await.unwrap();
            let message = format!("no handler for route {decoded:?}. route entry not found.");
            assert_eq!((resp.status, resp.errors()), (404, vec![message]), "{raw}");
        }
    }

    // 2. WebSocket: the upgrade is refused. A performance standby that does not know a token (made up, revoked,
    // or expired: absent from its state) sends the client to the active node, which refuses it; a token it knows
    // but that lacks `read` on sys/events/subscribe/<type>, or no token at all, it refuses itself.
    for node in [leader, follower] {
        for credential in CREDENTIALS {
            for pattern in ["kv*", "kv-v2/data-write?json=true", "*"] {
                let token = tokens.get(credential);
                let url = subscribe_url(&cluster, node, pattern);
                let mut answer = handshake(&url, token).await;
                let unknown_here = !matches!(credential, Credential::Missing | Credential::NoCapability);
                if node == follower && unknown_here {
                    assert_eq!(answer.status, 307, "{credential:?} {pattern}: {answer:?}");
                    let leader_url = subscribe_url(&cluster, leader, pattern);
                    assert_eq!(answer.location.as_deref(), Some(leader_url.as_str()));
                    answer = handshake(&leader_url, token).await;
                }
                assert_eq!((answer.status, answer.body.as_str()), (403, DENIED), "{credential:?} {pattern} on {node}");
            }
        }
    }
    // `read` on one event type's subscribe path opens that type only.
    for node in [leader, follower] {
        let kv_all = handshake(&subscribe_url(&cluster, node, "kv*"), Some(&events_only)).await;
        // The new token may not have reached the follower yet: then it sends the client to the leader.
        let kv_all = match kv_all.location {
            Some(location) => handshake(&location, Some(&events_only)).await,
            None => kv_all,
        };
        assert_eq!((kv_all.status, kv_all.body.as_str()), (403, DENIED));
        let url = subscribe_url(&cluster, node, "kv-v2/data-write");
        let kv2 = wait_for("the events-only token on every node", WAIT, || async {
            Some(handshake(&url, Some(&events_only)).await).filter(|h| h.status == 101)
        })
        .await;
        assert!(kv2.cursor.is_some());
    }

    // 3. Joining: a new node that joins with a bad credential is refused by the cluster (bootstrap/join needs
    // `sudo`), whether it asks the leader or a follower, and does not become a member.
    let newcomer = cluster.add_node_process();
    cluster.wait_health(newcomer, &[501]).await;
    for through in [leader, follower] {
        for credential in CREDENTIALS {
            let c = client(&cluster, newcomer, tokens.get(credential), timeout);
            let body = json!({ "leader_api_addr": cluster.nodes[through].api_addr() });
            let resp = c.post("/v1/sys/storage/raft/join", &body).await.unwrap();
            assert_eq!((resp.status, resp.text().as_str()), (403, DENIED), "join with {credential:?} via {through}");
        }
    }
    assert_eq!(cluster.health(newcomer).await, Some(501));
    cluster.kill(newcomer);

    // Nothing changed: no data, no mount, no policy, no member, no token change, no Raft entry, no event.
    let after = observe(&cluster, leader, &victim).await;
    for (what, seen) in before.as_object().unwrap() {
        assert_eq!(&after[what], seen, "{what} changed");
    }

    // 4. The standby decides alone: with every other node paused, it still refuses at once what it can judge
    // (no token; a token it knows that lacks the capability). Forwarding would hang until a leader appears.
    let paused = cluster.others(follower);
    for &i in &paused {
        cluster.nodes[i].pause();
    }
    let alone = Duration::from_secs(3);
    for credential in [Credential::Missing, Credential::NoCapability] {
        let c = client(&cluster, follower, tokens.get(credential), alone);
        for e in &endpoints {
            let resp = send(&c, e).await;
            assert_eq!(
                (resp.status, resp.text().as_str()),
                (403, DENIED),
                "alone: {credential:?} {} {}",
                e.method,
                e.path
            );
        }
        let answer = handshake(&subscribe_url(&cluster, follower, "kv*"), tokens.get(credential)).await;
        assert_eq!((answer.status, answer.body.as_str()), (403, DENIED), "alone: {credential:?} subscribe");
    }
    for &i in &paused {
        cluster.nodes[i].resume();
    }
    let leader = cluster.wait_stable().await;
    let follower = cluster.others(leader)[0];

    // 5. The default policy's self-service endpoints stay open to a valid token without other capabilities.
    for (node, self_revoker) in [leader, follower].into_iter().zip(&self_revokers) {
        let c = client(&cluster, node, Some(&tokens.no_capability), timeout);
        let me = expect(c.get("/v1/auth/token/lookup-self").await.unwrap(), 200);
        assert_eq!(
            (me["data"]["id"].as_str(), &me["data"]["policies"]),
            (Some(tokens.no_capability.as_str()), &json!(["default", "nothing"]))
        );
        // The default policy grants `read` there, as Vault's does: the POST form needs `update`.
        let resp = c.post("/v1/auth/token/lookup-self", &json!({})).await.unwrap();
        assert_eq!((resp.status, resp.text().as_str()), (403, DENIED));
        let paths = json!({ "paths": ["kv/x", "other/x", "sys/mounts"] });
        let caps = expect(c.post("/v1/sys/capabilities-self", &paths).await.unwrap(), 200);
        assert_eq!(
            caps["data"],
            json!({
                "capabilities": ["deny", "read"],
                "kv/x": ["deny"],
                "other/x": ["read"],
                "sys/mounts": ["deny"],
            })
        );
        let renewed = expect(c.post("/v1/auth/token/renew-self", &json!({ "increment": "1h" })).await.unwrap(), 200);
        assert_eq!(renewed["auth"]["client_token"].as_str(), Some(tokens.no_capability.as_str()));
        assert_eq!(renewed["auth"]["lease_duration"], json!(3600));
        let revoker = client(&cluster, node, Some(self_revoker), timeout);
        expect(revoker.post("/v1/auth/token/revoke-self", &json!({})).await.unwrap(), 204);
        let resp = revoker.get("/v1/auth/token/lookup-self").await.unwrap();
        assert_eq!((resp.status, resp.text().as_str()), (403, DENIED));
    }

    // 6. The open endpoints answer without a token.
    for node in [leader, follower] {
        let c = client(&cluster, node, None, timeout);
        let health = c.get("/v1/sys/health").await.unwrap();
        let standby = node != leader;
        assert_eq!(health.status, if standby { 473 } else { 200 });
        let health = health.json().unwrap();
        assert_eq!((&health["initialized"], &health["standby"]), (&json!(true), &json!(standby)));
        let leader_info = expect(c.get("/v1/sys/leader").await.unwrap(), 200);
        assert_eq!(leader_info["leader_address"].as_str(), Some(cluster.nodes[leader].api_addr().as_str()));
        assert_eq!(leader_info["is_self"], json!(!standby));
        assert_eq!(expect(c.get("/v1/sys/init").await.unwrap(), 200), json!({ "initialized": true }));
        let init = c.put("/v1/sys/init", &json!({})).await.unwrap();
        assert_eq!((init.status, init.errors()), (400, vec!["Vigil is already initialized".to_string()]));
        // `sys/storage/raft/join` is open too (a joining node has no state to check a token against): the token
        // it is given goes to the cluster it joins, so without one it is refused at once, and on a member it
        // refuses to run at all.
        let other = cluster.others(node)[0];
        let body = json!({ "leader_api_addr": cluster.nodes[other].api_addr() });
        let resp = c.post("/v1/sys/storage/raft/join", &body).await.unwrap();
        assert_eq!((resp.status, resp.text().as_str()), (403, DENIED));
        let resp =
            client(&cluster, node, Some(&tokens.made_up), timeout).post("/v1/sys/storage/raft/join", &body).await;
        let resp = resp.unwrap();
        assert_eq!((resp.status, resp.errors()), (400, vec!["this node is already part of a cluster".to_string()]));
    }
}

/// The cluster-port answer to an RPC without the right secret.
const NO_SECRET: &str = "missing or wrong cluster secret";

/// Raft RPCs that would depose the leader if a node accepted them: a vote request, a heartbeat and a snapshot from
/// a made-up node of a far higher term.
fn hostile_rpcs() -> Vec<(&'static str, Vec<u8>)> {
    use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
    use openraft::{CommittedLeaderId, LogId, SnapshotMeta, StoredMembership, Vote};
    use vigil::raft::{codec, TypeConfig};
    let (term, intruder) = (1u64 << 40, 4242u64);
    let last = LogId::new(CommittedLeaderId::new(term, intruder), 1 << 40);
    let vote = VoteRequest { vote: Vote::new(term, intruder), last_log_id: Some(last) };
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(term, intruder),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: Some(last),
    };
    let snapshot = InstallSnapshotRequest::<TypeConfig> {
        vote: Vote::new_committed(term, intruder),
        meta: SnapshotMeta {
            last_log_id: Some(last),
            last_membership: StoredMembership::default(),
            snapshot_id: "intruder".into(),
        },
        offset: 0,
        data: Vec::new(),
        done: true,
    };
    vec![
        ("/raft/vote", codec::encode(&vote).expect("encode")),
        ("/raft/append", codec::encode(&append).expect("encode")),
        ("/raft/snapshot", codec::encode(&snapshot).expect("encode")),
    ]
}

fn cluster_client(cluster: &TestCluster, node: usize) -> Client {
    Client::new(&format!("http://127.0.0.1:{}", cluster.nodes[node].cluster_port)).with_timeout(WAIT)
}

/// POSTs `body` to `route` on node `node`'s cluster port, with `secret` in the secret header unless `None`.
async fn rpc(cluster: &TestCluster, node: usize, route: &str, secret: Option<&str>, body: Vec<u8>) -> Response {
    let headers: Vec<(&str, &str)> = secret.map(|s| ("x-vigil-cluster-secret", s)).into_iter().collect();
    cluster_client(cluster, node).request_raw("POST", route, &headers, body).await.expect("cluster port")
}

/// The cluster secret of a stopped node, read from its data directory.
fn cluster_secret_of(cluster: &TestCluster, node: usize) -> String {
    use vigil::storage::{Keyspace, SledStorage, Storage};
    assert!(!cluster.nodes[node].is_running(), "the node's database is locked while it runs");
    let storage = SledStorage::open(&cluster.nodes[node].dir.join("data")).expect("open the node's data");
    let secret = storage.get(Keyspace::Node, b"cluster_secret").expect("read").expect("a cluster secret");
    String::from_utf8(secret).expect("utf-8")
}

/// Who leads, as every running node sees it, and the leader's committed and applied Raft indexes.
async fn raft_view(cluster: &TestCluster) -> Value {
    let mut view = Vec::new();
    for node in 0..cluster.nodes.len() {
        if cluster.nodes[node].is_running() {
            let leader = expect(client(cluster, node, None, WAIT).get("/v1/sys/leader").await.unwrap(), 200);
            let indexes = leader["is_self"]
                .as_bool()
                .unwrap()
                .then(|| json!([leader["raft_committed_index"], leader["raft_applied_index"]]));
            view.push(json!([cluster.health(node).await, leader["leader_address"], indexes]));
        }
    }
    Value::Array(view)
}

#[tokio::test]
async fn the_cluster_port_refuses_rpcs_without_the_cluster_secret() {
    let mut cluster = TestCluster::start3().await;
    let leader = cluster.leader().await;
    let committed = wait_raft_quiet(&cluster, leader).await;
    let before = raft_view(&cluster).await;
    assert_eq!(before[leader][2], json!([committed, committed]));

    let same_length = random_base62(43).unwrap();
    let root_token = cluster.root_token.clone();
    let wrong: [Option<&str>; 5] = [None, Some(""), Some(&same_length), Some(&root_token), Some("x")];
    for node in 0..3 {
        for (route, body) in hostile_rpcs() {
            for secret in wrong {
                let resp = rpc(&cluster, node, route, secret, body.clone()).await;
                assert_eq!(
                    (resp.status, resp.text().as_str()),
                    (401, NO_SECRET),
                    "{route} on node{} with {secret:?}",
                    node + 1
                );
            }
            // The secret is checked before the body is looked at: garbage gets the same answer.
            let resp = rpc(&cluster, node, route, None, b"\xff\x00garbage".to_vec()).await;
            assert_eq!((resp.status, resp.text().as_str()), (401, NO_SECRET));
        }
    }
    // None of it reached Raft: same leader everywhere, same roles, no new term (a new term commits a blank entry),
    // and the next write is the very next entry.
    assert_eq!(raft_view(&cluster).await, before);
    let write = cluster.client(leader).put("/v1/kv/after", &json!({ "a": 1 })).await.unwrap();
    assert_eq!(write.status, 204);
    let index = write.headers.get("x-vigil-raft-index").expect("index header").to_str().unwrap().parse::<u64>();
    assert_eq!(index.unwrap(), committed + 1);

    // Control: with the real secret (read from a stopped member's data), the same port decodes the body, and a
    // harmless RPC (a vote request of term 0) reaches Raft, which turns it down.
    let stopped = cluster.others(leader)[0];
    cluster.kill(stopped);
    let secret = cluster_secret_of(&cluster, stopped);
    assert_eq!(secret.len(), 43);
    let resp = rpc(&cluster, leader, "/raft/vote", Some(&secret), b"\xff\x00garbage".to_vec()).await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert!(resp.text().starts_with("malformed RPC body: "), "{}", resp.text());
    let stale = openraft::raft::VoteRequest { vote: openraft::Vote::new(0, 4242u64), last_log_id: None };
    let resp = rpc(&cluster, leader, "/raft/vote", Some(&secret), vigil::raft::codec::encode(&stale).unwrap()).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let answer: Result<openraft::raft::VoteResponse<u64>, openraft::error::RaftError<u64>> =
        vigil::raft::codec::decode(&resp.body).expect("a vote response");
    assert!(!answer.expect("vote handled").vote_granted);
    // The secret is never logged.
    for node in &cluster.nodes {
        assert!(!node.log().contains(&secret), "{} logs the cluster secret", node.name);
    }

    // A node that is in no cluster has no secret yet and accepts nothing.
    let newcomer = cluster.add_node_process();
    cluster.wait_health(newcomer, &[501]).await;
    for (route, body) in hostile_rpcs() {
        for secret in [None, Some(secret.as_str())] {
            let resp = rpc(&cluster, newcomer, route, secret, body.clone()).await;
            assert_eq!((resp.status, resp.text().as_str()), (503, "this node has not joined a cluster"));
        }
    }
    cluster.kill(newcomer);
    cluster.restart(stopped).await;
    cluster.wait_stable().await;
}

/// What the log-scan scenario's `app` tokens may do.
const APP_POLICY: &str = r#"
path "kv/*" {
  capabilities = ["create", "read", "update", "delete", "list", "patch", "subscribe"]
  subscribe_event_types = ["*"]
}
path "secret/*" {
  capabilities = ["create", "read", "update", "delete", "list", "patch", "subscribe"]
  subscribe_event_types = ["*"]
}
path "sys/events/subscribe/*" {
  capabilities = ["read"]
}
path "auth/token/create" {
  capabilities = ["update"]
}
"#;

/// The ways a secret could show up in a log line: as text, hex-encoded, or as the `Debug` of its bytes.
fn renderings(secret: &str) -> [String; 3] {
    let bytes = format!("{:?}", secret.as_bytes());
    [secret.to_string(), hex::encode(secret), bytes.trim_matches(|c| c == '[' || c == ']').to_string()]
}

/// The next `count` JSON event frames of `ws`.
async fn next_events(ws: &mut Ws, count: usize) -> Vec<String> {
    let mut frames = Vec::new();
    while frames.len() < count {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("an event in time") {
            Some(Ok(Message::Text(text))) => frames.push(text.as_str().to_string()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("subscription ended: {other:?}"),
        }
    }
    frames
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn subscribe(url: &str, token: &str) -> Ws {
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert("x-vault-token", token.parse().expect("header"));
    tokio_tungstenite::connect_async(request).await.unwrap_or_else(|e| panic!("subscribe {url}: {e}")).0
}

async fn merge_patch(client: &Client, path: &str, body: Value) -> Response {
    let content_type = [("Content-Type", "application/merge-patch+json")];
    client.request_raw("PATCH", path, &content_type, body.to_string().into_bytes()).await.expect("patch")
}

/// Writes secrets every way there is (kv-v1, kv-v2 put, patch, custom metadata, check-and-set, refused writes),
/// creates, uses and revokes tokens, subscribes to events, forwards through a follower, and makes a killed node catch
/// up through a snapshot; then scans every node's log for every secret: the values, token ids and accessors (the
/// root token's too) and the cluster secret.
async fn secrets_never_appear_in_logs(level: &str) {
    let options = ClusterOptions {
        env: vec![("VIGIL_LOG".into(), level.into())],
        snapshot_threshold: 20,
        trailing_logs: 5,
        // The followers join on their own, with the root token from a file.
        retry_join: true,
        ..Default::default()
    };
    let mut cluster = TestCluster::start(options).await;
    let leader = cluster.leader().await;
    let (via, restarted) = (cluster.others(leader)[0], cluster.others(leader)[1]);
    let timeout = Duration::from_secs(15);
    let root = cluster.client(leader);
    let root_via = cluster.client(via);
    let mut secrets: Vec<(String, String)> = Vec::new();
    let mut marker = |what: &str| {
        let value = format!("Zq{what}{}", random_base62(20).unwrap());
        secrets.push((what.to_string(), value.clone()));
        value
    };
    let (m1, m2, m3, m4, m5) =
        (marker("kv1-put"), marker("kv1-fwd"), marker("kv2-put"), marker("kv2-patch"), marker("meta"));
    let (m6, m7, m8, m9, m10) = (marker("meta-patch"), marker("cas"), marker("bad"), marker("denied"), marker("fill"));

    // Tokens, created on the leader and through the follower.
    put_policy(&cluster, leader, "app", APP_POLICY).await;
    let me = expect(root.get("/v1/auth/token/lookup-self").await.unwrap(), 200);
    let mut tokens = vec![(cluster.root_token.clone(), me["data"]["accessor"].as_str().unwrap().to_string())];
    let app = create_token(&root, json!({ "policies": ["app"], "meta": { "team": "a" } })).await;
    let forwarded = create_token(&root_via, json!({ "policies": ["app"], "ttl": "1h" })).await;
    let orphan =
        expect(root_via.post("/v1/auth/token/create-orphan", &json!({ "policies": ["default"] })).await.unwrap(), 200);
    let orphan = (
        orphan["auth"]["client_token"].as_str().unwrap().to_string(),
        orphan["auth"]["accessor"].as_str().unwrap().to_string(),
    );
    let app_via = client(&cluster, via, Some(&app.0), timeout);
    wait_for("the app token on the follower", WAIT, || async {
        (app_via.get("/v1/auth/token/lookup-self").await.ok()?.status == 200).then_some(())
    })
    .await;
    let child = create_token(&app_via, json!({})).await;
    tokens.extend([app.clone(), forwarded.clone(), orphan.clone(), child.clone()]);

    // A subscriber on the follower.
    let mut events = subscribe(&subscribe_url(&cluster, via, "kv*?json=true"), &app.0).await;

    // Writes: on the leader and forwarded by the follower, with the root token and others.
    let forwarded_via = client(&cluster, via, Some(&forwarded.0), timeout);
    expect(root.put("/v1/kv/app/db", &json!({ "password": m1 })).await.unwrap(), 204);
    expect(app_via.put("/v1/kv/app/fwd", &json!({ "password": m2 })).await.unwrap(), 204);
    expect(forwarded_via.post("/v1/secret/data/app", &json!({ "data": { "password": m3 } })).await.unwrap(), 200);
    expect(merge_patch(&app_via, "/v1/secret/data/app", json!({ "data": { "apikey": m4 } })).await, 200);
    expect(root.post("/v1/secret/metadata/app", &json!({ "custom_metadata": { "owner": m5 } })).await.unwrap(), 204);
    expect(merge_patch(&app_via, "/v1/secret/metadata/app", json!({ "custom_metadata": { "team": m6 } })).await, 204);
    let cas = json!({ "options": { "cas": 0 }, "data": { "k": m7 } });
    expect(app_via.post("/v1/secret/data/app2", &cas).await.unwrap(), 200);
    // Refused writes carrying secrets: a check-and-set mismatch, a malformed body, a denied token.
    assert_eq!(app_via.post("/v1/secret/data/app2", &cas).await.unwrap().status, 400);
    assert_eq!(app_via.post("/v1/secret/data/bad", &json!({ "data": m8 })).await.unwrap().status, 400);
    let orphan_via = client(&cluster, via, Some(&orphan.0), timeout);
    let resp = orphan_via.put("/v1/kv/app/denied", &json!({ "password": m9 })).await.unwrap();
    assert_eq!((resp.status, resp.text().as_str()), (403, DENIED));

    // Reads on the follower, one with `Authorization: Bearer`.
    let bearer = format!("Bearer {}", app.0);
    let anonymous = Client::new(&cluster.nodes[via].api_addr());
    let resp = anonymous.request_raw("GET", "/v1/kv/app/db", &[("Authorization", &bearer)], Vec::new()).await;
    assert_eq!(expect(resp.unwrap(), 200)["data"], json!({ "password": m1 }));
    let read = expect(app_via.get("/v1/secret/data/app").await.unwrap(), 200);
    assert_eq!(read["data"]["data"], json!({ "password": m3, "apikey": m4 }));
    let meta = expect(app_via.get("/v1/secret/metadata/app").await.unwrap(), 200);
    assert_eq!(meta["data"]["custom_metadata"], json!({ "owner": m5, "team": m6 }));
    expect(app_via.get("/v1/secret/subkeys/app").await.unwrap(), 200);

    // Token operations that carry token ids and accessors in their bodies.
    expect(root_via.post("/v1/auth/token/lookup", &json!({ "token": forwarded.0 })).await.unwrap(), 200);
    expect(root_via.post("/v1/auth/token/renew", &json!({ "token": forwarded.0 })).await.unwrap(), 200);
    expect(root_via.post("/v1/sys/capabilities", &json!({ "token": forwarded.0, "path": "kv/x" })).await.unwrap(), 200);
    let by_accessor = json!({ "accessor": child.1, "path": "kv/x" });
    expect(root_via.post("/v1/sys/capabilities-accessor", &by_accessor).await.unwrap(), 200);
    expect(root_via.post("/v1/auth/token/lookup-accessor", &json!({ "accessor": child.1 })).await.unwrap(), 200);
    expect(root_via.post("/v1/auth/token/revoke-accessor", &json!({ "accessor": child.1 })).await.unwrap(), 204);
    expect(root_via.post("/v1/auth/token/revoke", &json!({ "token": orphan.0 })).await.unwrap(), 204);

    // The subscriber got one event per change, and events carry paths, never values.
    let frames = next_events(&mut events, 7).await;
    let types: Vec<String> = frames
        .iter()
        .map(|f| serde_json::from_str::<Value>(f).unwrap()["data"]["event_type"].as_str().unwrap().to_string())
        .collect();
    let expected = [
        "kv-v1/write",
        "kv-v1/write",
        "kv-v2/data-write",
        "kv-v2/data-patch",
        "kv-v2/metadata-write",
        "kv-v2/metadata-patch",
        "kv-v2/data-write",
    ];
    assert_eq!(types, expected);
    for (what, value) in &secrets {
        assert!(frames.iter().all(|f| !f.contains(value.as_str())), "an event carries the {what} value");
    }
    drop(events);

    // A node misses enough entries to need a snapshot (its cluster secret is read while it is down).
    cluster.kill(restarted);
    secrets.push(("cluster secret".into(), cluster_secret_of(&cluster, restarted)));
    for n in 0..60 {
        let writer = if n % 2 == 0 { &root } else { &root_via };
        expect(writer.put(&format!("/v1/kv/fill/{n}"), &json!({ "v": format!("{m10}-{n}") })).await.unwrap(), 204);
    }
    cluster.restart(restarted).await;
    cluster.wait_value(restarted, "/v1/kv/fill/59", &json!({ "v": format!("{m10}-59") })).await;
    assert!(cluster.nodes[restarted].log().contains("installing snapshot"), "the restarted node caught up another way");
    assert_eq!(cluster.read(restarted, "/v1/kv/app/db").await.unwrap()["data"], json!({ "password": m1 }));
    // It replays the whole event log to a subscriber.
    let mut replay = subscribe(&subscribe_url(&cluster, restarted, "*?json=true&since=0"), &cluster.root_token).await;
    let replayed = next_events(&mut replay, 67).await;
    for (what, value) in &secrets {
        assert!(replayed.iter().all(|f| !f.contains(value.as_str())), "an event carries the {what} value");
    }
    drop(replay);

    for (id, accessor) in tokens {
        secrets.push(("token id".into(), id));
        secrets.push(("token accessor".into(), accessor));
    }
    let level_tag = format!(" {} ", level.to_uppercase());
    let mut found = Vec::new();
    for node in &cluster.nodes {
        let log = node.log();
        assert!(log.contains(&level_tag), "{} logs nothing at {level}", node.name);
        for (what, secret) in &secrets {
            for rendering in renderings(secret) {
                for line in log.lines().filter(|line| line.contains(&rendering)) {
                    found.push(format!("{} logs the {what}: {line}", node.name));
                }
            }
        }
    }
    let sizes: Vec<usize> = cluster.nodes.iter().map(|n| n.log().len()).collect();
    assert!(found.is_empty(), "secrets in the logs (log sizes {sizes:?}):\n{}", found.join("\n"));
}

#[tokio::test]
async fn secrets_never_appear_in_debug_logs() {
    secrets_never_appear_in_logs("debug").await;
}

#[tokio::test]
async fn secrets_never_appear_in_trace_logs() {
    secrets_never_appear_in_logs("trace").await;
}
