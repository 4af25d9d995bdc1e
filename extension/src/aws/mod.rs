//! The AWS side: the [`Source`] trait the layers above read through, its SDK implementation
//! [`AwsSource`], the classification of every failure into a [`SourceError`], and
//! [`Scopes`], the registry of one source per role and region; [`calls`] counts every
//! request the SDK sends into the metrics. [`Coalescing`] wraps a
//! scope's source so that concurrent misses go to AWS as batch calls, and every SDK call
//! goes through its service's [`pace::Pace`]: one rate that backs off together when AWS
//! throttles, retries with full jitter, all within the read's timeout.

pub mod calls;
pub mod coalesce;
#[cfg(test)]
pub(crate) mod fake;
pub mod pace;
pub mod scopes;
pub mod sdk;
pub mod source;

pub use coalesce::Coalescing;
pub use scopes::{ScopeError, Scopes, SourceFactory, MAX_REGIONS};
pub use sdk::{AwsSource, SourceSettings, RENEW_BEFORE_EXPIRY};
pub use source::{
    FailureKind, ParameterBatch, SecretBatch, Source, SourceError, BATCH_GET_SECRETS_MAX,
    GET_PARAMETERS_MAX,
};
