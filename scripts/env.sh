# Sourced by the other scripts: one cargo target directory shared by every build, kept across
# runs (RocksDB takes about 12 minutes to compile on 2 cores), and the binary's path.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/baton-target}"
BATON_BIN="$CARGO_TARGET_DIR/debug/baton"

# Every build uses the same target selection as the test suite, so that dependencies are
# compiled with one feature set and RocksDB is compiled once.
build_all() {
  cargo build --workspace --all-targets --locked "$@"
}

# The release build, for the bench: its programs only (baton, bench, chaos). Each is linked with
# whole-program optimisation, which takes minutes, so the test binaries are left out; the
# harness's own freshness check (`baton_bin`) builds the same selection.
build_programs() {
  cargo build --workspace --bins --release --locked "$@"
}
