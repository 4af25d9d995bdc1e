//! `lockbox-rotator`: the rotation Lambda, or one rotation from the shell.
//!
//! Reads settings, sets up JSON logging and the AWS clients, then hands the event to
//! [`lockbox_rotator::Rotator`]. See `--help`.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use lockbox_rotator::{Clients, Invocation, Rotator, SecretsConfig, Settings};
use serde_json::Value;

const HELP: &str = "\
lockbox-rotator: rotate SSM SecureString parameters under a customer-managed KMS key.

USAGE:
    lockbox-rotator                 run as a Lambda function (EventBridge schedule input,
                                    or a Secrets Manager rotation event)
    lockbox-rotator --input FILE    run one rotation with the JSON input in FILE and print
                                    the JSON result on stdout
    lockbox-rotator --input -       the same, reading the input from stdin
    lockbox-rotator --help          show this help

INPUT (the schedule's Input; unknown fields are an error):
    {
      \"targets\": {\"names\": [\"/app/db/password\"], \"paths\": [\"/app/prod/\"], \"tag\": \"lockbox:rotate\"},
      \"keyId\": \"alias/app-secrets\",
      \"mode\": \"regenerate\",            regenerate | reencrypt
      \"policy\": {\"length\": 32, \"classes\": [\"upper\", \"lower\", \"digits\", \"symbols\"],
                 \"exclude\": \"/@\\\"'\\\\\", \"requireEachClass\": true},
      \"labels\": {\"current\": \"current\", \"previous\": \"previous\"},
      \"dryRun\": false,
      \"rotationId\": \"<aws.scheduler.scheduled-time>\",
      \"schedule\": \"<aws.scheduler.schedule-arn>\"
    }
    Optional: \"overrides\": {\"/name\": {\"policy\": {...}}}, \"randomSource\": \"os\" | \"kms\",
    \"pace\": {\"writesPerSecond\": 3, \"maxAttempts\": 8, \"baseDelayMs\": 200}.
    Another account or region: \"region\": \"eu-west-1\",
    \"assumeRole\": {\"roleArn\": \"arn:<partition>:iam::<account>:role/<name>\",
                   \"externalId\": \"...\", \"sessionName\": \"...\"}; every call (key gate
    included) then runs as that role, in that region.
    Staged rotation (values two parties share): \"staged\": {\"promoteAfterSeconds\": 86400}
    writes the new value as \"pending\"; a later run promotes it to \"current\".
    Opt-in selection: \"targets\": {\"paths\": [...], \"requireTag\": \"lockbox:rotate\"}.
    From the shell, rotationId defaults to the current second; reuse the printed
    rotationId to resume an interrupted run without writing again.

RESULT:
    {\"rotationId\": \"...\", \"results\": [{\"name\", \"oldVersion\", \"newVersion\", \"keyId\", \"mode\",
     \"outcome\": \"rotated|staged|promoted|unchanged|skipped|conflict|deferred|failed|dryRun\",
     \"reason\"}]}
    Exit status: 0 all good, 1 some parameter failed (result still printed),
    2 refused before any write (bad input, role not assumable, key gate, selection)
    or other error.

ENVIRONMENT:
    AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL, ...   the usual AWS SDK settings
    RUST_LOG                      log filter (default info); logs are JSON on stderr; the
                                  HTTP and AWS SDK libraries stay at info or less whatever
                                  it says
    LOCKBOX_LEASE_SECONDS         how long a rotation's lease on a parameter lasts
                                  (default 300, 1..=3600)
    LOCKBOX_DEADLINE_RESERVE_MS   no parameter is started this close to the Lambda
                                  deadline (default 60000); the rest is handed to the
                                  next invocation
    LOCKBOX_SECRET_POLICY         policy JSON for Secrets Manager rotation (default: 32
                                  characters, all classes, each required)
    LOCKBOX_SECRET_KEY_ID         customer-managed key for rotated secrets (default: keep
                                  each secret's own key)
    LOCKBOX_RANDOM_SOURCE         os (default) | kms, for Secrets Manager rotation

Values are never logged or printed.
";

/// One AWS call attempt may take this long; a stalled connection then fails (and a write
/// whose answer was lost is checked against the history) instead of eating the function's
/// whole timeout.
const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[allow(clippy::print_stdout)] // --help answers on stdout, like any command-line tool
fn print_help() {
    print!("{HELP}");
}

enum Command {
    Help,
    Once(String),
    Lambda,
}

fn parse_args() -> anyhow::Result<Command> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(Command::Lambda),
        [h] if h == "--help" || h == "-h" => Ok(Command::Help),
        [flag, file] if flag == "--input" => Ok(Command::Once(file.clone())),
        [flag] if flag == "--input" => anyhow::bail!("--input needs a FILE (or - for stdin)"),
        other => anyhow::bail!("unexpected arguments {other:?}; see --help"),
    }
}

fn read_input(file: &str) -> anyhow::Result<Value> {
    let text = if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the input from stdin")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
    };
    serde_json::from_str(&text).with_context(|| format!("{file} is not JSON"))
}

async fn rotator() -> anyhow::Result<Rotator> {
    let secrets = SecretsConfig::from_env().context("configuration")?;
    let settings = Settings::from_env().context("configuration")?;
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        )
        .load()
        .await;
    Ok(Rotator::new(Clients::new(&config), secrets).with_settings(settings))
}

#[allow(clippy::print_stdout)] // the result JSON on stdout is the shell mode's output
async fn once(file: &str) -> anyhow::Result<ExitCode> {
    let event = read_input(file)?;
    let rotator = rotator().await?;
    let now = time::OffsetDateTime::now_utc();
    match rotator.handle_at(event, Some(now)).await {
        Ok(response) => {
            println!("{:#}", response.to_json());
            Ok(ExitCode::SUCCESS)
        }
        Err(lockbox_rotator::Error::Failed(report)) => {
            println!("{:#}", report.to_json());
            eprintln!(
                "lockbox-rotator: {} parameter(s) failed",
                report.failures().count()
            );
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            eprintln!("lockbox-rotator: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

async fn lambda() -> anyhow::Result<()> {
    let rotator = std::sync::Arc::new(rotator().await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let rotator = rotator.clone();
        async move {
            let invocation = Invocation {
                deadline: Some(event.context.deadline()),
                function_arn: Some(event.context.invoked_function_arn.clone()),
                fallback_time: None,
            };
            rotator
                .handle_in(event.payload, &invocation)
                .await
                .map(|r| r.to_json())
                .map_err(|e| Diagnostic {
                    error_type: e.kind().to_owned(),
                    error_message: e.to_string(),
                })
        }
    }))
    .await
    .map_err(|e| anyhow::anyhow!(e))
}

#[tokio::main]
async fn main() -> ExitCode {
    let command = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lockbox-rotator: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Command::Help = command {
        print_help();
        return ExitCode::SUCCESS;
    }
    lockbox_rotator::logging::init();
    let result = match command {
        Command::Once(file) => once(&file).await,
        Command::Lambda => lambda().await.map(|()| ExitCode::SUCCESS),
        Command::Help => unreachable!("handled above"),
    };
    result.unwrap_or_else(|e| {
        eprintln!("lockbox-rotator: {e:#}");
        ExitCode::from(2)
    })
}
