#!/usr/bin/env bash
# The README's first command works: scripts/demo.sh brings up a manager and a daemon with the
# three example agents, shows the fleet through opsctl (the node online in the nodes table,
# the three agents running, a braille cpu chart, events), tells how to run opsctl against it
# with the admin token it made (whose SHA-256 is the one in its manager.yaml), and stopping
# leaves no agent behind.
source "$(dirname "$0")/lib.sh"
unset OPS_MANAGER OPS_TOKEN OPS_CA OPS_CERT OPS_KEY
export COLUMNS=100
out=$(cd "$SRC" && OPS_DEMO_REBUILD=0 OPS_DEMO_SECONDS=20 OPS_DEMO_DIR="$T/demo" bash scripts/demo.sh 2>&1) || fail "demo exited non-zero: $out"
echo "$out" | tail -40
echo "$out" | grep -q "== .*opsctl nodes" || fail "no opsctl nodes section"
echo "$out" | grep -qE "^[0-9a-f-]{36} +$(hostname) +[0-9.]+ +online " || fail "node table has no online row for host $(hostname)"
for a in ticker heartbeat flaky; do echo "$out" | grep -qE "^$a +custom +[0-9.]+ +running +[0-9]+ " || fail "agent $a not shown running"; done
echo "$out" | grep -q "cpu.usage_percent" || fail "no cpu chart title"
LC_ALL=C grep -q $'\xe2[\xa0-\xa3]' <<<"$out" || fail "no braille chart"
echo "$out" | grep -q "└─" || fail "chart without an x axis"
echo "$out" | grep -qE "^[0-9-]+ [0-9:]+  (node\.registered|node\.online|agent\.state) +[0-9a-f-]{36}" || fail "no event shown"
TOKEN=$(echo "$out" | sed -n 's/^  export OPS_TOKEN=\([0-9a-f]*\).*/\1/p' | tail -1)
[ ${#TOKEN} = 48 ] || fail "no token in the how-to: $TOKEN"
grep -q "sha256: $(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)" "$T/demo/manager.yaml" || fail "printed token is not the configured one"
echo "$out" | grep -qE "^  export OPS_MANAGER=127.0.0.1:[0-9]+$" || fail "no OPS_MANAGER export line"
echo "$out" | grep -q "stopped. logs and data" || fail "demo did not stop cleanly"
! pgrep -f "$T/demo" >/dev/null && ! pgrep -f "configs/demo/agents/ticker.sh" >/dev/null || fail "processes left behind"
pass "demo: node online, three agents running, cpu chart, events and the opsctl how-to through opsctl; clean stop"
