#!/usr/bin/env bash
# node_auth token mode on PostgreSQL (issue 8), with two managers (replicas) sharing one private
# database: both start at once on the empty database (one migrates, neither fails); a real
# ops-daemon enrolls through A with an enrollment token, stores its secret and heartbeats; its
# secret is good at B too (the store is shared); a wrong secret, a revoked, used-up or unknown
# token are refused with UNAUTHENTICATED by either manager and leave the store unchanged; and
# a max_uses 3 token raced by 8 enrollments through both managers enrolls exactly 3 nodes.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/pg.sh"
trap 'rc=$?; pg_stop; cleanup $rc' EXIT
pg_start
ADM=node-auth-pg-admin-token
ADM_SHA=$(printf %s "$ADM" | sha256sum | cut -d' ' -f1)
AH="authorization:Bearer $ADM"
REFUSED=0
h() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
expect_code() {
  local got; got=$(printf '%s\n' "$3" | tail -1 | jq -r .code)
  [ "$got" = "$2" ] || fail "$1: expected $2, got $got ($(printf '%s' "$3" | tail -1))"
}
refused() {
  local name=$1 want=$2; shift 2
  expect_code "$name" "$want" "$(call "$@")"
  REFUSED=$((REFUSED + 1)); echo "  refused as expected ($want): $name"
}
snapshot() {
  pg_psql -c "select node_id, hostname from nodes order by 1" \
          -c "select node_id, sha256 from node_secrets order by 1" \
          -c "select name, uses, revoked_at from enrollment_tokens order by 1"
}

# ---- two managers start at once on the empty database ------------------------------------
PA=$(free_port); PB=$(free_port); A=127.0.0.1:$PA; B=127.0.0.1:$PB
for r in a b; do
  port=$PA; [ $r = b ] && port=$PB
  cat > "$T/$r.yaml" <<YAML
grpc: {host: 127.0.0.1, port: $port}
database: {driver: postgres, dsn: "$PG_DSN"}
node: {heartbeat_interval: 1s, offline_after: 30s}
prometheus: {enabled: false}
node_auth: {mode: token}
admin:
  tokens:
    - {name: root, role: admin, sha256: $ADM_SHA}
YAML
done
"$BIN/ops-manager" --check-config "$T/a.yaml" >/dev/null || fail "token mode on postgres: config refused"
"$BIN/ops-manager" -c "$T/a.yaml" >> "$T/a.log" 2>&1 & PIDS+=($!)
"$BIN/ops-manager" -c "$T/b.yaml" >> "$T/b.log" 2>&1 & PIDS+=($!)
wait_for 20 "$BIN/pbcall" $A grpc.health.v1.Health/Check || fail "manager A did not start"
wait_for 20 "$BIN/pbcall" $B grpc.health.v1.Health/Check || fail "manager B did not start"
expect_eq "$(pg_psql -c 'select version from schema_version')" 3 "schema version"
expect_eq "$(cat "$T/a.log" "$T/b.log" | grep -c "event=store.migrated")" 1 "migrations run (by one of the two)"
pass "two managers started at once on an empty database; one migrated it"

admin() { call --header "$AH" "$1" "ops.admin.v1.AdminService/$2" "$3"; }
new_token() { # MANAGER NAME TTL USES -> the token
  local r; r=$(admin "$1" CreateEnrollmentToken "{\"name\":\"$2\",\"ttl_seconds\":$3,\"max_uses\":$4}")
  expect_code "create token $2" OK "$r"; jget "$r" .response.secret
}
reg() { # MANAGER NODE TOKEN -> RegisterNode answer
  call --header "authorization:Bearer $3" "$1" manager.ManagerService/RegisterNode "{\"node_id\":\"$2\",\"hostname\":\"h-$2\"}"
}

# ---- a real daemon enrolls through A -------------------------------------------------------
DTOK=$(new_token $A daemon 3600 1)
REVOKED=$(new_token $B revoked 3600 5)
expect_code "revoke through A a token made by B" OK "$(admin $A RevokeEnrollmentToken '{"name":"revoked"}')"
expect_code "a duplicate name through B" ALREADY_EXISTS "$(admin $B CreateEnrollmentToken '{"name":"daemon"}')"
expect_eq "$(pg_psql -c "select count(*) from enrollment_tokens where length(sha256) = 64 and sha256 not like 'et1.%'")" 2 "tokens stored as hashes"
printf '%s\n' "$DTOK" > "$T/enroll.token"
GP=$(free_port); HP=$(free_port)
cat > "$T/daemon.yaml" <<YAML
daemon: {id: pg-node-1, work_dir: $T/work, grpc_host: 127.0.0.1, grpc_port: $GP, http_port: $HP}
manager:
  address: $A
  heartbeat_interval: 1s
  reconnect_interval: 1s
  timeout: 3s
  enrollment_token_file: $T/enroll.token
collectors:
  cpu: {interval: 1s}
  memory: {enabled: false}
  disk: {enabled: false}
  network: {enabled: false}
agents:
  - id: idle
    binary_path: /bin/sleep
    args: ["100000"]
YAML
"$BIN/ops-daemon" -c "$T/daemon.yaml" >> "$T/daemon.log" 2>&1 & DPID=$!; PIDS+=($DPID)
wait_for 20 test -s "$T/work/node_secret" || fail "the daemon never stored a secret"
expect_eq "$(stat -c %a "$T/work/node_secret")" 600 "secret file mode"
SECRET=$(cat "$T/work/node_secret")
expect_eq "$(pg_psql -c "select sha256 from node_secrets where node_id='pg-node-1'")" "$(h "$SECRET")" "only the secret's SHA-256 is stored"
wait_for 20 sh -c "grep -c 'event=link.registered' '$T/daemon.log' | grep -qx 1" || fail "the daemon did not register"
wait_for 20 sh -c "[ \"\$(psql -X -At '$PG_DSN' -c \"select count(*) from agents where node_id='pg-node-1' and agent_id='idle'\")\" = 1 ]" \
  || fail "the daemon's sync never arrived"
wait_for 20 sh -c "[ \"\$(psql -X -At '$PG_DSN' -c \"select count(*) from metrics m join metric_nodes n on n.id = m.node_ref where n.node_id='pg-node-1'\")\" != 0 ]" \
  || fail "the daemon's reports never arrived"
sleep 3 # a few heartbeats with the secret
grep -q "event=link.heartbeat_failed" "$T/daemon.log" && fail "a heartbeat failed: $(grep heartbeat_failed "$T/daemon.log" | tail -1)"
expect_eq "$(pg_psql -c "select uses from enrollment_tokens where name='daemon'")" 1 "token uses after enrolling"
SH="authorization:Bearer $SECRET"
expect_code "the daemon's secret heartbeats at A" OK "$(call --header "$SH" $A manager.ManagerService/Heartbeat '{"node_id":"pg-node-1"}')"
expect_code "the daemon's secret heartbeats at B (shared store)" OK "$(call --header "$SH" $B manager.ManagerService/Heartbeat '{"node_id":"pg-node-1"}')"
pass "a real daemon enrolled on PostgreSQL (secret 0600, hash stored), heartbeats, syncs and reports; its secret is good at both managers"

# ---- refused attempts, at both managers ---------------------------------------------------
before=$(snapshot)
WRONG="authorization:Bearer ns1.$(printf '0%.0s' $(seq 64))"
for M in $A $B; do
  refused "$M: Heartbeat with a wrong secret" UNAUTHENTICATED --header "$WRONG" $M manager.ManagerService/Heartbeat '{"node_id":"pg-node-1"}'
  refused "$M: Heartbeat without a secret" UNAUTHENTICATED $M manager.ManagerService/Heartbeat '{"node_id":"pg-node-1"}'
  refused "$M: ReportMetrics with a wrong secret" UNAUTHENTICATED --header "$WRONG" $M manager.ManagerService/ReportMetrics "{\"node_id\":\"pg-node-1\",\"metrics\":[{\"type\":\"cpu\",\"timestamp\":$(date +%s),\"values\":{\"usage\":1}}]}"
  refused "$M: RegisterNode with a revoked token" UNAUTHENTICATED --header "authorization:Bearer $REVOKED" $M manager.ManagerService/RegisterNode '{"node_id":"intruder","hostname":"x"}'
  refused "$M: RegisterNode with the used-up token" UNAUTHENTICATED --header "authorization:Bearer $DTOK" $M manager.ManagerService/RegisterNode '{"node_id":"intruder","hostname":"x"}'
  refused "$M: RegisterNode with an unknown token" UNAUTHENTICATED --header "authorization:Bearer et1.$(printf '0%.0s' $(seq 64))" $M manager.ManagerService/RegisterNode '{"node_id":"intruder","hostname":"x"}'
  refused "$M: RegisterNode over pg-node-1 with the wrong secret" UNAUTHENTICATED --header "$WRONG" $M manager.ManagerService/RegisterNode '{"node_id":"pg-node-1","hostname":"taken-over"}'
done
after=$(snapshot)
[ "$before" = "$after" ] || { diff <(echo "$before") <(echo "$after"); fail "the store changed after refused attempts"; }
expect_eq "$(pg_psql -c "select count(*) from nodes where node_id = 'intruder'")" 0 "no node from a refused call"
pass "$REFUSED refused attempts (wrong secret, revoked / used-up / unknown token) at both managers; store unchanged"

# ---- concurrent enrollments through both managers never exceed max_uses ------------------
RACE=$(new_token $A race 3600 3)
mkdir -p "$T/race"
rp=()
for i in $(seq 8); do
  M=$A; [ $((i % 2)) = 0 ] && M=$B
  reg $M race-$i "$RACE" > "$T/race/$i" & rp+=($!)
done
wait "${rp[@]}"
ok=0
for f in "$T"/race/*; do
  code=$(jq -r .code "$f")
  case $code in OK) ok=$((ok + 1)) ;; UNAUTHENTICATED) ;; *) fail "race: $code ($(cat "$f"))" ;; esac
done
expect_eq "$ok" 3 "enrollments with a max_uses 3 token raced through two managers"
expect_eq "$(pg_psql -c "select uses from enrollment_tokens where name='race'")" 3 "race token uses"
expect_eq "$(pg_psql -c "select count(*) from node_secrets where node_id like 'race-%'")" 3 "secrets of raced nodes"
pass "8 concurrent enrollments through two managers with a max_uses 3 token: exactly 3 enrolled"

# a deleted node loses its secret on PostgreSQL too
expect_code "DeleteNode pg-node-1" OK "$(admin $B DeleteNode '{"node_id":"pg-node-1"}')"
expect_eq "$(pg_psql -c "select count(*) from node_secrets where node_id='pg-node-1'")" 0 "secret of a deleted node"
wait_for 20 grep -q "event=link.secret_refused" "$T/daemon.log" || fail "the daemon never noticed its secret was refused"
kill $DPID; wait $DPID 2>/dev/null || true
pass "a deleted node's secret is gone and refused"
