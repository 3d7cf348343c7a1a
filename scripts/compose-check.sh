#!/usr/bin/env bash
# Brings up the docker-compose cluster from a fresh image and checks it for real: all three
# containers healthy, a write through a follower, the leader's container killed, a write to
# the survivors, the container restarted and every node converged to the same state; then a
# fourth node joins as a learner and is promoted. Tears everything down at the end.
# Needs only a Docker engine (no registry): scripts/compose-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

compose() { if docker compose version >/dev/null 2>&1; then docker compose "$@"; else docker-compose "$@"; fi; }
fail() { echo "compose-check: $*" >&2; compose --profile learner logs --tail=20 >&2 || true; exit 1; }
cleanup() { compose --profile learner down -v >/dev/null 2>&1 || true; }
trap cleanup EXIT

# Every API call but the probes needs a token: a fresh administrator for this run.
export BATON_ADMIN_TOKEN="baton_admin.$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
api() { curl -H "Authorization: Bearer $BATON_ADMIN_TOKEN" "$@"; }
export -f api   # used inside `bash -c` by wait_for

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {'d': d}))" "$1"; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || fail "timed out waiting for $what"
    sleep 0.5
  done
}
healthy() { [ "$(compose ps | grep -c '(healthy)')" -ge "$1" ]; }
converged() {
  local digests
  digests=$(for p in "$@"; do api -sf "127.0.0.1:$p/cluster/digest"; echo; done | sort -u | grep -c .)
  [ "$digests" -eq 1 ]
}
create_group() {  # create_group PORT ID
  local code
  code=$(api -s -o /dev/null -w '%{http_code}' -X POST "127.0.0.1:$1/api/v1/tenants/t/namespaces/n/clientfailover/groups" \
    -H 'content-type: application/json' -d "{\"Id\": \"$2\", \"FailoverTimeout\": \"00:00:30\"}")
  [ "$code" = 201 ] || fail "creating $2 through :$1 answered $code"
}

bash scripts/image.sh
cleanup
compose up -d
wait_for 60 "three healthy containers" healthy 3
leader=$(api -sf 127.0.0.1:7001/cluster/status | json 'd["leader"]')
follower_port=$((7000 + leader % 3 + 1))
create_group "$follower_port" before-kill
echo "compose-check: leader is baton$leader; killing its container"
compose kill "baton$leader" >/dev/null 2>&1
survivor_port=$follower_port
wait_for 20 "a new leader" bash -c "api -sf 127.0.0.1:$survivor_port/cluster/status | grep -qv '\"leader\":$leader,'"
create_group "$survivor_port" after-kill
compose start "baton$leader" >/dev/null 2>&1
wait_for 60 "three healthy containers again" healthy 3
wait_for 30 "every node converged" converged 7001 7002 7003
groups=$(api -sf 127.0.0.1:7001/cluster/digest | json 'd["groups"]')
[ "$groups" = 2 ] || fail "expected 2 groups after recovery, found $groups"

compose --profile learner up -d baton4
wait_for 60 "the fourth container" bash -c "api -sf 127.0.0.1:7004/healthz"
api -sf -X POST 127.0.0.1:7001/cluster/learners -H 'content-type: application/json' \
  -d '{"id": 4, "raft_addr": "baton4:7101", "api_addr": "baton4:7001"}' >/dev/null || fail "adding the learner"
api -sf -X POST 127.0.0.1:7001/cluster/nodes/4/promote >/dev/null || fail "promoting the learner"
wait_for 30 "four nodes converged" converged 7001 7002 7003 7004
echo "compose-check: ok (kill, recovery, convergence, learner added and promoted)"
