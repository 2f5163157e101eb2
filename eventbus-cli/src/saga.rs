//! `eventbus saga …`: saga state and history by id, sagas by state.

use clap::{Args, Subcommand};
use eventbus_core::saga::{SagaState, SagaStatus, SagaStore};
use eventbus_redis::{RedisSagaStore, RedisTransport};
use serde_json::{json, Value};

use crate::output::{print_line, print_text, CliResult};

/// `eventbus saga …`.
#[derive(Args)]
pub(crate) struct SagaArgs {
    /// Prefix of saga state keys (`{prefix}{saga_id}`).
    #[arg(long, global = true, default_value = eventbus_redis::keys::DEFAULT_SAGA_PREFIX)]
    saga_prefix: String,
    #[command(subcommand)]
    action: SagaAction,
}

#[derive(Subcommand)]
enum SagaAction {
    /// A saga's state, data and history.
    Show {
        /// The saga id.
        id: String,
        /// Print the stored JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sagas, by state.
    List {
        /// Only sagas in this state (started, pending, completed, compensating, failed).
        #[arg(long)]
        state: Option<String>,
        /// At most this many per state.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print one JSON object per saga.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(transport: RedisTransport, args: SagaArgs) -> CliResult {
    let store = RedisSagaStore::new(&transport).with_state_prefix(args.saga_prefix);
    match args.action {
        SagaAction::Show { id, json } => {
            let state = store
                .load(&id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no saga `{id}` (key `{}`)", store.keys().state(&id)))?;
            if json {
                let value = serde_json::to_value(&state).map_err(|e| e.to_string())?;
                print_line(&value)
            } else {
                print!("{}", describe(&state));
                Ok(())
            }
        }
        SagaAction::List { state, limit, json } => {
            let statuses = match state {
                Some(s) => vec![s.parse::<SagaStatus>().map_err(|e| e.to_string())?],
                None => SagaStatus::ALL.to_vec(),
            };
            let mut sagas = Vec::new();
            for status in statuses {
                sagas.extend(store.list(status, limit).await.map_err(|e| e.to_string())?);
            }
            sagas.sort_by(|a, b| a.started_at.total_cmp(&b.started_at));
            if json {
                for s in &sagas {
                    print_line(&summary(s))?;
                }
            } else {
                print_text(format_args!(
                    "{:<38} {:<16} {:<13} {:<22} ERROR",
                    "SAGA", "NAME", "STATE", "STEP"
                ))?;
                for s in &sagas {
                    print_text(format_args!(
                        "{:<38} {:<16} {:<13} {:<22} {}",
                        s.saga_id,
                        s.saga_name,
                        s.state,
                        step_name(s),
                        s.error.as_deref().unwrap_or("-")
                    ))?;
                }
                eprintln!("eventbus: {} sagas", sagas.len());
            }
            Ok(())
        }
    }
}

/// The name of the step a saga is at, from its history (the definition isn't known here).
fn step_name(state: &SagaState) -> String {
    let names: Vec<&str> = state
        .history
        .iter()
        .filter(|h| h.action == "started")
        .map(|h| h.step.as_str())
        .collect();
    match names.get(state.current_step) {
        Some(name) => format!("{} {name}", state.current_step),
        None => state.current_step.to_string(),
    }
}

fn summary(s: &SagaState) -> Value {
    json!({
        "saga_id": s.saga_id,
        "saga_name": s.saga_name,
        "state": s.state,
        "current_step": s.current_step,
        "started_at": s.started_at,
        "completed_at": s.completed_at,
        "error": s.error,
        "version": s.version,
    })
}

/// The text of `saga show`.
fn describe(s: &SagaState) -> String {
    let mut out = format!(
        "saga {}  {}  {}\n  step {}  version {}  started_at {:.3}\n",
        s.saga_id,
        s.saga_name,
        s.state,
        step_name(s),
        s.version,
        s.started_at
    );
    if let Some(done) = s.completed_at {
        out.push_str(&format!("  finished after {:.3}s\n", done - s.started_at));
    }
    if let Some(error) = &s.error {
        out.push_str(&format!("  error: {error}\n"));
    }
    out.push_str(&format!(
        "  data: {}\n  history:\n",
        Value::Object(s.data.clone())
    ));
    for h in &s.history {
        out.push_str(&format!(
            "    +{:>8.3}s  {:<20} {}{}\n",
            h.timestamp - s.started_at,
            h.step,
            h.action,
            h.error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
    }
    out
}
