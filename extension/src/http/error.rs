//! Every failure the localhost API can answer with, and the one place where each becomes an
//! HTTP status and a JSON body `{"__type": code, "message": ...}`.
//!
//! The AWS layer answers every failure with a bare 400; function code then cannot tell a
//! typo from an outage. lockbox keeps AWS's error code and status where AWS answered, and
//! uses 502/504 for AWS being unreachable or slow, and 429 with `Retry-After` when AWS
//! kept throttling for the whole timeout. Messages never contain a value.

use hyper::header::{self, HeaderValue};
use hyper::StatusCode;
use serde::Serialize;

use super::body::{response, Response};
use super::query::RequestError;
use crate::aws::{FailureKind, ScopeError, SourceError};

/// A failed request to the localhost API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The query or headers are malformed.
    #[error("{0}")]
    BadRequest(#[from] RequestError),
    /// The request came through a proxy (`X-Forwarded-For`): only local callers are served.
    #[error("requests relayed through a proxy (X-Forwarded-For) are refused")]
    Forwarded,
    /// A GET with a body (`Content-Length` or `Transfer-Encoding`).
    #[error("a GET request must not have a body")]
    BodyOnGet,
    /// `Host` names something other than this machine.
    #[error("the Host header must name localhost")]
    ForeignHost,
    /// Missing or wrong `X-Aws-Parameters-Secrets-Token`.
    #[error("missing or invalid X-Aws-Parameters-Secrets-Token header")]
    Forbidden,
    /// No such route.
    #[error("no route {0}; see /ping, /systemsmanager/parameters/get, /secretsmanager/get")]
    NoRoute(String),
    /// Only GET is served.
    #[error("method {0} is not allowed; use GET")]
    MethodNotAllowed(String),
    /// `jsonKey` names a key the JSON value does not have.
    #[error("the value has no JSON key {0:?}")]
    JsonKeyNotFound(String),
    /// The value cannot be served as asked (not JSON, binary).
    #[error("{0}")]
    NotText(String),
    /// The role or region asked for cannot be used.
    #[error(transparent)]
    Scope(#[from] ScopeError),
    /// AWS (or the way to it) failed.
    #[error(transparent)]
    Source(#[from] SourceError),
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "__type")]
    kind: &'a str,
    message: String,
}

impl ApiError {
    /// The HTTP status and error code for this failure.
    pub fn status_and_code(&self) -> (StatusCode, &str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "InvalidRequest"),
            ApiError::Forwarded => (StatusCode::BAD_REQUEST, "ForwardedRequest"),
            ApiError::ForeignHost => (StatusCode::BAD_REQUEST, "InvalidHost"),
            ApiError::BodyOnGet => (StatusCode::BAD_REQUEST, "BodyNotAllowed"),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "Forbidden"),
            ApiError::NoRoute(_) => (StatusCode::NOT_FOUND, "UnknownRoute"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            ApiError::JsonKeyNotFound(_) => (StatusCode::NOT_FOUND, "JsonKeyNotFound"),
            ApiError::NotText(_) => (StatusCode::UNPROCESSABLE_ENTITY, "ValueNotJson"),
            ApiError::Scope(err) => match err {
                ScopeError::RoleNotAllowed(_) => (StatusCode::FORBIDDEN, err.code()),
                _ => (StatusCode::BAD_REQUEST, err.code()),
            },
            ApiError::Source(err) => {
                let status = match err.kind {
                    FailureKind::NotFound => StatusCode::NOT_FOUND,
                    FailureKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
                    FailureKind::Unreachable => StatusCode::BAD_GATEWAY,
                    FailureKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
                    // AWS answers throttling with a bare 400; function code that retries
                    // on 429 and honours Retry-After is what a throttled fleet needs.
                    FailureKind::Throttled => StatusCode::TOO_MANY_REQUESTS,
                    // AWS answered: keep its status, as function code may already branch on it.
                    _ => err
                        .aws_status
                        .and_then(|s| StatusCode::from_u16(s).ok())
                        .unwrap_or(StatusCode::BAD_GATEWAY),
                };
                (status, err.code.as_str())
            }
        }
    }
}

impl ApiError {
    /// The answer: the status, and the code and message as JSON.
    pub fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            ApiError::Source(err) => err.message.clone(),
            other => other.to_string(),
        };
        let body = serde_json::to_vec(&Body {
            kind: code,
            message,
        })
        .unwrap_or_else(|_| b"{\"__type\":\"InternalError\",\"message\":\"\"}".to_vec());
        let retry_after = match &self {
            ApiError::Source(err) if err.kind == FailureKind::Throttled => Some(
                err.retry_after
                    .map_or(1, |d| d.as_secs_f64().ceil().max(1.0) as u64),
            ),
            _ => None,
        };
        let mut response = response(body.into(), "application/json");
        *response.status_mut() = status;
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
