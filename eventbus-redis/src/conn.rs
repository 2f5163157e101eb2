//! [`Conn`]: the one connection type every Redis feature of this crate sends commands
//! through — a single node's reconnecting multiplexed connection, or a cluster connection
//! that routes each command to the node owning its keys (following `MOVED`/`ASK`).

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::partition::slot::{Master, SLOTS};

/// A connection to a single node or to a cluster; cheap to clone (clones share it).
#[derive(Clone)]
pub(crate) enum Conn {
    /// One node, reconnecting with backoff.
    Single(ConnectionManager),
    /// A cluster: commands routed by key slot, topology refreshed on `MOVED`.
    Cluster(ClusterConnection),
    /// One node, without reconnecting: for the checks made once when connecting.
    Plain(MultiplexedConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Plain(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Plain(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Plain(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// The masters of the cluster with the slots they serve (`CLUSTER SLOTS`); a single node
    /// serves every slot.
    pub(crate) async fn cluster_masters(&mut self) -> RedisResult<Vec<Master>> {
        match self {
            Conn::Cluster(cluster) => slot_masters(cluster).await,
            _ => Ok(vec![Master {
                address: String::new(),
                ranges: vec![(0, SLOTS - 1)],
            }]),
        }
    }

    /// Every key `SCAN` finds for `pattern` (of `key_type`, when given): on the node, or on
    /// every master of a cluster, each scanned to the end.
    pub(crate) async fn scan(
        &mut self,
        pattern: &str,
        key_type: Option<&str>,
    ) -> RedisResult<Vec<String>> {
        let mut keys = Vec::new();
        match self {
            Conn::Cluster(cluster) => {
                for (host, port) in masters(cluster).await? {
                    let route =
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
                    let mut cursor = 0u64;
                    loop {
                        let reply = cluster
                            .route_command(scan_cmd(cursor, pattern, key_type), route.clone())
                            .await?;
                        let (next, batch): (u64, Vec<String>) = redis::from_redis_value(reply)?;
                        keys.extend(batch);
                        if next == 0 {
                            break;
                        }
                        cursor = next;
                    }
                }
            }
            node => {
                let mut cursor = 0u64;
                loop {
                    let (next, batch): (u64, Vec<String>) = scan_cmd(cursor, pattern, key_type)
                        .query_async(node)
                        .await?;
                    keys.extend(batch);
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
        }
        Ok(keys)
    }
}

/// One `SCAN` step.
fn scan_cmd(cursor: u64, pattern: &str, key_type: Option<&str>) -> Cmd {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(500);
    if let Some(t) = key_type {
        cmd.arg("TYPE").arg(t);
    }
    cmd
}

/// The masters of a cluster (host, port), from `CLUSTER SLOTS`.
async fn masters(cluster: &mut ClusterConnection) -> RedisResult<Vec<(String, u16)>> {
    Ok(slot_masters(cluster)
        .await?
        .into_iter()
        .filter_map(|m| {
            let (host, port) = m.address.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect())
}

/// The masters of a cluster with their slot ranges, from `CLUSTER SLOTS`: each slot range
/// names its master first.
async fn slot_masters<C: ConnectionLike + Send>(conn: &mut C) -> RedisResult<Vec<Master>> {
    let ranges: Vec<Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
    let mut masters: Vec<Master> = Vec::new();
    for range in ranges {
        let Value::Array(parts) = range else { continue };
        let (Some(first), Some(last), Some(Value::Array(master))) =
            (parts.first(), parts.get(1), parts.get(2))
        else {
            continue;
        };
        let (Some(host), Some(port)) = (master.first(), master.get(1)) else {
            continue;
        };
        let host: String = redis::from_redis_value(host.clone())?;
        let port: u16 = redis::from_redis_value(port.clone())?;
        let first: u16 = redis::from_redis_value(first.clone())?;
        let last: u16 = redis::from_redis_value(last.clone())?;
        let address = format!("{host}:{port}");
        match masters.iter_mut().find(|m| m.address == address) {
            Some(m) => m.ranges.push((first, last)),
            None => masters.push(Master {
                address,
                ranges: vec![(first, last)],
            }),
        }
    }
    Ok(masters)
}
