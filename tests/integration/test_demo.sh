#!/usr/bin/env bash
# The README's first command works: scripts/demo.sh brings up a manager and a daemon with the
# three example agents, the fleet view shows the node online with its agents and metrics, and
# stopping leaves no agent behind.
source "$(dirname "$0")/lib.sh"
out=$(cd "$SRC" && OPS_DEMO_REBUILD=0 OPS_DEMO_SECONDS=15 OPS_DEMO_DIR="$T/demo" bash scripts/demo.sh 2>&1) || fail "demo exited non-zero: $out"
echo "$out" | tail -25
echo "$out" | grep -q " online " || fail "node not shown online"
for a in ticker heartbeat flaky; do echo "$out" | grep -qE "^$a +running" || fail "agent $a not shown running"; done
echo "$out" | grep -qE "^cpu " || fail "no cpu metrics shown"
echo "$out" | grep -q "stopped. logs and data" || fail "demo did not stop cleanly"
! pgrep -f "$T/demo" >/dev/null && ! pgrep -f "configs/demo/agents/ticker.sh" >/dev/null || fail "processes left behind"
pass "demo: node online, three agents running, metrics stored, clean stop"
