#!/usr/bin/env bash
# Runs Baton's benchmark harness (tests/src/bin/bench/) on a local three-node cluster and
# writes BENCHMARKS.md (the command, the machine, the date and every figure) and
# BENCHMARKS.svg (latency against throughput).
#   scripts/bench.sh [--release] [--quick] [--seconds N] [--scale-groups N] [--log-entries N]
# --release measures an optimized build (RocksDB is compiled again for it the first time,
# about 12 minutes on 2 cores, and each program is linked with whole-program optimisation);
# without it, the debug build the test suite uses.
# Not a test: it asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
profile=debug
args=()
for a in "$@"; do
  if [ "$a" = "--release" ]; then profile=release; else args+=("$a"); fi
done
# The same selection the harness's own freshness check builds, so nothing is built twice.
if [ "$profile" = release ]; then build_programs --quiet; else build_all --quiet; fi
table=$(mktemp)
notes=$(mktemp)
# Keep the hand-written sections after the table (targets, analysis of a run) across runs.
[ -f BENCHMARKS.md ] && sed -n '/^## /,$p' BENCHMARKS.md > "$notes"
"$CARGO_TARGET_DIR/$profile/bench" --markdown "$table" --plot BENCHMARKS.svg "${args[@]}"
{
  echo "# Benchmarks"
  echo
  echo "Command: \`scripts/bench.sh $*\` on $(date -u +%Y-%m-%d), $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo),"
  echo "$(uname -sr), three nodes on loopback, $profile build, rate limits off; the load generator"
  echo "runs on the same cores. Plot: [BENCHMARKS.svg](BENCHMARKS.svg) (p50 solid, p99 dashed)."
  echo
  cat "$table"
  if [ -s "$notes" ]; then echo; cat "$notes"; fi
} > BENCHMARKS.md
rm -f "$table" "$notes"
echo "wrote BENCHMARKS.md and BENCHMARKS.svg"
