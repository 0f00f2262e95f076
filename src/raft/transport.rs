//! The server side of the cluster transport, listening on `cluster_address`.
//!
//! Three routes, `POST /raft/{append,vote,snapshot}`, each taking a bincode request and answering 200 with a bincode
//! `Result` from the local Raft. Before anything is decoded the request must carry the cluster secret: without it
//! the answer is 401 (or 503 while this node has no secret yet because it has not joined a cluster). A body that
//! does not decode is 400 and never reaches Raft. The chunks of a snapshot are checked against its checksum as they
//! pass ([`SnapshotCheck`]); the last chunk of a damaged one is refused with 422 and never reaches Raft, which would
//! otherwise stop this node on the failed install, and the leader keeps trying until it has an intact snapshot.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::{de::DeserializeOwned, Serialize};

use super::network::{ClusterSecret, SECRET_HEADER};
use super::snapshot_data::{SnapshotCheck, Verdict};
use super::{codec, Raft, TypeConfig};

/// Largest accepted RPC body. Append batches are capped well below it (see `RaftSettings`).
const MAX_RPC_BODY: usize = 64 * 1024 * 1024;

#[derive(Clone)]
struct TransportState {
    raft: Raft,
    secret: ClusterSecret,
    /// The snapshot being received, checked as its chunks pass.
    snapshot_check: Arc<Mutex<SnapshotCheck>>,
}

/// The cluster-port router.
pub fn router(raft: Raft, secret: ClusterSecret) -> Router {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .layer(DefaultBodyLimit::max(MAX_RPC_BODY))
        .with_state(TransportState { raft, secret, snapshot_check: Arc::default() })
}

/// Checks the secret, decodes the body; the error is the HTTP answer to give instead.
fn admit<T: DeserializeOwned>(
    state: &TransportState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, (StatusCode, String)> {
    if state.secret.get().is_none() {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "this node has not joined a cluster".into()));
    }
    let presented = headers.get(SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    if !state.secret.matches(presented) {
        return Err((StatusCode::UNAUTHORIZED, "missing or wrong cluster secret".into()));
    }
    codec::decode(body).map_err(|e| (StatusCode::BAD_REQUEST, format!("malformed RPC body: {e}")))
}

fn reply<T: Serialize>(value: &T) -> Response {
    match codec::encode(value) {
        Ok(bytes) => (StatusCode::OK, bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn append(State(state): State<TransportState>, headers: HeaderMap, body: Bytes) -> Response {
    match admit(&state, &headers, &body) {
        Ok(rpc) => reply(&state.raft.append_entries(rpc).await),
        Err(rejection) => rejection.into_response(),
    }
}

async fn vote(State(state): State<TransportState>, headers: HeaderMap, body: Bytes) -> Response {
    match admit(&state, &headers, &body) {
        Ok(rpc) => reply(&state.raft.vote(rpc).await),
        Err(rejection) => rejection.into_response(),
    }
}

async fn snapshot(State(state): State<TransportState>, headers: HeaderMap, body: Bytes) -> Response {
    let rpc: openraft::raft::InstallSnapshotRequest<TypeConfig> = match admit(&state, &headers, &body) {
        Ok(rpc) => rpc,
        Err(rejection) => return rejection.into_response(),
    };
    let verdict = {
        let mut check = state.snapshot_check.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        check.chunk(&rpc.meta.snapshot_id, rpc.offset, &rpc.data, rpc.done)
    };
    if let Verdict::Damaged(why) = verdict {
        tracing::error!(snapshot = %rpc.meta.snapshot_id, "refusing a snapshot from the leader: {why}");
        let message = format!("snapshot {} refused: {why}", rpc.meta.snapshot_id);
        return (StatusCode::UNPROCESSABLE_ENTITY, message).into_response();
    }
    reply(&state.raft.install_snapshot(rpc).await)
}
