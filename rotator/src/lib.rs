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
//! - `rotate` selects the parameters (`DescribeParameters`), then for each one leases it,
//!   writes a new version ([`generate`]d or the same value re-encrypted), reads it back,
//!   and moves the labels, resuming instead of repeating what an earlier attempt with the
//!   same rotation id already did ([`mark`] is the label that records lease and outcome).
//!   Writes go through [`pace`] (spacing and retries) and the small `store` seam over SSM.
//!   Near the Lambda deadline it stops starting parameters; [`Rotator::handle_in`] then
//!   hands the rest to the function's next invocation (an asynchronous `Invoke` of itself
//!   with the same input and `continueAfter`).
//! - [`report`] is the result (`{"rotationId","results":[...]}`) and the one audit log
//!   line per parameter; [`settings`] the lease and deadline settings from the
//!   environment; [`logging`] the log set-up whose caps no `RUST_LOG` lifts.
//!
//! Values only ever live in [`value::SecretValue`] (zeroized, redacted `Debug`); no value
//! is logged, printed or put in an error.

pub mod account;
pub mod generate;
pub mod input;
mod input_error;
pub mod keycheck;
pub mod logging;
pub mod mark;
pub mod pace;
pub mod policy;
pub mod report;
mod rotate;
pub mod secrets;
pub mod settings;
mod store;
pub mod value;

use std::time::SystemTime;

use serde_json::Value;
use time::OffsetDateTime;

pub use input::{Rotation, RotationInput};
pub use report::{Outcome, ParamResult, Report};
pub use rotate::{Budget, SelectError};
pub use secrets::{SecretsConfig, StepResult};
pub use settings::Settings;

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
    /// Lambda: the hand-over of a long rotation to the function's next invocation.
    pub lambda: aws_sdk_lambda::Client,
}

impl Clients {
    /// Builds all clients from one shared configuration.
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self {
            config: config.clone(),
            ssm: aws_sdk_ssm::Client::new(config),
            kms: aws_sdk_kms::Client::new(config),
            secrets: aws_sdk_secretsmanager::Client::new(config),
            lambda: aws_sdk_lambda::Client::new(config),
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
    /// Parameters were deferred and the next invocation could not be started; the report
    /// says which.
    #[error("rotation {} deferred {} parameters but could not start the next invocation of {function}: {detail}", .report.rotation_id, .report.deferred())]
    Continuation {
        /// The function that was to be invoked.
        function: String,
        /// Why the invoke failed.
        detail: String,
        /// This invocation's report.
        report: Box<Report>,
    },
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
            Self::Continuation { .. } => "ContinuationFailed",
        }
    }
}

/// The largest hand-over payload: Lambda takes at most 256 KB for an asynchronous
/// invocation; the rest is room for the input's other fields.
pub const HANDOVER_PAYLOAD_BYTES: usize = 200 * 1024;

/// The next invocation's input: the same input, `continueAfter` the last name dealt with,
/// and `continueWith` the names deferred (so that it does not select again) when they fit
/// [`HANDOVER_PAYLOAD_BYTES`]; past that it selects again and starts after `continueAfter`.
fn handover(input: RotationInput, after: &str, report: &Report) -> RotationInput {
    let deferred: Vec<String> = report
        .results
        .iter()
        .filter(|r| r.outcome == Outcome::Deferred)
        .map(|r| r.name.clone())
        .collect();
    let mut next = RotationInput {
        continue_after: Some(after.to_owned()),
        continue_with: Some(deferred),
        ..input
    };
    let fits = serde_json::to_vec(&next).is_ok_and(|p| p.len() <= HANDOVER_PAYLOAD_BYTES);
    if !fits {
        next.continue_with = None;
    }
    next
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

/// What the rotator knows about the invocation it runs in.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    /// When Lambda kills the invocation (`None` from the shell).
    pub deadline: Option<SystemTime>,
    /// The invoked function's ARN, which the rest of a long rotation is handed to (`None`
    /// from the shell: nothing to hand over to).
    pub function_arn: Option<String>,
    /// The rotation time when the input has none (the shell passes the current time).
    pub fallback_time: Option<OffsetDateTime>,
}

/// The rotation function: clients plus the Secrets Manager and rotation settings.
#[derive(Debug, Clone)]
pub struct Rotator {
    clients: Clients,
    secrets: SecretsConfig,
    settings: Settings,
}

impl Rotator {
    /// A rotator using these clients and Secrets Manager settings, and the default
    /// [`Settings`].
    pub fn new(clients: Clients, secrets: SecretsConfig) -> Self {
        Self {
            clients,
            secrets,
            settings: Settings::default(),
        }
    }

    /// The same rotator with these lease and deadline settings.
    pub fn with_settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// Handles a Lambda event: a Secrets Manager rotation event or a rotation input
    /// (bare, or inside an EventBridge event's `detail`). A rotation input must carry its
    /// `rotationId` (or `time`).
    pub async fn handle(&self, event: Value) -> Result<Response, Error> {
        self.handle_in(event, &Invocation::default()).await
    }

    /// Like [`Rotator::handle`], with `fallback` as the rotation time when the input has
    /// none (the shell passes the current time).
    pub async fn handle_at(
        &self,
        event: Value,
        fallback: Option<OffsetDateTime>,
    ) -> Result<Response, Error> {
        let invocation = Invocation {
            fallback_time: fallback,
            ..Invocation::default()
        };
        self.handle_in(event, &invocation).await
    }

    /// Handles an event within `invocation`: parameters not started before its deadline
    /// (less the reserve) are reported `deferred` and handed to a new asynchronous
    /// invocation of the same function with the same input and `continueAfter`, so the
    /// same rotation id carries on there.
    pub async fn handle_in(
        &self,
        event: Value,
        invocation: &Invocation,
    ) -> Result<Response, Error> {
        if event.get("Step").is_some() {
            let ev: secrets::RotationEvent = serde_json::from_value(event)
                .map_err(|e| input::InputError::Parse(format!("rotation event: {e}")))?;
            let out = secrets::handle(&self.clients.secrets, &self.clients.kms, &self.secrets, &ev)
                .await?;
            return Ok(Response::Secret(out));
        }
        let input = rotation_input(event)?;
        let rotation = input.clone().validate(invocation.fallback_time)?;
        let budget = Budget {
            deadline: invocation.deadline,
            reserve: self.settings.reserve,
        };
        let report = self.rotate_within(&rotation, budget).await?;
        if report.deferred() > 0 {
            let function = invocation.function_arn.clone().unwrap_or_default();
            let handed_over = match (&report.continue_after, function.is_empty()) {
                (Some(after), false) => {
                    let next = handover(input, after, &report);
                    self.continue_in(&function, &next).await
                }
                (None, _) => Err(format!(
                    "no parameter could be started before the deadline; the reserve \
                     ({} ms, LOCKBOX_DEADLINE_RESERVE_MS) must be shorter than the timeout",
                    self.settings.reserve.as_millis()
                )),
                (Some(_), true) => Err("no function to invoke (not running in Lambda)".into()),
            };
            if let Err(detail) = handed_over {
                return Err(Error::Continuation {
                    function,
                    detail,
                    report: Box::new(report),
                });
            }
            tracing::info!(
                rotation_id = %rotation.id.id,
                deferred = report.deferred(),
                continue_after = report.continue_after.as_deref().unwrap_or_default(),
                "handed the rest of the rotation to the next invocation"
            );
        }
        if report.has_failures() {
            return Err(Error::Failed(Box::new(report)));
        }
        Ok(Response::Rotation(report))
    }

    /// Starts the next invocation of this rotation: `Invoke` with `InvocationType=Event`
    /// (asynchronous, so this invocation ends now and Lambda's own retries cover the next
    /// one). Always with the function's own clients, never an assumed role's.
    async fn continue_in(&self, function: &str, next: &RotationInput) -> Result<(), String> {
        let payload = serde_json::to_vec(next).map_err(|e| e.to_string())?;
        self.clients
            .lambda
            .invoke()
            .function_name(function)
            .invocation_type(aws_sdk_lambda::types::InvocationType::Event)
            .payload(aws_sdk_lambda::primitives::Blob::new(payload))
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        Ok(())
    }

    /// Runs a validated rotation: the assumed role (if any), key gate, selection, then
    /// each parameter. Returns the report even when parameters failed (see
    /// [`Report::has_failures`]).
    pub async fn rotate(&self, rotation: &Rotation) -> Result<Report, Error> {
        self.rotate_within(rotation, Budget::default()).await
    }

    /// [`Rotator::rotate`], starting no parameter once `budget` runs out.
    pub async fn rotate_within(
        &self,
        rotation: &Rotation,
        budget: Budget,
    ) -> Result<Report, Error> {
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
        Ok(rotate::run(&store, rotation, &key, &random, self.settings.lease, budget).await?)
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
    // A rule event names its rule first among its resources: the schedule's identity.
    let schedule = event
        .get("resources")
        .and_then(|r| r.get(0))
        .and_then(Value::as_str)
        .map(str::to_owned);
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
    if input.schedule.is_none() {
        input.schedule = schedule;
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
        assert_eq!(input.validate(None).unwrap().id.label, "r-20261122T030000Z");

        let bare = serde_json::json!({
            "detail-type": "Scheduled Event", "time": "2026-11-22T03:00:00Z", "detail": {}
        });
        assert!(rotation_input(bare)
            .unwrap_err()
            .to_string()
            .contains("without rotation input"));
    }
}
