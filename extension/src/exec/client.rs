//! The localhost API from the caller's side: how the exec wrapper, a process of its own,
//! waits for the running extension (`/ping`) and reads values through the batch routes.
//!
//! Bodies are read into wiped buffers sized from `Content-Length`, so that a value does not
//! linger in memory the wrapper frees before it `exec`s the runtime.

use std::time::Duration;

use futures::future::BoxFuture;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{header, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::domain::{ParameterName, SecretVersion};
use crate::features::reference::resolve::{
    Fetch, FetchedParameter, FetchedSecret, FetchedSecrets, ResolveError, SecretValue,
};
use crate::http::api::{self, AuthToken, MAX_BATCH, TOKEN_HEADER};

/// Largest answer read: 100 parameters of 8 KB or 20 secrets of 64 KB, with room to spare.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// First pause between `/ping` attempts; doubled up to [`PING_PAUSE_MAX`].
const PING_PAUSE: Duration = Duration::from_millis(5);
/// Longest pause between `/ping` attempts.
const PING_PAUSE_MAX: Duration = Duration::from_millis(100);
/// Bound on one `/ping`.
const PING_TIMEOUT: Duration = Duration::from_millis(500);

/// A client for the extension on `127.0.0.1:port`.
#[derive(Clone)]
pub struct LocalApi {
    port: u16,
    token: AuthToken,
    timeout: Duration,
    http: Client<HttpConnector, Empty<Bytes>>,
}

impl std::fmt::Debug for LocalApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalApi")
            .field("port", &self.port)
            .field("token", &self.token)
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn zeroizing<'de, D: Deserializer<'de>>(d: D) -> Result<Zeroizing<String>, D::Error> {
    String::deserialize(d).map(Zeroizing::new)
}

fn zeroizing_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Zeroizing<String>>, D::Error> {
    Option::<String>::deserialize(d).map(|s| s.map(Zeroizing::new))
}

#[derive(Deserialize)]
struct ParametersBody {
    #[serde(rename = "Parameters")]
    parameters: Vec<ParameterBody>,
}

#[derive(Deserialize)]
struct ParameterBody {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "ARN")]
    arn: Option<String>,
    #[serde(rename = "Selector")]
    selector: Option<String>,
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "Value", deserialize_with = "zeroizing")]
    value: Zeroizing<String>,
}

#[derive(Deserialize)]
struct SecretsBody {
    #[serde(rename = "SecretValues")]
    secret_values: Vec<SecretBody>,
    #[serde(rename = "Errors", default)]
    errors: Vec<SecretErrorBody>,
}

#[derive(Deserialize)]
struct SecretBody {
    #[serde(rename = "Name")]
    name: Option<String>,
    #[serde(rename = "ARN")]
    arn: Option<String>,
    #[serde(rename = "SecretString", default, deserialize_with = "zeroizing_opt")]
    secret_string: Option<Zeroizing<String>>,
    #[serde(rename = "SecretBinary", default)]
    secret_binary: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct SecretErrorBody {
    #[serde(rename = "SecretId")]
    secret_id: String,
    #[serde(rename = "ErrorCode")]
    error_code: String,
    #[serde(rename = "Message", default)]
    message: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "__type")]
    kind: String,
    #[serde(default)]
    message: String,
}

impl From<SecretBody> for FetchedSecret {
    fn from(body: SecretBody) -> Self {
        let value = match (body.secret_string, body.secret_binary) {
            (Some(text), _) => SecretValue::Text(text),
            (None, Some(_)) => SecretValue::Binary,
            (None, None) => SecretValue::Text(Zeroizing::new(String::new())),
        };
        FetchedSecret {
            name: body.name,
            arn: body.arn,
            value,
        }
    }
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

impl LocalApi {
    /// A client sending `token`; each request is bounded by `timeout`.
    pub fn new(port: u16, token: AuthToken, timeout: Duration) -> Self {
        let http = Client::builder(TokioExecutor::new()).build_http();
        Self {
            port,
            token,
            timeout,
            http,
        }
    }

    /// Polls `/ping` until the extension answers or `deadline` passes; whether it answered.
    /// At least one attempt is made, even with a deadline already past.
    pub async fn wait_ready(&self, deadline: Instant) -> bool {
        let mut pause = PING_PAUSE;
        loop {
            let bound = PING_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
            let ping = self.send(api::PING, false);
            if let Ok(Ok((StatusCode::OK, _))) =
                tokio::time::timeout(bound.max(PING_PAUSE), ping).await
            {
                return true;
            }
            if Instant::now() + pause >= deadline {
                return false;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(PING_PAUSE_MAX);
        }
    }

    /// One GET; the status and the whole body.
    async fn send(
        &self,
        path_and_query: &str,
        with_token: bool,
    ) -> Result<(StatusCode, Zeroizing<Vec<u8>>), ResolveError> {
        let unreachable = |what: String| ResolveError::Unreachable(what);
        let mut request = Request::get(format!("http://127.0.0.1:{}{path_and_query}", self.port));
        if with_token {
            request = request.header(TOKEN_HEADER, self.token.as_bytes());
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| unreachable(format!("could not build the request: {e}")))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| unreachable(format!("127.0.0.1:{}: {e}", self.port)))?;
        let status = response.status();
        let length = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        if length > MAX_BODY {
            return Err(unreachable(format!(
                "an answer of {length} bytes is too large"
            )));
        }
        let mut body = response.into_body();
        let mut bytes = Zeroizing::new(Vec::with_capacity(length));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| unreachable(format!("reading the answer: {e}")))?;
            if let Some(data) = frame.data_ref() {
                if bytes.len() + data.len() > MAX_BODY {
                    return Err(unreachable("the answer is too large".into()));
                }
                bytes.extend_from_slice(data);
            }
        }
        Ok((status, bytes))
    }

    /// GET with the token, bounded by the timeout; a non-200 answer is its error body.
    async fn get(&self, path_and_query: &str) -> Result<Zeroizing<Vec<u8>>, ResolveError> {
        let (status, body) = tokio::time::timeout(self.timeout, self.send(path_and_query, true))
            .await
            .map_err(|_| {
                ResolveError::Unreachable(format!(
                    "no answer within {} ms",
                    self.timeout.as_millis()
                ))
            })??;
        if status == StatusCode::OK {
            return Ok(body);
        }
        Err(match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(error) => ResolveError::Failed {
                code: error.kind,
                message: error.message,
            },
            Err(_) => ResolveError::Failed {
                code: format!("HTTP{}", status.as_u16()),
                message: "the extension answered with an error".into(),
            },
        })
    }
}

fn undecodable(what: &str) -> ResolveError {
    ResolveError::Unreachable(format!(
        "the extension's answer to {what} could not be read"
    ))
}

impl Fetch for LocalApi {
    fn parameters<'a>(
        &'a self,
        names: &'a [ParameterName],
        decrypt: bool,
    ) -> BoxFuture<'a, Result<Vec<FetchedParameter>, ResolveError>> {
        Box::pin(async move {
            let mut found = Vec::with_capacity(names.len());
            for chunk in names.chunks(MAX_BATCH) {
                let list: Vec<String> = chunk.iter().map(|n| encode(&n.api_name())).collect();
                let path = format!(
                    "{}?names={}&withDecryption={decrypt}",
                    api::PARAMETERS,
                    list.join(",")
                );
                let body = self.get(&path).await?;
                let answer: ParametersBody =
                    serde_json::from_slice(&body).map_err(|_| undecodable("get-many"))?;
                found.extend(answer.parameters.into_iter().map(|p| FetchedParameter {
                    name: p.name,
                    arn: p.arn,
                    selector: p.selector,
                    kind: p.kind,
                    value: p.value,
                }));
            }
            Ok(found)
        })
    }

    fn secrets<'a>(
        &'a self,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<FetchedSecrets, ResolveError>> {
        Box::pin(async move {
            let mut fetched = FetchedSecrets::default();
            for chunk in ids.chunks(MAX_BATCH) {
                let list: Vec<String> = chunk.iter().map(|id| encode(id)).collect();
                let path = format!("{}?secretIds={}", api::SECRETS, list.join(","));
                let body = self.get(&path).await?;
                let answer: SecretsBody =
                    serde_json::from_slice(&body).map_err(|_| undecodable("get-many"))?;
                fetched
                    .found
                    .extend(answer.secret_values.into_iter().map(FetchedSecret::from));
                fetched.errors.extend(answer.errors.into_iter().map(|e| {
                    let err = ResolveError::Failed {
                        code: e.error_code,
                        message: e.message,
                    };
                    (e.secret_id, err)
                }));
            }
            Ok(fetched)
        })
    }

    fn secret<'a>(
        &'a self,
        id: &'a str,
        version: &'a SecretVersion,
    ) -> BoxFuture<'a, Result<FetchedSecret, ResolveError>> {
        Box::pin(async move {
            let mut path = format!("{}?secretId={}", api::SECRET, encode(id));
            if let Some(stage) = &version.stage {
                path.push_str(&format!("&versionStage={}", encode(stage)));
            }
            if let Some(id) = &version.version_id {
                path.push_str(&format!("&versionId={}", encode(id)));
            }
            let body = self.get(&path).await?;
            let answer: SecretBody =
                serde_json::from_slice(&body).map_err(|_| undecodable("get"))?;
            Ok(answer.into())
        })
    }
}
