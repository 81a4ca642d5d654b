#!/usr/bin/env bash
# Pushed events end to end with real processes: ops-manager, two ops-daemons (A with its
# DaemonService, B stream_only) and opsctl. publish-config applied (content, .prev, agent
# restarted) and rolled back; publish-update installed with a good signature, refused with a bad
# hash or signature (nothing changed), rolled back when the new version crashes; opsctl events
# showing each outcome; the manager's GetConfig answering the last published config; an agent
# restarted on a stream-only node and on a node whose DaemonService port is closed, through the
# stream; resume after a manager restart with events published while the daemon was away, none
# lost or repeated; the daemon updating itself with its agents keeping their pids.
source "$(dirname "$0")/lib.sh"
command -v jq >/dev/null || fail "jq is required"
command -v openssl >/dev/null || fail "openssl is required"
unset OPS_MANAGER OPS_TOKEN OPS_CA OPS_CERT OPS_KEY
export HOME=$T/home XDG_CONFIG_HOME=$T/xdg COLUMNS=160 TZ=UTC
mkdir -p "$HOME" "$XDG_CONFIG_HOME"

MP=$(free_port); M=127.0.0.1:$MP
VIEW=view-$RANDOM$RANDOM; OPER=oper-$RANDOM$RANDOM; ADMT=admin-$RANDOM$RANDOM
h() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
cat > "$T/manager.yaml" <<YAML
grpc: {host: 127.0.0.1, port: $MP}
database: {driver: sqlite, dsn: $T/ops.db}
node: {heartbeat_interval: 1s, offline_after: 5s}
prometheus: {enabled: false}
admin:
  tokens:
    - {name: vera, role: viewer, sha256: $(h $VIEW)}
    - {name: otto, role: operator, sha256: $(h $OPER)}
    - {name: ada, role: admin, sha256: $(h $ADMT)}
YAML
start_manager() {
  "$BIN/ops-manager" -c "$T/manager.yaml" >> "$T/manager.log" 2>&1 &
  MPID=$!; PIDS+=($MPID)
  wait_for 10 "$BIN/pbcall" $M grpc.health.v1.Health/Check || fail "manager did not start"
}
start_manager

openssl genpkey -algorithm ed25519 -out "$T/priv.pem" 2>/dev/null
openssl pkey -in "$T/priv.pem" -pubout -out "$T/pub.pem" 2>/dev/null
openssl genpkey -algorithm ed25519 -out "$T/other.pem" 2>/dev/null
sign() { openssl pkeyutl -sign -inkey "$2" -rawin -in "$1" -out "$3"; }

# Agents: web fails to start when its config says "fail"; app is the binary we update.
printf '#!/bin/sh\nif grep -q fail "$1"; then exit 3; fi\nwhile :; do sleep 0.2; done\n' > "$T/web.sh"
printf '#!/bin/sh\n# app v1\nwhile :; do sleep 0.2; done\n' > "$T/app"
printf '#!/bin/sh\necho $$ > %s/idle.pid\nexec sleep 100000\n' "$T" > "$T/idle.sh"
chmod +x "$T/web.sh" "$T/app" "$T/idle.sh"
echo "mode: ok" > "$T/web.conf"
# Daemon A runs from a copy: a self-update replaces the binary it runs from.
cp "$BIN/ops-daemon" "$T/ops-daemon"
daemon_yaml() { # NAME GRPC_PORT HTTP_PORT EXTRA_MANAGER_LINE AGENTS
  cat > "$T/$1.yaml" <<YAML
daemon:
  id: node-$1
  work_dir: $T/work-$1
  log_file: $T/daemon-$1.log
  grpc_host: 127.0.0.1
  grpc_port: $2
  http_host: 127.0.0.1
  http_port: $3
  stop_grace: 2s
manager:
  address: $M
  heartbeat_interval: 1s
  reconnect_interval: 500ms
  timeout: 5s
  $4
updates:
  public_key: $T/pub.pem
  keep_versions: 2
  rollback_window: 1s
prometheus: {enabled: false}
collectors:
  disk: {enabled: false}
  network: {enabled: false}
agents:
$5
YAML
}
daemon_yaml a "$(free_port)" "$(free_port)" "" "  - id: web
    binary_path: $T/web.sh
    args: [\"$T/web.conf\"]
    config_file: $T/web.conf
    restart: {backoff_base: 100ms, backoff_max: 200ms}
  - id: app
    binary_path: $T/app
    restart: {backoff_base: 100ms, backoff_max: 200ms}"
daemon_yaml b "$(free_port)" "$(free_port)" "stream_only: true" "  - id: idle
    binary_path: $T/idle.sh"
start_daemon() { # NAME EXE
  "$2" -c "$T/$1.yaml" >> "$T/daemon-$1.out" 2>&1 &
  PIDS+=($!)
  eval "DPID_$1=$!"
}
start_daemon a "$T/ops-daemon"
start_daemon b "$BIN/ops-daemon"
A=node-a; B=node-b

ctl() { # sets OUT, ERR, RC
  set +e
  OUT=$("$BIN/opsctl" --manager $M --token "$OPER" "$@" 2>"$T/ctl.err")
  RC=$?
  set -e
  ERR=$(cat "$T/ctl.err")
}
ok_ctl() { ctl "$@"; [ "$RC" = 0 ] || fail "opsctl $*: exit $RC: $OUT $ERR"; }
has() { grep -qF -- "$2" <<<"$1" || fail "$3: expected '$2' in: ${1:0:1500}"; }
subscribed() { [ "$(grep -c "event=update.subscribed node=$1 " "$T/manager.log")" -ge "${2:-1}" ]; }
wait_for 20 subscribed $A || fail "daemon A never subscribed"
wait_for 20 subscribed $B || fail "daemon B never subscribed"
agent_pid() { ok_ctl -o json agents "$1"; jq -r ".agents[] | select(.id==\"$2\") | .pid" <<<"$OUT"; }
agent_running() { ctl -o json agents "$1"; [ "$(jq -r ".agents[] | select(.id==\"$2\") | .status" <<<"$OUT")" = running ]; }
wait_for 15 agent_running $A web || fail "web not running"
wait_for 15 agent_running $A app || fail "app not running"
wait_for 10 test -s "$T/idle.pid" || fail "idle on B not started"
pass "manager, daemon A and stream-only daemon B up"

# published EVENT_JSON_OUT -> the event id of the only node
event_id() { jq -r '.events[0].event_id' <<<"$OUT"; }
outcome() { ctl -o json event "$1"; jq -r '.outcome // ""' <<<"$OUT"; }
has_outcome() { [ -n "$(outcome "$1")" ]; }
expect_outcome() { # ID EXPECTED WHAT
  wait_for 30 has_outcome "$1" || fail "$3: no result for event $1"
  local got; got=$(outcome "$1")
  [ "$got" = "$2" ] || fail "$3: outcome $got, expected $2 ($(jq -r .message <<<"$OUT"))"
}

# --- validation and roles -------------------------------------------------------------------
P() { call --header "authorization: Bearer $1" $M "ops.admin.v1.AdminService/$2" "$3"; }
code() { jq -r .code <<<"$1"; }
OUT=$(P $OPER PublishConfig '{"agent_id":"web","config":"eA=="}'); expect_eq "$(code "$OUT")" INVALID_ARGUMENT "no target"
has "$OUT" "target" "no-target message"
OUT=$(P $OPER PublishConfig '{"target":{"node_ids":["ghost"]},"agent_id":"web"}'); expect_eq "$(code "$OUT")" NOT_FOUND "unknown node"
OUT=$(P $OPER PublishConfig '{"target":{"labels":{"env":"nowhere"}},"agent_id":"web"}'); expect_eq "$(code "$OUT")" FAILED_PRECONDITION "no label match"
OUT=$(P $OPER PublishConfig "{\"target\":{\"node_ids\":[\"$A\"]}}"); expect_eq "$(code "$OUT")" INVALID_ARGUMENT "no agent_id"; has "$OUT" agent_id "agent_id message"
SIG64=$(printf 'x%.0s' $(seq 64)) # pbcall: bytes fields as plain strings
OUT=$(P $OPER PublishUpdate "{\"target\":{\"all\":true},\"component\":\"kernel\",\"version\":\"1\"}"); expect_eq "$(code "$OUT")" INVALID_ARGUMENT "bad component"; has "$OUT" component "component message"
OUT=$(P $OPER PublishUpdate "{\"target\":{\"all\":true},\"component\":\"daemon\",\"version\":\"1\",\"hash_sha256\":\"abc\",\"signature\":\"$SIG64\",\"download_url\":\"file:///x\"}"); expect_eq "$(code "$OUT")" INVALID_ARGUMENT "short hash"; has "$OUT" hash_sha256 "hash message"
HEX=$(printf x | sha256sum | cut -d' ' -f1)
OUT=$(P $OPER PublishUpdate "{\"target\":{\"all\":true},\"component\":\"daemon\",\"version\":\"1\",\"hash_sha256\":\"$HEX\",\"signature\":\"eA==\",\"download_url\":\"file:///x\"}"); expect_eq "$(code "$OUT")" INVALID_ARGUMENT "short signature"; has "$OUT" signature "signature message"
OUT=$(P $OPER PublishUpdate "{\"target\":{\"all\":true},\"component\":\"daemon\",\"version\":\"1\",\"hash_sha256\":\"$HEX\",\"signature\":\"$SIG64\"}"); expect_eq "$(code "$OUT")" INVALID_ARGUMENT "no package"; has "$OUT" "package" "package message"
OUT=$(P $VIEW PublishConfig "{\"target\":{\"all\":true},\"agent_id\":\"web\"}"); expect_eq "$(code "$OUT")" PERMISSION_DENIED "viewer publish"
ctl events; [ "$RC" = 0 ] || fail "events: $ERR"
has "$ERR" "no events" "nothing was published by the refused calls"
OUT=$(call $M proto.DaemonService/GetConfig "{\"node_id\":\"$A\",\"config_type\":\"agent\",\"agent_id\":\"web\"}")
expect_eq "$(code "$OUT")" NOT_FOUND "GetConfig before any publish"
pass "validation names the field; viewer refused; nothing published"

# --- publish-config: applied, then rolled back ---------------------------------------------
PID0=$(agent_pid $A web)
printf 'mode: new\n' > "$T/new.conf"
ok_ctl -o json publish-config $A --agent web --file "$T/new.conf"; E1=$(event_id)
expect_outcome "$E1" applied "config change"
cmp -s "$T/web.conf" "$T/new.conf" || fail "web.conf not replaced: $(cat "$T/web.conf")"
[ "$(cat "$T/web.conf.prev")" = "mode: ok" ] || fail "web.conf.prev is not the old config"
wait_for 10 agent_running $A web || fail "web not running after the change"
[ "$(agent_pid $A web)" != "$PID0" ] || fail "web was not restarted"
OUT=$(call $M proto.DaemonService/GetConfig "{\"node_id\":\"$A\",\"config_type\":\"agent\",\"agent_id\":\"web\"}")
expect_eq "$(jq -r .response.config_data <<<"$OUT")" "mode: new" "GetConfig answers the published config"
pass "publish-config applied (content, .prev kept, agent restarted, GetConfig pulls it)"

printf 'mode: fail\n' > "$T/bad.conf"
ok_ctl -o json publish-config $A --agent web --file "$T/bad.conf"; E2=$(event_id)
expect_outcome "$E2" rolled_back "failing config"
cmp -s "$T/web.conf" "$T/new.conf" || fail "web.conf not rolled back: $(cat "$T/web.conf")"
wait_for 10 agent_running $A web || fail "web not running after the rollback"
pass "failing config rolled back"

# --- publish-update --------------------------------------------------------------------------
printf '#!/bin/sh\n# app v2\nwhile :; do sleep 0.2; done\n' > "$T/app-v2"
sign "$T/app-v2" "$T/priv.pem" "$T/app-v2.sig"
SHA2=$(sha256sum "$T/app-v2" | cut -d' ' -f1)
APID=$(agent_pid $A app); cp "$T/app" "$T/app.before"
# bad hash (the hash of something else) and bad signature (another key): nothing changes
ok_ctl -o json publish-update $A --component agent --agent app --version 2.0 --package "$T/app-v2" --sha256 "$HEX" --signature-file "$T/app-v2.sig"; E3=$(event_id)
expect_outcome "$E3" refused "bad hash"
sign "$T/app-v2" "$T/other.pem" "$T/app-v2.badsig"
ok_ctl -o json publish-update $A --component agent --agent app --version 2.0 --url "file://$T/app-v2" --sha256 "$SHA2" --signature-file "$T/app-v2.badsig"; E4=$(event_id)
expect_outcome "$E4" refused "bad signature"
cmp -s "$T/app" "$T/app.before" || fail "app binary changed by a refused update"
expect_eq "$(agent_pid $A app)" "$APID" "app pid after refused updates"
pass "bad hash and bad signature refused, binary and pid unchanged"

ok_ctl -o json publish-update $A --component agent --agent app --version 2.0 --url "file://$T/app-v2" --sha256 "$SHA2" --signature-file "$T/app-v2.sig"; E5=$(event_id)
expect_outcome "$E5" applied "good update"
cmp -s "$T/app" "$T/app-v2" || fail "app binary not replaced"
wait_for 10 agent_running $A app || fail "app v2 not running"
printf '#!/bin/sh\n# app v3 crashes\nexit 1\n' > "$T/app-v3"
sign "$T/app-v3" "$T/priv.pem" "$T/app-v3.sig"
ok_ctl -o json publish-update $A --component agent --agent app --version 3.0 --package "$T/app-v3" --sha256 "$(sha256sum "$T/app-v3" | cut -d' ' -f1)" --signature-file "$T/app-v3.sig"; E6=$(event_id)
expect_outcome "$E6" rolled_back "crashing version"
cmp -s "$T/app" "$T/app-v2" || fail "app not rolled back to v2"
wait_for 10 agent_running $A app || fail "app not running after the rollback"
pass "good update installed; crashing version rolled back"

ok_ctl events $A
for e in "$E1 .*applied" "$E2 .*rolled_back" "$E3 .*refused" "$E4 .*refused" "$E5 .*applied" "$E6 .*rolled_back"; do
  grep -Eq "^ *$e" <<<"$OUT" || fail "opsctl events lacks '$e': $OUT"
done
ok_ctl events $A --pending; has "$ERR" "no pending events" "nothing pending"
ok_ctl event "$E3"; has "$OUT" "refused" "event E3"; has "$OUT" "SHA-256" "event E3 detail"
pass "opsctl events shows each outcome"

# --- OperateAgent through the stream ----------------------------------------------------------
IDLE0=$(cat "$T/idle.pid")
ok_ctl agent restart $B idle
has "$OUT" "through its update stream" "stream-only restart"
wait_for 10 test "$(cat "$T/idle.pid")" != "$IDLE0" || fail "idle not restarted on B"
ok_ctl -o json agent restart $B idle; expect_eq "$(jq -r .via <<<"$OUT")" stream "via"
ctl agent restart $B ghost; expect_eq "$RC" 1 "unknown agent through the stream"; has "$ERR" "ghost" "unknown agent message"
ok_ctl agent restart $A web; [[ "$OUT" != *"update stream"* ]] || fail "reachable node went through the stream"
# A's DaemonService port closed: the pool fails UNAVAILABLE, the stream still works.
CLOSED=$(free_port)
call $M manager.ManagerService/RegisterNode "{\"node_id\":\"$A\",\"hostname\":\"a\",\"daemon_address\":\"127.0.0.1:$CLOSED\"}" >/dev/null
ok_ctl -o json agent restart $A web; expect_eq "$(jq -r .via <<<"$OUT")" stream "closed port: via"
pass "agent restarted through the stream (stream-only node; node with a closed port)"

# --- resume after a manager restart -------------------------------------------------------------
kill -TERM "$DPID_a"; wait "$DPID_a" 2>/dev/null || true
kill -TERM "$MPID"; wait "$MPID" 2>/dev/null || true
start_manager
printf 'mode: r1\n' > "$T/r1.conf"; printf 'mode: r2\n' > "$T/r2.conf"
ok_ctl -o json publish-config $A --agent web --file "$T/r1.conf"; R1=$(event_id)
ok_ctl -o json publish-config $A --agent web --file "$T/r2.conf"; R2=$(event_id)
ok_ctl events $A --pending; has "$OUT" "$R1" "R1 pending"
start_daemon a "$T/ops-daemon"
expect_outcome "$R2" applied "event published while the stream was down"
expect_outcome "$R1" applied "first event published while the stream was down"
cmp -s "$T/web.conf" "$T/r2.conf" || fail "web.conf is not the last config"
for e in $E1 $E2 $E5 $E6 $R1 $R2; do
  n=$(grep -c "event=update.received node=$A event_id=$e " "$T/daemon-a.log" || true)
  expect_eq "$n" 1 "times event $e was received"
done
grep -q "event=update.duplicate" "$T/daemon-a.log" && fail "a duplicate event reached the daemon"
pass "resume after a manager restart: $R1 and $R2 applied once, nothing earlier repeated"

# --- daemon self-update ------------------------------------------------------------------------
wait_for 15 agent_running $A web || fail "web not running"
WPID=$(agent_pid $A web); APID=$(agent_pid $A app); DPID=$DPID_a
INODE0=$(stat -c %i "$T/ops-daemon")
STARTS0=$(grep -c "event=update.started" "$T/daemon-a.log")
cp "$BIN/ops-daemon" "$T/daemon-pkg"; printf 'ops-self-update-test' >> "$T/daemon-pkg"
sign "$T/daemon-pkg" "$T/priv.pem" "$T/daemon-pkg.sig"
ok_ctl -o json publish-update $A --component daemon --version 9.9.9 --package "$T/daemon-pkg" --sha256 "$(sha256sum "$T/daemon-pkg" | cut -d' ' -f1)" --signature-file "$T/daemon-pkg.sig"; E7=$(event_id)
expect_outcome "$E7" applied "daemon self-update"
wait_for 20 grep -q "event=daemon.reexec" "$T/daemon-a.log" || fail "no re-exec in the daemon log"
restarted() { [ "$(grep -c "event=update.started" "$T/daemon-a.log")" -gt "$STARTS0" ]; }
wait_for 20 restarted || fail "the daemon did not come back after the re-exec"
cmp -s "$T/ops-daemon" "$T/daemon-pkg" || fail "daemon binary not replaced"
[ "$(stat -c %i "$T/ops-daemon")" != "$INODE0" ] || fail "daemon binary inode unchanged"
kill -0 "$DPID" || fail "daemon process gone after the re-exec"
[ "$(readlink /proc/$DPID/exe)" = "$T/ops-daemon" ] || fail "daemon exe is $(readlink /proc/$DPID/exe)"
wait_for 20 agent_running $A web || fail "web not running after the self-update"
expect_eq "$(agent_pid $A web)" "$WPID" "web pid across the daemon self-update"
expect_eq "$(agent_pid $A app)" "$APID" "app pid across the daemon self-update"
n=$(grep -c "event=update.received node=$A event_id=$E7 " "$T/daemon-a.log" || true)
expect_eq "$n" 1 "times the self-update event was received"
pass "daemon self-update: re-exec of the new binary (pid $DPID), agents kept pids $WPID/$APID"

ADM=$(call --header "authorization: Bearer $ADMT" $M ops.admin.v1.AdminService/ListAudit '{"limit":100}')
for m in PublishConfig PublishUpdate OperateAgent; do
  jq -e ".response.records[] | select(.method==\"$m\" and .actor==\"otto\")" <<<"$ADM" >/dev/null || fail "no audit record of $m"
done
jq -e '.response.records[] | select(.method=="PublishConfig" and .result=="PERMISSION_DENIED")' <<<"$ADM" >/dev/null || fail "refused publish not audited"
pass "audit records for publishing"
