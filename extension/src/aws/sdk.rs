//! The real [`Source`]: SSM Parameter Store and Secrets Manager through the AWS SDK, built
//! from [`SourceSettings`]. Every SDK failure is classified here, once, into a
//! [`SourceError`].

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::timeout::TimeoutConfig;
use futures::future::BoxFuture;

use std::num::NonZeroUsize;

use lockbox_aws::{ErrorClass, SessionName};

use super::calls::CallCounter;
use super::pace::Pace;
use super::source::{FailureKind, ParameterBatch, SecretBatch, Source, SourceError};
use crate::domain::{
    label, ArnPrefixes, Parameter, ParameterExtra, ParameterName, RoleArn, Scope, Secret,
    SecretBatchError, SecretBytes, SecretText, SecretVersion, Timestamp, HOME,
};
use crate::metrics::Metrics;

/// What the AWS clients are built with: the per-service timeouts and the bound on
/// concurrent requests per service (`PARAMETERS_SECRETS_EXTENSION_MAX_CONNECTIONS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceSettings {
    /// Bound on one SSM request, retries included.
    pub ssm_timeout: Duration,
    /// Bound on one Secrets Manager request, retries included.
    pub secrets_timeout: Duration,
    /// Concurrent AWS requests per service.
    pub max_connections: NonZeroUsize,
}

/// The class of an AWS error code with its HTTP status (a batch call's per-value errors
/// carry a code only; they are classified as the single call's answer would be).
pub fn kind_of(code: &str, status: u16) -> FailureKind {
    let class = lockbox_aws::classify(Some(code), Some(status));
    if code.contains("NotFound") {
        FailureKind::NotFound
    } else if class == ErrorClass::Throttled {
        FailureKind::Throttled
    } else if code.contains("AccessDenied")
        || code.starts_with("KMS")
        || code == "UnrecognizedClientException"
        || code == "InvalidSignatureException"
        || code == "ExpiredTokenException"
    {
        FailureKind::Denied
    } else if class == ErrorClass::Transient {
        FailureKind::ServerError
    } else {
        FailureKind::Rejected
    }
}

/// Classifies any SDK error of either service. `role` is the role the request was made
/// through: when its credentials could not be obtained, that is the failure to report.
fn classify<E>(err: SdkError<E, HttpResponse>, service: &str, role: Option<&RoleArn>) -> SourceError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let Some(role) = role {
        if let Some(failure) = assume_role_failure(&err, role) {
            return failure;
        }
    }
    match &err {
        SdkError::TimeoutError(_) => SourceError::new(
            FailureKind::Timeout,
            "Timeout",
            format!("{service} did not answer within the configured timeout"),
        ),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => SourceError::new(
            FailureKind::Timeout,
            "Timeout",
            format!("{service} did not answer in time"),
        ),
        SdkError::DispatchFailure(_) => SourceError::new(
            FailureKind::Unreachable,
            "ConnectionError",
            format!("{service} could not be reached"),
        ),
        SdkError::ResponseError(_) => SourceError::new(
            FailureKind::Unreachable,
            "ResponseError",
            format!("{service} sent an answer that could not be read"),
        ),
        SdkError::ServiceError(service_err) => {
            let status = service_err.raw().status().as_u16();
            let code = service_err
                .err()
                .code()
                .unwrap_or("UnknownError")
                .to_owned();
            let message = service_err
                .err()
                .message()
                .unwrap_or("no message")
                .to_owned();
            let kind = kind_of(&code, status);
            SourceError {
                kind,
                code,
                message,
                aws_status: Some(status),
                retry_after: None,
            }
        }
        _ => SourceError::new(
            FailureKind::Internal,
            "InternalError",
            format!("the {service} request could not be built"),
        ),
    }
}

/// Looks through an SDK error for a credentials provider's failure (the SDK reports it as a
/// dispatch failure) and, when there is one, reports it as the role that could not be
/// assumed, with STS's code and message when STS answered. STS messages name principals
/// and roles, never credentials.
fn assume_role_failure<E>(err: &SdkError<E, HttpResponse>, role: &RoleArn) -> Option<SourceError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    use aws_credential_types::provider::error::CredentialsError;
    use aws_sdk_sts::operation::assume_role::AssumeRoleError;

    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut credentials = None;
    while let Some(current) = cause {
        if let Some(found) = current.downcast_ref::<CredentialsError>() {
            credentials = Some(found);
            break;
        }
        cause = current.source();
    }
    let credentials = credentials?;
    let mut why = match credentials {
        CredentialsError::ProviderTimedOut(_) => "STS did not answer in time".to_owned(),
        _ => "STS could not be reached or refused".to_owned(),
    };
    let mut inner = std::error::Error::source(credentials);
    while let Some(current) = inner {
        if let Some(sts) = current.downcast_ref::<SdkError<AssumeRoleError, HttpResponse>>() {
            why = match sts {
                SdkError::ServiceError(service) => format!(
                    "STS answered {} {}: {}",
                    service.raw().status().as_u16(),
                    service.err().code().unwrap_or("UnknownError"),
                    service.err().message().unwrap_or("no message"),
                ),
                SdkError::TimeoutError(_) => "STS did not answer in time".to_owned(),
                SdkError::DispatchFailure(_) => "STS could not be reached".to_owned(),
                SdkError::ResponseError(_) => {
                    "STS sent an answer that could not be read".to_owned()
                }
                _ => "the STS request could not be built".to_owned(),
            };
            break;
        }
        inner = current.source();
    }
    Some(SourceError {
        kind: FailureKind::Denied,
        code: "AssumeRoleFailed".to_owned(),
        message: format!("could not assume role {role}: {why}"),
        aws_status: Some(403),
        retry_after: None,
    })
}

/// How long before they expire a role's credentials are renewed. Lambda may freeze the
/// environment at any moment; a margin of minutes means a request never signs with
/// credentials about to lapse, and renewal happens on a request, not on a timer.
pub const RENEW_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// The real thing: SSM and Secrets Manager through the AWS SDK.
#[derive(Debug, Clone)]
pub struct AwsSource {
    scope: Scope,
    ssm: aws_sdk_ssm::Client,
    secrets: aws_sdk_secretsmanager::Client,
    // One rate, PARAMETERS_SECRETS_EXTENSION_MAX_CONNECTIONS slots and retries per
    // service, taken by every call of this scope (single, batch, path): a bound on
    // concurrent requests per backend is a bound on its connections, and the rate keeps
    // the environment's share of the account's quotas when AWS throttles.
    ssm_pace: Pace,
    secrets_pace: Pace,
    arn_prefixes: Arc<ArnPrefixes>,
}

impl AwsSource {
    /// Builds both clients from the shared SDK configuration (region, credentials and
    /// `AWS_ENDPOINT_URL` come from there) with lockbox's timeouts.
    /// Every request either client sends is counted into `metrics`.
    pub fn new(sdk: &aws_config::SdkConfig, settings: &SourceSettings, metrics: &Metrics) -> Self {
        Self::with_scope(sdk, settings, HOME.clone(), metrics)
    }

    /// Builds the clients for another role or region. A role's credentials come from STS
    /// `AssumeRole`, called with the function's own credentials through the same endpoint
    /// configuration (`AWS_ENDPOINT_URL` included) in the scope's region, or the function's
    /// when the scope names none, so STS and both services resolve to the region's partition
    /// (China and GovCloud regions have their own endpoints). The SDK's identity cache keeps
    /// the credentials, shared by both clients, and renews them [`RENEW_BEFORE_EXPIRY`].
    pub async fn for_scope(
        sdk: &aws_config::SdkConfig,
        settings: &SourceSettings,
        scope: Scope,
        session_name: &SessionName,
        metrics: &Metrics,
    ) -> Self {
        // AssumeRoleProvider needs a clock; `aws_config::defaults` always sets one, a
        // hand-built configuration may not.
        let sdk = &match sdk.time_source() {
            Some(_) => sdk.clone(),
            None => sdk
                .clone()
                .into_builder()
                .time_source(aws_smithy_async::time::SystemTimeSource::new())
                .build(),
        };
        let mut builder = sdk.clone().into_builder();
        if let Some(region) = &scope.region {
            builder = builder.region(aws_config::Region::new(region.as_str().to_owned()));
        }
        if let Some(role) = &scope.role {
            let bound = settings.ssm_timeout.max(settings.secrets_timeout);
            let sts_base = sdk
                .clone()
                .into_builder()
                .timeout_config(
                    TimeoutConfig::builder()
                        .operation_timeout(bound)
                        .connect_timeout(bound.min(Duration::from_secs(3)))
                        .build(),
                )
                .build();
            let mut assume = aws_config::sts::AssumeRoleProvider::builder(role.as_str())
                .configure(&sts_base)
                .session_name(session_name.as_str());
            if let Some(region) = &scope.region {
                assume = assume.region(aws_config::Region::new(region.as_str().to_owned()));
            }
            let provider = assume.build().await;
            builder = builder
                .credentials_provider(
                    aws_credential_types::provider::SharedCredentialsProvider::new(provider),
                )
                .identity_cache(
                    aws_config::identity::IdentityCache::lazy()
                        .buffer_time(RENEW_BEFORE_EXPIRY)
                        .build(),
                );
        }
        Self::with_scope(&builder.build(), settings, scope, metrics)
    }

    fn with_scope(
        sdk: &aws_config::SdkConfig,
        settings: &SourceSettings,
        scope: Scope,
        metrics: &Metrics,
    ) -> Self {
        let timeouts = |operation: Duration| {
            TimeoutConfig::builder()
                .operation_timeout(operation)
                .connect_timeout(operation.min(Duration::from_secs(3)))
                .build()
        };
        // Retries are the pace's (super::pace), so that every throttle slows the shared
        // rate and retries are jittered over a window a fleet can share.
        let ssm = aws_sdk_ssm::config::Builder::from(sdk)
            .timeout_config(timeouts(settings.ssm_timeout))
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .interceptor(CallCounter::new(metrics.clone()))
            .build();
        let secrets = aws_sdk_secretsmanager::config::Builder::from(sdk)
            .timeout_config(timeouts(settings.secrets_timeout))
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .interceptor(CallCounter::new(metrics.clone()))
            .build();
        let connections = settings.max_connections.get();
        Self {
            scope,
            ssm: aws_sdk_ssm::Client::from_conf(ssm),
            secrets: aws_sdk_secretsmanager::Client::from_conf(secrets),
            ssm_pace: Pace::new("SSM", connections, settings.ssm_timeout),
            secrets_pace: Pace::new("Secrets Manager", connections, settings.secrets_timeout),
            arn_prefixes: Arc::default(),
        }
    }
}

impl AwsSource {
    fn fail<E>(&self, err: SdkError<E, HttpResponse>, service: &str) -> SourceError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        classify(err, service, self.scope.role.as_ref())
    }
}

const REFERENCE_PREFIX: &str = "/aws/reference/secretsmanager/";

fn timestamp(t: Option<&aws_smithy_types::DateTime>) -> Option<Timestamp> {
    t.and_then(|t| Timestamp::new(t.secs(), t.subsec_nanos()))
}

impl Source for AwsSource {
    fn scope(&self) -> &Scope {
        &self.scope
    }

    fn get_parameter<'a>(
        &'a self,
        name: &'a ParameterName,
        decrypt: bool,
    ) -> BoxFuture<'a, Result<Parameter, SourceError>> {
        Box::pin(async move {
            let out = self
                .ssm_pace
                .call(|| async move {
                    self.ssm
                        .get_parameter()
                        .name(name.api_name())
                        .with_decryption(decrypt)
                        .send()
                        .await
                        .map_err(|e| self.fail(e, "SSM"))
                })
                .await?;
            let Some(p) = out.parameter else {
                return Err(SourceError::new(
                    FailureKind::Rejected,
                    "EmptyResponse",
                    "SSM answered without a parameter",
                ));
            };
            Ok(convert_parameter(
                p,
                &name.name,
                name.selector.as_ref().map(ToString::to_string),
                &self.arn_prefixes,
            ))
        })
    }

    fn get_secret<'a>(
        &'a self,
        id: &'a str,
        version: Option<&'a SecretVersion>,
    ) -> BoxFuture<'a, Result<Secret, SourceError>> {
        Box::pin(async move {
            // Without an id or stage ask for AWSCURRENT by name: it is the documented
            // default, and some endpoints answer a bare request from a stale version.
            let (version_id, stage) = match version {
                None => (None, Some("AWSCURRENT".to_owned())),
                Some(version) => (version.version_id.clone(), version.stage.clone()),
            };
            let (version_id, stage) = (&version_id, &stage);
            let mut out = self
                .secrets_pace
                .call(|| async move {
                    self.secrets
                        .get_secret_value()
                        .secret_id(id)
                        .set_version_id(version_id.clone())
                        .set_version_stage(stage.clone())
                        .send()
                        .await
                        .map_err(|e| self.fail(e, "Secrets Manager"))
                })
                .await?;
            Ok(Secret {
                arn: out.arn.take(),
                created_date: timestamp(out.created_date.as_ref()),
                name: out.name.take(),
                secret_binary: out
                    .secret_binary
                    .take()
                    .map(|b| SecretBytes::new(b.into_inner())),
                secret_string: out.secret_string.take().map(SecretText::new),
                version_id: out.version_id.take(),
                version_stages: out.version_stages.take().unwrap_or_default().into(),
            })
        })
    }

    fn get_parameters<'a>(
        &'a self,
        names: &'a [String],
        decrypt: bool,
    ) -> BoxFuture<'a, Result<ParameterBatch, SourceError>> {
        Box::pin(async move {
            let mut out = self
                .ssm_pace
                .call(|| async move {
                    self.ssm
                        .get_parameters()
                        .set_names(Some(names.to_vec()))
                        .with_decryption(decrypt)
                        .send()
                        .await
                        .map_err(|e| self.fail(e, "SSM"))
                })
                .await?;
            let found = out
                .parameters
                .take()
                .unwrap_or_default()
                .into_iter()
                .map(|mut p| {
                    // AWS says which selector (`:current`, `:3`) each answer is for.
                    let selector = p.selector.take();
                    convert_parameter(p, "", selector, &self.arn_prefixes)
                })
                .collect();
            Ok(ParameterBatch {
                found,
                invalid: out.invalid_parameters.take().unwrap_or_default(),
            })
        })
    }

    fn get_parameters_by_path<'a>(
        &'a self,
        path: &'a str,
        recursive: bool,
        decrypt: bool,
    ) -> BoxFuture<'a, Result<Vec<Parameter>, SourceError>> {
        Box::pin(async move {
            let mut all = Vec::new();
            let mut next_token = None;
            loop {
                let token = &next_token;
                let mut out = self
                    .ssm_pace
                    .call(|| async move {
                        self.ssm
                            .get_parameters_by_path()
                            .path(path)
                            .recursive(recursive)
                            .with_decryption(decrypt)
                            .set_next_token(token.clone())
                            .send()
                            .await
                            .map_err(|e| self.fail(e, "SSM"))
                    })
                    .await?;
                let page = out.parameters.take().unwrap_or_default();
                all.extend(page.into_iter().map(|mut p| {
                    // AWS says which selector (`:current`, `:3`) each answer is for.
                    let selector = p.selector.take();
                    convert_parameter(p, "", selector, &self.arn_prefixes)
                }));
                match out.next_token.take() {
                    Some(token) if !token.is_empty() => next_token = Some(token),
                    _ => break,
                }
            }
            Ok(all)
        })
    }

    fn batch_get_secrets<'a>(
        &'a self,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<SecretBatch, SourceError>> {
        Box::pin(async move {
            let mut batch = SecretBatch::default();
            let mut next_token = None;
            loop {
                let token = &next_token;
                let mut out = self
                    .secrets_pace
                    .call(|| async move {
                        self.secrets
                            .batch_get_secret_value()
                            .set_secret_id_list(Some(ids.to_vec()))
                            .set_next_token(token.clone())
                            .send()
                            .await
                            .map_err(|e| self.fail(e, "Secrets Manager"))
                    })
                    .await?;
                let values = out.secret_values.take().unwrap_or_default();
                batch
                    .found
                    .extend(values.into_iter().map(convert_secret_entry));
                let errors = out.errors.take().unwrap_or_default();
                batch
                    .errors
                    .extend(errors.into_iter().map(|e| SecretBatchError {
                        secret_id: e.secret_id.unwrap_or_default(),
                        error_code: e.error_code.unwrap_or_default(),
                        message: e.message.unwrap_or_default(),
                    }));
                match out.next_token.take() {
                    Some(token) if !token.is_empty() => next_token = Some(token),
                    _ => break,
                }
            }
            Ok(batch)
        })
    }
}

/// Turns the SDK's parameter into ours, taking its strings rather than copying them (a copy
/// would leave an unzeroized value behind).
fn convert_parameter(
    mut p: aws_sdk_ssm::types::Parameter,
    requested_name: &str,
    selector: Option<String>,
    prefixes: &ArnPrefixes,
) -> Parameter {
    let name = p.name.take().unwrap_or_else(|| requested_name.to_owned());
    let is_reference =
        name.starts_with(REFERENCE_PREFIX) || requested_name.starts_with(REFERENCE_PREFIX);
    let source_result = p.source_result.take();
    // The AWS layer reports a reference's ARN as the secret's, found in the secret's
    // metadata that SSM passes along.
    let arn = match (is_reference, &source_result) {
        (true, Some(meta)) => serde_json::from_str::<serde_json::Value>(meta)
            .ok()
            .and_then(|v| v.get("ARN").and_then(|a| a.as_str()).map(str::to_owned))
            .or(p.arn.take()),
        _ => p.arn.take(),
    };
    Parameter {
        arn: arn.map(|arn| prefixes.arn(arn, &name)),
        data_type: if is_reference {
            None
        } else {
            p.data_type.as_deref().map(label)
        },
        last_modified_date: timestamp(p.last_modified_date.as_ref()),
        name: name.into(),
        extra: ParameterExtra::new(selector, source_result.map(SecretText::new)),
        kind: label(p.r#type.as_ref().map_or("", |t| t.as_str())),
        value: SecretText::new(p.value.take().unwrap_or_default()),
        version: p.version,
    }
}

fn convert_secret_entry(mut e: aws_sdk_secretsmanager::types::SecretValueEntry) -> Secret {
    Secret {
        arn: e.arn.take(),
        created_date: timestamp(e.created_date.as_ref()),
        name: e.name.take(),
        secret_binary: e
            .secret_binary
            .take()
            .map(|b| SecretBytes::new(b.into_inner())),
        secret_string: e.secret_string.take().map(SecretText::new),
        version_id: e.version_id.take(),
        version_stages: e.version_stages.take().unwrap_or_default().into(),
    }
}

#[cfg(test)]
mod tests {
    //! Credential renewal for a role, with the SDK's clock under the test's control: a fake
    //! AWS answers STS `AssumeRole` (credentials valid for an hour from "now") and SSM
    //! `GetParameter`, and records which access key signed each SSM request.

    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::{SystemTime, UNIX_EPOCH};

    use aws_smithy_async::rt::sleep::TokioSleep;
    use aws_smithy_async::time::TimeSource;
    use aws_smithy_runtime_api::client::http::{
        HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
    use aws_smithy_types::body::SdkBody;

    use crate::domain::RoleArn;

    /// A clock that moves only when the test says so.
    #[derive(Debug, Clone)]
    struct Clock(Arc<Mutex<SystemTime>>);

    impl Clock {
        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
    }

    impl TimeSource for Clock {
        fn now(&self) -> SystemTime {
            *self.0.lock().unwrap()
        }
    }

    #[derive(Debug, Clone)]
    struct FakeAws {
        clock: Clock,
        assume_role_calls: Arc<AtomicUsize>,
        signed_with: Arc<Mutex<Vec<String>>>,
    }

    impl HttpConnector for FakeAws {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let body = if request.headers().get("x-amz-target").is_some() {
                let auth = request.headers().get("authorization").unwrap_or_default();
                let key = auth
                    .split("Credential=")
                    .nth(1)
                    .and_then(|c| c.split('/').next())
                    .unwrap_or_default();
                self.signed_with.lock().unwrap().push(key.to_owned());
                r#"{"Parameter":{"Name":"/p","Type":"String","Value":"v","Version":1}}"#.to_owned()
            } else {
                let n = self.assume_role_calls.fetch_add(1, Ordering::SeqCst) + 1;
                let expires = self.clock.now() + Duration::from_secs(3600);
                let secs = expires.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
                let expiration = Timestamp::new(secs, 0).unwrap();
                format!(
                    "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
                     <AssumeRoleResult><Credentials><AccessKeyId>ASIAROLE{n}</AccessKeyId>\
                     <SecretAccessKey>fake</SecretAccessKey><SessionToken>fake</SessionToken>\
                     <Expiration>{expiration}</Expiration></Credentials><AssumedRoleUser>\
                     <AssumedRoleId>AROA:s</AssumedRoleId>\
                     <Arn>arn:aws:sts::222222222222:assumed-role/r/s</Arn></AssumedRoleUser>\
                     </AssumeRoleResult></AssumeRoleResponse>"
                )
            };
            let status = aws_smithy_runtime_api::http::StatusCode::try_from(200).unwrap();
            HttpConnectorFuture::ready(Ok(HttpResponse::new(status, SdkBody::from(body))))
        }
    }

    impl HttpClient for FakeAws {
        fn http_connector(
            &self,
            _: &HttpConnectorSettings,
            _: &RuntimeComponents,
        ) -> SharedHttpConnector {
            SharedHttpConnector::new(self.clone())
        }
    }

    fn parameter_name() -> ParameterName {
        ParameterName {
            name: "/p".into(),
            selector: None,
        }
    }

    fn session() -> SessionName {
        SessionName::parse("lockbox-test").unwrap()
    }

    fn settings() -> SourceSettings {
        SourceSettings {
            ssm_timeout: Duration::from_secs(10),
            secrets_timeout: Duration::from_secs(10),
            max_connections: NonZeroUsize::new(3).unwrap(),
        }
    }

    #[tokio::test]
    async fn role_credentials_are_renewed_before_they_expire() {
        // 2030-01-01T00:00:00Z.
        let clock = Clock(Arc::new(Mutex::new(
            UNIX_EPOCH + Duration::from_secs(1_893_456_000),
        )));
        let fake = FakeAws {
            clock: clock.clone(),
            assume_role_calls: Arc::new(AtomicUsize::new(0)),
            signed_with: Arc::new(Mutex::new(Vec::new())),
        };
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    aws_credential_types::Credentials::for_tests(),
                ),
            )
            .endpoint_url("http://aws.invalid")
            .http_client(fake.clone())
            .time_source(clock.clone())
            .sleep_impl(TokioSleep::new())
            .build();
        let scope = Scope {
            role: Some(RoleArn::parse("arn:aws:iam::222222222222:role/r").unwrap()),
            region: None,
        };
        let source = AwsSource::for_scope(
            &sdk,
            &settings(),
            scope.clone(),
            &session(),
            &Metrics::default(),
        )
        .await;
        assert_eq!(source.scope(), &scope);
        let read = || async {
            source
                .get_parameter(&parameter_name(), false)
                .await
                .unwrap()
        };

        read().await;
        read().await;
        assert_eq!(fake.assume_role_calls.load(Ordering::SeqCst), 1);

        // 50 minutes in, 10 left: the first credentials are still used.
        clock.advance(Duration::from_secs(50 * 60));
        read().await;
        assert_eq!(fake.assume_role_calls.load(Ordering::SeqCst), 1);

        // 58 minutes in, 2 left: inside the renewal margin (RENEW_BEFORE_EXPIRY, less up
        // to half of it in jitter), so the next read renews, and signs with the new keys
        // although the old ones have not expired.
        clock.advance(Duration::from_secs(8 * 60));
        read().await;
        assert_eq!(fake.assume_role_calls.load(Ordering::SeqCst), 2);
        let signed = fake.signed_with.lock().unwrap().clone();
        assert_eq!(
            signed,
            vec!["ASIAROLE1", "ASIAROLE1", "ASIAROLE1", "ASIAROLE2"]
        );
    }

    #[tokio::test]
    async fn a_role_that_cannot_be_assumed_names_the_role_and_stss_answer() {
        #[derive(Debug, Clone)]
        struct Refusing;
        impl HttpConnector for Refusing {
            fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
                assert!(
                    request.headers().get("x-amz-target").is_none(),
                    "SSM must not be called without credentials"
                );
                let status = aws_smithy_runtime_api::http::StatusCode::try_from(403).unwrap();
                let body = "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>\
                            <Message>not authorized to perform sts:AssumeRole</Message></Error>\
                            </ErrorResponse>";
                HttpConnectorFuture::ready(Ok(HttpResponse::new(status, SdkBody::from(body))))
            }
        }
        impl HttpClient for Refusing {
            fn http_connector(
                &self,
                _: &HttpConnectorSettings,
                _: &RuntimeComponents,
            ) -> SharedHttpConnector {
                SharedHttpConnector::new(self.clone())
            }
        }
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("cn-north-1"))
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    aws_credential_types::Credentials::for_tests(),
                ),
            )
            .endpoint_url("http://aws.invalid")
            .http_client(Refusing)
            .sleep_impl(TokioSleep::new())
            .build();
        let role = "arn:aws-cn:iam::222222222222:role/r";
        let scope = Scope {
            role: Some(RoleArn::parse(role).unwrap()),
            region: None,
        };
        let source =
            AwsSource::for_scope(&sdk, &settings(), scope, &session(), &Metrics::default()).await;
        let err = source
            .get_parameter(&parameter_name(), false)
            .await
            .unwrap_err();
        assert_eq!(err.code, "AssumeRoleFailed");
        assert_eq!(err.kind, FailureKind::Denied);
        assert_eq!(err.aws_status, Some(403));
        assert!(err.message.contains(role), "{}", err.message);
        assert!(err.message.contains("AccessDenied"), "{}", err.message);
        assert!(!err.is_transient());
    }
}
