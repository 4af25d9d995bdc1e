//! One configurable [`Source`] for the unit tests of every layer above this one, instead of
//! a hand-written fake per module: each operation answers with a closure the test gives, or
//! panics naming the operation the test did not expect. Every call is recorded as it is
//! made, and answered after an optional delay (the time AWS takes), or with a failure the
//! test sets, at any point, for every operation.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;

use super::{ParameterBatch, SecretBatch, Source, SourceError};
use crate::domain::{Parameter, ParameterName, Scope, Secret, SecretText, SecretVersion};

/// How a test answers one operation: from its argument, as AWS would.
type Answer<A, T> = Box<dyn Fn(&A) -> Result<T, SourceError> + Send + Sync>;

/// A [`Source`] whose answers each test chooses. Built with [`Fake::new`] and the `on_*`
/// methods; read back with [`Fake::calls`] and [`Fake::count`].
#[derive(Default)]
pub(crate) struct Fake {
    scope: Scope,
    delay: Duration,
    parameter: Option<Answer<ParameterName, Parameter>>,
    parameters: Option<Answer<[String], ParameterBatch>>,
    path: Option<Answer<str, Vec<Parameter>>>,
    failure: Mutex<Option<SourceError>>,
    calls: Mutex<Vec<String>>,
}

impl fmt::Debug for Fake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fake")
            .field("scope", &self.scope)
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

impl Fake {
    /// A source in the home scope that expects no call.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Reads through `scope` (part of every cache key it fills).
    pub(crate) fn in_scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// Every answer comes `delay` after its call.
    pub(crate) fn answering_after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// `GetParameter` answers with `answer`.
    pub(crate) fn on_parameter(
        mut self,
        answer: impl Fn(&ParameterName) -> Result<Parameter, SourceError> + Send + Sync + 'static,
    ) -> Self {
        self.parameter = Some(Box::new(answer));
        self
    }

    /// `GetParameters` answers with `answer`.
    pub(crate) fn on_parameters(
        mut self,
        answer: impl Fn(&[String]) -> Result<ParameterBatch, SourceError> + Send + Sync + 'static,
    ) -> Self {
        self.parameters = Some(Box::new(answer));
        self
    }

    /// `GetParametersByPath` answers with `answer`.
    pub(crate) fn on_path(
        mut self,
        answer: impl Fn(&str) -> Result<Vec<Parameter>, SourceError> + Send + Sync + 'static,
    ) -> Self {
        self.path = Some(Box::new(answer));
        self
    }

    /// From now on every answer is `failure` (or, with `None`, the configured one again).
    pub(crate) fn fail_with(&self, failure: Option<SourceError>) -> &Self {
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = failure;
        self
    }

    /// The calls made so far, in order: `"GetParameter /a"`, `"GetParameters /a,/b"`...
    pub(crate) fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many calls of `operation` (`"GetParameters"`) were made.
    pub(crate) fn count(&self, operation: &str) -> usize {
        self.calls()
            .iter()
            .filter(|call| call.split(' ').next() == Some(operation))
            .count()
    }

    fn record(&self, operation: &str, argument: &str) {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("{operation} {argument}"));
    }

    /// The answer to a call: after the delay, the failure set, else `answer`'s.
    fn answer<'a, A, T>(
        &'a self,
        operation: &'static str,
        answer: Option<&'a Answer<A, T>>,
        argument: &'a A,
    ) -> BoxFuture<'a, Result<T, SourceError>>
    where
        A: ?Sized + Sync + 'a,
        T: Send + 'a,
    {
        Box::pin(async move {
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            if let Some(failure) = self
                .failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
            {
                return Err(failure);
            }
            let answer = answer.unwrap_or_else(|| panic!("this test expects no {operation}"));
            answer(argument)
        })
    }
}

impl Source for Fake {
    fn get_parameter<'a>(
        &'a self,
        name: &'a ParameterName,
        _: bool,
    ) -> BoxFuture<'a, Result<Parameter, SourceError>> {
        self.record("GetParameter", &name.api_name());
        self.answer("GetParameter", self.parameter.as_ref(), name)
    }

    fn get_secret<'a>(
        &'a self,
        id: &'a str,
        _: Option<&'a SecretVersion>,
    ) -> BoxFuture<'a, Result<Secret, SourceError>> {
        self.record("GetSecretValue", id);
        self.answer("GetSecretValue", None::<&Answer<str, Secret>>, id)
    }

    fn get_parameters<'a>(
        &'a self,
        names: &'a [String],
        _: bool,
    ) -> BoxFuture<'a, Result<ParameterBatch, SourceError>> {
        self.record("GetParameters", &names.join(","));
        self.answer("GetParameters", self.parameters.as_ref(), names)
    }

    fn get_parameters_by_path<'a>(
        &'a self,
        path: &'a str,
        _: bool,
        _: bool,
    ) -> BoxFuture<'a, Result<Vec<Parameter>, SourceError>> {
        self.record("GetParametersByPath", path);
        self.answer("GetParametersByPath", self.path.as_ref(), path)
    }

    fn batch_get_secrets<'a>(
        &'a self,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<SecretBatch, SourceError>> {
        self.record("BatchGetSecretValue", &ids.join(","));
        self.answer(
            "BatchGetSecretValue",
            None::<&Answer<[String], SecretBatch>>,
            ids,
        )
    }

    fn scope(&self) -> &Scope {
        &self.scope
    }
}

/// A `String` parameter at version 1, as `GetParameter` answers it.
pub(crate) fn parameter(name: &str, value: &str) -> Parameter {
    Parameter {
        arn: None,
        data_type: None,
        last_modified_date: None,
        name: name.into(),
        extra: None,
        kind: "String".into(),
        value: SecretText::new(value.to_owned()),
        version: 1,
    }
}
