//! AWS's Lambda Runtime Interface Emulator as a second Lambda side for the tests: Lambda's
//! own Runtime and Extensions API code, where [`crate::sandbox`] is our reading of it.
//!
//! The emulator starts external extensions only from `/opt/extensions` (a constant in its
//! source). Each run gets a private `/opt`: the emulator runs under `unshare` in a new
//! mount namespace, with a per-test directory bind-mounted over `/opt` that holds the
//! layer's layout (`extensions/lockbox`, `lockbox-exec`). The run also gets a new PID
//! namespace with the emulator as its first process, so when the emulator goes, every
//! process it started goes with it; nothing is left on the machine. That needs root.
//!
//! The function is [`fn_runtime_bin`] (`tests/src/bin/fn-runtime.rs`): it reads from the
//! extension what each invocation's payload names. It is `/opt/bootstrap`, a custom
//! runtime in a layer, because in Managed Instances mode the emulator looks for the
//! bootstrap only in `/var/runtime`, `/var/task` and `/opt`, and starts it in `/var/task`:
//! where the machine has no `/var/task`, the namespace gets an empty one (a small tmpfs
//! over `/var`, seen by the emulator's processes only). [`Rie::invoke`] posts to the emulator's
//! invoke endpoint; [`Rie::stop`] sends the emulator SIGTERM, which is how it shuts the
//! environment down (SHUTDOWN to the extensions).
//!
//! Two modes, chosen as the emulator chooses them: classic (Init on the first invoke, then
//! INVOKE events to extensions) and Lambda Managed Instances (`AWS_LAMBDA_MAX_CONCURRENCY`
//! set: Init at start, concurrent invokes, extensions may register for SHUTDOWN only).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::bins::{free_port, lockbox_bin, lockbox_exec_bin, target_dir, workspace_root};
use crate::client::ExtClient;
use crate::random_hex;

/// The emulator's invoke endpoint.
pub const INVOKE_PATH: &str = "/2015-03-31/functions/function/invocations";
/// How long the emulator may take to listen.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// Bound on one invocation (a classic-mode first invoke includes the whole Init).
const INVOKE_TIMEOUT: Duration = Duration::from_secs(40);
/// Pause between readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long an invoke is asked again while no runtime worker is waiting for it.
const UNAVAILABLE_DEADLINE: Duration = Duration::from_secs(10);

/// Where `make setup` installs the emulator: `LOCKBOX_RIE_BIN`, else
/// `<workspace>/.tools/bin/aws-lambda-rie`. A missing emulator is an error that says why
/// and how to install it, never a skipped test.
pub fn rie_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("LOCKBOX_RIE_BIN") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("LOCKBOX_RIE_BIN={} is not a file", path.display());
        }
        return Ok(path);
    }
    let tools = workspace_root().join(".tools");
    let path = tools.join("bin").join("aws-lambda-rie");
    if path.is_file() {
        return Ok(path);
    }
    // setup.sh leaves the reason it could not install the emulator here.
    let why = std::fs::read_to_string(tools.join("aws-lambda-rie.missing"))
        .map(|why| format!(": make setup could not install it: {}", why.trim()))
        .unwrap_or_else(|_| {
            ": run make setup (it installs the pinned version with go install)".into()
        });
    bail!(
        "AWS's Lambda Runtime Interface Emulator is not installed at {}{why}",
        path.display()
    )
}

/// The tiny function runtime the emulator runs: `target/debug/fn-runtime`.
pub fn fn_runtime_bin() -> anyhow::Result<PathBuf> {
    let path = target_dir().join("debug").join("fn-runtime");
    if !path.is_file() {
        bail!(
            "fn-runtime not found at {}: build it first: cargo build --workspace --all-targets",
            path.display()
        );
    }
    Ok(path)
}

/// Which Lambda the emulator plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RieMode {
    /// On-demand Lambda: Init on the first invoke, INVOKE and SHUTDOWN events.
    Classic,
    /// Lambda Managed Instances with this many concurrent invocations per environment.
    ManagedInstances {
        /// `AWS_LAMBDA_MAX_CONCURRENCY`.
        max_concurrency: u32,
    },
}

/// Configures and starts a [`Rie`].
#[derive(Debug)]
pub struct RieBuilder {
    mode: RieMode,
    env: Vec<(String, String)>,
}

impl RieBuilder {
    /// Sets an environment variable for the function and its extensions (later calls win).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Lays out `/opt`, starts the emulator in its own namespaces and waits until its
    /// invoke endpoint accepts connections.
    pub async fn start(self) -> anyhow::Result<Rie> {
        if !running_as_root() {
            bail!(
                "the emulator tests need root: the emulator reads extensions from /opt, and \
                 each test mounts its own /opt in a private mount namespace (unshare -m)"
            );
        }
        let rie = rie_bin()?;
        let opt = OptDir::layer()?;
        let runtime_api_port = free_port()?;
        let invoke_port = free_port()?;

        // unshare: a private mount namespace (propagation private, so the bind mount stays
        // in it) and a PID namespace whose first process is the emulator; --kill-child ends
        // that process, and so the namespace, if unshare itself is killed.
        let mut command = Command::new("unshare");
        command
            .args([
                "--mount",
                "--propagation",
                "private",
                "--pid",
                "--kill-child",
            ])
            .arg("sh")
            .arg("-c")
            .arg(concat!(
                r#"mount --bind "$1" /opt && shift || exit 1; "#,
                r#"[ -d /var/task ] || { mount -t tmpfs -o size=1m,mode=755 lambda-task /var "#,
                r#"&& mkdir /var/task; } || exit 1; "#,
                r#"exec "$@""#,
            ))
            .arg("sh")
            .arg(opt.path())
            .arg(&rie)
            .arg("--runtime-api-address")
            .arg(format!("127.0.0.1:{runtime_api_port}"))
            .arg("--runtime-interface-emulator-address")
            .arg(format!("127.0.0.1:{invoke_port}"))
            .arg("/opt/bootstrap")
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for key in ["PATH", "HOME"] {
            if let Some(value) = std::env::var_os(key) {
                command.env(key, value);
            }
        }
        command.env("LOG_LEVEL", "debug");
        if let RieMode::ManagedInstances { max_concurrency } = self.mode {
            command.env("AWS_LAMBDA_MAX_CONCURRENCY", max_concurrency.to_string());
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .context("starting the emulator under unshare")?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let readers = [
            child
                .stdout
                .take()
                .map(|out| spawn_reader(out, logs.clone())),
            child
                .stderr
                .take()
                .map(|err| spawn_reader(err, logs.clone())),
        ];
        let rie = Rie {
            mode: self.mode,
            child: tokio::sync::Mutex::new(child),
            readers: Mutex::new(readers.into_iter().flatten().collect()),
            logs,
            invoke_port,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(INVOKE_TIMEOUT)
                .build()?,
            _opt: opt,
        };
        rie.wait_listening().await?;
        Ok(rie)
    }
}

/// The emulator running the layer's real binaries and [`fn_runtime_bin`] as the function.
/// Dropping it kills the emulator and everything it started, and removes its `/opt`.
#[derive(Debug)]
pub struct Rie {
    mode: RieMode,
    child: tokio::sync::Mutex<Child>,
    readers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    logs: Arc<Mutex<Vec<String>>>,
    invoke_port: u16,
    http: reqwest::Client,
    _opt: OptDir,
}

/// One read the function made from the extension during an invocation.
#[derive(Debug, Clone)]
pub struct Read {
    /// The HTTP status the extension answered.
    pub status: u16,
    /// The extension's `x-lockbox-cache` header.
    pub cache: String,
    /// The body the extension answered.
    pub body: String,
}

impl Read {
    /// The value read: a parameter's `Value` or a secret's `SecretString`.
    pub fn value(&self) -> Option<String> {
        let json: Value = serde_json::from_str(&self.body).ok()?;
        json.pointer("/Parameter/Value")
            .or_else(|| json.get("SecretString"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }
}

impl Rie {
    /// Starts configuring an emulator run in `mode`, with the environment a test's
    /// extension needs: moto at `aws_endpoint`, its region and credentials, a session token,
    /// a free port for the extension; plus a client for that port and token.
    pub fn builder(mode: RieMode, aws_endpoint: &str) -> anyhow::Result<(RieBuilder, ExtClient)> {
        let (env, client) = crate::lambda_env(aws_endpoint, "rie-token")?;
        let builder = RieBuilder {
            mode,
            env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_LAMBDA_FUNCTION_NAME", "rie-fn");
        Ok((builder, client))
    }

    /// The mode the emulator runs in.
    pub fn mode(&self) -> RieMode {
        self.mode
    }

    /// Invokes the function with `paths` to read from the extension (over `127.0.0.1`)
    /// and returns what each read got.
    pub async fn invoke(&self, paths: &[String]) -> anyhow::Result<Vec<Read>> {
        self.invoke_payload(serde_json::json!({ "get": paths }))
            .await
    }

    /// Invokes the function with a raw payload (see `fn-runtime.rs`) and returns the reads.
    pub async fn invoke_payload(&self, payload: Value) -> anyhow::Result<Vec<Read>> {
        let url = format!("http://127.0.0.1:{}{INVOKE_PATH}", self.invoke_port);
        // In Managed Instances mode the emulator answers `Runtime.Unavailable` to an invoke
        // that finds no runtime worker waiting in `/next`: right after Init the function's
        // workers may not all have asked yet, and concurrent invokes can outrun them. Lambda
        // holds or routes such an invoke elsewhere; the harness asks again until a deadline.
        let deadline = Instant::now() + UNAVAILABLE_DEADLINE;
        let (status, body) = loop {
            let response = self
                .http
                .post(&url)
                .json(&payload)
                .send()
                .await
                .with_context(|| format!("POST {INVOKE_PATH}\n{}", self.report()))?;
            let status = response.status();
            let body = response.text().await?;
            let unavailable =
                status == reqwest::StatusCode::BAD_REQUEST && body.contains("Runtime.Unavailable");
            if !unavailable || Instant::now() >= deadline {
                break (status, body);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        };
        if !status.is_success() {
            bail!("the invoke answered {status}: {body}\n{}", self.report());
        }
        let answer: Value = serde_json::from_str(&body).with_context(|| {
            format!("the invoke's answer is not JSON: {body}\n{}", self.report())
        })?;
        let results = answer["results"].as_array().ok_or_else(|| {
            anyhow!(
                "the invoke's answer has no results: {body}\n{}",
                self.report()
            )
        })?;
        results
            .iter()
            .map(|result| {
                if let Some(error) = result["error"].as_str() {
                    bail!(
                        "the function could not reach the extension: {error}\n{}",
                        self.report()
                    );
                }
                Ok(Read {
                    status: result["status"].as_u64().unwrap_or_default() as u16,
                    cache: result["cache"].as_str().unwrap_or_default().to_owned(),
                    body: result["body"].as_str().unwrap_or_default().to_owned(),
                })
            })
            .collect()
    }

    /// Stops the emulator as a Lambda environment is stopped (SIGTERM: SHUTDOWN to the
    /// extensions, then the processes end) and waits for it to exit.
    pub async fn stop(&self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.lock().await;
        let unshare = child
            .id()
            .ok_or_else(|| anyhow!("the emulator already exited\n{}", self.report()))?;
        // The emulator is unshare's only child (the first process of its PID namespace).
        let children = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
            .context("finding the emulator's process")?;
        let emulator = children
            .split_whitespace()
            .next()
            .ok_or_else(|| anyhow!("unshare has no child process\n{}", self.report()))?;
        let sent = std::process::Command::new("kill")
            .args(["-TERM", emulator])
            .status()
            .context("running kill")?;
        if !sent.success() {
            bail!("kill -TERM {emulator} failed\n{}", self.report());
        }
        let status = tokio::time::timeout(timeout, child.wait())
            .await
            .map_err(|_| {
                anyhow!(
                    "the emulator did not exit within {timeout:?}\n{}",
                    self.report()
                )
            })??;
        // Every line is read once the pipes close.
        let readers = std::mem::take(&mut *self.readers.lock().unwrap_or_else(|p| p.into_inner()));
        for reader in readers {
            let _ = reader.await;
        }
        Ok(status)
    }

    /// Everything the emulator, the extension and the function wrote so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The output lines containing `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.log_lines()
            .into_iter()
            .filter(|line| line.contains(needle))
            .collect()
    }

    /// The last output lines, for failure messages.
    pub fn report(&self) -> String {
        let lines = self.log_lines();
        let mut out = format!("emulator output ({} lines, the last 60):\n", lines.len());
        for line in &lines[lines.len().saturating_sub(60)..] {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    async fn wait_listening(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.invoke_port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.lock().await.try_wait() {
                bail!(
                    "the emulator exited ({status}) before listening\n{}",
                    self.report()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "the emulator did not listen on 127.0.0.1:{} within {START_DEADLINE:?}\n{}",
                    self.invoke_port,
                    self.report()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// A per-run directory laid out as the layer is under `/opt`, removed when dropped.
#[derive(Debug)]
struct OptDir {
    path: PathBuf,
}

impl OptDir {
    /// `extensions/lockbox` and `lockbox-exec`, the layer's built binaries, and `bootstrap`,
    /// the function's runtime; copied (a symlink would point out of the private `/opt`).
    fn layer() -> anyhow::Result<OptDir> {
        let path = target_dir()
            .join("lockbox-tests")
            .join(format!("rie-opt-{}", random_hex(12)));
        std::fs::create_dir_all(path.join("extensions"))
            .with_context(|| format!("creating {}", path.display()))?;
        let dir = OptDir { path };
        copy_executable(
            &lockbox_bin()?,
            &dir.path.join("extensions").join("lockbox"),
        )?;
        copy_executable(&lockbox_exec_bin()?, &dir.path.join("lockbox-exec"))?;
        copy_executable(&fn_runtime_bin()?, &dir.path.join("bootstrap"))?;
        Ok(dir)
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OptDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn copy_executable(from: &Path, to: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|uids| uids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn spawn_reader(
    stream: impl AsyncRead + Unpin + Send + 'static,
    logs: Arc<Mutex<Vec<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if std::env::var_os("LOCKBOX_TEST_ECHO").is_some() {
                eprintln!("[rie] {line}");
            }
            logs.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    })
}
