#!/usr/bin/env bash
# Every AdminService call through opsctl against a real ops-manager (SQLite) and a real
# ops-daemon supervising test agents: nodes with filters, node, agents, agent
# start/stop/restart (pids followed through agents -o json), agent metrics, metrics charts and
# summary, config, watch seeing an agent crash and the daemon going offline, audit,
# delete-node. Each auth failure and role refusal exits as documented (3 no/wrong token, 1
# role too weak, with the role to ask for) and changes nothing; the audit trail shows them.
source "$(dirname "$0")/lib.sh"
command -v jq >/dev/null || fail "jq is needed"
source "$(dirname "$0")/ctl_lib.sh"

MP=$(free_port); GP=$(free_port); HP=$(free_port); PP=$(free_port); PD=$(free_port)
M=127.0.0.1:$MP
VIEW=view-$RANDOM$RANDOM; OPER=oper-$RANDOM$RANDOM; ADMT=admin-$RANDOM$RANDOM
h() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
cat > "$T/manager.yaml" <<YAML
grpc: {host: 127.0.0.1, port: $MP}
database: {driver: sqlite, dsn: $T/ops.db}
node: {heartbeat_interval: 1s, offline_after: 3s}
prometheus: {listen: "127.0.0.1:$PP"}
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
labels: {env: ctlreal, team: ops}
collectors:
  cpu: {interval: 1s}
  memory: {interval: 1s}
  disk: {enabled: false}
  network: {enabled: false}
prometheus: {listen: "127.0.0.1:$PD"}
agents:
  - id: ticker
    binary_path: $SRC/tests/agents/agent_tick.sh
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
export OPS_MANAGER=$M OPS_TOKEN=$VIEW

# Conditions polled through opsctl itself.
node_status() { ctl -o json node "$NODE"; jq -r '.node.status // empty' <<<"$OUT"; }
online() { [ "$(node_status)" = online ]; }
# agent_field AGENT FIELD: from `agents -o json` (live, through the daemon).
agent_field() { ctl -o json agents "$NODE"; [ "$RC" = 0 ] && jq -r ".agents[] | select(.id==\"$1\") | .$2" <<<"$OUT"; }
ticker_running() { [ "$(agent_field ticker status)" = running ] && [ "$(agent_field ticker pid)" -gt 0 ]; }
wait_for 15 online || fail "node never online"
wait_for 10 ticker_running || fail "ticker not running"
pass "node $NODE online, ticker running (pid $(agent_field ticker pid))"

# ---- usage errors (2) -----------------------------------------------------------------------
ctl nodes --status sideways; expect_rc 2 "bad --status"; has "$ERR" "Usage: opsctl nodes" "bad --status"
ctl agent start "$NODE"; expect_rc 2 "agent start without AGENT"; has "$ERR" "missing AGENT" "agent start without AGENT"
ctl metrics "$NODE" --since 40d; expect_rc 2 "--since over 30 days"
ctl audit --limit -1; expect_rc 2 "audit --limit -1"
ctl node; expect_rc 2 "node without NODE"
ctl frobnicate; expect_rc 2 "unknown command"
pass "usage errors exit 2"

# ---- refusals: none changes anything ----------------------------------------------------------
PID0=$(agent_field ticker pid)
OPS_TOKEN= ctl nodes; expect_rc 3 "no token"; has "$ERR" "no token" "no token"
OPS_TOKEN=wrong-token ctl nodes; expect_rc 3 "wrong token"; has "$ERR" "token refused" "wrong token"
has "$ERR" "OPS_TOKEN" "wrong token names where it came from"
ctl --token wrong-token node "$NODE"; expect_rc 3 "wrong --token"; has "$ERR" "--token" "wrong --token hint"
OPS_TOKEN= ctl agent stop "$NODE" ticker; expect_rc 3 "anonymous agent stop"
OPS_TOKEN=wrong-token ctl agent stop "$NODE" ticker; expect_rc 3 "wrong-token agent stop"
ctl agent restart "$NODE" ticker; expect_rc 1 "viewer restarts an agent"
has "$ERR" "permission denied: your token's role cannot operate agents; ask for an operator token" "viewer restart hint"
OPS_TOKEN=$OPER ctl delete-node "$NODE" --yes; expect_rc 1 "operator deletes the node"
has "$ERR" "ask for an admin token" "operator delete hint"
ctl delete-node "$NODE" --yes; expect_rc 1 "viewer deletes the node"
OPS_TOKEN=$OPER ctl audit; expect_rc 1 "operator reads the audit"; has "$ERR" "ask for an admin token" "operator audit hint"
OPS_TOKEN=wrong-token ctl watch --count 1; expect_rc 3 "watch with a wrong token"
expect_eq "$(agent_field ticker pid)" "$PID0" "ticker pid after the refusals"
expect_eq "$(agent_field ticker status)" running "ticker status after the refusals"
online || fail "node gone or offline after the refused deletions"
pass "refusals: no/wrong token exit 3, weak role exit 1 with the role to ask for; ticker pid $PID0 and node unchanged"

# ---- nodes ---------------------------------------------------------------------------------------
# A second node, registered without a daemon: it goes offline for want of heartbeats.
call $M manager.ManagerService/RegisterNode '{"node_id":"zzz-other","hostname":"other-host","labels":{"env":"elsewhere"}}' >/dev/null
other_offline() { ctl -o json nodes --status offline; jq -e '.nodes | map(.node_id) | index("zzz-other") != null' <<<"$OUT"; }
wait_for 15 other_offline || fail "zzz-other never offline"
ctl nodes; expect_rc 0 "nodes"
grep -E "^$NODE +$(hostname) .* online " <<<"$OUT" >/dev/null || fail "nodes: no row '$NODE $(hostname) ... online': $OUT"
grep -E "^zzz-other +other-host .* offline " <<<"$OUT" >/dev/null || fail "nodes: no offline row for zzz-other: $OUT"
has "$OUT" "env=ctlreal,team=ops" "nodes labels"
ctl -o json nodes; jq_is "$OUT" '[.nodes[].node_id] | sort | join(",")' "$(printf '%s\n' "$NODE" zzz-other | sort | paste -sd,)" "nodes json"
jq_is "$OUT" ".nodes[] | select(.node_id==\"$NODE\") | .daemon_address" "127.0.0.1:$GP" "nodes json daemon address"
ctl -o json nodes --status online; jq_is "$OUT" '[.nodes[].node_id] | join(",")' "$NODE" "--status online"
ctl -o json nodes --status offline; jq_is "$OUT" '[.nodes[].node_id] | join(",")' zzz-other "--status offline"
ctl -o json nodes --label env=ctlreal --label team=ops; jq_is "$OUT" '[.nodes[].node_id] | join(",")' "$NODE" "two labels"
ctl -o json nodes --label env=elsewhere; jq_is "$OUT" '[.nodes[].node_id] | join(",")' zzz-other "--label env=elsewhere"
ctl nodes --status online --label env=elsewhere; expect_rc 0 "no match"; has "$ERR" "no nodes match" "no match"
[ "$(wc -l <<<"$OUT")" -le 1 ] || fail "no-match table has rows: $OUT"
pass "nodes: table rows, json, --status and --label filters"

# ---- node ----------------------------------------------------------------------------------------
has_cpu() { ctl -o json node "$NODE"; jq -e '.latest_metrics | map(.type) | index("cpu") != null' <<<"$OUT"; }
wait_for 15 has_cpu || fail "node: no latest cpu sample"
synced() { ctl -o json node "$NODE"; [ "$(jq -r '[.agents[].agent_id] | sort | join(",")' <<<"$OUT")" = idle,ticker ]; }
wait_for 10 synced || fail "node: agents not synced: $OUT"
jq_is "$OUT" '.node.labels.team' ops "node json labels"
jq_is "$OUT" ".agents[] | select(.agent_id==\"ticker\") | .status" running "node json ticker as synced"
ctl node "$NODE"; expect_rc 0 "node"
has "$OUT" "Hostname:" "node"; has "$OUT" "$(hostname)" "node hostname"; has "$OUT" "Agents (as last reported):" "node"
has "$OUT" "ticker" "node agents"; has "$OUT" "idle" "node agents"; has "$OUT" "usage_percent" "node latest cpu"
ctl node no-such-node; expect_rc 1 "unknown node"; has "$ERR" "not found" "unknown node"
pass "node: details, agents as last synced, latest metrics"

# ---- agents (live) and operations ------------------------------------------------------------------
ctl agents "$NODE"; expect_rc 0 "agents"
grep -E "^ticker +.* running +$PID0 " <<<"$OUT" >/dev/null || fail "agents: no running ticker row with pid $PID0: $OUT"
grep -E "^idle +.* running " <<<"$OUT" >/dev/null || fail "agents: no idle row: $OUT"
ctl -o json agents "$NODE"; jq_is "$OUT" '[.agents[].id] | sort | join(",")' idle,ticker "agents json"
ctl agents zzz-other; expect_rc 1 "agents of a node without a daemon"
export OPS_TOKEN=$OPER
ctl agent stop "$NODE" ticker; expect_rc 0 "stop"; has "$OUT" "stopped agent ticker on node $NODE" "stop"
expect_eq "$(agent_field ticker status) $(agent_field ticker pid)" "stopped 0" "ticker after stop"
kill -0 "$PID0" 2>/dev/null && fail "ticker pid $PID0 still alive after stop"
ctl agent start "$NODE" ticker; expect_rc 0 "start"; has "$OUT" "started agent ticker" "start"
wait_for 10 ticker_running || fail "ticker not running after start"
PID1=$(agent_field ticker pid); [ "$PID1" != "$PID0" ] || fail "start kept pid $PID0"
ctl -o json agent restart "$NODE" ticker; expect_rc 0 "restart"; jq_is "$OUT" .success true "restart json"
jq_is "$OUT" .via pool "restart via the pool"
wait_for 10 ticker_running || fail "ticker not running after restart"
PID2=$(agent_field ticker pid); [ "$PID2" != "$PID1" ] || fail "restart kept pid $PID1"
ctl agent stop "$NODE" ghost; expect_rc 1 "unknown agent"
has "$ERR" "agent ghost" "unknown agent named"; has "$ERR" "node $NODE" "unknown agent's node named"
[ "$(grep -o "agent not found" <<<"$ERR" | wc -l)" = 1 ] || fail "unknown agent: 'agent not found' not said exactly once: $ERR"
export OPS_TOKEN=$VIEW
pass "agents live; stop/start/restart: pid $PID0 -> stopped -> $PID1 -> $PID2; unknown agent -> 1"

# ---- metrics ---------------------------------------------------------------------------------------
agent_points() { ctl -o json agent metrics "$NODE" idle --since 1m; [ "$(jq -r '.data_points | length' <<<"$OUT")" -ge 3 ]; }
wait_for 15 agent_points || fail "agent metrics: fewer than 3 points: $OUT"
jq_is "$OUT" '.data_points | all(.timestamp > 0)' true "agent metrics json timestamps"
ctl agent metrics "$NODE" idle --since 1m; expect_rc 0 "agent metrics"
has "$OUT" "agent idle on node $NODE:" "agent metrics title"; has "$OUT" "TREND" "agent metrics table"
has "$OUT" "memory_rss" "agent metrics measures"
has_sparkline "$OUT" || fail "agent metrics: no sparkline: $OUT"
ctl agent metrics "$NODE" ghost; expect_rc 1 "agent metrics of an unknown agent"

cpu_points() { ctl -o json metrics "$NODE" --type cpu --since 10m; [ "$(jq -r '[.series[].points | map(select(.count > 0)) | length] | max // 0' <<<"$OUT")" -ge 3 ]; }
wait_for 15 cpu_points || fail "metrics: fewer than 3 cpu points: $OUT"
ctl metrics "$NODE" --type cpu --since 10m; expect_rc 0 "metrics chart"
has "$OUT" "$NODE cpu.usage_percent" "chart title"; has "$OUT" "└─" "chart x axis"; has "$OUT" " ┤" "chart y axis"
has_braille "$OUT" || fail "metrics: no braille plot: $OUT"
ctl metrics "$NODE" --summary --since 10m; expect_rc 0 "summary"
has "$OUT" "TREND" "summary"; has "$OUT" "usage_percent" "summary cpu"; has "$OUT" "memory" "summary memory"
has_sparkline "$OUT" || fail "summary: no sparkline: $OUT"
ctl -o json metrics "$NODE" --summary; jq_is "$OUT" '[.keys[].type] | unique | join(",")' cpu,memory "summary json"
pass "agent metrics sparklines, metrics braille chart with axes, summary"

# ---- config ----------------------------------------------------------------------------------------
ctl config "$NODE"; expect_rc 0 "config"; has "$OUT" "ticker" "config names the agents"; has "$OUT" "agent_tick.sh" "config"
ctl config "$NODE" --agent idle; expect_rc 0 "config --agent"; has "$OUT" "/bin/sleep" "agent config"; hasnt "$OUT" "agent_tick.sh" "agent config is one agent's"
ctl -o json config "$NODE" --agent idle; jq_is "$OUT" '.config_data | test("100000")' true "agent config json"
ctl config "$NODE" --agent ghost; expect_rc 1 "config of an unknown agent"
pass "config: the daemon's and one agent's"

# ---- watch: an agent crash, then the daemon going offline -----------------------------------------
"$BIN/opsctl" -o json watch --kind agent.state --node "$NODE" >"$T/watch_agents.out" 2>"$T/watch_agents.err" &
WA=$!; PIDS+=($WA)
"$BIN/opsctl" watch --kind node.offline --count 1 >"$T/watch_nodes.out" 2>"$T/watch_nodes.err" &
WN=$!; PIDS+=($WN)
wait_for 10 sh -c "[ \$(grep -c admin.watch_started '$T/manager.log') -ge 2 ]" || fail "watchers did not start"
kill -9 "$PID2"
crash_seen() { jq -e -s "any(.[]; .kind == \"agent.state\" and .agent_id == \"ticker\" and (.detail | test(\"previous_pid=$PID2\")))" "$T/watch_agents.out"; }
wait_for 15 crash_seen || fail "watch: no agent.state for the crash of $PID2: $(cat "$T/watch_agents.out" "$T/watch_agents.err")"
wait_for 10 ticker_running || fail "ticker not restarted after the crash"
kill "$WA" 2>/dev/null || true
kill -9 "$DPID"; wait "$DPID" 2>/dev/null || true
set +e; wait "$WN"; rc=$?; set -e
[ "$rc" = 0 ] || fail "watch --count 1 exit $rc: $(cat "$T/watch_nodes.err")"
grep -E "node.offline +$NODE +online -> offline" "$T/watch_nodes.out" >/dev/null || fail "watch: no node.offline line: $(cat "$T/watch_nodes.out")"
wait_for 10 sh -c "[ \"\$('$BIN/opsctl' -o json node '$NODE' | jq -r .node.status)\" = offline ]" || fail "node not offline"
ctl agents "$NODE"; expect_rc 1 "agents of a dead daemon"; has "$ERR" "daemon" "dead daemon"
pass "watch: agent.state for the crash of $PID2, node.offline when the daemon was killed"

# ---- delete-node ---------------------------------------------------------------------------------------
OPS_TOKEN=$ADMT ctl delete-node "$NODE" </dev/null; expect_rc 2 "delete-node without --yes off a terminal"
OPS_TOKEN=$ADMT ctl delete-node "$NODE" --yes; expect_rc 0 "admin delete-node"; has "$OUT" "deleted node $NODE" "delete-node"
ctl node "$NODE"; expect_rc 1 "deleted node gone"
ctl -o json nodes; jq_is "$OUT" '[.nodes[].node_id] | join(",")' zzz-other "nodes after delete"
OPS_TOKEN=$ADMT ctl delete-node "$NODE" --yes; expect_rc 1 "delete twice"
pass "delete-node by an admin"

# ---- audit -----------------------------------------------------------------------------------------------
export OPS_TOKEN=$ADMT
ctl audit; expect_rc 0 "audit"
has "$OUT" "PERMISSION_DENIED" "audit table"; has "$OUT" "(no token)" "audit table anonymous"; has "$OUT" "otto" "audit table"
ctl -o json audit --limit 1000; expect_rc 0 "audit json"
AQ() { jq -r "[.records[] | select($1)] | length" <<<"$OUT"; }
expect_eq "$(AQ ".method==\"OperateAgent\" and .actor==\"vera\" and .result==\"PERMISSION_DENIED\" and .target==\"$NODE/ticker\"")" 1 "audit: viewer restart refused"
expect_eq "$(AQ ".method==\"OperateAgent\" and .actor==\"\" and .result==\"UNAUTHENTICATED\" and .target==\"$NODE/ticker\"")" 2 "audit: anonymous and wrong-token stops"
expect_eq "$(AQ ".method==\"DeleteNode\" and .actor==\"otto\" and .result==\"PERMISSION_DENIED\"")" 1 "audit: operator delete refused"
expect_eq "$(AQ ".method==\"DeleteNode\" and .actor==\"vera\" and .result==\"PERMISSION_DENIED\"")" 1 "audit: viewer delete refused"
expect_eq "$(AQ ".method==\"OperateAgent\" and .actor==\"otto\" and .result==\"OK\"")" 3 "audit: stop, start, restart"
expect_eq "$(AQ ".method==\"OperateAgent\" and .result==\"NOT_FOUND\" and .target==\"$NODE/ghost\"")" 1 "audit: unknown agent"
expect_eq "$(AQ ".method==\"DeleteNode\" and .actor==\"ada\" and .result==\"OK\" and .target==\"$NODE\"")" 1 "audit: delete"
expect_eq "$(AQ '.method=="ListNodes" or .method=="GetNode"')" 0 "audit: reads are not audited"
ctl -o json audit --actor otto; jq_is "$OUT" '[.records[].actor] | unique | join(",")' otto "audit --actor"
ctl -o json audit --target "$NODE/ticker"; jq_is "$OUT" "[.records[].target] | unique | join(\",\")" "$NODE/ticker" "audit --target"
ctl -o json audit --limit 2; jq_is "$OUT" '.records | length' 2 "audit --limit"
jq_is "$OUT" '.records[0].id > .records[1].id' true "audit newest first"
ctl -o json audit --since 10m --actor ada; jq_is "$OUT" '[.records[].method] | join(",")' DeleteNode,DeleteNode "audit --since --actor"
pass "audit: refusals, failures and changes recorded; --actor, --target, --since, --limit"
echo "all opsctl checks against the real manager passed"
