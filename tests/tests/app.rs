//! An `App` end to end, on Redis and in memory: command → event → projection → query with
//! read-your-writes, event handlers with their state, and the wiring mistakes it refuses.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventbus_core::prelude::*;
use eventbus_redis::AppBuilderExt;
use eventbus_redis::{RedisConfig, RedisTransport};

#[event(name = "AppTest.Registered")]
#[derive(Debug, Clone)]
struct Registered {
    user_id: String,
    name: String,
}

#[command(output = Registered)]
struct Register {
    name: String,
}

#[command_handler]
async fn register(cmd: Register, ctx: CommandContext) -> Result<Registered, NoRejection> {
    Ok(Registered {
        user_id: ctx.new_id(),
        name: cmd.name,
    })
}

#[projection(hash = "apptest:users:{user_id}")]
#[derive(Debug, PartialEq)]
struct User {
    #[set(from = Registered)]
    user_id: String,
    #[set(from = Registered)]
    name: String,
}

#[query(output = Option<User>)]
struct GetUser {
    user_id: String,
}

#[query_handler]
async fn get_user(q: GetUser, models: State<ReadModels>) -> Result<Option<User>, QueryError> {
    Ok(User::load(&models, &q.user_id).await?)
}

/// Counts welcomes: the state an event handler takes.
#[derive(Default)]
struct Welcomes(AtomicUsize);

async fn welcome(
    _event: Registered,
    ctx: Context,
    welcomes: State<Welcomes>,
) -> Result<(), HandlerError> {
    assert!(ctx.delivery().delivery_count >= 1);
    welcomes.0.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// Builds the app under test on `backend`, with the welcome counter it shares.
fn users(builder: AppBuilder, welcomes: Arc<Welcomes>) -> AppBuilder {
    builder
        .command(register)
        .projection(User::projection())
        .query(get_user)
        .on(welcome)
        .state_arc(welcomes)
}

async fn round_trip(app: App, welcomes: Arc<Welcomes>) {
    for n in 0..20 {
        let registered = app
            .dispatch(Register {
                name: format!("Ada {n}"),
            })
            .await
            .unwrap();
        assert_eq!(registered.receipt.positions.len(), 1);
        assert_eq!(
            registered.receipt.positions[0].event_type,
            "AppTest.Registered"
        );
        // Read-your-writes: the query sees the command's event, every time, at once.
        let user = app
            .query_after(
                &registered.receipt,
                GetUser {
                    user_id: registered.user_id.clone(),
                },
            )
            .await
            .unwrap();
        assert_eq!(
            user,
            Some(User {
                user_id: registered.user_id.clone(),
                name: format!("Ada {n}"),
            })
        );
    }
    let last = app.dispatch(Register { name: "Bob".into() }).await.unwrap();
    let bob = app
        .query_eventually(GetUser {
            user_id: last.user_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(bob.map(|u| u.name).as_deref(), Some("Bob"));
    assert_eq!(
        app.query(GetUser {
            user_id: "nobody".into()
        })
        .await
        .unwrap(),
        None
    );
    eventbus_tests::eventually(Duration::from_secs(10), "21 welcomes", || async {
        welcomes.0.load(Ordering::SeqCst) == 21
    })
    .await;
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_in_memory() {
    let welcomes = Arc::new(Welcomes::default());
    let app = users(App::builder("users").in_memory(), welcomes.clone())
        .start()
        .await
        .unwrap();
    round_trip(app, welcomes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_on_redis() {
    let namespace = eventbus_tests::namespace("app_on_redis");
    let _guard = eventbus_tests::NamespaceGuard::new(namespace.clone());
    let transport = RedisTransport::connect(
        RedisConfig::new(&eventbus_tests::redis_url())
            .unwrap()
            .namespace(namespace.clone()),
    )
    .await
    .unwrap();
    let welcomes = Arc::new(Welcomes::default());
    // Read-model keys get the test's prefix so parallel runs don't meet.
    let app = users(
        App::builder("users")
            .redis(&transport)
            .read_model_prefix(format!("{namespace}:")),
        welcomes.clone(),
    )
    .start()
    .await
    .unwrap();
    round_trip(app, welcomes).await;
}

#[tokio::test]
async fn an_app_on_a_redis_url_that_does_not_parse_fails_to_start() {
    let err = App::builder("users")
        .redis("redis://[nonsense")
        .start()
        .await
        .unwrap_err();
    assert!(!err.to_string().is_empty());
}

#[test]
fn a_second_handler_for_one_command_panics_at_the_registration() {
    let refused = std::panic::catch_unwind(|| {
        App::builder("users")
            .in_memory()
            .command(register)
            .command(register)
    })
    .expect_err("two handlers for one command");
    let message = refused
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("AppTest.Register") || message.contains("Register"),
        "{message}"
    );
}

#[tokio::test]
async fn a_state_never_registered_fails_the_start_naming_the_registration() {
    let line = line!() + 4;
    let err = App::builder("users")
        .in_memory()
        .command(register)
        .on(welcome)
        .start()
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("Welcomes"), "{message}");
    assert!(
        message.contains(&format!("{}:{line}", file!())),
        "{message}"
    );
}

// Sagas in an app: the coordinator and a participant registered on one builder.

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Booking {
    seat: String,
}

#[event(name = "AppTest.Reserve")]
#[derive(Debug)]
struct Reserve {
    seat: String,
}

#[event(name = "AppTest.Reserved")]
#[derive(Debug)]
struct Reserved {
    ticket: String,
}

#[event(name = "AppTest.ReserveFailed")]
#[derive(Debug)]
struct ReserveFailed {
    error: String,
}

#[event(name = "AppTest.Release")]
#[derive(Debug)]
struct Release {
    seat: String,
}

fn booking() -> eventbus_core::saga::SagaDefinition<Booking> {
    use eventbus_core::saga::{SagaDefinition, SagaStep};
    SagaDefinition::new("booking").step(
        SagaStep::new("reserve")
            .command::<Reserve>()
            .success::<Reserved>()
            .failure::<ReserveFailed>()
            .compensation::<Release>(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_runs_its_sagas_and_their_participants() {
    use eventbus_core::saga::{Reply, SagaContext, SagaStatus};
    let saga = booking();
    let app = App::builder("theatre")
        .in_memory()
        .saga(&saga)
        .saga_step(
            &saga,
            |cmd: Reserve, _ctx: SagaContext| async move {
                if cmd.seat == "none" {
                    return Ok(Reply::Failure(ReserveFailed {
                        error: "sold out".into(),
                    }));
                }
                Ok(Reply::Success(Reserved {
                    ticket: format!("t-{}", cmd.seat),
                }))
            },
            |_undo: Release, _ctx: SagaContext| async { Ok(()) },
        )
        .start()
        .await
        .unwrap();
    let coordinator = app.sagas().expect("the app runs a coordinator");
    let ok = coordinator
        .start(&saga, &Booking { seat: "A1".into() })
        .await
        .unwrap();
    let refused = coordinator
        .start(
            &saga,
            &Booking {
                seat: "none".into(),
            },
        )
        .await
        .unwrap();
    for (id, status) in [(&ok, SagaStatus::Completed), (&refused, SagaStatus::Failed)] {
        eventbus_tests::eventually(Duration::from_secs(10), "the saga to end", || async {
            app.saga_store()
                .load(id)
                .await
                .unwrap()
                .is_some_and(|s| s.state == status)
        })
        .await;
    }
    let state = app.saga_store().load(&ok).await.unwrap().unwrap();
    assert_eq!(state.data["ticket"], "t-A1");
    app.shutdown().await.unwrap();
}

#[test]
fn a_saga_step_for_a_command_the_saga_lacks_panics_at_the_registration() {
    use eventbus_core::saga::{Reply, SagaContext};
    let saga = booking();
    let refused = std::panic::catch_unwind(|| {
        App::builder("theatre").in_memory().saga_step(
            &saga,
            |_cmd: Registered, _ctx: SagaContext| async {
                Ok(Reply::<Reserved, ReserveFailed>::Success(Reserved {
                    ticket: String::new(),
                }))
            },
            |_undo: Release, _ctx: SagaContext| async { Ok(()) },
        )
    })
    .expect_err("Registered is no command of the booking saga");
    let message = refused
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("AppTest.Registered"), "{message}");
}
