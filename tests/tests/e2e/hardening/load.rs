//! Load: cache hits and mixed traffic on many keep-alive connections (hyper's client, one
//! connection per task), and the bound on connections.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::assert_still_serving;
use super::raw::{exchange, read_answer};
use anyhow::Context;
use aws_sdk_ssm::types::ParameterType;
use futures::future::{join_all, try_join_all};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use lockbox_tests::check::{eventually, value_of};
use lockbox_tests::client::{parameter_path, secret_path, ExtClient, TOKEN_HEADER};
use lockbox_tests::Fixture;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// CPU time (user + system) a process has used, from `/proc/PID/stat` (`self` for this one).
fn cpu_time(pid: &str) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after_name = stat.rsplit_once(')').context("odd stat line")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // USER_HZ is 100 on every Linux this runs on.
    Ok(Duration::from_millis(ticks * 10))
}

/// Resident memory of a process in KiB, from `/proc/PID/status`.
fn vm_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    line.split_whitespace()
        .nth(1)
        .context("VmRSS has no number")?
        .parse()
        .context("VmRSS is not a number")
}

type Sender = SendRequest<Empty<Bytes>>;

async fn keep_alive_connection(port: u16) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One request on a kept-alive connection: status and body.
async fn send(
    sender: &mut Sender,
    method: Method,
    target: &str,
    token: &str,
) -> anyhow::Result<(u16, Bytes)> {
    sender.ready().await?;
    let request = Request::builder()
        .method(method)
        .uri(target)
        .header(hyper::header::HOST, "127.0.0.1")
        .header(TOKEN_HEADER, token)
        .body(Empty::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// What one request of a load run must get back.
#[derive(Debug, Clone)]
enum Expect {
    /// 200 with exactly these bytes.
    Body(Bytes),
    /// An error status with a JSON body of this `__type`.
    Error(u16, &'static str),
}

/// One request of a load run.
#[derive(Debug, Clone)]
struct Planned {
    method: Method,
    target: String,
    token: String,
    expect: Expect,
}

/// What a load phase saw: requests answered as expected, and the first few surprises.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    unexpected: usize,
    examples: Vec<String>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.ok += other.ok;
        self.unexpected += other.unexpected;
        self.examples.extend(
            other
                .examples
                .into_iter()
                .take(5 - self.examples.len().min(5)),
        );
    }
}

/// Runs `per_connection` requests on every connection at once; request `i` of connection
/// `c` is `plan(c * per_connection + i)`. Returns the connections for the next phase.
async fn load_phase<P>(
    senders: Vec<Sender>,
    per_connection: usize,
    plan: P,
) -> anyhow::Result<(Vec<Sender>, Tally)>
where
    P: Fn(usize) -> Planned + Send + Sync + Clone + 'static,
{
    let tasks = senders.into_iter().enumerate().map(|(c, mut sender)| {
        let plan = plan.clone();
        tokio::spawn(async move {
            let mut tally = Tally::default();
            for i in 0..per_connection {
                let planned = plan(c * per_connection + i);
                let outcome = send(
                    &mut sender,
                    planned.method.clone(),
                    &planned.target,
                    &planned.token,
                )
                .await;
                let fine = match (&outcome, &planned.expect) {
                    (Ok((200, body)), Expect::Body(expected)) => body == expected,
                    (Ok((status, body)), Expect::Error(want, code)) => {
                        *status == *want
                            && serde_json::from_slice::<Value>(body)
                                .is_ok_and(|v| v["__type"] == *code && v["message"].is_string())
                    }
                    _ => false,
                };
                if fine {
                    tally.ok += 1;
                } else {
                    tally.unexpected += 1;
                    if tally.examples.len() < 5 {
                        tally.examples.push(format!(
                            "{} {} -> {:?} (wanted {:?})",
                            planned.method, planned.target, outcome, planned.expect
                        ));
                    }
                }
            }
            (sender, tally)
        })
    });
    let mut senders = Vec::new();
    let mut tally = Tally::default();
    for joined in try_join_all(tasks).await? {
        senders.push(joined.0);
        tally.add(joined.1);
    }
    Ok((senders, tally))
}

/// Reads each parameter of `names` once, asserting a 200; returns each target with the exact
/// bytes it answered, which every later read of it must match.
async fn read_each(client: &ExtClient, names: &[String]) -> anyhow::Result<Vec<(String, Bytes)>> {
    let mut read = Vec::new();
    for name in names {
        let target = parameter_path(name, &[]);
        let response = client.get(&target).await?;
        assert_eq!(response.status, 200);
        read.push((target, Bytes::from(response.body)));
    }
    Ok(read)
}

/// Opens [`LOAD_CONNECTIONS`] kept-alive connections and runs a warm-up phase of
/// `per_connection` requests of `plan` on them, which must all go as planned. Returns the
/// connections and the extension's resident memory after the warm-up: the allocator's and
/// the runtime's growth on the first requests (buffers, per-thread arenas, connection
/// state) is not growth under load.
async fn warmed_up<P>(
    client: &ExtClient,
    pid: u32,
    per_connection: usize,
    plan: P,
) -> anyhow::Result<(Vec<Sender>, u64)>
where
    P: Fn(usize) -> Planned + Send + Sync + Clone + 'static,
{
    let senders =
        try_join_all((0..LOAD_CONNECTIONS).map(|_| keep_alive_connection(client.port()))).await?;
    let (senders, warm) = load_phase(senders, per_connection, plan).await?;
    assert_eq!(warm.unexpected, 0, "{:?}", warm.examples);
    Ok((senders, vm_rss_kib(pid)?))
}

/// Every request of a load phase got what was planned for it.
fn assert_no_surprises(tally: &Tally) {
    assert_eq!(
        tally.unexpected, 0,
        "unexpected answers: {:?}",
        tally.examples
    );
}

/// Resident memory under load grew by 10% at most.
fn assert_memory_bounded(before: u64, after: u64) {
    assert!(
        after * 10 <= before * 11,
        "resident memory grew more than 10%: {before} KiB -> {after} KiB"
    );
}

/// Connections held open by the load tests.
const LOAD_CONNECTIONS: usize = 64;
/// The load tests run at INFO, as a deployed function would: at DEBUG every request is a
/// log line, and writing 200,000 of them would be most of what is measured.
const QUIET: (&str, &str) = ("PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL", "INFO");

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_thousand_cache_hits_on_64_connections_without_errors_or_growth(
) -> anyhow::Result<()> {
    const REQUESTS: usize = 200_000;
    const PER_CONNECTION: usize = REQUESTS / LOAD_CONNECTIONS + 1;
    const WARM_UP_PER_CONNECTION: usize = 64;
    let fixture = Fixture::new().await?;
    let moto = fixture.moto();
    let mut expected = Vec::new();
    for i in 0..16 {
        let name = format!("/load/p{i}");
        moto.put_param(
            &name,
            &format!("value-{i}-{}", "x".repeat(48)),
            ParameterType::String,
            None,
        )
        .await?;
        expected.push(name);
    }
    moto.create_secret("load/s", "load-secret-value").await?;
    let lockbox = fixture.envs(&[QUIET]).start().await?;
    let (sandbox, proxy, client) = (&lockbox.sandbox, &lockbox.proxy, &lockbox.client);
    let pid = sandbox.pid().context("running")?;

    // Each target read once (a miss); every later read must get exactly the same bytes.
    let mut targets = read_each(client, &expected).await?;
    let secret_target = secret_path("load/s", &[]);
    let secret = client.get(&secret_target).await?;
    targets.push((secret_target, Bytes::from(secret.body)));
    let aws_calls = proxy.total();

    let token = client.token().to_owned();
    let plan = move |i: usize| {
        let (target, body) = &targets[i % targets.len()];
        Planned {
            method: Method::GET,
            target: target.clone(),
            token: token.clone(),
            expect: Expect::Body(body.clone()),
        }
    };
    let (senders, before) = warmed_up(client, pid, WARM_UP_PER_CONNECTION, plan.clone()).await?;

    let started = Instant::now();
    let (server_cpu, client_cpu) = (cpu_time(&pid.to_string())?, cpu_time("self")?);
    let (senders, tally) = load_phase(senders, PER_CONNECTION, plan).await?;
    let took = started.elapsed();
    let server_cpu = cpu_time(&pid.to_string())?.saturating_sub(server_cpu);
    let client_cpu = cpu_time("self")?.saturating_sub(client_cpu);
    let after = vm_rss_kib(pid)?;
    eprintln!(
        "load: {} cache hits on {LOAD_CONNECTIONS} connections in {took:.2?} ({:.0}/s); \
         CPU: extension {server_cpu:.2?}, test client {client_cpu:.2?}; \
         VmRSS {before} KiB -> {after} KiB",
        tally.ok,
        tally.ok as f64 / took.as_secs_f64()
    );
    assert_no_surprises(&tally);
    assert!(tally.ok >= REQUESTS, "only {} requests answered", tally.ok);
    assert_eq!(proxy.total(), aws_calls, "a cache hit called AWS");
    assert_memory_bounded(before, after);
    drop(senders);
    assert_still_serving(sandbox, pid, client).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn mixed_load_of_hits_misses_errors_and_a_hot_new_key_has_no_surprises() -> anyhow::Result<()>
{
    const PER_CONNECTION: usize = 300;
    const WARM_UP_PER_CONNECTION: usize = 100;
    /// One request in this many is a read of a name that does not exist (an AWS call).
    const MISS_EVERY: usize = 50;
    let fixture = Fixture::new().await?;
    let moto = fixture.moto();
    let mut names = Vec::new();
    for i in 0..8 {
        let name = format!("/mix/p{i}");
        moto.put_param(&name, &format!("mixed-{i}"), ParameterType::String, None)
            .await?;
        names.push(name);
    }
    moto.create_secret("mix/hot", "hot-secret-value").await?;
    let lockbox = fixture.envs(&[QUIET]).start().await?;
    let (sandbox, proxy, client) = (&lockbox.sandbox, &lockbox.proxy, &lockbox.client);
    let pid = sandbox.pid().context("running")?;

    let hits = read_each(client, &names).await?;
    let batch_target = format!(
        "/systemsmanager/parameters/get-many?names={}",
        names[..3].join(",")
    );
    let batch = client.get(&batch_target).await?;
    assert_eq!(batch.status, 200, "{}", batch.body);
    let batch_body = Bytes::from(batch.body);
    assert_eq!(
        proxy.total(),
        names.len(),
        "the batch of cached names was all hits"
    );

    let token = client.token().to_owned();
    let plan = move |i: usize| {
        let get = |target: String, expect| Planned {
            method: Method::GET,
            target,
            token: token.clone(),
            expect,
        };
        match i % MISS_EVERY {
            0 => get(
                parameter_path(&format!("/mix/unknown/{i}"), &[]),
                Expect::Error(404, "ParameterNotFound"),
            ),
            1 => Planned {
                token: "not-the-token".to_owned(),
                ..get(hits[0].0.clone(), Expect::Error(403, "Forbidden"))
            },
            2 => get(
                parameter_path("/mix/p1", &[("colour", "blue")]),
                Expect::Error(400, "InvalidRequest"),
            ),
            3 => Planned {
                method: Method::POST,
                ..get(hits[1].0.clone(), Expect::Error(405, "MethodNotAllowed"))
            },
            4 => get(format!("/nowhere/{i}"), Expect::Error(404, "UnknownRoute")),
            5 => get(batch_target.clone(), Expect::Body(batch_body.clone())),
            _ => {
                let (target, body) = &hits[i % hits.len()];
                get(target.clone(), Expect::Body(body.clone()))
            }
        }
    };
    // Memory "before" is taken after a warm-up of the same mix.
    let (senders, before) = warmed_up(client, pid, WARM_UP_PER_CONNECTION, plan.clone()).await?;
    proxy.reset_counts();

    // Fifty first reads of a key nobody read yet, at once, in the middle of the mix.
    let started = Instant::now();
    let hot_reads = join_all((0..50).map(|_| {
        let client = client.clone();
        async move { client.get_secret("mix/hot", &[]).await }
    }));
    let (mixed, hot) = tokio::join!(load_phase(senders, PER_CONNECTION, plan), hot_reads);
    let (senders, tally) = mixed?;
    let took = started.elapsed();
    let after = vm_rss_kib(pid)?;
    let total = LOAD_CONNECTIONS * PER_CONNECTION;
    eprintln!(
        "mixed load: {total} requests on {LOAD_CONNECTIONS} connections in {took:.2?}; \
         VmRSS {before} KiB -> {after} KiB"
    );

    assert_no_surprises(&tally);
    assert_eq!(tally.ok, total);
    for response in hot {
        assert_eq!(value_of(&response?).as_deref(), Some("hot-secret-value"));
    }
    assert_eq!(
        proxy.calls("GetSecretValue"),
        1,
        "fifty first reads, one AWS call"
    );
    // Exactly one AWS call per unknown name (errors are not cached), none for anything else.
    let misses = total.div_ceil(MISS_EVERY);
    assert_eq!(proxy.calls("GetParameter"), misses);
    assert_eq!(proxy.total(), misses + 1, "{:?}", proxy.call_counts());
    assert_memory_bounded(before, after);
    drop(senders);
    assert_still_serving(sandbox, pid, client).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_limit_get_429_and_a_closed_one_frees_its_slot() -> anyhow::Result<()>
{
    let lockbox = Fixture::new()
        .await?
        .env("LOCKBOX_MAX_CLIENT_CONNECTIONS", "4")
        .start()
        .await?;
    let (sandbox, client) = (&lockbox.sandbox, &lockbox.client);
    let pid = sandbox.pid().context("running")?;
    let ping = b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n";

    // Four kept-alive connections, each served once and then left idle.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, client.port())).await?;
        stream.write_all(ping).await?;
        let answer = read_answer(&mut stream).await?;
        assert_eq!(answer.status, 200, "{}", answer.describe());
        held.push(stream);
    }

    // The fifth, and a burst after it, are refused at once with a JSON 429: no queue.
    let started = Instant::now();
    let refused = try_join_all((0..20).map(|_| exchange(client.port(), ping))).await?;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refusals took {:?}",
        started.elapsed()
    );
    for answer in &refused {
        assert_eq!(answer.status, 429, "{}", answer.describe());
        assert_eq!(answer.error_type().as_deref(), Some("TooManyConnections"));
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert_eq!(answer.header("connection"), Some("close"));
    }

    // The held connections are still served.
    for stream in &mut held {
        stream.write_all(ping).await?;
        assert_eq!(read_answer(stream).await?.status, 200);
    }

    // One goes away: its slot is free for a new client.
    drop(held.pop());
    eventually("a freed slot to serve a new connection", || async {
        Ok(exchange(client.port(), ping).await?.status == 200)
    })
    .await?;
    // All of them go away: four new clients at once are served, by the same process.
    drop(held);
    eventually("every slot to be freed", || async {
        let all = try_join_all((0..4).map(|_| exchange(client.port(), ping))).await?;
        Ok(all.iter().all(|answer| answer.status == 200))
    })
    .await?;
    assert_eq!(sandbox.exit_status(), None, "{}", sandbox.report());
    assert_eq!(sandbox.pid(), Some(pid), "the extension was restarted");
    Ok(())
}
