//! Test harness: real `vigil` node processes on free loopback ports, each in its own temporary directory.
//!
//! Nodes are started, SIGKILLed and restarted as real processes and reached over real HTTP. Waits are on
//! conditions (health codes, values becoming visible), polled with a deadline — never fixed sleeps. When a test
//! panics, the tail of every node's log is printed to help diagnose it; all processes are killed on drop.

#![allow(dead_code)]

pub mod faults;
pub mod history;

use std::fs;
use std::future::Future;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vigil::client::{Client, Response};

/// Default deadline for waits.
pub const WAIT: Duration = Duration::from_secs(30);

/// How a test cluster is set up.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// `snapshot_threshold` of every node.
    pub snapshot_threshold: u64,
    /// `trailing_logs` of every node.
    pub trailing_logs: u64,
    /// Node indexes configured with `disable_performance_standby = true`.
    pub plain_standbys: Vec<usize>,
    /// Join followers through `retry_join` + a token file instead of explicit join calls.
    pub retry_join: bool,
    /// Appended to every node's configuration file (e.g. an `events { ... }` block).
    pub extra_config: String,
    /// Extra environment variables of every node process (e.g. `VIGIL_LOG`).
    pub env: Vec<(String, String)>,
    /// Put a fault-injecting proxy ([`faults::FaultNet`]) in front of every cluster port (`TestCluster::net`).
    /// Needs a multi-threaded tokio runtime.
    pub proxied: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            snapshot_threshold: 8192,
            trailing_logs: 10_000,
            plain_standbys: vec![],
            retry_join: false,
            extra_config: String::new(),
            env: Vec::new(),
            proxied: false,
        }
    }
}

/// One node process.
pub struct TestNode {
    /// Node name, `node1`...
    pub name: String,
    /// API port.
    pub api_port: u16,
    /// Cluster port.
    pub cluster_port: u16,
    /// The node's directory (config, log, data).
    pub dir: PathBuf,
    /// Extra environment of the process.
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl TestNode {
    /// The API URL.
    pub fn api_addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// The config file path.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("node.hcl")
    }

    /// The log file path.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// True while the process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("open log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_vigil"));
        // If the test process dies without running its destructors (SIGKILL, a CI timeout), its nodes die too
        // instead of running on as orphans. (The signal follows the spawning thread, which outlives the node.)
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .arg("server")
            .arg("--config")
            .arg(self.config_path())
            .current_dir(&self.dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn vigil");
        self.child = Some(child);
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL on Unix
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the process stays alive but does nothing (a long GC pause, a stuck VM) until [`TestNode::resume`].
    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            unsafe {
                libc::kill(pid as i32, libc::SIGSTOP);
            }
        }
    }

    /// SIGCONT after [`TestNode::pause`].
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            unsafe {
                libc::kill(pid as i32, libc::SIGCONT);
            }
        }
    }

    /// SIGTERM (graceful) and reap.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let _ = child.wait();
        }
    }
}

/// A cluster of node processes.
pub struct TestCluster {
    /// Keeps the directories alive.
    _root: tempfile::TempDir,
    root_path: PathBuf,
    /// The nodes, index 0 is `node1`.
    pub nodes: Vec<TestNode>,
    /// The root token once initialized.
    pub root_token: String,
    /// The proxies in front of the cluster ports, with `ClusterOptions::proxied`.
    pub net: Option<faults::FaultNet>,
    options: ClusterOptions,
}

/// Free loopback ports (bound and released; another process grabbing one in between is unlikely). A port is
/// handed out once per test process: a node started a moment ago may not have bound its ports yet, and the
/// kernel would happily offer them again (it did: two nodes of one cluster given the same port).
pub fn free_ports(n: usize) -> Vec<u16> {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // Listeners stay bound until all `n` are picked, so one call never repeats a port either.
    let mut listeners = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            ports.push(port);
        }
        listeners.push(listener);
    }
    ports
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}

impl TestCluster {
    /// Starts a 3-node cluster with default options.
    pub async fn start3() -> TestCluster {
        TestCluster::start(ClusterOptions::default()).await
    }

    /// Starts, initializes and joins a cluster; returns once one node is active and all others are standbys.
    pub async fn start(options: ClusterOptions) -> TestCluster {
        let root = tempfile::Builder::new().prefix("vigil-test-").tempdir().expect("tempdir");
        let root_path = root.path().to_path_buf();
        let net = options.proxied.then(faults::FaultNet::new);
        let mut cluster =
            TestCluster { _root: root, root_path, nodes: Vec::new(), root_token: String::new(), net, options };
        for _ in 0..cluster.options.nodes {
            cluster.add_node_process();
        }
        cluster.bootstrap().await;
        cluster
    }

    /// Creates (and starts) a new node process that is not yet part of the cluster; returns its index.
    pub fn add_node_process(&mut self) -> usize {
        let index = self.nodes.len();
        let ports = free_ports(2);
        let name = format!("node{}", index + 1);
        let dir = self.root_path.join(&name);
        fs::create_dir_all(&dir).expect("node dir");
        let env = self.options.env.clone();
        // Peers reach the node at its advertised cluster address: the proxy's, when there is one.
        let advertised_cluster_port = match &mut self.net {
            Some(net) => net.add(&name, ports[1]),
            None => ports[1],
        };
        let mut node = TestNode { name, api_port: ports[0], cluster_port: ports[1], dir, env, child: None };
        let retry_join = if self.options.retry_join && index > 0 {
            format!(
                "retry_join {{\n    leader_api_addr = \"http://127.0.0.1:{}\"\n    leader_token_file = \"{}\"\n  }}",
                self.nodes[0].api_port,
                self.token_file().display()
            )
        } else {
            String::new()
        };
        let config = format!(
            r#"storage "raft" {{
  path               = "{data}"
  node_id            = "{name}"
  snapshot_threshold = {snap}
  trailing_logs      = {trail}
  {retry_join}
}}
listener "tcp" {{
  address         = "127.0.0.1:{api}"
  cluster_address = "127.0.0.1:{cluster}"
  tls_disable     = true
}}
api_addr     = "http://127.0.0.1:{api}"
cluster_addr = "http://127.0.0.1:{advertised}"
disable_performance_standby = {plain}
{extra}
"#,
            data = node.dir.join("data").display(),
            name = node.name,
            snap = self.options.snapshot_threshold,
            trail = self.options.trailing_logs,
            api = node.api_port,
            cluster = node.cluster_port,
            advertised = advertised_cluster_port,
            plain = self.options.plain_standbys.contains(&index),
            extra = self.options.extra_config,
        );
        fs::write(node.config_path(), config).expect("write config");
        node.spawn();
        self.nodes.push(node);
        index
    }

    fn token_file(&self) -> PathBuf {
        self.root_path.join("root-token")
    }

    async fn bootstrap(&mut self) {
        for i in 0..self.nodes.len() {
            self.wait_health(i, &[501]).await;
        }
        let init = Client::new(&self.nodes[0].api_addr()).put("/v1/sys/init", &json!({})).await.expect("init");
        assert_eq!(init.status, 200, "init: {}", init.text());
        self.root_token = init.json().expect("json")["root_token"].as_str().expect("root_token").to_string();
        self.wait_health(0, &[200]).await;
        if self.options.retry_join {
            fs::write(self.token_file(), &self.root_token).expect("token file");
        } else {
            for i in 1..self.nodes.len() {
                self.join(i, 0).await;
            }
        }
        self.wait_stable().await;
    }

    /// Makes node `i` join through node `through` with the root token.
    pub async fn join(&self, i: usize, through: usize) {
        let body = json!({ "leader_api_addr": self.nodes[through].api_addr() });
        let resp = self.client(i).post("/v1/sys/storage/raft/join", &body).await.expect("join");
        assert_eq!(resp.status, 200, "join {}: {}", self.nodes[i].name, resp.text());
        assert_eq!(resp.json().expect("json"), json!({ "joined": true }));
    }

    /// Waits until exactly one running node is active, every other running node is a (performance) standby, and
    /// every running node is a voter.
    pub async fn wait_stable(&self) -> usize {
        let running: Vec<usize> = (0..self.nodes.len()).filter(|i| self.nodes[*i].is_running()).collect();
        let expect_voters = running.len();
        wait_for("a stable cluster", WAIT, || async {
            let mut active = Vec::new();
            for &i in &running {
                match self.health(i).await {
                    Some(200) => active.push(i),
                    Some(429) | Some(473) => {}
                    _ => return None,
                }
            }
            if active.len() != 1 {
                return None;
            }
            let config = self.client(active[0]).get("/v1/sys/storage/raft/configuration").await.ok()?;
            let servers = config.json().ok()?["data"]["config"]["servers"].as_array()?.clone();
            let voters = servers.iter().filter(|s| s["voter"] == json!(true)).count();
            (voters >= expect_voters).then_some(active[0])
        })
        .await
    }

    /// The status code of node `i`'s `/v1/sys/health`, or `None` if it does not answer.
    pub async fn health(&self, i: usize) -> Option<u16> {
        let client = Client::new(&self.nodes[i].api_addr()).with_timeout(Duration::from_secs(2));
        client.get("/v1/sys/health").await.ok().map(|r| r.status)
    }

    /// Waits until node `i`'s health code is one of `codes`.
    pub async fn wait_health(&self, i: usize, codes: &[u16]) -> u16 {
        let what = format!("{} health in {codes:?}", self.nodes[i].name);
        wait_for(&what, WAIT, || async { self.health(i).await.filter(|c| codes.contains(c)) }).await
    }

    /// The fault-injecting network (`ClusterOptions::proxied`).
    pub fn net(&self) -> &faults::FaultNet {
        self.net.as_ref().expect("the cluster was started with ClusterOptions::proxied")
    }

    /// A root-token client for node `i`.
    pub fn client(&self, i: usize) -> Client {
        let client = Client::new(&self.nodes[i].api_addr()).with_timeout(Duration::from_secs(15));
        if self.root_token.is_empty() {
            client
        } else {
            client.with_token(self.root_token.clone())
        }
    }

    /// The index of the node that is active now (by asking each running node).
    pub async fn leader(&self) -> usize {
        wait_for("a leader", WAIT, || async {
            for (i, node) in self.nodes.iter().enumerate() {
                if node.is_running() && self.health(i).await == Some(200) {
                    return Some(i);
                }
            }
            None
        })
        .await
    }

    /// Indexes of running nodes other than `i`.
    pub fn others(&self, i: usize) -> Vec<usize> {
        (0..self.nodes.len()).filter(|j| *j != i && self.nodes[*j].is_running()).collect()
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Restarts node `i` with its existing data and waits until it answers health.
    pub async fn restart(&mut self, i: usize) {
        self.nodes[i].spawn();
        self.wait_health(i, &[200, 429, 473, 503]).await;
    }

    /// Reads `path` on node `i`; `None` unless 200.
    pub async fn read(&self, i: usize, path: &str) -> Option<Value> {
        let resp: Response = self.client(i).get(path).await.ok()?;
        (resp.status == 200).then(|| resp.json().ok()).flatten()
    }

    /// Waits until `path` reads as `data` on node `i`.
    pub async fn wait_value(&self, i: usize, path: &str, data: &Value) {
        let what = format!("{path} = {data} on {}", self.nodes[i].name);
        wait_for(&what, WAIT, || async { self.read(i, path).await.filter(|v| &v["data"] == data).map(|_| ()) }).await
    }

    /// Writes `{"n": n}` to `/v1/kv/<prefix>/<n>` for every n in `0..count`, through node `i`, expecting 204s.
    pub async fn write_numbered(&self, i: usize, prefix: &str, count: usize) {
        let client = self.client(i);
        for n in 0..count {
            let resp = client.put(&format!("/v1/kv/{prefix}/{n}"), &json!({ "n": n })).await.expect("write");
            assert_eq!(resp.status, 204, "write {prefix}/{n}: {}", resp.text());
        }
    }

    /// Waits until node `i` holds everything [`TestCluster::write_numbered`] wrote.
    pub async fn wait_numbered(&self, i: usize, prefix: &str, count: usize) {
        for n in 0..count {
            self.wait_value(i, &format!("/v1/kv/{prefix}/{n}"), &json!({ "n": n })).await;
        }
    }

    /// Runs the `vigil` binary with `args` and returns (exit code, stdout, stderr).
    pub fn run_cli(&self, args: &[&str], addr: &str) -> (i32, String, String) {
        run_vigil(args, &[("VIGIL_ADDR", addr), ("VIGIL_TOKEN", &self.root_token)], &self.root_path)
    }
}

/// Runs the `vigil` binary to completion.
pub fn run_vigil(args: &[&str], env: &[(&str, &str)], dir: &Path) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vigil"));
    command.args(args).current_dir(dir).env_remove("VIGIL_ADDR").env_remove("VIGIL_TOKEN");
    command.env_remove("VAULT_ADDR").env_remove("VAULT_TOKEN");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("run vigil");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if std::env::var_os("VIGIL_KEEP_TEST_DIRS").is_some() {
                self._root.disable_cleanup(true);
                eprintln!("----- kept the cluster's directory: {} -----", self.root_path.display());
            }
            for node in &self.nodes {
                let log = node.log();
                // A node's own panic explains more than anything after it.
                let lines: Vec<&str> = log.lines().collect();
                for at in (0..lines.len()).filter(|i| lines[*i].contains("panicked at")).take(3) {
                    eprintln!("----- {} panicked -----", node.name);
                    for line in &lines[at..(at + 6).min(lines.len())] {
                        eprintln!("{line}");
                    }
                }
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("----- {} log (last {} lines) -----", node.name, tail.len());
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
        for node in &mut self.nodes {
            node.kill();
        }
    }
}
