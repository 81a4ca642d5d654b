#!/usr/bin/env bash
# Self-test of the interop peers: peer.js client against peer.js server, plaintext, TLS and
# mTLS, with certificates from tests/support/gen-certs.sh in a temporary directory. It proves
# the peers and certificates are sound before they are pointed at our C server/client.
# Not a CTest test on purpose (needs node_modules; run it by hand: bash tests/interop/selftest.sh).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
peer="$here/peer.js"

if [ ! -d "$here/node_modules/@grpc/grpc-js" ]; then
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error) || exit 1
fi

work=$(mktemp -d)
server_pid=""
port=""
failures=0

stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null
        wait "$server_pid" 2>/dev/null
        server_pid=""
    fi
}
trap 'stop_server; rm -rf "$work"' EXIT

# start_server ARGS...: starts peer.js server and sets $port from its LISTENING line.
start_server() {
    stop_server
    : > "$work/server.out"
    node "$peer" server --port 0 "$@" > "$work/server.out" 2> "$work/server.err" &
    server_pid=$!
    port=""
    for _ in $(seq 200); do
        port=$(awk '$1 == "LISTENING" { print $2 }' "$work/server.out")
        [ -n "$port" ] && { echo "-- server $* on port $port"; return 0; }
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "FATAL: server $* did not start"; cat "$work/server.err"; exit 1
}

# client WANT LABEL ARGS...: WANT is "pass" or a regex the output must match with exit 1.
client() {
    local want=$1 label=$2 out rc
    shift 2
    out=$(node "$peer" client --target "127.0.0.1:$port" "$@" 2>&1)
    rc=$?
    sed 's/^/     /' <<< "$out"
    if [ "$want" = pass ] && [ $rc -eq 0 ]; then
        echo "  PASS $label"
    elif [ "$want" != pass ] && [ $rc -eq 1 ] && grep -Eq -- "$want" <<< "$out"; then
        echo "  PASS $label (expected failure seen)"
    else
        echo "  FAILED $label (exit $rc)"
        failures=$((failures + 1))
    fi
}

bash "$repo/tests/support/gen-certs.sh" "$work/certs" || exit 1
c="$work/certs"
openssl verify -CAfile "$c/ca.pem" "$c/server.pem" "$c/client.pem" || failures=$((failures + 1))

# Everything in the default group except bad-payload, which only our server gets right:
# grpc-js answers an undecodable request with INTERNAL, ours must say INVALID_ARGUMENT.
portable="unary,stream,error,deadline,health,large,bad-method,oversize,cancel,concurrent"

echo "== plaintext"
start_server
client pass "plaintext checks" --check "$portable" --check daemon
client '^FAIL bad-payload: expected INVALID_ARGUMENT, got INTERNAL' \
    "bad-payload against grpc-js gives INTERNAL (our-server-only check)" --check bad-payload
client '^FAIL rejected: expected UNAVAILABLE, got OK' "rejected fails when nothing rejects" \
    --check rejected

echo "== TLS (server certificate only)"
start_server --tls "$c/server.pem" "$c/server.key"
client pass "TLS checks" --ca "$c/ca.pem" --check "$portable" --check daemon
client pass "TLS with --servername localhost" --ca "$c/ca.pem" --servername localhost --check unary
client pass "TLS client trusting another CA is refused" --ca "$c/other-ca.pem" --check rejected
client pass "TLS with a wrong --servername is refused" --ca "$c/ca.pem" \
    --servername wrong.example --check rejected
client pass "plaintext client against TLS server is refused" --check rejected
client '^FAIL identity: peer_identity: expected "node-1", got ""' \
    "no identity without a client certificate" --ca "$c/ca.pem" --check identity

echo "== TLS with an expired server certificate"
start_server --tls "$c/expired-server.pem" "$c/expired-server.key"
client pass "expired server certificate is refused" --ca "$c/ca.pem" --check rejected

echo "== mTLS"
start_server --tls "$c/server.pem" "$c/server.key" --mtls "$c/ca.pem"
client pass "mTLS checks" --ca "$c/ca.pem" --cert "$c/client.pem" --key "$c/client.key" \
    --check "$portable" --check identity --check daemon
client pass "mTLS without a client certificate is refused" --ca "$c/ca.pem" --check rejected
client pass "mTLS with a client certificate from another CA is refused" --ca "$c/ca.pem" \
    --cert "$c/other-client.pem" --key "$c/other-client.key" --check rejected
client pass "mTLS with an expired client certificate is refused" --ca "$c/ca.pem" \
    --cert "$c/expired-client.pem" --key "$c/expired-client.key" --check rejected

stop_server
if [ $failures -eq 0 ]; then
    echo "selftest: all passed"
    exit 0
fi
echo "selftest: $failures failed"
exit 1
