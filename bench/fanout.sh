#!/usr/bin/env bash
# One event to 10,000 subscribed update streams: bench/fanout.js registers N virtual daemons
# (each its own node_id, label bench=RUN), opens one SubscribeUpdates stream per node, publishes
# one config_change to the label through AdminService.PublishConfig and times the delivery to
# every stream; the manager's VmRSS/VmHWM are sampled meanwhile. Each run uses a fresh manager
# and database. Goal (issue 7): p99 < 1 s, manager < 512 MiB resident.
#
#   bench/fanout.sh [NODES=10000] [RUNS=3]     (env: OPS_BUILD_DIR, CHANNELS=100)
BENCH_NEEDS="ops-manager pbcall"
source "$(dirname "$0")/lib.sh"
NODES=${1:-10000}; RUNS=${2:-3}; CHANNELS=${CHANNELS:-100}
[ -d tests/interop/node_modules/@grpc/grpc-js ] || (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
# The manager and the load generator each need ~NODES descriptors and threads.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
TOKEN=bench-$RANDOM$RANDOM
SHA=$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)
machine
OUT=$BT/results.txt
for r in $(seq "$RUNS"); do
  D=$BT/run$r; mkdir -p "$D"
  PORT=$(free_port 39000)
  cat > "$D/manager.yaml" <<YAML
grpc: {host: 127.0.0.1, port: $PORT}
database: {driver: sqlite, dsn: $D/ops.db}
node: {heartbeat_interval: 60s, offline_after: 10m}
log: {level: warn, file: $D/manager.log}
prometheus: {enabled: false}
limits: {register_per_minute: 6000000, register_burst: 1000000}  # the whole fleet from one address
admin:
  tokens:
    - {name: bench, role: operator, sha256: $SHA}
YAML
  "$BIN/ops-manager" -c "$D/manager.yaml" >> "$D/manager.stderr" 2>&1 &
  MPID=$!; BPIDS+=("$MPID")
  for _ in $(seq 100); do "$BIN/pbcall" --timeout 1000 127.0.0.1:$PORT grpc.health.v1.Health/Check >/dev/null 2>&1 && break; sleep 0.1; done
  LINE=$(node bench/fanout.js --manager 127.0.0.1:$PORT --token "$TOKEN" --nodes "$NODES" --channels "$CHANNELS" --pid "$MPID" --label "run$r" 2>"$D/fanout.err") || {
    echo "run $r failed: $LINE $(head -5 "$D/fanout.err")" >&2; }
  echo "run=$r $LINE" | tee -a "$OUT"
  stop_pid "$MPID"
done
echo "# medians of $RUNS runs, $NODES streams over $CHANNELS connections:"
for k in publish_call_ms p50_ms p99_ms max_ms mgr_rss_peak_mib mgr_hwm_mib received; do printf '%s=%s ' "$k" "$(med "$OUT" $k)"; done
echo
