//! Vault's HTTP API.
//!
//! Every request under `/v1/` goes through [`Api::dispatch`], in this order:
//!
//! 1. **Open endpoints** — `sys/health`, `sys/leader`, `GET sys/init` — answer without a token. So do the two that
//!    can only run on a node that is not yet in a cluster: `PUT sys/init` (no token can exist yet, as in Vault) and
//!    `POST sys/storage/raft/join` (its token is checked by the leader it joins through).
//! 2. **Authentication** — the token (`X-Vault-Token` or `Authorization: Bearer`) is looked up, as a hash, in this
//!    node's applied state before anything else happens. Unknown on the leader: 403. Unknown on a follower: the
//!    token may be newer than this node's state, so the request is forwarded and the leader decides.
//! 3. **Authorization** — the token's policies must grant the capability the request needs on its path
//!    ([`acl`]); this too happens before forwarding, so a denied request never leaves the node.
//! 4. **Routing** — writes on a follower, and every request on a plain standby, are forwarded to the leader
//!    ([`forward`]); performance standbys answer reads from their own state.
//! 5. **Handling** — `sys/*` endpoints ([`sys`]) or the secrets engine mounted at the path ([`logical`]).
//!
//! Errors are mapped to Vault's status codes and `{"errors":[...]}` bodies in one place, [`error`].

pub mod acl;
pub mod error;
pub mod events;
pub mod forward;
pub mod kv2;
pub mod logical;
pub mod request;
pub mod sys;
pub mod token;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use serde_json::{json, Value};

use crate::engines::tokens::{self, TokenEntry};
use crate::engines::Engines;
use crate::raft::RaftNode;
use error::ApiError;
use forward::{Forwarded, Forwarder};
use request::{Operation, VaultRequest};

/// Largest accepted request body (Vault's default `max_request_size`).
pub const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;

/// Everything a request handler needs.
pub struct Api {
    /// The engines (and through them the Raft node).
    pub engines: Engines,
    /// True unless the config says `disable_performance_standby`: followers then answer reads themselves.
    pub performance_standby: bool,
    /// Proxies to the leader.
    pub forwarder: Forwarder,
    /// Serializes `sys/init` and `sys/storage/raft/join` on this node.
    pub membership_lock: tokio::sync::Mutex<()>,
}

impl Api {
    /// An API over `engines`.
    pub fn new(engines: Engines, performance_standby: bool) -> Arc<Self> {
        Arc::new(Api {
            engines,
            performance_standby,
            forwarder: Forwarder::default(),
            membership_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The Raft node.
    pub fn node(&self) -> &Arc<RaftNode> {
        self.engines.node()
    }

    /// Handles one request; see the module docs for the order of checks.
    pub async fn dispatch(&self, req: VaultRequest) -> Response {
        if let Some(response) = self.open_endpoint(&req).await {
            return response;
        }
        if !self.node().is_initialized() {
            return ApiError::unavailable(
                "this node is not initialized: initialize a cluster with PUT /v1/sys/init \
                 or join one with POST /v1/sys/storage/raft/join",
            )
            .into_response();
        }
        let leader = self.node().is_leader();
        let token = match self.lookup_token(&req) {
            Ok(Some(token)) => token,
            Ok(None) if !leader && !req.was_forwarded() && req.token().is_some() => return self.forward(&req).await,
            Ok(None) => return ApiError::permission_denied().into_response(),
            Err(e) => return ApiError::from(e).into_response(),
        };
        if let Err(e) = acl::authorize(self, &req, &token) {
            return ApiError::from(e).into_response();
        }
        // A limited-use token is counted where writes happen: on the active node.
        if !leader && (req.op.is_write() || !self.performance_standby || token.num_uses > 0) {
            return self.forward(&req).await;
        }
        match self.serve_locally(&req, &token).await {
            Ok(response) => response,
            // Leadership moved between the check above and the write.
            Err(crate::engines::Error::NotLeader) => self.forward(&req).await,
            Err(e) => ApiError::from(e).into_response(),
        }
    }

    async fn open_endpoint(&self, req: &VaultRequest) -> Option<Response> {
        let response = match (req.path.trim_end_matches('/'), req.op) {
            ("sys/health", Operation::Read) => sys::health(self, req),
            ("sys/leader", Operation::Read) => sys::leader(self).await,
            ("sys/init", Operation::Read) => sys::init_status(self),
            ("sys/init", Operation::Update) => sys::init(self, req).await,
            ("sys/storage/raft/join", Operation::Update) => sys::join(self, req).await,
            _ => return None,
        };
        Some(response.unwrap_or_else(IntoResponse::into_response))
    }

    async fn handle(&self, req: &VaultRequest, token: &TokenEntry) -> crate::engines::Result<Response> {
        if req.path == "sys" || req.path.starts_with("sys/") || req.path.starts_with("auth/") {
            return sys::handle(self, req, token).await;
        }
        logical::handle(self, req).await
    }

    async fn forward(&self, req: &VaultRequest) -> Response {
        let wait_for_index = self.performance_standby;
        match self.forwarder.forward(self.node(), req, wait_for_index).await {
            Forwarded::Response(response) => response,
            // Became the leader while waiting: handle it here, once.
            Forwarded::HandleLocally => {
                let result = match self.lookup_token(req) {
                    Ok(Some(token)) => self.serve_locally(req, &token).await,
                    Ok(None) => Err(crate::engines::Error::PermissionDenied),
                    Err(e) => Err(e),
                };
                result.unwrap_or_else(|e| ApiError::from(e).into_response())
            }
        }
    }

    /// Handles an authorized request on this node, first consuming one use of a limited-use token (as Vault does,
    /// before the request runs; only the active node gets here with such a token).
    async fn serve_locally(&self, req: &VaultRequest, token: &TokenEntry) -> crate::engines::Result<Response> {
        use crate::engines::{ApplyError, Command, Error};
        if token.num_uses > 0 {
            let command = Command::Token(tokens::TokenCommand::Use { id_hash: token.id_hash.clone() });
            match self.engines.execute(&command).await {
                Err(Error::Apply(ApplyError::NotFound)) => return Err(Error::PermissionDenied),
                Err(e) => return Err(e),
                Ok(_) => {}
            }
        }
        self.handle(req, token).await
    }

    /// The request's token entry from this node's applied state; `None` if absent or unknown.
    fn lookup_token(&self, req: &VaultRequest) -> crate::engines::Result<Option<TokenEntry>> {
        match req.token() {
            Some(id) => tokens::lookup(&self.engines.state(), id),
            None => Ok(None),
        }
    }
}

/// The API router: everything under `/v1/` goes to [`Api::dispatch`].
pub fn router(api: Arc<Api>) -> Router {
    Router::new().route("/v1/{*path}", any(handle)).fallback(not_found).with_state(api)
}

async fn handle(State(api): State<Arc<Api>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // Subscriptions are WebSocket upgrades, not request/response exchanges: they take their own path.
    if events::is_subscribe_path(parts.uri.path().trim_start_matches("/v1/")) {
        return events::subscribe(api, parts).await;
    }
    let body: Bytes = match axum::body::to_bytes(body, MAX_REQUEST_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than {MAX_REQUEST_BYTES} bytes or unreadable"),
            )
            .into_response()
        }
    };
    let head = parts.method == axum::http::Method::HEAD;
    let response = match VaultRequest::parse(parts, body) {
        Ok(req) => api.dispatch(req).await,
        Err(e) => e.into_response(),
    };
    if head {
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, axum::body::Body::empty());
    }
    response
}

async fn not_found(request: Request) -> Response {
    ApiError::new(StatusCode::NOT_FOUND, format!("no such path {:?}: the API lives under /v1/", request.uri().path()))
        .into_response()
}

/// Vault's standard response envelope around `data`.
pub fn envelope(data: Value, lease_duration: u64, mount_type: &str) -> Value {
    json!({
        "request_id": uuid::Uuid::new_v4().to_string(),
        "lease_id": "",
        "renewable": false,
        "lease_duration": lease_duration,
        "data": data,
        "wrap_info": null,
        "warnings": null,
        "auth": null,
        "mount_type": mount_type,
    })
}
