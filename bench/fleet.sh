#!/usr/bin/env bash
# Fleet scale (issue 10): bench/fleet (virtual daemons: register, heartbeat, metrics, agent
# syncs, one SubscribeUpdates stream each) against one ops-manager on a fresh SQLite database.
#
#   bench/fleet.sh SCENARIO [NODES=20000] [SECONDS]
#     steady   SECONDS (600) of steady load
#     publish  once every stream is open and PUBLISH_AT (60) s have passed (the registration
#              ramp is over), one config_change to all (AdminService.PublishConfig
#              by label, through pbcall); delivery time from just before the call to each
#              daemon's receipt. SECONDS (300) is the limit; the run ends when all got it.
#     restart  the manager gets SIGTERM at RESTART_AT s (default 150, after warm-up), is
#              started again on the same database; time until all daemons are back and
#              reporting, reconnects per second. SECONDS (300).
#     soak     SECONDS (1800) of steady load, manager samples to bench/results/fleet-soak-*.txt,
#              RSS and fd slopes after WARMUP s (300). Not for CI.
#   env: OPS_BUILD_DIR, CHANNELS (NODES/100), THREADS (2: loop threads of the generator),
#        FLEET_ARGS (more fleet options), KEEP=1 (keep the work dir).
# Prints the machine line and the generator's summary line (key=value); exit status is the
# generator's (0 = no errors).
BENCH_NEEDS="ops-manager pbcall fleet"
source "$(dirname "$0")/lib.sh"
SCEN=${1:?usage: bench/fleet.sh steady|publish|restart|soak [NODES] [SECONDS]}
NODES=${2:-20000}
case $SCEN in
  steady) SECS=${3:-600} ;;
  publish) SECS=${3:-300} ;;
  restart) SECS=${3:-300} ;;
  soak) SECS=${3:-1800} ;;
  *) echo "unknown scenario $SCEN" >&2; exit 2 ;;
esac
CHANNELS=${CHANNELS:-$(( NODES / 100 > 0 ? NODES / 100 : 1 ))}
# Until update streams are thread-less the manager needs a thread and a descriptor per stream.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
ulimit -u unlimited 2>/dev/null || true
TOKEN=bench-$RANDOM$RANDOM
SHA=$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)
# Below the ephemeral range (32768+), where another benchmark's client sockets may sit on it.
PORT=$(free_port $((21000 + RANDOM % 4000)))
PROM_PORT=$(free_port $((25000 + RANDOM % 4000)))
D=$BT/mgr; mkdir -p "$D"
cat > "$D/manager.yaml" <<YAML
grpc: {host: 127.0.0.1, port: $PORT}
database: {driver: sqlite, dsn: $D/ops.db}
node: {heartbeat_interval: 10s, offline_after: 10m}
log: {level: warn, file: $D/manager.log}
prometheus: {enabled: true, listen: 127.0.0.1:$PROM_PORT}  # scraped once, at the end
limits:                     # the whole simulated fleet comes from one address
  register_per_minute: 6000000
  register_burst: 1000000
  max_update_streams: $(( NODES * 2 > 10000 ? NODES * 2 : 10000 ))
admin:
  tokens:
    - {name: bench, role: operator, sha256: $SHA}
YAML
# The manager's pid lives in a file: the restart scenario replaces the process, and the
# generator's sampler follows it there.
PIDF=$BT/manager.pid
start_mgr() {
  "$BIN/ops-manager" -c "$D/manager.yaml" >> "$D/manager.stderr" 2>&1 &
  echo $! > "$PIDF"
  local i
  for i in $(seq 300); do
    "$BIN/pbcall" --timeout 1000 127.0.0.1:$PORT grpc.health.v1.Health/Check >/dev/null 2>&1 && return 0
    kill -0 "$(cat "$PIDF")" 2>/dev/null || break
    sleep 0.1
  done
  echo "manager did not start; log:" >&2; tail -n 20 "$D/manager.log" "$D/manager.stderr" >&2 || true
  return 1
}
bench_extra_cleanup() { [ -s "$PIDF" ] && stop_pid "$(cat "$PIDF")"; }
# What the generator runs (sh -c) for the scenarios; written as scripts so that they can
# start a manager of their own (restart) with the same config.
cat > "$BT/publish.sh" <<SH
#!/usr/bin/env bash
exec "$BIN/pbcall" --timeout 60000 --header "authorization: Bearer $TOKEN" 127.0.0.1:$PORT \
  ops.admin.v1.AdminService/PublishConfig \
  '{"target":{"labels":{"bench":"fleet"}},"agent_id":"bench","config":"$(printf 'fleet bench %s\n' "$(date +%s)" | base64 -w0)"}' \
  > "$BT/publish.out" 2>&1
SH
cat > "$BT/restart.sh" <<SH
#!/usr/bin/env bash
# SIGTERM, wait for the exit (at most 30 s), start again on the same database.
p=\$(cat "$PIDF"); t0=\$(date +%s.%N)
kill -TERM "\$p"
for i in \$(seq 300); do kill -0 "\$p" 2>/dev/null || break; sleep 0.1; done
kill -9 "\$p" 2>/dev/null
t1=\$(date +%s.%N)
"$BIN/ops-manager" -c "$D/manager.yaml" >> "$D/manager.stderr" 2>&1 &
echo \$! > "$PIDF"
for i in \$(seq 300); do "$BIN/pbcall" --timeout 1000 127.0.0.1:$PORT grpc.health.v1.Health/Check >/dev/null 2>&1 && break; sleep 0.1; done
t2=\$(date +%s.%N)
awk -v a="\$t0" -v b="\$t1" -v c="\$t2" 'BEGIN { printf "stop_s=%.2f start_s=%.2f\\n", b - a, c - b }' > "$BT/restart.out"
SH
chmod +x "$BT/publish.sh" "$BT/restart.sh"

machine
start_mgr
ARGS=(--target 127.0.0.1:$PORT --nodes "$NODES" --channels "$CHANNELS" --threads "${THREADS:-2}" --seconds "$SECS"
      --pid-file "$PIDF" --label fleet)
case $SCEN in
  publish) ARGS+=(--publish-cmd "$BT/publish.sh" --publish-at "${PUBLISH_AT:-60}") ;;
  restart) ARGS+=(--disrupt-cmd "$BT/restart.sh" --disrupt-at "${RESTART_AT:-150}") ;;
  soak)
    mkdir -p bench/results
    SAMPLES=bench/results/fleet-soak-$(date +%Y%m%d-%H%M%S).txt
    ARGS+=(--samples "$SAMPLES" --warmup "${WARMUP:-300}")
    echo "# samples: $SAMPLES" ;;
esac
echo "# bench/fleet.sh $SCEN $NODES $SECS (channels=$CHANNELS) $(git rev-parse --short HEAD 2>/dev/null)"
set +e
# shellcheck disable=SC2086
"$BIN/fleet" "${ARGS[@]}" ${FLEET_ARGS:-} 2> "$BT/fleet.err"
rc=$?
set -e
grep -v '^t=' "$BT/fleet.err" >&2 || true
# The manager's own view: per-method latency from its histogram (the bucket holding the
# quantile: an upper bound), which leaves out the generator's own queueing. Whole run.
if curl -s -m 10 "http://127.0.0.1:$PROM_PORT/metrics" > "$BT/metrics.txt" 2>/dev/null; then
  awk '
    /^ops_manager_rpc_duration_seconds_bucket\{/ && /ManagerService/ {
      m = $0; sub(/.*method="/, "", m); sub(/".*/, "", m); sub(/.*\//, "", m)
      if (m == "SubscribeUpdates") next
      le = $0; sub(/.*le="/, "", le); sub(/".*/, "", le)
      n[m]++; B[m, n[m]] = le; C[m, n[m]] = $NF }
    END {
      printf "# manager-side (histogram upper bounds):"
      for (m in n) {
        tot = C[m, n[m]]; if (tot == 0) continue
        p50 = ""; p99 = ""
        for (i = 1; i <= n[m]; i++) {
          if (p50 == "" && C[m, i] >= 0.5 * tot) p50 = B[m, i]
          if (p99 == "" && C[m, i] >= 0.99 * tot) p99 = B[m, i]
        }
        printf " srv_%s_calls=%d srv_%s_p50_s<=%s srv_%s_p99_s<=%s", m, tot, m, p50, m, p99
      }
      print "" }' "$BT/metrics.txt"
fi
[ -f "$BT/publish.out" ] && echo "# publish: $(cat "$BT/publish.out" | head -c 300)"
[ -f "$BT/restart.out" ] && echo "# restart: $(cat "$BT/restart.out")"
if [ $rc -ne 0 ]; then
  echo "# generator exit $rc; progress lines:" >&2; grep '^t=' "$BT/fleet.err" | tail -5 >&2
  echo "# manager log (last lines):" >&2; tail -n 5 "$D/manager.log" >&2 || true
fi
exit $rc
