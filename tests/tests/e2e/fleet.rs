//! At fleet scale: concurrent misses coalesced into batch calls, one failure shared by
//! every waiter, reads that ride out an account's quota, and expiry spread over a cohort.
//! The figures (calls, times) for 200 environments come from `make bench ONLY=fleet`;
//! these tests show each behaviour with the real binaries.

use std::time::Duration;

use aws_sdk_ssm::types::ParameterType;
use futures::future::join_all;
use lockbox_tests::check::{assert_error, cache_header, ok_value};
use lockbox_tests::client::WITH_DECRYPTION;
use lockbox_tests::fleet::{self, FleetOptions, FleetValues};
use lockbox_tests::proxy::{Quota, AWS_READ_QUOTAS};
use lockbox_tests::{spawn_lockbox, Fault, Moto, Proxy};
use tokio::time::Instant;

/// Parameter Store's read operations, which share one quota.
const SSM_READS: &[&str] = &["GetParameter", "GetParameters", "GetParametersByPath"];

#[tokio::test(flavor = "multi_thread")]
async fn the_proxys_quota_answers_throttling_as_aws_does() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    moto.put_param("/q/p", "v", ParameterType::String, None)
        .await?;
    let proxy = Proxy::start(&moto.endpoint()).await?;
    proxy.enforce_quotas(&[Quota {
        operations: SSM_READS,
        // A token a minute: however slow a loaded machine answers the five calls, none of
        // them finds a refilled token.
        per_second: 1.0 / 60.0,
        burst: 3.0,
    }]);
    let http = reqwest::Client::builder().no_proxy().build()?;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        // Unsigned is fine: moto does not check signatures, and the proxy only reads the
        // operation from X-Amz-Target.
        let answer = http
            .post(proxy.endpoint())
            .header("x-amz-target", "AmazonSSM.GetParameter")
            .header("content-type", "application/x-amz-json-1.1")
            .body(r#"{"Name":"/q/p"}"#)
            .send()
            .await?;
        let status = answer.status().as_u16();
        let content_type = answer
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or("").to_owned());
        let body = answer.text().await?;
        statuses.push(status);
        if status != 200 {
            assert_eq!(status, 400);
            assert_eq!(content_type.as_deref(), Some("application/x-amz-json-1.1"));
            assert_eq!(
                body,
                r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#
            );
        }
    }
    // A bucket of three: three through, then throttled.
    assert_eq!(statuses, [200, 200, 200, 400, 400]);
    assert_eq!(proxy.calls("GetParameter"), 5);
    assert_eq!(proxy.forwarded("GetParameter"), 3);
    assert_eq!(proxy.throttled("GetParameter"), 2);
    // Throttles are counted apart from injected faults.
    assert_eq!(proxy.faults_injected(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_concurrent_misses_in_one_scope_make_one_get_parameters_call() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let names: Vec<String> = (0..10).map(|i| format!("/together/p{i}")).collect();
    for name in &names {
        moto.put_param(name, &format!("v-{name}"), ParameterType::String, None)
            .await?;
    }
    let (_sandbox, proxy, client) = spawn_lockbox(&moto, &[]).await?;
    // Ten open connections first, so that the ten reads leave at once.
    join_all((0..10).map(|_| client.get("/ping"))).await;

    let answers = join_all(names.iter().map(|name| client.get_parameter(name, &[]))).await;
    for (name, answer) in names.iter().zip(answers) {
        let answer = answer?;
        assert_eq!(ok_value(&answer), format!("v-{name}"));
        assert_eq!(cache_header(&answer), "miss");
    }
    assert_eq!(proxy.calls("GetParameters"), 1, "{:?}", proxy.call_counts());
    assert_eq!(proxy.calls("GetParameter"), 0, "{:?}", proxy.call_counts());

    // A lone miss still uses the single call.
    moto.put_param("/together/alone", "a", ParameterType::String, None)
        .await?;
    assert_eq!(
        ok_value(&client.get_parameter("/together/alone", &[]).await?),
        "a"
    );
    assert_eq!(proxy.calls("GetParameter"), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_secret_misses_make_one_batch_call() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let ids: Vec<String> = (0..5).map(|i| format!("together/s{i}")).collect();
    for id in &ids {
        moto.create_secret(id, &format!("secret-{id}")).await?;
    }
    let (_sandbox, proxy, client) = spawn_lockbox(&moto, &[]).await?;
    join_all((0..6).map(|_| client.get("/ping"))).await;

    let mut reads: Vec<_> = ids.iter().map(|id| client.get_secret(id, &[])).collect();
    reads.push(client.get_secret("together/none", &[]));
    let mut answers = join_all(reads).await;
    let missing = answers.pop().expect("six answers")?;
    assert_error(&missing, 404, "ResourceNotFoundException");
    for (id, answer) in ids.iter().zip(answers) {
        assert_eq!(ok_value(&answer?), format!("secret-{id}"));
    }
    assert_eq!(
        proxy.calls("BatchGetSecretValue"),
        1,
        "{:?}",
        proxy.call_counts()
    );
    assert_eq!(
        proxy.calls("GetSecretValue"),
        0,
        "{:?}",
        proxy.call_counts()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_waiters_in_an_outage_make_one_call_and_all_get_its_error() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    moto.put_param("/outage/p", "never-seen", ParameterType::String, None)
        .await?;
    let (_sandbox, proxy, client) =
        spawn_lockbox(&moto, &[("SSM_PARAMETER_STORE_TIMEOUT_MILLIS", "500")]).await?;
    join_all((0..20).map(|_| client.get("/ping"))).await;
    // An upstream that takes every request and never answers.
    proxy.fail_next(None, 1000, Fault::Stall);

    let answers = join_all((0..20).map(|_| client.get_parameter("/outage/p", &[]))).await;
    let mut messages = Vec::new();
    for answer in answers {
        messages.push(assert_error(&answer?, 504, "Timeout"));
    }
    messages.dedup();
    assert_eq!(
        messages.len(),
        1,
        "every waiter gets the one error: {messages:?}"
    );
    let calls: usize = SSM_READS.iter().map(|op| proxy.calls(op)).sum();
    assert_eq!(calls, 1, "{:?}", proxy.call_counts());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_under_the_accounts_quota_completes_with_no_failed_read() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let values = FleetValues::seed(&moto, "burst").await?;
    // Eight environments at once against a quota of 2 Parameter Store calls a second (a
    // bucket of 2): most of the first calls are throttled.
    let quota = Quota {
        operations: SSM_READS,
        per_second: 2.0,
        burst: 2.0,
    };
    let options = FleetOptions {
        environments: 8,
        prefetch: false,
        env: Vec::new(),
        quotas: vec![quota, AWS_READ_QUOTAS[1], AWS_READ_QUOTAS[2]],
    };
    let run = fleet::run(&moto, &values, &options).await?;
    assert_eq!(run.init_failed, 0);
    assert_eq!(run.reads_failed, 0, "{:?}", run.failures);
    assert_eq!(run.reads_ok, 8 * (fleet::PARAMETERS + fleet::SECRETS));
    assert!(
        run.ssm_throttled() > 0,
        "the quota never bit, so nothing was shown: {:?}",
        run.calls
    );
    // Coalesced: far fewer good calls than the 80 reads of parameters.
    assert!(
        run.ssm_calls() - run.ssm_throttled() <= 16,
        "{:?} {:?}",
        run.calls,
        run.throttled
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cohorts_refetch_times_are_spread() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    moto.put_param("/cohort/p", "c", ParameterType::String, None)
        .await?;
    const COHORT: usize = 8;
    const TTL: Duration = Duration::from_secs(4);
    let env = [
        ("SSM_PARAMETER_STORE_TTL", "4"),
        ("LOCKBOX_TTL_JITTER", "0.25"),
    ];
    let cohort = join_all((0..COHORT).map(|_| spawn_lockbox(&moto, &env))).await;
    let cohort = cohort.into_iter().collect::<anyhow::Result<Vec<_>>>()?;

    // Each environment reads the value at once, then again every 50 ms until the read is a
    // miss: that environment's value expired and was fetched again.
    let refetched_after = join_all(cohort.iter().map(|(_, _, client)| async move {
        let first = client
            .get_parameter("/cohort/p", &[WITH_DECRYPTION])
            .await?;
        assert_eq!(cache_header(&first), "miss");
        let fetched = Instant::now();
        let give_up = fetched + 2 * TTL;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let again = client
                .get_parameter("/cohort/p", &[WITH_DECRYPTION])
                .await?;
            if cache_header(&again) == "miss" {
                return anyhow::Ok(fetched.elapsed());
            }
            anyhow::ensure!(Instant::now() < give_up, "never expired");
        }
    }))
    .await
    .into_iter()
    .collect::<anyhow::Result<Vec<_>>>()?;

    let earliest = *refetched_after.iter().min().expect("a cohort");
    let latest = *refetched_after.iter().max().expect("a cohort");
    // 4 s +-25 %: within 3 to 5 s (and a poll later).
    assert!(
        earliest >= Duration::from_millis(2900) && latest <= Duration::from_millis(5400),
        "{refetched_after:?}"
    );
    // Without jitter all eight would expire within a poll of each other. Eight draws from
    // a 2 s range fall within 300 ms of each other with a chance of about 1 in 70,000.
    assert!(
        latest - earliest >= Duration::from_millis(300),
        "expiry not spread: {refetched_after:?}"
    );
    Ok(())
}
