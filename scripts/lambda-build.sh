#!/usr/bin/env bash
# Builds one deployable binary for Lambda's OS (provided.al2023: glibc 2.34 at most) with
# cargo-lambda and zig, and optionally copies it into place.
#
#   scripts/lambda-build.sh extension|exec|rotator x86_64|arm64 [DEST]
#
# extension: target/lambda/<arch>/extensions/lockbox   (DEST: copied there, mode 755)
# exec:      target/lambda/<arch>/extensions/lockbox-exec (the exec wrapper; the layer puts
#            it at its root, never in extensions/, where Lambda would start it)
# rotator:   target/lambda/<arch>/lockbox-rotator/bootstrap
# (target/<profile>/<arch>/... for another LAMBDA_PROFILE)
#
# The profile is `lambda` (release: the hot path for speed, the rest for size; see
# Cargo.toml), overridable with LAMBDA_PROFILE (`make test` uses `layer-test`, whose
# outputs go to target/layer-test/<arch>, so they never stand in for the shipped ones).
# Each architecture gets its own output folder so the two never overwrite each other.
# Exit status 3 means the architecture cannot be built on this machine.
set -euo pipefail

usage() { echo "usage: $0 extension|exec|rotator x86_64|arm64 [DEST]" >&2; exit 2; }
[ $# -ge 2 ] || usage
what=$1 arch=$2 dest=${3:-}
root=$(cd "$(dirname "$0")/.." && pwd)
# The project's tools (cargo-lambda, zig) come first, wherever this is called from (SAM too).
export PATH="$root/.venv/bin:$PATH"

case $arch in
  x86_64) triple=x86_64-unknown-linux-gnu ;;
  arm64) triple=aarch64-unknown-linux-gnu ;;
  *) echo "lambda-build: unknown architecture '$arch' (x86_64 or arm64)" >&2; exit 2 ;;
esac

if ! rustup target list --installed 2>/dev/null | grep -qx "$triple"; then
  echo "lambda-build: $arch cannot be built on this machine: the Rust standard library for" >&2
  echo "  $triple is not installed (rustup target add $triple failed or was not run)." >&2
  exit 3
fi
if ! command -v cargo-lambda >/dev/null; then
  echo "lambda-build: cargo-lambda is missing; run 'make setup' first." >&2
  exit 1
fi

profile=${LAMBDA_PROFILE:-lambda}
lambda_dir=$root/target/$profile/$arch
case $what in
  extension) package=lockbox-extension bin=lockbox flags=(--extension)
             out=$lambda_dir/extensions/lockbox ;;
  exec)      package=lockbox-extension bin=lockbox-exec flags=(--extension)
             out=$lambda_dir/extensions/lockbox-exec ;;
  rotator)   package=lockbox-rotator bin=lockbox-rotator flags=()
             out=$lambda_dir/lockbox-rotator/bootstrap ;;
  *) usage ;;
esac

echo "+ cargo lambda build --profile $profile --target $triple ${flags[*]} -p $package --bin $bin" >&2
(cd "$root" && cargo lambda build --profile "$profile" --target "$triple" "${flags[@]}" \
  --package "$package" --bin "$bin" --lambda-dir "$lambda_dir")

[ -f "$out" ] || { echo "lambda-build: expected $out after the build, found nothing" >&2; exit 1; }
chmod 755 "$out"
if [ -n "$dest" ]; then
  mkdir -p "$(dirname "$dest")"
  install -m 755 "$out" "$dest"
  echo "lambda-build: $what ($arch) -> $dest ($(stat -c %s "$dest") bytes)" >&2
else
  echo "lambda-build: $what ($arch) -> $out ($(stat -c %s "$out") bytes)" >&2
fi
