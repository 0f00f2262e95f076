//! Tokens and ACL policies on a real cluster: policy CRUD, enforcement on every node, create vs update, child
//! revocation, TTL expiry, renewal, accessors and the capabilities endpoints.

mod common;

use std::time::Duration;

use common::{wait_for, ClusterOptions, TestCluster, WAIT};
use serde_json::{json, Value};
use vigil::client::Client;

const APP_POLICY: &str = r#"
path "kv/app/*" {
  capabilities = ["read", "list", "create", "update"]
}
path "kv/shared/existing" {
  capabilities = ["update", "read"]
}
path "kv/app/secret-*" {
  capabilities = ["deny"]
}
"#;

async fn put_policy(cluster: &TestCluster, name: &str, text: &str) {
    let resp = cluster.client(0).put(&format!("/v1/sys/policies/acl/{name}"), &json!({ "policy": text })).await;
    assert_eq!(resp.unwrap().status, 204);
}

/// Creates a token through node `via` with `body`; returns (token id, auth block).
async fn create_token(client: &Client, body: Value) -> (String, Value) {
    let resp = client.post("/v1/auth/token/create", &body).await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let auth = resp.json().unwrap()["auth"].clone();
    (auth["client_token"].as_str().unwrap().to_string(), auth)
}

fn as_token(cluster: &TestCluster, node: usize, token: &str) -> Client {
    Client::new(&cluster.nodes[node].api_addr()).with_timeout(Duration::from_secs(15)).with_token(token)
}

#[tokio::test]
async fn policies_are_stored_validated_and_listed_like_vault() {
    let cluster = TestCluster::start(ClusterOptions { nodes: 1, ..Default::default() }).await;
    let root = cluster.client(0);
    put_policy(&cluster, "App", APP_POLICY).await; // names are lowercased
    let read = root.get("/v1/sys/policies/acl/app").await.unwrap().json().unwrap();
    assert_eq!((read["data"]["name"].clone(), read["data"]["policy"].clone()), (json!("app"), json!(APP_POLICY)));
    let legacy = root.get("/v1/sys/policy/app").await.unwrap().json().unwrap();
    assert_eq!(legacy["rules"], json!(APP_POLICY));
    let listed = root.list("/v1/sys/policies/acl").await.unwrap().json().unwrap();
    assert_eq!(listed["data"]["keys"], json!(["app", "default", "root"]));
    let legacy_list = root.get("/v1/sys/policy").await.unwrap().json().unwrap();
    assert_eq!(legacy_list["policies"], json!(["app", "default", "root"]));

    // A policy that does not parse is rejected with its line.
    let bad = "path \"kv/*\" {\n  capabilities = [\"read\", \"fly\"]\n}\n";
    let resp = root.put("/v1/sys/policies/acl/bad", &json!({ "policy": bad })).await.unwrap();
    assert_eq!(resp.status, 400);
    assert!(resp.errors()[0].starts_with("failed to parse policy: line 2: "), "{:?}", resp.errors());
    assert_eq!(root.get("/v1/sys/policies/acl/bad").await.unwrap().status, 404);

    for (method, path, status, message) in [
        ("PUT", "/v1/sys/policies/acl/root", 400, "cannot update root policy"),
        ("DELETE", "/v1/sys/policies/acl/root", 400, "cannot delete root policy"),
        ("DELETE", "/v1/sys/policies/acl/default", 400, "cannot delete default policy"),
        ("PUT", "/v1/sys/policies/acl/x", 400, "'policy' parameter not supplied or empty"),
    ] {
        let body = if method == "PUT" && path.ends_with("root") {
            Some(json!({ "policy": APP_POLICY }))
        } else {
            Some(json!({}))
        };
        let resp = root.request(method, path, body.as_ref()).await.unwrap();
        assert_eq!((resp.status, resp.errors()), (status, vec![message.to_string()]), "{method} {path}");
    }
    assert_eq!(root.delete("/v1/sys/policies/acl/app").await.unwrap().status, 204);
    assert_eq!(root.get("/v1/sys/policies/acl/app").await.unwrap().status, 404);
}

#[tokio::test]
async fn policies_are_enforced_on_every_node_before_forwarding() {
    let cluster = TestCluster::start3().await;
    put_policy(&cluster, "app", APP_POLICY).await;
    let root = cluster.client(0);
    root.put("/v1/kv/shared/existing", &json!({ "v": 1 })).await.unwrap();
    root.put("/v1/kv/app/secret-key", &json!({ "v": 1 })).await.unwrap();
    let (token, auth) = create_token(&root, json!({ "policies": ["app"], "ttl": "1h" })).await;
    assert_eq!(auth["policies"], json!(["app", "default"]));
    assert_eq!(auth["lease_duration"], json!(3600));
    assert!(token.starts_with("hvs."));

    for node in 0..3 {
        let client = as_token(&cluster, node, &token);
        let key = format!("/v1/kv/app/n{node}");
        // Allowed: create a new key, update it, read, list.
        assert_eq!(client.put(&key, &json!({ "n": node })).await.unwrap().status, 204, "node {node}");
        assert_eq!(client.put(&key, &json!({ "n": node + 10 })).await.unwrap().status, 204);
        assert_eq!(cluster.read(node, &key).await.unwrap()["data"], json!({ "n": node + 10 }));
        assert_eq!(client.list("/v1/kv/app/").await.unwrap().status, 200);
        // `update` without `create`: the existing key may be written, a new one may not.
        assert_eq!(client.put("/v1/kv/shared/existing", &json!({ "v": node })).await.unwrap().status, 204);
        // Denied: no capability, explicit deny, delete, system paths, raft operations.
        for (method, path) in [
            ("PUT", "/v1/kv/shared/new"),
            ("GET", "/v1/kv/app/secret-key"),
            ("DELETE", &key as &str),
            ("GET", "/v1/kv/other"),
            ("GET", "/v1/sys/mounts"),
            ("POST", "/v1/sys/mounts/evil"),
            ("PUT", "/v1/sys/policies/acl/app"),
            ("GET", "/v1/sys/storage/raft/configuration"),
            ("POST", "/v1/sys/storage/raft/remove-peer"),
            ("POST", "/v1/auth/token/create"),
        ] {
            let body = json!({ "type": "kv", "policy": "path \"*\" { capabilities = [\"sudo\"] }", "v": 1 });
            let resp = client.request(method, path, Some(&body)).await.unwrap();
            assert_eq!((resp.status, resp.errors()), (403, vec!["permission denied".to_string()]), "{method} {path}");
        }
    }
    // The denied writes changed nothing.
    assert_eq!(root.get("/v1/kv/shared/new").await.unwrap().status, 404);
    assert_eq!(
        root.get("/v1/sys/policies/acl/app").await.unwrap().json().unwrap()["data"]["policy"],
        json!(APP_POLICY)
    );

    // The default policy lets a token look itself up; capabilities-self reports what the policy says.
    let client = as_token(&cluster, 1, &token);
    let me = client.get("/v1/auth/token/lookup-self").await.unwrap().json().unwrap();
    assert_eq!(me["data"]["policies"], json!(["app", "default"]));
    assert_eq!(me["data"]["id"], json!(token));
    let caps = client
        .post("/v1/sys/capabilities-self", &json!({ "paths": ["kv/app/x", "kv/app/secret-1", "sys/mounts"] }))
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(caps["kv/app/x"], json!(["create", "list", "read", "update"]));
    assert_eq!(caps["kv/app/secret-1"], json!(["deny"]));
    assert_eq!(caps["data"]["sys/mounts"], json!(["deny"]));
    let root_caps = root.post("/v1/sys/capabilities", &json!({ "token": token, "path": "kv/app/x" })).await.unwrap();
    assert_eq!(root_caps.json().unwrap()["capabilities"], json!(["create", "list", "read", "update"]));

    // The default policy lets a token find the mount serving a path it has access under, and nothing else.
    let found = client.get("/v1/sys/internal/ui/mounts/kv/app/x").await.unwrap().json().unwrap();
    assert_eq!(
        (found["data"]["path"].clone(), found["data"]["options"].clone()),
        (json!("kv/"), json!({ "version": "1" }))
    );
    assert_eq!(client.get("/v1/sys/internal/ui/mounts/secret/x").await.unwrap().status, 403);

    // Changing the policy takes effect on the next request, on every node.
    put_policy(&cluster, "app", "path \"kv/app/*\" { capabilities = [\"read\"] }").await;
    for node in 0..3 {
        let client = as_token(&cluster, node, &token);
        wait_for("the new policy on every node", WAIT, || async {
            (client.put("/v1/kv/app/again", &json!({ "x": 1 })).await.ok()?.status == 403).then_some(())
        })
        .await;
        assert_eq!(client.get(&format!("/v1/kv/app/n{node}")).await.unwrap().status, 200);
    }
}

#[tokio::test]
async fn revoking_a_token_revokes_its_children_unless_orphaned() {
    let cluster = TestCluster::start3().await;
    put_policy(
        &cluster,
        "reader",
        "path \"kv/*\" { capabilities = [\"read\"] }\npath \"auth/token/create\" { capabilities = [\"update\"] }",
    )
    .await;
    cluster.client(0).put("/v1/kv/x", &json!({ "a": 1 })).await.unwrap();
    let root = cluster.client(0);
    let (parent, _) = create_token(&root, json!({ "policies": ["reader"] })).await;
    let (child, child_auth) = create_token(&as_token(&cluster, 0, &parent), json!({})).await;
    assert_eq!(child_auth["policies"], json!(["default", "reader"]));
    assert_eq!(child_auth["orphan"], json!(false));
    let (grandchild, _) = create_token(&as_token(&cluster, 0, &child), json!({})).await;
    // A child cannot get more than its parent has.
    let resp = as_token(&cluster, 0, &parent).post("/v1/auth/token/create", &json!({ "policies": ["admin"] })).await;
    let resp = resp.unwrap();
    assert_eq!(resp.status, 400);
    assert!(resp.errors()[0].starts_with("child policies must be subset of parent"), "{:?}", resp.errors());

    // revoke-orphan on the child keeps the grandchild alive.
    let resp = root.post("/v1/auth/token/revoke-orphan", &json!({ "token": child })).await.unwrap();
    assert_eq!(resp.status, 204);
    assert_eq!(as_token(&cluster, 0, &child).get("/v1/kv/x").await.unwrap().status, 403);
    let orphan = as_token(&cluster, 0, &grandchild).get("/v1/auth/token/lookup-self").await.unwrap().json().unwrap();
    assert_eq!(orphan["data"]["orphan"], json!(true));

    // Revoking the parent revokes everything below it, on every node.
    let (child2, _) = create_token(&as_token(&cluster, 0, &parent), json!({})).await;
    let (grandchild2, _) = create_token(&as_token(&cluster, 0, &child2), json!({})).await;
    assert_eq!(
        as_token(&cluster, 0, &parent).post("/v1/auth/token/revoke-self", &json!({})).await.unwrap().status,
        204
    );
    for node in 0..3 {
        for token in [&parent, &child2, &grandchild2] {
            let client = as_token(&cluster, node, token);
            wait_for("revocation everywhere", WAIT, || async {
                (client.get("/v1/kv/x").await.ok()?.status == 403).then_some(())
            })
            .await;
        }
        assert_eq!(as_token(&cluster, node, &grandchild).get("/v1/kv/x").await.unwrap().status, 200);
    }
}

#[tokio::test]
async fn tokens_expire_renew_and_work_through_accessors() {
    let cluster = TestCluster::start(ClusterOptions { nodes: 1, ..Default::default() }).await;
    let root = cluster.client(0);
    put_policy(&cluster, "reader", "path \"kv/*\" { capabilities = [\"read\"] }").await;
    root.put("/v1/kv/x", &json!({ "a": 1 })).await.unwrap();

    let (short, auth) =
        create_token(&root, json!({ "policies": ["reader"], "ttl": "3s", "explicit_max_ttl": 60 })).await;
    assert_eq!(auth["lease_duration"], json!(3));
    assert_eq!(auth["renewable"], json!(true));
    let client = as_token(&cluster, 0, &short);
    assert_eq!(client.get("/v1/kv/x").await.unwrap().status, 200);
    // Renewing pushes the expiry out (capped by explicit_max_ttl).
    let renewed = client.post("/v1/auth/token/renew-self", &json!({ "increment": "2m" })).await.unwrap();
    assert_eq!(renewed.status, 200, "{}", renewed.text());
    let lease = renewed.json().unwrap()["auth"]["lease_duration"].as_u64().unwrap();
    assert!((55..=60).contains(&lease), "renewal is capped by explicit_max_ttl: {lease}");

    let (expiring, auth) = create_token(&root, json!({ "policies": ["reader"], "ttl": 1, "renewable": false })).await;
    assert_eq!(auth["renewable"], json!(false));
    let client = as_token(&cluster, 0, &expiring);
    let resp = client.post("/v1/auth/token/renew-self", &json!({})).await.unwrap();
    assert_eq!((resp.status, resp.errors()), (400, vec!["lease is not renewable".to_string()]));
    wait_for("the token to expire", WAIT, || async {
        (client.get("/v1/kv/x").await.ok()?.status == 403).then_some(())
    })
    .await;
    let gone = root.post("/v1/auth/token/lookup", &json!({ "token": expiring })).await.unwrap();
    assert_eq!((gone.status, gone.errors()), (400, vec!["bad token".to_string()]));

    // Accessors: look up without revealing the id, then revoke.
    let (token, auth) =
        create_token(&root, json!({ "policies": ["reader"], "display_name": "ci", "meta": { "team": "a" } })).await;
    let accessor = auth["accessor"].as_str().unwrap();
    let looked = root.post("/v1/auth/token/lookup-accessor", &json!({ "accessor": accessor })).await.unwrap();
    let data = looked.json().unwrap()["data"].clone();
    assert_eq!(data["id"], json!(""));
    assert_eq!(data["display_name"], json!("token-ci"));
    assert_eq!(data["meta"], json!({ "team": "a" }));
    assert_eq!(data["ttl"].as_u64().map(|t| t > 2_764_000), Some(true), "default TTL is 768h: {data}");
    let resp = root.post("/v1/auth/token/revoke-accessor", &json!({ "accessor": accessor })).await.unwrap();
    assert_eq!(resp.status, 204);
    assert_eq!(as_token(&cluster, 0, &token).get("/v1/kv/x").await.unwrap().status, 403);

    // A limited-use token works exactly `num_uses` times, counted on the active node whichever node it is used on.
    let (limited, auth) = create_token(&root, json!({ "policies": ["reader"], "num_uses": 2 })).await;
    assert_eq!(auth["num_uses"], json!(2));
    let client = as_token(&cluster, 0, &limited);
    assert_eq!(client.get("/v1/kv/x").await.unwrap().status, 200);
    let me = client.get("/v1/auth/token/lookup-self").await.unwrap().json().unwrap();
    assert_eq!(me["data"]["num_uses"], json!(1), "the second use is the lookup itself: {me}");
    assert_eq!(client.get("/v1/kv/x").await.unwrap().status, 403);

    // Bad input is a clear 400.
    for (body, message) in [
        (json!({ "ttl": "soon" }), "invalid duration for \"ttl\": \"soon\""),
        (json!({ "policies": 5 }), "field \"policies\" must be a list of strings"),
        (json!({ "meta": { "a": 1 } }), "meta value for \"a\" must be a string"),
        (json!({ "renewable": "perhaps" }), "invalid value for \"renewable\": \"perhaps\" is not a boolean"),
    ] {
        let resp = root.post("/v1/auth/token/create", &body).await.unwrap();
        assert_eq!((resp.status, resp.errors()), (400, vec![message.to_string()]), "{body}");
    }
}

#[tokio::test]
async fn a_token_with_only_the_default_policy_is_denied_on_every_other_endpoint() {
    let cluster = TestCluster::start3().await;
    let root = cluster.client(0);
    root.put("/v1/kv/x", &json!({ "a": 1 })).await.unwrap();
    root.post("/v1/secret/data/x", &json!({ "data": { "a": 1 } })).await.unwrap();
    let (token, auth) = create_token(&root, json!({ "policies": ["default"] })).await;
    assert_eq!(auth["policies"], json!(["default"]));
    let accessor = auth["accessor"].as_str().unwrap().to_string();
    let body = json!({
        "type": "kv", "policy": "path \"*\" { capabilities = [\"sudo\"] }", "data": { "a": 2 }, "versions": [1],
        "token": token, "accessor": accessor, "server_id": "node2", "paths": ["kv/x"], "a": 2, "max_versions": 1,
    });
    let denied: &[(&str, &str)] = &[
        ("GET", "/v1/sys/mounts"),
        ("GET", "/v1/sys/mounts/kv"),
        ("POST", "/v1/sys/mounts/new"),
        ("DELETE", "/v1/sys/mounts/kv"),
        ("GET", "/v1/sys/mounts/kv/tune"),
        ("POST", "/v1/sys/mounts/kv/tune"),
        ("LIST", "/v1/sys/policies/acl"),
        ("GET", "/v1/sys/policies/acl/default"),
        ("PUT", "/v1/sys/policies/acl/mine"),
        ("DELETE", "/v1/sys/policies/acl/default"),
        ("GET", "/v1/sys/policy"),
        ("GET", "/v1/sys/policy/default"),
        ("PUT", "/v1/sys/policy/mine"),
        ("POST", "/v1/sys/capabilities"),
        ("POST", "/v1/sys/capabilities-accessor"),
        ("GET", "/v1/sys/storage/raft/configuration"),
        ("POST", "/v1/sys/storage/raft/remove-peer"),
        ("POST", "/v1/sys/storage/raft/bootstrap/join"),
        ("POST", "/v1/auth/token/create"),
        ("POST", "/v1/auth/token/create-orphan"),
        ("POST", "/v1/auth/token/lookup"),
        ("POST", "/v1/auth/token/lookup-accessor"),
        ("POST", "/v1/auth/token/renew"),
        ("POST", "/v1/auth/token/revoke"),
        ("POST", "/v1/auth/token/revoke-accessor"),
        ("POST", "/v1/auth/token/revoke-orphan"),
        ("GET", "/v1/kv/x"),
        ("PUT", "/v1/kv/x"),
        ("PUT", "/v1/kv/new"),
        ("DELETE", "/v1/kv/x"),
        ("LIST", "/v1/kv/"),
        ("GET", "/v1/secret/data/x"),
        ("POST", "/v1/secret/data/x"),
        ("PATCH", "/v1/secret/data/x"),
        ("DELETE", "/v1/secret/data/x"),
        ("POST", "/v1/secret/delete/x"),
        ("POST", "/v1/secret/undelete/x"),
        ("PUT", "/v1/secret/destroy/x"),
        ("GET", "/v1/secret/metadata/x"),
        ("POST", "/v1/secret/metadata/x"),
        ("DELETE", "/v1/secret/metadata/x"),
        ("LIST", "/v1/secret/metadata/"),
        ("GET", "/v1/secret/subkeys/x"),
        ("GET", "/v1/secret/config"),
        ("POST", "/v1/secret/config"),
        ("GET", "/v1/sys/internal/ui/mounts/kv/x"),
        ("GET", "/v1/nomount/x"),
    ];
    for node in 0..3 {
        let client = as_token(&cluster, node, &token);
        for (method, path) in denied {
            let resp = client.request(method, path, Some(&body)).await.unwrap();
            assert_eq!((resp.status, resp.errors()), (403, vec!["permission denied".to_string()]), "{method} {path}");
        }
    }
    // Nothing changed.
    assert_eq!(cluster.read(0, "/v1/kv/x").await.unwrap()["data"], json!({ "a": 1 }));
    let config = root.get("/v1/sys/storage/raft/configuration").await.unwrap().json().unwrap();
    assert_eq!(config["data"]["config"]["servers"].as_array().unwrap().len(), 3);
    // What the default policy does allow still works.
    let client = as_token(&cluster, 1, &token);
    assert_eq!(client.get("/v1/auth/token/lookup-self").await.unwrap().status, 200);
    assert_eq!(client.post("/v1/sys/capabilities-self", &json!({ "path": "kv/x" })).await.unwrap().status, 200);
    assert_eq!(client.post("/v1/auth/token/renew-self", &json!({})).await.unwrap().status, 200);
    assert_eq!(client.post("/v1/auth/token/revoke-self", &json!({})).await.unwrap().status, 204);
    wait_for("revoked everywhere", WAIT, || async {
        (as_token(&cluster, 2, &token).get("/v1/auth/token/lookup-self").await.ok()?.status == 403).then_some(())
    })
    .await;
}
