//! One Vigil node: wires config -> storage -> raft -> engines -> http together and runs until shutdown.
//!
//! Start-up order matters: both listeners are bound before anything else so a port conflict fails fast with a
//! clear message; Raft starts on the node's own storage; then the cluster port (Raft RPCs) and the API port serve.
//! A dev server initializes itself; a configured node with `retry_join` keeps trying to join until it is part of a
//! cluster. SIGINT or SIGTERM stops the listeners and then Raft.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, EventsConfig, ListenerConfig, RaftStorageConfig, RetryJoin};
use crate::engines::events::bus::EventBus;
use crate::engines::events::retention::{self, Retention};
use crate::engines::{cluster, Applier, Engines};
use crate::http::{self, Api};
use crate::raft::{transport, NodeInfo, RaftNode, RaftSettings, StateReader};
use crate::storage::{SledStorage, Storage, WriteBackStorage};

/// How often `retry_join` tries again.
const RETRY_JOIN_INTERVAL: Duration = Duration::from_secs(2);

/// Arguments of `vigil server`.
#[derive(Debug, Clone)]
pub struct ServerArgs {
    /// `-config <file>`: the node's HCL configuration (required unless `dev`).
    pub config: Option<PathBuf>,
    /// `--dev`: a ready single-node cluster with data in a temporary directory.
    pub dev: bool,
    /// `--dev-root-token-id`: the root token of a dev server (default `root`).
    pub dev_root_token_id: String,
    /// `--dev-listen-address`: the API address of a dev server (default `127.0.0.1:8200`); the cluster
    /// port is the next port up.
    pub dev_listen_address: String,
}

/// Why a node could not start or stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid: exit code 2.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// Anything else: exit code 1.
    #[error("{0}")]
    Startup(String),
}

impl ServerError {
    /// The process exit code for this error: 2 for configuration errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServerError::Config(_) => 2,
            ServerError::Startup(_) => 1,
        }
    }
}

fn startup(context: &str) -> impl Fn(String) -> ServerError + '_ {
    move |e| ServerError::Startup(format!("{context}: {e}"))
}

/// Runs a node until SIGINT/SIGTERM.
pub async fn run(args: ServerArgs) -> Result<(), ServerError> {
    // A dev server's data lives in a temporary directory removed at exit.
    let (config, _dev_dir) = if args.dev {
        let (config, dir) = dev_config(&args.dev_listen_address)?;
        (config, Some(dir))
    } else {
        let path = args
            .config
            .as_ref()
            .ok_or_else(|| ServerError::Startup("either -config <file> or --dev is required".into()))?;
        (Config::from_file(path)?, None)
    };
    init_tracing(&config.log_level);

    let api_listener = TcpListener::bind(config.listener.address)
        .await
        .map_err(|e| ServerError::Startup(format!("cannot listen on {}: {e}", config.listener.address)))?;
    let cluster_listener = TcpListener::bind(config.listener.cluster_address)
        .await
        .map_err(|e| ServerError::Startup(format!("cannot listen on {}: {e}", config.listener.cluster_address)))?;

    std::fs::create_dir_all(&config.storage.path).map_err(|e| {
        ServerError::Startup(format!("cannot create storage directory {}: {e}", config.storage.path.display()))
    })?;
    let engine = SledStorage::open(&config.storage.path).map_err(|e| ServerError::Startup(e.to_string()))?;
    let storage: Arc<dyn Storage> =
        Arc::new(WriteBackStorage::new(engine).map_err(|e| ServerError::Startup(e.to_string()))?);

    let info = NodeInfo {
        name: config.storage.node_id.clone(),
        api_addr: config.api_addr.clone(),
        cluster_addr: config.cluster_addr.clone(),
    };
    let settings = RaftSettings {
        snapshot_threshold: config.storage.snapshot_threshold,
        trailing_logs: config.storage.trailing_logs,
        ..RaftSettings::default()
    };
    let events = Arc::new(
        EventBus::new(StateReader::new(storage.clone()))
            .map_err(|e| startup("cannot read the event log")(e.to_string()))?,
    );
    let node = RaftNode::start(info, &config.storage.path, storage, Arc::new(Applier::new(events.clone())), &settings)
        .await
        .map_err(|e| startup("cannot start raft")(e.to_string()))?;
    let engines = Engines::new(node.clone(), events);
    let retention_settings = Retention { count: config.events.retention_count, age: config.events.retention_age };
    tokio::spawn(retention::run(engines.clone(), retention_settings));
    let api = Api::new(engines.clone(), !config.disable_performance_standby);

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let cluster_server = tokio::spawn(serve(
        cluster_listener,
        transport::router(node.raft().clone(), node.secret().clone()),
        shutdown_rx.clone(),
    ));
    let api_server = tokio::spawn(serve(api_listener, http::router(api.clone()), shutdown_rx.clone()));
    tracing::info!(
        node = %node.info.name,
        api = %config.listener.address,
        cluster = %config.listener.cluster_address,
        performance_standby = !config.disable_performance_standby,
        "vigil node started"
    );

    if args.dev {
        if !node.is_initialized() {
            cluster::initialize(&engines, Some(args.dev_root_token_id.clone()))
                .await
                .map_err(|e| startup("cannot initialize the dev cluster")(e.to_string()))?;
        }
        eprintln!(
            "Vigil dev server: a one-node cluster, data in a temporary directory.\n\n    \
             export VIGIL_ADDR={}\n    export VIGIL_TOKEN={}\n",
            config.api_addr, args.dev_root_token_id
        );
    } else {
        let targets: Vec<RetryJoin> =
            config.storage.retry_join.iter().filter(|j| j.leader_api_addr != config.api_addr).cloned().collect();
        if !targets.is_empty() {
            tokio::spawn(retry_join(api.clone(), targets, shutdown_rx.clone()));
        }
    }

    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = api_server.await;
        let _ = cluster_server.await;
    })
    .await;
    node.shutdown().await;
    Ok(())
}

/// Serves `router` on `listener` until `shutdown` turns true (in-flight requests finish).
async fn serve(listener: TcpListener, router: axum::Router, mut shutdown: watch::Receiver<bool>) {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stop).await {
        tracing::error!(error = %e, "server stopped with an error");
    }
}

/// Keeps trying to join through each `retry_join` target until this node is part of a cluster.
async fn retry_join(api: Arc<Api>, targets: Vec<RetryJoin>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if api.node().is_initialized() || *shutdown.borrow() {
            return;
        }
        for target in &targets {
            let token = match &target.leader_token_file {
                Some(file) => std::fs::read_to_string(file).ok().map(|t| t.trim().to_string()),
                None => std::env::var("VIGIL_TOKEN").ok(),
            };
            let Some(token) = token.filter(|t| !t.is_empty()) else {
                tracing::debug!(leader = %target.leader_api_addr, "retry_join: no token available yet");
                continue;
            };
            match http::sys::join_cluster(&api, &target.leader_api_addr, &token).await {
                Ok(()) => {
                    tracing::info!(leader = %target.leader_api_addr, "retry_join: joined");
                    return;
                }
                Err(e) => tracing::info!(leader = %target.leader_api_addr, errors = ?e.errors, "retry_join: not yet"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY_JOIN_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// The configuration of a dev server listening on `listen` (the cluster port is the next one up).
fn dev_config(listen: &str) -> Result<(Config, tempfile::TempDir), ServerError> {
    let address: SocketAddr =
        listen.parse().map_err(|e| ServerError::Startup(format!("invalid --dev-listen-address {listen:?}: {e}")))?;
    let mut cluster_address = address;
    cluster_address.set_port(address.port().checked_add(1).ok_or_else(|| {
        ServerError::Startup(format!("invalid --dev-listen-address {listen:?}: no port above it for the cluster"))
    })?);
    let dir = tempfile::Builder::new()
        .prefix("vigil-dev-")
        .tempdir()
        .map_err(|e| ServerError::Startup(format!("cannot create a temporary directory: {e}")))?;
    let config = Config {
        storage: RaftStorageConfig {
            path: dir.path().to_path_buf(),
            node_id: "dev".into(),
            retry_join: Vec::new(),
            snapshot_threshold: RaftStorageConfig::DEFAULT_SNAPSHOT_THRESHOLD,
            trailing_logs: RaftStorageConfig::DEFAULT_TRAILING_LOGS,
        },
        listener: ListenerConfig { address, cluster_address },
        api_addr: format!("http://{address}"),
        cluster_addr: format!("http://{cluster_address}"),
        disable_performance_standby: false,
        log_level: Config::DEFAULT_LOG_LEVEL.into(),
        events: EventsConfig::default(),
    };
    Ok((config, dir))
}

/// Logs to stderr. A bare level applies to Vigil; openraft and sled stay at `warn` unless a full directive is given.
fn init_tracing(level: &str) {
    let directive = if ["trace", "debug", "info", "warn", "error"].contains(&level) {
        format!("warn,vigil={level}")
    } else {
        level.to_string()
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIGIL_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&directive))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).try_init();
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
