#!/usr/bin/env bash
# Prepares what the build and the tests need, inside the project where possible:
#   .venv/                    python3 -m venv, with the tools pinned in scripts/requirements.txt
#   aarch64 standard library  rustup target add (optional: without it only x86_64 is built)
#   cargo-nextest             only when missing and asked for (TEST_RUNNER=nextest)
#
#   scripts/setup.sh          all of the above (make setup: what make test needs)
#   scripts/setup.sh moto     moto alone in .venv (make demo: the only tool the demo runs)
# Idempotent; the Makefile reruns it only when this file or the requirements change.
set -euo pipefail
what=${1:-all}
case $what in
  all | moto) ;;
  *) echo "usage: $0 [moto]" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
venv=$root/.venv
requirements=$root/scripts/requirements.txt
python=${PYTHON:-python3}
failed=()

say() { echo "setup: $*"; }

# --- Python tools -------------------------------------------------------------------------
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
  say "creating $venv with $($python --version 2>&1)"
  "$python" -m venv "$venv" || { say "could not create a virtualenv with $python -m venv"; exit 1; }
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
# The requirements without comments and blank lines; `moto` keeps only moto's line.
specs() {
  sed -e 's/#.*//' -e 's/[[:space:]]*$//' "$requirements" | grep -v '^$' \
    | if [ "$what" = moto ]; then grep '^moto\b'; else cat; fi
}
if [ "$what" = moto ]; then
  mapfile -t wanted < <(specs)
  say "installing ${wanted[*]} (pinned in scripts/requirements.txt) into .venv"
  "${pip[@]}" install --quiet "${wanted[@]}" || failed+=("${wanted[*]} (pip)")
  [ -x "$venv/bin/moto_server" ] || failed+=("moto_server (not found in .venv/bin after install)")
elif ! { say "installing the pinned tools (scripts/requirements.txt) into .venv"
         "${pip[@]}" install --quiet -r "$requirements"; }; then
  # Find out which ones, one at a time, so the message names them.
  while read -r spec; do
    if ! "${pip[@]}" install --quiet "$spec" >/dev/null 2>&1; then failed+=("$spec (pip)"); fi
  done < <(specs)
  [ ${#failed[@]} -gt 0 ] || failed+=("the requirements together (pip could not resolve them)")
fi
if [ "$what" = all ]; then
  for tool in moto_server cfn-lint sam cargo-lambda; do
    [ -x "$venv/bin/$tool" ] || failed+=("$tool (not found in .venv/bin after install)")
  done
  "$venv/bin/python" -m ziglang version >/dev/null 2>&1 || failed+=("zig (python -m ziglang does not run)")
fi
if [ "$what" = moto ]; then
  if [ ${#failed[@]} -gt 0 ]; then
    say "FAILED. Could not install:"
    for item in "${failed[@]}"; do echo "  - $item"; done
    exit 1
  fi
  say "moto ready (make setup installs the rest: cfn-lint, SAM CLI, cargo-lambda, zig)"
  exit 0
fi

# --- Rust: rustfmt and clippy for make check ------------------------------------------------
for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    rustup component add "$component" || failed+=("rustup component $component")
  fi
done

# --- Rust: arm64 (optional) ----------------------------------------------------------------
if rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
  say "arm64: the aarch64-unknown-linux-gnu standard library is installed"
elif rustup target add aarch64-unknown-linux-gnu; then
  say "arm64: installed the aarch64-unknown-linux-gnu standard library"
else
  say "arm64 CANNOT be built on this machine: 'rustup target add aarch64-unknown-linux-gnu'"
  say "failed. Everything else works; make layer builds the x86_64 layer only."
fi

# --- cargo-nextest (only if missing and needed) -------------------------------------------
if [ "${TEST_RUNNER:-auto}" = nextest ] && ! cargo nextest --version >/dev/null 2>&1; then
  say "installing cargo-nextest (TEST_RUNNER=nextest and it is missing)"
  cargo install --locked cargo-nextest || failed+=("cargo-nextest (cargo install)")
fi

if [ ${#failed[@]} -gt 0 ]; then
  say "FAILED. Could not install:"
  for item in "${failed[@]}"; do echo "  - $item"; done
  exit 1
fi
say "ready"
