//! What a run returns and logs: one result per parameter, never a value.
//!
//! [`Report`] is the function's JSON result
//! (`{"rotationId", "results": [{name, oldVersion, newVersion, keyId, mode, outcome, reason}]}`);
//! [`ParamResult::log`] writes the matching audit line (one JSON log line per parameter
//! once `main` installs the JSON formatter).

use serde::{Deserialize, Serialize};

use crate::input::Mode;

/// What happened to one parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// A new version was written, verified and labelled (or an interrupted rotation of
    /// this id was completed).
    Rotated,
    /// Staged mode: a new version was written, verified and labelled `pending`;
    /// `current` did not move.
    Staged,
    /// Staged mode: the pending version became `current`, the old one `previous`.
    Promoted,
    /// Nothing needed doing (already rotated by this id, already under the key, or a
    /// pending version not yet due).
    Unchanged,
    /// Not rotatable (not a SecureString).
    Skipped,
    /// Another writer or another rotation is acting on the parameter; nothing of this
    /// rotation was labelled. `reason` names the versions (or the lease).
    Conflict,
    /// Not started: the invocation ran out of time. The next invocation of the same
    /// rotation id continues with it.
    Deferred,
    /// The rotation of this parameter failed; see `reason`.
    Failed,
    /// Dry run: `reason` says what would happen.
    DryRun,
}

impl Outcome {
    /// The name used in the result and the audit line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rotated => "rotated",
            Self::Staged => "staged",
            Self::Promoted => "promoted",
            Self::Unchanged => "unchanged",
            Self::Skipped => "skipped",
            Self::Conflict => "conflict",
            Self::Deferred => "deferred",
            Self::Failed => "failed",
            Self::DryRun => "dryRun",
        }
    }

    /// Whether this outcome fails the run (so the schedule's retries apply).
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Failed | Self::Conflict)
    }
}

/// The result for one parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParamResult {
    /// Parameter name.
    pub name: String,
    /// Version that was current before the rotation.
    pub old_version: Option<i64>,
    /// Version written (or completed) by this rotation.
    pub new_version: Option<i64>,
    /// ARN of the key the new version is under.
    pub key_id: String,
    /// `regenerate` or `reencrypt`.
    pub mode: Mode,
    /// What happened.
    pub outcome: Outcome,
    /// Why, for anything but a plain `rotated`.
    pub reason: Option<String>,
}

impl ParamResult {
    /// Writes this result as one audit log line (warn level when it failed).
    pub fn log(&self, rotation_id: &str) {
        let mode = match self.mode {
            Mode::Regenerate => "regenerate",
            Mode::Reencrypt => "reencrypt",
        };
        let outcome = self.outcome.as_str();
        macro_rules! audit {
            ($level:ident) => {
                tracing::$level!(
                    target: "lockbox_rotator::audit",
                    rotation_id,
                    name = %self.name,
                    old_version = self.old_version,
                    new_version = self.new_version,
                    key_id = %self.key_id,
                    mode,
                    outcome,
                    reason = self.reason.as_deref(),
                    "parameter {outcome}"
                )
            };
        }
        if self.outcome.is_failure() {
            audit!(warn);
        } else {
            audit!(info);
        }
    }
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The run's id (normalised scheduled time).
    pub rotation_id: String,
    /// The schedule that started the run, when the input names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// One entry per selected parameter, in name order.
    pub results: Vec<ParamResult>,
    /// When parameters were deferred: the last name this invocation dealt with (empty
    /// when none), where the next invocation of this rotation id starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_after: Option<String>,
}

impl Report {
    /// The results that failed or met a conflict.
    pub fn failures(&self) -> impl Iterator<Item = &ParamResult> {
        self.results.iter().filter(|r| r.outcome.is_failure())
    }

    /// The results deferred to the next invocation.
    pub fn deferred(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.outcome == Outcome::Deferred)
            .count()
    }

    /// Whether any parameter failed (the run must then fail, so the schedule retries).
    pub fn has_failures(&self) -> bool {
        self.failures().next().is_some()
    }

    /// The report as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_json_has_the_documented_shape() {
        let r = Report {
            rotation_id: "2026-11-22T03:00:00Z".into(),
            schedule: None,
            continue_after: None,
            results: vec![ParamResult {
                name: "/app/db/password".into(),
                old_version: Some(3),
                new_version: Some(4),
                key_id: "arn:aws:kms:us-east-1:1:key/k".into(),
                mode: Mode::Regenerate,
                outcome: Outcome::DryRun,
                reason: None,
            }],
        };
        let v = r.to_json();
        assert_eq!(
            v,
            serde_json::json!({
                "rotationId": "2026-11-22T03:00:00Z",
                "results": [{
                    "name": "/app/db/password", "oldVersion": 3, "newVersion": 4,
                    "keyId": "arn:aws:kms:us-east-1:1:key/k", "mode": "regenerate",
                    "outcome": "dryRun", "reason": null
                }]
            })
        );
        assert!(!r.has_failures());
    }
}
