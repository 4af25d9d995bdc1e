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
    /// Nothing needed doing (already rotated by this id, or already under the key).
    Unchanged,
    /// Not rotatable (not a SecureString).
    Skipped,
    /// The rotation of this parameter failed; see `reason`.
    Failed,
    /// Dry run: `reason` says what would happen.
    DryRun,
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
        let outcome = match self.outcome {
            Outcome::Rotated => "rotated",
            Outcome::Unchanged => "unchanged",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
            Outcome::DryRun => "dryRun",
        };
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
        if self.outcome == Outcome::Failed {
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
    /// One entry per selected parameter, in name order.
    pub results: Vec<ParamResult>,
}

impl Report {
    /// The results that failed.
    pub fn failures(&self) -> impl Iterator<Item = &ParamResult> {
        self.results.iter().filter(|r| r.outcome == Outcome::Failed)
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
