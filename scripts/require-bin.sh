#!/usr/bin/env bash
# Fails with a clear message when package lockbox-tests has no binary target of that name,
# before any slow build starts.  scripts/require-bin.sh NAME
set -euo pipefail
name=$1
root=$(cd "$(dirname "$0")/.." && pwd)
if ! cargo metadata --manifest-path "$root/Cargo.toml" --no-deps --format-version 1 \
  | python3 -c '
import json, sys
name = sys.argv[1]
meta = json.load(sys.stdin)
sys.exit(0 if any(t["name"] == name and "bin" in t["kind"]
                  for p in meta["packages"] if p["name"] == "lockbox-tests"
                  for t in p["targets"]) else 1)
' "$name"; then
  echo "make: package lockbox-tests has no binary '$name' yet (tests/src/bin/$name.rs)." >&2
  exit 1
fi
