//! `eventbus console`'s JSON API against the real Redis: every documented `GET` answers with
//! the fields its OpenAPI schema requires, writes need the token and the same origin, and
//! no response shows the Redis password.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::time::Duration;

use eventbus_core::transport::StreamAdmin;
use serde_json::{json, Value};
use support::console::{self, Console};
use support::Namespace;

const TOKEN: &str = "t0ken-for-tests";

/// The schema `schema` refers to (`$ref`), resolved in `doc`.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(path) => {
            let name = path.rsplit('/').next().unwrap();
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// Checks that `value` has every property `schema` requires, recursively into objects and
/// the items of arrays; `at` names the place for the failure message.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) {
    let schema = resolve(doc, schema);
    if value.is_null() {
        assert!(
            schema["nullable"] == json!(true) || schema.get("type").is_none(),
            "{at} is null"
        );
        return;
    }
    if let Some(required) = schema["required"].as_array() {
        for name in required {
            let name = name.as_str().unwrap();
            assert!(value.get(name).is_some(), "{at} lacks `{name}`: {value}");
        }
    }
    if let Some(properties) = schema["properties"].as_object() {
        for (name, property) in properties {
            if let Some(inner) = value.get(name) {
                check(doc, property, inner, &format!("{at}.{name}"));
            }
        }
    }
    if let (Some(items), Some(values)) = (schema.get("items"), value.as_array()) {
        for (i, item) in values.iter().enumerate() {
            check(doc, items, item, &format!("{at}[{i}]"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_get_answers_with_its_documented_fields() {
    let ns = Namespace::new("console-api");
    let t = console::transport(&ns).await;
    let (_billing, subscription) = console::lagging_with_a_dead_letter(&t).await;
    let saga = console::compensated_saga(&t, &ns).await;
    let (correlation, _) = console::flow(&t).await;
    let console = Console::start(&ns, &[]);
    let doc = console.get("/api/openapi.json").json();
    let stream = format!("{}:stream:OrderCreated", &*ns);
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let Some(get) = item.get("get") else { continue };
        let url = path
            .replace("{group}", "billing-consumers")
            .replace("{id}", &saga)
            + &match path.as_str() {
                "/api/events/tail" => format!("?stream={stream}&count=5"),
                "/api/events/find" => format!("?correlation_id={correlation}"),
                _ => String::new(),
            };
        let reply = console.get(&url);
        assert_eq!(reply.status, 200, "GET {url}: {}", reply.body);
        let body = reply.json();
        if let Some(schema) = get["responses"]["200"]["content"]["application/json"].get("schema") {
            check(&doc, schema, &body, &url);
        }
        checked += 1;
    }
    assert_eq!(checked, 11, "every GET of the document was tried");

    // What the pages rely on, beyond the shapes.
    let overview = console.get("/api/overview").json();
    let orders = overview["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stream"] == "OrderCreated")
        .unwrap();
    let lag = |group: &str| {
        orders["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["group"] == group)
            .unwrap_or_else(|| panic!("no {group}: {orders}"))
            .clone()
    };
    assert_eq!(lag("shipping-consumers")["lag"], 31);
    assert_eq!(lag("billing-consumers")["lag"], 0);
    assert_eq!(lag("billing-consumers")["dead_letters"], 1);
    assert_eq!(
        lag("billing-consumers")["problems"],
        json!(["1 dead letter"])
    );
    let letters = console
        .get("/api/dead-letters/billing-consumers?type=order&error=DECLINED")
        .json();
    assert_eq!(letters["letters"][0]["payload"]["order_id"], "ord_13");
    let none = console
        .get("/api/dead-letters/billing-consumers?error=timeout")
        .json();
    assert_eq!(none["letters"], json!([]));
    assert_eq!(none["total"], 1);
    let found = console
        .get(&format!("/api/events/find?correlation_id={correlation}"))
        .json();
    assert_eq!(found["events"].as_array().unwrap().len(), 4, "{found}");
    // A bounded scan: a budget of 3 entries stops early with a cursor, and the cursor goes on.
    let first = console
        .get(&format!(
            "/api/events/find?correlation_id={correlation}&budget=3"
        ))
        .json();
    assert_eq!(first["scanned"], 3);
    let cursor = first["cursor"].as_str().unwrap().to_owned();
    let next = console
        .get(&format!(
            "/api/events/find?correlation_id={correlation}&budget=3&cursor={cursor}"
        ))
        .json();
    assert_eq!(next["scanned"], 3);
    assert_eq!(console.get("/api/sagas/nope").status, 404);
    assert_eq!(console.get("/api/sagas?state=bogus").status, 400);
    assert_eq!(console.get("/api/nope").status, 404);
    subscription.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_writes_allowed_the_token_and_the_same_origin() {
    let ns = Namespace::new("console-writes");
    let t = console::transport(&ns).await;
    let (_billing, subscription) = console::lagging_with_a_dead_letter(&t).await;
    subscription.shutdown().await.unwrap();
    let purge = "/api/dead-letters/billing-consumers/purge";
    let all = json!({ "ids": null });

    let read_only = Console::start(&ns, &[]);
    assert!(
        read_only.banner.contains("read-only"),
        "{}",
        read_only.banner
    );
    let bearer = format!("Bearer {TOKEN}");
    let refused = read_only.post(purge, &[("Authorization", &bearer)], &all);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.json()["error"]
        .as_str()
        .unwrap()
        .contains("--allow-writes"));
    drop(read_only);

    let console = Console::start(&ns, &["--allow-writes", "--token", TOKEN]);
    let post = |headers: &[(&str, &str)]| console.post(purge, headers, &all).status;
    assert_eq!(post(&[]), 401, "no token");
    assert_eq!(
        post(&[("Authorization", "Bearer wrong")]),
        401,
        "wrong token"
    );
    let origin = format!("http://{}", console.addr);
    for cross in [
        vec![
            ("Authorization", bearer.as_str()),
            ("Origin", "http://evil.example"),
        ],
        vec![
            ("Authorization", bearer.as_str()),
            ("Sec-Fetch-Site", "cross-site"),
        ],
        vec![
            ("Authorization", bearer.as_str()),
            ("Sec-Fetch-Site", "same-site"),
        ],
    ] {
        assert_eq!(post(&cross), 403, "{cross:?}");
    }
    // A DNS name rebound to 127.0.0.1 is refused, reads included.
    let rebound = console::request(
        console.addr,
        "GET",
        "/api/info",
        &[("Host", "evil.example")],
        None,
    );
    assert_eq!(rebound.status, 403);
    assert_eq!(
        t.dead_letters("billing-consumers", 10).await.unwrap().len(),
        1,
        "nothing purged yet"
    );
    // The overview's reply is shared by the requests of about a second (every open tab
    // polls it) ...
    let asked = std::time::Instant::now();
    let before = console.get("/api/overview").json();
    let again = console.get("/api/overview").json();
    assert_eq!(before["dead_letters"]["billing-consumers"], 1, "{before}");
    if asked.elapsed() < Duration::from_millis(800) {
        assert_eq!(again["sampled_at_ms"], before["sampled_at_ms"], "shared");
    }
    let empty = console.post(purge, &[("Authorization", &bearer)], &json!({ "ids": [] }));
    assert_eq!(empty.status, 400);
    let ok = console.post(
        purge,
        &[
            ("Authorization", &bearer),
            ("Origin", &origin),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        &all,
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["purged"], 1);
    assert!(ok
        .headers
        .to_ascii_lowercase()
        .contains("content-security-policy"));
    assert!(t
        .dead_letters("billing-consumers", 10)
        .await
        .unwrap()
        .is_empty());
    // ... but a write makes the next one read afresh: the page shows what it just did.
    let after = console.get("/api/overview").json();
    assert_eq!(
        after["dead_letters"]["billing-consumers"]
            .as_u64()
            .unwrap_or(0),
        0,
        "{after}"
    );
    assert_ne!(after["sampled_at_ms"], before["sampled_at_ms"]);
    // A rebuild is asked of the projection's active instance.
    let rebuild = "/api/projections/OrderSummary/rebuild";
    assert_eq!(console.post(rebuild, &[], &json!({})).status, 401);
    let asked = console.post(rebuild, &[("Authorization", &bearer)], &json!({}));
    assert_eq!(asked.status, 200, "{}", asked.body);
    let keys = t.projection_keys("OrderSummary").await.unwrap();
    assert!(keys.rebuild_requested_at.is_some());
    drop(console);

    // With --allow-writes and no token, one is generated and printed with the page's URL.
    let generated = Console::start(&ns, &["--allow-writes"]);
    let token = generated
        .banner
        .split("#token=")
        .nth(1)
        .map(|rest| rest.trim().to_owned())
        .unwrap_or_else(|| panic!("no token printed: {}", generated.banner));
    let with = generated.post(
        purge,
        &[("Authorization", &format!("Bearer {token}"))],
        &all,
    );
    assert_eq!(with.status, 200, "{}", with.body);
}

#[test]
fn no_response_shows_the_password() {
    let ns = Namespace::new("console-password");
    let password = "s3cr#t-pw";
    let port = support::server::free_port();
    let _server = support::server::PrivateServer::start(port, &["--requirepass", password], port);
    let url = format!("redis://:s3cr%23t-pw@127.0.0.1:{port}");
    let mut command = support::cli(&ns, &["console", "--listen", "127.0.0.1:0"]);
    command.env("REDIS_URL", &url);
    let console = Console::spawn(command);
    assert!(
        !console.banner.contains(password) && !console.banner.contains("s3cr%23t"),
        "{}",
        console.banner
    );
    for path in [
        "/",
        "/api/info",
        "/api/overview",
        "/api/streams",
        "/api/dead-letters",
    ] {
        let reply = console.get(path);
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        assert!(
            !reply.body.contains("s3cr"),
            "{path} shows the password: {}",
            reply.body
        );
    }
    assert!(console.get("/api/info").json()["server"]
        .as_str()
        .unwrap()
        .contains("***"));
}
