# Shared helpers for the script tests (sourced, not run). Every test gets a private temp dir,
# random loopback ports, and a cleanup that kills what it started.
set -euo pipefail
SRC=${OPS_SOURCE_DIR:?set by ctest}
BIN=${OPS_BUILD_DIR:?set by ctest}/bin
T=$(mktemp -d /tmp/ops-test.XXXXXX)
# Inherited by everything the test starts, agents and their children included (the daemon
# passes its environment on): cleanup finds them by it, whatever their command line says.
export OPS_TEST_RUN=$T
PIDS=()
# cleanup [RC]: RC is the script's exit status (default $?). Passed explicitly by traps that
# run something first (pg_stop): a bare `(exit $rc)` there would end the trap under set -e
# before cleanup ran, leaving background loops alive on ctest's output pipe.
cleanup() {
  local rc=${1:-$?}
  set +e
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  # Agents a daemon left running on purpose (they outlive it by design), and whatever else
  # still carries this test's mark.
  pkill -9 -f "$T/" 2>/dev/null || true
  local left
  left=$(grep -lsxz "OPS_TEST_RUN=$T" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 | grep -vx "$$" || true)
  [ -n "$left" ] && kill -9 $left 2>/dev/null || true
  if [ $rc -ne 0 ]; then
    echo "--- FAILED; logs in $T:"; for f in "$T"/*.log; do [ -f "$f" ] && { echo "== $f"; tail -30 "$f"; }; done
  fi
  [ $rc -eq 0 ] && rm -rf "$T"
  exit $rc
}
trap cleanup EXIT

fail() { echo "FAIL: $*"; exit 1; }
pass() { echo "ok $*"; }

free_port() {
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo $p; return 0; fi
  done
  return 1
}

# wait_for SECONDS CMD...: retries CMD every 0.1 s until it succeeds.
wait_for() {
  local secs=$1; shift
  local end=$((SECONDS + secs))
  while ! "$@" >/dev/null 2>&1; do
    [ $SECONDS -ge $end ] && return 1
    sleep 0.1
  done
}

# call TARGET METHOD [JSON]: pbcall, output JSON on stdout, never fails the script itself.
call() { "$BIN/pbcall" "$@" || true; }
# jget JSON FILTER
jget() { echo "$1" | jq -r "$2"; }

expect_eq() { [ "$1" = "$2" ] || fail "$3: expected '$2', got '$1'"; }
