# A private PostgreSQL for tests (sourced, not run): pg_start initdb's a cluster into a temp dir
# and runs it on a unix socket in that dir plus a free loopback port; pg_stop stops it and
# removes the dir. Uses Debian's postgresql 15 binaries. initdb refuses to run as root, so as
# root (CI) the server runs as the package's `postgres` user. fsync is off: test data need not
# survive a power cut, and it makes the suite fast (PG_FSYNC=on before pg_start keeps it, for
# benchmarks).
#
# After pg_start: PG_DIR, PG_PORT, PG_SOCK (socket dir), PG_DSN (a libpq connection string),
# pg_psql ARGS... runs psql on it, pg_restart restarts the server (-m fast).
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

pg__as() { # run a command as the server's user
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg__opts() {
  local o="-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$PG_SOCK -c max_connections=200"
  [ "${PG_FSYNC:-off}" = off ] && o="$o -c fsync=off -c full_page_writes=off"
  echo "$o"
}

pg_start() {
  [ -x "$PG_BIN/initdb" ] || { echo "pg.sh: $PG_BIN/initdb missing (apt-get install postgresql)"; return 1; }
  PG_DIR=$(mktemp -d /tmp/ops-pg.XXXXXX)
  chmod 755 "$PG_DIR"
  [ "$(id -u)" = 0 ] && chown postgres: "$PG_DIR"
  PG_PORT=""
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 12000)) # below the ephemeral range: a client socket cannot hold it across pg_restart
    if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then PG_PORT=$p; break; fi
  done
  [ -n "$PG_PORT" ] || { echo "pg.sh: no free port"; return 1; }
  pg__as "$PG_BIN/initdb" -D "$PG_DIR/data" -U ops -A trust -E UTF8 --locale=C.UTF-8 \
    > "$PG_DIR/initdb.log" 2>&1 || { cat "$PG_DIR/initdb.log"; return 1; }
  PG_SOCK=$PG_DIR
  pg__as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 30 \
    -o "$(pg__opts)" start > /dev/null || { cat "$PG_DIR/server.log"; return 1; }
  PG_DSN="host=$PG_SOCK port=$PG_PORT user=ops dbname=postgres"
  export PG_DIR PG_PORT PG_SOCK PG_DSN
}

pg_psql() { psql -X -q -At -v ON_ERROR_STOP=1 "$PG_DSN" "$@"; }

pg_restart() {
  pg__as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 60 restart \
    -o "$(pg__opts)" -l "$PG_DIR/server.log" > /dev/null && return 0
  echo "pg.sh: restart failed; server log:"; tail -n 30 "$PG_DIR/server.log"
  return 1
}

pg_stop() {
  [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR/data" ] || return 0
  pg__as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop > /dev/null 2>&1 || true
  rm -rf "$PG_DIR"
  PG_DIR=""
}
