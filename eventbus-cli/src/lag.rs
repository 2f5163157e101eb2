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
    print_line(&Value::Array(lags.iter().map(lag_json).collect()))
}

/// One stream and group as JSON (`lag --json`, and the console's overview).
pub(crate) fn lag_json(l: &GroupLag) -> Value {
    json!({
        "stream": l.topic.to_string(),
        "partition": l.partition,
        "group": l.group,
        "lag": l.lag,
        "pending": l.pending,
        "oldest_pending_idle_ms": l.oldest_pending_idle.map(|d| d.as_millis() as u64),
        "consumers": l.consumers.iter().map(|c| json!({
            "name": c.name, "pending": c.pending, "idle_ms": c.idle.as_millis() as u64,
        })).collect::<Vec<_>>(),
    })
}

/// One row per stream and group; idle times as human durations, `unknown` lag when the
/// server can't tell. With partitioned topics, a PARTITION column, and after the rows of a
/// topic and group with several partitions a `total` row.
fn lag_table(lags: &[GroupLag]) -> Table {
    let partitioned = lags.iter().any(|l| l.partition.is_some());
    let mut columns = vec![("STREAM", Align::Left)];
    if partitioned {
        columns.push(("PARTITION", Align::Right));
    }
    columns.extend([
        ("GROUP", Align::Left),
        ("LAG", Align::Right),
        ("PENDING", Align::Right),
        ("OLDEST IDLE", Align::Right),
        ("CONSUMERS", Align::Left),
    ]);
    let mut table = Table::new(&columns);
    let mut start = 0;
    while start < lags.len() {
        // The rows of one topic and group (`lag` sorts them together).
        let same = |l: &GroupLag| l.topic == lags[start].topic && l.group == lags[start].group;
        let end = start + lags[start..].iter().take_while(|l| same(l)).count();
        let rows = &lags[start..end];
        for l in rows {
            let partition = l.partition.map_or("-".to_string(), |p| p.to_string());
            table.row(lag_row(l, partitioned.then_some(partition)));
        }
        if rows.len() > 1 {
            if let Some(total) = GroupLag::total(rows.iter().cloned()) {
                table.row(lag_row(&total, Some("total".to_string())));
            }
        }
        start = end;
    }
    table
}

/// The cells of one row; `partition` is the PARTITION cell, when the table has the column.
fn lag_row(l: &GroupLag, partition: Option<String>) -> Vec<String> {
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
    let mut cells = vec![l.topic.to_string()];
    cells.extend(partition);
    cells.extend([
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
    cells
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventbus_core::transport::Topic;

    fn row(topic: &str, partition: Option<u32>, lag: u64) -> GroupLag {
        GroupLag {
            topic: Topic::of_type(topic),
            partition,
            group: "g".into(),
            lag: Some(lag),
            pending: 1,
            oldest_pending_idle: None,
            consumers: vec![],
        }
    }

    #[test]
    fn partitioned_topics_get_a_partition_column_and_a_total_row() {
        let table = lag_table(&[
            row("A", Some(0), 1),
            row("A", Some(1), 2),
            row("B", None, 5),
        ]);
        assert_eq!(
            table.lines(),
            [
                "STREAM  PARTITION  GROUP  LAG  PENDING  OLDEST IDLE  CONSUMERS",
                "A               0  g        1        1            -  -",
                "A               1  g        2        1            -  -",
                "A           total  g        3        2            -  -",
                "B               -  g        5        1            -  -",
            ]
        );
        // Without partitions, no column.
        assert_eq!(
            lag_table(&[row("B", None, 5)]).lines()[0],
            "STREAM  GROUP  LAG  PENDING  OLDEST IDLE  CONSUMERS"
        );
    }
}
