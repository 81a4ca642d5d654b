#!/usr/bin/env bash
# Heartbeat calls per second of ops-manager measured with h2load (nghttp2), a client far
# cheaper than a gRPC one, so that the number is the manager's: REPEAT runs of 200,000
# Heartbeat calls over 4 connections x 16 streams against one manager (log level warn, so the
# per-call access log at info is off), median printed at the end. Goal: >= 60,000 calls/s.
# The request body is one gRPC frame (no compression flag, 4-byte big-endian length) around a
# manager.HeartbeatRequest{node_id:"vnode-1", timestamp:now} written byte by byte here.
# h2load counts HTTP statuses only, so the gRPC status is checked apart: one request through
# nghttp shows its grpc-status trailer, pbcall checks a heartbeat after the runs, and the
# manager's log must have no error. Each run also shows the CPU seconds of the manager, of
# h2load and of every other process of the (shared) machine.
#   bash bench/h2load_heartbeat.sh [REPEAT] [REQUESTS]    (build first: bash scripts/build.sh build)
source "$(dirname "$0")/lib.sh"
repeat=${1:-3}
requests=${2:-200000}
command -v h2load >/dev/null || { echo "h2load not found (Debian package nghttp2-client)" >&2; exit 1; }
machine
port=$(free_port 31190)
start_manager "$BT/m" "$port"
"$BIN/pbcall" 127.0.0.1:$port manager.ManagerService/RegisterNode '{"node_id":"vnode-1","hostname":"h"}' | grep -q '"success":true' ||
  { echo "RegisterNode failed" >&2; exit 1; }

# protobuf: field 1 (node_id, length-delimited) = 0x0a LEN BYTES; field 2 (timestamp, varint) = 0x10 VARINT
varint() {
  local v=$1 out=""
  while [ "$v" -ge 128 ]; do out+=$(printf '\\x%02x' $(( (v & 127) | 128 ))); v=$((v >> 7)); done
  out+=$(printf '\\x%02x' "$v")
  printf '%s' "$out"
}
node=vnode-1
msg="\\x0a$(printf '\\x%02x' ${#node})$node\\x10$(varint "$(date +%s)")"
printf "$msg" > "$BT/msg.bin"
len=$(stat -c %s "$BT/msg.bin")
{ printf '\x00'; printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $((len >> 24 & 255)) $((len >> 16 & 255)) $((len >> 8 & 255)) $((len & 255)))"; cat "$BT/msg.bin"; } > "$BT/body.bin"
echo "# body: $(od -An -tx1 "$BT/body.bin" | tr -s " \n" " ")"

url=http://127.0.0.1:$port/manager.ManagerService/Heartbeat
hdrs=(-H 'content-type: application/grpc' -H 'te: trailers')
if command -v nghttp >/dev/null; then
  st=$(nghttp -v -d "$BT/body.bin" "${hdrs[@]}" "$url" 2>&1 | grep -a -o "grpc-status: [0-9]*" | head -1)
  echo "# one request through nghttp: ${st:-no grpc-status seen}"
  [ "$st" = "grpc-status: 0" ] || { echo "the manager did not answer the h2 request with grpc-status 0" >&2; exit 1; }
fi

cmd=(h2load -n "$requests" -c 4 -m 16 -d "$BT/body.bin" "${hdrs[@]}" "$url")
echo "# command: $(printf '%q ' "${cmd[@]}")"
for r in $(seq "$repeat"); do
  m0=$(cpu_ticks "$MPID"); b0=$(busy_ticks)
  out=$(/usr/bin/time -f "client_cpu_s=%U+%S" "${cmd[@]}" 2>"$BT/time")
  m1=$(cpu_ticks "$MPID"); b1=$(busy_ticks)
  rps=$(echo "$out" | grep -o 'finished in [^,]*, [0-9.]* req/s' | awk '{print $4}')
  ok2xx=$(echo "$out" | awk '/status codes:/{print $3}')
  succ=$(echo "$out" | awk '/^requests:/{for (i=1;i<=NF;i++) if ($(i+1) ~ /^succeeded/) print $i}')
  lat=$(echo "$out" | awk '/^time for request:/{print "req_min=" $4 " req_max=" $5 " req_mean=" $6}')
  ccpu=$(grep -o 'client_cpu_s=.*' "$BT/time" | cut -d= -f2 | bc)
  mcpu=$(echo "scale=2; ($m1 - $m0) / $TCK" | bc)
  echo "run $r: calls_per_s=$rps succeeded=$succ status_2xx=$ok2xx $lat manager_cpu_s=$mcpu client_cpu_s=$ccpu other_cpu_s=$(echo "scale=2; ($b1 - $b0) / $TCK - $mcpu - $ccpu" | bc)" | tee -a "$BT/res"
done
hb=$("$BIN/pbcall" 127.0.0.1:$port manager.ManagerService/Heartbeat '{"node_id":"vnode-1"}')
echo "# pbcall Heartbeat after the runs: $hb"
echo "$hb" | grep -q '"success":true' || { echo "heartbeat check failed" >&2; exit 1; }
errs=$(grep -c "level=error" "$BT/m/manager.log" || true)
echo "# manager log: $(wc -l < "$BT/m/manager.log") lines, $errs at level=error"
[ "$errs" = 0 ] || grep "level=error" "$BT/m/manager.log" | head -5
echo "median calls_per_s=$(med "$BT/res" calls_per_s) over $repeat runs (goal >= 60000); manager_cpu_s=$(med "$BT/res" manager_cpu_s) client_cpu_s=$(med "$BT/res" client_cpu_s) other_cpu_s=$(med "$BT/res" other_cpu_s)"
