//! CloudWatch Embedded Metric Format: one JSON object per line that CloudWatch Logs turns
//! into metrics, with no API call and no permission beyond writing logs.
//!
//! What the specification asks of a line, and where this writer makes sure of it:
//!
//! - the line is one JSON object and nothing else ([`EmfWriter::line`] has no newline
//!   inside; [`EmfWriter::write`] adds the one at the end);
//! - `_aws.Timestamp` is milliseconds since the epoch;
//! - a directive names at most [`MAX_METRICS_PER_DIRECTIVE`] metrics (more are split over
//!   several directives);
//! - every dimension key a directive names is a member of the root with a string value;
//! - every metric is a member of the root with a number or a list of at most
//!   [`MAX_VALUES`] numbers (an empty list is left out: it would say nothing);
//! - units are CloudWatch's ([`Unit`] has no other).

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

/// The specification's bound on the metrics of one directive.
pub const MAX_METRICS_PER_DIRECTIVE: usize = 100;
/// The specification's bound on the values of one list.
pub const MAX_VALUES: usize = super::latency::MAX_SAMPLES;
/// The one dimension: which function the numbers are about.
pub const DIMENSION: &str = "FunctionName";

/// The units lockbox's metrics use; each is one of CloudWatch's metric units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Things counted.
    Count,
    /// Durations.
    Milliseconds,
    /// Sizes.
    Bytes,
}

impl Unit {
    /// The name CloudWatch knows the unit by.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Bytes => "Bytes",
        }
    }
}

/// One metric of a line.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// The metric's name: one of lockbox's fixed names, never anything from a request.
    pub name: &'static str,
    /// Its unit.
    pub unit: Unit,
    /// Its value.
    pub value: MetricValue,
}

/// A metric's value in one line.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    /// A count or a size.
    Number(u64),
    /// Several observations (durations), from which CloudWatch computes statistics.
    List(Vec<f64>),
}

/// A CloudWatch namespace, checked against CloudWatch's rules: 1 to 255 characters of
/// letters, digits and `. - _ / # :` and space, not starting with `AWS/` (AWS's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace(String);

/// What CloudWatch accepts as a namespace, as a configuration error says it.
pub const NAMESPACE_RULE: &str = "1 to 255 characters of letters, digits, space and . - _ / # :, \
                                  not starting with AWS/";

impl Namespace {
    /// Checks a namespace; `None` if CloudWatch would refuse it.
    pub fn parse(value: &str) -> Option<Self> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || " .-_/#:".contains(c);
        let ok = (1..=255).contains(&value.len())
            && value.chars().all(allowed)
            && !value.starts_with("AWS/");
        ok.then(|| Self(value.to_owned()))
    }

    /// The namespace as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Writes EMF lines for one function.
#[derive(Debug, Clone)]
pub struct EmfWriter {
    namespace: Namespace,
    function_name: String,
}

impl EmfWriter {
    /// A writer for `function_name`'s metrics in `namespace`.
    pub fn new(namespace: Namespace, function_name: &str) -> Self {
        // The specification bounds a dimension's value at 1024 characters; Lambda's
        // function names are 64 at most, so this only guards against a broken environment.
        let function_name: String = function_name.chars().take(1024).collect();
        Self {
            namespace,
            function_name,
        }
    }

    /// The line for `metrics` at `at`, without its newline.
    pub fn line(&self, metrics: &[Metric], at: SystemTime) -> String {
        let mut root = Map::new();
        let mut definitions = Vec::with_capacity(metrics.len());
        for metric in metrics {
            let value = match &metric.value {
                MetricValue::Number(n) => json!(n),
                MetricValue::List(values) => {
                    let values: Vec<Value> = values
                        .iter()
                        .take(MAX_VALUES)
                        .filter_map(|v| serde_json::Number::from_f64(*v).map(Value::Number))
                        .collect();
                    if values.is_empty() {
                        continue;
                    }
                    Value::Array(values)
                }
            };
            debug_assert!(
                metric.name != DIMENSION && metric.name != "_aws",
                "a metric cannot take a reserved member's name"
            );
            root.insert(metric.name.to_owned(), value);
            definitions.push(json!({ "Name": metric.name, "Unit": metric.unit.as_str() }));
        }
        let directives: Vec<Value> = definitions
            .chunks(MAX_METRICS_PER_DIRECTIVE)
            .map(|chunk| {
                json!({
                    "Namespace": self.namespace.as_str(),
                    "Dimensions": [[DIMENSION]],
                    "Metrics": chunk,
                })
            })
            .collect();
        let timestamp = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        root.insert(
            "_aws".to_owned(),
            json!({ "Timestamp": timestamp, "CloudWatchMetrics": directives }),
        );
        root.insert(
            DIMENSION.to_owned(),
            Value::String(self.function_name.clone()),
        );
        Value::Object(root).to_string()
    }

    /// Writes the line for `metrics`, now, as one write: log lines written at the same
    /// time by other threads cannot land inside it.
    pub fn write(&self, out: &mut impl Write, metrics: &[Metric]) -> std::io::Result<()> {
        let mut line = self.line(metrics, SystemTime::now());
        line.push('\n');
        out.write_all(line.as_bytes())?;
        out.flush()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Duration;

    /// CloudWatch's metric units (the `MetricDatum` reference the EMF specification
    /// points to, and its JSON schema's pattern).
    const UNITS: &[&str] = &[
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    ];

    fn members(object: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), String> {
        match object.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(extra) => Err(format!(
                "{what} has a member the specification does not define: {extra}"
            )),
            None => Ok(()),
        }
    }

    fn string_of<'a>(value: Option<&'a Value>, what: &str, max: usize) -> Result<&'a str, String> {
        let s = value
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{what} must be a string"))?;
        if s.is_empty() || s.chars().count() > max {
            return Err(format!(
                "{what} must have 1 to {max} characters, has {}",
                s.len()
            ));
        }
        Ok(s)
    }

    /// Checks one log line against the Embedded Metric Format specification
    /// (CloudWatch user guide, "Specification: Embedded metric format") and its JSON
    /// schema. `now` bounds the timestamp: CloudWatch takes metrics from two weeks past to
    /// two hours ahead, so a timestamp in seconds (or microseconds) is caught.
    pub(crate) fn validate_emf(line: &str, now: SystemTime) -> Result<(), String> {
        // Root node: a JSON object with nothing before or after it.
        if line.contains('\n') {
            return Err("a line must not contain a newline".into());
        }
        let root: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
        let root = root.as_object().ok_or("the root must be an object")?;
        // Metadata object: Timestamp and CloudWatchMetrics, nothing else.
        let aws = root
            .get("_aws")
            .and_then(Value::as_object)
            .ok_or("_aws must be an object")?;
        members(aws, &["Timestamp", "CloudWatchMetrics"], "_aws")?;
        let timestamp = aws
            .get("Timestamp")
            .and_then(Value::as_u64)
            .ok_or("_aws.Timestamp must be an integer")?;
        let now_ms = now.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let two_weeks = Duration::from_secs(14 * 86_400).as_millis() as u64;
        let two_hours = Duration::from_secs(2 * 3600).as_millis() as u64;
        if timestamp < now_ms - two_weeks || timestamp > now_ms + two_hours {
            return Err(format!(
                "_aws.Timestamp {timestamp} is not milliseconds near now"
            ));
        }
        let directives = aws
            .get("CloudWatchMetrics")
            .and_then(Value::as_array)
            .ok_or("_aws.CloudWatchMetrics must be an array")?;
        let mut names = HashSet::new();
        for directive in directives {
            let directive = directive
                .as_object()
                .ok_or("a MetricDirective must be an object")?;
            members(
                directive,
                &["Namespace", "Dimensions", "Metrics"],
                "a MetricDirective",
            )?;
            string_of(directive.get("Namespace"), "Namespace", 1024)?;
            // Dimensions: at least one DimensionSet, each of at most 30 keys, each key a
            // member of the root with a string of at most 1024 characters.
            let sets = directive
                .get("Dimensions")
                .and_then(Value::as_array)
                .filter(|sets| !sets.is_empty())
                .ok_or("Dimensions must be a non-empty array of DimensionSets")?;
            for set in sets {
                let keys = set.as_array().ok_or("a DimensionSet must be an array")?;
                if keys.len() > 30 {
                    return Err(format!(
                        "a DimensionSet has {} keys, more than 30",
                        keys.len()
                    ));
                }
                for key in keys {
                    let key = string_of(Some(key), "a dimension key", 250)?;
                    string_of(root.get(key), &format!("dimension target {key}"), 1024)?;
                }
            }
            // Metrics: at most 100 MetricDefinitions.
            let definitions = directive
                .get("Metrics")
                .and_then(Value::as_array)
                .ok_or("Metrics must be an array")?;
            if definitions.len() > MAX_METRICS_PER_DIRECTIVE {
                return Err(format!(
                    "a directive has {} metrics, more than 100",
                    definitions.len()
                ));
            }
            for definition in definitions {
                let definition = definition
                    .as_object()
                    .ok_or("a MetricDefinition must be an object")?;
                members(
                    definition,
                    &["Name", "Unit", "StorageResolution"],
                    "a MetricDefinition",
                )?;
                let name = string_of(definition.get("Name"), "a metric name", 1024)?;
                if !names.insert(name.to_owned()) {
                    return Err(format!("metric {name} is defined twice"));
                }
                if let Some(unit) = definition.get("Unit") {
                    let unit = unit.as_str().ok_or("Unit must be a string")?;
                    if !UNITS.contains(&unit) {
                        return Err(format!("{unit} is not a CloudWatch unit"));
                    }
                }
                if let Some(resolution) = definition.get("StorageResolution") {
                    if !matches!(resolution.as_u64(), Some(1 | 60)) {
                        return Err("StorageResolution must be 1 or 60".into());
                    }
                }
                // Target member: a number, or a list of at most 100 numbers.
                match root.get(name) {
                    Some(Value::Number(_)) => {}
                    Some(Value::Array(values)) => {
                        if values.is_empty() || values.len() > MAX_VALUES {
                            return Err(format!(
                                "{name} has {} values, not 1 to 100",
                                values.len()
                            ));
                        }
                        if !values.iter().all(Value::is_number) {
                            return Err(format!("{name} has a value that is not a number"));
                        }
                    }
                    _ => return Err(format!("metric target {name} is missing or not numeric")),
                }
            }
        }
        Ok(())
    }

    fn writer() -> EmfWriter {
        EmfWriter::new(Namespace::parse("lockbox").unwrap(), "orders-api")
    }

    fn count(name: &'static str, n: u64) -> Metric {
        Metric {
            name,
            unit: Unit::Count,
            value: MetricValue::Number(n),
        }
    }

    #[test]
    fn a_line_is_valid_emf_with_the_timestamp_in_milliseconds() {
        let at = UNIX_EPOCH + Duration::from_millis(1_790_000_000_123);
        let metrics = [
            count("CacheHits", 3),
            Metric {
                name: "AwsLatency",
                unit: Unit::Milliseconds,
                value: MetricValue::List(vec![1.5, 20.25]),
            },
            Metric {
                name: "CacheBytes",
                unit: Unit::Bytes,
                value: MetricValue::Number(4096),
            },
        ];
        let line = writer().line(&metrics, at);
        validate_emf(&line, at).unwrap();
        let root: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(root["_aws"]["Timestamp"], 1_790_000_000_123u64);
        assert_eq!(root["FunctionName"], "orders-api");
        assert_eq!(root["CacheHits"], 3);
        assert_eq!(root["AwsLatency"], json!([1.5, 20.25]));
        let directive = &root["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "lockbox");
        assert_eq!(directive["Dimensions"], json!([["FunctionName"]]));
        assert_eq!(
            directive["Metrics"][2],
            json!({"Name": "CacheBytes", "Unit": "Bytes"})
        );
    }

    #[test]
    fn more_than_a_hundred_metrics_take_several_directives_and_lists_stop_at_a_hundred() {
        let names: Vec<&'static str> = (0..250)
            .map(|i| &*Box::leak(format!("M{i}").into_boxed_str()))
            .collect();
        let mut metrics: Vec<Metric> = names.iter().map(|name| count(name, 1)).collect();
        metrics.push(Metric {
            name: "Long",
            unit: Unit::Milliseconds,
            value: MetricValue::List((0..500).map(f64::from).collect()),
        });
        let now = SystemTime::now();
        let line = writer().line(&metrics, now);
        validate_emf(&line, now).unwrap();
        let root: Value = serde_json::from_str(&line).unwrap();
        let directives = root["_aws"]["CloudWatchMetrics"].as_array().unwrap();
        let sizes: Vec<usize> = directives
            .iter()
            .map(|d| d["Metrics"].as_array().unwrap().len())
            .collect();
        assert_eq!(sizes, vec![100, 100, 51]);
        assert_eq!(root["Long"].as_array().unwrap().len(), MAX_VALUES);
    }

    #[test]
    fn an_empty_list_is_left_out_rather_than_written_empty() {
        let metrics = [
            count("AwsCalls", 0),
            Metric {
                name: "AwsLatency",
                unit: Unit::Milliseconds,
                value: MetricValue::List(Vec::new()),
            },
        ];
        let now = SystemTime::now();
        let line = writer().line(&metrics, now);
        validate_emf(&line, now).unwrap();
        let root: Value = serde_json::from_str(&line).unwrap();
        assert!(root.get("AwsLatency").is_none());
        assert_eq!(
            root["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn the_validator_refuses_what_the_specification_forbids() {
        let now = SystemTime::now();
        let ms = now.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let line = |aws: Value, extra: Value| {
            let mut root = json!({ "_aws": aws, "FunctionName": "f", "Hits": 1 });
            for (k, v) in extra.as_object().unwrap() {
                root[k] = v.clone();
            }
            root.to_string()
        };
        let directive = |metrics: Value| json!([{ "Namespace": "n", "Dimensions": [["FunctionName"]], "Metrics": metrics }]);
        let good = directive(json!([{ "Name": "Hits", "Unit": "Count" }]));
        assert!(validate_emf(
            &line(
                json!({"Timestamp": ms, "CloudWatchMetrics": good}),
                json!({})
            ),
            now
        )
        .is_ok());
        let bad = [
            // Seconds, not milliseconds.
            line(
                json!({"Timestamp": ms / 1000, "CloudWatchMetrics": good}),
                json!({}),
            ),
            // A unit CloudWatch does not have.
            line(
                json!({"Timestamp": ms, "CloudWatchMetrics": directive(json!([{ "Name": "Hits", "Unit": "Hits" }]))}),
                json!({}),
            ),
            // A dimension key with no member.
            line(
                json!({"Timestamp": ms, "CloudWatchMetrics": [{ "Namespace": "n", "Dimensions": [["Region"]], "Metrics": [] }]}),
                json!({}),
            ),
            // A metric with no member.
            line(
                json!({"Timestamp": ms, "CloudWatchMetrics": directive(json!([{ "Name": "Misses" }]))}),
                json!({}),
            ),
            // 101 values.
            line(
                json!({"Timestamp": ms, "CloudWatchMetrics": good}),
                json!({ "Hits": vec![1; 101] }),
            ),
            // 101 metrics in one directive.
            line(
                json!({"Timestamp": ms, "CloudWatchMetrics": directive(json!(
                    (0..101).map(|i| json!({"Name": format!("M{i}")})).collect::<Vec<_>>()
                ))}),
                json!((0..101)
                    .map(|i| (format!("M{i}"), json!(1)))
                    .collect::<Map<_, _>>()),
            ),
        ];
        for line in bad {
            assert!(validate_emf(&line, now).is_err(), "accepted {line}");
        }
    }

    #[test]
    fn namespaces_follow_cloudwatchs_rules() {
        assert!(Namespace::parse("lockbox").is_some());
        assert!(Namespace::parse("Team/Orders service:prod#1").is_some());
        for bad in ["", "AWS/Lambda", "caf\u{e9}", "a\"b", &"n".repeat(256)] {
            assert!(Namespace::parse(bad).is_none(), "accepted {bad:?}");
        }
    }
}
