//! How fast one environment calls one AWS service: every call of a service in a scope
//! (role and region) goes through that service's [`Pace`], whichever read made it (single,
//! batch, path, prefetch, refresh).
//!
//! An account's quotas are shared by every execution environment of every function in it
//! (Parameter Store: 40 reads a second by default), and an environment cannot know how
//! many others there are. What it learns is `ThrottlingException`. So:
//!
//! - **One rate, shared.** Calls take a token from the service's bucket. The rate starts at
//!   [`CEILING`], well above what one environment needs, is cut to a quarter on every
//!   throttle (down to [`FLOOR`]) and grows back by [`INCREASE`] a second per call that
//!   succeeds: additive increase, multiplicative decrease, as TCP and the AWS SDKs' adaptive
//!   mode do.
//! - **Retries with full jitter.** A throttled call is retried after a uniformly random
//!   delay within [`THROTTLE_WINDOW`]: environments throttled together come back spread
//!   over the window instead of together, so the quota's tokens go to calls that succeed.
//!   Server errors and lost connections are retried twice, after a full-jitter exponential
//!   delay from [`RETRY_BASE`].
//! - **Within the read's timeout.** Waiting for a token, a connection slot and retries all
//!   count against the service's timeout (`SSM_PARAMETER_STORE_TIMEOUT_MILLIS`,
//!   `SECRETS_MANAGER_TIMEOUT_MILLIS`). When it runs out while AWS still throttles, the call
//!   fails with `ThrottlingException` and a `Retry-After` hint.
//! - **Bounded connections.** A call holds one of the service's
//!   `PARAMETERS_SECRETS_EXTENSION_MAX_CONNECTIONS` slots while it is on the wire.
//!
//! Why a fixed window rather than one that doubles: a fleet throttled at start-up needs its
//! retries spread over the few seconds the quota takes to serve it. A window that starts
//! small sends most retries into the same second (throttled again), and one that keeps
//! doubling leaves the quota idle at the end while the last environments wait; the bench's
//! fleet section (`docs/fleet.md`) measured both.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::Rng;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::source::{FailureKind, SourceError};

/// Calls a second one environment makes to one service at most, and the rate it starts at:
/// above anything one environment needs (a prefetch of 100 parameters is 10 calls), so that
/// until AWS throttles the pace changes nothing.
pub const CEILING: f64 = 50.0;
/// The lowest rate a run of throttles brings the pace down to.
pub const FLOOR: f64 = 0.25;
/// What a throttle multiplies the rate by.
pub const DECREASE: f64 = 0.25;
/// What each successful call adds to the rate, in calls a second.
pub const INCREASE: f64 = 1.0;
/// What each second adds to the rate, in calls a second: a rate cut by a burst of
/// throttles comes back on its own once AWS stops throttling, even while calls fail for
/// other reasons.
pub const RECOVERY: f64 = 1.0;
/// A throttled call is retried at a uniformly random moment within this window.
pub const THROTTLE_WINDOW: Duration = Duration::from_secs(4);
/// First window of the full-jitter backoff after a server error or a lost connection.
pub const RETRY_BASE: Duration = Duration::from_millis(100);
/// Attempts at most for a call that fails with a server error or a lost connection.
pub const MAX_ATTEMPTS: u32 = 3;

/// One service's rate, connection slots and timeout in one scope. Cheap to clone; clones
/// share everything.
#[derive(Debug, Clone)]
pub struct Pace {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The service, for messages (`SSM`, `Secrets Manager`).
    service: &'static str,
    rate: Mutex<Rate>,
    slots: Semaphore,
    timeout: Duration,
}

/// A token bucket whose rate moves: tokens refill at `per_second` up to a second's worth,
/// and the rate itself grows back by [`RECOVERY`] a second. Tokens may go below zero: a
/// caller takes its token at once and waits until the bucket would have had it, so callers
/// are served in the order they came.
#[derive(Debug)]
struct Rate {
    per_second: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl Rate {
    fn new() -> Self {
        Self {
            per_second: CEILING,
            tokens: CEILING,
            refilled_at: Instant::now(),
        }
    }

    /// Takes a token and says when it may be used; takes none when that would be at or
    /// after `deadline`.
    fn reserve(&mut self, now: Instant, deadline: Instant) -> Option<Instant> {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second.max(1.0));
        self.per_second = (self.per_second + elapsed * RECOVERY).min(CEILING);
        self.refilled_at = now;
        let at = if self.tokens >= 1.0 {
            now
        } else {
            now + Duration::from_secs_f64((1.0 - self.tokens) / self.per_second)
        };
        if at >= deadline {
            return None;
        }
        self.tokens -= 1.0;
        Some(at)
    }

    fn throttled(&mut self) {
        self.per_second = (self.per_second * DECREASE).max(FLOOR);
        // A second's worth at most at the new rate: the old rate's savings are spent.
        self.tokens = self.tokens.min(self.per_second.max(1.0));
    }

    fn succeeded(&mut self) {
        self.per_second = (self.per_second + INCREASE).min(CEILING);
    }
}

fn lock(rate: &Mutex<Rate>) -> MutexGuard<'_, Rate> {
    // Every critical section is a few arithmetic steps that cannot panic halfway.
    rate.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pace {
    /// A pace for `service` with `connections` slots, each call bounded by `timeout`.
    pub fn new(service: &'static str, connections: usize, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                service,
                rate: Mutex::new(Rate::new()),
                slots: Semaphore::new(connections.max(1)),
                timeout,
            }),
        }
    }

    /// The current rate, in calls a second.
    pub fn per_second(&self) -> f64 {
        lock(&self.inner.rate).per_second
    }

    /// Runs `attempt` (one AWS call) at this pace, retrying throttles, server errors and
    /// lost connections, all within the timeout. The error returned is the last attempt's,
    /// or `ThrottlingException` with a retry hint when the timeout ran out while AWS
    /// throttled.
    pub async fn call<T, F, Fut>(&self, mut attempt: F) -> Result<T, SourceError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SourceError>>,
    {
        let deadline = Instant::now() + self.inner.timeout;
        let mut attempts = 0_u32;
        let mut throttled = false;
        loop {
            let reserved = lock(&self.inner.rate).reserve(Instant::now(), deadline);
            let Some(at) = reserved else {
                // The rate is what a throttle left it at: this environment must slow down.
                return Err(self.out_of_time(throttled || self.per_second() < CEILING));
            };
            tokio::time::sleep_until(at).await;
            let Ok(slot) = tokio::time::timeout_at(deadline, self.inner.slots.acquire()).await
            else {
                return Err(self.out_of_time(throttled));
            };
            let result = tokio::time::timeout_at(deadline, attempt()).await;
            drop(slot);
            attempts += 1;
            let err = match result {
                Ok(Ok(value)) => {
                    lock(&self.inner.rate).succeeded();
                    return Ok(value);
                }
                Ok(Err(err)) => err,
                Err(_) => return Err(self.out_of_time(throttled)),
            };
            let delay = match err.kind {
                FailureKind::Throttled => {
                    throttled = true;
                    lock(&self.inner.rate).throttled();
                    jitter(THROTTLE_WINDOW)
                }
                FailureKind::ServerError | FailureKind::Unreachable if attempts < MAX_ATTEMPTS => {
                    jitter(RETRY_BASE * 2_u32.pow(attempts - 1))
                }
                _ => return Err(err),
            };
            if Instant::now() + delay >= deadline {
                return Err(if throttled {
                    self.out_of_time(true)
                } else {
                    err
                });
            }
            tracing::debug!(
                service = self.inner.service,
                code = %err.code,
                delay_ms = delay.as_millis() as u64,
                "retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// The failure of a call whose timeout ran out: AWS throttling it, or not answering.
    fn out_of_time(&self, throttled: bool) -> SourceError {
        let service = self.inner.service;
        if throttled {
            let retry_after = Duration::from_secs_f64(1.0 / self.per_second()).max(MIN_RETRY_AFTER);
            SourceError {
                retry_after: Some(retry_after),
                aws_status: Some(400),
                ..SourceError::new(
                    FailureKind::Throttled,
                    "ThrottlingException",
                    format!(
                        "{service} throttled every attempt within the configured timeout \
                         (Rate exceeded); retry later"
                    ),
                )
            }
        } else {
            SourceError::new(
                FailureKind::Timeout,
                "Timeout",
                format!("{service} did not answer within the configured timeout"),
            )
        }
    }
}

/// The least `Retry-After` worth sending: one second, the header's unit.
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A uniformly random delay in `[0, window)`: "full jitter".
fn jitter(window: Duration) -> Duration {
    window.mul_f64(rand::rng().random_range(0.0..1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn throttle() -> SourceError {
        SourceError::new(
            FailureKind::Throttled,
            "ThrottlingException",
            "Rate exceeded",
        )
    }

    #[test]
    fn the_rate_drops_sharply_on_a_throttle_and_grows_back_gradually() {
        let mut rate = Rate::new();
        rate.throttled();
        assert_eq!(rate.per_second, CEILING * DECREASE);
        for _ in 0..10 {
            rate.throttled();
        }
        assert_eq!(rate.per_second, FLOOR);
        rate.succeeded();
        assert_eq!(rate.per_second, FLOOR + INCREASE);
        for _ in 0..1000 {
            rate.succeeded();
        }
        assert_eq!(rate.per_second, CEILING);
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_spaced_at_the_rate_once_the_bucket_is_empty() {
        let mut rate = Rate::new();
        for _ in 0..10 {
            rate.throttled();
        }
        let now = Instant::now();
        let far = now + Duration::from_secs(60);
        // The bucket holds one token at 0.25 a second: the first call goes at once, the
        // next four seconds later, the one after eight.
        assert_eq!(rate.reserve(now, far), Some(now));
        assert_eq!(rate.reserve(now, far), Some(now + Duration::from_secs(4)));
        assert_eq!(rate.reserve(now, far), Some(now + Duration::from_secs(8)));
        // A token beyond the deadline is not taken.
        let soon = now + Duration::from_secs(10);
        assert_eq!(rate.reserve(now, soon), None);
        assert_eq!(rate.reserve(now, far), Some(now + Duration::from_secs(12)));
        // Once AWS stops throttling, the rate comes back with time alone.
        tokio::time::advance(Duration::from_secs(30)).await;
        rate.reserve(Instant::now(), Instant::now() + Duration::from_secs(60));
        assert!(rate.per_second >= 30.0, "{}", rate.per_second);
    }

    #[tokio::test(start_paused = true)]
    async fn throttled_calls_are_retried_until_they_succeed() {
        let pace = Pace::new("SSM", 3, Duration::from_secs(10));
        let calls = AtomicUsize::new(0);
        let value = pace
            .call(|| async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err(throttle()),
                    _ => Ok("value"),
                }
            })
            .await
            .unwrap();
        assert_eq!(value, "value");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(pace.per_second() < CEILING);
    }

    #[tokio::test(start_paused = true)]
    async fn throttles_past_the_timeout_answer_throttling_with_a_retry_hint() {
        let pace = Pace::new("SSM", 3, Duration::from_secs(10));
        let started = Instant::now();
        let calls = AtomicUsize::new(0);
        let err = pace
            .call(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(throttle())
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Throttled);
        assert_eq!(err.code, "ThrottlingException");
        assert!(err.retry_after.is_some_and(|d| d >= MIN_RETRY_AFTER));
        assert!(started.elapsed() <= Duration::from_secs(10));
        // Retried, but within the window's spacing, not in a tight loop.
        let calls = calls.load(Ordering::SeqCst);
        assert!((2..=10).contains(&calls), "{calls} calls");
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_are_not_retried_and_server_errors_only_twice() {
        let pace = Pace::new("SSM", 3, Duration::from_secs(10));
        let calls = AtomicUsize::new(0);
        let err = pace
            .call(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(SourceError::new(
                    FailureKind::NotFound,
                    "ParameterNotFound",
                    "no",
                ))
            })
            .await
            .unwrap_err();
        assert_eq!(err.code, "ParameterNotFound");
        assert_eq!(calls.swap(0, Ordering::SeqCst), 1);

        let err = pace
            .call(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(SourceError::new(
                    FailureKind::ServerError,
                    "InternalServerError",
                    "x",
                ))
            })
            .await
            .unwrap_err();
        assert_eq!(err.code, "InternalServerError");
        assert_eq!(calls.load(Ordering::SeqCst), MAX_ATTEMPTS as usize);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_never_answers_times_out_once() {
        let pace = Pace::new("SSM", 3, Duration::from_millis(500));
        let calls = AtomicUsize::new(0);
        let err = pace
            .call(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<Result<(), SourceError>>().await
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Timeout);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
