//! The API is reachable on 127.0.0.1 only.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::assert_still_serving;
use anyhow::Context;
use lockbox_tests::Fixture;
use tokio::net::TcpStream;

/// This machine's IPv4 addresses outside 127.0.0.0/8, from `ip -o -4 addr show`.
fn non_loopback_ipv4() -> Vec<Ipv4Addr> {
    let Ok(output) = std::process::Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next()?.split('/').next()?.parse::<Ipv4Addr>().ok()
        })
        .filter(|ip| !ip.is_loopback())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_is_reachable_on_127_0_0_1_only() -> anyhow::Result<()> {
    let lockbox = Fixture::new().await?.start().await?;
    let (sandbox, client) = (&lockbox.sandbox, &lockbox.client);
    let pid = sandbox.pid().context("running")?;
    let port = client.port();
    assert_eq!(client.get_without_token("/ping").await?.status, 200);

    let mut elsewhere: Vec<IpAddr> = vec![
        // Still loopback, but not the address it binds.
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
        IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    ];
    let outside = non_loopback_ipv4();
    if outside.is_empty() {
        eprintln!("this machine has no non-loopback IPv4 address; checked loopback aliases only");
    }
    elsewhere.extend(outside.into_iter().map(IpAddr::V4));
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
    // The IP TTL of 1 on the listener and accepted sockets is checked by the unit test in
    // extension/src/server.rs: a TTL is not observable from a TCP peer.
    assert_still_serving(sandbox, pid, client).await;
    Ok(())
}
