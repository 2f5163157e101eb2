//! `eventbus console`: a web page for operators — streams, groups and lag, dead letters,
//! sagas, projections and event flows of one namespace — served by the CLI itself.
//!
//! The page (HTML, CSS and plain JavaScript in `assets/`, embedded in the binary) polls the
//! JSON API under `/api/…` about once a second; the API is described by an OpenAPI 3
//! document at `/api/openapi.json`. Nothing is fetched from outside.
//!
//! Safety: read-only unless started with `--allow-writes`. Writes (replaying or purging dead
//! letters) are `POST`s that need the token (`--token`, `EVENTBUS_CONSOLE_TOKEN`, or one
//! generated and printed at start) as `Authorization: Bearer …`, and are refused when they
//! come from another site (`Origin`, `Sec-Fetch-Site`). On a loopback address only requests
//! naming a loopback host are served (no DNS rebinding). No response shows the password of
//! the Redis URL. Lists are bounded and streams are read in pages.
//!
//! Module map: [`server`] (the router), [`state`] (what handlers share), [`guard`] (the
//! safety checks), [`api`] (one module per page), [`health`] (rates and growing lag across
//! polls), [`cache`] (one reply of a polled page shared by every tab), [`assets`] (the
//! embedded page and the OpenAPI document). Modules depend on each other one way: `server`
//! on the others, `guard` and `assets` on `api`, all on `state`, `state` on `health` and
//! `cache`.

mod api;
mod assets;
mod cache;
mod guard;
mod health;
mod server;
mod state;

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use eventbus_redis::RedisTransport;

use crate::consume::shutdown_signal;
use crate::monitor::seconds;
use crate::output::CliResult;

/// The default address: loopback only.
const DEFAULT_LISTEN: &str = "127.0.0.1:7474";

/// `eventbus console`.
#[derive(Args)]
pub(crate) struct ConsoleArgs {
    /// Where to serve the console (port 0 picks a free port). Binds loopback by default;
    /// anything else exposes it to the network.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Allow replaying and purging dead letters from the page (`POST`s with the token).
    #[arg(long)]
    allow_writes: bool,
    /// The token writes must carry (`Authorization: Bearer TOKEN`); with `--allow-writes`
    /// and no token, one is generated and printed.
    #[arg(
        long,
        env = "EVENTBUS_CONSOLE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// Prefix of saga state keys (`{prefix}{saga_id}`).
    #[arg(long, default_value = eventbus_redis::keys::DEFAULT_SAGA_PREFIX)]
    saga_prefix: String,
    /// A group whose oldest pending entry has been idle this many seconds is highlighted.
    #[arg(long, value_name = "S", default_value = "60", value_parser = seconds)]
    pending_alert: Duration,
}

pub(crate) async fn run(transport: RedisTransport, args: ConsoleArgs) -> CliResult {
    let token = match (args.allow_writes, args.token) {
        (false, _) => None,
        (true, Some(token)) if !token.trim().is_empty() => Some(token.trim().to_owned()),
        (true, _) => Some(uuid::Uuid::new_v4().simple().to_string()),
    };
    let settings = state::Settings {
        token: token.clone(),
        saga_prefix: args.saga_prefix,
        pending_alert: args.pending_alert,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    announce(&transport, addr, token.as_deref());
    let app = server::router(state::AppState::new(transport, settings, addr));
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            shutdown_signal().await;
            eprintln!("eventbus: stopping");
        })
        .await
        .map_err(|e| format!("console server failed: {e}"))?;
    Ok(())
}

/// Says in what mode the console runs (writes allowed: the page's URL with the token, in
/// the fragment, which browsers never send), then, last, where it is.
fn announce(transport: &RedisTransport, addr: SocketAddr, token: Option<&str>) {
    if !addr.ip().is_loopback() {
        eprintln!("eventbus: warning: listening on {addr}, reachable from the network");
    }
    match token {
        None => eprintln!("eventbus: read-only (start with --allow-writes to replay and purge)"),
        Some(token) => {
            eprintln!("eventbus: writes allowed with the token; open http://{addr}/#token={token}")
        }
    }
    let namespace = transport.keys().namespace();
    let server = transport.config().redacted_url();
    eprintln!("eventbus: console of namespace `{namespace}` on {server}: http://{addr}/");
}
