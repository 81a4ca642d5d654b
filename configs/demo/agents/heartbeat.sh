#!/bin/sh
# Demo agent: reports itself to the daemon's heartbeat endpoint every 5 s, as a real agent
# would (POST /heartbeat with JSON), so its last_heartbeat shows up in the fleet.
: "${OPS_DAEMON_HTTP:=127.0.0.1:8084}"
while true; do
  curl -s -o /dev/null -X POST "http://$OPS_DAEMON_HTTP/heartbeat" \
    -H 'Content-Type: application/json' \
    -d "{\"agent_id\":\"heartbeat\",\"pid\":$$,\"status\":\"running\",\"timestamp\":$(date +%s)}" || true
  sleep 5
done
