#!/usr/bin/env bash
# How a fleet comes back after a manager restart (issue 5): N ops-daemons (default 200; every
# other one with a tiny agent, /bin/sleep) with heartbeat_interval 2s and reconnect_interval
# 10s (the manager's node.heartbeat_interval is 2s too: it tells daemons which interval to
# use) register with one ops-manager; once all are registered the manager gets SIGTERM, stays
# down DOWN seconds (default 5), and is started again on the same port and database. Every
# daemon then registers again; the manager's log has one event=node.registered line (with its
# ts=) per registration. Printed: the per-second histogram of re-registrations counted from the
# restart, the largest share of the fleet in one histogram second and in any sliding 1 s
# window, and the time until all N were back. Goal: no more than 10% in any one second.
#   bash bench/reconnect_spread.sh [N] [DOWN] [REPEAT]   (defaults 200 5 1; build first)
# Ports: daemon i listens on BASE+2i (gRPC) and BASE+2i+1 (agents' heartbeat HTTP), BASE from
# 30000 up to the first range that is entirely free.
source "$(dirname "$0")/lib.sh"
n=${1:-200}
down=${2:-5}
repeat=${3:-1}
machine
need_fds=$((n * 4 + 256))
[ "$(ulimit -n)" -ge "$need_fds" ] || ulimit -n "$need_fds" 2>/dev/null || { echo "ulimit -n $(ulimit -n) is too low for $n daemons" >&2; exit 1; }
mport=$(free_port 31590)

port_range_free() { # BASE COUNT
  local p
  for ((p = $1; p < $1 + $2; p++)); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && return 1; done
  return 0
}
base=30000
until port_range_free $base $((2 * n)); do base=$((base + 2 * n)); [ $base -lt 60000 ] || { echo "no free port range" >&2; exit 1; }; done
echo "# daemons: $n, ports $base..$((base + 2 * n - 1)); manager 127.0.0.1:$mport; down ${down}s"

DPIDS=()
start_daemons() { # RUN
  local i dir
  for ((i = 0; i < n; i++)); do
    dir=$BT/r$1/d$i
    mkdir -p "$dir"
    {
      cat <<YAML
daemon:
  id: rs-$i
  log_level: info
  log_file: $dir/daemon.log
  work_dir: $dir/work
  grpc_host: 127.0.0.1
  grpc_port: $((base + 2 * i))
  http_port: $((base + 2 * i + 1))
  stop_agents_on_exit: true
  stop_grace: 1s
manager:
  address: 127.0.0.1:$mport
  heartbeat_interval: 2s
  reconnect_interval: 10s
YAML
      if ((i % 2 == 0)); then printf 'agents:\n  - {id: nap, binary_path: /bin/sleep, args: ["100000"]}\n'; else echo "agents: []"; fi
    } > "$dir/daemon.yaml"
    "$BIN/ops-daemon" -c "$dir/daemon.yaml" > "$dir/daemon.stderr" 2>&1 &
    DPIDS+=($!)
    BPIDS+=($!)
    sleep 0.05 # 200 processes on 2 cores: staggered starts
  done
}

stop_daemons() {
  local p children=()
  for p in "${DPIDS[@]}"; do children+=($(pgrep -P "$p" || true)); done
  for p in "${DPIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${DPIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  for p in ${children[@]+"${children[@]}"}; do kill -9 "$p" 2>/dev/null || true; done
  DPIDS=()
}
bench_extra_cleanup() { [ ${#DPIDS[@]} -eq 0 ] || stop_daemons; }

# Distinct rs-* nodes with a node.registered line in FILE.
registered_count() { grep -o 'event=node.registered node=rs-[0-9]*' "$1" 2>/dev/null | sort -u | wc -l; }
# Seconds of the day (with ms) of an ISO ts= field.
tod='function tod(s,  hms) { sub(/.*T/, "", s); sub(/Z.*/, "", s); split(s, hms, ":"); return hms[1] * 3600 + hms[2] * 60 + hms[3] }'

run_once() { # RUN
  local r=$1 mdir=$BT/r$1/m
  start_manager "$mdir" "$mport" info 2s
  local t0=$SECONDS
  start_daemons "$r"
  local i
  for i in $(seq 180); do [ "$(registered_count "$mdir/manager.log")" -ge "$n" ] && break; sleep 1; done
  local c; c=$(registered_count "$mdir/manager.log")
  echo "# run $r: $c of $n daemons registered $((SECONDS - t0)) s after the first start"
  [ "$c" -ge "$n" ] || { echo "not all daemons registered" >&2; exit 1; }
  sleep 3 # a few heartbeats in the steady state
  local kill_ts; kill_ts=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
  stop_pid "$MPID"
  mv "$mdir/manager.log" "$mdir/manager-1.log"
  sleep "$down"
  start_manager "$mdir" "$mport" info 2s
  local start_line; start_line=$(grep -m1 'event=manager.started' "$mdir/manager.log")
  for i in $(seq 180); do [ "$(registered_count "$mdir/manager.log")" -ge "$n" ] && break; sleep 1; done
  c=$(registered_count "$mdir/manager.log")
  # Times of the first re-registration of each node, in seconds after the restart.
  grep 'event=node.registered node=rs-' "$mdir/manager.log" |
    awk -v st="$(echo "$start_line" | grep -o 'ts=[^ ]*' | cut -d= -f2)" "$tod"'
      { match($0, /ts=[^ ]*/); t = tod(substr($0, RSTART + 3, RLENGTH - 3)); match($0, /node=[^ ]*/); id = substr($0, RSTART, RLENGTH)
        d = t - tod(st); if (d < -43200) d += 86400
        if (!(id in seen)) { seen[id] = 1; printf "%.3f\n", d } }' | sort -g > "$BT/r$r/times"
  local kill_to_start
  kill_to_start=$(awk -v a="$kill_ts" -v b="$(echo "$start_line" | grep -o 'ts=[^ ]*' | cut -d= -f2)" "$tod"' BEGIN { d = tod(b) - tod(a); if (d < 0) d += 86400; printf "%.1f", d }')
  echo "# run $r: manager down ${kill_to_start}s (SIGTERM to ready); $c of $n re-registered"
  echo "# per-second histogram of re-registrations after the restart (second: count, share)"
  awk -v n="$n" '{ b = int($1); if ($1 < 0) b = -1; h[b]++; if (b > mx) mx = b }
    END { for (s = 0; s <= mx; s++) printf "  %3d: %3d %5.1f%% %s\n", s, h[s], 100 * h[s] / n, substr("##################################################", 1, h[s] / 2) }' "$BT/r$r/times"
  local max_bin max_win all_back
  max_bin=$(awk '{ h[int($1)]++ } END { m = 0; for (k in h) if (h[k] > m) m = h[k]; print m }' "$BT/r$r/times")
  max_win=$(awk '{ t[NR] = $1 } END { m = 0; j = 1; for (i = 1; i <= NR; i++) { while (t[i] - t[j] >= 1) j++; if (i - j + 1 > m) m = i - j + 1 } print m }' "$BT/r$r/times")
  all_back=$(tail -1 "$BT/r$r/times")
  local reconnect_lines; reconnect_lines=$(cat "$BT/r$r"/d*/daemon.log | grep -c 'event=link.reconnect_scheduled' || true)
  echo "run $r: daemons=$n back=$c all_back_s=$all_back max_per_second=$max_bin max_share_pct=$(echo "scale=1; 100 * $max_bin / $n" | bc) max_sliding_1s=$max_win max_sliding_share_pct=$(echo "scale=1; 100 * $max_win / $n" | bc) down_s=$kill_to_start failed_attempts_logged=$reconnect_lines" | tee -a "$BT/res"
  stop_daemons
  stop_pid "$MPID"
}
for r in $(seq "$repeat"); do run_once "$r"; done
echo "median over $repeat runs: max_share_pct=$(med "$BT/res" max_share_pct) max_sliding_share_pct=$(med "$BT/res" max_sliding_share_pct) (goal <= 10) all_back_s=$(med "$BT/res" all_back_s)"
