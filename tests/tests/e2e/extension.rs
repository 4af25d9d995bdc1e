//! End-to-end tests for the extension (issue 2): the real `lockbox` binary under the Lambda
//! sandbox, against moto behind a counting, fault-injecting proxy, called over HTTP the way
//! function code calls it.

use std::time::Duration;

use aws_sdk_ssm::types::ParameterType;
use futures::future::join_all;
use lockbox_tests::check::{assert_any_error, assert_error, ok_json, value_of, WAIT};
use lockbox_tests::client::{
    keyring_path, parameter_path, secret_path, ExtClient, Response, WITH_DECRYPTION,
};
use lockbox_tests::moto::ACCOUNT_ID;
use lockbox_tests::sandbox::{Lifecycle, Sandbox};
use lockbox_tests::{
    lockbox_builder, lockbox_refusing, spawn_lockbox, DownMode, Fault, Fixture, Lockbox, Moto,
    Proxy, INIT_TIMEOUT,
};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::time::Instant;

/// Pause between polls of a condition that needs time to become true (a TTL passing).
const POLL: Duration = Duration::from_millis(100);

/// `2022-11-16T08:24:05.571Z`: RFC 3339 with milliseconds and `Z`, as the AWS layer sends.
fn assert_rfc3339_millis(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("date must be a string: {value}"));
    let shape_ok = text.len() == 24
        && text.char_indices().all(|(i, c)| match i {
            4 | 7 => c == '-',
            10 => c == 'T',
            13 | 16 => c == ':',
            19 => c == '.',
            23 => c == 'Z',
            _ => c.is_ascii_digit(),
        });
    assert!(shape_ok, "not RFC 3339 with milliseconds and Z: {text}");
}

/// Reads until `done` holds for the answer, polling with a deadline; returns the answer and
/// how long it took.
async fn read_until(
    client: &ExtClient,
    path: &str,
    done: impl Fn(&Response) -> bool,
) -> anyhow::Result<(Response, Duration)> {
    let started = Instant::now();
    loop {
        let response = client.get(path).await?;
        if done(&response) {
            return Ok((response, started.elapsed()));
        }
        anyhow::ensure!(
            started.elapsed() < WAIT,
            "condition not met within {WAIT:?}; last answer {}: {}",
            response.status,
            response.body
        );
        tokio::time::sleep(POLL).await;
    }
}

/// moto holding the parameter `/app/p` = `v` and the secret `app/s` = `s`, and the
/// extension in front of it started with `env`. The caller keeps moto and the sandbox alive.
async fn lockbox_with_p_and_s(
    env: &[(&str, &str)],
) -> anyhow::Result<(Moto, Sandbox, Proxy, ExtClient)> {
    let Lockbox {
        moto,
        sandbox,
        proxy,
        client,
        ..
    } = Fixture::new()
        .await?
        .param("/app/p", "v")
        .secret("app/s", "s")
        .envs(env)
        .start()
        .await?;
    Ok((moto, sandbox, proxy, client))
}

/// Asserts that `/app/p` of [`lockbox_with_p_and_s`] is served with its value.
async fn assert_p_served(client: &ExtClient) -> anyhow::Result<()> {
    let response = client.get_parameter("/app/p", &[]).await?;
    assert_eq!(value_of(&response).as_deref(), Some("v"));
    Ok(())
}

/// Asserts that `app/s` of [`lockbox_with_p_and_s`] is served with its value.
async fn assert_s_served(client: &ExtClient) -> anyhow::Result<()> {
    let response = client.get_secret("app/s", &[]).await?;
    assert_eq!(value_of(&response).as_deref(), Some("s"));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Lifecycle
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn registers_as_lockbox_and_serves_before_its_first_next() -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .param("/app/early", "ready")
        .start()
        .await?;
    let (sandbox, client) = (&lockbox.sandbox, &lockbox.client);

    let registration = sandbox.registration().expect("registered");
    assert_eq!(registration.name, "lockbox");
    assert!(registration.events.contains(&"INVOKE".to_owned()));
    assert!(registration.events.contains(&"SHUTDOWN".to_owned()));

    // Still parked in its first `next` (no event was sent): function code running its own
    // Init right now must already be served.
    let ping = client.get_without_token("/ping").await?;
    assert_eq!(ping.status, 200);
    assert_eq!(ping.body.trim(), "healthy");
    let early = client.get_parameter("/app/early", &[]).await?;
    assert_eq!(ok_json(&early)["Parameter"]["Value"], "ready");

    let steps: Vec<Lifecycle> = sandbox.timeline().into_iter().map(|(_, s)| s).collect();
    let registered = steps
        .iter()
        .position(|s| matches!(s, Lifecycle::Registered(_)))
        .expect("registered");
    let first_next = steps
        .iter()
        .position(|s| *s == Lifecycle::NextCalled)
        .expect("next called");
    assert!(registered < first_next, "{}", sandbox.report());
    assert_eq!(
        steps
            .iter()
            .filter(|s| **s == Lifecycle::NextCalled)
            .count(),
        1,
        "only one next before any event: {}",
        sandbox.report()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn function_reads_during_invokes_hit_aws_once() -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .param("/app/greeting", "hello")
        .start()
        .await?;
    let (sandbox, proxy, client) = (&lockbox.sandbox, &lockbox.proxy, &lockbox.client);

    for invoke in 1..=3 {
        let response = sandbox
            .invoke_with(|| {
                let client = client.clone();
                async move { client.get_parameter("/app/greeting", &[]).await }
            })
            .await??;
        assert_eq!(ok_json(&response)["Parameter"]["Value"], "hello");
        assert_eq!(proxy.calls("GetParameter"), 1, "after invoke {invoke}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_exits_zero_within_two_seconds() -> anyhow::Result<()> {
    let lockbox = Fixture::new().await?.start().await?;
    let sandbox = &lockbox.sandbox;
    sandbox.invoke(WAIT).await?;

    let (status, took) = sandbox.shutdown(WAIT).await?;
    assert!(status.success(), "exit {status}: {}", sandbox.report());
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(
        sandbox.exit_errors().is_empty(),
        "{:?}",
        sandbox.exit_errors()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_finishes_a_request_in_flight() -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .param("/app/slow", "worth-the-wait")
        .start()
        .await?;
    let (sandbox, proxy, client) = (&lockbox.sandbox, &lockbox.proxy, &lockbox.client);
    proxy.set_latency(Duration::from_millis(800));

    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.get_parameter("/app/slow", &[]).await }
    });
    // Shut down only once the request is inside the extension, waiting on AWS.
    let deadline = Instant::now() + WAIT;
    while proxy.calls("GetParameter") == 0 {
        anyhow::ensure!(Instant::now() < deadline, "the request never reached AWS");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, took) = sandbox.shutdown(WAIT).await?;

    let response = in_flight.await??;
    assert_eq!(ok_json(&response)["Parameter"]["Value"], "worth-the-wait");
    assert!(status.success(), "exit {status}: {}", sandbox.report());
    assert!(took < Duration::from_secs(2), "took {took:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Routes, types and selectors
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn string_parameter_has_the_aws_layer_shape_on_both_routes() -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .param("/app/flag", "on")
        .start()
        .await?;
    let client = &lockbox.client;

    let body = ok_json(&client.get_parameter("/app/flag", &[]).await?);
    let p = &body["Parameter"];
    assert_eq!(
        p["ARN"],
        format!("arn:aws:ssm:us-east-1:{ACCOUNT_ID}:parameter/app/flag")
    );
    assert_eq!(p["DataType"], "text");
    assert_rfc3339_millis(&p["LastModifiedDate"]);
    assert_eq!(p["Name"], "/app/flag");
    assert_eq!(p["Selector"], Value::Null);
    assert_eq!(p["SourceResult"], Value::Null);
    assert_eq!(p["Type"], "String");
    assert_eq!(p["Value"], "on");
    assert_eq!(p["Version"], 1);
    assert_eq!(body["ResultMetadata"], json!({}));
    for key in [
        "ARN",
        "DataType",
        "LastModifiedDate",
        "Name",
        "Selector",
        "SourceResult",
        "Type",
        "Value",
        "Version",
    ] {
        assert!(p.get(key).is_some(), "field {key} missing (even when null)");
    }

    let slash = client
        .get("/systemsmanager/parameters/get/?name=%2Fapp%2Fflag")
        .await?;
    assert_eq!(ok_json(&slash), body, "trailing-slash route differs");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn string_list_comes_back_as_the_raw_string() -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .param_of(
            "/app/regions",
            "eu-west-1,us-east-1,ap-south-1",
            ParameterType::StringList,
        )
        .start()
        .await?;
    let client = &lockbox.client;

    let body = ok_json(&client.get_parameter("/app/regions", &[]).await?);
    assert_eq!(body["Parameter"]["Type"], "StringList");
    assert_eq!(body["Parameter"]["Value"], "eu-west-1,us-east-1,ap-south-1");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn secure_string_is_decrypted_only_when_asked() -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .secure("/app/db/password", "pw-plain-4d1f")
        .start()
        .await?;
    let client = &lockbox.client;

    let clear = ok_json(
        &client
            .get_parameter("/app/db/password", &[WITH_DECRYPTION])
            .await?,
    );
    assert_eq!(clear["Parameter"]["Type"], "SecureString");
    assert_eq!(clear["Parameter"]["Value"], "pw-plain-4d1f");

    for extra in [&[][..], &[("withDecryption", "false")][..]] {
        let sealed = ok_json(&client.get_parameter("/app/db/password", extra).await?);
        assert_eq!(sealed["Parameter"]["Type"], "SecureString");
        let value = sealed["Parameter"]["Value"].as_str().expect("a value");
        assert_ne!(
            value, "pw-plain-4d1f",
            "decrypted without withDecryption=true"
        );
        assert!(!value.is_empty());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn version_and_label_selectors_pick_the_right_version() -> anyhow::Result<()> {
    let fixture = Fixture::new().await?;
    let moto = fixture.moto();
    moto.put_param("/app/mode", "one", ParameterType::String, None)
        .await?;
    moto.put_param("/app/mode", "two", ParameterType::String, None)
        .await?;
    moto.label_param("/app/mode", 1, "stable").await?;
    let lockbox = fixture.start().await?;
    let client = &lockbox.client;

    let latest = ok_json(&client.get_parameter("/app/mode", &[]).await?);
    assert_eq!(latest["Parameter"]["Value"], "two");
    assert_eq!(latest["Parameter"]["Version"], 2);
    assert_eq!(latest["Parameter"]["Selector"], Value::Null);

    let by_version = ok_json(
        &client
            .get_parameter("/app/mode", &[("version", "1")])
            .await?,
    );
    assert_eq!(by_version["Parameter"]["Value"], "one");
    assert_eq!(by_version["Parameter"]["Version"], 1);
    assert_eq!(by_version["Parameter"]["Selector"], ":1");

    let by_label = ok_json(
        &client
            .get_parameter("/app/mode", &[("label", "stable")])
            .await?,
    );
    assert_eq!(by_label["Parameter"]["Value"], "one");
    assert_eq!(by_label["Parameter"]["Selector"], ":stable");

    let inline = ok_json(&client.get_parameter("/app/mode:1", &[]).await?);
    assert_eq!(inline["Parameter"]["Value"], "one");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn parameter_arn_works_as_a_name() -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .param("/app/by-arn", "found")
        .start()
        .await?;
    let client = &lockbox.client;

    let arn = format!("arn:aws:ssm:us-east-1:{ACCOUNT_ID}:parameter/app/by-arn");
    let body = ok_json(&client.get_parameter(&arn, &[]).await?);
    assert_eq!(body["Parameter"]["Value"], "found");
    assert_eq!(body["Parameter"]["ARN"], arn);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn secret_by_default_stage_by_stage_and_by_version_id() -> anyhow::Result<()> {
    let fixture = Fixture::new().await?;
    let moto = fixture.moto();
    let first = moto.create_secret("app/db", "first-secret").await?;
    let second = moto.put_secret_value("app/db", "second-secret").await?;
    let lockbox = fixture.start().await?;
    let client = &lockbox.client;

    let current = ok_json(&client.get_secret("app/db", &[]).await?);
    assert_eq!(current["SecretString"], "second-secret");
    assert_eq!(current["VersionId"], second.version_id.as_str());
    assert!(current["VersionStages"]
        .as_array()
        .is_some_and(|s| s.contains(&json!("AWSCURRENT"))));

    let by_stage = ok_json(
        &client
            .get_secret("app/db", &[("versionStage", "AWSPREVIOUS")])
            .await?,
    );
    assert_eq!(by_stage["SecretString"], "first-secret");
    assert_eq!(by_stage["VersionId"], first.version_id.as_str());

    let by_id = ok_json(
        &client
            .get_secret("app/db", &[("versionId", &first.version_id)])
            .await?,
    );
    assert_eq!(by_id["SecretString"], "first-secret");

    let explicit = ok_json(
        &client
            .get_secret("app/db", &[("versionStage", "AWSCURRENT")])
            .await?,
    );
    assert_eq!(explicit["SecretString"], "second-secret");

    let by_arn = ok_json(&client.get_secret(&first.arn, &[]).await?);
    assert_eq!(by_arn["SecretString"], "second-secret");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn json_secret_has_the_aws_layer_shape() -> anyhow::Result<()> {
    let fixture = Fixture::new().await?;
    let moto = fixture.moto();
    let secret_string = r#"{"ConnectionString":"Server=db;User=app;Password=cs-9b2e"}"#;
    let created = moto.create_secret("demo/api", secret_string).await?;
    let lockbox = fixture.start().await?;
    let client = &lockbox.client;

    let body = ok_json(&client.get_secret("demo/api", &[]).await?);
    assert_eq!(body["ARN"], created.arn.as_str());
    assert_rfc3339_millis(&body["CreatedDate"]);
    assert_eq!(body["Name"], "demo/api");
    assert_eq!(body["SecretBinary"], Value::Null);
    assert!(
        body.get("SecretBinary").is_some(),
        "SecretBinary present as null"
    );
    assert_eq!(body["SecretString"], secret_string);
    let inner: Value = serde_json::from_str(body["SecretString"].as_str().unwrap_or_default())?;
    assert_eq!(
        inner["ConnectionString"],
        "Server=db;User=app;Password=cs-9b2e"
    );
    assert_eq!(body["VersionId"], created.version_id.as_str());
    assert_eq!(body["VersionStages"], json!(["AWSCURRENT"]));
    assert_eq!(body["ResultMetadata"], json!({}));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_secret_comes_back_as_base64() -> anyhow::Result<()> {
    let fixture = Fixture::new().await?;
    let moto = fixture.moto();
    moto.create_binary_secret("app/cert", &[0, 1, 2, 0xff])
        .await?;
    let lockbox = fixture.start().await?;
    let client = &lockbox.client;

    let body = ok_json(&client.get_secret("app/cert", &[]).await?);
    assert_eq!(body["SecretBinary"], "AAEC/w==");
    assert_eq!(body["SecretString"], Value::Null);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_manager_reference_reads_a_secret_through_the_parameter_route() -> anyhow::Result<()>
{
    let fixture = Fixture::new().await?;
    let moto = fixture.moto();
    let created = moto.create_secret("app/api-key", "ref-value-51c0").await?;
    let lockbox = fixture.start().await?;
    let client = &lockbox.client;

    let body = ok_json(
        &client
            .get_parameter(
                "/aws/reference/secretsmanager/app/api-key",
                &[WITH_DECRYPTION],
            )
            .await?,
    );
    let p = &body["Parameter"];
    assert_eq!(p["Value"], "ref-value-51c0");
    assert_eq!(p["Type"], "SecureString");
    assert_eq!(p["ARN"], created.arn.as_str());
    assert!(
        p["SourceResult"].is_string(),
        "SourceResult: {}",
        p["SourceResult"]
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Cache
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn second_read_is_served_from_the_cache() -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .param("/app/cached", "v1")
        .secret("app/cached", "s1")
        .start()
        .await?;
    let (moto, proxy, client) = (&lockbox.moto, &lockbox.proxy, &lockbox.client);

    let first = client.get_parameter("/app/cached", &[]).await?;
    assert_eq!(value_of(&first).as_deref(), Some("v1"));
    // A change in AWS is not seen until the entry expires: proof the answer is cached.
    moto.put_param("/app/cached", "v2", ParameterType::String, None)
        .await?;
    let second = client.get_parameter("/app/cached", &[]).await?;
    assert_eq!(value_of(&second).as_deref(), Some("v1"));
    assert_eq!(proxy.calls("GetParameter"), 1);

    let first = client.get_secret("app/cached", &[]).await?;
    let second = client.get_secret("app/cached", &[]).await?;
    assert_eq!(value_of(&first).as_deref(), Some("s1"));
    assert_eq!(first.body, second.body);
    assert_eq!(proxy.calls("GetSecretValue"), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn parameter_is_fetched_again_after_its_ttl() -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .param("/app/ttl", "before")
        .env("SSM_PARAMETER_STORE_TTL", "1")
        .start()
        .await?;
    let (moto, proxy, client) = (&lockbox.moto, &lockbox.proxy, &lockbox.client);

    let path = parameter_path("/app/ttl", &[]);
    let first_read = Instant::now();
    assert_eq!(
        value_of(&client.get(&path).await?).as_deref(),
        Some("before")
    );
    assert_eq!(
        value_of(&client.get(&path).await?).as_deref(),
        Some("before")
    );
    assert_eq!(
        proxy.calls("GetParameter"),
        1,
        "second read within the TTL is a hit"
    );

    moto.put_param("/app/ttl", "after", ParameterType::String, None)
        .await?;
    let (_, _) = read_until(client, &path, |r| value_of(r).as_deref() == Some("after")).await?;
    assert!(
        first_read.elapsed() >= Duration::from_millis(900),
        "refetched before the 1 s TTL passed"
    );
    assert_eq!(proxy.calls("GetParameter"), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn secret_is_fetched_again_after_its_ttl() -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .secret("app/ttl", "before")
        .env("SECRETS_MANAGER_TTL", "1")
        .start()
        .await?;
    let (moto, proxy, client) = (&lockbox.moto, &lockbox.proxy, &lockbox.client);

    let path = secret_path("app/ttl", &[]);
    let first_read = Instant::now();
    assert_eq!(
        value_of(&client.get(&path).await?).as_deref(),
        Some("before")
    );
    assert_eq!(
        value_of(&client.get(&path).await?).as_deref(),
        Some("before")
    );
    assert_eq!(
        proxy.calls("GetSecretValue"),
        1,
        "second read within the TTL is a hit"
    );

    moto.put_secret_value("app/ttl", "after").await?;
    read_until(client, &path, |r| value_of(r).as_deref() == Some("after")).await?;
    assert!(first_read.elapsed() >= Duration::from_millis(900));
    assert_eq!(proxy.calls("GetSecretValue"), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_now_skips_the_cache_and_refreshes_it() -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .param("/app/refresh", "old")
        .secret("app/refresh", "old-secret")
        .start()
        .await?;
    let (moto, proxy, client) = (&lockbox.moto, &lockbox.proxy, &lockbox.client);

    assert_eq!(
        value_of(&client.get_parameter("/app/refresh", &[]).await?).as_deref(),
        Some("old")
    );
    moto.put_param("/app/refresh", "new", ParameterType::String, None)
        .await?;
    let refreshed = client
        .get_parameter("/app/refresh", &[("refreshNow", "true")])
        .await?;
    assert_eq!(value_of(&refreshed).as_deref(), Some("new"));
    assert_eq!(proxy.calls("GetParameter"), 2);
    // The fresh value replaced the cached one.
    assert_eq!(
        value_of(&client.get_parameter("/app/refresh", &[]).await?).as_deref(),
        Some("new")
    );
    assert_eq!(proxy.calls("GetParameter"), 2);

    assert_eq!(
        value_of(&client.get_secret("app/refresh", &[]).await?).as_deref(),
        Some("old-secret")
    );
    moto.put_secret_value("app/refresh", "new-secret").await?;
    let refreshed = client
        .get_secret("app/refresh", &[("refreshNow", "true")])
        .await?;
    assert_eq!(value_of(&refreshed).as_deref(), Some("new-secret"));
    assert_eq!(proxy.calls("GetSecretValue"), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn least_recently_used_entry_is_evicted_at_the_size_bound() -> anyhow::Result<()> {
    let fixture = Fixture::new().await?;
    let moto = fixture.moto();
    for name in ["/lru/a", "/lru/b", "/lru/c"] {
        moto.put_param(name, name, ParameterType::String, None)
            .await?;
    }
    let lockbox = fixture
        .env("PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE", "2")
        .start()
        .await?;
    let (proxy, client) = (&lockbox.proxy, &lockbox.client);

    for name in ["/lru/a", "/lru/b", "/lru/c"] {
        assert_eq!(
            value_of(&client.get_parameter(name, &[]).await?).as_deref(),
            Some(name)
        );
    }
    assert_eq!(proxy.calls("GetParameter"), 3);
    // a is the least recently used of three entries in a cache of two: gone.
    client.get_parameter("/lru/a", &[]).await?;
    assert_eq!(proxy.calls("GetParameter"), 4, "a should have been evicted");
    // c was used after a and b, so it survived.
    client.get_parameter("/lru/c", &[]).await?;
    assert_eq!(proxy.calls("GetParameter"), 4, "c should still be cached");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_first_reads_make_one_aws_call() -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .param("/app/hot", "hot-value")
        .secret("app/hot", "hot-secret")
        .start()
        .await?;
    let (proxy, client) = (&lockbox.proxy, &lockbox.client);
    // Slow AWS so that all fifty requests arrive while the first fetch is in flight.
    proxy.set_latency(Duration::from_millis(200));

    let reads = (0..50).map(|_| {
        let client = client.clone();
        async move { client.get_parameter("/app/hot", &[]).await }
    });
    for response in join_all(reads).await {
        assert_eq!(value_of(&response?).as_deref(), Some("hot-value"));
    }
    assert_eq!(proxy.calls("GetParameter"), 1);

    let reads = (0..50).map(|_| {
        let client = client.clone();
        async move { client.get_secret("app/hot", &[]).await }
    });
    for response in join_all(reads).await {
        assert_eq!(value_of(&response?).as_deref(), Some("hot-secret"));
    }
    assert_eq!(proxy.calls("GetSecretValue"), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_key_separates_decryption_selectors_and_stages() -> anyhow::Result<()> {
    let fixture = Fixture::new().await?;
    let moto = fixture.moto();
    let key = moto.create_cmk("lockbox-keytest").await?;
    moto.put_param(
        "/app/key",
        "plain-old-77",
        ParameterType::SecureString,
        Some(&key),
    )
    .await?;
    moto.put_param(
        "/app/key",
        "plain-new-88",
        ParameterType::SecureString,
        Some(&key),
    )
    .await?;
    moto.create_secret("app/key", "stage-previous").await?;
    moto.put_secret_value("app/key", "stage-current").await?;
    let lockbox = fixture.start().await?;
    let (proxy, client) = (&lockbox.proxy, &lockbox.client);

    for round in 0..2 {
        let decrypted = client.get_parameter("/app/key", &[WITH_DECRYPTION]).await?;
        assert_eq!(value_of(&decrypted).as_deref(), Some("plain-new-88"));
        let sealed = client.get_parameter("/app/key", &[]).await?;
        assert_ne!(
            value_of(&sealed).as_deref(),
            Some("plain-new-88"),
            "round {round}: a decrypted entry answered a request without withDecryption"
        );
        let old = client
            .get_parameter("/app/key", &[("version", "1"), WITH_DECRYPTION])
            .await?;
        assert_eq!(value_of(&old).as_deref(), Some("plain-old-77"));
        assert_eq!(proxy.calls("GetParameter"), 3, "round {round}");

        let current = client.get_secret("app/key", &[]).await?;
        assert_eq!(value_of(&current).as_deref(), Some("stage-current"));
        let previous = client
            .get_secret("app/key", &[("versionStage", "AWSPREVIOUS")])
            .await?;
        assert_eq!(value_of(&previous).as_deref(), Some("stage-previous"));
        assert_eq!(proxy.calls("GetSecretValue"), 2, "round {round}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn disabled_cache_zero_ttl_and_zero_size_always_call_aws() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    moto.put_param("/app/uncached", "v", ParameterType::String, None)
        .await?;
    for setting in [
        ("PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED", "FALSE"),
        ("SSM_PARAMETER_STORE_TTL", "0"),
        ("PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE", "0"),
    ] {
        let (_sandbox, proxy, client) = spawn_lockbox(&moto, &[setting]).await?;
        for _ in 0..2 {
            let response = client.get_parameter("/app/uncached", &[]).await?;
            assert_eq!(value_of(&response).as_deref(), Some("v"), "{setting:?}");
        }
        assert_eq!(proxy.calls("GetParameter"), 2, "{setting:?}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Requests that are refused
// ---------------------------------------------------------------------------------------

/// The keyring route: a parameter's `current`, `previous` and `pending` versions in one
/// answer, one cache entry filled by one `GetParameters` call, never without the token,
/// and never a value in the logs.
#[tokio::test(flavor = "multi_thread")]
async fn keyring_route_serves_current_previous_and_pending_from_one_entry() -> anyhow::Result<()> {
    let name = "/shared/signing-key";
    let fixture = Fixture::new().await?;
    fixture
        .moto()
        .put_param(name, "KEYRING-one-9f2c", ParameterType::SecureString, None)
        .await?;
    fixture.moto().label_param(name, 1, "current").await?;
    let lockbox = fixture
        .env("SSM_PARAMETER_STORE_TTL", "1")
        .env("PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL", "debug")
        .start()
        .await?;
    let (moto, proxy, client) = (&lockbox.moto, &lockbox.proxy, &lockbox.client);
    let path = keyring_path(name, &[WITH_DECRYPTION]);

    assert_any_error(&client.get_without_token(&path).await?, 403);
    assert_eq!(proxy.total(), 0, "a refused request never reaches AWS");

    // Only current: previous and pending are null, not an error.
    let first = ok_json(&client.get(&path).await?);
    assert_eq!(
        first,
        json!({
            "Name": name,
            "Current": {"Value": "KEYRING-one-9f2c", "Version": 1},
            "Previous": null,
            "Pending": null,
        })
    );
    // Read again within the TTL: a hit, from the one entry that one call filled.
    let again = client.get(&path).await?;
    assert_eq!(ok_json(&again), first);
    assert_eq!(again.header("x-lockbox-cache"), Some("hit"));
    assert_eq!(
        proxy.calls("GetParameters"),
        1,
        "one call fills the keyring"
    );
    assert_eq!(proxy.calls("GetParameter"), 0);
    let stats = ok_json(&client.get("/lockbox/stats?entries=true").await?);
    let entries: Vec<&Value> = stats["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "keyring")
        .collect();
    assert_eq!(
        entries.len(),
        1,
        "one cache entry for three labels: {stats}"
    );
    assert_eq!(entries[0]["name"], name);

    // A staged rotation: version 2 is pending; then promoted, version 1 previous.
    moto.put_param(name, "KEYRING-two-41d7", ParameterType::SecureString, None)
        .await?;
    moto.label_param(name, 2, "pending").await?;
    let (staged, _) = read_until(client, &path, |r| {
        r.status == 200 && r.json().is_ok_and(|d| d["Pending"] != Value::Null)
    })
    .await?;
    let staged = ok_json(&staged);
    assert_eq!(
        staged["Current"],
        json!({"Value": "KEYRING-one-9f2c", "Version": 1})
    );
    assert_eq!(
        staged["Pending"],
        json!({"Value": "KEYRING-two-41d7", "Version": 2})
    );
    moto.label_param(name, 2, "current").await?;
    moto.label_param(name, 1, "previous").await?;
    moto.ssm()
        .unlabel_parameter_version()
        .name(name)
        .parameter_version(2)
        .labels("pending")
        .send()
        .await?;
    let (promoted, _) = read_until(client, &path, |r| {
        r.status == 200 && r.json().is_ok_and(|d| d["Current"]["Version"] == 2)
    })
    .await?;
    assert_eq!(
        ok_json(&promoted),
        json!({
            "Name": name,
            "Current": {"Value": "KEYRING-two-41d7", "Version": 2},
            "Previous": {"Value": "KEYRING-one-9f2c", "Version": 1},
            "Pending": null,
        })
    );
    // Each fill was one GetParameters call. moto does not echo each answer's `Selector`
    // as SSM does, so answers of different versions cost a GetParameter of `current`
    // here (never a guess); against SSM it is none.
    let fills = proxy.calls("GetParameters");
    assert!(fills >= 3, "the TTL passed twice: {fills} fills");
    assert!(
        proxy.calls("GetParameter") <= fills,
        "at most one disambiguating read per fill: {:?}",
        proxy.call_counts()
    );

    // No current at all: a 404 that names the parameter.
    moto.put_param(
        "/shared/unlabelled",
        "KEYRING-bare-77aa",
        ParameterType::SecureString,
        None,
    )
    .await?;
    let missing = client
        .get(&keyring_path("/shared/unlabelled", &[WITH_DECRYPTION]))
        .await?;
    let message = assert_error(&missing, 404, "ParameterVersionLabelNotFound");
    assert!(message.contains("/shared/unlabelled"), "{message}");
    let selector = client
        .get(&keyring_path(&format!("{name}:current"), &[]))
        .await?;
    assert_error(&selector, 400, "InvalidRequest");

    let logs = lockbox.sandbox.logs();
    assert!(logs.contains("keyring served"), "the debug log is on");
    for value in ["KEYRING-one-9f2c", "KEYRING-two-41d7", "KEYRING-bare-77aa"] {
        assert!(!logs.contains(value), "{value} in the logs");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_or_wrong_token_is_403_and_never_reaches_aws() -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .param("/app/guarded", "v")
        .secret("app/guarded", "s")
        .start()
        .await?;
    let (proxy, client) = (&lockbox.proxy, &lockbox.client);

    for path in [
        parameter_path("/app/guarded", &[]),
        secret_path("app/guarded", &[]),
    ] {
        assert_any_error(&client.get_without_token(&path).await?, 403);
        let wrong = client
            .get_with_headers(
                &path,
                &[("X-Aws-Parameters-Secrets-Token", "not-the-token")],
            )
            .await?;
        assert_any_error(&wrong, 403);
        let empty = client
            .get_with_headers(&path, &[("X-Aws-Parameters-Secrets-Token", "")])
            .await?;
        assert_any_error(&empty, 403);
    }
    assert_eq!(proxy.total(), 0, "refused requests must not call AWS");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn container_authorization_token_is_used_without_a_session_token() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    moto.put_param("/app/snap", "started", ParameterType::String, None)
        .await?;
    let (builder, session_client) = lockbox_builder(&moto.endpoint())?;
    let sandbox = builder
        .env_remove("AWS_SESSION_TOKEN")
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN", "snapstart-token-0c9d")
        .start()
        .await?;
    sandbox.wait_init_done(INIT_TIMEOUT).await?;

    let snap_client = ExtClient::new(session_client.port(), "snapstart-token-0c9d");
    let ok = snap_client.get_parameter("/app/snap", &[]).await?;
    assert_eq!(value_of(&ok).as_deref(), Some("started"));
    // The token the other client carries was never given to the extension.
    assert_any_error(&session_client.get_parameter("/app/snap", &[]).await?, 403);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn under_snapstart_either_token_is_accepted_when_both_are_set() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    moto.put_param("/app/snap", "started", ParameterType::String, None)
        .await?;
    let (builder, session_client) = lockbox_builder(&moto.endpoint())?;
    let sandbox = builder
        .env("AWS_LAMBDA_INITIALIZATION_TYPE", "snap-start")
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN", "container-token-51e2")
        .start()
        .await?;
    sandbox.wait_init_done(INIT_TIMEOUT).await?;

    let container_client = ExtClient::new(session_client.port(), "container-token-51e2");
    for client in [&session_client, &container_client] {
        let ok = client.get_parameter("/app/snap", &[]).await?;
        assert_eq!(value_of(&ok).as_deref(), Some("started"), "{}", ok.body);
    }
    let stranger = ExtClient::new(session_client.port(), "container-token-51e");
    assert_any_error(&stranger.get_parameter("/app/snap", &[]).await?, 403);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn outside_snapstart_only_the_session_token_is_accepted() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    moto.put_param("/app/p", "v", ParameterType::String, None)
        .await?;
    let (builder, session_client) = lockbox_builder(&moto.endpoint())?;
    let sandbox = builder
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN", "container-token-51e2")
        .start()
        .await?;
    sandbox.wait_init_done(INIT_TIMEOUT).await?;
    assert_eq!(
        value_of(&session_client.get_parameter("/app/p", &[]).await?).as_deref(),
        Some("v")
    );
    let container_client = ExtClient::new(session_client.port(), "container-token-51e2");
    assert_any_error(&container_client.get_parameter("/app/p", &[]).await?, 403);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_are_400_and_never_reach_aws() -> anyhow::Result<()> {
    let (_moto, _sandbox, proxy, client) = lockbox_with_p_and_s(&[]).await?;

    let cases = [
        parameter_path("/app/p", &[("colour", "blue")]),
        parameter_path("/app/p", &[("version", "1"), ("label", "stable")]),
        "/systemsmanager/parameters/get".to_owned(),
        "/systemsmanager/parameters/get?withDecryption=true".to_owned(),
        parameter_path("/app/p", &[("version", "abc")]),
        parameter_path("/app/p", &[("version", "-1")]),
        secret_path("app/s", &[("colour", "blue")]),
        "/secretsmanager/get".to_owned(),
    ];
    for path in &cases {
        let response = client.get(path).await?;
        assert!(
            response.status == 400,
            "{path}: expected 400, got {}: {}",
            response.status,
            response.body
        );
        assert_any_error(&response, 400);
    }
    assert_eq!(proxy.total(), 0, "malformed requests must not call AWS");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn request_with_x_forwarded_for_is_refused() -> anyhow::Result<()> {
    let lockbox = Fixture::new().await?.param("/app/p", "v").start().await?;
    let (proxy, client) = (&lockbox.proxy, &lockbox.client);

    let relayed = client
        .get_with_headers(
            &parameter_path("/app/p", &[]),
            &[("X-Forwarded-For", "10.0.0.7")],
        )
        .await?;
    assert_any_error(&relayed, 400);
    assert_eq!(proxy.total(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn non_get_methods_are_405() -> anyhow::Result<()> {
    let lockbox = Fixture::new().await?.param("/app/p", "v").start().await?;
    let (proxy, client) = (&lockbox.proxy, &lockbox.client);

    for method in [Method::POST, Method::PUT, Method::DELETE] {
        for path in [parameter_path("/app/p", &[]), secret_path("app/s", &[])] {
            let response = client.request(method.clone(), &path, &[], true).await?;
            assert_any_error(&response, 405);
        }
    }
    assert_eq!(proxy.total(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_paths_are_404() -> anyhow::Result<()> {
    let lockbox = Fixture::new().await?.start().await?;
    let client = &lockbox.client;

    for path in [
        "/",
        "/nope",
        "/systemsmanager/parameters/put?name=x",
        "/secretsmanager/list",
    ] {
        let response = client.get(path).await?;
        assert_any_error(&response, 404);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_http_is_rejected_and_the_server_keeps_serving() -> anyhow::Result<()> {
    let lockbox = Fixture::new().await?.start().await?;
    let client = &lockbox.client;

    let garbage = client.send_raw(b"NOT HTTP AT ALL\r\n\r\n").await?;
    assert!(
        garbage.is_empty() || garbage.starts_with("HTTP/1.1 4"),
        "garbage answered with: {garbage}"
    );
    // 1 MiB of header: past any reasonable bound (hyper's default buffer is about 400 KiB).
    let huge_header = format!(
        "GET /ping HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(1024 * 1024)
    );
    let answer = client.send_raw(huge_header.as_bytes()).await?;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "oversized header answered with: {}",
        answer.chars().take(200).collect::<String>()
    );

    let ping = client.get_without_token("/ping").await?;
    assert_eq!(ping.status, 200);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Errors from AWS
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn not_found_is_404_with_the_aws_code() -> anyhow::Result<()> {
    let (_moto, _sandbox, _proxy, client) = lockbox_with_p_and_s(&[]).await?;

    assert_error(
        &client.get_parameter("/app/missing", &[]).await?,
        404,
        "ParameterNotFound",
    );
    assert_error(
        &client.get_parameter("/app/p", &[("version", "9")]).await?,
        404,
        "ParameterVersionNotFound",
    );
    assert_any_error(
        &client.get_parameter("/app/p", &[("label", "nope")]).await?,
        404,
    );
    assert_error(
        &client.get_secret("app/missing", &[]).await?,
        404,
        "ResourceNotFoundException",
    );
    assert_error(
        &client
            .get_secret("app/s", &[("versionStage", "NOPE")])
            .await?,
        404,
        "ResourceNotFoundException",
    );
    assert_error(
        &client
            .get_secret(
                "app/s",
                &[("versionId", "00000000-0000-0000-0000-000000000000")],
            )
            .await?,
        404,
        "ResourceNotFoundException",
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_aws_is_502_and_service_recovers() -> anyhow::Result<()> {
    let (_moto, _sandbox, proxy, client) = lockbox_with_p_and_s(&[]).await?;

    proxy.set_down(DownMode::Refuse);
    assert_any_error(&client.get_parameter("/app/p", &[]).await?, 502);
    assert_any_error(&client.get_secret("app/s", &[]).await?, 502);

    proxy.set_down(DownMode::Off);
    assert_p_served(&client).await?;
    assert_s_served(&client).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_timeout_is_504() -> anyhow::Result<()> {
    let (_moto, _sandbox, proxy, client) = lockbox_with_p_and_s(&[
        ("SSM_PARAMETER_STORE_TIMEOUT_MILLIS", "300"),
        ("SECRETS_MANAGER_TIMEOUT_MILLIS", "300"),
    ])
    .await?;

    proxy.set_down(DownMode::Stall);
    let started = Instant::now();
    assert_any_error(&client.get_parameter("/app/p", &[]).await?, 504);
    assert_any_error(&client.get_secret("app/s", &[]).await?, 504);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "a 300 ms timeout took {:?}",
        started.elapsed()
    );

    proxy.set_down(DownMode::Off);
    assert_p_served(&client).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_errors_keep_the_aws_status_and_code() -> anyhow::Result<()> {
    let (_moto, _sandbox, proxy, client) = lockbox_with_p_and_s(&[]).await?;

    // Throttled for the whole timeout: 429 with a hint of when to come back (AWS's own
    // answer is a bare 400, which function code cannot tell from a bad request).
    proxy.fail_next(Some("GetParameter"), 100, Fault::Throttle);
    let throttled = client.get_parameter("/app/p", &[]).await?;
    assert_error(&throttled, 429, "ThrottlingException");
    let retry_after: u64 = throttled
        .header("retry-after")
        .expect("a Retry-After header")
        .parse()?;
    assert!(retry_after >= 1);
    proxy.fail_next(Some("GetSecretValue"), 100, Fault::ServerError);
    assert_error(
        &client.get_secret("app/s", &[]).await?,
        500,
        "InternalServerError",
    );
    assert!(proxy.faults_injected() >= 2);

    // A failure is not cached: once AWS answers again, so does the extension.
    proxy.clear_faults();
    assert_p_served(&client).await?;
    assert_s_served(&client).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Configuration and logs
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn bad_environment_variable_stops_the_extension_with_an_init_error() -> anyhow::Result<()> {
    let cases = [
        ("SSM_PARAMETER_STORE_TTL", "abc"),
        ("SECRETS_MANAGER_TTL", "86401"),
        ("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", "0"),
        ("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", "70000"),
        ("PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE", "100001"),
        ("PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED", "maybe"),
        ("PARAMETERS_SECRETS_EXTENSION_MAX_CONNECTIONS", "0"),
        ("SSM_PARAMETER_STORE_TIMEOUT_MILLIS", "-5"),
        ("PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL", "LOUD"),
    ];
    // Nothing is read from AWS before the configuration is valid: no moto needed.
    let runs = cases.iter().map(|&(name, value)| async move {
        let (sandbox, status) = lockbox_refusing(name, value).await?;
        anyhow::Ok((name, value, status, sandbox))
    });
    for run in join_all(runs).await {
        let (name, value, status, sandbox) = run?;
        let report = sandbox.report();
        assert!(!status.success(), "{name}={value} was accepted:\n{report}");
        assert!(
            sandbox
                .log_lines()
                .iter()
                .any(|line| line.contains(name) && line.contains(value)),
            "{name}={value}: no log line names the variable and the value:\n{report}"
        );
        assert!(
            !sandbox.init_errors().is_empty(),
            "{name}={value}: no init error posted:\n{report}"
        );
        assert!(
            !sandbox
                .timeline()
                .iter()
                .any(|(_, step)| *step == Lifecycle::NextCalled),
            "{name}={value}: finished Init anyway:\n{report}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn documented_extremes_of_each_range_are_accepted() -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .env("PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE", "100000")
        .env("SSM_PARAMETER_STORE_TTL", "86400")
        .env("SECRETS_MANAGER_TTL", "0")
        .env("PARAMETERS_SECRETS_EXTENSION_MAX_CONNECTIONS", "1")
        .env("SSM_PARAMETER_STORE_TIMEOUT_MILLIS", "0")
        .env("PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED", "true")
        .env("PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL", "INFO")
        .start()
        .await?;
    let client = &lockbox.client;
    assert_eq!(client.get_without_token("/ping").await?.status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_are_json_lines_and_never_contain_secret_values() -> anyhow::Result<()> {
    let fixture = Fixture::new().await?;
    let moto = fixture.moto();
    let key = moto.create_cmk("lockbox-logs").await?;
    let secure = "pw-never-log-3e1a";
    let secret = r#"{"ConnectionString":"Password=never-log-9c4d"}"#;
    let referenced = "ref-never-log-77aa";
    moto.put_param(
        "/app/secure",
        secure,
        ParameterType::SecureString,
        Some(&key),
    )
    .await?;
    let lockbox = fixture
        .secret("app/json", secret)
        .secret("app/ref", referenced)
        .env("PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE", "777")
        .start()
        .await?;
    let (sandbox, proxy, client) = (&lockbox.sandbox, &lockbox.proxy, &lockbox.client);

    sandbox
        .invoke_with(|| async {
            for refresh in ["false", "true"] {
                let r = client
                    .get_parameter("/app/secure", &[WITH_DECRYPTION, ("refreshNow", refresh)])
                    .await?;
                assert_eq!(value_of(&r).as_deref(), Some(secure));
                let r = client
                    .get_secret("app/json", &[("refreshNow", refresh)])
                    .await?;
                assert_eq!(value_of(&r).as_deref(), Some(secret));
            }
            let r = client
                .get_parameter("/aws/reference/secretsmanager/app/ref", &[WITH_DECRYPTION])
                .await?;
            assert_eq!(value_of(&r).as_deref(), Some(referenced));
            client
                .get_without_token("/systemsmanager/parameters/get?name=x")
                .await?;
            anyhow::Ok(())
        })
        .await??;
    proxy.fail_next(Some("GetParameter"), 100, Fault::Throttle);
    client
        .get_parameter("/app/secure", &[WITH_DECRYPTION, ("refreshNow", "true")])
        .await?;
    let (status, _) = sandbox.shutdown(WAIT).await?;
    assert!(status.success());

    let lines = sandbox.log_lines();
    assert!(!lines.is_empty(), "no logs at debug level");
    for line in lines.iter().filter(|l| !l.trim().is_empty()) {
        let parsed: Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("log line is not JSON ({err}): {line}"));
        assert!(parsed.is_object(), "log line is not a JSON object: {line}");
        for value in [secure, "never-log-9c4d", referenced, client.token()] {
            assert!(
                !line.contains(value),
                "a secret value reached the logs: {line}"
            );
        }
    }
    // At DEBUG the effective configuration is logged.
    assert!(
        lines.iter().any(|l| l.contains("777")),
        "effective configuration (cache size 777) not logged at debug:\n{}",
        sandbox.report()
    );
    Ok(())
}
