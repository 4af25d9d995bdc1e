//! Assertions and small helpers the end-to-end tests share: what an answer from the
//! extension must look like (status, error body, value, cache header), how long Init took,
//! and waiting for a condition with a deadline rather than for a fixed time.

use std::future::Future;
use std::time::Duration;

use anyhow::bail;
use serde_json::Value;
use tokio::time::Instant;

use crate::client::{Response, CACHE_HEADER};
use crate::sandbox::{Lifecycle, Sandbox};

/// Bound for single lifecycle steps and polls.
pub const WAIT: Duration = Duration::from_secs(10);
/// Pause between two looks at a condition that needs time to become true: short, so that
/// a wait ends soon after the condition holds.
const POLL: Duration = Duration::from_millis(50);

/// Asserts a 200 and returns the JSON body.
pub fn ok_json(response: &Response) -> Value {
    assert_eq!(
        response.status, 200,
        "expected 200, got {}: {}",
        response.status, response.body
    );
    response.json().expect("a 200 answer is JSON")
}

/// Asserts a 200 and returns the value of the parameter or secret envelope in it.
pub fn ok_value(response: &Response) -> String {
    let body = ok_json(response);
    envelope_value(&body).unwrap_or_else(|| panic!("no string value in {body}"))
}

/// The value of a parameter or secret envelope, if the answer is one.
pub fn value_of(response: &Response) -> Option<String> {
    envelope_value(&response.json().ok()?)
}

fn envelope_value(body: &Value) -> Option<String> {
    body["Parameter"]["Value"]
        .as_str()
        .or_else(|| body["SecretString"].as_str())
        .map(str::to_owned)
}

/// Asserts an error answer with a JSON body `{"__type": code, "message": ...}` and returns
/// the message.
pub fn assert_error(response: &Response, status: u16, code: &str) -> String {
    let (kind, message) = error_body(response, status, code);
    assert_eq!(kind, code, "wrong __type in {}", response.body);
    message
}

/// Asserts an error answer of `status` whatever its code: a JSON body with a non-empty
/// `__type` and a `message`. Returns the `__type`.
pub fn assert_any_error(response: &Response, status: u16) -> String {
    error_body(response, status, "").0
}

/// The status, and the `__type` and `message` every error body carries; `wanted` only
/// names the expected code in the failure message.
fn error_body(response: &Response, status: u16, wanted: &str) -> (String, String) {
    assert_eq!(
        response.status, status,
        "expected {status} {wanted}, got {}: {}",
        response.status, response.body
    );
    let body = response
        .json()
        .unwrap_or_else(|err| panic!("error body must be JSON: {err:#}"));
    let kind = body["__type"]
        .as_str()
        .unwrap_or_else(|| panic!("error body needs a string __type: {body}"));
    assert!(!kind.is_empty(), "empty __type: {body}");
    let message = body["message"]
        .as_str()
        .unwrap_or_else(|| panic!("error body needs a message: {body}"));
    (kind.to_owned(), message.to_owned())
}

/// The `X-Lockbox-Cache` header, which every single read carries (an answer without one
/// fails the test).
pub fn cache_header(response: &Response) -> &str {
    response
        .header(CACHE_HEADER)
        .unwrap_or_else(|| panic!("no {CACHE_HEADER} header: {:?}", response.headers))
}

/// Polls `check` until it holds, failing after [`WAIT`] with `what`.
pub async fn eventually<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if check().await? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{what}: not within {WAIT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the wall clock has passed `deadline`: for a TTL to run out, which nothing
/// can be asked about.
pub async fn wait_until(deadline: Instant) {
    while Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
}

/// Time from registration to the first `next`: the extension's share of Init.
pub fn init_after_registration(sandbox: &Sandbox) -> Duration {
    let registered = sandbox
        .time_of(|s| matches!(s, Lifecycle::Registered(_)))
        .expect("the extension registered");
    let first_next = sandbox
        .time_of(|s| *s == Lifecycle::NextCalled)
        .expect("the extension called next");
    first_next.saturating_sub(registered)
}
