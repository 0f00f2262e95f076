//! Load tool for a live Vigil or etcd cluster (a `harness = false` bench: it measures, it asserts nothing).
//!
//! Write throughput and latency:
//!
//! ```text
//! cargo bench --bench load -- [--target vigil|etcd] [--addr URL]... [--cluster-dir DIR] [--token T]
//!                             [--writers 1,16,64] [--duration 10] [--value-size 256] [--mount kv] [--warmup 1]
//!                             [--record FILE]
//! ```
//!
//! For each writer count N, N tasks loop writing `<mount>/bench/<run>-w<N>/<writer>/<n>` with a `--value-size`
//! byte value for `--duration` seconds (after a `--warmup` of the same load), spread round-robin over the
//! `--addr`s (default: the leader among the nodes of `--cluster-dir`, else `http://127.0.0.1:8200`). Vigil:
//! `PUT /v1/<path>` with `{"value":"<value>"}`; etcd: `POST /v3/kv/put` with the path as key and the value
//! (base64, as the JSON gateway wants). Latencies of acknowledged (2xx) writes go into an HdrHistogram; failures
//! are counted as errors. One markdown table row is printed per writer count.
//!
//! Failover time:
//!
//! ```text
//! cargo bench --bench load -- --failover [--target vigil|etcd] [--cluster-dir DIR] [--token T] [--mount kv]
//! ```
//!
//! Reads `<dir>/nodeN.addr` (a node's API URL) and `<dir>/nodeN.pid` (its pid), finds the leader (Vigil:
//! `GET /v1/sys/leader`; etcd: `POST /v3/maintenance/status`), SIGKILLs it, then starts a probe write of
//! `<mount>/failover/probe` through a surviving node every 10 ms (each with a 2 s timeout, 30 s overall) and prints
//! the time from the kill to the first acknowledged probe. Probes overlap so that one stuck in a dead connection
//! or a dropped proposal does not delay the measurement. The killed node is not restarted.
//!
//! `--record FILE` appends `<target>.<measure> <value>` lines to FILE (for scripts/bench.sh).
//!
//! Cargo passes `--bench` when benchmarking; without it (e.g. `cargo test --benches`, which runs bench
//! targets as smoke tests) the tool prints a note and exits successfully instead of needing a live cluster.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

mod common;

use clap::Parser;
use common::{new_histogram, read_nodes, Recorder, Target};
use hdrhistogram::Histogram;
use vigil::client::Client;

#[derive(Debug, Parser)]
#[command(name = "load", about = "Load and failover measurements against a live Vigil or etcd cluster")]
struct Opts {
    /// The system under test.
    #[arg(long, value_enum, default_value = "vigil")]
    target: Target,
    /// A node's API address; repeatable. Writers are spread round-robin over the addresses
    /// [default: the leader of --cluster-dir's nodes, else http://127.0.0.1:8200].
    #[arg(long = "addr", value_name = "URL")]
    addrs: Vec<String>,
    /// The token to write with (Vigil) [default: $VIGIL_TOKEN, else $VAULT_TOKEN, else <cluster-dir>/root-token].
    #[arg(long)]
    token: Option<String>,
    /// Comma-separated writer counts, one measured run each.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    writers: Vec<usize>,
    /// Seconds of each measured run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of unmeasured load before each run.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Size in bytes of each written value.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// The kv mount to write under (for etcd: the first segment of every key).
    #[arg(long, default_value = "kv")]
    mount: String,
    /// Measure failover time instead of throughput.
    #[arg(long)]
    failover: bool,
    /// The directory with the cluster's nodeN.addr and nodeN.pid files [default: .cluster for Vigil,
    /// .etcd-cluster for etcd].
    #[arg(long, value_name = "DIR")]
    cluster_dir: Option<PathBuf>,
    /// Append `<target>.<measure> <value>` lines to this file.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
    /// Benchmark name filters passed on by cargo; ignored.
    #[arg(hide = true)]
    filters: Vec<String>,
}

impl Opts {
    fn cluster_dir(&self) -> PathBuf {
        self.cluster_dir.clone().unwrap_or_else(|| PathBuf::from(self.target.default_cluster_dir()))
    }

    fn token(&self) -> Option<String> {
        match self.target {
            Target::Vigil => common::token(self.token.as_deref(), Some(&self.cluster_dir())),
            Target::Etcd => None,
        }
    }

    fn recorder(&self) -> Recorder {
        Recorder::new(self.record.as_deref(), self.target)
    }
}

fn main() -> ExitCode {
    let opts = Opts::parse();
    if !opts.bench {
        eprintln!("load: not run as a benchmark (no --bench flag); use `cargo bench --bench load -- [options]`");
        return ExitCode::SUCCESS;
    }
    if !opts.filters.is_empty() {
        eprintln!("load: ignoring benchmark filters {:?}", opts.filters);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async {
        if opts.failover {
            failover(&opts).await
        } else {
            load(&opts).await
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Throughput and latency.

/// What one writer task saw.
struct WriterStats {
    histogram: Histogram<u64>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

/// The addresses to write to: `--addr`s, else the leader of the cluster directory's nodes, else Vigil's default.
async fn write_addrs(opts: &Opts, token: Option<&str>) -> Result<Vec<String>, String> {
    if !opts.addrs.is_empty() {
        return Ok(opts.addrs.clone());
    }
    let dir = opts.cluster_dir();
    match read_nodes(&dir) {
        Ok(nodes) if !nodes.is_empty() => {
            let leader = opts.target.find_leader(&nodes, token).await?;
            Ok(vec![nodes[leader].addr.clone()])
        }
        _ if opts.target == Target::Vigil => Ok(vec!["http://127.0.0.1:8200".to_string()]),
        _ => Err(format!("no --addr and no nodeN.addr files in {}", dir.display())),
    }
}

async fn load(opts: &Opts) -> Result<(), String> {
    if opts.writers.is_empty() || opts.writers.contains(&0) {
        return Err("--writers must list positive writer counts".to_string());
    }
    if !opts.duration.is_finite() || opts.duration <= 0.0 || !opts.warmup.is_finite() || opts.warmup < 0.0 {
        return Err("--duration must be positive and --warmup non-negative".to_string());
    }
    let target = opts.target;
    let token = opts.token();
    if token.is_none() && target == Target::Vigil {
        eprintln!("load: warning: no token (--token, VIGIL_TOKEN); writes will likely be denied");
    }
    let addrs = write_addrs(opts, token.as_deref()).await?;
    // One client per address; writer tasks share its connection pool (one connection per busy writer).
    let clients: Vec<Client> =
        addrs.iter().map(|a| target.client(a, token.as_deref(), Duration::from_secs(10))).collect();
    for c in &clients {
        target.ping(c).await?;
    }
    let mount = opts.mount.trim_matches('/').to_string();
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    eprintln!(
        "load: {} run {run_id}: {} s per writer count (+{} s warm-up), {}-byte values, mount {mount}, nodes {}",
        target.name(),
        opts.duration,
        opts.warmup,
        opts.value_size,
        addrs.join(", ")
    );

    let recorder = opts.recorder();
    println!("| writers | writes/s | p50 ms | p99 ms | p99.9 ms | errors |");
    println!("|--------:|---------:|-------:|-------:|---------:|-------:|");
    for &writers in &opts.writers {
        let prefix = format!("{mount}/bench/{run_id}-w{writers}");
        if opts.warmup > 0.0 {
            let warm = run(target, &clients, writers, &format!("{prefix}-warmup"), opts, opts.warmup).await;
            if let Some(e) = &warm.first_error {
                eprintln!("load: warm-up with {writers} writers: {} errors, first: {e}", warm.errors);
            }
        }
        let stats = run(target, &clients, writers, &prefix, opts, opts.duration).await;
        if let Some(e) = &stats.first_error {
            eprintln!("load: {writers} writers: {} errors, first: {e}", stats.errors);
        }
        println!("{}", row(writers, &stats));
        let key = format!("write_w{writers}");
        recorder.record(&format!("{key}_per_s"), format!("{:.0}", stats.rate()));
        recorder.record_quantiles(&key, &stats.histogram);
        recorder.record(&format!("{key}_errors"), stats.errors);
    }
    Ok(())
}

/// The merged result of one run.
struct RunStats {
    histogram: Histogram<u64>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
}

impl RunStats {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `writers` tasks for `seconds` and merges what they saw.
async fn run(target: Target, clients: &[Client], writers: usize, prefix: &str, opts: &Opts, seconds: f64) -> RunStats {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::with_capacity(writers);
    for w in 0..writers {
        let client = clients[w % clients.len()].clone();
        let prefix = format!("{prefix}/{w}");
        let value = value(opts.value_size, w as u64);
        tasks.push(tokio::spawn(writer(target, client, prefix, value, deadline)));
    }
    let mut merged =
        RunStats { histogram: new_histogram(), ok: 0, errors: 0, first_error: None, elapsed: Duration::ZERO };
    for task in tasks {
        match task.await {
            Ok(s) => {
                merged.histogram.add(&s.histogram).expect("same histogram bounds");
                merged.ok += s.ok;
                merged.errors += s.errors;
                if merged.first_error.is_none() {
                    merged.first_error = s.first_error;
                }
            }
            Err(e) => {
                merged.errors += 1;
                merged.first_error.get_or_insert_with(|| format!("writer task failed: {e}"));
            }
        }
    }
    merged.elapsed = started.elapsed();
    merged
}

/// One writer: writes `<prefix>/<n>` for n = 0, 1, ... until `deadline`.
async fn writer(target: Target, client: Client, prefix: String, value: String, deadline: Instant) -> WriterStats {
    let mut stats = WriterStats { histogram: new_histogram(), ok: 0, errors: 0, first_error: None };
    let mut n: u64 = 0;
    while Instant::now() < deadline {
        let path = format!("{prefix}/{n}");
        n += 1;
        let sent = Instant::now();
        match target.put(&client, &path, &value).await {
            Ok(()) => {
                let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                stats.histogram.saturating_record(micros.max(1));
                stats.ok += 1;
            }
            Err(e) => {
                stats.errors += 1;
                stats.first_error.get_or_insert(e.message);
                if e.connect {
                    // Don't spin on a node that is down.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    stats
}

/// `len` printable, random-ish ASCII characters (a xorshift stream seeded by `seed`).
fn value(len: usize, seed: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let mut x = (seed.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ nanos) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

/// One markdown table row: `| writers | writes/s | p50 ms | p99 ms | p99.9 ms | errors |`.
fn row(writers: usize, stats: &RunStats) -> String {
    let rate = stats.ok as f64 / stats.elapsed.as_secs_f64().max(1e-9);
    let ms = |q: f64| {
        if stats.histogram.is_empty() {
            "-".to_string()
        } else {
            format!("{:.2}", stats.histogram.value_at_quantile(q) as f64 / 1000.0)
        }
    };
    format!("| {writers} | {rate:.0} | {} | {} | {} | {} |", ms(0.5), ms(0.99), ms(0.999), stats.errors)
}

// ---------------------------------------------------------------------------------------------------------
// Failover.

async fn failover(opts: &Opts) -> Result<(), String> {
    const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
    const PROBE_EVERY: Duration = Duration::from_millis(10);
    const CAP: Duration = Duration::from_secs(30);

    let target = opts.target;
    let dir = opts.cluster_dir();
    let nodes = read_nodes(&dir)?;
    if nodes.len() < 2 {
        return Err(format!("need at least 2 nodeN.addr files in {}, found {}", dir.display(), nodes.len()));
    }
    let token = opts.token();
    let leader_index = target.find_leader(&nodes, token.as_deref()).await?;
    let leader = &nodes[leader_index];
    let pid = leader
        .pid
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("no valid {}.pid for the leader {}", leader.name, leader.addr))?;
    let survivor =
        nodes.iter().enumerate().find(|(i, _)| *i != leader_index).map(|(_, n)| n.clone()).expect("at least two nodes");
    let probe_path = format!("{}/failover/probe", opts.mount.trim_matches('/'));
    let probe = target.client(&survivor.addr, token.as_deref(), ATTEMPT_TIMEOUT);

    // The probe must work before the kill, or the measurement would only time a misconfiguration.
    if let Err(e) = target.put(&probe, &probe_path, "attempt 0").await {
        return Err(format!("probe write via {} fails before failover: {}", survivor.addr, e.message));
    }
    eprintln!(
        "load: {} leader is {} ({}, pid {pid}); probing via {} ({})",
        target.name(),
        leader.name,
        leader.addr,
        survivor.name,
        survivor.addr
    );

    // SAFETY: kill(2) has no memory-safety preconditions.
    let killed_at = Instant::now();
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        return Err(format!("kill -9 {pid}: {}", std::io::Error::last_os_error()));
    }

    // Overlapping probes; the first acknowledged one ends the measurement.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Result<Instant, String>>();
    let mut ticker = tokio::time::interval(PROBE_EVERY);
    let mut attempts: u64 = 0;
    let mut last_error = String::from("none");
    let acked = loop {
        tokio::select! {
            _ = ticker.tick() => {
                if killed_at.elapsed() >= CAP {
                    break None;
                }
                attempts += 1;
                let (probe, path, tx) = (probe.clone(), probe_path.clone(), done_tx.clone());
                let value = format!("attempt {attempts}");
                tokio::spawn(async move {
                    let _ = tx.send(target.put(&probe, &path, &value).await.map(|()| Instant::now()).map_err(|e| e.message));
                });
            }
            Some(result) = done_rx.recv() => match result {
                Ok(at) => break Some(at),
                Err(e) => last_error = e,
            },
        }
    };
    let Some(acked) = acked else {
        return Err(format!(
            "failover: no successful write via {} within {} s of killing {} ({attempts} attempts, last error: \
             {last_error})",
            survivor.addr,
            CAP.as_secs(),
            leader.addr
        ));
    };
    let ms = acked.duration_since(killed_at).as_millis();
    eprintln!("load: {attempts} probes started");
    println!(
        "failover: {ms} ms (SIGKILL of {} {} to first acknowledged write via {})",
        leader.name, leader.addr, survivor.addr
    );
    opts.recorder().record("failover_ms", ms);
    Ok(())
}
