//! The saga state machine as pure functions: given a definition, a state and what happened,
//! the next state (and what it publishes). The coordinator stores the result with a
//! compare-and-set; the testing harness runs the same functions.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::saga::definition::{SagaDefinition, SagaStep};
use crate::saga::state::{HistoryEntry, OutgoingEvent, SagaState, SagaStatus};

/// Why a reply or a timeout changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ignored {
    /// The saga is completed or failed already.
    Finished,
    /// The event is not the reply the saga awaits now (a duplicate, or late: for a step
    /// that is not current any more).
    NotCurrent,
    /// A timeout that is not due (the saga moved on, or its deadline was re-armed).
    NotDue,
}

/// The result of applying something to a saga.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Store this state (its version is one more than the state it was made from) and then
    /// publish its outbox.
    Apply(Box<SagaState>),
    /// The event caused the last transition already (a redelivery): publish that
    /// transition's outbox again, store nothing.
    Republish(Vec<OutgoingEvent>),
    /// Nothing to do.
    Ignore(Ignored),
}

/// The payload of a step's command or compensation: the saga data plus `saga_id`.
pub fn payload(state: &SagaState) -> Value {
    let mut data = state.data.clone();
    data.insert("saga_id".into(), Value::String(state.saga_id.clone()));
    Value::Object(data)
}

fn entry(step: &SagaStep, action: &str, error: Option<String>, now: f64) -> HistoryEntry {
    HistoryEntry {
        step: step.name().to_string(),
        action: action.to_string(),
        error,
        timestamp: now,
    }
}

fn deadline_after(now: f64, timeout: Option<Duration>) -> Option<f64> {
    timeout.map(|t| now + t.as_secs_f64())
}

/// The first state of a saga: pending at step 0, its command in the outbox.
pub fn start(
    definition: &SagaDefinition,
    saga_id: &str,
    data: Map<String, Value>,
    now: f64,
) -> Option<SagaState> {
    let first = definition.steps().first()?;
    let mut state = SagaState {
        saga_id: saga_id.to_string(),
        saga_name: definition.name().to_string(),
        state: SagaStatus::Pending,
        current_step: 0,
        data,
        history: vec![entry(first, "started", None, now)],
        started_at: now,
        completed_at: None,
        error: None,
        version: 1,
        deadline: deadline_after(now, first.step_timeout()),
        outbox: Vec::new(),
        last_event_id: None,
    };
    state.outbox = vec![OutgoingEvent {
        event_type: first.command_event().to_string(),
        data: payload(&state),
    }];
    Some(state)
}

/// Applies a reply event (`event_type`, its id and payload) to a saga.
pub fn on_reply(
    definition: &SagaDefinition,
    state: &SagaState,
    event_type: &str,
    event_id: &str,
    data: &Map<String, Value>,
    compensation_retry: Duration,
    now: f64,
) -> Transition {
    if state.last_event_id.as_deref() == Some(event_id) {
        return Transition::Republish(state.outbox.clone());
    }
    if state.state.is_final() {
        return Transition::Ignore(Ignored::Finished);
    }
    let Some(step) = definition.steps().get(state.current_step) else {
        return Transition::Ignore(Ignored::NotCurrent);
    };
    let mut next = successor(state, event_id);
    match state.state {
        SagaStatus::Pending | SagaStatus::Started if event_type == step.success_event() => {
            for (k, v) in data {
                if k != "saga_id" {
                    next.data.insert(k.clone(), v.clone());
                }
            }
            next.history.push(entry(step, "completed", None, now));
            let i = state.current_step + 1;
            match definition.steps().get(i) {
                Some(following) => {
                    next.current_step = i;
                    next.history.push(entry(following, "started", None, now));
                    next.deadline = deadline_after(now, following.step_timeout());
                    next.outbox = vec![OutgoingEvent {
                        event_type: following.command_event().to_string(),
                        data: payload(&next),
                    }];
                }
                None => {
                    next.state = SagaStatus::Completed;
                    next.completed_at = Some(now);
                }
            }
        }
        SagaStatus::Pending | SagaStatus::Started if event_type == step.failure_event() => {
            let error = data
                .get("error")
                .map(|e| match e {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .unwrap_or_else(|| format!("step `{}` failed", step.name()));
            next.history
                .push(entry(step, "failed", Some(error.clone()), now));
            next.error = Some(error);
            compensate_from(
                definition,
                &mut next,
                state.current_step.checked_sub(1),
                compensation_retry,
                now,
            );
        }
        SagaStatus::Compensating if step.compensated_event() == Some(event_type) => {
            next.history.push(entry(step, "compensated", None, now));
            compensate_from(
                definition,
                &mut next,
                state.current_step.checked_sub(1),
                compensation_retry,
                now,
            );
        }
        _ => return Transition::Ignore(Ignored::NotCurrent),
    }
    Transition::Apply(Box::new(next))
}

/// Applies a due deadline: a pending step times out (it and every completed step before it
/// are compensated, since its participant may still have acted on the command); an awaited
/// compensation confirmation re-publishes the compensation.
pub fn on_timeout(
    definition: &SagaDefinition,
    state: &SagaState,
    compensation_retry: Duration,
    now: f64,
) -> Transition {
    if state.state.is_final() {
        return Transition::Ignore(Ignored::Finished);
    }
    let due = state.deadline.is_some_and(|d| d <= now);
    let Some(step) = definition.steps().get(state.current_step).filter(|_| due) else {
        return Transition::Ignore(Ignored::NotDue);
    };
    let mut next = successor(
        state,
        &format!("timeout:{}:{}", state.saga_id, state.version),
    );
    if state.state == SagaStatus::Compensating {
        next.history
            .push(entry(step, "compensation_retried", None, now));
        next.outbox = vec![OutgoingEvent {
            event_type: step.compensation_event().to_string(),
            data: payload(&next),
        }];
        next.deadline = Some(
            now + step
                .step_timeout()
                .unwrap_or(compensation_retry)
                .as_secs_f64(),
        );
        return Transition::Apply(Box::new(next));
    }
    let error = format!(
        "step `{}` timed out after {:?}",
        step.name(),
        step.step_timeout().unwrap_or_default()
    );
    next.history
        .push(entry(step, "timed_out", Some(error.clone()), now));
    next.error = Some(error);
    compensate_from(
        definition,
        &mut next,
        Some(state.current_step),
        compensation_retry,
        now,
    );
    Transition::Apply(Box::new(next))
}

/// A copy of `state` one version on, caused by `event_id`, with an empty outbox.
fn successor(state: &SagaState, event_id: &str) -> SagaState {
    let mut next = state.clone();
    next.version = state.version + 1;
    next.last_event_id = Some(event_id.to_string());
    next.outbox = Vec::new();
    next.deadline = None;
    next
}

/// Publishes compensations from step `from` down, one at a time: stops at the first step
/// whose participant confirms compensations (awaiting it), or ends the saga as failed.
///
/// A step without a confirmation event is recorded `compensated` in the same transition
/// that publishes its compensation: the coordinator hands it to the bus and does not wait
/// (its participant handles it at least once, idempotently — a redelivered reply publishes
/// the outbox again; after a timeout whose publish failed, `SagaCoordinator::republish`
/// does). A confirmed step is recorded `compensated` when its confirmation
/// arrives. Either way a failed saga's history ends with `compensating`, `compensated`
/// for each compensated step.
fn compensate_from(
    definition: &SagaDefinition,
    next: &mut SagaState,
    from: Option<usize>,
    compensation_retry: Duration,
    now: f64,
) {
    let mut i = from;
    while let Some(k) = i {
        let Some(step) = definition.steps().get(k) else {
            break;
        };
        next.history.push(entry(step, "compensating", None, now));
        next.outbox.push(OutgoingEvent {
            event_type: step.compensation_event().to_string(),
            data: payload(next),
        });
        if step.compensated_event().is_none() {
            next.history.push(entry(step, "compensated", None, now));
        } else {
            next.state = SagaStatus::Compensating;
            next.current_step = k;
            next.deadline = Some(
                now + step
                    .step_timeout()
                    .unwrap_or(compensation_retry)
                    .as_secs_f64(),
            );
            return;
        }
        i = k.checked_sub(1);
    }
    next.state = SagaStatus::Failed;
    next.completed_at = Some(now);
    next.deadline = None;
}
