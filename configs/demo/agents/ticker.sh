#!/bin/sh
# Demo agent: writes a line every two seconds (captured into its work_dir/logs by the daemon).
n=0
while true; do
  n=$((n + 1))
  echo "tick $n $(date -u +%H:%M:%S)"
  sleep 2
done
