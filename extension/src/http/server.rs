//! The localhost HTTP API: the AWS layer's routes, token and response shapes.
//!
//! [`App::handle`] answers one request: request hygiene first (relay, host, method, body,
//! token: [`App::guard`]), then the route, matched on the path directly. There is no
//! router or middleware stack in between: a cache hit is most of what this server does,
//! and each layer of one costs allocations and dispatch on every request. [`router`] is
//! the same as a `tower` service, for driving the API in-process; [`bind`] and [`serve`]
//! put it on a loopback socket.

use std::convert::Infallible;
use std::future::Future;
use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::{Method, Request};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::api::{self, AuthToken, CACHE_HEADER, TOKEN_HEADER};
use super::body::{response, Response, WipingBuffer};
use super::envelope::{
    ParameterResponse, ParametersResponse, PathResponse, ResultMetadata, SecretResponse,
    SecretsResponse,
};
use super::error::ApiError;
use super::query::{self, Output};
use super::write_timeout::WriteTimeout;
use crate::aws::{FailureKind, Source, SourceError};
use crate::cache::{Entry, Freshness, Item, KeyRef, Lookup, PrefetchGate};
use crate::domain::json_key::{json_key, JsonKeyError};
use crate::domain::{AskedScope, Parameter, Secret, SecretVersion};
use crate::features::restore::RestoreWatch;
use crate::read::{self, Core, Purpose};

/// What the handlers share: cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
}

struct AppInner {
    core: Core,
    token: AuthToken,
    gate: PrefetchGate,
    /// Under SnapStart: looked at before each request, so that nothing cached before a
    /// restore is served after it.
    restore: OnceLock<Arc<RestoreWatch>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("cache", &self.inner.core.cache)
            .finish()
    }
}

impl App {
    /// Serves what `core` reads (its cache, through its scopes) to requests that carry
    /// `token`; requests for values being prefetched wait at `gate`.
    pub fn new(core: Core, token: AuthToken, gate: PrefetchGate) -> Self {
        Self {
            inner: Arc::new(AppInner {
                core,
                token,
                gate,
                restore: OnceLock::new(),
            }),
        }
    }

    /// Under SnapStart: every request first lets `watch` look for a restore (and forget
    /// the cache after one). Set once, before serving.
    pub fn watch_restores(&self, watch: Arc<RestoreWatch>) {
        let _ = self.inner.restore.set(watch);
    }

    /// The source for what a request asked for and the names it reads.
    async fn source_for<'n>(
        &self,
        asked: &AskedScope,
        names: impl IntoIterator<Item = &'n str>,
    ) -> Result<Arc<dyn Source>, ApiError> {
        let scopes = &self.inner.core.scopes;
        let scope = scopes.resolve(asked, names)?;
        Ok(scopes.source(&scope).await?)
    }

    /// Answers one request. Its body is never read: every route is a GET, and a request
    /// that announces a body is refused.
    pub async fn handle<B>(&self, request: Request<B>) -> Response {
        let (request, _body) = request.into_parts();
        if let Err(refused) = self.guard(&request.method, request.uri.path(), &request.headers) {
            return refused.into_response();
        }
        if let Some(watch) = self.inner.restore.get() {
            watch.before_serving(&self.inner.core.cache).await;
        }
        let path = request.uri.path();
        let query = request.uri.query();
        // A trailing slash is accepted on the two single reads, as the AWS layer does.
        let route = path
            .strip_suffix('/')
            .filter(|p| *p == api::PARAMETER || *p == api::SECRET)
            .unwrap_or(path);
        let answer = match route {
            api::PING => Ok(response(
                Bytes::from_static(b"healthy"),
                "text/plain; charset=utf-8",
            )),
            api::PARAMETER => self.get_parameter(query).await,
            api::SECRET => self.get_secret(query).await,
            api::PARAMETERS => self.get_parameters(query).await,
            api::PARAMETERS_BY_PATH => self.get_parameters_by_path(query).await,
            api::KEYRING => self.get_keyring(query).await,
            api::SECRETS => self.get_secrets(query).await,
            api::STATS => self.stats(query),
            _ => Err(ApiError::NoRoute(path.chars().take(128).collect())),
        };
        answer.unwrap_or_else(ApiError::into_response)
    }

    /// Request hygiene, in the order a request is judged: relayed, foreign host, method,
    /// body, token. `/ping` needs no token so that readiness can be probed without one.
    fn guard(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), ApiError> {
        let seen = Guarded::scan(headers);
        if seen.forwarded {
            return Err(ApiError::Forwarded);
        }
        if !seen.host.is_none_or(host_is_local) {
            return Err(ApiError::ForeignHost);
        }
        if method != Method::GET {
            return Err(ApiError::MethodNotAllowed(method.to_string()));
        }
        // A GET has no body. One announced anyway is a request-smuggling shape (or a
        // client bug): refused before it is read.
        if seen.body {
            return Err(ApiError::BodyOnGet);
        }
        if path != api::PING
            && !seen
                .token
                .is_some_and(|given| self.inner.token.accepts(given.as_bytes()))
        {
            return Err(ApiError::Forbidden);
        }
        Ok(())
    }

    async fn get_parameter(&self, query: Option<&str>) -> Result<Response, ApiError> {
        let req = query::parse_parameter(query)?;
        let source = self.source_for(&req.scope, [&*req.name]).await?;
        // Borrowed from the query: a hit copies nothing of the name.
        let key = KeyRef::Parameter {
            scope: source.scope(),
            name: &req.name,
            selector: req.selector.as_ref(),
            decrypt: req.with_decryption,
        };
        self.inner.gate.wait_for(key).await;
        let lookup = read::parameter(
            &self.inner.core.cache,
            source.as_ref(),
            &req.name,
            req.selector.as_ref(),
            req.with_decryption,
            req.refresh_now,
        )
        .await;
        let lookup = self.counted("parameter", &req.name, lookup)?;
        let Item::Parameter(parameter) = &lookup.entry.item else {
            return Err(internal("cache entry of the wrong kind"));
        };
        let answer = match &req.output {
            Output::Envelope => envelope(&lookup.entry, parameter.payload_len(), || {
                let body = ParameterResponse {
                    parameter,
                    result_metadata: ResultMetadata::default(),
                };
                json_body(&body, [parameter.payload_len()])
            }),
            output => plain(parameter.value.expose(), output)?,
        };
        Ok(with_cache_headers(answer, &lookup))
    }

    async fn get_secret(&self, query: Option<&str>) -> Result<Response, ApiError> {
        let req = query::parse_secret(query)?;
        let source = self.source_for(&req.scope, [&*req.secret_id]).await?;
        let version = SecretVersion::asked(req.version_id.as_deref(), req.version_stage.as_deref());
        let key = KeyRef::Secret {
            scope: source.scope(),
            id: &req.secret_id,
            version: version.as_ref(),
        };
        self.inner.gate.wait_for(key).await;
        let lookup = read::secret(
            &self.inner.core.cache,
            source.as_ref(),
            &req.secret_id,
            version.as_ref(),
            req.refresh_now,
        )
        .await;
        let lookup = self.counted("secret", &req.secret_id, lookup)?;
        let Item::Secret(secret) = &lookup.entry.item else {
            return Err(internal("cache entry of the wrong kind"));
        };
        let answer = match &req.output {
            Output::Envelope => envelope(&lookup.entry, secret.payload_len(), || {
                let body = SecretResponse {
                    secret,
                    result_metadata: ResultMetadata::default(),
                };
                json_body(&body, [secret.payload_len()])
            }),
            output => {
                let text = match (&secret.secret_string, &secret.secret_binary) {
                    (Some(s), _) => s.expose(),
                    (None, Some(_)) => {
                        return Err(ApiError::NotText(
                            "the secret is binary; read it without valueOnly/jsonKey".into(),
                        ))
                    }
                    (None, None) => "",
                };
                plain(text, output)?
            }
        };
        Ok(with_cache_headers(answer, &lookup))
    }

    async fn get_parameters(&self, query: Option<&str>) -> Result<Response, ApiError> {
        let req = query::parse_parameters(query)?;
        let source = self
            .source_for(&req.scope, req.names.iter().map(|n| n.name.as_str()))
            .await?;
        for name in &req.names {
            let key = KeyRef::Parameter {
                scope: source.scope(),
                name: &name.name,
                selector: name.selector.as_ref(),
                decrypt: req.with_decryption,
            };
            self.inner.gate.wait_for(key).await;
        }
        let purpose = request_purpose(req.refresh_now);
        let many = read::parameters(
            &self.inner.core.cache,
            source.as_ref(),
            &req.names,
            req.with_decryption,
            purpose,
        )
        .await
        .inspect_err(|err| {
            self.count_batch(0, req.names.len());
            tracing::warn!(code = %err.code, "batch parameter read failed");
        })?;
        self.count_batch(many.hits, req.names.len());
        let parameters: Vec<&Parameter> = many
            .found
            .iter()
            .filter_map(|e| match &e.item {
                Item::Parameter(p) => Some(p),
                _ => None,
            })
            .collect();
        let body = ParametersResponse {
            parameters,
            invalid_parameters: &many.invalid,
            result_metadata: ResultMetadata::default(),
        };
        let mut response = json(&body, body.parameters.iter().map(|p| p.payload_len()));
        batch_headers(&mut response, many.hits, req.names.len());
        Ok(response)
    }

    async fn get_parameters_by_path(&self, query: Option<&str>) -> Result<Response, ApiError> {
        let req = query::parse_path(query)?;
        let source = self.source_for(&req.scope, []).await?;
        let key = KeyRef::Path {
            scope: source.scope(),
            path: &req.path,
            recursive: req.recursive,
            decrypt: req.with_decryption,
        };
        self.inner.gate.wait_for(key).await;
        let purpose = request_purpose(req.refresh_now);
        let (entry, freshness) = read::path(
            &self.inner.core.cache,
            source.as_ref(),
            &req.path,
            req.recursive,
            req.with_decryption,
            purpose,
        )
        .await
        .inspect_err(|err| {
            self.count_read(Freshness::Miss);
            tracing::warn!(path = %req.path, code = %err.code, "path read failed");
        })?;
        self.count_read(freshness);
        if !matches!(entry.item, Item::Parameters(_)) {
            return Err(internal("cache entry of the wrong kind"));
        }
        let parameters: Vec<&Parameter> = entry.item.path_parameters().collect();
        let response = json(
            &PathResponse {
                result_metadata: ResultMetadata::default(),
                parameters,
            },
            entry.item.path_parameters().map(Parameter::payload_len),
        );
        Ok(with_cache_headers(
            response,
            &Lookup {
                entry: entry.clone(),
                freshness,
            },
        ))
    }

    async fn get_secrets(&self, query: Option<&str>) -> Result<Response, ApiError> {
        let req = query::parse_secrets(query)?;
        let source = self
            .source_for(&req.scope, req.ids.iter().map(String::as_str))
            .await?;
        for id in &req.ids {
            let key = KeyRef::Secret {
                scope: source.scope(),
                id,
                version: None,
            };
            self.inner.gate.wait_for(key).await;
        }
        let purpose = request_purpose(req.refresh_now);
        let many = read::secrets(&self.inner.core.cache, source.as_ref(), &req.ids, purpose)
            .await
            .inspect_err(|err| {
                self.count_batch(0, req.ids.len());
                tracing::warn!(code = %err.code, "batch secret read failed");
            })?;
        self.count_batch(many.hits, req.ids.len());
        let secrets: Vec<&Secret> = many
            .found
            .iter()
            .filter_map(|e| match &e.item {
                Item::Secret(s) => Some(s),
                _ => None,
            })
            .collect();
        let body = SecretsResponse {
            secret_values: secrets,
            errors: &many.errors,
            result_metadata: ResultMetadata::default(),
        };
        let mut response = json(&body, body.secret_values.iter().map(|s| s.payload_len()));
        batch_headers(&mut response, many.hits, req.ids.len());
        Ok(response)
    }

    /// `GET /lockbox/keyring`: a parameter's `current`, `previous` and `pending` versions,
    /// values and version numbers, from one cache entry filled by one `GetParameters`
    /// call. The prefetch gate is not waited at: prefetch reads no keyring.
    async fn get_keyring(&self, query: Option<&str>) -> Result<Response, ApiError> {
        let req = query::parse_keyring(query)?;
        let source = self.source_for(&req.scope, [req.name.as_str()]).await?;
        let lookup = read::keyring(
            &self.inner.core.cache,
            source.as_ref(),
            &req.name,
            req.with_decryption,
            req.refresh_now,
        )
        .await;
        let lookup = self.counted("keyring", &req.name, lookup)?;
        let Item::Keyring(keyring) = &lookup.entry.item else {
            return Err(internal("cache entry of the wrong kind"));
        };
        let payloads = keyring.versions().map(Parameter::payload_len);
        Ok(with_cache_headers(json(&**keyring, payloads), &lookup))
    }

    /// `GET /lockbox/stats`: the counters since start and the cache's size; with
    /// `entries=true`, each entry's kind, name, scope, age, TTL left, hits and size. Never
    /// a value.
    fn stats(&self, query: Option<&str>) -> Result<Response, ApiError> {
        let with_entries = query::parse_stats(query)?;
        let cache = &self.inner.core.cache;
        let mut body = serde_json::to_value(cache.metrics().stats())
            .map_err(|_| internal("the stats could not be encoded"))?;
        body["cache"] = serde_json::json!(cache.gauges());
        if with_entries {
            body["entries"] = serde_json::to_value(cache.entry_infos())
                .map_err(|_| internal("the entries could not be encoded"))?;
        }
        let body =
            serde_json::to_vec(&body).map_err(|_| internal("the stats could not be encoded"))?;
        Ok(response(body.into(), "application/json"))
    }

    /// A single read, counted and logged by what it read (`kind`) and its name or id:
    /// never a value.
    fn counted(
        &self,
        kind: &'static str,
        name: &str,
        read: Result<Lookup, SourceError>,
    ) -> Result<Lookup, SourceError> {
        match &read {
            Ok(lookup) => {
                self.count_read(lookup.freshness);
                tracing::debug!(name, cache = lookup.freshness.as_str(), "{kind} served");
            }
            Err(err) => {
                self.count_read(Freshness::Miss);
                tracing::warn!(name, code = %err.code, "{kind} read failed");
            }
        }
        read
    }

    /// The counters of what function code's reads were answered with.
    fn count_read(&self, freshness: Freshness) {
        let counters = self.inner.core.cache.metrics().counters();
        match freshness {
            Freshness::Hit => {
                counters.cache_hit();
                counters.aws_call_avoided();
            }
            Freshness::Stale => counters.stale_served(),
            // With the cache off every read is one from AWS.
            Freshness::Miss | Freshness::Bypass => counters.cache_miss(),
        }
    }

    /// A batch read: each value a hit or a miss; the call avoided only when every value
    /// was a hit (otherwise the batch call was made, for fewer names).
    fn count_batch(&self, hits: usize, asked: usize) {
        let counters = self.inner.core.cache.metrics().counters();
        for _ in 0..hits {
            counters.cache_hit();
        }
        for _ in hits..asked {
            counters.cache_miss();
        }
        if hits == asked && asked > 0 {
            counters.aws_call_avoided();
        }
    }
}

/// The whole API as a `tower` service (`router(app).oneshot(request)`), for driving it
/// in-process: the same [`App::handle`] that [`serve`] runs.
pub fn router(app: App) -> Api {
    Api(app)
}

/// See [`router`].
#[derive(Debug, Clone)]
pub struct Api(App);

impl<B: Send + 'static> tower::Service<Request<B>> for Api {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let app = self.0.clone();
        Box::pin(async move { Ok(app.handle(request).await) })
    }
}

/// Why a route reads: function code asked, with or without `refreshNow=true`.
fn request_purpose(refresh_now: bool) -> Purpose {
    if refresh_now {
        Purpose::RequestFresh
    } else {
        Purpose::Request
    }
}

// The names the guard looks for beside the standard ones, parsed once.
static TOKEN: HeaderName = HeaderName::from_static(TOKEN_HEADER);
static FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// What [`App::guard`] judges of a request's headers, found in one pass over them: every
/// request is judged, and one lookup per header would parse and hash each name again.
#[derive(Debug, Default)]
struct Guarded<'h> {
    /// `X-Forwarded-For`: relayed by a proxy.
    forwarded: bool,
    /// The first `Host`.
    host: Option<&'h HeaderValue>,
    /// `Transfer-Encoding`, or a `Content-Length` other than 0 (any of them).
    body: bool,
    /// The first token header.
    token: Option<&'h HeaderValue>,
}

impl<'h> Guarded<'h> {
    fn scan(headers: &'h HeaderMap) -> Self {
        let mut seen = Self::default();
        for (name, value) in headers {
            if *name == header::HOST {
                seen.host.get_or_insert(value);
            } else if *name == TOKEN {
                seen.token.get_or_insert(value);
            } else if *name == FORWARDED_FOR {
                seen.forwarded = true;
            } else if *name == header::TRANSFER_ENCODING {
                seen.body = true;
            } else if *name == header::CONTENT_LENGTH {
                seen.body |= value.as_bytes() != b"0";
            }
        }
        seen
    }
}

/// A request from function code names this machine (HTTP/1.0 may name none, which the
/// caller allows). Anything else is a DNS-rebinding attempt from a browser or a misrouted
/// request.
fn host_is_local(host: &HeaderValue) -> bool {
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1" || name == "::1"
}

fn internal(message: &str) -> ApiError {
    ApiError::Source(SourceError::new(
        FailureKind::Internal,
        "InternalError",
        message,
    ))
}

/// Bytes of names, ARNs, dates and field names the AWS layer's JSON adds around one value.
const ENVELOPE_BYTES: usize = 512;

/// Values up to this size are kept with their cache entry as a ready answer (see
/// [`envelope`]). A larger value's answer is encoded per request: keeping it would hold
/// the value twice, and its encoding is a small part of sending it.
const PREPARED_VALUE_BYTES: usize = 4096;

/// A single read's JSON envelope: the entry's ready answer (made by `encode` on the first
/// hit, then sent as it is), or `encode`'s for a large value.
fn envelope(entry: &Entry, value_bytes: usize, encode: impl Fn() -> Option<Bytes>) -> Response {
    let body = if value_bytes <= PREPARED_VALUE_BYTES {
        entry.prepared(|_| encode())
    } else {
        encode()
    };
    match body {
        Some(body) => response(body, "application/json"),
        None => internal("the value could not be encoded").into_response(),
    }
}

/// A JSON body with room for its values (`payloads`: the bytes of each) and the envelope
/// around each, so that the buffer rarely grows.
fn json<T: serde::Serialize>(body: &T, payloads: impl IntoIterator<Item = usize>) -> Response {
    match json_body(body, payloads) {
        Some(body) => response(body, "application/json"),
        None => internal("the value could not be encoded").into_response(),
    }
}

/// [`json`]'s body, in a buffer wiped when the last copy of it goes.
fn json_body<T: serde::Serialize>(
    body: &T,
    payloads: impl IntoIterator<Item = usize>,
) -> Option<Bytes> {
    let (items, values) = payloads
        .into_iter()
        .fold((0, 0), |(items, values), len| (items + 1, values + len));
    let mut buffer = WipingBuffer::with_capacity(values + items.max(1) * ENVELOPE_BYTES);
    serde_json::to_writer(&mut buffer, body).ok()?;
    Some(buffer.into_bytes())
}

/// The value alone, or one key of it, as text.
fn plain(value: &str, output: &Output) -> Result<Response, ApiError> {
    let picked;
    let text = match output {
        Output::JsonKey(key) => {
            picked = json_key(value, key).map_err(|err| match err {
                JsonKeyError::NotJson(_) => ApiError::NotText(err.to_string()),
                JsonKeyError::NoSuchKey(key) => {
                    ApiError::JsonKeyNotFound(key.chars().take(128).collect())
                }
            })?;
            picked.as_str()
        }
        _ => value,
    };
    let mut buffer = WipingBuffer::with_capacity(text.len());
    buffer
        .write_all(text.as_bytes())
        .map_err(|_| internal("the value could not be copied"))?;
    Ok(response(buffer.into_bytes(), "text/plain; charset=utf-8"))
}

/// Cache outcome of a single read: `X-Lockbox-Cache`, and `Age` when stale.
fn with_cache_headers(mut response: Response, lookup: &Lookup) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        CACHE_HEADER,
        HeaderValue::from_static(lookup.freshness.as_str()),
    );
    if lookup.freshness == Freshness::Stale {
        // Standard `Age` header: seconds since AWS last answered for this value.
        headers.insert(header::AGE, HeaderValue::from(lookup.entry.age().as_secs()));
    }
    response
}

/// Cache outcome of a batch read: how many of how many were hits.
fn batch_headers(response: &mut Response, hits: usize, asked: usize) {
    let value = format!("hits={hits}/{asked}");
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(CACHE_HEADER, value);
    }
}

/// Bounds on what function code (or anything else on the box) can make the server hold.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Connections served at once; one more gets 429 and is closed.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, idle keep-alive included: a client
    /// that never finishes a request loses its slot after this.
    pub header_timeout: Duration,
    /// Time a response may wait for the client to take any more of it: a client that
    /// never reads what it asked for loses its slot after this.
    pub write_timeout: Duration,
    /// Largest request head accepted; larger gets 431.
    pub max_header_bytes: usize,
}

/// The loopback listeners: `127.0.0.1` always, `[::1]` on the same port where the machine
/// has IPv6. Function code that calls `localhost` tries whichever address its resolver
/// lists first (Node 17 and later: `::1`), so both must answer.
#[derive(Debug)]
pub struct Listener {
    v4: TcpListener,
    v6: Option<TcpListener>,
}

impl Listener {
    /// The IPv4 address (and the port both listen on).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.v4.local_addr()
    }

    /// The IPv6 address, when `[::1]` is listened on too.
    pub fn local_addr_v6(&self) -> Option<SocketAddr> {
        self.v6.as_ref().and_then(|l| l.local_addr().ok())
    }

    async fn accept(&self) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
        match &self.v6 {
            Some(v6) => tokio::select! {
                accepted = self.v4.accept() => accepted,
                accepted = v6.accept() => accepted,
            },
            None => self.v4.accept().await,
        }
    }
}

/// Binds the loopback listeners. Loopback only, and a TTL (hop limit) of 1 so that nothing
/// they send can cross a router even if a packet were misdirected. `127.0.0.1` must bind;
/// `[::1]` is added when it can be (an environment without IPv6 keeps IPv4 alone).
pub async fn bind(port: u16) -> std::io::Result<Listener> {
    let v4 = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    v4.set_ttl(1)?;
    let port = v4.local_addr()?.port();
    let v6 = match bind_v6(port) {
        Ok(v6) => Some(v6),
        Err(err) => {
            tracing::warn!(error = %err, port, "not listening on [::1]; 127.0.0.1 only");
            None
        }
    };
    Ok(Listener { v4, v6 })
}

fn bind_v6(port: u16) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::STREAM, None)?;
    socket.set_only_v6(true)?;
    socket.set_reuse_address(true)?;
    socket.set_unicast_hops_v6(1)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::from((Ipv6Addr::LOCALHOST, port)).into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Serves the API on a bound listener until `shutdown` resolves, then finishes in-flight
/// requests (closing idle connections) and returns.
///
/// hyper's connection loop with [`App::handle`] as the service, and what a plain server
/// would not have: a header read timeout, a write timeout, a head size bound and a
/// connection bound answered with 429.
pub async fn serve<F>(
    listener: Listener,
    app: App,
    limits: ServerLimits,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: transient, keep serving.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Accepted sockets inherit the listener's TTL on Linux; set it anyway so the
        // property does not depend on the platform.
        // (IPv6 sockets inherit the hop limit.)
        if stream.local_addr().is_ok_and(|a| a.is_ipv4()) {
            let _ = stream.set_ttl(1);
        }
        let _ = stream.set_nodelay(true);
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse_busy(stream, limits.max_connections));
            continue;
        };
        let stream = WriteTimeout::new(stream, limits.write_timeout);
        let app = app.clone();
        let service = hyper::service::service_fn(move |request| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(app.handle(request).await) }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Answers a connection over the limit with 429 and closes it. The request is read first
/// (briefly) so that the client sees the answer rather than a reset.
async fn refuse_busy(mut stream: tokio::net::TcpStream, limit: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut scratch = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut scratch)).await;
    let body = format!(
        "{{\"__type\":\"TooManyConnections\",\"message\":\"more than {limit} connections are open; retry, or reuse a connection\"}}"
    );
    let head = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::fake::Fake;
    use crate::aws::scopes::tests::scopes;
    use crate::cache::{Cache, CacheSettings, Key};

    /// A TTL cannot be seen from the other end of a TCP connection, so the end-to-end tests
    /// (tests/tests/e2e/hardening.rs) show only that other addresses are refused; the TTL
    /// of 1 is checked here, on the listener and on a socket it accepted.
    #[tokio::test]
    async fn listener_binds_loopback_only_with_ip_ttl_one() {
        let listener = bind(0).await.expect("bind a free loopback port");
        let addr = listener.local_addr().expect("bound address");
        assert_eq!(addr.ip(), Ipv4Addr::LOCALHOST);
        assert_eq!(listener.v4.ttl().expect("listener TTL"), 1);
        if let Some(v6) = &listener.v6 {
            let bound = v6.local_addr().expect("bound IPv6 address");
            assert_eq!(
                (bound.ip(), bound.port()),
                (Ipv6Addr::LOCALHOST.into(), addr.port())
            );
            let socket = socket2::SockRef::from(v6);
            assert_eq!(socket.unicast_hops_v6().expect("hop limit"), 1);
        }

        let _client = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect over loopback");
        let (accepted, _) = listener.accept().await.expect("accept");
        // Set again in `serve` for every accepted socket; inherited on Linux anyway.
        assert_eq!(accepted.ttl().expect("accepted socket TTL"), 1);
    }

    /// A parameter whose labels (label, version, value) sit on versions, answering
    /// `GetParameter` and `GetParameters` as SSM does (with `Selector`, when `echo`).
    fn labelled(echo: bool, labels: &[(&'static str, i64, &'static str)]) -> Arc<Fake> {
        let labels = Arc::new(labels.to_vec());
        let find = move |asked: &str| -> Option<Parameter> {
            let (name, label) = asked.rsplit_once(':')?;
            let &(_, version, value) = labels.iter().find(|(l, _, _)| *l == label)?;
            Some(Parameter {
                extra: crate::domain::ParameterExtra::new(echo.then(|| format!(":{label}")), None),
                kind: "SecureString".into(),
                version,
                ..crate::aws::fake::parameter(name, value)
            })
        };
        let one = find.clone();
        Arc::new(
            Fake::new()
                .on_parameter(move |name| {
                    one(&name.api_name()).ok_or_else(|| {
                        SourceError::new(FailureKind::NotFound, "ParameterNotFound", "no")
                    })
                })
                .on_parameters(move |names| {
                    let mut batch = crate::aws::ParameterBatch::default();
                    // Answers in reverse, to show that order does not place them.
                    for name in names.iter().rev() {
                        match find(name) {
                            Some(found) => batch.found.push(found),
                            None => batch.invalid.push(name.clone()),
                        }
                    }
                    Ok(batch)
                }),
        )
    }

    fn app_over(source: Arc<Fake>) -> App {
        let factory: crate::aws::SourceFactory = Arc::new(
            |_| -> futures::future::BoxFuture<'static, Arc<dyn Source>> {
                unreachable!("every read is through the home scope")
            },
        );
        let scopes = crate::aws::Scopes::new(
            source,
            Some("us-east-1".into()),
            crate::domain::RolePolicy::default(),
            factory,
        );
        let core = Core {
            cache: cache(),
            scopes: Arc::new(scopes),
        };
        App::new(core, AuthToken::new("t0ken"), PrefetchGate::open())
    }

    async fn get(app: &App, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        use http_body_util::{BodyExt, Empty};
        use tower::ServiceExt as _;
        let mut request = Request::get(path).header(header::HOST, "localhost");
        if let Some(token) = token {
            request = request.header(TOKEN_HEADER, token);
        }
        let response = router(app.clone())
            .oneshot(request.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    /// The guard's one pass over the headers judges what a lookup per header did, in the
    /// same order, and any announced body (not only the first `Content-Length`).
    #[test]
    fn the_guard_judges_a_requests_headers_in_order() {
        let app = app_over(labelled(true, &[]));
        let judge = |method: Method, path: &str, pairs: &[(&str, &str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            match app.guard(&method, path, &headers) {
                Ok(()) => "served",
                Err(ApiError::Forwarded) => "forwarded",
                Err(ApiError::ForeignHost) => "foreign host",
                Err(ApiError::MethodNotAllowed(_)) => "method",
                Err(ApiError::BodyOnGet) => "body",
                Err(ApiError::Forbidden) => "forbidden",
                Err(other) => panic!("unexpected refusal: {other}"),
            }
        };
        let get = Method::GET;
        let token = ("x-aws-parameters-secrets-token", "t0ken");
        let param = api::PARAMETER;
        assert_eq!(
            judge(get.clone(), param, &[token]),
            "served",
            "no Host is local"
        );
        assert_eq!(
            judge(get.clone(), param, &[("host", "localhost:2773"), token]),
            "served"
        );
        assert_eq!(
            judge(get.clone(), param, &[("host", "[::1]:2773"), token]),
            "served"
        );
        assert_eq!(
            judge(
                get.clone(),
                param,
                &[("host", "127.0.0.1"), ("host", "evil.example"), token]
            ),
            "served",
            "the first Host is the one judged"
        );
        assert_eq!(
            judge(get.clone(), param, &[("host", "evil.example"), token]),
            "foreign host"
        );
        // Relayed is judged first, before a foreign host, a method, a body or a token.
        assert_eq!(
            judge(
                Method::POST,
                param,
                &[("host", "evil.example"), ("x-forwarded-for", "10.0.0.1")]
            ),
            "forwarded"
        );
        assert_eq!(judge(Method::POST, param, &[token]), "method");
        assert_eq!(
            judge(get.clone(), param, &[("content-length", "0"), token]),
            "served"
        );
        assert_eq!(
            judge(get.clone(), param, &[("content-length", "5")]),
            "body"
        );
        assert_eq!(
            judge(
                get.clone(),
                param,
                &[("content-length", "0"), ("content-length", "5")]
            ),
            "body",
            "any announced body, not only the first length"
        );
        assert_eq!(
            judge(get.clone(), param, &[("transfer-encoding", "chunked")]),
            "body"
        );
        assert_eq!(judge(get.clone(), param, &[]), "forbidden");
        assert_eq!(
            judge(
                get.clone(),
                param,
                &[("x-aws-parameters-secrets-token", "t0ke")]
            ),
            "forbidden"
        );
        assert_eq!(judge(get, api::PING, &[]), "served", "/ping needs no token");
    }

    #[tokio::test]
    async fn the_keyring_route_answers_three_labels_from_one_call_and_one_entry() {
        let source = labelled(
            true,
            &[("current", 2, "key-two"), ("previous", 1, "key-one")],
        );
        let app = app_over(source.clone());
        let path = "/lockbox/keyring?name=/app/key&withDecryption=true";
        let (status, body) = get(&app, path, None).await;
        assert_eq!((status, body["__type"].as_str()), (403, Some("Forbidden")));
        for _ in 0..3 {
            let (status, body) = get(&app, path, Some("t0ken")).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(
                body,
                serde_json::json!({
                    "Name": "/app/key",
                    "Current": {"Value": "key-two", "Version": 2},
                    "Previous": {"Value": "key-one", "Version": 1},
                    "Pending": null,
                })
            );
        }
        let calls = |s: &Fake| (s.count("GetParameters"), s.count("GetParameter"));
        assert_eq!(calls(&source), (1, 0), "one GetParameters for three reads");
        assert_eq!(app.inner.core.cache.len(), 1, "one entry for three labels");
        let totals = app.inner.core.cache.metrics().stats().totals;
        assert_eq!((totals.cache_misses, totals.cache_hits), (1, 2));

        // An endpoint that does not say which label an answer is: the ambiguous label is
        // read on its own, and the answer is the same.
        let quiet = labelled(
            false,
            &[("current", 2, "key-two"), ("previous", 1, "key-one")],
        );
        let (status, body) = get(&app_over(quiet.clone()), path, Some("t0ken")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["Current"]["Value"], "key-two");
        assert_eq!(body["Previous"]["Version"], 1);
        assert_eq!(calls(&quiet), (1, 1));

        // No current: a 404 naming the parameter; a selector in the name: a 400.
        let none = labelled(true, &[("pending", 3, "key-three")]);
        let (status, body) = get(&app_over(none), path, Some("t0ken")).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["__type"], "ParameterVersionLabelNotFound");
        assert!(body["message"]
            .as_str()
            .unwrap()
            .contains("/app/key has no version labelled current"));
        assert!(!body.to_string().contains("key-three"));
        let (status, body) = get(
            &app,
            "/lockbox/keyring?name=/app/key:current",
            Some("t0ken"),
        )
        .await;
        assert_eq!(
            (status, body["__type"].as_str()),
            (400, Some("InvalidRequest"))
        );
    }

    fn cache() -> Cache {
        Cache::new(CacheSettings {
            enabled: true,
            capacity: 100,
            parameter_ttl: Duration::from_secs(300),
            secret_ttl: Duration::from_secs(300),
            max_stale: Duration::ZERO,
        })
    }

    /// A hit sends the entry's ready answer: the very bytes made on the first hit, not a
    /// new encoding; and the entry, which holds that answer, never prints it.
    #[tokio::test]
    async fn a_hit_sends_the_entrys_ready_answer_which_the_entry_never_prints() {
        use http_body_util::{BodyExt, Empty};
        let cache = cache();
        let core = Core {
            cache: cache.clone(),
            scopes: Arc::new(scopes()),
        };
        let app = App::new(core, AuthToken::new("token"), PrefetchGate::open());
        let get = |query: &str| {
            Request::get(format!("{}?{query}", api::PARAMETER))
                .header(TOKEN_HEADER, "token")
                .body(Empty::<Bytes>::new())
                .unwrap()
        };
        let mut answers = Vec::new();
        for query in ["name=/a", "name=/a", "name=/a", "name=/a&valueOnly=true"] {
            let response = app.handle(get(query)).await;
            assert_eq!(response.status(), 200, "{query}");
            let cache_header = response.headers()[CACHE_HEADER]
                .to_str()
                .unwrap()
                .to_owned();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            answers.push((cache_header, body));
        }
        let cache_headers: Vec<&str> = answers.iter().map(|(h, _)| h.as_str()).collect();
        assert_eq!(cache_headers, ["miss", "hit", "hit", "hit"]);
        let envelope: serde_json::Value = serde_json::from_slice(&answers[1].1).unwrap();
        assert_eq!(envelope["Parameter"]["Value"], "via home");
        assert_eq!(answers[0].1, answers[1].1);
        // The second hit sent the first hit's bytes.
        assert_eq!(answers[1].1.as_ptr(), answers[2].1.as_ptr());
        // Another output is not the envelope.
        assert_eq!(&answers[3].1[..], b"via home");

        let home = crate::domain::Scope::default();
        let entry = cache
            .peek_fresh(KeyRef::Parameter {
                scope: &home,
                name: "/a",
                selector: None,
                decrypt: false,
            })
            .expect("cached");
        let printed = format!("{entry:?}");
        assert!(printed.contains("<answer, "), "{printed}");
        assert!(!printed.contains("via home"), "{printed}");
    }

    #[tokio::test]
    async fn the_same_name_through_different_scopes_is_different_cache_entries() {
        let cache = cache();
        let scopes = scopes();
        let mut seen = Vec::new();
        for (query, expected) in [
            ("name=/a", "via home"),
            (
                "name=/a&roleArn=arn:aws:iam::222222222222:role/exact",
                "via arn:aws:iam::222222222222:role/exact",
            ),
            ("name=/a&region=cn-north-1", "via cn-north-1"),
            (
                "name=arn:aws-us-gov:ssm:us-gov-west-1:444444444444:parameter/a",
                "via arn:aws-us-gov:iam::444444444444:role/reader in us-gov-west-1",
            ),
        ] {
            let req = query::parse_parameter(Some(query)).unwrap();
            let scope = scopes.resolve(&req.scope, [&*req.name]).unwrap();
            let source = scopes.source(&scope).await.unwrap();
            for round in 0..2 {
                let lookup = read::parameter(
                    &cache,
                    source.as_ref(),
                    &req.name,
                    req.selector.as_ref(),
                    false,
                    false,
                )
                .await
                .unwrap();
                let Item::Parameter(p) = &lookup.entry.item else {
                    panic!("a parameter");
                };
                assert_eq!(p.value.expose(), expected, "{query} round {round}");
            }
            seen.push(Key::Parameter {
                scope,
                name: (*req.name).into(),
                selector: None,
                decrypt: false,
            });
        }
        assert_eq!(cache.len(), 4);
        for key in &seen {
            assert!(cache.peek_fresh(key.key_ref()).is_some(), "{key:?}");
        }
    }
}
