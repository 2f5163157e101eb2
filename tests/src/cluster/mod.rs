//! A local Redis Cluster of 3 masters and 3 replicas for the tests: every node a
//! `redis-server --cluster-enabled yes` of the test's own on free ports, joined with
//! `redis-cli --cluster create … --cluster-replicas 1` (or the server and client named by
//! `EVENTBUS_TEST_SERVER` and `EVENTBUS_TEST_CLI`, see [`binaries`](crate::binaries)), stopped (by pid) when dropped; and
//! the cluster a test process shares between its behaviour tests ([`process_cluster`]).

mod shared;

use std::time::Duration;

use crate::binaries::cli_command;
use crate::RedisServer;

pub use shared::{process_cluster, ProcessCluster};

/// A running cluster; dropping it stops every node.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

impl RedisCluster {
    /// Starts 6 nodes, creates the cluster, and waits until every node reports
    /// `cluster_state:ok` and every replica is in sync with its master (so that killing a
    /// master fails over to it).
    pub async fn start() -> Self {
        RedisCluster::start_with(|_| {}).await
    }

    /// [`start`](Self::start), calling `started` with each node as soon as it runs (before
    /// the cluster is formed), so a watchdog can learn of it.
    pub async fn start_with(mut started: impl FnMut(&RedisServer)) -> Self {
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let bus = free_port().to_string();
            let node = RedisServer::start(&[
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus,
                "--cluster-node-timeout",
                "2000",
                "--cluster-config-file",
                "nodes.conf",
                "--repl-diskless-sync-delay",
                "0",
            ])
            .await;
            started(&node);
            nodes.push(node);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let status = cli_command(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "creating a cluster runs `{}` (on the PATH, or set EVENTBUS_TEST_CLI): {e}",
                    crate::binaries::cli().display()
                )
            });
        assert!(
            status.success(),
            "{} --cluster create failed: {status}",
            crate::binaries::cli().display()
        );
        let cluster = RedisCluster { nodes };
        for _ in 0..200 {
            if cluster.nodes.iter().all(|n| cluster_ok(n.port())) && cluster.synced_replicas() == 3
            {
                return cluster;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the cluster on {addresses:?} did not reach cluster_state:ok in 20 s");
    }

    /// `redis+cluster://` with the first three nodes as seeds.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .take(3)
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// The nodes' ports.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// The port of the master holding `key` (the node that answers `EXISTS` with 1; the
    /// others answer `MOVED`).
    pub fn owner_of(&self, key: &str) -> Option<u16> {
        self.nodes.iter().map(RedisServer::port).find(|port| {
            cli_command(["-p", &port.to_string(), "exists", key])
                .output()
                .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "1")
        })
    }

    /// SIGKILLs the node on `port` (its replica takes over after `cluster-node-timeout`).
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port() == port) {
            node.kill();
        }
    }
}

impl RedisCluster {
    /// How many nodes are replicas with their link to the master up.
    fn synced_replicas(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| {
                cli_command(["-p", &n.port().to_string(), "info", "replication"])
                    .output()
                    .is_ok_and(|out| {
                        let info = String::from_utf8_lossy(&out.stdout);
                        info.contains("role:slave") && info.contains("master_link_status:up")
                    })
            })
            .count()
    }
}

fn cluster_ok(port: u16) -> bool {
    cli_command(["-p", &port.to_string(), "cluster", "info"])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok"))
}
