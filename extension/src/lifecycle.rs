//! The extension's life, step by step, as Lambda drives it:
//!
//! 1. **register** with the Extensions API (Lambda starts the function's Init only after
//!    every extension registered);
//! 2. **validate** the configuration, reporting a bad one as an init error;
//! 3. **serve**: bind the loopback port and start answering, before the first `next`, so
//!    function code can read values from the first moment of its own Init;
//! 4. **prefetch** what `LOCKBOX_PREFETCH` names, concurrently with the function's Init,
//!    for at most `LOCKBOX_PREFETCH_TIMEOUT_MS`;
//! 5. **render** the files `LOCKBOX_RENDER` names from the cache prefetch filled;
//! 6. **event loop**: `next` returns INVOKE events (each one refreshes what is about to
//!    expire, then renders again the files whose values changed) until SHUTDOWN;
//! 7. **shutdown**: stop accepting, finish in-flight requests, wipe the cache, exit, all
//!    inside Lambda's 2 s budget.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use lambda_extension::{service_fn, Extension, LambdaEvent, NextEvent};
use tokio::sync::mpsc;

use crate::cache::{Cache, CacheSettings};
use crate::config::{Config, ConfigError, LogLevel, RawConfig};
use crate::prefetch::{self, PrefetchGate};
use crate::refresh;
use crate::render::Renderer;
use crate::resolve::CacheFetch;
use crate::scope::{Scope, Scopes, SourceFactory};
use crate::server::{self, App, ServerLimits};
use crate::source::{AwsSource, Source};

/// The name Lambda knows the extension by: the executable's file name in the layer.
pub const EXTENSION_NAME: &str = "lockbox";
/// How long in-flight requests may take to finish after SHUTDOWN; Lambda allows 2 s in all.
const DRAIN_BUDGET: Duration = Duration::from_millis(1500);

/// Why the extension stopped early.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The Extensions API refused or could not be reached.
    #[error("could not register with the Lambda Extensions API: {0}")]
    Register(String),
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
    EventLoop(String),
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

/// Lifecycle notifications from the Extensions API's event loop.
enum Signal {
    Shutdown { reason: String },
}

/// Runs the extension from registration to exit.
pub async fn run(raw: RawConfig) -> Result<(), LifecycleError> {
    // 1. Register. The event processor runs inside `next`'s loop; SHUTDOWN is handed to
    //    this function so the shutdown sequence stays here.
    //    INVOKE refreshes what is about to expire before returning: the environment may be
    //    frozen as soon as `next` is called again, so background work would stall.
    let (signals, mut signal_rx) = mpsc::unbounded_channel::<Signal>();
    let running: Arc<OnceLock<Running>> = Arc::new(OnceLock::new());
    let processor = service_fn({
        let running = running.clone();
        move |event: LambdaEvent| {
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
                Ok::<(), lambda_extension::Error>(())
            }
        }
    });
    let registered = Extension::new()
        .with_extension_name(EXTENSION_NAME)
        .with_events(&["INVOKE", "SHUTDOWN"])
        .with_events_processor(processor)
        .register()
        .await
        .map_err(|e| LifecycleError::Register(e.to_string()))?;
    let extension_id = registered.extension_id.clone();
    tracing::info!(function = %registered.function_name, "registered");

    // 2. Validate.
    let config = match raw.validate() {
        Ok(config) => config,
        Err(err) => return Err(report_init_error(&extension_id, err.into()).await),
    };
    if config.log_level == LogLevel::Debug {
        tracing::debug!(config = ?config, "effective configuration");
    }

    // 3. Serve.
    let listener = match server::bind(config.port).await {
        Ok(listener) => listener,
        Err(source) => {
            let err = LifecycleError::Bind {
                port: config.port,
                source,
            };
            return Err(report_init_error(&extension_id, err).await);
        }
    };
    let (gate, gate_opener) = PrefetchGate::closed_for(&config.prefetch);
    let app = build_app(&config, gate).await;
    let (stop_serving, serving_stopped) = tokio::sync::oneshot::channel::<()>();
    let limits = ServerLimits {
        max_connections: config.max_client_connections,
        header_timeout: config.client_timeout,
        write_timeout: config.client_timeout,
        max_header_bytes: crate::config::MAX_HEADER_BYTES,
    };
    let server = tokio::spawn(server::serve(listener, app.clone(), limits, async move {
        let _ = serving_stopped.await;
    }));
    tracing::info!(port = config.port, "serving on 127.0.0.1");

    // 4. Prefetch, within the budget. Whatever is not loaded by then is fetched on demand;
    //    requests waiting at the gate are let through either way. Under SnapStart, Init
    //    ends in a snapshot that may be restored days later: prefetch waits for the first
    //    INVOKE after the restore instead.
    if config.snap_start {
        gate_opener.open();
        tracing::info!("SnapStart: prefetch deferred to the first invoke after restore");
    } else if !config.prefetch.is_empty() {
        let started = tokio::time::Instant::now();
        let task = tokio::spawn({
            let app = app.clone();
            let plan = config.prefetch.clone();
            async move { prefetch::run(app.cache(), app.scopes(), &plan).await }
        });
        let outcome = tokio::time::timeout(config.prefetch_timeout, task).await;
        gate_opener.open();
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let problem = match outcome {
            Ok(Ok(report)) => {
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
            Ok(Err(_)) => Some("prefetch task failed".to_owned()),
            Err(_) => {
                tracing::warn!(
                    elapsed_ms,
                    "prefetch budget spent; the rest loads on demand"
                );
                Some(format!(
                    "not done within LOCKBOX_PREFETCH_TIMEOUT_MS={}",
                    config.prefetch_timeout.as_millis()
                ))
            }
        };
        if let (true, Some(problem)) = (config.prefetch_required, problem) {
            let _ = stop_serving.send(());
            return Err(report_init_error(&extension_id, LifecycleError::Prefetch(problem)).await);
        }
    } else {
        gate_opener.open();
    }

    // 5. Render, from what prefetch loaded, within the same budget. A file that cannot be
    //    rendered is not written; it fails Init only when values are required at Init.
    //    Under SnapStart a file written now would be part of the snapshot: rendering waits
    //    for the first INVOKE after the restore, as prefetch does.
    let mut renderer = (!config.render.is_empty()).then(|| Renderer::load(&config.render));
    if let (Some(renderer), false) = (renderer.as_mut(), config.snap_start) {
        let fetch = CacheFetch::new(app.cache(), app.scopes());
        let problem =
            match tokio::time::timeout(config.prefetch_timeout, renderer.render(&fetch)).await {
                Ok(report) => {
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
                Err(_) => {
                    tracing::warn!("render did not finish within LOCKBOX_PREFETCH_TIMEOUT_MS");
                    Some(format!(
                        "not done within LOCKBOX_PREFETCH_TIMEOUT_MS={}",
                        config.prefetch_timeout.as_millis()
                    ))
                }
            };
        if let (true, Some(problem)) = (config.prefetch_required, problem) {
            let _ = stop_serving.send(());
            return Err(report_init_error(&extension_id, LifecycleError::Render(problem)).await);
        }
    }
    let _ = running.set(Running {
        app: app.clone(),
        refresh_ahead: config.refresh_ahead,
        refresh_bound: config.ssm_timeout.max(config.secrets_timeout),
        restore_pending: AtomicBool::new(config.snap_start),
        plan: config.prefetch.clone(),
        prefetch_budget: config.prefetch_timeout,
        renderer: renderer.map(tokio::sync::Mutex::new),
    });

    // 6. Event loop: the first `next` ends our part of Init.
    let outcome = tokio::select! {
        result = registered.run() => Err(LifecycleError::EventLoop(match result {
            Ok(()) => "event stream ended".to_owned(),
            Err(e) => e.to_string(),
        })),
        signal = signal_rx.recv() => {
            let reason = match signal {
                Some(Signal::Shutdown { reason }) => reason,
                None => "event processor stopped".to_owned(),
            };
            tracing::info!(%reason, "shutdown");
            Ok(())
        }
    };

    // 7. Shutdown: in-flight requests get what is left of the budget; the cache's values
    //    are wiped as they are dropped.
    let _ = stop_serving.send(());
    if tokio::time::timeout(DRAIN_BUDGET, server).await.is_err() {
        tracing::warn!("in-flight requests did not finish within the shutdown budget");
    }
    app.cache().clear().await;
    outcome
}

/// What INVOKE events work with, set once Init is done.
struct Running {
    app: App,
    refresh_ahead: f64,
    refresh_bound: Duration,
    /// SnapStart: the first INVOKE follows a restore.
    restore_pending: AtomicBool,
    plan: prefetch::PrefetchPlan,
    prefetch_budget: Duration,
    /// The `LOCKBOX_RENDER` files, rendered again after each refresh.
    renderer: Option<tokio::sync::Mutex<Renderer>>,
}

impl Running {
    /// Work done while an invoke is in flight (the only time an extension can work).
    async fn on_invoke(&self) {
        let (cache, scopes) = (self.app.cache(), self.app.scopes());
        if self.restore_pending.swap(false, Ordering::SeqCst) {
            // Whatever the snapshot holds was fetched before it was taken: forget it and
            // load the plan afresh.
            cache.clear().await;
            let round = prefetch::run(cache, scopes, &self.plan);
            match tokio::time::timeout(self.prefetch_budget, round).await {
                Ok(report) => tracing::info!(
                    loaded = report.loaded,
                    failed = report.failures.len(),
                    "restored: cache cleared and prefetched"
                ),
                Err(_) => tracing::warn!("restored: prefetch did not finish in time"),
            }
            self.render().await;
            return;
        }
        if self.refresh_ahead > 0.0 {
            let round = refresh::run(cache, scopes, self.refresh_ahead);
            if tokio::time::timeout(self.refresh_bound, round)
                .await
                .is_err()
            {
                tracing::warn!("refresh ahead did not finish in time");
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
        let fetch = CacheFetch::new(self.app.cache(), self.app.scopes());
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

/// Builds the cache and the AWS clients from the validated configuration.
async fn build_app(config: &Config, gate: PrefetchGate) -> App {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let cache = Cache::new(CacheSettings {
        enabled: config.cache_enabled,
        capacity: config.cache_size,
        parameter_ttl: config.ssm_ttl,
        secret_ttl: config.secrets_ttl,
        max_stale: config.max_stale,
    });
    let home: Arc<dyn Source> = Arc::new(AwsSource::new(&sdk, config));
    let factory: SourceFactory = {
        let (sdk, config) = (sdk.clone(), config.clone());
        Arc::new(move |scope: Scope| {
            let (sdk, config) = (sdk.clone(), config.clone());
            Box::pin(async move {
                let session = config.role_session_name.clone();
                Arc::new(AwsSource::for_scope(&sdk, &config, scope, &session).await)
                    as Arc<dyn Source>
            })
        })
    };
    let scopes = Scopes::new(
        home,
        sdk.region().map(|r| r.as_ref().to_owned()),
        config.roles.clone(),
        factory,
    );
    App::with_scopes(cache, Arc::new(scopes), config.token.clone(), gate)
}

/// Tells Lambda why Init failed (it shows in the function's error), then hands the error
/// back for the exit status.
async fn report_init_error(extension_id: &str, err: LifecycleError) -> LifecycleError {
    let message = err.to_string();
    tracing::error!(error = %message, "init failed");
    let error_type = err.error_type();
    let request = lambda_extension::requests::init_error(
        extension_id,
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
