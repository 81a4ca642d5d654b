#!/usr/bin/env bash
# ops-daemon as a process: DaemonService over gRPC with real agents, every error case, agent
# resource history, SIGHUP reload, re-adoption across a daemon restart, --check-config.
source "$(dirname "$0")/lib.sh"
GP=$(free_port); HP=$(free_port); MP=$(free_port)
D=127.0.0.1:$GP
write_config() { # $1 = extra agent yaml
cat > "$T/daemon.yaml" <<YAML
daemon:
  work_dir: $T/work
  grpc_host: 127.0.0.1
  grpc_port: $GP
  http_port: $HP
  resource_interval: 200ms
  stop_grace: 2s
manager:
  address: 127.0.0.1:$MP
  heartbeat_interval: 1s
  reconnect_interval: 1s
agents:
  - id: ticker
    type: custom
    version: "2.1"
    binary_path: /bin/sh
    args: ["-c", "while true; do echo tick; sleep 0.2; done"]
    config_file: $T/ticker.conf
  - id: crasher
    binary_path: /bin/sh
    args: ["-c", "sleep 0.2; exit 3"]
    restart: {policy: on-failure, max_retries: 2, backoff_base: 100ms, backoff_max: 400ms}
$1
YAML
}
echo "level = 3" > "$T/ticker.conf"
write_config ""

out=$("$BIN/ops-daemon" --check-config "$T/daemon.yaml") || fail "check-config on a good file: $out"
pass "check-config good: $out"
printf 'daemon:\n  grpc_port: 9091\nagents:\n  - id: x\n    binary_path: bin/relative\n' > "$T/bad.yaml"
rc=0; out=$("$BIN/ops-daemon" --check-config "$T/bad.yaml" 2>&1) || rc=$?
expect_eq "$rc" 1 "--check-config exit code on a bad file"
echo "$out" | grep -q "bad.yaml" && echo "$out" | grep -q "binary_path" || fail "bad config message: $out"
pass "check-config bad: $out"
"$BIN/ops-daemon" --help | grep -q -- "--check-config" || fail "--help"

"$BIN/ops-daemon" -c "$T/daemon.yaml" > "$T/daemon.log" 2>&1 &
DPID=$!; PIDS+=($DPID)
wait_for 10 sh -c "'$BIN/pbcall' $D proto.DaemonService/ListAgents | grep -q running" || fail "daemon did not come up"

r=$(call $D proto.DaemonService/ListAgents)
expect_eq "$(jget "$r" '.response.agents[0].id')" ticker "ListAgents id"
expect_eq "$(jget "$r" '.response.agents[0].status')" running "ticker status"
expect_eq "$(jget "$r" '.response.agents[0].version')" "2.1" "ticker version"
TPID=$(jget "$r" '.response.agents[0].pid')
[ "$TPID" -gt 0 ] && kill -0 "$TPID" || fail "ticker pid $TPID not alive"
pass "ListAgents: ticker running pid=$TPID"

wait_for 10 sh -c "'$BIN/pbcall' $D proto.DaemonService/ListAgents | jq -e '.response.agents[1].status==\"error\"'" || fail "crasher never reached error"
r=$(call $D proto.DaemonService/ListAgents)
expect_eq "$(jget "$r" '.response.agents[1].restart_count')" 1 "crasher restart_count (one restart, then the second failure is the last)"
pass "crasher in error after max_retries=2 failures"

# Error cases of the contract.
r=$(call $D proto.DaemonService/OperateAgent '{"agent_id":"","operation":"start"}'); expect_eq "$(jget "$r" .code)" INVALID_ARGUMENT "empty id"
r=$(call $D proto.DaemonService/OperateAgent '{"agent_id":"ticker","operation":"explode"}'); expect_eq "$(jget "$r" .code)" INVALID_ARGUMENT "bad op"
r=$(call $D proto.DaemonService/OperateAgent '{"agent_id":"ghost","operation":"stop"}'); expect_eq "$(jget "$r" .code)" NOT_FOUND "unknown agent"
jget "$r" .message | grep -q ghost || fail "NOT_FOUND message names the agent"
r=$(call $D proto.DaemonService/GetAgentMetrics '{"agent_id":"ghost"}'); expect_eq "$(jget "$r" .code)" NOT_FOUND "metrics unknown"
r=$(call $D proto.DaemonService/GetAgentMetrics '{"agent_id":""}'); expect_eq "$(jget "$r" .code)" INVALID_ARGUMENT "metrics empty id"
r=$(call $D proto.DaemonService/GetConfig '{"config_type":"bogus"}'); expect_eq "$(jget "$r" .code)" INVALID_ARGUMENT "config type"
r=$(call $D proto.DaemonService/GetConfig '{"config_type":"agent","agent_id":"ghost"}'); expect_eq "$(jget "$r" .code)" NOT_FOUND "config agent"
for m in Register Heartbeat ReportMetrics SyncAgentStates; do
  r=$(call $D proto.DaemonService/$m); expect_eq "$(jget "$r" .code)" UNIMPLEMENTED "$m"
done
# PushUpdate is served (daemon/updater.h); an empty request names what is missing.
r=$(call $D proto.DaemonService/PushUpdate); expect_eq "$(jget "$r" .code)" INVALID_ARGUMENT "PushUpdate empty"
pass "error cases: INVALID_ARGUMENT, NOT_FOUND, UNIMPLEMENTED"

# Operations: stop, start on running (no-op), restart changes the pid, stop on stopped.
r=$(call $D proto.DaemonService/OperateAgent '{"agent_id":"ticker","operation":"stop"}'); expect_eq "$(jget "$r" .response.success)" true "stop"
kill -0 "$TPID" 2>/dev/null && fail "ticker still alive after stop"
r=$(call $D proto.DaemonService/ListAgents); expect_eq "$(jget "$r" '.response.agents[0].status')" stopped "after stop"
r=$(call $D proto.DaemonService/OperateAgent '{"agent_id":"ticker","operation":"stop"}'); expect_eq "$(jget "$r" .response.success)" true "stop stopped"
r=$(call $D proto.DaemonService/OperateAgent '{"agent_id":"ticker","operation":"start"}'); expect_eq "$(jget "$r" .response.success)" true "start"
P1=$(jget "$(call $D proto.DaemonService/ListAgents)" '.response.agents[0].pid')
r=$(call $D proto.DaemonService/OperateAgent '{"agent_id":"ticker","operation":"start"}'); expect_eq "$(jget "$r" .response.success)" true "start running"
P2=$(jget "$(call $D proto.DaemonService/ListAgents)" '.response.agents[0].pid'); expect_eq "$P2" "$P1" "start on running keeps pid"
r=$(call $D proto.DaemonService/OperateAgent '{"agent_id":"ticker","operation":"restart"}'); expect_eq "$(jget "$r" .response.success)" true "restart"
P3=$(jget "$(call $D proto.DaemonService/ListAgents)" '.response.agents[0].pid'); [ "$P3" != "$P1" ] || fail "restart kept the pid"
r=$(call $D proto.DaemonService/OperateAgent '{"agent_id":"crasher","operation":"start"}'); expect_eq "$(jget "$r" .code)" INTERNAL "start of a crashing agent"
pass "OperateAgent start/stop/restart; failing start -> INTERNAL ($(jget "$r" .message))"

# A long stop does not hold up other calls.
r=$(call $D proto.DaemonService/GetAgentMetrics '{"agent_id":"ticker","duration_seconds":0}')
n=$(jget "$r" '.response.data_points|length'); [ "$n" -ge 2 ] || fail "metrics history has $n points"
rss=$(jget "$r" '.response.data_points[-1].memory_rss'); [ "$rss" -gt 0 ] || fail "rss $rss"
pass "GetAgentMetrics: $n points, rss=$rss"

r=$(call $D proto.DaemonService/GetConfig '{"config_type":"agent","agent_id":"ticker"}')
jget "$r" .response.config_data | grep -q "level = 3" || fail "agent config lacks its config_file"
r=$(call $D proto.DaemonService/GetConfig '{"config_type":"daemon"}')
jget "$r" .response.config_data | grep -q "grpc_port: $GP" || fail "daemon config"
pass "GetConfig daemon and agent"

# SIGHUP: add an agent, remove crasher.
write_config "  - id: added
    binary_path: /bin/sleep
    args: [\"300\"]"
sed -i '/id: crasher/,/backoff_max/d' "$T/daemon.yaml"
kill -HUP $DPID
wait_for 10 sh -c "'$BIN/pbcall' $D proto.DaemonService/ListAgents | jq -e '[.response.agents[].id]==[\"ticker\",\"added\"] and .response.agents[1].status==\"running\"'" || fail "reload: $(call $D proto.DaemonService/ListAgents)"
pass "SIGHUP reload added and removed agents"

# Restart the daemon: healthy agents keep their pids.
before=$(call $D proto.DaemonService/ListAgents | jq -c '[.response.agents[].pid]')
kill -TERM $DPID; wait $DPID || fail "daemon exit code on SIGTERM"
for p in $(echo "$before" | jq -r '.[]'); do kill -0 "$p" || fail "agent $p died with the daemon"; done
"$BIN/ops-daemon" -c "$T/daemon.yaml" > "$T/daemon2.log" 2>&1 &
DPID=$!; PIDS+=($DPID)
wait_for 10 sh -c "'$BIN/pbcall' $D proto.DaemonService/ListAgents | grep -q running" || fail "daemon did not come back"
after=$(call $D proto.DaemonService/ListAgents | jq -c '[.response.agents[].pid]')
expect_eq "$after" "$before" "pids across a daemon restart"
pass "daemon restart re-adopted agents $after"
kill -TERM $DPID; wait $DPID || true
echo "daemon: all checks passed"
