//! The `fleet` section: N environments of one function start at once against moto behind a
//! proxy that enforces the account's read quotas (Parameter Store 40 a second), with
//! prefetch and without; each one's first invoke reads its 10 SecureString parameters and
//! 2 secrets at once. Reports Init, reads, AWS calls, throttling and the time until the
//! whole fleet has its values; projects the calls to 1,000 and 10,000 environments; draws
//! `bench-results/fleet.svg`.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use lockbox_tests::fleet::{self, FleetOptions, FleetRun, FleetValues, Projection};
use lockbox_tests::proxy::AWS_READ_QUOTAS;
use lockbox_tests::{bins, Moto};
use serde_json::{json, Value};

use super::{ms_f, round1, row, write_atomically};

/// Environments started at once, unless `LOCKBOX_BENCH_FLEET` says otherwise.
const DEFAULT_ENVIRONMENTS: usize = 200;
/// Fleet sizes the measured calls are projected to.
const PROJECTED: [usize; 2] = [1_000, 10_000];
/// The extension's default Init budget for prefetch (`LOCKBOX_PREFETCH_TIMEOUT_MS`).
const PREFETCH_BUDGET: Duration = Duration::from_millis(2000);
/// How far past its prefetch budget an Init may end.
const INIT_SLACK: Duration = Duration::from_millis(100);

pub(crate) async fn figures(moto: &Moto) -> anyhow::Result<Value> {
    let environments = match std::env::var("LOCKBOX_BENCH_FLEET") {
        Ok(n) => n
            .parse()
            .with_context(|| format!("LOCKBOX_BENCH_FLEET={n:?} is not a whole number"))?,
        Err(_) => DEFAULT_ENVIRONMENTS,
    };
    let values = FleetValues::seed(moto, "bench").await?;
    let ssm = AWS_READ_QUOTAS[0];
    let floor = environments as f64 / ssm.per_second;
    row(
        "fleet",
        &format!(
            "{environments} environments at once, {} parameters and {} secrets each; \
             Parameter Store quota {} calls/s (floor: {} calls, {floor:.1} s)",
            fleet::PARAMETERS,
            fleet::SECRETS,
            ssm.per_second,
            environments
        ),
    );

    let mut runs = Vec::new();
    for prefetch in [true, false] {
        let options = FleetOptions {
            environments,
            prefetch,
            env: Vec::new(),
            quotas: AWS_READ_QUOTAS.to_vec(),
        };
        let run = fleet::run(moto, &values, &options).await?;
        print_run(&run, floor);
        runs.push(run);
    }
    let (with, without) = (&runs[0], &runs[1]);
    let init_max = with.init.last().copied().unwrap_or_default();
    let targets = json!({
        "failed_reads": {"target": 0, "measured": with.reads_failed,
            "met": with.reads_failed == 0},
        "ssm_calls": {"target": 2 * environments, "measured": with.ssm_calls(),
            "met": with.ssm_calls() <= 2 * environments},
        "all_values_s": {"target": round1(1.5 * floor),
            "measured": with.all_values.map(|d| round1(d.as_secs_f64())),
            "met": with.all_values.is_some_and(|d| d.as_secs_f64() <= 1.5 * floor)},
        "init_max_ms": {"target": ms_f(PREFETCH_BUDGET + INIT_SLACK),
            "measured": ms_f(init_max), "met": init_max <= PREFETCH_BUDGET + INIT_SLACK},
    });
    println!("  targets (prefetch on):");
    for (name, target) in targets.as_object().into_iter().flatten() {
        row(
            &format!("  {name}"),
            &format!(
                "{} (target {}): {}",
                target["measured"],
                target["target"],
                if target["met"] == true {
                    "met"
                } else {
                    "MISSED"
                }
            ),
        );
    }
    let one_call_per_read = environments * fleet::PARAMETERS;
    row(
        "prefetch off",
        &format!(
            "{} Parameter Store calls, {:.1}x fewer than one call per read ({one_call_per_read})",
            without.ssm_calls(),
            one_call_per_read as f64 / without.ssm_calls().max(1) as f64
        ),
    );

    let mut projections = Vec::new();
    for run in &runs {
        let projected = fleet::project(run, ssm, &PROJECTED);
        for p in &projected {
            row(
                &format!(
                    "  {} env, prefetch {}",
                    p.environments,
                    if run.prefetch { "on" } else { "off" }
                ),
                &format!(
                    "{:.0} SSM calls ({:.0} with throttled), at least {:.0} s (floor {:.0} s)",
                    p.ssm_calls, p.ssm_attempts, p.seconds, p.floor_seconds
                ),
            );
        }
        projections.push(projected);
    }

    let dir = bins::workspace_root().join("bench-results");
    std::fs::create_dir_all(&dir)?;
    let chart = dir.join("fleet.svg");
    write_atomically(&chart, &chart_svg(&runs, &projections))?;
    row("chart", &chart.display().to_string());

    Ok(json!({
        "environments": environments,
        "parameters_each": fleet::PARAMETERS,
        "secrets_each": fleet::SECRETS,
        "ssm_quota_per_second": ssm.per_second,
        "floor_calls": environments,
        "floor_seconds": round1(floor),
        "prefetch_on": run_json(with),
        "prefetch_off": run_json(without),
        "targets": targets,
        "projections": runs.iter().zip(&projections).map(|(run, projected)| json!({
            "prefetch": run.prefetch,
            "sizes": projected.iter().map(projection_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    }))
}

fn print_run(run: &FleetRun, floor: f64) {
    let label = if run.prefetch {
        "prefetch on"
    } else {
        "prefetch off"
    };
    let ms = |p: f64| run.init_percentile(p).map_or(0.0, ms_f);
    row(
        label,
        &format!(
            "Init p50 {} ms, p99 {} ms, max {} ms{}",
            ms(50.0),
            ms(99.0),
            ms(100.0),
            if run.init_failed > 0 {
                format!(", {} Init failed", run.init_failed)
            } else {
                String::new()
            }
        ),
    );
    let failures = run
        .failures
        .iter()
        .map(|(why, n)| format!("{n} {why}"))
        .collect::<Vec<_>>()
        .join(", ");
    row(
        "  reads",
        &format!(
            "{} ok, {} failed{}",
            run.reads_ok,
            run.reads_failed,
            if failures.is_empty() {
                String::new()
            } else {
                format!(" ({failures})")
            }
        ),
    );
    let ops = run
        .calls
        .iter()
        .map(|(op, n)| {
            let throttled = run.throttled.get(op).copied().unwrap_or(0);
            format!("{op} {n} ({throttled} throttled)")
        })
        .collect::<Vec<_>>()
        .join(", ");
    row(
        "  AWS calls",
        &format!(
            "SSM {} ({} throttled; floor {}); {ops}",
            run.ssm_calls(),
            run.ssm_throttled(),
            run.environments
        ),
    );
    row(
        "  fleet has its values",
        &match run.all_values {
            Some(all) => format!(
                "after {:.2} s ({:.2}x the quota floor)",
                all.as_secs_f64(),
                all.as_secs_f64() / floor
            ),
            None => "never: some reads failed".to_owned(),
        },
    );
}

fn run_json(run: &FleetRun) -> Value {
    let ms = |p: f64| run.init_percentile(p).map(ms_f);
    json!({
        "init_p50_ms": ms(50.0),
        "init_p99_ms": ms(99.0),
        "init_max_ms": ms(100.0),
        "init_failed": run.init_failed,
        "reads_ok": run.reads_ok,
        "reads_failed": run.reads_failed,
        "failures": run.failures,
        "aws_calls_by_operation": run.calls,
        "throttled_by_operation": run.throttled,
        "ssm_calls": run.ssm_calls(),
        "ssm_throttled": run.ssm_throttled(),
        "all_values_s": run.all_values.map(|d| (d.as_secs_f64() * 100.0).round() / 100.0),
    })
}

fn projection_json(p: &Projection) -> Value {
    json!({
        "environments": p.environments,
        "ssm_calls": p.ssm_calls.round(),
        "ssm_calls_with_throttled": p.ssm_attempts.round(),
        "seconds_at_quota": round1(p.seconds),
        "floor_seconds": round1(p.floor_seconds),
    })
}

/// Parameter Store calls of a fleet cold start by fleet size (measured at N, projected
/// beyond), prefetch on and off beside the floor of one call per environment, on a
/// logarithmic scale; each bar says how long the 40-a-second quota makes it take.
fn chart_svg(runs: &[FleetRun], projections: &[Vec<Projection>]) -> String {
    let Some(first) = runs.first() else {
        return String::new();
    };
    let sizes: Vec<usize> = std::iter::once(first.environments)
        .chain(PROJECTED)
        .collect();
    let quota = AWS_READ_QUOTAS[0];
    let seconds = |calls: f64| ((calls - quota.burst).max(0.0) / quota.per_second).max(0.0);
    // (label, colour, calls at each size)
    let mut series: Vec<(String, &str, Vec<f64>)> = Vec::new();
    for ((run, projected), colour) in runs.iter().zip(projections).zip(["#4c78a8", "#e45756"]) {
        let measured = run.ssm_calls().saturating_sub(run.ssm_throttled()) as f64;
        let mut calls = vec![measured];
        calls.extend(projected.iter().map(|p| p.ssm_calls));
        let label = if run.prefetch {
            "lockbox, prefetch on"
        } else {
            "lockbox, prefetch off"
        };
        series.push((label.to_owned(), colour, calls));
    }
    series.push((
        "floor: one call per environment".to_owned(),
        "#54a24b",
        sizes.iter().map(|&n| n as f64).collect(),
    ));
    let one_per_read: Vec<f64> = sizes
        .iter()
        .map(|&n| (n * fleet::PARAMETERS) as f64)
        .collect();
    series.push(("one call per read".to_owned(), "#bab0ac", one_per_read));

    let (width, height) = (820.0, 420.0);
    let (left, right, top, bottom) = (70.0, 20.0, 50.0, 80.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let max = series
        .iter()
        .flat_map(|(_, _, v)| v.iter().copied())
        .fold(10.0_f64, f64::max);
    let decades = max.log10().ceil().max(1.0);
    let y = |calls: f64| top + plot_h * (1.0 - calls.max(1.0).log10() / decades);

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        svg,
        r##"<rect width="100%" height="100%" fill="#ffffff"/><text x="{left}" y="20" font-size="14">Parameter Store calls of a fleet cold start (log scale): measured at {} environments, projected beyond</text><text x="{left}" y="36">Label: calls / seconds at the 40-a-second quota. 10 parameters and 2 secrets per environment.</text>"##,
        first.environments
    );
    for decade in 0..=decades as u32 {
        let calls = 10_f64.powi(decade as i32);
        let yy = y(calls);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#dddddd"/><text x="{}" y="{:.1}" text-anchor="end">{calls}</text>"##,
            width - right,
            left - 6.0,
            yy + 4.0
        );
    }
    let group_w = plot_w / sizes.len() as f64;
    let bar_w = group_w / (series.len() as f64 + 1.0);
    for (g, size) in sizes.iter().enumerate() {
        let x0 = left + g as f64 * group_w + bar_w / 2.0;
        for (i, (label, colour, calls)) in series.iter().enumerate() {
            let value = calls[g];
            let x = x0 + i as f64 * bar_w;
            let yy = y(value);
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{yy:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{label}, {size} environments: {value:.0} calls, {:.0} s</title></rect>"#,
                bar_w - 3.0,
                top + plot_h - yy,
                seconds(value)
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="9">{value:.0}/{:.0}s</text>"#,
                x + bar_w / 2.0 - 1.5,
                yy - 3.0,
                seconds(value)
            );
        }
        let kind = if g == 0 { "measured" } else { "projected" };
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{size} environments ({kind})</text>"#,
            x0 + bar_w * series.len() as f64 / 2.0,
            top + plot_h + 16.0
        );
    }
    for (i, (label, colour, _)) in series.iter().enumerate() {
        let x = left + (i % 2) as f64 * 300.0;
        let yy = height - 34.0 + (i / 2) as f64 * 16.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="{:.1}" width="12" height="12" fill="{colour}"/><text x="{}" y="{yy:.1}">{label}</text>"#,
            yy - 10.0,
            x + 16.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}
