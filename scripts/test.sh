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

# The long test: 2,000 parameters rotated across invocations, about 90 s of moto answering
# some 12,000 calls. It is ignored in a plain run (where it would start last, in name order,
# and end the run 90 s after the rest) and runs here from the start, beside the others, on
# the end-to-end binary the build left.
long_filter=two_thousand
long_log=$(mktemp)
trap 'rm -f "$results" "$long_log"' EXIT
e2e_bin=$(cargo test --workspace --test e2e --no-run 2>&1 \
  | sed -n 's/.*Executable tests\/e2e\/main.rs (\(.*\))$/\1/p' | tail -n 1)
if [ -z "$e2e_bin" ]; then
  echo "test: the end-to-end binary could not be built or found" >&2
  failed+=("end-to-end build")
  long_pid=
else
  case $e2e_bin in /*) ;; *) e2e_bin=$root/$e2e_bin ;; esac
  echo "+ (beside the rest) ${e2e_bin#"$root"/} --ignored $long_filter"
  (cd "$root/tests" && "$e2e_bin" --ignored "$long_filter") >"$long_log" 2>&1 &
  long_pid=$!
fi

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

if [ -n "$long_pid" ]; then
  long_status=0
  wait "$long_pid" || long_status=$?
  echo "+ the long test ($long_filter), run beside the rest:"
  tee -a "$results" <"$long_log"
  [ "$long_status" -eq 0 ] || failed+=("the long test ($long_filter)")
fi

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
