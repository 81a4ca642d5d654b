#!/usr/bin/env bash
# /metrics of a real ops-manager and ops-daemon (with real agents), scraped over HTTP and read
# by an independent parser of the exposition format (prometheus_client, Debian's
# python3-prometheus-client): the fleet gauges, call counters, histograms whose buckets add
# up, agent restarts seen by both sides after an agent is killed, resource gauges; and the
# listeners answering 404/405 to what they do not serve while they keep serving.
source "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3 # a pyenv python earlier on PATH would not have the Debian package
$PY -c 'import prometheus_client.parser' 2>/dev/null || fail "python3-prometheus-client missing: run scripts/deps.sh"
MP=$(free_port); GP=$(free_port); HP=$(free_port); PM=$(free_port); PD=$(free_port)
M=127.0.0.1:$MP; D=127.0.0.1:$GP
MURL=http://127.0.0.1:$PM/metrics; DURL=http://127.0.0.1:$PD/metrics
cat > "$T/manager.yaml" <<YAML
grpc: {host: 127.0.0.1, port: $MP}
database: {driver: sqlite, dsn: $T/ops.db}
node: {heartbeat_interval: 1s, metrics_interval: 1s, offline_after: 3s}
prometheus: {enabled: true, listen: "127.0.0.1:$PM"}
YAML
cat > "$T/daemon.yaml" <<YAML
daemon:
  work_dir: $T/work
  grpc_host: 127.0.0.1
  grpc_port: $GP
  http_port: $HP
  resource_interval: 500ms
  stop_grace: 2s
manager:
  address: $M
  heartbeat_interval: 1s
  reconnect_interval: 1s
  metrics_interval: 1s
  timeout: 3s
collectors:
  cpu: {interval: 1s}
  memory: {interval: 1s}
  disk: {enabled: false}
  network: {enabled: false}
prometheus:
  listen: "127.0.0.1:$PD"
agents:
  - id: ticker
    binary_path: $SRC/tests/agents/agent_tick.sh
    restart: {policy: always, backoff_base: 100ms, backoff_max: 500ms}
  - id: idle
    binary_path: /bin/sleep
    args: ["100000"]
YAML

# The checks, on what the parser makes of one scrape. Each mode exits 0 when every condition
# holds, else 1 with the first one that does not (so that wait_for can poll it).
cat > "$T/check.py" <<'PY'
import math, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families

def scrape(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        ctype = r.headers.get("Content-Type", "")
        text = r.read().decode("utf-8")
    if not ctype.startswith("text/plain; version=0.0.4"):
        raise SystemExit(f"content type {ctype!r}")
    fams = list(text_string_to_metric_families(text))
    samples = [s for f in fams for s in f.samples]
    return fams, samples

def values(samples, name, **labels):
    return [s.value for s in samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]

def one(samples, name, **labels):
    v = values(samples, name, **labels)
    if len(v) != 1:
        raise SystemExit(f"{name}{labels}: {len(v)} samples, expected 1")
    return v[0]

def need(cond, what):
    if not cond:
        raise SystemExit(what)

def check_histograms(fams):
    seen = 0
    for f in fams:
        if f.type != "histogram":
            continue
        series = {}
        for s in f.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            series.setdefault(key, {"b": [], "sum": None, "count": None})
            if s.name.endswith("_bucket"):
                series[key]["b"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_sum"):
                series[key]["sum"] = s.value
            elif s.name.endswith("_count"):
                series[key]["count"] = s.value
        for key, h in series.items():
            b = h["b"]
            need(len(b) >= 2, f"{f.name}{key}: only {len(b)} buckets")
            need([le for le, _ in b] == sorted(le for le, _ in b), f"{f.name}{key}: le not ascending")
            need(math.isinf(b[-1][0]), f"{f.name}{key}: no +Inf bucket")
            need(all(b[i][1] <= b[i + 1][1] for i in range(len(b) - 1)), f"{f.name}{key}: buckets not cumulative")
            need(h["count"] == b[-1][1], f"{f.name}{key}: _count {h['count']} != +Inf bucket {b[-1][1]}")
            need(h["sum"] is not None and h["sum"] >= 0, f"{f.name}{key}: no _sum")
            seen += 1
    return seen

mode, url = sys.argv[1], sys.argv[2]
fams, s = scrape(url)
if mode == "manager":
    node = sys.argv[3]
    need(one(s, "ops_nodes", status="online") == 1, f"ops_nodes online = {values(s, 'ops_nodes', status='online')}")
    need(one(s, "ops_nodes", status="offline") == 0, "ops_nodes offline != 0")
    need(one(s, "ops_node_up", node_id=node) == 1, "ops_node_up != 1")
    need(one(s, "ops_node_last_seen_age_seconds", node_id=node) < 3, "last seen age >= 3 s")
    need(one(s, "ops_node_info", node_id=node) == 1, "ops_node_info missing")
    for meth in ("Heartbeat", "RegisterNode", "ReportMetrics"):
        v = one(s, "ops_manager_rpc_calls_total", service="manager.ManagerService", method=meth, code="OK")
        need(v > 0, f"{meth} OK calls = {v}")
        need(one(s, "ops_manager_rpc_duration_seconds_count", service="manager.ManagerService", method=meth) >= v,
             f"{meth}: fewer latency observations than calls")
    need(one(s, "ops_manager_rpc_calls_total", service="proto.DaemonService", method="SyncAgentStates", code="OK") > 0, "no sync")
    need(one(s, "ops_store_commits_total", driver="sqlite") > 0, "no store commit counted")
    need(one(s, "ops_store_commit_batch_size_count", driver="sqlite") == one(s, "ops_store_commits_total", driver="sqlite"),
         "batch-size observations != commits")
    need(values(s, "ops_manager_pool_channels") != [], "no pool gauge")
    need(len(values(s, "ops_node_metric", node_id=node, type="cpu")) > 0, "no cpu host metric for the node")
    need(len(values(s, "ops_node_metric", node_id=node, type="memory")) > 0, "no memory host metric for the node")
    for agent in ("ticker", "idle"):
        need(one(s, "ops_agent_up", node_id=node, agent_id=agent) == 1, f"agent {agent} not up")
    need(check_histograms(fams) >= 5, "fewer histogram series than expected")
    print("restarts", int(one(s, "ops_agent_restarts_total", node_id=node, agent_id="ticker")))
elif mode == "manager-restarts":
    node, least = sys.argv[3], float(sys.argv[4])
    v = one(s, "ops_agent_restarts_total", node_id=node, agent_id="ticker")
    need(v >= least, f"manager saw {v} ticker restarts, want >= {least}")
    need(one(s, "ops_agent_up", node_id=node, agent_id="ticker") == 1, "ticker not up again")
elif mode == "unknown-method":
    need(one(s, "ops_manager_rpc_calls_total", service="(unknown)", method="(unknown)", code="UNIMPLEMENTED") >= 1,
         "the unknown method was not counted")
elif mode == "daemon":
    need(one(s, "ops_daemon_manager_connected") == 1, "daemon not connected")
    need(one(s, "ops_daemon_agents", status="running") == 2, "not 2 agents running")
    for agent in ("ticker", "idle"):
        need(one(s, "ops_daemon_agent_up", agent_id=agent) == 1, f"agent {agent} not up on the daemon")
        need(one(s, "ops_daemon_agent_rss_bytes", agent_id=agent) > 0, f"agent {agent} rss not > 0")
        need(one(s, "ops_daemon_agent_open_files", agent_id=agent) > 0, f"agent {agent} open files not > 0")
        need(len(values(s, "ops_daemon_agent_cpu_percent", agent_id=agent)) == 1, f"agent {agent}: no cpu")
    need(values(s, "ops_daemon_spool_bytes") != [] and values(s, "ops_daemon_spool_records") != [], "no spool gauges")
    need(one(s, "ops_daemon_heartbeats_total", result="ok") > 0, "no heartbeat counted")
    print("restarts", int(one(s, "ops_daemon_agent_restarts_total", agent_id="ticker")))
elif mode == "daemon-restarts":
    least = float(sys.argv[3])
    v = one(s, "ops_daemon_agent_restarts_total", agent_id="ticker")
    need(v >= least, f"daemon counted {v} ticker restarts, want >= {least}")
    need(one(s, "ops_daemon_agent_up", agent_id="ticker") == 1, "ticker not up again")
else:
    raise SystemExit(f"unknown mode {mode}")
PY
check() { $PY "$T/check.py" "$@"; }
# wait_until SECONDS what CHECK-ARGS...: polls check until it passes; on timeout shows why.
wait_until() {
  local secs=$1 what=$2; shift 2
  wait_for "$secs" check "$@" || fail "$what: $(check "$@" 2>&1 | tail -1)"
}

"$BIN/ops-manager" -c "$T/manager.yaml" > "$T/manager.log" 2>&1 &
MPID=$!; PIDS+=($MPID)
wait_for 10 "$BIN/pbcall" $M grpc.health.v1.Health/Check || fail "manager did not start"
"$BIN/ops-daemon" -c "$T/daemon.yaml" > "$T/daemon.log" 2>&1 &
DPID=$!; PIDS+=($DPID)
wait_for 10 test -s "$T/work/node_id" || fail "no node_id"
NODE=$(cat "$T/work/node_id")

wait_until 20 "manager /metrics" manager "$MURL" "$NODE"
R0=$(check manager "$MURL" "$NODE" | awk '/^restarts/ {print $2}')
pass "manager /metrics parsed: node $NODE online and up, calls counted by method and code, histograms consistent, agents up"
wait_until 20 "daemon /metrics" daemon "$DURL"
D0=$(check daemon "$DURL" | awk '/^restarts/ {print $2}')
pass "daemon /metrics parsed: agents up with rss, cpu and open files; spool and link gauges"

# Kill the ticker: both sides must count the restart, and see it up again.
PID=$(call $D proto.DaemonService/ListAgents '{}' | jq -r '.response.agents[] | select(.id=="ticker") | .pid')
[ -n "$PID" ] && [ "$PID" -gt 0 ] || fail "no ticker pid from ListAgents"
kill -9 "$PID"
wait_until 20 "daemon restart count after kill" daemon-restarts "$DURL" $((D0 + 1))
wait_until 20 "manager restart count after kill" manager-restarts "$MURL" "$NODE" $((R0 + 1))
pass "ticker killed (pid $PID): restarts went up on the daemon (from $D0) and on the manager (from $R0)"

# A call to a method nobody serves is counted as (unknown), UNIMPLEMENTED.
curl -s --http2-prior-knowledge -o /dev/null -X POST -H 'content-type: application/grpc' -H 'te: trailers' \
  --data-binary @/dev/null "http://$M/no.Such/Method" || true
wait_until 10 "unknown method counted" unknown-method "$MURL"
pass "a call to an unknown method counted as (unknown) UNIMPLEMENTED"

# What the listeners do not serve, and that they keep serving after it.
for url in "http://127.0.0.1:$PM" "http://127.0.0.1:$PD"; do
  expect_eq "$(curl -s -o /dev/null -w '%{http_code}' "$url/nope")" 404 "GET /nope on $url"
  expect_eq "$(curl -s -o /dev/null -w '%{http_code}' "$url/")" 404 "GET / on $url"
  expect_eq "$(curl -s -o /dev/null -w '%{http_code}' "$url/metrics/../../etc/passwd")" 404 "traversal path on $url"
  expect_eq "$(curl -s -o /dev/null -w '%{http_code}' "$url/metrics%00x")" 404 "encoded NUL on $url"
  expect_eq "$(curl -s -o /dev/null -w '%{http_code}' -X POST -d x=1 "$url/metrics")" 405 "POST /metrics on $url"
  expect_eq "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$url/metrics")" 405 "DELETE /metrics on $url"
  # Not HTTP at all.
  printf 'GARBAGE \x01\x02\r\n\r\n' | timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/${url##*:}; cat >&3; cat <&3 >/dev/null" || true
done
check manager "$MURL" "$NODE" >/dev/null || fail "manager /metrics after bad requests: $(check manager "$MURL" "$NODE" 2>&1 | tail -1)"
check daemon "$DURL" >/dev/null || fail "daemon /metrics after bad requests: $(check daemon "$DURL" 2>&1 | tail -1)"
kill -0 $MPID && kill -0 $DPID || fail "a process died"
pass "404 for other paths, 405 for other methods, garbage ignored; both still serve /metrics"

kill -TERM $DPID $MPID; wait $DPID || fail "daemon exit code"; wait $MPID || fail "manager exit code"
echo "prometheus: all checks passed"
