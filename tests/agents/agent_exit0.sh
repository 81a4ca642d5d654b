#!/bin/sh
# Test agent: runs for "$1" seconds, then exits cleanly.
sleep "$1"
exit 0
