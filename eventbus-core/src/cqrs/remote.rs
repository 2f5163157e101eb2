//! Remote commands: a command sent to a named service over its command stream, handled by
//! exactly one instance of that service (its consumer group), the reply returned to the
//! sender over the sender's reply stream.
//!
//! Wire: the command is an entry of the service's command stream ([`command_topic`]: Redis
//! `{ns}:stream:cmd:{service}`) in the event envelope format: `event_type` = the command
//! type, `event_id` = the command id, `data` = the command, `metadata.reply_to` = the sender's
//! instance, `metadata.deadline` = when the sender stops waiting (Unix seconds). The reply is
//! an entry of the sender's reply stream ([`reply_topic`]: `{ns}:stream:reply:{instance}`) with `event_type` `CommandReply` and `data`
//! `{"command_id", "status": "ok"|"rejected"|"no_handler"|"failed", "output"|"error"|"message"}`.
//!
//! A client's reply stream lives as long as the client: with [`ReplyStreams`] (Redis:
//! `RedisTransport`) it is kept alive while the client runs, removed when it shuts down, and
//! expires when its process dies; a reply arriving after that is dropped, not appended to a
//! new stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize as _;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::bus::{Context, EventBus, Subscription};
use crate::cqrs::command::{Command, CommandBus, CommandError, DispatchOptions, RemoteOutcome};
use crate::envelope::{new_id, now_seconds, Envelope};
use crate::error::{Error, HandlerError, Result};
pub use crate::transport::ReplyStreams;
use crate::transport::{StartFrom, Topic};

/// The stream a service's commands are sent on (`cmd:{service}`), read by its group
/// `{service}-commands`.
pub fn command_topic(service: &str) -> Topic {
    Topic::Named(format!("cmd:{service}"))
}

/// The stream a client instance's replies come back on (`reply:{instance}`).
pub fn reply_topic(instance: &str) -> Topic {
    Topic::Named(format!("reply:{instance}"))
}

/// The event type of reply entries.
const REPLY_TYPE: &str = "CommandReply";
/// Attempts at writing a reply before the command's delivery fails (and is retried).
const REPLY_ATTEMPTS: u32 = 3;
/// How long a client's reply stream outlives its last keep-alive (renewed every third).
pub const DEFAULT_REPLY_TTL: Duration = Duration::from_secs(30);

/// Renews a reply stream while alive; stops renewing when dropped.
struct KeepAlive(JoinHandle<()>);

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves a command bus's commands to remote senders: a subscription in the group
/// `{service}-commands` on the service's command stream, replying to each sender. Run one on
/// every instance; each command is handled by one of them.
///
/// Delivery is at-least-once like every Streams subscription: an instance that dies after
/// handling a command but before acknowledging it gets the command handled again by another
/// instance. Make handlers idempotent by
/// [`CommandContext::command_id`](crate::CommandContext::command_id), which is the sender's id
/// and stays the same.
#[derive(Debug, Clone)]
pub struct CommandServer {
    commands: CommandBus,
}

impl CommandServer {
    /// A server of `commands` (its handlers, on its event bus's service).
    pub fn new(commands: CommandBus) -> Self {
        CommandServer { commands }
    }

    /// Starts serving: subscribes to the service's command stream in the group
    /// `{service}-commands`.
    pub async fn start(self) -> Result<Subscription> {
        let events = self.commands.events().clone();
        let service = events.service().to_string();
        events
            .subscribe()
            .group(format!("{service}-commands"))
            .on_topic(
                command_topic(&service),
                move |envelope: Envelope<Value>, ctx: Context| {
                    let server = self.clone();
                    async move { server.handle(envelope, ctx).await }
                },
            )
            .start()
            .await
    }

    /// Handles one entry of a command stream and replies to its sender: the handler
    /// [`start`](Self::start) mounts, for mounting on a subscription configured by hand
    /// (`.on_topic(command_topic(service), …)` in the group `{service}-commands`).
    pub async fn handle(
        &self,
        envelope: Envelope<Value>,
        ctx: Context,
    ) -> Result<(), HandlerError> {
        serve_one(self.commands.clone(), envelope, ctx).await
    }
}

/// The reply to command `command_id` that ended with `outcome`, as the wire has it.
fn reply_data(command_id: &str, outcome: RemoteOutcome) -> Value {
    match outcome {
        RemoteOutcome::Handled(output) => {
            json!({"command_id": command_id, "status": "ok", "output": output})
        }
        RemoteOutcome::Rejected { message, error } => json!({
            "command_id": command_id,
            "status": "rejected",
            "message": message,
            "error": error,
        }),
        RemoteOutcome::NoHandler => json!({"command_id": command_id, "status": "no_handler"}),
        RemoteOutcome::Failed(message) => {
            json!({"command_id": command_id, "status": "failed", "message": message})
        }
    }
}

async fn serve_one(
    bus: CommandBus,
    envelope: Envelope<Value>,
    ctx: Context,
) -> Result<(), HandlerError> {
    let Some(reply_to) = envelope
        .metadata
        .get("reply_to")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return Err(HandlerError::permanent(
            "command without `metadata.reply_to`",
        ));
    };
    let command_id = envelope.event_id.clone();
    let expired = envelope
        .metadata
        .get("deadline")
        .and_then(Value::as_f64)
        .is_some_and(|d| d < now_seconds());
    let envelope = Arc::new(envelope);
    let data = if expired {
        // The sender stopped waiting: don't act on a command nobody awaits.
        json!({"command_id": command_id, "status": "failed", "message": "command expired before it was handled"})
    } else {
        let outcome = match bus.remote_invoker(&envelope.event_type) {
            Some(invoke) => invoke(bus.clone(), envelope.clone()).await,
            None => RemoteOutcome::NoHandler,
        };
        reply_data(&command_id, outcome)
    };
    let mut reply =
        Envelope::new(REPLY_TYPE, 1, bus.events().service(), data).caused_by(&*envelope);
    crate::telemetry::context::stamp(&mut reply.metadata);
    let transport = ctx.bus().transport().clone();
    let streams = transport.reply_streams();
    let topic = reply_topic(&reply_to);
    let mut last = None;
    for attempt in 1..=REPLY_ATTEMPTS {
        let sent = match &streams {
            Some(streams) => streams.reply(&topic, std::slice::from_ref(&reply)).await,
            None => transport.append(&topic, std::slice::from_ref(&reply)).await,
        };
        match sent {
            Ok(_) => return Ok(()),
            Err(e) => {
                tracing::warn!(command_id = %envelope.event_id, error = %e, attempt, "cannot send command reply");
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            }
        }
    }
    Err(HandlerError::from(last.map_or_else(
        || "reply failed".to_string(),
        |e| e.to_string(),
    )))
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>;

/// Sends commands to other services and awaits their replies.
///
/// Each client has its own reply stream ([`reply_topic`], bounded) read by a
/// subscription of its own. Start one per process and share it.
///
/// ```
/// use std::time::Duration;
/// use eventbus_core::transport::memory::MemoryTransport;
/// use eventbus_core::{command, command_handler, CommandBus, CommandClient, CommandServer, EventBus, NoRejection};
///
/// #[command(output = u64)]
/// pub struct Add { pub a: u64, pub b: u64 }
///
/// #[command_handler]
/// async fn add(cmd: Add) -> Result<u64, NoRejection> {
///     Ok(cmd.a + cmd.b)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let transport = MemoryTransport::new();
/// // The math service serves its commands (on every instance: one of them handles each).
/// let math = CommandBus::new(EventBus::new(transport.clone(), "math")).handle(add);
/// let serving = CommandServer::new(math).start().await?;
///
/// // Another service sends one and awaits the reply.
/// let client = CommandClient::start(EventBus::new(transport, "caller")).await?;
/// let sum = client.send("math", Add { a: 2, b: 3 }, Duration::from_secs(5)).await?;
/// assert_eq!(sum, 5);
/// client.shutdown().await?;
/// serving.shutdown().await?;
/// # Ok(())
/// # }
/// ```
pub struct CommandClient {
    events: EventBus,
    instance: String,
    pending: Pending,
    replies: Subscription,
    streams: Option<Arc<dyn ReplyStreams>>,
    _keep_alive: Option<KeepAlive>,
}

impl std::fmt::Debug for CommandClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandClient")
            .field("instance", &self.instance)
            .finish()
    }
}

impl CommandClient {
    /// Starts a client sending as `events`' service, with a fresh instance name. Its reply
    /// stream lives as long as the client: kept alive while it runs (for
    /// [`DEFAULT_REPLY_TTL`] at a time, by the backend's
    /// [`reply_streams`](crate::transport::StreamTransport::reply_streams)), removed by
    /// [`shutdown`](Self::shutdown), and expiring by itself if the process dies.
    pub async fn start(events: EventBus) -> Result<Self> {
        let streams = events.transport().reply_streams();
        Self::start_inner(events, streams, DEFAULT_REPLY_TTL).await
    }

    /// Starts a client whose reply stream is kept alive by `streams` for `ttl` at a time
    /// (renewed every third of it; [`DEFAULT_REPLY_TTL`] is a good default), removed by
    /// [`shutdown`](Self::shutdown), and left to expire if the client is dropped or its
    /// process dies: [`start`](Self::start) with another lifecycle or time to live.
    pub async fn start_with(
        events: EventBus,
        streams: Arc<dyn ReplyStreams>,
        ttl: Duration,
    ) -> Result<Self> {
        Self::start_inner(events, Some(streams), ttl).await
    }

    async fn start_inner(
        events: EventBus,
        streams: Option<Arc<dyn ReplyStreams>>,
        ttl: Duration,
    ) -> Result<Self> {
        let instance = format!("{}-{}", events.service(), &new_id()[24..]);
        let pending: Pending = Arc::default();
        let p = pending.clone();
        let replies = events
            .subscribe()
            .group(instance.clone())
            .consumer_name(instance.clone())
            .start_from(StartFrom::Beginning)
            .configure(|o| o.remove_idle_consumers_after = None)
            .on_topic(reply_topic(&instance), move |reply: Envelope<Value>| {
                let p = p.clone();
                async move {
                    let waiter = reply
                        .data
                        .get("command_id")
                        .and_then(Value::as_str)
                        .and_then(|id| p.lock().unwrap_or_else(|e| e.into_inner()).remove(id));
                    // No waiter: the sender timed out already; the reply is dropped.
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(reply.data);
                    }
                    Ok::<(), HandlerError>(())
                }
            })
            .start()
            .await?;
        let topic = reply_topic(&instance);
        let keep_alive = match &streams {
            Some(streams) => {
                if let Err(e) = streams.keep_alive(&topic, ttl).await {
                    replies.shutdown().await.ok();
                    streams.remove(&topic).await.ok();
                    return Err(e);
                }
                let (streams, topic) = (streams.clone(), topic.clone());
                Some(KeepAlive(tokio::spawn(async move {
                    let every = (ttl / 3).max(Duration::from_millis(10));
                    loop {
                        tokio::time::sleep(every).await;
                        if let Err(e) = streams.keep_alive(&topic, ttl).await {
                            tracing::warn!(topic = %topic, error = %e, "cannot keep the reply stream alive");
                        }
                    }
                })))
            }
            None => None,
        };
        Ok(CommandClient {
            events,
            instance,
            pending,
            replies,
            streams,
            _keep_alive: keep_alive,
        })
    }

    /// This client's instance name (its reply stream).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Sends `command` to `service` and waits up to `timeout` for the outcome.
    pub async fn send<C: Command>(
        &self,
        service: &str,
        command: C,
        timeout: Duration,
    ) -> std::result::Result<C::Output, CommandError<C::Error>> {
        self.send_with(service, command, timeout, DispatchOptions::default())
            .await
    }

    /// [`send`](Self::send) with explicit correlation/causation/command ids.
    pub async fn send_with<C: Command>(
        &self,
        service: &str,
        command: C,
        timeout: Duration,
        options: DispatchOptions,
    ) -> std::result::Result<C::Output, CommandError<C::Error>> {
        let data = serde_json::to_value(&command).map_err(|source| {
            CommandError::Send(Error::Serialize {
                event_type: C::COMMAND_TYPE.to_string(),
                source,
            })
        })?;
        let mut envelope = Envelope::new(C::COMMAND_TYPE, 1, self.events.service(), data)
            .with_metadata("reply_to", self.instance.clone())
            .with_metadata("deadline", now_seconds() + timeout.as_secs_f64());
        if let Some(id) = options.command_id {
            envelope.event_id = id;
        }
        envelope.correlation_id = Some(
            options
                .correlation_id
                .unwrap_or_else(|| envelope.event_id.clone()),
        );
        envelope.causation_id = options.causation_id;
        crate::telemetry::context::stamp(&mut envelope.metadata);
        let command_id = envelope.event_id.clone();

        let (tx, rx) = oneshot::channel();
        self.pending().insert(command_id.clone(), tx);
        let sent = self
            .events
            .transport()
            .append(&command_topic(service), std::slice::from_ref(&envelope))
            .await;
        if let Err(e) = sent {
            self.pending().remove(&command_id);
            return Err(CommandError::Send(e));
        }
        let reply = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => return Err(CommandError::Send(Error::Shutdown)),
            Err(_) => {
                self.pending().remove(&command_id);
                return Err(CommandError::Timeout(timeout));
            }
        };
        decode_reply::<C>(reply)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Value>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops listening for replies and removes the reply stream (with
    /// [`start_with`](Self::start_with)); replies arriving later are dropped.
    pub async fn shutdown(self) -> Result<()> {
        drop(self._keep_alive);
        self.replies.shutdown().await?;
        if let Some(streams) = &self.streams {
            streams.remove(&reply_topic(&self.instance)).await?;
        }
        Ok(())
    }
}

fn decode_reply<C: Command>(
    reply: Value,
) -> std::result::Result<C::Output, CommandError<C::Error>> {
    let message = || {
        reply
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    match reply.get("status").and_then(Value::as_str) {
        Some("ok") => C::Output::deserialize(reply.get("output").unwrap_or(&Value::Null))
            .map_err(|e| CommandError::Remote(format!("cannot decode the reply's output: {e}"))),
        Some("rejected") => match C::Error::deserialize(reply.get("error").unwrap_or(&Value::Null))
        {
            Ok(rejection) => Err(CommandError::Rejected(rejection)),
            Err(e) => Err(CommandError::Remote(format!(
                "rejected ({}), and cannot decode the rejection: {e}",
                message()
            ))),
        },
        Some("no_handler") => Err(CommandError::NoHandler {
            command_type: C::COMMAND_TYPE.to_string(),
        }),
        _ => Err(CommandError::Remote(message())),
    }
}
