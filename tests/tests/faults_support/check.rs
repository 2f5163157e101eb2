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

/// A published entry, as read back from the stream.
struct Published {
    seq: u64,
    entry_id: String,
    event_id: String,
    poison: bool,
}

/// One line of a consumer's handler log.
#[derive(Debug)]
struct Handled {
    seq: u64,
    consumer: String,
    pid: u32,
}

fn sample<T: std::fmt::Debug>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<T> = items.into_iter().collect();
    let shown: Vec<String> = items.iter().take(15).map(|i| format!("{i:?}")).collect();
    let more = if items.len() > 15 { ", …" } else { "" };
    format!("{} [{}{more}]", items.len(), shown.join(", "))
}

/// How many times a publisher's failed batches held each sequence number, from its stderr
/// (`publish failed (N), retrying seqs 3,4,5: error`, one line per failed batch, which the
/// publisher then retries).
fn retried_seqs(stderr: &str) -> BTreeMap<u64, usize> {
    let mut retried = BTreeMap::new();
    for line in stderr.lines() {
        let Some((_, rest)) = line.split_once("publish failed (") else {
            continue;
        };
        let Some((_, rest)) = rest.split_once("), retrying seqs ") else {
            continue;
        };
        let list = rest.split_once(": ").map_or(rest, |(list, _)| list);
        for seq in list.split(',').filter_map(|s| s.trim().parse::<u64>().ok()) {
            *retried.entry(seq).or_default() += 1;
        }
    }
    retried
}

/// Sequence numbers in the stream more than once (`entries`: seq → its entry ids), split in
/// those explained by retried publishes — `n` entries need `n − 1` failed batches holding
/// the number, each of which its publisher retried — and the others, as `(seq, entry ids)`.
/// Returns `(explained numbers, their extra entries, unexplained)`.
fn duplicates(
    entries: &BTreeMap<u64, Vec<String>>,
    retried: &BTreeMap<u64, usize>,
) -> (usize, usize, Vec<(u64, Vec<String>)>) {
    let (mut numbers, mut extra, mut unexplained) = (0, 0, Vec::new());
    for (seq, ids) in entries.iter().filter(|(_, ids)| ids.len() > 1) {
        if ids.len() - 1 <= retried.get(seq).copied().unwrap_or(0) {
            numbers += 1;
            extra += ids.len() - 1;
        } else {
            unexplained.push((*seq, ids.clone()));
        }
    }
    (numbers, extra, unexplained)
}

/// Invariant 2 per stream entry: of the handlings of one entry, at most one may be by a
/// live process (`live` describes a handling's process, `None` when it was killed). Returns
/// the entries handled by two live processes, described, and how many entries were handled
/// again after a killed process had handled them.
fn handled_by_two_live(
    handled: &BTreeMap<String, Vec<Handled>>,
    live: impl Fn(&Handled) -> Option<String>,
) -> (Vec<String>, usize) {
    let (mut twice, mut excused) = (Vec::new(), 0);
    for (entry, hs) in handled.iter().filter(|(_, hs)| hs.len() > 1) {
        let live: Vec<String> = hs.iter().filter_map(&live).collect();
        if live.len() > 1 {
            twice.push(format!("{entry} (seq {}): {}", hs[0].seq, live.join(" + ")));
        } else {
            excused += 1;
        }
    }
    (twice, excused)
}

/// Invariant 3 for one sequence number: `applied:{seq}` counts every entry of it, and
/// `applied-events:{seq}` (event id → times) counts each entry's event once — an event id
/// shared by `k` entries (one envelope appended twice) `k` times. Returns what is wrong.
fn projection_wrong(
    seq: u64,
    events: &[&str],
    count: Option<i64>,
    by_event: &BTreeMap<String, i64>,
) -> Vec<String> {
    let mut wrong = Vec::new();
    if count != Some(events.len() as i64) {
        wrong.push(format!(
            "{seq}: applied {} times, {} entries",
            count.unwrap_or(0),
            events.len()
        ));
    }
    let mut expected: BTreeMap<&str, i64> = BTreeMap::new();
    for event in events {
        *expected.entry(event).or_default() += 1;
    }
    for (event, times) in &expected {
        let applied = by_event.get(*event).copied().unwrap_or(0);
        if applied != *times {
            wrong.push(format!(
                "{seq}: event {event} applied {applied} times, in {times} entries"
            ));
        }
    }
    for (event, applied) in by_event {
        if !expected.contains_key(event.as_str()) {
            wrong.push(format!(
                "{seq}: event {event} applied {applied} times, not in the stream"
            ));
        }
    }
    wrong
}

/// Checks the invariants after a scenario:
///
/// 0. the stream holds every sequence number, and each exactly once unless a failed publish
///    of it was retried (publishing is at-least-once: the server may have applied the
///    batch whose reply was lost) — `n` entries of a number need `n − 1` failed batches
///    holding it in its publisher's log;
/// 1. every published number except the poison was handled at least once;
/// 2. no stream entry was handled by two live consumers: of the handlings of one entry, at
///    most one is by a process that was not killed (a killed one may have died before
///    acking); the entries of a number published twice are two entries;
/// 3. the projection applied every entry exactly once (`applied:{seq}` is the number of
///    the number's entries, and `applied-events:{seq}` counts each entry's event id once);
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
    let mut entries: Vec<Published> = Vec::new();
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
        entries.push(Published {
            seq: event.data["seq"].as_u64().expect("seq"),
            entry_id: entry.id.clone(),
            event_id: event.event_id.clone(),
            poison: event.data["poison"].as_bool().unwrap_or(false),
        });
    }
    // seq → its entries, in stream order.
    let mut published: BTreeMap<u64, Vec<&Published>> = BTreeMap::new();
    for p in &entries {
        published.entry(p.seq).or_default().push(p);
    }
    let by_entry: BTreeMap<&str, &Published> =
        entries.iter().map(|p| (p.entry_id.as_str(), p)).collect();
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
    let mut retried: BTreeMap<u64, usize> = BTreeMap::new();
    for p in 0..scenario.publishers {
        let stderr =
            std::fs::read_to_string(procs.stderr_path(&format!("p{p}"))).unwrap_or_default();
        for (seq, n) in retried_seqs(&stderr) {
            *retried.entry(seq).or_default() += n;
        }
    }
    let entry_ids: BTreeMap<u64, Vec<String>> = published
        .iter()
        .map(|(s, ps)| (*s, ps.iter().map(|p| p.entry_id.clone()).collect()))
        .collect();
    let (retried_numbers, retried_entries, unexplained) = duplicates(&entry_ids, &retried);
    if !unexplained.is_empty() {
        violations.push(format!(
            "published: sequence numbers in the stream more than once that no failed and \
             retried publish explains (seq, entries): {}",
            sample(&unexplained)
        ));
    }
    let poison: BTreeSet<u64> = entries.iter().filter(|p| p.poison).map(|p| p.seq).collect();

    // 1 and 2. The handler logs, by stream entry.
    let mut handled: BTreeMap<String, Vec<Handled>> = BTreeMap::new();
    for i in 1..=scenario.consumers {
        let path = procs.log_path(&format!("c{i}"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            let [seq, _event_id, entry, consumer, pid] = parts[..] else {
                violations.push(format!("log {}: torn line `{line}`", path.display()));
                continue;
            };
            let (Ok(seq), Ok(pid)) = (seq.parse::<u64>(), pid.parse::<u32>()) else {
                violations.push(format!("log {}: bad line `{line}`", path.display()));
                continue;
            };
            if by_entry.get(entry).is_none_or(|p| p.seq != seq) {
                violations.push(format!(
                    "log {}: handled seq {seq} as entry {entry}, which the stream doesn't \
                     hold with that seq",
                    path.display()
                ));
            }
            handled.entry(entry.to_owned()).or_default().push(Handled {
                seq,
                consumer: consumer.to_owned(),
                pid,
            });
        }
    }
    let handled_seqs: BTreeSet<u64> = handled.values().flatten().map(|h| h.seq).collect();
    let unhandled: Vec<u64> = published
        .keys()
        .filter(|s| !poison.contains(s) && !handled_seqs.contains(s))
        .copied()
        .collect();
    if !unhandled.is_empty() {
        violations.push(format!(
            "1 (handled at least once): published events never handled: {}",
            sample(&unhandled)
        ));
    }
    let poison_handled: Vec<u64> = poison
        .iter()
        .filter(|s| handled_seqs.contains(s))
        .copied()
        .collect();
    if !poison_handled.is_empty() {
        violations.push(format!(
            "1 (handled at least once): poison events logged as handled: {}",
            sample(&poison_handled)
        ));
    }
    let (live_twice, excused) = handled_by_two_live(&handled, |h| match procs.life(h.pid) {
        Some(l) if l.killed() => None,
        Some(l) => Some(format!(
            "{}/pid {} (from {:.1?})",
            h.consumer, h.pid, l.started
        )),
        None => Some(format!("{}/pid {} (unknown process)", h.consumer, h.pid)),
    });
    if !live_twice.is_empty() {
        violations.push(format!(
            "2 (no entry handled by two live consumers): stream entries handled more than \
             once by processes that were never killed: {}",
            sample(&live_twice)
        ));
    }
    if excused > 0 {
        notes.push(format!(
            "{excused} entries handled again after a process that handled them was killed \
             (allowed: it may have died before acking)"
        ));
    }

    // 3. The projection: `{ns}:applied:{seq}` counts the number's entries, and
    // `{ns}:applied-events:{seq}` each entry's event once.
    let seqs: Vec<u64> = published.keys().copied().collect();
    let mut wrong = Vec::new();
    for chunk in seqs.chunks(500) {
        let keys: Vec<String> = chunk.iter().map(|s| format!("{ns}:applied:{s}")).collect();
        let counts: Vec<Option<i64>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .expect("MGET the projection's counters");
        let mut pipe = redis::pipe();
        for s in chunk {
            pipe.cmd("HGETALL").arg(format!("{ns}:applied-events:{s}"));
        }
        let by_event: Vec<BTreeMap<String, i64>> = pipe
            .query_async(&mut conn)
            .await
            .expect("HGETALL the projection's per-event counters");
        for ((seq, count), by_event) in chunk.iter().zip(counts).zip(by_event) {
            let events: Vec<&str> = published[seq].iter().map(|p| p.event_id.as_str()).collect();
            wrong.extend(projection_wrong(*seq, &events, count, &by_event));
        }
    }
    if !wrong.is_empty() {
        violations.push(format!(
            "3 (projection applied every entry exactly once): {}",
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
                    let seq = by_entry
                        .get(id.as_str())
                        .map(|p| {
                            format!("seq {}{}", p.seq, if p.poison { " (poison)" } else { "" })
                        })
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
        "{} published in {} entries ({} poison), {handlings} handlings of {} entries, {} \
         dead letters",
        published.len(),
        entries.len(),
        poison.len(),
        handled.len(),
        letters.len()
    ));
    notes.push(format!(
        "{retried_numbers} sequence numbers in the stream more than once ({retried_entries} \
         extra entries) explained by failed publishes that were retried (publishing is \
         at-least-once); the failed batches held {} numbers",
        retried.len()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(pairs: &[(u64, &[&str])]) -> BTreeMap<u64, Vec<String>> {
        pairs
            .iter()
            .map(|(s, ids)| (*s, ids.iter().map(|i| (*i).to_owned()).collect()))
            .collect()
    }

    #[test]
    fn retried_seqs_reads_the_failed_batches() {
        let stderr = "fault-worker: connect: refused; retrying\n\
            fault-worker: publish failed (1), retrying seqs 360,361,362: broken pipe: os error 32\n\
            2026-12-03T18:00:00Z  WARN something else\n\
            fault-worker: publish failed (2), retrying seqs 361: connection refused\n\
            fault-worker: publish failed (1): an old line without the seqs\n";
        let retried = retried_seqs(stderr);
        assert_eq!(
            retried.into_iter().collect::<Vec<_>>(),
            vec![(360, 1), (361, 2), (362, 1)]
        );
    }

    #[test]
    fn a_duplicate_is_excused_only_by_a_retried_batch_that_held_it() {
        let entries = ids(&[
            (1, &["1-0"]),
            (2, &["2-0", "9-0"]),          // retried once: explained
            (3, &["3-0", "10-0"]),         // in no failed batch: a violation
            (4, &["4-0", "11-0", "12-0"]), // three entries, one retry: a violation
            (5, &["5-0"]),
        ]);
        let retried: BTreeMap<u64, usize> = [(2, 1), (4, 1), (5, 1)].into_iter().collect();
        let (numbers, extra, unexplained) = duplicates(&entries, &retried);
        assert_eq!((numbers, extra), (1, 1));
        let seqs: Vec<u64> = unexplained.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![3, 4]);
        // Nothing retried at all: every duplicate is a violation.
        let (numbers, _, unexplained) = duplicates(&entries, &BTreeMap::new());
        assert_eq!((numbers, unexplained.len()), (0, 3));
    }

    fn handling(seq: u64, consumer: &str, pid: u32) -> Handled {
        Handled {
            seq,
            consumer: consumer.to_owned(),
            pid,
        }
    }

    #[test]
    fn two_entries_of_one_number_are_two_entries_but_one_entry_twice_is_not() {
        let killed = 2;
        let live = |h: &Handled| (h.pid != killed).then(|| format!("{}/{}", h.consumer, h.pid));
        let mut handled: BTreeMap<String, Vec<Handled>> = BTreeMap::new();
        // seq 360 published twice, each entry handled once by the same live process.
        handled.insert("100-0".into(), vec![handling(360, "c3", 7)]);
        handled.insert("200-0".into(), vec![handling(360, "c3", 7)]);
        // Handled again after the killed process had handled it: excused.
        handled.insert(
            "300-0".into(),
            vec![handling(5, "c1", killed), handling(5, "c1", 8)],
        );
        let (twice, excused) = handled_by_two_live(&handled, live);
        assert!(twice.is_empty(), "{twice:?}");
        assert_eq!(excused, 1);
        // One entry handled by two live processes: a violation.
        handled.insert(
            "400-0".into(),
            vec![handling(6, "c1", 8), handling(6, "c2", 9)],
        );
        let (twice, _) = handled_by_two_live(&handled, live);
        assert_eq!(twice, vec!["400-0 (seq 6): c1/8 + c2/9".to_owned()]);
    }

    #[test]
    fn the_projection_must_apply_each_entry_once() {
        let once = |pairs: &[(&str, i64)]| -> BTreeMap<String, i64> {
            pairs.iter().map(|(e, n)| ((*e).to_owned(), *n)).collect()
        };
        // Two entries (two events) of one number, each applied once.
        assert!(projection_wrong(1, &["a", "b"], Some(2), &once(&[("a", 1), ("b", 1)])).is_empty());
        // The right total, but one entry twice and the other never.
        assert_eq!(
            projection_wrong(1, &["a", "b"], Some(2), &once(&[("a", 2)])).len(),
            2
        );
        // One entry applied twice.
        assert_eq!(
            projection_wrong(1, &["a"], Some(2), &once(&[("a", 2)])).len(),
            2
        );
        // An event the stream doesn't hold.
        assert_eq!(
            projection_wrong(1, &["a"], Some(1), &once(&[("a", 1), ("z", 1)])).len(),
            1
        );
    }
}
