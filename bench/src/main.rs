//! `make bench`: lockbox's figures on this machine, loopback only, no pass/fail.
//!
//! Runs the layer-built extension under the Lambda sandbox against moto behind the
//! counting proxy and measures:
//!
//! - **prefetch**: 100 parameters (90 by name, 10 under a path) and 20 secrets with 25 ms
//!   added to every AWS call: prefetch wall time and AWS calls, against reading the same
//!   120 values one at a time through the extension with a cold cache;
//! - **cache hits**: latency (p50, p99, p99.9) and throughput at 1, 16 and 64 keep-alive
//!   connections, and the same against a bare hyper server (no router, no middleware)
//!   returning a fixed body of the same size (the ceiling, `bench/ceiling`), built with the
//!   same profile, in a process of its own: on one runtime thread like the extension (the
//!   targets' reference), and on all threads; each figure the median of five alternating
//!   runs;
//! - **Init overhead**: process start to the first `next`, without prefetch;
//! - **resident memory**: idle, and with 1,000 and 10,000 cached values of 1 KiB;
//! - **layer zip size**, when `make layer` has built one;
//! - **rotator**: wall time and AWS calls of one rotation of 100 SecureString parameters
//!   (regenerate, under a customer-managed key), through the counting proxy;
//! - **fleet**: 200 environments starting at once under the account's read quotas, with
//!   and without prefetch ([`fleet`]; `bench-results/fleet.svg`).
//!
//! Prints a table and writes `bench-results/results.json` and `bench-results/latency.svg`.
//! What is measured is what the layer ships: the `lambda` profile's build for this machine
//! (`make bench` builds it). The extension is `LOCKBOX_BIN` when set, else
//! `target/lambda/lockbox`; the rotator `LOCKBOX_ROTATOR_BIN`, else
//! `target/lambda/lockbox-rotator`; the ceiling `LOCKBOX_CEILING_BIN`, else
//! `target/lambda/lockbox-ceiling`. Names on the command line pick some of the figures;
//! those replace their sections in the last `results.json`, the others are kept.
#![allow(
    clippy::print_stdout,
    reason = "the figures are the bench's output; they go to the terminal"
)]

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use aws_sdk_ssm::types::ParameterType;
use futures::stream::{self, StreamExt, TryStreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::HOST;
use hyper::Request;
use hyper_util::rt::TokioIo;
use lockbox_tests::client::{parameter_path, secret_path, ExtClient, TOKEN_HEADER};
use lockbox_tests::sandbox::{Lifecycle, Sandbox};
use lockbox_tests::{bins, lockbox_builder, Moto, Proxy, INIT_TIMEOUT};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

mod fleet;

/// The cargo profile the layer is built with (Cargo.toml): the bench measures what ships.
const SHIPPED_PROFILE: &str = "lambda";
/// The variable naming the bare server's executable (`bench/ceiling`), else the
/// [`SHIPPED_PROFILE`] build of it.
const CEILING_BIN: &str = "LOCKBOX_CEILING_BIN";
/// Latency the proxy adds to every AWS call in the prefetch figure.
const AWS_LATENCY: Duration = Duration::from_millis(25);
/// How long to wait for a log line the extension has already written.
const LOG_WAIT: Duration = Duration::from_secs(5);
/// Prefetch runs per configuration; the median is reported.
const PREFETCH_RUNS: usize = 3;
/// Init runs without prefetch; percentiles are reported.
const INIT_RUNS: usize = 10;
/// Connection counts of the cache-hit figure, and the requests measured at each.
const LOAD_STEPS: [(usize, usize); 3] = [(1, 20_000), (16, 100_000), (64, 100_000)];
/// Runs per server and connection count; the median of each figure is reported.
const LOAD_RUNS: usize = 5;
/// Requests per connection sent before measuring (connections warm, caches hot).
const WARMUP_PER_CONNECTION: usize = 200;
/// Cached values of the memory figure, and their size.
const MEMORY_STEPS: [usize; 2] = [1_000, 10_000];
const MEMORY_VALUE_BYTES: usize = 1024;
/// Names per `get-many` request (the route's maximum).
const GET_MANY_MAX: usize = 100;
/// Parallel writes when seeding moto.
const SEED_CONCURRENCY: usize = 16;
/// Parameters one rotation rotates in the rotator figure.
const ROTATED_PARAMETERS: usize = 100;
/// The rotator's write pace in that figure: the most it allows, so the figure shows the
/// rotator's own cost rather than its deliberate pacing (reported separately).
const ROTATOR_WRITES_PER_SECOND: f64 = 100.0;
/// The rotator's default pace (`pace.writesPerSecond`), to say what a default run takes.
const ROTATOR_DEFAULT_WRITES_PER_SECOND: f64 = 3.0;
/// Calls and writes a parameter cost before the rotator recorded its lease and outcome in
/// labels (README, Benchmark: 812 calls and 500 writes for 100 parameters, with the intent
/// tag and three label calls each): the figure the current one is shown beside.
const ROTATOR_BEFORE_CALLS_PER_PARAMETER: f64 = 8.1;
const ROTATOR_BEFORE_WRITES_PER_PARAMETER: f64 = 5.0;
/// AWS operations that change something: the calls the rotator's pace limits.
const WRITE_OPERATION_PREFIXES: &[&str] = &[
    "Put",
    "Label",
    "Unlabel",
    "Delete",
    "Update",
    "AddTags",
    "RemoveTags",
];

fn main() -> anyhow::Result<()> {
    let only = Sections::from_args()?;
    // The harness finds the binaries through LOCKBOX_BIN and LOCKBOX_ROTATOR_BIN; the bench
    // measures the layer's builds, and the ceiling built the same way. Only the binaries the
    // asked sections run are required (`make bench ONLY=hits` builds no rotator). Set
    // before any thread starts.
    for (var, name, package, needed) in [
        ("LOCKBOX_BIN", "lockbox", "lockbox-extension", true),
        (
            "LOCKBOX_ROTATOR_BIN",
            "lockbox-rotator",
            "lockbox-rotator",
            only.wants("rotator"),
        ),
        (
            CEILING_BIN,
            "lockbox-ceiling",
            "lockbox-ceiling",
            only.wants("hits"),
        ),
    ] {
        if !needed || std::env::var_os(var).is_some() {
            continue;
        }
        let shipped = bins::target_dir().join(SHIPPED_PROFILE).join(name);
        if !shipped.is_file() {
            bail!(
                "{} not found: build it first (make bench does: cargo build --profile \
                 {SHIPPED_PROFILE} -p {package}), or point {var} at a {name} binary",
                shipped.display()
            );
        }
        std::env::set_var(var, shipped);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(only))
}

async fn run(only: Sections) -> anyhow::Result<()> {
    let started = Instant::now();
    let binary = bins::lockbox_bin()?;
    let machine = machine();
    println!("lockbox bench: {}", binary.display());
    println!(
        "machine: {}, {} CPUs, {} MiB RAM, Linux {}",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cpus"],
        machine["memory_mib"],
        machine["kernel"].as_str().unwrap_or("?"),
    );
    println!("(figures only; loopback; a shared machine makes them noisy)");

    let moto = Moto::start().await?;
    let dir = bins::workspace_root().join("bench-results");
    let file = dir.join("results.json");

    // A run of some sections (make bench ONLY=...) updates those in the last results and
    // keeps the others, each section with the time it was taken.
    let mut results = Map::new();
    if only.is_partial() && file.exists() {
        let previous = std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok());
        match previous {
            Some(Value::Object(previous)) => results = previous,
            _ => println!("({} is not a bench result; it is replaced)", file.display()),
        }
    }
    let mut taken = match results.remove("sections_taken_at") {
        Some(Value::Object(taken)) => taken,
        _ => Map::new(),
    };
    for (name, title, key) in SECTIONS {
        if !only.wants(name) {
            continue;
        }
        section(title);
        let figures = match name {
            "prefetch" => prefetch_figures(&moto).await?,
            "hits" => load_figures(&moto).await?,
            "init" => init_figures(&moto).await?,
            "memory" => memory_figures(&moto).await?,
            "layer" => layer_figures(),
            "rotator" => rotator_figures(&moto).await?,
            "fleet" => fleet::figures(&moto).await?,
            other => bail!("the bench has no figures for {other:?}"),
        };
        results.insert(key.to_owned(), figures);
        taken.insert(key.to_owned(), json!(utc_now()));
    }
    results.insert("taken_at".into(), json!(utc_now()));
    results.insert("sections_taken_at".into(), Value::Object(taken));
    results.insert("machine".into(), machine);
    results.insert("binary".into(), json!(binary.display().to_string()));
    results.insert(
        "bench_seconds".into(),
        json!(round1(started.elapsed().as_secs_f64())),
    );
    let results = Value::Object(results);

    std::fs::create_dir_all(&dir)?;
    write_atomically(&file, &serde_json::to_string_pretty(&results)?)?;
    write_atomically(&dir.join("latency.svg"), &latency_svg(&results))?;
    println!();
    println!(
        "written: {} and {} ({:.0} s in all)",
        dir.join("results.json").display(),
        dir.join("latency.svg").display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The figures, in the order they are taken: the name that picks them on the command line,
/// their heading, and their key in `results.json`.
const SECTIONS: [(&str, &str, &str); 7] = [
    (
        "prefetch",
        "Prefetch: 100 parameters (10 by path) and 20 secrets, +25 ms per AWS call",
        "prefetch",
    ),
    (
        "hits",
        "Cache hits: GET /systemsmanager/parameters/get, keep-alive connections",
        "cache_hits",
    ),
    (
        "init",
        "Init overhead: process start to the first `next`, no prefetch",
        "init",
    ),
    (
        "memory",
        "Resident memory (VmRSS) of the extension",
        "memory",
    ),
    ("layer", "Layer zip", "layer_zip"),
    (
        "rotator",
        "Rotator: one rotation of 100 SecureString parameters (regenerate)",
        "rotator",
    ),
    (
        "fleet",
        "Fleet: environments starting at once under the account's read quotas",
        "fleet",
    ),
];

/// The figures a run takes: every one by default, or those named on the command line
/// (`make bench ONLY="memory hits"`), for a quick look at one of them.
struct Sections(Vec<String>);

impl Sections {
    fn from_args() -> anyhow::Result<Self> {
        let named: Vec<String> = std::env::args().skip(1).collect();
        let known = || SECTIONS.iter().map(|(name, _, _)| *name);
        if let Some(unknown) = named.iter().find(|n| !known().any(|k| k == n.as_str())) {
            bail!(
                "unknown bench section {unknown:?}; the sections are: {}",
                known().collect::<Vec<_>>().join(", ")
            );
        }
        Ok(Self(named))
    }

    fn wants(&self, section: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|n| n == section)
    }

    /// Whether only some sections were asked for.
    fn is_partial(&self) -> bool {
        !self.0.is_empty()
    }
}

// ---------------------------------------------------------------------------------------
// (a) Prefetch
// ---------------------------------------------------------------------------------------

/// The prefetch scenario's values: (route path, expected value) for each of the 120, and
/// the `LOCKBOX_PREFETCH` that names them.
struct PrefetchSet {
    plan: String,
    reads: Vec<String>,
}

async fn seed_prefetch_set(moto: &Moto) -> anyhow::Result<PrefetchSet> {
    let key = moto.create_cmk("alias/lockbox-bench").await?;
    let mut plan = Vec::new();
    let mut reads = Vec::new();
    let mut params = Vec::new();
    for i in 0..90 {
        let name = format!("/bench/app/p{i:02}");
        // One in nine is a SecureString, as a typical configuration has a few.
        let kind = if i % 9 == 0 {
            ParameterType::SecureString
        } else {
            ParameterType::String
        };
        plan.push(format!("ssm:{name}"));
        reads.push(parameter_path(&name, &[("withDecryption", "true")]));
        params.push((name, kind));
    }
    plan.push("ssm-path:/bench/path/".to_owned());
    for i in 0..10 {
        let name = format!("/bench/path/q{i:02}");
        reads.push(parameter_path(&name, &[("withDecryption", "true")]));
        params.push((name, ParameterType::String));
    }
    stream::iter(params.iter())
        .map(|(name, kind)| {
            let key = key.clone();
            async move {
                let key = (*kind == ParameterType::SecureString).then_some(key.as_str());
                moto.put_param(name, &format!("value-of-{name}"), kind.clone(), key)
                    .await
            }
        })
        .buffer_unordered(SEED_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let secrets: Vec<String> = (0..20).map(|i| format!("bench/secret-{i:02}")).collect();
    stream::iter(secrets.iter())
        .map(|id| moto.create_secret(id, r#"{"user":"bench","password":"not-a-real-one"}"#))
        .buffer_unordered(SEED_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    for id in &secrets {
        plan.push(format!("secret:{id}"));
        reads.push(secret_path(id, &[]));
    }
    Ok(PrefetchSet {
        plan: plan.join(","),
        reads,
    })
}

/// One extension start through a fresh proxy with [`AWS_LATENCY`].
struct Start {
    sandbox: Sandbox,
    proxy: Proxy,
    client: ExtClient,
    /// Spawn to the first `next`.
    init: Duration,
}

async fn start_extension(
    moto: &Moto,
    latency: Duration,
    env: &[(&str, &str)],
) -> anyhow::Result<Start> {
    let proxy = Proxy::start(&moto.endpoint()).await?;
    proxy.set_latency(latency);
    let (builder, client) = lockbox_builder(&proxy.endpoint())?;
    // INFO is the default level; DEBUG would log every request.
    let sandbox = builder
        .env("PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL", "INFO")
        .envs(env.iter().copied())
        .start()
        .await?;
    let init = sandbox.wait_init_done(INIT_TIMEOUT).await?;
    Ok(Start {
        sandbox,
        proxy,
        client,
        init,
    })
}

/// A numeric field of the extension's first log line containing `message`.
fn log_field(sandbox: &Sandbox, message: &str, field: &str) -> Option<u64> {
    sandbox.log_lines().iter().find_map(|line| {
        let parsed: Value = serde_json::from_str(line).ok()?;
        (parsed["message"] == message).then(|| parsed[field].as_u64())?
    })
}

/// [`log_field`], polled until [`LOG_WAIT`] has passed: the line is written before the
/// extension calls `next`, but the harness reads the extension's stdout on its own task,
/// so it may not have it yet when Init is seen to end.
async fn wait_log_field(sandbox: &Sandbox, message: &str, field: &str) -> Option<u64> {
    let deadline = Instant::now() + LOG_WAIT;
    loop {
        let found = log_field(sandbox, message, field);
        if found.is_some() || Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One prefetch at Init: what the extension logged and what the proxy counted.
#[derive(Debug, Clone)]
struct PrefetchRun {
    /// `elapsed_ms` of the `prefetch done` line.
    elapsed_ms: u64,
    /// Spawn to the first `next`.
    init: Duration,
    calls: usize,
    by_operation: Vec<(String, usize)>,
    loaded: u64,
}

/// [`PREFETCH_RUNS`] starts with the plan, with `latency` added to every AWS call; sorted
/// by prefetch wall time.
async fn prefetch_runs(
    moto: &Moto,
    plan: &str,
    latency: Duration,
) -> anyhow::Result<Vec<PrefetchRun>> {
    let mut runs = Vec::new();
    for _ in 0..PREFETCH_RUNS {
        let start = start_extension(moto, latency, &[("LOCKBOX_PREFETCH", plan)]).await?;
        let elapsed_ms = wait_log_field(&start.sandbox, "prefetch done", "elapsed_ms")
            .await
            .with_context(|| format!("no `prefetch done` line:\n{}", start.sandbox.report()))?;
        let mut by_operation: Vec<(String, usize)> =
            start.proxy.call_counts().into_iter().collect();
        by_operation.sort();
        runs.push(PrefetchRun {
            elapsed_ms,
            init: start.init,
            calls: start.proxy.total(),
            by_operation,
            loaded: wait_log_field(&start.sandbox, "prefetch done", "loaded")
                .await
                .unwrap_or(0),
        });
    }
    runs.sort_by_key(|run| run.elapsed_ms);
    Ok(runs)
}

async fn prefetch_figures(moto: &Moto) -> anyhow::Result<Value> {
    let set = seed_prefetch_set(moto).await?;

    let with = prefetch_runs(moto, &set.plan, AWS_LATENCY).await?;
    // The same with no latency added: moto's and the extension's own time.
    let local = prefetch_runs(moto, &set.plan, Duration::ZERO).await?;
    let mut without = Vec::new();
    for _ in 0..PREFETCH_RUNS {
        without.push(start_extension(moto, AWS_LATENCY, &[]).await?.init);
    }
    without.sort();
    let median = with[with.len() / 2].clone();
    let local_ms = local[local.len() / 2].elapsed_ms;
    let init_without = without[without.len() / 2];
    let init_delta = median.init.saturating_sub(init_without);

    // The same 120 values read one at a time through the extension, cache cold: what a
    // function without prefetch pays on its first invoke.
    let start = start_extension(moto, AWS_LATENCY, &[]).await?;
    let client = start.client.clone();
    let reads = set.reads.clone();
    let one_by_one = start
        .sandbox
        .invoke_with(|| async move {
            let began = Instant::now();
            for path in &reads {
                let answer = client.get(path).await?;
                if answer.status != 200 {
                    bail!("{path}: {} {}", answer.status, answer.body);
                }
            }
            anyhow::Ok(began.elapsed())
        })
        .await??;
    let one_by_one_calls = start.proxy.total();

    let ops_text = median
        .by_operation
        .iter()
        .map(|(op, n)| format!("{op} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let elapsed_ms = median.elapsed_ms;
    let rounds = elapsed_ms as f64 / AWS_LATENCY.as_millis() as f64;
    row(
        "prefetch wall time",
        &format!(
            "{elapsed_ms} ms (\"prefetch done\" elapsed_ms, median of {PREFETCH_RUNS}; \
             {rounds:.1} x 25 ms); {local_ms} ms with no latency added"
        ),
    );
    row(
        "Init with prefetch",
        &format!(
            "{} ms spawn to first next; {} ms without prefetch; difference {} ms",
            ms(median.init),
            ms(init_without),
            ms(init_delta)
        ),
    );
    row(
        "AWS calls",
        &format!("{} for {} values ({ops_text})", median.calls, median.loaded),
    );
    row(
        "one at a time",
        &format!(
            "{} ms and {one_by_one_calls} AWS calls: the same 120 values read through the \
             extension with a cold cache",
            ms(one_by_one)
        ),
    );
    Ok(json!({
        "aws_latency_ms": AWS_LATENCY.as_millis() as u64,
        "values": median.loaded,
        "wall_ms": elapsed_ms,
        "wall_in_round_trips": round1(rounds),
        "runs_ms": with.iter().map(|r| r.elapsed_ms).collect::<Vec<_>>(),
        "wall_ms_no_latency": local_ms,
        "init_with_prefetch_ms": ms_f(median.init),
        "init_without_prefetch_ms": ms_f(init_without),
        "init_difference_ms": ms_f(init_delta),
        "aws_calls": median.calls,
        "aws_calls_by_operation": median
            .by_operation
            .iter()
            .map(|(op, n)| (op.clone(), json!(n)))
            .collect::<serde_json::Map<_, _>>(),
        "one_at_a_time_ms": ms_f(one_by_one),
        "one_at_a_time_aws_calls": one_by_one_calls,
    }))
}

// ---------------------------------------------------------------------------------------
// (b) Cache-hit latency and throughput
// ---------------------------------------------------------------------------------------

/// Latency percentiles and throughput of one load run.
#[derive(Debug, Clone)]
struct LoadRun {
    connections: usize,
    requests: usize,
    errors: usize,
    seconds: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    /// The server process's CPU time (user and system, all threads) per request, warm-up
    /// included: its own work, which a busy machine changes far less than latency.
    cpu_us: f64,
}

impl LoadRun {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    fn to_json(&self) -> Value {
        json!({
            "connections": self.connections,
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round3(self.seconds),
            "requests_per_second": self.per_second().round(),
            "p50_us": round1(self.p50_us),
            "p99_us": round1(self.p99_us),
            "p99_9_us": round1(self.p999_us),
            "cpu_us_per_request": round1(self.cpu_us),
        })
    }
}

/// The servers of the cache-hit figure, in the order their runs alternate: the key of each
/// in `results.json` and its name in the table and the chart.
const HIT_SERVERS: [(&str, &str); 3] = [
    ("lockbox", "lockbox"),
    ("bare_one_thread", "bare, 1 thread"),
    ("bare_all_threads", "bare, all threads"),
];
/// The targets (issue "A lean cache-hit path"): lockbox's p50 at one connection at most
/// this many times the bare server's on one thread...
const P50_RATIO_TARGET: f64 = 1.15;
/// ...and its throughput at 64 connections at least this share of that server's.
const THROUGHPUT_RATIO_TARGET: f64 = 0.9;

async fn load_figures(moto: &Moto) -> anyhow::Result<Value> {
    moto.put_param(
        "/bench/hot",
        "postgres://app@db.internal:5432/orders",
        ParameterType::String,
        None,
    )
    .await?;
    let start = start_extension(moto, Duration::ZERO, &[]).await?;
    let path = parameter_path("/bench/hot", &[]);
    let first = start.client.get(&path).await?;
    if first.status != 200 {
        bail!("the hot parameter could not be read: {}", first.body);
    }
    let extension = SocketAddr::from((Ipv4Addr::LOCALHOST, start.client.port()));
    let token = start.client.token().to_owned();

    let mut one_thread = BareServer::start(&first.body, Threads::One).await?;
    let mut all_threads = BareServer::start(&first.body, Threads::All).await?;
    let extension_pid = start.sandbox.pid().context("the extension has no pid")?;
    let targets = [
        (extension, Some(token.as_str()), extension_pid),
        (one_thread.addr, None, one_thread.pid()?),
        (all_threads.addr, None, all_threads.pid()?),
    ];

    let mut steps = Vec::new();
    println!(
        "  {:<19}{:>6}{:>10}{:>10}{:>10}{:>10}{:>12}{:>8}{:>10}",
        "server",
        "conns",
        "requests",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "req/s",
        "errors",
        "cpu us/req"
    );
    for (connections, requests) in LOAD_STEPS {
        // Runs alternate between the servers, and the median of each figure is kept: one
        // busy moment on a shared machine then skews no server's figures alone.
        let mut runs: [Vec<LoadRun>; 3] = Default::default();
        for _ in 0..LOAD_RUNS {
            for ((addr, token, pid), runs) in targets.iter().zip(runs.iter_mut()) {
                let cpu_before = cpu_ticks(*pid)?;
                let mut run = load(*addr, &path, *token, connections, requests).await?;
                let sent = run.requests + connections * WARMUP_PER_CONNECTION;
                let ticks = cpu_ticks(*pid)?.saturating_sub(cpu_before);
                run.cpu_us = ticks as f64 * 1e6 / CLOCK_TICKS_PER_SECOND / sent as f64;
                runs.push(run);
            }
        }
        let medians = runs.map(median_run);
        for ((_, name), run) in HIT_SERVERS.iter().zip(&medians) {
            println!(
                "  {:<19}{:>6}{:>10}{:>10.1}{:>10.1}{:>10.1}{:>12.0}{:>8}{:>10.1}",
                name,
                run.connections,
                run.requests,
                run.p50_us,
                run.p99_us,
                run.p999_us,
                run.per_second(),
                run.errors,
                run.cpu_us
            );
        }
        steps.push(medians);
    }
    let ratios: Vec<HitRatios> = steps.iter().map(HitRatios::of).collect();
    for (step, ratio) in steps.iter().zip(&ratios) {
        row(
            &format!("ratios at {}", step[0].connections),
            &format!(
                "lockbox p50 {:.2}x, throughput {:.2}x, CPU per request {:.2}x the bare \
                 server on 1 thread ({:.2}x the throughput on all threads)",
                ratio.p50, ratio.throughput, ratio.cpu, ratio.throughput_all_threads
            ),
        );
    }
    let at = |connections: usize| {
        steps
            .iter()
            .zip(&ratios)
            .find(|(step, _)| step[0].connections == connections)
            .map(|(_, ratio)| ratio)
    };
    let p50_at_1 = at(1).map_or(f64::NAN, |r| r.p50);
    let throughput_at_64 = at(64).map_or(f64::NAN, |r| r.throughput);
    let met = |met: bool| if met { "met" } else { "not met" };
    row(
        "target p50 at 1",
        &format!(
            "lockbox/bare {p50_at_1:.2}, at most {P50_RATIO_TARGET}: {}",
            met(p50_at_1 <= P50_RATIO_TARGET)
        ),
    );
    row(
        "target req/s at 64",
        &format!(
            "lockbox/bare {throughput_at_64:.2}, at least {THROUGHPUT_RATIO_TARGET}: {}",
            met(throughput_at_64 >= THROUGHPUT_RATIO_TARGET)
        ),
    );
    one_thread.stop().await;
    all_threads.stop().await;
    drop(start);
    Ok(json!({
        "route": "/systemsmanager/parameters/get (cache hit)",
        "body_bytes": first.body.len(),
        "runs_per_figure": LOAD_RUNS,
        "servers": {
            "lockbox": "the extension, on one runtime thread (extension/src/main.rs)",
            "bare_one_thread": "bench/ceiling: hyper's HTTP/1 server, no router, a fixed body; \
                                one runtime thread, as the extension",
            "bare_all_threads": "bench/ceiling on tokio's multi-thread runtime, one worker per CPU",
        },
        "runs": steps.iter().zip(&ratios).map(|(step, ratio)| {
            let mut figures = Map::new();
            figures.insert("connections".into(), json!(step[0].connections));
            for ((key, _), run) in HIT_SERVERS.iter().zip(step) {
                figures.insert((*key).into(), run.to_json());
            }
            figures.insert("p50_ratio".into(), json!(round3(ratio.p50)));
            figures.insert("throughput_ratio".into(), json!(round3(ratio.throughput)));
            figures.insert(
                "throughput_ratio_all_threads".into(),
                json!(round3(ratio.throughput_all_threads)),
            );
            figures.insert("cpu_per_request_ratio".into(), json!(round3(ratio.cpu)));
            Value::Object(figures)
        }).collect::<Vec<_>>(),
        "targets": {
            "p50_ratio_at_1_connection": {
                "value": round3(p50_at_1),
                "at_most": P50_RATIO_TARGET,
                "met": p50_at_1 <= P50_RATIO_TARGET,
            },
            "throughput_ratio_at_64_connections": {
                "value": round3(throughput_at_64),
                "at_least": THROUGHPUT_RATIO_TARGET,
                "met": throughput_at_64 >= THROUGHPUT_RATIO_TARGET,
            },
        },
    }))
}

/// lockbox against the bare server at one connection count: the ratios the targets use
/// (against one runtime thread, as lockbox runs), and throughput against all threads.
struct HitRatios {
    p50: f64,
    throughput: f64,
    throughput_all_threads: f64,
    cpu: f64,
}

impl HitRatios {
    fn of([ours, one, all]: &[LoadRun; 3]) -> Self {
        Self {
            p50: ours.p50_us / one.p50_us,
            throughput: ours.per_second() / one.per_second(),
            throughput_all_threads: ours.per_second() / all.per_second(),
            cpu: ours.cpu_us / one.cpu_us,
        }
    }
}

/// Each figure's median over the runs (the runs of one step send the same requests).
fn median_run(runs: Vec<LoadRun>) -> LoadRun {
    let median = |figure: fn(&LoadRun) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(figure).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    LoadRun {
        connections: runs[0].connections,
        requests: runs[0].requests,
        errors: runs.iter().map(|r| r.errors).sum(),
        seconds: median(|r| r.seconds),
        p50_us: median(|r| r.p50_us),
        p99_us: median(|r| r.p99_us),
        p999_us: median(|r| r.p999_us),
        cpu_us: median(|r| r.cpu_us),
    }
}

/// `requests` GETs of `path` over `connections` keep-alive connections, each sending its
/// share one after the other.
async fn load(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    connections: usize,
    requests: usize,
) -> anyhow::Result<LoadRun> {
    let per_connection = requests.div_ceil(connections);
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        senders.push(sender);
    }
    let request = Arc::new(RequestTemplate {
        host: addr.to_string(),
        path: path.to_owned(),
        token: token.map(str::to_owned),
    });

    // Warm up every connection, then measure them all together.
    let barrier = Arc::new(tokio::sync::Barrier::new(connections + 1));
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            let request = Arc::clone(&request);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                for _ in 0..WARMUP_PER_CONNECTION {
                    let _ = send(&mut sender, &request).await;
                }
                barrier.wait().await;
                let mut latencies = Vec::with_capacity(per_connection);
                let mut errors = 0;
                for _ in 0..per_connection {
                    let began = Instant::now();
                    match send(&mut sender, &request).await {
                        Ok(true) => latencies.push(began.elapsed()),
                        _ => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    barrier.wait().await;
    let began = Instant::now();
    let mut latencies = Vec::with_capacity(per_connection * connections);
    let mut errors = 0;
    for task in tasks {
        let (mut l, e) = task.await?;
        latencies.append(&mut l);
        errors += e;
    }
    let seconds = began.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let percentile = |q: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let index = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index].as_secs_f64() * 1e6
    };
    Ok(LoadRun {
        connections,
        requests: per_connection * connections,
        errors,
        seconds,
        p50_us: percentile(0.50),
        p99_us: percentile(0.99),
        p999_us: percentile(0.999),
        // Filled in by the caller, which knows the server's process.
        cpu_us: 0.0,
    })
}

/// What every request of a load run looks like.
struct RequestTemplate {
    host: String,
    path: String,
    token: Option<String>,
}

/// One request on a kept-alive connection; `Ok(true)` for a 200 read to the end.
async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    template: &RequestTemplate,
) -> anyhow::Result<bool> {
    sender.ready().await?;
    let mut request = Request::get(template.path.as_str()).header(HOST, template.host.as_str());
    if let Some(token) = &template.token {
        request = request.header(TOKEN_HEADER, token.as_str());
    }
    let response = sender.send_request(request.body(Empty::new())?).await?;
    let ok = response.status().is_success();
    response.into_body().collect().await?;
    Ok(ok)
}

/// The bare server's runtime: one thread, as the extension, or one worker per CPU.
#[derive(Debug, Clone, Copy)]
enum Threads {
    One,
    All,
}

/// The ceiling: `bench/ceiling`'s bare hyper server (built with the extension's profile),
/// serving a fixed body.
struct BareServer {
    addr: SocketAddr,
    child: Child,
}

impl BareServer {
    async fn start(body: &str, threads: Threads) -> anyhow::Result<BareServer> {
        let threads = match threads {
            Threads::One => "one",
            Threads::All => "all",
        };
        let mut child = Command::new(std::env::var_os(CEILING_BIN).context(CEILING_BIN)?)
            .arg(body)
            .arg(threads)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the bare server")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .context("the bare server did not say its port")??
            .context("the bare server exited")?;
        let port: u16 = line.trim().parse().context("the bare server's port")?;
        Ok(BareServer {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            child,
        })
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("the bare server has exited")
    }

    async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

// ---------------------------------------------------------------------------------------
// (c) Init overhead
// ---------------------------------------------------------------------------------------

async fn init_figures(moto: &Moto) -> anyhow::Result<Value> {
    let mut since_spawn = Vec::new();
    let mut since_register = Vec::new();
    for _ in 0..INIT_RUNS {
        let start = start_extension(moto, Duration::ZERO, &[]).await?;
        since_spawn.push(start.init);
        let registered = step_time(&start.sandbox, |s| matches!(s, Lifecycle::Registered(_)));
        let next = step_time(&start.sandbox, |s| *s == Lifecycle::NextCalled);
        if let (Some(registered), Some(next)) = (registered, next) {
            since_register.push(next.saturating_sub(registered));
        }
    }
    since_spawn.sort();
    since_register.sort();
    let median = |v: &[Duration]| v.get(v.len() / 2).copied().unwrap_or_default();
    row(
        "spawn to next",
        &format!(
            "p50 {} ms, min {} ms, max {} ms ({INIT_RUNS} starts)",
            ms(median(&since_spawn)),
            ms(since_spawn[0]),
            ms(since_spawn[since_spawn.len() - 1])
        ),
    );
    row(
        "register to next",
        &format!("p50 {} ms", ms(median(&since_register))),
    );
    Ok(json!({
        "runs": INIT_RUNS,
        "spawn_to_first_next_p50_ms": ms_f(median(&since_spawn)),
        "spawn_to_first_next_min_ms": ms_f(since_spawn[0]),
        "spawn_to_first_next_max_ms": ms_f(since_spawn[since_spawn.len() - 1]),
        "register_to_first_next_p50_ms": ms_f(median(&since_register)),
    }))
}

fn step_time(sandbox: &Sandbox, step: impl Fn(&Lifecycle) -> bool) -> Option<Duration> {
    sandbox
        .timeline_since_spawn()
        .into_iter()
        .find_map(|(at, s)| step(&s).then_some(at))
}

// ---------------------------------------------------------------------------------------
// (d) Resident memory
// ---------------------------------------------------------------------------------------

async fn memory_figures(moto: &Moto) -> anyhow::Result<Value> {
    let total = MEMORY_STEPS[MEMORY_STEPS.len() - 1];
    let value: String = "x".repeat(MEMORY_VALUE_BYTES);
    let names: Vec<String> = (0..total).map(|i| format!("/m/{i:05}")).collect();
    let seeding = Instant::now();
    stream::iter(names.iter())
        .map(|name| moto.put_param(name, &value, ParameterType::String, None))
        .buffer_unordered(SEED_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    println!(
        "  (seeded {total} parameters of {MEMORY_VALUE_BYTES} B in moto in {:.1} s)",
        seeding.elapsed().as_secs_f64()
    );

    let cache_size = (total * 2).to_string();
    let start = start_extension(
        moto,
        Duration::ZERO,
        &[("PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE", &cache_size)],
    )
    .await?;
    let pid = start.sandbox.pid().context("the extension has no pid")?;
    // Idle: Init done, the port answered once.
    start.client.get_without_token("/ping").await?;
    let idle = rss_kib(pid)?;
    let (anon, file) = rss_split(pid)?;
    row(
        "idle",
        &format!(
            "{:.1} MiB (heap and stacks {:.1} MiB, mapped binary {:.1} MiB)",
            mib(idle),
            mib(anon),
            mib(file)
        ),
    );
    let mut figures = vec![json!({
        "values": 0, "rss_kib": idle, "rss_mib": round1(mib(idle)),
        "anon_kib": anon, "file_kib": file,
    })];

    let mut loaded = 0;
    for step in MEMORY_STEPS {
        for chunk in names[loaded..step].chunks(GET_MANY_MAX) {
            let query = form_urlencoded::Serializer::new(String::new())
                .append_pair("names", &chunk.join(","))
                .finish();
            let answer = start
                .client
                .get(&format!("/systemsmanager/parameters/get-many?{query}"))
                .await?;
            let body = answer.json()?;
            let found = body["Parameters"].as_array().map_or(0, Vec::len);
            if answer.status != 200 || found != chunk.len() {
                bail!(
                    "get-many loaded {found} of {}: {}",
                    chunk.len(),
                    answer.status
                );
            }
        }
        loaded = step;
        let rss = rss_kib(pid)?;
        let (anon, file) = rss_split(pid)?;
        row(
            &format!("{step} values"),
            &format!(
                "{:.1} MiB ({:.1} MiB over idle; {} B values)",
                mib(rss),
                mib(rss.saturating_sub(idle)),
                MEMORY_VALUE_BYTES
            ),
        );
        figures.push(json!({
            "values": step, "rss_kib": rss, "rss_mib": round1(mib(rss)),
            "anon_kib": anon, "file_kib": file,
        }));
    }
    Ok(json!({"value_bytes": MEMORY_VALUE_BYTES, "steps": figures}))
}

/// The unit of `/proc/PID/stat`'s CPU times (`USER_HZ`, 100 on Linux).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// CPU time a process has used, user and system, all its threads, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // After the command name (in parentheses, which may hold spaces): state is field 3,
    // utime and stime fields 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let tick = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    match (tick(14), tick(15)) {
        (Some(user), Some(system)) => Ok(user + system),
        _ => bail!("no CPU times in /proc/{pid}/stat"),
    }
}

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS")
}

/// A `... kB` line of `/proc/PID/status`.
fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// How the resident memory splits: heap and stacks (`RssAnon`) and the mapped binary and
/// libraries (`RssFile`), in KiB.
fn rss_split(pid: u32) -> anyhow::Result<(u64, u64)> {
    Ok((status_kib(pid, "RssAnon")?, status_kib(pid, "RssFile")?))
}

// ---------------------------------------------------------------------------------------
// (e) Layer zip
// ---------------------------------------------------------------------------------------

fn layer_figures() -> Value {
    let dist = bins::workspace_root().join("dist");
    let mut zips: Vec<(String, u64)> = std::fs::read_dir(&dist)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_layer = name.starts_with("lockbox-layer-") && name.ends_with(".zip");
            let size = entry.metadata().ok()?.len();
            is_layer.then_some((name, size))
        })
        .collect();
    zips.sort();
    if zips.is_empty() {
        row("layer zip", "not built: make layer");
        return Value::Null;
    }
    for (name, size) in &zips {
        row(
            name,
            &format!("{:.2} MiB ({size} bytes)", *size as f64 / 1_048_576.0),
        );
    }
    zips.into_iter()
        .map(|(name, size)| (name, json!(size)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

// ---------------------------------------------------------------------------------------
// (f) Rotator
// ---------------------------------------------------------------------------------------

/// One run of the layer-built rotator (`--input FILE`, as the schedule's payload) over
/// [`ROTATED_PARAMETERS`] SecureString parameters, through a counting proxy: wall time from
/// spawn to exit, and every AWS call it made, by operation.
async fn rotator_figures(moto: &Moto) -> anyhow::Result<Value> {
    let alias = "alias/lockbox-bench-rotate";
    let key = moto.create_cmk(alias).await?;
    let names: Vec<String> = (0..ROTATED_PARAMETERS)
        .map(|i| format!("/bench/rotate/p{i:03}"))
        .collect();
    stream::iter(names.iter())
        .map(|name| {
            let key = key.clone();
            async move {
                moto.put_param(
                    name,
                    "initial-value-to-rotate",
                    ParameterType::SecureString,
                    Some(&key),
                )
                .await
            }
        })
        .buffer_unordered(SEED_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;

    let proxy = Proxy::start(&moto.endpoint()).await?;
    let input = json!({
        "targets": {"paths": ["/bench/rotate/"]},
        "keyId": alias,
        "mode": "regenerate",
        "policy": {"length": 32},
        "rotationId": "2026-01-01T00:00:00Z",
        "pace": {"writesPerSecond": ROTATOR_WRITES_PER_SECOND},
    });
    let dir = bins::workspace_root().join("bench-results");
    std::fs::create_dir_all(&dir)?;
    // A .tmp name, so the file is ignored by git if the run is interrupted.
    let file = dir.join("rotator-input.json.tmp");
    std::fs::write(&file, input.to_string())?;
    let began = Instant::now();
    let output = Command::new(bins::rotator_bin()?)
        .arg("--input")
        .arg(&file)
        .env_clear()
        .env("AWS_ENDPOINT_URL", proxy.endpoint())
        .env("AWS_REGION", lockbox_tests::moto::REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("running the rotator")?;
    let wall = began.elapsed();
    let _ = std::fs::remove_file(&file);
    if !output.status.success() {
        bail!(
            "the rotator failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let report: Value =
        serde_json::from_slice(&output.stdout).context("the rotator's report is not JSON")?;
    let rotated = report["results"].as_array().map_or(0, |results| {
        results.iter().filter(|r| r["outcome"] == "rotated").count()
    });
    if rotated != ROTATED_PARAMETERS {
        bail!("the rotator rotated {rotated} of {ROTATED_PARAMETERS}: {report}");
    }
    let mut by_operation: Vec<(String, usize)> = proxy.call_counts().into_iter().collect();
    by_operation.sort();
    let calls = proxy.total();
    // What the pace limits: every call that changes something.
    let writes: usize = by_operation
        .iter()
        .filter(|(op, _)| {
            WRITE_OPERATION_PREFIXES
                .iter()
                .any(|verb| op.starts_with(verb))
        })
        .map(|(_, n)| n)
        .sum();
    let paced_default = writes as f64 / ROTATOR_DEFAULT_WRITES_PER_SECOND;
    let ops_text = by_operation
        .iter()
        .map(|(op, n)| format!("{op} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    row(
        "wall time",
        &format!(
            "{} ms, spawn to exit ({rotated} rotated; pace {ROTATOR_WRITES_PER_SECOND} \
             writes/s)",
            ms(wall)
        ),
    );
    row(
        "AWS calls",
        &format!(
            "{calls}, {:.2} a parameter ({ops_text})",
            calls as f64 / ROTATED_PARAMETERS as f64
        ),
    );
    let per_call = calls as f64 / ROTATED_PARAMETERS as f64;
    let per_write = writes as f64 / ROTATED_PARAMETERS as f64;
    row(
        "per parameter",
        &format!(
            "{per_call:.2} calls, {per_write:.2} writes (were \
             {ROTATOR_BEFORE_CALLS_PER_PARAMETER} calls, {ROTATOR_BEFORE_WRITES_PER_PARAMETER} \
             writes)"
        ),
    );
    row(
        "at the default pace",
        &format!(
            "{writes} writes at {ROTATOR_DEFAULT_WRITES_PER_SECOND} writes/s: at least \
             {paced_default:.0} s"
        ),
    );
    Ok(json!({
        "parameters": ROTATED_PARAMETERS,
        "rotated": rotated,
        "writes_per_second": ROTATOR_WRITES_PER_SECOND,
        "wall_ms": ms_f(wall),
        "aws_calls": calls,
        "aws_calls_by_operation": by_operation
            .iter()
            .map(|(op, n)| (op.clone(), json!(n)))
            .collect::<serde_json::Map<_, _>>(),
        "writes": writes,
        "calls_per_parameter": round3(per_call),
        "writes_per_parameter": round3(per_write),
        "calls_per_parameter_before": ROTATOR_BEFORE_CALLS_PER_PARAMETER,
        "writes_per_parameter_before": ROTATOR_BEFORE_WRITES_PER_PARAMETER,
        "default_pace_min_seconds": round1(paced_default),
    }))
}

// ---------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------

fn section(title: &str) {
    println!();
    println!("{title}");
}

fn row(label: &str, text: &str) {
    println!("  {label:<26}{text}");
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn ms_f(d: Duration) -> f64 {
    round1(d.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Writes through a `.tmp` file and a rename, so a reader never sees half a file.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut tmp = PathBuf::from(path);
    tmp.set_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// What the figures were taken on.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, model)| model.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let memory_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_default();
    json!({
        "cpu": cpu,
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "memory_mib": memory_kib / 1024,
        "kernel": kernel,
        "arch": std::env::consts::ARCH,
    })
}

/// The current time as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Bars of p50, p99 and p99.9 per scenario (lockbox and the bare server on one thread and
/// on all threads, at each connection count), on a logarithmic microsecond scale.
fn latency_svg(results: &Value) -> String {
    let mut groups: Vec<(String, [f64; 3])> = Vec::new();
    for run in results["cache_hits"]["runs"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for (key, label) in HIT_SERVERS {
            let r = &run[key];
            groups.push((
                format!("{label}, {} conn", run["connections"]),
                [
                    r["p50_us"].as_f64().unwrap_or(0.0),
                    r["p99_us"].as_f64().unwrap_or(0.0),
                    r["p99_9_us"].as_f64().unwrap_or(0.0),
                ],
            ));
        }
    }
    let (width, height) = (1000.0, 380.0);
    let (left, right, top, bottom) = (60.0, 20.0, 40.0, 70.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let max = groups
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(10.0_f64, f64::max);
    let decades = max.log10().ceil().max(1.0);
    let y = |us: f64| top + plot_h * (1.0 - us.max(1.0).log10() / decades);
    let colors = ["#4c78a8", "#f58518", "#e45756"];
    let names = ["p50", "p99", "p99.9"];

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        svg,
        r##"<rect width="100%" height="100%" fill="#ffffff"/><text x="{left}" y="22" font-size="14">lockbox cache-hit latency (µs, log scale) vs a bare hyper server</text>"##
    );
    for decade in 0..=decades as u32 {
        let us = 10_f64.powi(decade as i32);
        let yy = y(us);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#dddddd"/><text x="{}" y="{:.1}" text-anchor="end">{us}</text>"##,
            width - right,
            left - 6.0,
            yy + 4.0
        );
    }
    let group_w = plot_w / groups.len().max(1) as f64;
    let bar_w = group_w / 4.0;
    for (g, (label, values)) in groups.iter().enumerate() {
        let x0 = left + g as f64 * group_w + bar_w / 2.0;
        for (i, value) in values.iter().enumerate() {
            let x = x0 + i as f64 * bar_w;
            let yy = y(*value);
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{yy:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{label} {}: {value:.1} µs</title></rect>"#,
                bar_w - 2.0,
                top + plot_h - yy,
                colors[i],
                names[i]
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="9">{value:.0}</text>"#,
                x + bar_w / 2.0 - 1.0,
                yy - 3.0
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            x0 + 1.5 * bar_w,
            top + plot_h + 16.0
        );
    }
    for (i, name) in names.iter().enumerate() {
        let x = left + i as f64 * 80.0;
        let yy = height - 22.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{}" y="{yy:.1}">{name}</text>"#,
            yy - 10.0,
            colors[i],
            x + 16.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}
