#!/usr/bin/env bash
# The daemon obeys only its manager (daemon.auth), against a real ops-daemon supervising test
# agents and a real ops-manager over TLS: every DaemonService method without credentials, with
# a wrong token, with a malformed header, a certificate from another CA (refused at the
# handshake), a verified certificate whose identity is not allowed (PERMISSION_DENIED); the
# agents unchanged afterwards; the manager's certificate and the manager's token let in, and
# an operator driving an agent through AdminService works; a reload that breaks the manager's
# token makes the manager's calls fail UNAUTHENTICATED; health and reflection stay open; a daemon
# on 0.0.0.0 without auth refuses to start naming the field, and starts with insecure: true,
# warning. The refused attempts are counted.
source "$(dirname "$0")/lib.sh"
command -v jq >/dev/null || fail "jq is required"
C=$T/certs
bash "$SRC/tests/support/gen-certs.sh" "$C" || fail "gen-certs"

# The manager's certificate: its server certificate and its client identity towards daemons.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$C/manager.key" 2>/dev/null
openssl req -new -sha256 -key "$C/manager.key" -subj "/CN=ops-manager" -out "$C/manager.csr" 2>/dev/null
printf '%s\n' "basicConstraints = critical, CA:FALSE" "keyUsage = critical, digitalSignature, keyEncipherment" \
  "extendedKeyUsage = serverAuth, clientAuth" "subjectAltName = DNS:ops-manager, DNS:localhost, IP:127.0.0.1" > "$C/manager.ext"
openssl x509 -req -sha256 -days 30 -set_serial 0x$(openssl rand -hex 8) -in "$C/manager.csr" -CA "$C/ca.pem" -CAkey "$C/ca.key" \
  -extfile "$C/manager.ext" -out "$C/manager.pem" 2>/dev/null || fail "manager certificate"

MP=$(free_port); GP=$(free_port); HP=$(free_port)
M=127.0.0.1:$MP; D=127.0.0.1:$GP
ADMT=admin-$RANDOM$RANDOM
DTOKEN=dtok-$(openssl rand -hex 16)
h() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
printf '%s\n' "$DTOKEN" > "$T/daemon-token"; chmod 600 "$T/daemon-token"
cat > "$T/manager.yaml" <<YAML
grpc:
  host: 127.0.0.1
  port: $MP
  tls: {enabled: true, cert_file: $C/manager.pem, key_file: $C/manager.key, ca_file: $C/ca.pem}
database: {driver: sqlite, dsn: $T/ops.db}
node: {heartbeat_interval: 1s, offline_after: 3s}
admin:
  tokens:
    - {name: ada, role: admin, sha256: $(h $ADMT)}
daemons: {token_file: $T/daemon-token}
YAML
# daemon_yaml ALLOWED TOKEN_SHA256: the daemon's file with this auth section.
daemon_yaml() {
cat <<YAML
daemon:
  work_dir: $T/work
  grpc_host: 127.0.0.1
  grpc_port: $GP
  http_port: $HP
  resource_interval: 1s
  stop_grace: 2s
  tls: {enabled: true, cert_file: $C/server.pem, key_file: $C/server.key, client_ca_file: $C/ca.pem}
  auth:
    allowed_identities: [$1]
    manager_token_sha256: $2
manager:
  address: $M
  tls: {enabled: true, ca_file: $C/ca.pem}
  heartbeat_interval: 1s
  reconnect_interval: 1s
  timeout: 3s
collectors:
  cpu: {enabled: false}
  memory: {enabled: false}
  disk: {enabled: false}
  network: {enabled: false}
agents:
  - id: ticker
    binary_path: /bin/sh
    args: ["-c", "while true; do sleep 0.5; done"]
  - id: idle
    binary_path: /bin/sleep
    args: ["100000"]
YAML
}
daemon_yaml ops-manager "$(h "$DTOKEN")" > "$T/daemon.yaml"
"$BIN/ops-daemon" --check-config "$T/daemon.yaml" >/dev/null || fail "check-config: $("$BIN/ops-daemon" --check-config "$T/daemon.yaml" 2>&1)"

"$BIN/ops-manager" -c "$T/manager.yaml" >> "$T/manager.log" 2>&1 &
MPID=$!; PIDS+=($MPID)
wait_for 10 "$BIN/pbcall" --ca "$C/ca.pem" $M grpc.health.v1.Health/Check || fail "manager did not start"
"$BIN/ops-daemon" -c "$T/daemon.yaml" >> "$T/daemon.log" 2>&1 &
DPID=$!; PIDS+=($DPID)
wait_for 10 test -s "$T/work/node_id" || fail "no node_id"
NODE=$(cat "$T/work/node_id")

TLS=(--ca "$C/ca.pem")
code() { jget "$1" .code; }
# D ARGS... METHOD [JSON]: a DaemonService call over TLS.
D() { call "${TLS[@]}" "$@"; }
good() { local b='{}'; [ $# -ge 2 ] && b=$2; D --header "authorization: Bearer $DTOKEN" "$D" "proto.DaemonService/$1" "$b"; }
pids() { jget "$(good ListAgents)" '[.response.agents[] | "\(.id)=\(.pid)"] | sort | join(",")'; }
running() { [ "$(jget "$(good ListAgents)" '[.response.agents[] | select(.status=="running")] | length')" = 2 ]; }
wait_for 15 running || fail "agents not running: $(good ListAgents)"
BEFORE=$(pids)
pass "daemon up over TLS; agents $BEFORE"

# Health and reflection need nothing.
expect_eq "$(code "$(D "$D" grpc.health.v1.Health/Check)")" OK "health without credentials"
pass "health open"

REFUSED=0
refused() { # EXPECTED WHAT OUTPUT
  expect_eq "$(code "$3")" "$1" "$2"
  REFUSED=$((REFUSED + 1))
}
declare -A BODY=(
  [ListAgents]='{}'
  [OperateAgent]='{"agent_id":"ticker","operation":"stop"}'
  [GetAgentMetrics]='{"agent_id":"ticker"}'
  [GetConfig]='{"config_type":"daemon"}'
  [PushUpdate]='{"component":"daemon","version":"9.9.9"}'
  [Register]='{}'
  [Heartbeat]='{}'
  [ReportMetrics]='{}'
  [SyncAgentStates]='{}'
)
METHODS=(ListAgents OperateAgent GetAgentMetrics GetConfig PushUpdate Register Heartbeat ReportMetrics SyncAgentStates)
for m in "${METHODS[@]}"; do
  OUT=$(D "$D" "proto.DaemonService/$m" "${BODY[$m]}"); refused UNAUTHENTICATED "no credentials $m" "$OUT"
  OUT=$(D --header "authorization: Bearer wrong-$RANDOM" "$D" "proto.DaemonService/$m" "${BODY[$m]}")
  refused UNAUTHENTICATED "wrong token $m" "$OUT"
  OUT=$(D --cert "$C/client.pem" --key "$C/client.key" "$D" "proto.DaemonService/$m" "${BODY[$m]}")
  refused PERMISSION_DENIED "identity node-1 $m" "$OUT"
done
jget "$OUT" .message | grep -q 'node-1' || fail "PERMISSION_DENIED message does not name the identity: $OUT"
OUT=$(D --header "authorization: Basic $DTOKEN" "$D" proto.DaemonService/OperateAgent "${BODY[OperateAgent]}")
refused UNAUTHENTICATED "Basic scheme" "$OUT"
OUT=$(D --header "authorization: Bearer " "$D" proto.DaemonService/OperateAgent "${BODY[OperateAgent]}")
refused UNAUTHENTICATED "empty bearer" "$OUT"
# The manager's token with a certificate that is not allowed: the token is enough.
expect_eq "$(code "$(D --cert "$C/client.pem" --key "$C/client.key" --header "authorization: Bearer $DTOKEN" "$D" proto.DaemonService/ListAgents)")" OK "token with another certificate"
# Another CA: the handshake fails, nothing reaches a handler.
OUT=$(D --cert "$C/other-client.pem" --key "$C/other-client.key" "$D" proto.DaemonService/OperateAgent "${BODY[OperateAgent]}")
refused UNAVAILABLE "certificate from another CA" "$OUT"
# An expired client certificate of the right CA is refused by our client before it is sent,
# and by the daemon if it were.
OUT=$(D --cert "$C/expired-client.pem" --key "$C/expired-client.key" "$D" proto.DaemonService/ListAgents)
[ "$(code "$OUT")" != OK ] || fail "expired client certificate accepted: $OUT"; REFUSED=$((REFUSED + 1))
# No TLS at all: the handshake fails.
OUT=$(call "$D" proto.DaemonService/ListAgents); refused UNAVAILABLE "plaintext to a TLS daemon" "$OUT"
pass "$REFUSED refused attempts, each with the expected code"

sleep 1.5 # the supervisor would have restarted a stopped agent by now
expect_eq "$(pids)" "$BEFORE" "agent pids after the refused attempts"
grep -q "event=daemon.auth_refused.*method=/proto.DaemonService/OperateAgent.*code=PERMISSION_DENIED" "$T/daemon.log" ||
  fail "no daemon.auth_refused log line"
! grep -q "event=agent.operate" "$T/daemon.log" || fail "an operation ran: $(grep agent.operate "$T/daemon.log")"
pass "agents untouched ($BEFORE); refusals logged"

# The manager's certificate is on the list.
expect_eq "$(code "$(D --cert "$C/manager.pem" --key "$C/manager.key" "$D" proto.DaemonService/ListAgents)")" OK "manager certificate"
pass "manager certificate and token let in"

# An operator through the manager (certificate + token) restarts an agent.
A() { call "${TLS[@]}" --header "authorization: Bearer $ADMT" $M "ops.admin.v1.AdminService/$1" "$2"; }
online() { [ "$(jget "$(A GetNode "{\"node_id\":\"$NODE\"}")" .response.node.status)" = online ]; }
wait_for 15 online || fail "node never online"
tpid() { jget "$(good ListAgents)" '.response.agents[] | select(.id=="ticker") | .pid'; }
P0=$(tpid)
OUT=$(A OperateAgent "{\"node_id\":\"$NODE\",\"agent_id\":\"ticker\",\"operation\":\"restart\"}")
expect_eq "$(code "$OUT")" OK "OperateAgent through the manager: $OUT"
wait_for 10 running || fail "ticker not back"
[ "$(tpid)" != "$P0" ] || fail "ticker pid unchanged after restart"
pass "AdminService OperateAgent through the manager works (ticker $P0 -> $(tpid))"

# Only the token left (the certificate is no longer on the list): the manager still gets in.
daemon_yaml someone-else "$(h "$DTOKEN")" > "$T/daemon.yaml"
kill -HUP $DPID
wait_for 10 grep -q "event=config.reloaded" "$T/daemon.log" || fail "no reload"
OUT=$(A ListAgents "{\"node_id\":\"$NODE\"}")
expect_eq "$(code "$OUT")" OK "manager by token after the reload: $OUT"
# A daemon expecting another token: the manager is refused and says so.
daemon_yaml someone-else "$(h other-token)" > "$T/daemon.yaml"
kill -HUP $DPID
wait_for 10 bash -c "[ \$(grep -c 'event=config.reloaded' '$T/daemon.log') -ge 2 ]" || fail "no second reload"
OUT=$(A OperateAgent "{\"node_id\":\"$NODE\",\"agent_id\":\"idle\",\"operation\":\"stop\"}")
expect_eq "$(code "$OUT")" UNAUTHENTICATED "manager with a stale token: $OUT"; REFUSED=$((REFUSED + 1))
expect_eq "$(jget "$(D --header "authorization: Bearer other-token" "$D" proto.DaemonService/ListAgents)" '.response.agents | length')" 2 "agents listed with the new token"
pass "reloaded auth applies to the next call; manager refused with a stale token"

# Exposure: 0.0.0.0 without auth does not start; insecure: true starts with a warning.
GP2=$(free_port); HP2=$(free_port)
cat > "$T/open.yaml" <<YAML
daemon:
  work_dir: $T/work2
  grpc_host: 0.0.0.0
  grpc_port: $GP2
  http_port: $HP2
manager: {address: 127.0.0.1:1}
prometheus: {enabled: false}
YAML
rc=0; OUT=$("$BIN/ops-daemon" -c "$T/open.yaml" 2>&1) || rc=$?
expect_eq "$rc" 2 "exit code of an exposed daemon without auth"
echo "$OUT" | grep -q "open.yaml: line 3: daemon.grpc_host: 0.0.0.0 is not a loopback address" || fail "message: $OUT"
rc=0; "$BIN/ops-daemon" --check-config "$T/open.yaml" >/dev/null 2>&1 || rc=$?
expect_eq "$rc" 1 "--check-config on an exposed daemon without auth"
REFUSED=$((REFUSED + 1))
pass "refused to start: $OUT"
printf '  auth: {insecure: true}\n' > "$T/auth.part"
sed -i "/http_port: $HP2/r $T/auth.part" "$T/open.yaml"
"$BIN/ops-daemon" -c "$T/open.yaml" >> "$T/open.log" 2>&1 &
OPID=$!; PIDS+=($OPID)
wait_for 10 "$BIN/pbcall" 127.0.0.1:$GP2 proto.DaemonService/ListAgents || fail "insecure daemon not serving"
grep -q "event=daemon.insecure.*without authentication" "$T/open.log" || fail "no insecure warning: $(cat "$T/open.log")"
kill $OPID; wait $OPID 2>/dev/null || true
"$BIN/ops-daemon" -c "$T/open.yaml" >> "$T/open.log" 2>&1 &
OPID=$!; PIDS+=($OPID)
wait_for 10 "$BIN/pbcall" 127.0.0.1:$GP2 grpc.health.v1.Health/Check || fail "insecure daemon not serving (2)"
expect_eq "$(grep -c "event=daemon.insecure" "$T/open.log")" 2 "insecure warning at every start"
kill $OPID; wait $OPID 2>/dev/null || true
pass "insecure: true starts and warns at every start"
echo "refused attempts: $REFUSED"
