//! The API is reachable on loopback only: 127.0.0.1 and [::1], on the same port, and
//! whatever `localhost` resolves to.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::assert_still_serving;
use anyhow::Context;
use lockbox_tests::client::{parameter_path, TOKEN_HEADER};
use lockbox_tests::Fixture;
use tokio::net::TcpStream;

/// This machine's addresses outside loopback (IPv6 link-local ones left out: they need a
/// scope to connect to), from `ip -o addr show`.
fn non_loopback_addresses() -> Vec<IpAddr> {
    let Ok(output) = std::process::Command::new("ip")
        .args(["-o", "addr", "show"])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet" || *w == "inet6")?;
            words.next()?.split('/').next()?.parse::<IpAddr>().ok()
        })
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_loopback(),
            IpAddr::V6(v6) => !v6.is_loopback() && (v6.segments()[0] & 0xffc0) != 0xfe80,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_answers_on_ipv4_and_ipv6_loopback_and_whatever_localhost_resolves_to(
) -> anyhow::Result<()> {
    let lockbox = Fixture::new()
        .await?
        .param("/app/v6", "both-stacks")
        .start()
        .await?;
    let client = &lockbox.client;
    let port = client.port();
    let path = parameter_path("/app/v6", &[]);
    let http = reqwest::Client::builder().no_proxy().build()?;
    let read = |url: String| {
        let http = http.clone();
        let token = client.token().to_owned();
        async move {
            let response = http.get(&url).header(TOKEN_HEADER, token).send().await?;
            let status = response.status().as_u16();
            let body = response.text().await?;
            anyhow::Ok((status, body))
        }
    };
    // [::1] explicitly, and `localhost` as clients call it (the AWS docs' URL).
    for host in ["[::1]", "localhost", "127.0.0.1"] {
        let (status, body) = read(format!("http://{host}:{port}{path}")).await?;
        assert_eq!(status, 200, "via {host}: {body}");
        assert!(body.contains("both-stacks"), "via {host}: {body}");
    }
    // Every address `localhost` resolves to answers, so it works whichever one a runtime
    // tries first (Node 17 and later: ::1).
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host(("localhost", port))
        .await?
        .collect();
    assert!(!resolved.is_empty());
    for addr in resolved {
        let (status, body) = read(format!("http://{addr}{path}")).await?;
        assert_eq!(status, 200, "via {addr} (localhost): {body}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_is_reachable_on_loopback_only() -> anyhow::Result<()> {
    let lockbox = Fixture::new().await?.start().await?;
    let (sandbox, client) = (&lockbox.sandbox, &lockbox.client);
    let pid = sandbox.pid().context("running")?;
    let port = client.port();
    assert_eq!(client.get_without_token("/ping").await?.status, 200);

    let mut elsewhere: Vec<IpAddr> = vec![
        // Still loopback, but not an address it binds.
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
    ];
    let outside = non_loopback_addresses();
    if outside.is_empty() {
        eprintln!("this machine has no non-loopback address; checked a loopback alias only");
    }
    elsewhere.extend(outside);
    for ip in elsewhere {
        let addr = SocketAddr::new(ip, port);
        match tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr)).await {
            Ok(Ok(_)) => panic!("the extension's port answered on {addr}"),
            Ok(Err(err)) => assert!(
                matches!(
                    err.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::AddrNotAvailable
                ) || err.raw_os_error().is_some(),
                "{addr}: {err}"
            ),
            Err(_) => panic!("connecting to {addr} neither failed nor succeeded"),
        }
    }
    // The TTL (hop limit) of 1 on the listeners and accepted sockets is checked by the unit
    // test in extension/src/http/server.rs: a TTL is not observable from a TCP peer.
    assert_still_serving(sandbox, pid, client).await;
    Ok(())
}
