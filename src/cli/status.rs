//! `vigil status`: the node's health and its view of the cluster, like `vault status`.
//!
//! Exit codes: 0 when the node is initialized and knows the active node, 2 when it cannot be reached, is not
//! initialized, reports itself sealed or knows of no leader (the table is still printed; the reason goes to
//! stderr).

use serde_json::{Map, Value};

use super::output::{self, CliError, CmdResult, Format};
use super::Ctx;

const HEALTH_PATH: &str = "/v1/sys/health?standbyok=true&perfstandbyok=true";
const LEADER_PATH: &str = "/v1/sys/leader";

/// Runs `vigil status`.
pub async fn run(ctx: &Ctx) -> CmdResult {
    let health = fetch_health(ctx).await?;
    let initialized = health.get("initialized").and_then(Value::as_bool).unwrap_or(false);
    let sealed = health.get("sealed").and_then(Value::as_bool).unwrap_or(false);
    if !initialized || sealed {
        print(ctx.format, &health, None);
        let reason =
            if !initialized { "the node is not initialized (run `vigil operator init`)" } else { "the node is sealed" };
        return Err(CliError::remote(format!("Error: {reason}")));
    }
    let action = "Error checking leader status";
    let resp = ctx.client.get(LEADER_PATH).await.map_err(|e| CliError::client(action, &e))?;
    let resp = output::check(action, resp)?;
    let leader = output::json_body(action, &resp)?;
    print(ctx.format, &health, Some(&leader));
    match leader.get("leader_address") {
        Some(v) if !is_blank(v) => Ok(()),
        // Vigil's health endpoint reports this as 503, the code Vault uses for a sealed node.
        _ => {
            Err(CliError::remote("Error: the node knows of no active node (the cluster has no raft leader right now)"))
        }
    }
}

/// `GET /v1/sys/health`. Vault answers non-2xx codes (501 uninitialized, 503 sealed, ...) with the same JSON
/// body, so any status whose body is a health object is accepted.
async fn fetch_health(ctx: &Ctx) -> Result<Map<String, Value>, CliError> {
    let action = "Error checking seal status";
    let resp = ctx.client.get(HEALTH_PATH).await.map_err(|e| CliError::client(action, &e))?;
    match resp.json() {
        Ok(Value::Object(map)) if map.contains_key("initialized") => Ok(map),
        _ if !resp.is_success() => Err(CliError::api(action, &resp)),
        _ => Err(CliError::remote(format!("{action}: unexpected response body: {}", resp.text()))),
    }
}

fn print(format: Format, health: &Map<String, Value>, leader: Option<&Value>) {
    match format {
        Format::Json => output::print_json(&Value::Object(merged(health, leader))),
        Format::Table => output::out(&output::kv_table(&rows(health, leader))),
    }
}

/// `-format=json`: one flat object of the health and leader fields, plus `storage_type`, like `vault status`.
fn merged(health: &Map<String, Value>, leader: Option<&Value>) -> Map<String, Value> {
    let mut out = health.clone();
    out.insert("storage_type".to_string(), Value::String("raft".to_string()));
    if let Some(Value::Object(leader)) = leader {
        for (k, v) in leader {
            out.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    out
}

/// The Key/Value rows of the table.
fn rows(health: &Map<String, Value>, leader: Option<&Value>) -> Vec<(String, String)> {
    let show = |v: Option<&Value>| v.map(output::cell).unwrap_or_else(|| "n/a".to_string());
    let mut rows = vec![
        ("Initialized".to_string(), show(health.get("initialized"))),
        ("Sealed".to_string(), show(health.get("sealed"))),
        ("Version".to_string(), show(health.get("version"))),
        ("Storage Type".to_string(), "raft".to_string()),
    ];
    for (label, key) in [("Cluster Name", "cluster_name"), ("Cluster ID", "cluster_id")] {
        if let Some(v) = health.get(key).filter(|v| !is_blank(v)) {
            rows.push((label.to_string(), output::cell(v)));
        }
    }
    let Some(leader) = leader else {
        return rows;
    };
    rows.push(("HA Enabled".to_string(), show(leader.get("ha_enabled"))));
    if let Some(v) = leader.get("leader_cluster_address").filter(|v| !is_blank(v)) {
        rows.push(("HA Cluster".to_string(), output::cell(v)));
    }
    let is_self = leader.get("is_self").and_then(Value::as_bool).unwrap_or(false);
    let perf_standby = leader
        .get("performance_standby")
        .or_else(|| health.get("performance_standby"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mode = if is_self {
        "active"
    } else if perf_standby {
        "perf-standby"
    } else {
        "standby"
    };
    rows.push(("HA Mode".to_string(), mode.to_string()));
    let active = match leader.get("leader_address") {
        Some(v) if !is_blank(v) => output::cell(v),
        _ => "<none>".to_string(),
    };
    rows.push(("Active Node Address".to_string(), active));
    for (label, key) in [("Raft Committed Index", "raft_committed_index"), ("Raft Applied Index", "raft_applied_index")]
    {
        if let Some(v) = leader.get(key) {
            rows.push((label.to_string(), output::cell(v)));
        }
    }
    rows
}

fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_rows() {
        let health = json!({"initialized": true, "sealed": false, "standby": true, "performance_standby": false,
            "version": "0.1.0", "cluster_name": "vigil", "cluster_id": "abc"});
        let leader = json!({"ha_enabled": true, "is_self": false, "leader_address": "http://127.0.0.1:8200",
            "leader_cluster_address": "127.0.0.1:8201", "performance_standby": false,
            "raft_committed_index": 7, "raft_applied_index": 6});
        let health = health.as_object().unwrap().clone();
        let table = output::kv_table(&rows(&health, Some(&leader)));
        assert_eq!(
            table,
            "Key                     Value\n\
             ---                     -----\n\
             Initialized             true\n\
             Sealed                  false\n\
             Version                 0.1.0\n\
             Storage Type            raft\n\
             Cluster Name            vigil\n\
             Cluster ID              abc\n\
             HA Enabled              true\n\
             HA Cluster              127.0.0.1:8201\n\
             HA Mode                 standby\n\
             Active Node Address     http://127.0.0.1:8200\n\
             Raft Committed Index    7\n\
             Raft Applied Index      6"
        );
        let m = merged(&health, Some(&leader));
        assert_eq!(m["storage_type"], "raft");
        assert_eq!(m["is_self"], false);
        assert_eq!(m["standby"], true);
    }

    #[test]
    fn active_mode_and_no_leader() {
        let health = json!({"initialized": true, "sealed": false}).as_object().unwrap().clone();
        let leader = json!({"ha_enabled": true, "is_self": true, "leader_address": "http://h:1"});
        let r = rows(&health, Some(&leader));
        assert!(r.contains(&("HA Mode".to_string(), "active".to_string())));
        let leader = json!({"ha_enabled": true, "is_self": false, "leader_address": ""});
        let r = rows(&health, Some(&leader));
        assert!(r.contains(&("Active Node Address".to_string(), "<none>".to_string())));
    }
}
