#!/usr/bin/env bash
# Runs a command (a cargo build or test) with clippy as the compiler of the workspace's own
# crates: `clippy-driver` lints each of them with -D warnings and then compiles it, and the
# dependencies are compiled by rustc as in any build. This is `cargo clippy --workspace
# --all-targets -- -D warnings` and the debug build in one pass: `cargo clippy` would
# compile every dependency a second time in check mode, minutes on 2 cores.
#
# `make check`, `make build` and `make test` all build through here, so that their builds
# are the same to cargo and none repeats another's work. A plain `cargo build` or `cargo
# test` afterwards recompiles lockbox's own crates (not the dependencies) without the lints.
set -euo pipefail
driver=$(command -v clippy-driver || true)
if [ -z "$driver" ]; then
  echo "linted: clippy-driver is not on PATH; install clippy: rustup component add clippy" >&2
  exit 2
fi
# The argument format cargo-clippy itself hands the driver.
export RUSTC_WORKSPACE_WRAPPER=$driver
export CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
exec "$@"
