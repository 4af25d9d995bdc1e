#!/usr/bin/env bash
# make test, once the debug build is done: the x86_64 layer zip check, the doc tests and
# every other test, with cargo-nextest when it is installed (or TEST_RUNNER=nextest), else
# with cargo test.
#
# The layer zip is built with the `layer-test` profile (Cargo.toml: what ships, without
# its optimisation) into target/layer-test/, never dist/, in the background while the
# tests run: the tests mostly wait on moto and the binaries, so the build has a core to
# itself. cargo-lambda builds under target/x86_64-unknown-linux-gnu/, apart from the tests'
# target/debug, so neither waits for the other's lock. `make layer layer-check` checks
# the layer that ships.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

runner=${TEST_RUNNER:-auto}
if [ "$runner" = auto ]; then
  if cargo nextest --version >/dev/null 2>&1; then runner=nextest; else runner=cargo; fi
fi
case $runner in
  nextest | cargo) ;;
  *) echo "test: unknown TEST_RUNNER '$runner' (auto, nextest or cargo)" >&2; exit 2 ;;
esac

layer_dir=$root/target/layer-test
layer_log=$layer_dir/build.log
mkdir -p "$layer_dir"
echo "+ scripts/layer.sh zip x86_64 (profile layer-test, in the background; log: ${layer_log#"$root"/})"
# Without clippy as the workspace's compiler (`make test` runs under scripts/linted.sh): the
# debug build has linted the same code, and the layer is another target.
env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS \
  LAMBDA_PROFILE=layer-test LAYER_DIST=$layer_dir "$root/scripts/layer.sh" zip x86_64 \
  >"$layer_log" 2>&1 &
layer_pid=$!
# A failed step does not stop the others: every failure is reported, then the status.
failed=()
# Every cargo test run's output, so the last line can count them all (each run prints its
# own "test result:" line; the layer check runs last and would otherwise close the output).
results=$(mktemp)
trap 'rm -f "$results"' EXIT
run() { "$@" 2>&1 | tee -a "$results"; return "${PIPESTATUS[0]}"; }

echo "+ cargo test --workspace --doc"
run cargo test --workspace --doc || failed+=("doc tests")

case $runner in
  nextest)
    # The ci profile (.config/nextest.toml) runs everything and ends hung tests.
    profile=default
    [ "${CI:-}" = true ] && profile=ci
    echo "+ cargo nextest run --workspace --profile $profile"
    cargo nextest run --workspace --profile "$profile" || failed+=("tests (nextest)")
    ;;
  cargo)
    # Doc tests ran above; --lib --bins --tests leaves them out.
    echo "+ cargo test --workspace --no-fail-fast --lib --bins --tests"
    run cargo test --workspace --no-fail-fast --lib --bins --tests || failed+=("tests")
    ;;
esac

if wait "$layer_pid"; then
  grep '^layer:' "$layer_log" || true
  zip=$layer_dir/lockbox-layer-x86_64.zip
  echo "+ layer zip check: LOCKBOX_LAYER_ZIP=${zip#"$root"/} cargo test --workspace --test e2e -- --ignored deploy::"
  LOCKBOX_LAYER_ZIP=$zip run cargo test --workspace --test e2e -- --ignored deploy:: \
    || failed+=("layer zip check")
else
  cat "$layer_log"
  failed+=("layer zip build (scripts/layer.sh zip x86_64, profile layer-test)")
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "test: FAILED: ${failed[*]}"
fi
# With cargo test, one closing line for all the runs above (nextest prints its own).
if [ "$runner" = cargo ]; then
  awk '/^test result:/ { for (i = 1; i <= NF; i++) {
         if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
       END { printf "tests: %d passed, %d failed\n", p, f }' "$results"
fi
[ ${#failed[@]} -eq 0 ]
