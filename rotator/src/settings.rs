//! The parameter rotation's settings from the function's environment: how long a lease
//! lasts and how much of the Lambda deadline is kept back.
//!
//! Read as raw strings, then validated; a bad value is an error naming the variable, the
//! value and the allowed range.

use std::time::Duration;

use crate::secrets::ConfigError;

/// Seconds a rotation's lease on a parameter lasts.
pub const ENV_LEASE_SECONDS: &str = "LOCKBOX_LEASE_SECONDS";
/// Milliseconds before the Lambda deadline after which no parameter is started.
pub const ENV_RESERVE_MS: &str = "LOCKBOX_DEADLINE_RESERVE_MS";

/// Default lease: far longer than one parameter takes (five calls, each given at most
/// 10 s per attempt), short enough that a crashed run blocks others only briefly.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(300);
/// Default reserve: one slow parameter (a throttled write backs off up to 10 s per
/// attempt), the hand-over to the next invocation and the response.
pub const DEFAULT_RESERVE: Duration = Duration::from_secs(60);

const LEASE_RANGE: std::ops::RangeInclusive<u64> = 1..=3600;
const RESERVE_RANGE: std::ops::RangeInclusive<u64> = 0..=600_000;

/// Validated settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How long a lease lasts.
    pub lease: Duration,
    /// Time kept back before the deadline.
    pub reserve: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            lease: DEFAULT_LEASE,
            reserve: DEFAULT_RESERVE,
        }
    }
}

impl Settings {
    /// Reads the settings through `get` (the process environment in `main`).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let number = |var: &'static str, range: std::ops::RangeInclusive<u64>| {
            let Some(raw) = get(var).filter(|v| !v.trim().is_empty()) else {
                return Ok(None);
            };
            match raw.trim().parse::<u64>() {
                Ok(n) if range.contains(&n) => Ok(Some(n)),
                _ => Err(ConfigError {
                    var,
                    problem: format!(
                        "{raw:?} is not a whole number in {}..={}",
                        range.start(),
                        range.end()
                    ),
                }),
            }
        };
        Ok(Self {
            lease: number(ENV_LEASE_SECONDS, LEASE_RANGE)?
                .map_or(DEFAULT_LEASE, Duration::from_secs),
            reserve: number(ENV_RESERVE_MS, RESERVE_RANGE)?
                .map_or(DEFAULT_RESERVE, Duration::from_millis),
        })
    }

    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|var| std::env::var(var).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_and_bad_values_name_the_variable() {
        assert_eq!(
            Settings::from_lookup(|_| None).unwrap(),
            Settings::default()
        );
        let s = Settings::from_lookup(|v| match v {
            ENV_LEASE_SECONDS => Some("2".into()),
            ENV_RESERVE_MS => Some("1500".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(s.lease, Duration::from_secs(2));
        assert_eq!(s.reserve, Duration::from_millis(1500));
        for (var, bad) in [(ENV_LEASE_SECONDS, "0"), (ENV_RESERVE_MS, "soon")] {
            let err = Settings::from_lookup(|v| (v == var).then(|| bad.to_owned())).unwrap_err();
            assert_eq!(err.var, var);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }
}
