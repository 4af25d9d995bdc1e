//! The exec wrapper's own settings, validated as the extension's are (raw, then typed, an
//! error naming the variable). It reads the extension's port and token to reach it, and
//! `LOCKBOX_RENDER` to wait for its files.

use std::time::Duration;

use crate::config::{invalid, ConfigError, RawConfig, DEFAULT_PORT};
use crate::features::render::RenderPlan;
use crate::http::AuthToken;

/// How long the exec wrapper waits for the extension (and rendered files) by default.
pub const DEFAULT_EXEC_WAIT: Duration = Duration::from_millis(5000);
/// Upper bound of `LOCKBOX_EXEC_WAIT_MS`: Lambda's Init limit is 10 s.
pub const MAX_EXEC_WAIT_MS: u64 = 9_500;

/// What the exec wrapper does with a variable whose references cannot be resolved
/// (`LOCKBOX_EXEC_ON_ERROR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Stop: the runtime is not started and Init fails, naming the variable (the default).
    Fail,
    /// Leave the variable as it was, log the problem and start the runtime.
    Keep,
}

/// The exec wrapper's validated settings.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// The extension's loopback port.
    pub port: u16,
    /// The request token; only needed when there is something to resolve.
    pub token: Option<AuthToken>,
    /// How long to wait for the extension to answer `/ping` (and for rendered files).
    pub wait: Duration,
    /// What to do with an unresolvable reference.
    pub on_error: OnError,
    /// The files the extension renders, to wait for. Read leniently: a bad
    /// `LOCKBOX_RENDER` is the extension's to report, and leaves nothing to wait for here.
    pub render: RenderPlan,
}

impl ExecConfig {
    /// Validates the exec wrapper's variables. The first bad one is reported.
    pub fn from_raw(raw: &RawConfig) -> Result<Self, ConfigError> {
        const ON_ERROR: &str = "LOCKBOX_EXEC_ON_ERROR";
        let on_error = match raw.get(ON_ERROR) {
            None => OnError::Fail,
            Some(v) if v.eq_ignore_ascii_case("fail") => OnError::Fail,
            Some(v) if v.eq_ignore_ascii_case("keep") => OnError::Keep,
            Some(v) => return Err(invalid(ON_ERROR, v, "fail or keep")),
        };
        Ok(ExecConfig {
            port: raw.number(
                "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT",
                u64::from(DEFAULT_PORT),
                1..=65535,
                "a port number from 1 to 65535",
            )? as u16,
            token: raw.token().ok(),
            wait: Duration::from_millis(raw.number(
                "LOCKBOX_EXEC_WAIT_MS",
                DEFAULT_EXEC_WAIT.as_millis() as u64,
                0..=MAX_EXEC_WAIT_MS,
                "a whole number of milliseconds from 0 to 9500 (Lambda's Init limit is 10 s)",
            )?),
            on_error,
            render: raw.render().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> RawConfig {
        let mut all = vec![("AWS_SESSION_TOKEN", "tok")];
        all.extend_from_slice(pairs);
        RawConfig::from_pairs(all.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())))
    }

    #[test]
    fn exec_settings_have_defaults_and_named_errors() {
        let none: [(&str, &str); 0] = [];
        let exec = ExecConfig::from_raw(&RawConfig::from_pairs(none)).unwrap();
        assert_eq!(exec.port, DEFAULT_PORT);
        assert_eq!(exec.wait, DEFAULT_EXEC_WAIT);
        assert_eq!(exec.on_error, OnError::Fail);
        assert!(exec.token.is_none());
        let exec = raw(&[
            ("LOCKBOX_EXEC_WAIT_MS", "250"),
            ("LOCKBOX_EXEC_ON_ERROR", "KEEP"),
            ("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", "3000"),
            // The extension reports a bad LOCKBOX_RENDER; the wrapper only waits for less.
            ("LOCKBOX_RENDER", "nonsense"),
        ]);
        let exec = ExecConfig::from_raw(&exec).unwrap();
        assert_eq!(exec.wait, Duration::from_millis(250));
        assert_eq!(exec.on_error, OnError::Keep);
        assert_eq!(exec.port, 3000);
        assert_eq!(exec.token, Some(AuthToken::new("tok")));
        assert!(exec.render.is_empty());
        for (name, value) in [
            ("LOCKBOX_EXEC_WAIT_MS", "10000"),
            ("LOCKBOX_EXEC_WAIT_MS", "soon"),
            ("LOCKBOX_EXEC_ON_ERROR", "ignore"),
            ("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", "0"),
        ] {
            let message = ExecConfig::from_raw(&raw(&[(name, value)]))
                .unwrap_err()
                .to_string();
            assert!(
                message.contains(name) && message.contains(value),
                "{message}"
            );
        }
    }
}
