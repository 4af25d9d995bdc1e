//! Lambda's side of the Extensions API (and a minimal Runtime API), for running a real
//! binary the way Lambda runs it.
//!
//! The sandbox serves the APIs on a loopback port, starts the binary with
//! `AWS_LAMBDA_RUNTIME_API` pointing there and a clean environment, and records every
//! lifecycle step with its time. Tests then drive the lifecycle: wait for registration and
//! the end of Init, deliver INVOKE events (optionally running "function code" meanwhile),
//! deliver SHUTDOWN, and check what the process did and when.
//!
//! Where this sandbox and AWS's Runtime Interface Emulator ([`crate::rie`]) disagree, the
//! emulator is right (it is Lambda's own code), and the sandbox follows it:
//!
//! - the register response carries `accountId` only when the extension asked for it with
//!   `Lambda-Extension-Accept-Feature: accountId`;
//! - events other than `INVOKE` and `SHUTDOWN` are refused with 403
//!   `Extension.InvalidEventType`, and so is `INVOKE` when the environment is Lambda Managed
//!   Instances (`AWS_LAMBDA_INITIALIZATION_TYPE=lambda-managed-instances`); a body with the
//!   deprecated `configurationKeys` is refused with 403 `InvalidRequestFormat`;
//! - a call without a valid identifier is refused with the emulator's error types
//!   (`Extension.MissingExtensionIdentifier`, `Extension.InvalidExtensionIdentifier`,
//!   `Extension.UnknownExtensionIdentifier`).
//!
//! What the emulator cannot do stays here: fault timing, SnapStart's snapshot and restore
//! ([`Sandbox::freeze`], [`Sandbox::thaw`] and [`ClockShift`]), and a precise record of
//! each lifecycle step.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::random_hex;

/// The function name the sandbox reports at registration and in ARNs.
pub const FUNCTION_NAME: &str = "sandbox-fn";
/// The account the function belongs to, told to extensions that ask for it.
pub const ACCOUNT_ID: &str = "123456789012";
/// The function ARN sent with every INVOKE.
pub const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:sandbox-fn";
/// The X-Ray header value sent with every INVOKE.
pub const TRACE_ID: &str =
    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
/// How long Lambda gives extensions to handle SHUTDOWN.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_millis(2000);
/// Bound on each step [`Sandbox::invoke_with`] waits for.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the function code run by [`Sandbox::invoke_with`].
const FUNCTION_CODE_TIMEOUT: Duration = Duration::from_secs(60);

const EXTENSION_NAME_HEADER: &str = "lambda-extension-name";
const ACCEPT_FEATURE_HEADER: &str = "lambda-extension-accept-feature";
const EXTENSION_ID_HEADER: &str = "lambda-extension-identifier";
const ERROR_TYPE_HEADER: &str = "lambda-extension-function-error-type";
const RUNTIME_ERROR_TYPE_HEADER: &str = "lambda-runtime-function-error-type";

/// One step of the lifecycle, as the sandbox saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lifecycle {
    /// The process was started.
    Spawned,
    /// `POST /extension/register`.
    Registered(Registration),
    /// `GET /extension/event/next`: the extension is done with the previous phase.
    NextCalled,
    /// An event was handed to a waiting `next`.
    EventDelivered(EventKind),
    /// `POST /extension/init/error`.
    InitError(ErrorReport),
    /// `POST /extension/exit/error`.
    ExitError(ErrorReport),
    /// `GET /runtime/invocation/next` (a runtime, not an extension, is running).
    RuntimeNextCalled,
    /// A runtime answered an invocation (`/response` or `/error`).
    RuntimeAnswered(RuntimeOutcome),
    /// `POST /runtime/init/error`.
    RuntimeInitError(ErrorReport),
    /// The process exited (all its output has been read by then).
    Exited(ExitStatus),
}

/// The two events an external extension can receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A function invocation.
    Invoke,
    /// The environment is being shut down.
    Shutdown,
}

/// What an extension sent when it registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The `Lambda-Extension-Name` header.
    pub name: String,
    /// The `events` it subscribed to.
    pub events: Vec<String>,
}

/// An error a process reported to the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReport {
    /// The `Lambda-Extension-Function-Error-Type` (or runtime equivalent) header.
    pub error_type: String,
    /// The request body, as sent.
    pub body: String,
}

/// How a runtime answered one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeOutcome {
    /// `POST /runtime/invocation/{id}/response` with this body.
    Response(String),
    /// `POST /runtime/invocation/{id}/error`.
    Error(ErrorReport),
}

/// Configures and starts a [`Sandbox`].
#[derive(Debug, Default)]
pub struct SandboxBuilder {
    binary: Option<PathBuf>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    env_remove: Vec<String>,
    function_timeout: Option<Duration>,
}

impl SandboxBuilder {
    /// The executable to run (required).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// A command-line argument for the executable.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Sets an environment variable for the process (later calls win).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets several environment variables.
    pub fn envs<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Makes sure a variable is absent, even one set earlier or by the sandbox's defaults.
    pub fn env_remove(mut self, key: impl Into<String>) -> Self {
        self.env_remove.push(key.into());
        self
    }

    /// The function timeout used for INVOKE `deadlineMs` (default 3 s, Lambda's default).
    pub fn function_timeout(mut self, timeout: Duration) -> Self {
        self.function_timeout = Some(timeout);
        self
    }

    /// Serves the APIs, then starts the process.
    pub async fn start(self) -> anyhow::Result<Sandbox> {
        let binary = self.binary.context("SandboxBuilder needs a binary")?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (runtime_tx, runtime_rx) = mpsc::unbounded_channel();
        let initialization_type = self
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "AWS_LAMBDA_INITIALIZATION_TYPE")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "on-demand".to_owned());
        let shared = Arc::new(Shared {
            extension_id: uuid_like(),
            managed_instances: initialization_type == "lambda-managed-instances",
            record: Mutex::new(Record::default()),
            changed: watch::Sender::new(0),
            events_tx,
            events_rx: tokio::sync::Mutex::new(events_rx),
            runtime_tx,
            runtime_rx: tokio::sync::Mutex::new(runtime_rx),
            runtime_waiters: Mutex::new(HashMap::new()),
            logs: Mutex::new(Vec::new()),
        });
        let router = router(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });

        let mut command = Command::new(&binary);
        command
            .args(&self.args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // Only what a process needs to run at all comes from the host; the rest is what
        // Lambda itself would set, so no developer setting can leak into a test.
        for key in ["PATH", "HOME"] {
            if let Some(value) = std::env::var_os(key) {
                command.env(key, value);
            }
        }
        command
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", FUNCTION_NAME)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand");
        for (key, value) in &self.env {
            command.env(key, value);
        }
        for key in &self.env_remove {
            command.env_remove(key);
        }
        // What the process was given, for a second process in the same environment.
        let process_env: Vec<(OsString, OsString)> = command
            .as_std()
            .get_envs()
            .filter_map(|(key, value)| Some((key.to_owned(), value?.to_owned())))
            .collect();

        let spawned_at = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id();
        shared.push(Lifecycle::Spawned);

        let readers = [
            child
                .stdout
                .take()
                .map(|out| spawn_reader(out, Arc::clone(&shared))),
            child
                .stderr
                .take()
                .map(|err| spawn_reader(err, Arc::clone(&shared))),
        ];
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        let process = {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let status = tokio::select! {
                    status = child.wait() => status,
                    _ = kill_rx => {
                        let _ = child.start_kill();
                        child.wait().await
                    }
                };
                let exited_at = Instant::now();
                // Logs are complete once the pipes are closed; waiting here means a test that
                // saw the exit can read every line.
                for reader in readers.into_iter().flatten() {
                    let _ = reader.await;
                }
                if let Ok(status) = status {
                    shared.push_at(exited_at, Lifecycle::Exited(status));
                }
            })
        };

        Ok(Sandbox {
            shared,
            addr,
            binary,
            pid,
            process_env,
            spawned_at,
            function_timeout: self.function_timeout.unwrap_or(Duration::from_secs(3)),
            kill: Mutex::new(Some(kill_tx)),
            server,
            process,
        })
    }
}

/// A running process under the sandbox. Dropping it kills the process.
#[derive(Debug)]
pub struct Sandbox {
    shared: Arc<Shared>,
    addr: SocketAddr,
    binary: PathBuf,
    /// The process id, for reading the process's own figures (`/proc/PID/status`).
    pid: Option<u32>,
    /// The environment the process was started with.
    process_env: Vec<(OsString, OsString)>,
    spawned_at: Instant,
    function_timeout: Duration,
    kill: Mutex<Option<oneshot::Sender<()>>>,
    server: JoinHandle<()>,
    process: JoinHandle<()>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // The process task owns the child (kill_on_drop), so aborting it kills the process.
        self.process.abort();
        self.server.abort();
    }
}

impl Sandbox {
    /// Starts configuring a sandbox.
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder::default()
    }

    /// The address the APIs are served on (`AWS_LAMBDA_RUNTIME_API`).
    pub fn api_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id while the process runs (for `/proc/PID/...`); `None` once it exited.
    pub fn pid(&self) -> Option<u32> {
        self.pid.filter(|_| self.exit().is_none())
    }

    /// A command for a second process in exactly the environment the sandboxed one got
    /// (Lambda gives the runtime and the extensions the same variables): the function's
    /// runtime, started by the test once the extension registered, as Lambda starts it.
    /// Output and waiting are the caller's; the process is killed if the command's child is
    /// dropped.
    pub fn runtime_command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .env_clear()
            .envs(self.process_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// When the process was started.
    pub fn spawned_at(&self) -> Instant {
        self.spawned_at
    }

    /// Waits until the extension has registered.
    pub async fn wait_registered(&self, timeout: Duration) -> anyhow::Result<Registration> {
        self.wait_for(timeout, "registration", |record| {
            record.timeline.iter().find_map(|(_, step)| match step {
                Lifecycle::Registered(registration) => Some(registration.clone()),
                _ => None,
            })
        })
        .await
    }

    /// Waits until the process finished Init (its first `next`, extension or runtime), and
    /// returns how long after the spawn that was.
    pub async fn wait_init_done(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let spawned_at = self.spawned_at;
        self.wait_for(timeout, "the end of Init (first next)", |record| {
            record.timeline.iter().find_map(|(at, step)| {
                matches!(step, Lifecycle::NextCalled | Lifecycle::RuntimeNextCalled)
                    .then(|| at.duration_since(spawned_at))
            })
        })
        .await
    }

    /// Delivers an INVOKE and waits until the extension calls `next` again; returns the time
    /// between delivery and that `next`.
    pub async fn invoke(&self, timeout: Duration) -> anyhow::Result<Duration> {
        self.invoke_with_timeout(timeout, || async {})
            .await
            .map(|((), elapsed)| elapsed)
    }

    /// Delivers an INVOKE, runs `function` (the function's code, typically HTTP calls to the
    /// extension) while the extension handles the event, then waits for the extension's next
    /// `next`. Returns what `function` returned.
    pub async fn invoke_with<F, Fut, T>(&self, function: F) -> anyhow::Result<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        self.invoke_with_timeout(STEP_TIMEOUT, function)
            .await
            .map(|(value, _)| value)
    }

    async fn invoke_with_timeout<F, Fut, T>(
        &self,
        timeout: Duration,
        function: F,
    ) -> anyhow::Result<(T, Duration)>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let next_calls = self.wait_pending_next(timeout).await?;
        let request_id = uuid_like();
        let deadline_ms = epoch_ms_after(self.function_timeout);
        self.shared.send_event(json!({
            "eventType": "INVOKE",
            "deadlineMs": deadline_ms,
            "requestId": request_id,
            "invokedFunctionArn": FUNCTION_ARN,
            "tracing": {"type": "X-Amzn-Trace-Id", "value": TRACE_ID},
        }))?;
        let delivered_at = Instant::now();
        let value = tokio::time::timeout(FUNCTION_CODE_TIMEOUT, function())
            .await
            .map_err(|_| anyhow!("the function code ran longer than {FUNCTION_CODE_TIMEOUT:?}"))?;
        let next_at = self
            .wait_for(timeout, "the next `next` after INVOKE", |record| {
                (record.next_calls > next_calls).then_some(record.last_next_at)
            })
            .await?;
        Ok((
            value,
            next_at.unwrap_or(delivered_at).duration_since(delivered_at),
        ))
    }

    /// Delivers SHUTDOWN and waits for the process to exit; returns its status and the time
    /// from delivery to exit.
    pub async fn shutdown(&self, timeout: Duration) -> anyhow::Result<(ExitStatus, Duration)> {
        self.wait_pending_next(timeout).await?;
        self.shared.send_event(json!({
            "eventType": "SHUTDOWN",
            "shutdownReason": "spindown",
            "deadlineMs": epoch_ms_after(SHUTDOWN_DEADLINE),
        }))?;
        let delivered_at = self
            .wait_for(timeout, "SHUTDOWN to be delivered", |record| {
                record.timeline.iter().find_map(|(at, step)| {
                    (*step == Lifecycle::EventDelivered(EventKind::Shutdown)).then_some(*at)
                })
            })
            .await?;
        let (status, exited_at) = self.wait_exit_at(timeout).await?;
        Ok((status, exited_at.duration_since(delivered_at)))
    }

    /// Waits for the process to exit on its own.
    pub async fn wait_exit(&self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.wait_exit_at(timeout).await.map(|(status, _)| status)
    }

    async fn wait_exit_at(&self, timeout: Duration) -> anyhow::Result<(ExitStatus, Instant)> {
        // The exit is looked for before `wait_for` treats it as a failure.
        self.wait_for(timeout, "the process to exit", Record::exit)
            .await
    }

    /// Freezes the process (SIGSTOP), as Lambda freezes an environment between invokes and
    /// as SnapStart's snapshot holds it: it runs nothing, timers included, until
    /// [`Sandbox::thaw`].
    pub fn freeze(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// Lets a frozen process run again (SIGCONT).
    pub fn thaw(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow!("the process is not running\n{}", self.report()))?;
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill {signal} {pid} failed");
        }
        Ok(())
    }

    /// Kills the process and waits until it is gone.
    pub async fn kill(&self) -> anyhow::Result<ExitStatus> {
        if let Some(kill) = lock(&self.kill).take() {
            let _ = kill.send(());
        }
        self.wait_exit(Duration::from_secs(10)).await
    }

    /// Sends an invocation to a runtime process (one polling `/runtime/invocation/next`) and
    /// waits for its answer.
    pub async fn invoke_runtime(
        &self,
        payload: Value,
        timeout: Duration,
    ) -> anyhow::Result<RuntimeOutcome> {
        let request_id = uuid_like();
        let (answer_tx, answer_rx) = oneshot::channel();
        lock(&self.shared.runtime_waiters).insert(request_id.clone(), answer_tx);
        self.shared
            .runtime_tx
            .send(RuntimeInvocation {
                request_id: request_id.clone(),
                deadline_ms: epoch_ms_after(self.function_timeout),
                payload,
            })
            .map_err(|_| anyhow!("the sandbox's runtime queue is closed"))?;
        match tokio::time::timeout(timeout, answer_rx).await {
            Ok(Ok(outcome)) => Ok(outcome),
            _ => bail!(
                "no runtime answer to invocation {request_id} within {timeout:?}\n{}",
                self.report()
            ),
        }
    }

    /// Every lifecycle step so far, with when it happened.
    pub fn timeline(&self) -> Vec<(Instant, Lifecycle)> {
        self.shared.record().timeline.clone()
    }

    /// The lifecycle steps with their time since the spawn, for assertions and messages.
    pub fn timeline_since_spawn(&self) -> Vec<(Duration, Lifecycle)> {
        self.timeline()
            .into_iter()
            .map(|(at, step)| (at.duration_since(self.spawned_at), step))
            .collect()
    }

    /// When the first step matching `step` happened, measured from the spawn; `None` if
    /// there was none yet.
    pub fn time_of(&self, step: impl Fn(&Lifecycle) -> bool) -> Option<Duration> {
        self.timeline_since_spawn()
            .into_iter()
            .find_map(|(at, s)| step(&s).then_some(at))
    }

    /// Everything the process wrote to stdout and stderr so far, one line per line.
    pub fn logs(&self) -> String {
        self.log_lines().join("\n")
    }

    /// The process's output lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        lock(&self.shared.logs).clone()
    }

    /// The first output line containing `needle`, waiting for it until `timeout`.
    ///
    /// The process's output reaches the sandbox through a pipe and a reader task, so a line
    /// written just before a lifecycle step (such as `next`) may arrive just after it.
    pub async fn wait_log_line(&self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(line) = self.log_lines().into_iter().find(|l| l.contains(needle)) {
                return Ok(line);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "no output line with {needle:?} within {timeout:?}:\n{}",
                    self.report()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Init errors the process posted.
    pub fn init_errors(&self) -> Vec<ErrorReport> {
        self.shared
            .record()
            .timeline
            .iter()
            .filter_map(|(_, step)| match step {
                Lifecycle::InitError(report) | Lifecycle::RuntimeInitError(report) => {
                    Some(report.clone())
                }
                _ => None,
            })
            .collect()
    }

    /// Exit errors the process posted.
    pub fn exit_errors(&self) -> Vec<ErrorReport> {
        self.shared
            .record()
            .timeline
            .iter()
            .filter_map(|(_, step)| match step {
                Lifecycle::ExitError(report) => Some(report.clone()),
                _ => None,
            })
            .collect()
    }

    /// The name the extension registered under, if it registered.
    pub fn registered_name(&self) -> Option<String> {
        self.registration().map(|r| r.name)
    }

    /// What the extension sent at registration, if it registered.
    pub fn registration(&self) -> Option<Registration> {
        self.shared
            .record()
            .timeline
            .iter()
            .find_map(|(_, step)| match step {
                Lifecycle::Registered(registration) => Some(registration.clone()),
                _ => None,
            })
    }

    /// The exit status, if the process has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.exit().map(|(status, _)| status)
    }

    fn exit(&self) -> Option<(ExitStatus, Instant)> {
        self.shared.record().exit()
    }

    /// Waits until the extension is parked in `next` with no event handed to it, and
    /// returns how many `next` calls it has made.
    async fn wait_pending_next(&self, timeout: Duration) -> anyhow::Result<usize> {
        self.wait_for(timeout, "the extension to wait in `next`", |record| {
            (record.next_calls > record.delivered).then_some(record.next_calls)
        })
        .await
    }

    /// Polls `check` each time the record changes, until it yields a value, the process
    /// exits, or the timeout passes.
    async fn wait_for<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&Record) -> Option<T>,
    ) -> anyhow::Result<T> {
        let mut changed = self.shared.changed.subscribe();
        let deadline = Instant::now() + timeout;
        loop {
            {
                let record = self.shared.record();
                if let Some(value) = check(&record) {
                    return Ok(value);
                }
                if let Some((status, _)) = record.exit() {
                    drop(record);
                    bail!(
                        "the process exited ({status}) while waiting for {what}\n{}",
                        self.report()
                    );
                }
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                bail!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.report()
                );
            }
        }
    }

    /// The timeline and the last log lines, for failure messages.
    pub fn report(&self) -> String {
        let mut out = format!("binary: {}\ntimeline:\n", self.binary.display());
        for (since, step) in self.timeline_since_spawn() {
            out.push_str(&format!(
                "  {:>8.1} ms  {step:?}\n",
                since.as_secs_f64() * 1000.0
            ));
        }
        let lines = self.log_lines();
        out.push_str(&format!("last log lines ({} in all):\n", lines.len()));
        for line in &lines[lines.len().saturating_sub(30)..] {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

/// State shared by the API handlers, the process task and the [`Sandbox`] handle.
#[derive(Debug)]
struct Shared {
    extension_id: String,
    /// Lambda Managed Instances: extensions may register for SHUTDOWN only.
    managed_instances: bool,
    record: Mutex<Record>,
    /// Bumped on every change to the record, so waiters wake without polling.
    changed: watch::Sender<u64>,
    events_tx: mpsc::UnboundedSender<Value>,
    events_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Value>>,
    runtime_tx: mpsc::UnboundedSender<RuntimeInvocation>,
    runtime_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<RuntimeInvocation>>,
    runtime_waiters: Mutex<HashMap<String, oneshot::Sender<RuntimeOutcome>>>,
    logs: Mutex<Vec<String>>,
}

#[derive(Debug, Default)]
struct Record {
    timeline: Vec<(Instant, Lifecycle)>,
    next_calls: usize,
    last_next_at: Option<Instant>,
    delivered: usize,
}

impl Record {
    /// The exit status and when the process exited, if it has.
    fn exit(&self) -> Option<(ExitStatus, Instant)> {
        self.timeline.iter().find_map(|(at, step)| match step {
            Lifecycle::Exited(status) => Some((*status, *at)),
            _ => None,
        })
    }
}

#[derive(Debug)]
struct RuntimeInvocation {
    request_id: String,
    deadline_ms: u128,
    payload: Value,
}

impl Shared {
    fn record(&self) -> MutexGuard<'_, Record> {
        lock(&self.record)
    }

    fn push(&self, step: Lifecycle) {
        self.push_at(Instant::now(), step);
    }

    fn push_at(&self, at: Instant, step: Lifecycle) {
        {
            let mut record = self.record();
            match step {
                Lifecycle::NextCalled => {
                    record.next_calls += 1;
                    record.last_next_at = Some(at);
                }
                Lifecycle::EventDelivered(_) => record.delivered += 1,
                _ => {}
            }
            record.timeline.push((at, step));
        }
        self.changed.send_modify(|version| *version += 1);
    }

    fn send_event(&self, event: Value) -> anyhow::Result<()> {
        self.events_tx
            .send(event)
            .map_err(|_| anyhow!("the sandbox's event queue is closed"))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn spawn_reader(
    stream: impl AsyncRead + Unpin + Send + 'static,
    shared: Arc<Shared>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if std::env::var_os("LOCKBOX_TEST_ECHO").is_some() {
                eprintln!("[sandboxed] {line}");
            }
            lock(&shared.logs).push(line);
        }
    })
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/2020-01-01/extension/register", post(register))
        .route("/2020-01-01/extension/event/next", get(next_event))
        .route("/2020-01-01/extension/init/error", post(init_error))
        .route("/2020-01-01/extension/exit/error", post(exit_error))
        .route("/2018-06-01/runtime/invocation/next", get(runtime_next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(runtime_response),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/error",
            post(runtime_error),
        )
        .route("/2018-06-01/runtime/init/error", post(runtime_init_error))
        .with_state(shared)
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Lambda refuses calls that do not carry the identifier it handed out at registration:
/// the refusal to send, if any.
fn refuse_unknown_identifier(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let given = header(headers, EXTENSION_ID_HEADER);
    if given == shared.extension_id {
        return None;
    }
    // The emulator's three refusals (its rapi middleware and next handler).
    let (error_type, message) = if given.is_empty() {
        (
            "Extension.MissingExtensionIdentifier",
            "Missing Lambda-Extension-Identifier header",
        )
    } else if !is_uuid(&given) {
        (
            "Extension.InvalidExtensionIdentifier",
            "Invalid Lambda-Extension-Identifier",
        )
    } else {
        ("Extension.UnknownExtensionIdentifier", "Unknown extension")
    };
    Some(forbidden(error_type, message))
}

/// A 403 with the emulator's error body.
fn forbidden(error_type: &str, message: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        Json(json!({"errorMessage": message, "errorType": error_type})),
    )
        .into_response()
}

fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

async fn register(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let name = header(&headers, EXTENSION_NAME_HEADER);
    if name.is_empty() {
        return forbidden("Extension.InvalidExtensionName", "Empty extension name");
    }
    let Ok(request) = serde_json::from_str::<Value>(&body) else {
        return forbidden("InvalidRequestFormat", "the body is not JSON");
    };
    if request
        .get("configurationKeys")
        .and_then(Value::as_array)
        .is_some_and(|keys| !keys.is_empty())
    {
        return forbidden(
            "InvalidRequestFormat",
            "configurationKeys are deprecated; use environment variables instead",
        );
    }
    let events: Vec<String> = request
        .get("events")
        .and_then(Value::as_array)
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for event in &events {
        let allowed = match event.as_str() {
            "SHUTDOWN" => true,
            "INVOKE" => !shared.managed_instances,
            _ => false,
        };
        if !allowed {
            return forbidden(
                "Extension.InvalidEventType",
                &format!("{event}: ErrorInvalidEventType"),
            );
        }
    }
    shared.push(Lifecycle::Registered(Registration { name, events }));
    let mut body = json!({
        "functionName": FUNCTION_NAME,
        "functionVersion": "$LATEST",
        "handler": "handler",
    });
    // Lambda tells the account only to extensions that ask for it.
    let features = header(&headers, ACCEPT_FEATURE_HEADER);
    if features.split(',').any(|f| f.trim() == "accountId") {
        body["accountId"] = json!(ACCOUNT_ID);
    }
    (
        [(EXTENSION_ID_HEADER, shared.extension_id.clone())],
        Json(body),
    )
        .into_response()
}

async fn next_event(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(refused) = refuse_unknown_identifier(&shared, &headers) {
        return refused;
    }
    shared.push(Lifecycle::NextCalled);
    let event = next_or_hang(&shared.events_rx).await;
    let kind = if event["eventType"] == "SHUTDOWN" {
        EventKind::Shutdown
    } else {
        EventKind::Invoke
    };
    shared.push(Lifecycle::EventDelivered(kind));
    (
        [("lambda-extension-event-identifier", uuid_like())],
        Json(event),
    )
        .into_response()
}

async fn init_error(shared: State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    extension_error(&shared, &headers, body, Lifecycle::InitError)
}

async fn exit_error(shared: State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    extension_error(&shared, &headers, body, Lifecycle::ExitError)
}

/// Records an error an extension posted (at Init or at exit) as `step`, once the caller
/// proved it is the registered extension.
fn extension_error(
    shared: &Shared,
    headers: &HeaderMap,
    body: String,
    step: fn(ErrorReport) -> Lifecycle,
) -> Response {
    if let Some(refused) = refuse_unknown_identifier(shared, headers) {
        return refused;
    }
    shared.push(step(error_report(headers, ERROR_TYPE_HEADER, body)));
    accepted()
}

/// An error report from the error-type header `type_header` and the posted body.
fn error_report(headers: &HeaderMap, type_header: &str, body: String) -> ErrorReport {
    ErrorReport {
        error_type: header(headers, type_header),
        body,
    }
}

/// The next item of `queue` for a long-polling `next`. Once the queue is closed the
/// sandbox is going away, and Lambda would never answer either: this never returns then.
async fn next_or_hang<T>(queue: &tokio::sync::Mutex<mpsc::UnboundedReceiver<T>>) -> T {
    let next = queue.lock().await.recv().await;
    match next {
        Some(item) => item,
        None => std::future::pending().await,
    }
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, Json(json!({"status": "OK"}))).into_response()
}

async fn runtime_next(State(shared): State<Arc<Shared>>) -> Response {
    shared.push(Lifecycle::RuntimeNextCalled);
    let invocation = next_or_hang(&shared.runtime_rx).await;
    (
        [
            ("lambda-runtime-aws-request-id", invocation.request_id),
            (
                "lambda-runtime-deadline-ms",
                invocation.deadline_ms.to_string(),
            ),
            (
                "lambda-runtime-invoked-function-arn",
                FUNCTION_ARN.to_owned(),
            ),
            ("lambda-runtime-trace-id", TRACE_ID.to_owned()),
        ],
        Json(invocation.payload),
    )
        .into_response()
}

async fn runtime_response(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: String,
) -> Response {
    answer_runtime(&shared, &id, RuntimeOutcome::Response(body))
}

async fn runtime_error(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let report = error_report(&headers, RUNTIME_ERROR_TYPE_HEADER, body);
    answer_runtime(&shared, &id, RuntimeOutcome::Error(report))
}

fn answer_runtime(shared: &Shared, id: &str, outcome: RuntimeOutcome) -> Response {
    let Some(waiter) = lock(&shared.runtime_waiters).remove(id) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"errorMessage": "unknown request id", "errorType": "InvalidRequestID"})),
        )
            .into_response();
    };
    shared.push(Lifecycle::RuntimeAnswered(outcome.clone()));
    let _ = waiter.send(outcome);
    accepted()
}

async fn runtime_init_error(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    shared.push(Lifecycle::RuntimeInitError(error_report(
        &headers,
        RUNTIME_ERROR_TYPE_HEADER,
        body,
    )));
    accepted()
}

/// A random identifier shaped like a UUID, which is what Lambda hands out.
fn uuid_like() -> String {
    let hex = random_hex(32);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn epoch_ms_after(after: Duration) -> u128 {
    SystemTime::now()
        .checked_add(after)
        .unwrap_or_else(SystemTime::now)
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

/// The sandboxed process's wall clock, shifted at will: what a SnapStart restore does to an
/// environment (the wall clock is set to the real time, the monotonic clock carries on from
/// the snapshot). A tiny preloaded library (`LD_PRELOAD`) adds the offset in a file to every
/// `CLOCK_REALTIME` reading of the process and leaves every other clock alone, so the binary
/// under test is the one that ships. Built with the system's C compiler, as Rust's own
/// linking needs one anyway.
#[derive(Debug)]
pub struct ClockShift {
    dir: PathBuf,
}

/// The preloaded library's source. It reads the offset (whole seconds) on each call, so a
/// shift takes effect at once, and uses raw `open`/`read`, which read no clock themselves.
const CLOCK_SHIFT_C: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int (*real_clock_gettime)(clockid_t, struct timespec *);

static long offset_seconds(void) {
    const char *path = getenv("SANDBOX_CLOCK_SHIFT_FILE");
    if (!path) return 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    char text[32] = {0};
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    return n > 0 ? strtol(text, NULL, 10) : 0;
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    if (!real_clock_gettime) real_clock_gettime = dlsym(RTLD_NEXT, "clock_gettime");
    int rc = real_clock_gettime(clock, ts);
    if (rc == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE)) {
        ts->tv_sec += offset_seconds();
    }
    return rc;
}
"#;

impl ClockShift {
    /// Builds the library in a directory of its own under `target/lockbox-tests`.
    pub fn build() -> anyhow::Result<ClockShift> {
        let dir = crate::bins::target_dir()
            .join("lockbox-tests")
            .join(format!("clock-shift-{}", random_hex(12)));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let shift = ClockShift { dir };
        let source = shift.dir.join("clock_shift.c");
        std::fs::write(&source, CLOCK_SHIFT_C)?;
        std::fs::write(shift.offset_file(), "0")?;
        let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
        let output = std::process::Command::new(&cc)
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(shift.library())
            .arg(&source)
            .arg("-ldl")
            .output()
            .with_context(|| format!("running {cc:?} to build the clock shift library"))?;
        if !output.status.success() {
            bail!(
                "{cc:?} could not build the clock shift library: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(shift)
    }

    /// The variables that put the process under the shift: give them to the sandbox.
    pub fn env(&self) -> [(String, String); 2] {
        [
            (
                "LD_PRELOAD".to_owned(),
                self.library().to_string_lossy().into_owned(),
            ),
            (
                "SANDBOX_CLOCK_SHIFT_FILE".to_owned(),
                self.offset_file().to_string_lossy().into_owned(),
            ),
        ]
    }

    /// Moves the process's wall clock `by` further ahead of the real one (whole seconds).
    pub fn advance(&self, by: Duration) -> anyhow::Result<()> {
        let now: u64 = std::fs::read_to_string(self.offset_file())?
            .trim()
            .parse()
            .unwrap_or(0);
        // Written aside and renamed into place: the library never reads half a number.
        let next = self.dir.join("offset.next");
        std::fs::write(&next, (now + by.as_secs()).to_string())?;
        std::fs::rename(&next, self.offset_file())?;
        Ok(())
    }

    fn library(&self) -> PathBuf {
        self.dir.join("libclockshift.so")
    }

    fn offset_file(&self) -> PathBuf {
        self.dir.join("offset")
    }
}

impl Drop for ClockShift {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
