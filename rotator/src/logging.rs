//! Logging: JSON lines on stderr, filtered by `RUST_LOG`, with caps on the libraries that
//! log requests and responses that no `RUST_LOG` directive can lift.
//!
//! The caps are a second filter applied after the user's: an event passes only if both
//! let it through. Adding the caps as directives of the same `EnvFilter` would not do:
//! there the most specific directive wins, so
//! `RUST_LOG=aws_smithy_runtime::client::orchestrator=trace` outranks
//! `aws_smithy_runtime=info` and prints every request's tracing.

use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
use tracing_subscriber::layer::{Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Libraries that can log request or response bodies, credentials or connection details
/// at debug or trace level, and the most they may log. Each cap covers the crate's
/// modules too (`aws_smithy_runtime::client::orchestrator`).
pub const WIRE_LEVEL_CAPS: &[(&str, LevelFilter)] = &[
    ("hyper", LevelFilter::INFO),
    ("hyper_util", LevelFilter::INFO),
    ("h2", LevelFilter::INFO),
    ("rustls", LevelFilter::INFO),
    ("reqwest", LevelFilter::INFO),
    // Logs the canonical request at trace, and the body too when LOG_SIGNABLE_BODY is set.
    ("aws_sigv4", LevelFilter::INFO),
    ("aws_smithy_runtime", LevelFilter::INFO),
    ("aws_smithy_runtime_api", LevelFilter::INFO),
    ("aws_smithy_http", LevelFilter::INFO),
    ("aws_smithy_http_client", LevelFilter::INFO),
    ("aws_smithy_types", LevelFilter::INFO),
    ("aws_runtime", LevelFilter::INFO),
    ("aws_sdk_ssm", LevelFilter::INFO),
    ("aws_sdk_secretsmanager", LevelFilter::INFO),
    ("aws_sdk_kms", LevelFilter::INFO),
    ("aws_sdk_lambda", LevelFilter::INFO),
    // STS answers carry the assumed role's credentials.
    ("aws_sdk_sts", LevelFilter::INFO),
    ("aws_config", LevelFilter::INFO),
    ("lambda_runtime", LevelFilter::DEBUG),
    ("lambda_runtime_api_client", LevelFilter::INFO),
];

/// The caps as a filter: every other target passes at any level.
pub fn caps() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets(WIRE_LEVEL_CAPS.iter().copied())
}

/// The filter for `directives` (`RUST_LOG`'s syntax; `info` when empty or invalid) with
/// the caps on top.
pub fn filter<S>(directives: Option<&str>) -> impl Filter<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let user = directives
        .filter(|d| !d.trim().is_empty())
        .and_then(|d| EnvFilter::try_new(d).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    user.and(caps())
}

/// Installs JSON logging on stderr filtered by `RUST_LOG` under the caps.
pub fn init() {
    let directives = std::env::var("RUST_LOG").ok();
    let layer = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_writer(std::io::stderr)
        .with_filter(filter(directives.as_deref()));
    Registry::default().with(layer).init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged_under(directives: &str) -> String {
        let sink = Sink::default();
        let writer = sink.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(move || writer.clone())
            .with_filter(filter(Some(directives)));
        let subscriber = Registry::default().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::trace!(target: "aws_smithy_runtime::client::orchestrator", "wire-trace");
            tracing::debug!(target: "hyper_util::client::legacy::pool", "wire-debug");
            tracing::trace!(target: "aws_sigv4::http_request::sign", "canonical-request");
            tracing::info!(target: "aws_smithy_runtime::client::retries", "sdk-info");
            tracing::debug!(target: "lockbox_rotator::rotate", "own-debug");
        });
        let out = sink.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn no_directive_lifts_a_cap() {
        for directives in [
            "trace",
            "aws_smithy_runtime::client::orchestrator=trace",
            "aws_smithy_runtime=trace,hyper_util::client=trace,aws_sigv4::http_request=trace",
            "info,aws_smithy_runtime::client::orchestrator[invoke]=trace",
        ] {
            let out = logged_under(directives);
            for wire in ["wire-trace", "wire-debug", "canonical-request"] {
                assert!(
                    !out.contains(wire),
                    "{directives}: {wire} got through:\n{out}"
                );
            }
        }
        assert!(
            logged_under("trace").contains("sdk-info"),
            "the caps keep info"
        );
        assert!(logged_under("lockbox_rotator=debug").contains("own-debug"));
        assert!(!logged_under("info").contains("own-debug"));
    }
}
