#!/usr/bin/env bash
# Installs the Debian packages (and the npm packages of the interop tests) that building and
# testing ops needs. Idempotent and quick when everything is present. Needs root (or sudo) only
# when something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(
  build-essential cmake pkg-config clang libclang-rt-14-dev   # clang + libFuzzer for scripts/fuzz.sh
  libgrpc-dev protobuf-c-compiler libprotobuf-c-dev   # gRPC C core + protobuf-c messages
  libcyaml-dev                                         # YAML config files
  libjansson-dev                                       # JSON (agent heartbeats, opsctl -o json)
  libmicrohttpd-dev                                    # the daemon's agent-heartbeat HTTP endpoint
  libsqlite3-dev sqlite3 libpq-dev postgresql          # manager stores (sqlite3 CLI: test checks)
  uuid-dev libssl-dev openssl                          # node ids, TLS certificates, signatures
  libcurl4-openssl-dev                                 # the daemon downloads update packages (http/https)
  libcmocka-dev                                        # unit tests
  libsystemd-dev                                       # sd_notify: Type=notify units, watchdog
  dpkg-dev man-db systemd                              # packaging: dpkg-shlibdeps, man --warnings, systemd-analyze
  nghttp2-client procps iproute2 curl jq               # h2load benchmark, process tools, HTTP/JSON checks in test scripts
  python3 python3-prometheus-client                    # test_prometheus: an independent parser of /metrics
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js for the grpc-js interop peers (tests only): Debian's, unless a node is already here
# (an image may ship its own build, which Debian's npm package would conflict with).
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# grpc-js for the interop tests, at the versions in the lock file.
if [ -f tests/interop/package-lock.json ]; then
  if [ ! -d tests/interop/node_modules/@grpc/grpc-js ] || [ tests/interop/package-lock.json -nt tests/interop/node_modules/.package-lock.json ]; then
    echo "deps: npm ci in tests/interop" >&2
    (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
fi
