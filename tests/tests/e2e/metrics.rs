//! Metrics (issue 13): the real `lockbox` under the sandbox with `LOCKBOX_METRICS=emf`
//! writes CloudWatch Embedded Metric Format lines whose numbers add up to what the proxy
//! counted and what the reads were answered with; with metrics off it writes none; the stats
//! route needs the token and never returns a value.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lockbox_tests::check::{assert_any_error, cache_header, eventually, ok_json, WAIT};
use lockbox_tests::client::{parameter_path, secret_path, ExtClient};
use lockbox_tests::fixture::Fixture;
use lockbox_tests::sandbox::{Sandbox, FUNCTION_NAME};
use lockbox_tests::{random_hex, Fault};
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------
// An EMF parser, from CloudWatch's "Specification: Embedded metric format": the objects it
// defines have no members but theirs (hence deny_unknown_fields); the root may have others.
// ---------------------------------------------------------------------------------------

/// The metadata object, `_aws`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct Metadata {
    /// Milliseconds since the epoch.
    timestamp: u64,
    cloud_watch_metrics: Vec<MetricDirective>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct MetricDirective {
    namespace: String,
    /// DimensionSets: each a list of keys that are members of the root.
    dimensions: Vec<Vec<String>>,
    metrics: Vec<MetricDefinition>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct MetricDefinition {
    name: String,
    unit: Option<String>,
    storage_resolution: Option<u64>,
}

/// One parsed line: its namespace, the dimension values and each metric's values.
#[derive(Debug)]
struct EmfLine {
    namespace: String,
    dimensions: BTreeMap<String, String>,
    units: HashMap<String, String>,
    values: HashMap<String, Vec<f64>>,
}

impl EmfLine {
    /// A metric's single value (0 when the line does not carry it).
    fn number(&self, name: &str) -> u64 {
        match self.values.get(name).map(Vec::as_slice) {
            None => 0,
            Some([one]) => *one as u64,
            Some(list) => panic!("{name} is a list of {}, not a number", list.len()),
        }
    }

    /// A metric's values, as a list (empty when absent).
    fn list(&self, name: &str) -> &[f64] {
        self.values.get(name).map_or(&[], Vec::as_slice)
    }
}

/// CloudWatch's units, from the specification's JSON schema.
const UNITS: &str = "Seconds Microseconds Milliseconds Bytes Kilobytes Megabytes Gigabytes \
    Terabytes Bits Kilobits Megabits Gigabits Terabits Percent Count Bytes/Second \
    Kilobytes/Second Megabytes/Second Gigabytes/Second Terabytes/Second Bits/Second \
    Kilobits/Second Megabits/Second Gigabits/Second Terabits/Second Count/Second None";

/// Parses a log line as EMF, failing on anything the specification forbids.
fn parse_emf(line: &str) -> anyhow::Result<EmfLine> {
    use anyhow::{bail, ensure, Context};
    let root: serde_json::Map<String, Value> =
        serde_json::from_str(line).context("an EMF line is one JSON object, nothing else")?;
    let metadata: Metadata = serde_json::from_value(root.get("_aws").cloned().context("no _aws")?)
        .context("_aws is not the specification's metadata object")?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    ensure!(
        metadata.timestamp > now - 14 * 86_400_000 && metadata.timestamp < now + 2 * 3_600_000,
        "Timestamp {} is not milliseconds since the epoch, near now",
        metadata.timestamp
    );
    let mut parsed = EmfLine {
        namespace: String::new(),
        dimensions: BTreeMap::new(),
        units: HashMap::new(),
        values: HashMap::new(),
    };
    for directive in metadata.cloud_watch_metrics {
        ensure!(
            (1..=1024).contains(&directive.namespace.len()),
            "Namespace length"
        );
        parsed.namespace = directive.namespace;
        ensure!(!directive.dimensions.is_empty(), "no DimensionSet");
        for set in &directive.dimensions {
            ensure!(set.len() <= 30, "a DimensionSet of {} keys", set.len());
            for key in set {
                let Some(Value::String(value)) = root.get(key) else {
                    bail!("dimension {key} is not a string member of the root");
                };
                ensure!(value.chars().count() <= 1024, "dimension {key} too long");
                parsed.dimensions.insert(key.clone(), value.clone());
            }
        }
        ensure!(
            directive.metrics.len() <= 100,
            "{} metrics in one directive",
            directive.metrics.len()
        );
        for metric in directive.metrics {
            if let Some(unit) = &metric.unit {
                ensure!(UNITS.split(' ').any(|u| u == unit), "{unit} is not a unit");
            }
            ensure!(
                matches!(metric.storage_resolution, None | Some(1 | 60)),
                "StorageResolution"
            );
            let values = match root.get(&metric.name) {
                Some(Value::Number(n)) => vec![n.as_f64().context("a number")?],
                Some(Value::Array(list)) => {
                    ensure!(
                        (1..=100).contains(&list.len()),
                        "{} has {} values",
                        metric.name,
                        list.len()
                    );
                    list.iter()
                        .map(|v| v.as_f64().context("a value list holds numbers only"))
                        .collect::<anyhow::Result<_>>()?
                }
                _ => bail!("metric {} has no numeric member", metric.name),
            };
            ensure!(
                parsed.values.insert(metric.name.clone(), values).is_none(),
                "{} defined twice",
                metric.name
            );
            parsed
                .units
                .insert(metric.name, metric.unit.unwrap_or_else(|| "None".into()));
        }
    }
    Ok(parsed)
}

/// The extension's output lines that are EMF (every line with an `_aws` member).
fn emf_lines(sandbox: &Sandbox) -> Vec<String> {
    sandbox
        .log_lines()
        .into_iter()
        .filter(|line| line.contains("\"_aws\""))
        .collect()
}

/// Waits until the extension wrote `count` EMF lines (output reaches the sandbox through a
/// pipe, so the last may arrive after the process ended).
async fn wait_emf_lines(sandbox: &Sandbox, count: usize) -> anyhow::Result<Vec<String>> {
    eventually(&format!("{count} EMF lines"), || async {
        Ok(emf_lines(sandbox).len() >= count)
    })
    .await?;
    Ok(emf_lines(sandbox))
}

/// What the reads were answered with, from their `X-Lockbox-Cache` headers.
#[derive(Debug, Default)]
struct Tally {
    hit: u64,
    miss: u64,
    stale: u64,
}

impl Tally {
    async fn read(&mut self, client: &ExtClient, path: &str) -> anyhow::Result<String> {
        let response = client.get(path).await?;
        ok_json(&response);
        let outcome = cache_header(&response).to_owned();
        match outcome.as_str() {
            "hit" => self.hit += 1,
            "miss" => self.miss += 1,
            "stale" => self.stale += 1,
            other => anyhow::bail!("unexpected cache outcome {other}"),
        }
        Ok(outcome)
    }
}

const OPERATIONS: [&str; 5] = [
    "GetParameter",
    "GetParameters",
    "GetParametersByPath",
    "GetSecretValue",
    "BatchGetSecretValue",
];

#[tokio::test(flavor = "multi_thread")]
async fn emf_lines_add_up_to_the_calls_at_the_proxy_and_the_reads_made() -> anyhow::Result<()> {
    let suffix = random_hex(8);
    let (a, b, s) = (
        format!("/metrics/a-{suffix}"),
        format!("/metrics/b-{suffix}"),
        format!("metrics/s-{suffix}"),
    );
    let values = [random_hex(32), random_hex(32), random_hex(32)];
    let prefetch = format!("ssm:{b}");
    let lockbox = Fixture::new()
        .await?
        .param(&a, &values[0])
        .param(&b, &values[1])
        .secret(&s, &values[2])
        .envs(&[
            ("LOCKBOX_METRICS", "emf"),
            ("LOCKBOX_METRICS_NAMESPACE", "lockbox-e2e"),
            ("LOCKBOX_PREFETCH", &prefetch),
            // Parameters expire after a second, so the stale answer below needs no long wait;
            // refresh-ahead off, so every parameter call is one the test caused.
            ("SSM_PARAMETER_STORE_TTL", "1"),
            ("LOCKBOX_REFRESH_AHEAD", "0"),
            ("SSM_PARAMETER_STORE_TIMEOUT_MILLIS", "5000"),
        ])
        .start()
        .await?;
    let (sandbox, proxy, client) = (&lockbox.sandbox, &lockbox.proxy, &lockbox.client);
    assert!(
        emf_lines(sandbox).is_empty(),
        "no line before the first INVOKE: {}",
        sandbox.report()
    );

    let mut tally = Tally::default();
    // Invoke 1: misses, hits, and a hit on the prefetched value.
    let (pa, pb, ps) = (
        parameter_path(&a, &[]),
        parameter_path(&b, &[]),
        secret_path(&s, &[]),
    );
    let (t, c, paths) = (&mut tally, client, [&pa, &pa, &pb, &ps, &ps]);
    sandbox
        .invoke_with(move || async move {
            for path in paths {
                t.read(c, path).await?;
            }
            anyhow::Ok(())
        })
        .await??;
    assert!(tally.miss >= 2 && tally.hit >= 2, "{tally:?}");

    // Invoke 2: AWS throttles every GetParameter; once `a` is past its TTL it is answered
    // stale, after the SDK's attempts were all throttled.
    proxy.fail_next(Some("GetParameter"), 1000, Fault::Throttle);
    let (t, c, p) = (&mut tally, client, &pa);
    sandbox
        .invoke_with(move || async move {
            let deadline = Instant::now() + WAIT;
            while t.read(c, p).await? != "stale" {
                anyhow::ensure!(Instant::now() < deadline, "never answered stale");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(())
        })
        .await??;
    proxy.clear_faults();
    let throttles = proxy.faults_injected() as u64;
    assert!(throttles >= 1);

    // Invoke 3: AWS answers again.
    let (t, c, p) = (&mut tally, client, &pa);
    sandbox
        .invoke_with(move || async move {
            let deadline = Instant::now() + WAIT;
            while t.read(c, p).await? != "miss" {
                anyhow::ensure!(Instant::now() < deadline, "never fetched again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(())
        })
        .await??;
    sandbox.shutdown(WAIT).await?;

    // One line per INVOKE and one at SHUTDOWN, every one valid EMF.
    let lines = wait_emf_lines(sandbox, 4).await?;
    assert_eq!(lines.len(), 4, "{}", sandbox.report());
    let parsed: Vec<EmfLine> = lines
        .iter()
        .map(|line| parse_emf(line).map_err(|e| e.context(line.clone())))
        .collect::<anyhow::Result<_>>()?;
    for (line, emf) in lines.iter().zip(&parsed) {
        assert_eq!(emf.namespace, "lockbox-e2e");
        assert_eq!(
            emf.dimensions,
            BTreeMap::from([("FunctionName".into(), FUNCTION_NAME.into())])
        );
        for name in [&a, &b, &s] {
            assert!(!line.contains(name.as_str()), "a name in {line}");
        }
        for value in &values {
            assert!(!line.contains(value.as_str()), "a value in {line}");
        }
        assert_eq!(emf.units["CacheHits"], "Count");
        assert_eq!(emf.units["CacheBytes"], "Bytes");
        let latencies = emf.list("AwsLatency");
        assert_eq!(latencies.len() as u64, emf.number("AwsCalls").min(100));
        if !latencies.is_empty() {
            assert_eq!(emf.units["AwsLatency"], "Milliseconds");
        }
    }
    let sum = |name: &str| parsed.iter().map(|l| l.number(name)).sum::<u64>();

    // The reads, as their answers said.
    assert_eq!(sum("CacheHits"), tally.hit, "{tally:?}");
    assert_eq!(sum("CacheMisses"), tally.miss, "{tally:?}");
    assert_eq!(sum("StaleServed"), tally.stale, "{tally:?}");
    assert_eq!(sum("AwsCallsAvoided"), tally.hit);
    // The calls, as the proxy counted them: each attempt of each operation, throttled ones
    // included.
    for op in OPERATIONS {
        assert_eq!(
            sum(&format!("AwsCalls{op}")),
            proxy.calls(op) as u64,
            "{op}: {:?}",
            proxy.call_counts()
        );
    }
    assert_eq!(sum("AwsCalls"), proxy.total() as u64);
    assert_eq!(sum("AwsThrottles"), throttles);
    assert_eq!(sum("AwsErrors"), throttles, "no other call failed");
    // Prefetch loaded one value, in the interval that covers Init.
    assert_eq!(sum("PrefetchValuesLoaded"), 1);
    assert_eq!(parsed[0].list("PrefetchDuration").len(), 1);
    assert_eq!(sum("Refreshes"), 0);
    assert_eq!(sum("ReadsCoalesced"), 0, "no read waited for another");
    // The cache's size at the end: three entries holding the three values.
    let last = parsed.last().unwrap();
    assert_eq!(last.number("CacheEntries"), 3);
    assert!(last.number("CacheBytes") >= 96, "three 32-byte values");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn with_metrics_off_no_emf_line_is_written() -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .param("/metrics/off", "v")
        .start()
        .await?;
    let (sandbox, client) = (&lockbox.sandbox, &lockbox.client);
    for _ in 0..2 {
        sandbox
            .invoke_with(|| client.get_parameter("/metrics/off", &[]))
            .await??;
    }
    sandbox.shutdown(WAIT).await?;
    // The shutdown log line is the last thing written; once it is in, nothing else comes.
    sandbox.wait_log_line("\"shutdown\"", WAIT).await?;
    let logs = sandbox.logs();
    assert!(!logs.contains("_aws"), "{logs}");
    assert!(!logs.contains("CloudWatchMetrics"), "{logs}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_route_needs_the_token_counts_the_reads_and_never_returns_a_value(
) -> anyhow::Result<()> {
    let (param_value, secret_value) = (random_hex(40), random_hex(40));
    let lockbox = Fixture::new()
        .await?
        .param("/metrics/stats", &param_value)
        .secret("metrics/stats", &secret_value)
        .start()
        .await?;
    let (proxy, client) = (&lockbox.proxy, &lockbox.client);

    assert_any_error(&client.get_without_token("/lockbox/stats").await?, 403);
    assert_any_error(
        &client
            .get_without_token("/lockbox/stats?entries=true")
            .await?,
        403,
    );
    assert_eq!(proxy.total(), 0);

    for _ in 0..3 {
        ok_json(&client.get_parameter("/metrics/stats", &[]).await?);
    }
    ok_json(&client.get_secret("metrics/stats", &[]).await?);

    let stats = ok_json(&client.get("/lockbox/stats").await?);
    assert_eq!(stats["cache_hits"], 2, "{stats}");
    assert_eq!(stats["cache_misses"], 2, "{stats}");
    assert_eq!(stats["aws_calls"]["GetParameter"], 1, "{stats}");
    assert_eq!(stats["aws_calls"]["GetSecretValue"], 1, "{stats}");
    assert_eq!(stats["aws_latency"]["count"], 2, "{stats}");
    assert_eq!(stats["cache"]["entries"], 2, "{stats}");
    assert!(stats.get("entries").is_none(), "entries only when asked");

    let with_entries = client.get("/lockbox/stats?entries=true").await?;
    let body = ok_json(&with_entries);
    for value in [&param_value, &secret_value] {
        assert!(
            !with_entries.body.contains(value.as_str()),
            "a value in {body}"
        );
    }
    let entries = body["entries"].as_array().expect("entries listed");
    assert_eq!(entries.len(), 2, "{body}");
    let parameter = entries
        .iter()
        .find(|e| e["kind"] == "parameter")
        .expect("the parameter's entry");
    assert_eq!(parameter["name"], "/metrics/stats");
    assert_eq!(parameter["hits"], 2, "{parameter}");
    assert_eq!(parameter["size_bytes"], 40, "{parameter}");
    assert!(parameter["ttl_left_ms"].as_u64().unwrap() <= 330_000);
    assert!(parameter["age_ms"].is_u64());
    assert!(parameter["scope"].is_string() || parameter["scope"].is_object());
    let secret = entries.iter().find(|e| e["kind"] == "secret").unwrap();
    assert_eq!(secret["name"], "metrics/stats");
    assert_eq!(secret["hits"], 0, "{secret}");
    // The route reads counters; it never calls AWS.
    assert_eq!(proxy.total(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn refreshes_ahead_of_expiry_are_counted_with_the_calls_they_make() -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .param("/metrics/refreshed", "v")
        .envs(&[
            ("LOCKBOX_METRICS", "emf"),
            // A read entry is due 0.2 s into its 2 s TTL: the next INVOKE after that
            // refreshes it.
            ("SSM_PARAMETER_STORE_TTL", "2"),
            ("LOCKBOX_REFRESH_AHEAD", "0.9"),
        ])
        .start()
        .await?;
    let (sandbox, proxy, client) = (&lockbox.sandbox, &lockbox.proxy, &lockbox.client);
    sandbox
        .invoke_with(|| client.get_parameter("/metrics/refreshed", &[]))
        .await??;
    let read_calls = proxy.total();
    let mut invokes = 1;
    eventually("a refresh ahead on INVOKE", || {
        invokes += 1;
        async move {
            sandbox.invoke(WAIT).await?;
            Ok(proxy.total() > read_calls)
        }
    })
    .await?;
    sandbox.shutdown(WAIT).await?;

    let lines = wait_emf_lines(sandbox, invokes + 1).await?;
    let parsed: Vec<EmfLine> = lines
        .iter()
        .map(|line| parse_emf(line))
        .collect::<anyhow::Result<_>>()?;
    let sum = |name: &str| parsed.iter().map(|l| l.number(name)).sum::<u64>();
    // One entry was read, so one is refreshed (a refreshed entry is not due again until
    // it is read again), and every call it made is in the lines.
    assert_eq!(sum("Refreshes"), 1);
    assert_eq!(sum("AwsCalls"), proxy.total() as u64);
    assert_eq!(sum("CacheMisses"), 1);
    Ok(())
}
