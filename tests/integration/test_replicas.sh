#!/usr/bin/env bash
# Two ops-manager replicas on one private PostgreSQL and one ops-daemon whose manager address
# lists both: one leader at a time; an operator on B restarts an agent and WatchEvents on both
# replicas sees the change once; an update published by another process on the shared store
# reaches the daemon's stream wherever it is; a node heartbeating only to B is never marked
# offline by leader A; A killed with -9: B takes the lease and the sweep (a silent node goes
# offline once), the daemon fails over, no acknowledged point is lost and the daemon's spool
# drains; PostgreSQL restarted under load: ingestion resumes, nothing acknowledged is lost.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pg.sh"
command -v jq >/dev/null || fail "jq is required"
trap 'rc=$?; pg_stop; cleanup $rc' EXIT
pg_start

# The store-level part: leader lease, notices, update events on PostgreSQL, the bridge.
OPS_TEST_STORE_DSN=$PG_DSN "${OPS_BUILD_DIR}/tests/test_replicas_store" > "$T/unit.log" 2>&1 || { cat "$T/unit.log"; fail "test_replicas_store"; }
pass "store level: $(grep -c '\[       OK \]' "$T/unit.log") unit tests"

PA=$(free_port); PB=$(free_port); GP=$(free_port); HP=$(free_port); DMP=$(free_port)
A=127.0.0.1:$PA; B=127.0.0.1:$PB
VIEW=view-$RANDOM$RANDOM; OPER=oper-$RANDOM$RANDOM
h() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
for r in a b; do
  port=$PA; [ $r = b ] && port=$PB
  cat > "$T/$r.yaml" <<YAML
grpc: {host: 127.0.0.1, port: $port}
database: {driver: postgres, dsn: "$PG_DSN"}
node: {heartbeat_interval: 1s, offline_after: 5s}
prometheus: {enabled: false}
admin:
  tokens:
    - {name: vera, role: viewer, sha256: $(h $VIEW)}
    - {name: otto, role: operator, sha256: $(h $OPER)}
YAML
done
start() { # a|b
  "$BIN/ops-manager" -c "$T/$1.yaml" >> "$T/$1.log" 2>&1 &
  eval "P_$1=$!"; PIDS+=($!)
}
start a
wait_for 10 "$BIN/pbcall" $A grpc.health.v1.Health/Check || fail "replica A did not start"
wait_for 10 grep -q "event=store.leader driver=postgres role=leader" "$T/a.log" || fail "A never became leader"
start b
wait_for 10 "$BIN/pbcall" $B grpc.health.v1.Health/Check || fail "replica B did not start"
sleep 2
grep -q "role=leader" "$T/b.log" && fail "B became leader too"
pass "replicas up; exactly one leader (A)"

cat > "$T/daemon.yaml" <<YAML
daemon:
  work_dir: $T/work
  grpc_host: 127.0.0.1
  grpc_port: $GP
  http_port: $HP
  resource_interval: 1s
  stop_grace: 2s
manager:
  address: "$A,$B"
  heartbeat_interval: 1s
  reconnect_interval: 1s
  timeout: 2s
prometheus: {enabled: true, listen: "127.0.0.1:$DMP"}
collectors:
  cpu: {interval: 1s}
  memory: {interval: 1s}
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
"$BIN/ops-daemon" -c "$T/daemon.yaml" >> "$T/daemon.log" 2>&1 &
PIDS+=($!)
wait_for 10 test -s "$T/work/node_id" || fail "no node_id"
NODE=$(cat "$T/work/node_id")
ADM() { # TARGET TOKEN METHOD JSON
  call --header "authorization: Bearer $2" $1 "ops.admin.v1.AdminService/$3" "$4"
}
online_on() { [ "$(jget "$(ADM $1 $VIEW GetNode "{\"node_id\":\"$NODE\"}")" .response.node.status)" = online ]; }
wait_for 15 online_on $B || fail "node never online through B"
online_on $A || fail "node not online through A"
ticker() { jget "$(ADM $1 $VIEW ListAgents "{\"node_id\":\"$NODE\"}")" '.response.agents[] | select(.id=="ticker") | .'$2; }
ticker_running() { [ "$(ticker $1 status)" = running ]; }
wait_for 10 ticker_running $A || fail "ticker not running (seen from A)"
pass "daemon $NODE online on both replicas"

# A node that heartbeats only to B, for the rest of the test until A is gone.
r=$(call $B manager.ManagerService/RegisterNode '{"node_id":"hb-b","hostname":"hb-b","ip":"127.0.0.1"}')
expect_eq "$(jget "$r" .response.success)" true "register hb-b on B"
( while :; do "$BIN/pbcall" $B manager.ManagerService/Heartbeat '{"node_id":"hb-b"}' >/dev/null 2>&1; sleep 1; done ) &
HB=$!; PIDS+=($HB)

# --- an operator on B, watchers on both ----------------------------------------------------------
for r in a b; do
  tgt=$A; [ $r = b ] && tgt=$B
  "$BIN/pbcall" --timeout 40000 --max 50 --header "authorization: Bearer $VIEW" $tgt ops.admin.v1.AdminService/WatchEvents \
    "{\"kinds\":[\"agent.\"],\"node_id\":\"$NODE\"}" > "$T/watch_$r.out" 2>&1 &
  PIDS+=($!)
done
wait_for 10 grep -q admin.watch_started "$T/a.log" || fail "watcher on A did not start"
wait_for 10 grep -q admin.watch_started "$T/b.log" || fail "watcher on B did not start"
PID0=$(ticker $A pid)
OUT=$(ADM $B $OPER OperateAgent "{\"node_id\":\"$NODE\",\"agent_id\":\"ticker\",\"operation\":\"restart\"}")
expect_eq "$(jget "$OUT" .code)" OK "restart through B"
expect_eq "$(jget "$OUT" .response.via)" pool "restart via B's pool"
PID1=$(ticker $B pid)
[ -n "$PID1" ] && [ "$PID1" != "$PID0" ] || fail "restart did not change the pid ($PID0 -> $PID1)"
seen_pid() { grep -q "\"$PID1\"\\|$PID1" "$1"; }
wait_for 10 seen_pid "$T/watch_a.out" || fail "WatchEvents on A did not see the new ticker pid $PID1: $(cat "$T/watch_a.out")"
wait_for 10 seen_pid "$T/watch_b.out" || fail "WatchEvents on B did not see the new ticker pid $PID1: $(cat "$T/watch_b.out")"
sleep 1
na=$(grep -c '"agent.state"' "$T/watch_a.out"); nb=$(grep -c '"agent.state"' "$T/watch_b.out")
expect_eq "$na" "$nb" "agent.state events seen on A and on B (each exactly once)"
pass "operator on B restarted ticker ($PID0 -> $PID1); WatchEvents on A and B each saw $na agent.state events"

# --- an update published elsewhere reaches the daemon's stream ----------------------------------------
wait_for 10 sh -c "grep -q 'event=update.subscribed node=$NODE' '$T/a.log' '$T/b.log'" || fail "daemon never subscribed"
ON=$(grep -l "event=update.subscribed node=$NODE" "$T/a.log" "$T/b.log" | tail -1)
T0=$(date +%s%N)
ID=$("$BIN/publish_update" "$PG_DSN" "$NODE" command idle restart) || fail "publish_update"
wait_for 4 grep -q "event=update.received node=$NODE event_id=$ID " "$T/daemon.log" || fail "event $ID did not reach the daemon within 4 s (stream on $(basename "$ON"))"
ms=$(( ($(date +%s%N) - T0) / 1000000 ))
applied() { [ "$(pg_psql -c "select outcome from update_events where id=$ID")" = applied ]; }
wait_for 10 applied || fail "event $ID has no result"
pass "update event $ID published by another process reached the daemon (stream on $(basename "$ON" .log)) in ${ms} ms; result applied"

# --- failover: A (the leader) killed ----------------------------------------------------------------
r=$(call $B manager.ManagerService/RegisterNode '{"node_id":"ghost","hostname":"ghost","ip":"127.0.0.1"}')
expect_eq "$(jget "$r" .response.success)" true "register ghost on B"
"$BIN/pbcall" --timeout 30000 --max 5 --header "authorization: Bearer $VIEW" $B ops.admin.v1.AdminService/WatchEvents \
  '{"kinds":["node.offline"],"node_id":"ghost"}' > "$T/watch_ghost.out" 2>&1 &
WG=$!; PIDS+=($WG)
wait_for 10 sh -c "[ \$(grep -c admin.watch_started '$T/b.log') -ge 2 ]" || fail "ghost watcher did not start"
NOW=$(date +%s)
"$BIN/report_stream" "$A,$B" "$NODE" $((NOW - 3000)) 6 2 keep > "$T/acked1" 2> "$T/stream1.log" &
LOADER=$!
sleep 1
kill -9 $P_a
KILLED=$(date +%s)
wait_for 10 grep -q "event=store.leader driver=postgres role=leader" "$T/b.log" || fail "B did not take the lease"
pass "A killed; B is leader after $(( $(date +%s) - KILLED )) s"
grep -q "event=node.offline node=hb-b" "$T/a.log" && fail "leader A marked hb-b offline although it heartbeats to B"
grep -q "event=node.offline node=ghost" "$T/a.log" && fail "A swept ghost before it was killed (too slow a machine?)"
wait_for 15 grep -q "event=node.offline node=ghost" "$T/b.log" || fail "B never marked the silent ghost offline"
wait $LOADER || true
wait_for 5 grep -q '"node.offline"' "$T/watch_ghost.out" || fail "WatchEvents on B: no node.offline for ghost"
sleep 2
expect_eq "$(grep -c '"node.offline"' "$T/watch_ghost.out")" 1 "node.offline events for ghost"
expect_eq "$(pg_psql -c "select count(*) from node_events where node_id='ghost' and event='offline'")" 1 "stored offline events for ghost"
expect_eq "$(pg_psql -c "select status from nodes where node_id='hb-b'")" online "hb-b status"
pass "B took over the sweep: ghost offline once (logged, stored, watched); hb-b, heartbeating to B only, stayed online"

acked=$(wc -l < "$T/acked1")
[ "$acked" -gt 0 ] || fail "nothing acknowledged around the kill"
missing() { pg_psql -c "select count(*) from unnest('{$(paste -sd, "$1")}'::bigint[]) a(ts) where ts not in (select ts from metrics m join metric_nodes n on n.id = m.node_ref where n.node_id='$NODE' and type='load')"; }
expect_eq "$(missing "$T/acked1")" 0 "acknowledged points missing after A was killed"
late=$(awk -v k=$((NOW - 3000)) '$1 > k' "$T/acked1" | wc -l)
dm() { curl -s "http://127.0.0.1:$DMP/metrics" | awk -v n="$1" '$1 == n {print $2}'; }
drained() { [ "$(dm ops_daemon_spool_records)" = 0 ] && [ "$(dm ops_daemon_reports_spooled_total)" = "$(dm ops_daemon_reports_sent_total)" ]; }
wait_for 20 drained || fail "daemon spool did not drain: records=$(dm ops_daemon_spool_records) spooled=$(dm ops_daemon_reports_spooled_total) sent=$(dm ops_daemon_reports_sent_total)"
expect_eq "$(dm ops_daemon_spool_dropped_total)" 0 "daemon reports dropped"
grep -q "link.report_rejected" "$T/daemon.log" && fail "the manager rejected a daemon report"
online_on $B || fail "daemon not online through B after the failover"
pass "daemon failed over to B: all $(dm ops_daemon_reports_sent_total) spooled reports acknowledged, none dropped; all $acked acknowledged load points stored"

# --- PostgreSQL restarted under load ------------------------------------------------------------------
"$BIN/report_stream" "$B" "$NODE" $((NOW - 2000)) 8 4 keep > "$T/acked2" 2> "$T/stream2.log" &
LOADER=$!
sleep 2
before=$(wc -l < "$T/acked2")
pg_restart || fail "pg_restart"
wait $LOADER || true
after=$(wc -l < "$T/acked2")
[ "$after" -gt "$before" ] || fail "ingestion did not resume after the restart ($before -> $after acknowledged)"
expect_eq "$(missing "$T/acked2")" 0 "acknowledged points missing after the PostgreSQL restart"
wait_for 10 sh -c "[ \$(grep -c 'event=store.leader driver=postgres role=leader' '$T/b.log') -ge 2 ]" || fail "B did not take the lease back after the restart"
wait_for 20 drained || fail "daemon spool did not drain after the restart"
pass "PostgreSQL restarted under load: $before acknowledged before, $after in all, none missing; B leader again; daemon spool drained"
kill -TERM $P_b
wait_for 20 grep -q "event=manager.stopped rc=0" "$T/b.log" || fail "B did not stop cleanly within 20 s"
echo "replicas: all checks passed"
