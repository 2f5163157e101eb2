//! `eventbus console` in a real browser: Debian's Chromium, headless, through chromedriver.
//! Each test seeds its own namespace on the real Redis, starts the console on it, and asserts
//! on the DOM the page rendered.
//!
//! `EVENTBUS_CONSOLE_SCREENSHOT=$PWD/docs/console.png` makes the overview test write the
//! README's screenshot; `EVENTBUS_CONSOLE_SHOTS=DIR` makes every test write its page there.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use eventbus_core::transport::StreamAdmin;
use support::browser::{click, screenshot, shot, texts, wait_text, with_browser};
use support::console::{self, Console};
use support::Namespace;

const TOKEN: &str = "browser-test-token";

/// The acceptance scenario: a group behind by 31 entries and a dead letter, rendered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_shows_the_stream_both_groups_and_the_lag() {
    let ns = Namespace::new("console-overview");
    let t = console::transport(&ns).await;
    let (_billing, subscription) = console::lagging_with_a_dead_letter(&t).await;
    let saga = console::compensated_saga(&t, &ns).await;
    let console = Console::start(&ns, &[]);
    let url = console.url("/#/overview");
    with_browser(|client| async move {
        client.goto(&url).await.unwrap();
        let stream = wait_text(&client, "section.stream[data-stream=OrderCreated]", |t| {
            t.contains("shipping-consumers") && t.contains("billing-consumers")
        })
        .await;
        assert!(
            stream.contains("OrderCreated") && stream.contains("length 31"),
            "{stream}"
        );
        let shipping = "section.stream[data-stream=OrderCreated] tr[data-group=shipping-consumers]";
        wait_text(&client, &format!("{shipping} td.lag"), |t| t.trim() == "31").await;
        let billing = "section.stream[data-stream=OrderCreated] tr[data-group=billing-consumers]";
        wait_text(&client, &format!("{billing} td.lag"), |t| t.trim() == "0").await;
        // The group with a dead letter is highlighted, saying why.
        let problem = wait_text(&client, &format!("{billing}.problem td.problems"), |t| {
            t.contains("1 dead letter")
        })
        .await;
        assert_eq!(problem, "1 dead letter");
        assert!(texts(&client, &format!("{shipping}.problem"))
            .await
            .is_empty());
        if let Ok(path) = std::env::var("EVENTBUS_CONSOLE_SCREENSHOT") {
            tokio::time::sleep(Duration::from_millis(1500)).await; // a rate shows after 2 polls
            screenshot(&client, &path).await;
        }
    })
    .await;
    drop(saga);
    subscription.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_replayed_from_the_page_is_handled() {
    let ns = Namespace::new("console-replay");
    let t = console::transport(&ns).await;
    let (billing, subscription) = console::lagging_with_a_dead_letter(&t).await;
    billing.broken.store(false, Ordering::SeqCst); // the bug is fixed
    let console = Console::start(&ns, &["--allow-writes", "--token", TOKEN]);
    let url = console.url(&format!("/#token={TOKEN}"));
    let page = console.url("/#/dead-letters/billing-consumers");
    with_browser(|client| async move {
        client.goto(&url).await.unwrap(); // takes the token from the fragment
        wait_text(&client, "#mode", |t| t == "writes allowed").await;
        client.goto(&page).await.unwrap();
        let row = wait_text(&client, "#dlq-letters tbody tr", |t| t.contains("ord_13")).await;
        assert!(
            row.contains("card declined for ord_13") && row.contains("OrderCreated"),
            "{row}"
        );
        // Filtering by error text hides it, and shows it again.
        client
            .find(fantoccini::Locator::Css("#dlq-error"))
            .await
            .unwrap()
            .send_keys("timeout")
            .await
            .unwrap();
        wait_text(&client, "#dlq-letters", |t| {
            t.contains("No dead letter matches")
        })
        .await;
        client
            .find(fantoccini::Locator::Css("#dlq-error"))
            .await
            .unwrap()
            .clear()
            .await
            .unwrap();
        wait_text(&client, "#dlq-letters tbody tr", |t| t.contains("ord_13")).await;
        click(&client, "#dlq-letters tbody tr button.one:not(.danger)").await;
        let question = wait_text(&client, "#modal-text", |t| !t.is_empty()).await;
        assert_eq!(question, "Replay 1 dead letter of group billing-consumers?");
        click(&client, "#modal-confirm").await;
        wait_text(&client, "#dlq-result", |t| t.contains("Replayed 1 of 1")).await;
        shot(&client, "dead-letters").await;
        wait_text(&client, "#dlq-letters", |t| t.contains("No dead letters")).await;
    })
    .await;
    // The replayed entry went back to its stream, and the consumer handled it.
    eventbus_tests::eventually(Duration::from_secs(15), "ord_13 handled", || async {
        billing
            .handled
            .lock()
            .unwrap()
            .iter()
            .any(|o| o == "ord_13")
    })
    .await;
    assert!(t
        .dead_letters("billing-consumers", 10)
        .await
        .unwrap()
        .is_empty());
    subscription.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sagas_timeline_shows_its_compensation() {
    let ns = Namespace::new("console-saga");
    let t = console::transport(&ns).await;
    let id = console::compensated_saga(&t, &ns).await;
    let console = Console::start(&ns, &[]);
    let list = console.url("/#/sagas");
    with_browser(|client| async move {
        client.goto(&list).await.unwrap();
        wait_text(&client, "#saga-states", |t| t.contains("failed")).await;
        let row = wait_text(&client, "#saga-list tbody tr", |t| t.contains(&id)).await;
        assert!(
            row.contains("create_order") && row.contains("failed"),
            "{row}"
        );
        click(&client, &format!("tr[data-saga='{id}'] a")).await;
        wait_text(&client, "#saga-head", |t| {
            t.contains(&id) && t.contains("failed")
        })
        .await;
        wait_text(&client, "#saga-timeline", |t| t.contains("compensat")).await;
        let lines: Vec<String> = texts(&client, "#saga-timeline li")
            .await
            .iter()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        let timeline = lines.join("\n");
        let at = |needle: &str| {
            lines
                .iter()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no `{needle}` in the timeline:\n{timeline}"))
        };
        // The payment failed, then the inventory step, done before it, was compensated.
        let failed = at("process_payment failed");
        let compensated = lines
            .iter()
            .rposition(|l| l.contains("reserve_inventory") && l.contains("compensat"))
            .unwrap_or_else(|| panic!("no compensation of reserve_inventory:\n{timeline}"));
        assert!(
            at("reserve_inventory completed") < failed && failed < compensated,
            "{timeline}"
        );
        assert!(timeline.contains("card declined"), "{timeline}");
        let data = wait_text(&client, "#saga-data", |t| t.contains("ord_7")).await;
        shot(&client, "saga").await;
        assert!(data.contains("reservation"), "{data}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correlation_ids_flow_lists_its_events_in_order_with_their_causes() {
    let ns = Namespace::new("console-flow");
    let t = console::transport(&ns).await;
    let (correlation, types) = console::flow(&t).await;
    let console = Console::start(&ns, &[]);
    let url = console.url(&format!("/#/events/correlation/{correlation}"));
    with_browser(|client| async move {
        client.goto(&url).await.unwrap();
        wait_text(&client, "#find-info", |t| t.starts_with("4 events found")).await;
        let shown = texts(&client, "#flow .event .type").await;
        assert_eq!(shown, types);
        let items = texts(&client, "#flow .event").await;
        assert!(!items[0].contains("caused by"), "{}", items[0]);
        for (i, item) in items.iter().enumerate().skip(1) {
            let cause = format!("caused by #{i} {}", types[i - 1]);
            assert!(
                item.contains(&cause),
                "event {} lacks `{cause}`: {item}",
                i + 1
            );
        }
        // One arrow per causation link.
        assert_eq!(
            client
                .find_all(fantoccini::Locator::Css("#flow path.link"))
                .await
                .unwrap()
                .len(),
            3
        );
        shot(&client, "flow").await;
        // The tail of the stream shows its events live.
        let published = eventbus_core::Envelope::new(
            "OrderShipped",
            1,
            "shop",
            serde_json::json!({"order_id": "ord_live"}),
        );
        let live_id = published.event_id.clone();
        let key = format!("{}:stream:OrderShipped", t.keys().namespace());
        let option = format!("#tail-stream option[value='{key}']");
        click(&client, &option).await;
        eventbus_core::StreamTransport::publish(&t, &[published])
            .await
            .unwrap();
        wait_text(&client, "#tail", |t| t.contains(&live_id)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_show_their_position_and_a_rebuild_can_be_asked_for() {
    let ns = Namespace::new("console-projections");
    let t = console::transport(&ns).await;
    let (_billing, subscription) = console::lagging_with_a_dead_letter(&t).await;
    subscription.shutdown().await.unwrap();
    // A projection's group, 31 entries behind (no instance runs it).
    let topic = eventbus_core::transport::Topic::of_type("OrderCreated");
    eventbus_core::StreamTransport::ensure_group(
        &t,
        &topic,
        "orders-projection-OrderSummary",
        eventbus_core::StartFrom::Beginning,
    )
    .await
    .unwrap();
    let console = Console::start(&ns, &["--allow-writes", "--token", TOKEN]);
    let url = console.url(&format!("/#token={TOKEN}"));
    let page = console.url("/#/projections");
    with_browser(|client| async move {
        client.goto(&url).await.unwrap();
        wait_text(&client, "#mode", |t| t == "writes allowed").await;
        client.goto(&page).await.unwrap();
        let card = "section[data-projection=OrderSummary]";
        let text = wait_text(&client, card, |t| t.contains("never rebuilt")).await;
        assert!(
            text.contains("orders-projection-OrderSummary") && text.contains("31"),
            "{text}"
        );
        click(&client, &format!("{card} button.rebuild")).await;
        let question = wait_text(&client, "#modal-text", |t| !t.is_empty()).await;
        assert!(
            question.starts_with("Rebuild projection OrderSummary"),
            "{question}"
        );
        click(&client, "#modal-confirm").await;
        wait_text(&client, card, |t| t.contains("rebuild requested")).await;
        shot(&client, "projections").await;
    })
    .await;
    let keys = t.projection_keys("OrderSummary").await.unwrap();
    assert!(keys.rebuild_requested_at.is_some());
}
