#!/usr/bin/env bash
# A campaign of the deterministic grant simulation (crates/baton-core/tests/simulation.rs):
# worlds of changing and restarting leaders, drifting client clocks, lost, late and duplicated
# heartbeats and answers, forced failovers, overrides, timeout changes and re-created groups,
# each checked for two valid grants at once, shrinking epochs, and groups left without a holder.
# A failing world prints the command that replays it exactly.
#   scripts/sim.sh                  1,000 seeds (what the test suite runs)
#   scripts/sim.sh --seeds 100000   a long campaign (optimized build)
#   scripts/sim.sh --seed 4242      one world
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

seeds=1000
seed=""
while (($#)); do
  case "$1" in
    --seeds) seeds="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    *) echo "usage: scripts/sim.sh [--seeds N | --seed S]" >&2; exit 2 ;;
  esac
done

if [ -n "$seed" ]; then
  export BATON_SIM_SEED="$seed"
else
  export BATON_SIM_SEEDS="$seeds"
fi
exec cargo test --release --locked -p baton-core --test simulation -- --nocapture
