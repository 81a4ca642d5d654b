#!/usr/bin/env bash
# ops-manager under load from mgr_load (issue 3), each scenario REPEAT times on a fresh manager
# and SQLite file (log level warn), medians printed at the end:
#   hb       10,000 virtual nodes, Heartbeat only, 64 in flight on 4 connections (saturation)
#   hb_paced 10,000 virtual nodes, Heartbeat only, paced at 5,000 calls/s (a fleet of 10,000
#            nodes heartbeating every 2 s), at most 64 in flight
#   mixed    10,000 virtual nodes, 10% ReportMetrics (4 types x 10 values), 64 in flight
#   rm       1,000 virtual nodes, ReportMetrics only (4 x 10), 64 in flight
# Goals: Heartbeat p99 < 20 ms with 10,000 nodes; >= 400,000 values/s committed. For
# reference the store alone (store_bench, no RPC) is measured with the same report shape.
# Each run registers the nodes first (mgr_load --register-only), then measures (--no-register);
# besides mgr_load's numbers it records the CPU seconds the manager and the load generator used
# during the measured part (both run on this machine), and what all other processes of the
# shared machine used meanwhile (other_cpu_s), which says who used the cores.
#   bash bench/mgr_load.sh [REPEAT] [SECONDS]     (build first: bash scripts/build.sh build)
# MGR_LOAD_SCENARIOS="hb mixed" runs only those.
source "$(dirname "$0")/lib.sh"
repeat=${1:-3}
secs=${2:-10}
machine
port=$(free_port 31090)
declare -A args=(
  [hb]="--nodes 10000 --channels 4 --inflight 64 --report-ratio 0"
  [hb_paced]="--nodes 10000 --channels 4 --inflight 64 --report-ratio 0 --rate 5000"
  [mixed]="--nodes 10000 --channels 4 --inflight 64 --report-ratio 0.1 --types 4 --values 10"
  [rm]="--nodes 1000 --channels 4 --inflight 64 --report-ratio 1 --types 4 --values 10"
)
order=(${MGR_LOAD_SCENARIOS:-hb hb_paced mixed rm})
for sc in "${order[@]}"; do
  for r in $(seq "$repeat"); do
    dir=$BT/$sc-$r
    start_manager "$dir" "$port"
    cmd="$BIN/mgr_load --target 127.0.0.1:$port ${args[$sc]} --seconds $secs"
    [ "$r" = 1 ] && echo "# $sc: $cmd --register-only; then the same with --no-register"
    reg=$($cmd --register-only) || { echo "registration failed: $reg"; exit 1; }
    m0=$(cpu_ticks "$MPID"); b0=$(busy_ticks)
    out=$(/usr/bin/time -f "client_cpu_s=%U+%S" $cmd --no-register 2>"$dir/time") || true
    m1=$(cpu_ticks "$MPID"); b1=$(busy_ticks)
    ccpu=$(grep -o 'client_cpu_s=.*' "$dir/time" | cut -d= -f2 | bc)
    mcpu=$(echo "scale=2; ($m1 - $m0) / $TCK" | bc)
    line="$sc: $out $(echo "$reg" | grep -o 'registers_per_s=[0-9]*') manager_cpu_s=$mcpu client_cpu_s=$ccpu other_cpu_s=$(echo "scale=2; ($b1 - $b0) / $TCK - $mcpu - $ccpu" | bc)"
    echo "$line" | tee -a "$BT/$sc.res"
    stop_pid "$MPID"
    if grep -q "level=error" "$dir/manager.log"; then echo "# manager logged errors:"; grep "level=error" "$dir/manager.log" | head -5; fi
    rm -f "$dir"/ops.db*
  done
done
# Reference: the store alone (no RPC), the same report shape, 64 submitting threads in one
# process (tests/programs/store_bench.c), on a fresh database each run.
if [ -x "$BIN/store_bench" ]; then
  echo "# store alone: $BIN/store_bench -t 64 -r 1000 -d DIR"
  for r in $(seq "$repeat"); do
    mkdir -p "$BT/sb$r"
    v=$("$BIN/store_bench" -t 64 -r 1000 -d "$BT/sb$r" 2>&1 | awk '/^values\/s:/{print $2}')
    echo "store_bench: values_per_s=$v" | tee -a "$BT/store.res"
    rm -rf "$BT/sb$r"
  done
fi
echo "# medians over $repeat runs of ${secs}s"
for sc in "${order[@]}"; do
  f=$BT/$sc.res
  printf '%-8s calls_per_s=%s hb_p50_us=%s hb_p99_us=%s hb_p999_us=%s rm_p50_us=%s rm_p99_us=%s values_committed_per_s=%s errors=%s manager_cpu_s=%s client_cpu_s=%s other_cpu_s=%s registers_per_s=%s\n' \
    "$sc" "$(med "$f" calls_per_s)" "$(med "$f" hb_p50_us)" "$(med "$f" hb_p99_us)" "$(med "$f" hb_p999_us)" \
    "$(med "$f" rm_p50_us)" "$(med "$f" rm_p99_us)" "$(med "$f" values_committed_per_s)" "$(med "$f" errors)" \
    "$(med "$f" manager_cpu_s)" "$(med "$f" client_cpu_s)" "$(med "$f" other_cpu_s)" "$(med "$f" registers_per_s)"
done
if [ -f "$BT/store.res" ]; then echo "store_bench values_per_s=$(med "$BT/store.res" values_per_s) (the store alone, no RPC)"; fi
