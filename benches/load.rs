//! Load tool for a live Vigil cluster (a `harness = false` bench: it measures, it asserts nothing).
//!
//! Write throughput and latency:
//!
//! ```text
//! cargo bench --bench load -- [--addr URL]... [--token T] [--writers 1,16,64] [--duration 10]
//!                             [--value-size 256] [--mount kv] [--warmup 1]
//! ```
//!
//! For each writer count N, N tasks loop `PUT /v1/<mount>/bench/<run>/<writer>/<n>` with
//! `{"value":"<value-size chars>"}` for `--duration` seconds (after a `--warmup` of the same load), spread
//! round-robin over the `--addr`s. Latencies of successful (2xx) writes go into an HdrHistogram; failures are
//! counted as errors. One markdown table row is printed per writer count.
//!
//! Failover time:
//!
//! ```text
//! cargo bench --bench load -- --failover [--cluster-dir .cluster] [--token T] [--mount kv]
//! ```
//!
//! Reads `<dir>/nodeN.addr` (a node's API URL) and `<dir>/nodeN.pid` (its pid), finds the leader through
//! `GET /v1/sys/leader`, SIGKILLs it, then loops `PUT /v1/<mount>/failover/probe` through a surviving node
//! (2 s per attempt, 30 s overall) until one succeeds, and prints the time from the kill to that success. The
//! killed node is not restarted.
//!
//! Cargo passes `--bench` when benchmarking; without it (e.g. `cargo test --benches`, which runs bench
//! targets as smoke tests) the tool prints a note and exits successfully instead of needing a live cluster.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

mod common;

use clap::Parser;
use common::{client, describe, find_leader, new_histogram, read_nodes};
use hdrhistogram::Histogram;
use vigil::client::Client;

#[derive(Debug, Parser)]
#[command(name = "load", about = "Load and failover measurements against a live Vigil cluster")]
struct Opts {
    /// A node's API address; repeatable. Writers are spread round-robin over the addresses.
    #[arg(long = "addr", value_name = "URL")]
    addrs: Vec<String>,
    /// The token to write with [default: $VIGIL_TOKEN, else $VAULT_TOKEN].
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
    /// The kv mount to write under.
    #[arg(long, default_value = "kv")]
    mount: String,
    /// Measure failover time instead of throughput.
    #[arg(long)]
    failover: bool,
    /// The directory with the cluster's nodeN.addr and nodeN.pid files (--failover).
    #[arg(long, value_name = "DIR", default_value = ".cluster")]
    cluster_dir: PathBuf,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
    /// Benchmark name filters passed on by cargo; ignored.
    #[arg(hide = true)]
    filters: Vec<String>,
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

fn token(opts: &Opts) -> Option<String> {
    common::token(opts.token.as_deref(), None)
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

async fn load(opts: &Opts) -> Result<(), String> {
    let addrs = if opts.addrs.is_empty() { vec!["http://127.0.0.1:8200".to_string()] } else { opts.addrs.clone() };
    if opts.writers.is_empty() || opts.writers.contains(&0) {
        return Err("--writers must list positive writer counts".to_string());
    }
    if !opts.duration.is_finite() || opts.duration <= 0.0 || !opts.warmup.is_finite() || opts.warmup < 0.0 {
        return Err("--duration must be positive and --warmup non-negative".to_string());
    }
    let token = token(opts);
    if token.is_none() {
        eprintln!("load: warning: no token (--token, VIGIL_TOKEN); writes will likely be denied");
    }
    // One client per address; writer tasks share its connection pool (one connection per busy writer).
    let clients: Vec<Client> = addrs.iter().map(|a| client(a, token.as_deref(), Duration::from_secs(10))).collect();
    for c in &clients {
        c.get("/v1/sys/health?standbyok=true&perfstandbyok=true")
            .await
            .map_err(|e| format!("{} is not reachable: {e}", c.addr()))?;
    }
    let mount = opts.mount.trim_matches('/').to_string();
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    eprintln!(
        "load: run {run_id}: {} s per writer count (+{} s warm-up), {}-byte values, mount {mount}, nodes {}",
        opts.duration,
        opts.warmup,
        opts.value_size,
        addrs.join(", ")
    );

    println!("| writers | writes/s | p50 ms | p99 ms | p99.9 ms | errors |");
    println!("|--------:|---------:|-------:|-------:|---------:|-------:|");
    for &writers in &opts.writers {
        let prefix = format!("/v1/{mount}/bench/{run_id}-w{writers}");
        if opts.warmup > 0.0 {
            let warm = run(&clients, writers, &format!("{prefix}-warmup"), opts, opts.warmup).await;
            if let Some(e) = &warm.first_error {
                eprintln!("load: warm-up with {writers} writers: {} errors, first: {e}", warm.errors);
            }
        }
        let stats = run(&clients, writers, &prefix, opts, opts.duration).await;
        if let Some(e) = &stats.first_error {
            eprintln!("load: {writers} writers: {} errors, first: {e}", stats.errors);
        }
        println!("{}", row(writers, &stats));
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

/// Runs `writers` tasks for `seconds` and merges what they saw.
async fn run(clients: &[Client], writers: usize, prefix: &str, opts: &Opts, seconds: f64) -> RunStats {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::with_capacity(writers);
    for w in 0..writers {
        let client = clients[w % clients.len()].clone();
        let prefix = format!("{prefix}/{w}");
        let body =
            serde_json::to_vec(&serde_json::json!({ "value": value(opts.value_size, w as u64) })).expect("encode body");
        tasks.push(tokio::spawn(writer(client, prefix, body, deadline)));
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

/// One writer: PUTs `<prefix>/<n>` for n = 0, 1, ... until `deadline`.
async fn writer(client: Client, prefix: String, body: Vec<u8>, deadline: Instant) -> WriterStats {
    let mut stats = WriterStats { histogram: new_histogram(), ok: 0, errors: 0, first_error: None };
    let headers = [("Content-Type", "application/json")];
    let mut n: u64 = 0;
    while Instant::now() < deadline {
        let path = format!("{prefix}/{n}");
        n += 1;
        let sent = Instant::now();
        match client.request_raw("PUT", &path, &headers, body.clone()).await {
            Ok(resp) if resp.is_success() => {
                let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                stats.histogram.saturating_record(micros.max(1));
                stats.ok += 1;
            }
            Ok(resp) => {
                stats.errors += 1;
                stats.first_error.get_or_insert_with(|| describe(&resp));
            }
            Err(e) => {
                stats.errors += 1;
                stats.first_error.get_or_insert_with(|| e.to_string());
                if e.is_connect() {
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
    const CAP: Duration = Duration::from_secs(30);

    let nodes = read_nodes(&opts.cluster_dir)?;
    if nodes.len() < 2 {
        return Err(format!(
            "need at least 2 nodeN.addr files in {}, found {}",
            opts.cluster_dir.display(),
            nodes.len()
        ));
    }
    let token = token(opts);
    let leader_index = find_leader(&nodes, token.as_deref()).await?;
    let leader = &nodes[leader_index];
    let pid = leader
        .pid
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("no valid {}.pid for the leader {}", leader.name, leader.addr))?;
    let survivor =
        nodes.iter().enumerate().find(|(i, _)| *i != leader_index).map(|(_, n)| n.clone()).expect("at least two nodes");
    let probe_path = format!("/v1/{}/failover/probe", opts.mount.trim_matches('/'));
    let probe = client(&survivor.addr, token.as_deref(), ATTEMPT_TIMEOUT);
    let body = |attempt: u64| serde_json::json!({ "value": format!("attempt {attempt}") });

    // The probe must work before the kill, or the measurement would only time a misconfiguration.
    match probe.put(&probe_path, &body(0)).await {
        Ok(resp) if resp.is_success() => {}
        Ok(resp) => {
            return Err(format!("probe write via {} fails before failover: {}", survivor.addr, describe(&resp)))
        }
        Err(e) => return Err(format!("probe write via {} fails before failover: {e}", survivor.addr)),
    }
    eprintln!(
        "load: leader is {} ({}, pid {pid}); probing via {} ({})",
        leader.name, leader.addr, survivor.name, survivor.addr
    );

    // SAFETY: kill(2) has no memory-safety preconditions.
    let killed_at = Instant::now();
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        return Err(format!("kill -9 {pid}: {}", std::io::Error::last_os_error()));
    }

    let mut attempts: u64 = 0;
    let mut last_error = String::from("none");
    while killed_at.elapsed() < CAP {
        attempts += 1;
        match probe.put(&probe_path, &body(attempts)).await {
            Ok(resp) if resp.is_success() => {
                let ms = killed_at.elapsed().as_millis();
                eprintln!("load: {attempts} attempts");
                println!(
                    "failover: {ms} ms (SIGKILL of {} to first successful write via {})",
                    leader.addr, survivor.addr
                );
                return Ok(());
            }
            Ok(resp) => last_error = describe(&resp),
            Err(e) => last_error = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!(
        "failover: no successful write via {} within {} s of killing {} ({attempts} attempts, last error: {last_error})",
        survivor.addr,
        CAP.as_secs(),
        leader.addr
    ))
}
