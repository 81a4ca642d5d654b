#!/usr/bin/env bash
# ops-manager as a process on a real SQLite file: every ManagerService call and its errors,
# SyncAgentStates, liveness (offline and back), retention, a duplicate report stored once,
# kill -9 under load with every acknowledged point kept, --check-config, auto_register off.
# With OPS_TEST_STORE_DRIVER=postgres (test_manager_pg) the same on a private PostgreSQL.
source "$(dirname "$0")/lib.sh"
P=$(free_port); M=127.0.0.1:$P; DB=$T/ops.db
DRIVER=${OPS_TEST_STORE_DRIVER:-sqlite}
if [ "$DRIVER" = postgres ]; then
  source "$(dirname "$0")/pg.sh"
  trap 'rc=$?; pg_stop; cleanup $rc' EXIT
  pg_start
  DB=$PG_DSN
  # The checks below are SQLite's SQL; PostgreSQL needs group_concat and aliased subqueries.
  pg_psql -c "CREATE FUNCTION gc_step(text, text) RETURNS text LANGUAGE sql AS \$\$ SELECT CASE WHEN \$1 IS NULL THEN \$2 ELSE \$1 || ',' || \$2 END \$\$" \
          -c "CREATE AGGREGATE group_concat(text) (sfunc = gc_step, stype = text)"
fi
write_config() { # $1 = auto_register
cat > "$T/manager.yaml" <<YAML
grpc:
  host: 127.0.0.1
  port: $P
database:
  driver: $DRIVER
  dsn: "$DB"
node:
  heartbeat_interval: 1s
  offline_after: 4s
  auto_register: $1
metrics:
  retention: 1h
  retention_interval: 1s
log:
  level: info
YAML
}
write_config true
start_manager() {
  "$BIN/ops-manager" -c "$T/manager.yaml" >> "$T/manager.log" 2>&1 &
  MPID=$!; PIDS+=($MPID)
  wait_for 10 "$BIN/pbcall" $M grpc.health.v1.Health/Check || fail "manager did not start"
}
sql() {
  if [ "$DRIVER" = postgres ]; then pg_psql -c "$(echo "$1" | sed 's/order by agent_id)/order by agent_id) s/')"
  else sqlite3 -cmd ".timeout 5000" "$DB" "$1"; fi
}
status_is() { [ "$(sql "select status from nodes where node_id='$1'")" = "$2" ]; }

out=$("$BIN/ops-manager" --check-config "$T/manager.yaml") || fail "check-config good: $out"
printf 'grpc:\n  port: 9090\n  colour: blue\n' > "$T/bad1.yaml"
rc=0; out=$("$BIN/ops-manager" --check-config "$T/bad1.yaml" 2>&1) || rc=$?
expect_eq "$rc" 1 "--check-config exit code on a bad file"
echo "$out" | grep -q "bad1.yaml" && echo "$out" | grep -q "colour" || fail "unknown key message: $out"
printf 'node:\n  heartbeat_interval: 10 seconds\n' > "$T/bad2.yaml"
out=$("$BIN/ops-manager" --check-config "$T/bad2.yaml" 2>&1) && fail "bad duration accepted"
echo "$out" | grep -q "node.heartbeat_interval" || fail "bad duration message: $out"
pass "check-config: good ok, unknown key and bad duration refused"

start_manager
NOW=$(date +%s)
r=$(call $M manager.ManagerService/RegisterNode '{"node_id":"n1","hostname":"host-1","ip":"10.0.0.1","os":"linux","arch":"amd64","labels":{"env":"prod","role":"web"},"daemon_version":"1.0","daemon_address":"127.0.0.1:1"}')
expect_eq "$(jget "$r" .response.success)" true "register"
expect_eq "$(jget "$r" .response.heartbeat_interval_seconds)" 1 "heartbeat interval told to the daemon"
expect_eq "$(sql "select hostname||','||status||','||daemon_address from nodes where node_id='n1'")" "host-1,online,127.0.0.1:1" "node row"
r=$(call $M manager.ManagerService/RegisterNode '{"hostname":"h"}'); expect_eq "$(jget "$r" .code)" INVALID_ARGUMENT "register without node_id"
r=$(call $M manager.ManagerService/RegisterNode '{"node_id":"n2"}'); expect_eq "$(jget "$r" .code)" INVALID_ARGUMENT "register without hostname"
labels=$(jq -nc '[range(65)|{key:"k\(.)",value:"v"}]|from_entries')
r=$(call $M manager.ManagerService/RegisterNode "{\"node_id\":\"n2\",\"hostname\":\"h\",\"labels\":$labels}"); expect_eq "$(jget "$r" .code)" INVALID_ARGUMENT "65 labels"
long=$(printf 'x%.0s' $(seq 300))
r=$(call $M manager.ManagerService/RegisterNode "{\"node_id\":\"n2\",\"hostname\":\"h\",\"labels\":{\"k\":\"$long\"}}"); expect_eq "$(jget "$r" .code)" INVALID_ARGUMENT "long label"
pass "RegisterNode: stored; node_id, hostname, label count and size checked"

r=$(call $M manager.ManagerService/Heartbeat '{"node_id":"n1","timestamp":1}'); expect_eq "$(jget "$r" .response.success)" true "heartbeat"
r=$(call $M manager.ManagerService/Heartbeat '{"node_id":""}'); expect_eq "$(jget "$r" .code)" INVALID_ARGUMENT "heartbeat empty id"
r=$(call $M manager.ManagerService/Heartbeat '{"node_id":"ghost"}'); expect_eq "$(jget "$r" .response.success)" true "heartbeat unknown (auto_register)"
expect_eq "$(sql "select hostname||','||status from nodes where node_id='ghost'")" "unknown,online" "placeholder row"
pass "Heartbeat: known ok, empty id refused, unknown node gets a placeholder"

r=$(call $M manager.ManagerService/ReportMetrics '{"node_id":"nobody","metrics":[{"type":"cpu","timestamp":'$NOW',"values":{"a":1}}]}')
expect_eq "$(jget "$r" .response.success)" false "report unknown node"; expect_eq "$(jget "$r" .response.message)" "node not registered" "report unknown node message"
r=$(call $M manager.ManagerService/ReportMetrics '{"node_id":"n1","metrics":[{"type":"","timestamp":'$NOW',"values":{"a":1}}]}'); expect_eq "$(jget "$r" .code)" INVALID_ARGUMENT "empty type"
r=$(call $M manager.ManagerService/ReportMetrics '{"node_id":"n1","metrics":[{"type":"cpu","timestamp":0}]}'); expect_eq "$(jget "$r" .code)" INVALID_ARGUMENT "no timestamp"
r=$(call $M manager.ManagerService/ReportMetrics '{"node_id":"n1","metrics":[{"type":"cpu","timestamp":'$NOW',"values":{"a":1}},{"type":"mem","timestamp":'$((NOW+200000))',"values":{"a":1}}]}')
expect_eq "$(jget "$r" .code)" INVALID_ARGUMENT "future timestamp"; jget "$r" .message | grep -q "metrics\[1\]" || fail "future message names the index"
expect_eq "$(sql "select count(*) from metrics")" 0 "nothing of a rejected request stored"
r=$(call $M manager.ManagerService/ReportMetrics '{"node_id":"","metrics":[]}'); expect_eq "$(jget "$r" .code)" INVALID_ARGUMENT "report empty id"
body='{"node_id":"n1","metrics":[{"type":"cpu","timestamp":'$NOW',"values":{"usage_percent":12.5,"idle":87.5}},{"type":"memory","timestamp":'$NOW',"values":{"used":1024}}]}'
r=$(call $M manager.ManagerService/ReportMetrics "$body"); expect_eq "$(jget "$r" .response.success)" true "report"
r=$(call $M manager.ManagerService/ReportMetrics "$body"); expect_eq "$(jget "$r" .response.success)" true "report again"
expect_eq "$(sql "select count(*) from metrics")" 2 "a duplicate report is stored once"
pass "ReportMetrics: validation, nothing partial stored, duplicate stored once"

r=$(call $M proto.DaemonService/SyncAgentStates '{"node_id":""}'); expect_eq "$(jget "$r" .code)" INVALID_ARGUMENT "sync empty id"
r=$(call $M proto.DaemonService/SyncAgentStates '{"node_id":"n1","states":[{"agent_id":"a1","status":"running","pid":10,"type":"custom","version":"1"},{"agent_id":"a2","status":"stopped"}]}')
expect_eq "$(jget "$r" .response.success)" true "sync"
expect_eq "$(sql "select group_concat(agent_id||':'||status||':'||removed) from (select * from agents where node_id='n1' order by agent_id)")" "a1:running:0,a2:stopped:0" "agents after sync"
r=$(call $M proto.DaemonService/SyncAgentStates '{"node_id":"n1","states":[{"agent_id":"a1","status":"error","pid":0}]}')
expect_eq "$(sql "select group_concat(agent_id||':'||status||':'||removed) from (select * from agents where node_id='n1' order by agent_id)")" "a1:error:0,a2:removed:1" "agent no longer listed is removed"
r=$(call $M proto.DaemonService/SyncAgentStates '{"node_id":"n1","states":[]}'); expect_eq "$(jget "$r" .response.success)" true "empty list is valid"
for m in ListAgents OperateAgent GetAgentMetrics PushUpdate Register; do
  r=$(call $M proto.DaemonService/$m); expect_eq "$(jget "$r" .code)" UNIMPLEMENTED "$m on the manager"
done
# GetConfig is served: a daemon pulls the config last published for it (updates.h).
r=$(call $M proto.DaemonService/GetConfig); expect_eq "$(jget "$r" .code)" INVALID_ARGUMENT "GetConfig without node_id"
pass "SyncAgentStates: upsert, removal, empty list; other DaemonService methods UNIMPLEMENTED"

# Liveness: silent for offline_after -> offline (logged and stored), a heartbeat -> online.
wait_for 10 status_is n1 offline || fail "n1 never went offline"
grep -q "event=node.offline node=n1" "$T/manager.log" || fail "offline transition not logged"
call $M manager.ManagerService/Heartbeat '{"node_id":"n1"}' >/dev/null
wait_for 10 status_is n1 online || fail "n1 never came back online"
[ "$(sql "select count(*) from node_events where node_id='n1' and event in ('offline','online')")" -ge 2 ] || fail "transitions not stored"
pass "liveness: offline after 4 s of silence, online again on a heartbeat, both stored"

# Retention (1h): a point 2 h old goes, a fresh one stays.
old=$((NOW - 7200))
call $M manager.ManagerService/ReportMetrics '{"node_id":"n1","metrics":[{"type":"disk","timestamp":'$old',"values":{"x":1}}]}' >/dev/null
old_gone() { [ "$(sql "select count(*) from metrics where ts < $((NOW-3600))")" = 0 ]; }
wait_for 10 old_gone || fail "old point not deleted"
expect_eq "$(sql "select count(*) from metrics where ts = $NOW")" 2 "fresh points kept"
pass "retention: old point deleted, fresh ones kept"

# Every thread the manager starts is named, so top -H and perf say which part is busy.
names=" $(cat /proc/$MPID/task/*/comm | sort -u | tr '\n' ' ')"
store_threads="sqlite-writer sqlite-ckpt"; [ "$DRIVER" = postgres ] && store_threads="pg-writer pg-coord"
for n in rpc-server-cq $store_threads liveness retention upd-replayer upd-pusher; do
  case "$names" in *" $n "*) ;; *) fail "no thread named $n in the manager:$names" ;; esac
done
pass "threads named:$names"

# kill -9 during a stream of reports: every acknowledged point survives.
"$BIN/report_stream" $M n1 $((NOW - 1800)) 20 8 > "$T/acked" 2>"$T/stream.log" &
LOADER=$!
sleep 2
kill -9 $MPID
wait $LOADER || true
acked=$(wc -l < "$T/acked")
[ "$acked" -gt 0 ] || fail "no report was acknowledged before the kill"
start_manager
# Every acknowledged timestamp must be in the store.
if [ "$DRIVER" = postgres ]; then
  missing=$(sql "select count(*) from unnest('{$(paste -sd, "$T/acked")}'::bigint[]) a(ts) where ts not in (select ts from metrics where type='load')")
else
{ echo ".timeout 5000"; echo "attach ':memory:' as a; create table a.acked(ts integer primary key); begin;"
  sed 's/.*/insert into a.acked values(&);/' "$T/acked"
  echo "commit; select count(*) from a.acked where ts not in (select ts from metrics where type='load');"; } > "$T/check.sql"
missing=$(sqlite3 "$DB" < "$T/check.sql")
fi
expect_eq "$missing" 0 "acknowledged points missing after kill -9"
pass "kill -9 under load: all $acked acknowledged points present after restart"

# auto_register off: an unknown node is told to register.
kill -TERM $MPID; wait $MPID || fail "manager exit code on SIGTERM"
grep -q "event=manager.stopped rc=0" "$T/manager.log" || fail "no clean stop"
write_config false
start_manager
r=$(call $M manager.ManagerService/Heartbeat '{"node_id":"stranger"}')
expect_eq "$(jget "$r" .response.success)" false "auto_register off"; expect_eq "$(jget "$r" .response.message)" "node not registered" "message"
r=$(call $M manager.ManagerService/Heartbeat '{"node_id":"n1"}'); expect_eq "$(jget "$r" .response.success)" true "a known node after restart"
pass "auto_register false: unknown node not registered; known nodes survive a restart"
kill -TERM $MPID; wait $MPID || true
echo "manager: all checks passed"
