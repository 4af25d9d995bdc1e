//! `make demo`: lockbox end to end on this machine, no AWS account needed.
//!
//! Starts moto (the local AWS) behind a counting proxy, creates a customer-managed KMS key,
//! a SecureString and a String parameter and a JSON secret, runs the real extension under
//! the Lambda sandbox, invokes a sample function three times and shows what the function
//! read and which AWS calls each invoke cost: misses the first time, cache hits after.
//!
//! Then a rotation: the real `lockbox-rotator` binary gives the SecureString a new value
//! under the same key while the function keeps being invoked, and the demo shows the
//! function reading the old version from the cache, then the new one once the (short, for
//! the demo) TTL has run out. Secrets appear only as a length and a SHA-256 prefix.
#![allow(
    clippy::print_stdout,
    reason = "a demo's output is its purpose; it goes to the terminal, not to CloudWatch"
)]

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use aws_sdk_ssm::types::ParameterType;
use lockbox_tests::bins::rotator_bin;
use lockbox_tests::client::ExtClient;
use lockbox_tests::sandbox::Sandbox;
use lockbox_tests::{lockbox_builder, Moto, Proxy, INIT_TIMEOUT};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

const KEY_ALIAS: &str = "alias/lockbox-demo";
const PASSWORD_NAME: &str = "/demo/db/password";
const FLAGS_NAME: &str = "/demo/feature-flags";
const SECRET_ID: &str = "demo/api";
const INVOKES: usize = 3;
/// The AWS operations the sample function can cause.
const OPERATIONS: [&str; 2] = ["GetParameter", "GetSecretValue"];
/// The extension's SSM TTL in the demo (the default is 300 s): short, so the rotated value
/// reaches the function within seconds.
const DEMO_SSM_TTL_SECS: u64 = 3;
/// How long the demo waits for the rotated value to reach the function before giving up.
const ROTATION_DEADLINE: Duration = Duration::from_secs(30);
/// Time between two invokes while waiting: a function called four times a second.
const INVOKE_INTERVAL: Duration = Duration::from_millis(250);
/// How long the rotator may take (it usually needs about a second).
const ROTATOR_TIMEOUT: Duration = Duration::from_secs(60);

/// One value the sample function read.
struct Read {
    what: &'static str,
    outcome: Result<Shown, String>,
}

/// A value as it may be printed.
enum Shown {
    /// A secret: only its first characters and length.
    Masked(String),
    /// A plain value, in full.
    Plain(String),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!("lockbox demo: the extension, a local AWS and a Lambda sandbox, all on 127.0.0.1");
    println!();

    let moto = Moto::start().await?;
    let proxy = Proxy::start(&moto.endpoint()).await?;
    row("local AWS", &format!("moto at {}", moto.endpoint()));
    row(
        "",
        &format!("seen through a counting proxy at {}", proxy.endpoint()),
    );

    let key_id = moto.create_cmk(KEY_ALIAS).await?;
    moto.put_param(
        PASSWORD_NAME,
        "correct-horse-battery-staple",
        ParameterType::SecureString,
        Some(&key_id),
    )
    .await?;
    moto.put_param(
        FLAGS_NAME,
        r#"{"newCheckout":true,"darkMode":false}"#,
        ParameterType::String,
        None,
    )
    .await?;
    moto.create_secret(
        SECRET_ID,
        r#"{"ConnectionString":"Server=orders-db.internal;Database=orders;User Id=app;Password=Tr0ub4dor&3"}"#,
    )
    .await?;
    row("seeded", &format!("KMS key {KEY_ALIAS} ({key_id})"));
    row(
        "",
        &format!("parameter  {PASSWORD_NAME:<22}SecureString under {KEY_ALIAS}"),
    );
    row("", &format!("parameter  {FLAGS_NAME:<22}String"));
    row("", &format!("secret     {SECRET_ID:<22}JSON"));

    let (builder, client) = lockbox_builder(&proxy.endpoint())?;
    let sandbox = builder
        .env("PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL", "info")
        .env("SSM_PARAMETER_STORE_TTL", DEMO_SSM_TTL_SECS.to_string())
        .start()
        .await?;
    let registration = sandbox.wait_registered(INIT_TIMEOUT).await?;
    let init = sandbox
        .wait_init_done(INIT_TIMEOUT)
        .await
        .context("the extension did not finish Init")?;
    row(
        "extension",
        &format!(
            "registered as {:?} for {}; Init done {} after start",
            registration.name,
            registration.events.join(", "),
            millis(init)
        ),
    );
    row(
        "",
        &format!(
            "serving http://127.0.0.1:{} to function code",
            client.port()
        ),
    );

    for invoke in 1..=INVOKES {
        proxy.reset_counts();
        let started = Instant::now();
        let reads = sandbox
            .invoke_with(|| sample_function(client.clone()))
            .await?;
        let took = started.elapsed();
        println!();
        println!(
            "invoke {invoke} of {INVOKES}  ({} for the function's reads)",
            millis(took)
        );
        for read in &reads {
            let shown = match &read.outcome {
                Ok(Shown::Masked(value)) => mask(value),
                Ok(Shown::Plain(value)) => value.clone(),
                Err(error) => format!("FAILED: {error}"),
            };
            println!("  {:<22}{shown}", read.what);
        }
        println!("  {:<22}{}", "AWS calls", aws_calls(&proxy, reads.len()));
    }

    println!();
    rotation(&sandbox, &client, &proxy).await?;

    println!();
    let (status, took) = sandbox.shutdown(Duration::from_secs(5)).await?;
    row(
        "shutdown",
        &format!("{status} after {} (Lambda allows 2000 ms)", millis(took)),
    );
    finish(sandbox, moto);
    Ok(())
}

/// The password as the function saw it in one invoke: never the value itself.
struct Seen {
    version: i64,
    chars: usize,
    fingerprint: String,
    /// `X-Lockbox-Cache`: `hit` or `miss`.
    cache: String,
}

impl Seen {
    fn describe(&self) -> String {
        format!(
            "version {}, sha256 {} ({} chars)",
            self.version, self.fingerprint, self.chars
        )
    }
}

/// The rotation act: read, rotate with the real rotator binary, read until the new
/// version arrives.
async fn rotation(sandbox: &Sandbox, client: &ExtClient, proxy: &Proxy) -> anyhow::Result<()> {
    println!("rotation      {PASSWORD_NAME}: lockbox-rotator writes a new value under {KEY_ALIAS}");
    println!(
        "              while the function keeps reading it (SSM TTL {DEMO_SSM_TTL_SECS} s for the demo)"
    );
    let before = sandbox
        .invoke_with(|| read_password(client.clone(), PASSWORD_NAME.to_owned()))
        .await??;
    println!("  {:<22}{}", "function reads", before.describe());

    proxy.reset_counts();
    let run = run_rotator(&proxy.endpoint()).await?;
    let rotated_at = Instant::now();
    println!(
        "  {:<22}lockbox-rotator --input - exited {} after {}",
        "rotator runs",
        run.status,
        millis(run.took)
    );
    for (i, line) in wrap(&all_calls(proxy), 72).iter().enumerate() {
        println!("  {:<22}{line}", if i == 0 { "its AWS calls" } else { "" });
    }
    println!(
        "  {:<22}(names, versions, key; never a value):",
        "its result"
    );
    for line in run.stdout.lines() {
        println!("  {:<22}  {line}", "");
    }

    // Invoke the function until it sees the new version; until the cached entry expires
    // it keeps getting the old one, which is why both must stay valid for one TTL.
    proxy.reset_counts();
    let deadline = rotated_at + ROTATION_DEADLINE;
    let mut cached_reads = 0;
    let after = loop {
        let seen = sandbox
            .invoke_with(|| read_password(client.clone(), PASSWORD_NAME.to_owned()))
            .await??;
        if seen.version > before.version {
            break seen;
        }
        cached_reads += 1;
        if Instant::now() >= deadline {
            bail!(
                "the function still read version {} {} after the rotation",
                seen.version,
                millis(ROTATION_DEADLINE)
            );
        }
        tokio::time::sleep(INVOKE_INTERVAL).await;
    };
    println!(
        "  {:<22}{cached_reads} more invokes read version {} from the cache",
        "until its TTL ends", before.version
    );
    println!(
        "  {:<22}{}, {:.1} s after the rotation",
        "function reads",
        after.describe(),
        rotated_at.elapsed().as_secs_f64()
    );
    // Refresh ahead fetches in batches (GetParameters) at the start of an invoke, so the
    // new version usually arrives as a hit; name whatever calls fetched it.
    let fetched = all_calls(proxy);
    println!(
        "  {:<22}X-Lockbox-Cache: {}; fetched meanwhile with {}",
        "",
        after.cache,
        if fetched.is_empty() {
            "no AWS call"
        } else {
            &fetched
        }
    );
    let previous = format!("{PASSWORD_NAME}:previous");
    let old = sandbox
        .invoke_with(|| read_password(client.clone(), previous.clone()))
        .await??;
    println!("  {:<22}{}", "and :previous", old.describe());
    println!(
        "  {:<22}the old value stays readable while consumers switch over",
        ""
    );
    Ok(())
}

/// `text` cut at ", " into lines of at most about `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for item in text.split(", ") {
        let line = lines.last_mut().expect("never empty");
        if line.is_empty() {
            line.push_str(item);
        } else if line.len() + 2 + item.len() <= width {
            line.push_str(", ");
            line.push_str(item);
        } else {
            line.push(',');
            lines.push(item.to_owned());
        }
    }
    lines
}

/// One read of the password (`name`, or `name:label`) through the extension, as function
/// code does it.
async fn read_password(client: ExtClient, name: String) -> anyhow::Result<Seen> {
    let response = client
        .get_parameter(&name, &[("withDecryption", "true")])
        .await?;
    if response.status != 200 {
        // The error type only: an error body never holds a value, but say less anyway.
        bail!(
            "reading {name}: HTTP {} {}",
            response.status,
            response.error_type().unwrap_or_default()
        );
    }
    let body = response.json()?;
    let parameter = &body["Parameter"];
    let value = parameter["Value"].as_str().context("no Parameter.Value")?;
    Ok(Seen {
        version: parameter["Version"]
            .as_i64()
            .context("no Parameter.Version")?,
        chars: value.chars().count(),
        fingerprint: fingerprint(value),
        cache: response
            .header("x-lockbox-cache")
            .unwrap_or("(no X-Lockbox-Cache)")
            .to_owned(),
    })
}

/// What the rotator binary did.
struct RotatorRun {
    /// The exit code (0: every parameter rotated).
    status: i32,
    took: Duration,
    /// The JSON result: names, versions, key, outcome; never a value.
    stdout: String,
}

/// Runs the real `lockbox-rotator --input -` against `endpoint`, with only the settings a
/// deployment would give it: nothing from this shell's AWS configuration can leak in.
async fn run_rotator(endpoint: &str) -> anyhow::Result<RotatorRun> {
    let input = json!({
        "targets": {"names": [PASSWORD_NAME]},
        "keyId": KEY_ALIAS,
        "mode": "regenerate",
        "policy": {"length": 32, "exclude": "\"'\\`"},
    });
    let started = Instant::now();
    let mut child = tokio::process::Command::new(rotator_bin()?)
        .args(["--input", "-"])
        .env_clear()
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", lockbox_tests::moto::REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting lockbox-rotator")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.to_string().as_bytes()).await?;
    }
    let out = tokio::time::timeout(ROTATOR_TIMEOUT, child.wait_with_output())
        .await
        .context("lockbox-rotator did not finish")??;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        // The rotator's own output never holds a value, so it can be shown as it is.
        bail!(
            "lockbox-rotator failed ({}):\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(RotatorRun {
        status: out.status.code().unwrap_or(-1),
        took: started.elapsed(),
        stdout,
    })
}

/// Every operation the proxy saw, by name: "AddTagsToResource x1, DescribeKey x1, ...".
fn all_calls(proxy: &Proxy) -> String {
    let mut calls: Vec<(String, usize)> = proxy.call_counts().into_iter().collect();
    calls.sort();
    calls
        .iter()
        .map(|(op, n)| format!("{op} x{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first 8 hex digits of the value's SHA-256: enough to tell two values apart.
fn fingerprint(value: &str) -> String {
    Sha256::digest(value.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The sample function's code: what a handler does with the extension, over plain HTTP.
async fn sample_function(client: ExtClient) -> Vec<Read> {
    let password = client
        .get_parameter(PASSWORD_NAME, &[("withDecryption", "true")])
        .await;
    let flags = client.get_parameter(FLAGS_NAME, &[]).await;
    let secret = client.get_secret(SECRET_ID, &[]).await;
    vec![
        Read {
            what: PASSWORD_NAME,
            outcome: field(password, &["Parameter", "Value"]).map(Shown::Masked),
        },
        Read {
            what: FLAGS_NAME,
            outcome: field(flags, &["Parameter", "Value"]).map(Shown::Plain),
        },
        Read {
            what: SECRET_ID,
            outcome: field(secret, &["SecretString"]).map(Shown::Masked),
        },
    ]
}

/// Pulls a string out of a JSON answer, or says why it is not there.
fn field(
    response: anyhow::Result<lockbox_tests::Response>,
    path: &[&str],
) -> Result<String, String> {
    let response = response.map_err(|err| format!("{err:#}"))?;
    let body: Value = response
        .json()
        .map_err(|_| format!("HTTP {}: {}", response.status, response.body))?;
    if response.status != 200 {
        return Err(format!(
            "HTTP {} {}",
            response.status,
            body["__type"].as_str().unwrap_or("(no __type)")
        ));
    }
    path.iter()
        .fold(&body, |node, key| &node[*key])
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no {} in the answer", path.join(".")))
}

/// "GetParameter x2, GetSecretValue x1: 3 misses" or "none: 3 cache hits".
fn aws_calls(proxy: &Proxy, reads: usize) -> String {
    let made: Vec<(&str, usize)> = OPERATIONS
        .iter()
        .map(|op| (*op, proxy.calls(op)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let total: usize = made.iter().map(|(_, n)| n).sum();
    if made.is_empty() {
        return format!("none: {reads} of {reads} reads were cache hits");
    }
    let list = made
        .iter()
        .map(|(op, n)| format!("{op} x{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let hits = reads.saturating_sub(total);
    format!("{list}: {total} cache misses, {hits} hits")
}

/// A fingerprint and the length: enough to tell values apart, nothing of the value itself.
fn mask(value: &str) -> String {
    format!(
        "sha256 {} ({} chars, masked)",
        fingerprint(value),
        value.chars().count()
    )
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

fn row(label: &str, text: &str) {
    println!("{label:<14}{text}");
}

/// Stops the extension's sandbox and moto, and says so.
fn finish(sandbox: Sandbox, moto: Moto) {
    drop(sandbox);
    moto.stop();
    row("cleanup", "sandbox and moto stopped; nothing left running");
}
