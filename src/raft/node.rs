//! One node's Raft handle: starts openraft on our storage and answers the questions the layers above ask —
//! who leads, what is this node's role, how far has it applied — and performs membership changes.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, Config, RaftMetrics, ServerState, SnapshotPolicy};

use super::log_store::LogStore;
use super::network::{ClusterSecret, NetworkFactory};
use super::proposer::{Applied, ProposeError, Proposer};
use super::snapshot_schedule;
use super::state_machine::StateMachine;
use super::{single_member, CommandApplier, NodeId, NodeInfo, Raft, RaftLayerError, StateReader};
use crate::storage::{Keyspace, Storage};

const CLUSTER_SECRET_KEY: &[u8] = b"cluster_secret";
/// The segment files of the Raft log, under the node's directory.
const LOG_DIR: &str = "raft-log";
/// The kept snapshot's file, under the node's directory.
const SNAPSHOT_DIR: &str = "snapshots";

/// How often the leader looks for caught-up learners to promote to voters.
const PROMOTE_INTERVAL: Duration = Duration::from_millis(200);
/// A learner whose replicated log is within this many entries of the leader's is promoted.
const PROMOTE_MAX_LAG: u64 = 64;

/// Tunables of the Raft layer.
#[derive(Debug, Clone)]
pub struct RaftSettings {
    /// Take a snapshot after this many entries since the last one (and once the log since outweighs the last
    /// snapshot: see `snapshot_schedule`).
    pub snapshot_threshold: u64,
    /// Keep this many entries behind a snapshot before purging them.
    pub trailing_logs: u64,
    /// Leader heartbeat period, milliseconds.
    pub heartbeat_ms: u64,
    /// A follower starts an election after a random timeout in this range without hearing from a leader.
    pub election_timeout_ms: (u64, u64),
}

impl Default for RaftSettings {
    fn default() -> Self {
        // Loopback-and-LAN defaults chosen for sub-second failover. openraft 0.9 makes a voter refuse votes until
        // `election_timeout_max` after it last heard from the leader (its leader lease), and a candidate's first
        // timeout is drawn below that, so the first election round after a crash is refused: failover takes about
        // min + max of this range, plus one commit. 200–350 ms gives ~0.6 s while tolerating 150 ms stalls.
        RaftSettings {
            snapshot_threshold: 8192,
            trailing_logs: 10_000,
            heartbeat_ms: 50,
            election_timeout_ms: (200, 350),
        }
    }
}

/// This node's part in the cluster, from Raft's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The leader: the active node.
    Leader,
    /// A voting follower.
    Follower,
    /// Campaigning for leadership.
    Candidate,
    /// A non-voting member catching up, or a node not yet in any cluster.
    Learner,
    /// Shutting down.
    Shutdown,
}

/// A member of the cluster configuration.
#[derive(Debug, Clone)]
pub struct Member {
    /// Raft node id.
    pub id: NodeId,
    /// Name and addresses.
    pub info: NodeInfo,
    /// True for voters, false for learners.
    pub voter: bool,
}

/// A running Raft node.
pub struct RaftNode {
    /// This node's Raft id.
    pub id: NodeId,
    /// This node's name and addresses.
    pub info: NodeInfo,
    raft: Raft,
    storage: Arc<dyn Storage>,
    proposer: Proposer,
    secret: ClusterSecret,
}

impl RaftNode {
    /// Starts Raft for the node `info` with its log and snapshot files under directory `dir` and everything else
    /// in `storage`, applying commands with `applier`.
    pub async fn start(
        info: NodeInfo,
        dir: &std::path::Path,
        storage: Arc<dyn Storage>,
        applier: Arc<dyn CommandApplier>,
        settings: &RaftSettings,
    ) -> Result<Arc<Self>, RaftLayerError> {
        let id = super::node_id_of(&info.name);
        let config = Config {
            cluster_name: "vigil".into(),
            heartbeat_interval: settings.heartbeat_ms,
            election_timeout_min: settings.election_timeout_ms.0,
            election_timeout_max: settings.election_timeout_ms.1,
            install_snapshot_timeout: 10_000,
            max_payload_entries: 64,
            // Snapshots are triggered by `snapshot_schedule`, which also weighs the state's size.
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: settings.trailing_logs,
            snapshot_max_chunk_size: 1024 * 1024,
            ..Default::default()
        }
        .validate()
        .map_err(|e| RaftLayerError::Raft(format!("invalid raft settings: {e}")))?;

        let secret =
            storage.get(Keyspace::Node, CLUSTER_SECRET_KEY)?.map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        let secret = ClusterSecret::new(secret);
        let state_machine = StateMachine::open(storage.clone(), &dir.join(SNAPSHOT_DIR), applier)?;
        let log_store = LogStore::open(&dir.join(LOG_DIR), storage.clone())?
            .holding_purges_while(state_machine.installs_in_flight());
        let (log_reader, kept_snapshot_bytes) = (log_store.reader(), state_machine.kept_snapshot_bytes());
        let network = NetworkFactory::new(secret.clone(), &info.name);
        let raft = Raft::new(id, Arc::new(config), network, log_store, state_machine)
            .await
            .map_err(|e| RaftLayerError::Raft(e.to_string()))?;
        let proposer = Proposer::start(raft.clone(), info.name.clone());
        let node = Arc::new(RaftNode { id, info, raft, storage, proposer, secret });
        tokio::spawn(promote_learners(Arc::downgrade(&node)));
        tokio::spawn(snapshot_schedule::run(
            Arc::downgrade(&node),
            log_reader,
            kept_snapshot_bytes,
            settings.snapshot_threshold,
        ));
        Ok(node)
    }

    /// The openraft handle (for the cluster transport).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Read access to the applied state.
    pub fn state(&self) -> StateReader {
        StateReader::new(self.storage.clone())
    }

    /// The cluster secret handle.
    pub fn secret(&self) -> &ClusterSecret {
        &self.secret
    }

    /// Stores the cluster secret durably and starts using it.
    pub async fn set_secret(&self, secret: String) -> Result<(), RaftLayerError> {
        let storage = self.storage.clone();
        let bytes = secret.clone().into_bytes();
        tokio::task::spawn_blocking(move || {
            storage.put(Keyspace::Node, CLUSTER_SECRET_KEY, &bytes)?;
            storage.flush()
        })
        .await
        .map_err(|e| RaftLayerError::Raft(e.to_string()))??;
        self.secret.set(secret);
        Ok(())
    }

    /// The latest Raft metrics.
    pub fn metrics(&self) -> RaftMetrics<NodeId, NodeInfo> {
        self.raft.metrics().borrow().clone()
    }

    /// This node's current role.
    pub fn role(&self) -> Role {
        match self.raft.metrics().borrow().state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        }
    }

    /// True if this node is the leader.
    pub fn is_leader(&self) -> bool {
        self.role() == Role::Leader
    }

    /// The leader this node currently knows of, if any.
    pub fn leader(&self) -> Option<(NodeId, NodeInfo)> {
        leader_of(&self.raft.metrics().borrow())
    }

    /// Waits up to `timeout` for a known leader other than `not` (pass the leader that just failed, or `None`).
    pub async fn wait_for_leader(&self, not: Option<NodeId>, timeout: Duration) -> Option<(NodeId, NodeInfo)> {
        let mut rx = self.raft.metrics();
        let wait = async {
            loop {
                if let Some(leader) = leader_of(&rx.borrow_and_update()) {
                    if Some(leader.0) != not {
                        return Some(leader);
                    }
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }

    /// The index of the last entry applied to this node's state machine (0 if none).
    pub fn applied_index(&self) -> u64 {
        self.raft.metrics().borrow().last_applied.map(|l| l.index).unwrap_or(0)
    }

    /// The index of the last entry this node knows to be committed (0 if none).
    pub async fn committed_index(&self) -> u64 {
        self.raft.with_raft_state(|st| st.committed.map(|l| l.index).unwrap_or(0)).await.unwrap_or(0)
    }

    /// Waits up to `timeout` until this node has applied `index`; true if it has.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        self.raft.wait(Some(timeout)).applied_index_at_least(Some(index), "read your writes").await.is_ok()
    }

    /// True once this node belongs to a cluster (it initialized one, or joined and received the membership).
    ///
    /// Read from the metrics (no round trip to the Raft core), so it is cheap enough to check on every request.
    pub fn is_initialized(&self) -> bool {
        self.raft.metrics().borrow().membership_config.membership().nodes().next().is_some()
    }

    /// Makes this node a one-member cluster and waits until it leads it.
    pub async fn initialize(&self) -> Result<(), RaftLayerError> {
        self.raft
            .initialize(single_member(self.id, self.info.clone()))
            .await
            .map_err(|e| RaftLayerError::Raft(format!("cannot initialize: {e}")))?;
        self.raft
            .wait(Some(Duration::from_secs(10)))
            .state(ServerState::Leader, "initialize")
            .await
            .map_err(|e| RaftLayerError::Timeout(format!("did not become leader after initializing: {e}")))?;
        Ok(())
    }

    /// Submits a command (group-committed) and waits until it is applied here.
    pub async fn propose(&self, command: Vec<u8>) -> Result<Applied, ProposeError> {
        self.proposer.propose(command).await
    }

    /// The members of the current cluster configuration, voters first by name.
    pub fn members(&self) -> Vec<Member> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut members: Vec<Member> = membership
            .nodes()
            .map(|(id, info)| Member { id: *id, info: info.clone(), voter: voters.contains(id) })
            .collect();
        members.sort_by(|a, b| (!a.voter, &a.info.name).cmp(&(!b.voter, &b.info.name)));
        members
    }

    /// On the leader: adds `info` as a learner. It is promoted to voter once caught up (see [`promote_learners`]).
    pub async fn add_learner(&self, info: NodeInfo) -> Result<(), RaftLayerError> {
        let id = super::node_id_of(&info.name);
        if let Some(existing) = self.members().into_iter().find(|m| m.id == id) {
            if existing.info != info {
                return Err(RaftLayerError::Invalid(format!(
                    "node id {:?} is already a member with addresses {} and {}; remove it first",
                    info.name, existing.info.api_addr, existing.info.cluster_addr
                )));
            }
            return Ok(());
        }
        let node = info.clone();
        retry_in_progress(|| self.raft.add_learner(id, node.clone(), false)).await?;
        Ok(())
    }

    /// On the leader: removes the member named `name` from the cluster.
    pub async fn remove_member(&self, name: &str) -> Result<(), RaftLayerError> {
        let Some(member) = self.members().into_iter().find(|m| m.info.name == name) else {
            return Err(RaftLayerError::Invalid(format!("no member with node id {name:?}")));
        };
        let ids = BTreeSet::from([member.id]);
        let change = if member.voter { ChangeMembers::RemoveVoters(ids) } else { ChangeMembers::RemoveNodes(ids) };
        retry_in_progress(|| self.raft.change_membership(change.clone(), false)).await?;
        Ok(())
    }

    /// Stops Raft.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

/// How long a membership change waits for another one (a join, a promotion) to finish.
const MEMBERSHIP_BUSY_WAIT: Duration = Duration::from_secs(10);

/// Runs a membership change, retrying while another change is still in progress: openraft allows one at a time,
/// and the learner-promotion loop or a concurrent join may hold it for a commit round.
async fn retry_in_progress<F, Fut>(mut change: F) -> Result<(), RaftLayerError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<openraft::raft::ClientWriteResponse<super::TypeConfig>, MembershipError>>,
{
    let deadline = tokio::time::Instant::now() + MEMBERSHIP_BUSY_WAIT;
    loop {
        match change().await {
            Ok(_) => return Ok(()),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(_))))
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(membership_error(e)),
        }
    }
}

type MembershipError = RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>;

/// Maps a failed membership change: "not the leader" is for the caller to forward; a change the membership rules
/// refuse (e.g. removing the last voter) is the caller's mistake; anything else is a failure.
fn membership_error(e: MembershipError) -> RaftLayerError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => RaftLayerError::NotLeader,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => RaftLayerError::Invalid(e.to_string()),
        e => RaftLayerError::Raft(e.to_string()),
    }
}

fn leader_of(metrics: &RaftMetrics<NodeId, NodeInfo>) -> Option<(NodeId, NodeInfo)> {
    let id = metrics.current_leader?;
    let info = metrics.membership_config.membership().get_node(&id)?.clone();
    Some((id, info))
}

/// The node and its metrics, unless it was dropped or has shut down — when a background task's loop ends.
pub(super) fn still_running(node: &Weak<RaftNode>) -> Option<(Arc<RaftNode>, RaftMetrics<NodeId, NodeInfo>)> {
    let node = node.upgrade()?;
    let metrics = node.metrics();
    (metrics.state != ServerState::Shutdown).then_some((node, metrics))
}

/// While this node leads, promotes every learner whose log has caught up to a voter.
///
/// Done by a loop rather than by the join call itself so a promotion interrupted by a leader change is finished by
/// the next leader.
async fn promote_learners(node: Weak<RaftNode>) {
    let mut tick = tokio::time::interval(PROMOTE_INTERVAL);
    loop {
        tick.tick().await;
        let Some((node, metrics)) = still_running(&node) else { return };
        if metrics.state != ServerState::Leader {
            continue;
        }
        let last = metrics.last_log_index.unwrap_or(0);
        let membership = metrics.membership_config.membership();
        let ready: BTreeSet<NodeId> = membership
            .learner_ids()
            .filter(|id| {
                let matched = metrics.replication.as_ref().and_then(|r| r.get(id)).and_then(|m| m.map(|l| l.index));
                matched.is_some_and(|m| m + PROMOTE_MAX_LAG >= last)
            })
            .collect();
        if ready.is_empty() {
            continue;
        }
        tracing::info!(learners = ?ready, "promoting caught-up learners to voters");
        if let Err(e) = node.raft.change_membership(ChangeMembers::AddVoterIds(ready), false).await {
            tracing::warn!(error = %e, "promoting learners failed; will retry");
        }
    }
}
