#!/usr/bin/env bash
# make check: rustfmt, clippy -D warnings, template lint.
#
# Clippy runs as the compiler of lockbox's own crates (`scripts/linted.sh`), inside the
# debug build `make test` runs, so the dependencies (the AWS SDK above all) are compiled
# once and not again in check mode. `make setup` (the Python tools, cargo-lambda, zig, the
# Lambda emulator) runs beside that build (`scripts/beside.sh`); the template lint, which
# needs setup's tools, runs once both are done.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

echo "+ cargo fmt --all -- --check"
cargo fmt --all -- --check
"$root/scripts/beside.sh" setup "$root/scripts/linted.sh" cargo build --workspace --all-targets
make --no-print-directory -C "$root" lint
