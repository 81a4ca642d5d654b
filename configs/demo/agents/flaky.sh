#!/bin/sh
# Demo agent: crashes after 20 to 40 seconds, so the daemon's restart-with-backoff shows.
sleep $((20 + $$ % 20))
echo "flaky: crashing on purpose" >&2
exit 1
