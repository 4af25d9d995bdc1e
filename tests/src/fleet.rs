//! A fleet cold start: many execution environments of one function start at once, as when
//! Lambda scales a function out, and share one account's AWS quotas.
//!
//! Each environment is the real extension under its own [`Sandbox`], all of them pointed at
//! one [`Proxy`] that enforces the account's read quotas ([`crate::proxy::AWS_READ_QUOTAS`]) in front of
//! moto. Once an environment's Init is over, its first invoke reads every value of the
//! function at once (as function code that starts with `Promise.all` over its settings
//! does). [`run`] reports what the fleet saw: Init times, reads that succeeded or failed,
//! AWS calls by operation and how many were throttled, and when every environment had all
//! of its values. [`project`] extrapolates the calls to larger fleets.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use aws_sdk_ssm::types::ParameterType;
use futures::future::join_all;
use serde_json::Value;
use tokio::time::Instant;

use crate::client::{parameter_path, secret_path, ExtClient, WITH_DECRYPTION};
use crate::proxy::Quota;
use crate::sandbox::Sandbox;
use crate::{lockbox_builder, Moto, Proxy, INIT_TIMEOUT};

/// SecureString parameters each environment reads.
pub const PARAMETERS: usize = 10;
/// Secrets each environment reads.
pub const SECRETS: usize = 2;
/// Operations counted against Parameter Store's shared read quota.
pub const SSM_READS: [&str; 3] = ["GetParameter", "GetParameters", "GetParametersByPath"];
/// An environment whose extension could not bind its port is started again, this often.
const SPAWN_ATTEMPTS: usize = 3;

/// The function's values, as seeded in moto.
#[derive(Debug, Clone)]
pub struct FleetValues {
    /// (name, value) of each SecureString parameter.
    pub parameters: Vec<(String, String)>,
    /// (id, value) of each secret.
    pub secrets: Vec<(String, String)>,
}

impl FleetValues {
    /// Seeds [`PARAMETERS`] SecureString parameters (under a customer-managed key) and
    /// [`SECRETS`] secrets, under names unique to `prefix`.
    pub async fn seed(moto: &Moto, prefix: &str) -> anyhow::Result<Self> {
        let key = moto.create_cmk(&format!("alias/{prefix}-fleet")).await?;
        let mut parameters = Vec::new();
        for i in 0..PARAMETERS {
            let name = format!("/{prefix}/fleet/p{i:02}");
            let value = format!("value-{i:02}-of-{prefix}");
            moto.put_param(&name, &value, ParameterType::SecureString, Some(&key))
                .await?;
            parameters.push((name, value));
        }
        let mut secrets = Vec::new();
        for i in 0..SECRETS {
            let id = format!("{prefix}/fleet/secret-{i}");
            let value = format!(r#"{{"user":"fleet","password":"not-a-real-one-{i}"}}"#);
            moto.create_secret(&id, &value).await?;
            secrets.push((id, value));
        }
        Ok(Self {
            parameters,
            secrets,
        })
    }

    /// `LOCKBOX_PREFETCH` naming every value.
    pub fn prefetch_plan(&self) -> String {
        self.parameters
            .iter()
            .map(|(name, _)| format!("ssm:{name}"))
            .chain(self.secrets.iter().map(|(id, _)| format!("secret:{id}")))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// How a fleet is started.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Environments started at once.
    pub environments: usize,
    /// Whether each one prefetches every value during Init (`LOCKBOX_PREFETCH`).
    pub prefetch: bool,
    /// More environment variables for every extension (applied last).
    pub env: Vec<(String, String)>,
    /// The quotas the proxy enforces: [`crate::proxy::AWS_READ_QUOTAS`] for an account's
    /// defaults.
    pub quotas: Vec<Quota>,
}

/// What one environment saw.
#[derive(Debug, Clone, Default)]
struct Environment {
    /// Spawn to the first `next`; `None` when Init failed.
    init: Option<Duration>,
    ok: usize,
    /// Failed reads, as `STATUS __type`.
    failed: Vec<String>,
    /// Since the fleet started, when the last of its values arrived (all reads ok only).
    values_at: Option<Duration>,
}

/// What a fleet cold start measured.
#[derive(Debug, Clone)]
pub struct FleetRun {
    /// Environments started.
    pub environments: usize,
    /// Whether they prefetched.
    pub prefetch: bool,
    /// Init of each environment that finished Init, sorted.
    pub init: Vec<Duration>,
    /// Environments whose Init failed.
    pub init_failed: usize,
    /// First-invoke reads answered 200 with the right value.
    pub reads_ok: usize,
    /// First-invoke reads that failed.
    pub reads_failed: usize,
    /// Failed reads by `STATUS __type`.
    pub failures: BTreeMap<String, usize>,
    /// AWS calls received by the proxy, by operation, throttled ones included.
    pub calls: BTreeMap<String, usize>,
    /// AWS calls answered `ThrottlingException` by the quotas, by operation.
    pub throttled: BTreeMap<String, usize>,
    /// From the first spawn until every environment had all of its values; `None` when
    /// some never did.
    pub all_values: Option<Duration>,
}

impl FleetRun {
    /// Parameter Store read calls (the 40-a-second quota), throttled ones included.
    pub fn ssm_calls(&self) -> usize {
        SSM_READS.iter().filter_map(|op| self.calls.get(*op)).sum()
    }

    /// Parameter Store read calls that were throttled.
    pub fn ssm_throttled(&self) -> usize {
        SSM_READS
            .iter()
            .filter_map(|op| self.throttled.get(*op))
            .sum()
    }

    /// The Init time at percentile `p` (0-100), nearest rank.
    pub fn init_percentile(&self, p: f64) -> Option<Duration> {
        if self.init.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * self.init.len() as f64).ceil() as usize;
        Some(self.init[rank.clamp(1, self.init.len()) - 1])
    }
}

/// Starts `options.environments` extensions at once against `moto` behind a proxy that
/// enforces `options.quotas`, runs each one's first invoke as soon as its Init is over,
/// and reports. Every environment is stopped before this returns.
pub async fn run(
    moto: &Moto,
    values: &FleetValues,
    options: &FleetOptions,
) -> anyhow::Result<FleetRun> {
    let proxy = Proxy::start(&moto.endpoint()).await?;
    proxy.enforce_quotas(&options.quotas);
    let plan = values.prefetch_plan();
    let mut env: Vec<(String, String)> = vec![
        // INFO is the default level; DEBUG would log every request of 200 processes.
        (
            "PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL".into(),
            "WARN".into(),
        ),
    ];
    if options.prefetch {
        env.push(("LOCKBOX_PREFETCH".into(), plan));
    }
    env.extend(options.env.iter().cloned());

    let started = Instant::now();
    let outcomes =
        join_all((0..options.environments).map(|_| environment(&proxy, values, &env, started)))
            .await;

    let mut run = FleetRun {
        environments: options.environments,
        prefetch: options.prefetch,
        init: Vec::new(),
        init_failed: 0,
        reads_ok: 0,
        reads_failed: 0,
        failures: BTreeMap::new(),
        calls: proxy.call_counts().into_iter().collect(),
        throttled: proxy.throttled_counts().into_iter().collect(),
        all_values: Some(Duration::ZERO),
    };
    for outcome in outcomes {
        let outcome = outcome?;
        match outcome.init {
            Some(init) => run.init.push(init),
            None => run.init_failed += 1,
        }
        run.reads_ok += outcome.ok;
        run.reads_failed += outcome.failed.len();
        for failure in outcome.failed {
            *run.failures.entry(failure).or_default() += 1;
        }
        run.all_values = match (run.all_values, outcome.values_at) {
            (Some(all), Some(this)) => Some(all.max(this)),
            _ => None,
        };
    }
    run.init.sort();
    Ok(run)
}

/// One environment: start, Init, the first invoke's reads, stop.
async fn environment(
    proxy: &Proxy,
    values: &FleetValues,
    env: &[(String, String)],
    fleet_started: Instant,
) -> anyhow::Result<Environment> {
    let mut attempt = 0;
    let (sandbox, client, init) = loop {
        attempt += 1;
        let (builder, client) = lockbox_builder(&proxy.endpoint())?;
        let sandbox = builder
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .start()
            .await?;
        match sandbox.wait_init_done(INIT_TIMEOUT).await {
            Ok(init) => break (sandbox, client, init),
            Err(_) if attempt < SPAWN_ATTEMPTS && crate::port_was_taken(&sandbox) => continue,
            Err(_) => {
                return Ok(Environment {
                    failed: vec!["Init failed".to_owned(); PARAMETERS + SECRETS],
                    ..Environment::default()
                })
            }
        }
    };
    let answers = sandbox
        .invoke_with(|| first_reads(&client, values))
        .await
        .context("the first invoke")?;
    let mut outcome = Environment {
        init: Some(init),
        ..Environment::default()
    };
    for answer in answers {
        match answer {
            Ok(()) => outcome.ok += 1,
            Err(failure) => outcome.failed.push(failure),
        }
    }
    if outcome.failed.is_empty() {
        outcome.values_at = Some(fleet_started.elapsed());
    }
    stop(sandbox).await;
    Ok(outcome)
}

/// Every value read at once; each answer is `Ok` or why not (`STATUS __type`).
async fn first_reads(client: &ExtClient, values: &FleetValues) -> Vec<Result<(), String>> {
    let parameters = values.parameters.iter().map(|(name, expected)| async move {
        let path = parameter_path(name, &[WITH_DECRYPTION]);
        check(client.get(&path).await, |body| {
            body["Parameter"]["Value"].as_str() == Some(expected.as_str())
        })
    });
    let secrets = values.secrets.iter().map(|(id, expected)| async move {
        check(client.get(&secret_path(id, &[])).await, |body| {
            body["SecretString"].as_str() == Some(expected.as_str())
        })
    });
    let (mut answers, secrets) = tokio::join!(join_all(parameters), join_all(secrets));
    answers.extend(secrets);
    answers
}

fn check(
    answer: anyhow::Result<crate::Response>,
    right_value: impl Fn(&Value) -> bool,
) -> Result<(), String> {
    let answer = answer.map_err(|err| format!("no answer: {err}"))?;
    if answer.status != 200 {
        let kind = answer.error_type().unwrap_or_else(|| "?".to_owned());
        return Err(format!("{} {kind}", answer.status));
    }
    match answer.json() {
        Ok(body) if right_value(&body) => Ok(()),
        _ => Err("200 with a wrong value".to_owned()),
    }
}

async fn stop(sandbox: Sandbox) {
    // A fleet's environments are reclaimed, not shut down one by one; a kill frees the
    // machine for the others at once.
    let _ = sandbox.kill().await;
}

/// Calls a larger fleet would make and how long the quota would make it take, from what
/// one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    /// Environments.
    pub environments: usize,
    /// Parameter Store calls that succeed: the measured successful calls per environment,
    /// times the environments (each environment reads its own values once).
    pub ssm_calls: f64,
    /// The same plus throttled calls at the measured share of throttled calls per call.
    pub ssm_attempts: f64,
    /// The least time the quota allows for the successful calls: the bucket's burst at
    /// once, the rest at the sustained rate.
    pub seconds: f64,
    /// The floor: one call per environment.
    pub floor_seconds: f64,
}

/// Extrapolates `run`'s Parameter Store calls per environment to `sizes` under `quota`.
pub fn project(run: &FleetRun, quota: Quota, sizes: &[usize]) -> Vec<Projection> {
    let environments = run.environments.max(1) as f64;
    let ok = run.ssm_calls().saturating_sub(run.ssm_throttled()) as f64;
    let ok_per_environment = ok / environments;
    let attempts_per_ok = if ok > 0.0 {
        run.ssm_calls() as f64 / ok
    } else {
        1.0
    };
    let time_for = |calls: f64| ((calls - quota.burst).max(0.0) / quota.per_second).max(0.0);
    sizes
        .iter()
        .map(|&n| {
            let ssm_calls = ok_per_environment * n as f64;
            Projection {
                environments: n,
                ssm_calls,
                ssm_attempts: ssm_calls * attempts_per_ok,
                seconds: time_for(ssm_calls),
                floor_seconds: time_for(n as f64),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::AWS_READ_QUOTAS;

    fn measured(environments: usize, ssm_ok: usize, ssm_throttled: usize) -> FleetRun {
        FleetRun {
            environments,
            prefetch: true,
            init: vec![Duration::from_millis(10), Duration::from_millis(30)],
            init_failed: 0,
            reads_ok: 0,
            reads_failed: 0,
            failures: BTreeMap::new(),
            calls: [("GetParameters".to_owned(), ssm_ok + ssm_throttled)].into(),
            throttled: [("GetParameters".to_owned(), ssm_throttled)].into(),
            all_values: None,
        }
    }

    #[test]
    fn projection_scales_the_calls_per_environment_and_the_quota_sets_the_time() {
        // 200 environments, one good call each, 100 throttled on the way.
        let run = measured(200, 200, 100);
        let projected = project(&run, AWS_READ_QUOTAS[0], &[1_000, 10_000]);
        assert_eq!(projected[0].ssm_calls, 1_000.0);
        assert_eq!(projected[0].ssm_attempts, 1_500.0);
        // 40 at once, 960 at 40 a second.
        assert_eq!(projected[0].seconds, 24.0);
        assert_eq!(projected[0].floor_seconds, 24.0);
        assert_eq!(projected[1].seconds, 249.0);

        // Ten calls per environment: ten times the floor's time.
        let one_per_read = project(&measured(10, 100, 0), AWS_READ_QUOTAS[0], &[1_000]);
        assert_eq!(one_per_read[0].ssm_calls, 10_000.0);
        assert_eq!(one_per_read[0].seconds, 249.0);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut run = measured(1, 0, 0);
        run.init = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(run.init_percentile(50.0), Some(Duration::from_millis(50)));
        assert_eq!(run.init_percentile(99.0), Some(Duration::from_millis(99)));
        assert_eq!(run.init_percentile(100.0), Some(Duration::from_millis(100)));
        run.init.clear();
        assert_eq!(run.init_percentile(50.0), None);
    }
}
