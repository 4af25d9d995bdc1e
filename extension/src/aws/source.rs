//! Where values come from, as the layers above see it: the small [`Source`] trait (so the
//! cache, the reads and the server can be unit-tested with a fake) and the classified
//! [`SourceError`] every failure becomes, once: transient (may be retried, may serve a
//! stale value) or permanent (never serves stale).

use std::time::Duration;

use futures::future::BoxFuture;

use crate::domain::{
    keyring_names, Keyring, KeyringError, Parameter, ParameterName, Scope, Secret,
    SecretBatchError, SecretVersion, Selector, Sorting, HOME,
};

/// Reads one parameter or one secret from wherever values live.
pub trait Source: Send + Sync + 'static {
    /// `GetParameter`: one parameter by name (or ARN) and selector, decrypted or not.
    fn get_parameter<'a>(
        &'a self,
        name: &'a ParameterName,
        decrypt: bool,
    ) -> BoxFuture<'a, Result<Parameter, SourceError>>;

    /// `GetSecretValue`: one secret by name (or ARN), `AWSCURRENT` when no version is
    /// asked for.
    fn get_secret<'a>(
        &'a self,
        id: &'a str,
        version: Option<&'a SecretVersion>,
    ) -> BoxFuture<'a, Result<Secret, SourceError>>;

    /// `GetParameters`: at most [`GET_PARAMETERS_MAX`] names (a name may carry a selector;
    /// the answers then keep the `Selector` AWS echoes).
    fn get_parameters<'a>(
        &'a self,
        names: &'a [String],
        decrypt: bool,
    ) -> BoxFuture<'a, Result<ParameterBatch, SourceError>>;

    /// A parameter's keyring: the versions labelled `current`, `previous` and `pending`,
    /// in one `GetParameters` call. An answer that does not say which label it is (an
    /// endpoint that does not echo `Selector`) and cannot be placed by elimination costs
    /// a `GetParameter` of its label: never a guess. A missing `previous` or `pending` is
    /// an empty slot; a missing `current` is [`FailureKind::NotFound`].
    fn get_keyring<'a>(
        &'a self,
        name: &'a str,
        decrypt: bool,
    ) -> BoxFuture<'a, Result<Keyring, SourceError>> {
        Box::pin(async move {
            let batch = self.get_parameters(&keyring_names(name), decrypt).await?;
            let mut sorting = Sorting::new(name, batch.found, &batch.invalid);
            while let Some(slot) = sorting.unsure() {
                let labelled = ParameterName {
                    name: name.to_owned(),
                    selector: Some(Selector::Label(slot.label().to_owned())),
                };
                match self.get_parameter(&labelled, decrypt).await {
                    Ok(parameter) => sorting.settle(slot, Some(parameter)),
                    Err(err) if err.kind == FailureKind::NotFound => sorting.settle(slot, None),
                    Err(err) => return Err(err),
                }
            }
            sorting.finish().map_err(SourceError::from)
        })
    }

    /// `GetParametersByPath`, every page.
    fn get_parameters_by_path<'a>(
        &'a self,
        path: &'a str,
        recursive: bool,
        decrypt: bool,
    ) -> BoxFuture<'a, Result<Vec<Parameter>, SourceError>>;

    /// `BatchGetSecretValue` (AWSCURRENT): at most [`BATCH_GET_SECRETS_MAX`] ids.
    fn batch_get_secrets<'a>(
        &'a self,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<SecretBatch, SourceError>>;

    /// Whose credentials and which region this source reads with. It is part of the key of
    /// every cache entry filled from this source, so values read through different roles or
    /// regions never share an entry.
    fn scope(&self) -> &Scope {
        &HOME
    }
}

/// `GetParameters` takes at most this many names.
pub const GET_PARAMETERS_MAX: usize = 10;
/// `BatchGetSecretValue` takes at most this many ids.
pub const BATCH_GET_SECRETS_MAX: usize = 20;

/// What `GetParameters` found, and the names it did not.
#[derive(Debug, Default)]
pub struct ParameterBatch {
    /// Found parameters, in no particular order.
    pub found: Vec<Parameter>,
    /// Requested names that do not exist (not an error in SSM's API).
    pub invalid: Vec<String>,
}

/// What `BatchGetSecretValue` found, and per-secret failures.
#[derive(Debug, Default)]
pub struct SecretBatch {
    /// Found secrets.
    pub found: Vec<Secret>,
    /// Per-secret failures, AWS's shape.
    pub errors: Vec<SecretBatchError>,
}

/// What kind of failure a fetch had. Decides retries, stale serving and the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The parameter, version, label, secret or stage does not exist.
    NotFound,
    /// AWS refused: credentials, IAM or the KMS key policy.
    Denied,
    /// AWS said slow down.
    Throttled,
    /// No answer within the backend timeout.
    Timeout,
    /// No connection: refused, reset, DNS.
    Unreachable,
    /// AWS failed on its side (5xx).
    ServerError,
    /// Any other answer from AWS (validation and the like): permanent.
    Rejected,
    /// lockbox could not even build the request.
    Internal,
}

/// A failed fetch, classified. `code` and `message` are AWS's own where AWS answered.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct SourceError {
    /// The failure's class.
    pub kind: FailureKind,
    /// The AWS error code (`ParameterNotFound`, `AccessDeniedException`, ...) or lockbox's.
    pub code: String,
    /// A human-readable explanation; AWS messages name resources, never values.
    pub message: String,
    /// AWS's HTTP status when AWS answered.
    pub aws_status: Option<u16>,
    /// When AWS throttled past the timeout: how long the caller should wait before asking
    /// again (the `Retry-After` header).
    pub retry_after: Option<Duration>,
}

impl From<KeyringError> for SourceError {
    fn from(err: KeyringError) -> Self {
        match err {
            KeyringError::NoCurrent(_) => Self::new(
                FailureKind::NotFound,
                "ParameterVersionLabelNotFound",
                err.to_string(),
            ),
        }
    }
}

impl SourceError {
    /// Transient failures may succeed on retry and may be answered with a stale value.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            FailureKind::Throttled
                | FailureKind::Timeout
                | FailureKind::Unreachable
                | FailureKind::ServerError
        )
    }

    /// Builds an error of a given kind with lockbox's own code.
    pub fn new(kind: FailureKind, code: &str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code: code.to_owned(),
            message: message.into(),
            aws_status: None,
            retry_after: None,
        }
    }
}
