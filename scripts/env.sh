# Sourced by the other scripts: one cargo target directory shared by every build, kept across
# runs (RocksDB takes about 12 minutes to compile on 2 cores), and the binary's path.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/baton-target}"
BATON_BIN="$CARGO_TARGET_DIR/debug/baton"

# Every build uses the same target selection as the test suite, so that dependencies are
# compiled with one feature set and RocksDB is compiled once.
build_all() {
  cargo build --workspace --all-targets --locked "$@"
}
