//! `eventbus topic create|list`, and `tail` of a partitioned topic, against a real Redis.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use serde_json::Value;
use support::{json_lines, ok, publish, run, Namespace};

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
