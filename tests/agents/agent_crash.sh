#!/bin/sh
# Test agent: records its start time (ns) in "$1" when given, then fails at once.
[ -n "$1" ] && date +%s%N >> "$1"
exit 1
