//! The extension's life, step by step, as Lambda drives it. [`run`] reads as the steps:
//!
//! 1. **register** with the Extensions API (Lambda starts the function's Init only after
//!    every extension registered);
//! 2. **validate** the configuration, reporting a bad one as an init error;
//! 3. **serve**: bind the loopback port and start answering, before the first `next`, so
//!    function code can read values from the first moment of its own Init;
//! 4. **prefetch** what `LOCKBOX_PREFETCH` names, concurrently with the function's Init;
//! 5. **render** the files `LOCKBOX_RENDER` names from the cache prefetch filled. Prefetch
//!    and render share one [`InitDeadline`], `LOCKBOX_PREFETCH_TIMEOUT_MS` from the start
//!    of prefetch, so together they never hold Init longer than that;
//! 6. **event loop**: `next` returns INVOKE events (each one writes the metrics line for
//!    the interval before it, refreshes what is about to expire, then renders again the
//!    files whose values changed) until SHUTDOWN;
//! 7. **shutdown**: stop accepting, finish in-flight requests, write the last metrics line,
//!    wipe the cache, exit, all inside Lambda's 2 s budget.
//!
//! The lifecycle owns the [`Core`] (the cache and the per-scope sources): it builds it once
//! and hands it to the server and to each feature.
//!
//! What differs per [`LambdaMode`]: on Lambda Managed Instances lockbox registers for
//! SHUTDOWN alone (INVOKE is refused there) and the refresh and render rounds run on a
//! [`background`] timer instead; under SnapStart nothing is fetched or rendered during
//! Init, a [`RestoreWatch`] forgets the cache as soon as a request shows a restore, and the
//! first INVOKE after it loads the plan.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use lambda_extension::{
    service_fn, Error as BoxError, Extension, LambdaEvent, NextEvent, RegisteredExtension, Service,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::aws::{AwsSource, Coalescing, Scopes, Source, SourceFactory};
use crate::cache::{Cache, GateOpener};
use crate::config::{Config, ConfigError, LogLevel, RawConfig};
use crate::domain::mode::LambdaMode;
use crate::domain::Scope;
use crate::features::background;
use crate::features::prefetch::{self, PrefetchPlan};
use crate::features::reference::resolve::CacheFetch;
use crate::features::refresh;
use crate::features::render::Renderer;
use crate::features::restore::RestoreWatch;
use crate::http::server::Listener;
use crate::http::{self, App};
use crate::metrics::{self, Cadence, Metrics, MetricsMode, Reporter};
use crate::process;
use crate::read::Core;

/// The name Lambda knows the extension by: the executable's file name in the layer.
pub const EXTENSION_NAME: &str = "lockbox";
/// How long in-flight requests may take to finish after SHUTDOWN; Lambda allows 2 s in all.
const DRAIN_BUDGET: Duration = Duration::from_millis(1500);

/// Why the extension stopped early.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The Extensions API refused or could not be reached.
    #[error("could not register with the Lambda Extensions API: {0}")]
    Register(#[source] BoxError),
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The loopback port could not be bound.
    #[error("could not listen on 127.0.0.1:{port}: {source}")]
    Bind {
        /// The configured port.
        port: u16,
        /// The OS error.
        source: std::io::Error,
    },
    /// `LOCKBOX_PREFETCH_REQUIRED=true` and prefetch could not load everything.
    #[error("prefetch incomplete: {0}")]
    Prefetch(String),
    /// `LOCKBOX_PREFETCH_REQUIRED=true` and a `LOCKBOX_RENDER` file could not be rendered.
    #[error("render failed: {0}")]
    Render(String),
    /// The Extensions API went away before SHUTDOWN.
    #[error("the Lambda Extensions API failed: {0}")]
    EventLoop(#[source] BoxError),
    /// The Extensions API's event stream ended before SHUTDOWN.
    #[error("the Lambda Extensions API's event stream ended before SHUTDOWN")]
    EventStreamEnded,
}

impl LifecycleError {
    /// The `Lambda-Extension-Function-Error-Type` reported to Lambda.
    fn error_type(&self) -> &'static str {
        match self {
            LifecycleError::Config(_) => "Extension.ConfigInvalid",
            LifecycleError::Bind { .. } => "Extension.PortUnavailable",
            LifecycleError::Prefetch(_) => "Extension.PrefetchFailed",
            LifecycleError::Render(_) => "Extension.RenderFailed",
            _ => "Extension.Failed",
        }
    }
}

/// The one deadline Init's own work runs within: prefetch, then render, each taking what
/// the other left. Lambda's Init is 10 s in all, and `LOCKBOX_PREFETCH_TIMEOUT_MS` is at
/// most 9,500 ms, so two budgets of their own could take Init past it.
#[derive(Debug, Clone, Copy)]
pub struct InitDeadline {
    at: Instant,
    budget: Duration,
}

impl InitDeadline {
    /// A deadline `budget` from now.
    pub fn after(budget: Duration) -> Self {
        Self::since(Instant::now(), budget)
    }

    /// A deadline `budget` after `started`.
    pub fn since(started: Instant, budget: Duration) -> Self {
        Self {
            at: started + budget,
            budget,
        }
    }

    /// Runs `work` until it is done or the deadline passes (`None`).
    pub async fn run<F: Future>(&self, work: F) -> Option<F::Output> {
        tokio::time::timeout_at(self.at, work).await.ok()
    }

    /// Why work was cut short, naming the variable that sets the budget.
    fn spent(&self) -> String {
        format!(
            "not done within LOCKBOX_PREFETCH_TIMEOUT_MS={}",
            self.budget.as_millis()
        )
    }
}

/// Lifecycle notifications from the Extensions API's event loop.
enum Signal {
    Shutdown { reason: String },
}

/// Runs the extension from registration to exit.
pub async fn run(raw: RawConfig) -> Result<(), LifecycleError> {
    // The Init budget counts from the process's start, not from when prefetch starts: Init
    // is what it bounds, and starting the process, registering and building the clients are
    // part of it (seconds on a machine busy starting a fleet).
    let init_started = process::age()
        .and_then(|age| Instant::now().checked_sub(age))
        .unwrap_or_else(Instant::now);
    let running: Arc<OnceLock<Running>> = Arc::new(OnceLock::new());
    let (extension, signals) = register(running.clone(), raw.mode()).await?;
    let init = InitReporter {
        extension_id: extension.extension_id.clone(),
    };

    let mut config = init.check(validate(raw)).await?;
    own_account_reads_as_itself(&mut config, extension.account_id.as_deref());
    let listener = init.check(bind(&config).await).await?;
    let metrics = Metrics::new();
    let core = build_core(&config, &metrics).await;
    let lines = MetricsLines::for_config(&config, &metrics, &core, &extension.function_name);
    let (gate, gate_opener) = config.prefetch.gate();
    let app = App::new(core.clone(), config.token.clone(), gate);
    if config.mode.is_snap_start() {
        app.watch_restores(Arc::new(RestoreWatch::new()));
    }
    let server = Server::start(listener, &config, app);

    let deadline = InitDeadline::since(init_started, config.prefetch_timeout);
    let mut renderer = (!config.render.is_empty()).then(|| Renderer::load(&config.render));
    let loaded = async {
        prefetch(&config, &core, gate_opener, deadline).await?;
        render(&config, &core, renderer.as_mut(), deadline).await
    };
    if let Err(err) = loaded.await {
        server.stop();
        return Err(init.report(err).await);
    }
    let per_invoke = lines
        .clone()
        .filter(|_| config.metrics.cadence == Cadence::PerInvoke);
    let _ = running.set(Running::new(&config, core.clone(), renderer, per_invoke));
    // Where Lambda sends no INVOKE events the environment is never frozen: timers work,
    // one for refresh and render, one for the metrics lines.
    let timer = config
        .mode
        .runs_timers()
        .then(|| start_timer(&config, running));
    let metrics_timer = match (&lines, config.metrics.cadence) {
        (Some(lines), Cadence::Every(period)) => {
            let lines = lines.clone();
            Some(tokio::spawn(metrics::every(period, move || lines.write())))
        }
        _ => None,
    };

    let outcome = event_loop(extension, signals).await;
    if let Some(timer) = timer {
        timer.abort();
    }
    if let Some(timer) = metrics_timer {
        timer.abort();
    }
    shutdown(server, &core, lines.as_deref()).await;
    outcome
}

/// Step 1: registers for the events `mode` allows (INVOKE and SHUTDOWN; SHUTDOWN alone on
/// Managed Instances, which refuse INVOKE and fail Init). The event processor runs inside
/// `next`'s loop: INVOKE does its work (see [`Running::on_invoke`]) before returning, as
/// the environment may be frozen as soon as `next` is called again; SHUTDOWN is handed
/// back through the returned channel so the shutdown sequence stays in [`run`].
async fn register(
    running: Arc<OnceLock<Running>>,
    mode: LambdaMode,
) -> Result<
    (
        RegisteredExtension<
            impl Service<
                LambdaEvent,
                Response = (),
                Error = BoxError,
                Future = impl Future<Output = Result<(), BoxError>>,
            >,
        >,
        mpsc::UnboundedReceiver<Signal>,
    ),
    LifecycleError,
> {
    let (signals, signal_rx) = mpsc::unbounded_channel::<Signal>();
    let processor = service_fn(move |event: LambdaEvent| {
        let signals = signals.clone();
        let running = running.clone();
        async move {
            match event.next {
                NextEvent::Shutdown(shutdown) => {
                    let _ = signals.send(Signal::Shutdown {
                        reason: shutdown.shutdown_reason,
                    });
                }
                NextEvent::Invoke(_) => {
                    if let Some(running) = running.get() {
                        running.on_invoke().await;
                    }
                }
            }
            Ok::<(), BoxError>(())
        }
    });
    let registered = Extension::new()
        .with_extension_name(EXTENSION_NAME)
        .with_events(mode.events())
        .with_events_processor(processor)
        .register()
        .await
        .map_err(LifecycleError::Register)?;
    tracing::info!(
        function = %registered.function_name,
        account = registered.account_id.as_deref().unwrap_or("not told"),
        mode = mode.as_str(),
        events = ?mode.events(),
        "registered"
    );
    Ok((registered, signal_rx))
}

/// The function's own account, which Lambda tells extensions that ask for it (the
/// extension crate does): an ARN there is read with the function's own role, so a
/// `LOCKBOX_ACCOUNT_ROLES` entry for it, meant for other accounts, is set aside. Without
/// the account id every entry applies, as before.
fn own_account_reads_as_itself(config: &mut Config, account: Option<&str>) {
    let Some(account) = account else {
        return;
    };
    if config.roles.account_roles.remove(account).is_some() {
        tracing::warn!(
            account,
            "LOCKBOX_ACCOUNT_ROLES names the function's own account: its ARNs are read with \
             the function's own role instead"
        );
    }
}

/// Step 2: the configuration, validated.
fn validate(raw: RawConfig) -> Result<Config, LifecycleError> {
    let config = raw.validate()?;
    if config.log_level == LogLevel::Debug {
        tracing::debug!(config = ?config, "effective configuration");
    }
    Ok(config)
}

/// Step 3, first half: the loopback listener.
async fn bind(config: &Config) -> Result<Listener, LifecycleError> {
    http::bind(config.port)
        .await
        .map_err(|source| LifecycleError::Bind {
            port: config.port,
            source,
        })
}

/// The cache and the AWS clients, from the validated configuration; both count into
/// `metrics`.
async fn build_core(config: &Config, metrics: &Metrics) -> Core {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let settings = config.source_settings();
    // Each scope's concurrent misses are coalesced into batch calls, as many in flight at
    // once as the connection bound allows.
    let calls = settings.max_connections.get();
    let home: Arc<dyn Source> = Arc::new(Coalescing::new(
        Arc::new(AwsSource::new(&sdk, &settings, metrics)),
        calls,
    ));
    let factory: SourceFactory = {
        let (sdk, session) = (sdk.clone(), config.role_session_name.clone());
        let metrics = metrics.clone();
        Arc::new(move |scope: Scope| {
            let (sdk, session, metrics) = (sdk.clone(), session.clone(), metrics.clone());
            Box::pin(async move {
                let source = AwsSource::for_scope(&sdk, &settings, scope, &session, &metrics).await;
                Arc::new(Coalescing::new(Arc::new(source), calls)) as Arc<dyn Source>
            })
        })
    };
    let scopes = Scopes::new(
        home,
        sdk.region().map(|r| r.as_ref().to_owned()),
        config.roles.clone(),
        factory,
    );
    Core {
        cache: Cache::new(config.cache_settings())
            .with_ttl_jitter(config.ttl_jitter)
            .with_metrics(metrics.clone()),
        scopes: Arc::new(scopes),
    }
}

/// Step 3, second half: the server, answering until it is stopped.
struct Server {
    task: JoinHandle<std::io::Result<()>>,
    stop: oneshot::Sender<()>,
}

impl Server {
    fn start(listener: Listener, config: &Config, app: App) -> Self {
        let ipv6 = listener.local_addr_v6().is_some();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(http::serve(
            listener,
            app,
            config.server_limits(),
            async move {
                let _ = stopped.await;
            },
        ));
        tracing::info!(port = config.port, ipv6, "serving on loopback");
        Self { task, stop }
    }

    /// Stops accepting; in-flight requests finish on their own.
    fn stop(self) -> JoinHandle<std::io::Result<()>> {
        let _ = self.stop.send(());
        self.task
    }
}

/// Step 4: loads the plan within the Init deadline. Whatever is not loaded by then is
/// fetched on demand; requests waiting at the gate are let through either way. Under
/// SnapStart, Init ends in a snapshot that may be restored days later: prefetch waits for
/// the first INVOKE after the restore instead.
async fn prefetch(
    config: &Config,
    core: &Core,
    gate_opener: GateOpener,
    deadline: InitDeadline,
) -> Result<(), LifecycleError> {
    if config.mode.is_snap_start() {
        gate_opener.open();
        tracing::info!("SnapStart: prefetch deferred to the first invoke after restore");
        return Ok(());
    }
    if config.prefetch.is_empty() {
        gate_opener.open();
        return Ok(());
    }
    let started = Instant::now();
    // A task of its own, so that at the deadline prefetch is not cancelled but goes on:
    // its calls in flight (waiting out a throttle, say) still fill the cache, and a read
    // of a value they carry waits for them instead of asking AWS again.
    let task = tokio::spawn({
        let (core, plan) = (core.clone(), config.prefetch.clone());
        async move { prefetch::run(&core, &plan).await }
    });
    let outcome = deadline.run(task).await;
    gate_opener.open();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let problem = match outcome {
        Some(Err(_)) => Some("the prefetch task failed".to_owned()),
        Some(Ok(report)) => {
            core.cache
                .metrics()
                .counters()
                .prefetched(started.elapsed(), report.loaded as u64);
            tracing::info!(
                loaded = report.loaded,
                failed = report.failures.len(),
                elapsed_ms,
                "prefetch done"
            );
            for failure in &report.failures {
                tracing::warn!(entry = %failure, "prefetch could not load");
            }
            (!report.failures.is_empty()).then(|| report.failures.join("; "))
        }
        None => {
            tracing::warn!(
                elapsed_ms,
                "prefetch budget spent; the rest loads on demand"
            );
            Some(deadline.spent())
        }
    };
    match (config.prefetch_required, problem) {
        (true, Some(problem)) => Err(LifecycleError::Prefetch(problem)),
        _ => Ok(()),
    }
}

/// Step 5: renders the files from what prefetch loaded, within what is left of the Init
/// deadline. A file that cannot be rendered is not written; it fails Init only when values
/// are required at Init. Under SnapStart a file written now would be part of the
/// snapshot: rendering waits for the first INVOKE after the restore, as prefetch does.
async fn render(
    config: &Config,
    core: &Core,
    renderer: Option<&mut Renderer>,
    deadline: InitDeadline,
) -> Result<(), LifecycleError> {
    let Some(renderer) = renderer.filter(|_| !config.mode.is_snap_start()) else {
        return Ok(());
    };
    let fetch = CacheFetch::new(&core.cache, &core.scopes);
    let problem = match deadline.run(renderer.render(&fetch)).await {
        Some(report) => {
            tracing::info!(
                written = report.written,
                failed = report.failures.len(),
                "render done"
            );
            for failure in &report.failures {
                tracing::warn!(file = %failure, "could not render");
            }
            (!report.failures.is_empty()).then(|| report.failures.join("; "))
        }
        None => {
            tracing::warn!("render did not finish within LOCKBOX_PREFETCH_TIMEOUT_MS");
            Some(deadline.spent())
        }
    };
    match (config.prefetch_required, problem) {
        (true, Some(problem)) => Err(LifecycleError::Render(problem)),
        _ => Ok(()),
    }
}

/// Step 6, where the environment is never frozen (Managed Instances): the rounds INVOKE
/// would run, on a timer instead, until aborted at shutdown.
fn start_timer(config: &Config, running: Arc<OnceLock<Running>>) -> JoinHandle<()> {
    let period = background::period(&[config.ssm_ttl, config.secrets_ttl], config.refresh_ahead);
    tracing::info!(
        period_ms = period.as_millis() as u64,
        "refresh and render on a timer (the environment is never frozen)"
    );
    tokio::spawn(background::every(period, move || {
        let running = running.clone();
        async move {
            if let Some(running) = running.get() {
                running.refresh_and_render().await;
            }
        }
    }))
}

/// Step 6: the first `next` ends our part of Init; INVOKE events are handled inside it
/// until SHUTDOWN arrives or the Extensions API goes away.
async fn event_loop<E>(
    extension: RegisteredExtension<E>,
    mut signals: mpsc::UnboundedReceiver<Signal>,
) -> Result<(), LifecycleError>
where
    E: Service<LambdaEvent, Response = (), Error = BoxError>,
    E::Future: Future<Output = Result<(), BoxError>>,
{
    tokio::select! {
        result = extension.run() => Err(match result {
            Ok(()) => LifecycleError::EventStreamEnded,
            Err(err) => LifecycleError::EventLoop(err),
        }),
        signal = signals.recv() => {
            let reason = match signal {
                Some(Signal::Shutdown { reason }) => reason,
                None => "event processor stopped".to_owned(),
            };
            tracing::info!(%reason, "shutdown");
            Ok(())
        }
    }
}

/// Step 7: in-flight requests get what is left of the budget; the last metrics line covers
/// them; the cache's values are wiped as they are dropped.
async fn shutdown(server: Server, core: &Core, lines: Option<&MetricsLines>) {
    if tokio::time::timeout(DRAIN_BUDGET, server.stop())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within the shutdown budget");
    }
    if let Some(lines) = lines {
        lines.write();
    }
    core.cache.clear();
}

/// The EMF line writer (`LOCKBOX_METRICS=emf`) and the cache whose size each line reports.
struct MetricsLines {
    reporter: Mutex<Reporter>,
    cache: Cache,
}

impl MetricsLines {
    /// The writer for `function_name`'s lines, when the configuration asks for them.
    fn for_config(
        config: &Config,
        metrics: &Metrics,
        core: &Core,
        function_name: &str,
    ) -> Option<Arc<Self>> {
        (config.metrics.mode == MetricsMode::Emf).then(|| {
            Arc::new(Self {
                reporter: Mutex::new(Reporter::new(
                    metrics.clone(),
                    config.metrics.namespace.clone(),
                    function_name,
                )),
                cache: core.cache.clone(),
            })
        })
    }

    /// Writes the line for the interval that ends now to stdout, which Lambda sends to
    /// CloudWatch Logs. The lock is held only to write one line, never across an await.
    fn write(&self) {
        let mut reporter = self.reporter.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(err) = reporter.report(self.cache.gauges(), &mut std::io::stdout().lock()) {
            tracing::warn!(error = %err, "could not write the metrics line");
        }
    }
}

/// What INVOKE events work with, set once Init is done.
struct Running {
    core: Core,
    refresh_ahead: f64,
    refresh_bound: Duration,
    /// SnapStart: the first INVOKE follows a restore.
    restore_pending: AtomicBool,
    plan: PrefetchPlan,
    prefetch_budget: Duration,
    /// The `LOCKBOX_RENDER` files, rendered again after each refresh.
    renderer: Option<tokio::sync::Mutex<Renderer>>,
    /// With `LOCKBOX_METRICS=emf` in standard Lambda: a line at each INVOKE.
    lines: Option<Arc<MetricsLines>>,
}

impl Running {
    fn new(
        config: &Config,
        core: Core,
        renderer: Option<Renderer>,
        lines: Option<Arc<MetricsLines>>,
    ) -> Self {
        Self {
            core,
            refresh_ahead: config.refresh_ahead,
            refresh_bound: config.backend_bound(),
            restore_pending: AtomicBool::new(config.mode.is_snap_start()),
            plan: config.prefetch.clone(),
            prefetch_budget: config.prefetch_timeout,
            renderer: renderer.map(tokio::sync::Mutex::new),
            lines,
        }
    }

    /// Work done while an invoke is in flight (the only time an extension can work).
    async fn on_invoke(&self) {
        // First, before this invoke's own work: the line covers the interval before it.
        if let Some(lines) = &self.lines {
            lines.write();
        }
        let counters = self.core.cache.metrics().counters();
        if self.restore_pending.swap(false, Ordering::SeqCst) {
            // Whatever the snapshot holds was fetched before it was taken: forget it and
            // load the plan afresh.
            self.core.cache.clear();
            let started = Instant::now();
            let round = prefetch::run(&self.core, &self.plan);
            match tokio::time::timeout(self.prefetch_budget, round).await {
                Ok(report) => {
                    counters.prefetched(started.elapsed(), report.loaded as u64);
                    tracing::info!(
                        loaded = report.loaded,
                        failed = report.failures.len(),
                        "restored: cache cleared and prefetched"
                    )
                }
                Err(_) => tracing::warn!("restored: prefetch did not finish in time"),
            }
            self.render().await;
            return;
        }
        self.refresh_and_render().await;
    }

    /// One round: refreshes what is about to expire, then renders again the files whose
    /// values changed. On each INVOKE, or on a timer where the environment is never frozen.
    async fn refresh_and_render(&self) {
        if self.refresh_ahead > 0.0 {
            let round = refresh::run(&self.core, self.refresh_ahead);
            match tokio::time::timeout(self.refresh_bound, round).await {
                Ok(report) => self
                    .core
                    .cache
                    .metrics()
                    .counters()
                    .refreshed(report.due as u64),
                Err(_) => tracing::warn!("refresh ahead did not finish in time"),
            }
        }
        self.render().await;
    }

    /// Renders the `LOCKBOX_RENDER` files again from the cache (hits unless a value
    /// expired); only those whose content changed are written. A file that cannot be
    /// rendered now keeps its last content.
    async fn render(&self) {
        let Some(renderer) = &self.renderer else {
            return;
        };
        let mut renderer = renderer.lock().await;
        let fetch = CacheFetch::new(&self.core.cache, &self.core.scopes);
        match tokio::time::timeout(self.refresh_bound, renderer.render(&fetch)).await {
            Ok(report) => {
                if report.written > 0 {
                    tracing::info!(written = report.written, "rendered files updated");
                }
                for failure in &report.failures {
                    tracing::warn!(file = %failure, "could not render; the file keeps its last content");
                }
            }
            Err(_) => tracing::warn!("render did not finish in time"),
        }
    }
}

/// Reports a failed Init step to Lambda (it shows in the function's error).
struct InitReporter {
    extension_id: String,
}

impl InitReporter {
    /// Passes a step's value on, or reports its error and hands it back for the exit
    /// status.
    async fn check<T>(&self, step: Result<T, LifecycleError>) -> Result<T, LifecycleError> {
        match step {
            Ok(value) => Ok(value),
            Err(err) => Err(self.report(err).await),
        }
    }

    /// Tells Lambda why Init failed, then hands the error back.
    async fn report(&self, err: LifecycleError) -> LifecycleError {
        let message = err.to_string();
        tracing::error!(error = %message, "init failed");
        let error_type = err.error_type();
        let request = lambda_extension::requests::init_error(
            &self.extension_id,
            error_type,
            Some(lambda_extension::requests::ErrorRequest {
                error_message: &message,
                error_type,
                stack_trace: Vec::new(),
            }),
        );
        match (
            request,
            lambda_runtime_api_client::Client::builder().build(),
        ) {
            (Ok(request), Ok(client)) => {
                if let Err(e) = client.call(request).await {
                    tracing::warn!(error = %e, "could not report the init error to Lambda");
                }
            }
            _ => tracing::warn!("could not build the init error report"),
        }
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::fake::Fake;
    use crate::aws::{FailureKind, SourceError};

    /// AWS that never answers within any budget: every call takes a minute, then fails.
    fn stalled() -> Fake {
        let stalled = Fake::new().answering_after(Duration::from_secs(60));
        stalled.fail_with(Some(SourceError::new(
            FailureKind::Timeout,
            "Timeout",
            "stalled",
        )));
        stalled
    }

    /// With the longest budget and AWS stalled, prefetch spends the whole budget; render,
    /// which must read the same value again, gets only what is left (nothing), so Init's
    /// own work ends at the budget, inside Lambda's 10 s, not at twice the budget.
    #[tokio::test(start_paused = true)]
    async fn prefetch_and_render_share_one_init_deadline() {
        let dir =
            std::env::temp_dir().join(format!("lockbox-init-deadline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let template = dir.join("app.conf.tmpl");
        std::fs::write(&template, "password={{resolve:ssm-secure:/app/db}}\n").unwrap();
        let dest = dir.join("app.conf");
        let config = RawConfig::from_pairs([
            ("AWS_SESSION_TOKEN", "t".to_owned()),
            ("LOCKBOX_PREFETCH", "ssm:/app/db".to_owned()),
            ("LOCKBOX_PREFETCH_TIMEOUT_MS", "9500".to_owned()),
            ("LOCKBOX_RENDER_ROOT", dir.display().to_string()),
            (
                "LOCKBOX_RENDER",
                format!("{}:{}", template.display(), dest.display()),
            ),
        ])
        .validate()
        .unwrap();
        let core = Core {
            cache: Cache::new(config.cache_settings()),
            scopes: Arc::new(Scopes::home_only(Arc::new(stalled()))),
        };
        let mut renderer = Some(Renderer::load(&config.render));
        let (_gate, opener) = config.prefetch.gate();

        let started = Instant::now();
        let deadline = InitDeadline::after(config.prefetch_timeout);
        prefetch(&config, &core, opener, deadline).await.unwrap();
        assert_eq!(
            started.elapsed(),
            config.prefetch_timeout,
            "prefetch spent its budget"
        );
        render(&config, &core, renderer.as_mut(), deadline)
            .await
            .unwrap();
        assert_eq!(
            started.elapsed(),
            config.prefetch_timeout,
            "render added nothing past the one deadline"
        );
        assert!(!dest.exists(), "an unresolved template is not written");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn work_past_the_deadline_is_cut_short_and_names_the_budget() {
        let deadline = InitDeadline::after(Duration::from_millis(100));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let late = deadline.run(tokio::time::sleep(Duration::from_millis(1)));
        assert_eq!(late.await, None, "nothing waits past it");
        assert_eq!(
            deadline.spent(),
            "not done within LOCKBOX_PREFETCH_TIMEOUT_MS=100"
        );
    }
}
