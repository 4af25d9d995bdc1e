//! Hostile input on the localhost API: random requests, smuggling shapes, foreign hosts,
//! oversized heads, slow and idle clients.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::raw::{exchange, raw_get, read_answer, read_until_closed, RawAnswer, RAW_WAIT};
use super::{assert_still_serving, MARGIN};
use anyhow::Context;
use lockbox_tests::check::eventually;
use lockbox_tests::client::{parameter_path, secret_path, TOKEN_HEADER};
use lockbox_tests::{Fixture, Lockbox};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A request built from random parts, and whether it is well-formed HTTP/1.1 (so that the
/// application, not hyper's parser, must be the one answering it).
#[derive(Clone)]
struct Hostile {
    bytes: Vec<u8>,
    well_formed: bool,
    oversized: bool,
}

impl std::fmt::Debug for Hostile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: String = String::from_utf8_lossy(&self.bytes)
            .chars()
            .take(400)
            .collect();
        f.debug_struct("Hostile")
            .field("request", &shown)
            .field("well_formed", &self.well_formed)
            .field("oversized", &self.oversized)
            .finish()
    }
}

const ROUTES: &[&str] = &[
    "/ping",
    "/systemsmanager/parameters/get",
    "/systemsmanager/parameters/get/",
    "/secretsmanager/get",
    "/secretsmanager/get/",
    "/systemsmanager/parameters/get-many",
    "/systemsmanager/parameters/get-by-path",
    "/secretsmanager/get-many",
    "/",
    "//secretsmanager/get",
    "/systemsmanager/parameters/get/../../ping",
    "/%2e%2e/%2e%2e/etc/passwd",
];

const QUERY_KEYS: &[&str] = &[
    "name",
    "secretId",
    "withDecryption",
    "version",
    "label",
    "refreshNow",
    "versionStage",
    "versionId",
    "valueOnly",
    "jsonKey",
    "names",
    "path",
    "recursive",
    "secretIds",
];

/// An HTTP token (a method or a header name): one or more `tchar`s.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn percent_encode_all(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

fn query_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9/_.:-]{0,30}",
        // Random bytes, percent-encoded: often invalid UTF-8 once decoded.
        2 => proptest::collection::vec(any::<u8>(), 0..24).prop_map(|b| percent_encode_all(&b)),
        // Broken escapes.
        1 => "(%[0-9a-gA-G]{0,2}|[a-z+]){1,8}",
        // Longer than any name or id.
        1 => (2_000_usize..6_000).prop_map(|n| "a".repeat(n)),
        2 => prop::sample::select(vec![
            "true", "false", "TRUE", "maybe", "", "1", "-1", "0", "99999999999999999999",
            "/app/present", "app/present", "/app/present:1", "AWSCURRENT",
            "arn:aws:ssm:us-east-1:123456789012:parameter/app/present",
            "/aws/reference/secretsmanager/app/present",
        ])
        .prop_map(str::to_owned),
    ]
}

fn query_string() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        4 => prop::sample::select(QUERY_KEYS).prop_map(str::to_owned),
        1 => "[a-zA-Z0-9%+]{0,12}",
    ];
    proptest::collection::vec((key, query_value(), any::<bool>()), 0..6).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v, with_eq)| if with_eq { format!("{k}={v}") } else { k })
            .collect::<Vec<_>>()
            .join("&")
    })
}

/// The request target: a route with a query, or raw bytes that may not be a target at all.
fn target() -> impl Strategy<Value = (Vec<u8>, bool)> {
    prop_oneof![
        // A single read with a name that may or may not exist (or be valid at all): the
        // shape function code sends, so that many cases get as far as AWS.
        4 => (
            prop::sample::select(vec![
                "/systemsmanager/parameters/get?name=",
                "/secretsmanager/get?secretId=",
            ]),
            query_value(),
            proptest::option::of(query_string()),
        )
            .prop_map(|(route, value, more)| {
                let target = match more {
                    Some(more) => format!("{route}{value}&{more}"),
                    None => format!("{route}{value}"),
                };
                (target.into_bytes(), true)
            }),
        4 => (
            prop_oneof![
                3 => prop::sample::select(ROUTES).prop_map(str::to_owned),
                1 => "/[a-zA-Z0-9/_.~%-]{0,40}",
            ],
            proptest::option::of(query_string()),
        )
            .prop_map(|(route, query)| {
                let target = match query {
                    Some(q) => format!("{route}?{q}"),
                    None => route,
                };
                (target.into_bytes(), true)
            }),
        1 => proptest::collection::vec(any::<u8>(), 0..48).prop_map(|mut raw| {
            raw.insert(0, b'/');
            // RFC 3986's characters (less `#` and `[]`, which a request path cannot have);
            // anything else may be refused by hyper's URI parser rather than by lockbox.
            let well_formed = raw
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%:/?@!$&'()*+,;=".contains(b));
            (raw, well_formed)
        }),
    ]
}

/// Extra header lines: random names and values, framing headers, obs-text, big values and
/// bytes that break the header syntax.
fn extra_headers() -> impl Strategy<Value = Vec<(String, Vec<u8>, bool)>> {
    let name = prop_oneof![
        8 => "[A-Za-z][A-Za-z0-9-]{0,15}".prop_map(|n| (n, true)),
        1 => prop::sample::select(vec![
            "X-Forwarded-For", "Content-Length", "Transfer-Encoding", "Expect", "Upgrade",
            "Connection", "Host", "X-Aws-Parameters-Secrets-Token",
        ])
        .prop_map(|n| (n.to_owned(), false)),
        1 => "[ -~]{0,12}".prop_map(|n| {
            let ok = is_token(&n);
            (n, ok)
        }),
    ];
    let value = prop_oneof![
        8 => "[ -~]{0,40}".prop_map(|v| (v.trim().as_bytes().to_vec(), true)),
        1 => proptest::collection::vec(0x80_u8..=0xff, 1..20).prop_map(|v| (v, true)),
        1 => (1_000_usize..20_000).prop_map(|n| (vec![b'v'; n], true)),
        1 => proptest::collection::vec(any::<u8>(), 0..16).prop_map(|v| {
            let ok = v.iter().all(|b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f));
            let ok = ok && v.first().is_none_or(|b| *b != b' ' && *b != b'\t');
            (v, ok)
        }),
    ];
    proptest::collection::vec(
        (name, value).prop_map(|((n, name_ok), (v, value_ok))| (n, v, name_ok && value_ok)),
        0..3,
    )
}

fn hostile_request(port: u16, token: String) -> impl Strategy<Value = Hostile> {
    let method = prop_oneof![
        16 => Just(("GET".to_owned(), true)),
        2 => prop::sample::select(vec!["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"])
            .prop_map(|m| (m.to_owned(), true)),
        1 => "[A-Z]{1,10}".prop_map(|m| (m, true)),
        1 => "[a-z <>]{0,6}".prop_map(|m| {
            let ok = is_token(&m);
            (m, ok)
        }),
    ];
    let host = prop_oneof![
        6 => prop::sample::select(vec![
            Some("localhost".to_owned()),
            Some(format!("127.0.0.1:{port}")),
            Some(format!("[::1]:{port}")),
            None,
        ]),
        1 => prop::sample::select(vec![
            Some("evil.example".to_owned()),
            Some("localhost.evil.example".to_owned()),
            Some(String::new()),
        ]),
    ];
    let token = prop_oneof![
        6 => Just(Some(token)),
        1 => prop::sample::select(vec![Some("wrong-token".to_owned()), Some(String::new()), None]),
    ];
    (method, target(), host, token, extra_headers()).prop_map(
        |((method, method_ok), (target, target_ok), host, token, extras)| {
            let mut bytes = Vec::new();
            bytes.extend_from_slice(method.as_bytes());
            bytes.push(b' ');
            bytes.extend_from_slice(&target);
            bytes.extend_from_slice(b" HTTP/1.1\r\n");
            if let Some(host) = host {
                bytes.extend_from_slice(format!("Host: {host}\r\n").as_bytes());
            }
            if let Some(token) = token {
                bytes.extend_from_slice(format!("{TOKEN_HEADER}: {token}\r\n").as_bytes());
            }
            let mut headers_ok = true;
            for (name, value, ok) in &extras {
                headers_ok &= ok;
                bytes.extend_from_slice(name.as_bytes());
                bytes.extend_from_slice(b": ");
                bytes.extend_from_slice(value);
                bytes.extend_from_slice(b"\r\n");
            }
            bytes.extend_from_slice(b"Connection: close\r\n\r\n");
            // hyper's parser answers for itself near the 16 KiB head bound; only clearly
            // smaller heads must reach the application.
            let size = bytes.len();
            Hostile {
                well_formed: method_ok && target_ok && headers_ok && size < 15 * 1024,
                oversized: method_ok && target_ok && headers_ok && size > 17 * 1024,
                bytes,
            }
        },
    )
}

/// Checks one answer to a hostile request.
fn judge(request: &Hostile, answer: anyhow::Result<RawAnswer>) -> Result<(), TestCaseError> {
    let shown =
        || String::from_utf8_lossy(&request.bytes[..request.bytes.len().min(300)]).into_owned();
    // Always an answer: at least a status line, never a silently dropped connection.
    let answer = answer
        .map_err(|err| TestCaseError::fail(format!("no answer ({err:#}) to {:?}", shown())))?;
    let status = answer.status;
    if request.oversized {
        prop_assert_eq!(status, 431, "{:?} -> {}", shown(), answer.describe());
        return Ok(());
    }
    // Never a server error: AWS is healthy and nothing a client sends is lockbox's fault.
    prop_assert!(
        (200..500).contains(&status),
        "{:?} -> {}",
        shown(),
        answer.describe()
    );
    if status >= 400 {
        let json_error = answer.error_type().is_some();
        if request.well_formed {
            // The application answered: a JSON error body.
            prop_assert!(json_error, "{:?} -> {}", shown(), answer.describe());
        } else {
            // hyper's own refusal of malformed HTTP has no body; anything else is ours.
            prop_assert!(
                json_error || (answer.body.is_empty() && [400, 414, 431].contains(&status)),
                "{:?} -> {}",
                shown(),
                answer.describe()
            );
        }
    }
    Ok(())
}

#[test]
fn random_hostile_requests_always_get_an_http_answer_and_never_hurt_the_server(
) -> anyhow::Result<()> {
    // 300 cases take a few seconds; PROPTEST_CASES asks for a longer run.
    let cases: u32 = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (moto, sandbox, proxy, client) = runtime.block_on(async {
        let Lockbox {
            moto,
            sandbox,
            proxy,
            client,
            ..
        } = Fixture::new()
            .await?
            .param("/app/present", "here")
            .secret("app/present", "here-secret")
            .env("SSM_PARAMETER_STORE_TIMEOUT_MILLIS", "2000")
            .env("SECRETS_MANAGER_TIMEOUT_MILLIS", "2000")
            .start()
            .await?;
        anyhow::Ok((moto, sandbox, proxy, client))
    })?;
    let pid = sandbox.pid().context("running")?;

    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    });
    let started = std::time::Instant::now();
    let port = client.port();
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<u16, usize>::new());
    let outcome = runner.run(
        &hostile_request(port, client.token().to_owned()),
        |request| {
            let answer = runtime.block_on(exchange(port, &request.bytes));
            if let (Ok(answer), Ok(mut statuses)) = (&answer, statuses.lock()) {
                *statuses.entry(answer.status).or_default() += 1;
            }
            judge(&request, answer)?;
            prop_assert_eq!(sandbox.exit_status(), None, "the extension died");
            Ok(())
        },
    );
    eprintln!(
        "hostile input: {cases} cases in {:.2?}, answers by status {:?}, {} AWS calls",
        started.elapsed(),
        statuses.lock().map(|s| s.clone()).unwrap_or_default(),
        proxy.total()
    );
    if let Err(err) = outcome {
        panic!("{err}\n{}", sandbox.report());
    }

    runtime.block_on(assert_still_serving(&sandbox, pid, &client));
    let logs = sandbox.logs();
    assert!(!logs.contains("panicked"), "a panic was logged:\n{logs}");
    drop(moto);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn smuggling_shapes_relays_foreign_hosts_and_oversized_heads_are_refused(
) -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .param("/app/p", "v")
        .secret("app/s", "smuggled-secret")
        .start()
        .await?;
    let (sandbox, proxy, client) = (&lockbox.sandbox, &lockbox.proxy, &lockbox.client);
    let pid = sandbox.pid().context("running")?;
    let secret = secret_path("app/s", &[]);
    let port = client.port();

    // (what, raw request, status, __type when the application answers).
    let smuggled = raw_get(client, &secret, "");
    let cases: Vec<(&str, Vec<u8>, u16, Option<&str>)> = vec![
        (
            "GET with a body",
            [
                raw_get(client, &secret, "Content-Length: 5\r\n"),
                b"hello".to_vec(),
            ]
            .concat(),
            400,
            Some("BodyNotAllowed"),
        ),
        (
            "GET with a chunked body",
            [
                raw_get(client, &secret, "Transfer-Encoding: chunked\r\n"),
                b"0\r\n\r\n".to_vec(),
            ]
            .concat(),
            400,
            Some("BodyNotAllowed"),
        ),
        (
            "Content-Length and Transfer-Encoding together",
            [
                raw_get(
                    client,
                    &secret,
                    "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
                ),
                b"0\r\n\r\n".to_vec(),
            ]
            .concat(),
            400,
            None,
        ),
        (
            "two different Content-Lengths",
            raw_get(
                client,
                &secret,
                "Content-Length: 0\r\nContent-Length: 7\r\n",
            ),
            400,
            None,
        ),
        (
            "an obfuscated Transfer-Encoding",
            raw_get(client, &secret, "Transfer-Encoding: xchunked\r\n"),
            400,
            None,
        ),
        (
            "whitespace before the colon",
            raw_get(client, &secret, "Transfer-Encoding : chunked\r\n"),
            400,
            None,
        ),
        (
            "X-Forwarded-For",
            raw_get(client, &secret, "X-Forwarded-For: 10.1.2.3\r\n"),
            400,
            Some("ForwardedRequest"),
        ),
        (
            "X-Forwarded-For from loopback",
            raw_get(client, "/ping", "x-forwarded-for: 127.0.0.1\r\n"),
            400,
            Some("ForwardedRequest"),
        ),
        (
            "a head over 16 KiB",
            raw_get(
                client,
                "/ping",
                &format!("X-Big: {}\r\n", "b".repeat(20 * 1024)),
            ),
            431,
            None,
        ),
    ];
    for (what, bytes, status, code) in cases {
        let answer = exchange(port, &bytes).await?;
        assert_eq!(answer.status, status, "{what}: {}", answer.describe());
        if let Some(code) = code {
            assert_eq!(
                answer.error_type().as_deref(),
                Some(code),
                "{what}: {}",
                answer.describe()
            );
        }
    }

    // A second, valid request hidden in the body of the first is never answered: the
    // connection either closes or goes on with the request that follows the body.
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
    let outer = format!(
        "GET /ping HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        smuggled.len()
    );
    let follow_up = b"GET /ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    stream
        .write_all(&[outer.into_bytes(), smuggled, follow_up.to_vec()].concat())
        .await?;
    let all = read_until_closed(&mut stream, RAW_WAIT).await?;
    let text = String::from_utf8_lossy(&all);
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..i + 12])
        .collect();
    assert!(
        statuses == ["400"] || statuses == ["400", "200"],
        "a smuggled request was answered: {text}"
    );
    assert!(!text.contains("smuggled-secret"));
    assert_eq!(proxy.total(), 0, "{:?}", proxy.call_counts());

    // Host must name this machine; every loopback spelling is served.
    for host in [
        "evil.example",
        "169.254.169.254",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
        "localhost@evil.example",
        "[::2]:2773",
    ] {
        let request = format!("GET /ping HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let answer = exchange(port, request.as_bytes()).await?;
        assert_eq!(answer.status, 400, "Host {host}: {}", answer.describe());
        assert_eq!(
            answer.error_type().as_deref(),
            Some("InvalidHost"),
            "Host {host}"
        );
    }
    for host in [
        "localhost".to_owned(),
        format!("LOCALHOST:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\n{TOKEN_HEADER}: {}\r\nConnection: close\r\n\r\n",
            parameter_path("/app/p", &[]),
            client.token()
        );
        let answer = exchange(port, request.as_bytes()).await?;
        assert_eq!(answer.status, 200, "Host {host}: {}", answer.describe());
    }
    // The head bound is not tighter than it needs to be.
    let big_but_fine = raw_get(
        client,
        "/ping",
        &format!("X-Big: {}\r\n", "b".repeat(12 * 1024)),
    );
    assert_eq!(exchange(port, &big_but_fine).await?.status, 200);

    // Only the legitimate parameter reads reached AWS (one miss, then hits).
    assert_eq!(
        proxy.calls("GetSecretValue"),
        0,
        "{:?}",
        proxy.call_counts()
    );
    assert_eq!(proxy.calls("GetParameter"), 1);
    assert_still_serving(sandbox, pid, client).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_idle_clients_are_cut_off_and_their_slot_freed() -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .env("LOCKBOX_CLIENT_TIMEOUT_MS", "500")
        .env("LOCKBOX_MAX_CLIENT_CONNECTIONS", "1")
        .start()
        .await?;
    let (sandbox, client) = (&lockbox.sandbox, &lockbox.client);
    let pid = sandbox.pid().context("running")?;
    let port = client.port();
    let ping = b"GET /ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

    // Half a request head, and then nothing.
    let mut slow = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
    slow.write_all(b"GET /ping HTTP/1.1\r\nHost: loc").await?;
    let stopped_at = Instant::now();
    // Meanwhile it holds the only slot.
    let busy = exchange(port, ping).await?;
    assert_eq!(busy.status, 429, "{}", busy.describe());
    // The server gives up on it after the client timeout.
    read_until_closed(&mut slow, Duration::from_secs(3)).await?;
    let closed_after = stopped_at.elapsed();
    assert!(
        closed_after >= Duration::from_millis(450)
            && closed_after < Duration::from_millis(500) + MARGIN,
        "a slow client was cut off after {closed_after:?} with a 500 ms timeout"
    );
    eventually("the slow client's slot to be freed", || async {
        Ok(exchange(port, ping).await?.status == 200)
    })
    .await?;

    // A kept-alive connection left idle loses its slot the same way.
    let mut idle = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
    idle.write_all(b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await?;
    assert_eq!(read_answer(&mut idle).await?.status, 200);
    let idle_since = Instant::now();
    read_until_closed(&mut idle, Duration::from_secs(3)).await?;
    let closed_after = idle_since.elapsed();
    assert!(
        closed_after < Duration::from_millis(500) + MARGIN,
        "an idle keep-alive connection was closed after {closed_after:?}"
    );
    eventually("the idle client's slot to be freed", || async {
        Ok(exchange(port, ping).await?.status == 200)
    })
    .await?;
    assert_still_serving(sandbox, pid, client).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_reads_its_answers_loses_its_slot() -> anyhow::Result<()> {
    let big_value = "v".repeat(256 * 1024);
    let lockbox = Fixture::new()
        .await?
        .secret("app/big", &big_value)
        .env("LOCKBOX_CLIENT_TIMEOUT_MS", "500")
        .env("LOCKBOX_MAX_CLIENT_CONNECTIONS", "1")
        .env("PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL", "info")
        .start()
        .await?;
    let (sandbox, client) = (&lockbox.sandbox, &lockbox.client);
    let pid = sandbox.pid().context("running")?;
    let port = client.port();
    let ping = b"GET /ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    // Loaded into the cache first, so that the answers below are hits, written at once.
    let big = raw_get(client, &secret_path("app/big", &[]), "");
    assert_eq!(exchange(port, &big).await?.status, 200);

    // Asks for the value 64 times on one connection (16 MiB of answers, far more than the
    // socket buffers hold), with a small receive buffer, and never reads.
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut hog = socket
        .connect(std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await?;
    let pipelined = format!(
        "GET {} HTTP/1.1\r\nHost: localhost\r\n{TOKEN_HEADER}: {}\r\n\r\n",
        secret_path("app/big", &[]),
        client.token()
    )
    .repeat(64);
    hog.write_all(pipelined.as_bytes()).await?;
    let stalled_from = Instant::now();
    // Meanwhile it holds the only slot.
    let busy = exchange(port, ping).await?;
    assert_eq!(busy.status, 429, "{}", busy.describe());
    // Once its answer has waited the client timeout for it to read, it loses the slot
    // and the others are served.
    eventually(
        "the slot of the client that never reads to be freed",
        || async { Ok(exchange(port, ping).await?.status == 200) },
    )
    .await?;
    let freed_after = stalled_from.elapsed();
    assert!(
        freed_after < Duration::from_millis(500) + MARGIN,
        "the slot was freed after {freed_after:?} with a 500 ms client timeout"
    );
    assert_eq!(exchange(port, &big).await?.status, 200);
    // Its connection was closed, not left half-written.
    read_until_closed(&mut hog, Duration::from_secs(3)).await?;
    assert!(
        !sandbox.logs().contains(&"v".repeat(64)),
        "a value was logged"
    );
    assert_still_serving(sandbox, pid, client).await;
    Ok(())
}
