//! The local AWS: one moto server per test, on its own loopback port.
//!
//! Each test gets a fresh process rather than a shared server plus resets, so tests that run
//! in parallel never see each other's parameters, secrets or keys. moto's own log goes to
//! `target/lockbox-tests/moto-PORT.log` and is kept only when the test panics.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use aws_sdk_ssm::config::{Credentials, SharedCredentialsProvider};
use aws_sdk_ssm::types::ParameterType;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::bins::{free_port, target_dir, workspace_root};

/// How long moto may take to answer its first request (it usually needs under a second).
const READY_DEADLINE: Duration = Duration::from_secs(20);
/// Pause between readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Ports are picked before moto binds them; retry a few times if another process wins.
const START_ATTEMPTS: usize = 3;

/// The region every test uses.
pub const REGION: &str = "us-east-1";
/// moto's fixed account id, which appears in every ARN it returns.
pub const ACCOUNT_ID: &str = "123456789012";

/// A running moto server, stopped when dropped.
#[derive(Debug)]
pub struct Moto {
    port: u16,
    log_path: PathBuf,
    config: SdkConfig,
    http: reqwest::Client,
    // Held for kill_on_drop: dropping the struct stops the server.
    _child: Child,
}

/// What Secrets Manager answered when a secret or one of its versions was written.
#[derive(Debug, Clone)]
pub struct SecretVersion {
    /// The secret's ARN.
    pub arn: String,
    /// The id of the version just written.
    pub version_id: String,
}

impl Moto {
    /// Starts `moto_server` on a free loopback port and waits until it answers.
    ///
    /// The executable is `LOCKBOX_MOTO_SERVER`, else `<workspace>/.venv/bin/moto_server`.
    pub async fn start() -> anyhow::Result<Moto> {
        let exe = moto_server_path();
        if !exe.is_file() {
            bail!(
                "moto_server not found at {}: run `make test` (it prepares .venv)",
                exe.display()
            );
        }
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match Self::start_on(&exe, free_port()?).await {
                Ok(moto) => return Ok(moto),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("moto did not start")))
    }

    async fn start_on(exe: &Path, port: u16) -> anyhow::Result<Moto> {
        // moto logs every request; a file instead of a pipe means nobody has to drain it.
        let log_dir = target_dir().join("lockbox-tests");
        std::fs::create_dir_all(&log_dir)?;
        let log_path = log_dir.join(format!("moto-{port}.log"));
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut child = Command::new(exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;

        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + READY_DEADLINE;
        // werkzeug logs this line once moto itself has bound the port. An answer alone is not
        // enough: between `free_port` and moto's bind another test's process (its moto or
        // proxy) can take the port, and this test would then silently share that test's
        // state (seen as "alias already exists" in a test that had just started).
        let bound_line = format!("Running on {endpoint}\n");
        loop {
            let bound =
                std::fs::read_to_string(&log_path).is_ok_and(|log| log.contains(&bound_line));
            // Any HTTP answer means the server is up; moto's API root needs no signature.
            if bound
                && http
                    .get(format!("{endpoint}/moto-api/data.json"))
                    .send()
                    .await
                    .is_ok()
            {
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "moto_server exited with {status} before answering on port {port}; log:\n{}",
                    tail(&log_path)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "moto_server did not answer on port {port} within {READY_DEADLINE:?}; log:\n{}",
                    tail(&log_path)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }

        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&endpoint)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "static"))
            .load()
            .await;
        Ok(Moto {
            port,
            log_path,
            config,
            http,
            _child: child,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The loopback port moto listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where moto's own log goes (useful when a test fails).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// SDK configuration for moto: us-east-1, dummy static credentials, moto's endpoint.
    pub async fn sdk_config(&self) -> SdkConfig {
        self.config.clone()
    }

    /// [`Moto::sdk_config`] in `region` (else [`REGION`]) and, with `role`, with the
    /// credentials of a session of that role: what the owning account's own tooling would
    /// write and read with. It goes straight to moto, so nothing it does shows in a proxy's
    /// counts.
    pub async fn sdk_config_as(&self, role: Option<&str>, region: Option<&str>) -> SdkConfig {
        let mut base = self.config.to_builder();
        if let Some(region) = region {
            base = base.region(Region::new(region.to_owned()));
        }
        let base = base.build();
        let Some(role) = role else {
            return base;
        };
        let provider = aws_config::sts::AssumeRoleProvider::builder(role)
            .configure(&base)
            .session_name("lockbox-e2e-seed")
            .build()
            .await;
        base.into_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .build()
    }

    /// An SSM client for seeding and checking state.
    pub fn ssm(&self) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.config)
    }

    /// A Secrets Manager client for seeding and checking state.
    pub fn secrets(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.config)
    }

    /// A KMS client for seeding and checking state.
    pub fn kms(&self) -> aws_sdk_kms::Client {
        aws_sdk_kms::Client::new(&self.config)
    }

    /// Clears every resource moto holds (`POST /moto-api/reset`).
    pub async fn reset(&self) -> anyhow::Result<()> {
        let response = self
            .http
            .post(format!("{}/moto-api/reset", self.endpoint()))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("moto reset answered {}", response.status());
        }
        Ok(())
    }

    /// Creates a symmetric customer-managed key with `alias` (with or without the `alias/`
    /// prefix) and returns its key id.
    pub async fn create_cmk(&self, alias: &str) -> anyhow::Result<String> {
        let kms = self.kms();
        let key = kms
            .create_key()
            .key_spec(KeySpec::SymmetricDefault)
            .key_usage(KeyUsageType::EncryptDecrypt)
            .description(format!("lockbox test key {alias}"))
            .send()
            .await
            .context("KMS CreateKey")?;
        let key_id = key
            .key_metadata()
            .map(|m| m.key_id().to_owned())
            .context("CreateKey returned no key metadata")?;
        let alias = if alias.starts_with("alias/") {
            alias.to_owned()
        } else {
            format!("alias/{alias}")
        };
        kms.create_alias()
            .alias_name(alias)
            .target_key_id(&key_id)
            .send()
            .await
            .context("KMS CreateAlias")?;
        Ok(key_id)
    }

    /// Writes (or overwrites) a parameter and returns its new version.
    pub async fn put_param(
        &self,
        name: &str,
        value: &str,
        kind: ParameterType,
        key_id: Option<&str>,
    ) -> anyhow::Result<i64> {
        let out = self
            .ssm()
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(kind)
            .set_key_id(key_id.map(str::to_owned))
            .overwrite(true)
            .send()
            .await
            .with_context(|| format!("SSM PutParameter {name}"))?;
        Ok(out.version())
    }

    /// Attaches `label` to `version` of a parameter.
    pub async fn label_param(&self, name: &str, version: i64, label: &str) -> anyhow::Result<()> {
        let out = self
            .ssm()
            .label_parameter_version()
            .name(name)
            .parameter_version(version)
            .labels(label)
            .send()
            .await
            .with_context(|| format!("SSM LabelParameterVersion {name}:{version} {label}"))?;
        if !out.invalid_labels().is_empty() {
            bail!("moto rejected labels {:?}", out.invalid_labels());
        }
        Ok(())
    }

    /// Creates a secret whose first (AWSCURRENT) version holds `value`.
    pub async fn create_secret(&self, name: &str, value: &str) -> anyhow::Result<SecretVersion> {
        let out = self
            .secrets()
            .create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .with_context(|| format!("Secrets Manager CreateSecret {name}"))?;
        secret_version(out.arn(), out.version_id())
    }

    /// Creates a secret whose first version holds binary data.
    pub async fn create_binary_secret(
        &self,
        name: &str,
        value: &[u8],
    ) -> anyhow::Result<SecretVersion> {
        let out = self
            .secrets()
            .create_secret()
            .name(name)
            .secret_binary(aws_sdk_secretsmanager::primitives::Blob::new(value))
            .send()
            .await
            .with_context(|| format!("Secrets Manager CreateSecret {name} (binary)"))?;
        secret_version(out.arn(), out.version_id())
    }

    /// Writes a new version of a secret; Secrets Manager moves AWSCURRENT to it and
    /// AWSPREVIOUS to the version that was current.
    pub async fn put_secret_value(&self, name: &str, value: &str) -> anyhow::Result<SecretVersion> {
        let out = self
            .secrets()
            .put_secret_value()
            .secret_id(name)
            .secret_string(value)
            .send()
            .await
            .with_context(|| format!("Secrets Manager PutSecretValue {name}"))?;
        secret_version(out.arn(), out.version_id())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // The log only matters when a test failed; keep it then, for the post-mortem.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}

fn secret_version(arn: Option<&str>, version_id: Option<&str>) -> anyhow::Result<SecretVersion> {
    Ok(SecretVersion {
        arn: arn.context("no ARN in the answer")?.to_owned(),
        version_id: version_id.context("no VersionId in the answer")?.to_owned(),
    })
}

fn moto_server_path() -> PathBuf {
    std::env::var_os("LOCKBOX_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/moto_server"))
}

/// The last lines of a log file, for error messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
