#!/usr/bin/env bash
# Builds the `baton:local` container image from this repository's own build output, with no
# base image (no registry is needed): FROM scratch plus the optimised release build of the
# baton binary (the one BENCHMARKS.md measures, debug symbols stripped) and exactly the shared
# libraries it links (found with ldd). The first time, RocksDB is compiled once more for the
# release build (about 12 minutes on 2 cores) and the programs are linked whole (a few more).
#   scripts/image.sh            build the binary if needed, then the image
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

bash scripts/setup.sh
build_programs --quiet
bin="$CARGO_TARGET_DIR/release/baton"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/rootfs"
strip --strip-debug -o "$stage/rootfs/baton" "$bin"
# Every library the binary loads, at the same path inside the image, and the dynamic loader.
ldd "$bin" | awk '/=> \// { print $3 } /^[ \t]*\/lib/ { print $1 }' | while read -r lib; do
  mkdir -p "$stage/rootfs$(dirname "$lib")"
  cp -L "$lib" "$stage/rootfs$lib"
done
mkdir -p "$stage/rootfs/data" "$stage/rootfs/tmp"
cp docker/Dockerfile "$stage/Dockerfile"
docker build --quiet -t baton:local "$stage" >/dev/null
echo "built image baton:local ($(docker image inspect baton:local --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}'))"
