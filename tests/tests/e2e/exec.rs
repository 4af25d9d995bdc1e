//! End-to-end tests for references (issue 7): the exec wrapper `lockbox-exec` starting a
//! sample function's runtime (a small shell script) next to the real `lockbox` extension
//! under the Lambda sandbox, and files rendered by the extension, all against moto behind
//! the counting proxy.
//!
//! The runtime is started as Lambda starts it: after the extension registered, while the
//! extension's own Init (prefetch, render) may still be going on, with the same
//! environment, through the wrapper (`AWS_LAMBDA_EXEC_WRAPPER`).

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use aws_sdk_ssm::types::ParameterType;
use lockbox_tests::bins::{lockbox_exec_bin, target_dir};
use lockbox_tests::sandbox::{ErrorReport, EventKind, Lifecycle};
use lockbox_tests::{random_hex, start_lockbox_behind, Moto, Proxy, Sandbox, INIT_TIMEOUT};
use tokio::time::Instant;

/// Bound for lifecycle steps, the runtime and polls.
const WAIT: Duration = Duration::from_secs(10);
/// Pause between polls of a condition that needs time to become true (a TTL passing).
const POLL: Duration = Duration::from_millis(100);

/// The sample function's runtime: records its pid (to show the wrapper exec'd into it),
/// its arguments and its environment, NUL-separated, into `$LOCKBOX_TEST_OUT`.
const RUNTIME: &str = r#"
echo $$ > "$LOCKBOX_TEST_OUT/pid"
printf '%s\0' "$0" "$@" > "$LOCKBOX_TEST_OUT/args"
env -0 > "$LOCKBOX_TEST_OUT/env"
if [ -n "$RENDERED" ]; then cp "$RENDERED" "$LOCKBOX_TEST_OUT/rendered"; fi
"#;

/// A fresh directory under the target directory, removed when dropped (kept if the test
/// failed, for the post-mortem).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> anyhow::Result<Self> {
        let dir = target_dir()
            .join("lockbox-tests")
            .join(format!("{name}-{}", random_hex(12)));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(std::fs::canonicalize(dir)?))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Starts the extension behind a counting proxy and waits until it registered (not until
/// its Init is over: Lambda starts the runtime as soon as extensions registered).
async fn start(moto: &Moto, env: &[(&str, &str)]) -> anyhow::Result<(Sandbox, Proxy)> {
    let proxy = Proxy::start(&moto.endpoint()).await?;
    let (sandbox, _client) = start_lockbox_behind(&proxy, env).await?;
    sandbox.wait_registered(INIT_TIMEOUT).await?;
    Ok((sandbox, proxy))
}

/// Runs the sample runtime through the wrapper, as Lambda does with
/// `AWS_LAMBDA_EXEC_WRAPPER=/opt/lockbox-exec`, and waits for it to end.
async fn run_function(
    sandbox: &Sandbox,
    out: &Scratch,
    extra_env: &[(OsString, OsString)],
) -> anyhow::Result<(Output, u32)> {
    let mut command = sandbox.runtime_command(lockbox_exec_bin()?);
    command
        .args(["/bin/sh", "-c", RUNTIME, "sample-fn"])
        .args(["arg with spaces", "{{resolve:ssm:/args/stay/as/they/are}}"])
        .env("LOCKBOX_TEST_OUT", &out.0)
        .envs(extra_env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn()?;
    let pid = child.id().unwrap_or_default();
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .map_err(|_| anyhow::anyhow!("the wrapper and runtime did not end within {WAIT:?}"))??;
    Ok((output, pid))
}

/// What the runtime recorded: its environment, byte for byte.
fn runtime_env(out: &Scratch) -> anyhow::Result<HashMap<OsString, OsString>> {
    let bytes = std::fs::read(out.path("env"))?;
    Ok(bytes
        .split(|b| *b == 0)
        .filter(|entry| !entry.is_empty())
        .filter_map(|entry| {
            let at = entry.iter().position(|b| *b == b'=')?;
            Some((
                OsString::from_vec(entry[..at].to_vec()),
                OsString::from_vec(entry[at + 1..].to_vec()),
            ))
        })
        .collect())
}

fn var<'e>(env: &'e HashMap<OsString, OsString>, name: &str) -> &'e str {
    env.get(&OsString::from(name))
        .and_then(|v| v.to_str())
        .unwrap_or_else(|| panic!("{name} is not in the runtime's environment"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that none of `values` appears in any line the extension or the wrapper wrote.
fn assert_no_value_logged(sandbox: &Sandbox, wrapper: &Output, values: &[&str]) {
    let wrapper_lines = format!("{}\n{}", text(&wrapper.stdout), text(&wrapper.stderr));
    for value in values {
        for line in sandbox.log_lines() {
            assert!(
                !line.contains(value),
                "a value in the extension's log: {line}"
            );
        }
        assert!(
            !wrapper_lines.contains(value),
            "a value in the wrapper's output: {wrapper_lines}"
        );
    }
}

/// A value that cannot appear anywhere by chance.
fn secret_value(label: &str) -> String {
    format!("{label}-{}", random_hex(16))
}

/// Seeds the SecureString `name` with a fresh [`secret_value`] and returns the value.
async fn seed_secure(moto: &Moto, name: &str, label: &str) -> anyhow::Result<String> {
    let value = secret_value(label);
    moto.put_param(name, &value, ParameterType::SecureString, None)
        .await?;
    Ok(value)
}

/// A render set-up in a scratch directory: a template, and a render root beside it.
struct Render {
    /// Holds the directory for as long as the test runs.
    _work: Scratch,
    /// `LOCKBOX_RENDER_ROOT`.
    root: PathBuf,
    /// Where the rendered file goes: `dest` under the root.
    dest: PathBuf,
    /// `LOCKBOX_RENDER`: `TEMPLATE:DEST`.
    spec: String,
}

impl Render {
    /// Writes `template` as `template_name` into a fresh scratch directory `name`, with the
    /// rendered file to go to `dest` under the root.
    fn new(name: &str, template_name: &str, template: &str, dest: &str) -> anyhow::Result<Self> {
        let work = Scratch::new(name)?;
        let root = work.path("tmp");
        std::fs::create_dir_all(&root)?;
        let template_path = work.path(template_name);
        std::fs::write(&template_path, template)?;
        let dest = root.join(dest);
        let spec = format!("{}:{}", template_path.display(), dest.display());
        Ok(Self {
            _work: work,
            root,
            dest,
            spec,
        })
    }

    /// The root as text, for the environment.
    fn root_text(&self) -> String {
        self.root.display().to_string()
    }
}

/// Waits for the extension to exit in Init and returns the one init error it posted,
/// asserting its type.
async fn the_init_error(sandbox: &Sandbox, error_type: &str) -> anyhow::Result<ErrorReport> {
    sandbox.wait_exit(INIT_TIMEOUT).await?;
    let mut reports = sandbox.init_errors();
    assert_eq!(reports.len(), 1, "{}", sandbox.report());
    assert_eq!(reports[0].error_type, error_type);
    Ok(reports.remove(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_started_through_the_wrapper_sees_resolved_variables_and_untouched_plain_ones(
) -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let password = seed_secure(&moto, "/app/db/password", "pw").await?;
    let host = secret_value("host");
    let connection = format!(
        "DefaultEndpointsProtocol=https;AccountKey={}",
        random_hex(24)
    );
    moto.put_param("/app/db/host", &host, ParameterType::String, None)
        .await?;
    let azure = serde_json::json!({"ConnectionString": connection, "Other": "unused"});
    moto.create_secret("dev/azure", &azure.to_string()).await?;

    let plain = "plain {{not a reference}} ${HOME} with  spaces ";
    let (sandbox, _proxy) = start(
        &moto,
        &[
            ("LOCKBOX_PREFETCH", "ssm:/app/db/password,secret:dev/azure"),
            ("DB_PASSWORD", "{{resolve:ssm-secure:/app/db/password}}"),
            ("DB_HOST", "{{resolve:ssm:/app/db/host}}"),
            (
                "AZURE_STORAGE_CONNECTION_STRING",
                "{{resolve:secretsmanager:dev/azure:SecretString:ConnectionString}}",
            ),
            (
                "DATABASE_URL",
                "postgres://app:{{resolve:ssm-secure:/app/db/password}}@{{ssm:/app/db/host}}:5432/app",
            ),
            ("PLAIN", plain),
        ],
    )
    .await?;
    let out = Scratch::new("exec")?;
    let not_utf8 = OsString::from_vec(b"\xff\xfe{{x}}\x01".to_vec());
    let (output, wrapper_pid) = run_function(
        &sandbox,
        &out,
        &[(OsString::from("NOT_UTF8"), not_utf8.clone())],
    )
    .await?;
    assert!(
        output.status.success(),
        "wrapper failed: {}\n{}",
        text(&output.stderr),
        sandbox.report()
    );

    let env = runtime_env(&out)?;
    assert_eq!(var(&env, "DB_PASSWORD"), password);
    assert_eq!(var(&env, "DB_HOST"), host);
    assert_eq!(var(&env, "AZURE_STORAGE_CONNECTION_STRING"), connection);
    assert_eq!(
        var(&env, "DATABASE_URL"),
        format!("postgres://app:{password}@{host}:5432/app")
    );
    assert_eq!(var(&env, "PLAIN"), plain);
    assert_eq!(env.get(&OsString::from("NOT_UTF8")), Some(&not_utf8));
    // Lambda's own variables pass through too.
    assert_eq!(var(&env, "AWS_LAMBDA_FUNCTION_NAME"), "sandbox-fn");

    // The runtime got its arguments unchanged, and is the wrapper's process: nothing of
    // the wrapper stayed behind.
    let args = std::fs::read(out.path("args"))?;
    let args: Vec<&[u8]> = args.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
    assert_eq!(
        args,
        vec![
            b"sample-fn".as_slice(),
            b"arg with spaces",
            b"{{resolve:ssm:/args/stay/as/they/are}}"
        ]
    );
    let runtime_pid: u32 = std::fs::read_to_string(out.path("pid"))?.trim().parse()?;
    assert_eq!(runtime_pid, wrapper_pid);

    let stderr = text(&output.stderr);
    assert!(stderr.contains("resolved the environment"), "{stderr}");
    assert_no_value_logged(&sandbox, &output, &[&password, &host, &connection]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_references_cost_one_batch_call_per_group() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let mut env: Vec<(String, String)> = Vec::new();
    let mut expected = Vec::new();
    // 12 String parameters (two GetParameters of at most 10), 4 SecureStrings (one
    // GetParameters with decryption), 4 secrets (one BatchGetSecretValue): 20 references.
    for i in 0..12 {
        let value = secret_value("str");
        moto.put_param(&format!("/many/s{i}"), &value, ParameterType::String, None)
            .await?;
        env.push((format!("S{i}"), format!("{{{{resolve:ssm:/many/s{i}}}}}")));
        expected.push((format!("S{i}"), value));
    }
    for i in 0..4 {
        let value = seed_secure(&moto, &format!("/many/p{i}"), "sec").await?;
        env.push((
            format!("P{i}"),
            format!("{{{{resolve:ssm-secure:/many/p{i}}}}}"),
        ));
        expected.push((format!("P{i}"), value));
    }
    for i in 0..4 {
        let value = secret_value("key");
        let secret = serde_json::json!({"key": value, "other": "x"});
        moto.create_secret(&format!("many/k{i}"), &secret.to_string())
            .await?;
        env.push((
            format!("K{i}"),
            format!("{{{{resolve:secretsmanager:many/k{i}:SecretString:key}}}}"),
        ));
        expected.push((format!("K{i}"), value));
    }
    assert_eq!(expected.len(), 20);
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (sandbox, proxy) = start(&moto, &env_refs).await?;
    sandbox.wait_init_done(INIT_TIMEOUT).await?;
    // No prefetch: nothing was read during Init.
    assert_eq!(proxy.total(), 0, "{:?}", proxy.call_counts());

    let out = Scratch::new("batched")?;
    let (output, _) = run_function(&sandbox, &out, &[]).await?;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let seen = runtime_env(&out)?;
    for (name, value) in &expected {
        assert_eq!(var(&seen, name), value);
    }
    assert_eq!(proxy.calls("GetParameters"), 3, "{:?}", proxy.call_counts());
    assert_eq!(
        proxy.calls("BatchGetSecretValue"),
        1,
        "{:?}",
        proxy.call_counts()
    );
    assert_eq!(proxy.total(), 4, "{:?}", proxy.call_counts());
    let values: Vec<&str> = expected.iter().map(|(_, v)| v.as_str()).collect();
    assert_no_value_logged(&sandbox, &output, &values);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_reference_stops_init_naming_the_variable_and_the_reference() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let good = seed_secure(&moto, "/app/good", "good").await?;
    let (sandbox, _proxy) = start(
        &moto,
        &[
            ("GOOD", "{{resolve:ssm-secure:/app/good}}"),
            ("MISSING_PARAM", "{{resolve:ssm:/app/does-not-exist}}"),
            ("MALFORMED", "x{{resolve:ssm:/app/good:latest}}"),
            ("CIPHERTEXT", "{{resolve:ssm:/app/good}}"),
        ],
    )
    .await?;
    let out = Scratch::new("bad-ref")?;
    let (output, _) = run_function(&sandbox, &out, &[]).await?;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(
        !out.path("env").exists(),
        "the runtime must not have started"
    );

    let stderr = text(&output.stderr);
    for expected in [
        "3 environment variables could not be resolved",
        r#"MISSING_PARAM: reference \"{{resolve:ssm:/app/does-not-exist}}\": the parameter does not exist"#,
        r#"MALFORMED: reference \"{{resolve:ssm:/app/good:latest}}\": version \"latest\""#,
        r#"CIPHERTEXT: reference \"{{resolve:ssm:/app/good}}\": the parameter is a SecureString"#,
    ] {
        assert!(stderr.contains(expected), "{expected}\nnot in\n{stderr}");
    }
    assert!(!stderr.contains("GOOD:"), "{stderr}");

    // Lambda hears of it as the runtime's init error, with the same message.
    let reports = sandbox.init_errors();
    assert_eq!(reports.len(), 1, "{}", sandbox.report());
    assert_eq!(reports[0].error_type, "Lockbox.ExecFailed");
    let body: serde_json::Value = serde_json::from_str(&reports[0].body)?;
    let message = body["errorMessage"].as_str().unwrap_or_default();
    assert!(
        message.contains("MISSING_PARAM") && message.contains("MALFORMED"),
        "{message}"
    );
    assert_no_value_logged(&sandbox, &output, &[&good]);
    for report in &reports {
        assert!(!report.body.contains(&good));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn on_error_keep_leaves_the_bad_variable_and_starts_the_runtime() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let good = seed_secure(&moto, "/app/good", "good").await?;
    let (sandbox, _proxy) = start(
        &moto,
        &[
            ("LOCKBOX_EXEC_ON_ERROR", "keep"),
            ("GOOD", "{{resolve:ssm-secure:/app/good}}"),
            (
                "MISSING_SECRET",
                "{{resolve:secretsmanager:nope:SecretString:k}}",
            ),
        ],
    )
    .await?;
    let out = Scratch::new("keep")?;
    let (output, _) = run_function(&sandbox, &out, &[]).await?;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let env = runtime_env(&out)?;
    assert_eq!(var(&env, "GOOD"), good);
    assert_eq!(
        var(&env, "MISSING_SECRET"),
        "{{resolve:secretsmanager:nope:SecretString:k}}"
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("MISSING_SECRET") && stderr.contains("ResourceNotFoundException"),
        "{stderr}"
    );
    assert!(sandbox.init_errors().is_empty());
    assert_no_value_logged(&sandbox, &output, &[&good]);
    Ok(())
}

/// Polls `check` with a deadline, delivering an INVOKE before each look (the extension
/// only works during invokes).
async fn invoke_until(
    sandbox: &Sandbox,
    what: &str,
    mut check: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        sandbox.invoke(WAIT).await?;
        if check() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what} not seen within {WAIT:?}\n{}",
            sandbox.report()
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rendered_file_has_the_values_mode_0600_and_follows_a_change() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let password = seed_secure(&moto, "/app/db/password", "pw").await?;
    let connection = secret_value("conn");
    moto.put_param("/app/db/host", "db.internal", ParameterType::String, None)
        .await?;
    let azure = serde_json::json!({"ConnectionString": connection});
    moto.create_secret("dev/azure", &azure.to_string()).await?;

    let render = Render::new(
        "render",
        "app.yaml.tmpl",
        "database:\n  host: {{resolve:ssm:/app/db/host}}\n  password: {{resolve:ssm-secure:/app/db/password}}\n\
         azure: {{resolve:secretsmanager:dev/azure:SecretString:ConnectionString}}\n\
         greeting: Hello {{ name }}\n",
        "app/app.yaml",
    )?;
    let dest = &render.dest;
    let dest_text = dest.display().to_string();
    let root_text = render.root_text();
    let (sandbox, _proxy) = start(
        &moto,
        &[
            ("LOCKBOX_PREFETCH", "ssm:/app/db/password,secret:dev/azure"),
            ("LOCKBOX_RENDER", &render.spec),
            ("LOCKBOX_RENDER_ROOT", &root_text),
            ("SSM_PARAMETER_STORE_TTL", "1"),
            ("SECRETS_MANAGER_TTL", "1"),
            ("RENDERED", &dest_text),
        ],
    )
    .await?;

    // The runtime, started through the wrapper while the extension is still in Init, finds
    // the file complete: the wrapper waits for it.
    let out = Scratch::new("render-out")?;
    let (output, _) = run_function(&sandbox, &out, &[]).await?;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let expected = format!(
        "database:\n  host: db.internal\n  password: {password}\n\
         azure: {connection}\n\
         greeting: Hello {{{{ name }}}}\n"
    );
    assert_eq!(std::fs::read_to_string(out.path("rendered"))?, expected);
    sandbox.wait_init_done(INIT_TIMEOUT).await?;
    assert_eq!(std::fs::read_to_string(dest)?, expected);
    let mode = std::fs::metadata(dest)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");

    // A change in AWS reaches the file after the TTL, on an INVOKE.
    let rotated = seed_secure(&moto, "/app/db/password", "rotated").await?;
    let rotated_connection = secret_value("conn2");
    moto.put_secret_value(
        "dev/azure",
        &serde_json::json!({"ConnectionString": rotated_connection}).to_string(),
    )
    .await?;
    let updated = format!(
        "database:\n  host: db.internal\n  password: {rotated}\n\
         azure: {rotated_connection}\n\
         greeting: Hello {{{{ name }}}}\n"
    );
    invoke_until(&sandbox, "the re-rendered file", || {
        std::fs::read_to_string(dest).is_ok_and(|now| now == updated)
    })
    .await?;
    let mode = std::fs::metadata(dest)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
    // Written whole, through a temporary file that is gone.
    let leftovers: Vec<_> = std::fs::read_dir(dest.parent().unwrap_or(Path::new("/")))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().as_bytes().ends_with(b".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    sandbox
        .wait_log_line("rendered files updated", Duration::from_secs(5))
        .await?;
    assert_no_value_logged(
        &sandbox,
        &output,
        &[&password, &connection, &rotated, &rotated_connection],
    );
    Ok(())
}

/// The same references read the same values in an environment variable (the wrapper,
/// over the API) and in a rendered file (the extension, through its cache): an ARN is read
/// in its own region, through the role configured for its account; a plain name in the
/// function's own account and region. Each name holds a different value in each place, so
/// a reference read in the wrong one shows.
#[tokio::test(flavor = "multi_thread")]
async fn references_resolve_through_the_arns_account_and_region_in_files_and_variables_alike(
) -> anyhow::Result<()> {
    const ROLE: &str = "arn:aws:iam::222222222222:role/shared-reader";
    let moto = Moto::start().await?;
    let home = moto.sdk_config_as(None, None).await;
    let as_role = moto.sdk_config_as(Some(ROLE), None).await;
    let in_eu = moto.sdk_config_as(None, Some("eu-west-1")).await;
    let put = |sdk: aws_config::SdkConfig, name: &'static str, value: String| async move {
        let ssm = aws_sdk_ssm::Client::new(&sdk);
        ssm.put_parameter()
            .name(name)
            .value(&value)
            .r#type(ParameterType::SecureString)
            .send()
            .await?;
        let read = ssm.get_parameter().name(name).send().await?;
        anyhow::Ok(
            read.parameter()
                .and_then(|p| p.arn())
                .unwrap_or_default()
                .to_owned(),
        )
    };
    let role_value = secret_value("role");
    let eu_value = secret_value("eu");
    let role_arn = put(as_role.clone(), "/shared/db", role_value.clone()).await?;
    put(home.clone(), "/shared/db", secret_value("home-shared")).await?;
    let eu_arn = put(in_eu, "/regional/db", eu_value.clone()).await?;
    put(home.clone(), "/regional/db", secret_value("home-regional")).await?;
    let home_value = secret_value("home");
    put(home.clone(), "/app/own", home_value.clone()).await?;
    let role_secret = secret_value("role-secret");
    let role_secret_arn = aws_sdk_secretsmanager::Client::new(&as_role)
        .create_secret()
        .name("shared/api")
        .secret_string(serde_json::json!({"key": role_secret}).to_string())
        .send()
        .await?
        .arn()
        .unwrap_or_default()
        .to_owned();
    moto.create_secret("shared/api", r#"{"key":"home-secret"}"#)
        .await?;
    assert!(role_arn.contains(":222222222222:"), "{role_arn}");
    assert!(eu_arn.contains(":eu-west-1:"), "{eu_arn}");

    let references = [
        (
            "FROM_ROLE",
            format!("{{{{resolve:ssm-secure:{role_arn}}}}}"),
        ),
        ("FROM_EU", format!("{{{{resolve:ssm-secure:{eu_arn}}}}}")),
        (
            "ROLE_SECRET",
            format!("{{{{resolve:secretsmanager:{role_secret_arn}:SecretString:key}}}}"),
        ),
        ("OWN", "{{resolve:ssm-secure:/app/own}}".to_owned()),
    ];
    let template: String = references
        .iter()
        .map(|(name, reference)| format!("{name}={reference}\n"))
        .collect();
    let expected = format!(
        "FROM_ROLE={role_value}\nFROM_EU={eu_value}\nROLE_SECRET={role_secret}\nOWN={home_value}\n"
    );
    let render = Render::new("render-roles", "app.env.tmpl", &template, "app.env")?;
    let root_text = render.root_text();
    let account_roles = format!("222222222222={ROLE}");
    let mut env: Vec<(&str, &str)> = vec![
        ("LOCKBOX_ACCOUNT_ROLES", &account_roles),
        ("LOCKBOX_RENDER", &render.spec),
        ("LOCKBOX_RENDER_ROOT", &root_text),
    ];
    env.extend(
        references
            .iter()
            .map(|(name, reference)| (*name, reference.as_str())),
    );
    let (sandbox, _proxy) = start(&moto, &env).await?;

    let out = Scratch::new("render-roles-out")?;
    let (output, _) = run_function(&sandbox, &out, &[]).await?;
    assert!(
        output.status.success(),
        "wrapper failed: {}\n{}",
        text(&output.stderr),
        sandbox.report()
    );
    let variables = runtime_env(&out)?;
    let from_variables: String = references
        .iter()
        .map(|(name, _)| format!("{name}={}\n", var(&variables, name)))
        .collect();
    assert_eq!(from_variables, expected, "the wrapper's values");
    sandbox.wait_init_done(INIT_TIMEOUT).await?;
    assert_eq!(
        std::fs::read_to_string(&render.dest)?,
        expected,
        "the rendered file\n{}",
        sandbox.report()
    );
    assert_no_value_logged(
        &sandbox,
        &output,
        &[&role_value, &eu_value, &role_secret, &home_value],
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_template_with_an_unresolvable_reference_is_reported_and_not_written(
) -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let password = seed_secure(&moto, "/app/db/password", "pw").await?;
    let render = Render::new(
        "render-bad",
        "bad.tmpl",
        "password: {{resolve:ssm-secure:/app/db/password}}\nmissing: {{resolve:ssm:/app/missing}}\n",
        "bad.conf",
    )?;
    let root_text = render.root_text();
    let (sandbox, _proxy) = start(
        &moto,
        &[
            ("LOCKBOX_RENDER", &render.spec),
            ("LOCKBOX_RENDER_ROOT", &root_text),
            ("LOCKBOX_PREFETCH_REQUIRED", "true"),
        ],
    )
    .await?;
    let report = the_init_error(&sandbox, "Extension.RenderFailed").await?;
    assert!(
        report.body.contains("{{resolve:ssm:/app/missing}}") && report.body.contains("bad.tmpl"),
        "{}",
        report.body
    );
    assert!(
        !render.dest.exists(),
        "a file with a missing value must not be written"
    );
    assert!(
        std::fs::read_dir(&render.root)?.next().is_none(),
        "nothing left in the root"
    );
    for line in sandbox.log_lines() {
        assert!(!line.contains(&password), "{line}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destination_outside_the_render_root_is_a_config_error() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let (sandbox, _proxy) = start(
        &moto,
        &[("LOCKBOX_RENDER", "/var/task/app.tmpl:/etc/app.conf")],
    )
    .await?;
    let report = the_init_error(&sandbox, "Extension.ConfigInvalid").await?;
    assert!(
        report.body.contains("LOCKBOX_RENDER")
            && report.body.contains("/var/task/app.tmpl:/etc/app.conf"),
        "{}",
        report.body
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn on_managed_instances_files_and_cached_values_follow_a_change_with_no_invoke(
) -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    moto.put_param("/mi/db/host", "db-1.internal", ParameterType::String, None)
        .await?;
    let render = Render::new(
        "render-mi",
        "app.tmpl",
        "host={{resolve:ssm:/mi/db/host}}\n",
        "app.conf",
    )?;
    let root_text = render.root_text();
    let proxy = Proxy::start(&moto.endpoint()).await?;
    let (sandbox, client) = start_lockbox_behind(
        &proxy,
        &[
            ("AWS_LAMBDA_INITIALIZATION_TYPE", "lambda-managed-instances"),
            ("LOCKBOX_PREFETCH", "ssm:/mi/db/host"),
            ("LOCKBOX_RENDER", &render.spec),
            ("LOCKBOX_RENDER_ROOT", &root_text),
            ("SSM_PARAMETER_STORE_TTL", "4"),
            ("LOCKBOX_REFRESH_AHEAD", "0.5"),
        ],
    )
    .await?;
    // SHUTDOWN alone: the sandbox refuses INVOKE here, as Lambda does.
    let registration = sandbox.wait_registered(INIT_TIMEOUT).await?;
    assert_eq!(registration.events, ["SHUTDOWN"]);
    sandbox.wait_init_done(INIT_TIMEOUT).await?;
    assert_eq!(
        std::fs::read_to_string(&render.dest)?,
        "host=db-1.internal\n"
    );
    // Function code reads it, so it is worth refreshing.
    let read = client.get_parameter("/mi/db/host", &[]).await?;
    assert_eq!(read.header("x-lockbox-cache"), Some("hit"));

    moto.put_param("/mi/db/host", "db-2.internal", ParameterType::String, None)
        .await?;
    let deadline = Instant::now() + WAIT;
    while std::fs::read_to_string(&render.dest)? != "host=db-2.internal\n" {
        assert!(
            Instant::now() < deadline,
            "the file was not rendered again\n{}",
            sandbox.report()
        );
        tokio::time::sleep(POLL).await;
    }
    // The background refresh put the new value in the cache: a hit, not a miss.
    let read = client.get_parameter("/mi/db/host", &[]).await?;
    assert!(read.body.contains("db-2.internal"), "{}", read.body);
    assert_eq!(read.header("x-lockbox-cache"), Some("hit"));
    assert!(
        !sandbox
            .timeline()
            .iter()
            .any(|(_, step)| *step == Lifecycle::EventDelivered(EventKind::Invoke)),
        "an INVOKE was delivered"
    );
    let (status, _) = sandbox.shutdown(WAIT).await?;
    assert!(status.success(), "{status}\n{}", sandbox.report());
    Ok(())
}
