//! The `vigil` command line against a real cluster: what a user types, what they see, and the exit codes.

mod common;

use common::{run_vigil, TestCluster};

#[tokio::test]
async fn cli_reads_writes_lists_and_reports_cluster_state() {
    let cluster = TestCluster::start3().await;
    let leader = cluster.leader().await;
    let follower = cluster.others(leader)[0];
    let via_follower = cluster.nodes[follower].api_addr();
    let via_leader = cluster.nodes[leader].api_addr();

    let (code, out, err) = cluster.run_cli(&["kv", "put", "kv/app/db", "user=alice", "n=7"], &via_follower);
    assert_eq!((code, out.trim()), (0, "Success! Data written to: kv/app/db"), "{err}");

    let (code, out, err) = cluster.run_cli(&["kv", "get", "-format=json", "kv/app/db"], &via_follower);
    assert_eq!(code, 0, "{err}");
    let body: serde_json::Value = serde_json::from_str(&out).expect("json output");
    assert_eq!(body["data"], serde_json::json!({ "user": "alice", "n": "7" }));

    let (code, out, _) = cluster.run_cli(&["read", "kv/app/db"], &via_leader);
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["user", "alice"]), "{out}");

    let (code, out, _) = cluster.run_cli(&["list", "kv/"], &via_leader);
    assert_eq!((code, out.lines().last().map(str::trim)), (0, Some("app/")), "{out}");

    let (code, out, _) = cluster.run_cli(&["operator", "raft", "list-peers"], &via_follower);
    assert_eq!(code, 0);
    let leader_row = out.lines().find(|l| l.contains("leader")).expect("a leader row");
    assert!(leader_row.starts_with(&cluster.nodes[leader].name), "{out}");
    assert_eq!(out.lines().filter(|l| l.contains("follower")).count(), 2, "{out}");

    let (code, out, _) = cluster.run_cli(&["status"], &via_follower);
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l.contains("HA Mode") && l.contains("perf-standby")), "{out}");

    // Errors print the server's message and exit non-zero.
    let (code, _, err) = cluster.run_cli(&["read", "kv/missing"], &via_leader);
    assert_eq!((code, err.trim()), (2, "No value found at kv/missing"));
    let (code, _, err) = cluster.run_cli(&["write", "nomount/x", "a=b"], &via_leader);
    assert_eq!(code, 2);
    assert!(err.contains("Code: 404") && err.contains("no handler for route"), "{err}");
    let (code, _, err) = run_vigil(&["read", "kv/app/db"], &[("VIGIL_ADDR", &via_leader)], std::path::Path::new("."));
    assert_eq!(code, 2);
    assert!(err.contains("Code: 403") && err.contains("permission denied"), "{err}");

    let (code, out, _) = cluster.run_cli(&["kv", "delete", "kv/app/db"], &via_follower);
    assert_eq!((code, out.trim()), (0, "Success! Data deleted (if it existed) at: kv/app/db"));
}

#[tokio::test]
async fn operator_init_and_join_build_a_cluster() {
    let mut cluster = TestCluster::start(common::ClusterOptions { nodes: 1, ..Default::default() }).await;
    let fresh = cluster.add_node_process();
    cluster.wait_health(fresh, &[501]).await;
    let (code, out, err) =
        cluster.run_cli(&["operator", "raft", "join", &cluster.nodes[0].api_addr()], &cluster.nodes[fresh].api_addr());
    assert_eq!(code, 0, "{out}{err}");
    cluster.wait_stable().await;
    assert_eq!(cluster.health(fresh).await, Some(473));

    // `operator init` on an initialized node fails with the server's message.
    let (code, _, err) = cluster.run_cli(&["operator", "init"], &cluster.nodes[0].api_addr());
    assert_eq!(code, 2);
    assert!(err.contains("Vigil is already initialized"), "{err}");
}
