//! The cluster of one test process: started by the first behaviour test that runs on a
//! cluster, shared by the process's other cluster tests (each in a namespace of its own),
//! and stopped when the process ends, whether its tests passed, failed or were interrupted.
//!
//! Rust runs no destructors of statics, so a watchdog does the stopping: a `sh` loop in a
//! process group of its own (a Ctrl-C to the test's group doesn't stop it first), started
//! before the first node, that checks every second whether the test process is alive and,
//! once it isn't, stops every node it was told of (a file per node pid in its state
//! directory, written as each node starts) and removes the nodes' directories.

use std::fs;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use super::RedisCluster;

/// Stops the nodes listed in `$dir/pids` (each file holds the node's directory) once the
/// process `$owner` is gone, then removes `$dir`.
const WATCHDOG: &str = r#"
owner=$1; dir=$2
while kill -0 "$owner" 2>/dev/null; do sleep 1; done
for f in "$dir"/pids/*; do
  [ -e "$f" ] || continue
  pid=${f##*/}
  kill "$pid" 2>/dev/null
  for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null
  rm -rf "$(cat "$f")"
done
rm -rf "$dir"
"#;

/// Where a test process's cluster answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessCluster {
    /// Its `redis+cluster://` URL.
    pub url: String,
    /// The ports of all its nodes, masters and replicas.
    pub ports: Vec<u16>,
}

/// The cluster of this test process, started on the first call (on a thread and runtime of
/// its own, so it may be called from anywhere); later calls wait for it and share it. A
/// failed start panics in the test that needed the cluster, and the next one tries again.
pub fn process_cluster() -> &'static ProcessCluster {
    static CLUSTER: OnceLock<ProcessCluster> = OnceLock::new();
    static STARTING: Mutex<()> = Mutex::new(());
    if let Some(cluster) = CLUSTER.get() {
        return cluster;
    }
    let _one_at_a_time = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(cluster) = CLUSTER.get() {
        return cluster;
    }
    let started = std::thread::spawn(start).join();
    match started {
        Ok(cluster) => CLUSTER.get_or_init(|| cluster),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Starts the watchdog, then the cluster, and leaves the nodes to the watchdog.
fn start() -> ProcessCluster {
    let dir = std::env::temp_dir().join(format!(
        "eventbus-cluster-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    fs::create_dir_all(dir.join("pids")).expect("create the cluster watchdog's directory");
    watch(&dir);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime");
    let cluster = runtime.block_on(RedisCluster::start_with(|node| {
        let note = dir.join("pids").join(node.pid().to_string());
        if let Err(e) = fs::write(&note, node.dir().display().to_string()) {
            panic!("cannot tell the watchdog of node {}: {e}", node.pid());
        }
    }));
    let shared = ProcessCluster {
        url: cluster.url(),
        ports: cluster.ports(),
    };
    // The nodes now belong to the watchdog: dropping them here would stop them.
    std::mem::forget(cluster);
    shared
}

/// Starts the watchdog of this process's nodes in `dir`.
#[expect(
    clippy::zombie_processes,
    reason = "the watchdog outlives this process by design; init reaps it"
)]
fn watch(dir: &Path) {
    let owner = std::process::id().to_string();
    let dir: PathBuf = dir.to_path_buf();
    Command::new("sh")
        .args(["-c", WATCHDOG, "cluster-watchdog", &owner])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start the cluster's watchdog (`sh`)");
}
