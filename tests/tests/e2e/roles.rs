//! End-to-end tests for reading through other accounts' roles, other regions and other
//! partitions (issue 8): the real `lockbox` binary under the Lambda sandbox, against moto
//! behind the counting, fault-injecting proxy.
//!
//! moto's STS accepts any role and maps the session's credentials to the role's account, so
//! a parameter written through a session of a role in account 222222222222 is a different
//! parameter from the same name in moto's default account: the same name holds a different
//! value per account, and a mixed-up cache would show the wrong one.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_ssm::types::ParameterType;
use lockbox_tests::check::{assert_error, cache_header, ok_json, ok_value};
use lockbox_tests::client::{
    parameter_path, secret_path, ExtClient, CACHE_HEADER, WITH_DECRYPTION,
};
use lockbox_tests::{Fault, Fixture, Proxy};
use tokio::time::Instant;

const ROLE_A: &str = "arn:aws:iam::222222222222:role/shared-reader";
const ROLE_B: &str = "arn:aws:iam::333333333333:role/team/shared-reader";
const CN_ROLE: &str = "arn:aws-cn:iam::555555555555:role/reader";
const GOV_ROLE: &str = "arn:aws-us-gov:iam::444444444444:role/reader";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

async fn put_as(sdk: &SdkConfig, name: &str, value: &str) -> anyhow::Result<String> {
    let out = aws_sdk_ssm::Client::new(sdk)
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(ParameterType::SecureString)
        .overwrite(true)
        .send()
        .await?;
    assert!(out.version() >= 1);
    let got = aws_sdk_ssm::Client::new(sdk)
        .get_parameter()
        .name(name)
        .send()
        .await?;
    Ok(got
        .parameter()
        .and_then(|p| p.arn())
        .unwrap_or_default()
        .to_owned())
}

async fn secret_as(sdk: &SdkConfig, name: &str, value: &str) -> anyhow::Result<String> {
    let out = aws_sdk_secretsmanager::Client::new(sdk)
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await?;
    Ok(out.arn().unwrap_or_default().to_owned())
}

/// Reads the parameter `arn` (decrypted) twice: the same value and ARN both times, the
/// first read a miss and the second a hit.
async fn assert_miss_then_hit(client: &ExtClient, arn: &str, value: &str) -> anyhow::Result<()> {
    for expected in ["miss", "hit"] {
        let r = client.get(&parameter_path(arn, &[WITH_DECRYPTION])).await?;
        let body = ok_json(&r);
        assert_eq!(body["Parameter"]["Value"], value);
        assert_eq!(body["Parameter"]["ARN"], arn);
        assert_eq!(cache_header(&r), expected);
    }
    Ok(())
}

fn assume_role_calls(proxy: &Proxy) -> usize {
    proxy.calls("AssumeRole")
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn each_role_reads_its_own_account_and_never_sees_anothers_values() -> anyhow::Result<()> {
    let fixture = Fixture::new().await?;
    let moto = fixture.moto();
    let name = "/shared/db/password";
    let home = moto.sdk_config_as(None, None).await;
    let as_a = moto.sdk_config_as(Some(ROLE_A), None).await;
    let as_b = moto.sdk_config_as(Some(ROLE_B), None).await;
    put_as(&home, name, "home-value").await?;
    put_as(&as_a, name, "value-of-a").await?;
    put_as(&as_b, name, "value-of-b").await?;
    secret_as(&as_a, "shared/api", "secret-of-a").await?;
    secret_as(&home, "shared/api", "home-secret").await?;

    // Role A is read through by a prefetch entry (configured, so allowed); role B is
    // allowed by prefix.
    let prefetch = format!("ssm:{name}?roleArn={ROLE_A}");
    let lockbox = fixture
        .env("LOCKBOX_PREFETCH", prefetch.as_str())
        .env(
            "LOCKBOX_ALLOWED_ROLES",
            "arn:aws:iam::333333333333:role/team/*",
        )
        .start()
        .await?;
    let (proxy, client) = (&lockbox.proxy, &lockbox.client);
    assert_eq!(assume_role_calls(proxy), 1, "prefetch assumed role A once");

    let through = |role: Option<&'static str>| {
        let mut extra = vec![WITH_DECRYPTION];
        if let Some(role) = role {
            extra.push(("roleArn", role));
        }
        parameter_path(name, &extra)
    };

    // Role A was prefetched: a hit with A's value. The others are misses with their own.
    let a = client.get(&through(Some(ROLE_A))).await?;
    assert_eq!(
        (ok_value(&a).as_str(), cache_header(&a)),
        ("value-of-a", "hit")
    );
    let home = client.get(&through(None)).await?;
    assert_eq!(
        (ok_value(&home).as_str(), cache_header(&home)),
        ("home-value", "miss")
    );
    let b = client.get(&through(Some(ROLE_B))).await?;
    assert_eq!(
        (ok_value(&b).as_str(), cache_header(&b)),
        ("value-of-b", "miss")
    );

    // Warm: every one a hit, each with its own value, many times over.
    for _ in 0..3 {
        for (role, expected) in [
            (None, "home-value"),
            (Some(ROLE_A), "value-of-a"),
            (Some(ROLE_B), "value-of-b"),
        ] {
            let r = client.get(&through(role)).await?;
            assert_eq!((ok_value(&r).as_str(), cache_header(&r)), (expected, "hit"));
        }
    }

    // Secrets Manager through role A uses the same session as SSM did.
    let secret = client
        .get(&secret_path("shared/api", &[("roleArn", ROLE_A)]))
        .await?;
    assert_eq!(ok_json(&secret)["SecretString"], "secret-of-a");
    let secret = client.get(&secret_path("shared/api", &[])).await?;
    assert_eq!(ok_json(&secret)["SecretString"], "home-secret");

    // Batch and path routes take roleArn too, with their own entries.
    let many = client
        .get(&format!(
            "/systemsmanager/parameters/get-many?names={name}&withDecryption=true&roleArn={ROLE_B}"
        ))
        .await?;
    assert_eq!(ok_json(&many)["Parameters"][0]["Value"], "value-of-b");
    assert_eq!(many.header(CACHE_HEADER), Some("hits=1/1"));
    let by_path = client
        .get(&format!(
            "/systemsmanager/parameters/get-by-path?path=/shared/&recursive=true&withDecryption=true&roleArn={ROLE_A}"
        ))
        .await?;
    assert_eq!(ok_json(&by_path)["Parameters"][0]["Value"], "value-of-a");

    // One AssumeRole per role, for every read through it: credentials are cached.
    assert_eq!(assume_role_calls(proxy), 2);
    Ok(())
}

#[tokio::test]
async fn roles_are_opt_in_and_bounded() -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .env("LOCKBOX_ALLOWED_ROLES", ROLE_A)
        .env(
            "LOCKBOX_ACCOUNT_ROLES",
            "333333333333=arn:aws:iam::333333333333:role/team/shared-reader",
        )
        .env("LOCKBOX_MAX_ROLES", "1")
        .start()
        .await?;
    let (proxy, client) = (&lockbox.proxy, &lockbox.client);

    // Not in LOCKBOX_ALLOWED_ROLES: 403 naming the role, and STS is never asked.
    let other = "arn:aws:iam::999999999999:role/anything";
    let denied = client
        .get(&parameter_path("/x", &[("roleArn", other)]))
        .await?;
    let message = assert_error(&denied, 403, "RoleNotAllowed");
    assert!(message.contains(other), "{message}");
    assert_eq!(assume_role_calls(proxy), 0);

    // A malformed role ARN is a 400 naming the parameter.
    let bad = client
        .get(&parameter_path(
            "/x",
            &[("roleArn", "arn:aws:iam::1:user/x")],
        ))
        .await?;
    assert!(assert_error(&bad, 400, "InvalidRequest").contains("roleArn"));

    // The first role fits the bound (a 404: the parameter does not exist in its account).
    let first = client
        .get(&parameter_path("/missing", &[("roleArn", ROLE_A)]))
        .await?;
    assert_error(&first, 404, "ParameterNotFound");
    // The second does not: 400 naming the bound.
    let second = client
        .get(&parameter_path("/missing", &[("roleArn", ROLE_B)]))
        .await?;
    let message = assert_error(&second, 400, "TooManyRoles");
    assert!(
        message.contains("LOCKBOX_MAX_ROLES=1") && message.contains(ROLE_B),
        "{message}"
    );
    assert_eq!(assume_role_calls(proxy), 1);
    Ok(())
}

#[tokio::test]
async fn a_role_that_cannot_be_assumed_is_a_403_naming_it_not_a_hang() -> anyhow::Result<()> {
    let fixture = Fixture::new().await?;
    let moto = fixture.moto();
    let as_a = moto.sdk_config_as(Some(ROLE_A), None).await;
    put_as(&as_a, "/p", "value-of-a").await?;
    let lockbox = fixture
        .env("LOCKBOX_ALLOWED_ROLES", "arn:aws:iam::222222222222:role/*")
        .env("SSM_PARAMETER_STORE_TIMEOUT_MILLIS", "5000")
        .start()
        .await?;
    let (proxy, client) = (&lockbox.proxy, &lockbox.client);

    // STS fails every attempt (the SDK retries): the read fails fast with a 403.
    proxy.fail_next(Some("AssumeRole"), 100, Fault::ServerError);
    let started = Instant::now();
    let failed = client
        .get(&parameter_path(
            "/p",
            &[WITH_DECRYPTION, ("roleArn", ROLE_A)],
        ))
        .await?;
    let elapsed = started.elapsed();
    let message = assert_error(&failed, 403, "AssumeRoleFailed");
    assert!(message.contains(ROLE_A), "{message}");
    assert!(
        message.contains("500"),
        "the STS status is named: {message}"
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(assume_role_calls(proxy) >= 1);
    assert_eq!(
        proxy.forwarded("GetParameter"),
        0,
        "nothing was read unsigned"
    );

    // A failure is not remembered: once STS answers, the role works.
    proxy.clear_faults();
    let ok = client
        .get(&parameter_path(
            "/p",
            &[WITH_DECRYPTION, ("roleArn", ROLE_A)],
        ))
        .await?;
    assert_eq!(ok_value(&ok), "value-of-a");
    Ok(())
}

#[tokio::test]
async fn other_partitions_and_regions_read_end_to_end() -> anyhow::Result<()> {
    let fixture = Fixture::new().await?;
    let moto = fixture.moto();
    // aws-cn: moto's default account in cn-north-1, and a role's account there.
    let cn_home = moto.sdk_config_as(None, Some("cn-north-1")).await;
    let as_cn_role = moto.sdk_config_as(Some(CN_ROLE), Some("cn-north-1")).await;
    let cn_arn = put_as(&cn_home, "/cn/db", "cn-value").await?;
    assert!(cn_arn.starts_with("arn:aws-cn:ssm:cn-north-1:"), "{cn_arn}");
    let cn_role_arn = put_as(&as_cn_role, "/cn/db", "cn-role-value").await?;
    let cn_secret = secret_as(&cn_home, "cn/api", "cn-secret").await?;
    assert!(
        cn_secret.starts_with("arn:aws-cn:secretsmanager:"),
        "{cn_secret}"
    );
    // aws-us-gov: a role's account, reached through LOCKBOX_ACCOUNT_ROLES.
    let as_gov = moto
        .sdk_config_as(Some(GOV_ROLE), Some("us-gov-west-1"))
        .await;
    let gov_arn = put_as(&as_gov, "/gov/db", "gov-value").await?;
    assert!(
        gov_arn.starts_with("arn:aws-us-gov:ssm:us-gov-west-1:444444444444:"),
        "{gov_arn}"
    );

    let account_roles = format!("444444444444={GOV_ROLE}");
    let lockbox = fixture
        .env("LOCKBOX_ALLOWED_ROLES", CN_ROLE)
        .env("LOCKBOX_ACCOUNT_ROLES", account_roles.as_str())
        .start()
        .await?;
    let (proxy, client) = (&lockbox.proxy, &lockbox.client);

    // An aws-cn ARN: the region comes from the ARN, the answer keeps its partition; the
    // second read is a hit (the cache key holds the name and the region).
    assert_miss_then_hit(client, &cn_arn, "cn-value").await?;
    // The same name by region=, and through a role of the aws-cn partition.
    let r = client
        .get(&parameter_path(
            "/cn/db",
            &[WITH_DECRYPTION, ("region", "cn-north-1")],
        ))
        .await?;
    assert_eq!(ok_value(&r), "cn-value");
    let r = client
        .get(&parameter_path(
            "/cn/db",
            &[
                WITH_DECRYPTION,
                ("region", "cn-north-1"),
                ("roleArn", CN_ROLE),
            ],
        ))
        .await?;
    assert_eq!(ok_json(&r)["Parameter"]["ARN"], cn_role_arn.as_str());
    assert_eq!(ok_value(&r), "cn-role-value");
    // A secret by aws-cn ARN.
    let r = client.get(&secret_path(&cn_secret, &[])).await?;
    let body = ok_json(&r);
    assert_eq!(body["SecretString"], "cn-secret");
    assert_eq!(body["ARN"], cn_secret.as_str());
    // The function's own region does not have it.
    let r = client.get(&parameter_path("/cn/db", &[])).await?;
    assert_error(&r, 404, "ParameterNotFound");

    // An aws-us-gov ARN in an account with a configured role: region from the ARN, role
    // from LOCKBOX_ACCOUNT_ROLES.
    assert_miss_then_hit(client, &gov_arn, "gov-value").await?;
    assert_eq!(assume_role_calls(proxy), 2, "one session per role");

    // region= that contradicts the ARN is a 400 naming both.
    let r = client
        .get(&parameter_path(&cn_arn, &[("region", "eu-west-1")]))
        .await?;
    let message = assert_error(&r, 400, "InvalidRequest");
    assert!(
        message.contains("eu-west-1") && message.contains("cn-north-1"),
        "{message}"
    );
    Ok(())
}
