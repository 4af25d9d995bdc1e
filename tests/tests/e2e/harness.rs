//! Checks the harness itself (moto fixture, counting/fault proxy, sandbox) without the
//! extension, so a harness bug never shows up as a product bug.

use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_ssm::types::ParameterType;
use lockbox_tests::proxy::{DownMode, Fault, Proxy};
use lockbox_tests::sandbox::{EventKind, Lifecycle, RuntimeOutcome, Sandbox};
use lockbox_tests::{random_hex, Moto};

const WAIT: Duration = Duration::from_secs(10);

/// An SSM client that goes through the proxy, retrying `max_attempts` times.
async fn ssm_via(moto: &Moto, proxy: &Proxy, max_attempts: u32) -> aws_sdk_ssm::Client {
    let config = aws_sdk_ssm::config::Builder::from(&moto.sdk_config().await)
        .endpoint_url(proxy.endpoint())
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(max_attempts))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_millis(500))
                .build(),
        )
        .build();
    aws_sdk_ssm::Client::from_conf(config)
}

#[tokio::test(flavor = "multi_thread")]
async fn moto_serves_ssm_and_resets_clean() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let version = moto
        .put_param("/self/a", "one", ParameterType::String, None)
        .await?;
    assert_eq!(version, 1);
    let key = moto.create_cmk("self-check").await?;
    moto.put_param("/self/s", "hush", ParameterType::SecureString, Some(&key))
        .await?;
    let secret = moto.create_secret("self/secret", "{\"a\":1}").await?;
    assert!(secret.arn.starts_with("arn:aws:secretsmanager:us-east-1:"));

    moto.reset().await?;
    let gone = moto.ssm().get_parameter().name("/self/a").send().await;
    assert!(gone.is_err(), "reset must clear parameters");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_counts_operations_and_injects_faults() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    moto.put_param("/self/p", "value", ParameterType::String, None)
        .await?;
    let proxy = Proxy::start(&moto.endpoint()).await?;
    let ssm = ssm_via(&moto, &proxy, 1).await;

    let got = ssm.get_parameter().name("/self/p").send().await?;
    assert_eq!(got.parameter().and_then(|p| p.value()), Some("value"));
    assert_eq!(proxy.calls("GetParameter"), 1);
    assert_eq!(proxy.forwarded("GetParameter"), 1);
    assert_eq!(proxy.total(), 1);

    // A throttle for a different operation must not touch GetParameter.
    proxy.fail_next(Some("GetParameters"), 1, Fault::Throttle);
    ssm.get_parameter().name("/self/p").send().await?;
    assert_eq!(proxy.faults_injected(), 0);
    proxy.clear_faults();

    proxy.fail_next(Some("GetParameter"), 1, Fault::Throttle);
    let err = ssm
        .get_parameter()
        .name("/self/p")
        .send()
        .await
        .expect_err("throttled");
    assert_eq!(
        aws_sdk_ssm::error::ProvideErrorMetadata::code(&err),
        Some("ThrottlingException")
    );

    proxy.fail_next(None, 1, Fault::ServerError);
    let err = ssm
        .get_parameter()
        .name("/self/p")
        .send()
        .await
        .expect_err("server error");
    assert_eq!(
        aws_sdk_ssm::error::ProvideErrorMetadata::code(&err),
        Some("InternalServerError")
    );

    proxy.fail_next(None, 1, Fault::Reset);
    assert!(ssm.get_parameter().name("/self/p").send().await.is_err());
    proxy.fail_next(None, 1, Fault::Stall);
    assert!(ssm.get_parameter().name("/self/p").send().await.is_err());
    assert_eq!(proxy.faults_injected(), 4);
    assert_eq!(proxy.calls("GetParameter"), 6);
    assert_eq!(proxy.forwarded("GetParameter"), 2);

    // Back to normal once the rules are used up.
    ssm.get_parameter().name("/self/p").send().await?;

    proxy.set_down(DownMode::Refuse);
    assert!(ssm.get_parameter().name("/self/p").send().await.is_err());
    proxy.set_down(DownMode::Stall);
    assert!(ssm.get_parameter().name("/self/p").send().await.is_err());
    proxy.set_down(DownMode::Off);
    ssm.get_parameter().name("/self/p").send().await?;

    proxy.reset_counts();
    assert_eq!(proxy.total(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_latency_delays_each_request() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    moto.put_param("/self/slow", "v", ParameterType::String, None)
        .await?;
    let proxy = Proxy::start(&moto.endpoint()).await?;
    let ssm = ssm_via(&moto, &proxy, 1).await;
    proxy.set_latency(Duration::from_millis(300));
    let started = tokio::time::Instant::now();
    ssm.get_parameter().name("/self/slow").send().await?;
    assert!(started.elapsed() >= Duration::from_millis(300));
    Ok(())
}

/// Writes an executable shell script into the target directory.
fn script(name: &str, body: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = lockbox_tests::bins::target_dir().join("lockbox-tests");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}-{}", random_hex(8)));
    std::fs::write(&path, body)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_runtime_api_delivers_invocations_and_takes_answers() -> anyhow::Result<()> {
    // A runtime in shell: echoes each payload back, fails the one that says "fail".
    let runtime = script(
        "dummy-runtime",
        r#"#!/bin/sh
api="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime/invocation"
while true; do
  headers=$(mktemp)
  payload=$(curl -sS -D "$headers" "$api/next")
  id=$(tr -d '\r' < "$headers" | awk -F': ' 'tolower($1)=="lambda-runtime-aws-request-id" {print $2}')
  rm -f "$headers"
  case "$payload" in
    *fail*) curl -sS -X POST -H 'Lambda-Runtime-Function-Error-Type: Unhandled'               -d '{"errorMessage":"asked to fail"}' "$api/$id/error" >/dev/null ;;
    *) curl -sS -X POST -d "$payload" "$api/$id/response" >/dev/null ;;
  esac
done
"#,
    )?;
    let sandbox = Sandbox::builder().binary(&runtime).start().await?;
    sandbox.wait_init_done(WAIT).await?;

    let answer = sandbox
        .invoke_runtime(serde_json::json!({"hello": "world"}), WAIT)
        .await?;
    assert_eq!(
        answer,
        RuntimeOutcome::Response(r#"{"hello":"world"}"#.to_owned())
    );
    let failed = sandbox
        .invoke_runtime(serde_json::json!({"please": "fail"}), WAIT)
        .await?;
    let RuntimeOutcome::Error(report) = failed else {
        panic!("expected an error, got {failed:?}");
    };
    assert_eq!(report.error_type, "Unhandled");
    assert!(report.body.contains("asked to fail"));
    drop(sandbox);
    let _ = std::fs::remove_file(runtime);
    Ok(())
}

/// A minimal external extension in shell: registers, prints each event, exits on SHUTDOWN.
fn dummy_extension() -> anyhow::Result<PathBuf> {
    script(
        "dummy-extension",
        r#"#!/bin/sh
api="http://$AWS_LAMBDA_RUNTIME_API/2020-01-01/extension"
id=$(curl -sS -D - -o /dev/null -X POST -H 'Lambda-Extension-Name: dummy' \
  -d '{"events":["INVOKE","SHUTDOWN"]}' "$api/register" | tr -d '\r' \
  | awk -F': ' 'tolower($1)=="lambda-extension-identifier" {print $2}')
echo "registered $id"
while true; do
  event=$(curl -sS -H "Lambda-Extension-Identifier: $id" "$api/event/next")
  echo "event $event"
  case "$event" in *SHUTDOWN*) exit 0 ;; esac
done
"#,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_drives_a_dummy_extension_through_its_lifecycle() -> anyhow::Result<()> {
    let script = dummy_extension()?;
    let sandbox = Sandbox::builder()
        .binary(&script)
        .env("SELF_CHECK", "1")
        .start()
        .await?;
    let registration = sandbox.wait_registered(WAIT).await?;
    assert_eq!(registration.name, "dummy");
    assert_eq!(registration.events, ["INVOKE", "SHUTDOWN"]);
    sandbox.wait_init_done(WAIT).await?;

    sandbox.invoke(WAIT).await?;
    let seen = sandbox.invoke_with(|| async { 42 }).await?;
    assert_eq!(seen, 42);
    let (status, took) = sandbox.shutdown(WAIT).await?;
    assert!(status.success());
    assert!(took < Duration::from_secs(2));

    let logs = sandbox.logs();
    assert_eq!(
        logs.matches("\"eventType\":\"INVOKE\"").count(),
        2,
        "{logs}"
    );
    assert!(logs.contains("sandbox-fn"), "{logs}");
    let steps: Vec<Lifecycle> = sandbox.timeline().into_iter().map(|(_, s)| s).collect();
    assert_eq!(steps.first(), Some(&Lifecycle::Spawned));
    assert!(steps.contains(&Lifecycle::EventDelivered(EventKind::Shutdown)));
    assert!(matches!(steps.last(), Some(Lifecycle::Exited(_))));
    let _ = std::fs::remove_file(script);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_does_not_leak_the_host_environment() -> anyhow::Result<()> {
    let sandbox = Sandbox::builder()
        .binary("/usr/bin/env")
        .env("ONLY_THIS", "yes")
        .start()
        .await?;
    let status = sandbox.wait_exit(WAIT).await?;
    assert!(status.success());
    let logs = sandbox.logs();
    assert!(logs.contains("ONLY_THIS=yes"));
    assert!(logs.contains("AWS_LAMBDA_RUNTIME_API=127.0.0.1:"));
    assert!(!logs.contains("CARGO"), "host variables leaked: {logs}");
    Ok(())
}
