#!/bin/sh
# Test agent: starts a grandchild, writes its pid to "$1", and waits for it.
sleep 1000 &
echo $! > "$1.tmp" && mv "$1.tmp" "$1"
wait
