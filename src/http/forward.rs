//! Forwarding requests to the active node.
//!
//! A follower that receives a write (or, as a plain standby, any request) proxies it unchanged — method, path,
//! query, headers including the token, and body — to the leader's `api_addr`, and relays the answer. It marks the
//! request with [`FORWARDED_HEADER`] so a node that is not the leader never forwards it again.
//!
//! While no leader is known the request waits up to [`LEADER_WAIT`] for one. If the leader it knows cannot be
//! connected to (the request certainly did not arrive), it waits for a *different* leader and tries again within the
//! same bound: that is what makes failover invisible to clients of the survivors. If the connection fails after the
//! request was sent, the outcome is unknown and the client gets 503 saying so. Each forwarded request opens its own
//! connection, so a leader killed while idle shows up as a failed connect, never as that ambiguous case.
//!
//! A forwarded write's answer carries the log index of the write ([`INDEX_HEADER`]); before relaying it, a
//! performance standby waits (briefly) until it has applied that index itself, so a client that writes through a
//! node and then reads from it sees its write.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Full};

use super::error::ApiError;
use super::request::{VaultRequest, FORWARDED_HEADER, INDEX_HEADER};
use crate::raft::network::{unpooled_http_client, HttpClient};
use crate::raft::RaftNode;

/// How long a request waits for a leader to be known before it gets 503.
pub const LEADER_WAIT: Duration = Duration::from_secs(5);
/// How long a forwarded request may take at the leader.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a performance standby waits to apply a forwarded write before answering anyway.
const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(2);

/// What forwarding produced.
pub enum Forwarded {
    /// The leader's answer (or an error answer).
    Response(Response),
    /// This node became the leader while waiting: handle the request locally.
    HandleLocally,
}

/// Proxies requests to the leader, one fresh connection per request (see [`unpooled_http_client`]).
#[derive(Clone)]
pub struct Forwarder {
    client: HttpClient,
}

impl Default for Forwarder {
    fn default() -> Self {
        Forwarder { client: unpooled_http_client() }
    }
}

impl Forwarder {
    /// The shared HTTP client (also used for join calls to the leader).
    pub fn client(&self) -> &HttpClient {
        &self.client
    }

    /// Forwards `req` to the current leader; `wait_for_index` makes the answer wait until this node applied the
    /// write (performance standbys).
    pub async fn forward(&self, node: &RaftNode, req: &VaultRequest, wait_for_index: bool) -> Forwarded {
        if req.was_forwarded() {
            let by = req.headers.get(FORWARDED_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("?");
            return Forwarded::Response(
                ApiError::unavailable(format!(
                    "request forwarded by {by} reached {}, which is not the active node; retry",
                    node.info.name
                ))
                .into_response(),
            );
        }
        let deadline = Instant::now() + LEADER_WAIT;
        let mut unreachable = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let Some((leader_id, leader)) = node.wait_for_leader(unreachable, remaining).await else {
                let why = match unreachable {
                    Some(_) => "the last known active node is unreachable and no new one was elected",
                    None => "no active node is known (the cluster has no leader)",
                };
                return Forwarded::Response(
                    ApiError::unavailable(format!("{why}; waited {}s", LEADER_WAIT.as_secs())).into_response(),
                );
            };
            if leader_id == node.id {
                return Forwarded::HandleLocally;
            }
            match self.send(&leader.api_addr, &node.info.name, req).await {
                Ok(response) => return Forwarded::Response(self.finish(node, response, wait_for_index).await),
                Err(SendError::NotDelivered(e)) => {
                    tracing::debug!(leader = %leader.name, error = %e, "active node unreachable; waiting for another");
                    unreachable = Some(leader_id);
                }
                Err(SendError::Failed(e)) => {
                    return Forwarded::Response(
                        ApiError::unavailable(format!(
                            "forwarding to the active node {} failed after the request was sent; \
                             its outcome is unknown: {e}",
                            leader.name
                        ))
                        .into_response(),
                    );
                }
            }
        }
    }

    async fn send(&self, leader_api: &str, from: &str, req: &VaultRequest) -> Result<Response, SendError> {
        let path = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut builder = hyper::Request::builder().method(req.method.clone()).uri(format!("{leader_api}{path}"));
        for (name, value) in &req.headers {
            if !is_hop_by_hop(name.as_str()) {
                builder = builder.header(name, value);
            }
        }
        builder = builder.header(FORWARDED_HEADER, from);
        let request = builder.body(Full::new(req.body.clone())).map_err(|e| SendError::NotDelivered(e.to_string()))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    SendError::NotDelivered(e.to_string())
                } else {
                    SendError::Failed(e.to_string())
                }
            })?;
            let (parts, body) = response.into_parts();
            let bytes: Bytes = body.collect().await.map_err(|e| SendError::Failed(e.to_string()))?.to_bytes();
            let mut out = Response::builder().status(parts.status);
            for (name, value) in &parts.headers {
                if !is_hop_by_hop(name.as_str()) && name != "content-length" {
                    out = out.header(name, value);
                }
            }
            out.body(Body::from(bytes)).map_err(|e| SendError::Failed(e.to_string()))
        };
        tokio::time::timeout(FORWARD_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err(SendError::Failed(format!("no answer within {}s", FORWARD_TIMEOUT.as_secs()))))
    }

    async fn finish(&self, node: &RaftNode, response: Response, wait_for_index: bool) -> Response {
        if wait_for_index {
            let index = response.headers().get(INDEX_HEADER).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if let Some(index) = index {
                if !node.wait_applied(index, READ_YOUR_WRITES_WAIT).await {
                    tracing::debug!(index, "forwarded write not yet applied locally; answering anyway");
                }
            }
        }
        response
    }
}

enum SendError {
    /// The request certainly did not reach the leader.
    NotDelivered(String),
    /// It may have: the outcome is unknown.
    Failed(String),
}

fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade" | "te" | "trailer" | "host"
    )
}

/// Adds the write's log index to an answer.
pub fn with_index(mut response: Response, index: u64) -> Response {
    if let Ok(value) = HeaderValue::from_str(&index.to_string()) {
        response.headers_mut().insert(INDEX_HEADER, value);
    }
    response
}

/// 204 No Content carrying the write's index.
pub fn no_content(index: u64) -> Response {
    with_index(StatusCode::NO_CONTENT.into_response(), index)
}
