#!/usr/bin/env bash
# Builds the layer zip for each architecture asked for:
#   scripts/layer.sh x86_64 [arm64]   ->  dist/lockbox-layer-<arch>.zip
# Inside: extensions/lockbox, mode 755, built for provided.al2023 (glibc 2.34 at most) with
# the size-optimised `lambda` profile. When arm64 cannot be built on this machine and other
# architectures were asked for too, it says so plainly and builds the others; asked for
# alone, it fails.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 x86_64|arm64 ..." >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
dist=$root/dist
export PATH="$root/.venv/bin:$PATH"
mkdir -p "$dist"

built=() skipped=()
for arch in "$@"; do
  stage=$dist/layer-$arch
  rm -rf "$stage"
  status=0
  "$root/scripts/lambda-build.sh" extension "$arch" "$stage/extensions/lockbox" || status=$?
  if [ "$status" -eq 3 ] && [ $# -gt 1 ]; then
    skipped+=("$arch")
    continue
  elif [ "$status" -ne 0 ]; then
    exit "$status"
  fi

  zip=$dist/lockbox-layer-$arch.zip
  # Deterministic zip: fixed dates, Unix modes recorded (Lambda restores them on extraction).
  python3 - "$stage/extensions/lockbox" "$zip" <<'PY'
import os, sys, zipfile
binary, out = sys.argv[1], sys.argv[2]
epoch = (1980, 1, 1, 0, 0, 0)
with zipfile.ZipFile(out + ".tmp", "w") as z:
    folder = zipfile.ZipInfo("extensions/", date_time=epoch)
    folder.create_system = 3
    folder.external_attr = (0o040755 << 16) | 0x10
    z.writestr(folder, b"")
    entry = zipfile.ZipInfo("extensions/lockbox", date_time=epoch)
    entry.create_system = 3
    entry.external_attr = 0o100755 << 16
    with open(binary, "rb") as f:
        z.writestr(entry, f.read(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
os.replace(out + ".tmp", out)
PY
  bin_size=$(stat -c %s "$stage/extensions/lockbox")
  zip_size=$(stat -c %s "$zip")
  glibc=unknown
  if command -v objdump >/dev/null; then
    glibc=$(objdump -T "$stage/extensions/lockbox" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' \
      | sort -t. -k2,2n -k3,3n -u | tail -1 || true)
    glibc=${glibc:-unknown}
  fi
  awk -v a="$arch" -v z="${zip#"$root"/}" -v zs="$zip_size" -v bs="$bin_size" -v g="$glibc" \
    'BEGIN { printf "layer: %-7s %s  zip %d bytes (%.2f MiB), extension %d bytes (%.2f MiB), highest %s\n", a, z, zs, zs / 1048576, bs, bs / 1048576, g }'
  built+=("$arch")
done

for arch in "${skipped[@]}"; do
  echo "layer: $arch CANNOT be built on this machine (its Rust standard library is not"
  echo "       installed: rustup target add aarch64-unknown-linux-gnu failed). Built: ${built[*]}."
done
