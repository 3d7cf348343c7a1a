#!/usr/bin/env bash
# Runs Baton's benchmark harness (tests/src/bin/bench.rs) on a local three-node cluster and
# writes BENCHMARKS.md: the command, the machine, the date and every figure.
#   scripts/bench.sh [--quick] [--seconds N]
# Not a test: it asserts nothing. The figures come from the debug build the test suite uses
# (see BENCHMARKS.md); a release-build run is issue 7's next step.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
build_all --quiet
table=$(mktemp)
notes=$(mktemp)
# Keep the hand-written "## Notes" section (analysis of a run) across runs.
[ -f BENCHMARKS.md ] && sed -n '/^## Notes/,$p' BENCHMARKS.md > "$notes"
"$CARGO_TARGET_DIR/debug/bench" --markdown "$table" "$@"
{
  echo "# Benchmarks"
  echo
  echo "Command: \`scripts/bench.sh $*\` on $(date -u +%Y-%m-%d), $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo),"
  echo "$(uname -sr), three nodes on loopback, debug build, rate limits off."
  echo
  cat "$table"
  if [ -s "$notes" ]; then echo; cat "$notes"; fi
} > BENCHMARKS.md
rm -f "$table" "$notes"
echo "wrote BENCHMARKS.md"
