#!/usr/bin/env bash
# Campaigns of Baton's two deterministic simulations. A failing world prints the command that
# replays it exactly.
#
# The grant simulation (crates/baton-core/tests/simulation.rs): the core alone, under changing
# and restarting leaders, drifting client clocks, lost, late and duplicated heartbeats and
# answers, forced failovers, overrides, timeout changes and re-created groups.
#   scripts/sim.sh                  1,000 seeds (what the test suite runs)
#   scripts/sim.sh --seeds 100000   a long campaign (optimized build)
#   scripts/sim.sh --seed 4242      one world
#
# The whole-cluster simulation (crates/baton-server/tests/cluster_simulation.rs): three real
# nodes (openraft, the coordinator, RocksDB) over turmoil's simulated network and clock, with
# crashes, partitions, paused nodes and the same clients and operators.
#   scripts/sim.sh --cluster --seeds 200
#   scripts/sim.sh --cluster --seed 17
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

seeds=1000
seed=""
cluster=""
while (($#)); do
  case "$1" in
    --seeds) seeds="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --cluster) cluster=1; shift ;;
    *) echo "usage: scripts/sim.sh [--cluster] [--seeds N | --seed S]" >&2; exit 2 ;;
  esac
done

if [ -n "$cluster" ]; then
  if [ -n "$seed" ]; then
    export BATON_CLUSTER_SIM_SEED="$seed"
  else
    export BATON_CLUSTER_SIM_SEEDS="$seeds"
  fi
  exec cargo test --release --locked -p baton-server --test cluster_simulation -- --nocapture
fi
if [ -n "$seed" ]; then
  export BATON_SIM_SEED="$seed"
else
  export BATON_SIM_SEEDS="$seeds"
fi
exec cargo test --release --locked -p baton-core --test simulation -- --nocapture
