//! `eventbus tail`: follow a stream without a consumer group.

use std::time::Duration;

use clap::Args;
use eventbus_core::transport::Topic;
use eventbus_core::StartFrom;
use eventbus_redis::RedisTransport;

use crate::consume::shutdown_signal;
use crate::output::{print_event, CliResult, FormatArg};

#[derive(Args)]
pub(crate) struct TailArgs {
    /// Event type, or `all` for the global stream.
    stream: String,
    /// Start from the beginning of the stream instead of new events.
    #[arg(long)]
    from_beginning: bool,
    /// Exit after this many events (1 or more).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    #[command(flatten)]
    format: FormatArg,
}

pub(crate) async fn run(transport: RedisTransport, args: TailArgs) -> CliResult {
    let topic = if args.stream == "all" {
        Topic::All
    } else {
        Topic::of_type(&args.stream)
    };
    let from = if args.from_beginning {
        StartFrom::Beginning
    } else {
        StartFrom::New
    };
    let mut tail = transport.tail(&topic, from).await?;
    // Best effort: a user without `XINFO GROUPS` gets no hint. A partitioned topic (several
    // streams, or a tagged one) gets none either: its partitions are made as events arrive.
    let plain = tail
        .streams()
        .eq([transport.keys().stream(&topic).as_str()]);
    if plain && matches!(transport.stream_summary(&topic).await, Ok(None)) {
        eprintln!(
            "eventbus: stream `{topic}` (key `{}`) does not exist yet; waiting for its first event",
            transport.keys().stream(&topic)
        );
    }
    let mut printed = 0u64;
    loop {
        let want = args
            .count
            .map_or(256, |c| c.saturating_sub(printed).min(256) as usize);
        if want == 0 {
            return Ok(());
        }
        let read = tokio::select! {
            r = tail.next_batch(want, Duration::from_secs(1)) => r?,
            _ = shutdown_signal() => return Ok(()),
        };
        for (id, entry) in read {
            match entry {
                Ok(e) => print_event(args.format.format, &id, &e)?,
                Err(m) => eprintln!("eventbus: entry {id} is malformed: {m}"),
            }
            printed += 1;
        }
    }
}
