#!/usr/bin/env bash
# Builds the libFuzzer harnesses with clang (ASan + UBSan) into build-fuzz/ and runs each for
# SECONDS (default 20), starting from tests/fuzz/corpus/. A crash, leak or sanitizer report
# fails the run and leaves the reproducer in build-fuzz/fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
CC=clang CXX=clang++ bash scripts/build.sh build-fuzz -DOPS_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0}
rc=0
for t in config units spool verify requests pbjson; do
  work=build-fuzz/corpus-$t; mkdir -p "$work"
  echo "=== fuzz_$t for ${secs}s"
  log=build-fuzz/fuzz_$t.log
  if (cd build-fuzz/fuzz && ./fuzz_$t -max_total_time="$secs" -max_len=8192 -print_final_stats=1 \
        "../../$work" "../../tests/fuzz/corpus/$t") >"$log" 2>&1; then
    echo "fuzz_$t: ok, $(sed -n 's/^stat::number_of_executed_units: *//p' "$log") inputs"
  else
    rc=1
    echo "fuzz_$t: FAILED"; grep -E "^(==[0-9]+==|SUMMARY|.*runtime error)" "$log" | head -20
  fi
done
ls build-fuzz/fuzz/crash-* build-fuzz/fuzz/leak-* 2>/dev/null && rc=1
exit $rc
