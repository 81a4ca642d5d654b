#!/usr/bin/env bash
# opsctl against an AdminService we did not write: tests/interop/admin_fake.js (grpc-js), which
# keeps a small fleet in memory and applies operations to it. Every command in table and
# -o json form, exit codes 0/1/2/3, --help at every level, config resolution, TLS, and watch
# receiving streamed events.
#
# Layout, for extending (e.g. against the real ops-manager): helpers first; then
# checks_offline (no server needed), checks_auth MANAGER (any AdminService with the tokens in
# $VIEWER/$OPERATOR/$ADMIN), then the fake-fleet checks that know the fake's data.
source "$(dirname "$0")/lib.sh"

if [ ! -d "$SRC/tests/interop/node_modules/@grpc/grpc-js" ]; then
  (cd "$SRC/tests/interop" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
command -v jq >/dev/null || fail "jq is needed"
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3

source "$(dirname "$0")/ctl_lib.sh"

# start_fake NAME ARGS...: runs admin_fake.js in the background; sets PORT.
start_fake() {
  local name=$1; shift
  node "$SRC/tests/interop/admin_fake.js" "$@" >"$T/$name.out" 2>"$T/$name.log" </dev/null &
  PIDS+=($!)
  FAKE_PID=$!
  for _ in $(seq 1 200); do
    PORT=$(awk '/^LISTENING/{print $2; exit}' "$T/$name.out")
    [ -n "$PORT" ] && return 0
    sleep 0.05
  done
  fail "$name did not start: $(cat "$T/$name.log")"
}

# ---- checks that need no server ------------------------------------------------------------
checks_offline() {
  ctl --help; expect_rc 0 "--help"; has "$OUT" "Commands:" "--help"; has "$OUT" "Examples:" "--help"
  ctl help; expect_rc 0 "help"; has "$OUT" "Exit codes" "help"
  ctl; expect_rc 2 "no command"; has "$ERR" "missing command" "no command"
  for c in nodes node agents agent "agent start" "agent stop" "agent restart" "agent metrics" metrics config watch delete-node audit; do
    # shellcheck disable=SC2086
    ctl $c --help; expect_rc 0 "$c --help"
    has "$OUT" "Usage: opsctl ${c%% *}" "$c --help"
    has "$OUT" "opsctl ${c%% *} " "$c --help example"
  done
  ctl help agent stop; expect_rc 0 "help agent stop"; has "$OUT" "Usage: opsctl agent start|stop|restart" "help agent stop"
  ctl agent --help; has "$OUT" "opsctl agent restart web-1 nginx" "agent --help teaches"
  ctl agent metrics --help; has "$OUT" "--since" "agent metrics --help"
  ctl metrics --help; has "$OUT" "--summary" "metrics --help"; has "$OUT" "opsctl metrics web-1 --summary" "metrics --help"
  ctl -o json metrics --help; expect_rc 0 "global flag before --help"
  pass "help at every level"

  ctl frobnicate; expect_rc 2 "unknown command"; has "$ERR" "unknown command frobnicate" "unknown command"
  ctl help frobnicate; expect_rc 2 "help unknown"
  ctl nodes --bogus; expect_rc 2 "bad flag"; has "$ERR" "unknown flag --bogus" "bad flag"; has "$ERR" "Usage: opsctl nodes" "bad flag usage"
  ctl nodes --status maybe; expect_rc 2 "bad status"
  ctl nodes --label novalue; expect_rc 2 "bad label"
  ctl node; expect_rc 2 "node without NODE"; has "$ERR" "missing NODE" "node without NODE"
  ctl node a b; expect_rc 2 "node with two"
  ctl agents; expect_rc 2 "agents without NODE"
  ctl agent; expect_rc 2 "agent alone"; has "$ERR" "Usage: opsctl agent" "agent alone"
  ctl agent frob n a; expect_rc 2 "agent frob"
  ctl agent start node-1; expect_rc 2 "agent start without AGENT"; has "$ERR" "missing AGENT" "agent start without AGENT"
  ctl agent metrics node-1 nginx --since soon; expect_rc 2 "bad --since"
  ctl metrics; expect_rc 2 "metrics without NODE"
  ctl metrics node-1 --since 31d; expect_rc 2 "--since over 30d"; has "$ERR" "30d" "--since over 30d"
  ctl metrics node-1 --height 1; expect_rc 2 "bad --height"
  ctl metrics node-1 --summary --series x; expect_rc 2 "--series with --summary"
  ctl config; expect_rc 2 "config without NODE"
  ctl config node-1 --agent; expect_rc 2 "--agent without value"
  ctl watch --count 0; expect_rc 2 "watch --count 0"
  ctl watch extra; expect_rc 2 "watch extra arg"
  ctl -o yaml nodes; expect_rc 2 "-o yaml"
  ctl --timeout never nodes; expect_rc 2 "bad --timeout"
  ctl nodes --manager; expect_rc 2 "--manager without value"
  ctl delete-node; expect_rc 2 "delete-node without NODE"
  ctl audit --limit 0; expect_rc 2 "audit --limit 0"; has "$ERR" "Usage: opsctl audit" "audit usage"
  ctl audit node-1; expect_rc 2 "audit with an argument"
  pass "usage errors exit 2 with the command's usage"
}

# ---- checks valid against any AdminService that knows $VIEWER/$OPERATOR/$ADMIN --------------
checks_auth() {
  local m=$1
  ctl --manager "$m" --token "$VIEWER" nodes; expect_rc 0 "viewer lists nodes"
  ctl --manager "$m" --token wrong-token nodes; expect_rc 3 "wrong token"
  has "$ERR" "token refused" "wrong token"; has "$ERR" "--token" "wrong token names the source"
  OPS_TOKEN=wrong-token ctl --manager "$m" node node-1; expect_rc 3 "wrong env token"; has "$ERR" "check OPS_TOKEN" "env token hint"
  ctl --manager "$m" nodes; expect_rc 3 "no token"; has "$ERR" "no token" "no token"
  ctl --manager "$m" --token wrong-token watch; expect_rc 3 "watch with a wrong token"
  ctl --manager "$m" --token "$VIEWER" agent restart node-1 nginx; expect_rc 1 "viewer operates"
  has "$ERR" "permission denied: your token's role cannot operate agents; ask for an operator token" "viewer operates"
  ctl --manager "$m" --token "$OPERATOR" delete-node node-1 --yes; expect_rc 1 "operator deletes"
  has "$ERR" "ask for an admin token" "operator deletes"
  pass "auth: wrong/missing token exit 3, weak role exit 1 with the role to ask for"
}

checks_offline

# ---- the fake fleet ------------------------------------------------------------------------
VIEWER=tok-viewer OPERATOR=tok-operator ADMIN=tok-admin
start_fake fake --page-max 2
M=127.0.0.1:$PORT
checks_auth "$M"

# Settings: config file < env < flags.
mkdir -p "$XDG_CONFIG_HOME/ops"
printf 'manager: %s\ntoken: %s\n' "$M" "$VIEWER" >"$XDG_CONFIG_HOME/ops/opsctl.yaml"
ctl nodes; expect_rc 0 "settings from the config file"
OPS_MANAGER=127.0.0.1:1 ctl nodes; expect_rc 3 "env beats file"; has "$ERR" "127.0.0.1:1" "env beats file"
OPS_MANAGER=127.0.0.1:1 ctl --manager "$M" nodes; expect_rc 0 "flag beats env"
OPS_TOKEN=wrong ctl nodes; expect_rc 3 "env token beats file"
OPS_TOKEN=wrong ctl --token "$VIEWER" nodes; expect_rc 0 "flag token beats env"
printf 'manager: %s\ntokn: x\n' "$M" >"$XDG_CONFIG_HOME/ops/opsctl.yaml"
ctl nodes; expect_rc 2 "broken config"; has "$ERR" "$XDG_CONFIG_HOME/ops/opsctl.yaml" "broken config names the file"
has "$ERR" "tokn" "broken config names the key"; has "$ERR" "line" "broken config names the line"
ctl nodes --help; expect_rc 0 "help works with a broken config"
rm "$XDG_CONFIG_HOME/ops/opsctl.yaml"
pass "settings: flags > env > file; a broken file is named"

export OPS_MANAGER=$M OPS_TOKEN=$VIEWER

# nodes: every page, filters, table alignment with UTF-8, json.
ctl nodes; expect_rc 0 "nodes"
[ "$(wc -l <<<"$OUT")" = 5 ] || fail "nodes: expected header + 4 rows: $OUT"
has "$OUT" "bäckerei-日本" "nodes utf-8 hostname"; has "$OUT" "env=prod,role=web" "nodes labels"
# Columns line up in terminal cells (the wide hostname included).
"$PY" - "$OUT" <<'EOF' || fail "nodes: columns not aligned: $OUT"
import sys, unicodedata
def w(s): return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)
lines = sys.argv[1].splitlines()
col = lines[0].index("IP")
starts = set()
for l in lines:
    # display width of the text before the IP column: find it by the cell after the hostname
    cells = l.split()
    ip = cells[2]
    starts.add(w(l[:l.index(ip)]))
sys.exit(0 if len(starts) == 1 and starts.pop() == col else 1)
EOF
ctl -o json nodes; expect_rc 0 "nodes json"
jq_is "$OUT" '.nodes | length' 4 "nodes json: all pages (page size 2)"
jq_is "$OUT" '[.nodes[].node_id] | join(",")' "node-1,node-2,node-3,node-4" "nodes json order"
jq_is "$OUT" '.nodes[2].hostname' "bäckerei-日本" "nodes json utf-8"
ctl nodes --status offline -o json; jq_is "$OUT" '[.nodes[].node_id] | join(",")' node-2 "--status offline"
ctl nodes --label env=prod --label role=web -o json; jq_is "$OUT" '[.nodes[].node_id] | join(",")' node-1 "two labels"
ctl nodes --label=env=staging -o json; jq_is "$OUT" '[.nodes[].node_id] | join(",")' "node-3,node-4" "--label=k=v"
ctl nodes --label env=none; expect_rc 0 "no match"; has "$ERR" "no nodes match" "no match"
pass "nodes: all pages, filters, aligned UTF-8 table, json"

ctl node node-1; expect_rc 0 "node"
has "$OUT" "Hostname:" "node"; has "$OUT" "web-1" "node"; has "$OUT" "Agents (as last reported):" "node"
has "$OUT" "nginx" "node agents"; has "$OUT" "usage_percent" "node latest metrics"; has "$OUT" "GiB" "node memory as size"
ctl -o json node node-1
jq_is "$OUT" '.node.hostname' web-1 "node json"; jq_is "$OUT" '.agents | length' 5 "node json agents"
jq_is "$OUT" '.latest_metrics | map(.type) | join(",")' "cpu,memory" "node json metrics"
ctl node node-9; expect_rc 1 "unknown node"; has "$ERR" "not found" "unknown node"
ctl -o json node node-9; expect_rc 1 "unknown node json"; [ -z "$OUT" ] || fail "unknown node json printed: $OUT"
pass "node: details, agents, latest metrics; unknown -> 1"

ctl agents node-1; expect_rc 0 "agents"
has "$OUT" "RESTARTS" "agents header"; has "$OUT" "1200" "agents pid"
ctl -o json agents node-1; jq_is "$OUT" '[.agents[].id] | join(",")' "nginx,worker,cron,broken,slow" "agents json"
ctl agents node-2; expect_rc 1 "agents of an offline node"; has "$ERR" "could not reach the node's daemon" "offline node"
ctl agents node-9; expect_rc 1 "agents of unknown node"
pass "agents: live list; unreachable daemon and unknown node -> 1"

# Operations change the fake's state, seen through agents.
export OPS_TOKEN=$OPERATOR
ctl agent stop node-1 nginx; expect_rc 0 "stop"; has "$OUT" "stopped agent nginx on node node-1" "stop"
ctl -o json agents node-1; jq_is "$OUT" '.agents[] | select(.id=="nginx") | "\(.status) \(.pid)"' "stopped 0" "stop applied"
ctl agent start node-1 nginx; expect_rc 0 "start"
ctl -o json agents node-1; jq_is "$OUT" '.agents[] | select(.id=="nginx") | .status' running "start applied"
ctl -o json agent restart node-1 worker; expect_rc 0 "restart json"; jq_is "$OUT" '.success' true "restart json"
jq_is "$OUT" '.via' pool "restart json via"
ctl -o json agents node-1; jq_is "$OUT" '.agents[] | select(.id=="worker") | .restart_count' 1 "restart applied"
ctl agent stop node-1 ghost; expect_rc 1 "unknown agent"; has "$ERR" "agent not found: ghost" "unknown agent"
ctl agent start node-1 broken; expect_rc 1 "failing operation"; has "$ERR" "exec ./broken: permission denied" "failing operation"
ctl agent start node-2 postgres; expect_rc 1 "operate on offline node"
# A deadline while the manager is up is the operation's failure (1), not a lost manager (3).
ctl --timeout 1s agent restart node-1 slow; expect_rc 1 "operation over its deadline"; has "$ERR" "raise --timeout" "deadline hint"
export OPS_TOKEN=$VIEWER
pass "agent start/stop/restart applied; failures -> 1"

ctl agent metrics node-1 nginx; expect_rc 0 "agent metrics"
has "$OUT" "20 samples" "agent metrics"; has "$OUT" "▁▁▂▂▂▃▃▄▄▄▅▅▅▆▆▇▇▇██" "agent metrics sparkline"
has "$OUT" "119.0 MiB" "agent metrics sizes"
ctl -o json agent metrics node-1 nginx --since 1m; jq_is "$OUT" '.data_points | length' 4 "--since 1m sent as 60 s"
ctl agent metrics node-1 ghost; expect_rc 1 "agent metrics unknown agent"
pass "agent metrics: sparklines, --since"

ctl metrics node-1; expect_rc 0 "metrics chart"
has "$OUT" "node-1 cpu.usage_percent" "chart title"; has "$OUT" "└────" "x axis"; has "$OUT" " ┤" "y axis"
LC_ALL=C grep -q $'\xe2[\xa0-\xa3]' <<<"$OUT" || fail "metrics: no braille in $OUT"
[ "$(grep -c '└' <<<"$OUT")" = 2 ] || fail "metrics: expected a chart per key: $OUT"
# The plot is 100 - 10 columns: the manager is asked for 180 buckets.
COLUMNS=100 ctl -o json metrics node-1 --since 24h
jq_is "$OUT" '.series | length' 2 "metrics json"; jq_is "$OUT" '.series[0].points | length' 180 "buckets = plot width"
COLUMNS=60 ctl -o json metrics node-1 --since 24h; jq_is "$OUT" '.series[0].points | length' 100 "buckets follow COLUMNS"
ctl -o json metrics node-1 --type memory --series used_percent; jq_is "$OUT" '[.series[].key] | join(",")' used_percent "--series"
ctl metrics node-1 --summary --since 6h; expect_rc 0 "summary"
has "$OUT" "TREND" "summary"; has "$OUT" "used_percent" "summary"
LC_ALL=C grep -q $'\xe2\x96[\x81-\x88]' <<<"$OUT" || fail "summary: no sparkline"
ctl -o json metrics node-1 --summary; jq_is "$OUT" '.keys | length' 4 "summary json"
ctl -o json metrics node-1 --summary --type cpu; jq_is "$OUT" '[.keys[].key] | join(",")' "usage_percent,user" "summary --type"
ctl metrics node-9; expect_rc 1 "metrics unknown node"
ctl metrics node-1 --type nosuch; expect_rc 0 "metrics of an empty type"; has "$ERR" "no nosuch metrics" "empty type"
pass "metrics: braille charts sized to the terminal, summary with sparklines"

ctl config node-1; expect_rc 0 "config"; has "$OUT" "node_id: node-1" "config"
ctl config node-1 --agent nginx; has "$OUT" "command: /usr/bin/nginx" "config --agent"
ctl -o json config node-1; jq_is "$OUT" '.config_data | test("node_id: node-1")' true "config json"
ctl config node-1 --agent ghost; expect_rc 1 "config unknown agent"
pass "config"

# watch: a plain and a filtered json watcher, then changes.
"$BIN/opsctl" watch >"$T/watch.out" 2>"$T/watch.err" &
W1=$!; PIDS+=($W1)
"$BIN/opsctl" -o json watch --kind agent. --node node-1 --count 2 >"$T/watch2.out" 2>"$T/watch2.err" &
W2=$!; PIDS+=($W2)
wait_for 10 grep -q "watcher added (2)" "$T/fake.log" || fail "watchers did not connect: $(cat "$T"/watch*.err)"
OPS_TOKEN=$OPERATOR ctl agent start node-1 cron; expect_rc 0 "start cron"
OPS_TOKEN=$OPERATOR ctl agent stop node-1 cron; expect_rc 0 "stop cron"
wait_for 10 grep -q "node-1/cron" "$T/watch.out" || fail "watch: no event: $(cat "$T/watch.out" "$T/watch.err")"
set +e; wait $W2; rc=$?; set -e
[ $rc = 0 ] || fail "watch --count 2 exit $rc: $(cat "$T/watch2.err")"
[ "$(wc -l <"$T/watch2.out")" = 2 ] || fail "watch json: expected 2 lines: $(cat "$T/watch2.out")"
jq -e -s 'all(.kind == "agent.state" and .node_id == "node-1" and .agent_id == "cron")' "$T/watch2.out" >/dev/null ||
  fail "watch json lines: $(cat "$T/watch2.out")"
jq_is "$(sed -n 2p "$T/watch2.out")" '"\(.previous_status)->\(.status)"' "running->stopped" "watch json order"
has "$(cat "$T/watch.out")" "running -> stopped" "watch table line"
pass "watch: events streamed as they happen, table and json lines"

# delete-node: refused without --yes off a terminal, confirmed on one, applied.
ctl delete-node node-3 </dev/null; expect_rc 2 "delete without --yes off a tty"; has "$ERR" "--yes" "delete without --yes"
OPS_TOKEN=$ADMIN ctl delete-node node-9 --yes; expect_rc 1 "delete unknown node"
if command -v script >/dev/null; then
  printf 'nope\n' | OPS_TOKEN=$ADMIN script -qec "$BIN/opsctl delete-node node-3" /dev/null >"$T/tty.out" 2>&1 || true
  has "$(cat "$T/tty.out")" "Type the node id to confirm" "tty prompt"; has "$(cat "$T/tty.out")" "not confirmed" "tty refused"
  ctl node node-3; expect_rc 0 "node-3 kept after a refused confirmation"
  printf 'node-3\n' | OPS_TOKEN=$ADMIN script -qec "$BIN/opsctl delete-node node-3" /dev/null >"$T/tty.out" 2>&1 || true
  has "$(cat "$T/tty.out")" "deleted node node-3" "tty confirmed"
  ctl node node-3; expect_rc 1 "node-3 gone after confirmation"
fi
OPS_TOKEN=$ADMIN ctl -o json delete-node node-4 --yes; expect_rc 0 "delete --yes"; jq_is "$OUT" .deleted true "delete json"
ctl -o json nodes; jq_is "$OUT" '.nodes | map(.node_id) | index("node-4")' null "node-4 gone"
wait_for 10 grep -q "node.deleted" "$T/watch.out" || fail "watch: no node.deleted"
pass "delete-node: confirmation, --yes, applied"

# audit: admin only; the fake's trail holds the operations and deletions above.
ctl audit; expect_rc 1 "viewer reads audit"; has "$ERR" "ask for an admin token" "viewer reads audit"
OPS_TOKEN=$ADMIN ctl audit; expect_rc 0 "audit"; has "$OUT" "DeleteNode" "audit table"; has "$OUT" "OperateAgent" "audit table"
OPS_TOKEN=$ADMIN ctl -o json audit --limit 2; expect_rc 0 "audit json"; jq_is "$OUT" '.records | length' 2 "audit --limit"
jq_is "$OUT" '.records[0].method' DeleteNode "audit newest first"
pass "audit: admin only, table and json, --limit"

# The manager going away: the watcher says so (exit 3), and calls exit 3.
kill "$FAKE_PID"
set +e; wait "$W1"; rc=$?; set -e
[ $rc = 3 ] || fail "watch after the manager died: exit $rc"
has "$(cat "$T/watch.err")" "cannot reach manager" "watch after the manager died"
ctl nodes; expect_rc 3 "server down"; has "$ERR" "cannot reach manager at $M" "server down"; has "$ERR" "OPS_MANAGER" "server down hint"
pass "manager down -> 3"

# TLS: the fake with a certificate; opsctl with the right and a wrong CA.
# Self-signed EC certificates (fast to make): each is its own CA.
for n in server other; do
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost -keyout "$T/$n.key" -out "$T/$n.pem" 2>/dev/null || fail "openssl"
done
start_fake fake-tls --tls "$T/server.pem" "$T/server.key"
ctl --manager "localhost:$PORT" --ca "$T/server.pem" nodes; expect_rc 0 "TLS with the right CA"
OPS_CA=$T/server.pem ctl --manager "localhost:$PORT" nodes; expect_rc 0 "TLS with OPS_CA"
ctl --manager "localhost:$PORT" --ca "$T/other.pem" nodes; expect_rc 3 "TLS with a wrong CA"
has "$ERR" "cannot reach manager" "wrong CA"
ctl --manager "localhost:$PORT" nodes; expect_rc 3 "plaintext to a TLS server"
pass "TLS: --ca / OPS_CA; wrong CA -> 3"

echo "all opsctl checks passed"
