//! Where the binaries under test live, and loopback ports for them.
//!
//! The tests run the real executables that `cargo build --workspace` produced, never a copy
//! built on the fly, so a test exercises exactly what ships in the layer.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// The workspace root: the parent of this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The target directory cargo builds into (`CARGO_TARGET_DIR` when set).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The extension executable: `LOCKBOX_BIN`, else `target/debug/lockbox`.
pub fn lockbox_bin() -> anyhow::Result<PathBuf> {
    binary("LOCKBOX_BIN", "lockbox")
}

/// The exec wrapper: `LOCKBOX_EXEC_BIN`, else `target/debug/lockbox-exec`.
pub fn lockbox_exec_bin() -> anyhow::Result<PathBuf> {
    binary("LOCKBOX_EXEC_BIN", "lockbox-exec")
}

/// The rotator executable: `LOCKBOX_ROTATOR_BIN`, else `target/debug/lockbox-rotator`.
pub fn rotator_bin() -> anyhow::Result<PathBuf> {
    binary("LOCKBOX_ROTATOR_BIN", "lockbox-rotator")
}

/// [`rotator_bin`] with only the environment a deployment would give it (nothing inherited
/// from the host), pointed at `aws_endpoint`, killed if dropped. The caller adds arguments,
/// `RUST_LOG` and the standard streams.
pub fn rotator_command(aws_endpoint: &str) -> anyhow::Result<tokio::process::Command> {
    let mut command = tokio::process::Command::new(rotator_bin()?);
    command
        .env_clear()
        .env("AWS_ENDPOINT_URL", aws_endpoint)
        .env("AWS_REGION", crate::moto::REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .kill_on_drop(true);
    Ok(command)
}

fn binary(override_var: &str, name: &str) -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os(override_var) {
        Some(path) => PathBuf::from(path),
        None => target_dir().join("debug").join(name),
    };
    if !path.is_file() {
        bail!(
            "{name} not found at {}: build it first: cargo build --workspace \
             (or point {override_var} at it)",
            path.display()
        );
    }
    Ok(path)
}

/// A loopback port that was free a moment ago.
///
/// Only for processes that must be told a port number up front (moto, the extension);
/// in-process servers bind port 0 themselves and so cannot race.
pub fn free_port() -> anyhow::Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}
