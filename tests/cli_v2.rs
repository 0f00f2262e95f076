//! `vigil policy`, `vigil token` and the kv-v2 side of `vigil kv`: what a user types, what they see, and what
//! goes over the wire.
//!
//! Policies and tokens run against a real node, kv-v2 against a real 3-node cluster (writes through a follower,
//! reads through the leader) and against a scripted Vault-shaped server that records every request the CLI sends,
//! so both the exact requests and the exact output are checked.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use common::{run_vigil, ClusterOptions, TestCluster};
use serde_json::{json, Value};

const APP_POLICY: &str = "path \"kv/app/*\" {\n  capabilities = [\"read\", \"list\"]\n}\n";

/// Runs the `vigil` binary with `stdin` fed to it; returns (exit code, stdout, stderr).
fn run_vigil_with_stdin(args: &[&str], env: &[(&str, &str)], stdin: &str) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vigil"));
    command.args(args).env_remove("VIGIL_ADDR").env_remove("VIGIL_TOKEN");
    command.env_remove("VAULT_ADDR").env_remove("VAULT_TOKEN");
    command.envs(env.iter().copied());
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("run vigil");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    let out = child.wait_with_output().expect("wait for vigil");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The Key/Value rows of a table printed by the CLI (the two header lines skipped), in order.
fn table_rows(out: &str) -> Vec<(String, String)> {
    let mut lines = out.lines();
    assert_eq!(lines.next().map(|l| l.split_whitespace().collect::<Vec<_>>()), Some(vec!["Key", "Value"]), "{out}");
    assert_eq!(lines.next().map(|l| l.split_whitespace().collect::<Vec<_>>()), Some(vec!["---", "-----"]), "{out}");
    lines
        .map(|l| match l.split_once("    ") {
            Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
            None => panic!("not a table row: {l:?} in\n{out}"),
        })
        .collect()
}

/// A Key/Value table laid out as the CLI lays it out (keys padded to the longest key plus four spaces).
fn table(rows: &[(&str, &str)]) -> String {
    let width = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0).max(3);
    let mut out = format!("{:<w$}    Value\n{:<w$}    -----\n", "Key", "---", w = width);
    for (k, v) in rows {
        out.push_str(&format!("{k:<width$}    {v}\n"));
    }
    out
}

/// Whether `s` looks like an RFC 3339 UTC time (`2024-05-01T10:00:00.123Z`).
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() >= 20 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':' && s.ends_with('Z')
}

/// Replaces every RFC 3339 time that ends a line of `text` with `<time>`, so outputs with timestamps compare
/// exactly.
fn mask_times(text: &str) -> String {
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let (body, newline) = match line.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (line, ""),
        };
        let start = body.rfind(' ').map(|i| i + 1).unwrap_or(0);
        if is_rfc3339(&body[start..]) {
            out.push_str(&body[..start]);
            out.push_str("<time>");
        } else {
            out.push_str(body);
        }
        out.push_str(newline);
    }
    out
}

#[tokio::test]
async fn policy_write_read_list_delete_round_trip() {
    let cluster = TestCluster::start(ClusterOptions { nodes: 1, ..Default::default() }).await;
    let addr = cluster.nodes[0].api_addr();
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("app.hcl");
    std::fs::write(&file, APP_POLICY).unwrap();

    // Names are lowercased, as Vault does.
    let (code, out, err) = cluster.run_cli(&["policy", "write", "App", file.to_str().unwrap()], &addr);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "Success! Uploaded policy: app\n", ""));
    let env = [("VIGIL_ADDR", addr.as_str()), ("VIGIL_TOKEN", cluster.root_token.as_str())];
    let ops = "path \"sys/*\" {\n  capabilities = [\"read\"]\n}\n";
    let (code, out, err) = run_vigil_with_stdin(&["policy", "write", "ops", "-"], &env, ops);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "Success! Uploaded policy: ops\n", ""));

    let (code, out, err) = cluster.run_cli(&["policy", "read", "app"], &addr);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "path \"kv/app/*\" {\n  capabilities = [\"read\", \"list\"]\n}\n", "")
    );
    let (code, out, _) = cluster.run_cli(&["policy", "read", "-format=json", "ops"], &addr);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!({ "policy": ops }));
    assert_eq!(out, "{\n  \"policy\": \"path \\\"sys/*\\\" {\\n  capabilities = [\\\"read\\\"]\\n}\\n\"\n}\n");

    let (code, out, err) = cluster.run_cli(&["policy", "list"], &addr);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "app\ndefault\nops\nroot\n", ""));
    let (code, out, _) = cluster.run_cli(&["policy", "list", "-format=json"], &addr);
    assert_eq!((code, out.as_str()), (0, "[\n  \"app\",\n  \"default\",\n  \"ops\",\n  \"root\"\n]\n"));

    let (code, out, err) = cluster.run_cli(&["policy", "delete", "APP"], &addr);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "Success! Deleted policy: app\n", ""));
    let (code, out, err) = cluster.run_cli(&["policy", "read", "app"], &addr);
    assert_eq!((code, out.as_str(), err.as_str()), (2, "", "No policy named: app\n"));
    let (code, out, _) = cluster.run_cli(&["policy", "list"], &addr);
    assert_eq!((code, out.as_str()), (0, "default\nops\nroot\n"));

    // Errors: an unreadable file (local, exit 1), a policy the server rejects and a missing token (exit 2).
    let missing = files.path().join("missing.hcl");
    let (code, out, err) = cluster.run_cli(&["policy", "write", "x", missing.to_str().unwrap()], &addr);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.starts_with(&format!("Error opening policy file: {}: ", missing.display())), "{err}");
    let bad = files.path().join("bad.hcl");
    std::fs::write(&bad, "path \"kv/*\" {\n  capabilities = [\"read\", \"fly\"]\n}\n").unwrap();
    let (code, out, err) = cluster.run_cli(&["policy", "write", "bad", bad.to_str().unwrap()], &addr);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(
        err.starts_with("Error uploading policy: Code: 400. Errors:\n\n* failed to parse policy: line 2: "),
        "{err}"
    );
    let (code, out, err) = cluster.run_cli(&["policy", "delete", "root"], &addr);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (2, "", "Error deleting root: Code: 400. Errors:\n\n* cannot delete root policy\n")
    );
    let (code, _, err) = run_vigil(&["policy", "list"], &[("VIGIL_ADDR", &addr)], Path::new("."));
    assert_eq!((code, err.as_str()), (2, "Error listing policies: Code: 403. Errors:\n\n* permission denied\n"));
}

#[tokio::test]
async fn token_create_lookup_renew_revoke() {
    let cluster = TestCluster::start(ClusterOptions { nodes: 1, ..Default::default() }).await;
    let addr = cluster.nodes[0].api_addr();
    let env = [("VIGIL_ADDR", addr.as_str()), ("VIGIL_TOKEN", cluster.root_token.as_str())];
    let (code, _, err) = run_vigil_with_stdin(&["policy", "write", "app", "-"], &env, APP_POLICY);
    assert_eq!(code, 0, "{err}");

    // create: Vault's auth table.
    let (code, out, err) = cluster.run_cli(
        &["token", "create", "-policy=app", "-display-name=ci", "-metadata=team=ops", "-metadata", "env=prod"],
        &addr,
    );
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    let rows: BTreeMap<String, String> = table_rows(&out).into_iter().collect();
    let (token, accessor) = (rows["token"].clone(), rows["token_accessor"].clone());
    assert!(token.starts_with("hvs.") && !accessor.is_empty(), "{out}");
    assert_eq!(
        out,
        table(&[
            ("token", &token),
            ("token_accessor", &accessor),
            ("token_duration", "768h"),
            ("token_renewable", "true"),
            ("token_policies", "[\"app\" \"default\"]"),
            ("identity_policies", "[]"),
            ("policies", "[\"app\" \"default\"]"),
            ("token_meta_env", "prod"),
            ("token_meta_team", "ops"),
        ])
    );

    // lookup of that token (POST auth/token/lookup), with every field as Vault shows it.
    let (code, out, err) = cluster.run_cli(&["token", "lookup", &token], &addr);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    let rows: BTreeMap<String, String> = table_rows(&out).into_iter().collect();
    assert!(rows["creation_time"].parse::<u64>().is_ok(), "{out}");
    assert!(is_rfc3339(&rows["expire_time"]) && is_rfc3339(&rows["issue_time"]), "{out}");
    assert!(rows["ttl"] == "768h" || rows["ttl"].starts_with("767h59m"), "{out}");
    let expected = |id: &str, ttl: &str| {
        table(&[
            ("accessor", &accessor),
            ("creation_time", &rows["creation_time"]),
            ("creation_ttl", "768h"),
            ("display_name", "token-ci"),
            ("entity_id", "n/a"),
            ("expire_time", &rows["expire_time"]),
            ("explicit_max_ttl", "0s"),
            ("id", id),
            ("issue_time", &rows["issue_time"]),
            ("meta", "map[env:prod team:ops]"),
            ("num_uses", "0"),
            ("orphan", "false"),
            ("path", "auth/token/create"),
            ("policies", "[app default]"),
            ("renewable", "true"),
            ("ttl", ttl),
            ("type", "service"),
        ])
    };
    assert_eq!(out, expected(&token, &rows["ttl"]));

    // The same token looks itself up (lookup-self, allowed by the default policy); by accessor, the id is hidden.
    let as_token = [("VIGIL_ADDR", addr.as_str()), ("VIGIL_TOKEN", token.as_str())];
    let (code, out, err) = run_vigil(&["token", "lookup"], &as_token, Path::new("."));
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    let self_rows: BTreeMap<String, String> = table_rows(&out).into_iter().collect();
    assert_eq!(out, expected(&token, &self_rows["ttl"]));
    let (code, out, _) = cluster.run_cli(&["token", "lookup", "-accessor", &accessor], &addr);
    let accessor_rows: BTreeMap<String, String> = table_rows(&out).into_iter().collect();
    assert_eq!((code, out.clone()), (0, expected("n/a", &accessor_rows["ttl"])));
    let (code, out, _) = cluster.run_cli(&["token", "lookup", "-format=json", &token], &addr);
    assert_eq!(code, 0);
    let body: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (body["data"]["id"].as_str(), body["data"]["policies"].clone()),
        (Some(token.as_str()), json!(["app", "default"]))
    );

    // renew with an increment.
    let (code, out, err) = cluster.run_cli(&["token", "renew", "-increment=1h", &token], &addr);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    let renewed: Vec<(String, String)> = table_rows(&out);
    assert_eq!(
        renewed[..4].to_vec(),
        [
            ("token".to_string(), token.clone()),
            ("token_accessor".to_string(), accessor.clone()),
            ("token_duration".to_string(), "1h".to_string()),
            ("token_renewable".to_string(), "true".to_string()),
        ]
    );

    // revoke, after which the token is gone.
    let (code, out, err) = cluster.run_cli(&["token", "revoke", &token], &addr);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "Success! Revoked token (if it existed)\n", ""));
    let (code, out, err) = cluster.run_cli(&["token", "lookup", &token], &addr);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (2, "", "Error looking up token: Code: 400. Errors:\n\n* bad token\n")
    );
    let (code, _, err) = run_vigil(&["token", "lookup"], &as_token, Path::new("."));
    assert_eq!((code, err.as_str()), (2, "Error looking up token: Code: 403. Errors:\n\n* permission denied\n"));

    // An orphan with a short, non-renewable TTL and only the named policy; it revokes itself.
    let (code, out, err) = cluster.run_cli(
        &["token", "create", "-orphan", "-ttl=30m", "-renewable=false", "-no-default-policy", "-policy=app"],
        &addr,
    );
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    let rows: BTreeMap<String, String> = table_rows(&out).into_iter().collect();
    let orphan = rows["token"].clone();
    assert_eq!(
        out,
        table(&[
            ("token", &orphan),
            ("token_accessor", &rows["token_accessor"]),
            ("token_duration", "30m"),
            ("token_renewable", "false"),
            ("token_policies", "[\"app\"]"),
            ("identity_policies", "[]"),
            ("policies", "[\"app\"]"),
        ])
    );
    let (code, out, _) = cluster.run_cli(&["token", "lookup", "-format=json", &orphan], &addr);
    let body: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (code, body["data"]["orphan"].clone(), body["data"]["path"].clone()),
        (0, json!(true), json!("auth/token/create-orphan"))
    );
    let (code, out, err) = cluster.run_cli(&["token", "renew", &orphan], &addr);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (2, "", "Error renewing token: Code: 400. Errors:\n\n* lease is not renewable\n")
    );
    let (code, out, err) = cluster.run_cli(&["token", "revoke", "-accessor", &rows["token_accessor"]], &addr);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "Success! Revoked token (if it existed)\n", ""));
    let (code, _, err) = cluster.run_cli(&["token", "lookup", &orphan], &addr);
    assert_eq!((code, err.as_str()), (2, "Error looking up token: Code: 400. Errors:\n\n* bad token\n"));

    // The root token: no expiry.
    let (code, out, _) = cluster.run_cli(&["token", "lookup"], &addr);
    let rows: BTreeMap<String, String> = table_rows(&out).into_iter().collect();
    assert_eq!(
        (code, rows["policies"].as_str(), rows["ttl"].as_str(), rows["expire_time"].as_str()),
        (0, "[root]", "0s", "<nil>")
    );

    // Usage errors are local (exit 1) and reach no server.
    let (code, out, err) = cluster.run_cli(&["token", "revoke"], &addr);
    assert_eq!((code, out.as_str(), err.as_str()), (1, "", "Not enough arguments (expected 1 or -self, got 0)\n"));
    let (code, _, err) = cluster.run_cli(&["token", "revoke", "-self", "-mode=orphan"], &addr);
    assert_eq!((code, err.as_str()), (1, "Cannot use -self with -mode!\n"));
    let (code, _, err) = cluster.run_cli(&["token", "create", "-ttl=soon"], &addr);
    assert_eq!(code, 2);
    assert!(err.contains("invalid duration \"soon\""), "{err}");
}

// ---------------------------------------------------------------------------------------------------------------
// kv-v2 against a scripted server.

/// One request the CLI sent.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    /// Path and query.
    uri: String,
    content_type: Option<String>,
    /// The JSON body (`Value::Null` when there was none).
    body: Value,
}

fn seen(method: &str, uri: &str, body: Value) -> Seen {
    let content_type = (!body.is_null()).then(|| "application/json".to_string());
    Seen { method: method.into(), uri: uri.into(), content_type, body }
}

/// A Vault-shaped server with kv-v2 mounts at `secret/` and `team/secrets/` and a kv-v1 mount at `kv/`, answering
/// from a script and recording every request. Runs on its own thread (the CLI runs as a blocking child process).
struct ScriptedVault {
    addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl ScriptedVault {
    fn start() -> ScriptedVault {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    let record = record.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                            let record = record.clone();
                            async move {
                                use http_body_util::BodyExt;
                                let method = req.method().to_string();
                                let uri = req.uri().to_string();
                                let content_type =
                                    req.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
                                let bytes = req.into_body().collect().await?.to_bytes();
                                let body = if bytes.is_empty() {
                                    Value::Null
                                } else {
                                    serde_json::from_slice(&bytes).unwrap()
                                };
                                let (status, reply) = script(&method, &uri, &body);
                                record.lock().unwrap().push(Seen { method, uri, content_type, body });
                                let body = reply.map(|r| r.to_string()).unwrap_or_default();
                                let resp = hyper::Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                                    .unwrap();
                                Ok::<_, hyper::Error>(resp)
                            }
                        });
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                    });
                }
            });
        });
        ScriptedVault { addr, seen }
    }

    /// Runs the CLI against the server; returns (exit code, stdout, stderr, the requests it sent).
    fn run(&self, args: &[&str]) -> (i32, String, String, Vec<Seen>) {
        self.seen.lock().unwrap().clear();
        let (code, out, err) = run_vigil(args, &[("VIGIL_ADDR", &self.addr), ("VIGIL_TOKEN", "root")], Path::new("."));
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        (code, out, err, seen)
    }
}

fn version_metadata(version: u64) -> Value {
    json!({"created_time": "2024-05-01T10:00:00.123456Z", "custom_metadata": null, "deletion_time": "",
        "destroyed": false, "version": version})
}

fn envelope(data: Value) -> Value {
    json!({"request_id": "r1", "lease_id": "", "renewable": false, "lease_duration": 0, "data": data,
        "wrap_info": null, "warnings": null, "auth": null, "mount_type": "kv"})
}

/// The scripted answers: (status, JSON body or none).
fn script(method: &str, uri: &str, body: &Value) -> (u16, Option<Value>) {
    let mount = |version: &str| (200, Some(envelope(json!({"type": "kv", "options": {"version": version}}))));
    match (method, uri) {
        ("GET", p) if p.starts_with("/v1/sys/internal/ui/mounts/") => {
            let path = &p["/v1/sys/internal/ui/mounts/".len()..];
            let mounts = [("team/secrets/", "2"), ("secret/", "2"), ("kv/", "1")];
            match mounts.into_iter().find(|(m, _)| path.starts_with(m) || format!("{path}/") == *m) {
                Some((m, v)) => (200, Some(envelope(json!({"type": "kv", "path": m, "options": {"version": v}})))),
                None => (400, Some(json!({"errors": [format!("no mount serves path {path:?}")]}))),
            }
        }
        ("GET", "/v1/sys/mounts/secret/") | ("GET", "/v1/sys/mounts/team/secrets/") => mount("2"),
        ("GET", "/v1/sys/mounts/kv/") => mount("1"),
        ("GET", p) if p.starts_with("/v1/sys/mounts/") => {
            (400, Some(json!({"errors": [format!("No secret engine mount at {}", &p["/v1/sys/mounts/".len()..])]})))
        }
        ("GET", "/v1/secret/data/app/db") | ("GET", "/v1/team/secrets/data/app") => (
            200,
            Some(envelope(json!({"data": {"password": "s3cret", "user": "alice"}, "metadata": version_metadata(2)}))),
        ),
        ("GET", "/v1/secret/data/app/db?version=1") => {
            let mut metadata = version_metadata(1);
            metadata["deletion_time"] = json!("2024-05-02T00:00:00Z");
            (404, Some(envelope(json!({"data": null, "metadata": metadata}))))
        }
        ("GET", "/v1/secret/data/missing") => (404, Some(json!({"errors": []}))),
        ("POST", "/v1/secret/data/app/db") if body["options"]["cas"] == json!(7) => {
            (400, Some(json!({"errors": ["check-and-set parameter did not match the current version"]})))
        }
        ("POST", "/v1/secret/data/app/db") => (200, Some(envelope(version_metadata(1)))),
        ("PATCH", "/v1/secret/data/app/db") => (200, Some(envelope(version_metadata(3)))),
        ("DELETE", "/v1/secret/data/app/db")
        | ("POST", "/v1/secret/delete/app/db")
        | ("POST", "/v1/secret/undelete/app/db")
        | ("PUT", "/v1/secret/destroy/app/db")
        | ("POST", "/v1/secret/metadata/app/db")
        | ("DELETE", "/v1/secret/metadata/app/db") => (204, None),
        ("GET", "/v1/secret/metadata/app/db") => (
            200,
            Some(envelope(json!({
                "cas_required": false, "created_time": "2024-05-01T10:00:00Z", "current_version": 2,
                "custom_metadata": {"team": "ops"}, "delete_version_after": "0s", "max_versions": 0,
                "oldest_version": 0, "updated_time": "2024-05-01T11:00:00Z",
                "versions": {
                    "1": {"created_time": "2024-05-01T10:00:00Z", "deletion_time": "2024-05-02T00:00:00Z",
                        "destroyed": false},
                    "2": {"created_time": "2024-05-01T11:00:00Z", "deletion_time": "", "destroyed": false}
                }
            }))),
        ),
        ("LIST", "/v1/secret/metadata/app/") => (200, Some(envelope(json!({"keys": ["db", "web/"]})))),
        _ => (404, Some(json!({"errors": [format!("no handler for route {uri:?}")]}))),
    }
}

#[test]
fn kv_v2_requests_and_output_against_a_scripted_server() {
    let vault = ScriptedVault::start();
    let probe = seen("GET", "/v1/sys/internal/ui/mounts/secret/app/db", Value::Null);

    // put: the data, the check-and-set version, and the new version's metadata.
    let (code, out, err, requests) =
        vault.run(&["kv", "put", "-cas=0", "secret/app/db", "user=alice", "password=s3cret"]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(
        requests,
        [
            probe.clone(),
            seen(
                "POST",
                "/v1/secret/data/app/db",
                json!({"data": {"user": "alice", "password": "s3cret"}, "options": {"cas": 0}})
            ),
        ]
    );
    let metadata_table = "\
======= Metadata =======
Key                Value
---                -----
created_time       2024-05-01T10:00:00.123456Z
custom_metadata    <nil>
deletion_time      n/a
destroyed          false
";
    assert_eq!(out, format!("=== Secret Path ===\nsecret/data/app/db\n\n{metadata_table}version            1\n"));
    let (_, _, _, requests) = vault.run(&["kv", "put", "secret/app/db", "a=1"]);
    assert_eq!(requests[1].body, json!({"data": {"a": "1"}, "options": {}}));
    let (code, out, err, _) = vault.run(&["kv", "put", "-cas=7", "secret/app/db", "a=1"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (
            2,
            "",
            "Error writing data to secret/data/app/db: Code: 400. Errors:\n\n\
             * check-and-set parameter did not match the current version\n"
        )
    );

    // get: the metadata and the data; -version; a deleted version; a missing secret; -mount; a nested mount.
    let (code, out, err, requests) = vault.run(&["kv", "get", "secret/app/db"]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(requests, [probe.clone(), seen("GET", "/v1/secret/data/app/db", Value::Null)]);
    let get_output = format!(
        "=== Secret Path ===\nsecret/data/app/db\n\n{metadata_table}version            2\n\n\
         ====== Data ======\nKey         Value\n---         -----\npassword    s3cret\nuser        alice\n"
    );
    assert_eq!(out, get_output);
    let (code, out, _, requests) = vault.run(&["kv", "get", "-version=1", "secret/app/db"]);
    assert_eq!(requests[1], seen("GET", "/v1/secret/data/app/db?version=1", Value::Null));
    // A deleted version: Vault's 404 with metadata; the metadata is shown, without a Data section.
    let deleted = "\
=== Secret Path ===
secret/data/app/db

======= Metadata =======
Key                Value
---                -----
created_time       2024-05-01T10:00:00.123456Z
custom_metadata    <nil>
deletion_time      2024-05-02T00:00:00Z
destroyed          false
version            1

";
    assert_eq!((code, out.as_str()), (0, deleted));
    let (code, out, err, _) = vault.run(&["kv", "get", "secret/missing"]);
    assert_eq!((code, out.as_str(), err.as_str()), (2, "", "No value found at secret/data/missing\n"));
    let (code, out, _, requests) = vault.run(&["kv", "get", "-mount=secret", "app/db"]);
    assert_eq!((code, out.as_str(), requests.len()), (0, get_output.as_str(), 2));
    let (code, out, _, requests) = vault.run(&["kv", "get", "team/secrets/app"]);
    assert_eq!(code, 0);
    assert_eq!(
        requests.iter().map(|r| r.uri.as_str()).collect::<Vec<_>>(),
        ["/v1/sys/internal/ui/mounts/team/secrets/app", "/v1/team/secrets/data/app"]
    );
    assert!(out.starts_with("==== Secret Path ====\nteam/secrets/data/app\n\n"), "{out}");
    let (code, out, _, _) = vault.run(&["kv", "get", "-format=json", "secret/app/db"]);
    let body: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((code, body["data"]["data"].clone()), (0, json!({"password": "s3cret", "user": "alice"})));

    // patch: a JSON merge patch.
    let (code, out, _, requests) = vault.run(&["kv", "patch", "secret/app/db", "password=n3w"]);
    assert_eq!(code, 0);
    assert_eq!(
        requests[1],
        Seen {
            method: "PATCH".into(),
            uri: "/v1/secret/data/app/db".into(),
            content_type: Some("application/merge-patch+json".into()),
            body: json!({"data": {"password": "n3w"}}),
        }
    );
    assert_eq!(out, format!("=== Secret Path ===\nsecret/data/app/db\n\n{metadata_table}version            3\n"));

    // delete (latest, or versions), undelete, destroy.
    let (code, out, _, requests) = vault.run(&["kv", "delete", "secret/app/db"]);
    assert_eq!((code, out.as_str()), (0, "Success! Data deleted (if it existed) at: secret/data/app/db\n"));
    assert_eq!(requests[1], seen("DELETE", "/v1/secret/data/app/db", Value::Null));
    let (code, out, _, requests) = vault.run(&["kv", "delete", "-versions=1,2", "secret/app/db"]);
    assert_eq!((code, out.as_str()), (0, "Success! Data deleted (if it existed) at: secret/data/app/db\n"));
    assert_eq!(requests[1], seen("POST", "/v1/secret/delete/app/db", json!({"versions": [1, 2]})));
    let (code, out, _, requests) = vault.run(&["kv", "undelete", "-versions", "1", "secret/app/db"]);
    assert_eq!((code, out.as_str()), (0, "Success! Data written to: secret/undelete/app/db\n"));
    assert_eq!(requests[1], seen("POST", "/v1/secret/undelete/app/db", json!({"versions": [1]})));
    let (code, out, _, requests) = vault.run(&["kv", "destroy", "-versions=2", "secret/app/db"]);
    assert_eq!((code, out.as_str()), (0, "Success! Data written to: secret/destroy/app/db\n"));
    assert_eq!(requests[1], seen("PUT", "/v1/secret/destroy/app/db", json!({"versions": [2]})));

    // metadata get, put, delete.
    let (code, out, err, requests) = vault.run(&["kv", "metadata", "get", "secret/app/db"]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(requests[1], seen("GET", "/v1/secret/metadata/app/db", Value::Null));
    assert_eq!(
        out,
        "\
==== Metadata Path ====
secret/metadata/app/db

========== Metadata ==========
Key                     Value
---                     -----
cas_required            false
created_time            2024-05-01T10:00:00Z
current_version         2
custom_metadata         map[team:ops]
delete_version_after    0s
max_versions            0
oldest_version          0
updated_time            2024-05-01T11:00:00Z

====== Version 1 ======
Key              Value
---              -----
created_time     2024-05-01T10:00:00Z
deletion_time    2024-05-02T00:00:00Z
destroyed        false

====== Version 2 ======
Key              Value
---              -----
created_time     2024-05-01T11:00:00Z
deletion_time    n/a
destroyed        false
"
    );
    let (code, out, _, requests) = vault.run(&[
        "kv",
        "metadata",
        "put",
        "-max-versions=5",
        "-cas-required",
        "-delete-version-after=1h",
        "-custom-metadata=team=ops",
        "secret/app/db",
    ]);
    assert_eq!((code, out.as_str()), (0, "Success! Data written to: secret/metadata/app/db\n"));
    assert_eq!(
        requests[1],
        seen(
            "POST",
            "/v1/secret/metadata/app/db",
            json!({"max_versions": 5, "cas_required": true, "delete_version_after": "1h0m0s",
                "custom_metadata": {"team": "ops"}})
        )
    );
    let (code, out, _, requests) = vault.run(&["kv", "metadata", "delete", "secret/app/db"]);
    assert_eq!((code, out.as_str()), (0, "Success! Data deleted (if it existed) at: secret/metadata/app/db\n"));
    assert_eq!(requests[1], seen("DELETE", "/v1/secret/metadata/app/db", Value::Null));

    // list goes to metadata/.
    let (code, out, _, requests) = vault.run(&["kv", "list", "secret/app/"]);
    assert_eq!((code, out.as_str()), (0, "Keys\n----\ndb\nweb/\n"));
    assert_eq!(requests[1], seen("LIST", "/v1/secret/metadata/app/", Value::Null));

    // kv-v1 mounts keep their plain paths; the kv-v2-only commands refuse them with Vault's messages.
    let (code, _, _, requests) = vault.run(&["kv", "get", "kv/app"]);
    assert_eq!(code, 2);
    assert_eq!(
        requests.iter().map(|r| r.uri.as_str()).collect::<Vec<_>>(),
        ["/v1/sys/internal/ui/mounts/kv/app", "/v1/kv/app"]
    );
    let (code, _, err, _) = vault.run(&["kv", "patch", "kv/app", "a=1"]);
    assert_eq!((code, err.as_str()), (2, "K/V engine mount must be version 2 for patch support\n"));
    let (code, _, err, _) = vault.run(&["kv", "metadata", "get", "kv/app"]);
    assert_eq!((code, err.as_str()), (1, "Metadata not supported on KV Version 1\n"));
    let (code, _, err, _) = vault.run(&["kv", "destroy", "-versions=1", "kv/app"]);
    assert_eq!((code, err.as_str()), (1, "Destroy not supported on KV Version 1\n"));
    let (code, _, err, requests) = vault.run(&["kv", "undelete", "secret/app/db"]);
    assert_eq!(
        (code, err.as_str(), requests.len()),
        (1, "No versions provided, use the \"-versions\" flag to specify the version to undelete.\n", 0)
    );
    // An unknown mount: no answer about it, so the first segment is taken as a kv-v1 mount.
    let (code, _, _, requests) = vault.run(&["kv", "get", "other/x/y"]);
    assert_eq!(code, 2);
    assert_eq!(
        requests.iter().map(|r| r.uri.as_str()).collect::<Vec<_>>(),
        [
            "/v1/sys/internal/ui/mounts/other/x/y",
            "/v1/sys/mounts/other/",
            "/v1/sys/mounts/other/x/",
            "/v1/sys/mounts/other/x/y/",
            "/v1/other/x/y"
        ]
    );
}

// ---------------------------------------------------------------------------------------------------------------
// kv-v2 against a real cluster.

#[tokio::test]
async fn kv_v2_round_trip_on_a_cluster() {
    let cluster = TestCluster::start3().await;
    let leader = cluster.leader().await;
    let follower = cluster.others(leader)[0];
    let (via_leader, via_follower) = (cluster.nodes[leader].api_addr(), cluster.nodes[follower].api_addr());
    // secret/ is mounted as kv-v2 at initialization (as on a Vault dev server); mount it if that ever changes.
    let client = cluster.client(leader);
    let mount = client.get("/v1/sys/mounts/secret").await.unwrap();
    if mount.status != 200 {
        let resp = client.post("/v1/sys/mounts/secret", &json!({"type": "kv", "options": {"version": "2"}})).await;
        let resp = resp.unwrap();
        assert_eq!(resp.status, 204, "mounting kv-v2: {}", resp.text());
    } else {
        let mount = mount.json().unwrap();
        assert_eq!(mount["data"]["options"]["version"], json!("2"), "secret/ is not kv-v2: {mount}");
    }

    let version_table = |version: &str| {
        format!(
            "=== Secret Path ===\nsecret/data/app/db\n\n{}",
            table(&[
                ("created_time", "<time>"),
                ("custom_metadata", "<nil>"),
                ("deletion_time", "n/a"),
                ("destroyed", "false"),
                ("version", version),
            ])
            .replacen("Key", "======= Metadata =======\nKey", 1)
        )
    };
    let (code, out, err) =
        cluster.run_cli(&["kv", "put", "secret/app/db", "user=alice", "password=s3cret"], &via_follower);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert_eq!(mask_times(&out), version_table("1"));
    let (code, out, _) = cluster.run_cli(&["kv", "patch", "secret/app/db", "password=n3w"], &via_follower);
    assert_eq!((code, mask_times(&out)), (0, version_table("2")));
    let (code, out, err) = cluster.run_cli(&["kv", "put", "-cas=1", "secret/app/db", "user=bob"], &via_leader);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(
        err.starts_with(
            "Error writing data to secret/data/app/db: Code: 400. Errors:\n\n* check-and-set parameter did not match"
        ),
        "{err}"
    );

    let (code, out, err) = cluster.run_cli(&["kv", "get", "secret/app/db"], &via_follower);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert_eq!(
        mask_times(&out),
        format!("{}\n====== Data ======\n{}", version_table("2"), table(&[("password", "n3w"), ("user", "alice")]))
    );
    let (code, out, _) = cluster.run_cli(&["kv", "get", "-version=1", "-format=json", "secret/app/db"], &via_leader);
    let body: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((code, body["data"]["data"].clone()), (0, json!({"password": "s3cret", "user": "alice"})));

    let (code, out, _) = cluster.run_cli(&["kv", "delete", "-versions=1", "secret/app/db"], &via_follower);
    assert_eq!((code, out.as_str()), (0, "Success! Data deleted (if it existed) at: secret/data/app/db\n"));
    let (code, out, _) = cluster.run_cli(&["kv", "get", "-version=1", "secret/app/db"], &via_leader);
    assert_eq!(code, 0, "a deleted version still shows its metadata");
    assert!(!out.contains("== Data =="), "{out}");
    let (code, out, _) = cluster.run_cli(&["kv", "undelete", "-versions=1", "secret/app/db"], &via_follower);
    assert_eq!((code, out.as_str()), (0, "Success! Data written to: secret/undelete/app/db\n"));
    let (code, out, _) = cluster.run_cli(&["kv", "destroy", "-versions=1", "secret/app/db"], &via_follower);
    assert_eq!((code, out.as_str()), (0, "Success! Data written to: secret/destroy/app/db\n"));

    let (code, out, _) = cluster.run_cli(
        &["kv", "metadata", "put", "-max-versions=5", "-custom-metadata=team=ops", "secret/app/db"],
        &via_follower,
    );
    assert_eq!((code, out.as_str()), (0, "Success! Data written to: secret/metadata/app/db\n"));
    let (code, out, err) = cluster.run_cli(&["kv", "metadata", "get", "secret/app/db"], &via_leader);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    let masked = mask_times(&out);
    assert!(
        masked.starts_with("==== Metadata Path ====\nsecret/metadata/app/db\n\n========== Metadata ==========\n"),
        "{masked}"
    );
    assert!(masked.contains("\ncurrent_version         2\ncustom_metadata         map[team:ops]\n"), "{masked}");
    assert!(masked.contains("\nmax_versions            5\n"), "{masked}");
    let version = |n: &str, destroyed: &str| {
        format!(
            "\n====== Version {n} ======\n{}",
            table(&[("created_time", "<time>"), ("deletion_time", "n/a"), ("destroyed", destroyed)])
        )
    };
    assert!(masked.contains(&version("1", "true")), "{masked}");
    assert!(masked.ends_with(&version("2", "false")), "{masked}");

    let (code, out, _) = cluster.run_cli(&["kv", "list", "secret/"], &via_follower);
    assert_eq!((code, out.as_str()), (0, "Keys\n----\napp/\n"));
    let (code, out, _) = cluster.run_cli(&["kv", "list", "secret/app"], &via_follower);
    assert_eq!((code, out.as_str()), (0, "Keys\n----\ndb\n"));

    let (code, out, _) = cluster.run_cli(&["kv", "metadata", "delete", "secret/app/db"], &via_follower);
    assert_eq!((code, out.as_str()), (0, "Success! Data deleted (if it existed) at: secret/metadata/app/db\n"));
    let (code, out, err) = cluster.run_cli(&["kv", "get", "secret/app/db"], &via_leader);
    assert_eq!((code, out.as_str(), err.as_str()), (2, "", "No value found at secret/data/app/db\n"));

    // kv-v1 next to it is unchanged.
    let (code, out, _) = cluster.run_cli(&["kv", "put", "kv/app/db", "user=alice"], &via_follower);
    assert_eq!((code, out.as_str()), (0, "Success! Data written to: kv/app/db\n"));
}
