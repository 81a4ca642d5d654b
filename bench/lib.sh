# Shared helpers of the benchmark scripts (sourced, not run): a private temp dir, a manager
# started on a fresh SQLite file, CPU accounting from /proc, medians, and a cleanup that stops
# every process the script started (by pid, never by name).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=${OPS_BUILD_DIR:-build}/bin
for b in ${BENCH_NEEDS:-ops-manager ops-daemon pbcall mgr_load}; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b: build first (bash scripts/build.sh build)" >&2; exit 1; }
done
BT=$(mktemp -d /tmp/ops-bench.XXXXXX)
BPIDS=()
bench_cleanup() {
  local rc=$?
  local p
  if declare -F bench_extra_cleanup >/dev/null; then bench_extra_cleanup || true; fi
  for p in ${BPIDS[@]+"${BPIDS[@]}"}; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in ${BPIDS[@]+"${BPIDS[@]}"}; do kill -9 "$p" 2>/dev/null || true; done
  if [ -n "${KEEP:-}" ] || [ $rc -ne 0 ]; then echo "# work files kept in $BT" >&2; else rm -rf "$BT"; fi
  exit $rc
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# busy_pct SECONDS: share of all cores busy (not idle, not iowait) over SECONDS, from /proc/stat.
busy_pct() {
  local a b
  a=$(head -1 /proc/stat); sleep "$1"; b=$(head -1 /proc/stat)
  echo "$a $b" | awk '{ n = (NF - 2) / 2; for (i = 2; i <= n + 1; i++) { d = $(i + n + 1) - $i; t += d; if (i == 5 || i == 6) idle += d } printf "%.0f\n", t ? 100 * (t - idle) / t : 0 }'
}

# busy_ticks: CPU ticks all cores spent busy since boot (what busy_pct counts), for CPU splits:
# busy - (ours) = what other processes on the shared machine took meanwhile.
busy_ticks() { head -1 /proc/stat | awk '{ for (i = 2; i <= NF; i++) if (i != 5 && i != 6) t += $i; print t }'; }

# The machine is shared: wait (up to QUIET_WAIT s, default 120) for it to be at most 25% busy
# before measuring, and say how busy it was.
machine() {
  local waited=0 b
  b=$(busy_pct 2)
  while [ "$b" -gt 25 ] && [ $waited -lt "${QUIET_WAIT:-120}" ]; do sleep 3; waited=$((waited + 5)); b=$(busy_pct 2); done
  echo "# machine: nproc=$(nproc) cpu=\"$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)\" kernel=$(uname -r) load=\"$(cut -d' ' -f1-3 /proc/loadavg)\" busy_before_start=${b}% (waited ${waited}s)"
}

# free_port BASE: the first port from BASE up that nothing listens on (127.0.0.1).
free_port() {
  local p=$1
  while (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; do p=$((p + 1)); done
  echo $p
}

# start_manager DIR PORT [LEVEL] [HEARTBEAT]: ops-manager on a fresh (or existing) DIR/ops.db;
# sets MPID. HEARTBEAT (default 60s) is the interval the manager tells registering daemons,
# which they use instead of their own.
start_manager() {
  local dir=$1 port=$2 level=${3:-warn} hb=${4:-60s}
  mkdir -p "$dir"
  cat > "$dir/manager.yaml" <<YAML
grpc:
  host: 127.0.0.1
  port: $port
database:
  driver: sqlite
  dsn: $dir/ops.db
node:
  heartbeat_interval: $hb
  offline_after: 10m
limits:                     # the whole simulated fleet comes from one address
  register_per_minute: 6000000
  register_burst: 1000000
log:
  level: $level
  file: $dir/manager.log
YAML
  "$BIN/ops-manager" -c "$dir/manager.yaml" >> "$dir/manager.stderr" 2>&1 &
  MPID=$!
  BPIDS+=("$MPID")
  local i
  for i in $(seq 100); do
    "$BIN/pbcall" --timeout 1000 127.0.0.1:$port grpc.health.v1.Health/Check >/dev/null 2>&1 && return 0
    kill -0 "$MPID" 2>/dev/null || break
    sleep 0.1
  done
  echo "manager did not start; log:" >&2
  cat "$dir/manager.log" "$dir/manager.stderr" >&2 || true
  return 1
}

# stop_pid PID: SIGTERM, wait up to 15 s, then SIGKILL.
stop_pid() {
  local p=$1 i
  kill "$p" 2>/dev/null || return 0
  for i in $(seq 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}

# cpu_ticks PID: utime + stime of the process (all its threads, live and ended), in clock ticks.
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)

# kv KEY < lines: the value of KEY=... on every line.
kv() { grep -o "\b$1=[^ ]*" | cut -d= -f2; }
# median < numbers
median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "n/a"; else if (NR % 2) print a[(NR+1)/2]; else printf "%.6g\n", (a[NR/2]+a[NR/2+1])/2}'; }
# med FILE KEY: the median of KEY over the lines of FILE.
med() { kv "$2" < "$1" | median; }
