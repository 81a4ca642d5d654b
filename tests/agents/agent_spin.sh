#!/bin/sh
# Test agent: burns a whole core.
while :; do :; done
