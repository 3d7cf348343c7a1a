#!/usr/bin/env bash
# The hostile-input run: a victim tenant heartbeats while a hostile tenant member and an
# unauthenticated host attack a local three-node cluster of release builds (see
# tests/src/bin/bench/abuse.rs for the attacks). Reports, before, during and after the attacks,
# the victim's heartbeat latency, each node's largest RSS and data size and the applied index,
# then what each attack was answered, and writes it into BENCHMARKS.md under
# "## Hostile input" (replacing the section of an earlier run).
#   scripts/abuse.sh [--seconds N] [--debug]     N seconds per phase (default 30)
# Not a test: it asserts nothing (the tests of each limit are in scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
profile=release
seconds=30
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --debug) profile=debug; shift ;;
    *) echo "abuse.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ "$profile" = release ]; then build_programs --quiet; else build_all --quiet; fi
# The attacks hold thousands of sockets at once.
ulimit -n "$(ulimit -Hn)"
report=$(mktemp)
"$CARGO_TARGET_DIR/$profile/bench" --abuse --seconds "$seconds" --markdown "$report"
section=$(mktemp)
{
  echo "## Hostile input"
  echo
  echo "Command: \`scripts/abuse.sh --seconds $seconds\` on $(date -u +%Y-%m-%d), $(nproc) cores, $profile build,"
  echo "default limits (rate limits on). Three phases of $seconds s: before, during and after the attacks."
  echo "The victim: 40 groups of one session each, heartbeating once a second against the nodes in turn."
  echo
  cat "$report"
} > "$section"
touch BENCHMARKS.md
# Replace the section of an earlier run (up to the next "## " heading), or append it.
python3 - "$section" <<'PY'
import re, sys
section = open(sys.argv[1]).read().rstrip() + "\n"
text = open("BENCHMARKS.md").read()
pattern = re.compile(r"^## Hostile input\n.*?(?=^## |\Z)", re.S | re.M)
text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
open("BENCHMARKS.md", "w").write(text)
PY
rm -f "$report" "$section"
echo "wrote the Hostile input section of BENCHMARKS.md"
