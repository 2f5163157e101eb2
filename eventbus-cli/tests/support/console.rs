//! The console under test: `eventbus console` on a free port (stopped by pid when dropped),
//! a few-line HTTP/1.1 client, and namespaces seeded with what the pages show.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus_core::saga::{transition, SagaDefinition, SagaStep, SagaStore};
use eventbus_core::transport::{StartFrom, StreamAdmin, StreamTransport, Topic};
use eventbus_core::{Envelope, EventBus, HandlerError, Subscription};
use eventbus_redis::{RedisConfig, RedisSagaStore, RedisTransport};
use serde_json::{json, Map, Value};

use super::{cli, redis_url};

/// A running `eventbus console`.
pub struct Console {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it printed on stderr before it listened.
    pub banner: String,
}

impl Console {
    /// `eventbus --namespace {ns} console --listen 127.0.0.1:0 --saga-prefix {ns}:saga: …args`
    /// against the test server; returns once it listens.
    pub fn start(ns: &str, args: &[&str]) -> Console {
        let prefix = format!("{ns}:saga:");
        let mut command = cli(ns, &["console", "--listen", "127.0.0.1:0"]);
        command.args(["--saga-prefix", &prefix]).args(args);
        Console::spawn(command)
    }

    /// Starts `command` (an `eventbus … console` command) and waits until it listens.
    pub fn spawn(mut command: std::process::Command) -> Console {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut banner = String::new();
        let addr = loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                let _ = child.kill();
                panic!("eventbus console exited before listening: {banner}");
            }
            banner.push_str(&line);
            // The last line it prints before serving: `… console of namespace … http://ADDR/`.
            let last = line.contains("console of namespace");
            if let Some(addr) = line
                .split("http://")
                .nth(1)
                .and_then(|rest| rest.split('/').next())
                .filter(|_| last)
            {
                break addr.parse().unwrap();
            }
        };
        // Keep reading what it writes, so that it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Console {
            child,
            addr,
            banner,
        }
    }

    /// `http://{addr}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Reply {
        request(self.addr, "GET", path, &[], None)
    }

    /// `POST path` with a JSON body and these headers (a `Host` is always sent).
    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
        request(self.addr, "POST", path, headers, Some(&body.to_string()))
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP reply.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// One HTTP/1.1 request (`Connection: close`); `Host` is the console's unless given.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str("Content-Type: application/json\r\n");
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    head.push_str(body.unwrap_or(""));
    stream.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (headers, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = headers
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Reply {
        status,
        headers: headers.to_owned(),
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// A transport on the test server in `ns`.
pub async fn transport(ns: &str) -> RedisTransport {
    RedisTransport::connect(RedisConfig::new(&redis_url()).unwrap().namespace(ns))
        .await
        .unwrap()
}

/// Orders `billing` handled, and whether it fails (permanently) on `ord_13`.
#[derive(Clone, Default)]
pub struct Billing {
    pub handled: Arc<Mutex<Vec<String>>>,
    pub broken: Arc<AtomicBool>,
}

impl Billing {
    /// The group `billing-consumers` from the start of `OrderCreated`.
    pub async fn start(&self, t: &RedisTransport) -> Subscription {
        let this = self.clone();
        EventBus::new(t.clone(), "billing")
            .subscribe()
            .start_from(StartFrom::Beginning)
            .on_raw("OrderCreated", move |e: Envelope<Value>| {
                let this = this.clone();
                async move {
                    let order = e.data["order_id"].as_str().unwrap_or_default().to_owned();
                    if order == "ord_13" && this.broken.load(Ordering::SeqCst) {
                        return Err(HandlerError::permanent("card declined for ord_13"));
                    }
                    this.handled.lock().unwrap().push(order);
                    Ok(())
                }
            })
            .start()
            .await
            .unwrap()
    }
}

/// The acceptance scenario: stream `OrderCreated` with 31 orders, group
/// `shipping-consumers` behind by all 31, group `billing-consumers` caught up with one dead
/// letter (`ord_13`). Returns billing, still running (with `ord_13` still failing).
pub async fn lagging_with_a_dead_letter(t: &RedisTransport) -> (Billing, Subscription) {
    let topic = Topic::of_type("OrderCreated");
    t.ensure_group(&topic, "shipping-consumers", StartFrom::New)
        .await
        .unwrap();
    let orders: Vec<Envelope<Value>> = (1..=31)
        .map(|i| {
            Envelope::new(
                "OrderCreated",
                1,
                "shop",
                json!({"order_id": format!("ord_{i}")}),
            )
        })
        .collect();
    t.publish(&orders).await.unwrap();
    let billing = Billing::default();
    billing.broken.store(true, Ordering::SeqCst);
    let subscription = billing.start(t).await;
    eventbus_tests::eventually(Duration::from_secs(15), "ord_13 dead-lettered", || async {
        let lag = t.lag_of(&topic, "billing-consumers").await.unwrap();
        let dead = t.dead_letters("billing-consumers", 10).await.unwrap();
        dead.len() == 1 && lag.is_some_and(|l| l.lag == Some(0) && l.pending == 0)
    })
    .await;
    (billing, subscription)
}

/// The saga of these tests: `create_order`, inventory then payment, each compensable.
pub fn create_order_saga() -> SagaDefinition {
    SagaDefinition::new("create_order")
        .step(
            SagaStep::new("reserve_inventory")
                .command_type("InventoryReserveCommand")
                .success_type("InventoryReserved")
                .failure_type("InventoryReserveFailed")
                .compensation_type("InventoryReleaseCommand"),
        )
        .step(
            SagaStep::new("process_payment")
                .command_type("PaymentProcessCommand")
                .success_type("PaymentProcessed")
                .failure_type("PaymentFailed")
                .compensation_type("PaymentRefundCommand"),
        )
}

/// A saga (`create_order`: inventory, then payment) whose payment failed, so its inventory
/// step was compensated. State at `{ns}:saga:{id}`; returns the id.
pub async fn compensated_saga(t: &RedisTransport, ns: &str) -> String {
    let definition = create_order_saga();
    let store = RedisSagaStore::new(t).with_state_prefix(format!("{ns}:saga:"));
    let id = "saga-ord-7".to_owned();
    let now = eventbus_core::envelope::now_seconds();
    let mut data = Map::new();
    data.insert("order_id".into(), json!("ord_7"));
    let mut state = transition::start(&definition, &id, data, now).unwrap();
    assert!(store.create(&state).await.unwrap());
    let timeout = Duration::from_secs(30);
    for (i, (reply, fields)) in [
        ("InventoryReserved", json!({"reservation": "r-1"})),
        ("PaymentFailed", json!({"error": "card declined"})),
    ]
    .into_iter()
    .enumerate()
    {
        let fields = fields.as_object().unwrap().clone();
        let at = now + 0.1 * (i + 1) as f64;
        let transition::Transition::Apply(next) = transition::on_reply(
            &definition,
            &state,
            reply,
            &format!("e{i}"),
            &fields,
            timeout,
            at,
        ) else {
            panic!("{reply} not applied");
        };
        assert!(store.update(&state, &next).await.unwrap());
        state = *next;
    }
    id
}

/// One order's flow across four streams under one correlation id, each event caused by the
/// one before, published out of order among other flows' events. Returns the correlation
/// id and the event types in causal order.
pub async fn flow(t: &RedisTransport) -> (String, Vec<&'static str>) {
    let correlation = format!("corr-{}", uuid::Uuid::new_v4().simple());
    let types = [
        "OrderPlaced",
        "PaymentRequested",
        "PaymentCaptured",
        "OrderShipped",
    ];
    let mut previous: Option<Envelope<Value>> = None;
    for (i, event_type) in types.iter().enumerate() {
        let noise = Envelope::new(*event_type, 1, "shop", json!({"n": i}))
            .with_correlation_id(format!("other-{i}"));
        let mut event = Envelope::new(
            *event_type,
            1,
            "shop",
            json!({"order_id": "ord_9", "step": i}),
        )
        .with_correlation_id(correlation.clone());
        if let Some(cause) = &previous {
            event = event.with_causation_id(cause.event_id.clone());
        }
        t.publish(&[noise, event.clone()]).await.unwrap();
        previous = Some(event);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (correlation, types.to_vec())
}
