//! `eventbus topic create|list`: partitioned topics, and where their partitions live.

use clap::{Args, Subcommand};
use eventbus_redis::{RedisTransport, TopicInfo};
use serde_json::json;

use crate::format::{count, Align, Table};
use crate::output::{print_line, print_table, print_text, CliResult};

#[derive(Subcommand)]
pub(crate) enum TopicAction {
    /// Give an event type N partitions (a count only grows). Events with the same partition
    /// key keep their order within one count; after a raise a key may move to another
    /// partition.
    Create(CreateArgs),
    /// Every topic of the namespace with its partitions: stream, cluster slot, node, length.
    List(ListArgs),
}

#[derive(Args)]
pub(crate) struct CreateArgs {
    /// The event type.
    event_type: String,
    /// How many partitions it has (1 to 1024).
    #[arg(long)]
    partitions: u32,
    /// Print JSON instead of a sentence.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(transport: RedisTransport, action: TopicAction) -> CliResult {
    match action {
        TopicAction::Create(args) => {
            let n = transport
                .create_topic(&args.event_type, args.partitions)
                .await?;
            if args.json {
                print_line(&json!({ "topic": args.event_type, "partitions": n }))
            } else {
                print_text(format_args!(
                    "topic `{}` has {}",
                    args.event_type,
                    count(u64::from(n), "partition", "partitions")
                ))
            }
        }
        TopicAction::List(args) => {
            let topics = transport.topics().await?;
            if args.json {
                print_line(&serde_json::to_value(&topics).map_err(|e| e.to_string())?)
            } else if topics.is_empty() {
                print_text(format_args!(
                    "no topics in namespace `{}`",
                    transport.keys().namespace()
                ))
            } else {
                print_table(&topic_table(&topics))
            }
        }
    }
}

/// One row per partition; the node is `-` on a single node.
fn topic_table(topics: &[TopicInfo]) -> Table {
    let mut table = Table::new(&[
        ("TOPIC", Align::Left),
        ("PARTITION", Align::Right),
        ("STREAM", Align::Left),
        ("SLOT", Align::Right),
        ("NODE", Align::Left),
        ("LENGTH", Align::Right),
    ]);
    for topic in topics {
        for p in &topic.partitions {
            table.row(vec![
                topic.topic.to_string(),
                p.index.to_string(),
                p.stream.clone(),
                p.slot.to_string(),
                p.node.clone().unwrap_or_else(|| "-".to_string()),
                p.length.to_string(),
            ]);
        }
    }
    table
}
