#!/usr/bin/env bash
# A local three-node Baton cluster on loopback (config/node1.toml .. node3.toml):
#   scripts/cluster.sh up       install what is missing, build, start the three nodes, wait for a leader
#   scripts/cluster.sh status   each node's role, term, leader and applied index
#   scripts/cluster.sh down     stop the nodes (SIGTERM, then SIGKILL after 10 s)
#   scripts/cluster.sh clean    stop the nodes and delete their data
# Public API: 127.0.0.1:7001-7003. Raft: 127.0.0.1:7101-7103. Data and logs: data/.
# The first `up` makes the administrator token, data/admin.token (mode 600), that the nodes
# bootstrap from; use it as `Authorization: Bearer $(cat data/admin.token)`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

NODES=(1 2 3)
RUN=data/run
TOKEN_FILE=data/admin.token
auth() { [ -f "$TOKEN_FILE" ] && echo "Authorization: Bearer $(cat "$TOKEN_FILE")" || echo "X-No-Token: 1"; }

pid_of() { cat "$RUN/node$1.pid" 2>/dev/null || true; }
alive() { local pid; pid=$(pid_of "$1"); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

status() {
  for n in "${NODES[@]}"; do
    local port=$((7000 + n))
    if body=$(curl -sf --max-time 2 -H "$(auth)" "http://127.0.0.1:$port/cluster/status"); then
      python3 -c 'import json,sys; s=json.loads(sys.argv[1]); print("node %s: %-9s term %-4s leader %s  applied %s  api 127.0.0.1:%s" % (s["id"], s["role"], s["term"], s["leader"], s["applied_index"], sys.argv[2]))' "$body" "$port"
    else
      echo "node $n: not answering on 127.0.0.1:$port"
    fi
  done
}

up() {
  bash scripts/setup.sh
  echo "building (the first build compiles RocksDB: about 12 minutes on 2 cores)"
  build_all --quiet
  mkdir -p "$RUN" data/logs
  if [ ! -f "$TOKEN_FILE" ]; then
    (umask 077; "$BATON_BIN" token new admin >"$TOKEN_FILE")
    echo "administrator token written to $TOKEN_FILE"
  fi
  for n in "${NODES[@]}"; do
    if alive "$n"; then echo "node $n already running (pid $(pid_of "$n"))"; continue; fi
    # The node reads BATON_* variables as configuration; start it with none from this shell.
    env $(env | grep -o '^BATON_[A-Z_]*' | sed 's/^/-u /') BATON_ADMIN_TOKEN="$(cat "$TOKEN_FILE")" \
      "$BATON_BIN" serve --config "config/node$n.toml" >>"data/logs/node$n.log" 2>&1 &
    echo $! >"$RUN/node$n.pid"
    echo "node $n started (pid $!), log data/logs/node$n.log"
  done
  # Ready: every node answers the administrator (so the bootstrap administrator, made by the
  # first leader, has reached every node).
  for _ in $(seq 1 100); do
    local ready=0
    for n in "${NODES[@]}"; do
      curl -sf --max-time 1 -H "$(auth)" "http://127.0.0.1:$((7000 + n))/cluster/status" >/dev/null 2>&1 \
        && ready=$((ready + 1))
    done
    if [ "$ready" -eq "${#NODES[@]}" ]; then
      status
      return 0
    fi
    sleep 0.3
  done
  echo "the cluster did not become ready within 30 s; see data/logs/" >&2
  status
  return 1
}

down() {
  for n in "${NODES[@]}"; do
    if alive "$n"; then kill -TERM "$(pid_of "$n")"; fi
  done
  for n in "${NODES[@]}"; do
    for _ in $(seq 1 100); do alive "$n" || break; sleep 0.1; done
    if alive "$n"; then kill -KILL "$(pid_of "$n")"; echo "node $n killed"; fi
    rm -f "$RUN/node$n.pid"
  done
  echo "cluster stopped"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  clean) down; rm -rf data; echo "data removed" ;;
  *) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
