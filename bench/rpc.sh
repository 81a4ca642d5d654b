#!/usr/bin/env bash
# Benchmark of the rpc layer: unary calls/s and latency with 1, 16 and 64 calls in flight over
# loopback (small messages), each point run REPEAT times (median reported by the caller), and
# the server's resident memory sampled over a run of one million calls. Waits for the shared
# machine to be quiet first (bench/lib.sh), and prints the medians at the end.
#   bash bench/rpc.sh [REPEAT]        (build first: bash scripts/build.sh)
BENCH_NEEDS="rpc_testserver rpc_bench" source "$(dirname "$0")/lib.sh"
repeat=${1:-3}
bin=$BIN
machine
out=$BT/server.out
"$bin/rpc_testserver" --quiet >"$out" 2>/dev/null &
spid=$!
BPIDS+=("$spid")
for _ in $(seq 50); do port=$(awk '/LISTENING/{print $2}' "$out"); [ -n "$port" ] && break; sleep 0.1; done
echo "# rpc_testserver pid=$spid port=$port cores=$(nproc)"
for n in 1 16 64; do
  for r in $(seq "$repeat"); do
    echo "async$n: $("$bin/rpc_bench" --target 127.0.0.1:$port --inflight $n --async 1 --seconds 5)" | tee -a "$BT/res"
  done
done
for r in $(seq "$repeat"); do
  echo "blocking64: $("$bin/rpc_bench" --target 127.0.0.1:$port --inflight 64 --seconds 5)" | tee -a "$BT/res"
done
rss() { awk '/VmRSS/{print $2}' /proc/$spid/status; }
echo "# one million calls, 64 in flight; server VmRSS (KiB) every 2 s"
"$bin/rpc_bench" --target 127.0.0.1:$port --inflight 64 --async 1 --calls 1000000 > "$out.res" &
bpid=$!
samples=()
while kill -0 $bpid 2>/dev/null; do samples+=("$(rss)"); sleep 2; done
wait $bpid || true
echo "rss_kib: ${samples[*]}"
echo "million: $(cat "$out.res")"
echo "# medians over $repeat runs"
for mode in async1 async16 async64 blocking64; do
  grep "^$mode:" "$BT/res" > "$BT/$mode"
  echo "$mode calls_per_s=$(med "$BT/$mode" calls_per_s) p50_us=$(med "$BT/$mode" p50_us) p99_us=$(med "$BT/$mode" p99_us) p999_us=$(med "$BT/$mode" p999_us) errors=$(med "$BT/$mode" errors)"
done
