//! A tiny Lambda function runtime for the emulator tests: it polls the Runtime API's
//! `next`, reads from the extension what the invocation's payload names, and answers with
//! what the extension said.
//!
//! The payload is `{"get": ["/systemsmanager/parameters/get?name=...", ...], "host":
//! "localhost"}` (`host` is optional, `127.0.0.1` by default); the answer is
//! `{"results": [{"status": 200, "cache": "hit", "body": "..."}, ...]}`, one per path, in
//! order. A read that cannot reach the extension gives `{"error": "..."}` in its place.
//!
//! `AWS_LAMBDA_MAX_CONCURRENCY` (Lambda Managed Instances) starts that many workers, each
//! with its own `next` loop, as the managed runtimes do; otherwise there is one.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

/// The extension's token header (the AWS layer's name).
const TOKEN_HEADER: &str = "X-Aws-Parameters-Secrets-Token";
/// The header that says how the extension's cache served a read.
const CACHE_HEADER: &str = "x-lockbox-cache";
/// Bound on one read from the extension.
const READ_TIMEOUT: Duration = Duration::from_secs(20);

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("fn-runtime: could not start: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fn-runtime: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API")
        .map_err(|_| anyhow::anyhow!("AWS_LAMBDA_RUNTIME_API is not set"))?;
    // SnapStart functions have the container token instead of the session token.
    let token = std::env::var("AWS_SESSION_TOKEN")
        .or_else(|_| std::env::var("AWS_CONTAINER_AUTHORIZATION_TOKEN"))
        .unwrap_or_default();
    let port = std::env::var("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT")
        .unwrap_or_else(|_| "2773".to_owned());
    let workers = std::env::var("AWS_LAMBDA_MAX_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(READ_TIMEOUT)
        .build()?;
    let worker = Worker {
        api,
        token,
        port,
        http,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let worker = worker.clone();
        tasks.spawn(async move { worker.serve().await });
    }
    // Workers loop until the Runtime API goes away; the first to stop ends the runtime.
    match tasks.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(err)) => Err(err.into()),
        None => Ok(()),
    }
}

#[derive(Clone)]
struct Worker {
    api: String,
    token: String,
    port: String,
    http: reqwest::Client,
}

impl Worker {
    async fn serve(&self) -> anyhow::Result<()> {
        // `next` long-polls: no timeout on it.
        let runtime_api = reqwest::Client::builder().no_proxy().build()?;
        loop {
            let next = runtime_api
                .get(format!(
                    "http://{}/2018-06-01/runtime/invocation/next",
                    self.api
                ))
                .send()
                .await?;
            let request_id = next
                .headers()
                .get("lambda-runtime-aws-request-id")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| anyhow::anyhow!("next answered without a request id"))?
                .to_owned();
            let payload: Value = next.json().await.unwrap_or(Value::Null);
            let answer = self.handle(&payload).await;
            runtime_api
                .post(format!(
                    "http://{}/2018-06-01/runtime/invocation/{request_id}/response",
                    self.api
                ))
                .json(&answer)
                .send()
                .await?
                .error_for_status()?;
        }
    }

    /// Reads each path the payload names from the extension.
    async fn handle(&self, payload: &Value) -> Value {
        let host = payload["host"].as_str().unwrap_or("127.0.0.1");
        let paths: Vec<&str> = payload["get"]
            .as_array()
            .map(|paths| paths.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut results = Vec::with_capacity(paths.len());
        for path in paths {
            let url = format!("http://{host}:{}{path}", self.port);
            let read = self
                .http
                .get(&url)
                .header(TOKEN_HEADER, &self.token)
                .send()
                .await;
            results.push(match read {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let cache = response
                        .headers()
                        .get(CACHE_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let body = response.text().await.unwrap_or_default();
                    json!({"status": status, "cache": cache, "body": body})
                }
                Err(err) => json!({"error": err.to_string()}),
            });
        }
        json!({ "results": results })
    }
}
