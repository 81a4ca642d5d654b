#!/usr/bin/env bash
# Runs every benchmark of bench/ in turn (as recorded in bench/RESULTS.md), each output saved in
# OUT (default bench-results-DATE/ under /tmp). About 20 minutes; build first.
#   bash bench/run_all.sh [OUT]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/bench-results-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
export QUIET_WAIT=${QUIET_WAIT:-300}
run() { local name=$1; shift; echo "== $name: $*"; "$@" 2>&1 | tee "$out/$name.txt"; }
run rpc bash bench/rpc.sh 3
run mgr_load bash bench/mgr_load.sh 3 10
run h2load bash bench/h2load_heartbeat.sh 3 200000
run footprint_300 bash bench/daemon_footprint.sh 300 1
run footprint_60 bash bench/daemon_footprint.sh 60 3
run reconnect bash bench/reconnect_spread.sh 200 5 3
echo "results in $out"
