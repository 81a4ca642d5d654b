#!/usr/bin/env bash
# Server reflection against a real ops-manager and a real ops-daemon, used by an independent
# client (grpc-js, tests/interop/reflect.js) in both protocol versions: every registered
# service is listed and answered, and the client makes calls it learned only through
# reflection.
source "$(dirname "$0")/lib.sh"
command -v node >/dev/null || fail "node is required (scripts/deps.sh)"
if [ ! -d "$SRC/tests/interop/node_modules/@grpc/grpc-js" ]; then
  (cd "$SRC/tests/interop" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
MP=$(free_port); GP=$(free_port); HP=$(free_port)
M=127.0.0.1:$MP; D=127.0.0.1:$GP
cat > "$T/manager.yaml" <<YAML
grpc: {host: 127.0.0.1, port: $MP}
database: {driver: sqlite, dsn: $T/ops.db}
YAML
cat > "$T/daemon.yaml" <<YAML
daemon: {work_dir: $T/work, grpc_host: 127.0.0.1, grpc_port: $GP, http_port: $HP}
manager: {address: $M, heartbeat_interval: 1s, reconnect_interval: 1s}
collectors: {disk: {enabled: false}, network: {enabled: false}}
agents:
  - id: idle
    binary_path: /bin/sleep
    args: ["100000"]
YAML
"$BIN/ops-manager" -c "$T/manager.yaml" >> "$T/manager.log" 2>&1 &
PIDS+=($!)
wait_for 10 "$BIN/pbcall" $M grpc.health.v1.Health/Check || fail "manager did not start"
"$BIN/ops-daemon" -c "$T/daemon.yaml" >> "$T/daemon.log" 2>&1 &
PIDS+=($!)
wait_for 10 "$BIN/pbcall" $D grpc.health.v1.Health/Check || fail "daemon did not start"

REFL=grpc.reflection.v1alpha.ServerReflection,grpc.reflection.v1.ServerReflection
# What each program registers, derived from its method table: a service added to a program
# without being listed here fails the list check, so this list is kept honest.
MSVC=manager.ManagerService,proto.DaemonService,grpc.health.v1.Health,ops.admin.v1.AdminService,$REFL
DSVC=proto.DaemonService,grpc.health.v1.Health,$REFL
HEALTH='grpc.health.v1.Health/Check={"service":""}'
MCALLS="$HEALTH;"'manager.ManagerService/Heartbeat={"node_id":"reflect-node","timestamp":1}'
DCALLS="$HEALTH;"'proto.DaemonService/ListAgents={}'

for v in v1alpha v1; do
  out=$(node "$SRC/tests/interop/reflect.js" $M "$SRC" $v "$MSVC" "$MCALLS" 2>&1) || { echo "$out"; fail "manager reflection $v"; }
  echo "$out" | grep -q 'Health/Check -> {"status":"SERVING"}' || { echo "$out"; fail "manager: Health/Check learned by reflection"; }
  echo "$out" | grep -q 'Heartbeat -> {"success":true' || { echo "$out"; fail "manager: Heartbeat learned by reflection"; }
  pass "manager reflection $v ($(echo "$out" | grep -c '^ok') checks)"
  out=$(node "$SRC/tests/interop/reflect.js" $D "$SRC" $v "$DSVC" "$DCALLS" 2>&1) || { echo "$out"; fail "daemon reflection $v"; }
  echo "$out" | grep -q '"id":"idle"' || { echo "$out"; fail "daemon: ListAgents learned by reflection"; }
  pass "daemon reflection $v ($(echo "$out" | grep -c '^ok') checks)"
done
# AdminService on a listener of its own (admin.listen) answers reflection and health there too.
MP2=$(free_port); AP=$(free_port)
cat > "$T/manager2.yaml" <<YAML
grpc: {host: 127.0.0.1, port: $MP2}
database: {driver: sqlite, dsn: $T/ops2.db}
admin: {listen: "127.0.0.1:$AP"}
YAML
"$BIN/ops-manager" -c "$T/manager2.yaml" >> "$T/manager2.log" 2>&1 &
PIDS+=($!)
wait_for 10 "$BIN/pbcall" 127.0.0.1:$AP grpc.health.v1.Health/Check || fail "admin listener did not start"
ASVC=ops.admin.v1.AdminService,grpc.health.v1.Health,$REFL
ACALLS="$HEALTH;"'grpc.health.v1.Health/Check={"service":"ops.admin.v1.AdminService"}'
for v in v1alpha v1; do
  out=$(node "$SRC/tests/interop/reflect.js" 127.0.0.1:$AP "$SRC" $v "$ASVC" "$ACALLS" 2>&1) || { echo "$out"; fail "admin listener reflection $v"; }
  [ "$(echo "$out" | grep -c 'Health/Check -> {"status":"SERVING"}')" = 2 ] || { echo "$out"; fail "admin listener: health learned by reflection"; }
  pass "admin listener reflection $v ($(echo "$out" | grep -c '^ok') checks)"
done
# ... and the grpc listener of that manager no longer lists AdminService.
MSVC2=manager.ManagerService,proto.DaemonService,grpc.health.v1.Health,$REFL
out=$(node "$SRC/tests/interop/reflect.js" 127.0.0.1:$MP2 "$SRC" v1 "$MSVC2" "$HEALTH" 2>&1) || { echo "$out"; fail "grpc listener without AdminService"; }
pass "grpc listener lists no AdminService when admin.listen is set"

# Each reflection stream is one access-log line, ended cleanly by the client.
grep -q 'method=/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo.*code=OK' "$T/manager.log" ||
  fail "reflection calls not in the access log"
pass "reflection"
