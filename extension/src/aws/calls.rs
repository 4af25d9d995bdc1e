//! Counts every request the AWS SDK sends, as AWS sees it: one per attempt (a retried call
//! is two requests against the account's quota), by operation, with its time and whether
//! AWS answered with an error or a throttle.
//!
//! An SDK interceptor rather than counting around `send()`: retries and pages happen inside
//! the SDK, and only the interceptor sees each one. An attempt that never left (no
//! credentials, a request that could not be signed) is not counted: AWS never saw it.
//! STS `AssumeRole`, for reads through another account's role, is called by the SDK's
//! credentials provider with a client of its own, and is not counted here.

use std::time::Instant;

use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextRef, Error, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};

use lockbox_aws::ErrorClass;

use crate::metrics::{AwsOperation, CallEnd, Metrics};

/// The SDK interceptor that counts into [`Metrics`]; one per client.
#[derive(Debug, Clone)]
pub struct CallCounter {
    metrics: Metrics,
}

impl CallCounter {
    /// Counts into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

/// When the current attempt's request was handed to the HTTP client.
#[derive(Debug, Clone, Copy)]
struct SentAt(Instant);

impl Storable for SentAt {
    type Storer = StoreReplace<Self>;
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "lockbox::CallCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state().store_put(SentAt(Instant::now()));
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(SentAt(sent)) = cfg.load::<SentAt>().copied() else {
            return Ok(());
        };
        // The bag outlives the attempt; the next attempt sets its own time when it is sent.
        cfg.interceptor_state().unset::<SentAt>();
        let operation = cfg
            .load::<Metadata>()
            .map_or(AwsOperation::Other, |m| AwsOperation::from_name(m.name()));
        let end = match context.output_or_error() {
            Some(Ok(_)) => CallEnd::Ok,
            Some(Err(err)) => {
                let code = err.as_operation_error().and_then(error_code);
                let status = context.response().map(|r| r.status().as_u16());
                match lockbox_aws::classify(code, status) {
                    ErrorClass::Throttled => CallEnd::Throttled,
                    _ => CallEnd::Error,
                }
            }
            None => CallEnd::Error,
        };
        self.metrics
            .counters()
            .aws_call(operation, sent.elapsed(), end);
        Ok(())
    }
}

/// AWS's error code of an operation's error. The SDK hands interceptors the error with its
/// type erased; these are the operations lockbox calls.
fn error_code(err: &Error) -> Option<&str> {
    use aws_sdk_secretsmanager::operation as sm;
    use aws_sdk_ssm::operation as ssm;
    fn code<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
        err: &Error,
    ) -> Option<&str> {
        err.downcast_ref::<E>().and_then(ProvideErrorMetadata::code)
    }
    code::<ssm::get_parameter::GetParameterError>(err)
        .or_else(|| code::<ssm::get_parameters::GetParametersError>(err))
        .or_else(|| code::<ssm::get_parameters_by_path::GetParametersByPathError>(err))
        .or_else(|| code::<sm::get_secret_value::GetSecretValueError>(err))
        .or_else(|| code::<sm::batch_get_secret_value::BatchGetSecretValueError>(err))
}
