//! End-to-end tests for the rotator (issue 4): the real handler (in-process) and the real
//! `lockbox-rotator` binary (`--input`), against moto behind the counting, fault-injecting
//! proxy, with customer-managed keys created in moto.
//!
//! moto does not check keys on `PutParameter` at all, so every "refused" below is the
//! rotator's own key gate; "nothing written" is shown by the proxy's per-operation counts.
//! Three things moto cannot produce are made here by [`Doctor`], a small front for the
//! proxy: `TooManyUpdates` answers, a key that reports `KeyManager=AWS` (moto reports
//! every key, `alias/aws/ssm` included, as `CUSTOMER`), and STS refusing `AssumeRole`
//! (moto lets anyone assume any role).
//!
//! Cross-account rotation relies on moto mapping credentials from STS `AssumeRole` to the
//! role's account: a parameter written through a role in 222222222222 is a different
//! parameter from the same name in moto's default account 123456789012.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use aws_sdk_secretsmanager::types::RotationRulesType;
use aws_sdk_ssm::types::{ParameterTier, ParameterType, ResourceTypeForTagging, Tag};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use futures::{StreamExt, TryStreamExt};
use lockbox_rotator::mark::RunLabel;
use lockbox_rotator::policy::PolicySpec;
use lockbox_rotator::secrets::StepOutcome;
use lockbox_rotator::value::SecretValue;
use lockbox_rotator::{Clients, Error, Outcome, Report, Response, Rotator, SecretsConfig};
use lockbox_tests::bins::{rotator_bin, rotator_command};
use lockbox_tests::moto::REGION;
use lockbox_tests::{Fault, Moto, Proxy};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

/// Operations that change state; a refused run must call none of them.
const WRITES: &[&str] = &[
    "PutParameter",
    "LabelParameterVersion",
    "UnlabelParameterVersion",
    "AddTagsToResource",
    "PutSecretValue",
    "UpdateSecret",
    "UpdateSecretVersionStage",
];

/// The other account of the cross-account tests, and the region its parameters are in.
const OTHER_ACCOUNT: &str = "222222222222";
const OTHER_REGION: &str = "eu-west-1";

const ID_1: &str = "2026-11-22T03:00:00Z";
/// The label part that names each rotation id (its lease, then its mark, adds to it).
const LABEL_1: &str = "r-20261122T030000Z";
const ID_2: &str = "2026-12-22T03:00:00Z";
const LABEL_2: &str = "r-20261222T030000Z";

// ------------------------------------------------------------------------------------------
// Fixture
// ------------------------------------------------------------------------------------------

/// moto, the counting proxy in front of it, the [`Doctor`] in front of that, and a
/// customer-managed key `alias/app-secrets`.
struct World {
    moto: Moto,
    proxy: Proxy,
    doctor: Doctor,
    key_id: String,
    key_arn: String,
}

impl World {
    async fn start() -> anyhow::Result<World> {
        let moto = Moto::start().await?;
        let proxy = Proxy::start(&moto.endpoint()).await?;
        let doctor = Doctor::start(&proxy.endpoint()).await?;
        let key_id = moto.create_cmk("app-secrets").await?;
        let key_arn = key_arn(&moto, &key_id).await?;
        Ok(World {
            moto,
            proxy,
            doctor,
            key_id,
            key_arn,
        })
    }

    /// The rotator as the Lambda builds it, with clients going through doctor and proxy;
    /// SDK retries keep their default count but back off briefly so faults cost little time.
    async fn rotator(&self, secrets_env: &[(&str, &str)]) -> Rotator {
        let config = self
            .moto
            .sdk_config()
            .await
            .to_builder()
            .endpoint_url(self.doctor.endpoint())
            .retry_config(
                aws_config::retry::RetryConfig::standard()
                    .with_initial_backoff(Duration::from_millis(10)),
            )
            .build();
        let env: HashMap<String, String> = secrets_env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let secrets = SecretsConfig::from_lookup(|k| env.get(k).cloned()).expect("secrets env");
        Rotator::new(Clients::new(&config), secrets)
    }

    async fn seed(&self, name: &str, value: &str) -> anyhow::Result<i64> {
        self.moto
            .put_param(name, value, ParameterType::SecureString, None)
            .await
    }

    fn writes(&self) -> usize {
        WRITES.iter().map(|op| self.proxy.calls(op)).sum()
    }

    async fn history(
        &self,
        name: &str,
    ) -> anyhow::Result<Vec<aws_sdk_ssm::types::ParameterHistory>> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .moto
                .ssm()
                .get_parameter_history()
                .name(name)
                .max_results(50)
                .set_next_token(token.take())
                .send()
                .await?;
            out.extend(page.parameters().iter().cloned());
            match page.next_token() {
                Some(t) => token = Some(t.to_owned()),
                None => break,
            }
        }
        out.sort_by_key(|p| p.version());
        Ok(out)
    }

    /// Decrypted value of `selector` (`name`, `name:label` or `name:version`).
    async fn value(&self, selector: &str) -> anyhow::Result<String> {
        let out = self
            .moto
            .ssm()
            .get_parameter()
            .name(selector)
            .with_decryption(true)
            .send()
            .await
            .with_context(|| format!("GetParameter {selector}"))?;
        Ok(out
            .parameter()
            .and_then(|p| p.value())
            .context("no value")?
            .to_owned())
    }

    /// Where rotation `id` left its label: (the version carrying it, the version it
    /// started from). On `from + 1` it is the mark of a finished rotation; on `from`, a
    /// lease.
    async fn mark(&self, name: &str, id: &str) -> anyhow::Result<Option<(i64, i64)>> {
        for (label, version) in self.labels(name).await? {
            if let Some(l) = RunLabel::decode(&label).filter(|l| l.id == id) {
                return Ok(Some((version, l.from)));
            }
        }
        Ok(None)
    }

    async fn labels(&self, name: &str) -> anyhow::Result<HashMap<String, i64>> {
        let mut out = HashMap::new();
        for v in self.history(name).await? {
            for l in v.labels() {
                out.insert(l.clone(), v.version());
            }
        }
        Ok(out)
    }
}

async fn key_arn(moto: &Moto, key_id: &str) -> anyhow::Result<String> {
    let out = moto.kms().describe_key().key_id(key_id).send().await?;
    Ok(out
        .key_metadata()
        .and_then(|m| m.arn())
        .context("no ARN")?
        .to_owned())
}

/// A rotation input with fast pacing (moto needs none) and the given extra fields.
fn input(targets: Value, key: &str, mode: &str, id: &str, extra: Value) -> Value {
    let mut v = json!({
        "targets": targets,
        "keyId": key,
        "mode": mode,
        "rotationId": id,
        "pace": {"writesPerSecond": 50, "baseDelayMs": 5},
    });
    if let (Some(obj), Some(more)) = (v.as_object_mut(), extra.as_object()) {
        for (k, val) in more {
            obj.insert(k.clone(), val.clone());
        }
    }
    v
}

/// [`input`] for the usual run: new values under `alias/app-secrets`.
fn regenerate(targets: Value, id: &str, extra: Value) -> Value {
    input(targets, "alias/app-secrets", "regenerate", id, extra)
}

fn report_of(response: Response) -> Report {
    match response {
        Response::Rotation(r) => r,
        other => panic!("expected a rotation report, got {other:?}"),
    }
}

/// Why a parameter's rotation went as it did (empty when no reason was given).
fn reason(result: &lockbox_rotator::ParamResult) -> &str {
    result.reason.as_deref().unwrap_or_default()
}

fn result<'a>(report: &'a Report, name: &str) -> &'a lockbox_rotator::ParamResult {
    report
        .results
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no result for {name} in {:?}", report.results))
}

// ------------------------------------------------------------------------------------------
// Doctor: TooManyUpdates and an AWS-managed key, which neither moto nor the proxy produce
// ------------------------------------------------------------------------------------------

/// A pass-through HTTP front that can answer `PutParameter` with `TooManyUpdates` and make
/// chosen keys report `KeyManager: AWS` in `DescribeKey`, as AWS-managed keys do in AWS.
#[derive(Clone)]
struct Doctor {
    state: Arc<DoctorState>,
    port: u16,
}

struct DoctorState {
    upstream: String,
    http: reqwest::Client,
    too_many_updates: AtomicUsize,
    aws_managed: Mutex<Vec<String>>,
    deny_assume_role: std::sync::atomic::AtomicBool,
    /// The next PutParameter stores another value than the one sent.
    tamper_next_put: AtomicBool,
    /// Another writer's PutParameter of the same parameter lands just before the next one.
    foreign_before_next_put: AtomicBool,
    /// The next PutParameter is refused with this error code.
    refuse_next_put: Mutex<Option<String>>,
    /// LabelParameterVersion calls that would set this label fail with a server error.
    fail_labels_with: Mutex<Option<String>>,
}

/// What the doctor stores instead of the rotator's value (tamper), and what the other
/// writer writes.
const TAMPERED: &str = "TAMPERED-in-transit-0001";
const FOREIGN: &str = "FOREIGN-written-meanwhile-0002";

impl Doctor {
    async fn start(upstream: &str) -> anyhow::Result<Doctor> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(DoctorState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder().no_proxy().build()?,
            too_many_updates: AtomicUsize::new(0),
            aws_managed: Mutex::new(Vec::new()),
            deny_assume_role: std::sync::atomic::AtomicBool::new(false),
            tamper_next_put: AtomicBool::new(false),
            foreign_before_next_put: AtomicBool::new(false),
            refuse_next_put: Mutex::new(None),
            fail_labels_with: Mutex::new(None),
        });
        let app = axum::Router::new()
            .fallback(doctor_handler)
            .with_state(Arc::clone(&state));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Doctor { state, port })
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn too_many_updates(&self, n: usize) {
        self.state.too_many_updates.store(n, Ordering::SeqCst);
    }

    /// Answers every STS `AssumeRole` with `AccessDenied`, as STS does when the role's
    /// trust policy does not name the caller (or wants another external id).
    fn deny_assume_role(&self) {
        self.state.deny_assume_role.store(true, Ordering::SeqCst);
    }

    fn tamper_next_put(&self) {
        self.state.tamper_next_put.store(true, Ordering::SeqCst);
    }

    fn foreign_write_before_next_put(&self) {
        self.state
            .foreign_before_next_put
            .store(true, Ordering::SeqCst);
    }

    fn refuse_next_put(&self, code: &str) {
        *self.state.refuse_next_put.lock().unwrap() = Some(code.to_owned());
    }

    fn fail_labels_with(&self, label: Option<&str>) {
        *self.state.fail_labels_with.lock().unwrap() = label.map(str::to_owned);
    }

    fn make_aws_managed(&self, key_id: &str) {
        self.state
            .aws_managed
            .lock()
            .unwrap()
            .push(key_id.to_owned());
    }
}

async fn doctor_handler(
    State(state): State<Arc<DoctorState>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let op = request
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.rsplit('.').next())
        .unwrap_or_default()
        .to_owned();
    let json_type = [("content-type", "application/x-amz-json-1.1")];
    if op == "PutParameter"
        && state
            .too_many_updates
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        let body = r#"{"__type":"TooManyUpdates","message":"There are concurrent updates for the resource"}"#;
        return (StatusCode::BAD_REQUEST, json_type, body).into_response();
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    // STS speaks the query protocol: the operation is the form body's Action. The message
    // deliberately leaves out the role, so a test sees whether lockbox's own error names it.
    let is_assume_role =
        form_urlencoded::parse(&bytes).any(|(k, v)| k == "Action" && v == "AssumeRole");
    if is_assume_role && state.deny_assume_role.load(Ordering::SeqCst) {
        let body = "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
            <Error><Type>Sender</Type><Code>AccessDenied</Code>\
            <Message>not authorized to perform sts:AssumeRole</Message></Error>\
            <RequestId>00000000-0000-4000-8000-000000000000</RequestId></ErrorResponse>";
        return (StatusCode::FORBIDDEN, [("content-type", "text/xml")], body).into_response();
    }
    let mut bytes = bytes.to_vec();
    if op == "PutParameter" {
        if let Some(code) = state.refuse_next_put.lock().unwrap().take() {
            let body = json!({"__type": code, "message": "refused by the test"}).to_string();
            return (StatusCode::BAD_REQUEST, json_type, body).into_response();
        }
        let with_value = |value: &str| {
            let mut doc: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            doc["Value"] = json!(value);
            serde_json::to_vec(&doc).unwrap_or_default()
        };
        if state.foreign_before_next_put.swap(false, Ordering::SeqCst) {
            let foreign = with_value(FOREIGN);
            if send_upstream(&state, &parts, foreign).await.is_err() {
                return StatusCode::BAD_GATEWAY.into_response();
            }
        }
        if state.tamper_next_put.swap(false, Ordering::SeqCst) {
            bytes = with_value(TAMPERED);
        }
    }
    if op == "LabelParameterVersion" {
        let failing = state.fail_labels_with.lock().unwrap().clone();
        let doc: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let labels = doc["Labels"].as_array().cloned().unwrap_or_default();
        if failing.is_some_and(|l| labels.iter().any(|x| x == l.as_str())) {
            let body = r#"{"__type":"InternalServerError","message":"label call failed"}"#;
            return (StatusCode::INTERNAL_SERVER_ERROR, json_type, body).into_response();
        }
    }
    let Ok(answer) = send_upstream(&state, &parts, bytes).await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = answer.status();
    let mut headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        if name != "content-length" && name != "transfer-encoding" {
            headers.insert(name.clone(), value.clone());
        }
    }
    let mut body = answer.bytes().await.unwrap_or_default().to_vec();
    if op == "DescribeKey" {
        if let Ok(mut doc) = serde_json::from_slice::<Value>(&body) {
            let id = doc["KeyMetadata"]["KeyId"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if state.aws_managed.lock().unwrap().contains(&id) {
                doc["KeyMetadata"]["KeyManager"] = json!("AWS");
                body = serde_json::to_vec(&doc).unwrap_or(body);
            }
        }
    }
    (status, headers, body).into_response()
}

async fn send_upstream(
    state: &DoctorState,
    parts: &axum::http::request::Parts,
    body: Vec<u8>,
) -> reqwest::Result<reqwest::Response> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut upstream = state
        .http
        .request(parts.method.clone(), format!("{}{path}", state.upstream));
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            upstream = upstream.header(name, value);
        }
    }
    upstream.body(body).send().await
}

// ------------------------------------------------------------------------------------------
// Regenerate, reencrypt, labels, KeyId, dry run
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn regenerate_writes_policy_values_under_the_chosen_key_and_moves_labels(
) -> anyhow::Result<()> {
    let w = World::start().await?;
    w.seed("/app/db/password", "OLD-db-password-4815").await?;
    w.moto
        .ssm()
        .put_parameter()
        .name("/app/prod/api/token")
        .value("OLD-api-token-1623")
        .r#type(ParameterType::SecureString)
        .description("the API token")
        .tier(ParameterTier::Advanced)
        .send()
        .await?;
    w.seed("/app/prod/deep/er/key", "OLD-deep-key-4242").await?;
    w.moto
        .put_param("/app/prod/plain", "not-secret", ParameterType::String, None)
        .await?;
    w.seed("/elsewhere/tagged", "OLD-tagged-0815").await?;
    w.moto
        .ssm()
        .add_tags_to_resource()
        .resource_type(ResourceTypeForTagging::Parameter)
        .resource_id("/elsewhere/tagged")
        .tags(Tag::builder().key("lockbox:rotate").value("yes").build()?)
        .send()
        .await?;
    w.seed("/elsewhere/untouched", "OLD-untouched").await?;

    let policy = json!({"length": 40, "classes": ["upper", "lower", "digits", "symbols"],
                        "exclude": "/@\"'\\", "requireEachClass": true});
    let ev = regenerate(
        json!({"names": ["/app/db/password"], "paths": ["/app/prod/"], "tag": "lockbox:rotate"}),
        ID_1,
        json!({"policy": policy.clone(), "randomSource": "kms",
               "overrides": {"/app/db/password": {"policy": {"length": 24, "classes": ["digits", "lower"]}}}}),
    );
    let report = report_of(w.rotator(&[]).await.handle(ev).await?);
    assert_eq!(report.rotation_id, ID_1);
    assert_eq!(report.results.len(), 5, "{:?}", report.results);
    assert!(
        w.proxy.calls("GenerateRandom") >= 1,
        "randomSource kms uses KMS"
    );

    let plain = result(&report, "/app/prod/plain");
    assert_eq!(plain.outcome, Outcome::Skipped);
    assert!(reason(plain).contains("String"));

    let default_policy = serde_json::from_value::<PolicySpec>(policy)?.compile()?;
    let db_policy = serde_json::from_value::<PolicySpec>(
        json!({"length": 24, "classes": ["digits", "lower"]}),
    )?
    .compile()?;
    for (name, old, policy) in [
        ("/app/db/password", "OLD-db-password-4815", &db_policy),
        ("/app/prod/api/token", "OLD-api-token-1623", &default_policy),
        (
            "/app/prod/deep/er/key",
            "OLD-deep-key-4242",
            &default_policy,
        ),
        ("/elsewhere/tagged", "OLD-tagged-0815", &default_policy),
    ] {
        let r = result(&report, name);
        assert_eq!(r.outcome, Outcome::Rotated, "{name}: {:?}", r.reason);
        assert_eq!((r.old_version, r.new_version), (Some(1), Some(2)), "{name}");
        assert_eq!(r.key_id, w.key_arn);

        // KeyId recorded on the new version is the chosen key (history and describe).
        let history = w.history(name).await?;
        assert_eq!(history[1].key_id(), Some(w.key_arn.as_str()), "{name}");
        let described = w
            .moto
            .ssm()
            .describe_parameters()
            .parameter_filters(
                aws_sdk_ssm::types::ParameterStringFilter::builder()
                    .key("Name")
                    .values(name)
                    .build()?,
            )
            .send()
            .await?;
        assert_eq!(described.parameters()[0].key_id(), Some(w.key_arn.as_str()));

        // The new value follows the policy; the old one is still readable as :previous.
        let new = w.value(name).await?;
        assert_ne!(new, old);
        policy
            .check(&SecretValue::new(new.clone()))
            .unwrap_or_else(|v| panic!("{name}: {v}"));
        assert_eq!(w.value(&format!("{name}:previous")).await?, old);
        assert_eq!(w.value(&format!("{name}:current")).await?, new);
        let labels = w.labels(name).await?;
        assert_eq!(labels.get("current"), Some(&2));
        assert_eq!(labels.get("previous"), Some(&1));
        assert_eq!(w.mark(name, LABEL_1).await?, Some((2, 1)), "{labels:?}");
    }
    // Tier and description are kept.
    let history = w.history("/app/prod/api/token").await?;
    assert_eq!(history[1].tier(), Some(&ParameterTier::Advanced));
    assert_eq!(history[1].description(), Some("the API token"));
    assert_eq!(w.history("/elsewhere/untouched").await?.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn reencrypt_moves_the_same_value_under_the_key_and_a_long_value_goes_advanced(
) -> anyhow::Result<()> {
    let w = World::start().await?;
    w.seed("/app/a", "OLD-value-under-aws-ssm").await?;
    let long = "L".repeat(5000);
    w.seed("/app/long", &long).await?;
    let rotator = w.rotator(&[]).await;
    let ev = input(
        json!({"paths": ["/app"]}),
        &w.key_id,
        "reencrypt",
        ID_1,
        json!({}),
    );
    let report = report_of(rotator.handle(ev).await?);
    for r in &report.results {
        assert_eq!(r.outcome, Outcome::Rotated, "{}: {:?}", r.name, r.reason);
    }
    assert_eq!(w.value("/app/a").await?, "OLD-value-under-aws-ssm");
    assert_eq!(w.value("/app/a:previous").await?, "OLD-value-under-aws-ssm");
    let history = w.history("/app/a").await?;
    assert_eq!(history[0].key_id(), Some("alias/aws/ssm"));
    assert_eq!(history[1].key_id(), Some(w.key_arn.as_str()));
    // More than 4096 bytes needs the Advanced tier.
    let history = w.history("/app/long").await?;
    assert_eq!(history[1].tier(), Some(&ParameterTier::Advanced));
    assert_eq!(w.value("/app/long").await?, long);

    // Already under the key: a later re-encryption has nothing to do.
    let ev = input(
        json!({"paths": ["/app"]}),
        &w.key_id,
        "reencrypt",
        ID_2,
        json!({}),
    );
    w.proxy.reset_counts();
    let report = report_of(rotator.handle(ev).await?);
    assert!(report
        .results
        .iter()
        .all(|r| r.outcome == Outcome::Unchanged));
    assert_eq!(w.writes(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_reports_and_writes_nothing() -> anyhow::Result<()> {
    let w = World::start().await?;
    w.seed("/app/a", "OLD-a").await?;
    w.seed("/app/b", "OLD-b").await?;
    let ev = regenerate(json!({"paths": ["/app"]}), ID_1, json!({"dryRun": true}));
    let report = report_of(w.rotator(&[]).await.handle(ev).await?);
    for r in &report.results {
        assert_eq!(r.outcome, Outcome::DryRun);
        assert!(reason(r).contains("would write version 2"));
    }
    assert_eq!(w.writes(), 0, "{:?}", w.proxy.call_counts());
    assert_eq!(w.proxy.calls("GetParameter"), 0, "a dry run reads no value");
    assert_eq!(w.history("/app/a").await?.len(), 1);
    Ok(())
}

// ------------------------------------------------------------------------------------------
// The key gate
// ------------------------------------------------------------------------------------------

/// Creates a KMS key of `spec` for `usage` (no alias) and returns its id.
async fn create_key(moto: &Moto, spec: KeySpec, usage: KeyUsageType) -> anyhow::Result<String> {
    let created = moto
        .kms()
        .create_key()
        .key_spec(spec)
        .key_usage(usage)
        .send()
        .await?;
    Ok(created
        .key_metadata()
        .context("metadata")?
        .key_id()
        .to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn unfit_keys_are_refused_before_any_write() -> anyhow::Result<()> {
    let w = World::start().await?;
    w.seed("/app/a", "OLD-a").await?;
    let kms = w.moto.kms();

    let disabled = w.moto.create_cmk("disabled").await?;
    kms.disable_key().key_id(&disabled).send().await?;
    let asymmetric = create_key(&w.moto, KeySpec::Rsa2048, KeyUsageType::EncryptDecrypt).await?;
    let hmac = create_key(&w.moto, KeySpec::Hmac256, KeyUsageType::GenerateVerifyMac).await?;
    // moto calls every key CUSTOMER; the doctor makes this one answer as AWS does for
    // aws/ssm, so the KeyManager check itself is exercised, not only the alias name.
    let aws_managed = w.moto.create_cmk("looks-aws-managed").await?;
    w.doctor.make_aws_managed(&aws_managed);

    let rotator = w.rotator(&[]).await;
    for (key, check) in [
        (disabled.clone(), "KeyState is Disabled"),
        (asymmetric.clone(), "KeySpec is RSA_2048"),
        (hmac.clone(), "KeySpec is HMAC_256"),
        (aws_managed.clone(), "KeyManager is AWS"),
        ("alias/aws/ssm".to_owned(), "AWS-managed key alias"),
        ("alias/does-not-exist".to_owned(), "not found"),
    ] {
        let ev = input(
            json!({"names": ["/app/a"]}),
            &key,
            "regenerate",
            ID_1,
            json!({}),
        );
        let err = rotator.handle(ev).await.expect_err(&key);
        let msg = err.to_string();
        assert!(matches!(err, Error::Key(_)), "{key}: {msg}");
        assert!(msg.contains(&key), "names the key: {msg}");
        assert!(msg.contains(check), "names the check {check:?}: {msg}");
        assert_eq!(w.writes(), 0, "{key}: {:?}", w.proxy.call_counts());
        assert_eq!(w.proxy.calls("PutParameter"), 0);
    }
    assert_eq!(w.history("/app/a").await?.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_inputs_fail_before_any_write_and_say_why() -> anyhow::Result<()> {
    let w = World::start().await?;
    w.seed("/app/a", "OLD-a").await?;
    let rotator = w.rotator(&[]).await;
    let cases = [
        (
            json!({"targets": {"names": ["/app/a"]}, "keyId": "alias/app-secrets",
                   "mode": "regenerate", "rotationId": ID_1, "dryrun": true}),
            "unknown field `dryrun`",
        ),
        (
            regenerate(json!({"paths": ["/nothing/here"]}), ID_1, json!({})),
            "select no parameter",
        ),
        (
            regenerate(json!({"names": ["/app/a", "/app/typo"]}), ID_1, json!({})),
            "/app/typo",
        ),
        (
            json!({"targets": {"names": ["/app/a"]}, "keyId": "alias/app-secrets", "mode": "regenerate"}),
            "rotationId is missing",
        ),
        (
            regenerate(
                json!({"names": ["/app/a"]}),
                ID_1,
                json!({"policy": {"length": 2}}),
            ),
            "shorter than the 4 classes",
        ),
        (
            regenerate(
                json!({"names": ["/app/a"]}),
                ID_1,
                json!({"assumeRole": {"roleArn": "arn:aws:iam::222222222222:user/rotator"}}),
            ),
            "is not a role",
        ),
        // The extension refuses the same role and region (lockbox-aws's rules).
        (
            regenerate(
                json!({"names": ["/app/a"]}),
                ID_1,
                json!({"assumeRole": {"roleArn": format!(
                    "arn:aws:iam::222222222222:role/{}", "n".repeat(65))}}),
            ),
            "a role name is 1-64",
        ),
        (
            regenerate(
                json!({"names": ["/app/a"]}),
                ID_1,
                json!({"region": "eu-1"}),
            ),
            "region \"eu-1\" is not a region name",
        ),
    ];
    for (ev, needle) in cases {
        let err = rotator.handle(ev).await.expect_err(needle);
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    }
    assert_eq!(w.writes(), 0, "{:?}", w.proxy.call_counts());
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Idempotency and interruption
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_run_with_the_same_id_writes_nothing_new() -> anyhow::Result<()> {
    let w = World::start().await?;
    w.seed("/app/a", "OLD-a").await?;
    let rotator = w.rotator(&[]).await;
    let ev = regenerate(json!({"names": ["/app/a"]}), ID_1, json!({}));
    let first = report_of(rotator.handle(ev.clone()).await?);
    assert_eq!(first.results[0].outcome, Outcome::Rotated);
    let value = w.value("/app/a").await?;

    w.proxy.reset_counts();
    let again = report_of(rotator.handle(ev).await?);
    let r = &again.results[0];
    assert_eq!(r.outcome, Outcome::Unchanged, "{:?}", r.reason);
    assert_eq!((r.old_version, r.new_version), (Some(1), Some(2)));
    assert_eq!(w.writes(), 0, "{:?}", w.proxy.call_counts());
    assert_eq!(w.history("/app/a").await?.len(), 2);
    assert_eq!(w.value("/app/a").await?, value);

    // The next scheduled run rotates again and drops the older rotation-id label.
    let ev = regenerate(json!({"names": ["/app/a"]}), ID_2, json!({}));
    let next = report_of(rotator.handle(ev).await?);
    assert_eq!(next.results[0].outcome, Outcome::Rotated);
    let labels = w.labels("/app/a").await?;
    assert_eq!(w.mark("/app/a", LABEL_2).await?, Some((3, 2)));
    assert_eq!(
        w.mark("/app/a", LABEL_1).await?,
        Some((2, 1)),
        "each version keeps the mark of the rotation that wrote it"
    );
    assert_eq!(labels.get("previous"), Some(&2));
    assert_eq!(w.value("/app/a:previous").await?, value);
    Ok(())
}

/// Issue 16, case 1: a run stopped between its write and its last label (here: the call
/// that moves `current` fails). Its retry must not promote a version it cannot show to
/// hold what the rotation wrote: a generated value is refused, a re-encrypted one is
/// compared with the old version and completed.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_stopped_before_its_last_label_is_completed_only_when_verifiable(
) -> anyhow::Result<()> {
    let w = World::start().await?;
    w.seed("/app/a", "OLD-a").await?;
    let rotator = w.rotator(&[]).await;
    let first = regenerate(json!({"names": ["/app/a"]}), ID_1, json!({}));
    report_of(rotator.handle(first).await?);
    let before = w.value("/app/a").await?;

    w.doctor.fail_labels_with(Some("current"));
    let ev = regenerate(json!({"names": ["/app/a"]}), ID_2, json!({}));
    let err = rotator.handle(ev.clone()).await.expect_err("labels fail");
    let Error::Failed(report) = &err else {
        panic!("expected a failed report: {err}");
    };
    let r = &report.results[0];
    assert_eq!(r.outcome, Outcome::Failed);
    assert!(reason(r).contains("LabelParameterVersion"), "{}", reason(r));
    w.doctor.fail_labels_with(None);
    assert_eq!(w.history("/app/a").await?.len(), 3, "the write happened");
    assert_eq!(w.value("/app/a:current").await?, before);
    assert_eq!(
        w.labels("/app/a").await?.get("previous"),
        Some(&1),
        "put back"
    );

    // The retry finds its lease on version 2 and an unverifiable version 3.
    w.proxy.reset_counts();
    let err = rotator.handle(ev.clone()).await.expect_err("refused");
    let Error::Failed(report) = &err else {
        panic!("expected a failed report: {err}");
    };
    let r = &report.results[0];
    assert_eq!(r.outcome, Outcome::Failed, "{}", reason(r));
    assert!(reason(r).contains("not promoting"), "{}", reason(r));
    assert_eq!(w.proxy.calls("PutParameter"), 0, "the retry does not write");
    assert_eq!(w.value("/app/a:current").await?, before, "never promoted");
    assert_eq!(w.mark("/app/a", LABEL_2).await?, Some((2, 2)), "lease kept");

    // Re-encrypting, the retry can verify: version 2 must hold version 1's value.
    w.seed("/app/b", "OLD-b").await?;
    w.doctor.fail_labels_with(Some("current"));
    let ev = input(
        json!({"names": ["/app/b"]}),
        "alias/app-secrets",
        "reencrypt",
        ID_1,
        json!({}),
    );
    rotator.handle(ev.clone()).await.expect_err("labels fail");
    w.doctor.fail_labels_with(None);
    let done = report_of(rotator.handle(ev).await?);
    let r = &done.results[0];
    assert_eq!(r.outcome, Outcome::Rotated, "{}", reason(r));
    assert!(reason(r).contains("interrupted"), "{}", reason(r));
    assert_eq!((r.old_version, r.new_version), (Some(1), Some(2)));
    assert_eq!(w.value("/app/b:current").await?, "OLD-b");
    assert_eq!(w.labels("/app/b").await?.get("previous"), Some(&1));
    Ok(())
}

// ------------------------------------------------------------------------------------------
// The 100-version limit
// ------------------------------------------------------------------------------------------

async fn seed_versions(w: &World, name: &str, n: usize) -> anyhow::Result<()> {
    for i in 1..=n {
        w.seed(name, &format!("OLD-{name}-{i}")).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parameter_at_100_versions_rotates() -> anyhow::Result<()> {
    let w = World::start().await?;
    seed_versions(&w, "/app/full", 100).await?;
    // Lockbox's own labels on the oldest version (an old rotation) are cleared first.
    seed_versions(&w, "/app/stale", 100).await?;
    w.moto
        .label_param("/app/stale", 1, "r-20250101T0000Z")
        .await?;
    w.moto.label_param("/app/stale", 1, "previous").await?;

    let rotator = w.rotator(&[]).await;
    let ev = regenerate(json!({"paths": ["/app"]}), ID_1, json!({}));
    let report = report_of(rotator.handle(ev).await?);
    for name in ["/app/full", "/app/stale"] {
        let r = result(&report, name);
        assert_eq!(r.outcome, Outcome::Rotated, "{name}: {:?}", r.reason);
        assert_eq!((r.old_version, r.new_version), (Some(100), Some(101)));
        let history = w.history(name).await?;
        assert_eq!(history.len(), 100);
        assert_eq!(history[0].version(), 2, "SSM dropped version 1");
        assert_eq!(
            w.value(&format!("{name}:previous")).await?,
            format!("OLD-{name}-100")
        );
    }

    // And again: the rotation labels never pin an old version.
    let ev = regenerate(json!({"paths": ["/app"]}), ID_2, json!({}));
    let report = report_of(rotator.handle(ev).await?);
    assert!(report.results.iter().all(|r| r.outcome == Outcome::Rotated));
    let labels = w.labels("/app/full").await?;
    assert_eq!(labels.get("current"), Some(&102));
    assert_eq!(labels.get("previous"), Some(&101));
    assert_eq!(w.mark("/app/full", LABEL_2).await?, Some((102, 101)));
    assert_eq!(
        labels.len(),
        4,
        "current, previous and the marks of the two rotations: {labels:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_label_on_the_oldest_version_fails_naming_it() -> anyhow::Result<()> {
    let w = World::start().await?;
    seed_versions(&w, "/app/pinned", 100).await?;
    w.moto.label_param("/app/pinned", 1, "golden-copy").await?;
    w.seed("/app/other", "OLD-other").await?;

    let rotator = w.rotator(&[]).await;
    let ev = regenerate(json!({"paths": ["/app"]}), ID_1, json!({}));
    let err = rotator.handle(ev).await.expect_err("pinned fails");
    let Error::Failed(report) = &err else {
        panic!("expected a failed report: {err}");
    };
    let pinned = result(report, "/app/pinned");
    assert_eq!(pinned.outcome, Outcome::Failed);
    assert!(reason(pinned).contains("\"golden-copy\""));
    assert!(err.to_string().contains("golden-copy"), "{err}");
    // The others go on.
    assert_eq!(result(report, "/app/other").outcome, Outcome::Rotated);
    assert_eq!(
        w.proxy.calls("PutParameter"),
        1,
        "only /app/other was written"
    );
    assert_eq!(w.labels("/app/pinned").await?.get("golden-copy"), Some(&1));
    assert_eq!(w.history("/app/pinned").await?.len(), 100);
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Throttling
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn throttling_and_too_many_updates_bursts_are_retried() -> anyhow::Result<()> {
    let w = World::start().await?;
    w.seed("/app/a", "OLD-a").await?;
    w.seed("/app/b", "OLD-b").await?;
    let rotator = w.rotator(&[]).await;

    w.proxy.fail_next(Some("PutParameter"), 4, Fault::Throttle);
    w.doctor.too_many_updates(4);
    let ev = regenerate(
        json!({"paths": ["/app"]}),
        ID_1,
        json!({"pace": {"writesPerSecond": 50, "baseDelayMs": 5, "maxAttempts": 12}}),
    );
    let report = report_of(rotator.handle(ev).await?);
    for r in &report.results {
        assert_eq!(r.outcome, Outcome::Rotated, "{}: {:?}", r.name, r.reason);
    }
    // Four TooManyUpdates answered by the doctor, four throttles by the proxy, then one
    // successful write per parameter: no duplicate versions.
    assert_eq!(w.proxy.calls("PutParameter"), 4 + 2);
    assert_eq!(w.proxy.forwarded("PutParameter"), 2);
    assert_eq!(w.history("/app/a").await?.len(), 2);
    assert_eq!(w.history("/app/b").await?.len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_whose_code_does_not_say_throttling_is_retried_as_throttling() -> anyhow::Result<()> {
    let w = World::start().await?;
    w.seed("/app/a", "OLD-a").await?;
    let rotator = w.rotator(&[]).await;

    // The extension treats the same answer as throttling (lockbox-aws's rules).
    w.proxy
        .fail_next(Some("PutParameter"), 3, Fault::TooManyRequests);
    let ev = regenerate(
        json!({"names": ["/app/a"]}),
        ID_1,
        json!({"pace": {"writesPerSecond": 50, "baseDelayMs": 5, "maxAttempts": 12}}),
    );
    let report = report_of(rotator.handle(ev).await?);
    let r = result(&report, "/app/a");
    assert_eq!(r.outcome, Outcome::Rotated, "{:?}", r.reason);
    // Three 429s answered by the proxy, then the write that went through.
    assert!(w.proxy.calls("PutParameter") > 3);
    assert_eq!(w.proxy.forwarded("PutParameter"), 1);
    assert_eq!(w.history("/app/a").await?.len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parameter_that_stays_throttled_is_reported_and_the_others_go_on() -> anyhow::Result<()> {
    let w = World::start().await?;
    w.seed("/app/a", "OLD-a").await?;
    w.seed("/app/b", "OLD-b").await?;
    let rotator = w.rotator(&[]).await;
    w.doctor.too_many_updates(3);
    let ev = regenerate(
        json!({"paths": ["/app"]}),
        ID_1,
        json!({"pace": {"writesPerSecond": 50, "baseDelayMs": 5, "maxAttempts": 3}}),
    );
    let err = rotator.handle(ev).await.expect_err("a fails");
    let Error::Failed(report) = err else {
        panic!("expected a failed report");
    };
    let a = result(&report, "/app/a");
    assert_eq!(a.outcome, Outcome::Failed);
    assert!(reason(a).contains("TooManyUpdates"));
    assert_eq!(result(&report, "/app/b").outcome, Outcome::Rotated);
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Secrets Manager
// ------------------------------------------------------------------------------------------

async fn rotation_enabled_secret(w: &World, name: &str, value: &str) -> anyhow::Result<()> {
    w.moto.create_secret(name, value).await?;
    // moto marks rotation enabled only through RotateSecret; without a Lambda and with
    // RotateImmediately=false it copies the value into a new AWSCURRENT version.
    w.moto
        .secrets()
        .rotate_secret()
        .secret_id(name)
        .rotation_rules(
            RotationRulesType::builder()
                .automatically_after_days(30)
                .build(),
        )
        .rotate_immediately(false)
        .send()
        .await?;
    Ok(())
}

fn step(step: &str, secret: &str, token: &str) -> Value {
    json!({"Step": step, "SecretId": secret, "ClientRequestToken": token})
}

/// Runs a Secrets Manager rotation step that must fail, with a token numbered `token` that
/// names no version, and returns the error's text.
async fn step_error(rotator: &Rotator, name: &str, secret: &str, token: u32) -> String {
    rotator
        .handle(step(name, secret, &format!("t-{token:031}")))
        .await
        .expect_err(name)
        .to_string()
}

async fn secret_at(w: &World, name: &str, stage: &str) -> anyhow::Result<String> {
    let out = w
        .moto
        .secrets()
        .get_secret_value()
        .secret_id(name)
        .version_stage(stage)
        .send()
        .await?;
    Ok(out.secret_string().context("string")?.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_manager_four_steps_with_repeated_steps() -> anyhow::Result<()> {
    let w = World::start().await?;
    rotation_enabled_secret(&w, "app/db", "OLD-secret-value-99").await?;
    let policy = r#"{"length": 28, "classes": ["upper", "digits"], "requireEachClass": true}"#;
    let rotator = w
        .rotator(&[
            ("LOCKBOX_SECRET_POLICY", policy),
            ("LOCKBOX_SECRET_KEY_ID", "alias/app-secrets"),
        ])
        .await;
    let token = "b7c2d1e0-0000-4000-8000-00000000c0de";

    let secret = |out: Response| match out {
        Response::Secret(s) => s,
        other => panic!("expected a step result, got {other:?}"),
    };
    let run = |name: &str| rotator.handle(step(name, "app/db", token));
    let created = secret(run("createSecret").await?);
    assert_eq!(created.outcome, StepOutcome::Done);
    let pending = secret_at(&w, "app/db", "AWSPENDING").await?;
    let compiled = serde_json::from_str::<PolicySpec>(policy)?.compile()?;
    compiled
        .check(&SecretValue::new(pending.clone()))
        .expect("policy");
    let described = w
        .moto
        .secrets()
        .describe_secret()
        .secret_id("app/db")
        .send()
        .await?;
    assert_eq!(described.kms_key_id(), Some(w.key_arn.as_str()));

    // createSecret again (Secrets Manager retries steps): the pending value is kept.
    let again = secret(run("createSecret").await?);
    assert_eq!(again.outcome, StepOutcome::AlreadyDone);
    assert_eq!(secret_at(&w, "app/db", "AWSPENDING").await?, pending);
    assert_eq!(w.proxy.calls("PutSecretValue"), 1);

    let set = secret(run("setSecret").await?);
    assert!(set.reason.contains("generic secret"));
    run("testSecret").await?;
    assert_eq!(
        secret_at(&w, "app/db", "AWSCURRENT").await?,
        "OLD-secret-value-99"
    );
    let finished = secret(run("finishSecret").await?);
    assert_eq!(finished.outcome, StepOutcome::Done);
    assert_eq!(secret_at(&w, "app/db", "AWSCURRENT").await?, pending);
    assert_eq!(
        secret_at(&w, "app/db", "AWSPREVIOUS").await?,
        "OLD-secret-value-99"
    );

    // Every step repeated after the finish is a no-op.
    w.proxy.reset_counts();
    for s in ["finishSecret", "createSecret", "testSecret"] {
        let out = secret(run(s).await?);
        assert_eq!(out.outcome, StepOutcome::AlreadyDone, "{s}");
    }
    assert_eq!(w.writes(), 0, "{:?}", w.proxy.call_counts());
    assert_eq!(secret_at(&w, "app/db", "AWSCURRENT").await?, pending);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_manager_refuses_unknown_tokens_disabled_rotation_and_unfit_keys(
) -> anyhow::Result<()> {
    let w = World::start().await?;
    rotation_enabled_secret(&w, "app/enabled", "OLD-1").await?;
    w.moto.create_secret("app/manual", "OLD-2").await?;
    let disabled = w.moto.create_cmk("off").await?;
    w.moto.kms().disable_key().key_id(&disabled).send().await?;

    let plain = w.rotator(&[]).await;
    let err = step_error(&plain, "createSecret", "app/manual", 1).await;
    assert!(
        err.contains("rotation is not enabled"),
        "rotation not enabled: {err}"
    );
    let err = step_error(&plain, "finishSecret", "app/enabled", 2).await;
    assert!(err.contains("is not a version"), "unknown token: {err}");

    let gated = w.rotator(&[("LOCKBOX_SECRET_KEY_ID", &disabled)]).await;
    let err = step_error(&gated, "createSecret", "app/enabled", 3).await;
    assert!(err.contains("KeyState is Disabled"), "disabled key: {err}");
    assert_eq!(w.writes(), 0, "{:?}", w.proxy.call_counts());
    Ok(())
}

// ------------------------------------------------------------------------------------------
// The binary: --input, --help, exit codes, and no value in any output
// ------------------------------------------------------------------------------------------

struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

/// Runs `lockbox-rotator` with `args`, `stdin`, and only the environment a deployment
/// would give it (plus `extra_env`), pointed at `endpoint`.
async fn run_bin(
    endpoint: &str,
    args: &[&str],
    stdin: Option<&str>,
    extra_env: &[(&str, &str)],
) -> anyhow::Result<Run> {
    let mut cmd = rotator_command(endpoint)?;
    cmd.args(args)
        .env("RUST_LOG", "trace")
        .envs(extra_env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("starting lockbox-rotator")?;
    if let Some(mut pipe) = child.stdin.take() {
        if let Some(text) = stdin {
            pipe.write_all(text.as_bytes()).await?;
        }
        drop(pipe);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .context("lockbox-rotator did not finish")??;
    Ok(Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn audit_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "lockbox_rotator::audit")
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_rotates_from_the_shell_and_never_prints_a_value() -> anyhow::Result<()> {
    let w = World::start().await?;
    let olds = [
        "OLD-shell-secret-alpha",
        "OLD-shell-secret-beta",
        "OLD-shell-secret-gamma",
    ];
    w.seed("/shell/a", olds[0]).await?;
    w.seed("/shell/b", olds[1]).await?;
    w.seed("/shell/c", olds[2]).await?;
    let endpoint = w.doctor.endpoint();

    // --help explains; no AWS call needed.
    let help = run_bin(&endpoint, &["--help"], None, &[]).await?;
    assert_eq!(help.status, 0);
    assert!(help.stdout.contains("--input FILE"), "{}", help.stdout);
    assert!(help.stdout.contains("rotationId"));

    // A dry run from stdin.
    let dry = regenerate(json!({"paths": ["/shell"]}), ID_1, json!({"dryRun": true}));
    let run = run_bin(&endpoint, &["--input", "-"], Some(&dry.to_string()), &[]).await?;
    assert_eq!(run.status, 0, "{}", run.stderr);
    let report: Report = serde_json::from_str(&run.stdout)?;
    assert!(report.results.iter().all(|r| r.outcome == Outcome::DryRun));
    assert_eq!(w.writes(), 0);

    // A real rotation from a file; /shell/c fails (TooManyUpdates beyond maxAttempts)
    // so the failure path's output is checked too.
    let dir = lockbox_tests::bins::target_dir().join("lockbox-tests");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!(
        "rotator-input-{}.json",
        lockbox_tests::random_hex(8)
    ));
    let ev = regenerate(json!({"names": ["/shell/a", "/shell/b"]}), ID_1, json!({}));
    std::fs::write(&file, ev.to_string())?;
    let run = run_bin(
        &endpoint,
        &["--input", file.to_str().context("path")?],
        None,
        &[],
    )
    .await?;
    assert_eq!(run.status, 0, "{}", run.stderr);
    let report: Report = serde_json::from_str(&run.stdout)?;
    assert_eq!(report.rotation_id, ID_1);
    assert!(
        report.results.iter().all(|r| r.outcome == Outcome::Rotated),
        "{:?}",
        report
    );
    let audit = audit_lines(&run.stderr);
    assert_eq!(
        audit.len(),
        2,
        "one JSON line per parameter:\n{}",
        run.stderr
    );
    for line in &audit {
        assert_eq!(line["outcome"], "rotated");
        assert_eq!(line["key_id"], w.key_arn.as_str());
        assert!(line["new_version"].is_i64());
    }
    let mut outputs = vec![run.stdout, run.stderr];

    w.doctor.too_many_updates(10);
    let failing = input(
        json!({"names": ["/shell/c"]}),
        "alias/app-secrets",
        "reencrypt",
        ID_1,
        json!({"pace": {"writesPerSecond": 50, "baseDelayMs": 5, "maxAttempts": 2}}),
    );
    let run = run_bin(
        &endpoint,
        &["--input", "-"],
        Some(&failing.to_string()),
        &[],
    )
    .await?;
    assert_eq!(
        run.status, 1,
        "a failed parameter fails the run: {}",
        run.stderr
    );
    let report: Report = serde_json::from_str(&run.stdout)?;
    assert_eq!(report.results[0].outcome, Outcome::Failed);
    w.doctor.too_many_updates(0);
    outputs.extend([run.stdout, run.stderr]);

    // Refused before any write: exit 2 with the reason.
    let refused = input(
        json!({"names": ["/shell/a"]}),
        "alias/aws/ssm",
        "regenerate",
        ID_2,
        json!({}),
    );
    let run = run_bin(
        &endpoint,
        &["--input", "-"],
        Some(&refused.to_string()),
        &[],
    )
    .await?;
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("alias/aws/ssm"), "{}", run.stderr);
    outputs.extend([run.stdout, run.stderr]);

    // A Secrets Manager step through the binary as well.
    rotation_enabled_secret(&w, "shell/secret", "OLD-shell-secret-delta").await?;
    let token = "5a1e0000-0000-4000-8000-000000000001";
    for s in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        let run = run_bin(
            &endpoint,
            &["--input", "-"],
            Some(&step(s, "shell/secret", token).to_string()),
            &[],
        )
        .await?;
        assert_eq!(run.status, 0, "{s}: {}", run.stderr);
        outputs.extend([run.stdout, run.stderr]);
    }

    // No value, old or new, anywhere in stdout or stderr, even at RUST_LOG=trace.
    let mut values: Vec<String> = olds.iter().map(|s| (*s).to_owned()).collect();
    values.push("OLD-shell-secret-delta".into());
    values.push(w.value("/shell/a").await?);
    values.push(w.value("/shell/b").await?);
    values.push(secret_at(&w, "shell/secret", "AWSCURRENT").await?);
    for value in &values {
        for out in &outputs {
            assert!(
                !out.contains(value.as_str()),
                "a value leaked into the output"
            );
        }
    }
    let _ = std::fs::remove_file(file);
    Ok(())
}

// ------------------------------------------------------------------------------------------
// The binary under the Lambda Runtime API
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn the_lambda_runs_scheduled_inputs_retries_and_secret_steps() -> anyhow::Result<()> {
    let w = World::start().await?;
    w.seed("/fn/a", "OLD-lambda-value-omega").await?;
    rotation_enabled_secret(&w, "fn/secret", "OLD-lambda-secret-sigma").await?;
    let sandbox = lockbox_tests::Sandbox::builder()
        .binary(rotator_bin()?)
        .env("AWS_ENDPOINT_URL", w.proxy.endpoint())
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("RUST_LOG", "trace")
        .env("LOCKBOX_SECRET_KEY_ID", "alias/app-secrets")
        .env("LOCKBOX_DEADLINE_RESERVE_MS", "1000")
        .function_timeout(Duration::from_secs(60))
        .start()
        .await?;
    let wait = Duration::from_secs(60);

    // The schedule's input, exactly as EventBridge Scheduler delivers it.
    let scheduled = regenerate(json!({"paths": ["/fn"]}), ID_1, json!({}));
    let lockbox_tests::sandbox::RuntimeOutcome::Response(body) =
        sandbox.invoke_runtime(scheduled.clone(), wait).await?
    else {
        panic!("expected a response\n{}", sandbox.report());
    };
    let report: Report = serde_json::from_str(&body)?;
    assert_eq!(report.results[0].outcome, Outcome::Rotated, "{body}");

    // Lambda's retry of the same event: nothing new is written.
    w.proxy.reset_counts();
    let lockbox_tests::sandbox::RuntimeOutcome::Response(body) =
        sandbox.invoke_runtime(scheduled, wait).await?
    else {
        panic!("expected a response\n{}", sandbox.report());
    };
    let report: Report = serde_json::from_str(&body)?;
    assert_eq!(report.results[0].outcome, Outcome::Unchanged, "{body}");
    assert_eq!(w.writes(), 0);

    // A refused run is a function error, so the schedule's retries and DLQ apply.
    let refused = input(
        json!({"paths": ["/fn"]}),
        "alias/aws/ssm",
        "regenerate",
        ID_2,
        json!({}),
    );
    let lockbox_tests::sandbox::RuntimeOutcome::Error(report) =
        sandbox.invoke_runtime(refused, wait).await?
    else {
        panic!("expected an error\n{}", sandbox.report());
    };
    assert!(report.body.contains("KeyRefused"), "{}", report.body);
    assert!(report.body.contains("alias/aws/ssm"), "{}", report.body);
    // No rotationId and no time: refused rather than guessing an id.
    let no_id =
        json!({"targets": {"paths": ["/fn"]}, "keyId": "alias/app-secrets", "mode": "regenerate"});
    let lockbox_tests::sandbox::RuntimeOutcome::Error(report) =
        sandbox.invoke_runtime(no_id, wait).await?
    else {
        panic!("expected an error\n{}", sandbox.report());
    };
    assert!(
        report.body.contains("rotationId is missing"),
        "{}",
        report.body
    );

    // Secrets Manager's four steps through the same function.
    let token = "1ambda00-0000-4000-8000-000000000001";
    for s in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        let outcome = sandbox
            .invoke_runtime(step(s, "fn/secret", token), wait)
            .await?;
        assert!(
            matches!(outcome, lockbox_tests::sandbox::RuntimeOutcome::Response(_)),
            "{s}: {outcome:?}"
        );
    }
    let described = w
        .moto
        .secrets()
        .describe_secret()
        .secret_id("fn/secret")
        .send()
        .await?;
    assert_eq!(described.kms_key_id(), Some(w.key_arn.as_str()));
    assert_eq!(
        secret_at(&w, "fn/secret", "AWSPREVIOUS").await?,
        "OLD-lambda-secret-sigma"
    );

    // Stopped first, so every line it wrote has come through the pipe before the check.
    sandbox.kill().await?;
    let logs = sandbox.logs();
    for value in [
        "OLD-lambda-value-omega".to_owned(),
        "OLD-lambda-secret-sigma".to_owned(),
        w.value("/fn/a").await?,
        secret_at(&w, "fn/secret", "AWSCURRENT").await?,
    ] {
        assert!(
            !logs.contains(&value),
            "a value leaked into the function's logs"
        );
    }
    assert!(audit_lines(&logs).len() >= 2, "{logs}");
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Another account and region, through an assumed role
// ------------------------------------------------------------------------------------------

/// The role the rotator assumes in `account`.
fn rotation_role(account: &str) -> String {
    format!("arn:aws:iam::{account}:role/lockbox-rotation")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_in_the_input_rotates_the_other_accounts_parameter_in_its_region(
) -> anyhow::Result<()> {
    let w = World::start().await?;
    let role = rotation_role(OTHER_ACCOUNT);
    let name = "/app/db/password";

    // The other account has its own key, under the same alias as the default account's,
    // and its own parameter of the same name, in its region.
    let other = w.moto.sdk_config_as(Some(&role), Some(OTHER_REGION)).await;
    let other_kms = aws_sdk_kms::Client::new(&other);
    let other_key = other_kms
        .create_key()
        .key_spec(KeySpec::SymmetricDefault)
        .key_usage(KeyUsageType::EncryptDecrypt)
        .send()
        .await?
        .key_metadata()
        .context("metadata")?
        .clone();
    other_kms
        .create_alias()
        .alias_name("alias/app-secrets")
        .target_key_id(other_key.key_id())
        .send()
        .await?;
    let other_key_arn = other_key.arn().context("key ARN")?.to_owned();
    assert!(
        other_key_arn.contains(&format!(":{OTHER_REGION}:{OTHER_ACCOUNT}:")),
        "moto put the key in the role's account and region: {other_key_arn}"
    );
    let other_ssm = aws_sdk_ssm::Client::new(&other);
    other_ssm
        .put_parameter()
        .name(name)
        .value("OLD-other-account-value-7")
        .r#type(ParameterType::SecureString)
        .send()
        .await?;
    // The same name in the default account, and in the other account's default region:
    // neither may change.
    w.seed(name, "OLD-default-account-value-3").await?;
    let other_home = w.moto.sdk_config_as(Some(&role), Some(REGION)).await;
    aws_sdk_ssm::Client::new(&other_home)
        .put_parameter()
        .name(name)
        .value("OLD-other-account-home-region-5")
        .r#type(ParameterType::SecureString)
        .send()
        .await?;

    let ev = regenerate(
        json!({"names": [name]}),
        ID_1,
        json!({"region": OTHER_REGION,
               "assumeRole": {"roleArn": role, "externalId": "lockbox-e2e-external-id"}}),
    );
    let run = run_bin(
        &w.doctor.endpoint(),
        &["--input", "-"],
        Some(&ev.to_string()),
        &[],
    )
    .await?;
    assert_eq!(run.status, 0, "{}", run.stderr);
    let report: Report = serde_json::from_str(&run.stdout)?;
    let r = result(&report, name);
    assert_eq!(r.outcome, Outcome::Rotated, "{:?}", r.reason);
    assert_eq!((r.old_version, r.new_version), (Some(1), Some(2)));
    assert_eq!(
        r.key_id, other_key_arn,
        "the key gate ran in the other account"
    );
    assert!(
        w.proxy.calls("AssumeRole") >= 1,
        "STS went through AWS_ENDPOINT_URL: {:?}",
        w.proxy.call_counts()
    );

    // Rotated in the other account and region: a new version under that account's key,
    // the old value kept as :previous.
    let history = other_ssm
        .get_parameter_history()
        .name(name)
        .send()
        .await?
        .parameters()
        .to_vec();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].key_id(), Some(other_key_arn.as_str()));
    let read = |selector: String| {
        let ssm = other_ssm.clone();
        async move {
            ssm.get_parameter()
                .name(selector)
                .with_decryption(true)
                .send()
                .await
                .map(|o| {
                    o.parameter()
                        .and_then(|p| p.value())
                        .unwrap_or_default()
                        .to_owned()
                })
        }
    };
    let new = read(name.to_owned()).await?;
    assert_ne!(new, "OLD-other-account-value-7");
    assert_eq!(
        read(format!("{name}:previous")).await?,
        "OLD-other-account-value-7"
    );
    assert_eq!(read(format!("{name}:current")).await?, new);

    // Untouched: the default account's parameter and the other account's home-region one.
    assert_eq!(w.history(name).await?.len(), 1);
    assert_eq!(w.value(name).await?, "OLD-default-account-value-3");
    let home = aws_sdk_ssm::Client::new(&other_home)
        .get_parameter_history()
        .name(name)
        .send()
        .await?;
    assert_eq!(home.parameters().len(), 1);

    for value in [
        "OLD-other-account-value-7",
        "OLD-default-account-value-3",
        new.as_str(),
        "lockbox-e2e-external-id",
    ] {
        assert!(
            !run.stdout.contains(value) && !run.stderr.contains(value),
            "a value or the external id leaked into the output"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_that_cannot_be_assumed_fails_before_any_other_call_naming_the_role(
) -> anyhow::Result<()> {
    let w = World::start().await?;
    w.seed("/app/a", "OLD-a").await?;
    let role = rotation_role(OTHER_ACCOUNT);
    let ev = regenerate(
        json!({"names": ["/app/a"]}),
        ID_1,
        json!({"assumeRole": {"roleArn": role}}),
    );
    // STS is unavailable (every attempt answers 500): in-process, a typed error, and
    // nothing but AssumeRole was called.
    w.proxy
        .fail_next(Some("AssumeRole"), 20, Fault::ServerError);
    let err = w
        .rotator(&[])
        .await
        .handle(ev.clone())
        .await
        .expect_err("STS fails");
    assert!(matches!(err, Error::Access(_)), "{err}");
    assert_eq!(err.kind(), "AssumeRoleFailed");
    let msg = err.to_string();
    assert!(msg.contains(&format!("cannot assume role {role}")), "{msg}");
    let counts = w.proxy.call_counts();
    assert!(
        counts.keys().all(|op| op == "AssumeRole") && counts.get("AssumeRole") >= Some(&1),
        "{counts:?}"
    );
    w.proxy.clear_faults();
    w.proxy.reset_counts();

    // STS refuses (the role's trust policy does not allow the caller): the binary exits 2
    // with a message naming the role and STS's reason. The doctor answers for STS, so
    // nothing at all reaches the proxy.
    w.doctor.deny_assume_role();
    let run = run_bin(
        &w.doctor.endpoint(),
        &["--input", "-"],
        Some(&ev.to_string()),
        &[],
    )
    .await?;
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stdout.is_empty(), "no result: {}", run.stdout);
    assert!(
        run.stderr.contains(&format!("cannot assume role {role}")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("AccessDenied"), "{}", run.stderr);
    assert_eq!(w.proxy.total(), 0, "{:?}", w.proxy.call_counts());
    assert_eq!(w.history("/app/a").await?.len(), 1);
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Issue 16: retries, overlapping runs, keys by ARN, the 100-version limit, ids, log caps
// ------------------------------------------------------------------------------------------

/// One run of the real binary with `ev` on stdin, through the doctor and the proxy: its
/// exit status and its report (printed when it exits 0 or 1).
async fn rotate_once(w: &World, ev: &Value, env: &[(&str, &str)]) -> anyhow::Result<(i32, Report)> {
    let run = run_bin(
        &w.doctor.endpoint(),
        &["--input", "-"],
        Some(&ev.to_string()),
        env,
    )
    .await?;
    let report: Report = serde_json::from_str(&run.stdout)
        .with_context(|| format!("exit {}, no report: {}", run.status, run.stderr))?;
    Ok((run.status, report))
}

/// Case 1: the new version does not hold what was written (here the doctor changes the
/// value in transit). The run fails without labelling it, and its retry, which finds the
/// rotation's own lease, refuses rather than moving `current` onto it.
#[tokio::test(flavor = "multi_thread")]
async fn a_retry_never_promotes_a_version_that_failed_its_check() -> anyhow::Result<()> {
    let w = World::start().await?;
    w.seed("/app/a", "OLD-a-verified").await?;
    w.moto.label_param("/app/a", 1, "current").await?;
    let ev = regenerate(json!({"names": ["/app/a"]}), ID_1, json!({}));

    w.doctor.tamper_next_put();
    let (status, report) = rotate_once(&w, &ev, &[]).await?;
    assert_eq!(status, 1);
    assert!(reason(&report.results[0]).contains("read-back"));
    assert!(
        !reason(&report.results[0]).contains(TAMPERED),
        "no value in reasons"
    );
    assert_eq!(
        w.value("/app/a").await?,
        TAMPERED,
        "the bad version is the latest"
    );

    // Lambda's retry of the same event.
    for _ in 0..2 {
        let (status, report) = rotate_once(&w, &ev, &[]).await?;
        assert_eq!(status, 1, "{report:?}");
        let r = &report.results[0];
        assert_eq!(r.outcome, Outcome::Failed, "{}", reason(r));
        assert!(reason(r).contains("not promoting"), "{}", reason(r));
        assert_eq!(w.value("/app/a:current").await?, "OLD-a-verified");
        let labels = w.labels("/app/a").await?;
        assert_eq!(labels.get("current"), Some(&1), "{labels:?}");
        assert_eq!(labels.get("previous"), None, "{labels:?}");
    }
    assert_eq!(w.history("/app/a").await?.len(), 2, "nothing written again");
    Ok(())
}

/// Case 2: another writer gets in between the rotation's read and its write (the
/// re-encrypt scenario: re-writing the value read earlier would revert their update).
/// The write lands at N+2, not N+1: outcome `conflict`, naming both, nothing labelled.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_that_is_not_exactly_old_plus_one_is_a_conflict_naming_both() -> anyhow::Result<()>
{
    let w = World::start().await?;
    w.seed("/app/a", "OLD-a").await?;
    w.moto.label_param("/app/a", 1, "current").await?;
    w.doctor.foreign_write_before_next_put();
    let ev = input(
        json!({"names": ["/app/a"]}),
        "alias/app-secrets",
        "reencrypt",
        ID_1,
        json!({}),
    );
    let (status, report) = rotate_once(&w, &ev, &[]).await?;
    assert_eq!(status, 1, "{report:?}");
    let r = &report.results[0];
    assert_eq!(r.outcome, Outcome::Conflict, "{}", reason(r));
    assert_eq!((r.old_version, r.new_version), (Some(1), Some(3)));
    assert!(reason(r).contains("wrote version 3"), "{}", reason(r));
    assert!(
        reason(r).contains("version 2 came from another writer"),
        "{}",
        reason(r)
    );
    let labels = w.labels("/app/a").await?;
    assert_eq!(labels.get("current"), Some(&1), "{labels:?}");
    assert_eq!(labels.get("previous"), None, "{labels:?}");
    assert_eq!(w.value("/app/a:2").await?, FOREIGN, "their update is kept");
    Ok(())
}

/// Case 2: runs never interleave on one parameter. A run that stops mid-way (killed while
/// its write hangs) leaves a lease that anyone can see in the parameter's history; a
/// second run leaves the parameter alone until the lease expires, then rotates it and
/// removes the dead run's label.
#[tokio::test(flavor = "multi_thread")]
async fn a_lease_visible_in_aws_keeps_other_runs_out_and_expires_after_a_crash(
) -> anyhow::Result<()> {
    let w = World::start().await?;
    w.seed("/app/a", "OLD-a").await?;
    w.moto.label_param("/app/a", 1, "current").await?;

    // Run A, the real binary with a short lease, hangs in PutParameter.
    w.proxy.fail_next(Some("PutParameter"), 5, Fault::Stall);
    let ev_a = regenerate(json!({"names": ["/app/a"]}), ID_1, json!({}));
    let mut cmd = rotator_command(&w.doctor.endpoint())?;
    cmd.args(["--input", "-"])
        .env("LOCKBOX_LEASE_SECONDS", "3")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut a = cmd.spawn()?;
    if let Some(mut pipe) = a.stdin.take() {
        pipe.write_all(ev_a.to_string().as_bytes()).await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while w.proxy.calls("PutParameter") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "run A never wrote");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        w.mark("/app/a", LABEL_1).await?,
        Some((1, 1)),
        "run A's lease is on version 1: {:?}",
        w.labels("/app/a").await?
    );

    // Run B, another rotation id, while A holds the lease.
    let ev_b = regenerate(json!({"names": ["/app/a"]}), ID_2, json!({}));
    let (status, report) = rotate_once(&w, &ev_b, &[]).await?;
    assert_eq!(status, 1, "{report:?}");
    let r = &report.results[0];
    assert_eq!(r.outcome, Outcome::Conflict, "{}", reason(r));
    assert!(
        reason(r).contains(LABEL_1),
        "names the holder: {}",
        reason(r)
    );
    assert_eq!(w.proxy.calls("PutParameter"), 1, "B wrote nothing");

    // A crashes. Once its lease has expired, B's retry rotates.
    a.kill().await?;
    w.proxy.clear_faults();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let report = loop {
        let (status, report) = rotate_once(&w, &ev_b, &[]).await?;
        if status == 0 {
            break report;
        }
        assert_eq!(report.results[0].outcome, Outcome::Conflict, "{report:?}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let r = &report.results[0];
    assert_eq!(r.outcome, Outcome::Rotated, "{}", reason(r));
    assert_eq!((r.old_version, r.new_version), (Some(1), Some(2)));
    assert_eq!(
        w.mark("/app/a", LABEL_1).await?,
        None,
        "the dead lease is gone"
    );
    assert_eq!(w.value("/app/a:previous").await?, "OLD-a");
    assert_eq!(w.history("/app/a").await?.len(), 2);
    Ok(())
}

/// Case 3: SSM records `KeyId` as the writer passed it. A value written under
/// `alias/app-secrets` before the alias moved to a new key is under the OLD key, though
/// the recorded text equals the requested alias. Re-encrypting by that alias must move it.
#[tokio::test(flavor = "multi_thread")]
async fn reencrypt_by_alias_moves_values_recorded_under_the_alias_before_it_moved(
) -> anyhow::Result<()> {
    let w = World::start().await?;
    // Written with the alias text as KeyId while the alias named the first key.
    w.moto
        .put_param(
            "/app/by-alias",
            "OLD-under-first-key",
            ParameterType::SecureString,
            Some("alias/app-secrets"),
        )
        .await?;
    assert_eq!(
        w.history("/app/by-alias").await?[0].key_id(),
        Some("alias/app-secrets"),
        "the alias text is what SSM recorded"
    );
    // The alias moves to a new key.
    let kms = w.moto.kms();
    let second = kms
        .create_key()
        .key_spec(KeySpec::SymmetricDefault)
        .key_usage(KeyUsageType::EncryptDecrypt)
        .send()
        .await?
        .key_metadata()
        .context("metadata")?
        .clone();
    kms.update_alias()
        .alias_name("alias/app-secrets")
        .target_key_id(second.key_id())
        .send()
        .await?;
    let second_arn = second.arn().context("arn")?.to_owned();
    // Already under the new key, by its ARN: nothing to do for this one.
    w.moto
        .put_param(
            "/app/by-arn",
            "OLD-under-second-key",
            ParameterType::SecureString,
            Some(&second_arn),
        )
        .await?;

    let ev = input(
        json!({"paths": ["/app"]}),
        "alias/app-secrets",
        "reencrypt",
        ID_1,
        json!({}),
    );
    let (status, report) = rotate_once(&w, &ev, &[]).await?;
    assert_eq!(status, 0, "{report:?}");
    let moved = result(&report, "/app/by-alias");
    assert_eq!(moved.outcome, Outcome::Rotated, "{}", reason(moved));
    assert_eq!(moved.key_id, second_arn);
    let history = w.history("/app/by-alias").await?;
    assert_eq!(history[1].key_id(), Some(second_arn.as_str()));
    assert_eq!(w.value("/app/by-alias").await?, "OLD-under-first-key");
    assert_eq!(result(&report, "/app/by-arn").outcome, Outcome::Unchanged);
    Ok(())
}

/// Case 4: at the 100-version limit lockbox takes its labels off the oldest version so
/// SSM accepts the write. When the write is then refused (the key disabled after the
/// check), they go back: readers of `name:current` never lose it.
#[tokio::test(flavor = "multi_thread")]
async fn at_100_versions_a_refused_write_puts_the_oldest_versions_labels_back() -> anyhow::Result<()>
{
    let w = World::start().await?;
    seed_versions(&w, "/app/full", 100).await?;
    // 99 writes since the last rotation: `current` and that rotation's label (an older
    // lockbox's shape) are on the oldest version.
    w.moto.label_param("/app/full", 1, "current").await?;
    w.moto
        .label_param("/app/full", 1, "r-20250101T0300Z")
        .await?;
    w.moto.label_param("/app/full", 60, "previous").await?;

    w.doctor.refuse_next_put("InvalidKeyId");
    let ev = regenerate(json!({"names": ["/app/full"]}), ID_1, json!({}));
    let (status, report) = rotate_once(&w, &ev, &[]).await?;
    assert_eq!(status, 1, "{report:?}");
    let r = &report.results[0];
    assert_eq!(r.outcome, Outcome::Failed);
    assert!(reason(r).contains("InvalidKeyId"), "{}", reason(r));
    assert_eq!(w.value("/app/full:current").await?, "OLD-/app/full-1");
    let labels = w.labels("/app/full").await?;
    assert_eq!(labels.get("current"), Some(&1), "{labels:?}");
    assert_eq!(labels.get("previous"), Some(&60), "{labels:?}");
    assert_eq!(labels.get("r-20250101T0300Z"), Some(&1), "{labels:?}");
    assert_eq!(w.history("/app/full").await?.len(), 100);
    Ok(())
}

/// Case 5: rotation ids are the scheduled time to the second plus the schedule. Two runs
/// in the same minute, and two schedules at the same second, are separate rotations.
#[tokio::test(flavor = "multi_thread")]
async fn runs_in_the_same_minute_or_from_two_schedules_are_separate_rotations() -> anyhow::Result<()>
{
    let w = World::start().await?;
    w.seed("/app/a", "OLD-a").await?;
    let run = |id: &str, extra: Value| regenerate(json!({"names": ["/app/a"]}), id, extra);

    let (_, first) = rotate_once(&w, &run("2026-11-22T03:00:00Z", json!({})), &[]).await?;
    assert_eq!(first.results[0].outcome, Outcome::Rotated);
    let (_, second) = rotate_once(&w, &run("2026-11-22T03:00:30Z", json!({})), &[]).await?;
    assert_eq!(
        second.results[0].outcome,
        Outcome::Rotated,
        "{}",
        reason(&second.results[0])
    );
    let nightly = "arn:aws:scheduler:us-east-1:123456789012:schedule/lockbox/nightly";
    let hourly = "arn:aws:scheduler:us-east-1:123456789012:schedule/lockbox/hourly";
    for schedule in [nightly, hourly] {
        let ev = run("2026-11-22T04:00:00Z", json!({"schedule": schedule}));
        let (_, report) = rotate_once(&w, &ev, &[]).await?;
        assert_eq!(report.results[0].outcome, Outcome::Rotated, "{schedule}");
        assert_eq!(report.schedule.as_deref(), Some(schedule));
    }
    // A redelivery of one of them is still recognised.
    let ev = run("2026-11-22T04:00:00Z", json!({"schedule": hourly}));
    let (_, again) = rotate_once(&w, &ev, &[]).await?;
    assert_eq!(again.results[0].outcome, Outcome::Unchanged);
    assert_eq!(w.history("/app/a").await?.len(), 5);
    Ok(())
}

/// A log level's verbosity: error 1 ... trace 5.
fn rank(level: &str) -> u8 {
    match level.to_ascii_lowercase().as_str() {
        "error" => 1,
        "warn" => 2,
        "info" => 3,
        "debug" => 4,
        "trace" => 5,
        _ => 0,
    }
}

/// Case 6: module-specific `RUST_LOG` directives are more specific than the caps on the
/// SDK's wire-level logging, and used to win over them. The caps now hold.
#[tokio::test(flavor = "multi_thread")]
async fn no_rust_log_directive_lifts_the_wire_level_caps() -> anyhow::Result<()> {
    let w = World::start().await?;
    w.seed("/shell/a", "OLD-shell-a").await?;
    let capped = lockbox_rotator::logging::WIRE_LEVEL_CAPS;
    let ev = regenerate(json!({"names": ["/shell/a"]}), ID_1, json!({}));
    for directives in [
        "aws_smithy_runtime::client::orchestrator=trace,lockbox_rotator=info",
        "info,aws_smithy_runtime::client=trace,aws_sigv4::http_request=trace,\
         hyper_util::client::legacy=trace,aws_smithy_runtime_api=trace,aws_runtime=trace",
        "trace",
    ] {
        let run = run_bin(
            &w.doctor.endpoint(),
            &["--input", "-"],
            Some(&ev.to_string()),
            &[("RUST_LOG", directives)],
        )
        .await?;
        assert_eq!(run.status, 0, "{}", run.stderr);
        let mut wire = 0;
        let mut lines = 0;
        for line in run.stderr.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            lines += 1;
            let target = v["target"].as_str().unwrap_or_default();
            let level = rank(v["level"].as_str().unwrap_or_default());
            let over_cap = capped.iter().any(|(krate, cap)| {
                let own = target == *krate || target.starts_with(&format!("{krate}::"));
                own && level > rank(&cap.to_string())
            });
            if over_cap {
                wire += 1;
            }
        }
        assert!(lines > 0, "{directives}: no JSON log lines at all");
        assert_eq!(
            wire, 0,
            "{directives}: wire-level lines got through:\n{}",
            run.stderr
        );
        assert_eq!(audit_lines(&run.stderr).len(), 1, "{directives}");
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Issue 16: calls per parameter, opt-in selection, scale, staged rotation
// ------------------------------------------------------------------------------------------

/// Tags `name` so that `requireTag` selects it.
async fn opt_in(w: &World, name: &str) -> anyhow::Result<()> {
    w.moto
        .ssm()
        .add_tags_to_resource()
        .resource_type(ResourceTypeForTagging::Parameter)
        .resource_id(name)
        .tags(Tag::builder().key("lockbox:rotate").value("true").build()?)
        .send()
        .await?;
    Ok(())
}

/// `regenerate` makes five AWS calls per parameter, three of them writes (counted at the
/// proxy; the binary's run), and `requireTag` rotates only the parameters that opt in.
#[tokio::test(flavor = "multi_thread")]
async fn regenerate_makes_five_calls_and_three_writes_per_parameter() -> anyhow::Result<()> {
    const N: usize = 20;
    let w = World::start().await?;
    for i in 0..N {
        let name = format!("/app/opted-in/p{i:02}");
        w.seed(&name, &format!("OLD-{i}")).await?;
        opt_in(&w, &name).await?;
    }
    for i in 0..5 {
        w.seed(&format!("/app/not-opted-in/p{i}"), "OLD-untagged")
            .await?;
    }
    w.proxy.reset_counts();
    let ev = regenerate(json!({"paths": ["/app/opted-in"]}), ID_1, json!({}));
    let (status, report) = rotate_once(&w, &ev, &[]).await?;
    assert_eq!(status, 0, "{report:?}");
    assert_eq!(report.results.len(), N);
    assert!(report.results.iter().all(|r| r.outcome == Outcome::Rotated));

    let counts = w.proxy.call_counts();
    let per_parameter = [
        ("GetParameterHistory", 1),
        ("LabelParameterVersion", 2),
        ("PutParameter", 1),
        ("GetParameter", 1),
    ];
    for (op, each) in per_parameter {
        assert_eq!(counts.get(op), Some(&(each * N)), "{op}: {counts:?}");
    }
    // Once per run: the key gate, and the selection's pages (moto's are of 10).
    assert_eq!(counts.get("DescribeKey"), Some(&1), "{counts:?}");
    let pages = counts.get("DescribeParameters").copied().unwrap_or(0);
    assert!((1..=N / 10 + 1).contains(&pages), "{counts:?}");
    assert_eq!(w.proxy.total(), 5 * N + 1 + pages, "{counts:?}");
    assert_eq!(w.writes(), 3 * N, "{counts:?}");

    // Issue 16, case 7: with requireTag, a path selects only what opted in.
    let ev = regenerate(
        json!({"paths": ["/app"], "requireTag": "lockbox:rotate"}),
        ID_2,
        json!({}),
    );
    let (status, report) = rotate_once(&w, &ev, &[]).await?;
    assert_eq!(status, 0, "{report:?}");
    assert_eq!(report.results.len(), N, "only the opted-in parameters");
    assert!(report
        .results
        .iter()
        .all(|r| r.name.starts_with("/app/opted-in/")));
    assert_eq!(w.history("/app/not-opted-in/p0").await?.len(), 1);
    Ok(())
}

/// The Lambda Invoke API, as far as the rotator's hand-over uses it: records each
/// asynchronous invocation, which the test then delivers to the sandbox as Lambda would.
struct InvokeApi {
    port: u16,
    invoked: tokio::sync::mpsc::UnboundedReceiver<(String, String, Value)>,
}

impl InvokeApi {
    async fn start() -> anyhow::Result<InvokeApi> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (tx, invoked) = tokio::sync::mpsc::unbounded_channel();
        let app = axum::Router::new().route(
            "/2015-03-31/functions/{function}/invocations",
            axum::routing::post(
                move |axum::extract::Path(function): axum::extract::Path<String>,
                      headers: HeaderMap,
                      body: axum::body::Bytes| {
                    let tx = tx.clone();
                    async move {
                        let kind = headers
                            .get("x-amz-invocation-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("RequestResponse")
                            .to_owned();
                        let payload = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let _ = tx.send((function, kind, payload));
                        StatusCode::ACCEPTED
                    }
                },
            ),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(InvokeApi { port, invoked })
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Scale: 2,000 parameters with a deadline a few seconds away. Each invocation stops
/// starting parameters before its deadline, reports the rest `deferred` and invokes the
/// function again asynchronously with the same input, `continueAfter` and the names left
/// (`continueWith`), which the next one works through without selecting again; the chain
/// ends with every parameter rotated exactly once.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "about 90 s: some 12,000 calls to moto (2,000 seeding writes, five a parameter); \
            make test runs it from the start beside the other tests (scripts/test.sh), \
            alone: cargo test --workspace --test e2e -- --ignored two_thousand"]
async fn two_thousand_parameters_rotate_exactly_once_across_invocations() -> anyhow::Result<()> {
    const N: usize = 2000;
    let w = World::start().await?;
    let names: Vec<String> = (0..N).map(|i| format!("/fleet/p{i:04}")).collect();
    let ssm = w.moto.ssm();
    futures::stream::iter(names.iter().cloned())
        .map(|name| {
            let ssm = ssm.clone();
            async move {
                ssm.put_parameter()
                    .name(&name)
                    .value(format!("OLD-{name}"))
                    .r#type(ParameterType::SecureString)
                    .send()
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;

    let mut invoke = InvokeApi::start().await?;
    let sandbox = lockbox_tests::Sandbox::builder()
        .binary(rotator_bin()?)
        .env("AWS_ENDPOINT_URL", w.proxy.endpoint())
        .env("AWS_ENDPOINT_URL_LAMBDA", invoke.endpoint())
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("RUST_LOG", "warn")
        .env("LOCKBOX_DEADLINE_RESERVE_MS", "1000")
        // moto pages DescribeParameters by 10 and filters every parameter for each page:
        // the first invocation's selection of 2,000 takes it several seconds. At moto's
        // pace (some 150 calls a second here, five a parameter) 15 s cannot rotate them
        // all, so the chain needs several invocations.
        .function_timeout(Duration::from_secs(15))
        .start()
        .await?;
    // Lambda's pace is for real accounts; moto takes any.
    let mut payload = regenerate(
        json!({"paths": ["/fleet"]}),
        ID_1,
        json!({"pace": {"writesPerSecond": 1000, "baseDelayMs": 1}}),
    );
    let mut rotated: HashMap<String, usize> = HashMap::new();
    let mut invocations = 0;
    let (mut describes_before, mut full_selection) = (0, 0);
    loop {
        invocations += 1;
        assert!(invocations <= 100, "the chain does not end");
        let outcome = sandbox
            .invoke_runtime(payload.clone(), Duration::from_secs(60))
            .await?;
        let lockbox_tests::sandbox::RuntimeOutcome::Response(body) = outcome else {
            panic!("invocation {invocations} failed\n{}", sandbox.report());
        };
        let report: Report = serde_json::from_str(&body)?;
        let described = w.proxy.calls("DescribeParameters") - describes_before;
        describes_before += described;
        match invocations {
            1 => full_selection = described,
            // Re-selecting would list all 2,000 again: a continuation describes only the
            // names it was handed, as it comes to them.
            _ => assert!(
                described < full_selection / 2,
                "invocation {invocations} made {described} DescribeParameters calls; \
                 selecting everything took {full_selection}"
            ),
        }
        assert_eq!(report.rotation_id, ID_1);
        for r in &report.results {
            match r.outcome {
                Outcome::Rotated => *rotated.entry(r.name.clone()).or_default() += 1,
                Outcome::Deferred => {}
                other => panic!("{}: {other:?} {}", r.name, reason(r)),
            }
        }
        match invoke.invoked.try_recv() {
            Ok((function, kind, next)) => {
                assert!(report.deferred() > 0, "handed over with nothing deferred");
                assert_eq!(kind, "Event", "asynchronous");
                assert!(function.contains("function"), "{function}");
                assert_eq!(next["rotationId"], ID_1, "the same rotation id");
                assert_eq!(
                    next["continueAfter"].as_str(),
                    report.continue_after.as_deref()
                );
                let deferred: Vec<&str> = report
                    .results
                    .iter()
                    .filter(|r| r.outcome == Outcome::Deferred)
                    .map(|r| r.name.as_str())
                    .collect();
                assert_eq!(
                    next["continueWith"],
                    json!(deferred),
                    "the hand-over carries the names left, in name order"
                );
                payload = next;
            }
            Err(_) => {
                assert_eq!(report.deferred(), 0, "deferred but not handed over");
                break;
            }
        }
    }
    assert!(
        invocations >= 2,
        "only {invocations} invocation: the deadline was not met"
    );
    assert_eq!(rotated.len(), N, "every parameter rotated");
    assert!(rotated.values().all(|n| *n == 1), "each exactly once");
    assert_eq!(w.proxy.forwarded("PutParameter"), N, "one write each");
    // And SSM agrees: every parameter is at version 2.
    let mut token = None;
    let mut seen = 0;
    loop {
        let page = w
            .moto
            .ssm()
            .describe_parameters()
            .max_results(50)
            .set_next_token(token.take())
            .send()
            .await?;
        for p in page.parameters() {
            assert_eq!(p.version(), 2, "{:?}", p.name());
            seen += 1;
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => break,
        }
    }
    assert_eq!(seen, N);
    sandbox.kill().await?;
    Ok(())
}

/// HMAC-SHA256 (RFC 2104), for the staged test's signer and verifiers.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// A label's value through an extension, or `None` when the label is on no version.
async fn through_extension(
    client: &lockbox_tests::ExtClient,
    name: &str,
    label: &str,
) -> anyhow::Result<Option<String>> {
    let response = client
        .get_parameter(&format!("{name}:{label}"), &[("withDecryption", "true")])
        .await?;
    if response.status != 200 {
        return Ok(None);
    }
    let doc = response.json()?;
    Ok(doc["Parameter"]["Value"].as_str().map(str::to_owned))
}

/// The values of a parameter's keyring (`current`, `previous`, `pending`, those that
/// exist) in one request to the extension's keyring route.
async fn keyring_through_extension(
    client: &lockbox_tests::ExtClient,
    name: &str,
) -> anyhow::Result<Vec<String>> {
    let path = lockbox_tests::client::keyring_path(name, &[("withDecryption", "true")]);
    let response = client.get(&path).await?;
    anyhow::ensure!(
        response.status == 200,
        "keyring: {} {}",
        response.status,
        response.body
    );
    let doc = response.json()?;
    Ok(["Current", "Previous", "Pending"]
        .iter()
        .filter_map(|slot| doc[slot]["Value"].as_str().map(str::to_owned))
        .collect())
}

/// Staged rotation of a shared signing key, end to end: a signer signs with `current`
/// and a verifier accepts what its keyring holds (`current`, `previous` and `pending`,
/// one request to the extension's keyring route per check), each behind its own
/// extension with a cache TTL. Across a whole staged rotation (write as pending, promote once the
/// verifiers' caches have surely seen it) no signature is rejected.
#[tokio::test(flavor = "multi_thread")]
async fn a_staged_rotation_never_rejects_a_signature() -> anyhow::Result<()> {
    let w = World::start().await?;
    let name = "/shared/webhook-signing-key";
    w.seed(name, "OLD-signing-key-0001").await?;
    w.moto.label_param(name, 1, "current").await?;
    let ttl = [("SSM_PARAMETER_STORE_TTL", "2")];
    let (_signer, _signer_proxy, signer) = lockbox_tests::spawn_lockbox(&w.moto, &ttl).await?;
    let (_verifier, verifier_proxy, verifier) = lockbox_tests::spawn_lockbox(&w.moto, &ttl).await?;
    let rotator = w.rotator(&[]).await;
    let staged = |id: &str| {
        regenerate(
            json!({"names": [name]}),
            id,
            json!({"staged": {"promoteAfterSeconds": 4}}),
        )
    };

    let first = report_of(rotator.handle(staged(ID_1)).await?);
    assert_eq!(
        first.results[0].outcome,
        Outcome::Staged,
        "{}",
        reason(&first.results[0])
    );
    assert_eq!(
        w.value(&format!("{name}:current")).await?,
        "OLD-signing-key-0001"
    );
    let new_key = w.value(&format!("{name}:pending")).await?;

    let mut signed_with: Vec<String> = Vec::new();
    let mut rejected = 0;
    let mut promoted_at = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut message = 0u32;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotation did not finish"
        );
        message += 1;
        let body = format!("event {message}");
        let key = through_extension(&signer, name, "current")
            .await?
            .context("the signer reads current")?;
        let signature = hmac_sha256(key.as_bytes(), body.as_bytes());
        let keyring = keyring_through_extension(&verifier, name).await?;
        if !keyring
            .iter()
            .any(|k| hmac_sha256(k.as_bytes(), body.as_bytes()) == signature)
        {
            rejected += 1;
        }
        if signed_with.last() != Some(&key) {
            signed_with.push(key.clone());
        }
        if promoted_at.is_none() {
            let report = report_of(rotator.handle(staged(ID_2)).await?);
            match report.results[0].outcome {
                Outcome::Unchanged => assert!(reason(&report.results[0]).contains("pending until")),
                Outcome::Promoted => promoted_at = Some(tokio::time::Instant::now()),
                other => panic!("{other:?}: {}", reason(&report.results[0])),
            }
        } else if key == new_key
            && promoted_at.is_some_and(|t| t.elapsed() > Duration::from_secs(3))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rejected, 0, "signatures rejected across the rotation");
    assert!(
        verifier_proxy.calls("GetParameters") >= 2,
        "the verifier's keyring was filled by GetParameters, again after the TTL: {:?}",
        verifier_proxy.call_counts()
    );
    assert_eq!(
        signed_with,
        ["OLD-signing-key-0001".to_owned(), new_key.clone()],
        "the signer moved from the old key to the new one"
    );
    let labels = w.labels(name).await?;
    assert_eq!(labels.get("current"), Some(&2), "{labels:?}");
    assert_eq!(labels.get("previous"), Some(&1), "{labels:?}");
    assert_eq!(labels.get("pending"), None, "{labels:?}");
    Ok(())
}
