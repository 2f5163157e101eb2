//! `eventbus lag`: lag, pending entries and consumers of every stream and group.

use clap::Args;
use eventbus_core::transport::{GroupLag, StreamAdmin};
use eventbus_redis::{group_for_service, RedisTransport};
use serde_json::{json, Value};

use crate::format::{duration, Align, Table};
use crate::output::{print_line, print_table, print_text, CliResult};

#[derive(Args)]
pub(crate) struct LagArgs {
    /// Only this service's group.
    #[arg(long)]
    service: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(transport: RedisTransport, args: LagArgs) -> CliResult {
    let group = args.service.as_deref().map(group_for_service);
    let lags = transport.lag(group.as_deref()).await?;
    if args.json {
        print_json(&lags)
    } else if lags.is_empty() {
        let namespace = transport.keys().namespace();
        match group {
            Some(group) => print_text(format_args!(
                "no group `{group}` in namespace `{namespace}`"
            )),
            None => print_text(format_args!(
                "no consumer groups in namespace `{namespace}`"
            )),
        }
    } else {
        print_table(&lag_table(&lags))
    }
}

fn print_json(lags: &[GroupLag]) -> CliResult {
    let rows: Vec<Value> = lags
        .iter()
        .map(|l| {
            json!({
                "stream": l.topic.to_string(),
                "group": l.group,
                "lag": l.lag,
                "pending": l.pending,
                "oldest_pending_idle_ms": l.oldest_pending_idle.map(|d| d.as_millis() as u64),
                "consumers": l.consumers.iter().map(|c| json!({
                    "name": c.name, "pending": c.pending, "idle_ms": c.idle.as_millis() as u64,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    print_line(&Value::Array(rows))
}

/// One row per stream and group; idle times as human durations, `unknown` lag when the
/// server can't tell.
fn lag_table(lags: &[GroupLag]) -> Table {
    let mut table = Table::new(&[
        ("STREAM", Align::Left),
        ("GROUP", Align::Left),
        ("LAG", Align::Right),
        ("PENDING", Align::Right),
        ("OLDEST IDLE", Align::Right),
        ("CONSUMERS", Align::Left),
    ]);
    for l in lags {
        let consumers = l
            .consumers
            .iter()
            .map(|c| {
                format!(
                    "{} ({} pending, idle {})",
                    c.name,
                    c.pending,
                    duration(c.idle)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        table.row(vec![
            l.topic.to_string(),
            l.group.clone(),
            l.lag.map_or("unknown".to_string(), |n| n.to_string()),
            l.pending.to_string(),
            l.oldest_pending_idle.map_or("-".to_string(), duration),
            if consumers.is_empty() {
                "-".to_string()
            } else {
                consumers
            },
        ]);
    }
    table
}
