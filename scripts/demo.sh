#!/usr/bin/env bash
# The demo: an ops-manager on an embedded SQLite file and an ops-daemon on this host
# supervising three example agents (configs/demo/agents/), then a live view of the fleet as the
# manager stores it. Ctrl-C stops everything (the agents too).
#   bash scripts/demo.sh            run until Ctrl-C
#   OPS_DEMO_SECONDS=30 bash scripts/demo.sh   run 30 s and stop (used by the tests)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
bash scripts/deps.sh
[ -x build/bin/ops-manager ] && [ -x build/bin/ops-daemon ] && [ "${OPS_DEMO_REBUILD:-1}" = 0 ] || bash scripts/build.sh build

RUN=${OPS_DEMO_DIR:-$ROOT/build/demo}
rm -rf "$RUN"; mkdir -p "$RUN"
port_free() { ! (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null; }
pick() { local p=$1; while ! port_free $p; do p=$((p + 1)); done; echo $p; }
MP=$(pick 9090); DP=$(pick 9091); [ "$DP" = "$MP" ] && DP=$(pick $((MP + 1))); HP=$(pick 8084)

cat > "$RUN/manager.yaml" <<YAML
grpc: {host: 127.0.0.1, port: $MP}
database: {driver: sqlite, dsn: $RUN/ops-manager.db}
node: {heartbeat_interval: 5s, offline_after: 15s}
log: {level: info, file: $RUN/manager.log}
YAML
sed -e "s|@RUN@|$RUN|g" -e "s|@AGENTS@|$ROOT/configs/demo/agents|g" -e "s|@DAEMON_PORT@|$DP|g" \
    -e "s|@HTTP_PORT@|$HP|g" -e "s|@MANAGER_PORT@|$MP|g" configs/demo/daemon.yaml.in > "$RUN/daemon.yaml"

build/bin/ops-manager -c "$RUN/manager.yaml" 2>>"$RUN/manager.log" &
MPID=$!
build/bin/ops-daemon -c "$RUN/daemon.yaml" --stop-agents >>"$RUN/daemon.log" 2>&1 &
DPID=$!
stop() {
  trap - INT TERM EXIT
  echo; echo "stopping: daemon (and its agents), then manager"
  kill -TERM $DPID 2>/dev/null || true; wait $DPID 2>/dev/null || true
  kill -TERM $MPID 2>/dev/null || true; wait $MPID 2>/dev/null || true
  echo "stopped. logs and data: $RUN"
  exit 0
}
trap stop INT TERM EXIT

cat <<EOF2
ops demo
  manager  127.0.0.1:$MP   store $RUN/ops-manager.db   log $RUN/manager.log
  daemon   127.0.0.1:$DP   agents: ticker, heartbeat, flaky   log $RUN/daemon.log
  (the fleet view below is what the manager has stored; Ctrl-C stops everything)
EOF2

DB=$RUN/ops-manager.db
q() { sqlite3 -cmd ".timeout 2000" -separator '  ' "$DB" "$1" 2>/dev/null || true; }
end=$(( ${OPS_DEMO_SECONDS:-0} > 0 ? SECONDS + OPS_DEMO_SECONDS : 0 ))
while :; do
  sleep 3
  kill -0 $MPID 2>/dev/null || { echo "manager exited; see $RUN/manager.log"; exit 1; }
  kill -0 $DPID 2>/dev/null || { echo "daemon exited; see $RUN/daemon.log"; exit 1; }
  echo
  echo "== $(date +%T)  nodes"
  q "select printf('%-38s %-16s %-8s last_seen %s', node_id, hostname, status, datetime(last_seen,'unixepoch')) from nodes"
  echo "== agents (as last synced by the daemon)"
  q "select printf('%-10s %-9s pid %-7d v%s', agent_id, status, pid, version) from agents where removed = 0 order by agent_id"
  echo "== latest metrics"
  q "select printf('%-8s %s  %s', type, datetime(ts,'unixepoch'), substr(vals, 1, 90)) from metrics m where ts = (select max(ts) from metrics where type = m.type) group by type"
  echo "== manager log (last events)"
  grep -E "event=(node\.|agents\.synced|manager\.)" "$RUN/manager.log" | tail -3 | cut -c1-160 || true
  if [ $end -gt 0 ] && [ $SECONDS -ge $end ]; then stop; fi
done
