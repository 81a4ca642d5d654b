#!/usr/bin/env bash
# The fleet end to end, real processes over loopback: a daemon registers and stays online,
# metrics are stored, agent states follow starts, stops and crashes; the manager down for 20 s
# loses no point; a daemon restarted while the manager is down still delivers its spool; a
# manager that lost its database gets the node back.
source "$(dirname "$0")/lib.sh"
MP=$(free_port); GP=$(free_port); HP=$(free_port)
M=127.0.0.1:$MP; D=127.0.0.1:$GP; DB=$T/ops.db
cat > "$T/manager.yaml" <<YAML
grpc: {host: 127.0.0.1, port: $MP}
database: {driver: sqlite, dsn: $DB}
node: {heartbeat_interval: 1s, offline_after: 3s}
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
labels: {env: e2e}
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
sql() { sqlite3 -cmd ".timeout 5000" "$DB" "$1"; }
start_manager() {
  "$BIN/ops-manager" -c "$T/manager.yaml" >> "$T/manager.log" 2>&1 &
  MPID=$!; PIDS+=($MPID)
  wait_for 10 "$BIN/pbcall" $M grpc.health.v1.Health/Check || fail "manager did not start"
}
start_daemon() {
  "$BIN/ops-daemon" -c "$T/daemon.yaml" >> "$T/daemon.log" 2>&1 &
  DPID=$!; PIDS+=($DPID)
}
agent_db() { sql "select status||':'||pid from agents where node_id='$NODE' and agent_id='$1'"; }

start_manager
start_daemon
wait_for 10 test -s "$T/work/node_id" || fail "no node_id"
NODE=$(cat "$T/work/node_id")
wait_for 15 sh -c "sqlite3 -cmd '.timeout 5000' '$DB' \"select status from nodes where node_id='$NODE'\" | grep -q online" || fail "node never online"
expect_eq "$(sql "select hostname from nodes where node_id='$NODE'")" "$(hostname)" "hostname"
expect_eq "$(sql "select labels from nodes where node_id='$NODE'")" '{"env":"e2e"}' "labels"
expect_eq "$(sql "select daemon_address from nodes where node_id='$NODE'")" "$D" "daemon address"
pass "node $NODE registered and online"

wait_for 15 sh -c "[ \$(sqlite3 -cmd '.timeout 5000' '$DB' \"select count(*) from metrics m join metric_nodes n on n.id=m.node_ref where n.node_id='$NODE' and type='cpu'\") -ge 3 ]" || fail "no cpu metrics stored"
pass "metrics stored: $(sql "select group_concat(type||'='||c) from (select type, count(*) c from metrics group by type)")"

wait_for 10 sh -c "sqlite3 -cmd '.timeout 5000' '$DB' \"select status from agents where agent_id='ticker'\" | grep -q running" || fail "ticker not synced as running"
call $D proto.DaemonService/OperateAgent '{"agent_id":"ticker","operation":"stop"}' >/dev/null
wait_for 10 sh -c "[ \"\$(sqlite3 -cmd '.timeout 5000' '$DB' \"select status from agents where agent_id='ticker'\")\" = stopped ]" || fail "stop not synced: $(agent_db ticker)"
call $D proto.DaemonService/OperateAgent '{"agent_id":"ticker","operation":"start"}' >/dev/null
wait_for 10 sh -c "sqlite3 -cmd '.timeout 5000' '$DB' \"select status from agents where agent_id='ticker'\" | grep -q running" || fail "start not synced"
OLD=$(agent_db ticker | cut -d: -f2)
kill -9 "$OLD"
wait_for 15 sh -c "s=\$(sqlite3 -cmd '.timeout 5000' '$DB' \"select status||':'||pid from agents where agent_id='ticker'\"); [ \"\${s%%:*}\" = running ] && [ \"\${s#*:}\" != $OLD ] && [ \"\${s#*:}\" != 0 ]" || fail "crash not synced: $(agent_db ticker)"
pass "agent states synced after stop, start and a crash (pid $OLD -> $(agent_db ticker | cut -d: -f2))"

# The manager down for 20 s while the daemon keeps collecting: nothing lost, nothing twice.
T0=$(date +%s)
kill -9 $MPID; wait $MPID 2>/dev/null || true
sleep 20
spooled=$(ls "$T/work/spool" | grep -c '\.rpt$' || true)
[ "$spooled" -ge 15 ] || fail "only $spooled reports spooled during a 20 s outage"
T1=$(date +%s)
start_manager
wait_for 30 sh -c "[ \$(ls '$T/work/spool' | grep -c '\.rpt\$') = 0 ]" || fail "spool not drained: $(ls $T/work/spool | wc -l) left"
# Every second of the outage has its cpu point, once (the primary key forbids twice).
gaps=$(sql "select count(*) from (select ts, lead(ts) over (order by ts) nx from metrics m join metric_nodes n on n.id=m.node_ref where n.node_id='$NODE' and type='cpu' and ts between $T0 and $T1) where nx - ts > 2")
expect_eq "$gaps" 0 "gaps in the cpu series across the outage"
dups=$(sql "select count(*) from (select ts from metrics where type='cpu' group by node_ref, ts having count(*) > 1)")
expect_eq "$dups" 0 "duplicate points"
pass "manager down 20 s: $spooled reports spooled, all delivered, no gap, no duplicate"

# The daemon restarted while the manager is down: its spool survives and is delivered.
kill -TERM $MPID; wait $MPID || true
T2=$(date +%s)
sleep 3
T3=$(date +%s)
kill -TERM $DPID; wait $DPID || fail "daemon exit code"
before=$(ls "$T/work/spool" | grep -c '\.rpt$' || true)
[ "$before" -ge 2 ] || fail "nothing spooled before the daemon restart ($before)"
start_daemon
sleep 2
start_manager
wait_for 30 sh -c "[ \$(ls '$T/work/spool' | grep -c '\.rpt\$') = 0 ]" || fail "spool not drained after daemon restart"
# The cpu series has no gap from before the manager stopped to the daemon's last second, as in
# the outage above. (Counting points against spool files is wrong: a report lost with the
# manager's shutdown is spooled and sent again, and the store keeps its points once.)
cpu_q="from metrics m join metric_nodes n on n.id=m.node_ref where n.node_id='$NODE' and type='cpu' and ts between $((T2 - 2)) and $((T3 - 1))"
expect_eq "$(sql "select count(*) from (select ts, lead(ts) over (order by ts) nx $cpu_q) where nx - ts > 2")" 0 "gaps in the cpu series while the daemon restarted"
last=$(sql "select max(ts) $cpu_q")
[ "${last:-0}" -ge $((T3 - 2)) ] || fail "the daemon's last seconds before its restart are missing (last cpu point $last, stopped at $T3)"
pass "daemon restarted during the outage: $before spooled reports delivered, cpu series whole up to $last"

# A manager that lost its database: the daemon registers again and carries on.
kill -TERM $MPID; wait $MPID || true
rm -f "$DB" "$DB-wal" "$DB-shm"
start_manager
wait_for 20 sh -c "sqlite3 -cmd '.timeout 5000' '$DB' \"select hostname from nodes where node_id='$NODE'\" | grep -qx '$(hostname)'" || fail "node did not re-register: $(sql "select * from nodes")"
wait_for 10 sh -c "sqlite3 -cmd '.timeout 5000' '$DB' \"select count(*) from agents where node_id='$NODE'\" | grep -qx 2" || fail "agents not synced to the new database"
wait_for 10 sh -c "[ \$(sqlite3 -cmd '.timeout 5000' '$DB' 'select count(*) from metrics') -ge 1 ]" || fail "metrics not flowing to the new database"
pass "manager with an empty database: node re-registered, agents and metrics flowing"

kill -TERM $DPID $MPID; wait $DPID $MPID || true
echo "e2e: all checks passed"
