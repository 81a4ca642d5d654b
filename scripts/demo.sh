#!/usr/bin/env bash
# The demo: an ops-manager on an embedded SQLite file and an ops-daemon on this host
# supervising three example agents (configs/demo/agents/), then a live view of the fleet
# through opsctl (nodes, agents, a cpu chart, recent events) with an admin token made for this
# run. Ctrl-C stops everything (the agents too).
#   bash scripts/demo.sh            run until Ctrl-C
#   OPS_DEMO_SECONDS=30 bash scripts/demo.sh   run 30 s and stop (used by the tests)
#   OPS_DEMO_DIR=/tmp/x             where config, store and logs go (default build/demo)
#   OPS_DEMO_REBUILD=0              skip the build when the binaries are there
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
bash scripts/deps.sh
[ -x build/bin/ops-manager ] && [ -x build/bin/ops-daemon ] && [ -x build/bin/opsctl ] && [ "${OPS_DEMO_REBUILD:-1}" = 0 ] ||
  bash scripts/build.sh build

RUN=${OPS_DEMO_DIR:-$ROOT/build/demo}
rm -rf "$RUN"; mkdir -p "$RUN"
port_free() { ! (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null; }
pick() { local p=$1; while ! port_free $p; do p=$((p + 1)); done; echo $p; }
MP=$(pick 9090); DP=$(pick 9091); [ "$DP" = "$MP" ] && DP=$(pick $((MP + 1))); HP=$(pick 8084)
PP=$(pick 9190); PD=$(pick $((PP + 1)))

# A fresh admin token for this run: the manager keeps only its SHA-256.
TOKEN=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
TOKEN_SHA=$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)
cat > "$RUN/manager.yaml" <<YAML
grpc: {host: 127.0.0.1, port: $MP}
database: {driver: sqlite, dsn: $RUN/ops-manager.db}
node: {heartbeat_interval: 5s, offline_after: 15s}
log: {level: info, file: $RUN/manager.log}
prometheus: {listen: "127.0.0.1:$PP"}
admin:
  tokens:
    - {name: demo, role: admin, sha256: $TOKEN_SHA}
YAML
sed -e "s|@RUN@|$RUN|g" -e "s|@AGENTS@|$ROOT/configs/demo/agents|g" -e "s|@DAEMON_PORT@|$DP|g" \
    -e "s|@HTTP_PORT@|$HP|g" -e "s|@MANAGER_PORT@|$MP|g" -e "s|@PROM_PORT@|$PD|g" configs/demo/daemon.yaml.in > "$RUN/daemon.yaml"
export OPS_MANAGER=127.0.0.1:$MP OPS_TOKEN=$TOKEN
printf 'export OPS_MANAGER=%s\nexport OPS_TOKEN=%s\n' "$OPS_MANAGER" "$OPS_TOKEN" > "$RUN/opsctl.env"
CTL=$ROOT/build/bin/opsctl

build/bin/ops-manager -c "$RUN/manager.yaml" 2>>"$RUN/manager.log" &
MPID=$!
WPID=
DPID=
stop() {
  trap - INT TERM EXIT
  echo; echo "stopping: daemon (and its agents), then manager"
  [ -n "$WPID" ] && { kill -TERM $WPID 2>/dev/null || true; wait $WPID 2>/dev/null || true; }
  [ -n "$DPID" ] && { kill -TERM $DPID 2>/dev/null || true; wait $DPID 2>/dev/null || true; }
  kill -TERM $MPID 2>/dev/null || true; wait $MPID 2>/dev/null || true
  echo "stopped. logs and data: $RUN"
  exit 0
}
trap stop INT TERM EXIT
for _ in $(seq 100); do "$CTL" nodes >/dev/null 2>&1 && break; sleep 0.1; done
# Events as they happen, from the start (the node registering and coming online included).
"$CTL" watch >"$RUN/events.log" 2>&1 &
WPID=$!
build/bin/ops-daemon -c "$RUN/daemon.yaml" --stop-agents >>"$RUN/daemon.log" 2>&1 &
DPID=$!

howto() {
  cat <<EOF2
== try opsctl yourself (while the demo runs), from $ROOT:
  export OPS_MANAGER=$OPS_MANAGER
  export OPS_TOKEN=$OPS_TOKEN      # admin role; or: source $RUN/opsctl.env
  build/bin/opsctl nodes
  build/bin/opsctl agent restart ${NODE:-NODE} ticker
  build/bin/opsctl metrics ${NODE:-NODE} --type memory --since 10m
  build/bin/opsctl watch           # --help at every level
EOF2
}

NODE=
cat <<EOF2
ops demo
  manager  127.0.0.1:$MP   store $RUN/ops-manager.db   log $RUN/manager.log   /metrics 127.0.0.1:$PP
  daemon   127.0.0.1:$DP   agents: ticker, heartbeat, flaky   log $RUN/daemon.log
  (the fleet view below comes from opsctl, refreshed every few seconds; Ctrl-C stops everything)
EOF2
howto

end=$(( ${OPS_DEMO_SECONDS:-0} > 0 ? SECONDS + OPS_DEMO_SECONDS : 0 ))
while :; do
  sleep 3
  kill -0 $MPID 2>/dev/null || { echo "manager exited; see $RUN/manager.log"; exit 1; }
  kill -0 $DPID 2>/dev/null || { echo "daemon exited; see $RUN/daemon.log"; exit 1; }
  [ -z "$NODE" ] && [ -s "$RUN/daemon/node_id" ] && NODE=$(cat "$RUN/daemon/node_id")
  echo
  echo "== $(date +%T)  opsctl nodes"
  "$CTL" nodes 2>&1 || true
  if [ -n "$NODE" ]; then
    echo "== opsctl agents $NODE   (live, from the daemon)"
    "$CTL" agents "$NODE" 2>&1 || true
    echo "== opsctl metrics $NODE --type cpu --since 5m"
    "$CTL" metrics "$NODE" --type cpu --series usage_percent --since 5m --height 6 2>&1 || true
  else
    echo "(waiting for the daemon to register)"
  fi
  echo "== recent events (opsctl watch)"
  tail -6 "$RUN/events.log" | cut -c1-160 || true
  if [ $end -gt 0 ] && [ $SECONDS -ge $end ]; then
    howto
    stop
  fi
done
