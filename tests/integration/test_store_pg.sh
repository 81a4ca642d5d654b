#!/usr/bin/env bash
# The store's test suites (build/tests/test_store_sqlite, and test_node_secrets: node secrets
# and enrollment tokens) on a private PostgreSQL, including the server restarted while threads
# ingest.
set -euo pipefail
source "$(dirname "$0")/pg.sh"
BUILD=${OPS_BUILD_DIR:?set by ctest}
trap pg_stop EXIT
pg_start
export OPS_TEST_STORE_DRIVER=postgres OPS_TEST_STORE_DSN="$PG_DSN"
export OPS_TEST_PG_RESTART="bash -c 'source $(cd "$(dirname "$0")" && pwd)/pg.sh; PG_DIR=$PG_DIR PG_PORT=$PG_PORT PG_SOCK=$PG_SOCK pg_restart'"
"$BUILD/tests/test_store_sqlite"
"$BUILD/tests/test_node_secrets"
