#!/bin/sh
# Test agent: writes "$1" lines of 50 bytes to stdout in one write (cat copies the prepared
# file in one block), so that a log rotation, which may come at any resource sample, sees all
# of them or none; then idles.
tmp=$(mktemp)
awk -v n="$1" 'BEGIN { for (i = 0; i < n; i++) printf "line %06d xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n", i }' > "$tmp"
cat "$tmp"
rm -f "$tmp"
while :; do sleep 0.2; done
