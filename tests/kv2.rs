//! kv-v2 on real nodes, checked against Vault's API: versions and check-and-set, soft delete / undelete /
//! destroy and what reading them answers, pruning, metadata (custom metadata, PATCH), subkeys, the mount config,
//! listing, the paths Vault refuses, and replication: everything written through followers reads identically —
//! times included — on every node.

mod common;

use common::{wait_for, ClusterOptions, TestCluster, WAIT};
use serde_json::{json, Value};
use vigil::client::{Client, Response};
use vigil::engines::kv2::format_time;

/// A one-node cluster whose default `secret/` kv-v2 mount is replaced by a fresh one (so mounting is exercised too).
async fn single_node() -> TestCluster {
    let cluster = TestCluster::start(ClusterOptions { nodes: 1, ..Default::default() }).await;
    assert_eq!(cluster.client(0).delete("/v1/sys/mounts/secret").await.unwrap().status, 204);
    mount_kv2(&cluster.client(0), "secret").await;
    cluster
}

async fn mount_kv2(client: &Client, path: &str) {
    let body = json!({ "type": "kv", "options": { "version": "2" } });
    let resp = client.post(&format!("/v1/sys/mounts/{path}"), &body).await.unwrap();
    assert_eq!(resp.status, 204, "mount {path}: {}", resp.text());
}

async fn patch(client: &Client, path: &str, body: &Value) -> Response {
    let headers = [("Content-Type", "application/merge-patch+json")];
    client.request_raw("PATCH", path, &headers, serde_json::to_vec(body).unwrap()).await.unwrap()
}

/// The body of a 200 answer, with its `request_id` checked and removed.
fn ok(resp: &Response) -> Value {
    assert_eq!(resp.status, 200, "{}", resp.text());
    without_request_id(resp.json().unwrap())
}

fn without_request_id(mut body: Value) -> Value {
    let id = body.as_object_mut().unwrap().remove("request_id").expect("request_id");
    assert_eq!(id.as_str().unwrap().len(), 36, "{id}");
    body
}

/// Vault's response envelope around `data`.
fn envelope(data: Value, mount_type: &str, warnings: Value) -> Value {
    json!({
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": data,
        "wrap_info": null,
        "warnings": warnings,
        "auth": null,
        "mount_type": mount_type,
    })
}

/// The `data` of a 200 answer (whose envelope is checked).
fn data(resp: &Response) -> Value {
    let body = ok(resp);
    assert_eq!(body, envelope(body["data"].clone(), "kv", Value::Null));
    body["data"].clone()
}

/// Asserts a 4xx/5xx with exactly these `errors`.
fn assert_errors(resp: &Response, status: u16, errors: &[&str]) {
    assert_eq!(resp.status, status, "{}", resp.text());
    assert_eq!(resp.json().unwrap(), json!({ "errors": errors }), "{}", resp.text());
}

fn parse_time(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{s:?}: {e}")).timestamp_nanos_opt().unwrap()
}

/// Checks that `s` is a UTC RFC 3339 time with nanoseconds, formatted as Go does; returns it as nanoseconds.
fn check_time(s: &str) -> i64 {
    let nanos = parse_time(s);
    assert_eq!(format_time(nanos), s, "not Go's RFC3339Nano form");
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    assert!((now - nanos).abs() < 120_000_000_000, "{s} is not about now");
    nanos
}

/// The per-version metadata of a write answer or data read.
fn version_meta(created: &str, deletion: &str, destroyed: bool, version: u64, custom: Value) -> Value {
    json!({
        "created_time": created,
        "custom_metadata": custom,
        "deletion_time": deletion,
        "destroyed": destroyed,
        "version": version,
    })
}

/// Writes `secret` at `path` (below `secret/data/`) and returns the answer's `created_time`.
async fn write(client: &Client, path: &str, secret: Value) -> String {
    let resp = client.post(&format!("/v1/secret/data/{path}"), &json!({ "data": secret })).await.unwrap();
    let answer = data(&resp);
    answer["created_time"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn versions_reads_and_check_and_set_behave_like_vault() {
    let cluster = single_node().await;
    let client = cluster.client(0);

    // First write: version 1, answered with its metadata.
    let resp = client.post("/v1/secret/data/app/db", &json!({ "data": { "foo": "bar" } })).await.unwrap();
    let answer = data(&resp);
    let created1 = answer["created_time"].as_str().unwrap().to_string();
    check_time(&created1);
    assert_eq!(answer, version_meta(&created1, "", false, 1, Value::Null));
    assert!(resp.headers.contains_key("x-vigil-raft-index"));

    // Read it back: data and metadata.
    let read = data(&client.get("/v1/secret/data/app/db").await.unwrap());
    assert_eq!(
        read,
        json!({ "data": { "foo": "bar" }, "metadata": version_meta(&created1, "", false, 1, Value::Null) })
    );

    // Check-and-set: 0 only creates, N must be the current version.
    let cas0 = client.post("/v1/secret/data/app/db", &json!({ "options": { "cas": 0 }, "data": { "x": 1 } })).await;
    assert_errors(&cas0.unwrap(), 400, &["check-and-set parameter did not match the current version"]);
    let cas2 = client.post("/v1/secret/data/app/db", &json!({ "options": { "cas": 2 }, "data": { "x": 1 } })).await;
    assert_errors(&cas2.unwrap(), 400, &["check-and-set parameter did not match the current version"]);
    let resp = client.put("/v1/secret/data/app/db", &json!({ "options": { "cas": 1 }, "data": { "foo": "v2" } })).await;
    let answer = data(&resp.unwrap());
    let created2 = answer["created_time"].as_str().unwrap().to_string();
    assert_eq!(answer, version_meta(&created2, "", false, 2, Value::Null));
    assert!(parse_time(&created2) >= parse_time(&created1));
    // Vault decodes cas weakly: a numeric string works, anything else is a parse error.
    let resp =
        client.post("/v1/secret/data/app/db", &json!({ "options": { "cas": "2" }, "data": { "foo": "v3" } })).await;
    assert_eq!(data(&resp.unwrap())["version"], json!(3));
    let bad = client.post("/v1/secret/data/app/db", &json!({ "options": { "cas": "two" }, "data": {} })).await;
    assert_errors(&bad.unwrap(), 400, &["error parsing check-and-set parameter"]);
    let created_only = client.post("/v1/secret/data/new", &json!({ "options": { "cas": 0 }, "data": {} })).await;
    assert_eq!(data(&created_only.unwrap())["version"], json!(1));

    // Reading versions: the current by default, any kept one by number, 404 with no errors otherwise.
    let v1 = data(&client.get("/v1/secret/data/app/db?version=1").await.unwrap());
    assert_eq!(v1, json!({ "data": { "foo": "bar" }, "metadata": version_meta(&created1, "", false, 1, Value::Null) }));
    let current = data(&client.get("/v1/secret/data/app/db").await.unwrap());
    assert_eq!((current["data"].clone(), current["metadata"]["version"].clone()), (json!({ "foo": "v3" }), json!(3)));
    assert_eq!(data(&client.get("/v1/secret/data/app/db?version=0").await.unwrap())["metadata"]["version"], json!(3));
    assert_errors(&client.get("/v1/secret/data/app/db?version=4").await.unwrap(), 404, &[]);
    assert_errors(&client.get("/v1/secret/data/never/written").await.unwrap(), 404, &[]);
    assert_errors(
        &client.get("/v1/secret/data/app/db?version=abc").await.unwrap(),
        400,
        &["error converting input abc for field \"version\": cannot parse '' as int: strconv.ParseInt: parsing \"abc\": invalid syntax"],
    );

    // cas_required, from the mount config or from the key's metadata.
    assert_eq!(client.post("/v1/secret/config", &json!({ "cas_required": true })).await.unwrap().status, 204);
    let resp = client.post("/v1/secret/data/app/db", &json!({ "data": { "foo": "x" } })).await.unwrap();
    assert_errors(&resp, 400, &["check-and-set parameter required for this call"]);
    let resp =
        client.post("/v1/secret/data/app/db", &json!({ "options": { "cas": 3 }, "data": { "foo": "v4" } })).await;
    assert_eq!(data(&resp.unwrap())["version"], json!(4));
    assert_eq!(client.post("/v1/secret/config", &json!({ "cas_required": false })).await.unwrap().status, 204);
    assert_eq!(client.post("/v1/secret/metadata/app/db", &json!({ "cas_required": true })).await.unwrap().status, 204);
    let resp = client.post("/v1/secret/data/app/db", &json!({ "data": { "foo": "x" } })).await.unwrap();
    assert_errors(&resp, 400, &["check-and-set parameter required for this call"]);
    let other = client.post("/v1/secret/data/other", &json!({ "data": { "foo": "x" } })).await.unwrap();
    assert_eq!(other.status, 200, "{}", other.text());

    // Bad input is refused before anything is written.
    let raw = |body: &'static [u8]| {
        let client = client.clone();
        async move {
            let headers = [("Content-Type", "application/json")];
            client.request_raw("POST", "/v1/secret/data/app/db", &headers, body.to_vec()).await.unwrap()
        }
    };
    assert_errors(&raw(b"{\"options\":{}}").await, 400, &["no data provided"]);
    assert_errors(&raw(b"").await, 400, &["no data provided"]);
    assert_errors(&raw(b"{not json").await, 400, &["error parsing JSON"]);
    assert_errors(
        &raw(b"{\"data\":\"x\"}").await,
        400,
        &["error converting input x for field \"data\": '' expected a map, got 'string'"],
    );
    assert_errors(
        &raw(b"{\"data\":{},\"options\":7}").await,
        400,
        &["error converting input 7 for field \"options\": '' expected a map, got 'string'"],
    );
    let resp = client.post("/v1/secret/data/a//b", &json!({ "data": {} })).await.unwrap();
    assert_errors(&resp, 400, &["invalid key \"a//b\": empty, '.' and '..' segments are not allowed"]);

    // The key's metadata tracks it all.
    let meta = data(&client.get("/v1/secret/metadata/app/db").await.unwrap());
    let created4 = meta["versions"]["4"]["created_time"].as_str().unwrap().to_string();
    assert_eq!(meta["created_time"], json!(created1));
    assert_eq!(meta["updated_time"], json!(created4));
    assert_eq!(
        (meta["current_version"].clone(), meta["oldest_version"].clone(), meta["cas_required"].clone()),
        (json!(4), json!(0), json!(true))
    );
    assert_eq!(meta["versions"]["1"], json!({ "created_time": created1, "deletion_time": "", "destroyed": false }));
    assert_eq!(meta["versions"]["2"], json!({ "created_time": created2, "deletion_time": "", "destroyed": false }));
    assert_eq!(meta["versions"].as_object().unwrap().len(), 4);
}

#[tokio::test]
async fn soft_delete_undelete_and_destroy_answer_like_vault() {
    let cluster = single_node().await;
    let client = cluster.client(0);
    let created: Vec<String> =
        vec![write(&client, "k", json!({ "a": 1 })).await, write(&client, "k", json!({ "a": 2 })).await];
    let created3 = write(&client, "k", json!({ "a": 3 })).await;

    // DELETE soft-deletes the current version: reads answer 404 carrying its metadata (and null data).
    assert_eq!(client.delete("/v1/secret/data/k").await.unwrap().status, 204);
    let meta = data(&client.get("/v1/secret/metadata/k").await.unwrap());
    let deleted3 = meta["versions"]["3"]["deletion_time"].as_str().unwrap().to_string();
    assert!(check_time(&deleted3) >= parse_time(&created3));
    let gone = client.get("/v1/secret/data/k").await.unwrap();
    assert_eq!(gone.status, 404);
    assert_eq!(
        without_request_id(gone.json().unwrap()),
        envelope(
            json!({ "data": null, "metadata": version_meta(&created3, &deleted3, false, 3, Value::Null) }),
            "",
            Value::Null
        )
    );
    // Deleting again changes nothing; older versions are still readable.
    assert_eq!(client.delete("/v1/secret/data/k").await.unwrap().status, 204);
    assert_eq!(
        data(&client.get("/v1/secret/metadata/k").await.unwrap())["versions"]["3"]["deletion_time"],
        json!(deleted3)
    );
    assert_eq!(data(&client.get("/v1/secret/data/k?version=2").await.unwrap())["data"], json!({ "a": 2 }));

    // delete/ takes version lists (an array or Vault's comma-separated string).
    assert_eq!(client.post("/v1/secret/delete/k", &json!({ "versions": "1" })).await.unwrap().status, 204);
    let gone1 = client.get("/v1/secret/data/k?version=1").await.unwrap();
    assert_eq!(gone1.status, 404);
    let body = gone1.json().unwrap();
    assert_eq!(body["data"]["data"], Value::Null);
    assert_eq!(body["data"]["metadata"]["created_time"], json!(created[0]));
    check_time(body["data"]["metadata"]["deletion_time"].as_str().unwrap());

    // undelete/ restores them.
    assert_eq!(client.post("/v1/secret/undelete/k", &json!({ "versions": [1, 3] })).await.unwrap().status, 204);
    let v3 = data(&client.get("/v1/secret/data/k").await.unwrap());
    assert_eq!(v3, json!({ "data": { "a": 3 }, "metadata": version_meta(&created3, "", false, 3, Value::Null) }));
    assert_eq!(data(&client.get("/v1/secret/data/k?version=1").await.unwrap())["data"], json!({ "a": 1 }));

    // destroy/ removes a version's data for good; undelete cannot bring it back.
    assert_eq!(client.put("/v1/secret/destroy/k", &json!({ "versions": [2] })).await.unwrap().status, 204);
    assert_eq!(client.post("/v1/secret/undelete/k", &json!({ "versions": [2] })).await.unwrap().status, 204);
    let destroyed = client.get("/v1/secret/data/k?version=2").await.unwrap();
    assert_eq!(destroyed.status, 404);
    assert_eq!(
        without_request_id(destroyed.json().unwrap()),
        envelope(
            json!({ "data": null, "metadata": version_meta(&created[1], "", true, 2, Value::Null) }),
            "",
            Value::Null
        )
    );
    let meta = data(&client.get("/v1/secret/metadata/k").await.unwrap());
    assert_eq!(meta["versions"]["2"], json!({ "created_time": created[1], "deletion_time": "", "destroyed": true }));
    assert_eq!(meta["current_version"], json!(3));

    // Version lists are required, with Vault's (differently capitalized) messages.
    assert_errors(
        &client.post("/v1/secret/delete/k", &json!({ "versions": [] })).await.unwrap(),
        400,
        &["No version number provided"],
    );
    assert_errors(
        &client.post("/v1/secret/undelete/k", &json!({})).await.unwrap(),
        400,
        &["No version number provided"],
    );
    assert_errors(
        &client.post("/v1/secret/destroy/k", &json!({})).await.unwrap(),
        400,
        &["no version number provided"],
    );
    assert_errors(
        &client.post("/v1/secret/destroy/k", &json!({ "versions": ["x"] })).await.unwrap(),
        400,
        &["error converting input [x] for field \"versions\": 1 error(s) decoding:\n\n* cannot parse '[0]' as int: strconv.ParseInt: parsing \"x\": invalid syntax"],
    );
    // On keys that do not exist they succeed and do nothing, as in Vault.
    for path in ["delete", "undelete", "destroy"] {
        let resp = client.post(&format!("/v1/secret/{path}/nope"), &json!({ "versions": [1] })).await.unwrap();
        assert_eq!(resp.status, 204, "{path}");
    }
    assert_eq!(client.delete("/v1/secret/data/nope").await.unwrap().status, 204);
    assert_errors(&client.get("/v1/secret/metadata/nope").await.unwrap(), 404, &[]);

    // Deleting the metadata removes the key and every version; a new write starts again at version 1.
    assert_eq!(client.delete("/v1/secret/metadata/k").await.unwrap().status, 204);
    assert_errors(&client.get("/v1/secret/metadata/k").await.unwrap(), 404, &[]);
    assert_errors(&client.get("/v1/secret/data/k?version=1").await.unwrap(), 404, &[]);
    assert_errors(&client.list("/v1/secret/metadata/").await.unwrap(), 404, &[]);
    let resp = client.post("/v1/secret/data/k", &json!({ "data": { "again": true } })).await.unwrap();
    assert_eq!(data(&resp)["version"], json!(1));
}

#[tokio::test]
async fn max_versions_prune_and_the_mount_config_works_like_vault() {
    let cluster = single_node().await;
    let client = cluster.client(0);
    let config = data(&client.get("/v1/secret/config").await.unwrap());
    assert_eq!(config, json!({ "cas_required": false, "delete_version_after": "0s", "max_versions": 0 }));

    // Default: 10 versions. Vault's oldest_version stays 0 until the 10th write, then follows the pruning.
    for n in 1..=9 {
        write(&client, "p", json!({ "n": n })).await;
    }
    assert_eq!(data(&client.get("/v1/secret/metadata/p").await.unwrap())["oldest_version"], json!(0));
    write(&client, "p", json!({ "n": 10 })).await;
    let meta = data(&client.get("/v1/secret/metadata/p").await.unwrap());
    assert_eq!((meta["oldest_version"].clone(), meta["versions"].as_object().unwrap().len()), (json!(1), 10));
    write(&client, "p", json!({ "n": 11 })).await;
    let meta = data(&client.get("/v1/secret/metadata/p").await.unwrap());
    let kept: Vec<String> = meta["versions"].as_object().unwrap().keys().cloned().collect();
    let mut expected: Vec<String> = (2..=11).map(|v| v.to_string()).collect();
    expected.sort();
    assert_eq!(kept, expected);
    assert_eq!((meta["current_version"].clone(), meta["oldest_version"].clone()), (json!(11), json!(2)));
    assert_errors(&client.get("/v1/secret/data/p?version=1").await.unwrap(), 404, &[]);
    assert_eq!(data(&client.get("/v1/secret/data/p?version=2").await.unwrap())["data"], json!({ "n": 2 }));

    // A lower mount limit prunes several versions at the next write.
    let resp =
        client.post("/v1/secret/config", &json!({ "max_versions": 3, "delete_version_after": "3h25m19s" })).await;
    assert_eq!(resp.unwrap().status, 204);
    let config = data(&client.get("/v1/secret/config").await.unwrap());
    assert_eq!(config, json!({ "cas_required": false, "delete_version_after": "3h25m19s", "max_versions": 3 }));
    let created12 = write(&client, "p", json!({ "n": 12 })).await;
    let meta = data(&client.get("/v1/secret/metadata/p").await.unwrap());
    assert_eq!(meta["versions"].as_object().unwrap().keys().cloned().collect::<Vec<_>>(), vec!["10", "11", "12"]);
    assert_eq!(meta["oldest_version"], json!(10));
    assert_errors(&client.get("/v1/secret/data/p?version=9").await.unwrap(), 404, &[]);
    // delete_version_after stamps a future deletion time on new versions; until then they read normally.
    let deletion12 = format_time(parse_time(&created12) + 12_319_000_000_000);
    assert_eq!(meta["versions"]["12"]["deletion_time"], json!(deletion12));
    let read12 = data(&client.get("/v1/secret/data/p").await.unwrap());
    assert_eq!(read12["metadata"], version_meta(&created12, &deletion12, false, 12, Value::Null));

    // The key's own limit counts when it is the larger one; its delete_version_after when it is the smaller.
    let resp = client.post("/v1/secret/metadata/p", &json!({ "max_versions": 5, "delete_version_after": "1h" })).await;
    assert_eq!(resp.unwrap().status, 204);
    for n in 13..=14 {
        write(&client, "p", json!({ "n": n })).await;
    }
    let meta = data(&client.get("/v1/secret/metadata/p").await.unwrap());
    assert_eq!(meta["versions"].as_object().unwrap().len(), 5);
    assert_eq!((meta["max_versions"].clone(), meta["delete_version_after"].clone()), (json!(5), json!("1h0m0s")));
    let created15 = write(&client, "p", json!({ "n": 15 })).await;
    let meta = data(&client.get("/v1/secret/metadata/p").await.unwrap());
    assert_eq!(
        meta["versions"].as_object().unwrap().keys().cloned().collect::<Vec<_>>(),
        vec!["11", "12", "13", "14", "15"]
    );
    assert_eq!(meta["oldest_version"], json!(11));
    assert_eq!(meta["versions"]["15"]["deletion_time"], json!(format_time(parse_time(&created15) + 3_600_000_000_000)));

    // Config values: seconds or Go durations; negative disables delete_version_after everywhere.
    for (input, shown) in [(json!(90), "1m30s"), (json!("-5m"), "-1s"), (json!(0), "0s"), (json!("2d"), "48h0m0s")] {
        let resp = client.post("/v1/secret/config", &json!({ "delete_version_after": input })).await.unwrap();
        assert_eq!(resp.status, 204, "{input}");
        assert_eq!(
            data(&client.get("/v1/secret/config").await.unwrap())["delete_version_after"],
            json!(shown),
            "{input}"
        );
    }
    let resp = client.post("/v1/secret/config", &json!({ "delete_version_after": "-1" })).await.unwrap();
    assert_eq!(resp.status, 204);
    let created16 = write(&client, "p", json!({ "n": 16 })).await;
    let meta = data(&client.get("/v1/secret/metadata/p").await.unwrap());
    assert_eq!(meta["versions"]["16"], json!({ "created_time": created16, "deletion_time": "", "destroyed": false }));
    // An empty config write changes nothing; bad values are refused with Vault's messages.
    assert_eq!(client.post("/v1/secret/config", &json!({})).await.unwrap().status, 204);
    assert_eq!(
        data(&client.get("/v1/secret/config").await.unwrap()),
        json!({ "cas_required": false, "delete_version_after": "-1s", "max_versions": 3 })
    );
    assert_errors(
        &client.post("/v1/secret/config", &json!({ "delete_version_after": "3x" })).await.unwrap(),
        400,
        &["error converting input 3x for field \"delete_version_after\": time: unknown unit \"x\" in duration \"3x\""],
    );
    assert_errors(
        &client.post("/v1/secret/config", &json!({ "max_versions": "many" })).await.unwrap(),
        400,
        &["error converting input many for field \"max_versions\": cannot parse '' as int: strconv.ParseInt: parsing \"many\": invalid syntax"],
    );
    assert_errors(
        &client.post("/v1/secret/metadata/p", &json!({ "delete_version_after": "-1h" })).await.unwrap(),
        400,
        &["error converting input -1h for field \"delete_version_after\": cannot provide negative value '-3600'"],
    );
}

#[tokio::test]
async fn patch_subkeys_and_custom_metadata_work_like_vault() {
    let cluster = single_node().await;
    let client = cluster.client(0);

    // PATCH needs an existing secret (404 with an empty body otherwise) and the merge-patch content type.
    let missing = patch(&client, "/v1/secret/data/cfg", &json!({ "data": { "a": 1 } })).await;
    assert_eq!((missing.status, missing.body.len()), (404, 0));
    let created1 = write(&client, "cfg", json!({ "foo": "a", "bar": { "baz": "b", "q": "x" }, "quux": {} })).await;
    let wrong_type = client.request("PATCH", "/v1/secret/data/cfg", Some(&json!({ "data": {} }))).await.unwrap();
    assert_errors(
        &wrong_type,
        415,
        &["PATCH requires Content-Type of application/merge-patch+json, provided application/json"],
    );
    // (The test client labels any non-empty body as JSON, so this one has none.)
    let no_type = client.request_raw("PATCH", "/v1/secret/data/cfg", &[], Vec::new()).await.unwrap();
    assert_errors(&no_type, 400, &["mime: no media type"]);
    assert_errors(&patch(&client, "/v1/secret/data/cfg", &json!({})).await, 400, &["no data provided"]);

    // A JSON merge patch of the current version makes a new version.
    let body = json!({ "options": { "cas": 1 }, "data": { "foo": "z", "bar": { "q": null }, "new": [1] } });
    let resp = patch(&client, "/v1/secret/data/cfg", &body).await;
    let answer = data(&resp);
    let created2 = answer["created_time"].as_str().unwrap().to_string();
    assert_eq!(answer, version_meta(&created2, "", false, 2, Value::Null));
    let read = data(&client.get("/v1/secret/data/cfg").await.unwrap());
    assert_eq!(read["data"], json!({ "foo": "z", "bar": { "baz": "b" }, "new": [1], "quux": {} }));
    assert_eq!(data(&client.get("/v1/secret/data/cfg?version=1").await.unwrap())["data"]["foo"], json!("a"));
    let stale = patch(&client, "/v1/secret/data/cfg", &json!({ "options": { "cas": 1 }, "data": { "x": 1 } })).await;
    assert_errors(&stale, 400, &["check-and-set parameter did not match the current version"]);

    // Subkeys: the structure with leaves as null, optionally only to a depth; any version.
    let subkeys = data(&client.get("/v1/secret/subkeys/cfg?version=1").await.unwrap());
    assert_eq!(
        subkeys,
        json!({
            "subkeys": { "foo": null, "bar": { "baz": null, "q": null }, "quux": null },
            "metadata": version_meta(&created1, "", false, 1, Value::Null),
        })
    );
    let shallow = data(&client.get("/v1/secret/subkeys/cfg?depth=1").await.unwrap());
    assert_eq!(shallow["subkeys"], json!({ "foo": null, "bar": null, "new": null, "quux": null }));
    assert_errors(&client.get("/v1/secret/subkeys/none").await.unwrap(), 404, &[]);

    // Custom metadata: string values (numbers are converted), shown with every version.
    let resp = client.post("/v1/secret/metadata/cfg", &json!({ "custom_metadata": { "owner": "jdoe", "n": 5 } })).await;
    assert_eq!(resp.unwrap().status, 204);
    let custom = json!({ "n": "5", "owner": "jdoe" });
    assert_eq!(data(&client.get("/v1/secret/metadata/cfg").await.unwrap())["custom_metadata"], custom);
    assert_eq!(data(&client.get("/v1/secret/data/cfg").await.unwrap())["metadata"]["custom_metadata"], custom);
    let resp = client.post("/v1/secret/data/cfg", &json!({ "data": { "v": 3 } })).await.unwrap();
    assert_eq!(data(&resp)["custom_metadata"], custom);
    // Metadata PATCH merges: null removes a custom key; unset settings are kept.
    let resp = patch(
        &client,
        "/v1/secret/metadata/cfg",
        &json!({ "custom_metadata": { "n": null, "team": "ops" }, "max_versions": 7 }),
    )
    .await;
    assert_eq!(resp.status, 204, "{}", resp.text());
    let meta = data(&client.get("/v1/secret/metadata/cfg").await.unwrap());
    assert_eq!(meta["custom_metadata"], json!({ "owner": "jdoe", "team": "ops" }));
    assert_eq!((meta["max_versions"].clone(), meta["current_version"].clone()), (json!(7), json!(3)));
    let resp = patch(&client, "/v1/secret/metadata/cfg", &json!({ "custom_metadata": null })).await;
    assert_eq!(resp.status, 204);
    assert_eq!(data(&client.get("/v1/secret/metadata/cfg").await.unwrap())["custom_metadata"], Value::Null);
    let missing = patch(&client, "/v1/secret/metadata/none", &json!({ "max_versions": 1 })).await;
    assert_eq!((missing.status, missing.body.len()), (404, 0));
    assert_errors(
        &client.post("/v1/secret/metadata/cfg", &json!({ "custom_metadata": { "k": "" } })).await.unwrap(),
        400,
        &["1 error occurred:\n\t* custom_metadata validation failed: length of value for key \"k\" is 0 but must be 0 < len(value) <= 512\n\n"],
    );

    // PATCH of a deleted current version: 404 carrying that version's metadata (flat, unlike reads).
    assert_eq!(client.delete("/v1/secret/data/cfg").await.unwrap().status, 204);
    let meta = data(&client.get("/v1/secret/metadata/cfg").await.unwrap());
    let created3 = meta["versions"]["3"]["created_time"].as_str().unwrap().to_string();
    let deleted3 = meta["versions"]["3"]["deletion_time"].as_str().unwrap().to_string();
    let gone = patch(&client, "/v1/secret/data/cfg", &json!({ "data": { "x": 1 } })).await;
    assert_eq!(gone.status, 404);
    assert_eq!(
        without_request_id(gone.json().unwrap()),
        envelope(version_meta(&created3, &deleted3, false, 3, Value::Null), "", Value::Null)
    );
    let gone = client.get("/v1/secret/subkeys/cfg").await.unwrap();
    assert_eq!(gone.status, 404);
    assert_eq!(
        without_request_id(gone.json().unwrap()),
        envelope(
            json!({ "subkeys": null, "metadata": version_meta(&created3, &deleted3, false, 3, Value::Null) }),
            "",
            Value::Null
        )
    );

    // Metadata written before any data: versions start at 1 later, created_time stays the metadata's.
    let resp =
        client.post("/v1/secret/metadata/early", &json!({ "max_versions": 2, "custom_metadata": { "a": "b" } })).await;
    assert_eq!(resp.unwrap().status, 204);
    let early = data(&client.get("/v1/secret/metadata/early").await.unwrap());
    let early_created = early["created_time"].as_str().unwrap().to_string();
    check_time(&early_created);
    assert_eq!(
        early,
        json!({
            "cas_required": false,
            "created_time": early_created,
            "current_version": 0,
            "custom_metadata": { "a": "b" },
            "delete_version_after": "0s",
            "max_versions": 2,
            "oldest_version": 0,
            "updated_time": early_created,
            "versions": {},
        })
    );
    assert_errors(&client.get("/v1/secret/data/early").await.unwrap(), 404, &[]);
    let first = write(&client, "early", json!({ "x": 1 })).await;
    let early = data(&client.get("/v1/secret/metadata/early").await.unwrap());
    assert_eq!((early["created_time"].clone(), early["updated_time"].clone()), (json!(early_created), json!(first)));
    // A metadata write without settings creates nothing.
    assert_eq!(client.post("/v1/secret/metadata/empty", &json!({})).await.unwrap().status, 204);
    assert_errors(&client.get("/v1/secret/metadata/empty").await.unwrap(), 404, &[]);

    // Turning a key's cas_required off while the mount requires it is accepted with Vault's warning.
    assert_eq!(client.post("/v1/secret/config", &json!({ "cas_required": true })).await.unwrap().status, 204);
    let resp = client.post("/v1/secret/metadata/early", &json!({ "cas_required": false })).await.unwrap();
    assert_eq!(
        ok(&resp),
        envelope(
            Value::Null,
            "kv",
            json!(["\"cas_required\" set to false, but is mandated by backend config. This value will be ignored."])
        )
    );
}

#[tokio::test]
async fn listing_and_paths_vault_refuses() {
    let cluster = single_node().await;
    let client = cluster.client(0);
    for key in ["foo", "foo/bar", "foo/baz/qux", "app/db"] {
        write(&client, key, json!({ "k": key })).await;
    }
    let keys = |resp: Response| data(&resp)["keys"].clone();
    assert_eq!(keys(client.list("/v1/secret/metadata/").await.unwrap()), json!(["app/", "foo", "foo/"]));
    assert_eq!(keys(client.list("/v1/secret/metadata").await.unwrap()), json!(["app/", "foo", "foo/"]));
    assert_eq!(keys(client.get("/v1/secret/metadata?list=true").await.unwrap()), json!(["app/", "foo", "foo/"]));
    assert_eq!(keys(client.list("/v1/secret/metadata/foo").await.unwrap()), json!(["bar", "baz/"]));
    assert_errors(&client.list("/v1/secret/metadata/nothing/").await.unwrap(), 404, &[]);
    // exclude_deleted leaves out keys whose current version is deleted.
    assert_eq!(client.delete("/v1/secret/data/foo").await.unwrap().status, 204);
    assert_eq!(keys(client.list("/v1/secret/metadata/?exclude_deleted=true").await.unwrap()), json!(["app/", "foo/"]));
    assert_eq!(keys(client.list("/v1/secret/metadata/").await.unwrap()), json!(["app/", "foo", "foo/"]));

    // Paths that are not kv-v2 endpoints: 404 with Vault's warnings.
    let warned = |resp: Response, warning: &str| {
        assert_eq!(resp.status, 404, "{}", resp.text());
        assert_eq!(without_request_id(resp.json().unwrap()), envelope(Value::Null, "", json!([warning])));
    };
    let root = "Non-listing operations on the root of a K/V v2 mount are not supported.";
    warned(client.get("/v1/secret/data").await.unwrap(), root);
    warned(client.post("/v1/secret/metadata", &json!({})).await.unwrap(), root);
    warned(client.delete("/v1/secret/destroy").await.unwrap(), root);
    let invalid = |command: &str| {
        format!(
            "Invalid path for a versioned K/V secrets engine. See the API docs for the appropriate API endpoints to \
             use. If using the Vault CLI, use 'vault kv {command}' for this operation."
        )
    };
    warned(client.get("/v1/secret/foo").await.unwrap(), &invalid("get"));
    warned(client.put("/v1/secret/foo", &json!({ "a": 1 })).await.unwrap(), &invalid("put"));
    warned(client.get("/v1/secret/data/foo/").await.unwrap(), &invalid("get"));
    warned(client.list("/v1/secret/data/foo").await.unwrap(), &invalid("list"));
    warned(client.delete("/v1/secret/").await.unwrap(), &invalid("delete"));
    warned(patch(&client, "/v1/secret/subkeys", &json!({})).await, &invalid("patch"));

    // Operations an endpoint does not support: 405 with Vault's (multierror-formatted) message.
    let unsupported = ["1 error occurred:\n\t* unsupported operation\n\n"];
    assert_errors(&client.post("/v1/secret/subkeys/foo", &json!({})).await.unwrap(), 405, &unsupported);
    assert_errors(&client.delete("/v1/secret/config").await.unwrap(), 405, &unsupported);
    assert_errors(&client.get("/v1/secret/delete/foo").await.unwrap(), 405, &unsupported);
    assert_errors(&client.list("/v1/secret/destroy/foo").await.unwrap(), 405, &unsupported);
    assert_errors(
        &client.post("/v1/secret/metadata/", &json!({ "max_versions": 1 })).await.unwrap(),
        400,
        &["missing path"],
    );

    // Unmounting removes everything; a new mount at the same path starts empty.
    assert_eq!(client.delete("/v1/sys/mounts/secret").await.unwrap().status, 204);
    assert_errors(
        &client.get("/v1/secret/data/foo").await.unwrap(),
        404,
        &["no handler for route \"secret/data/foo\". route entry not found."],
    );
    mount_kv2(&client, "secret").await;
    assert_errors(&client.list("/v1/secret/metadata/").await.unwrap(), 404, &[]);
    assert_errors(&client.get("/v1/secret/data/app/db").await.unwrap(), 404, &[]);
    let config = data(&client.get("/v1/secret/config").await.unwrap());
    assert_eq!(config, json!({ "cas_required": false, "delete_version_after": "0s", "max_versions": 0 }));
}

#[tokio::test]
async fn writes_through_followers_read_identically_on_every_node() {
    let cluster = TestCluster::start3().await;
    let leader = cluster.leader().await;
    let followers = cluster.others(leader);
    let (f1, f2) = (cluster.client(followers[0]), cluster.client(followers[1]));
    assert_eq!(f1.delete("/v1/sys/mounts/secret").await.unwrap().status, 204);
    mount_kv2(&f1, "secret").await;

    // Every kind of write, through followers; each is readable at once from the node that took it.
    let resp = f1.post("/v1/secret/data/app/db", &json!({ "data": { "user": "alice" } })).await.unwrap();
    let created1 = data(&resp)["created_time"].as_str().unwrap().to_string();
    assert_eq!(data(&f1.get("/v1/secret/data/app/db").await.unwrap())["data"], json!({ "user": "alice" }));
    let resp = f2.post("/v1/secret/data/app/db", &json!({ "options": { "cas": 1 }, "data": { "user": "bob" } })).await;
    let created2 = data(&resp.unwrap())["created_time"].as_str().unwrap().to_string();
    let stale = f1.post("/v1/secret/data/app/db", &json!({ "options": { "cas": 1 }, "data": { "user": "eve" } })).await;
    assert_errors(&stale.unwrap(), 400, &["check-and-set parameter did not match the current version"]);
    let resp = patch(&f1, "/v1/secret/data/app/db", &json!({ "data": { "pass": "s3cret" } })).await;
    let created3 = data(&resp)["created_time"].as_str().unwrap().to_string();
    assert_eq!(
        data(&f1.get("/v1/secret/data/app/db").await.unwrap())["data"],
        json!({ "user": "bob", "pass": "s3cret" })
    );
    assert_eq!(f2.post("/v1/secret/delete/app/db", &json!({ "versions": [1] })).await.unwrap().status, 204);
    assert_eq!(f2.get("/v1/secret/data/app/db?version=1").await.unwrap().status, 404);
    assert_eq!(f1.put("/v1/secret/destroy/app/db", &json!({ "versions": [2] })).await.unwrap().status, 204);
    let resp = f2.post("/v1/secret/metadata/app/db", &json!({ "custom_metadata": { "owner": "ops" } })).await;
    assert_eq!(resp.unwrap().status, 204);
    assert_eq!(f1.post("/v1/secret/config", &json!({ "max_versions": 4 })).await.unwrap().status, 204);
    let missing = patch(&f2, "/v1/secret/data/none", &json!({ "data": { "a": 1 } })).await;
    assert_eq!((missing.status, missing.body.len()), (404, 0));
    for n in 0..3 {
        write(&f2, "other", json!({ "n": n })).await;
    }

    // Every node holds exactly the same metadata — the times are the leader's, stamped in the log. The leader
    // has applied every acknowledged write.
    let meta_path = "/v1/secret/metadata/app/db";
    let expected = data(&cluster.client(leader).get(meta_path).await.unwrap());
    assert_eq!(expected["current_version"], json!(3));
    assert_eq!(expected["custom_metadata"], json!({ "owner": "ops" }));
    assert_eq!(expected["versions"]["1"]["created_time"], json!(created1));
    assert_eq!(expected["versions"]["2"], json!({ "created_time": created2, "deletion_time": "", "destroyed": true }));
    assert_eq!(expected["versions"]["3"], json!({ "created_time": created3, "deletion_time": "", "destroyed": false }));
    check_time(expected["versions"]["1"]["deletion_time"].as_str().unwrap());
    let reads = [
        meta_path,
        "/v1/secret/metadata/other",
        "/v1/secret/data/app/db",
        "/v1/secret/data/app/db?version=3",
        "/v1/secret/subkeys/app/db",
        "/v1/secret/config",
    ];
    let leader_view: Vec<Value> = {
        let mut views = Vec::new();
        for path in reads {
            let resp = cluster.client(leader).get(path).await.unwrap();
            views.push(without_request_id(resp.json().unwrap()));
        }
        views
    };
    assert_eq!(leader_view[0]["data"], expected);
    for node in 0..3 {
        wait_for(&format!("node {node} to match the leader"), WAIT, || async {
            for (path, view) in reads.iter().zip(&leader_view) {
                let resp = cluster.client(node).get(path).await.ok()?;
                if &without_request_id(resp.json().ok()?) != view {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }
    assert_eq!(
        leader_view[5]["data"],
        json!({ "cas_required": false, "delete_version_after": "0s", "max_versions": 4 })
    );
    let listed = data(&cluster.client(followers[1]).list("/v1/secret/metadata/").await.unwrap());
    assert_eq!(listed["keys"], json!(["app/", "other"]));
}

#[tokio::test]
async fn new_clusters_mount_secret_as_kv_v2() {
    let cluster = common::TestCluster::start(common::ClusterOptions { nodes: 1, ..Default::default() }).await;
    let client = cluster.client(0);
    let mounts = client.get("/v1/sys/mounts").await.unwrap().json().unwrap();
    assert_eq!(mounts["data"]["secret/"]["options"], serde_json::json!({ "version": "2" }));
    let written = client.post("/v1/secret/data/hello", &serde_json::json!({ "data": { "a": "b" } })).await.unwrap();
    assert_eq!(written.status, 200, "{}", written.text());
    assert_eq!(written.json().unwrap()["data"]["version"], serde_json::json!(1));
}
