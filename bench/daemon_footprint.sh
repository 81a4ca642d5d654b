#!/usr/bin/env bash
# Resident memory and CPU of an ops-daemon at rest: 10 agents (7 x /bin/sleep, 3 shell loops
# printing a line a second), resource_interval 1s, collectors and report intervals at their
# defaults, registered with a running ops-manager. The daemon's VmRSS and utime+stime (from
# /proc/PID/status and /proc/PID/stat; its agents are not counted) are sampled every 5 s.
# Reported per run: average CPU % of one core after a 10 s warm-up, max and median RSS.
# Goal: under 16 MiB RSS and under 1% of one core on average. At the end of each run the RSS is
# split (anonymous vs file-backed, i.e. shared libraries) and the proportional share (Pss) is
# shown, since most of VmRSS is library pages that other processes share.
#   bash bench/daemon_footprint.sh [SECONDS] [REPEAT]   (defaults 300 1; build first)
source "$(dirname "$0")/lib.sh"
secs=${1:-300}
repeat=${2:-1}
warm=10
[ "$secs" -gt $((warm + 10)) ] || { echo "SECONDS must be more than $((warm + 10))" >&2; exit 2; }
machine
mport=$(free_port 31290)
start_manager "$BT/m" "$mport" info # info: its node.registered line shows the daemon registered

run_once() { # $1 = run number
  local r=$1 dir=$BT/d$1 gport hport
  gport=$(free_port $((31300 + r * 10)))
  hport=$(free_port $((gport + 1)))
  mkdir -p "$dir"
  {
    cat <<YAML
daemon:
  id: footprint-$r
  log_level: info
  log_file: $dir/daemon.log
  work_dir: $dir/work
  grpc_host: 127.0.0.1
  grpc_port: $gport
  http_port: $hport
  resource_interval: 1s
  stop_agents_on_exit: true
  stop_grace: 2s
manager:
  address: 127.0.0.1:$mport
agents:
YAML
    for i in 1 2 3 4 5 6 7; do printf '  - {id: sleeper%d, binary_path: /bin/sleep, args: ["100000"]}\n' "$i"; done
    for i in 1 2 3; do printf '  - {id: ticker%d, binary_path: /bin/sh, args: ["-c", "while true; do echo tick; sleep 1; done"]}\n' "$i"; done
  } > "$dir/daemon.yaml"
  "$BIN/ops-daemon" -c "$dir/daemon.yaml" > "$dir/daemon.stderr" 2>&1 &
  local dpid=$!
  BPIDS+=("$dpid")
  local t0 i
  t0=$(date +%s.%N)
  local samples=() c0="" tc0="" c1 tc1 rss now
  for ((i = 0; ; i++)); do
    now=$(date +%s.%N)
    kill -0 "$dpid" 2>/dev/null || { echo "ops-daemon exited; log:" >&2; tail -20 "$dir/daemon.log" "$dir/daemon.stderr" >&2; exit 1; }
    rss=$(awk '/^VmRSS/{print $2}' "/proc/$dpid/status")
    c1=$(cpu_ticks "$dpid")
    echo "$(echo "$now - $t0" | bc) $rss $c1" >> "$dir/samples"
    if [ -z "$c0" ] && [ "$(echo "$now - $t0 >= $warm" | bc)" = 1 ]; then c0=$c1; tc0=$now; fi
    [ -n "$c0" ] && samples+=("$rss")
    [ "$(echo "$now - $t0 >= $secs" | bc)" = 1 ] && break
    # On a 5 s grid (the warm-up, 10 s, is on it), the last sample at SECONDS.
    local next=$(( (i + 1) * 5 )) d
    [ $next -gt "$secs" ] && next=$secs
    d=$(echo "$t0 + $next - $(date +%s.%N)" | bc)
    [ "$(echo "$d > 0" | bc)" = 1 ] && sleep "$d"
  done
  tc1=$now
  local agents_running registered
  agents_running=$("$BIN/pbcall" 127.0.0.1:$gport proto.DaemonService/ListAgents | jq '[.response.agents[] | select(.status=="running")] | length')
  registered=$(grep -c "node.registered node=footprint-$r " "$BT/m/manager.log" || true)
  local split; split=$(awk '/^(RssAnon|RssFile|RssShmem|Threads)/{printf "%s%s=%s", (n++?" ":""), $1, $2}' "/proc/$dpid/status" | tr -d ':')
  split+=" $(awk '/^(Pss|Pss_Anon|Pss_File):/{printf "%s%s=%s", (n++?" ":""), $1, $2}' "/proc/$dpid/smaps_rollup" | tr -d ':')"
  local children; children=$(pgrep -P "$dpid" || true)
  stop_pid "$dpid"
  for c in $children; do kill -9 "$c" 2>/dev/null || true; done
  local cpu_pct rss_max rss_med
  cpu_pct=$(echo "scale=3; ($c1 - $c0) * 100 / $TCK / ($tc1 - $tc0)" | bc)
  rss_max=$(printf '%s\n' "${samples[@]}" | sort -n | tail -1)
  rss_med=$(printf '%s\n' "${samples[@]}" | median)
  echo "run $r: seconds=$secs agents_running=$agents_running registered_with_manager=$registered samples=${#samples[@]} cpu_pct_one_core=$cpu_pct rss_max_kib=$rss_max rss_median_kib=$rss_med rss_first_kib=${samples[0]} at_end: $split" | tee -a "$BT/res"
  awk '{printf "%s%s", (NR>1?" ":"# rss_kib over time: "), $2} END {print ""}' "$dir/samples"
}
echo "# command: $BIN/ops-daemon -c DIR/daemon.yaml (10 agents, resource_interval 1s), sampled every 5 s for ${secs}s"
for r in $(seq "$repeat"); do run_once "$r"; done
echo "median over $repeat runs: cpu_pct_one_core=$(med "$BT/res" cpu_pct_one_core) (goal < 1) rss_max_kib=$(med "$BT/res" rss_max_kib) rss_median_kib=$(med "$BT/res" rss_median_kib) (goal < 16384)"
