#!/usr/bin/env bash
# Nodes prove who they are (issue 8), token mode, with real processes and a real SQLite file:
# a matrix of refused attempts, each with its gRPC code and the store unchanged afterwards;
# the request limits (oversize reports, syncs and labels refused, the process serving on, a
# RegisterNode flood limited and logged once, not once per call). Real daemons and mtls mode:
# test_node_auth_daemons.sh.
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

# ==== token mode ===========================================================================
TP=$(free_port); TM=127.0.0.1:$TP; TDB=$T/token.db
cat > "$T/token.yaml" <<YAML
grpc: {host: 127.0.0.1, port: $TP}
database: {driver: sqlite, dsn: $TDB}
node: {heartbeat_interval: 1s, offline_after: 30s}
prometheus: {enabled: false}
node_auth: {mode: token}
limits:
  max_metrics_per_report: 5
  max_values_per_metric: 5
  max_labels: 4
  max_string_bytes: 64
  max_agents_per_sync: 3
  register_per_minute: 12
  register_burst: 20
  refusal_log_interval: 10m   # the whole test runs in one interval, even under sanitizers
admin:
  tokens:
    - {name: root, role: admin, sha256: $ADM_SHA}
YAML
"$BIN/ops-manager" --check-config "$T/token.yaml" >/dev/null || fail "token config refused"
start_mgr "$T/token.yaml" "$T/token-manager.log" $TM
TMPID=$LAST_PID
AH="authorization:Bearer $ADM"
admin() { call --header "$AH" $TM "ops.admin.v1.AdminService/$1" "$2"; }
new_token() { # NAME TTL USES -> the token
  local r; r=$(admin CreateEnrollmentToken "{\"name\":\"$1\",\"ttl_seconds\":$2,\"max_uses\":$3}")
  expect_code "create token $1" OK "$r"; jget "$r" .response.secret
}
GOOD=$(new_token good 3600 2)
REVOKED=$(new_token revoked 3600 5)
EXPIRED=$(new_token expired 1 5)
USEDUP=$(new_token usedup 3600 1)
expect_code "revoke" OK "$(admin RevokeEnrollmentToken '{"name":"revoked"}')"
expect_code "create a duplicate name" ALREADY_EXISTS "$(admin CreateEnrollmentToken '{"name":"good"}')"
expect_eq "$(sql $TDB "select count(*) from enrollment_tokens where sha256 like 'et1.%'")" 0 "tokens stored hashed"
expect_eq "$(sql $TDB "select count(*) from enrollment_tokens where length(sha256) = 64")" 4 "token hashes"
reg() { # NODE TOKEN -> RegisterNode answer
  call --header "authorization:Bearer $2" $TM manager.ManagerService/RegisterNode "{\"node_id\":\"$1\",\"hostname\":\"h-$1\"}"
}
r=$(reg node-a "$GOOD"); expect_code "enroll node-a" OK "$r"; SA=$(jget "$r" .response.node_secret)
r=$(reg node-b "$GOOD"); expect_code "enroll node-b" OK "$r"; SB=$(jget "$r" .response.node_secret)
r=$(reg used-1 "$USEDUP"); expect_code "enroll used-1" OK "$r"
case $SA in ns1.????????????????????????????????????????????????????????????????) ;; *) fail "node secret format: $SA" ;; esac
[ "$SA" != "$SB" ] || fail "two nodes got the same secret"
expect_eq "$(sql $TDB "select sha256 from node_secrets where node_id='node-a'")" "$(printf %s "$SA" | sha256sum | cut -d' ' -f1)" "only the secret's SHA-256 is stored"
sa() { echo "authorization:Bearer $SA"; }
expect_code "node-a heartbeats with its secret" OK "$(call --header "$(sa)" $TM manager.ManagerService/Heartbeat '{"node_id":"node-a"}')"
expect_code "node-a reports with its secret" OK "$(call --header "$(sa)" $TM manager.ManagerService/ReportMetrics "{\"node_id\":\"node-a\",\"metrics\":[{\"type\":\"cpu\",\"timestamp\":$(date +%s),\"values\":{\"usage\":1}}]}")"
expect_code "node-a re-registers with its secret" OK "$(reg node-a "$SA")"
wait_for 10 sh -c "admin_out=\$('$BIN/pbcall' --header '$AH' $TM ops.admin.v1.AdminService/ListEnrollmentTokens '{}'); echo \"\$admin_out\" | jq -e '.response.tokens[] | select(.name==\"expired\") | .state == \"expired\"'" \
  || fail "the 1 s token never expired"
sleep 2.5 # let liveness write last_seen of the fresh registrations before the snapshot
before=$(snapshot $TDB)

echo "token mode: refused attempts"
HB=manager.ManagerService/Heartbeat; RM=manager.ManagerService/ReportMetrics; SY=proto.DaemonService/SyncAgentStates
refused "RegisterNode without a token" UNAUTHENTICATED $TM manager.ManagerService/RegisterNode '{"node_id":"intruder","hostname":"x"}'
refused "RegisterNode with a wrong token" UNAUTHENTICATED --header "authorization:Bearer et1.0000000000000000000000000000000000000000000000000000000000000000" $TM manager.ManagerService/RegisterNode '{"node_id":"intruder","hostname":"x"}'
refused "RegisterNode with a revoked token" UNAUTHENTICATED --header "authorization:Bearer $REVOKED" $TM manager.ManagerService/RegisterNode '{"node_id":"intruder","hostname":"x"}'
refused "RegisterNode with an expired token" UNAUTHENTICATED --header "authorization:Bearer $EXPIRED" $TM manager.ManagerService/RegisterNode '{"node_id":"intruder","hostname":"x"}'
refused "RegisterNode with a used-up token" UNAUTHENTICATED --header "authorization:Bearer $USEDUP" $TM manager.ManagerService/RegisterNode '{"node_id":"intruder","hostname":"x"}'
refused "RegisterNode for node-b with node-a's secret" UNAUTHENTICATED --header "$(sa)" $TM manager.ManagerService/RegisterNode '{"node_id":"node-b","hostname":"taken-over"}'
refused "Heartbeat for node-b with node-a's secret" UNAUTHENTICATED --header "$(sa)" $TM $HB '{"node_id":"node-b"}'
refused "ReportMetrics for node-b with node-a's secret" UNAUTHENTICATED --header "$(sa)" $TM $RM "{\"node_id\":\"node-b\",\"metrics\":[{\"type\":\"cpu\",\"timestamp\":$(date +%s),\"values\":{\"usage\":99}}]}"
refused "SyncAgentStates for node-b with node-a's secret" UNAUTHENTICATED --header "$(sa)" $TM $SY '{"node_id":"node-b","states":[{"agent_id":"evil","status":"running"}]}'
refused "SubscribeUpdates for node-b with node-a's secret" UNAUTHENTICATED --header "$(sa)" --timeout 3000 $TM manager.ManagerService/SubscribeUpdates '{"node_id":"node-b"}'
refused "ReportEventResult for node-b with node-a's secret" UNAUTHENTICATED --header "$(sa)" $TM manager.ManagerService/ReportEventResult '{"node_id":"node-b","event_id":1,"outcome":"applied"}'
refused "Heartbeat without a secret" UNAUTHENTICATED $TM $HB '{"node_id":"node-a"}'
refused "Heartbeat with an enrollment token instead of the secret" UNAUTHENTICATED --header "authorization:Bearer $GOOD" $TM $HB '{"node_id":"node-a"}'
refused "Heartbeat from an unknown node (no auto-register)" UNAUTHENTICATED --header "$(sa)" $TM $HB '{"node_id":"ghost"}'
refused "CreateEnrollmentToken without an admin token" UNAUTHENTICATED $TM ops.admin.v1.AdminService/CreateEnrollmentToken '{"name":"mine"}'
refused "CreateEnrollmentToken with a node secret" UNAUTHENTICATED --header "$(sa)" $TM ops.admin.v1.AdminService/CreateEnrollmentToken '{"name":"mine"}'
after=$(snapshot $TDB)
[ "$before" = "$after" ] || { diff <(echo "$before") <(echo "$after"); fail "token mode: the store changed after refused attempts"; }
expect_eq "$(sql $TDB "select count(*) from nodes where node_id in ('ghost','intruder')")" 0 "no node from a refused call"
pass "token mode: refused attempts left the store unchanged"

echo "limits"
big_report=$(jq -nc --argjson ts "$(date +%s)" '{node_id:"node-a",metrics:[range(6)|{type:("t\(.)"),timestamp:$ts,values:{v:1}}]}')
limited "ReportMetrics with 6 MetricData (limit 5)" RESOURCE_EXHAUSTED --header "$(sa)" $TM $RM "$big_report"
wide=$(jq -nc --argjson ts "$(date +%s)" '{node_id:"node-a",metrics:[{type:"cpu",timestamp:$ts,values:([range(6)|{key:("k\(.)"),value:1}]|from_entries)}]}')
limited "ReportMetrics with 6 values in one MetricData (limit 5)" RESOURCE_EXHAUSTED --header "$(sa)" $TM $RM "$wide"
long_type=$(printf 'x%.0s' $(seq 65))
limited "ReportMetrics with a 65-byte type (limit 64)" INVALID_ARGUMENT --header "$(sa)" $TM $RM "{\"node_id\":\"node-a\",\"metrics\":[{\"type\":\"$long_type\",\"timestamp\":$(date +%s),\"values\":{\"v\":1}}]}"
limited "SyncAgentStates with 4 agents (limit 3)" RESOURCE_EXHAUSTED --header "$(sa)" $TM $SY '{"node_id":"node-a","states":[{"agent_id":"a1"},{"agent_id":"a2"},{"agent_id":"a3"},{"agent_id":"a4"}]}'
limited "RegisterNode with 5 labels (limit 4)" INVALID_ARGUMENT --header "$(sa)" $TM manager.ManagerService/RegisterNode '{"node_id":"node-a","hostname":"h","labels":{"a":"1","b":"2","c":"3","d":"4","e":"5"}}'
limited "RegisterNode with a 65-byte label value" INVALID_ARGUMENT --header "$(sa)" $TM manager.ManagerService/RegisterNode "{\"node_id\":\"node-a\",\"hostname\":\"h\",\"labels\":{\"k\":\"$long_type\"}}"
limited "Heartbeat with a 65-byte node_id" INVALID_ARGUMENT --header "$(sa)" $TM $HB "{\"node_id\":\"$long_type\"}"
r=$(call --header "$(sa)" $TM $RM "$big_report"); echo "$r" | grep -q "limits.max_metrics_per_report" || fail "the message names the limit: $r"
expect_code "still serving: health" OK "$(call $TM grpc.health.v1.Health/Check)"
expect_code "still serving: node-a heartbeats" OK "$(call --header "$(sa)" $TM $HB '{"node_id":"node-a"}')"
after=$(snapshot $TDB)
[ "$before" = "$after" ] || { diff <(echo "$before") <(echo "$after"); fail "limits: the store changed"; }
# A RegisterNode flood from one address (40 calls at once): the bucket (burst 20, one more
# every 5 s) runs dry, and the log has one refusal line for it, not one per call.
mkdir -p "$T/flood"
fp=()
for i in $(seq 40); do call --timeout 120000 $TM manager.ManagerService/RegisterNode '{"node_id":"flood","hostname":"x"}' > "$T/flood/$i" & fp+=($!); done
wait "${fp[@]}" # not a bare wait: the manager is a background job too
flood_ok=0; flood_limited=0
for f in "$T"/flood/*; do
  code=$(jq -r .code "$f")
  case $code in RESOURCE_EXHAUSTED) flood_limited=$((flood_limited + 1)) ;; UNAUTHENTICATED) flood_ok=$((flood_ok + 1)) ;; *) fail "flood: $code" ;; esac
done
[ $flood_limited -ge 10 ] || fail "flood: only $flood_limited of 40 RegisterNode calls were limited"
LIMITED=$((LIMITED + flood_limited))
lines=$(grep "event=request.refused" "$T/token-manager.log" | grep -c "method=/manager.ManagerService/RegisterNode peer=ipv4:127.0.0.1.*RESOURCE_EXHAUSTED" || true)
expect_eq "$lines" 1 "refusal lines for $flood_limited limited RegisterNode calls"
access=$(grep "event=rpc.call" "$T/token-manager.log" | grep -c "RegisterNode.*code=RESOURCE_EXHAUSTED" || true)
expect_eq "$access" 0 "access lines for rate-limited calls at info level"
auth_lines=$(grep -c "event=node.auth_refused" "$T/token-manager.log" || true)
[ "$auth_lines" -eq 1 ] || fail "node.auth_refused lines: $auth_lines for $((REFUSED + flood_ok)) refusals (want one per minute)"
expect_code "still serving after the flood" OK "$(call --header "$(sa)" $TM $HB '{"node_id":"node-a"}')"
[ "$before" = "$(snapshot $TDB)" ] || fail "flood: the store changed"
pass "limits: $LIMITED calls refused by limits ($flood_limited of 40 in a RegisterNode flood, $lines log line), still serving"

echo "refused attempts: $REFUSED, all as expected"
echo "limited calls: $LIMITED, all as expected"
