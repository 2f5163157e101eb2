//! `eventbus dlq list|replay|purge`: a group's dead letters.

use clap::{Args, Subcommand};
use eventbus_core::transport::{DeadLetter, StreamAdmin};
use eventbus_core::EntryId;
use eventbus_redis::{group_for_service, RedisTransport};
use serde_json::{json, Value};

use crate::format::{age, count, truncate, Align, Table};
use crate::output::{event_line, print_line, print_table, print_text, CliResult};

/// Characters of a dead letter's error shown in the table (`--json` has all of it).
const ERROR_WIDTH: usize = 48;
/// Characters of a dead letter's payload shown in the table (`--json` has all of it).
const PAYLOAD_WIDTH: usize = 60;

#[derive(Subcommand)]
pub(crate) enum DlqAction {
    /// List dead letters, oldest first.
    List(DlqArgs),
    /// Re-publish dead letters to their origin streams, byte for byte, and remove them.
    Replay(DlqArgs),
    /// Delete dead letters.
    Purge(DlqArgs),
}

#[derive(Args)]
pub(crate) struct DlqArgs {
    /// The service whose group's dead letters to act on.
    #[arg(long)]
    service: String,
    /// Only this dead letter (repeatable); default: all.
    #[arg(long)]
    id: Vec<String>,
    /// Print one JSON object per dead letter (list: with the whole event and fields).
    #[arg(long)]
    json: bool,
    /// At most this many (list only).
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

impl DlqArgs {
    fn ids(&self) -> Option<Vec<EntryId>> {
        (!self.id.is_empty()).then(|| self.id.clone())
    }
}

pub(crate) async fn run(transport: RedisTransport, action: DlqAction) -> CliResult {
    match action {
        DlqAction::List(args) => list(transport, args).await,
        DlqAction::Replay(args) => {
            let group = group_for_service(&args.service);
            let n = transport
                .replay_dead_letters(&group, args.ids().as_deref())
                .await?;
            report(args.json, "replayed", n)
        }
        DlqAction::Purge(args) => {
            let group = group_for_service(&args.service);
            let n = transport
                .purge_dead_letters(&group, args.ids().as_deref())
                .await?;
            report(args.json, "purged", n)
        }
    }
}

fn report(json: bool, verb: &str, n: usize) -> CliResult {
    if json {
        print_line(&json!({ verb: n }))
    } else {
        print_text(format_args!(
            "{verb} {}",
            count(n as u64, "dead letter", "dead letters")
        ))
    }
}

async fn list(transport: RedisTransport, args: DlqArgs) -> CliResult {
    let group = group_for_service(&args.service);
    let mut letters = transport.dead_letters(&group, args.limit).await?;
    if let Some(ids) = args.ids() {
        letters.retain(|d| ids.contains(&d.id));
    }
    if args.json {
        for d in &letters {
            print_line(&dead_letter_json(d))?;
        }
        return Ok(());
    }
    if letters.is_empty() {
        return print_text(format_args!("no dead letters in group `{group}`"));
    }
    print_table(&dead_letter_table(&letters))?;
    eprintln!(
        "eventbus: {} in group `{group}`",
        count(letters.len() as u64, "dead letter", "dead letters")
    );
    Ok(())
}

/// One row per dead letter: its id, the stream it came from, how often it was tried, how long ago it
/// died, why, and the start of its payload (the event's data, or the raw `data` field of an
/// entry that could not be decoded).
fn dead_letter_table(letters: &[DeadLetter]) -> Table {
    let mut table = Table::new(&[
        ("ID", Align::Left),
        ("STREAM", Align::Left),
        ("TYPE", Align::Left),
        ("DELIVERIES", Align::Right),
        ("AGE", Align::Right),
        ("ERROR", Align::Left),
        ("PAYLOAD", Align::Left),
    ]);
    for d in letters {
        let payload = match payload(d) {
            Value::String(raw) if d.event.is_none() => raw,
            Value::Null => String::new(),
            data => data.to_string(),
        };
        table.row(vec![
            d.id.clone(),
            d.origin_topic.to_string(),
            d.event
                .as_ref()
                .map_or("(undecodable)".to_string(), |e| e.event_type.clone()),
            d.reason.delivery_count.to_string(),
            age(d.dead_lettered_at),
            truncate(&d.reason.error, ERROR_WIDTH),
            truncate(&payload, PAYLOAD_WIDTH),
        ]);
    }
    table
}

/// What a dead letter carried: the event's data, or the raw `data` field of an entry that
/// could not be decoded (`null` without one).
pub(crate) fn payload(d: &DeadLetter) -> Value {
    match &d.event {
        Some(e) => e.data.clone(),
        None => d
            .fields
            .iter()
            .find(|(k, _)| k == "data")
            .map_or(Value::Null, |(_, v)| Value::String(v.clone())),
    }
}

/// A dead letter as JSON. `fields` shows bytes that are not UTF-8 as U+FFFD; replay copies
/// the stored bytes, not these.
pub(crate) fn dead_letter_json(d: &DeadLetter) -> Value {
    json!({
        "id": d.id,
        "origin_stream": d.origin_topic.to_string(),
        "origin_id": d.origin_id,
        "group": d.group,
        "consumer": d.reason.consumer,
        "error": d.reason.error,
        "delivery_count": d.reason.delivery_count,
        "dead_lettered_at": d.dead_lettered_at,
        "event": d.event.as_ref().map(|e| event_line(&d.origin_id, e)),
        "fields": d.fields.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
    })
}
