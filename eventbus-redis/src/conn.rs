//! [`Conn`]: the one connection type every Redis feature of this crate sends commands
//! through — a single node's reconnecting multiplexed connection, or a cluster connection
//! that routes each command to the node owning its keys (following `MOVED`/`ASK`).

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

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
