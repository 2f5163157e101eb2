//! `eventbus lag`: lag, pending entries and consumers of every stream and group.

use clap::Args;
use eventbus_core::transport::{GroupLag, StreamAdmin};
use eventbus_redis::{group_for_service, RedisTransport};
use serde_json::{json, Value};

use super::{print_line, print_text, CliResult};

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
    } else {
        print_table(&lags)
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

fn print_table(lags: &[GroupLag]) -> CliResult {
    print_text(format_args!(
        "{:<28} {:<30} {:>9} {:>9} {:>14}  consumers",
        "STREAM", "GROUP", "LAG", "PENDING", "OLDEST IDLE"
    ))?;
    for l in lags {
        let consumers = l
            .consumers
            .iter()
            .map(|c| {
                format!(
                    "{}({} pending, idle {}ms)",
                    c.name,
                    c.pending,
                    c.idle.as_millis()
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        print_text(format_args!(
            "{:<28} {:<30} {:>9} {:>9} {:>14}  {}",
            l.topic.to_string(),
            l.group,
            l.lag.map_or("unknown".to_string(), |n| n.to_string()),
            l.pending,
            l.oldest_pending_idle
                .map_or("-".to_string(), |d| format!("{}ms", d.as_millis())),
            if consumers.is_empty() {
                "-".to_string()
            } else {
                consumers
            }
        ))?;
    }
    Ok(())
}
