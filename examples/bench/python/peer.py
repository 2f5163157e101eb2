"""Runs the article's ``StreamEventBus`` (article_bus.py, unchanged) through the benchmark's
scenarios, so that examples/bench.rs prints its figures next to eventbus's in the same run.

    python3 peer.py e2e      --url URL --namespace NS --events N
    python3 peer.py latency  --url URL --namespace NS --rate R --secs S
    python3 peer.py consume  --url URL --namespace NS --events N --service S

``e2e`` and ``latency`` print one JSON object on stdout and delete their namespace.
``consume`` is the article's consumer as a process of its own: it handles the first N entries
of the pre-filled ``BenchEvent`` stream of NS from the beginning, printing each event as a
JSON line on stdout (as ``eventbus consume`` does), then exits; the caller times it and
deletes the namespace.

The consumer of ``e2e`` and ``latency`` runs in a process of its own (the article starts it
on a thread, which would share the publisher's interpreter lock), and latency is measured
on the machine's monotonic clock, which both processes share: from just before the publish
call to the handler, as eventbus's scenarios measure it.
"""

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import time
from dataclasses import asdict

import redis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from article_bus import StreamEventBus  # noqa: E402

EVENT_TYPE = "BenchEvent"


class CountingBus(StreamEventBus):
    """The article's bus, noting when each entry was acknowledged (its
    ``_process_message`` ends with the XACK)."""

    def __init__(self, *args, expected, done, **kwargs):
        super().__init__(*args, **kwargs)
        self.expected = expected
        self.done = done
        self.processed = 0

    def _process_message(self, stream_key, message_id, data):
        super()._process_message(stream_key, message_id, data)
        self.processed += 1
        if self.processed == self.expected:
            self.done.send(time.monotonic_ns())
            self.stop()


def consumer_process(url, namespace, service, expected, ready, done, latencies):
    """A consumer of the article's bus: handles `expected` events, then reports."""
    seen = bytearray(expected)
    samples = []
    duplicates = 0

    def handler(event):
        nonlocal duplicates
        seq = event.data["seq"]
        if 0 <= seq < expected:
            if seen[seq]:
                duplicates += 1
            seen[seq] = 1
        if latencies:
            samples.append((seq, time.monotonic_ns() - event.data["sent_ns"]))

    bus = CountingBus(redis.Redis.from_url(url), service, namespace=namespace,
                      expected=expected, done=done)
    bus.subscribe(EVENT_TYPE, handler)
    bus.start(from_beginning=True)
    ready.send(True)
    # The article's loop runs on a daemon thread; wait for it to stop (after the last ack).
    while bus._running:
        time.sleep(0.01)
    done.send({"distinct": sum(seen), "duplicates": duplicates, "latencies": samples})


def start_consumer(args, service, expected, latencies):
    ready_rx, ready_tx = mp.Pipe(duplex=False)
    done_rx, done_tx = mp.Pipe(duplex=False)
    child = mp.Process(target=consumer_process,
                       args=(args.url, args.namespace, service, expected, ready_tx, done_tx,
                             latencies), daemon=True)
    child.start()
    if not ready_rx.poll(30):
        raise SystemExit("the article's consumer did not start")
    ready_rx.recv()
    return child, done_rx


def event(seq):
    return {"seq": seq, "sent_ns": time.monotonic_ns(), "order_id": f"ord-{seq:08}",
            "amount": 99.5}


def finish(child, done_rx, expected, stall=60):
    """The time of the last ack and the consumer's report, after checking exactly-once."""
    if not done_rx.poll(stall):
        raise SystemExit(f"the article's consumer stalled (expected {expected} events)")
    last_ack = done_rx.recv()
    if not done_rx.poll(stall):
        raise SystemExit("the article's consumer did not report")
    report = done_rx.recv()
    child.join(10)
    if report["distinct"] != expected or report["duplicates"]:
        raise SystemExit(f"article's consumer: {report['distinct']} of {expected} events, "
                         f"{report['duplicates']} duplicates")
    return last_ack, report


def delete_namespace(url, namespace):
    r = redis.Redis.from_url(url)
    keys = list(r.scan_iter(match=f"{namespace}:*", count=1000))
    for i in range(0, len(keys), 500):
        r.delete(*keys[i:i + 500])


def e2e(args):
    child, done_rx = start_consumer(args, "article-e2e", args.events, False)
    bus = StreamEventBus(redis.Redis.from_url(args.url), "article-e2e",
                         namespace=args.namespace)
    start = time.monotonic_ns()
    for seq in range(args.events):
        bus.publish(EVENT_TYPE, event(seq))
    published = time.monotonic_ns()
    last_ack, _ = finish(child, done_rx, args.events)
    return {
        "events": args.events,
        "events_per_sec": args.events / ((last_ack - start) / 1e9),
        "publish_per_sec": args.events / ((published - start) / 1e9),
    }


def quantile(sorted_values, q):
    """Nearest rank, as the Rust scenarios compute it."""
    if not sorted_values:
        return 0
    rank = min(max(math.ceil(q * len(sorted_values)), 1), len(sorted_values))
    return sorted_values[rank - 1]


def latency(args):
    n = max(1, int(args.rate * args.secs))
    warmup = min(args.rate // 4, n // 2)
    child, done_rx = start_consumer(args, "article-latency", n, True)
    bus = StreamEventBus(redis.Redis.from_url(args.url), "article-latency",
                         namespace=args.namespace)
    start = time.monotonic()
    seq = 0
    while seq < n:
        due = min(int((time.monotonic() - start) * args.rate) + 1, n)
        if due > seq:
            # The article publishes one event at a time.
            while seq < due:
                bus.publish(EVENT_TYPE, event(seq))
                seq += 1
        else:
            time.sleep(max(0.0, start + seq / args.rate - time.monotonic()))
    achieved = n / (time.monotonic() - start)
    _, report = finish(child, done_rx, n)
    sorted_us = sorted(ns / 1000 for seq, ns in report["latencies"] if seq >= warmup)
    return {
        "rate": args.rate,
        "achieved_rate": achieved,
        "samples": len(sorted_us),
        "p50_us": quantile(sorted_us, 0.50),
        "p99_us": quantile(sorted_us, 0.99),
        "p999_us": quantile(sorted_us, 0.999),
        "max_us": sorted_us[-1] if sorted_us else 0,
    }


def consume(args):
    """The article's consumer printing each event as a JSON line, until N are handled."""
    printed = 0
    out = sys.stdout

    def handler(event):
        nonlocal printed
        out.write(json.dumps(asdict(event)))
        out.write("\n")
        printed += 1

    r = redis.Redis.from_url(args.url)
    done_rx, done_tx = mp.Pipe(duplex=False)
    bus = CountingBus(r, args.service, namespace=args.namespace, expected=args.events,
                      done=done_tx)
    bus.subscribe(EVENT_TYPE, handler)
    bus.start(from_beginning=True)
    while bus._running:
        time.sleep(0.001)
    out.flush()
    if printed != args.events:
        raise SystemExit(f"printed {printed} of {args.events} events")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=["e2e", "latency", "consume"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=2_000)
    parser.add_argument("--secs", type=float, default=10.0)
    parser.add_argument("--service", default="article-consume")
    args = parser.parse_args()
    if args.scenario == "consume":
        consume(args)
        return
    try:
        result = e2e(args) if args.scenario == "e2e" else latency(args)
    finally:
        delete_namespace(args.url, args.namespace)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
