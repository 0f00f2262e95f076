//! `vigil operator ...`: cluster initialization and raft membership.

use serde_json::{json, Value};

use super::output::{self, check, json_body, CliError, CmdResult, Format};
use super::Ctx;

/// `vigil operator <command>`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum OperatorCmd {
    /// Initialize the cluster and print its root token.
    Init,
    /// Inspect and change the raft cluster.
    Raft {
        #[command(subcommand)]
        cmd: RaftCmd,
    },
}

/// `vigil operator raft <command>`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum RaftCmd {
    /// List the cluster's raft peers.
    ListPeers,
    /// Join the node at --address to the cluster led by LEADER_API_ADDR.
    Join {
        /// The API address of a node of the cluster to join, e.g. http://127.0.0.1:8200.
        #[arg(value_name = "LEADER_API_ADDR")]
        leader_api_addr: String,
    },
    /// Remove a peer from the raft cluster.
    RemovePeer {
        /// The node id of the peer to remove.
        #[arg(value_name = "SERVER_ID")]
        server_id: String,
    },
}

/// Runs an operator command.
pub async fn run(ctx: &Ctx, cmd: &OperatorCmd) -> CmdResult {
    match cmd {
        OperatorCmd::Init => init(ctx).await,
        OperatorCmd::Raft { cmd } => match cmd {
            RaftCmd::ListPeers => list_peers(ctx).await,
            RaftCmd::Join { leader_api_addr } => join(ctx, leader_api_addr).await,
            RaftCmd::RemovePeer { server_id } => remove_peer(ctx, server_id).await,
        },
    }
}

/// `PUT /v1/sys/init {}` -> `{"keys":[],"keys_base64":[],"root_token":"..."}`.
async fn init(ctx: &Ctx) -> CmdResult {
    let action = "Error initializing";
    let resp = ctx.client.put("/v1/sys/init", &json!({})).await.map_err(|e| CliError::client(action, &e))?;
    let resp = check(action, resp)?;
    let body = json_body(action, &resp)?;
    if ctx.format == Format::Json {
        output::print_json(&body);
        return Ok(());
    }
    let token = body
        .get("root_token")
        .and_then(Value::as_str)
        .ok_or_else(|| CliError::remote(format!("{action}: the response has no root_token")))?;
    output::out(&format!(
        "Initial Root Token: {token}\n\n\
         Vigil initialized. Vigil has no unseal keys: nodes are never sealed, and the cluster serves\n\
         requests as soon as it has a leader. Keep the root token safe."
    ));
    Ok(())
}

/// `GET /v1/sys/storage/raft/configuration` -> `{"data":{"config":{"index":N,"servers":[...]}}}`.
async fn list_peers(ctx: &Ctx) -> CmdResult {
    let action = "Error reading the raft cluster configuration";
    let resp = ctx.client.get("/v1/sys/storage/raft/configuration").await.map_err(|e| CliError::client(action, &e))?;
    let resp = check(action, resp)?;
    let body = json_body(action, &resp)?;
    if ctx.format == Format::Json {
        output::print_json(&body);
        return Ok(());
    }
    let servers = body
        .pointer("/data/config/servers")
        .and_then(Value::as_array)
        .ok_or_else(|| CliError::remote(format!("{action}: the response has no data.config.servers")))?;
    output::out(&peers_table(servers));
    Ok(())
}

/// The `Node / Address / State / Voter` table of `vault operator raft list-peers`.
fn peers_table(servers: &[Value]) -> String {
    let text = |s: &Value, key: &str| s.get(key).map(output::cell).unwrap_or_default();
    let rows: Vec<Vec<String>> = servers
        .iter()
        .map(|s| {
            let leader = s.get("leader").and_then(Value::as_bool).unwrap_or(false);
            vec![
                text(s, "node_id"),
                text(s, "address"),
                if leader { "leader" } else { "follower" }.to_string(),
                s.get("voter").and_then(Value::as_bool).unwrap_or(false).to_string(),
            ]
        })
        .collect();
    output::table(&["Node", "Address", "State", "Voter"], &rows)
}

/// `POST /v1/sys/storage/raft/join {"leader_api_addr": ...}` to the joining node (--address).
async fn join(ctx: &Ctx, leader_api_addr: &str) -> CmdResult {
    let action = "Error joining the node to the raft cluster";
    let resp = ctx
        .client
        .post("/v1/sys/storage/raft/join", &json!({ "leader_api_addr": leader_api_addr }))
        .await
        .map_err(|e| CliError::client(action, &e))?;
    let resp = check(action, resp)?;
    // Vault answers `{"joined": true}`; an empty 2xx body also means success.
    let body = resp.json().unwrap_or_else(|_| json!({ "joined": true }));
    let joined = body.get("joined").and_then(Value::as_bool).unwrap_or(true);
    match ctx.format {
        Format::Json => output::print_json(&body),
        Format::Table => output::out(&output::kv_table(&[("Joined".to_string(), joined.to_string())])),
    }
    if joined {
        Ok(())
    } else {
        Err(CliError::remote(format!("{action}: the node did not join")))
    }
}

/// `POST /v1/sys/storage/raft/remove-peer {"server_id": ...}`.
async fn remove_peer(ctx: &Ctx, server_id: &str) -> CmdResult {
    let action = "Error removing the peer from the raft cluster";
    let resp = ctx
        .client
        .post("/v1/sys/storage/raft/remove-peer", &json!({ "server_id": server_id }))
        .await
        .map_err(|e| CliError::client(action, &e))?;
    check(action, resp)?;
    output::out("Peer removed successfully!");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers() {
        let servers = json!([
            {"node_id": "node1", "address": "127.0.0.1:8201", "leader": true, "voter": true},
            {"node_id": "node2", "address": "127.0.0.1:8211", "leader": false, "voter": true},
        ]);
        assert_eq!(
            peers_table(servers.as_array().unwrap()),
            "Node     Address           State       Voter\n\
             ----     -------           -----       -----\n\
             node1    127.0.0.1:8201    leader      true\n\
             node2    127.0.0.1:8211    follower    true"
        );
    }
}
