//! The Vault-shaped API on a real node: authentication, bad input, mounts and kv-v1, init, bad configuration files,
//! and the cluster port's secret.

mod common;

use std::time::Duration;

use common::{run_vigil, ClusterOptions, TestCluster};
use serde_json::json;
use vigil::client::Client;

async fn single_node() -> TestCluster {
    TestCluster::start(ClusterOptions { nodes: 1, ..Default::default() }).await
}

#[tokio::test]
async fn every_protected_endpoint_needs_a_valid_token() {
    let cluster = single_node().await;
    let addr = cluster.nodes[0].api_addr();
    let anonymous = Client::new(&addr);
    let wrong = Client::new(&addr).with_token("hvs.not-a-real-token");
    let endpoints: [(&str, &str, Option<serde_json::Value>); 9] = [
        ("GET", "/v1/kv/x", None),
        ("PUT", "/v1/kv/x", Some(json!({ "a": "b" }))),
        ("DELETE", "/v1/kv/x", None),
        ("LIST", "/v1/kv/", None),
        ("GET", "/v1/sys/mounts", None),
        ("POST", "/v1/sys/mounts/other", Some(json!({ "type": "kv" }))),
        ("GET", "/v1/sys/storage/raft/configuration", None),
        ("POST", "/v1/sys/storage/raft/remove-peer", Some(json!({ "server_id": "node1" }))),
        ("GET", "/v1/nonexistent/path", None),
    ];
    for (method, path, body) in &endpoints {
        for client in [&anonymous, &wrong] {
            let resp = client.request(method, path, body.as_ref()).await.unwrap();
            assert_eq!(resp.status, 403, "{method} {path}");
            assert_eq!(resp.json().unwrap(), json!({ "errors": ["permission denied"] }), "{method} {path}");
        }
    }
    // The Bearer form works as well as X-Vault-Token.
    let bearer = anonymous
        .request_raw("GET", "/v1/sys/mounts", &[("Authorization", &format!("Bearer {}", cluster.root_token))], vec![])
        .await
        .unwrap();
    assert_eq!(bearer.status, 200);
    // Nothing was written by the rejected requests.
    assert_eq!(cluster.client(0).get("/v1/kv/x").await.unwrap().status, 404);
    // Open endpoints answer without a token.
    assert_eq!(anonymous.get("/v1/sys/health").await.unwrap().status, 200);
    assert_eq!(anonymous.get("/v1/sys/leader").await.unwrap().status, 200);
    assert_eq!(anonymous.get("/v1/sys/init").await.unwrap().json().unwrap(), json!({ "initialized": true }));
}

#[tokio::test]
async fn malformed_requests_get_clear_4xx_errors_and_change_nothing() {
    let cluster = single_node().await;
    let client = cluster.client(0);
    let raw = |method: &'static str, path: &'static str, body: &'static [u8]| {
        let client = client.clone();
        async move {
            client.request_raw(method, path, &[("Content-Type", "application/json")], body.to_vec()).await.unwrap()
        }
    };

    let cases: Vec<(&str, &str, &[u8], u16, &str)> = vec![
        ("PUT", "/v1/kv/a", b"{not json", 400, "failed to parse JSON input: "),
        ("PUT", "/v1/kv/a", b"[1,2]", 400, "failed to parse JSON input: expected a JSON object, got an array"),
        ("PUT", "/v1/kv/a", b"", 400, "no data provided"),
        ("PUT", "/v1/kv/a", b"{}", 400, "no data provided"),
        ("PUT", "/v1/kv/", b"{\"a\":1}", 400, "missing key"),
        ("PUT", "/v1/kv/a//b", b"{\"a\":1}", 400, "invalid key \"a//b\""),
        ("PATCH", "/v1/kv/a", b"{\"a\":1}", 405, "unsupported operation on kv/a"),
        ("POST", "/v1/sys/mounts/m1", b"{}", 400, "missing required field \"type\""),
        ("POST", "/v1/sys/mounts/m1", b"{\"type\":\"nope\"}", 400, "plugin not found in the catalog: nope"),
        ("POST", "/v1/sys/mounts/m1", b"{\"type\":7}", 400, "field \"type\" must be a string"),
        ("POST", "/v1/sys/mounts/m1", b"{\"type\":\"kv\",\"options\":[]}", 400, "field \"options\" must be an object"),
        ("POST", "/v1/sys/mounts/kv", b"{\"type\":\"kv\"}", 400, "path is already in use at kv/"),
        ("POST", "/v1/sys/mounts/kv/sub", b"{\"type\":\"kv\"}", 400, "cannot mount under existing mount \"kv/\""),
        ("POST", "/v1/sys/mounts/sys/x", b"{\"type\":\"kv\"}", 400, "cannot mount under sys/: it is reserved"),
        ("POST", "/v1/sys/mounts/a%20b", b"{\"type\":\"kv\"}", 400, "invalid mount path \"a b\""),
        ("POST", "/v1/sys/storage/raft/remove-peer", b"{}", 400, "missing required field \"server_id\""),
        ("PUT", "/v1/sys/init", b"{}", 400, "Vigil is already initialized"),
        ("GET", "/v1/kv/%zz", b"", 400, "invalid percent-encoding in path"),
        ("OPTIONS", "/v1/kv/a", b"", 405, "unsupported method OPTIONS"),
    ];
    for (method, path, body, status, message) in cases {
        let resp = raw(method, path, body).await;
        assert_eq!(resp.status, status, "{method} {path} {:?}: {}", String::from_utf8_lossy(body), resp.text());
        let errors = resp.errors();
        assert_eq!(errors.len(), 1, "{method} {path}: {errors:?}");
        assert!(errors[0].starts_with(message), "{method} {path}: {:?} does not start with {message:?}", errors[0]);
    }
    // None of that wrote anything.
    assert_eq!(client.get("/v1/kv/a").await.unwrap().status, 404);
    let mounts = client.get("/v1/sys/mounts").await.unwrap().json().unwrap();
    let mut paths: Vec<String> = mounts["data"].as_object().unwrap().keys().cloned().collect();
    paths.sort();
    assert_eq!(paths, vec!["kv/", "secret/", "sys/"]);
    // A body over the limit is refused.
    let huge = vec![b' '; vigil::http::MAX_REQUEST_BYTES + 1];
    let resp = client.request_raw("PUT", "/v1/kv/big", &[], huge).await.unwrap();
    assert_eq!(resp.status, 413);
    // Paths outside /v1/ are 404 with a Vault-shaped body.
    let outside = client.get("/v2/kv/a").await.unwrap();
    assert_eq!((outside.status, outside.errors().len()), (404, 1));
}

#[tokio::test]
async fn mounts_and_kv_v1_behave_like_vault() {
    let cluster = single_node().await;
    let client = cluster.client(0);

    let mounts = client.get("/v1/sys/mounts").await.unwrap().json().unwrap();
    let kv = &mounts["data"]["kv/"];
    assert_eq!(kv["type"], json!("kv"));
    assert_eq!(kv["options"], json!({ "version": "1" }));
    let accessor = kv["accessor"].as_str().unwrap();
    assert!(accessor.starts_with("kv_") && accessor.len() == 11, "{accessor}");
    // Legacy top-level copy, as Vault returns.
    assert_eq!(mounts["kv/"], mounts["data"]["kv/"]);

    // Mount a second kv-v1 engine, use it, list, unmount: its data goes with it.
    let resp = client.post("/v1/sys/mounts/team/secrets", &json!({ "type": "kv", "description": "team" })).await;
    assert_eq!(resp.unwrap().status, 204);
    let mount = client.get("/v1/sys/mounts/team/secrets").await.unwrap().json().unwrap();
    assert_eq!((mount["data"]["type"].clone(), mount["data"]["description"].clone()), (json!("kv"), json!("team")));
    for key in ["a", "b/c", "b/d/e"] {
        assert_eq!(client.put(&format!("/v1/team/secrets/{key}"), &json!({ "k": key })).await.unwrap().status, 204);
    }
    let listed = client.list("/v1/team/secrets/").await.unwrap().json().unwrap();
    assert_eq!(listed["data"]["keys"], json!(["a", "b/"]));
    let listed = client.list("/v1/team/secrets/b").await.unwrap().json().unwrap();
    assert_eq!(listed["data"]["keys"], json!(["c", "d/"]));
    // Overwrite replaces the whole secret.
    client.put("/v1/team/secrets/a", &json!({ "other": true })).await.unwrap();
    assert_eq!(cluster.read(0, "/v1/team/secrets/a").await.unwrap()["data"], json!({ "other": true }));

    assert_eq!(client.delete("/v1/sys/mounts/team/secrets").await.unwrap().status, 204);
    let gone = client.get("/v1/team/secrets/a").await.unwrap();
    assert_eq!(gone.status, 404);
    assert_eq!(gone.errors(), vec!["no handler for route \"team/secrets/a\". route entry not found."]);
    // Remounting at the same path starts empty.
    client.post("/v1/sys/mounts/team/secrets", &json!({ "type": "kv" })).await.unwrap();
    assert_eq!(client.get("/v1/team/secrets/a").await.unwrap().status, 404);
    assert_eq!(client.list("/v1/team/secrets/").await.unwrap().status, 404);
    // Tune: the description and options change; the kv version cannot change under existing data.
    let tuned = client.post("/v1/sys/mounts/team/secrets/tune", &json!({ "description": "tuned" })).await.unwrap();
    assert_eq!(tuned.status, 204);
    let tune = client.get("/v1/sys/mounts/team/secrets/tune").await.unwrap().json().unwrap();
    assert_eq!(
        (tune["data"]["description"].clone(), tune["options"].clone()),
        (json!("tuned"), json!({ "version": "1" }))
    );
    let upgrade = client.post("/v1/sys/mounts/team/secrets/tune", &json!({ "options": { "version": "2" } })).await;
    let upgrade = upgrade.unwrap();
    assert_eq!(upgrade.status, 400);
    assert!(upgrade.errors()[0].starts_with("changing the kv version of team/secrets/"), "{:?}", upgrade.errors());
    // An unknown kv version is refused.
    let v3 = client.post("/v1/sys/mounts/v3", &json!({ "type": "kv", "options": { "version": "3" } })).await.unwrap();
    assert_eq!((v3.status, v3.errors()), (400, vec!["invalid kv version \"3\": expected \"1\" or \"2\"".to_string()]));

    // Token self-lookup, as Vault clients use to check a token.
    let me = client.get("/v1/auth/token/lookup-self").await.unwrap().json().unwrap();
    assert_eq!(me["data"]["policies"], json!(["root"]));
    assert_eq!(me["data"]["id"], json!(cluster.root_token));
}

#[tokio::test]
async fn init_returns_a_root_token_once_and_stores_only_its_hash() {
    let cluster = single_node().await;
    let token = &cluster.root_token;
    assert!(token.starts_with("hvs.") && token.len() == 28, "{token}");
    // Nothing on disk contains the token itself.
    let data_dir = cluster.nodes[0].dir.join("data");
    let mut stack = vec![data_dir];
    let mut files = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files += 1;
                let bytes = std::fs::read(&path).unwrap();
                assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()), "token in {}", path.display());
            }
        }
    }
    assert!(files > 0);
    assert!(!cluster.nodes[0].log().contains(token.as_str()), "the root token appears in the log");
}

#[tokio::test]
async fn the_cluster_port_rejects_rpcs_without_the_cluster_secret() {
    let cluster = single_node().await;
    let cluster_addr = format!("http://127.0.0.1:{}", cluster.nodes[0].cluster_port);
    let client = Client::new(&cluster_addr).with_timeout(Duration::from_secs(5));
    for path in ["/raft/vote", "/raft/append", "/raft/snapshot"] {
        let none = client.request_raw("POST", path, &[], b"garbage".to_vec()).await.unwrap();
        assert_eq!((none.status, none.text()), (401, "missing or wrong cluster secret".to_string()), "{path}");
        let wrong = client
            .request_raw("POST", path, &[("x-vigil-cluster-secret", "guess")], b"garbage".to_vec())
            .await
            .unwrap();
        assert_eq!(wrong.status, 401, "{path}");
    }
    // The node is unharmed.
    assert_eq!(cluster.health(0).await, Some(200));
}

#[tokio::test]
async fn bad_config_files_exit_2_naming_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("unknown.hcl", "bogus = 1\n", "unknown.hcl:1: bogus: unknown field"),
        (
            "nested.hcl",
            "storage \"raft\" {\n  path = \"d\"\n  node_id = \"n\"\n  colour = \"red\"\n}\n",
            "nested.hcl:4: storage.raft.colour: unknown field",
        ),
        ("syntax.hcl", "storage \"raft\" {\n  path = \n}\n", "syntax.hcl:"),
    ];
    for (name, text, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let (code, _, stderr) = run_vigil(&["server", "-config", path.to_str().unwrap()], &[], dir.path());
        assert_eq!(code, 2, "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr:?} does not contain {expected:?}");
    }
    let (code, _, stderr) = run_vigil(&["server", "-config", "/nonexistent/x.hcl"], &[], dir.path());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("/nonexistent/x.hcl"), "{stderr}");
}

#[tokio::test]
async fn an_uninitialized_node_says_so() {
    let mut cluster = TestCluster::start(ClusterOptions { nodes: 1, ..Default::default() }).await;
    let fresh = cluster.add_node_process();
    cluster.wait_health(fresh, &[501]).await;
    let client = Client::new(&cluster.nodes[fresh].api_addr());
    assert_eq!(client.get("/v1/sys/init").await.unwrap().json().unwrap(), json!({ "initialized": false }));
    let resp = client.with_token("anything").get("/v1/kv/x").await.unwrap();
    assert_eq!(resp.status, 503);
    assert!(resp.errors()[0].starts_with("this node is not initialized"));
    // Joining needs a token the leader accepts.
    let body = json!({ "leader_api_addr": cluster.nodes[0].api_addr() });
    let denied = Client::new(&cluster.nodes[fresh].api_addr()).with_token("hvs.wrong");
    let resp = denied.post("/v1/sys/storage/raft/join", &body).await.unwrap();
    assert_eq!((resp.status, resp.errors()), (403, vec!["permission denied".to_string()]));
    let resp = Client::new(&cluster.nodes[fresh].api_addr()).post("/v1/sys/storage/raft/join", &body).await.unwrap();
    assert_eq!(resp.status, 403);
    assert_eq!(cluster.health(fresh).await, Some(501));
}
