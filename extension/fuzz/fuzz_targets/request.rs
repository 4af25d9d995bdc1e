//! Whole requests through the extension's API (`router`: the server's own handler), in-process, against a fake AWS: method,
//! target and headers from the fuzzer. Never a panic; every error is a 4xx or 5xx with a
//! JSON body `{"__type", "message"}`.

#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use libfuzzer_sys::fuzz_target;
use lockbox_extension::aws::{
    FailureKind, ParameterBatch, Scopes, SecretBatch, Source, SourceError,
};
use lockbox_extension::cache::{Cache, CacheSettings, PrefetchGate};
use lockbox_extension::domain::{Parameter, ParameterName, Secret, SecretText, SecretVersion};
use lockbox_extension::http::{router, App, AuthToken};
use lockbox_extension::read::Core;
use tower::ServiceExt;

const TOKEN: &str = "fuzz-token";

/// Parameters under `/fuzz/` exist (with a JSON value); nothing else does.
struct FakeAws;

fn not_found(what: &str) -> SourceError {
    SourceError::new(
        FailureKind::NotFound,
        "ParameterNotFound",
        format!("no {what}"),
    )
}

fn parameter(name: &str) -> Parameter {
    Parameter {
        arn: None,
        data_type: Some("text".into()),
        last_modified_date: None,
        name: name.into(),
        extra: None,
        kind: "String".into(),
        value: SecretText::new(r#"{"a":{"b":[1,"two"]},"c.d":"e"}"#.into()),
        version: 1,
    }
}

impl Source for FakeAws {
    fn get_parameter<'a>(
        &'a self,
        name: &'a ParameterName,
        _decrypt: bool,
    ) -> BoxFuture<'a, Result<Parameter, SourceError>> {
        Box::pin(async move {
            if name.name.starts_with("/fuzz/") {
                Ok(parameter(&name.name))
            } else {
                Err(not_found("parameter"))
            }
        })
    }

    fn get_secret<'a>(
        &'a self,
        _id: &'a str,
        _version: Option<&'a SecretVersion>,
    ) -> BoxFuture<'a, Result<Secret, SourceError>> {
        Box::pin(async { Err(not_found("secret")) })
    }

    fn get_parameters<'a>(
        &'a self,
        names: &'a [String],
        _decrypt: bool,
    ) -> BoxFuture<'a, Result<ParameterBatch, SourceError>> {
        Box::pin(async move {
            let (found, invalid) = names
                .iter()
                .cloned()
                .partition::<Vec<_>, _>(|n| n.starts_with("/fuzz/"));
            Ok(ParameterBatch {
                found: found.iter().map(|n| parameter(n)).collect(),
                invalid,
            })
        })
    }

    fn get_parameters_by_path<'a>(
        &'a self,
        path: &'a str,
        _recursive: bool,
        _decrypt: bool,
    ) -> BoxFuture<'a, Result<Vec<Parameter>, SourceError>> {
        Box::pin(async move { Ok(vec![parameter(&format!("{path}x"))]) })
    }

    fn batch_get_secrets<'a>(
        &'a self,
        _ids: &'a [String],
    ) -> BoxFuture<'a, Result<SecretBatch, SourceError>> {
        Box::pin(async { Ok(SecretBatch::default()) })
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime")
    })
}

fn app() -> App {
    let cache = Cache::new(CacheSettings {
        enabled: true,
        capacity: 64,
        parameter_ttl: Duration::from_secs(300),
        secret_ttl: Duration::from_secs(300),
        max_stale: Duration::from_secs(60),
    });
    let core = Core {
        cache,
        scopes: Arc::new(Scopes::home_only(Arc::new(FakeAws))),
    };
    App::new(core, AuthToken::new(TOKEN), PrefetchGate::open())
}

fuzz_target!(|data: &[u8]| {
    // Layout: method line, target line, then `name: value` header lines.
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let method = lines.next().unwrap_or("GET");
    let target = lines.next().unwrap_or("/");
    let mut builder = Request::builder().method(method).uri(target);
    builder = builder.header("x-aws-parameters-secrets-token", TOKEN);
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            builder = builder.header(name.trim(), value.trim());
        }
    }
    // What hyper would have refused before the router sees it.
    let Ok(request) = builder.body(Empty::<Bytes>::new()) else {
        return;
    };
    runtime().block_on(async {
        let response = router(app()).oneshot(request).await.expect("infallible");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a whole body")
            .to_bytes();
        if status.is_client_error() || status.is_server_error() {
            let json: serde_json::Value =
                serde_json::from_slice(&body).expect("an error body is JSON");
            assert!(json["__type"].is_string() && json["message"].is_string());
        }
    });
});
