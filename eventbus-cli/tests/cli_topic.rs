//! `eventbus topic create|list`, and `tail` of a partitioned topic, against a real Redis.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use serde_json::Value;
use support::{billing_dlq, json_lines, ok, publish, raw_connection, run, Namespace};

#[test]
fn topic_create_and_list_show_partitions_and_where_they_live() {
    let ns = Namespace::new("topic");
    let created = ok(&run(
        &ns,
        &["topic", "create", "Cli.Part", "--partitions", "3", "--json"],
    ));
    assert_eq!(
        json_lines(&created),
        [serde_json::json!({"topic": "Cli.Part", "partitions": 3})]
    );
    let shrink = run(&ns, &["topic", "create", "Cli.Part", "--partitions", "2"]);
    assert_eq!(shrink.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&shrink.stderr);
    assert!(stderr.contains("can only grow"), "{stderr}");

    let mut ids = Vec::new();
    for n in 0..6 {
        let key = format!("k{n}");
        ids.push(publish(
            &ns,
            "Cli.Part",
            &format!(r#"{{"n":{n}}}"#),
            &["--key", &key],
        ));
    }
    assert!(ids.iter().all(|id| id.contains('/')), "qualified: {ids:?}");

    let listed = json_lines(&ok(&run(&ns, &["topic", "list", "--json"])));
    let topics = listed[0].as_array().unwrap();
    let topic = topics
        .iter()
        .find(|t| t["topic"] == "Cli.Part")
        .unwrap_or_else(|| panic!("Cli.Part not listed: {topics:?}"));
    let partitions = topic["partitions"].as_array().unwrap();
    let indexes: Vec<u64> = partitions
        .iter()
        .map(|p| p["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [0, 1, 2]);
    let total: u64 = partitions
        .iter()
        .map(|p| p["length"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 6);
    assert_eq!(partitions[0]["stream"], format!("{ns}:stream:Cli.Part"));
    assert!(partitions.iter().all(|p| p["node"] == Value::Null));
    assert!(partitions
        .iter()
        .all(|p| p["slot"].as_u64().unwrap() < 16384));
    assert!(topics.iter().any(|t| t["topic"] == "all"), "{topics:?}");

    let table = ok(&run(&ns, &["topic", "list"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["TOPIC", "PARTITION", "STREAM", "SLOT", "NODE", "LENGTH"]
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("Cli.Part ")).count(),
        3
    );

    // A tail reads every partition, oldest first, with qualified ids.
    let tailed = json_lines(&ok(&run(
        &ns,
        &["tail", "Cli.Part", "--from-beginning", "--count", "6"],
    )));
    let mut tailed_ids: Vec<String> = tailed
        .iter()
        .map(|e| e["stream_id"].as_str().unwrap().to_owned())
        .collect();
    let mut published = ids.clone();
    published.sort();
    tailed_ids.sort();
    assert_eq!(tailed_ids, published);
}

#[test]
fn an_empty_namespace_has_no_topics() {
    let ns = Namespace::new("topic_empty");
    let out = ok(&run(&ns, &["topic", "list"]));
    assert_eq!(out.trim(), format!("no topics in namespace `{ns}`"));
    let json = json_lines(&ok(&run(&ns, &["topic", "list", "--json"])));
    assert_eq!(json, [serde_json::json!([])]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_and_lag_work_across_partitions() {
    let ns = Namespace::new("topic_dlq");
    ok(&run(
        &ns,
        &["topic", "create", "Cli.Dlq", "--partitions", "2"],
    ));
    // The partitions' streams, as listed (before they exist); a buggy producer writes an
    // undecodable entry first in each.
    let listed = json_lines(&ok(&run(&ns, &["topic", "list", "--json"])));
    let streams: Vec<String> = listed[0][0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["stream"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(streams.len(), 2, "{listed:?}");
    let mut conn = raw_connection().await;
    for stream in &streams {
        let _: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg(&[
                ("event_id", "e-bad"),
                ("event_type", "Cli.Dlq"),
                ("source", "legacy"),
                ("data", "{oops"),
                ("timestamp", "1700000000.0"),
            ])
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    for n in 0..8 {
        let key = format!("k{n}");
        publish(&ns, "Cli.Dlq", &format!(r#"{{"n":{n}}}"#), &["--key", &key]);
    }
    let consume = [
        "consume",
        "--service",
        "billing",
        "--type",
        "Cli.Dlq",
        "--from-beginning",
        "--count",
        "8",
    ];
    assert_eq!(json_lines(&ok(&run(&ns, &consume))).len(), 8);

    let letters = billing_dlq(&ns, "list", &[]);
    let mut partitions: Vec<&str> = letters
        .iter()
        .map(|d| {
            // Partition 0's dead letters are in the plain dead-letter stream: plain ids.
            let id = d["id"].as_str().unwrap();
            id.split_once('/').map_or("0", |(p, _)| p)
        })
        .collect();
    partitions.sort_unstable();
    assert_eq!(partitions, ["0", "1"], "{letters:?}");
    assert!(letters.iter().all(|d| d["origin_stream"] == "Cli.Dlq"));
    let mut origins: Vec<&str> = letters
        .iter()
        .map(|d| &d["origin_id"].as_str().unwrap()[..2])
        .collect();
    origins.sort_unstable();
    assert_eq!(origins, ["0/", "1/"], "origin ids qualified like entry ids");

    let lag = ok(&run(&ns, &["lag", "--service", "billing"]));
    assert!(lag.lines().next().unwrap().contains("PARTITION"), "{lag}");
    assert_eq!(
        lag.lines().filter(|l| l.contains(" total ")).count(),
        1,
        "{lag}"
    );

    // Partition 1's dead letter, by its qualified id; then the rest purged.
    let qualified = letters
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .find(|id| id.starts_with("1/"))
        .unwrap();
    let replayed = billing_dlq(&ns, "replay", &[qualified]);
    assert_eq!(replayed, [serde_json::json!({"replayed": 1})]);
    let purged = billing_dlq(&ns, "purge", &[]);
    assert_eq!(purged, [serde_json::json!({"purged": 1})]);
    assert!(billing_dlq(&ns, "list", &[]).is_empty());
}
