#!/usr/bin/env bash
# Builds ops into build/ (or $1 with extra cmake args after it). Binaries land in build/bin/.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}; shift || true
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
# The progress lines are dropped; the build's own status is the script's (grep finding nothing
# left to print is not a failure).
set +e
cmake --build "$dir" -j"$(nproc)" -- --no-print-directory 2>&1 | { grep -vE '^\[ *[0-9]+%\]' || true; }
rc=${PIPESTATUS[0]}
set -e
exit "$rc"
