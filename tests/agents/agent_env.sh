#!/bin/sh
# Test agent: shows its environment and directory on stdout, a line on stderr, then idles.
echo "var=$OPS_TEST_VAR pwd=$(pwd)"
echo "err-line" >&2
while :; do sleep 0.2; done
