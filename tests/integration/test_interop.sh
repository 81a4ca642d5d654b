#!/usr/bin/env bash
# Interop with an implementation we did not write: Node's @grpc/grpc-js (tests/interop/,
# versions lock-filed) as a client of our server and as a server for our client, in plaintext,
# TLS and mutual TLS.
set -euo pipefail
src=${OPS_SOURCE_DIR:?}; bin=${OPS_BUILD_DIR:?}/bin
peer="node $src/tests/interop/peer.js"
if [ ! -d "$src/tests/interop/node_modules/@grpc/grpc-js" ]; then
  (cd "$src/tests/interop" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
tmp=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
bash "$src/tests/support/gen-certs.sh" "$tmp/certs" >/dev/null
c=$tmp/certs

# start NAME CMD...: runs CMD in the background and sets PORT from its "LISTENING <port>" line.
start() {
  local name=$1; shift
  "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  pids+=($!)
  for _ in $(seq 1 200); do
    PORT=$(awk '/^LISTENING/{print $2; exit}' "$tmp/$name.out")
    [ -n "$PORT" ] && return 0
    sleep 0.05
  done
  echo "FAIL: $name did not start"; cat "$tmp/$name.err"; exit 1
}

fail=0
run() { echo "--- $*"; if ! "$@"; then fail=1; fi; }

# grpc-js client -> our server
start ours "$bin/rpc_testserver" --quiet
run $peer client --target 127.0.0.1:$PORT --check test
start ours_tls "$bin/rpc_testserver" --quiet --tls $c/server.pem $c/server.key
run $peer client --target localhost:$PORT --ca $c/ca.pem --check unary,stream,error,health,large,bad-payload
run $peer client --target localhost:$PORT --ca $c/other-ca.pem --check rejected
start ours_mtls "$bin/rpc_testserver" --quiet --tls $c/server.pem $c/server.key --mtls $c/ca.pem
run $peer client --target localhost:$PORT --ca $c/ca.pem --cert $c/client.pem --key $c/client.key --check unary,stream,identity
run $peer client --target localhost:$PORT --ca $c/ca.pem --check rejected
run $peer client --target localhost:$PORT --ca $c/ca.pem --cert $c/other-client.pem --key $c/other-client.key --check rejected

# our client -> grpc-js server
start js $peer server
run "$bin/rpc_testclient" --target 127.0.0.1:$PORT
start js_tls $peer server --tls $c/server.pem $c/server.key
run "$bin/rpc_testclient" --target localhost:$PORT --ca $c/ca.pem
start js_mtls $peer server --tls $c/server.pem $c/server.key --mtls $c/ca.pem
run "$bin/rpc_testclient" --target localhost:$PORT --ca $c/ca.pem --cert $c/client.pem --key $c/client.key

# grpc-js client -> ops-manager and ops-daemon (the real programs)
mp=$(( 20000 + RANDOM % 20000 )); dp=$((mp + 1)); hp=$((mp + 2))
cat > "$tmp/manager.yaml" <<YAML
grpc: {host: 127.0.0.1, port: $mp}
database: {dsn: $tmp/ops.db}
YAML
cat > "$tmp/daemon.yaml" <<YAML
daemon: {work_dir: $tmp/work, grpc_host: 127.0.0.1, grpc_port: $dp, http_port: $hp}
manager: {address: 127.0.0.1:$mp}
agents:
  - {id: a1, binary_path: /bin/sleep, args: ["1000"]}
YAML
"$OPS_BUILD_DIR/bin/ops-manager" -c "$tmp/manager.yaml" 2>"$tmp/manager.log" & pids+=($!)
"$OPS_BUILD_DIR/bin/ops-daemon" -c "$tmp/daemon.yaml" --stop-agents 2>"$tmp/daemon.log" & pids+=($!)
for _ in $(seq 100); do "$bin/pbcall" 127.0.0.1:$dp proto.DaemonService/ListAgents 2>/dev/null | grep -q running && break; sleep 0.1; done
run $peer client --target 127.0.0.1:$mp --check manager
run $peer client --target 127.0.0.1:$mp --check health
run node "$src/tests/interop/daemon_check.js" 127.0.0.1:$dp "$src"

if [ $fail -ne 0 ]; then echo "interop: FAILED"; exit 1; fi
echo "interop: all checks passed"
