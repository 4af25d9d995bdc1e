//! What the cache saves, in numbers: counters bumped on the request path, read two ways.
//!
//! - [`counters`]: lock-free counters (cache hits, misses, stale answers, AWS calls by
//!   operation, errors, throttles, refreshes, prefetch) and [`latency`] recorders for AWS
//!   calls and prefetch rounds. They only ever grow.
//! - [`Interval`] turns them into one interval's [`Metric`]s: the difference since the
//!   last interval, with the cache's size at the end of it.
//! - [`emf`] writes those as one CloudWatch Embedded Metric Format line
//!   (`LOCKBOX_METRICS=emf`); [`Reporter`] is what the lifecycle calls, once per INVOKE
//!   and at SHUTDOWN, or on a timer where there are no INVOKE events.
//! - [`Metrics::stats`] is the same counters as totals since start, for the stats route.
//!
//! Nothing here knows a parameter's or a secret's name: metric names are fixed, and the
//! one dimension is the function's name.
//!
//! This module imports nothing else of lockbox's, so every layer can count into it.

pub mod counters;
pub mod emf;
pub mod latency;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

pub use counters::{AwsOperation, CallEnd, Counters, Totals};
pub use emf::{EmfWriter, Metric, MetricValue, Namespace, Unit};
pub use latency::LatencyTotals;

/// The namespace when neither namespace variable is set.
pub const DEFAULT_NAMESPACE: &str = "lockbox";
/// How often a line is written where Lambda sends no INVOKE events (Managed Instances):
/// CloudWatch's standard resolution, so each line is one data point.
pub const TIMER_INTERVAL: Duration = Duration::from_secs(60);

/// The shared counters (cheap to clone: one `Arc`).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    counters: Arc<Counters>,
}

impl Metrics {
    /// Fresh counters, all zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters, to count into.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The totals since start, for the stats route.
    pub fn stats(&self) -> Stats {
        Stats {
            totals: self.counters.totals(),
            aws_latency: self.counters.aws_latency.totals(),
            prefetch_duration: self.counters.prefetch_duration.totals(),
        }
    }
}

/// The counters since start, as the stats route shows them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Stats {
    /// Every counter.
    #[serde(flatten)]
    pub totals: Totals,
    /// AWS calls' time.
    pub aws_latency: LatencyTotals,
    /// Prefetch rounds' time.
    pub prefetch_duration: LatencyTotals,
}

/// How big the cache is at the end of an interval; the cache's to say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheGauges {
    /// Entries held.
    pub entries: u64,
    /// Bytes of values held.
    pub bytes: u64,
}

/// The interval since the last [`Interval::take`]: one caller takes intervals (the
/// reporter); the stats route reads totals and leaves intervals alone.
#[derive(Debug, Default)]
pub struct Interval {
    last: Totals,
}

impl Interval {
    /// An interval that starts with the counters at zero (at process start).
    pub fn new() -> Self {
        Self::default()
    }

    /// The metrics of the interval that ends now, and a new interval from now.
    pub fn take(&mut self, metrics: &Metrics, gauges: CacheGauges) -> Vec<Metric> {
        let counters = metrics.counters();
        let now = counters.totals();
        let delta = now.since(&self.last);
        self.last = now;
        let count = |name, n| Metric {
            name,
            unit: Unit::Count,
            value: MetricValue::Number(n),
        };
        let mut out = vec![
            count("CacheHits", delta.cache_hits),
            count("CacheMisses", delta.cache_misses),
            count("StaleServed", delta.stale_served),
            count("AwsCalls", delta.aws_calls_total()),
        ];
        // An operation's metric only in intervals that called it: each metric name is a
        // custom metric CloudWatch bills by the hour it receives data.
        out.extend(
            AwsOperation::ALL
                .into_iter()
                .filter(|op| delta.aws_calls_of(*op) > 0)
                .map(|op| count(op.metric_name(), delta.aws_calls_of(op))),
        );
        out.extend([
            count("AwsErrors", delta.aws_errors),
            count("AwsThrottles", delta.aws_throttles),
            Metric {
                name: "AwsLatency",
                unit: Unit::Milliseconds,
                value: MetricValue::List(counters.aws_latency.take_interval().values_ms),
            },
            count("ReadsCoalesced", delta.reads_coalesced),
            count("Refreshes", delta.refreshes),
            Metric {
                name: "PrefetchDuration",
                unit: Unit::Milliseconds,
                value: MetricValue::List(counters.prefetch_duration.take_interval().values_ms),
            },
            count("PrefetchValuesLoaded", delta.prefetch_values_loaded),
            count("CacheEntries", gauges.entries),
            Metric {
                name: "CacheBytes",
                unit: Unit::Bytes,
                value: MetricValue::Number(gauges.bytes),
            },
            count("AwsCallsAvoided", delta.aws_calls_avoided),
        ]);
        out
    }
}

/// Calls `write` every `period`, the first time one period from now, until the task running
/// it is aborted. A tick missed (a slow write) is not made up for: one line per period.
pub async fn every(period: Duration, mut write: impl FnMut()) {
    let start = tokio::time::Instant::now() + period;
    let mut ticks = tokio::time::interval_at(start, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        write();
    }
}

/// Writes one EMF line per interval.
#[derive(Debug)]
pub struct Reporter {
    metrics: Metrics,
    interval: Interval,
    writer: EmfWriter,
}

impl Reporter {
    /// A reporter for `function_name`'s counters, from process start.
    pub fn new(metrics: Metrics, namespace: Namespace, function_name: &str) -> Self {
        Self {
            metrics,
            interval: Interval::new(),
            writer: EmfWriter::new(namespace, function_name),
        }
    }

    /// Writes the line for the interval that ends now to `out`.
    pub fn report(&mut self, gauges: CacheGauges, out: &mut impl Write) -> std::io::Result<()> {
        let metrics = self.interval.take(&self.metrics, gauges);
        self.writer.write(out, &metrics)
    }
}

/// `LOCKBOX_METRICS`: whether metrics are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsMode {
    /// No metrics written (the default: nobody pays for log lines they did not ask for).
    Off,
    /// EMF lines on stdout.
    Emf,
}

/// When lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    /// At each INVOKE (covering the time since the last line) and at SHUTDOWN.
    PerInvoke,
    /// On a timer, where Lambda sends no INVOKE events (Managed Instances), and at
    /// SHUTDOWN.
    Every(Duration),
}

/// The metrics settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Whether lines are written.
    pub mode: MetricsMode,
    /// The CloudWatch namespace.
    pub namespace: Namespace,
    /// When lines are written.
    pub cadence: Cadence,
}

/// The variables [`MetricsSettings::parse`] reads.
pub const VARIABLES: [&str; 3] = [
    "LOCKBOX_METRICS",
    "LOCKBOX_METRICS_NAMESPACE",
    "POWERTOOLS_METRICS_NAMESPACE",
];

/// A metrics variable that cannot be used: the configuration turns it into its error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    /// The variable's name.
    pub name: &'static str,
    /// Its value.
    pub value: String,
    /// What would have been accepted.
    pub allowed: &'static str,
}

impl MetricsSettings {
    /// Reads `LOCKBOX_METRICS` and the namespace through `get` (the configuration's
    /// variables, unset and empty alike as `None`); `initialization_type` is
    /// `AWS_LAMBDA_INITIALIZATION_TYPE`. The namespace is checked only when metrics are on:
    /// a Powertools namespace that lockbox would not use must not stop it.
    pub fn parse<'a>(
        get: impl Fn(&'static str) -> Option<&'a str>,
        initialization_type: Option<&str>,
    ) -> Result<Self, SettingError> {
        let [mode_var, own_ns, powertools_ns] = VARIABLES;
        let mode = match get(mode_var) {
            None => MetricsMode::Off,
            Some(v) if v.eq_ignore_ascii_case("off") => MetricsMode::Off,
            Some(v) if v.eq_ignore_ascii_case("emf") => MetricsMode::Emf,
            Some(v) => {
                return Err(SettingError {
                    name: mode_var,
                    value: v.to_owned(),
                    allowed: "emf or off",
                })
            }
        };
        let (name, value) = match (get(own_ns), get(powertools_ns)) {
            (Some(v), _) => (own_ns, v),
            (None, Some(v)) => (powertools_ns, v),
            (None, None) => (own_ns, DEFAULT_NAMESPACE),
        };
        let namespace = match (Namespace::parse(value), mode) {
            (Some(namespace), _) => namespace,
            (None, MetricsMode::Off) => Namespace::parse(DEFAULT_NAMESPACE)
                .unwrap_or_else(|| unreachable!("the default namespace is valid")),
            (None, MetricsMode::Emf) => {
                return Err(SettingError {
                    name,
                    value: value.to_owned(),
                    allowed: emf::NAMESPACE_RULE,
                })
            }
        };
        let managed =
            initialization_type.is_some_and(|t| t.eq_ignore_ascii_case("lambda-managed-instances"));
        Ok(Self {
            mode,
            namespace,
            cadence: if managed {
                Cadence::Every(TIMER_INTERVAL)
            } else {
                Cadence::PerInvoke
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::SystemTime;

    fn parse(pairs: &[(&'static str, &'static str)]) -> Result<MetricsSettings, SettingError> {
        let vars: HashMap<&str, &str> = pairs.iter().copied().collect();
        MetricsSettings::parse(|name| vars.get(name).copied(), None)
    }

    #[test]
    fn off_unless_asked_and_the_namespace_falls_back_to_powertools_then_lockbox() {
        let settings = parse(&[]).unwrap();
        assert_eq!(settings.mode, MetricsMode::Off);
        assert_eq!(settings.namespace.as_str(), "lockbox");
        assert_eq!(settings.cadence, Cadence::PerInvoke);
        let emf = parse(&[("LOCKBOX_METRICS", "EMF")]).unwrap();
        assert_eq!(emf.mode, MetricsMode::Emf);
        let powertools = parse(&[
            ("LOCKBOX_METRICS", "emf"),
            ("POWERTOOLS_METRICS_NAMESPACE", "Orders"),
        ])
        .unwrap();
        assert_eq!(powertools.namespace.as_str(), "Orders");
        let own = parse(&[
            ("LOCKBOX_METRICS", "emf"),
            ("LOCKBOX_METRICS_NAMESPACE", "Secrets"),
            ("POWERTOOLS_METRICS_NAMESPACE", "Orders"),
        ])
        .unwrap();
        assert_eq!(own.namespace.as_str(), "Secrets");
    }

    #[test]
    fn bad_values_name_their_variable() {
        let err = parse(&[("LOCKBOX_METRICS", "prometheus")]).unwrap_err();
        assert_eq!(err.name, "LOCKBOX_METRICS");
        assert_eq!(err.value, "prometheus");
        let err = parse(&[
            ("LOCKBOX_METRICS", "emf"),
            ("POWERTOOLS_METRICS_NAMESPACE", "AWS/Lambda"),
        ])
        .unwrap_err();
        assert_eq!(err.name, "POWERTOOLS_METRICS_NAMESPACE");
        // Metrics off: a namespace lockbox will not use is not lockbox's problem.
        assert!(parse(&[("POWERTOOLS_METRICS_NAMESPACE", "AWS/Lambda")]).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_writes_once_per_period_and_not_at_once() {
        let lines = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let task = tokio::spawn(every(TIMER_INTERVAL, {
            let lines = lines.clone();
            move || {
                lines.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }));
        let count = || lines.load(std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert_eq!(count(), 0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(count(), 1);
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(count(), 3);
        task.abort();
    }

    #[test]
    fn managed_instances_write_on_a_timer() {
        let settings = MetricsSettings::parse(|_| None, Some("lambda-managed-instances")).unwrap();
        assert_eq!(settings.cadence, Cadence::Every(TIMER_INTERVAL));
    }

    fn number(metrics: &[Metric], name: &str) -> Option<u64> {
        metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| match m.value {
                MetricValue::Number(n) => n,
                MetricValue::List(ref values) => values.len() as u64,
            })
    }

    #[test]
    fn an_interval_holds_what_happened_since_the_last_and_the_stats_hold_everything() {
        let metrics = Metrics::new();
        let mut interval = Interval::new();
        let c = metrics.counters();
        c.cache_miss();
        c.aws_call(
            AwsOperation::GetParameter,
            Duration::from_millis(12),
            CallEnd::Ok,
        );
        c.cache_hit();
        c.aws_call_avoided();
        c.prefetched(Duration::from_millis(150), 4);
        let first = interval.take(
            &metrics,
            CacheGauges {
                entries: 5,
                bytes: 300,
            },
        );
        assert_eq!(number(&first, "CacheMisses"), Some(1));
        assert_eq!(number(&first, "CacheHits"), Some(1));
        assert_eq!(number(&first, "AwsCalls"), Some(1));
        assert_eq!(number(&first, "AwsCallsGetParameter"), Some(1));
        assert_eq!(number(&first, "AwsCallsGetSecretValue"), None);
        assert_eq!(number(&first, "AwsLatency"), Some(1));
        assert_eq!(number(&first, "PrefetchDuration"), Some(1));
        assert_eq!(number(&first, "PrefetchValuesLoaded"), Some(4));
        assert_eq!(number(&first, "CacheEntries"), Some(5));
        assert_eq!(number(&first, "CacheBytes"), Some(300));
        assert_eq!(number(&first, "AwsCallsAvoided"), Some(1));

        c.aws_call(
            AwsOperation::GetSecretValue,
            Duration::from_millis(3),
            CallEnd::Throttled,
        );
        c.stale_served();
        let second = interval.take(&metrics, CacheGauges::default());
        assert_eq!(number(&second, "CacheHits"), Some(0));
        assert_eq!(number(&second, "AwsCallsGetParameter"), None);
        assert_eq!(number(&second, "AwsCallsGetSecretValue"), Some(1));
        assert_eq!(number(&second, "AwsThrottles"), Some(1));
        assert_eq!(number(&second, "AwsErrors"), Some(1));
        assert_eq!(number(&second, "StaleServed"), Some(1));
        assert_eq!(number(&second, "PrefetchDuration"), Some(0));

        let stats = metrics.stats();
        assert_eq!(stats.totals.aws_calls_total(), 2);
        assert_eq!(stats.totals.cache_hits, 1);
        assert_eq!(stats.aws_latency.count, 2);
        assert_eq!(stats.prefetch_duration.count, 1);
        let json = serde_json::to_value(stats).unwrap();
        assert_eq!(json["aws_calls"]["GetSecretValue"], 1);
        assert_eq!(json["cache_hits"], 1);
    }

    #[test]
    fn every_line_a_reporter_writes_is_valid_emf_and_names_nothing_read() {
        let metrics = Metrics::new();
        let mut reporter = Reporter::new(
            metrics.clone(),
            Namespace::parse("lockbox").unwrap(),
            "orders-api",
        );
        let mut out = Vec::new();
        reporter.report(CacheGauges::default(), &mut out).unwrap();
        for op in AwsOperation::ALL {
            for i in 0..150 {
                metrics.counters().aws_call(
                    op,
                    Duration::from_micros(i * 37),
                    if i % 7 == 0 {
                        CallEnd::Throttled
                    } else {
                        CallEnd::Ok
                    },
                );
            }
        }
        reporter
            .report(
                CacheGauges {
                    entries: 3,
                    bytes: 99,
                },
                &mut out,
            )
            .unwrap();
        reporter.report(CacheGauges::default(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(text.ends_with('\n'));
        for line in &lines {
            emf::tests::validate_emf(line, SystemTime::now()).unwrap();
        }
        let busy: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(busy["AwsCalls"], 150 * AwsOperation::ALL.len() as u64);
        assert_eq!(busy["AwsLatency"].as_array().unwrap().len(), 100);
        assert_eq!(busy["AwsThrottles"], 22 * AwsOperation::ALL.len() as u64);
    }
}
