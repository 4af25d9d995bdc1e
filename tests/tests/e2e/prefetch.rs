//! End-to-end tests for prefetch, batch and path reads, plain-text values, refresh ahead of
//! expiry and stale serving (issue 3): the real `lockbox` binary under the Lambda sandbox,
//! against moto behind the counting, fault-injecting proxy.

use std::time::Duration;

use aws_sdk_ssm::types::ParameterType;
use futures::future::{join_all, try_join_all};
use lockbox_tests::check::{
    assert_error, cache_header, init_after_registration, ok_json, value_of, wait_until, WAIT,
};
use lockbox_tests::client::{
    parameter_path, path_with_query, secret_path, ExtClient, Response, CACHE_HEADER,
    WITH_DECRYPTION,
};
use lockbox_tests::sandbox::Lifecycle;
use lockbox_tests::{
    lockbox_refusing, spawn_lockbox, start_lockbox_behind, DownMode, Fault, Fixture, Moto, Proxy,
    INIT_TIMEOUT,
};
use serde_json::{json, Value};
use tokio::time::Instant;

/// Pause between polls of a condition that needs time to become true (a TTL passing).
const POLL: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A sample function's configuration: parameters by name (String and SecureString), a
/// path, and secrets; returns the `LOCKBOX_PREFETCH` value and every (name, value) seeded.
struct Seeded {
    prefetch: String,
    strings: Vec<(String, String)>,
    secure: Vec<(String, String)>,
    under_path: Vec<(String, String)>,
    secrets: Vec<(String, String)>,
}

/// Seeds `strings` String parameters and `secure` SecureStrings under `/fn/`, `path_count`
/// parameters under `/fn/path/` (half of them one level deeper) and `secret_count` secrets.
async fn seed_function(
    moto: &Moto,
    strings: usize,
    secure: usize,
    path_count: usize,
    secret_count: usize,
) -> anyhow::Result<Seeded> {
    let key = moto.create_cmk("alias/lockbox-prefetch").await?;
    let strings: Vec<(String, String)> = (0..strings)
        .map(|i| (format!("/fn/plain/p{i:02}"), format!("plain-{i}")))
        .collect();
    let secure: Vec<(String, String)> = (0..secure)
        .map(|i| (format!("/fn/secure/s{i:02}"), format!("secure-{i}")))
        .collect();
    let under_path: Vec<(String, String)> = (0..path_count)
        .map(|i| {
            let name = if i % 2 == 0 {
                format!("/fn/path/q{i:02}")
            } else {
                format!("/fn/path/deep/q{i:02}")
            };
            (name, format!("path-{i}"))
        })
        .collect();
    let secrets: Vec<(String, String)> = (0..secret_count)
        .map(|i| {
            (
                format!("fn/secret-{i:02}"),
                format!("{{\"password\":\"pw-{i}\"}}"),
            )
        })
        .collect();

    try_join_all(
        strings
            .iter()
            .chain(&under_path)
            .map(|(name, value)| moto.put_param(name, value, ParameterType::String, None)),
    )
    .await?;
    try_join_all(
        secure.iter().map(|(name, value)| {
            moto.put_param(name, value, ParameterType::SecureString, Some(&key))
        }),
    )
    .await?;
    try_join_all(
        secrets
            .iter()
            .map(|(name, value)| moto.create_secret(name, value)),
    )
    .await?;

    let mut entries: Vec<String> = strings
        .iter()
        .chain(&secure)
        .map(|(name, _)| format!("ssm:{name}"))
        .collect();
    if path_count > 0 {
        entries.push("ssm-path:/fn/path/".to_owned());
    }
    entries.extend(secrets.iter().map(|(id, _)| format!("secret:{id}")));
    Ok(Seeded {
        // Both separators are allowed; use both.
        prefetch: entries
            .chunks(7)
            .map(|chunk| chunk.join(","))
            .collect::<Vec<_>>()
            .join("\n"),
        strings,
        secure,
        under_path,
        secrets,
    })
}

/// Reads every seeded value the way function code would and checks each one; returns the
/// `X-Lockbox-Cache` header of every read.
async fn read_all(client: &ExtClient, seeded: &Seeded) -> anyhow::Result<Vec<String>> {
    let mut reads = Vec::new();
    // Strings without withDecryption (the common call), SecureStrings and the path's
    // parameters with it.
    for (name, value) in &seeded.strings {
        reads.push((parameter_path(name, &[]), value.clone()));
    }
    for (name, value) in seeded.secure.iter().chain(&seeded.under_path) {
        reads.push((parameter_path(name, &[WITH_DECRYPTION]), value.clone()));
    }
    for (id, value) in &seeded.secrets {
        reads.push((secret_path(id, &[]), value.clone()));
    }
    let answers = try_join_all(reads.iter().map(|(path, _)| client.get(path))).await?;
    let mut headers = Vec::new();
    for ((path, expected), answer) in reads.iter().zip(&answers) {
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        assert_eq!(
            value_of(answer).as_deref(),
            Some(expected.as_str()),
            "{path}"
        );
        headers.push(cache_header(answer).to_owned());
    }
    Ok(headers)
}

// ---------------------------------------------------------------------------------------
// Prefetch during Init
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn first_invoke_reading_fifty_prefetched_parameters_and_ten_secrets_makes_no_aws_call(
) -> anyhow::Result<()> {
    let fixture = Fixture::new().await?;
    let moto = fixture.moto();
    let seeded = seed_function(moto, 30, 10, 10, 10).await?;
    let lockbox = fixture
        .env("LOCKBOX_PREFETCH", &seeded.prefetch)
        .start()
        .await?;
    let (sandbox, proxy, client) = (&lockbox.sandbox, &lockbox.proxy, &lockbox.client);

    // Prefetch used the batch APIs: 40 names in 10s, one path, 10 secrets in one call.
    let calls = proxy.call_counts();
    assert_eq!(proxy.calls("GetParameters"), 4, "{calls:?}");
    assert!(proxy.calls("GetParametersByPath") >= 1, "{calls:?}");
    assert_eq!(proxy.calls("BatchGetSecretValue"), 1, "{calls:?}");
    assert_eq!(proxy.calls("GetParameter"), 0, "{calls:?}");
    assert_eq!(proxy.calls("GetSecretValue"), 0, "{calls:?}");
    // The line travels through a pipe reader, so it may land just after `next`.
    sandbox
        .wait_log_line("prefetch done", Duration::from_secs(5))
        .await?;

    let before = proxy.total();
    let headers = sandbox.invoke_with(|| read_all(client, &seeded)).await??;
    assert_eq!(headers.len(), 60);
    assert!(
        headers.iter().all(|h| h == "hit"),
        "every first read must be a hit: {headers:?}"
    );
    assert_eq!(
        proxy.total(),
        before,
        "AWS calls during the first invoke: {:?}",
        proxy.call_counts()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn first_next_comes_only_after_prefetch_is_done() -> anyhow::Result<()> {
    let latency = Duration::from_millis(400);
    let fixture = Fixture::new().await?;
    let seeded = seed_function(fixture.moto(), 20, 0, 4, 3).await?;
    let lockbox = fixture
        .latency(latency)
        .env("LOCKBOX_PREFETCH", &seeded.prefetch)
        .launch()
        .await?;
    let (sandbox, proxy, client) = (&lockbox.sandbox, &lockbox.proxy, &lockbox.client);
    sandbox.wait_init_done(INIT_TIMEOUT).await?;

    let init = init_after_registration(sandbox);
    assert!(
        init >= latency,
        "next called {init:?} after registering, before one AWS round trip ({latency:?}):\n{}",
        sandbox.report()
    );
    // Everything prefetch asked for was answered before `next`.
    let at_next = proxy.total();
    assert!(at_next >= 3, "prefetch calls: {:?}", proxy.call_counts());
    let prefetch_line = sandbox
        .wait_log_line("prefetch done", Duration::from_secs(5))
        .await?;
    let line: Value = serde_json::from_str(&prefetch_line)?;
    let elapsed_ms = line["fields"]["elapsed_ms"]
        .as_u64()
        .or_else(|| line["elapsed_ms"].as_u64())
        .unwrap_or_else(|| panic!("no elapsed_ms in {prefetch_line}"));
    assert!(
        elapsed_ms as u128 >= latency.as_millis() && elapsed_ms as u128 <= init.as_millis(),
        "prefetch took {elapsed_ms} ms; Init {init:?}"
    );

    let headers = sandbox.invoke_with(|| read_all(client, &seeded)).await??;
    assert!(headers.iter().all(|h| h == "hit"), "{headers:?}");
    assert_eq!(proxy.calls("GetParameter"), 0, "{:?}", proxy.call_counts());
    assert_eq!(
        proxy.calls("GetSecretValue"),
        0,
        "{:?}",
        proxy.call_counts()
    );
    assert_eq!(proxy.total(), at_next, "{:?}", proxy.call_counts());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_aws_ends_init_at_the_prefetch_budget_and_values_load_on_demand(
) -> anyhow::Result<()> {
    let budget = Duration::from_millis(1000);
    let lockbox = Fixture::new()
        .await?
        .param("/app/late", "late-value")
        .secret("app/late", "late-secret")
        .down(DownMode::Stall)
        .env("LOCKBOX_PREFETCH", "ssm:/app/late,secret:app/late")
        .env("LOCKBOX_PREFETCH_TIMEOUT_MS", "1000")
        .launch()
        .await?;
    let (sandbox, proxy, client) = (&lockbox.sandbox, &lockbox.proxy, &lockbox.client);
    sandbox.wait_init_done(INIT_TIMEOUT).await?;

    let init = init_after_registration(sandbox);
    assert!(
        init >= budget - Duration::from_millis(50),
        "Init ended after {init:?}, before the budget: did prefetch wait at all?\n{}",
        sandbox.report()
    );
    assert!(
        init < budget + Duration::from_millis(1500),
        "Init took {init:?} with a {budget:?} budget:\n{}",
        sandbox.report()
    );
    assert!(
        sandbox.init_errors().is_empty(),
        "{:?}",
        sandbox.init_errors()
    );
    // Waited for with a deadline: the line travels through a pipe reader.
    sandbox
        .wait_log_line("prefetch budget spent", Duration::from_secs(5))
        .await?;

    // The function starts; once AWS is back, its reads are answered.
    proxy.set_down(DownMode::Off);
    let (parameter, secret) = sandbox
        .invoke_with(|| async {
            let parameter = client.get_parameter("/app/late", &[]).await?;
            let secret = client.get_secret("app/late", &[]).await?;
            anyhow::Ok((parameter, secret))
        })
        .await??;
    assert_eq!(ok_json(&parameter)["Parameter"]["Value"], "late-value");
    assert_eq!(ok_json(&secret)["SecretString"], "late-secret");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn required_prefetch_with_missing_values_fails_init_listing_them() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    moto.put_param("/app/present", "here-7a1c", ParameterType::String, None)
        .await?;
    let plan = "ssm:/app/present,ssm:/app/missing-param,secret:app/missing-secret";

    let proxy = Proxy::start(&moto.endpoint()).await?;
    let (sandbox, _client) = start_lockbox_behind(
        &proxy,
        &[
            ("LOCKBOX_PREFETCH", plan),
            ("LOCKBOX_PREFETCH_REQUIRED", "true"),
        ],
    )
    .await?;
    let status = sandbox.wait_exit(WAIT).await?;
    let report = sandbox.report();
    assert!(!status.success(), "exited {status}:\n{report}");
    let errors = sandbox.init_errors();
    assert_eq!(errors.len(), 1, "{report}");
    assert_eq!(errors[0].error_type, "Extension.PrefetchFailed", "{report}");
    for named in ["/app/missing-param", "app/missing-secret"] {
        assert!(
            errors[0].body.contains(named),
            "init error does not name {named}: {}",
            errors[0].body
        );
    }
    assert!(
        !errors[0].body.contains("/app/present") && !errors[0].body.contains("here-7a1c"),
        "init error names what loaded: {}",
        errors[0].body
    );
    assert!(
        sandbox.time_of(|s| *s == Lifecycle::NextCalled).is_none(),
        "finished Init anyway:\n{report}"
    );

    // Not required: the same plan only logs, Init finishes and the loaded value is a hit.
    let (sandbox, _proxy, client) = spawn_lockbox(&moto, &[("LOCKBOX_PREFETCH", plan)]).await?;
    assert!(sandbox.init_errors().is_empty(), "{}", sandbox.report());
    let not_loaded = sandbox
        .wait_log_line("prefetch could not load", Duration::from_secs(5))
        .await?;
    assert!(
        not_loaded.contains("/app/missing-param"),
        "{not_loaded}\n{}",
        sandbox.report()
    );
    let present = client.get_parameter("/app/present", &[]).await?;
    assert_eq!(ok_json(&present)["Parameter"]["Value"], "here-7a1c");
    assert_eq!(cache_header(&present), "hit");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_prefetch_entry_fails_init_naming_the_entry() -> anyhow::Result<()> {
    let cases = [
        ("ssm:/app/fine,bogus:thing", "bogus:thing"),
        ("ssm:/app/fine\nnonsense", "nonsense"),
        ("ssm-path:relative/", "ssm-path:relative/"),
        ("secret:", "secret:"),
        ("ssm:/app/x:0", "ssm:/app/x:0"),
    ];
    // Nothing is read from AWS before the configuration is valid: no moto needed.
    let runs = cases.iter().map(|&(plan, entry)| async move {
        let (sandbox, status) = lockbox_refusing("LOCKBOX_PREFETCH", plan).await?;
        anyhow::Ok((plan, entry, status, sandbox))
    });
    for run in join_all(runs).await {
        let (plan, entry, status, sandbox) = run?;
        let report = sandbox.report();
        assert!(!status.success(), "{plan:?} was accepted:\n{report}");
        let errors = sandbox.init_errors();
        assert_eq!(errors.len(), 1, "{plan:?}: no init error:\n{report}");
        assert_eq!(errors[0].error_type, "Extension.ConfigInvalid");
        assert!(
            errors[0].body.contains("LOCKBOX_PREFETCH") && errors[0].body.contains(entry),
            "{plan:?}: the init error does not name {entry:?}: {}",
            errors[0].body
        );
        assert!(
            sandbox.time_of(|s| *s == Lifecycle::NextCalled).is_none(),
            "{plan:?}: finished Init anyway:\n{report}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn request_during_init_for_a_prefetched_value_waits_for_it() -> anyhow::Result<()> {
    let latency = Duration::from_millis(600);
    let lockbox = Fixture::new()
        .await?
        .param("/app/early", "worth-waiting")
        .secret("app/early", "secret-early")
        .latency(latency)
        .env("LOCKBOX_PREFETCH", "ssm:/app/early,secret:app/early")
        .launch()
        .await?;
    let (sandbox, proxy, client) = (&lockbox.sandbox, &lockbox.proxy, &lockbox.client);
    sandbox.wait_registered(WAIT).await?;

    // Function code starting its own Init: it reads as soon as the port answers, which is
    // before the extension's Init is over. The port is probed with a bare connect, so both
    // reads go out together once it is bound; retrying a read instead could send one of
    // them after Init and lose what this test is about.
    let deadline = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", client.port()))
        .await
        .is_err()
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "port {} never accepted a connection:\n{}",
            client.port(),
            sandbox.report()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sent_during_init = sandbox.time_of(|s| *s == Lifecycle::NextCalled).is_none();
    let (parameter, secret) = tokio::join!(
        client.get_parameter("/app/early", &[]),
        client.get_secret("app/early", &[])
    );
    let (parameter, secret) = (parameter?, secret?);
    assert!(
        sent_during_init,
        "the reads were sent only after Init:\n{}",
        sandbox.report()
    );
    assert_eq!(ok_json(&parameter)["Parameter"]["Value"], "worth-waiting");
    assert_eq!(ok_json(&secret)["SecretString"], "secret-early");
    // Served from what prefetch loaded, not by a fetch of their own.
    assert_eq!(cache_header(&parameter), "hit");
    assert_eq!(cache_header(&secret), "hit");
    assert_eq!(proxy.calls("GetParameter"), 0, "{:?}", proxy.call_counts());
    assert_eq!(
        proxy.calls("GetSecretValue"),
        0,
        "{:?}",
        proxy.call_counts()
    );
    sandbox.wait_init_done(INIT_TIMEOUT).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Batch and path reads
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn get_many_parameters_mirrors_get_parameters_and_shares_the_cache() -> anyhow::Result<()> {
    let fixture = Fixture::new().await?;
    let moto = fixture.moto();
    let key = moto.create_cmk("alias/lockbox-batch").await?;
    moto.put_param("/app/a", "alpha", ParameterType::String, None)
        .await?;
    moto.put_param(
        "/app/b",
        "bravo-secure",
        ParameterType::SecureString,
        Some(&key),
    )
    .await?;
    let lockbox = fixture
        .param("/app/mode", "one")
        .param("/app/mode", "two")
        .start()
        .await?;
    let (proxy, client) = (&lockbox.proxy, &lockbox.client);

    let many = path_with_query(
        "/systemsmanager/parameters/get-many",
        &[
            ("names", "/app/a,/app/b,/app/nope,/app/mode:1"),
            WITH_DECRYPTION,
        ],
    );
    let first = client.get(&many).await?;
    let body = ok_json(&first);
    assert_eq!(first.header(CACHE_HEADER), Some("hits=0/4"));
    let parameters = body["Parameters"].as_array().expect("Parameters");
    let found: Vec<(&str, &str)> = parameters
        .iter()
        .map(|p| (p["Name"].as_str().unwrap(), p["Value"].as_str().unwrap()))
        .collect();
    assert_eq!(
        found,
        [
            ("/app/a", "alpha"),
            ("/app/b", "bravo-secure"),
            ("/app/mode", "one")
        ]
    );
    assert_eq!(parameters[1]["Type"], "SecureString");
    assert_eq!(parameters[2]["Version"], 1);
    for p in parameters {
        for field in [
            "ARN",
            "DataType",
            "LastModifiedDate",
            "Name",
            "Type",
            "Value",
            "Version",
        ] {
            assert!(p.get(field).is_some(), "{field} missing in {p}");
        }
    }
    assert_eq!(body["InvalidParameters"], json!(["/app/nope"]));
    assert_eq!(body["ResultMetadata"], json!({}));
    let batch_calls = proxy.calls("GetParameters");
    assert!(batch_calls >= 1, "{:?}", proxy.call_counts());

    // Again: the three that exist come from the cache.
    let second = client.get(&many).await?;
    assert_eq!(ok_json(&second), body);
    assert_eq!(second.header(CACHE_HEADER), Some("hits=3/4"));

    // Same cache as the single-value route.
    let single = client.get_parameter("/app/b", &[WITH_DECRYPTION]).await?;
    assert_eq!(ok_json(&single)["Parameter"]["Value"], "bravo-secure");
    assert_eq!(cache_header(&single), "hit");
    let before = proxy.total();
    let single = client.get_parameter("/app/a", &[]).await?;
    assert_eq!(cache_header(&single), "hit");
    assert_eq!(proxy.total(), before);

    // Without withDecryption a SecureString comes back encrypted.
    let sealed = ok_json(
        &client
            .get(&path_with_query(
                "/systemsmanager/parameters/get-many",
                &[("names", "/app/b")],
            ))
            .await?,
    );
    assert_ne!(sealed["Parameters"][0]["Value"], "bravo-secure");

    // Bounds, token and errors are those of the other routes.
    let names: Vec<String> = (0..101).map(|i| format!("/p{i}")).collect();
    let too_many = client
        .get(&path_with_query(
            "/systemsmanager/parameters/get-many",
            &[("names", &names.join(","))],
        ))
        .await?;
    assert_error(&too_many, 400, "InvalidRequest");
    let names: Vec<String> = (0..100).map(|i| format!("/p{i}")).collect();
    let hundred = client
        .get(&path_with_query(
            "/systemsmanager/parameters/get-many",
            &[("names", &names.join(","))],
        ))
        .await?;
    assert_eq!(
        ok_json(&hundred)["InvalidParameters"]
            .as_array()
            .map(Vec::len),
        Some(100)
    );
    let no_token = client.get_without_token(&many).await?;
    assert_error(&no_token, 403, "Forbidden");
    Ok(())
}

/// Secrets Manager takes a secret's ARN without its random suffix (a partial ARN) as an id,
/// and answers with the full ARN; a batch that names one secret twice (by name and by ARN)
/// gets it once. Both are found, not reported missing.
#[tokio::test(flavor = "multi_thread")]
async fn get_many_finds_secrets_by_partial_arn_and_by_name_and_arn_together() -> anyhow::Result<()>
{
    let moto = Moto::start().await?;
    let db = moto.create_secret("app/db", "db-secret").await?;
    let api = moto.create_secret("app/api", "api-secret").await?;
    let partial = |arn: &str| arn[..arn.len() - "-AbCdEf".len()].to_owned();
    let (_sandbox, proxy, client) = spawn_lockbox(&moto, &[]).await?;

    let read = |ids: Vec<String>| {
        let client = &client;
        async move {
            let many =
                path_with_query("/secretsmanager/get-many", &[("secretIds", &ids.join(","))]);
            let body = ok_json(&client.get(&many).await?);
            let errors = body["Errors"].as_array().expect("Errors").clone();
            assert!(errors.is_empty(), "{ids:?}: {body}");
            let values: Vec<String> = body["SecretValues"]
                .as_array()
                .expect("SecretValues")
                .iter()
                .map(|v| v["SecretString"].as_str().unwrap_or_default().to_owned())
                .collect();
            anyhow::Ok(values)
        }
    };
    assert_eq!(read(vec![partial(&db.arn)]).await?, ["db-secret"]);
    assert_eq!(
        read(vec!["app/api".into(), api.arn.clone()]).await?,
        ["api-secret", "api-secret"]
    );
    // Each id is a key of its own now: read again, all are hits.
    let calls = proxy.total();
    assert_eq!(
        read(vec![partial(&db.arn), "app/api".into(), api.arn.clone()]).await?,
        ["db-secret", "api-secret", "api-secret"]
    );
    assert_eq!(proxy.total(), calls, "{:?}", proxy.call_counts());
    // The single route takes a partial ARN too.
    let single = client.get_secret(&partial(&api.arn), &[]).await?;
    assert_eq!(ok_json(&single)["SecretString"], "api-secret");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn get_many_secrets_mirrors_batch_get_secret_value() -> anyhow::Result<()> {
    let fixture = Fixture::new().await?;
    let moto = fixture.moto();
    let one = moto.create_secret("app/one", "first-secret").await?;
    moto.create_secret("app/two", r#"{"user":"u2"}"#).await?;
    let lockbox = fixture.start().await?;
    let (proxy, client) = (&lockbox.proxy, &lockbox.client);

    let many = path_with_query(
        "/secretsmanager/get-many",
        &[("secretIds", "app/one,app/missing,app/two")],
    );
    let first = client.get(&many).await?;
    let body = ok_json(&first);
    assert_eq!(first.header(CACHE_HEADER), Some("hits=0/3"));
    let values = body["SecretValues"].as_array().expect("SecretValues");
    assert_eq!(values.len(), 2, "{body}");
    assert_eq!(values[0]["Name"], "app/one");
    assert_eq!(values[0]["SecretString"], "first-secret");
    assert_eq!(values[0]["ARN"], one.arn.as_str());
    assert_eq!(values[0]["VersionId"], one.version_id.as_str());
    assert!(values[0]["VersionStages"]
        .as_array()
        .is_some_and(|s| s.contains(&json!("AWSCURRENT"))));
    assert_eq!(values[1]["SecretString"], r#"{"user":"u2"}"#);
    let errors = body["Errors"].as_array().expect("Errors");
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["SecretId"], "app/missing");
    assert_eq!(errors[0]["ErrorCode"], "ResourceNotFoundException");
    assert!(errors[0]["Message"].is_string());
    assert_eq!(body["ResultMetadata"], json!({}));
    assert_eq!(proxy.calls("BatchGetSecretValue"), 1);

    let second = client.get(&many).await?;
    assert_eq!(second.header(CACHE_HEADER), Some("hits=2/3"));

    // The single route finds what the batch loaded.
    let before = proxy.total();
    let single = client.get_secret("app/two", &[]).await?;
    assert_eq!(ok_json(&single)["SecretString"], r#"{"user":"u2"}"#);
    assert_eq!(cache_header(&single), "hit");
    assert_eq!(proxy.total(), before);

    let ids: Vec<String> = (0..101).map(|i| format!("s{i}")).collect();
    let too_many = client
        .get(&path_with_query(
            "/secretsmanager/get-many",
            &[("secretIds", &ids.join(","))],
        ))
        .await?;
    assert_error(&too_many, 400, "InvalidRequest");
    assert_error(&client.get_without_token(&many).await?, 403, "Forbidden");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn get_by_path_is_recursive_only_when_asked() -> anyhow::Result<()> {
    let fixture = Fixture::new().await?;
    let moto = fixture.moto();
    let key = moto.create_cmk("alias/lockbox-path").await?;
    moto.put_param("/svc/a", "va", ParameterType::String, None)
        .await?;
    moto.put_param(
        "/svc/b",
        "vb-secure",
        ParameterType::SecureString,
        Some(&key),
    )
    .await?;
    let lockbox = fixture
        .param("/svc/deep/c", "vc")
        .param("/svc/deep/er/d", "vd")
        .param("/other/x", "vx")
        .start()
        .await?;
    let (proxy, client) = (&lockbox.proxy, &lockbox.client);

    let names = |body: &Value| -> Vec<(String, String)> {
        let mut found: Vec<(String, String)> = body["Parameters"]
            .as_array()
            .expect("Parameters")
            .iter()
            .map(|p| {
                (
                    p["Name"].as_str().unwrap().to_owned(),
                    p["Value"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        found.sort();
        found
    };
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    };

    let route = "/systemsmanager/parameters/get-by-path";
    let shallow = client
        .get(&path_with_query(
            route,
            &[("path", "/svc/"), WITH_DECRYPTION],
        ))
        .await?;
    let body = ok_json(&shallow);
    assert_eq!(
        names(&body),
        pairs(&[("/svc/a", "va"), ("/svc/b", "vb-secure")])
    );
    assert_eq!(body["ResultMetadata"], json!({}));
    assert_eq!(cache_header(&shallow), "miss");

    let recursive = client
        .get(&path_with_query(
            route,
            &[("path", "/svc/"), ("recursive", "true"), WITH_DECRYPTION],
        ))
        .await?;
    assert_eq!(
        names(&ok_json(&recursive)),
        pairs(&[
            ("/svc/a", "va"),
            ("/svc/b", "vb-secure"),
            ("/svc/deep/c", "vc"),
            ("/svc/deep/er/d", "vd"),
        ])
    );

    // The listing is cached, and so is each parameter in it.
    let again = client
        .get(&path_with_query(
            route,
            &[("path", "/svc/"), ("recursive", "true"), WITH_DECRYPTION],
        ))
        .await?;
    assert_eq!(cache_header(&again), "hit");
    let before = proxy.total();
    let single = client
        .get_parameter("/svc/deep/er/d", &[WITH_DECRYPTION])
        .await?;
    assert_eq!(ok_json(&single)["Parameter"]["Value"], "vd");
    assert_eq!(cache_header(&single), "hit");
    assert_eq!(proxy.total(), before, "{:?}", proxy.call_counts());

    // Without withDecryption the SecureString stays encrypted.
    let sealed = ok_json(
        &client
            .get(&path_with_query(route, &[("path", "/svc/")]))
            .await?,
    );
    let b = sealed["Parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["Name"] == "/svc/b"))
        .expect("/svc/b listed");
    assert_ne!(b["Value"], "vb-secure");

    assert_error(
        &client
            .get(&path_with_query(route, &[("path", "svc")]))
            .await?,
        400,
        "InvalidRequest",
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Value only and JSON keys
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn value_only_and_json_key_answer_plain_text() -> anyhow::Result<()> {
    let fixture = Fixture::new().await?;
    let moto = fixture.moto();
    let document = json!({
        "db": {"host": "db.internal", "port": 5432, "replicas": ["r1", "r2"]},
        "a.b": "dotted",
        "flag": true,
    });
    moto.put_param("/app/plain", "just-text", ParameterType::String, None)
        .await?;
    moto.put_param(
        "/app/json",
        &document.to_string(),
        ParameterType::String,
        None,
    )
    .await?;
    moto.create_secret(
        "app/conn",
        r#"{"url":"postgres://u:p@h/db","nested":{"deeper":{"k":"v"}}}"#,
    )
    .await?;
    moto.create_binary_secret("app/blob", &[0, 159, 146, 150])
        .await?;
    let lockbox = fixture.start().await?;
    let client = &lockbox.client;

    let text = |response: &Response| -> String {
        assert_eq!(response.status, 200, "{}", response.body);
        let kind = response.header("content-type").unwrap_or_default();
        assert!(kind.starts_with("text/plain"), "content type {kind:?}");
        assert!(response.header(CACHE_HEADER).is_some());
        response.body.clone()
    };

    let value_only = client
        .get_parameter("/app/plain", &[("valueOnly", "true")])
        .await?;
    assert_eq!(text(&value_only), "just-text");
    for (key, expected) in [
        ("db.host", "db.internal"),
        ("db.port", "5432"),
        ("db.replicas.1", "r2"),
        ("/db/replicas/0", "r1"),
        ("/a.b", "dotted"),
        ("flag", "true"),
    ] {
        let answer = client
            .get_parameter("/app/json", &[("jsonKey", key)])
            .await?;
        assert_eq!(text(&answer), expected, "jsonKey={key}");
    }
    let object = client
        .get_parameter("/app/json", &[("jsonKey", "db")])
        .await?;
    assert_eq!(
        serde_json::from_str::<Value>(&text(&object))?,
        document["db"]
    );

    let url = client.get_secret("app/conn", &[("jsonKey", "url")]).await?;
    assert_eq!(text(&url), "postgres://u:p@h/db");
    let nested = client
        .get_secret("app/conn", &[("jsonKey", "nested.deeper.k")])
        .await?;
    assert_eq!(text(&nested), "v");
    let whole = client
        .get_secret("app/conn", &[("valueOnly", "true")])
        .await?;
    assert_eq!(
        text(&whole),
        r#"{"url":"postgres://u:p@h/db","nested":{"deeper":{"k":"v"}}}"#
    );

    // A missing key is a 404 naming the key; a value that is not JSON is a 422 naming it.
    let missing = client
        .get_parameter("/app/json", &[("jsonKey", "db.password")])
        .await?;
    let message = assert_error(&missing, 404, "JsonKeyNotFound");
    assert!(message.contains("db.password"), "{message}");
    let missing = client
        .get_secret("app/conn", &[("jsonKey", "nested.nope")])
        .await?;
    let message = assert_error(&missing, 404, "JsonKeyNotFound");
    assert!(message.contains("nested.nope"), "{message}");
    let not_json = client
        .get_parameter("/app/plain", &[("jsonKey", "db.host")])
        .await?;
    let message = assert_error(&not_json, 422, "ValueNotJson");
    assert!(message.contains("db.host"), "{message}");
    let binary = client
        .get_secret("app/blob", &[("valueOnly", "true")])
        .await?;
    assert_error(&binary, 422, "ValueNotJson");
    // Neither error leaks the value.
    for answer in [&missing, &not_json] {
        assert!(!answer.body.contains("just-text") && !answer.body.contains("u:p@h"));
    }
    Ok(())
}

/// `jsonKey=` and a reference's JSON key are read by one function: a top-level key written
/// with a dot is that key (CloudFormation's meaning), before it is a path.
#[tokio::test(flavor = "multi_thread")]
async fn json_key_reads_a_dotted_top_level_key_as_references_do() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    moto.create_secret("app/dotted", r#"{"a.b":"top","a":{"b":"nested"}}"#)
        .await?;
    let (_sandbox, _proxy, client) = spawn_lockbox(&moto, &[]).await?;
    let top = client
        .get_secret("app/dotted", &[("jsonKey", "a.b")])
        .await?;
    assert_eq!((top.status, top.body.as_str()), (200, "top"));
    let nested = client
        .get_secret("app/dotted", &[("jsonKey", "/a/b")])
        .await?;
    assert_eq!((nested.status, nested.body.as_str()), (200, "nested"));
    // A value that is JSON but neither object nor array has no keys: 422, naming the key.
    moto.create_secret("app/number", "42").await?;
    let number = client.get_secret("app/number", &[("jsonKey", "k")]).await?;
    let message = assert_error(&number, 422, "ValueNotJson");
    assert!(
        message.contains("\"k\"") && !message.contains("42"),
        "{message}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Refresh ahead of expiry, and stale serving
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn changed_values_arrive_through_refresh_ahead_without_a_miss() -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .param("/app/rotating", "v1")
        .secret("app/rotating", "s1")
        .env("LOCKBOX_PREFETCH", "ssm:/app/rotating,secret:app/rotating")
        .env("SSM_PARAMETER_STORE_TTL", "2")
        .env("SECRETS_MANAGER_TTL", "2")
        .env("LOCKBOX_REFRESH_AHEAD", "0.9")
        .start()
        .await?;
    let (moto, sandbox, proxy, client) = (
        &lockbox.moto,
        &lockbox.sandbox,
        &lockbox.proxy,
        &lockbox.client,
    );
    let prefetch_calls = proxy.calls("GetParameters") + proxy.calls("BatchGetSecretValue");

    let read = || async {
        let parameter = client.get_parameter("/app/rotating", &[]).await?;
        let secret = client.get_secret("app/rotating", &[]).await?;
        anyhow::Ok((parameter, secret))
    };
    let (parameter, secret) = sandbox.invoke_with(read).await??;
    assert_eq!(value_of(&parameter).as_deref(), Some("v1"));
    assert_eq!(value_of(&secret).as_deref(), Some("s1"));

    moto.put_param("/app/rotating", "v2", ParameterType::String, None)
        .await?;
    moto.put_secret_value("app/rotating", "s2").await?;

    // Keep invoking, as a busy function does, until both new values are served; every
    // read on the way must be a hit (the TTL is 2 s, the loop runs for more than that).
    let started = Instant::now();
    let mut invokes = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (parameter, secret) = sandbox.invoke_with(read).await??;
        invokes += 1;
        for answer in [&parameter, &secret] {
            assert_eq!(answer.status, 200, "{}", answer.body);
            assert_eq!(
                cache_header(answer),
                "hit",
                "invoke {invokes}: a read was not a hit:\n{}",
                sandbox.report()
            );
        }
        let values = (value_of(&parameter), value_of(&secret));
        if values == (Some("v2".into()), Some("s2".into())) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "still {values:?} after {invokes} invokes:\n{}",
            sandbox.report()
        );
    }
    // Refreshed with the batch APIs, never with single reads.
    assert!(
        proxy.calls("GetParameters") + proxy.calls("BatchGetSecretValue") > prefetch_calls,
        "{:?}",
        proxy.call_counts()
    );
    assert_eq!(proxy.calls("GetParameter"), 0, "{:?}", proxy.call_counts());
    assert_eq!(
        proxy.calls("GetSecretValue"),
        0,
        "{:?}",
        proxy.call_counts()
    );

    // The values stay current well past the TTL.
    wait_until(Instant::now() + Duration::from_millis(300)).await;
    let (parameter, secret) = sandbox.invoke_with(read).await??;
    assert_eq!(cache_header(&parameter), "hit");
    assert_eq!(value_of(&parameter).as_deref(), Some("v2"));
    assert_eq!(value_of(&secret).as_deref(), Some("s2"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_outage_after_expiry_serves_stale_with_age_then_recovers() -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .param("/app/steady", "before-outage")
        .secret("app/steady", "secret-before")
        .env("SSM_PARAMETER_STORE_TTL", "1")
        .env("SECRETS_MANAGER_TTL", "1")
        .env("LOCKBOX_REFRESH_AHEAD", "0")
        .start()
        .await?;
    let (moto, proxy, client) = (&lockbox.moto, &lockbox.proxy, &lockbox.client);

    let parameter = client.get_parameter("/app/steady", &[]).await?;
    let secret = client.get_secret("app/steady", &[]).await?;
    let fetched_at = Instant::now();
    assert_eq!(cache_header(&parameter), "miss");
    assert_eq!(cache_header(&secret), "miss");

    proxy.set_down(DownMode::Refuse);
    wait_until(fetched_at + Duration::from_millis(1500)).await;

    let parameter = client.get_parameter("/app/steady", &[]).await?;
    let secret = client.get_secret("app/steady", &[]).await?;
    for (answer, value) in [(&parameter, "before-outage"), (&secret, "secret-before")] {
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(value_of(answer).as_deref(), Some(value));
        assert_eq!(cache_header(answer), "stale");
        let age: u64 = answer
            .header("age")
            .expect("a stale answer has an Age header")
            .parse()?;
        assert!((1..=60).contains(&age), "Age {age}");
    }
    assert!(
        proxy.refused_connections() + proxy.faults_injected() > 0,
        "AWS was never asked during the outage"
    );
    // refreshNow asks for AWS's answer: no stale value, the outage shows.
    let fresh = client
        .get_parameter("/app/steady", &[("refreshNow", "true")])
        .await?;
    assert_eq!(fresh.status, 502, "{}", fresh.body);

    // AWS comes back with new values: served fresh, without a restart.
    moto.put_param("/app/steady", "after-outage", ParameterType::String, None)
        .await?;
    moto.put_secret_value("app/steady", "secret-after").await?;
    proxy.set_down(DownMode::Off);
    let deadline = Instant::now() + WAIT;
    loop {
        let parameter = client.get_parameter("/app/steady", &[]).await?;
        let secret = client.get_secret("app/steady", &[]).await?;
        if value_of(&parameter).as_deref() == Some("after-outage")
            && value_of(&secret).as_deref() == Some("secret-after")
        {
            assert_ne!(cache_header(&parameter), "stale");
            assert!(parameter.header("age").is_none());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not recovered: {} / {}",
            parameter.body,
            secret.body
        );
        tokio::time::sleep(POLL).await;
    }
    let again = client.get_parameter("/app/steady", &[]).await?;
    assert_eq!(cache_header(&again), "hit");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_serves_stale_but_a_deleted_value_is_never_served_stale() -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .param("/app/throttled", "t-value")
        .param("/app/deleted", "d-value")
        .env("SSM_PARAMETER_STORE_TTL", "1")
        .env("LOCKBOX_REFRESH_AHEAD", "0")
        .start()
        .await?;
    let (moto, proxy, client) = (&lockbox.moto, &lockbox.proxy, &lockbox.client);
    for name in ["/app/throttled", "/app/deleted"] {
        assert_eq!(
            cache_header(&client.get_parameter(name, &[]).await?),
            "miss"
        );
    }
    let fetched_at = Instant::now();
    moto.ssm()
        .delete_parameter()
        .name("/app/deleted")
        .send()
        .await?;
    wait_until(fetched_at + Duration::from_millis(1200)).await;

    // Throttled beyond the SDK's retries: transient, so the expired value is served.
    proxy.fail_next(Some("GetParameter"), 50, Fault::Throttle);
    let throttled = client.get_parameter("/app/throttled", &[]).await?;
    assert_eq!(throttled.status, 200, "{}", throttled.body);
    assert_eq!(cache_header(&throttled), "stale");
    assert!(throttled.header("age").is_some());
    assert_eq!(value_of(&throttled).as_deref(), Some("t-value"));
    assert!(proxy.faults_injected() > 0);
    proxy.clear_faults();

    // Gone from AWS: permanent, so the expired value is not served.
    let deleted = client.get_parameter("/app/deleted", &[]).await?;
    assert_error(&deleted, 404, "ParameterNotFound");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn max_stale_zero_never_serves_stale() -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .param("/app/strict", "s-value")
        .env("SSM_PARAMETER_STORE_TTL", "1")
        .env("LOCKBOX_MAX_STALE", "0")
        .start()
        .await?;
    let (proxy, client) = (&lockbox.proxy, &lockbox.client);
    assert_eq!(
        cache_header(&client.get_parameter("/app/strict", &[]).await?),
        "miss"
    );
    let fetched_at = Instant::now();
    proxy.set_down(DownMode::Refuse);
    wait_until(fetched_at + Duration::from_millis(1200)).await;
    let answer = client.get_parameter("/app/strict", &[]).await?;
    assert_eq!(answer.status, 502, "{}", answer.body);
    assert!(!answer.body.contains("s-value"));
    Ok(())
}
