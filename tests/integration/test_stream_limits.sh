#!/usr/bin/env bash
# Stream limits against a real ops-manager, driven by an independent client (grpc-js,
# tests/interop/stream_limits.js): limits.max_streams_per_connection caps the streams of one
# connection, limits.max_update_streams the SubscribeUpdates streams of all; the extra ones get
# RESOURCE_EXHAUSTED, the open ones keep receiving events, and each kind of refusal is logged
# once per peer per interval, not once per call.
source "$(dirname "$0")/lib.sh"
command -v node >/dev/null || fail "node is required (scripts/deps.sh)"
if [ ! -d "$SRC/tests/interop/node_modules/@grpc/grpc-js" ]; then
  (cd "$SRC/tests/interop" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
MP=$(free_port)
TOKEN=limits-token-$RANDOM$RANDOM
SHA=$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)
cat > "$T/manager.yaml" <<YAML
grpc: {host: 127.0.0.1, port: $MP}
database: {driver: sqlite, dsn: $T/ops.db}
log: {level: info}
limits:
  max_streams_per_connection: 5
  max_update_streams: 7
  refusal_log_interval: 10m
admin:
  tokens:
    - {name: limits, role: operator, sha256: $SHA}
YAML
"$BIN/ops-manager" -c "$T/manager.yaml" >> "$T/manager.log" 2>&1 &
PIDS+=($!)
wait_for 10 "$BIN/pbcall" 127.0.0.1:$MP grpc.health.v1.Health/Check || fail "manager did not start"

OUT=$(OPS_TOKEN=$TOKEN node "$SRC/tests/interop/stream_limits.js" 127.0.0.1:$MP "$SRC" 5 7 2>&1) || {
  echo "$OUT"; fail "stream limits"; }
echo "$OUT"
refused=$(echo "$OUT" | sed -n 's/^refused=//p')
[ "${refused:-0}" -eq 4 ] || fail "expected 4 refused streams, got ${refused:-none}"
# One line per connection at its limit (A), and one for the update-stream cap (B), whatever
# the number of refused calls.
expect_eq "$(grep -c 'event=rpc.stream_refused' "$T/manager.log" || true)" 1 "rpc.stream_refused lines for 2 refusals on one connection"
expect_eq "$(grep -c 'event=update.stream_refused' "$T/manager.log" || true)" 1 "update.stream_refused lines for 2 refusals"
kill -0 "${PIDS[0]}" || fail "the manager died"
"$BIN/pbcall" 127.0.0.1:$MP grpc.health.v1.Health/Check >/dev/null || fail "the manager stopped serving"
pass "stream limits: $refused refused streams, all as expected; the manager serves on"
