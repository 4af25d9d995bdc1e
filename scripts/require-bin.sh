#!/usr/bin/env bash
# Fails with a clear message when a workspace package (default lockbox-tests) has no binary
# target of that name, before any slow build starts.
#   scripts/require-bin.sh NAME [PACKAGE]
set -euo pipefail
name=$1 package=${2:-lockbox-tests}
root=$(cd "$(dirname "$0")/.." && pwd)
if ! cargo metadata --manifest-path "$root/Cargo.toml" --no-deps --format-version 1 \
  | python3 -c '
import json, sys
name, package = sys.argv[1], sys.argv[2]
meta = json.load(sys.stdin)
sys.exit(0 if any(t["name"] == name and "bin" in t["kind"]
                  for p in meta["packages"] if p["name"] == package
                  for t in p["targets"]) else 1)
' "$name" "$package"; then
  echo "make: package $package has no binary '$name' yet." >&2
  exit 1
fi
