//! Pacing and retries for writes.
//!
//! `PutParameter` throughput is low and shared by the whole account and region, so the
//! rotator spaces its mutating calls ([`Pacer`], `pace.writesPerSecond`) and retries
//! `TooManyUpdates` and throttling with exponential backoff and full jitter ([`Backoff`],
//! [`retry`]). Other errors are classified ([`Class`]) so callers can tell a transient
//! failure (whose outcome may be unknown) from a permanent one.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_ssm::config::http::HttpResponse;
use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};
use lockbox_aws::ErrorClass;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Default mutating calls per second: well under PutParameter's single-digit quota.
pub const DEFAULT_WRITES_PER_SECOND: f64 = 3.0;
/// Default attempts per call for `TooManyUpdates` and throttling.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;
/// Default first backoff (doubles each attempt, jittered).
pub const DEFAULT_BASE_DELAY_MS: u64 = 200;
/// Upper bound on one backoff sleep.
pub const MAX_DELAY: Duration = Duration::from_secs(10);

/// Pacing settings as written in the input (`"pace"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PaceSpec {
    /// Mutating calls per second (PutParameter, LabelParameterVersion, ...),
    /// `0 < x <= 1000`. Real accounts want single digits; the range's top is for local
    /// emulators and for accounts with a raised quota.
    #[serde(default = "default_wps")]
    pub writes_per_second: f64,
    /// Attempts per call when throttled or `TooManyUpdates`, `1..=20`.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// First backoff in milliseconds, `1..=10000`.
    #[serde(default = "default_base_delay")]
    pub base_delay_ms: u64,
}

fn default_wps() -> f64 {
    DEFAULT_WRITES_PER_SECOND
}
fn default_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}
fn default_base_delay() -> u64 {
    DEFAULT_BASE_DELAY_MS
}

impl Default for PaceSpec {
    fn default() -> Self {
        Self {
            writes_per_second: DEFAULT_WRITES_PER_SECOND,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            base_delay_ms: DEFAULT_BASE_DELAY_MS,
        }
    }
}

impl PaceSpec {
    /// Checks the ranges; the message names the field and the allowed range.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.writes_per_second > 0.0 && self.writes_per_second <= 1000.0) {
            return Err(format!(
                "pace.writesPerSecond {} is out of range (0 < x <= 1000)",
                self.writes_per_second
            ));
        }
        if !(1..=20).contains(&self.max_attempts) {
            return Err(format!(
                "pace.maxAttempts {} is out of range (1..=20)",
                self.max_attempts
            ));
        }
        if !(1..=10_000).contains(&self.base_delay_ms) {
            return Err(format!(
                "pace.baseDelayMs {} is out of range (1..=10000)",
                self.base_delay_ms
            ));
        }
        Ok(())
    }

    /// The pacer these settings describe.
    pub fn pacer(&self) -> Pacer {
        Pacer::new(self.writes_per_second)
    }

    /// The backoff these settings describe.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            base: Duration::from_millis(self.base_delay_ms),
            cap: MAX_DELAY,
            max_attempts: self.max_attempts,
        }
    }
}

/// Spaces calls at least `1 / rate` apart, across all parameters of a run.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    /// A pacer allowing `per_second` calls per second.
    pub fn new(per_second: f64) -> Self {
        Self {
            interval: Duration::from_secs_f64(1.0 / per_second),
            next: Mutex::new(None),
        }
    }

    /// Waits for this call's slot.
    pub async fn ready(&self) {
        let now = Instant::now();
        let slot = {
            // The lock only books a slot; the sleep happens after it is released.
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let slot = next.map_or(now, |n| n.max(now));
            *next = Some(slot + self.interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// Exponential backoff with full jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay's upper bound.
    pub base: Duration,
    /// No delay exceeds this.
    pub cap: Duration,
    /// Total attempts, the first included.
    pub max_attempts: u32,
}

impl Backoff {
    /// Delay before retry number `retry` (0 for the first retry): uniform in
    /// `[0, min(cap, base * 2^retry)]`, so many callers throttled together spread out.
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX))
            .min(self.cap);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }
}

/// What kind of failure an AWS error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Rate exceeded: the call was not performed; retry after a pause.
    Throttled,
    /// SSM `TooManyUpdates`: concurrent changes to the parameter; not performed; retry.
    TooManyUpdates,
    /// Server error, timeout or broken connection: the call may or may not have taken
    /// effect.
    Transient,
    /// Anything else (not found, access denied, validation): retrying will not help.
    Permanent,
}

impl Class {
    /// Whether [`retry`] retries this class: only those where the call surely did not
    /// take effect, so a retry can never duplicate a write.
    pub fn is_retried(self) -> bool {
        matches!(self, Self::Throttled | Self::TooManyUpdates)
    }
}

/// Classifies an AWS error code (and HTTP status when known) by `lockbox_aws`'s rules,
/// the extension's, with SSM's `TooManyUpdates` told apart: it is retried like
/// throttling but is about one parameter, not the account's rate.
pub fn classify_code(code: Option<&str>, status: Option<u16>) -> Class {
    if code == Some("TooManyUpdates") {
        return Class::TooManyUpdates;
    }
    match lockbox_aws::classify(code, status) {
        ErrorClass::Throttled => Class::Throttled,
        ErrorClass::Transient => Class::Transient,
        ErrorClass::Permanent => Class::Permanent,
    }
}

/// Classifies an SDK error from any of the AWS clients (they share `SdkError`).
pub fn classify<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Class {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Class::Transient
        }
        SdkError::ServiceError(se) => classify_code(err.code(), Some(se.raw().status().as_u16())),
        _ => Class::Permanent,
    }
}

/// An error that can say which [`Class`] it is.
pub trait Classified {
    /// This error's class.
    fn class(&self) -> Class;
}

/// Runs `op` paced, retrying throttling and `TooManyUpdates` with backoff.
pub async fn retry<T, E, F, Fut>(pacer: &Pacer, backoff: &Backoff, mut op: F) -> Result<T, E>
where
    E: Classified,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        pacer.ready().await;
        match op().await {
            Err(e) if e.class().is_retried() && attempt < backoff.max_attempts => {
                tokio::time::sleep(backoff.delay(attempt - 1)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug)]
    struct E(Class);
    impl Classified for E {
        fn class(&self) -> Class {
            self.0
        }
    }

    #[test]
    fn codes_are_classified() {
        assert_eq!(
            classify_code(Some("TooManyUpdates"), Some(400)),
            Class::TooManyUpdates
        );
        assert_eq!(
            classify_code(Some("ThrottlingException"), Some(400)),
            Class::Throttled
        );
        assert_eq!(classify_code(None, Some(429)), Class::Throttled);
        // The extension's rules: a 429 whatever its code, and any code with "Throttl".
        assert_eq!(
            classify_code(Some("LimitExceededException"), Some(429)),
            Class::Throttled
        );
        assert_eq!(
            classify_code(Some("ServiceThrottledException"), Some(400)),
            Class::Throttled
        );
        assert_eq!(
            classify_code(Some("InternalServerError"), Some(500)),
            Class::Transient
        );
        assert_eq!(classify_code(Some("Whatever"), Some(503)), Class::Transient);
        assert_eq!(
            classify_code(Some("ParameterNotFound"), Some(400)),
            Class::Permanent
        );
        assert_eq!(
            classify_code(Some("InvalidKeyId"), Some(400)),
            Class::Permanent
        );
        assert_eq!(
            classify_code(Some("ParameterMaxVersionLimitExceeded"), Some(400)),
            Class::Permanent
        );
        assert!(Class::Throttled.is_retried());
        assert!(Class::TooManyUpdates.is_retried());
        // A 5xx may have been applied: a blind retry of PutParameter could write twice.
        assert!(!Class::Transient.is_retried());
        assert!(!Class::Permanent.is_retried());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            max_attempts: 5,
        };
        for _ in 0..200 {
            assert!(b.delay(0) <= Duration::from_millis(100));
            assert!(b.delay(2) <= Duration::from_millis(400));
            assert!(b.delay(30) <= Duration::from_secs(1));
        }
    }

    #[test]
    fn pace_ranges_are_checked() {
        let ok = PaceSpec::default();
        assert!(ok.validate().is_ok());
        let bad = PaceSpec {
            writes_per_second: 0.0,
            ..ok
        };
        assert!(bad.validate().unwrap_err().contains("writesPerSecond"));
        let bad = PaceSpec {
            max_attempts: 0,
            ..ok
        };
        assert!(bad.validate().unwrap_err().contains("maxAttempts"));
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_spaces_calls() {
        let pacer = Pacer::new(4.0);
        let start = Instant::now();
        for _ in 0..5 {
            pacer.ready().await;
        }
        // Five calls at 4/s: the first at once, the fifth a second later.
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_is_retried_until_it_passes() {
        let pacer = Pacer::new(100.0);
        let backoff = PaceSpec::default().backoff();
        let calls = AtomicU32::new(0);
        let out: Result<u32, E> = retry(&pacer, &backoff, || async {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if n < 3 {
                Err(E(if n % 2 == 0 {
                    Class::TooManyUpdates
                } else {
                    Class::Throttled
                }))
            } else {
                Ok(n)
            }
        })
        .await;
        assert_eq!(out.unwrap(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_max_attempts_and_never_retry_transient() {
        let pacer = Pacer::new(100.0);
        let backoff = Backoff {
            base: Duration::from_millis(10),
            cap: Duration::from_secs(1),
            max_attempts: 3,
        };
        let calls = AtomicU32::new(0);
        let out: Result<(), E> = retry(&pacer, &backoff, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(E(Class::Throttled))
        })
        .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let calls = AtomicU32::new(0);
        let out: Result<(), E> = retry(&pacer, &backoff, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(E(Class::Transient))
        })
        .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
