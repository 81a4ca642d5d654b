#!/usr/bin/env bash
# test_manager.sh with the manager on a private PostgreSQL instead of a SQLite file.
OPS_TEST_STORE_DRIVER=postgres exec bash "$(dirname "$0")/test_manager.sh"
