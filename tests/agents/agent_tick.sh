#!/bin/sh
# Test agent: a well-behaved long runner that prints a line every 100 ms.
while :; do echo tick; sleep 0.1; done
