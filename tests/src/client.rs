//! Function code's view of the extension: HTTP requests to `127.0.0.1:PORT`.

use std::time::Duration;

use anyhow::Context;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The header function code sends with the session token.
pub const TOKEN_HEADER: &str = "X-Aws-Parameters-Secrets-Token";
/// The header on every single read that says how the cache served it (`hit`, `miss`,
/// `stale`...).
pub const CACHE_HEADER: &str = "x-lockbox-cache";
/// The query pair that asks for a SecureString's plaintext.
pub const WITH_DECRYPTION: (&str, &str) = ("withDecryption", "true");
/// Per-request bound; generous because some tests make the extension wait on AWS.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`ExtClient::send_raw`] waits for the server to answer and close.
const RAW_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP client for the extension's port, carrying the token. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ExtClient {
    port: u16,
    token: String,
    http: reqwest::Client,
}

/// One answer from the extension, fully read.
#[derive(Debug, Clone)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body as text.
    pub body: String,
}

impl Response {
    /// The body parsed as JSON.
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("body is not JSON (status {}): {}", self.status, self.body))
    }

    /// The `__type` of an error body, if it has one.
    pub fn error_type(&self) -> Option<String> {
        self.json()
            .ok()?
            .get("__type")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl ExtClient {
    /// A client for the extension on `127.0.0.1:port` using `token`.
    pub fn new(port: u16, token: impl Into<String>) -> ExtClient {
        let http = reqwest::Client::builder()
            // Proxy settings of the host must not reroute loopback calls.
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("a plain HTTP client always builds");
        ExtClient {
            port,
            token: token.into(),
            http,
        }
    }

    /// The extension's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The token this client sends.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// `http://127.0.0.1:PORT` + `path_and_query`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path_and_query)
    }

    /// GET with the token.
    pub async fn get(&self, path_and_query: &str) -> anyhow::Result<Response> {
        self.request(Method::GET, path_and_query, &[], true).await
    }

    /// GET a parameter by name, with extra query parameters (`withDecryption`, `version`...).
    pub async fn get_parameter(
        &self,
        name: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Response> {
        self.get(&parameter_path(name, extra)).await
    }

    /// GET a secret by id, with extra query parameters (`versionStage`, `versionId`...).
    pub async fn get_secret(
        &self,
        secret_id: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Response> {
        self.get(&secret_path(secret_id, extra)).await
    }

    /// GET without any token header.
    pub async fn get_without_token(&self, path_and_query: &str) -> anyhow::Result<Response> {
        self.request(Method::GET, path_and_query, &[], false).await
    }

    /// GET with the token plus extra headers (which may override the token).
    pub async fn get_with_headers(
        &self,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Response> {
        self.request(Method::GET, path_and_query, headers, true)
            .await
    }

    /// Any method, with or without the token, plus extra headers.
    pub async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        with_token: bool,
    ) -> anyhow::Result<Response> {
        let mut request = self.http.request(method.clone(), self.url(path_and_query));
        let overrides_token = headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case(TOKEN_HEADER));
        if with_token && !overrides_token {
            request = request.header(TOKEN_HEADER, &self.token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path_and_query}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .text()
            .await
            .with_context(|| format!("reading the body of {method} {path_and_query}"))?;
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// Writes `bytes` on a fresh TCP connection and returns whatever comes back until the
    /// server closes the connection or a few seconds pass: for requests no HTTP client
    /// would send.
    pub async fn send_raw(&self, bytes: &[u8]) -> anyhow::Result<String> {
        let mut stream = connect_and_write(self.port, bytes).await?;
        let deadline = Instant::now() + RAW_TIMEOUT;
        let mut answer = Vec::new();
        let mut buf = [0_u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                // A reset after the answer is still an answer.
                Ok(Err(_)) => break,
            }
        }
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }
}

/// A fresh connection to the extension on `127.0.0.1:port` with `bytes` written on it: for
/// requests no HTTP client would send. The caller reads the answer.
pub async fn connect_and_write(port: u16, bytes: &[u8]) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .context("connecting to the extension")?;
    // A server may answer and close before reading everything (an oversized header):
    // what it answered still counts, so a failed write is not an error here.
    let _ = stream.write_all(bytes).await;
    Ok(stream)
}

/// `/systemsmanager/parameters/get?name=NAME&...` with every value URL-encoded.
pub fn parameter_path(name: &str, extra: &[(&str, &str)]) -> String {
    query("/systemsmanager/parameters/get", "name", name, extra)
}

/// `/secretsmanager/get?secretId=ID&...` with every value URL-encoded.
pub fn secret_path(secret_id: &str, extra: &[(&str, &str)]) -> String {
    query("/secretsmanager/get", "secretId", secret_id, extra)
}

/// `/lockbox/keyring?name=NAME&...` with every value URL-encoded.
pub fn keyring_path(name: &str, extra: &[(&str, &str)]) -> String {
    query("/lockbox/keyring", "name", name, extra)
}

/// `route?k=v&...` with every value URL-encoded, for routes without a helper of their own
/// (batches, paths).
pub fn path_with_query(route: &str, pairs: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        query.append_pair(k, v);
    }
    format!("{route}?{}", query.finish())
}

fn query(route: &str, key: &str, value: &str, extra: &[(&str, &str)]) -> String {
    let mut pairs = vec![(key, value)];
    pairs.extend_from_slice(extra);
    path_with_query(route, &pairs)
}
