#!/usr/bin/env bash
# Metric ingest into PostgreSQL versus SQLite with the same load: store_bench (64 threads, each
# a node sending reports of 4 types x 10 values, each committed before the next) against a
# fresh SQLite file and a fresh PostgreSQL database, 3 runs each, interleaved; medians and the
# ratio at the end. PostgreSQL runs privately (tests/integration/pg.sh) with its defaults for
# durability (fsync on, synchronous_commit on) and, as a second series, with fsync off.
# usage: bash bench/store_pg.sh [threads] [reports_per_thread]
BENCH_NEEDS=store_bench
source "$(dirname "$0")/lib.sh"
source tests/integration/pg.sh
THREADS=${1:-64}
REPORTS=${2:-300}
bench_extra_cleanup() { pg_stop; }
machine
run() { # label, store_bench args...
  local label=$1; shift
  local out
  out=$("$BIN/store_bench" -t "$THREADS" -r "$REPORTS" "$@" 2>&1 | grep -v '^ts=')
  echo "$out" | sed "s/^/[$label] /"
  echo "$out" | awk -v l="$label" '/^values\/s:/ {print l, $2}' >> "$BT/vps"
}
for fs in on off; do
  PG_FSYNC=$fs pg_start
  for i in 1 2 3; do
    pg_psql -c "CREATE DATABASE b$i" >/dev/null
    run "postgres-fsync-$fs" -p "host=$PG_SOCK port=$PG_PORT user=ops dbname=b$i"
    [ $fs = on ] && run sqlite -d "$(mktemp -d "$BT/sq.XXXXXX")"
  done
  pg_stop
done
echo "# medians of 3 runs (values/s), $THREADS threads x $REPORTS reports x 40 values:"
for l in sqlite postgres-fsync-on postgres-fsync-off; do
  echo "$l $(awk -v l="$l" '$1 == l {print $2}' "$BT/vps" | median)"
done | tee "$BT/med"
awk '{m[$1]=$2} END {printf "# ratio postgres(fsync on)/sqlite: %.2f  postgres(fsync off)/sqlite: %.2f\n", m["postgres-fsync-on"]/m["sqlite"], m["postgres-fsync-off"]/m["sqlite"]}' "$BT/med"
