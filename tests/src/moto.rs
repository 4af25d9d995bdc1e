//! The local AWS: a moto server per test, on its own loopback port.
//!
//! A test has a server to itself for as long as it holds its [`Moto`], so tests that run in
//! parallel never see each other's parameters, secrets or keys. Starting moto and its first
//! SSM, KMS and Secrets Manager calls cost about 1.6 s of CPU, so a server a test is done
//! with is kept for the next test in the same process, and cleared with moto's
//! `POST /moto-api/reset` when that test takes it. A server whose test failed is stopped
//! instead, and its log kept. A server's log, `target/lockbox-tests/moto-PORT.log`, holds
//! the requests of the test that last used it.
//!
//! Kept servers outlive every test but not the process: each one runs under a small shell
//! that stops it when its standard input, a pipe from this process, closes.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use aws_sdk_ssm::config::{Credentials, SharedCredentialsProvider};
use aws_sdk_ssm::types::ParameterType;
use tokio::time::Instant;

use crate::bins::{free_port, target_dir, workspace_root};

/// How long moto may take to answer its first request (it usually needs under a second).
const READY_DEADLINE: Duration = Duration::from_secs(20);
/// How long one request to moto's own API (a readiness probe, a reset) may take.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Ports are picked before moto binds them; retry a few times if another process wins.
const START_ATTEMPTS: usize = 3;
/// Runs moto (`$0`, with its arguments) and stops it once standard input reaches its end,
/// which happens when this process exits, however it exits. The shell ends when moto does,
/// with its status, so a moto that fails to start is seen at once. (A background command's
/// standard input is /dev/null unless redirected, hence the copy on descriptor 3.)
const WATCHED: &str = r#"exec 3<&0
"$0" "$@" </dev/null 3<&- & moto=$!
(cat <&3 >/dev/null; kill "$moto" 2>/dev/null) &
exec 3<&-
wait "$moto""#;

/// Servers no test is using: started, warm, not yet cleared.
static IDLE: Mutex<Vec<Server>> = Mutex::new(Vec::new());

/// The region every test uses.
pub const REGION: &str = "us-east-1";
/// moto's fixed account id, which appears in every ARN it returns.
pub const ACCOUNT_ID: &str = "123456789012";

/// A moto server for one test; when dropped it is kept for the next test (or stopped, if
/// the test failed).
#[derive(Debug)]
pub struct Moto {
    config: SdkConfig,
    http: reqwest::Client,
    // Always Some until dropped.
    server: Option<Server>,
}

/// A moto process, stopped when dropped.
#[derive(Debug)]
struct Server {
    port: u16,
    log_path: PathBuf,
    child: Child,
    // Closing it stops moto (see `WATCHED`).
    stdin: Option<ChildStdin>,
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    /// A moto server for this test: a kept one, cleared, else a new one on a free loopback
    /// port, once it answers.
    ///
    /// The executable is `LOCKBOX_MOTO_SERVER`, else `<workspace>/.venv/bin/moto_server`.
    pub async fn start() -> anyhow::Result<Moto> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(API_TIMEOUT)
            .build()?;
        let server = match Self::take_idle(&http).await {
            Some(server) => server,
            None => Self::spawn(&http).await?,
        };
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(endpoint(server.port))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "static"))
            .load()
            .await;
        Ok(Moto {
            config,
            http,
            server: Some(server),
        })
    }

    /// A kept server, cleared of the last test's state and log. One that does not answer
    /// the reset (its test may have stopped it) is dropped, and the next one tried.
    async fn take_idle(http: &reqwest::Client) -> Option<Server> {
        loop {
            let server = IDLE.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            let cleared = http
                .post(format!("{}/moto-api/reset", endpoint(server.port)))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if cleared {
                // The file is opened for appending, so moto goes on writing at its new end.
                if let Ok(log) = OpenOptions::new().write(true).open(&server.log_path) {
                    let _ = log.set_len(0);
                }
                return Some(server);
            }
        }
    }

    async fn spawn(http: &reqwest::Client) -> anyhow::Result<Server> {
        let exe = moto_server_path();
        if !exe.is_file() {
            bail!(
                "moto_server not found at {}: run `make test` (it prepares .venv)",
                exe.display()
            );
        }
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match Self::spawn_on(&exe, free_port()?, http).await {
                Ok(server) => return Ok(server),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("moto did not start")))
    }

    async fn spawn_on(exe: &Path, port: u16, http: &reqwest::Client) -> anyhow::Result<Server> {
        // moto logs every request; a file instead of a pipe means nobody has to drain it.
        let log_dir = target_dir().join("lockbox-tests");
        std::fs::create_dir_all(&log_dir)?;
        let log_path = log_dir.join(format!("moto-{port}.log"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        log.set_len(0)?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHED)
            .arg(exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} under sh", exe.display()))?;
        let stdin = child.stdin.take();
        let mut server = Server {
            port,
            log_path,
            child,
            stdin,
        };

        let endpoint = endpoint(port);
        let deadline = Instant::now() + READY_DEADLINE;
        // werkzeug logs this line once moto itself has bound the port. An answer alone is not
        // enough: between `free_port` and moto's bind another test's process (its moto or
        // proxy) can take the port, and this test would then silently share that test's
        // state (seen as "alias already exists" in a test that had just started).
        let bound_line = format!("Running on {endpoint}\n");
        loop {
            let bound = std::fs::read_to_string(&server.log_path)
                .is_ok_and(|log| log.contains(&bound_line));
            // Any HTTP answer means the server is up; moto's API root needs no signature.
            if bound
                && http
                    .get(format!("{endpoint}/moto-api/data.json"))
                    .send()
                    .await
                    .is_ok()
            {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "moto_server exited with {status} before answering on port {port}; log:\n{}",
                    tail(&server.log_path)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "moto_server did not answer on port {port} within {READY_DEADLINE:?}; log:\n{}",
                    tail(&server.log_path)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Stops the server now, instead of keeping it for another test (a program that says
    /// it has stopped everything, as the demo does).
    pub fn stop(mut self) {
        drop(self.server.take());
    }

    fn server(&self) -> &Server {
        self.server
            .as_ref()
            .expect("a Moto holds its server until dropped")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        endpoint(self.port())
    }

    /// The loopback port moto listens on.
    pub fn port(&self) -> u16 {
        self.server().port
    }

    /// Where moto's own log goes (useful when a test fails).
    pub fn log_path(&self) -> &Path {
        &self.server().log_path
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
        let Some(server) = self.server.take() else {
            return;
        };
        // A failed test's server is stopped with its log kept, for the post-mortem; any other
        // is kept for the next test.
        if std::thread::panicking() {
            eprintln!("moto's log for this test: {}", server.log_path.display());
            return;
        }
        IDLE.lock().unwrap_or_else(|e| e.into_inner()).push(server);
    }
}

fn endpoint(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Held by each test here: the only ones in this binary that start moto, so no test takes
    /// the kept server between another's drop and start.
    static SERIAL: Mutex<()> = Mutex::new(());
    /// How moto's log shows an SSM call (its operation is in a header, not the line).
    const SSM_CALL: &str = "\"POST / HTTP/1.1\" 200";

    #[test]
    fn a_kept_server_is_cleared_before_the_next_test_has_it() -> anyhow::Result<()> {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        tokio::runtime::Runtime::new()?.block_on(async {
            let first = Moto::start().await?;
            first
                .put_param("/kept/a", "one", ParameterType::String, None)
                .await?;
            let port = first.port();
            let log = first.log_path().to_owned();
            drop(first);
            assert!(
                std::fs::read_to_string(&log)?.contains(SSM_CALL),
                "the first test's requests are in the log"
            );

            let second = Moto::start().await?;
            assert_eq!(second.port(), port, "the kept server is taken again");
            assert!(
                !std::fs::read_to_string(&log)?.contains(SSM_CALL),
                "the log starts again for the next test"
            );
            let gone = second.ssm().get_parameter().name("/kept/a").send().await;
            assert!(gone.is_err(), "the last test's parameter is cleared");
            Ok(())
        })
    }

    #[test]
    fn a_failed_tests_server_is_stopped_and_its_log_kept() -> anyhow::Result<()> {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (port, log) = *std::thread::spawn(|| {
            let runtime = tokio::runtime::Runtime::new().expect("a runtime");
            runtime.block_on(async {
                let moto = Moto::start().await.expect("moto starts");
                let at = (moto.port(), moto.log_path().to_owned());
                std::panic::panic_any(at);
            })
        })
        .join()
        .expect_err("the test panicked")
        .downcast::<(u16, PathBuf)>()
        .expect("the port and log it panicked with");
        assert!(log.is_file(), "the failed test's log is kept");
        assert!(
            IDLE.lock().unwrap().iter().all(|s| s.port != port),
            "the failed test's server is not kept"
        );
        assert_stopped(port);
        Ok(())
    }

    #[test]
    fn a_stopped_server_is_not_kept() -> anyhow::Result<()> {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let port = tokio::runtime::Runtime::new()?.block_on(async {
            let moto = Moto::start().await?;
            let port = moto.port();
            moto.stop();
            anyhow::Ok(port)
        })?;
        assert!(
            IDLE.lock().unwrap().iter().all(|s| s.port != port),
            "a stopped server is not kept"
        );
        assert_stopped(port);
        Ok(())
    }

    /// Stopped, not only set aside: nothing answers on `port` any more.
    fn assert_stopped(port: u16) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "moto still answers on {port}"
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}
