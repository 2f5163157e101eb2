//! The invariants checked after a scenario, from the stream, the handlers' logs, the
//! projection's counters, the dead letters and the groups' pending entries.

use std::collections::{BTreeMap, BTreeSet};

use eventbus_core::transport::{StreamAdmin, Topic};
use eventbus_redis::RedisTransport;

use super::procs::Procs;
use super::{Scenario, GROUP};

/// What the checks found.
pub struct Report {
    /// Violated invariants, each naming events and processes.
    pub violations: Vec<String>,
    /// Facts worth reading (duplicates excused by a kill…).
    pub notes: Vec<String>,
}

/// A published event, as read back from the stream.
struct Published {
    entry_id: String,
    poison: bool,
}

/// One line of a consumer's handler log.
#[derive(Debug)]
struct Handled {
    consumer: String,
    pid: u32,
}

fn sample<T: std::fmt::Debug>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<T> = items.into_iter().collect();
    let shown: Vec<String> = items.iter().take(15).map(|i| format!("{i:?}")).collect();
    let more = if items.len() > 15 { ", …" } else { "" };
    format!("{} [{}{more}]", items.len(), shown.join(", "))
}

/// Checks the invariants after a scenario:
///
/// 0. the stream holds every sequence number exactly once (publishers lost nothing and
///    published nothing twice);
/// 1. every published event except the poison was handled at least once;
/// 2. no event was handled by two live consumers: of the handlings of one event, at most one
///    is by a process that was not killed (a killed one may have died before acking);
/// 3. the projection applied every published event exactly once (`applied:{seq}` is 1);
/// 4. the handlers' dead letters hold exactly the poison events, once each, and the
///    projection's none;
/// 5. nothing is left pending and nothing unread, in either group.
pub async fn check(
    scenario: &Scenario,
    url: &str,
    ns: &str,
    transport: &RedisTransport,
    procs: &Procs,
) -> Report {
    let mut violations = Vec::new();
    let mut notes = Vec::new();

    // 0. What was really published: the stream.
    let mut published: BTreeMap<u64, Published> = BTreeMap::new();
    let mut twice = Vec::new();
    let key = eventbus_redis::Keys::new(ns).stream(&Topic::of_type("FaultEvent"));
    let client = redis::Client::open(url).expect("server URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect the checker");
    // In pages, so that a long run's stream never meets the connection's response timeout.
    let mut all = Vec::new();
    let mut start = "-".to_owned();
    loop {
        let page: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(&key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(500)
            .query_async(&mut conn)
            .await
            .expect("XRANGE the event stream");
        let full = page.ids.len() == 500;
        if let Some(last) = page.ids.last() {
            start = format!("({}", last.id);
        }
        all.extend(page.ids);
        if !full {
            break;
        }
    }
    for entry in &all {
        let fields: Vec<(String, Vec<u8>)> = entry
            .map
            .iter()
            .map(|(k, v)| {
                let v: Vec<u8> = redis::from_redis_value(v.clone()).expect("field value bytes");
                (k.clone(), v)
            })
            .collect();
        let event = eventbus_redis::codec::decode(&fields).expect("published entries decode");
        let seq = event.data["seq"].as_u64().expect("seq");
        let poison = event.data["poison"].as_bool().unwrap_or(false);
        let previous = published.insert(
            seq,
            Published {
                entry_id: entry.id.clone(),
                poison,
            },
        );
        if let Some(p) = previous {
            twice.push((seq, p.entry_id, entry.id.clone()));
        }
    }
    let missing: Vec<u64> = (0..scenario.events)
        .filter(|s| !published.contains_key(s))
        .collect();
    if !missing.is_empty() {
        violations.push(format!(
            "published: sequence numbers missing from the stream (publishers never finished \
             or lost acknowledged batches): {}",
            sample(&missing)
        ));
    }
    if !twice.is_empty() {
        violations.push(format!(
            "published: sequence numbers in the stream twice (seq, entry, entry): {}",
            sample(&twice)
        ));
    }
    let poison: BTreeSet<u64> = published
        .iter()
        .filter(|(_, p)| p.poison)
        .map(|(s, _)| *s)
        .collect();

    // 1 and 2. The handler logs.
    let mut handled: BTreeMap<u64, Vec<Handled>> = BTreeMap::new();
    for i in 1..=scenario.consumers {
        let path = procs.log_path(&format!("c{i}"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            let [seq, _event_id, _entry, consumer, pid] = parts[..] else {
                violations.push(format!("log {}: torn line `{line}`", path.display()));
                continue;
            };
            let (Ok(seq), Ok(pid)) = (seq.parse::<u64>(), pid.parse::<u32>()) else {
                violations.push(format!("log {}: bad line `{line}`", path.display()));
                continue;
            };
            handled.entry(seq).or_default().push(Handled {
                consumer: consumer.to_owned(),
                pid,
            });
        }
    }
    let unhandled: Vec<u64> = published
        .iter()
        .filter(|(s, p)| !p.poison && !handled.contains_key(s))
        .map(|(s, _)| *s)
        .collect();
    if !unhandled.is_empty() {
        violations.push(format!(
            "1 (handled at least once): published events never handled: {}",
            sample(&unhandled)
        ));
    }
    let poison_handled: Vec<u64> = poison
        .iter()
        .filter(|s| handled.contains_key(s))
        .copied()
        .collect();
    if !poison_handled.is_empty() {
        violations.push(format!(
            "1 (handled at least once): poison events logged as handled: {}",
            sample(&poison_handled)
        ));
    }
    let mut live_twice = Vec::new();
    let mut excused = 0usize;
    for (seq, hs) in &handled {
        if hs.len() < 2 {
            continue;
        }
        let live: Vec<String> = hs
            .iter()
            .filter_map(|h| match procs.life(h.pid) {
                Some(l) if l.killed() => None,
                Some(l) => Some(format!(
                    "{}/pid {} (from {:.1?})",
                    h.consumer, h.pid, l.started
                )),
                None => Some(format!("{}/pid {} (unknown process)", h.consumer, h.pid)),
            })
            .collect();
        if live.len() > 1 {
            live_twice.push(format!("{seq}: {}", live.join(" + ")));
        } else {
            excused += 1;
        }
    }
    if !live_twice.is_empty() {
        violations.push(format!(
            "2 (no event handled by two live consumers): events handled more than once by \
             processes that were never killed: {}",
            sample(&live_twice)
        ));
    }
    if excused > 0 {
        notes.push(format!(
            "{excused} events handled again after a process that handled them was killed \
             (allowed: it may have died before acking)"
        ));
    }

    // 3. The projection: `{ns}:applied:{seq}` is 1 for every published event.
    let seqs: Vec<u64> = published.keys().copied().collect();
    let mut wrong = Vec::new();
    for chunk in seqs.chunks(500) {
        let keys: Vec<String> = chunk.iter().map(|s| format!("{ns}:applied:{s}")).collect();
        let counts: Vec<Option<i64>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .expect("MGET the projection's counters");
        for (seq, count) in chunk.iter().zip(counts) {
            if count != Some(1) {
                wrong.push(format!("{seq}: {}", count.unwrap_or(0)));
            }
        }
    }
    if !wrong.is_empty() {
        violations.push(format!(
            "3 (projection applied every event exactly once): events applied a number of \
             times other than 1 (seq: times): {}",
            sample(&wrong)
        ));
    }

    // 4. Dead letters.
    let letters = transport
        .dead_letters(GROUP, 100_000)
        .await
        .expect("read the dead letters");
    let mut lettered: BTreeMap<u64, usize> = BTreeMap::new();
    for letter in &letters {
        let seq = letter
            .event
            .as_ref()
            .and_then(|e| e.data["seq"].as_u64())
            .unwrap_or(u64::MAX);
        *lettered.entry(seq).or_default() += 1;
    }
    let not_poison: Vec<String> = letters
        .iter()
        .filter(|l| {
            l.event
                .as_ref()
                .and_then(|e| e.data["seq"].as_u64())
                .is_none_or(|s| !poison.contains(&s))
        })
        .map(|l| format!("{} ({})", l.origin_id, l.reason.error))
        .collect();
    let poison_missing: Vec<u64> = poison
        .iter()
        .filter(|s| !lettered.contains_key(s))
        .copied()
        .collect();
    let poison_twice: Vec<u64> = lettered
        .iter()
        .filter(|(s, n)| poison.contains(s) && **n > 1)
        .map(|(s, _)| *s)
        .collect();
    if !not_poison.is_empty() || !poison_missing.is_empty() || !poison_twice.is_empty() {
        violations.push(format!(
            "4 (dead letters hold exactly the poison): {} dead letters; not poison: {}; \
             poison missing: {}; poison dead-lettered twice: {}",
            letters.len(),
            sample(&not_poison),
            sample(&poison_missing),
            sample(&poison_twice)
        ));
    }
    let projection_group = eventbus_core::projection::projection_group("faults", "Applied");
    let projection_letters = transport
        .dead_letters(&projection_group, 100_000)
        .await
        .expect("read the projection's dead letters");
    if !projection_letters.is_empty() {
        violations.push(format!(
            "4 (dead letters hold exactly the poison): the projection dead-lettered: {}",
            sample(
                projection_letters
                    .iter()
                    .map(|l| format!("{} ({})", l.origin_id, l.reason.error))
            )
        ));
    }

    // 5. Nothing pending, nothing unread.
    let lags = transport.lag(None).await.expect("read the groups' lag");
    for lag in lags
        .iter()
        .filter(|l| l.topic == Topic::of_type("FaultEvent"))
    {
        if lag.pending > 0 || lag.lag != Some(0) {
            let holders: Vec<String> = lag
                .consumers
                .iter()
                .filter(|c| c.pending > 0)
                .map(|c| format!("{}: {}", c.name, c.pending))
                .collect();
            let ids: redis::Value = redis::cmd("XPENDING")
                .arg(&key)
                .arg(&lag.group)
                .arg("-")
                .arg("+")
                .arg(10)
                .query_async(&mut conn)
                .await
                .unwrap_or(redis::Value::Nil);
            let ids = pending_ids(&ids);
            let seqs: Vec<String> = ids
                .iter()
                .map(|(id, count)| {
                    let seq = published
                        .iter()
                        .find(|(_, p)| &p.entry_id == id)
                        .map(|(s, p)| format!("seq {s}{}", if p.poison { " (poison)" } else { "" }))
                        .unwrap_or_else(|| "?".to_owned());
                    format!("{id} = {seq}, delivered {count}x")
                })
                .collect();
            violations.push(format!(
                "5 (nothing left pending): group {} has {} pending (by consumer: {}) and lag \
                 {:?}; first pending: {}",
                lag.group,
                lag.pending,
                holders.join(", "),
                lag.lag,
                seqs.join("; ")
            ));
        }
    }

    let handlings: usize = handled.values().map(Vec::len).sum();
    notes.push(format!(
        "{} published ({} poison), {handlings} handlings of {} events, {} dead letters",
        published.len(),
        poison.len(),
        handled.len(),
        letters.len()
    ));
    Report { violations, notes }
}

/// `(entry id, delivery count)` pairs of an `XPENDING … - + n` reply.
fn pending_ids(reply: &redis::Value) -> Vec<(String, i64)> {
    let redis::Value::Array(rows) = reply else {
        return Vec::new();
    };
    rows.iter()
        .filter_map(|row| match row {
            redis::Value::Array(cols) if cols.len() == 4 => {
                let id: String = redis::from_redis_value(cols[0].clone()).ok()?;
                let count: i64 = redis::from_redis_value(cols[3].clone()).ok()?;
                Some((id, count))
            }
            _ => None,
        })
        .collect()
}
