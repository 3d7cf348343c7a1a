#!/usr/bin/env bash
# Chaos against a local three-node cluster of real processes: many simulated adapters across
# many groups and a durable-write client, while SIGKILL, SIGSTOP and rolling restarts hit the
# nodes on a bounded, seeded schedule. Checks never two valid Primaries, growing epochs,
# failover only after silence, no lost acknowledged write, recovery in time, and convergence;
# prints a summary table; exits non-zero on any violation.
#   scripts/chaos.sh                        60 s, 8 groups, seed 1
#   scripts/chaos.sh --seconds 600 --groups 40 --seed 7
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
build_all --quiet
exec "$CARGO_TARGET_DIR/debug/chaos" "$@"
