//! lockbox's rotator: scheduled, safe rotation of SecureString parameters under a
//! customer-managed KMS key, and a Secrets Manager rotation function.
//!
//! An invocation flows through the modules like this:
//!
//! - [`Rotator::handle`] looks at the event: a Secrets Manager rotation event (`Step`)
//!   goes to [`secrets`]; anything else is a rotation input.
//! - [`input`] parses the input strictly and validates it, deriving the rotation id and
//!   compiling the [`policy`]; nothing has touched AWS yet.
//! - [`account`] builds the clients the run uses: the function's own, or, when the input
//!   names a role (and region), clients with that role's credentials in that region, so
//!   everything below runs in the other account.
//! - [`keycheck`] resolves the key with `DescribeKey` and refuses anything but an enabled,
//!   symmetric, customer-managed encryption key.
//! - `rotate` selects the parameters (`DescribeParameters`), then for each one writes a
//!   new version ([`generate`]d or the same value re-encrypted), reads it back, and moves
//!   the labels, completing instead of repeating what an earlier attempt with the same
//!   rotation id already did. Writes go through [`pace`] (spacing and retries) and the
//!   small `store` seam over SSM.
//! - [`report`] is the result (`{"rotationId","results":[...]}`) and the one audit log
//!   line per parameter.
//!
//! Values only ever live in [`value::SecretValue`] (zeroized, redacted `Debug`); no value
//! is logged, printed or put in an error.

pub mod account;
pub mod generate;
pub mod input;
pub mod keycheck;
pub mod pace;
pub mod policy;
pub mod report;
mod rotate;
pub mod secrets;
mod store;
pub mod value;

use serde_json::Value;
use time::OffsetDateTime;

pub use input::{Rotation, RotationInput};
pub use report::{Outcome, ParamResult, Report};
pub use rotate::{SelectError, INTENT_TAG};
pub use secrets::{SecretsConfig, StepResult};

use generate::RandomSource;
use store::SsmStore;

/// The AWS clients the rotator uses, built from one `SdkConfig` (so `AWS_ENDPOINT_URL`
/// and the usual credential chain apply to all three).
#[derive(Debug, Clone)]
pub struct Clients {
    /// The configuration they were built from: the base for clients in another region or
    /// with an assumed role ([`account`]).
    config: aws_config::SdkConfig,
    /// Parameter Store.
    pub ssm: aws_sdk_ssm::Client,
    /// KMS: the key gate and `GenerateRandom`.
    pub kms: aws_sdk_kms::Client,
    /// Secrets Manager rotation.
    pub secrets: aws_sdk_secretsmanager::Client,
}

impl Clients {
    /// Builds all clients from one shared configuration.
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self {
            config: config.clone(),
            ssm: aws_sdk_ssm::Client::new(config),
            kms: aws_sdk_kms::Client::new(config),
            secrets: aws_sdk_secretsmanager::Client::new(config),
        }
    }
}

/// Why an invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input is malformed or invalid; nothing was written.
    #[error(transparent)]
    Input(#[from] input::InputError),
    /// The role the input names could not be assumed; nothing was called with it.
    #[error(transparent)]
    Access(#[from] account::AccessError),
    /// The key gate refused the key; nothing was written.
    #[error(transparent)]
    Key(#[from] keycheck::KeyError),
    /// Selecting parameters failed; nothing was written.
    #[error(transparent)]
    Select(#[from] SelectError),
    /// At least one parameter failed; the report says which and why.
    #[error("{}", failure_summary(.0))]
    Failed(Box<Report>),
    /// A Secrets Manager step failed.
    #[error(transparent)]
    Secret(#[from] secrets::SecretError),
}

impl Error {
    /// A short machine-readable kind, used as the Lambda error type.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Input(_) => "InvalidInput",
            Self::Access(_) => "AssumeRoleFailed",
            Self::Key(_) => "KeyRefused",
            Self::Select(_) => "SelectionFailed",
            Self::Failed(_) => "RotationFailed",
            Self::Secret(_) => "SecretRotationFailed",
        }
    }
}

/// An error and its sources, joined by their `Display` forms only. The SDK's
/// `DisplayErrorContext` also prints the raw HTTP response, which for a call that returns
/// a secret (STS credentials, KMS random bytes) could hold it when parsing failed.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        // Wrappers often repeat their source's text; say it once.
        if !parts.last().is_some_and(|last| last.ends_with(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

fn failure_summary(report: &Report) -> String {
    let failed: Vec<String> = report
        .failures()
        .map(|r| format!("{} ({})", r.name, r.reason.as_deref().unwrap_or("failed")))
        .collect();
    format!(
        "rotation {} failed for {} of {} parameters: {}; result: {}",
        report.rotation_id,
        failed.len(),
        report.results.len(),
        failed.join("; "),
        report.to_json()
    )
}

/// What a successful invocation returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// A parameter rotation's report.
    Rotation(Report),
    /// A Secrets Manager step's result.
    Secret(StepResult),
}

impl Response {
    /// The JSON the function returns (and the shell prints).
    pub fn to_json(&self) -> Value {
        match self {
            Self::Rotation(r) => r.to_json(),
            Self::Secret(s) => serde_json::to_value(s).unwrap_or(Value::Null),
        }
    }
}

/// The rotation function: clients plus the Secrets Manager settings.
#[derive(Debug, Clone)]
pub struct Rotator {
    clients: Clients,
    secrets: SecretsConfig,
}

impl Rotator {
    /// A rotator using these clients and Secrets Manager settings.
    pub fn new(clients: Clients, secrets: SecretsConfig) -> Self {
        Self { clients, secrets }
    }

    /// Handles a Lambda event: a Secrets Manager rotation event or a rotation input
    /// (bare, or inside an EventBridge event's `detail`). A rotation input must carry its
    /// `rotationId` (or `time`).
    pub async fn handle(&self, event: Value) -> Result<Response, Error> {
        self.handle_at(event, None).await
    }

    /// Like [`Rotator::handle`], with `fallback` as the rotation time when the input has
    /// none (the shell passes the current time).
    pub async fn handle_at(
        &self,
        event: Value,
        fallback: Option<OffsetDateTime>,
    ) -> Result<Response, Error> {
        if event.get("Step").is_some() {
            let ev: secrets::RotationEvent = serde_json::from_value(event)
                .map_err(|e| input::InputError::Parse(format!("rotation event: {e}")))?;
            let out = secrets::handle(&self.clients.secrets, &self.clients.kms, &self.secrets, &ev)
                .await?;
            return Ok(Response::Secret(out));
        }
        let input = rotation_input(event)?;
        let rotation = input.validate(fallback)?;
        let report = self.rotate(&rotation).await?;
        if report.has_failures() {
            return Err(Error::Failed(Box::new(report)));
        }
        Ok(Response::Rotation(report))
    }

    /// Runs a validated rotation: the assumed role (if any), key gate, selection, then
    /// each parameter. Returns the report even when parameters failed (see
    /// [`Report::has_failures`]).
    pub async fn rotate(&self, rotation: &Rotation) -> Result<Report, Error> {
        // The key gate, the selection and the writes all run with these clients: with an
        // assumed role, the key checked is the one the other account's SSM will use.
        let clients = account::clients(&self.clients, &rotation.access).await?;
        let key = keycheck::resolve(&clients.kms, &rotation.key_id).await?;
        tracing::info!(
            rotation_id = %rotation.id.id,
            key = %key.arn,
            dry_run = rotation.dry_run,
            "key gate passed"
        );
        let random = RandomSource::new(rotation.random_source, &clients.kms);
        let store = SsmStore::new(clients.ssm.clone());
        Ok(rotate::run(&store, rotation, &key, &random).await?)
    }
}

/// The rotation input in an event: the event itself, or an EventBridge event's `detail`
/// with the event's `time` as the fallback rotation id.
fn rotation_input(event: Value) -> Result<RotationInput, input::InputError> {
    let is_envelope = event.get("detail-type").is_some() && event.get("detail").is_some();
    if !is_envelope {
        return input::from_value(event);
    }
    let time = event.get("time").and_then(Value::as_str).map(str::to_owned);
    let detail = event.get("detail").cloned().unwrap_or(Value::Null);
    if detail.as_object().is_none_or(|d| d.is_empty()) {
        return Err(input::InputError::Invalid(
            "EventBridge event without rotation input: set the rule's Input (with \
             \"time\": \"<time>\" from an input transformer) or put the input in detail"
                .into(),
        ));
    }
    let mut input = input::from_value(detail)?;
    if input.time.is_none() {
        input.time = time;
    }
    Ok(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chains_show_each_source_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let err = Outer(std::io::Error::other("inner detail"));
        assert_eq!(error_chain(&err), "outer: inner detail");
    }

    #[test]
    fn an_eventbridge_envelope_supplies_time() {
        let ev = serde_json::json!({
            "version": "0", "id": "x", "detail-type": "Scheduled Event", "source": "aws.events",
            "time": "2026-11-22T03:00:00Z", "region": "us-east-1", "resources": [],
            "detail": {"targets": {"names": ["/a"]}, "keyId": "k", "mode": "reencrypt"}
        });
        let input = rotation_input(ev).unwrap();
        assert_eq!(input.validate(None).unwrap().id.label, "r-20261122T0300Z");

        let bare = serde_json::json!({
            "detail-type": "Scheduled Event", "time": "2026-11-22T03:00:00Z", "detail": {}
        });
        assert!(rotation_input(bare)
            .unwrap_err()
            .to_string()
            .contains("without rotation input"));
    }
}
