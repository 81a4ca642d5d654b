#!/usr/bin/env bash
# AdminService against a real ops-manager and a real ops-daemon supervising test agents: every
# call; each way to be refused (no header, malformed header, unknown token, role too weak), none
# of which changes anything and each of which is audited when it targeted a change; an operator
# restart; DeleteNode by an admin; the audit trail; WatchEvents seeing an agent crash and the
# daemon going offline.
source "$(dirname "$0")/lib.sh"
command -v jq >/dev/null || fail "jq is required"
MP=$(free_port); GP=$(free_port); HP=$(free_port)
M=127.0.0.1:$MP; D=127.0.0.1:$GP
VIEW=view-$RANDOM$RANDOM; OPER=oper-$RANDOM$RANDOM; ADMT=admin-$RANDOM$RANDOM
h() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
cat > "$T/manager.yaml" <<YAML
grpc: {host: 127.0.0.1, port: $MP}
database: {driver: sqlite, dsn: $T/ops.db}
node: {heartbeat_interval: 1s, offline_after: 3s}
admin:
  tokens:
    - {name: vera, role: viewer, sha256: $(h $VIEW)}
    - {name: otto, role: operator, sha256: $(h $OPER)}
    - {name: ada, role: admin, sha256: $(h $ADMT)}
YAML
cat > "$T/daemon.yaml" <<YAML
daemon:
  work_dir: $T/work
  grpc_host: 127.0.0.1
  grpc_port: $GP
  http_port: $HP
  resource_interval: 1s
  stop_grace: 2s
manager:
  address: $M
  heartbeat_interval: 1s
  reconnect_interval: 1s
  timeout: 3s
labels: {env: admintest, team: ops}
collectors:
  cpu: {interval: 1s}
  memory: {interval: 1s}
  disk: {enabled: false}
  network: {enabled: false}
agents:
  - id: ticker
    binary_path: /bin/sh
    args: ["-c", "while true; do echo tick; sleep 0.5; done"]
    restart: {policy: always, backoff_base: 200ms, backoff_max: 1s}
  - id: idle
    binary_path: /bin/sleep
    args: ["100000"]
YAML
"$BIN/ops-manager" -c "$T/manager.yaml" >> "$T/manager.log" 2>&1 &
PIDS+=($!)
wait_for 10 "$BIN/pbcall" $M grpc.health.v1.Health/Check || fail "manager did not start"
"$BIN/ops-daemon" -c "$T/daemon.yaml" >> "$T/daemon.log" 2>&1 &
DPID=$!; PIDS+=($DPID)
wait_for 10 test -s "$T/work/node_id" || fail "no node_id"
NODE=$(cat "$T/work/node_id")

# A TOKEN METHOD [JSON]: an AdminService call with a bearer token ("" = no header).
A() {
  local body='{}'; [ $# -ge 3 ] && body=$3
  if [ -n "$1" ]; then call --header "authorization: Bearer $1" $M "ops.admin.v1.AdminService/$2" "$body"
  else call $M "ops.admin.v1.AdminService/$2" "$body"; fi
}
code() { jget "$1" .code; }
REFUSED=0
refused() { # EXPECTED_CODE WHAT OUTPUT
  expect_eq "$(code "$3")" "$1" "$2"
  REFUSED=$((REFUSED + 1))
}
online() { [ "$(jget "$(A $VIEW GetNode "{\"node_id\":\"$NODE\"}")" .response.node.status)" = online ]; }
wait_for 15 online || fail "node never online through GetNode"
ticker_pid() { jget "$(A $VIEW ListAgents "{\"node_id\":\"$NODE\"}")" '.response.agents[] | select(.id=="ticker") | .pid'; }
ticker_running() { [ "$(jget "$(A $VIEW ListAgents "{\"node_id\":\"$NODE\"}")" '.response.agents[] | select(.id=="ticker") | .status')" = running ]; }
wait_for 10 ticker_running || fail "ticker not running"
pass "node $NODE online; ticker running"

# --- refusals -------------------------------------------------------------------------------------
OUT=$(A "" ListNodes); refused UNAUTHENTICATED "no header" "$OUT"
jget "$OUT" .message | grep -q "missing authorization: Bearer token" || fail "no-header message: $OUT"
OUT=$(call --header "authorization: Basic $VIEW" $M ops.admin.v1.AdminService/ListNodes '{}'); refused UNAUTHENTICATED "malformed header" "$OUT"
OUT=$(call --header "authorization: Bearer" $M ops.admin.v1.AdminService/ListNodes '{}'); refused UNAUTHENTICATED "empty bearer" "$OUT"
OUT=$(A wrong-token ListNodes); refused UNAUTHENTICATED "unknown token" "$OUT"
expect_eq "$(jget "$OUT" .message)" "unknown token" "unknown token message"
OUT=$(A wrong-token WatchEvents); refused UNAUTHENTICATED "watch with unknown token" "$OUT"
PID0=$(ticker_pid)
OUT=$(A $VIEW OperateAgent "{\"node_id\":\"$NODE\",\"agent_id\":\"ticker\",\"operation\":\"restart\"}")
refused PERMISSION_DENIED "viewer OperateAgent" "$OUT"
jget "$OUT" .message | grep -q "needs role operator.*has role viewer" || fail "permission message: $OUT"
OUT=$(A "" OperateAgent "{\"node_id\":\"$NODE\",\"agent_id\":\"ticker\",\"operation\":\"stop\"}"); refused UNAUTHENTICATED "anonymous OperateAgent" "$OUT"
OUT=$(A wrong-token OperateAgent "{\"node_id\":\"$NODE\",\"agent_id\":\"ticker\",\"operation\":\"stop\"}"); refused UNAUTHENTICATED "unknown-token OperateAgent" "$OUT"
OUT=$(A $OPER DeleteNode "{\"node_id\":\"$NODE\"}"); refused PERMISSION_DENIED "operator DeleteNode" "$OUT"
OUT=$(A $VIEW DeleteNode "{\"node_id\":\"$NODE\"}"); refused PERMISSION_DENIED "viewer DeleteNode" "$OUT"
OUT=$(A $OPER ListAudit); refused PERMISSION_DENIED "operator ListAudit" "$OUT"
sleep 1
expect_eq "$(ticker_pid)" "$PID0" "ticker pid after refused operations"
online || fail "node gone after refused DeleteNode"
pass "refusals change nothing (ticker pid $PID0, node still there)"

# --- validation -------------------------------------------------------------------------------------
OUT=$(A $VIEW GetNode '{}'); expect_eq "$(code "$OUT")" INVALID_ARGUMENT "GetNode without node_id"
jget "$OUT" .message | grep -q node_id || fail "message does not name node_id: $OUT"
expect_eq "$(code "$(A $VIEW GetNode '{"node_id":"no-such-node"}')")" NOT_FOUND "GetNode unknown node"
expect_eq "$(code "$(A $VIEW ListAgents '{"node_id":"no-such-node"}')")" NOT_FOUND "ListAgents unknown node"
expect_eq "$(code "$(A $OPER OperateAgent "{\"node_id\":\"$NODE\",\"agent_id\":\"ticker\",\"operation\":\"explode\"}")")" INVALID_ARGUMENT "bad operation"
OUT=$(A $OPER OperateAgent "{\"node_id\":\"$NODE\",\"agent_id\":\"ghost\",\"operation\":\"restart\"}")
expect_eq "$(code "$OUT")" NOT_FOUND "unknown agent"
jget "$OUT" .message | grep -q "ghost" || fail "unknown-agent message names no agent: $OUT"
expect_eq "$(code "$(A $VIEW QueryMetrics "{\"node_id\":\"$NODE\"}")")" INVALID_ARGUMENT "QueryMetrics without type"
expect_eq "$(code "$(A $VIEW QueryMetrics "{\"node_id\":\"$NODE\",\"type\":\"cpu\",\"from\":1000,\"to\":9999999}")")" INVALID_ARGUMENT "range over 30 days"
expect_eq "$(code "$(A $VIEW QueryMetrics "{\"node_id\":\"$NODE\",\"type\":\"cpu\",\"from\":2000,\"to\":1000}")")" INVALID_ARGUMENT "from after to"
expect_eq "$(code "$(A $VIEW ListNodes '{"status":"sideways"}')")" INVALID_ARGUMENT "bad status filter"
expect_eq "$(code "$(A $VIEW ListNodes '{"page_token":"garbage"}')")" INVALID_ARGUMENT "bad page token"
expect_eq "$(code "$(A $VIEW GetDaemonConfig "{\"node_id\":\"$NODE\",\"config_type\":\"agent\"}")")" INVALID_ARGUMENT "agent config without agent_id"
pass "validation: INVALID_ARGUMENT / NOT_FOUND naming the field"

# --- reads ------------------------------------------------------------------------------------------
call $M manager.ManagerService/RegisterNode '{"node_id":"aaa-fake","hostname":"fake","labels":{"env":"other"}}' >/dev/null
call $M manager.ManagerService/RegisterNode '{"node_id":"zzz-fake","hostname":"fake2","labels":{"env":"admintest"}}' >/dev/null
OUT=$(A $VIEW ListNodes '{"page_size":1}')
expect_eq "$(jget "$OUT" '.response.nodes | length')" 1 "page 1 size"
TOK=$(jget "$OUT" .response.next_page_token); [ -n "$TOK" ] && [ "$TOK" != null ] || fail "no next_page_token: $OUT"
SEEN=$(jget "$OUT" '.response.nodes[0].node_id'); PAGES=1
while [ -n "$TOK" ] && [ "$TOK" != null ]; do
  OUT=$(A $VIEW ListNodes "{\"page_size\":1,\"page_token\":\"$TOK\"}")
  PAGES=$((PAGES + 1)); [ $PAGES -le 5 ] || fail "paging does not end"
  SEEN="$SEEN $(jget "$OUT" '.response.nodes[].node_id')"
  TOK=$(jget "$OUT" '.response.next_page_token // ""')
done
expect_eq "$(echo $SEEN | tr ' ' '\n' | sort | tr '\n' ' ')" "$(printf '%s\n' aaa-fake zzz-fake $NODE | sort | tr '\n' ' ')" "paged node ids"
expect_eq "$(jget "$(A $VIEW ListNodes '{"labels":{"env":"admintest","team":"ops"}}')" '[.response.nodes[].node_id] | join(",")')" "$NODE" "label filter"
expect_eq "$(jget "$(A $VIEW ListNodes '{"labels":{"env":"admintest"}}')" '.response.nodes | length')" 2 "one-label filter"
jget "$(A $VIEW ListNodes '{"status":"online"}')" '.response.nodes[].node_id' | grep -qx "$NODE" || fail "online filter lacks $NODE"
jget "$(A $VIEW ListNodes '{"status":"offline"}')" '.response.nodes[].node_id' | grep -qx "$NODE" && fail "offline filter has $NODE"
pass "ListNodes: pages of 1 ($SEEN), label and status filters"

has_cpu() { jget "$(A $VIEW GetNode "{\"node_id\":\"$NODE\"}")" '.response.latest_metrics[].type' | grep -qx cpu; }
wait_for 15 has_cpu || fail "GetNode has no latest cpu sample"
OUT=$(A $VIEW GetNode "{\"node_id\":\"$NODE\"}")
expect_eq "$(jget "$OUT" '[.response.agents[].agent_id] | sort | join(",")')" "idle,ticker" "GetNode agents"
expect_eq "$(jget "$OUT" '.response.node.labels.team')" ops "GetNode labels"
pass "GetNode: node, agents as synced, latest sample of $(jget "$OUT" '[.response.latest_metrics[].type] | join(",")')"

enough_cpu() { [ "$(jget "$(A $VIEW QueryMetrics "{\"node_id\":\"$NODE\",\"type\":\"cpu\"}")" '[.response.series[].points | length] | max // 0')" -ge 3 ]; }
wait_for 15 enough_cpu || fail "fewer than 3 cpu points"
OUT=$(A $VIEW QueryMetrics "{\"node_id\":\"$NODE\",\"type\":\"cpu\"}")
expect_eq "$(code "$OUT")" OK "QueryMetrics"
TO=$(jget "$OUT" .response.to); FROM=$(jget "$OUT" .response.from)
expect_eq "$((TO - FROM))" 3600 "default range"
KEY=$(jget "$OUT" '.response.series[0].key')
# A closed range in the past, so that no point arrives between the two queries.
TO=$((TO - 3)); FROM=$((TO - 3600))
OUT=$(A $VIEW QueryMetrics "{\"node_id\":\"$NODE\",\"type\":\"cpu\",\"from\":$FROM,\"to\":$TO}")
RAW=$(jget "$OUT" "[.response.series[] | select(.key==\"$KEY\") | .points[]] | length")
[ "$RAW" -ge 1 ] || fail "no raw point of $KEY before $TO: $OUT"
OUT=$(A $VIEW QueryMetrics "{\"node_id\":\"$NODE\",\"type\":\"cpu\",\"from\":$FROM,\"to\":$TO,\"buckets\":1,\"keys\":[\"$KEY\"]}")
expect_eq "$(jget "$OUT" '.response.series | length')" 1 "key filter"
expect_eq "$(jget "$OUT" '.response.series[0].points | length')" 1 "one bucket"
expect_eq "$(jget "$OUT" '.response.series[0].points[0].count')" "$RAW" "bucket count = raw points"
jget "$OUT" '.response.series[0].points[0] | (.min <= .value and .value <= .max)' | grep -qx true || fail "bucket avg outside min..max: $OUT"
OUT=$(A $VIEW MetricsSummary "{\"node_id\":\"$NODE\"}")
expect_eq "$(jget "$OUT" '[.response.keys[].type] | unique | join(",")')" "cpu,memory" "MetricsSummary types"
pass "QueryMetrics ($RAW raw points of $KEY, downsampled, key filter) and MetricsSummary"

OUT=$(A $VIEW GetAgentMetrics "{\"node_id\":\"$NODE\",\"agent_id\":\"ticker\",\"duration_seconds\":60}")
expect_eq "$(code "$OUT")" OK "GetAgentMetrics"
expect_eq "$(jget "$OUT" .response.agent_id)" ticker "GetAgentMetrics agent"
OUT=$(A $VIEW GetDaemonConfig "{\"node_id\":\"$NODE\"}")
expect_eq "$(code "$OUT")" OK "GetDaemonConfig"
jget "$OUT" .response.config_data | grep -q ticker || fail "daemon config lacks the agents: $OUT"
OUT=$(A $VIEW GetDaemonConfig "{\"node_id\":\"$NODE\",\"config_type\":\"agent\",\"agent_id\":\"idle\"}")
jget "$OUT" .response.config_data | grep -q sleep || fail "agent config: $OUT"
expect_eq "$(code "$(A $VIEW ListAgents '{"node_id":"aaa-fake"}')")" FAILED_PRECONDITION "node without a daemon address"
pass "ListAgents, GetAgentMetrics, GetDaemonConfig through the pool"

# --- operate and watch --------------------------------------------------------------------------------
# The node watcher below stops after 2 events, which must be the daemon's offline and
# aaa-fake's deletion: the fake nodes (never heartbeating) go offline before it starts.
fakes_offline() {
  local n
  for n in aaa-fake zzz-fake; do
    [ "$(jget "$(A $VIEW GetNode "{\"node_id\":\"$n\"}")" .response.node.status)" = offline ] || return 1
  done
}
wait_for 15 fakes_offline || fail "the fake nodes did not go offline (offline_after 3s)"
sleep 0.5 # their events reach the watchers just after the status is stored
"$BIN/pbcall" --timeout 60000 --max 100 --header "authorization: Bearer $VIEW" $M ops.admin.v1.AdminService/WatchEvents \
  "{\"kinds\":[\"agent.\"],\"node_id\":\"$NODE\"}" > "$T/watch_agents.out" 2>&1 &
W1=$!; PIDS+=($W1)
"$BIN/pbcall" --timeout 60000 --max 2 --header "authorization: Bearer $VIEW" $M ops.admin.v1.AdminService/WatchEvents \
  '{"kinds":["node.offline","node.deleted"]}' > "$T/watch_nodes.out" 2>&1 &
W2=$!; PIDS+=($W2)
wait_for 10 sh -c "[ \$(grep -c admin.watch_started '$T/manager.log') -ge 2 ]" || fail "watchers did not start"

OUT=$(A $OPER OperateAgent "{\"node_id\":\"$NODE\",\"agent_id\":\"ticker\",\"operation\":\"restart\"}")
expect_eq "$(code "$OUT")" OK "operator restart"
expect_eq "$(jget "$OUT" .response.via)" pool "restart via"
expect_eq "$(jget "$OUT" .response.success)" true "restart success"
PID1=$(ticker_pid)
[ -n "$PID1" ] && [ "$PID1" != "$PID0" ] || fail "restart did not change the pid ($PID0 -> $PID1)"
pass "operator restart: ticker pid $PID0 -> $PID1"

wait_for 10 grep -q '"agent.state"' "$T/watch_agents.out" || fail "no agent.state after the restart: $(cat $T/watch_agents.out)"
kill -9 "$PID1"
# The crash shows as an agent.state whose detail names the pid that died.
wait_for 15 grep -q "previous_pid=$PID1" "$T/watch_agents.out" || fail "no agent.state after the crash of $PID1: $(cat $T/watch_agents.out)"
kill $W1 2>/dev/null || true
pass "WatchEvents: agent.state for the restart and the crash ($(grep -c response "$T/watch_agents.out") events)"

OUT=$(A $ADMT DeleteNode '{"node_id":"aaa-fake"}')
expect_eq "$(code "$OUT")" OK "admin DeleteNode"
expect_eq "$(jget "$OUT" .response.deleted)" true "deleted"
expect_eq "$(code "$(A $VIEW GetNode '{"node_id":"aaa-fake"}')")" NOT_FOUND "deleted node gone"
expect_eq "$(code "$(A $ADMT DeleteNode '{"node_id":"aaa-fake"}')")" NOT_FOUND "delete twice"
kill -9 $DPID
wait_for 15 grep -q '"node.offline"' "$T/watch_nodes.out" || fail "no node.offline: $(cat $T/watch_nodes.out)"
wait $W2 || fail "node watcher did not stop after --max 2: $(cat $T/watch_nodes.out)"
expect_eq "$(tail -1 "$T/watch_nodes.out" | jq -r .code)" OK "node watcher end"
jq -e -s "[.[] | .response? | select(.kind==\"node.offline\" and .node_id==\"$NODE\")] | length == 1" "$T/watch_nodes.out" >/dev/null ||
  fail "node.offline not for $NODE: $(cat $T/watch_nodes.out)"
jq -e -s '[.[] | .response? | select(.kind=="node.deleted" and .node_id=="aaa-fake")] | length == 1' "$T/watch_nodes.out" >/dev/null ||
  fail "no node.deleted: $(cat $T/watch_nodes.out)"
pass "DeleteNode by admin; WatchEvents: node.deleted, node.offline after the daemon was killed"

# --- audit ---------------------------------------------------------------------------------------------
OUT=$(A $ADMT ListAudit '{"limit":100}')
expect_eq "$(code "$OUT")" OK "ListAudit"
AQ() { jget "$OUT" "[.response.records[] | select($1)] | length"; }
expect_eq "$(AQ ".method==\"OperateAgent\" and .actor==\"vera\" and .role==\"viewer\" and .result==\"PERMISSION_DENIED\" and .target==\"$NODE/ticker\"")" 1 "audit: viewer refusal"
expect_eq "$(AQ '.method=="OperateAgent" and .actor=="" and .result=="UNAUTHENTICATED"')" 2 "audit: anonymous and unknown-token attempts"
expect_eq "$(AQ ".method==\"OperateAgent\" and .actor==\"otto\" and .result==\"OK\" and .detail==\"restart\"")" 1 "audit: operator restart"
expect_eq "$(AQ '.method=="OperateAgent" and .result=="INVALID_ARGUMENT"')" 1 "audit: bad operation"
expect_eq "$(AQ '.method=="OperateAgent" and .result=="NOT_FOUND" and .target=="'$NODE'/ghost"')" 1 "audit: unknown agent"
expect_eq "$(AQ '.method=="DeleteNode" and .result=="PERMISSION_DENIED"')" 2 "audit: DeleteNode refusals"
expect_eq "$(AQ '.method=="DeleteNode" and .actor=="ada" and .result=="OK" and .target=="aaa-fake"')" 1 "audit: admin delete"
expect_eq "$(AQ '.method=="DeleteNode" and .actor=="ada" and .result=="NOT_FOUND"')" 1 "audit: delete twice"
expect_eq "$(AQ '.peer == ""')" 0 "audit: every record has a peer"
expect_eq "$(AQ '.method=="ListNodes" or .method=="GetNode"')" 0 "audit: reads are not audited"
FIRST=$(jget "$OUT" '.response.records[0].id'); LAST=$(jget "$OUT" '.response.records[-1].id')
[ "$FIRST" -gt "$LAST" ] || fail "audit not newest first"
expect_eq "$(jget "$(A $ADMT ListAudit '{"actor":"otto"}')" '[.response.records[].actor] | unique | join(",")')" otto "audit actor filter"
expect_eq "$(jget "$(A $ADMT ListAudit "{\"target\":\"$NODE\"}")" "[.response.records[] | select(.target | startswith(\"$NODE\") | not)] | length")" 0 "audit target filter"
expect_eq "$(jget "$(A $ADMT ListAudit '{"limit":2}')" '.response.records | length')" 2 "audit limit"
pass "audit trail: $(jget "$OUT" '.response.records | length') records (refusals, failures, successes)"
# --- a manager with AdminService on its own listener and no tokens ----------------------------------------
MP2=$(free_port); AP=$(free_port)
cat > "$T/manager2.yaml" <<YAML
grpc: {host: 127.0.0.1, port: $MP2}
database: {driver: sqlite, dsn: $T/ops2.db}
admin: {listen: "127.0.0.1:$AP"}
YAML
"$BIN/ops-manager" -c "$T/manager2.yaml" >> "$T/manager2.log" 2>&1 &
PIDS+=($!)
wait_for 10 "$BIN/pbcall" 127.0.0.1:$AP grpc.health.v1.Health/Check || fail "admin listener did not start"
OUT=$(call --header "authorization: Bearer $ADMT" 127.0.0.1:$AP ops.admin.v1.AdminService/ListNodes '{}')
refused UNAUTHENTICATED "no tokens configured" "$OUT"
jget "$OUT" .message | grep -q "no admin tokens" || fail "no-tokens message: $OUT"
expect_eq "$(code "$(call --header "authorization: Bearer $ADMT" 127.0.0.1:$MP2 ops.admin.v1.AdminService/ListNodes '{}')")" UNIMPLEMENTED "AdminService off the grpc listener"
grep -q "event=admin.no_tokens" "$T/manager2.log" || fail "no warning about missing tokens"
pass "admin.listen: own listener; no tokens -> everything refused, with a warning at start"
echo "refused attempts checked: $REFUSED"
