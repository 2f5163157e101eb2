//! `eventbus saga …`: saga state and history by id, sagas by state.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use eventbus_core::saga::{SagaState, SagaStatus, SagaStore};
use eventbus_redis::{RedisSagaStore, RedisTransport};
use serde_json::{json, Value};

use crate::format::{age, count, duration, utc, Align, Table};
use crate::output::{print_line, print_table, print_text, CliResult};

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
    /// Sagas, by state, oldest first.
    List {
        /// Only sagas in this state (default: every state).
        #[arg(long, value_enum)]
        state: Option<State>,
        /// At most this many of each state: without `--state`, up to five times as many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print one JSON object per saga.
        #[arg(long)]
        json: bool,
    },
}

/// A saga state as `--state` takes it (core's [`SagaStatus`], which clap can't derive on).
#[derive(Clone, Copy, ValueEnum)]
enum State {
    /// Stored, first command not yet sent.
    Started,
    /// Waiting for the current step's reply.
    Pending,
    /// Every step succeeded.
    Completed,
    /// Waiting for a compensation to be confirmed.
    Compensating,
    /// Compensated after a failure.
    Failed,
}

impl From<State> for SagaStatus {
    fn from(state: State) -> Self {
        match state {
            State::Started => SagaStatus::Started,
            State::Pending => SagaStatus::Pending,
            State::Completed => SagaStatus::Completed,
            State::Compensating => SagaStatus::Compensating,
            State::Failed => SagaStatus::Failed,
        }
    }
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
                Some(s) => vec![SagaStatus::from(s)],
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
                return Ok(());
            }
            if sagas.is_empty() {
                let which = state.map_or(String::new(), |s| format!("{} ", SagaStatus::from(s)));
                return print_text(format_args!("no {which}sagas"));
            }
            print_table(&saga_table(&sagas))?;
            eprintln!("eventbus: {}", count(sagas.len() as u64, "saga", "sagas"));
            Ok(())
        }
    }
}

/// One row per saga: id, name, state, the step it is at, how long ago it started, its error.
fn saga_table(sagas: &[SagaState]) -> Table {
    let mut table = Table::new(&[
        ("SAGA", Align::Left),
        ("NAME", Align::Left),
        ("STATE", Align::Left),
        ("STEP", Align::Left),
        ("STARTED", Align::Right),
        ("ERROR", Align::Left),
    ]);
    for s in sagas {
        table.row(vec![
            s.saga_id.clone(),
            s.saga_name.clone(),
            s.state.to_string(),
            step_name(s),
            format!("{} ago", age(s.started_at)),
            s.error.clone().unwrap_or_else(|| "-".to_string()),
        ]);
    }
    table
}

/// The name of the step a saga is at, from its history (the definition isn't known here).
pub(crate) fn step_name(state: &SagaState) -> String {
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

/// A saga without its data and history (`saga list --json`, the console's list).
pub(crate) fn summary(s: &SagaState) -> Value {
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
        "saga {}  {}  {}\n  step {}  version {}  started {} ({} ago)\n",
        s.saga_id,
        s.saga_name,
        s.state,
        step_name(s),
        s.version,
        utc(s.started_at),
        age(s.started_at)
    );
    if let Some(done) = s.completed_at {
        let took = Duration::try_from_secs_f64(done - s.started_at).unwrap_or_default();
        out.push_str(&format!("  finished after {}\n", duration(took)));
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
