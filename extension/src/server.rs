//! The localhost HTTP API: the AWS layer's routes, token and response shapes.
//!
//! [`router`] builds the whole API from an [`App`] so tests can drive it in-process;
//! [`bind`] and [`serve`] put it on a loopback socket. Request hygiene (relay, host, method,
//! token) is one middleware, [`guard`], applied before any route runs.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use crate::cache::{Cache, Item, Key, Lookup};
use crate::config::AuthToken;
use crate::error::ApiError;
use crate::model::{ParameterResponse, ResultMetadata, SecretResponse};
use crate::request;
use crate::source::Source;

/// The header function code sends the session token in (the AWS layer's name).
pub const TOKEN_HEADER: &str = "x-aws-parameters-secrets-token";
/// Says whether an answer was a cache `hit`, a `miss`, `stale` or a `bypass`.
pub const CACHE_HEADER: &str = "x-lockbox-cache";

/// What the handlers share: cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
}

struct AppInner {
    cache: Cache,
    source: Arc<dyn Source>,
    token: AuthToken,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("cache", &self.inner.cache)
            .finish()
    }
}

impl App {
    /// Bundles the cache, the value source and the expected token.
    pub fn new(cache: Cache, source: Arc<dyn Source>, token: AuthToken) -> Self {
        Self {
            inner: Arc::new(AppInner {
                cache,
                source,
                token,
            }),
        }
    }

    /// The cache, for the lifecycle (prefetch, refresh, shutdown).
    pub fn cache(&self) -> &Cache {
        &self.inner.cache
    }
}

/// The whole API. Unknown paths and non-GET methods get JSON errors too.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/ping", get(ping))
        .route("/systemsmanager/parameters/get", get(get_parameter))
        .route("/systemsmanager/parameters/get/", get(get_parameter))
        .route("/secretsmanager/get", get(get_secret))
        .route("/secretsmanager/get/", get(get_secret))
        .fallback(no_route)
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// Request hygiene, in the order a request is judged: relayed, foreign host, method, token.
/// `/ping` needs no token so that readiness can be probed without one.
async fn guard(State(app): State<App>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    if headers.contains_key("x-forwarded-for") {
        return ApiError::Forwarded.into_response();
    }
    if !host_is_local(headers) {
        return ApiError::ForeignHost.into_response();
    }
    if req.method() != Method::GET {
        return ApiError::MethodNotAllowed(req.method().to_string()).into_response();
    }
    if req.uri().path() != "/ping" && !token_matches(headers, &app.inner.token) {
        return ApiError::Forbidden.into_response();
    }
    next.run(req).await
}

fn token_matches(headers: &HeaderMap, expected: &AuthToken) -> bool {
    headers
        .get(TOKEN_HEADER)
        .is_some_and(|given| bool::from(given.as_bytes().ct_eq(expected.as_bytes())))
}

/// A request from function code names this machine (or no host at all, as HTTP/1.0 may).
/// Anything else is a DNS-rebinding attempt from a browser or a misrouted request.
fn host_is_local(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST) else {
        return true;
    };
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

async fn ping() -> &'static str {
    "healthy"
}

async fn no_route(req: Request) -> ApiError {
    ApiError::NoRoute(req.uri().path().chars().take(128).collect())
}

async fn get_parameter(
    State(app): State<App>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let req = request::parse_parameter(query.as_deref())?;
    let key = Key::Parameter {
        name: req.name.clone(),
        selector: req.selector.clone(),
        decrypt: req.with_decryption,
    };
    let source = &app.inner.source;
    let lookup = app
        .inner
        .cache
        .get_or_fetch(key, req.refresh_now, || async {
            source.get_parameter(&req).await.map(Item::Parameter)
        })
        .await
        .inspect_err(|err| {
            tracing::warn!(name = %req.name, code = %err.code, "parameter read failed");
        })?;
    tracing::debug!(name = %req.name, cache = lookup.freshness.as_str(), "parameter served");
    Ok(respond(&lookup))
}

async fn get_secret(
    State(app): State<App>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let req = request::parse_secret(query.as_deref())?;
    let key = Key::Secret {
        id: req.secret_id.clone(),
        version_id: req.version_id.clone(),
        stage: req.version_stage.clone(),
    };
    let source = &app.inner.source;
    let lookup = app
        .inner
        .cache
        .get_or_fetch(key, req.refresh_now, || async {
            source.get_secret(&req).await.map(Item::Secret)
        })
        .await
        .inspect_err(|err| {
            tracing::warn!(secret_id = %req.secret_id, code = %err.code, "secret read failed");
        })?;
    tracing::debug!(secret_id = %req.secret_id, cache = lookup.freshness.as_str(), "secret served");
    Ok(respond(&lookup))
}

/// The JSON envelope of the AWS layer, plus the cache headers.
fn respond(lookup: &Lookup) -> Response {
    let body = match &lookup.entry.item {
        Item::Parameter(parameter) => serde_json::to_vec(&ParameterResponse {
            parameter,
            result_metadata: ResultMetadata::default(),
        }),
        Item::Secret(secret) => serde_json::to_vec(&SecretResponse {
            secret,
            result_metadata: ResultMetadata::default(),
        }),
    };
    let Ok(body) = body else {
        return ApiError::Source(crate::source::SourceError::new(
            crate::source::FailureKind::Internal,
            "InternalError",
            "the value could not be encoded",
        ))
        .into_response();
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        CACHE_HEADER,
        HeaderValue::from_static(lookup.freshness.as_str()),
    );
    if lookup.freshness == crate::cache::Freshness::Stale {
        // Standard `Age` header: seconds since AWS last answered for this value.
        headers.insert(header::AGE, HeaderValue::from(lookup.entry.age().as_secs()));
    }
    response
}

/// Binds the loopback listener. Loopback only, and IP TTL 1 so that nothing it sends can
/// cross a router even if a packet were misdirected.
pub async fn bind(port: u16) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    listener.set_ttl(1)?;
    Ok(listener)
}

/// Serves the API on a bound listener until `shutdown` resolves, then finishes in-flight
/// requests and returns.
pub async fn serve<F>(listener: TcpListener, app: App, shutdown: F) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let listener = listener.tap_io(|tcp| {
        // Accepted sockets inherit the listener's TTL on Linux; set it anyway so the
        // property does not depend on the platform.
        let _ = tcp.set_ttl(1);
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await
}
