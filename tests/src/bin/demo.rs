//! `make demo`: lockbox end to end on this machine, no AWS account needed.
//!
//! Starts moto (the local AWS) behind a counting proxy, creates a customer-managed KMS key,
//! a SecureString and a String parameter and a JSON secret, runs the real extension under
//! the Lambda sandbox, invokes a sample function three times and shows what the function
//! read and which AWS calls each invoke cost: misses the first time, cache hits after.
#![allow(
    clippy::print_stdout,
    reason = "a demo's output is its purpose; it goes to the terminal, not to CloudWatch"
)]

use std::time::Duration;

use anyhow::Context;
use aws_sdk_ssm::types::ParameterType;
use lockbox_tests::client::ExtClient;
use lockbox_tests::sandbox::Sandbox;
use lockbox_tests::{lockbox_builder, Moto, Proxy, INIT_TIMEOUT};
use serde_json::Value;
use tokio::time::Instant;

const KEY_ALIAS: &str = "alias/lockbox-demo";
const PASSWORD_NAME: &str = "/demo/db/password";
const FLAGS_NAME: &str = "/demo/feature-flags";
const SECRET_ID: &str = "demo/api";
const INVOKES: usize = 3;
/// The AWS operations the sample function can cause.
const OPERATIONS: [&str; 2] = ["GetParameter", "GetSecretValue"];

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
    let (status, took) = sandbox.shutdown(Duration::from_secs(5)).await?;
    row(
        "shutdown",
        &format!("{status} after {} (Lambda allows 2000 ms)", millis(took)),
    );
    finish(sandbox, moto);
    Ok(())
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

/// First two characters, an ellipsis and the length: enough to recognise, not to use.
fn mask(value: &str) -> String {
    let head: String = value.chars().take(2).collect();
    format!("{head}… ({} chars, masked)", value.chars().count())
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
    drop(moto);
    row("cleanup", "sandbox and moto stopped; nothing left running");
}
