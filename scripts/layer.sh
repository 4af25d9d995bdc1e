#!/usr/bin/env bash
# The lockbox layer, as Lambda unpacks it under /opt:
#   extensions/lockbox   the extension (Lambda starts everything in extensions/)
#   lockbox-exec         the AWS_LAMBDA_EXEC_WRAPPER, when the workspace has that binary
# Both mode 755, built for provided.al2023 (glibc 2.34 at most) with the `lambda` profile
# (Cargo.toml).
#
#   scripts/layer.sh zip x86_64 [arm64]   ->  dist/lockbox-layer-<arch>.zip (LAYER_DIST: elsewhere)
#   scripts/layer.sh stage ARCH DIR       ->  the tree above in DIR (SAM's ARTIFACTS_DIR)
#
# zip: when arm64 cannot be built on this machine and other architectures were asked for
# too, it says so plainly and builds the others; asked for alone, it fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$root/.venv/bin:$PATH"
usage() { echo "usage: $0 zip x86_64|arm64 ... | $0 stage x86_64|arm64 DIR" >&2; exit 2; }

# stage ARCH DIR: builds the layer's executables into DIR (exit 3: ARCH cannot be built).
stage() {
  local arch=$1 dir=$2
  "$root/scripts/lambda-build.sh" extension "$arch" "$dir/extensions/lockbox" || return
  if "$root/scripts/require-bin.sh" lockbox-exec lockbox-extension 2>/dev/null; then
    "$root/scripts/lambda-build.sh" exec "$arch" "$dir/lockbox-exec" || return
  fi
}

# zipdir DIR ZIP: a deterministic zip of DIR (sorted, fixed dates, Unix modes recorded so
# Lambda restores them on extraction).
zipdir() {
  python3 - "$1" "$2" <<'PY'
import os, sys, zipfile
src, out = sys.argv[1], sys.argv[2]
epoch = (1980, 1, 1, 0, 0, 0)
with zipfile.ZipFile(out + ".tmp", "w") as z:
    for folder, dirs, files in os.walk(src):
        dirs.sort()
        rel = os.path.relpath(folder, src)
        if rel != ".":
            info = zipfile.ZipInfo(rel + "/", date_time=epoch)
            info.create_system = 3
            info.external_attr = (0o040755 << 16) | 0x10
            z.writestr(info, b"")
        for name in sorted(files):
            path = os.path.join(folder, name)
            info = zipfile.ZipInfo(os.path.normpath(os.path.join(rel, name)), date_time=epoch)
            info.create_system = 3
            info.external_attr = 0o100755 << 16
            with open(path, "rb") as f:
                z.writestr(info, f.read(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
os.replace(out + ".tmp", out)
PY
}

# report ARCH DIR ZIP: one line of figures.
report() {
  local arch=$1 dir=$2 zip=$3 glibc=unknown
  local zip_size bin_size
  zip_size=$(stat -c %s "$zip")
  bin_size=$(du -cb "$dir"/extensions/lockbox "$dir"/lockbox-exec 2>/dev/null | tail -1 | cut -f1)
  if command -v objdump >/dev/null; then
    glibc=$(find "$dir" -type f -exec objdump -T {} + 2>/dev/null | grep -o 'GLIBC_[0-9.]*' \
      | sort -t. -k2,2n -k3,3n -u | tail -1 || true)
    glibc=${glibc:-unknown}
  fi
  awk -v a="$arch" -v z="${zip#"$root"/}" -v zs="$zip_size" -v bs="$bin_size" -v g="$glibc" \
    'BEGIN { printf "layer: %-7s %s  zip %d bytes (%.2f MiB), unpacked %d bytes (%.2f MiB), highest %s\n", a, z, zs, zs / 1048576, bs, bs / 1048576, g }'
}

[ $# -ge 1 ] || usage
verb=$1; shift
case $verb in
  stage)
    [ $# -eq 2 ] || usage
    stage "$1" "$2"
    ;;
  zip)
    [ $# -ge 1 ] || usage
    dist=${LAYER_DIST:-$root/dist}
    mkdir -p "$dist"
    built=() skipped=()
    for arch in "$@"; do
      dir=$dist/layer-$arch
      rm -rf "$dir"
      status=0
      stage "$arch" "$dir" || status=$?
      if [ "$status" -eq 3 ] && [ $# -gt 1 ]; then
        skipped+=("$arch")
        continue
      elif [ "$status" -ne 0 ]; then
        exit "$status"
      fi
      zip=$dist/lockbox-layer-$arch.zip
      zipdir "$dir" "$zip"
      report "$arch" "$dir" "$zip"
      built+=("$arch")
    done
    for arch in "${skipped[@]}"; do
      echo "layer: $arch CANNOT be built on this machine (its Rust standard library is not"
      echo "       installed: rustup target add aarch64-unknown-linux-gnu failed). Built: ${built[*]}."
    done
    ;;
  *) usage ;;
esac
