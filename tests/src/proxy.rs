//! A counting, fault-injecting reverse proxy in front of the local AWS.
//!
//! moto has no latency, throttling or outages, so tests point the extension at this proxy
//! instead: it forwards every request unchanged (method, path, query, headers, body) and the
//! answer back, counts requests per AWS operation, and injects faults on demand. Faults are
//! armed through the [`Proxy`] handle while the extension runs.
//!
//! It can also enforce an account's request quotas ([`Proxy::enforce_quotas`]): one token
//! bucket per quota group, shared by every client of the proxy (as an account's quota is
//! shared by every execution environment), answering `ThrottlingException` past it exactly
//! as AWS does.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// A fault to answer one request with instead of forwarding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 400 `ThrottlingException`, as AWS answers when a rate limit is hit.
    Throttle,
    /// HTTP 429 whose code does not say "Throttl" (`RateExceededException`): a 429 is
    /// throttling whatever its code.
    TooManyRequests,
    /// HTTP 500 `InternalServerError`.
    ServerError,
    /// Close the TCP connection without answering.
    Reset,
    /// Never answer; the client has to give up on its own.
    Stall,
}

/// A full outage of the upstream, as seen by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DownMode {
    /// Normal service.
    #[default]
    Off,
    /// Every new connection is closed at once, and so is any kept-alive connection that
    /// sends a request: the client sees the upstream as unreachable.
    Refuse,
    /// Connections are accepted but nothing is answered until the mode is set back to `Off`.
    Stall,
}

/// The counting, fault-injecting proxy. Cheap to clone; the listener stops when the last
/// clone is dropped.
#[derive(Debug, Clone)]
pub struct Proxy {
    state: Arc<State>,
    addr: SocketAddr,
    _guard: Arc<TaskGuard>,
}

/// Aborts the accept loop (and with it every connection task) when dropped.
#[derive(Debug)]
struct TaskGuard(JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Everything the connection tasks share with the handle.
#[derive(Debug)]
struct State {
    upstream: String,
    client: Client<HttpConnector, ProxyBody>,
    counts: Mutex<Counts>,
    rules: Mutex<VecDeque<FaultRule>>,
    latency: Mutex<Duration>,
    down: watch::Sender<DownMode>,
    faults: AtomicUsize,
    refused: AtomicUsize,
    quotas: Mutex<Vec<Bucket>>,
}

#[derive(Debug, Default)]
struct Counts {
    received: HashMap<String, usize>,
    forwarded: HashMap<String, usize>,
    throttled: HashMap<String, usize>,
    total: usize,
}

/// One of an account's request quotas: the operations that share it, and its rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    /// The operations counted against it together.
    pub operations: &'static [&'static str],
    /// Requests per second, sustained.
    pub per_second: f64,
    /// Requests that may arrive at once after a quiet spell: the bucket's size.
    pub burst: f64,
}

/// The default read quotas of one account and region (Service Quotas, standard
/// throughput). The bucket holds one second's worth of requests: AWS does not publish the
/// burst of these quotas, and a second's worth is the usual shape of its token buckets.
pub const AWS_READ_QUOTAS: [Quota; 3] = [
    Quota {
        operations: &["GetParameter", "GetParameters", "GetParametersByPath"],
        per_second: 40.0,
        burst: 40.0,
    },
    Quota {
        operations: &["BatchGetSecretValue"],
        per_second: 100.0,
        burst: 100.0,
    },
    Quota {
        operations: &["GetSecretValue", "DescribeSecret"],
        per_second: 10_000.0,
        burst: 10_000.0,
    },
];

/// A token bucket for one [`Quota`].
#[derive(Debug)]
struct Bucket {
    quota: Quota,
    tokens: f64,
    refilled_at: Instant,
}

impl Bucket {
    fn new(quota: Quota) -> Self {
        Self {
            quota,
            tokens: quota.burst,
            refilled_at: Instant::now(),
        }
    }

    /// Takes a token if there is one.
    fn admit(&mut self, now: Instant) -> bool {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.quota.per_second).min(self.quota.burst);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// "Answer the next `remaining` requests for `op` (any op when `None`) with `fault`."
#[derive(Debug)]
struct FaultRule {
    op: Option<String>,
    remaining: usize,
    fault: Fault,
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

impl Proxy {
    /// Starts the proxy on a free loopback port in front of `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let state = Arc::new(State {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client,
            counts: Mutex::new(Counts::default()),
            rules: Mutex::new(VecDeque::new()),
            latency: Mutex::new(Duration::ZERO),
            down: watch::Sender::new(DownMode::Off),
            faults: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            quotas: Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&state)));
        Ok(Proxy {
            state,
            addr,
            _guard: Arc::new(TaskGuard(task)),
        })
    }

    /// `http://127.0.0.1:PORT`: what the extension uses as `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The proxy's loopback address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests received for an operation (`GetParameter`, `GetSecretValue`, ...), whether
    /// forwarded or answered with a fault.
    pub fn calls(&self, op: &str) -> usize {
        lock(&self.state.counts)
            .received
            .get(op)
            .copied()
            .unwrap_or(0)
    }

    /// Requests for an operation that reached the upstream.
    pub fn forwarded(&self, op: &str) -> usize {
        lock(&self.state.counts)
            .forwarded
            .get(op)
            .copied()
            .unwrap_or(0)
    }

    /// Requests for an operation answered `ThrottlingException` by an enforced quota.
    pub fn throttled(&self, op: &str) -> usize {
        lock(&self.state.counts)
            .throttled
            .get(op)
            .copied()
            .unwrap_or(0)
    }

    /// Every operation throttled by an enforced quota so far, with its count.
    pub fn throttled_counts(&self) -> HashMap<String, usize> {
        lock(&self.state.counts).throttled.clone()
    }

    /// Enforces `quotas` from now on, each with a full bucket, in place of any enforced
    /// before; an empty list lifts them. A request over its quota is answered as AWS
    /// answers it (HTTP 400 `ThrottlingException`, "Rate exceeded") and counted in
    /// [`Proxy::throttled`], not in [`Proxy::faults_injected`].
    pub fn enforce_quotas(&self, quotas: &[Quota]) {
        *lock(&self.state.quotas) = quotas.iter().copied().map(Bucket::new).collect();
    }

    /// All requests received, of any operation.
    pub fn total(&self) -> usize {
        lock(&self.state.counts).total
    }

    /// Every operation seen so far with its count of received requests.
    pub fn call_counts(&self) -> HashMap<String, usize> {
        lock(&self.state.counts).received.clone()
    }

    /// Forgets every count (faults armed stay armed).
    pub fn reset_counts(&self) {
        *lock(&self.state.counts) = Counts::default();
        self.state.faults.store(0, Ordering::SeqCst);
        self.state.refused.store(0, Ordering::SeqCst);
    }

    /// Requests answered with an injected fault (including ones refused or stalled by
    /// [`DownMode`]).
    pub fn faults_injected(&self) -> usize {
        self.state.faults.load(Ordering::SeqCst)
    }

    /// Connections closed on accept while the proxy was [`DownMode::Refuse`].
    pub fn refused_connections(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// Delay added before every request is forwarded (or faulted).
    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.state.latency) = latency;
    }

    /// Answers the next `n` requests for `op` (or for any operation when `None`) with
    /// `fault`. Rules are applied in the order they were armed.
    pub fn fail_next(&self, op: Option<&str>, n: usize, fault: Fault) {
        lock(&self.state.rules).push_back(FaultRule {
            op: op.map(str::to_owned),
            remaining: n,
            fault,
        });
    }

    /// Drops every armed fault rule.
    pub fn clear_faults(&self) {
        lock(&self.state.rules).clear();
    }

    /// Starts or ends a full outage.
    pub fn set_down(&self, mode: DownMode) {
        self.state.down.send_replace(mode);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not turn every later count into a second panic.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    // Connection tasks live in the set so that aborting this loop ends them too.
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        let mode = *state.down.borrow();
        if mode == DownMode::Refuse {
            state.refused.fetch_add(1, Ordering::SeqCst);
            drop(stream);
            continue;
        }
        connections.spawn(serve_connection(stream, Arc::clone(&state)));
    }
}

async fn serve_connection(stream: TcpStream, state: Arc<State>) {
    // A stalled outage holds new connections unread until it ends.
    wait_while_stalled(&state).await;

    // A duplicate of the socket lets a request handler close the connection under hyper.
    let Ok(std_stream) = stream.into_std() else {
        return;
    };
    let Ok(control) = std_stream.try_clone() else {
        return;
    };
    let Ok(stream) = TcpStream::from_std(std_stream) else {
        return;
    };
    let kill = Arc::new(Notify::new());

    let service = {
        let state = Arc::clone(&state);
        let kill = Arc::clone(&kill);
        hyper::service::service_fn(move |request| {
            let state = Arc::clone(&state);
            let kill = Arc::clone(&kill);
            async move { Ok::<_, Infallible>(handle(request, &state, &kill).await) }
        })
    };
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        () = kill.notified() => {
            let _ = control.shutdown(std::net::Shutdown::Both);
        }
    }
}

async fn wait_while_stalled(state: &State) {
    let mut down = state.down.subscribe();
    let _ = down.wait_for(|mode| *mode != DownMode::Stall).await;
}

async fn handle(request: Request<Incoming>, state: &State, kill: &Notify) -> Response<ProxyBody> {
    let (op, request) = match operation(&request) {
        Some(op) => (op, request.map(BodyExt::boxed)),
        None => query_operation(request).await,
    };
    {
        let mut counts = lock(&state.counts);
        *counts.received.entry(op.clone()).or_default() += 1;
        counts.total += 1;
    }

    let latency = *lock(&state.latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let mode = *state.down.borrow();
    match mode {
        DownMode::Refuse => {
            state.faults.fetch_add(1, Ordering::SeqCst);
            return close_connection(kill).await;
        }
        DownMode::Stall => {
            state.faults.fetch_add(1, Ordering::SeqCst);
            wait_while_stalled(state).await;
            // The client has given up by now; closing is what a recovered network looks like
            // to a connection that was cut mid-request.
            return close_connection(kill).await;
        }
        DownMode::Off => {}
    }

    if let Some(fault) = take_fault(state, &op) {
        state.faults.fetch_add(1, Ordering::SeqCst);
        return match fault {
            Fault::Throttle => throttling(),
            Fault::TooManyRequests => aws_error(
                StatusCode::TOO_MANY_REQUESTS,
                r#"{"__type":"RateExceededException","message":"Rate exceeded"}"#,
            ),
            Fault::ServerError => aws_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"__type":"InternalServerError","message":"injected"}"#,
            ),
            Fault::Reset => close_connection(kill).await,
            Fault::Stall => std::future::pending().await,
        };
    }

    if !within_quota(state, &op) {
        *lock(&state.counts).throttled.entry(op).or_default() += 1;
        return throttling();
    }

    *lock(&state.counts).forwarded.entry(op).or_default() += 1;
    forward(request, state).await
}

/// Whether the operation's quota (if one is enforced) has a token for this request.
fn within_quota(state: &State, op: &str) -> bool {
    let mut quotas = lock(&state.quotas);
    let now = Instant::now();
    quotas
        .iter_mut()
        .find(|bucket| bucket.quota.operations.contains(&op))
        .is_none_or(|bucket| bucket.admit(now))
}

/// AWS's answer past a rate limit.
fn throttling() -> Response<ProxyBody> {
    aws_error(
        StatusCode::BAD_REQUEST,
        r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
    )
}

/// The AWS operation of a JSON-protocol request: the part of `X-Amz-Target` after the dot.
fn operation(request: &Request<Incoming>) -> Option<String> {
    request
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(|target| target.rsplit('.').next().unwrap_or(target).to_owned())
}

/// The operation of a query-protocol request (STS `AssumeRole`): the form body's `Action`.
/// The body is read to find it and forwarded as it was.
async fn query_operation(request: Request<Incoming>) -> (String, Request<ProxyBody>) {
    let fallback = format!("{} {}", request.method(), request.uri().path());
    let (parts, body) = request.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let op = form_urlencoded::parse(&bytes)
        .find(|(key, _)| key == "Action")
        .map(|(_, action)| action.into_owned())
        .unwrap_or(fallback);
    (op, Request::from_parts(parts, full(bytes)))
}

fn take_fault(state: &State, op: &str) -> Option<Fault> {
    let mut rules = lock(&state.rules);
    let index = rules
        .iter()
        .position(|rule| rule.remaining > 0 && rule.op.as_deref().is_none_or(|o| o == op))?;
    let rule = &mut rules[index];
    rule.remaining -= 1;
    let fault = rule.fault;
    if rule.remaining == 0 {
        rules.remove(index);
    }
    Some(fault)
}

async fn close_connection(kill: &Notify) -> Response<ProxyBody> {
    // notify_one stores a permit, so the connection task sees it even if it is not yet
    // waiting; this future is then dropped with the connection and never resolves.
    kill.notify_one();
    std::future::pending().await
}

fn aws_error(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(full(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    response
}

async fn forward(mut request: Request<ProxyBody>, state: &State) -> Response<ProxyBody> {
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri: Uri = match format!("{}{}", state.upstream, path).parse() {
        Ok(uri) => uri,
        Err(err) => return plain(StatusCode::BAD_GATEWAY, format!("bad upstream uri: {err}")),
    };
    *request.uri_mut() = uri;
    match state.client.request(request).await {
        Ok(response) => response.map(|body| body.boxed()),
        Err(err) => plain(StatusCode::BAD_GATEWAY, format!("upstream failed: {err}")),
    }
}

fn plain(status: StatusCode, message: String) -> Response<ProxyBody> {
    let mut response = Response::new(full(Bytes::from(message)));
    *response.status_mut() = status;
    response
}

fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}
