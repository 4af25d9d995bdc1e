//! End-to-end harness for lockbox: the real binaries, a local AWS and Lambda's APIs, all on
//! loopback.
//!
//! - [`moto`]: a moto server per test (the local AWS; kept and cleared between tests), with
//!   seeding helpers.
//! - [`proxy`]: a reverse proxy in front of moto that counts AWS calls per operation and
//!   injects latency, throttling, server errors, resets, stalls and outages.
//! - [`sandbox`]: Lambda's side of the Extensions and Runtime APIs; starts a binary the way
//!   Lambda does and records its lifecycle.
//! - [`rie`]: AWS's Lambda Runtime Interface Emulator running the layer's binaries in a
//!   private `/opt`, with a tiny function runtime (`src/bin/fn-runtime.rs`).
//! - [`client`]: function code's HTTP client for the extension's port.
//! - [`bins`]: where the built binaries are; free ports.
//! - [`check`]: the assertions and small helpers the end-to-end tests share.
//! - [`fixture`]: the opening most tests share: moto seeded with parameters and secrets,
//!   the proxy, the extension started with the test's environment.
//! - [`fleet`]: many extensions started at once behind one quota-enforcing proxy, as a
//!   function scaling out; used by `make bench` and the fleet tests.
//!
//! Data flows: test code -> [`client::ExtClient`] -> lockbox (under [`sandbox::Sandbox`])
//! -> [`proxy::Proxy`] -> [`moto::Moto`]. [`Fixture`] wires all of it up.

pub mod bins;
pub mod check;
pub mod client;
pub mod fixture;
pub mod fleet;
pub mod moto;
pub mod proxy;
pub mod rie;
pub mod sandbox;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::process::ExitStatus;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

pub use crate::client::{ExtClient, Response};
pub use crate::fixture::{Fixture, Lockbox};
pub use crate::moto::Moto;
pub use crate::proxy::{DownMode, Fault, Proxy};
pub use crate::sandbox::{Lifecycle, Sandbox, SandboxBuilder};

/// Lambda's limit for an extension's Init; the harness waits no longer.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// The extension's port may be taken between picking and binding it; retry this often.
const SPAWN_ATTEMPTS: usize = 3;

/// A sandbox builder for the real `lockbox` binary with the environment Lambda would give
/// it, pointed at `aws_endpoint`, plus a client for the port and token it was given.
///
/// Tests that need to remove or break a variable start from this; most use [`Fixture`].
pub fn lockbox_builder(aws_endpoint: &str) -> anyhow::Result<(SandboxBuilder, ExtClient)> {
    let (env, client) = lambda_env(aws_endpoint, "sandbox-token")?;
    let builder = Sandbox::builder().binary(bins::lockbox_bin()?).envs(env);
    Ok((builder, client))
}

/// The environment Lambda gives the function and its extensions, pointed at
/// `aws_endpoint` (moto's region and credentials), with a fresh session token starting with
/// `token_prefix` and a free port for the extension; plus a client for that port and token.
pub fn lambda_env(
    aws_endpoint: &str,
    token_prefix: &str,
) -> anyhow::Result<(Vec<(&'static str, String)>, ExtClient)> {
    let port = bins::free_port()?;
    let token = format!("{token_prefix}-{}", random_hex(24));
    let env = vec![
        ("AWS_ENDPOINT_URL", aws_endpoint.to_owned()),
        ("AWS_REGION", moto::REGION.to_owned()),
        ("AWS_DEFAULT_REGION", moto::REGION.to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ("AWS_SESSION_TOKEN", token.clone()),
        ("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", port.to_string()),
        ("PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL", "debug".to_owned()),
    ];
    Ok((env, ExtClient::new(port, token)))
}

/// Starts the real extension under the sandbox, behind a counting proxy in front of `moto`,
/// and waits until it has finished Init (its first `next`).
///
/// `extra_env` is applied last, so it can override any default. [`Fixture`] does the same
/// and seeds moto first.
pub async fn spawn_lockbox(
    moto: &Moto,
    extra_env: &[(&str, &str)],
) -> anyhow::Result<(Sandbox, Proxy, ExtClient)> {
    let proxy = Proxy::start(&moto.endpoint()).await?;
    let (sandbox, client) = spawn_behind(&proxy, extra_env).await?;
    Ok((sandbox, proxy, client))
}

/// Starts the real extension behind `proxy` and waits until it has finished Init, starting
/// it again on another port if the one it was given was taken meanwhile.
pub(crate) async fn spawn_behind(
    proxy: &Proxy,
    extra_env: &[(&str, &str)],
) -> anyhow::Result<(Sandbox, ExtClient)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (sandbox, client) = start_lockbox_behind(proxy, extra_env).await?;
        match sandbox.wait_init_done(INIT_TIMEOUT).await {
            Ok(_) => return Ok((sandbox, client)),
            Err(_) if attempt < SPAWN_ATTEMPTS && port_was_taken(&sandbox) => continue,
            Err(err) => return Err(err).context("lockbox did not finish Init"),
        }
    }
}

/// Starts the real extension behind `proxy` with [`lockbox_builder`]'s environment plus
/// `extra_env`, without waiting for anything: for tests that arm faults or latency before
/// it starts, or that watch its Init as it happens.
pub async fn start_lockbox_behind(
    proxy: &Proxy,
    extra_env: &[(&str, &str)],
) -> anyhow::Result<(Sandbox, ExtClient)> {
    let (builder, client) = lockbox_builder(&proxy.endpoint())?;
    let sandbox = builder.envs(extra_env.iter().copied()).start().await?;
    Ok((sandbox, client))
}

/// Starts the real extension with `name` set to `value` and no AWS behind it, and waits up
/// to [`INIT_TIMEOUT`] for it to exit: for settings it must refuse at Init, before any AWS
/// call.
pub async fn lockbox_refusing(name: &str, value: &str) -> anyhow::Result<(Sandbox, ExitStatus)> {
    // Nothing listens on loopback's port 9 (discard), so any AWS call would fail.
    let (builder, _client) = lockbox_builder("http://127.0.0.1:9")?;
    let sandbox = builder.env(name, value).start().await?;
    let status = sandbox.wait_exit(INIT_TIMEOUT).await?;
    Ok((sandbox, status))
}

/// Whether the extension exited because another process took its port first.
pub(crate) fn port_was_taken(sandbox: &Sandbox) -> bool {
    sandbox.exit_status().is_some()
        && sandbox
            .logs()
            .to_ascii_lowercase()
            .contains("address already in use")
}

/// `len` random hex digits, for tokens and identifiers that must differ between runs.
pub fn random_hex(len: usize) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut out = String::with_capacity(len + 16);
    let mut block = 0_u64;
    while out.len() < len {
        // RandomState is seeded from the OS, so its hashes are unpredictable per process.
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(nanos);
        hasher.write_u64(block);
        out.push_str(&format!("{:016x}", hasher.finish()));
        block += 1;
    }
    out.truncate(len);
    out
}
