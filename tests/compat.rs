//! Compatibility with a real Vault client: `tests/python/hvac_compat.py` drives a 3-node cluster with hvac.
//!
//! The Python interpreter comes from `VIGIL_PYTHON` (set by `.ci/run`, which installs hvac into `.venv`) or
//! `.venv/bin/python`. Without one the test is skipped locally, but fails under CI, where it must run.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::TestCluster;

fn python() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("VIGIL_PYTHON") {
        return Some(PathBuf::from(path));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    venv.exists().then_some(venv)
}

#[tokio::test]
async fn hvac_drives_kv_v2_policies_and_tokens_across_the_cluster() {
    let Some(python) = python() else {
        assert!(std::env::var_os("CI").is_none(), "CI must provide VIGIL_PYTHON with hvac installed");
        eprintln!("skipped: no Python with hvac (set VIGIL_PYTHON or create .venv)");
        return;
    };
    let cluster = TestCluster::start3().await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/hvac_compat.py");
    let mut command = Command::new(python);
    command.arg(script).arg(&cluster.root_token);
    for node in &cluster.nodes {
        command.arg(node.api_addr());
    }
    let out = command.output().expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "hvac script failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("hvac compatibility: ") && stdout.contains(" checks passed"), "{stdout}");
}
