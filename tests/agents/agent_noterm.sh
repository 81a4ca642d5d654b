#!/bin/sh
# Test agent: ignores SIGTERM (and so do the sleeps it starts), so only SIGKILL ends it.
trap '' TERM
while :; do sleep 0.1; done
