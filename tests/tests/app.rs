//! An `App` end to end: command → event → projection → query, on Redis and in memory.

#![allow(clippy::unwrap_used)] // Tests fail loudly by unwrapping.

use eventbus_core::{
    command, command_handler, event, projection, query, query_handler, App, BoxError,
    CommandContext, NoRejection, ReadModel, ReadModels,
};
use eventbus_redis::{RedisConfig, RedisReadModels, RedisTransport};

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
async fn register(cmd: Register, ctx: &CommandContext) -> Result<Registered, NoRejection> {
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
async fn get_user(q: GetUser, models: &ReadModels) -> Result<Option<User>, BoxError> {
    Ok(User::load(models, &q.user_id).await?)
}

async fn round_trip(app: App) {
    let registered = app.dispatch(Register { name: "Ada".into() }).await.unwrap();
    let user = app
        .query_eventually(|| GetUser {
            user_id: registered.user_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        user,
        Some(User {
            user_id: registered.user_id.clone(),
            name: "Ada".into()
        })
    );
    assert_eq!(
        app.query(GetUser {
            user_id: "nobody".into()
        })
        .await
        .unwrap(),
        None
    );
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_in_memory() {
    let app = App::builder("users")
        .in_memory()
        .command(register)
        .projection(User::projection())
        .query(get_user)
        .start()
        .await
        .unwrap();
    round_trip(app).await;
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
    // Read-model keys get a test prefix so parallel runs don't meet.
    let models =
        ReadModels::new(RedisReadModels::new(&transport).with_prefix(format!("{namespace}:")));
    let app = App::builder("users")
        .backend(std::sync::Arc::new(transport.clone()), models)
        .command(register)
        .projection(User::projection())
        .query(get_user)
        .start()
        .await
        .unwrap();
    round_trip(app).await;
}
