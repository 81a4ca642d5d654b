#!/usr/bin/env bash
# Nodes prove who they are (issue 8) with real ops-daemons and real certificates: a daemon
# enrolling with a token (secret file 0600, reused after a restart, re-enrolling after its node
# was deleted); mtls mode: a matrix of refused attempts (another CA, an expired certificate,
# node A's certificate speaking for node B...) with the store unchanged, and a real daemon.
source "$(dirname "$0")/lib.sh"
command -v sqlite3 >/dev/null || fail "sqlite3 is required"
bash "$SRC/tests/support/gen-certs.sh" "$T/certs"
C=$T/certs
ADM=node-auth-test-admin-token
ADM_SHA=$(printf %s "$ADM" | sha256sum | cut -d' ' -f1)
REFUSED=0; LIMITED=0

sql() { sqlite3 -cmd ".timeout 5000" "$1" "$2"; }
# expect_code NAME WANT OUTPUT: the gRPC code of a pbcall answer (the last line for streams).
expect_code() {
  local got; got=$(printf '%s\n' "$3" | tail -1 | jq -r .code)
  [ "$got" = "$2" ] || fail "$1: expected $2, got $got ($(printf '%s' "$3" | tail -1))"
}
# refused NAME WANT pbcall-args...: one refused attempt, counted.
refused() {
  local name=$1 want=$2; shift 2
  expect_code "$name" "$want" "$(call "$@")"
  REFUSED=$((REFUSED + 1)); echo "  refused as expected ($want): $name"
}
limited() {
  local name=$1 want=$2; shift 2
  expect_code "$name" "$want" "$(call "$@")"
  LIMITED=$((LIMITED + 1)); echo "  limited as expected ($want): $name"
}
# The parts of the store a refused call must not touch (last_seen moves with heartbeats).
snapshot() {
  sql "$1" "select node_id, hostname, labels, daemon_address from nodes order by node_id;
            select node_id, count(*) from metric_nodes join metrics on metrics.node_ref = metric_nodes.id group by node_id;
            select node_id, agent_id, status from agents order by 1, 2;
            select node_id, sha256 from node_secrets order by 1;
            select name, uses, revoked_at from enrollment_tokens order by 1;"
}
start_mgr() { # $1 config, $2 log, $3 target, [$4.. pbcall TLS flags]
  local cfg=$1 log=$2 target=$3; shift 3
  "$BIN/ops-manager" -c "$cfg" >> "$log" 2>&1 &
  PIDS+=($!); LAST_PID=$!
  wait_for 10 "$BIN/pbcall" "$@" "$target" grpc.health.v1.Health/Check || fail "manager ($cfg) did not start"
}

# ==== token mode: a real daemon ============================================================
TP=$(free_port); TM=127.0.0.1:$TP; TDB=$T/token.db
cat > "$T/token.yaml" <<YAML
grpc: {host: 127.0.0.1, port: $TP}
database: {driver: sqlite, dsn: $TDB}
node: {heartbeat_interval: 1s, offline_after: 30s}
prometheus: {enabled: false}
node_auth: {mode: token}
admin:
  tokens:
    - {name: root, role: admin, sha256: $ADM_SHA}
YAML
start_mgr "$T/token.yaml" "$T/token-manager.log" $TM
TMPID=$LAST_PID
AH="authorization:Bearer $ADM"
admin() { call --header "$AH" $TM "ops.admin.v1.AdminService/$1" "$2"; }
new_token() { # NAME TTL USES -> the token
  local r; r=$(admin CreateEnrollmentToken "{\"name\":\"$1\",\"ttl_seconds\":$2,\"max_uses\":$3}")
  expect_code "create token $1" OK "$r"; jget "$r" .response.secret
}
# ---- a real daemon enrolls ------------------------------------------------------------------
echo "token mode: a real ops-daemon enrolls"
DTOK=$(new_token daemon 3600 2)
printf '%s\n' "$DTOK" > "$T/enroll.token"
GP=$(free_port); HP=$(free_port)
cat > "$T/daemon.yaml" <<YAML
daemon: {id: real-1, work_dir: $T/work, grpc_host: 127.0.0.1, grpc_port: $GP, http_port: $HP}
manager:
  address: $TM
  heartbeat_interval: 1s
  reconnect_interval: 1s
  timeout: 3s
  enrollment_token_file: $T/enroll.token
collectors:
  cpu: {interval: 1s}
  memory: {enabled: false}
  disk: {enabled: false}
  network: {enabled: false}
agents:
  - id: idle
    binary_path: /bin/sleep
    args: ["100000"]
YAML
start_daemon() { "$BIN/ops-daemon" -c "$T/daemon.yaml" >> "$T/daemon.log" 2>&1 & DPID=$!; PIDS+=($DPID); }
uses() { admin ListEnrollmentTokens '{}' | jq -r '.response.tokens[] | select(.name=="daemon") | .uses'; }
start_daemon
wait_for 15 test -s "$T/work/node_secret" || fail "daemon never stored a secret"
expect_eq "$(stat -c %a "$T/work/node_secret")" 600 "secret file mode"
SECRET1=$(cat "$T/work/node_secret")
expect_eq "$(sql $TDB "select sha256 from node_secrets where node_id='real-1'")" "$(printf %s "$SECRET1" | sha256sum | cut -d' ' -f1)" "the daemon's secret"
wait_for 15 sh -c "sqlite3 -cmd '.timeout 5000' $TDB \"select count(*) from agents where node_id='real-1' and agent_id='idle'\" | grep -qx 1" || fail "the daemon's sync never arrived"
wait_for 15 sh -c "sqlite3 -cmd '.timeout 5000' $TDB \"select count(*) from metric_nodes join metrics on node_ref=id where node_id='real-1'\" | grep -qvx 0" || fail "the daemon's reports never arrived"
expect_eq "$(uses)" 1 "token uses after enrolling"
kill $DPID; wait $DPID 2>/dev/null || true
n_before=$(grep -c "link.enrolled" "$T/daemon.log")
start_daemon
wait_for 15 sh -c "grep -c 'event=link.registered' '$T/daemon.log' | grep -qx 2" || fail "the restarted daemon did not register"
sleep 2
expect_eq "$(cat "$T/work/node_secret")" "$SECRET1" "secret reused after a restart"
expect_eq "$(grep -c "link.enrolled" "$T/daemon.log")" "$n_before" "no second enrollment"
expect_eq "$(uses)" 1 "token uses after a restart"
grep -q "event=link.heartbeat_failed" "$T/daemon.log" && fail "a heartbeat failed: $(grep heartbeat_failed "$T/daemon.log" | tail -1)"
# deleted on the manager: the secret is refused, the daemon says so and enrolls again
expect_code "DeleteNode real-1" OK "$(admin DeleteNode '{"node_id":"real-1"}')"
wait_for 20 grep -q "event=link.secret_refused" "$T/daemon.log" || fail "the daemon never noticed its secret was refused"
wait_for 20 sh -c "[ -s '$T/work/node_secret' ] && [ \"\$(cat '$T/work/node_secret')\" != '$SECRET1' ]" || fail "the daemon did not enroll again"
wait_for 15 sh -c "sqlite3 -cmd '.timeout 5000' $TDB \"select status from nodes where node_id='real-1'\" | grep -qx online" || fail "real-1 not back online"
expect_eq "$(uses)" 2 "token uses after re-enrolling"
kill $DPID; wait $DPID 2>/dev/null || true
pass "token mode: daemon enrolled (secret 0600), reused its secret after a restart, re-enrolled after deletion"
kill $TMPID; wait $TMPID 2>/dev/null || true

HB=manager.ManagerService/Heartbeat; RM=manager.ManagerService/ReportMetrics; SY=proto.DaemonService/SyncAgentStates
# ==== mtls mode ==========================================================================
MP=$(free_port); MM=127.0.0.1:$MP; MDB=$T/mtls.db
cat > "$T/mtls.yaml" <<YAML
grpc:
  host: 127.0.0.1
  port: $MP
  tls: {enabled: true, cert_file: $C/server.pem, key_file: $C/server.key, ca_file: $C/ca.pem, require_client_cert: true}
database: {driver: sqlite, dsn: $MDB}
node: {heartbeat_interval: 1s, offline_after: 30s}
prometheus: {enabled: false}
node_auth:
  mode: mtls
  allow:
    - identity: node-1
      nodes: [gateway-child]
YAML
start_mgr "$T/mtls.yaml" "$T/mtls-manager.log" $MM --ca $C/ca.pem --cert $C/client.pem --key $C/client.key
MMPID=$LAST_PID
as() { echo "--ca $C/ca.pem --cert $C/$1.pem --key $C/$1.key"; }
expect_code "node-b registers with its certificate" OK "$(call $(as node-b) $MM manager.ManagerService/RegisterNode '{"node_id":"node-b","hostname":"hb"}')"
expect_code "node-1 speaks for an allowed node" OK "$(call $(as client) $MM manager.ManagerService/RegisterNode '{"node_id":"gateway-child","hostname":"gc"}')"
sleep 2.5
before=$(snapshot $MDB)
echo "mtls mode: refused attempts"
refused "a certificate from another CA" UNAVAILABLE --ca $C/ca.pem --cert $C/other-client.pem --key $C/other-client.key $MM $HB '{"node_id":"node-1"}'
# An expired certificate: our own client refuses to present it (rpc/wire.c checks the dates),
# so nothing reaches the manager; any other client's handshake is refused by the manager.
out=$("$BIN/pbcall" --ca $C/ca.pem --cert $C/expired-client.pem --key $C/expired-client.key $MM $HB '{"node_id":"node-1"}' 2>&1 || true)
if echo "$out" | grep -q '"code"'; then expect_code "an expired certificate" UNAVAILABLE "$out"
else echo "$out" | grep -qi "expired" || fail "an expired certificate: neither refused by the client nor UNAVAILABLE: $out"; fi
REFUSED=$((REFUSED + 1)); echo "  refused as expected: an expired certificate"
refused "no client certificate" UNAVAILABLE --ca $C/ca.pem $MM $HB '{"node_id":"node-b"}'
refused "node-a's certificate: Heartbeat for node-b" PERMISSION_DENIED $(as node-a) $MM $HB '{"node_id":"node-b"}'
refused "node-a's certificate: ReportMetrics for node-b" PERMISSION_DENIED $(as node-a) $MM $RM "{\"node_id\":\"node-b\",\"metrics\":[{\"type\":\"cpu\",\"timestamp\":$(date +%s),\"values\":{\"usage\":99}}]}"
refused "node-a's certificate: SyncAgentStates for node-b" PERMISSION_DENIED $(as node-a) $MM $SY '{"node_id":"node-b","states":[{"agent_id":"evil","status":"running"}]}'
refused "node-a's certificate: RegisterNode for node-b" PERMISSION_DENIED $(as node-a) $MM manager.ManagerService/RegisterNode '{"node_id":"node-b","hostname":"taken-over"}'
refused "node-a's certificate: SubscribeUpdates for node-b" PERMISSION_DENIED $(as node-a) --timeout 3000 $MM manager.ManagerService/SubscribeUpdates '{"node_id":"node-b"}'
refused "node-1's allow list does not cover node-b" PERMISSION_DENIED $(as client) $MM $HB '{"node_id":"node-b"}'
r=$(call $(as node-a) $MM $HB '{"node_id":"node-b"}')
echo "$r" | grep -q "certificate identity 'node-a' may not speak for node 'node-b'" || fail "PERMISSION_DENIED message: $r"
# its own id but never registered: answered, and no placeholder row is made
r=$(call $(as node-a) $MM $HB '{"node_id":"node-a"}'); expect_code "unknown node-a heartbeat" OK "$r"
expect_eq "$(jget "$r" .response.success)" false "a heartbeat from an unknown node is not accepted"
REFUSED=$((REFUSED + 1)); echo "  refused as expected (success=false): Heartbeat from an unknown node (no auto-register)"
after=$(snapshot $MDB)
[ "$before" = "$after" ] || { diff <(echo "$before") <(echo "$after"); fail "mtls mode: the store changed after refused attempts"; }
expect_eq "$(sql $MDB "select count(*) from nodes where node_id='node-a'")" 0 "no placeholder for node-a"
pass "mtls mode: refused attempts left the store unchanged"

echo "mtls mode: a real ops-daemon"
GP=$(free_port); HP=$(free_port)
cat > "$T/daemon-mtls.yaml" <<YAML
daemon: {id: node-a, work_dir: $T/work-mtls, grpc_host: 127.0.0.1, grpc_port: $GP, http_port: $HP}
manager:
  address: $MM
  tls: {enabled: true, cert_file: $C/node-a.pem, key_file: $C/node-a.key, ca_file: $C/ca.pem}
  heartbeat_interval: 1s
  reconnect_interval: 1s
  timeout: 3s
collectors:
  cpu: {interval: 1s}
  memory: {enabled: false}
  disk: {enabled: false}
  network: {enabled: false}
agents:
  - id: idle
    binary_path: /bin/sleep
    args: ["100000"]
YAML
"$BIN/ops-daemon" -c "$T/daemon-mtls.yaml" >> "$T/daemon-mtls.log" 2>&1 &
PIDS+=($!)
wait_for 15 sh -c "sqlite3 -cmd '.timeout 5000' $MDB \"select status from nodes where node_id='node-a'\" | grep -qx online" || fail "mtls daemon never online"
wait_for 15 sh -c "sqlite3 -cmd '.timeout 5000' $MDB \"select count(*) from agents where node_id='node-a'\" | grep -qx 1" || fail "mtls daemon's sync never arrived"
wait_for 15 sh -c "sqlite3 -cmd '.timeout 5000' $MDB \"select count(*) from metric_nodes join metrics on node_ref=id where node_id='node-a'\" | grep -qvx 0" || fail "mtls daemon's reports never arrived"
pass "mtls mode: a daemon with node-a's certificate registers, syncs and reports"

echo "refused attempts: $REFUSED, all as expected"
echo "limited calls: $LIMITED, all as expected"
