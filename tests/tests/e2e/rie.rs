//! The layer's real binaries under AWS's Lambda Runtime Interface Emulator: Lambda's own
//! Runtime and Extensions API code, in classic mode and in Lambda Managed Instances mode.
//! The function is `fn-runtime`, which reads from the extension what each invocation's
//! payload names.
//!
//! The emulator must be installed (`make setup` puts it in `.tools/bin`); without it these
//! tests fail saying why, they are never skipped.

use std::time::Duration;

use aws_sdk_ssm::types::ParameterType;
use futures::future::join_all;
use lockbox_tests::client::{parameter_path, secret_path};
use lockbox_tests::rie::{Read, Rie, RieMode};
use lockbox_tests::Moto;
use tokio::time::Instant;

/// How long the emulator gets to shut the environment down (Lambda gives extensions 2 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

fn value(read: &Read) -> String {
    assert_eq!(read.status, 200, "read failed: {}", read.body);
    read.value()
        .unwrap_or_else(|| panic!("no value in {}", read.body))
}

/// The lines lockbox logged with this `message`.
fn lockbox_lines(rie: &Rie, message: &str) -> Vec<String> {
    rie.lines_with(&format!("\"message\":\"{message}\""))
}

/// Stops the emulator ([`Rie::stop`]) and checks that it exited cleanly, that the
/// extension got SHUTDOWN and stopped cleanly (exit status 0), and that nothing had to be
/// killed for overrunning its deadline.
async fn stop_cleanly(rie: &Rie) -> anyhow::Result<()> {
    let status = rie.stop(STOP_TIMEOUT).await?;
    assert!(
        status.success(),
        "the emulator exited with {status}\n{}",
        rie.report()
    );
    let shutdown = lockbox_lines(rie, "shutdown");
    assert_eq!(shutdown.len(), 1, "no SHUTDOWN handled\n{}", rie.report());
    let exiting = lockbox_lines(rie, "lockbox exiting");
    assert!(
        exiting.len() == 1 && exiting[0].contains("\"exit_status\":0"),
        "lockbox did not stop cleanly\n{}",
        rie.report()
    );
    assert!(
        rie.lines_with("lockbox stopped").is_empty(),
        "lockbox stopped with an error\n{}",
        rie.report()
    );
    assert!(
        rie.lines_with("did not exit after deadline").is_empty()
            && rie.lines_with("Sending SIGKILL").is_empty(),
        "the emulator had to kill a process\n{}",
        rie.report()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn classic_mode_inits_serves_invokes_and_exits_cleanly_on_shutdown() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    moto.put_param("/rie/db/host", "db.internal", ParameterType::String, None)
        .await?;
    moto.create_secret("rie/api-key", "key-0f3a").await?;
    let (builder, _client) = Rie::builder(RieMode::Classic, &moto.endpoint())?;
    let rie = builder
        .env("LOCKBOX_PREFETCH", "ssm:/rie/db/host")
        .start()
        .await?;
    let reads = [
        parameter_path("/rie/db/host", &[]),
        secret_path("rie/api-key", &[]),
    ];

    // The emulator runs Init on the first invoke: lockbox registers, prefetches, serves.
    let first = rie.invoke(&reads).await?;
    assert_eq!(value(&first[0]), "db.internal");
    assert_eq!(first[0].cache, "hit", "prefetched during Init");
    assert_eq!(value(&first[1]), "key-0f3a");
    let registered = lockbox_lines(&rie, "registered");
    assert!(
        registered.len() == 1
            && registered[0].contains("\"mode\":\"on-demand\"")
            && registered[0].contains("INVOKE"),
        "{registered:?}"
    );

    // Later invokes: the same values from the cache, over IPv4, `localhost` and IPv6.
    for host in ["127.0.0.1", "localhost", "[::1]"] {
        let again = rie
            .invoke_payload(serde_json::json!({"get": reads, "host": host}))
            .await?;
        assert_eq!(value(&again[0]), "db.internal", "via {host}");
        assert_eq!(value(&again[1]), "key-0f3a", "via {host}");
        assert!(
            again.iter().all(|r| r.cache == "hit"),
            "via {host}: {again:?}"
        );
    }

    // The emulator stops as Lambda ends an environment: SHUTDOWN, then exit.
    stop_cleanly(&rie).await
}

#[tokio::test(flavor = "multi_thread")]
async fn managed_instances_mode_serves_concurrent_invokes_and_refreshes_without_invoke_events(
) -> anyhow::Result<()> {
    const READERS: usize = 8;
    // A short TTL with refresh in its last 60 %: the timer looks every 1.5 s, and a read
    // value is refreshed between 4 s and 5.5 s after it was fetched.
    const TTL_SECS: u64 = 10;
    let moto = Moto::start().await?;
    for i in 0..READERS {
        moto.put_param(
            &format!("/rie/mi/{i}"),
            &format!("value-{i}"),
            ParameterType::String,
            None,
        )
        .await?;
    }
    moto.put_param("/rie/mi/rotating", "old", ParameterType::String, None)
        .await?;
    let (builder, _client) = Rie::builder(
        RieMode::ManagedInstances {
            max_concurrency: READERS as u32,
        },
        &moto.endpoint(),
    )?;
    let rie = builder
        .env("SSM_PARAMETER_STORE_TTL", TTL_SECS.to_string())
        .env("LOCKBOX_REFRESH_AHEAD", "0.6")
        .start()
        .await?;

    // Init succeeded, and lockbox asked for SHUTDOWN alone (the emulator refuses INVOKE).
    let reads: Vec<Vec<String>> = (0..READERS)
        .map(|i| vec![parameter_path(&format!("/rie/mi/{i}"), &[])])
        .collect();
    let answers = join_all(reads.iter().map(|paths| rie.invoke(paths))).await;
    for (i, answer) in answers.into_iter().enumerate() {
        let answer = answer?;
        assert_eq!(value(&answer[0]), format!("value-{i}"));
    }
    let registered = lockbox_lines(&rie, "registered");
    assert!(
        registered.len() == 1
            && registered[0].contains("\"mode\":\"lambda-managed-instances\"")
            && registered[0].contains("SHUTDOWN")
            && !registered[0].contains("INVOKE"),
        "{registered:?}\n{}",
        rie.report()
    );
    assert!(rie.lines_with("INIT failed").is_empty(), "{}", rie.report());

    // A value read once, then rotated in AWS: the background timer refreshes it before its
    // TTL ends, so readers get the new value as a cache hit, with no INVOKE event.
    let rotating = vec![parameter_path("/rie/mi/rotating", &[])];
    let fetched_by = Instant::now();
    let first = rie.invoke(&rotating).await?;
    assert_eq!(value(&first[0]), "old");
    moto.put_param("/rie/mi/rotating", "new", ParameterType::String, None)
        .await?;
    let expiry = fetched_by + Duration::from_secs(TTL_SECS);
    let refreshed = loop {
        let read = rie.invoke(&rotating).await?.remove(0);
        if value(&read) == "new" {
            break read;
        }
        assert!(
            Instant::now() < expiry,
            "the new value did not arrive before the TTL ended\n{}",
            rie.report()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        refreshed.cache, "hit",
        "refreshed ahead by the timer, not fetched again after expiry"
    );
    assert!(
        Instant::now() < expiry,
        "the new value arrived only after the TTL ended"
    );

    stop_cleanly(&rie).await
}
