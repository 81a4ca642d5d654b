#!/bin/sh
# Test agent: runs forever without writing anything (survives its daemon losing the pipes).
while :; do sleep 0.2; done
