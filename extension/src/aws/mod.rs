//! The AWS side: the [`Source`] trait the layers above read through, its SDK implementation
//! [`AwsSource`], the classification of every failure into a [`SourceError`], and
//! [`Scopes`], the registry of one source per role and region.

pub mod scopes;
pub mod sdk;
pub mod source;

pub use scopes::{ScopeError, Scopes, SourceFactory, MAX_REGIONS};
pub use sdk::{AwsSource, SourceSettings, RENEW_BEFORE_EXPIRY};
pub use source::{
    FailureKind, ParameterBatch, SecretBatch, Source, SourceError, BATCH_GET_SECRETS_MAX,
    GET_PARAMETERS_MAX,
};
