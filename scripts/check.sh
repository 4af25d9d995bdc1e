#!/usr/bin/env bash
# make check: rustfmt, clippy -D warnings, template lint.
#
# Clippy runs as the compiler of lockbox's own crates (`scripts/linted.sh`), inside the
# debug build `make test` runs, so the dependencies (the AWS SDK above all) are compiled
# once and not again in check mode. `make setup` (the Python tools, cargo-lambda, zig, the
# Lambda emulator) runs beside that build, since the build needs none of it; the template
# lint, which does, runs once both are done.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

echo "+ cargo fmt --all -- --check"
cargo fmt --all -- --check

target_dir=${CARGO_TARGET_DIR:-$root/target}
mkdir -p "$target_dir"
setup_log=$target_dir/setup.log
echo "+ make setup (beside the build; log: $setup_log)"
make --no-print-directory -C "$root" setup >"$setup_log" 2>&1 &
setup_pid=$!

status=0
echo "+ scripts/linted.sh cargo build --workspace --all-targets (clippy -D warnings)"
"$root/scripts/linted.sh" cargo build --workspace --all-targets || status=$?

setup_status=0
wait "$setup_pid" || setup_status=$?
cat "$setup_log"
if [ "$setup_status" -ne 0 ]; then
  echo "check: make setup failed (its output is above)" >&2
  exit "$setup_status"
fi
if [ "$status" -ne 0 ]; then
  echo "check: clippy or the build failed (above)" >&2
  exit "$status"
fi
make --no-print-directory -C "$root" lint
