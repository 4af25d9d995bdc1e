#!/usr/bin/env bash
# Runs `make SETUP_TARGET` in the background while a build command runs in the foreground,
# then waits for both: the builds need none of what setup installs (Python tools, the Lambda
# emulator), so on a fresh clone the two overlap instead of one waiting for the other.
# Setup's output is shown once it is done; when either fails, the message says which.
#   scripts/beside.sh SETUP_TARGET COMMAND [ARG...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
setup_target=$1
shift
target_dir=${CARGO_TARGET_DIR:-$root/target}
mkdir -p "$target_dir"
log=$target_dir/$setup_target.log
echo "+ make $setup_target (beside the build; log: $log)"
make --no-print-directory -C "$root" "$setup_target" >"$log" 2>&1 &
setup_pid=$!

status=0
echo "+ $*"
"$@" || status=$?

setup_status=0
wait "$setup_pid" || setup_status=$?
cat "$log"
if [ "$setup_status" -ne 0 ]; then
  echo "make $setup_target failed (its output is above)" >&2
  exit "$setup_status"
fi
if [ "$status" -ne 0 ]; then
  echo "'$*' failed (above)" >&2
  exit "$status"
fi
