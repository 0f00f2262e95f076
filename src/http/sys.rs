//! `sys/*` endpoints: health, leader, init, Raft membership, mounts; and the token self-lookup.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::forward::no_content;
use super::request::{optional_string, parse_bool, required_string, Operation, VaultRequest};
use super::{envelope, Api};
use crate::engines::tokens::{self, TokenEntry};
use crate::engines::{cluster, mounts, Command, Error, MountEntry, Result};
use crate::raft::{NodeInfo, Role};

/// Vault-compatible version string reported by health.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `GET|HEAD /v1/sys/health`: status code by role, with Vault's query overrides.
pub fn health(api: &Api, req: &VaultRequest) -> std::result::Result<Response, ApiError> {
    let code = |name: &str, default: u16| -> std::result::Result<u16, ApiError> {
        match req.query_param(name) {
            None => Ok(default),
            Some(v) => v.parse::<u16>().ok().filter(|c| (100..=599).contains(c)).ok_or_else(|| {
                ApiError::bad_request(format!("invalid value for {name:?}: {v:?} is not a status code"))
            }),
        }
    };
    let flag = |name: &str| req.query_param(name).map(|v| parse_bool(name, v)).transpose().map(|b| b.unwrap_or(false));
    let standby_ok = flag("standbyok")?;
    let perf_standby_ok = flag("perfstandbyok")?;
    let active_code = code("activecode", 200)?;
    let standby_code = code("standbycode", 429)?;
    let perf_standby_code = code("performancestandbycode", 473)?;
    let uninit_code = code("uninitcode", 501)?;
    let sealed_code = code("sealedcode", 503)?;

    let node = api.node();
    let initialized = node.is_initialized();
    let role = node.role();
    let leader_known = node.leader().is_some();
    let standby = role != Role::Leader;
    let perf_standby = standby && api.performance_standby;
    let status = if !initialized {
        uninit_code
    } else if !leader_known {
        // No active node: nothing can be written, as when Vault is sealed.
        sealed_code
    } else if perf_standby {
        if perf_standby_ok {
            active_code
        } else {
            perf_standby_code
        }
    } else if standby {
        if standby_ok {
            active_code
        } else {
            standby_code
        }
    } else {
        active_code
    };
    let record = cluster::record(&api.engines.state()).ok().flatten();
    let body = json!({
        "initialized": initialized,
        "sealed": false,
        "standby": standby,
        "performance_standby": perf_standby,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": chrono::Utc::now().timestamp(),
        "version": VERSION,
        "enterprise": false,
        "cluster_name": record.as_ref().map(|r| r.cluster_name.clone()).unwrap_or_default(),
        "cluster_id": record.as_ref().map(|r| r.cluster_id.clone()).unwrap_or_default(),
        "echo_duration_ms": 0,
        "clock_skew_ms": 0,
    });
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    Ok((status, Json(body)).into_response())
}

/// `GET /v1/sys/leader`.
pub async fn leader(api: &Api) -> std::result::Result<Response, ApiError> {
    let node = api.node();
    let leader = node.leader();
    let is_self = leader.as_ref().is_some_and(|(id, _)| *id == node.id);
    let (leader_address, leader_cluster_address) =
        leader.map(|(_, info)| (info.api_addr, info.cluster_addr)).unwrap_or_default();
    Ok(Json(json!({
        "ha_enabled": true,
        "is_self": is_self,
        "active_time": "0001-01-01T00:00:00Z",
        "leader_address": leader_address,
        "leader_cluster_address": leader_cluster_address,
        "performance_standby": !is_self && api.performance_standby && node.is_initialized(),
        "performance_standby_last_remote_wal": 0,
        "raft_committed_index": node.committed_index().await,
        "raft_applied_index": node.applied_index(),
    }))
    .into_response())
}

/// `GET /v1/sys/init`.
pub fn init_status(api: &Api) -> std::result::Result<Response, ApiError> {
    Ok(Json(json!({ "initialized": api.node().is_initialized() })).into_response())
}

/// `PUT /v1/sys/init`: initializes a brand-new cluster on this node; returns the root token once.
pub async fn init(api: &Api, req: &VaultRequest) -> std::result::Result<Response, ApiError> {
    // Vault's unseal-key parameters are accepted and ignored: Vigil has no seal (yet), so there are no keys.
    req.json_body()?;
    let _guard = api.membership_lock.lock().await;
    let root_token = cluster::initialize(&api.engines, None).await?;
    tracing::info!("cluster initialized on this node");
    Ok(Json(json!({ "keys": [], "keys_base64": [], "root_token": root_token })).into_response())
}

/// `POST /v1/sys/storage/raft/join` on a node not yet in a cluster: joins through `leader_api_addr`.
pub async fn join(api: &Api, req: &VaultRequest) -> std::result::Result<Response, ApiError> {
    let body = req.json_body()?;
    let leader_api_addr = required_string(&body, "leader_api_addr")?;
    let token = req.token().ok_or_else(ApiError::permission_denied)?;
    join_cluster(api, leader_api_addr.trim_end_matches('/'), token).await?;
    Ok(Json(json!({ "joined": true })).into_response())
}

/// Joins the cluster that `leader_api_addr` belongs to, authenticating with `token`.
///
/// The leader (reached directly or through a follower) checks the token, adds this node as a learner and returns
/// the cluster secret, which this node stores before the leader's replication can reach it.
pub async fn join_cluster(api: &Api, leader_api_addr: &str, token: &str) -> std::result::Result<(), ApiError> {
    let _guard = api.membership_lock.lock().await;
    let node = api.node();
    if node.is_initialized() {
        return Err(ApiError::bad_request("this node is already part of a cluster"));
    }
    if leader_api_addr == node.info.api_addr {
        return Err(ApiError::bad_request("a node cannot join itself: give another member's api address"));
    }
    let body = json!({
        "node_id": node.info.name,
        "api_addr": node.info.api_addr,
        "cluster_addr": node.info.cluster_addr,
    });
    let request = hyper::Request::post(format!("{leader_api_addr}/v1/sys/storage/raft/bootstrap/join"))
        .header("x-vault-token", token)
        .header("content-type", "application/json")
        .body(Full::new(axum::body::Bytes::from(body.to_string())))
        .map_err(|e| ApiError::bad_request(format!("invalid leader_api_addr {leader_api_addr:?}: {e}")))?;
    let exchange = async {
        let response = api
            .forwarder
            .client()
            .request(request)
            .await
            .map_err(|e| ApiError::unavailable(format!("cannot reach the leader at {leader_api_addr}: {e}")))?;
        let status = response.status();
        let bytes = response.into_body().collect().await.map_err(|e| ApiError::unavailable(e.to_string()))?;
        Ok::<_, ApiError>((status, bytes.to_bytes()))
    };
    let (status, bytes) = tokio::time::timeout(std::time::Duration::from_secs(30), exchange)
        .await
        .map_err(|_| ApiError::unavailable(format!("the leader at {leader_api_addr} did not answer within 30s")))??;
    let reply: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        let errors = reply["errors"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e.as_str().map(str::to_string)).collect())
            .unwrap_or_else(|| vec![format!("the leader answered {status}")]);
        return Err(ApiError { status, errors });
    }
    let Some(secret) = reply["data"]["cluster_secret"].as_str() else {
        return Err(ApiError::unavailable("the leader's join answer has no cluster secret"));
    };
    node.set_secret(secret.to_string()).await.map_err(|e| ApiError::from(Error::from(e)))?;
    tracing::info!(leader = leader_api_addr, "joined the cluster; waiting for replication");
    Ok(())
}

/// Authenticated `sys/*` and `auth/*` endpoints (the token is already authorized for the path).
pub async fn handle(api: &Api, req: &VaultRequest, token: &TokenEntry) -> Result<Response> {
    let path = req.path.trim_end_matches('/');
    if let Some(rest) = path.strip_prefix("auth/token/") {
        return super::token::handle(api, req, token, rest).await;
    }
    if let Some(response) = policies::handle(api, req, path).await? {
        return Ok(response);
    }
    match (path, req.op) {
        ("sys/capabilities-self", Operation::Update) => capabilities(api, req, token).await,
        (p, Operation::Read) if p.starts_with("sys/internal/ui/mounts/") => {
            mount_for_path(api, token, &p["sys/internal/ui/mounts/".len()..])
        }
        ("sys/capabilities", Operation::Update) => {
            let body = req.json_body().map_err(api_to_engine)?;
            let id = required_string(&body, "token").map_err(api_to_engine)?;
            let subject =
                tokens::lookup(&api.engines.state(), &id)?.ok_or_else(|| Error::BadRequest("bad token".into()))?;
            capabilities(api, req, &subject).await
        }
        ("sys/capabilities-accessor", Operation::Update) => {
            let body = req.json_body().map_err(api_to_engine)?;
            let accessor = required_string(&body, "accessor").map_err(api_to_engine)?;
            let subject = tokens::lookup_accessor(&api.engines.state(), &accessor)?
                .ok_or_else(|| Error::BadRequest("bad accessor".into()))?;
            capabilities(api, req, &subject).await
        }
        ("sys/mounts", Operation::Read) => list_mounts(api),
        (p, op) if p.starts_with("sys/mounts/") && p.ends_with("/tune") => {
            let mount_path = mounts::normalize_path(&p["sys/mounts/".len()..p.len() - "/tune".len()])?;
            match op {
                Operation::Read => read_tune(api, &mount_path),
                Operation::Update => tune_mount(api, req, &mount_path).await,
                _ => Err(unsupported()),
            }
        }
        (p, op) if p.starts_with("sys/mounts/") => {
            let mount_path = mounts::normalize_path(&p["sys/mounts/".len()..])?;
            match op {
                Operation::Read => read_mount(api, &mount_path),
                Operation::Update => create_mount(api, req, &mount_path).await,
                Operation::Delete => {
                    let executed = api.engines.execute(&Command::Unmount { path: mount_path }).await?;
                    Ok(no_content(executed.log_index))
                }
                _ => Err(unsupported()),
            }
        }
        ("sys/storage/raft/configuration", Operation::Read) => Ok(raft_configuration(api)),
        ("sys/storage/raft/remove-peer", Operation::Update) => {
            let body = req.json_body().map_err(api_to_engine)?;
            let server_id = required_string(&body, "server_id").map_err(api_to_engine)?;
            api.node().remove_member(&server_id).await?;
            tracing::info!(server_id, "removed peer");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        ("sys/storage/raft/bootstrap/join", Operation::Update) => bootstrap_join(api, req).await,
        _ => Err(Error::NoRoute(req.path.clone())),
    }
}

fn unsupported() -> Error {
    Error::UnsupportedOperation("unsupported operation".into())
}

fn api_to_engine(e: ApiError) -> Error {
    Error::BadRequest(e.errors.join("; "))
}

/// Leader side of a join: checks the new member's addresses, adds it as a learner, hands over the secret.
async fn bootstrap_join(api: &Api, req: &VaultRequest) -> Result<Response> {
    let body = req.json_body().map_err(api_to_engine)?;
    let field = |name: &str| required_string(&body, name).map_err(api_to_engine);
    let info = NodeInfo { name: field("node_id")?, api_addr: field("api_addr")?, cluster_addr: field("cluster_addr")? };
    for addr in [&info.api_addr, &info.cluster_addr] {
        if !(addr.starts_with("http://") || addr.starts_with("https://")) {
            return Err(Error::BadRequest(format!("invalid address {addr:?}: expected http://host:port")));
        }
    }
    let secret =
        api.node().secret().get().ok_or_else(|| Error::Unavailable("this node has no cluster secret".into()))?;
    api.node().add_learner(info.clone()).await?;
    tracing::info!(node = %info, "added learner");
    Ok(Json(envelope(json!({ "cluster_secret": secret }), 0, "")).into_response())
}

fn raft_configuration(api: &Api) -> Response {
    let node = api.node();
    let leader = node.leader().map(|(id, _)| id);
    let servers: Vec<Value> = node
        .members()
        .into_iter()
        .map(|m| {
            let address = m.info.cluster_addr.split_once("://").map(|(_, a)| a).unwrap_or(&m.info.cluster_addr);
            json!({
                "node_id": m.info.name,
                "address": address,
                "leader": Some(m.id) == leader,
                "voter": m.voter,
                "protocol_version": "3",
            })
        })
        .collect();
    let index = node.metrics().membership_config.log_id().map(|l| l.index).unwrap_or(0);
    Json(envelope(json!({ "config": { "index": index, "servers": servers } }), 0, "system")).into_response()
}

fn mount_json(entry: &MountEntry) -> Value {
    json!({
        "accessor": entry.accessor,
        "config": { "default_lease_ttl": 0, "force_no_cache": false, "max_lease_ttl": 0 },
        "description": entry.description,
        "external_entropy_access": false,
        "local": false,
        "options": if entry.options.is_empty() { Value::Null } else { json!(entry.options) },
        "plugin_version": "",
        "running_plugin_version": format!("v{VERSION}+builtin.vigil"),
        "running_sha256": "",
        "seal_wrap": false,
        "type": entry.engine_type,
        "uuid": entry.uuid,
    })
}

fn list_mounts(api: &Api) -> Result<Response> {
    let state = api.engines.state();
    let mut data = Map::new();
    for entry in mounts::list(&state)?.iter() {
        data.insert(entry.path.clone(), mount_json(entry));
    }
    let cluster_id = cluster::record(&state)?.map(|r| r.cluster_id).unwrap_or_default();
    data.insert(
        "sys/".into(),
        json!({
            "accessor": format!("system_{}", cluster_id.get(..8).unwrap_or("00000000")),
            "config": { "default_lease_ttl": 0, "force_no_cache": false, "max_lease_ttl": 0 },
            "description": "system endpoints used for control, policy and debugging",
            "external_entropy_access": false,
            "local": false,
            "options": null,
            "plugin_version": "",
            "running_plugin_version": format!("v{VERSION}+builtin.vigil"),
            "running_sha256": "",
            "seal_wrap": true,
            "type": "system",
            "uuid": cluster_id,
        }),
    );
    // Vault answers with the mounts both at the top level (legacy) and under `data`.
    let mut body = envelope(Value::Object(data.clone()), 0, "system");
    if let Value::Object(top) = &mut body {
        for (k, v) in data {
            top.insert(k, v);
        }
    }
    Ok(Json(body).into_response())
}

fn read_tune(api: &Api, path: &str) -> Result<Response> {
    let entry = mounts::get(&api.engines.state(), path)?
        .ok_or_else(|| Error::BadRequest(format!("cannot fetch sysview for path \"{path}\"")))?;
    let data = json!({
        "default_lease_ttl": 2_764_800,
        "max_lease_ttl": 2_764_800,
        "force_no_cache": false,
        "description": entry.description,
        "options": entry.options,
    });
    let mut body = envelope(data.clone(), 0, "system");
    if let (Value::Object(top), Value::Object(data)) = (&mut body, data) {
        top.extend(data);
    }
    Ok(Json(body).into_response())
}

/// `POST sys/mounts/<path>/tune`: description and options. Changing a kv mount's version would need a data
/// migration (Vault's v1 → v2 upgrade), which Vigil does not do: it is refused.
async fn tune_mount(api: &Api, req: &VaultRequest, path: &str) -> Result<Response> {
    let body = req.json_body().map_err(api_to_engine)?;
    let mut entry = mounts::get(&api.engines.state(), path)?
        .ok_or_else(|| Error::BadRequest(format!("cannot tune \"{path}\": no mount at that path")))?;
    if let Some(description) = optional_string(&body, "description").map_err(api_to_engine)? {
        entry.description = description;
    }
    for (k, v) in parse_options(&body)? {
        if k == "version" && entry.options.get("version") != Some(&v) {
            return Err(Error::BadRequest(format!(
                "changing the kv version of {path} (to {v:?}) is not supported: mount a new kv-v2 engine instead"
            )));
        }
        entry.options.insert(k, v);
    }
    let executed = api.engines.execute(&Command::MountTune(entry)).await?;
    Ok(no_content(executed.log_index))
}

/// The `options` object of a mount request: string (or number) values.
fn parse_options(body: &Map<String, Value>) -> Result<BTreeMap<String, String>> {
    let mut options = BTreeMap::new();
    match body.get("options") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                let value = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return Err(Error::BadRequest(format!("option {k:?} must be a string"))),
                };
                options.insert(k.clone(), value);
            }
        }
        Some(_) => return Err(Error::BadRequest("field \"options\" must be an object".into())),
    }
    Ok(options)
}

/// `GET sys/internal/ui/mounts/<path>`: the mount serving `path`, for a token with some access under that mount
/// (clients such as `vigil kv` use it to learn a mount's kv version without reading the mount table).
fn mount_for_path(api: &Api, token: &TokenEntry, path: &str) -> Result<Response> {
    let state = api.engines.state();
    let (entry, _) = mounts::resolve(&state, path.trim_start_matches('/'))?
        .ok_or_else(|| Error::BadRequest(format!("no mount serves path {path:?}")))?;
    if !super::acl::acl(api, token)?.has_access_under(&entry.path) {
        return Err(Error::PermissionDenied);
    }
    let mut data = mount_json(&entry);
    data["path"] = json!(entry.path);
    Ok(Json(envelope(data, 0, "system")).into_response())
}

fn read_mount(api: &Api, path: &str) -> Result<Response> {
    let entry = mounts::get(&api.engines.state(), path)?
        .ok_or_else(|| Error::BadRequest(format!("No secret engine mount at {path}")))?;
    Ok(Json(envelope(mount_json(&entry), 0, "system")).into_response())
}

async fn create_mount(api: &Api, req: &VaultRequest, path: &str) -> Result<Response> {
    let body = req.json_body().map_err(api_to_engine)?;
    let engine_type = required_string(&body, "type").map_err(api_to_engine)?;
    let description = optional_string(&body, "description").map_err(api_to_engine)?.unwrap_or_default();
    let mut options = parse_options(&body)?;
    if let Some(config) = body.get("config") {
        if !(config.is_object() || config.is_null()) {
            return Err(Error::BadRequest("field \"config\" must be an object".into()));
        }
    }
    let version = match engine_type.as_str() {
        "kv" => options.get("version").map(String::as_str).unwrap_or("1").to_string(),
        "kv-v2" => "2".to_string(),
        other => return Err(Error::BadRequest(format!("plugin not found in the catalog: {other}"))),
    };
    let version = match version.as_str() {
        "" | "1" => "1",
        "2" => "2",
        other => return Err(Error::BadRequest(format!("invalid kv version {other:?}: expected \"1\" or \"2\""))),
    };
    options.insert("version".into(), version.into());
    let entry = MountEntry::new(path, "kv", &description, options);
    let executed = api.engines.execute(&Command::Mount(entry)).await?;
    Ok(no_content(executed.log_index))
}

/// `sys/capabilities*`: `{"paths": [...]}` (or a single `"path"`) → the capabilities `subject` has on each.
async fn capabilities(api: &Api, req: &VaultRequest, subject: &TokenEntry) -> Result<Response> {
    let body = req.json_body().map_err(api_to_engine)?;
    let paths: Vec<String> = match (body.get("paths"), body.get("path")) {
        (Some(Value::Array(items)), _) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        (Some(Value::String(s)), _) | (None, Some(Value::String(s))) => s.split(',').map(str::to_string).collect(),
        _ => return Err(Error::BadRequest("missing paths".into())),
    };
    if paths.is_empty() {
        return Err(Error::BadRequest("missing paths".into()));
    }
    let mut data = Map::new();
    let mut all: Vec<String> = Vec::new();
    for path in &paths {
        let names = super::acl::capability_names(api, subject, path.trim())?;
        all.extend(names.iter().cloned());
        data.insert(path.trim().to_string(), json!(names));
    }
    all.sort();
    all.dedup();
    data.insert("capabilities".into(), json!(all));
    // Vault answers with the map both at the top level and under `data`.
    let mut answer = envelope(Value::Object(data.clone()), 0, "system");
    if let Value::Object(top) = &mut answer {
        top.extend(data);
    }
    Ok(Json(answer).into_response())
}

/// `sys/policies/acl/*` and the older `sys/policy/*`.
mod policies {
    use super::*;
    use crate::engines::{policy, policy_store};

    pub(super) async fn handle(api: &Api, req: &VaultRequest, path: &str) -> Result<Option<Response>> {
        let (name, legacy) = if let Some(rest) = path.strip_prefix("sys/policies/acl") {
            (rest.trim_start_matches('/'), false)
        } else if let Some(rest) = path.strip_prefix("sys/policy") {
            (rest.trim_start_matches('/'), true)
        } else {
            return Ok(None);
        };
        let state = api.engines.state();
        let response = match (name.is_empty(), req.op) {
            (true, Operation::List) | (true, Operation::Read) => {
                let names = policy_store::list(&state)?;
                let mut body = envelope(json!({ "keys": names }), 0, "system");
                if legacy {
                    body["data"]["policies"] = json!(names);
                    body["policies"] = json!(names);
                    body["keys"] = json!(names);
                }
                Json(body).into_response()
            }
            (false, Operation::Read) => {
                let name = policy::validate_name(name).map_err(Error::BadRequest)?;
                let text = match name.as_str() {
                    "root" => String::new(),
                    _ => policy_store::get(&state, &name)?.ok_or(Error::NotFound)?,
                };
                let data = if legacy {
                    json!({ "name": name, "rules": text })
                } else {
                    json!({ "name": name, "policy": text })
                };
                let mut body = envelope(data.clone(), 0, "system");
                if legacy {
                    body["name"] = data["name"].clone();
                    body["rules"] = data["rules"].clone();
                }
                Json(body).into_response()
            }
            (false, Operation::Update) => {
                let name = policy::validate_name(name).map_err(Error::BadRequest)?;
                let body = req.json_body().map_err(api_to_engine)?;
                let text = match (body.get("policy"), body.get("rules")) {
                    (Some(Value::String(t)), _) | (None, Some(Value::String(t))) => t.clone(),
                    _ => return Err(Error::BadRequest("'policy' parameter not supplied or empty".into())),
                };
                if name == "root" {
                    return Err(Error::BadRequest("cannot update root policy".into()));
                }
                policy::parse(&name, &text).map_err(|e| Error::BadRequest(e.to_string()))?;
                let executed = api.engines.execute(&Command::PolicyWrite { name, text }).await?;
                no_content(executed.log_index)
            }
            (false, Operation::Delete) => {
                let name = policy::validate_name(name).map_err(Error::BadRequest)?;
                let executed = api.engines.execute(&Command::PolicyDelete { name }).await?;
                no_content(executed.log_index)
            }
            _ => return Err(unsupported()),
        };
        Ok(Some(response))
    }
}
