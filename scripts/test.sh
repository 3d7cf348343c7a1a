#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this): install what is missing, check
# formatting, build everything with clippy as the compiler wrapper (-D warnings), then run every
# test: core scenarios, the openraft storage suite and crash test, API tests, and end-to-end
# tests against real baton processes.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

bash scripts/setup.sh

echo "== format"
cargo fmt --all -- --check

echo "== build + clippy (-D warnings)"
# Clippy runs as the workspace wrapper of a normal build rather than as `cargo clippy`: a
# check-mode build would compile RocksDB a second time (about 8 minutes here). CLIPPY_ARGS is
# how cargo-clippy passes its arguments to clippy-driver.
export RUSTC_WORKSPACE_WRAPPER
RUSTC_WORKSPACE_WRAPPER="$(rustc --print sysroot)/bin/clippy-driver"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
build_all

echo "== tests"
cargo test --workspace --locked

echo "== chaos (short run; scripts/chaos.sh --seconds 600 for a long one)"
"$CARGO_TARGET_DIR/debug/chaos" --seconds 40 --groups 6 --seed "${CHAOS_SEED:-$RANDOM}"
