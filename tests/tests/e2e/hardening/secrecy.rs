//! Secrecy: no value reaches a log or an error body, on any path, at any level.

use super::SHORT_BOUND_MS;
use anyhow::Context;
use aws_sdk_ssm::types::ParameterType;
use base64::Engine;
use lockbox_tests::check::{eventually, WAIT};
use lockbox_tests::client::{parameter_path, secret_path, Response, CACHE_HEADER, WITH_DECRYPTION};
use lockbox_tests::{bins, DownMode, Fault, Fixture, Moto, Proxy};
use serde_json::{json, Value};

/// Every form a value could leak in: as is, and base64 at each of the three byte
/// alignments (so it is found inside a longer base64 text too).
fn leak_forms(value: &[u8]) -> Vec<String> {
    let mut forms = vec![String::from_utf8_lossy(value).into_owned()];
    for engine in [
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        for shift in 0..3 {
            let Some(tail) = value.get(shift..) else {
                continue;
            };
            let whole = &tail[..tail.len() - tail.len() % 3];
            if whole.len() >= 6 {
                forms.push(engine.encode(whole));
            }
        }
    }
    forms
}

/// Asserts that none of `values`, in any of its [`leak_forms`], is in `text`.
fn assert_no_leak(what: &str, text: &str, values: &[Vec<u8>]) {
    for value in values {
        for form in leak_forms(value) {
            assert!(
                !text.contains(&form),
                "a secret value (as {form:?}) leaked into {what}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_value_reaches_logs_or_error_bodies_on_any_path_at_debug_level() -> anyhow::Result<()> {
    let fixture = Fixture::new().await?;
    let moto = fixture.moto();
    let key = moto.create_cmk("lockbox-secrecy").await?;
    let secure = "pw-secrecy-Q7x9-secure";
    let plain = "plain-secrecy-R2d2-value";
    let json_secret = r#"{"user":"app","password":"pw-secrecy-J5k8-json"}"#;
    let text_secret = "text-secrecy-M3n4-secret";
    let binary: &[u8] = b"\x00\x01bin-secrecy-B6v7\xff\xfe";
    let under_path = "path-secrecy-P1p2-value";
    moto.put_param(
        "/sec/secure",
        secure,
        ParameterType::SecureString,
        Some(&key),
    )
    .await?;
    moto.put_param("/sec/plain", plain, ParameterType::String, None)
        .await?;
    moto.put_param(
        "/sec/tree/leaf",
        under_path,
        ParameterType::SecureString,
        Some(&key),
    )
    .await?;
    moto.create_secret("sec/json", json_secret).await?;
    moto.create_secret("sec/text", text_secret).await?;
    moto.create_binary_secret("sec/binary", binary).await?;
    let values: Vec<Vec<u8>> = [
        secure.as_bytes(),
        plain.as_bytes(),
        json_secret.as_bytes(),
        b"pw-secrecy-J5k8-json",
        text_secret.as_bytes(),
        binary,
        b"bin-secrecy-B6v7",
        under_path.as_bytes(),
    ]
    .map(<[u8]>::to_vec)
    .to_vec();
    let lockbox = fixture
        .envs(&[
            ("PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL", "debug"),
            (
                "LOCKBOX_PREFETCH",
                "ssm:/sec/secure,secret:sec/json,ssm-path:/sec/tree/",
            ),
            ("SSM_PARAMETER_STORE_TTL", "1"),
            ("SECRETS_MANAGER_TTL", "1"),
            ("LOCKBOX_REFRESH_AHEAD", "0.5"),
            ("SSM_PARAMETER_STORE_TIMEOUT_MILLIS", SHORT_BOUND_MS),
        ])
        .start()
        .await?;
    let (sandbox, proxy, client) = (&lockbox.sandbox, &lockbox.proxy, &lockbox.client);
    let error_bodies = std::sync::Mutex::new(Vec::new());
    let keep = |response: Response| {
        if response.status >= 400 {
            if let Ok(mut bodies) = error_bodies.lock() {
                bodies.push(format!("{} {}", response.status, response.body));
            }
        }
        response
    };

    let sealed_path = parameter_path("/sec/secure", &[]);
    let reads: Vec<String> = vec![
        parameter_path("/sec/secure", &[WITH_DECRYPTION]),
        sealed_path.clone(),
        parameter_path("/sec/plain", &[]),
        parameter_path("/sec/plain", &[("valueOnly", "true")]),
        secret_path("sec/json", &[]),
        secret_path("sec/json", &[("jsonKey", "password")]),
        secret_path("sec/text", &[("refreshNow", "true")]),
        secret_path("sec/binary", &[]),
        parameter_path("/aws/reference/secretsmanager/sec/text", &[WITH_DECRYPTION]),
        "/systemsmanager/parameters/get-many?names=/sec/secure,/sec/plain,/sec/nope&withDecryption=true"
            .to_owned(),
        "/systemsmanager/parameters/get-by-path?path=/sec/&recursive=true&withDecryption=true"
            .to_owned(),
        "/secretsmanager/get-many?secretIds=sec/json,sec/text,sec/nope".to_owned(),
    ];
    // Errors of every kind the API has, on the same values.
    let refusals: Vec<(String, u16)> = vec![
        (parameter_path("/sec/missing", &[]), 404),
        (
            parameter_path("/sec/secure", &[("version", "99"), WITH_DECRYPTION]),
            404,
        ),
        (secret_path("sec/missing", &[]), 404),
        (secret_path("sec/json", &[("jsonKey", "nope")]), 404),
        (secret_path("sec/text", &[("jsonKey", "a")]), 422),
        (secret_path("sec/binary", &[("valueOnly", "true")]), 422),
        (parameter_path("/sec/secure", &[("colour", "blue")]), 400),
        (parameter_path("/sec/secure", &[("version", "x")]), 400),
        ("/nowhere".to_owned(), 404),
    ];
    sandbox
        .invoke_with(|| async {
            for target in &reads {
                let response = keep(client.get(target).await?);
                assert_eq!(response.status, 200, "{target}: {}", response.body);
            }
            for (target, status) in &refusals {
                let response = keep(client.get(target).await?);
                assert_eq!(response.status, *status, "{target}: {}", response.body);
            }
            keep(client.get_without_token(&reads[0]).await?);
            keep(
                client
                    .get_with_headers(&reads[0], &[("X-Forwarded-For", "10.0.0.1")])
                    .await?,
            );
            keep(
                client
                    .request(reqwest::Method::POST, &reads[4], &[], true)
                    .await?,
            );
            anyhow::Ok(())
        })
        .await??;

    // AWS failing in every way, with and without a stale value to fall back on. Secrets
    // Manager keeps the 10 s bound, so its retries run out and AWS's own error is answered;
    // SSM's short bound turns the same faults into 504s.
    let refresh = [("refreshNow", "true"), WITH_DECRYPTION];
    for (fault, status) in [
        (Fault::Throttle, 429),
        (Fault::ServerError, 500),
        (Fault::Reset, 502),
    ] {
        proxy.fail_next(None, 1000, fault);
        let response = keep(
            client
                .get_secret("sec/text", &[("refreshNow", "true")])
                .await?,
        );
        assert_eq!(response.status, status, "{fault:?}: {}", response.body);
        let response = keep(
            client
                .get("/secretsmanager/get-many?secretIds=sec/json,sec/text&refreshNow=true")
                .await?,
        );
        assert!(response.status >= 400, "{fault:?}: {}", response.body);
        let response = keep(client.get_parameter("/sec/secure", &refresh).await?);
        assert!(response.status >= 400, "{fault:?}: {}", response.body);
        proxy.clear_faults();
    }
    proxy.fail_next(None, 1000, Fault::Stall);
    let response = keep(client.get_parameter("/sec/secure", &refresh).await?);
    assert_eq!(response.status, 504, "{}", response.body);
    let response = keep(
        client
            .get("/systemsmanager/parameters/get-many?names=/sec/secure,/sec/plain&refreshNow=true")
            .await?,
    );
    assert_eq!(response.status, 504, "{}", response.body);
    proxy.clear_faults();
    proxy.set_down(DownMode::Refuse);
    let response = keep(client.get_secret("sec/nothing-cached", &[]).await?);
    assert_eq!(response.status, 502, "{}", response.body);
    // The TTL is 1 s: the values read above are expired by now, or will be shortly.
    eventually("a stale answer during the outage", || async {
        let response = client
            .get_parameter("/sec/secure", &[WITH_DECRYPTION])
            .await?;
        // Not `cache_header`: an error answer on the way carries no cache header.
        Ok(response.header(CACHE_HEADER) == Some("stale"))
    })
    .await?;
    proxy.set_down(DownMode::Stall);
    let response = keep(client.get_parameter("/sec/never-read", &[]).await?);
    assert_eq!(response.status, 504, "{}", response.body);
    proxy.set_down(DownMode::Off);
    // An invoke refreshes what is due, then SHUTDOWN wipes the cache.
    sandbox.invoke(WAIT).await?;
    let (status, _) = sandbox.shutdown(WAIT).await?;
    assert!(status.success(), "{}", sandbox.report());
    let error_bodies = error_bodies.into_inner().unwrap_or_default();

    let logs = sandbox.logs();
    assert!(
        logs.contains("effective configuration"),
        "not at debug level:\n{logs}"
    );
    assert!(!logs.contains("panicked"), "a panic was logged");
    assert!(error_bodies.len() >= 20, "{error_bodies:?}");
    assert_no_leak("the extension's logs", &logs, &values);
    assert_no_leak("an error body", &error_bodies.join("\n"), &values);
    // The token is a credential too.
    assert!(!logs.contains(client.token()), "the token was logged");
    // moto's "ciphertext" of a SecureString is `kms:<key>:<plaintext>`: the sealed read
    // carries the value, so it is a real (if fake-encrypted) form to keep out of logs.
    assert!(
        !logs.contains(&format!("kms:{key}")),
        "a sealed value was logged"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn rotator_at_trace_level_never_prints_old_or_new_values() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let key = moto.create_cmk("alias/lockbox-rotate-secrecy").await?;
    let olds = ["old-rotator-secrecy-K1", "old-rotator-secrecy-K2"];
    moto.put_param("/rot/a", olds[0], ParameterType::SecureString, Some(&key))
        .await?;
    moto.put_param("/rot/b", olds[1], ParameterType::SecureString, Some(&key))
        .await?;
    let proxy = Proxy::start(&moto.endpoint()).await?;
    // Faults on the write path: throttled writes are retried; a 500 makes the rotator read
    // the history back to find out whether the write landed.
    proxy.fail_next(Some("PutParameter"), 2, Fault::Throttle);
    proxy.fail_next(Some("LabelParameterVersion"), 1, Fault::ServerError);

    let dir = bins::target_dir().join("lockbox-tests");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!(
        "secrecy-input-{}.json",
        lockbox_tests::random_hex(8)
    ));
    let input = json!({
        "targets": {"names": ["/rot/a", "/rot/b"]},
        "keyId": "alias/lockbox-rotate-secrecy",
        "mode": "regenerate",
        "policy": {"length": 40},
        "rotationId": "2026-01-02T03:04:00Z",
        "pace": {"writesPerSecond": 100, "maxAttempts": 6, "baseDelayMs": 5},
    });
    std::fs::write(&file, input.to_string())?;
    let output = bins::rotator_command(&proxy.endpoint())?
        .arg("--input")
        .arg(&file)
        .env("RUST_LOG", "trace")
        .output()
        .await?;
    let _ = std::fs::remove_file(&file);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(&stdout)?;
    assert!(
        report["results"]
            .as_array()
            .is_some_and(|r| r.len() == 2 && r.iter().all(|r| r["outcome"] == "rotated")),
        "{report}"
    );
    assert!(proxy.faults_injected() >= 3, "the faults were not hit");
    // The SDK's wire-level targets stay capped whatever RUST_LOG says (rotator/src/logging.rs),
    // so what is checked below is everything the rotator writes at trace: its own lines,
    // one audit line for each parameter among them.
    assert_eq!(
        stderr.matches("\"parameter rotated\"").count(),
        2,
        "expected the rotator's trace output:\n{stderr}"
    );

    let mut values: Vec<Vec<u8>> = olds.iter().map(|v| v.as_bytes().to_vec()).collect();
    for name in ["/rot/a", "/rot/b"] {
        let new = moto
            .ssm()
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await?
            .parameter
            .and_then(|p| p.value)
            .context("no value")?;
        assert!(!olds.contains(&new.as_str()), "{name} was not rotated");
        values.push(new.into_bytes());
    }
    assert_no_leak(
        "the rotator's output",
        &format!("{stdout}\n{stderr}"),
        &values,
    );
    Ok(())
}
