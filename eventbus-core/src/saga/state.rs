//! The stored state of one saga instance, in the reference article's JSON shape.

use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Where a saga is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SagaStatus {
    /// Stored, first command not yet acknowledged by a transition (the article's initial
    /// state; this runtime moves to `pending` in the same step that stores the saga).
    Started,
    /// Waiting for the current step's reply.
    Pending,
    /// Every step succeeded. Final.
    Completed,
    /// A step failed or timed out; waiting for a compensation to be confirmed.
    Compensating,
    /// Compensated after a failure (or nothing to compensate). Final.
    Failed,
}

impl SagaStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [SagaStatus; 5] = [
        SagaStatus::Started,
        SagaStatus::Pending,
        SagaStatus::Completed,
        SagaStatus::Compensating,
        SagaStatus::Failed,
    ];

    /// The name stored in `state` (`"pending"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Started => "started",
            SagaStatus::Pending => "pending",
            SagaStatus::Completed => "completed",
            SagaStatus::Compensating => "compensating",
            SagaStatus::Failed => "failed",
        }
    }

    /// Whether the saga is over (completed or failed): nothing can change it any more.
    pub fn is_final(self) -> bool {
        matches!(self, SagaStatus::Completed | SagaStatus::Failed)
    }
}

impl fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SagaStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        SagaStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown saga state `{s}` (expected started, pending, completed, \
                     compensating or failed)"
                ))
            })
    }
}

/// One action in a saga's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The step's name.
    pub step: String,
    /// `started`, `completed`, `failed`, `timed_out`, `compensating`, `compensated` or
    /// `compensation_retried`. A step with a compensation confirmation is `compensated`
    /// when the confirmation arrives; one without, as soon as its compensation is
    /// published (the coordinator doesn't wait for it).
    pub action: String,
    /// The error of a `failed` or `timed_out` action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it happened (seconds since the Unix epoch).
    pub timestamp: f64,
}

/// An event a transition publishes: a step's command or compensation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutgoingEvent {
    /// Its event type.
    pub event_type: String,
    /// Its payload: the saga data plus `saga_id`.
    pub data: Value,
}

/// One saga instance as stored at `saga:{saga_id}`: the article's fields (`saga_id`,
/// `saga_name`, `state`, `current_step`, `data`, `history`, `started_at`) plus what
/// concurrency control and recovery need (`version`, `deadline`, `outbox`,
/// `last_event_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaState {
    /// The saga's id.
    pub saga_id: String,
    /// The definition's name.
    pub saga_name: String,
    /// Where it is.
    pub state: SagaStatus,
    /// The step running (pending) or being compensated (compensating); the last step run
    /// when final.
    pub current_step: usize,
    /// The saga data: what it started with, plus the fields of every success reply.
    pub data: Map<String, Value>,
    /// Every action, oldest first.
    pub history: Vec<HistoryEntry>,
    /// When it started (seconds since the Unix epoch).
    pub started_at: f64,
    /// When it completed or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<f64>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Bumped by every transition; each transition is a compare-and-set on it.
    pub version: u64,
    /// When the current step's reply (or compensation confirmation) is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<f64>,
    /// What the last transition published, re-published if that transition's cause is
    /// delivered again (the publish may not have happened).
    #[serde(default)]
    pub outbox: Vec<OutgoingEvent>,
    /// The id of the event that caused the last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_id: Option<String>,
}

impl SagaState {
    /// The saga data decoded as `D`.
    pub fn data_as<D: DeserializeOwned>(&self) -> Result<D> {
        D::deserialize(Value::Object(self.data.clone())).map_err(|e| Error::Decode {
            event_type: format!("saga `{}` data", self.saga_name),
            reason: e.to_string(),
        })
    }

    /// Encodes the state as the stored JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|source| Error::Serialize {
            event_type: format!("saga `{}` state", self.saga_name),
            source,
        })
    }

    /// Decodes a stored state.
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|e| Error::Decode {
            event_type: "saga state".into(),
            reason: e.to_string(),
        })
    }

    /// The actions of the history as `(step, action)` pairs, for assertions and display.
    pub fn actions(&self) -> Vec<(&str, &str)> {
        self.history
            .iter()
            .map(|h| (h.step.as_str(), h.action.as_str()))
            .collect()
    }
}

/// A saga instance with its data typed: the stored [`SagaState`] and its data decoded as
/// the definition's data type `D` (see
/// [`SagaCoordinator::instance`](crate::saga::SagaCoordinator::instance)).
///
/// The data holds what the saga started with plus the fields of every success reply: give
/// `D` optional fields (`#[serde(default)]`) for the reply fields you want to read back.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaInstance<D> {
    /// The saga data, typed.
    pub data: D,
    /// The stored state (status, history, error, untyped data).
    pub state: SagaState,
}

impl<D: DeserializeOwned> SagaInstance<D> {
    /// Decodes the data of `state` as `D`.
    pub fn from_state(state: SagaState) -> Result<Self> {
        Ok(SagaInstance {
            data: state.data_as()?,
            state,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn article_shape() {
        let state = SagaState {
            saga_id: "s1".into(),
            saga_name: "create_order".into(),
            state: SagaStatus::Pending,
            current_step: 0,
            data: Map::new(),
            history: vec![],
            started_at: 1.5,
            completed_at: None,
            error: None,
            version: 1,
            deadline: None,
            outbox: vec![],
            last_event_id: None,
        };
        let json: Value = serde_json::from_str(&state.to_json().unwrap()).unwrap();
        for key in [
            "saga_id",
            "saga_name",
            "state",
            "current_step",
            "data",
            "history",
            "started_at",
            "version",
        ] {
            assert!(json.get(key).is_some(), "{key} missing in {json}");
        }
        assert_eq!(json["state"], "pending");
        assert_eq!(SagaState::from_json(&json.to_string()).unwrap(), state);
        assert_eq!("failed".parse::<SagaStatus>().unwrap(), SagaStatus::Failed);
        assert!("nope".parse::<SagaStatus>().is_err());
    }
}
