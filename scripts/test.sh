#!/usr/bin/env bash
# Runs the workspace's tests with cargo-nextest when it is installed (or TEST_RUNNER=nextest),
# else with cargo test. The runner's own summary is the last thing printed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

runner=${TEST_RUNNER:-auto}
if [ "$runner" = auto ]; then
  if cargo nextest --version >/dev/null 2>&1; then runner=nextest; else runner=cargo; fi
fi

case $runner in
  nextest)
    # The ci profile (.config/nextest.toml) runs everything and ends hung tests.
    profile=default
    [ "${CI:-}" = true ] && profile=ci
    echo "+ cargo nextest run --workspace --profile $profile"
    exec cargo nextest run --workspace --profile "$profile"
    ;;
  cargo)
    echo "+ cargo test --workspace"
    exec cargo test --workspace
    ;;
  *)
    echo "test: unknown TEST_RUNNER '$runner' (auto, nextest or cargo)" >&2
    exit 2
    ;;
esac
