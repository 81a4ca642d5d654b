#!/bin/sh
# Test agent: writes "$1" lines of 50 bytes to stdout, then idles.
i=0
while [ "$i" -lt "$1" ]; do
    printf 'line %06d xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n' "$i"
    i=$((i + 1))
done
while :; do sleep 0.2; done
