"""Writes eventbus.json, the Grafana dashboard of eventbus's metrics: `python3 ops/grafana/generate.py`.

Edit the panels here rather than in the JSON, so that every panel keeps the same
conventions (data source variable, `$group` filter, one series per stream, group and
partition for the sampled gauges).
"""

import json
import os

DS = {"type": "prometheus", "uid": "${datasource}"}
G = '$group'
panels = []
pid = 0

def nid():
    global pid
    pid += 1
    return pid

def row(title, y):
    panels.append({"type": "row", "title": title, "id": nid(), "collapsed": False,
                   "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})

def target(expr, legend, ref):
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}

def ts(title, desc, targets, x, y, w=12, h=8, unit="short", stack=False):
    panels.append({
        "type": "timeseries", "title": title, "description": desc, "id": nid(), "datasource": DS,
        "gridPos": {"h": h, "w": w, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit, "min": 0,
                                     "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                                                "showPoints": "never",
                                                "stacking": {"mode": "normal" if stack else "none", "group": "A"}}},
                        "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                               "calcs": ["lastNotNull", "max"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [target(e, l, chr(65 + i)) for i, (e, l) in enumerate(targets)],
    })

def stat(title, desc, expr, x, y, unit="short", thresholds=None):
    steps = [{"color": "green", "value": None}] + [{"color": c, "value": v} for v, c in (thresholds or [])]
    panels.append({
        "type": "stat", "title": title, "description": desc, "id": nid(), "datasource": DS,
        "gridPos": {"h": 4, "w": 6, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
                        "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "background", "graphMode": "area", "textMode": "auto"},
        "targets": [target(expr, "", "A")],
    })

GAUGE = f'group=~"{G}"'
# One series per (stream, group, partition) even when several processes sample a group.
def one(metric):
    return f"max by (stream, group, partition) ({metric}{{{GAUGE}}})"
CTR = f'messaging_consumer_group_name=~"{G}"'

stat("Lag (entries)", "Entries of every stream not yet delivered to the selected groups (eventbus_consumer_group_lag).",
     f"sum({one('eventbus_consumer_group_lag')})", 0, 0, thresholds=[(100, "yellow"), (1000, "red")])
stat("Pending (entries)", "Entries delivered and not acknowledged (eventbus_consumer_group_pending).",
     f"sum({one('eventbus_consumer_group_pending')})", 6, 0, thresholds=[(100, "yellow"), (1000, "red")])
stat("Oldest pending", "Idle time of the oldest unacknowledged entry of the selected groups (eventbus_consumer_group_oldest_pending_seconds).",
     f"max(eventbus_consumer_group_oldest_pending_seconds{{{GAUGE}}})", 12, 0, unit="s", thresholds=[(60, "yellow"), (600, "red")])
stat("Dead letters (1 h)", "Entries moved to a dead-letter stream in the last hour (eventbus_dead_letters_total).",
     f"sum(increase(eventbus_dead_letters_total{{{CTR}}}[1h]))", 18, 0, thresholds=[(1, "red")])

row("Consumer groups (sampled by the app or `eventbus monitor`)", 4)
ts("Lag by group and stream", "eventbus_consumer_group_lag: entries not yet delivered to the group, summed over partitions.",
   [(f"sum by (group, stream) ({one('eventbus_consumer_group_lag')})", "{{group}} on {{stream}}")], 0, 5)
ts("Pending by group and stream", "eventbus_consumer_group_pending: entries delivered and not acknowledged, summed over partitions.",
   [(f"sum by (group, stream) ({one('eventbus_consumer_group_pending')})", "{{group}} on {{stream}}")], 12, 5)
ts("Oldest pending entry", "eventbus_consumer_group_oldest_pending_seconds: idle time of the oldest pending entry (the longest over partitions).",
   [(f"max by (group, stream) (eventbus_consumer_group_oldest_pending_seconds{{{GAUGE}}})", "{{group}} on {{stream}}")], 0, 13, unit="s")
ts("Lag by partition", "eventbus_consumer_group_lag per partition of a partitioned topic (partition empty: unpartitioned stream).",
   [(one("eventbus_consumer_group_lag"), "{{group}} on {{stream}} p{{partition}}")], 12, 13)

row("Throughput", 21)
ts("Published", "messaging_client_sent_messages_total: events published per second, by stream.",
   [("sum by (messaging_destination_name) (rate(messaging_client_sent_messages_total[$__rate_interval]))", "{{messaging_destination_name}}")],
   0, 22, unit="ops")
ts("Consumed", "messaging_client_consumed_messages_total: deliveries handed to handlers per second, by group and stream.",
   [(f"sum by (messaging_consumer_group_name, messaging_destination_name) (rate(messaging_client_consumed_messages_total{{{CTR}}}[$__rate_interval]))",
     "{{messaging_consumer_group_name}} on {{messaging_destination_name}}")], 12, 22, unit="ops")

row("Processing", 30)
ts("Process duration (p50, p95, p99)", "Quantiles of messaging_process_duration_seconds (one delivery's handling, all handlers) from its histogram buckets, by group.",
   [(f"histogram_quantile({q}, sum by (le, messaging_consumer_group_name) (rate(messaging_process_duration_seconds_bucket{{{CTR}}}[$__rate_interval])))",
     f"p{int(q*100)} {{{{messaging_consumer_group_name}}}}") for q in (0.5, 0.95, 0.99)], 0, 31, unit="s")
ts("Outcomes", "messaging_process_duration_seconds_count by outcome: ok, retry, dead_letter, abandoned (given back).",
   [(f"sum by (outcome) (rate(messaging_process_duration_seconds_count{{{CTR}}}[$__rate_interval]))", "{{outcome}}")],
   12, 31, unit="ops", stack=True)
ts("Retries and handler failures", "eventbus_retries_total (deliveries retried) and eventbus_handler_failures_total (handler calls that failed), per second.",
   [(f"sum by (messaging_consumer_group_name) (rate(eventbus_retries_total{{{CTR}}}[$__rate_interval]))", "retries {{messaging_consumer_group_name}}"),
    (f"sum by (messaging_consumer_group_name) (rate(eventbus_handler_failures_total{{{CTR}}}[$__rate_interval]))", "failures {{messaging_consumer_group_name}}")],
   0, 39, unit="ops")
ts("Dead letters and claims", "eventbus_dead_letters_total (entries moved to the dead-letter stream) and eventbus_claimed_total (entries reclaimed from idle consumers or recovered), per interval.",
   [(f"sum by (messaging_consumer_group_name) (increase(eventbus_dead_letters_total{{{CTR}}}[$__rate_interval]))", "dead letters {{messaging_consumer_group_name}}"),
    (f"sum by (messaging_consumer_group_name) (increase(eventbus_claimed_total{{{CTR}}}[$__rate_interval]))", "claimed {{messaging_consumer_group_name}}")],
   12, 39)

row("Broker and commands", 47)
ts("Broker operation duration (p99)", "messaging_client_operation_duration_seconds: publish, ack, … against Redis, 99th percentile by operation.",
   [("histogram_quantile(0.99, sum by (le, messaging_operation_name) (rate(messaging_client_operation_duration_seconds_bucket[$__rate_interval])))", "{{messaging_operation_name}}")],
   0, 48, unit="s")
ts("Command duration (p99)", "eventbus_command_duration_seconds: a command's dispatch, 99th percentile by command.",
   [("histogram_quantile(0.99, sum by (le, command) (rate(eventbus_command_duration_seconds_bucket[$__rate_interval])))", "{{command}}")],
   12, 48, unit="s")
ts("Saga transitions and timeouts", "eventbus_saga_transitions_total by saga and state, eventbus_saga_timeouts_total by saga, per second.",
   [("sum by (saga, state) (rate(eventbus_saga_transitions_total[$__rate_interval]))", "{{saga}} → {{state}}"),
    ("sum by (saga) (rate(eventbus_saga_timeouts_total[$__rate_interval]))", "{{saga}} timeouts")],
   0, 56, w=24, unit="ops")

dashboard = {
    "title": "eventbus",
    "uid": "eventbus",
    "description": "eventbus on Redis: consumer groups' lag, pending entries and oldest pending age, throughput, processing durations, retries, dead letters. Metric names: eventbus-core/src/telemetry/names.rs.",
    "tags": ["eventbus", "redis", "messaging"],
    "timezone": "browser",
    "editable": True,
    "graphTooltip": 1,
    "schemaVersion": 39,
    "version": 1,
    "refresh": "30s",
    "time": {"from": "now-3h", "to": "now"},
    "annotations": {"list": []},
    "links": [],
    "templating": {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "refresh": 1, "options": []},
        {"name": "group", "label": "Consumer group", "type": "query", "datasource": DS,
         "definition": "label_values(eventbus_consumer_group_lag, group)",
         "query": {"query": "label_values(eventbus_consumer_group_lag, group)", "refId": "group"},
         "multi": True, "includeAll": True, "allValue": ".*", "current": {}, "hide": 0,
         "refresh": 2, "sort": 1, "options": []},
    ]},
    "panels": panels,
}
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "eventbus.json"), "w") as f:
    json.dump(dashboard, f, indent=2, ensure_ascii=False)
    f.write("\n")
