//! The client side of the cluster transport: openraft's `RaftNetwork` over HTTP/1.1 with bincode bodies.
//!
//! One pooled hyper client serves every peer, so RPCs reuse persistent keep-alive connections instead of opening a
//! TCP connection per call. Every RPC carries the cluster secret in [`SECRET_HEADER`]; a peer without the same
//! secret rejects it (see [`super::transport`]).
//!
//! Error mapping follows openraft's contract: a peer we cannot connect to is `Unreachable` (openraft backs off),
//! any other transport failure is `Network`, a deadline is `Timeout`, and an error returned by the peer's Raft is a
//! `RemoteError`.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderValue;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::RPCTypes;
use serde::{de::DeserializeOwned, Serialize};

use super::{codec, NodeId, NodeInfo, TypeConfig};

/// The header that carries the cluster secret on every cluster-port request.
pub const SECRET_HEADER: &str = "x-vigil-cluster-secret";
/// The header naming the sending node (its `node_id`) on every cluster-port request: for the receiver's logs and
/// for anything in between that needs to tell the nodes' connections apart (the test suite's partition proxy).
/// Informational only: it grants nothing, the secret does.
pub const FROM_HEADER: &str = "x-vigil-from";

/// The cluster secret as this node knows it: `None` until the node initializes a cluster or joins one.
#[derive(Clone, Default)]
pub struct ClusterSecret(Arc<RwLock<Option<String>>>);

impl ClusterSecret {
    /// A handle holding `secret`.
    pub fn new(secret: Option<String>) -> Self {
        ClusterSecret(Arc::new(RwLock::new(secret)))
    }

    /// The current secret, if any.
    pub fn get(&self) -> Option<String> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the secret.
    pub fn set(&self, secret: String) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(secret);
    }

    /// Compares `candidate` with the secret in constant time; false when there is no secret.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let Some(secret) = self.get() else { return false };
        let secret = secret.as_bytes();
        if secret.len() != candidate.len() {
            return false;
        }
        secret.iter().zip(candidate).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// The pooled HTTP client used for Raft RPCs.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Builds the pooled cluster HTTP client (TCP_NODELAY on: Raft RPCs are small and latency-bound).
pub fn http_client() -> HttpClient {
    client_builder().pool_idle_timeout(Duration::from_secs(90)).build(connector())
}

/// Builds a client that opens a new connection per request.
///
/// Request forwarding uses it: on a pooled connection whose peer was just killed, the request can be written before
/// the reactor has seen the peer's FIN, and the failure then looks like "sent, outcome unknown" although the dead
/// peer never read it. A fresh connection to a dead peer fails at connect, which is unambiguous (nothing arrived),
/// so the caller can wait for the next leader and retry. The cost is one connect per forwarded request.
pub fn unpooled_http_client() -> HttpClient {
    client_builder().pool_max_idle_per_host(0).build(connector())
}

fn client_builder() -> hyper_util::client::legacy::Builder {
    Client::builder(TokioExecutor::new())
}

fn connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_millis(500)));
    connector
}

/// Creates one [`Connection`] per peer for openraft.
#[derive(Clone)]
pub struct NetworkFactory {
    client: HttpClient,
    secret: ClusterSecret,
    /// This node's name, sent in [`FROM_HEADER`].
    from: HeaderValue,
}

impl NetworkFactory {
    /// A factory for node `from` that authenticates with `secret`.
    pub fn new(secret: ClusterSecret, from: &str) -> Self {
        // Node names are validated at config load; a name that is no header value is sent as "?".
        let from = HeaderValue::from_str(from).unwrap_or(HeaderValue::from_static("?"));
        NetworkFactory { client: http_client(), secret, from }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Connection {
        let (client, secret, from) = (self.client.clone(), self.secret.clone(), self.from.clone());
        Connection { client, secret, from, target, node: node.clone() }
    }
}

/// RPCs to one peer.
pub struct Connection {
    client: HttpClient,
    secret: ClusterSecret,
    from: HeaderValue,
    target: NodeId,
    node: NodeInfo,
}

impl Connection {
    /// POSTs `request` to `path` on the peer and decodes its `Result<Resp, E>` reply.
    async fn call<Req, Resp, E>(
        &self,
        kind: RPCTypes,
        path: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let network = |msg: String| RPCError::Network(NetworkError::new(&std::io::Error::other(msg)));
        let body = codec::encode(request).map_err(|e| network(e.to_string()))?;
        let uri = format!("{}{}", self.node.cluster_addr, path);
        let mut builder = hyper::Request::post(&uri)
            .header("content-type", "application/octet-stream")
            .header(FROM_HEADER, self.from.clone());
        if let Some(secret) = self.secret.get() {
            builder = builder.header(SECRET_HEADER, secret);
        }
        let http_request = builder.body(Full::new(Bytes::from(body))).map_err(|e| network(e.to_string()))?;

        let ttl = option.hard_ttl();
        let exchange = async {
            let response = self.client.request(http_request).await.map_err(|e| {
                if e.is_connect() {
                    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(format!("{uri}: {e}"))))
                } else {
                    network(format!("{uri}: {e}"))
                }
            })?;
            let status = response.status();
            let bytes = response.into_body().collect().await.map_err(|e| network(e.to_string()))?.to_bytes();
            Ok::<_, RPCError<NodeId, NodeInfo, E>>((status, bytes))
        };
        let (status, bytes) = match tokio::time::timeout(ttl, exchange).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(RPCError::Timeout(Timeout { action: kind, id: 0, target: self.target, timeout: ttl }));
            }
        };
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            return Err(network(format!("{uri}: HTTP {status}: {}", text.trim())));
        }
        let reply: Result<Resp, E> = codec::decode(&bytes).map_err(|e| network(e.to_string()))?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call(RPCTypes::AppendEntries, "/raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call(RPCTypes::InstallSnapshot, "/raft/snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call(RPCTypes::Vote, "/raft/vote", &rpc, &option).await
    }
}
