//! Fault scenarios under load, judged by the history checker (tests/common/history.rs).
//!
//! Each scenario starts a real cluster, runs concurrent writers and resuming subscribers on different nodes
//! ([`Workload`]), injects faults — SIGKILL and restart, SIGSTOP/SIGCONT, cutting nodes off through the proxies
//! in front of their cluster ports ([`common::faults::FaultNet`]) — heals, and then checks that no acknowledged
//! write was lost, nothing was invented or applied twice, every subscriber saw every event exactly once in order,
//! and all nodes hold the same event log. fsync stays on throughout.
//!
//! CI runs the short forms (a few rounds, seconds each). Longer runs: `VIGIL_FAULT_LONG=1` (ten times the rounds
//! and writes) or `VIGIL_FAULT_ROUNDS=<n>`, e.g. `VIGIL_FAULT_ROUNDS=20 cargo test --test faults`.

mod common;

use std::time::Duration;

use common::history::{self, check, History, Outcome, Workload, WorkloadOptions};
use common::{wait_for, ClusterOptions, TestCluster, WAIT};
use serde_json::json;

/// Runs the checker and fails the test with its findings.
fn assert_valid(scenario: &str, history: &History) {
    let violations = check(history);
    eprintln!("{scenario}: {}", history.summary());
    let acked = history.writes.iter().filter(|w| matches!(w.outcome, Outcome::Acked(_))).count();
    assert!(acked > 0, "{scenario}: no write was acknowledged at all");
    assert!(
        violations.is_empty(),
        "{scenario}: {} violations, first ones:\n{}",
        violations.len(),
        violations.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// Lets the workload run for `duration` (load shaping, not a correctness wait).
async fn load_for(duration: Duration) {
    tokio::time::sleep(duration).await;
}

/// Waits until a node other than `old` is active; returns it.
async fn new_leader(cluster: &TestCluster, old: usize) -> usize {
    wait_for("a new leader", WAIT, || async {
        for i in cluster.others(old) {
            if cluster.health(i).await == Some(200) {
                return Some(i);
            }
        }
        None
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_leader_kills_under_load() {
    let mut cluster = TestCluster::start3().await;
    let work = Workload::start(&cluster, WorkloadOptions::default()).await;
    for _ in 0..history::rounds(2) {
        load_for(Duration::from_millis(800)).await;
        let leader = cluster.leader().await;
        cluster.kill(leader);
        new_leader(&cluster, leader).await;
        load_for(Duration::from_millis(500)).await;
        cluster.restart(leader).await;
        cluster.wait_stable().await;
    }
    let history = work.finish(&cluster).await;
    assert_valid("repeated leader kills", &history);
}

/// Cuts the active node off from its peers; returns it. Leadership may move between finding the leader and
/// cutting it off, so it is confirmed afterwards (a cut-off leader stays leader: no higher term can reach it).
async fn isolate_the_leader(cluster: &TestCluster) -> usize {
    wait_for("a cut-off leader", WAIT, || async {
        let leader = cluster.leader().await;
        cluster.net().isolate(leader);
        let status = cluster.client(leader).get("/v1/sys/leader").await.ok()?.json().ok()?;
        if status["is_self"] == json!(true) {
            return Some(leader);
        }
        cluster.net().heal();
        None
    })
    .await
}

/// Writes `name` through `node`, on the minority side of a partition: the answer must be a clear 503 that says the
/// outcome is unknown (the node cannot reach a majority). Returns the write for the checker, which proves it is
/// not present twice (or, had it been applied after all, that it matches its events).
async fn write_on_the_minority_side(cluster: &TestCluster, work: &Workload, node: usize, name: &str) -> history::Write {
    let (key, payload) = (work.key(name), name.to_string());
    let resp = cluster
        .client(node)
        .post(&format!("/v1/secret/data/{key}"), &json!({ "data": { "p": payload } }))
        .await
        .expect("a write on the minority side gets an answer");
    assert_eq!(resp.status, 503, "write on minority node {node}: {}", resp.text());
    let errors = resp.errors();
    assert!(errors.iter().any(|e| e.contains("outcome is unknown") && e.contains("majority")), "{errors:?}");
    history::Write { key, payload, node, outcome: Outcome::Unknown(errors.join("; ")) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_acknowledges_nothing_and_converges_after_healing() {
    let cluster = TestCluster::start(ClusterOptions { proxied: true, ..Default::default() }).await;
    let work = Workload::start(&cluster, WorkloadOptions::default()).await;
    let mut minority_writes = Vec::new();
    for round in 0..history::rounds(1) {
        load_for(Duration::from_millis(800)).await;
        let old = isolate_the_leader(&cluster).await;
        // The cut-off leader still believes it leads, but cannot commit: a write sent to it gets a clear error.
        minority_writes.push(write_on_the_minority_side(&cluster, &work, old, &format!("minority-{round}")).await);
        // Meanwhile the majority elected a leader and goes on.
        let majority_leader = new_leader(&cluster, old).await;
        assert_ne!(majority_leader, old);
        load_for(Duration::from_millis(800)).await;
        cluster.net().heal();
        // The stale leader learns the new term and steps down.
        cluster.wait_health(old, &[429, 473]).await;
    }
    let history = work.finish_with(&cluster, minority_writes).await;
    assert_valid("partitioned leader", &history);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_node_cluster_split_two_three_serves_only_on_the_majority_side() {
    let cluster = TestCluster::start(ClusterOptions { nodes: 5, proxied: true, ..Default::default() }).await;
    let options = WorkloadOptions { writers: 5, subscribers: 5, ..Default::default() };
    let work = Workload::start(&cluster, options).await;
    let mut minority_writes = Vec::new();
    for round in 0..history::rounds(1) {
        load_for(Duration::from_millis(800)).await;
        // The leader and one follower on one side, three nodes on the other.
        let old = isolate_the_leader(&cluster).await;
        cluster.net().heal();
        let partner = cluster.others(old)[0];
        let majority: Vec<usize> = cluster.others(old).into_iter().filter(|i| *i != partner).collect();
        cluster.net().partition(&[old, partner], &majority);
        // Neither minority node acknowledges a write: the stale leader cannot commit, and its follower forwards to it.
        for node in [old, partner] {
            let name = format!("minority-{round}-{node}");
            minority_writes.push(write_on_the_minority_side(&cluster, &work, node, &name).await);
        }
        let majority_leader = new_leader(&cluster, old).await;
        assert!(majority.contains(&majority_leader), "leader {majority_leader} is not on the majority side");
        load_for(Duration::from_millis(800)).await;
        cluster.net().heal();
        cluster.wait_health(old, &[429, 473]).await;
    }
    let history = work.finish_with(&cluster, minority_writes).await;
    assert_valid("five nodes split 2/3", &history);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_follower_catches_up_without_loss() {
    let cluster = TestCluster::start(ClusterOptions { proxied: true, ..Default::default() }).await;
    let work = Workload::start(&cluster, WorkloadOptions::default()).await;
    let leader = cluster.leader().await;
    let follower = cluster.others(leader)[0];
    for _ in 0..history::rounds(3) {
        load_for(Duration::from_millis(400)).await;
        cluster.net().isolate(follower);
        load_for(Duration::from_millis(600)).await;
        cluster.net().heal();
    }
    let history = work.finish(&cluster).await;
    assert_valid("flapping follower", &history);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cluster_restart_loses_nothing() {
    let mut cluster = TestCluster::start3().await;
    let work = Workload::start(&cluster, WorkloadOptions::default()).await;
    for _ in 0..history::rounds(1) {
        load_for(Duration::from_millis(1000)).await;
        for i in 0..cluster.nodes.len() {
            cluster.kill(i);
        }
        for i in 0..cluster.nodes.len() {
            cluster.restart(i).await;
        }
        cluster.wait_stable().await;
    }
    let history = work.finish(&cluster).await;
    assert_valid("full-cluster restart", &history);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_log_was_purged_rejoins_by_snapshot_under_load() {
    let options = ClusterOptions { snapshot_threshold: 40, trailing_logs: 10, ..Default::default() };
    let mut cluster = TestCluster::start(options).await;
    let work = Workload::start(&cluster, WorkloadOptions::default()).await;
    for _ in 0..history::rounds(1) {
        let leader = cluster.leader().await;
        let follower = cluster.others(leader)[0];
        load_for(Duration::from_millis(300)).await;
        cluster.kill(follower);
        let installs_before = cluster.nodes[follower].log().matches("installing snapshot").count();
        // Far more entries than the leader keeps behind its snapshots: the follower cannot catch up from the log.
        let index = |cluster: &TestCluster| {
            let client = cluster.client(leader);
            async move {
                let leader_info = client.get("/v1/sys/leader").await.ok()?.json().ok()?;
                leader_info["raft_applied_index"].as_u64()
            }
        };
        let start = index(&cluster).await.expect("applied index");
        wait_for("the leader to move 150 entries on", WAIT, || async {
            index(&cluster).await.filter(|i| *i > start + 150)
        })
        .await;
        cluster.restart(follower).await;
        let what = format!("{} to install a snapshot", cluster.nodes[follower].name);
        wait_for(&what, WAIT, || async {
            (cluster.nodes[follower].log().matches("installing snapshot").count() > installs_before).then_some(())
        })
        .await;
        load_for(Duration::from_millis(500)).await;
    }
    let history = work.finish(&cluster).await;
    assert_valid("purged log, snapshot install", &history);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_after_the_log_was_purged_gets_the_data_and_event_log_by_snapshot() {
    let options = ClusterOptions { snapshot_threshold: 40, trailing_logs: 10, ..Default::default() };
    let mut cluster = TestCluster::start(options).await;
    let work = Workload::start(&cluster, WorkloadOptions::default()).await;
    work.wait_writes(150).await;
    // A fourth node joins under load, long after the first entries were purged everywhere.
    let late = cluster.add_node_process();
    cluster.wait_health(late, &[501]).await;
    let leader = cluster.leader().await;
    cluster.join(late, leader).await;
    let what = format!("{} to install a snapshot", cluster.nodes[late].name);
    wait_for(&what, WAIT, || async { cluster.nodes[late].log().contains("installing snapshot").then_some(()) }).await;
    load_for(Duration::from_millis(500)).await;
    // finish() compares every running node's data and whole event log, the late node's included.
    let history = work.finish(&cluster).await;
    assert_eq!(history.logs.len(), 4);
    assert_valid("late joiner", &history);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_wakes_up_stale_and_steps_down() {
    let cluster = TestCluster::start3().await;
    let work = Workload::start(&cluster, WorkloadOptions::default()).await;
    for _ in 0..history::rounds(1) {
        load_for(Duration::from_millis(800)).await;
        let old = cluster.leader().await;
        cluster.nodes[old].pause();
        new_leader(&cluster, old).await;
        load_for(Duration::from_millis(800)).await;
        // It wakes up believing it leads, with requests queued from before the pause.
        cluster.nodes[old].resume();
        cluster.wait_health(old, &[429, 473]).await;
    }
    let history = work.finish(&cluster).await;
    assert_valid("paused leader", &history);
}

/// A clean history from a small real run, for the checker tests below.
async fn small_clean_history() -> History {
    let cluster = TestCluster::start3().await;
    let options = WorkloadOptions { writers: 2, keys_per_writer: 2, max_writes_per_writer: 12, subscribers: 2 };
    let work = Workload::start(&cluster, options).await;
    work.wait_writes(24).await;
    work.finish(&cluster).await
}

/// Asserts that `history` has a violation mentioning `expected`.
fn assert_caught(history: &History, broken: &str, expected: &str) {
    let violations = check(history);
    assert!(
        violations.iter().any(|v| v.contains(expected)),
        "the checker missed {broken}: wanted a violation with {expected:?}, got {violations:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_every_kind_of_broken_history() {
    let clean = small_clean_history().await;
    assert_valid("clean run", &clean);

    let acked = clean.writes.iter().find(|w| matches!(w.outcome, Outcome::Acked(_))).expect("an acked write").clone();
    let Outcome::Acked(version) = acked.outcome else { unreachable!() };

    // (a) an acknowledged write lost on every node.
    let mut broken = clean.clone();
    for state in &mut broken.state {
        state.get_mut(&acked.key).expect("key").remove(&version);
    }
    assert_caught(&broken, "a lost acknowledged write", "is missing");

    // (a) an acknowledged version holding another value.
    let mut broken = clean.clone();
    for state in &mut broken.state {
        state.get_mut(&acked.key).expect("key").insert(version, Some("w9-9".into()));
    }
    assert_caught(&broken, "a version overwritten", "that version holds");

    // (b) a write applied twice (a retry that was not idempotent).
    let mut broken = clean.clone();
    for state in &mut broken.state {
        state.get_mut(&acked.key).expect("key").insert(1000, Some(acked.payload.clone()));
    }
    assert_caught(&broken, "a duplicated write", "is stored twice");

    // (b) a value nobody wrote.
    let mut broken = clean.clone();
    for state in &mut broken.state {
        state.get_mut(&acked.key).expect("key").insert(1001, Some("invented".into()));
    }
    assert_caught(&broken, "an invented value", "never written");

    // (b) a rejected write that is present anyway.
    let mut broken = clean.clone();
    let index = broken.writes.iter().position(|w| w.payload == acked.payload).expect("write");
    broken.writes[index].outcome = Outcome::Failed("400".into());
    assert_caught(&broken, "a rejected write applied", "was rejected but is stored");

    // Nodes that disagree on the data.
    let mut broken = clean.clone();
    broken.state[1].get_mut(&acked.key).expect("key").remove(&version);
    assert_caught(&broken, "diverged data", "holds different data");

    // (c) a gap in a subscriber's stream.
    let mut broken = clean.clone();
    let middle = broken.streams[0].events.len() / 2;
    broken.streams[0].events.remove(middle);
    assert_caught(&broken, "a skipped event", "gap");

    // (c) a duplicated event.
    let mut broken = clean.clone();
    let again = broken.streams[1].events[middle].clone();
    broken.streams[1].events.insert(middle + 1, again);
    assert_caught(&broken, "a repeated event", "duplicate");

    // (c) a stream that never completed.
    let mut broken = clean.clone();
    broken.streams[0].complete = false;
    assert_caught(&broken, "an incomplete stream", "never received the fence");

    // (c) an event that does not match the log.
    let mut broken = clean.clone();
    broken.streams[1].events[middle].id = "not-the-id".into();
    assert_caught(&broken, "an event differing from the log", "differs from the event log");

    // (d) one node's event log differs.
    let mut broken = clean.clone();
    broken.logs[2][middle]["time"] = json!("2000-01-01T00:00:00Z");
    assert_caught(&broken, "a diverged event log", "event log differs");
}

/// A really broken cluster, not an edited history: two nodes' disks "lose" their recent fsynced writes (their data
/// directories are put back to an older copy, as a disk that lies about fsync would), the third is gone, and the
/// two elect each other. The checker must report the acknowledged writes they lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_writes_lost_by_a_lying_disk() {
    let mut cluster = TestCluster::start3().await;
    let options = WorkloadOptions { writers: 2, keys_per_writer: 2, max_writes_per_writer: 10, subscribers: 0 };
    // First writes, then an "old disk image" of two nodes.
    let early = Workload::start(&cluster, options.clone()).await;
    early.wait_writes(20).await;
    let early = early.finish(&cluster).await;
    assert_valid("before the disks lie", &early);
    let leader = cluster.leader().await;
    let others = cluster.others(leader);
    let (a, b) = (others[0], others[1]);
    let mut images = Vec::new();
    for &i in &[a, b] {
        cluster.kill(i);
        let image = cluster.nodes[i].dir.join("data-image");
        copy_dir(&cluster.nodes[i].dir.join("data"), &image);
        images.push((i, image));
        cluster.restart(i).await;
    }
    cluster.wait_stable().await;
    // More acknowledged writes, which the images do not have.
    let work = Workload::start(&cluster, WorkloadOptions { max_writes_per_writer: 10, ..options }).await;
    work.wait_writes(20).await;
    let mut later = work.finish(&cluster).await;
    assert_valid("the later writes before the disks lie", &later);
    // Crash everything; the two nodes come back with their old images, the third never comes back.
    for i in 0..3 {
        cluster.kill(i);
    }
    for (i, image) in &images {
        let data = cluster.nodes[*i].dir.join("data");
        std::fs::remove_dir_all(&data).expect("remove data");
        copy_dir(image, &data);
        cluster.restart(*i).await;
    }
    wait_for("a leader among the two", WAIT, || async {
        for i in [a, b] {
            if cluster.health(i).await == Some(200) {
                return Some(());
            }
        }
        None
    })
    .await;
    // Read back what survived, and judge both phases' writes by it.
    cluster.wait_stable().await;
    later.writes.extend(early.writes);
    let keys = later.writes.iter().map(|w| w.key.clone()).collect();
    later.state = vec![history::read_state(&cluster, a, &keys).await, history::read_state(&cluster, b, &keys).await];
    later.logs.clear();
    assert_caught(&later, "writes lost by a lying disk", "is missing");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
