//! Coalescing: misses of one scope that happen together go to AWS together.
//!
//! [`Coalescing`] wraps a scope's [`Source`]. A single parameter read (no selector) or a
//! single current-secret read does not call AWS at once: it joins a queue, and a
//! dispatcher, after [`LINGER`] for the misses arriving with it, sends the queue as one
//! `GetParameters` call of up to 10 names or one `BatchGetSecretValue` call of up to 20 ids
//! (a lone miss keeps the single call, whose answer and errors are AWS's own for that one
//! value). Misses that arrive while calls are in flight queue for the next call; calls in
//! flight at once are bounded by `PARAMETERS_SECRETS_EXTENSION_MAX_CONNECTIONS`.
//!
//! A name that is already queued or being fetched is never asked for twice: whoever
//! misses it then (a request, or prefetch's batch read, or a request for a value prefetch
//! has not loaded yet) waits for that call's answer, success or error.
//!
//! When AWS refuses a batch call (`AccessDeniedException`: a policy that grants
//! `ssm:GetParameter` but not `ssm:GetParameters`, or one KMS key of ten that cannot be
//! used), each value is read on its own, so every read still gets its own answer.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::future::{join_all, BoxFuture};
use tokio::sync::{oneshot, Semaphore};

use super::sdk::kind_of;
use super::source::{
    FailureKind, ParameterBatch, SecretBatch, Source, SourceError, BATCH_GET_SECRETS_MAX,
    GET_PARAMETERS_MAX,
};
use crate::domain::{
    Keyring, Parameter, ParameterName, Scope, Secret, SecretBatchError, SecretVersion,
};

/// How long the first miss of a batch waits for others before its call is sent.
pub const LINGER: Duration = Duration::from_millis(10);

/// Names that SSM resolves through Secrets Manager: always read with `GetParameter`, the
/// one call that takes them.
const REFERENCE_PREFIX: &str = "/aws/reference/secretsmanager/";

/// A scope's source whose concurrent misses are coalesced into batch calls.
pub struct Coalescing {
    inner: Arc<dyn Source>,
    parameters: Coalescer<Parameter>,
    secrets: Coalescer<Secret>,
}

impl std::fmt::Debug for Coalescing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescing")
            .field("scope", self.inner.scope())
            .finish()
    }
}

impl Coalescing {
    /// Wraps `inner`; at most `calls` coalesced calls of each kind are in flight at once.
    pub fn new(inner: Arc<dyn Source>, calls: usize) -> Self {
        Self {
            parameters: Coalescer::new(
                Box::new(ParameterApi(Arc::clone(&inner))),
                GET_PARAMETERS_MAX,
                calls,
            ),
            secrets: Coalescer::new(
                Box::new(SecretApi(Arc::clone(&inner))),
                BATCH_GET_SECRETS_MAX,
                calls,
            ),
            inner,
        }
    }
}

impl Source for Coalescing {
    fn scope(&self) -> &Scope {
        self.inner.scope()
    }

    fn get_parameter<'a>(
        &'a self,
        name: &'a ParameterName,
        decrypt: bool,
    ) -> BoxFuture<'a, Result<Parameter, SourceError>> {
        if name.selector.is_some() || name.name.starts_with(REFERENCE_PREFIX) {
            // A batch answer does not say which version or label it is.
            return self.inner.get_parameter(name, decrypt);
        }
        Box::pin(self.parameters.one(decrypt, &name.name))
    }

    fn get_secret<'a>(
        &'a self,
        id: &'a str,
        version: Option<&'a SecretVersion>,
    ) -> BoxFuture<'a, Result<Secret, SourceError>> {
        if version.is_some() {
            // BatchGetSecretValue reads AWSCURRENT only.
            return self.inner.get_secret(id, version);
        }
        Box::pin(self.secrets.one(false, id))
    }

    fn get_parameters<'a>(
        &'a self,
        names: &'a [String],
        decrypt: bool,
    ) -> BoxFuture<'a, Result<ParameterBatch, SourceError>> {
        Box::pin(async move {
            let mut batch = ParameterBatch::default();
            for (name, answer) in self.parameters.many(decrypt, names).await? {
                match answer {
                    Ok(parameter) => batch.found.push(parameter),
                    Err(err) if err.kind == FailureKind::NotFound => batch.invalid.push(name),
                    Err(err) => return Err(err),
                }
            }
            Ok(batch)
        })
    }

    fn get_parameters_by_path<'a>(
        &'a self,
        path: &'a str,
        recursive: bool,
        decrypt: bool,
    ) -> BoxFuture<'a, Result<Vec<Parameter>, SourceError>> {
        self.inner.get_parameters_by_path(path, recursive, decrypt)
    }

    fn get_keyring<'a>(
        &'a self,
        name: &'a str,
        decrypt: bool,
    ) -> BoxFuture<'a, Result<Keyring, SourceError>> {
        // Its names carry selectors, which a coalesced batch cannot tell apart.
        self.inner.get_keyring(name, decrypt)
    }

    fn batch_get_secrets<'a>(
        &'a self,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<SecretBatch, SourceError>> {
        Box::pin(async move {
            let mut batch = SecretBatch::default();
            for (id, answer) in self.secrets.many(false, ids).await? {
                match answer {
                    Ok(secret) => batch.found.push(secret),
                    Err(err) => batch.errors.push(SecretBatchError {
                        secret_id: id,
                        error_code: err.code,
                        message: err.message,
                    }),
                }
            }
            Ok(batch)
        })
    }
}

/// One value's outcome.
type Answer<V> = Result<V, SourceError>;
/// Each name asked, with its outcome.
type Answers<V> = Vec<(String, Answer<V>)>;

/// The two calls a kind of value can be read with.
trait BatchApi<V>: Send + Sync + 'static {
    /// One value, with the single call (`GetParameter`, `GetSecretValue`).
    fn one<'a>(&'a self, group: bool, name: &'a str) -> BoxFuture<'a, Answer<V>>;

    /// Several, with the batch call: every name's answer, or the call's failure.
    fn many<'a>(
        &'a self,
        group: bool,
        names: &'a [String],
    ) -> BoxFuture<'a, Result<Answers<V>, SourceError>>;
}

/// Queues and calls in flight for one kind of value. `group` separates what one call can
/// serve (decrypted or not, for parameters).
struct Coalescer<V> {
    shared: Arc<Shared<V>>,
}

struct Shared<V> {
    api: Box<dyn BatchApi<V>>,
    /// Names per call at most.
    max: usize,
    /// Coalesced calls in flight at once.
    calls: Arc<Semaphore>,
    state: Mutex<State<V>>,
}

struct State<V> {
    /// Names waiting for the next call, per group.
    queued: HashMap<bool, VecDeque<String>>,
    /// Every name queued or in a call now, with whoever waits for its answer.
    waiting: HashMap<(bool, String), Vec<oneshot::Sender<Answer<V>>>>,
    /// Groups whose dispatcher is running.
    dispatching: HashSet<bool>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections are single map operations: a poisoned lock holds sound data.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<V: Clone + Send + 'static> Coalescer<V> {
    fn new(api: Box<dyn BatchApi<V>>, max: usize, calls: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                api,
                max,
                calls: Arc::new(Semaphore::new(calls.max(1))),
                state: Mutex::new(State {
                    queued: HashMap::new(),
                    waiting: HashMap::new(),
                    dispatching: HashSet::new(),
                }),
            }),
        }
    }

    /// One value: joins the call that already fetches it, or the queue for the next call.
    async fn one(&self, group: bool, name: &str) -> Answer<V> {
        loop {
            let (tx, rx) = oneshot::channel();
            {
                let mut state = lock(&self.shared.state);
                let key = (group, name.to_owned());
                match state.waiting.get_mut(&key) {
                    Some(waiters) => waiters.push(tx),
                    None => {
                        state.waiting.insert(key, vec![tx]);
                        state
                            .queued
                            .entry(group)
                            .or_default()
                            .push_back(name.to_owned());
                        if state.dispatching.insert(group) {
                            tokio::spawn(dispatch(Arc::clone(&self.shared), group));
                        }
                    }
                }
            }
            match rx.await {
                Ok(answer) => return answer,
                // The read this one joined was cancelled before AWS answered: ask again.
                Err(_) => continue,
            }
        }
    }

    /// Several values in one call (the caller has chunked them); names already being
    /// fetched are waited for instead of asked again.
    async fn many(&self, group: bool, names: &[String]) -> Result<Answers<V>, SourceError> {
        let mut mine = Vec::new();
        let mut joined = Vec::new();
        {
            let mut state = lock(&self.shared.state);
            let mut seen = HashSet::new();
            for name in names.iter().filter(|n| seen.insert(n.as_str())) {
                let key = (group, name.clone());
                match state.waiting.get_mut(&key) {
                    Some(waiters) => {
                        let (tx, rx) = oneshot::channel();
                        waiters.push(tx);
                        joined.push((name.clone(), rx));
                    }
                    None => {
                        state.waiting.insert(key, Vec::new());
                        mine.push(name.clone());
                    }
                }
            }
        }
        let registered = Registered {
            shared: &self.shared,
            group,
            names: mine,
        };

        let mut answers = Vec::with_capacity(names.len());
        let mut failure = None;
        if !registered.names.is_empty() {
            match self.shared.api.many(group, &registered.names).await {
                Ok(found) => {
                    self.shared.deliver(group, &found);
                    answers.extend(found);
                }
                Err(err) => {
                    let failed: Vec<_> = registered
                        .names
                        .iter()
                        .map(|n| (n.clone(), Err(err.clone())))
                        .collect();
                    self.shared.deliver(group, &failed);
                    failure = Some(err);
                }
            }
        }
        drop(registered);
        if let Some(err) = failure {
            return Err(err);
        }
        for (name, rx) in joined {
            let answer = match rx.await {
                Ok(answer) => answer,
                Err(_) => self.one(group, &name).await,
            };
            answers.push((name, answer));
        }
        Ok(answers)
    }
}

impl<V: Clone + Send + 'static> Shared<V> {
    /// Hands each answer to whoever waits for that name, and forgets the name.
    fn deliver(&self, group: bool, answers: &[(String, Answer<V>)]) {
        let mut state = lock(&self.state);
        for (name, answer) in answers {
            if let Some(waiters) = state.waiting.remove(&(group, name.clone())) {
                for waiter in waiters {
                    // A waiter that gave up (its request was cancelled) is no loss.
                    let _ = waiter.send(answer.clone());
                }
            }
        }
    }
}

/// Names a batch caller is fetching; if the caller is cancelled before the answer, they
/// are forgotten, so that whoever joined them asks again rather than waits forever.
struct Registered<'a, V: Clone + Send + 'static> {
    shared: &'a Shared<V>,
    group: bool,
    names: Vec<String>,
}

impl<V: Clone + Send + 'static> Drop for Registered<'_, V> {
    fn drop(&mut self) {
        let mut state = lock(&self.shared.state);
        for name in &self.names {
            // Delivered names are gone already; what is left was never answered.
            state.waiting.remove(&(self.group, name.clone()));
        }
    }
}

/// Sends a group's queue to AWS, a call of up to `max` names at a time, until it is empty.
async fn dispatch<V: Clone + Send + 'static>(shared: Arc<Shared<V>>, group: bool) {
    // Misses that arrive together come a few microseconds to milliseconds apart.
    tokio::time::sleep(LINGER).await;
    loop {
        // A free place for a call first: names that arrive meanwhile go in this call.
        let Ok(permit) = Arc::clone(&shared.calls).acquire_owned().await else {
            return;
        };
        let names: Vec<String> = {
            let mut state = lock(&shared.state);
            let queue = state.queued.entry(group).or_default();
            let take = queue.len().min(shared.max);
            let names: Vec<String> = queue.drain(..take).collect();
            if names.is_empty() {
                state.dispatching.remove(&group);
                return;
            }
            names
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let answers = match names.as_slice() {
                [name] => vec![(name.clone(), shared.api.one(group, name).await)],
                _ => match shared.api.many(group, &names).await {
                    Ok(answers) => answers,
                    Err(err) => names
                        .iter()
                        .map(|n| (n.clone(), Err(err.clone())))
                        .collect(),
                },
            };
            shared.deliver(group, &answers);
            // A name the call did not answer (it cannot happen with AWS's batch calls, but
            // a waiter must never hang on it).
            let unanswered: Vec<_> = names
                .into_iter()
                .filter(|n| !answers.iter().any(|(answered, _)| answered == n))
                .map(|n| (n, Err(unanswered())))
                .collect();
            shared.deliver(group, &unanswered);
            drop(permit);
        });
    }
}

fn unanswered() -> SourceError {
    SourceError::new(
        FailureKind::Internal,
        "InternalError",
        "the batch call did not answer for this value",
    )
}

/// Parameters: `GetParameter` and `GetParameters`; the group is the decryption setting.
struct ParameterApi(Arc<dyn Source>);

impl BatchApi<Parameter> for ParameterApi {
    fn one<'a>(&'a self, decrypt: bool, name: &'a str) -> BoxFuture<'a, Answer<Parameter>> {
        Box::pin(async move {
            let name = ParameterName {
                name: name.to_owned(),
                selector: None,
            };
            self.0.get_parameter(&name, decrypt).await
        })
    }

    fn many<'a>(
        &'a self,
        decrypt: bool,
        names: &'a [String],
    ) -> BoxFuture<'a, Result<Answers<Parameter>, SourceError>> {
        Box::pin(async move {
            let batch = match self.0.get_parameters(names, decrypt).await {
                Ok(batch) => batch,
                Err(err) if err.kind == FailureKind::Denied => {
                    return Ok(each_on_its_own(self, decrypt, names).await)
                }
                Err(err) => return Err(err),
            };
            let mut found = batch.found;
            let mut answers = Vec::with_capacity(names.len());
            let mut leftover = Vec::new();
            for name in names {
                if let Some(at) = found.iter().position(|p| p.is_called(name)) {
                    answers.push((name.clone(), Ok(found.swap_remove(at))));
                } else if batch.invalid.iter().any(|n| n == name) {
                    answers.push((name.clone(), Err(parameter_not_found(name))));
                } else {
                    leftover.push(name.clone());
                }
            }
            answers.extend(each_on_its_own(self, decrypt, &leftover).await);
            Ok(answers)
        })
    }
}

fn parameter_not_found(name: &str) -> SourceError {
    SourceError {
        aws_status: Some(400),
        ..SourceError::new(
            FailureKind::NotFound,
            "ParameterNotFound",
            format!("Parameter {name} not found."),
        )
    }
}

/// Current secrets: `GetSecretValue` and `BatchGetSecretValue`; one group.
struct SecretApi(Arc<dyn Source>);

impl BatchApi<Secret> for SecretApi {
    fn one<'a>(&'a self, _: bool, id: &'a str) -> BoxFuture<'a, Answer<Secret>> {
        self.0.get_secret(id, None)
    }

    fn many<'a>(
        &'a self,
        group: bool,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<Answers<Secret>, SourceError>> {
        Box::pin(async move {
            let batch = match self.0.batch_get_secrets(ids).await {
                Ok(batch) => batch,
                Err(err) if err.kind == FailureKind::Denied => {
                    return Ok(each_on_its_own(self, group, ids).await)
                }
                Err(err) => return Err(err),
            };
            let mut found = batch.found;
            let mut answers = Vec::with_capacity(ids.len());
            let mut leftover = Vec::new();
            for id in ids {
                let position = found
                    .iter()
                    .position(|s| s.name.as_deref() == Some(id) || s.arn.as_deref() == Some(id));
                if let Some(at) = position {
                    answers.push((id.clone(), Ok(found.swap_remove(at))));
                } else if let Some(err) = batch.errors.iter().find(|e| e.secret_id == *id) {
                    let error = SourceError {
                        aws_status: Some(400),
                        ..SourceError::new(
                            kind_of(&err.error_code, 400),
                            &err.error_code,
                            err.message.clone(),
                        )
                    };
                    answers.push((id.clone(), Err(error)));
                } else {
                    leftover.push(id.clone());
                }
            }
            answers.extend(each_on_its_own(self, group, &leftover).await);
            Ok(answers)
        })
    }
}

/// Reads each name with the single call, concurrently (the pace bounds the connections).
async fn each_on_its_own<V: 'static>(
    api: &dyn BatchApi<V>,
    group: bool,
    names: &[String],
) -> Answers<V> {
    join_all(
        names
            .iter()
            .map(|name| async move { (name.clone(), api.one(group, name).await) }),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::fake::{parameter, Fake};

    /// A source that answers after 50 ms; `/missing` does not exist, everything else does.
    fn recording() -> Fake {
        let found = |name: &str| parameter(name, &format!("value of {name}"));
        Fake::new()
            .answering_after(Duration::from_millis(50))
            .on_parameter(move |req| match req.name.as_str() {
                "/missing" => Err(parameter_not_found(&req.name)),
                name => Ok(found(name)),
            })
            .on_parameters(move |names| {
                let (invalid, found_names): (Vec<_>, Vec<_>) =
                    names.iter().cloned().partition(|n| n == "/missing");
                Ok(ParameterBatch {
                    found: found_names.iter().map(|n| found(n)).collect(),
                    invalid,
                })
            })
    }

    fn request(name: &str) -> ParameterName {
        ParameterName {
            name: name.into(),
            selector: None,
        }
    }

    fn coalescing() -> (Arc<Fake>, Arc<Coalescing>) {
        let recording = Arc::new(recording());
        let source = Arc::new(Coalescing::new(recording.clone(), 3));
        (recording, source)
    }

    async fn read_all(source: &Arc<Coalescing>, names: &[&str]) -> Vec<Answer<Parameter>> {
        let reads = names.iter().map(|name| {
            let source = Arc::clone(source);
            let name = (*name).to_owned();
            tokio::spawn(async move { source.get_parameter(&request(&name), true).await })
        });
        join_all(reads)
            .await
            .into_iter()
            .map(|joined| joined.unwrap())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_misses_make_one_batch_call_and_each_gets_its_own_answer() {
        let (recording, source) = coalescing();
        let names: Vec<String> = (0..10).map(|i| format!("/p{i}")).collect();
        let mut asked: Vec<&str> = names.iter().map(String::as_str).collect();
        asked.push("/missing");
        let answers = read_all(&source, &asked).await;
        for (name, answer) in asked.iter().zip(&answers) {
            match answer {
                Ok(p) => assert_eq!(&*p.name, *name),
                Err(err) => {
                    assert_eq!(*name, "/missing");
                    assert_eq!(err.code, "ParameterNotFound");
                }
            }
        }
        // Eleven names: ten in one call, the eleventh alone.
        let calls = recording.calls();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert!(calls[0].starts_with("GetParameters /p0,/p1"), "{calls:?}");
        assert_eq!(calls[1], "GetParameter /missing");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_miss_uses_the_single_call() {
        let (recording, source) = coalescing();
        assert!(read_all(&source, &["/alone"]).await[0].is_ok());
        assert_eq!(recording.calls(), ["GetParameter /alone"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_read_and_singles_of_the_same_names_share_one_call() {
        let (recording, source) = coalescing();
        let names: Vec<String> = (0..5).map(|i| format!("/p{i}")).collect();
        let batch = {
            let (source, names) = (Arc::clone(&source), names.clone());
            tokio::spawn(async move { source.get_parameters(&names, true).await })
        };
        tokio::task::yield_now().await;
        let singles = read_all(&source, &["/p1", "/p3"]).await;
        assert!(singles.iter().all(Result::is_ok));
        assert_eq!(batch.await.unwrap().unwrap().found.len(), 5);
        assert_eq!(recording.calls().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_batch_call_is_every_waiters_failure() {
        let (recording, source) = coalescing();
        recording.fail_with(Some(SourceError::new(
            FailureKind::Timeout,
            "Timeout",
            "SSM did not answer",
        )));
        let answers = read_all(&source, &["/a", "/b", "/c"]).await;
        for answer in answers {
            assert_eq!(answer.unwrap_err().code, "Timeout");
        }
        assert_eq!(recording.calls().len(), 1, "one call answered every waiter");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_batch_call_falls_back_to_single_calls() {
        let (recording, source) = coalescing();
        recording.fail_with(Some(SourceError::new(
            FailureKind::Denied,
            "AccessDeniedException",
            "not allowed: ssm:GetParameters",
        )));
        let answers = read_all(&source, &["/a", "/b"]).await;
        // The fake refuses everything, so each single read is refused too; what matters
        // is that each was asked on its own after the batch was refused.
        assert!(answers
            .iter()
            .all(|a| a.as_ref().unwrap_err().kind == FailureKind::Denied));
        let calls = recording.calls();
        assert_eq!(calls.len(), 3, "{calls:?}");
        assert!(calls[0].starts_with("GetParameters"));
    }
}
