//! What the server spends per event: Redis's own CPU counters (`INFO cpu`, user + system,
//! in µs) around a scenario, divided by its events, next to the same for the bare commands
//! the bus needs to move an event (XADD to each stream it writes, XREADGROUP, XACK) sent by a
//! plain client in the same batches. `INFO` counts the whole server: run the bench against a
//! server nothing else uses.

use anyhow::Context as _;
use eventbus_redis::codec;
use redis::aio::MultiplexedConnection;

use crate::support::{self, BenchEvent};

/// The server's CPU time so far, µs (user + system, every thread).
pub async fn cpu_us(conn: &mut MultiplexedConnection) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(conn).await?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let (user, sys) = (field("used_cpu_user"), field("used_cpu_sys"));
    Ok((user.context("no used_cpu_user")? + sys.context("no used_cpu_sys")?) * 1e6)
}

/// A connection for reading the counters.
pub async fn connect(url: &str) -> anyhow::Result<MultiplexedConnection> {
    Ok(redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?)
}

/// Server CPU µs per event of `n` events moved by bare commands, `batch` at a time: one
/// pipeline of XADDs (to the type stream, and with `global` the global stream too, as the
/// bus writes them), one XREADGROUP of the batch, one XACK of its ids.
pub async fn bare(url: &str, n: u64, batch: u64, global: bool) -> anyhow::Result<f64> {
    let mut conn = connect(url).await?;
    let ns = support::namespace("bare");
    let (stream, all) = (
        format!("{ns}:stream:BenchEvent"),
        format!("{ns}:stream:all"),
    );
    let envelope = eventbus_core::Envelope::from_event("bench", BenchEvent::new(0)).to_raw()?;
    let fields = codec::encode(&envelope)?;
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("bare")
        .arg("0")
        .arg("MKSTREAM")
        .query_async::<()>(&mut conn)
        .await?;
    let before = cpu_us(&mut conn).await?;
    let mut seq = 0;
    while seq < n {
        let count = batch.min(n - seq);
        let mut pipe = redis::pipe();
        for _ in 0..count {
            pipe.cmd("XADD").arg(&stream).arg("*").arg(&fields).ignore();
            if global {
                pipe.cmd("XADD").arg(&all).arg("*").arg(&fields).ignore();
            }
        }
        pipe.query_async::<()>(&mut conn).await?;
        let read: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("bare")
            .arg("c")
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(&stream)
            .arg(">")
            .query_async(&mut conn)
            .await?;
        let ids: Vec<String> = read
            .keys
            .iter()
            .flat_map(|k| k.ids.iter().map(|e| e.id.clone()))
            .collect();
        anyhow::ensure!(
            ids.len() as u64 == count,
            "bare: read {} of {count}",
            ids.len()
        );
        redis::cmd("XACK")
            .arg(&stream)
            .arg("bare")
            .arg(&ids)
            .query_async::<u64>(&mut conn)
            .await?;
        seq += count;
    }
    let after = cpu_us(&mut conn).await?;
    redis::cmd("DEL")
        .arg(&stream)
        .arg(&all)
        .query_async::<u64>(&mut conn)
        .await?;
    Ok((after - before) / n as f64)
}
