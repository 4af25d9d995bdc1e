//! AWS faults: throttling, server errors, stalls, resets, refusals and outages, at Init,
//! at a read and at shutdown.

use std::time::Duration;

use super::{assert_still_serving, MARGIN, SHORT_BOUND, SHORT_BOUND_MS};
use anyhow::Context;
use aws_sdk_ssm::types::ParameterType;
use futures::future::join_all;
use lockbox_tests::check::{
    assert_error, cache_header, eventually, init_after_registration, value_of, wait_until, WAIT,
};
use lockbox_tests::{start_lockbox_behind, DownMode, Fault, Fixture, Moto, Proxy, INIT_TIMEOUT};
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread")]
async fn throttling_burst_is_retried_and_the_read_succeeds() -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .param("/app/busy", "through")
        .secret("app/busy", "through-secret")
        .start()
        .await?;
    let (proxy, client) = (&lockbox.proxy, &lockbox.client);

    // Two throttles, then AWS answers: the third of the SDK's three attempts succeeds.
    proxy.fail_next(Some("GetParameter"), 2, Fault::Throttle);
    proxy.fail_next(Some("GetSecretValue"), 2, Fault::Throttle);
    let started = Instant::now();
    let (parameter, secret) = tokio::join!(
        client.get_parameter("/app/busy", &[]),
        client.get_secret("app/busy", &[])
    );
    let took = started.elapsed();
    assert_eq!(value_of(&parameter?).as_deref(), Some("through"));
    assert_eq!(value_of(&secret?).as_deref(), Some("through-secret"));
    for op in ["GetParameter", "GetSecretValue"] {
        assert_eq!(
            proxy.calls(op),
            3,
            "{op}: two throttled attempts and one good"
        );
        assert_eq!(proxy.forwarded(op), 1, "{op}");
    }
    assert_eq!(proxy.faults_injected(), 4);
    // Backoff with jitter, inside the default 10 s backend bound.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_are_retried_and_the_read_succeeds() -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .param("/app/flaky", "through")
        .secret("app/flaky", "through-secret")
        .start()
        .await?;
    let (proxy, client) = (&lockbox.proxy, &lockbox.client);

    proxy.fail_next(Some("GetParameter"), 2, Fault::ServerError);
    proxy.fail_next(Some("GetSecretValue"), 2, Fault::ServerError);
    let (parameter, secret) = tokio::join!(
        client.get_parameter("/app/flaky", &[]),
        client.get_secret("app/flaky", &[])
    );
    assert_eq!(value_of(&parameter?).as_deref(), Some("through"));
    assert_eq!(value_of(&secret?).as_deref(), Some("through-secret"));
    for op in ["GetParameter", "GetSecretValue"] {
        assert_eq!(proxy.calls(op), 3, "{op}: two 500s and one good answer");
        assert_eq!(proxy.forwarded(op), 1, "{op}");
    }
    // The answers were cached like any other.
    client.get_parameter("/app/flaky", &[]).await?;
    assert_eq!(proxy.calls("GetParameter"), 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_aws_is_504_within_the_configured_timeout_and_the_default_bound(
) -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .param("/app/stuck", "v")
        .secret("app/stuck", "s")
        // SSM gets an explicit bound; Secrets Manager keeps 0, which is lockbox's 10 s bound
        // (the AWS layer would wait forever there).
        .env("SSM_PARAMETER_STORE_TIMEOUT_MILLIS", SHORT_BOUND_MS)
        .env("SECRETS_MANAGER_TIMEOUT_MILLIS", "0")
        .start()
        .await?;
    let (sandbox, proxy, client) = (&lockbox.sandbox, &lockbox.proxy, &lockbox.client);
    let pid = sandbox.pid().context("running")?;

    proxy.fail_next(Some("GetParameter"), 1, Fault::Stall);
    proxy.fail_next(Some("GetSecretValue"), 1, Fault::Stall);
    let parameter_read = async {
        let started = Instant::now();
        let response = client.get_parameter("/app/stuck", &[]).await;
        (response, started.elapsed())
    };
    let secret_read = async {
        let started = Instant::now();
        let response = client.get_secret("app/stuck", &[]).await;
        (response, started.elapsed())
    };
    let ((parameter, parameter_took), (secret, secret_took)) =
        tokio::join!(parameter_read, secret_read);
    assert_error(&parameter?, 504, "Timeout");
    assert!(
        parameter_took >= SHORT_BOUND - Duration::from_millis(50)
            && parameter_took < SHORT_BOUND + MARGIN,
        "a {SHORT_BOUND:?} backend timeout answered after {parameter_took:?}"
    );
    assert_error(&secret?, 504, "Timeout");
    assert!(
        secret_took >= Duration::from_millis(9_500)
            && secret_took < Duration::from_secs(10) + MARGIN,
        "the 10 s default bound answered after {secret_took:?}"
    );
    // The whole bound is one attempt that never got an answer: no retry storm behind it.
    assert_eq!(proxy.calls("GetParameter"), 1);
    assert_eq!(proxy.calls("GetSecretValue"), 1);

    // The stall is over: the next reads are answered, by the same process.
    assert_eq!(
        value_of(&client.get_parameter("/app/stuck", &[]).await?).as_deref(),
        Some("v")
    );
    assert_eq!(
        value_of(&client.get_secret("app/stuck", &[]).await?).as_deref(),
        Some("s")
    );
    assert_still_serving(sandbox, pid, client).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_aws_serves_an_expired_value_stale_within_the_timeout() -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .param("/app/aging", "old-but-good")
        .env("SSM_PARAMETER_STORE_TTL", "1")
        .env("SSM_PARAMETER_STORE_TIMEOUT_MILLIS", SHORT_BOUND_MS)
        .env("LOCKBOX_REFRESH_AHEAD", "0")
        .start()
        .await?;
    let (moto, proxy, client) = (&lockbox.moto, &lockbox.proxy, &lockbox.client);

    let first = client.get_parameter("/app/aging", &[]).await?;
    let fetched_at = Instant::now();
    assert_eq!(cache_header(&first), "miss");
    wait_until(fetched_at + Duration::from_millis(1200)).await;

    proxy.fail_next(Some("GetParameter"), 1, Fault::Stall);
    let started = Instant::now();
    let stale = client.get_parameter("/app/aging", &[]).await?;
    let took = started.elapsed();
    assert_eq!(value_of(&stale).as_deref(), Some("old-but-good"));
    assert_eq!(cache_header(&stale), "stale");
    let age: u64 = stale.header("age").context("Age header")?.parse()?;
    assert!((1..=10).contains(&age), "Age {age}");
    assert!(took < SHORT_BOUND + MARGIN, "stale answer took {took:?}");

    // AWS answers again, with a new value: served fresh.
    moto.put_param("/app/aging", "new-and-good", ParameterType::String, None)
        .await?;
    let fresh = client.get_parameter("/app/aging", &[]).await?;
    assert_eq!(value_of(&fresh).as_deref(), Some("new-and-good"));
    assert_eq!(cache_header(&fresh), "miss");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn resets_and_refusals_are_502_or_stale_and_recover_without_a_restart() -> anyhow::Result<()>
{
    let lockbox = Fixture::new()
        .await?
        .param("/app/cold", "cold-value")
        .param("/app/warm", "warm-value")
        .secret("app/cold", "cold-secret")
        .env("SSM_PARAMETER_STORE_TTL", "1")
        .env("LOCKBOX_REFRESH_AHEAD", "0")
        .start()
        .await?;
    let (moto, sandbox, proxy, client) = (
        &lockbox.moto,
        &lockbox.sandbox,
        &lockbox.proxy,
        &lockbox.client,
    );
    let pid = sandbox.pid().context("running")?;

    // One reset is retried like any transient failure.
    proxy.fail_next(Some("GetParameter"), 1, Fault::Reset);
    assert_eq!(
        value_of(&client.get_parameter("/app/cold", &[]).await?).as_deref(),
        Some("cold-value")
    );
    assert_eq!(
        proxy.calls("GetParameter"),
        2,
        "the reset attempt was retried"
    );

    // /app/warm is cached, then expires.
    client.get_parameter("/app/warm", &[]).await?;
    let warmed_at = Instant::now();
    proxy.reset_counts();

    // Every attempt reset: no value to fall back on is 502; an expired value is stale.
    proxy.fail_next(None, 1000, Fault::Reset);
    assert_error(
        &client.get_secret("app/cold", &[]).await?,
        502,
        "ConnectionError",
    );
    wait_until(warmed_at + Duration::from_millis(1200)).await;
    let stale = client.get_parameter("/app/warm", &[]).await?;
    assert_eq!(value_of(&stale).as_deref(), Some("warm-value"));
    assert_eq!(cache_header(&stale), "stale");
    assert!(proxy.faults_injected() >= 2);
    proxy.clear_faults();

    // AWS refuses connections altogether: the same, for every backend.
    proxy.set_down(DownMode::Refuse);
    assert_error(
        &client
            .get_parameter("/app/cold", &[("refreshNow", "true")])
            .await?,
        502,
        "ConnectionError",
    );
    assert_error(
        &client.get_secret("app/cold", &[]).await?,
        502,
        "ConnectionError",
    );
    let stale = client.get_parameter("/app/warm", &[]).await?;
    assert_eq!(value_of(&stale).as_deref(), Some("warm-value"));
    assert_eq!(cache_header(&stale), "stale");
    assert!(proxy.refused_connections() + proxy.faults_injected() > 0);

    // AWS is back: everything is served again by the same process, nothing lost.
    moto.put_param("/app/warm", "warm-value-2", ParameterType::String, None)
        .await?;
    proxy.set_down(DownMode::Off);
    eventually("recovery after the outage", || async {
        let secret = client.get_secret("app/cold", &[]).await?;
        let warm = client.get_parameter("/app/warm", &[]).await?;
        Ok(value_of(&secret).as_deref() == Some("cold-secret")
            && value_of(&warm).as_deref() == Some("warm-value-2"))
    })
    .await?;
    assert_eq!(
        value_of(&client.get_parameter("/app/cold", &[]).await?).as_deref(),
        Some("cold-value")
    );
    assert_still_serving(sandbox, pid, client).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn full_outage_during_init_ends_init_within_the_prefetch_budget() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    moto.put_param("/init/a", "init-a", ParameterType::String, None)
        .await?;
    moto.put_param("/init/b", "init-b", ParameterType::String, None)
        .await?;
    moto.create_secret("init/s", "init-secret").await?;
    let budget = Duration::from_millis(1000);
    let env = [
        ("LOCKBOX_PREFETCH", "ssm:/init/a,ssm:/init/b,secret:init/s"),
        ("LOCKBOX_PREFETCH_TIMEOUT_MS", "1000"),
        ("SSM_PARAMETER_STORE_TIMEOUT_MILLIS", SHORT_BOUND_MS),
        ("SECRETS_MANAGER_TIMEOUT_MILLIS", SHORT_BOUND_MS),
    ];

    // Both shapes of a full outage, side by side: connections refused, and connections
    // accepted but never answered.
    // Refused connections are retried with backoff, so with a short backend bound they end
    // as a 502 or, when the backoff outlasts the bound, a 504.
    let runs = [
        (
            DownMode::Refuse,
            &[(502, "ConnectionError"), (504, "Timeout")][..],
        ),
        (DownMode::Stall, &[(504, "Timeout")][..]),
    ]
    .map(|(mode, outage_answers)| {
        let moto = &moto;
        async move {
            let proxy = Proxy::start(&moto.endpoint()).await?;
            proxy.set_down(mode);
            let (sandbox, client) = start_lockbox_behind(&proxy, &env).await?;
            sandbox.wait_init_done(INIT_TIMEOUT).await?;
            let init = init_after_registration(&sandbox);
            assert!(
                init < budget + MARGIN,
                "{mode:?}: Init took {init:?} with a {budget:?} budget\n{}",
                sandbox.report()
            );
            assert!(sandbox.init_errors().is_empty(), "{mode:?}: init error");

            // The function starts and runs during the outage: it sees the outage, not a
            // hang.
            let during = sandbox
                .invoke_with(|| {
                    let client = client.clone();
                    async move { client.get_parameter("/init/a", &[]).await }
                })
                .await??;
            assert!(
                outage_answers
                    .iter()
                    .any(|(status, code)| during.status == *status
                        && during.error_type().as_deref() == Some(*code)),
                "{mode:?}: {} {}",
                during.status,
                during.body
            );

            // AWS comes back: the function's reads succeed, no restart needed.
            proxy.set_down(DownMode::Off);
            let values = sandbox
                .invoke_with(|| {
                    let client = client.clone();
                    async move {
                        let mut values = Vec::new();
                        for _ in 0..2 {
                            values.push(value_of(&client.get_parameter("/init/a", &[]).await?));
                            values.push(value_of(&client.get_parameter("/init/b", &[]).await?));
                            values.push(value_of(&client.get_secret("init/s", &[]).await?));
                        }
                        anyhow::Ok(values)
                    }
                })
                .await??;
            let expected = ["init-a", "init-b", "init-secret"].map(|v| Some(v.to_owned()));
            assert_eq!(values[..3], expected, "{mode:?}");
            assert_eq!(values[3..], expected, "{mode:?}");
            assert_eq!(sandbox.exit_status(), None, "{mode:?}");
            anyhow::Ok(())
        }
    });
    for outcome in join_all(runs).await {
        outcome?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_during_a_stalled_aws_call_exits_zero_within_two_seconds() -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .param("/app/hung", "v")
        .secret("app/hung", "s")
        // Default backend bound (10 s): the calls are still hanging when SHUTDOWN comes.
        .start()
        .await?;
    let (sandbox, proxy, client) = (&lockbox.sandbox, &lockbox.proxy, &lockbox.client);
    sandbox.invoke(WAIT).await?;

    proxy.fail_next(None, 10, Fault::Stall);
    let in_flight = [
        tokio::spawn({
            let client = client.clone();
            async move { client.get_parameter("/app/hung", &[]).await }
        }),
        tokio::spawn({
            let client = client.clone();
            async move { client.get_secret("app/hung", &[]).await }
        }),
    ];
    eventually("both reads to reach AWS", || async {
        Ok(proxy.calls("GetParameter") + proxy.calls("GetSecretValue") == 2)
    })
    .await?;

    let (status, took) = sandbox.shutdown(WAIT).await?;
    assert!(status.success(), "exit {status}: {}", sandbox.report());
    assert!(took < Duration::from_secs(2), "took {took:?}");
    // Function code is done by the time Lambda sends SHUTDOWN; still, nothing it started is
    // left hanging: each request ended (answered or its connection closed) with the process.
    for request in in_flight {
        tokio::time::timeout(Duration::from_secs(2), request)
            .await
            .context("a request outlived the process")??
            .ok();
    }
    Ok(())
}
