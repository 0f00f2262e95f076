//! Requests to mounted secrets engines: `/v1/<mount>/<key>`.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::forward::no_content;
use super::request::{Operation, VaultRequest};
use super::{envelope, Api};
use crate::engines::{kv, mounts, Command, Error, Result};

/// kv-v1 secrets carry Vault's default lease duration (768h) though they never expire.
const KV_LEASE_SECONDS: u64 = 2_764_800;

/// Routes a request to the engine mounted at its path.
pub async fn handle(api: &Api, req: &VaultRequest) -> Result<Response> {
    let state = api.engines.state();
    let Some((mount, key)) = mounts::resolve(&state, &req.path)? else {
        return Err(Error::NoRoute(req.path.clone()));
    };
    if mount.engine_type == "kv" && mount.options.get("version").map(String::as_str) == Some("2") {
        return super::kv2::handle(api, req, &mount, &key).await;
    }
    match (mount.engine_type.as_str(), req.op) {
        ("kv", Operation::Read) => {
            let data = kv::read(&state, &mount, &key)?;
            Ok(Json(envelope(Value::Object(data), KV_LEASE_SECONDS, "kv")).into_response())
        }
        ("kv", Operation::List) => {
            let keys = kv::list(&state, &mount, &key)?;
            Ok(Json(envelope(json!({ "keys": keys }), 0, "kv")).into_response())
        }
        ("kv", Operation::Update) => {
            kv::check_key(&key)?;
            let value = kv::parse_write_body(&req.body)?;
            let executed = api.engines.execute(&Command::KvPut { mount: mount.as_ref(), key, value }).await?;
            Ok(no_content(executed.log_index))
        }
        ("kv", Operation::Delete) => {
            kv::check_key(&key)?;
            let executed = api.engines.execute(&Command::KvDelete { mount: mount.as_ref(), key }).await?;
            Ok(no_content(executed.log_index))
        }
        _ => Err(Error::UnsupportedOperation(format!("unsupported operation on {}", req.path))),
    }
}
