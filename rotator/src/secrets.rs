//! Secrets Manager rotation: the four steps, each idempotent.
//!
//! Secrets Manager calls the function with `{"Step", "SecretId", "ClientRequestToken"}`:
//! - `createSecret`: generate a value by the policy from the function's environment
//!   ([`SecretsConfig`]) and store it as version `ClientRequestToken`, staged
//!   `AWSPENDING`; first, when a key is configured, pass it through the key gate and set it
//!   as the secret's `KmsKeyId`. A pending version that already exists is kept.
//! - `setSecret`: a generic secret has no downstream system lockbox knows how to change,
//!   so this step only checks the pending version exists (put a system-specific rotation
//!   function in front of lockbox when one must be updated).
//! - `testSecret`: read the pending version and check it against the policy.
//! - `finishSecret`: move `AWSCURRENT` to the new version (Secrets Manager moves
//!   `AWSPREVIOUS` to the old one); nothing to do when it is already there.
//!
//! Every step first checks that rotation is enabled and that the token is a version staged
//! `AWSPENDING` (or, for `createSecret`, not yet known); a token that is already
//! `AWSCURRENT` makes any step a no-op, so a repeated step is harmless.

use std::collections::HashMap;
use std::fmt;

use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use serde::{Deserialize, Serialize};

use crate::generate::{generate, RandomSource, SourceKind};
use crate::keycheck::{self, KeyError};
use crate::policy::{Policy, PolicySpec};
use crate::value::SecretValue;

/// Environment variable holding the policy JSON (same schema as the input's `policy`).
pub const ENV_POLICY: &str = "LOCKBOX_SECRET_POLICY";
/// Environment variable naming the customer-managed key for secrets (optional).
pub const ENV_KEY_ID: &str = "LOCKBOX_SECRET_KEY_ID";
/// Environment variable choosing the random source: `os` (default) or `kms`.
pub const ENV_RANDOM_SOURCE: &str = "LOCKBOX_RANDOM_SOURCE";

const AWSCURRENT: &str = "AWSCURRENT";
const AWSPENDING: &str = "AWSPENDING";

/// Secrets Manager settings from the function's environment.
#[derive(Debug, Clone)]
pub struct SecretsConfig {
    /// Policy for new secret values.
    pub policy: Policy,
    /// Key to store secrets under; `None` keeps each secret's own key.
    pub key_id: Option<String>,
    /// Where random bytes come from.
    pub random_source: SourceKind,
}

/// A bad environment setting; names the variable and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    /// The variable.
    pub var: &'static str,
    /// What is wrong.
    pub problem: String,
}

impl SecretsConfig {
    /// Reads the settings through `get` (the process environment in `main`).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let non_empty = |var: &str| get(var).filter(|v| !v.trim().is_empty());
        let spec = match non_empty(ENV_POLICY) {
            Some(json) => serde_json::from_str::<PolicySpec>(&json).map_err(|e| ConfigError {
                var: ENV_POLICY,
                problem: format!("not a policy: {e}"),
            })?,
            None => PolicySpec::default(),
        };
        let policy = spec.compile().map_err(|e| ConfigError {
            var: ENV_POLICY,
            problem: e.to_string(),
        })?;
        let random_source = match non_empty(ENV_RANDOM_SOURCE).as_deref().map(str::trim) {
            None | Some("os") => SourceKind::Os,
            Some("kms") => SourceKind::Kms,
            Some(other) => {
                return Err(ConfigError {
                    var: ENV_RANDOM_SOURCE,
                    problem: format!("{other:?} is not one of os, kms"),
                })
            }
        };
        Ok(Self {
            policy,
            key_id: non_empty(ENV_KEY_ID).map(|k| k.trim().to_owned()),
            random_source,
        })
    }

    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|var| std::env::var(var).ok())
    }
}

/// The four steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Create the pending version.
    #[serde(rename = "createSecret")]
    Create,
    /// Change the credential in the target system.
    #[serde(rename = "setSecret")]
    Set,
    /// Check the pending version.
    #[serde(rename = "testSecret")]
    Test,
    /// Make the pending version current.
    #[serde(rename = "finishSecret")]
    Finish,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Self::Create => "createSecret",
            Self::Set => "setSecret",
            Self::Test => "testSecret",
            Self::Finish => "finishSecret",
        }
    }
}

/// A Secrets Manager rotation event. Fields Secrets Manager may add later are ignored.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RotationEvent {
    /// Which step.
    pub step: Step,
    /// Secret name or ARN.
    pub secret_id: String,
    /// The new version's id.
    pub client_request_token: String,
    /// Proof of the caller for assumed-role rotation (sensitive: never logged).
    #[serde(default)]
    pub rotation_token: Option<String>,
}

impl fmt::Debug for RotationEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotationEvent")
            .field("step", &self.step)
            .field("secret_id", &self.secret_id)
            .field("client_request_token", &self.client_request_token)
            .field(
                "rotation_token",
                &self.rotation_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StepOutcome {
    /// The step did its work.
    Done,
    /// The step had already been done (a repeated step).
    AlreadyDone,
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepResult {
    /// The step.
    pub step: Step,
    /// The secret.
    pub secret_id: String,
    /// The version the step was about.
    pub version_id: String,
    /// Whether it did anything.
    pub outcome: StepOutcome,
    /// What it did, in words.
    pub reason: String,
}

/// A step failed.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Rotation is not enabled on the secret.
    #[error("secret {0}: rotation is not enabled")]
    NotEnabled(String),
    /// The token is not a version staged for rotation.
    #[error("secret {secret}: version {token} {problem}")]
    BadToken {
        /// The secret.
        secret: String,
        /// The token.
        token: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The configured key failed the gate.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The pending value does not satisfy the policy.
    #[error("secret {secret}: pending version {token} fails the policy: {violation}")]
    Policy {
        /// The secret.
        secret: String,
        /// The token.
        token: String,
        /// How it fails (never the value).
        violation: crate::policy::Violation,
    },
    /// Random bytes were unavailable.
    #[error(transparent)]
    Generate(#[from] crate::generate::GenerateError),
    /// A Secrets Manager call failed.
    #[error("{op} {secret} failed: {detail}")]
    Aws {
        /// The operation.
        op: &'static str,
        /// The secret.
        secret: String,
        /// Error code (and message, for calls that carry no value).
        detail: String,
    },
}

fn aws_err<E: ProvideErrorMetadata + std::error::Error + 'static>(
    op: &'static str,
    secret: &str,
    err: aws_sdk_secretsmanager::error::SdkError<
        E,
        aws_sdk_secretsmanager::config::http::HttpResponse,
    >,
    keep_message: bool,
) -> SecretError {
    let code = err.code().unwrap_or("error").to_owned();
    let detail = match (keep_message, err.message()) {
        (true, Some(m)) => format!("{code}: {m}"),
        (true, None) => aws_sdk_secretsmanager::error::DisplayErrorContext(&err).to_string(),
        // Calls that carry a value report only the code.
        (false, _) => code,
    };
    SecretError::Aws {
        op,
        secret: secret.to_owned(),
        detail,
    }
}

/// Runs one step.
pub async fn handle(
    sm: &aws_sdk_secretsmanager::Client,
    kms: &aws_sdk_kms::Client,
    config: &SecretsConfig,
    event: &RotationEvent,
) -> Result<StepResult, SecretError> {
    let secret = event.secret_id.as_str();
    let token = event.client_request_token.as_str();
    let described = sm
        .describe_secret()
        .secret_id(secret)
        .send()
        .await
        .map_err(|e| aws_err("DescribeSecret", secret, e, true))?;
    if described.rotation_enabled() != Some(true) {
        return Err(SecretError::NotEnabled(secret.to_owned()));
    }
    let stages: HashMap<String, Vec<String>> = described
        .version_ids_to_stages()
        .cloned()
        .unwrap_or_default();
    let result = |outcome, reason: String| StepResult {
        step: event.step,
        secret_id: secret.to_owned(),
        version_id: token.to_owned(),
        outcome,
        reason,
    };
    match stages.get(token) {
        Some(s) if s.iter().any(|x| x == AWSCURRENT) => {
            return Ok(result(
                StepOutcome::AlreadyDone,
                "version is already AWSCURRENT; nothing to do".into(),
            ));
        }
        Some(s) if !s.iter().any(|x| x == AWSPENDING) => {
            return Err(SecretError::BadToken {
                secret: secret.to_owned(),
                token: token.to_owned(),
                problem: "is not staged AWSPENDING for rotation",
            });
        }
        None if event.step != Step::Create => {
            return Err(SecretError::BadToken {
                secret: secret.to_owned(),
                token: token.to_owned(),
                problem: "is not a version of this secret",
            });
        }
        _ => {}
    }

    let out = match event.step {
        Step::Create => {
            if pending_value(sm, secret, token).await?.is_some() {
                result(
                    StepOutcome::AlreadyDone,
                    "pending version already exists; kept".into(),
                )
            } else {
                let mut reason = String::from("created the pending version");
                if let Some(key_id) = &config.key_id {
                    let key = keycheck::resolve(kms, key_id).await?;
                    if !described.kms_key_id().is_some_and(|k| key.matches(k)) {
                        sm.update_secret()
                            .secret_id(secret)
                            .kms_key_id(&key.arn)
                            .send()
                            .await
                            .map_err(|e| aws_err("UpdateSecret", secret, e, true))?;
                    }
                    reason.push_str(&format!(" under {}", key.arn));
                }
                let value = generate(
                    &config.policy,
                    &RandomSource::new(config.random_source, kms),
                )
                .await?;
                sm.put_secret_value()
                    .secret_id(secret)
                    .client_request_token(token)
                    .secret_string(value.expose())
                    .version_stages(AWSPENDING)
                    .set_rotation_token(event.rotation_token.clone())
                    .send()
                    .await
                    .map_err(|e| aws_err("PutSecretValue", secret, e, false))?;
                result(StepOutcome::Done, reason)
            }
        }
        Step::Set => {
            require_pending(sm, secret, token).await?;
            result(
                StepOutcome::Done,
                "generic secret: no downstream system to update".into(),
            )
        }
        Step::Test => {
            let value = require_pending(sm, secret, token).await?;
            config
                .policy
                .check(&value)
                .map_err(|violation| SecretError::Policy {
                    secret: secret.to_owned(),
                    token: token.to_owned(),
                    violation,
                })?;
            result(
                StepOutcome::Done,
                "pending version is readable and satisfies the policy".into(),
            )
        }
        Step::Finish => {
            let current = stages
                .iter()
                .find(|(_, s)| s.iter().any(|x| x == AWSCURRENT))
                .map(|(v, _)| v.clone());
            sm.update_secret_version_stage()
                .secret_id(secret)
                .version_stage(AWSCURRENT)
                .move_to_version_id(token)
                .set_remove_from_version_id(current.clone())
                .send()
                .await
                .map_err(|e| aws_err("UpdateSecretVersionStage", secret, e, true))?;
            result(
                StepOutcome::Done,
                format!(
                    "AWSCURRENT moved to this version from {}",
                    current.as_deref().unwrap_or("no version")
                ),
            )
        }
    };
    tracing::info!(
        target: "lockbox_rotator::audit",
        step = out.step.name(),
        secret_id = %out.secret_id,
        version_id = %out.version_id,
        outcome = ?out.outcome,
        reason = %out.reason,
        "secret step"
    );
    Ok(out)
}

/// The pending version's value, if it has one.
async fn pending_value(
    sm: &aws_sdk_secretsmanager::Client,
    secret: &str,
    token: &str,
) -> Result<Option<SecretValue>, SecretError> {
    match sm
        .get_secret_value()
        .secret_id(secret)
        .version_id(token)
        .version_stage(AWSPENDING)
        .send()
        .await
    {
        Ok(out) => Ok(out.secret_string.map(SecretValue::new)),
        Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(None),
        Err(e) => Err(aws_err("GetSecretValue", secret, e, false)),
    }
}

async fn require_pending(
    sm: &aws_sdk_secretsmanager::Client,
    secret: &str,
    token: &str,
) -> Result<SecretValue, SecretError> {
    pending_value(sm, secret, token)
        .await?
        .ok_or_else(|| SecretError::BadToken {
            secret: secret.to_owned(),
            token: token.to_owned(),
            problem: "has no pending value (run createSecret first)",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn config_defaults_and_errors_name_the_variable() {
        let c = SecretsConfig::from_lookup(env(&[])).unwrap();
        assert_eq!(c.policy.length(), 32);
        assert_eq!(c.key_id, None);
        assert_eq!(c.random_source, SourceKind::Os);

        let c = SecretsConfig::from_lookup(env(&[
            (ENV_POLICY, r#"{"length":20,"classes":["digits"]}"#),
            (ENV_KEY_ID, " alias/app "),
            (ENV_RANDOM_SOURCE, "kms"),
        ]))
        .unwrap();
        assert_eq!(c.policy.length(), 20);
        assert_eq!(c.key_id.as_deref(), Some("alias/app"));
        assert_eq!(c.random_source, SourceKind::Kms);

        let e = SecretsConfig::from_lookup(env(&[(ENV_POLICY, r#"{"length":0}"#)])).unwrap_err();
        assert_eq!(e.var, ENV_POLICY);
        let e = SecretsConfig::from_lookup(env(&[(ENV_RANDOM_SOURCE, "dice")])).unwrap_err();
        assert!(e.to_string().contains("LOCKBOX_RANDOM_SOURCE"), "{e}");
    }

    #[test]
    fn rotation_events_parse_and_redact_the_rotation_token() {
        let ev: RotationEvent = serde_json::from_str(
            r#"{"Step":"createSecret","SecretId":"arn:s","ClientRequestToken":"t-1",
                "RotationToken":"sekrit-token","SomethingNew":1}"#,
        )
        .unwrap();
        assert_eq!(ev.step, Step::Create);
        assert!(!format!("{ev:?}").contains("sekrit"));
        let err = serde_json::from_str::<RotationEvent>(
            r#"{"Step":"burnSecret","SecretId":"s","ClientRequestToken":"t"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("burnSecret"));
    }
}
