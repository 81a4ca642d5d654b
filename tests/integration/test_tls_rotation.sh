#!/usr/bin/env bash
# Certificate rotation on a real ops-manager and ops-daemon: new certificate files (same CA, a
# new serial) and SIGHUP; an established stream (WatchEvents) keeps working across the
# rotation; a new connection sees the new certificate (serial read with openssl s_client); an
# expired certificate on reload is refused with a log line naming the file and the dates and
# the previous one stays in use; an expired certificate at start stops the program with the
# same message; the daemon's DaemonService rotates the same way.
source "$(dirname "$0")/lib.sh"
command -v jq >/dev/null || fail "jq is required"
C=$T/certs
bash "$SRC/tests/support/gen-certs.sh" "$C" || fail "gen-certs"

# leaf NAME: a fresh localhost server certificate from the test CA, with a new serial.
leaf() {
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/$1.key" 2>/dev/null
  openssl req -new -sha256 -key "$T/$1.key" -subj "/CN=localhost" -out "$T/$1.csr" 2>/dev/null
  printf '%s\n' "extendedKeyUsage = serverAuth, clientAuth" "subjectAltName = DNS:localhost, IP:127.0.0.1" > "$T/$1.ext"
  openssl x509 -req -sha256 -days 30 -set_serial 0x$(openssl rand -hex 8) -in "$T/$1.csr" -CA "$C/ca.pem" -CAkey "$C/ca.key" \
    -extfile "$T/$1.ext" -out "$T/$1.pem" 2>/dev/null
}
# install NAME DIR: key first, then the certificate, each by rename (what a careful deploy does).
install_pair() {
  cp "$T/$1.key" "$2/tls.key.new" && mv -f "$2/tls.key.new" "$2/tls.key"
  cp "$T/$1.pem" "$2/tls.pem.new" && mv -f "$2/tls.pem.new" "$2/tls.pem"
}
serial_of_file() { openssl x509 -noout -serial -in "$1" | cut -d= -f2; }
# serial_seen PORT: the serial a new TLS connection is shown.
serial_seen() {
  openssl s_client -connect 127.0.0.1:$1 -alpn h2 -CAfile "$C/ca.pem" </dev/null 2>/dev/null |
    openssl x509 -noout -serial 2>/dev/null | cut -d= -f2
}

mkdir -p "$T/mtls" "$T/dtls"
leaf m1; leaf m2; leaf d1; leaf d2
install_pair m1 "$T/mtls"; install_pair d1 "$T/dtls"
MP=$(free_port); GP=$(free_port); HP=$(free_port)
M=127.0.0.1:$MP; D=127.0.0.1:$GP
ADMT=admin-$RANDOM$RANDOM
DTOKEN=dtok-$RANDOM$RANDOM
h() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
cat > "$T/manager.yaml" <<YAML
grpc:
  host: 127.0.0.1
  port: $MP
  tls: {enabled: true, cert_file: $T/mtls/tls.pem, key_file: $T/mtls/tls.key, ca_file: $C/ca.pem}
database: {driver: sqlite, dsn: $T/ops.db}
prometheus: {enabled: false}
admin:
  tokens:
    - {name: ada, role: admin, sha256: $(h $ADMT)}
daemons: {token: $DTOKEN}
YAML
"$BIN/ops-manager" -c "$T/manager.yaml" >> "$T/manager.log" 2>&1 &
MPID=$!; PIDS+=($MPID)
wait_for 10 "$BIN/pbcall" --ca "$C/ca.pem" $M grpc.health.v1.Health/Check || fail "manager did not start"
expect_eq "$(serial_seen $MP)" "$(serial_of_file "$T/m1.pem")" "serial before rotation"

# An established stream: WatchEvents, two events wanted, one before and one after rotation.
reg() { call --ca "$C/ca.pem" $M manager.ManagerService/RegisterNode "{\"node_id\":\"$1\",\"hostname\":\"h\"}"; }
"$BIN/pbcall" --ca "$C/ca.pem" --header "authorization: Bearer $ADMT" --max 2 $M ops.admin.v1.AdminService/WatchEvents \
  '{"kinds":["node.registered"]}' > "$T/watch.out" 2>&1 &
WPID=$!; PIDS+=($WPID)
first() { reg node-a >/dev/null; grep -q '"node-a"' "$T/watch.out"; }
wait_for 10 first || fail "watch stream saw no first event: $(cat "$T/watch.out")"

install_pair m2 "$T/mtls"
kill -HUP $MPID
wait_for 10 grep -q "event=rpc.tls_reloaded server=manager" "$T/manager.log" || fail "no reload line"
expect_eq "$(serial_seen $MP)" "$(serial_of_file "$T/m2.pem")" "serial seen by a new connection after rotation"
kill -0 $WPID 2>/dev/null || fail "the stream ended at the rotation: $(cat "$T/watch.out")"
expect_eq "$(jget "$(reg node-b)" .code)" OK "RegisterNode on a new connection"
wait_for 10 bash -c "! kill -0 $WPID 2>/dev/null" || fail "stream did not get the second event"
grep -q '"node-b"' "$T/watch.out" || fail "second event missing: $(cat "$T/watch.out")"
expect_eq "$(tail -1 "$T/watch.out" | jq -r .code)" OK "stream end"
pass "manager: rotated on SIGHUP; the open stream got its event after rotation; new connections see serial $(serial_of_file "$T/m2.pem")"

# Expired certificate on reload: refused, named, the current one stays.
cp "$C/expired-server.key" "$T/mtls/tls.key"; cp "$C/expired-server.pem" "$T/mtls/tls.pem"
kill -HUP $MPID
wait_for 10 grep -q "event=rpc.tls_reload_refused server=manager" "$T/manager.log" || fail "expired cert not refused"
LINE=$(grep "event=rpc.tls_reload_refused" "$T/manager.log" | tail -1)
echo "$LINE" | grep -q "$T/mtls/tls.pem: certificate expired on Feb  1 00:00:00 2020 GMT (valid from Jan  1 00:00:00 2020 GMT)" ||
  fail "refusal line: $LINE"
expect_eq "$(serial_seen $MP)" "$(serial_of_file "$T/m2.pem")" "serial after a refused reload"
expect_eq "$(jget "$(reg node-c)" .code)" OK "RegisterNode after a refused reload"
# The pool's new channels read the files too, and refuse the expired client certificate
# until good files are back.
install_pair m2 "$T/mtls"
pass "manager: expired certificate refused on reload ($LINE)"

# Expired certificate at start: the program stops and says why.
MP2=$(free_port)
sed -e "s/port: $MP/port: $MP2/" -e "s#$T/mtls/tls.pem#$C/expired-server.pem#" -e "s#$T/mtls/tls.key#$C/expired-server.key#" \
  -e "s#$T/ops.db#$T/ops2.db#" "$T/manager.yaml" > "$T/manager2.yaml"
rc=0; timeout 20 "$BIN/ops-manager" -c "$T/manager2.yaml" > "$T/manager2.log" 2>&1 || rc=$?
[ $rc -ne 0 ] || fail "manager started with an expired certificate"
grep -q "expired-server.pem: certificate expired on Feb  1 00:00:00 2020 GMT" "$T/manager2.log" || fail "start message: $(cat "$T/manager2.log")"
pass "manager: expired certificate refused at start (rc=$rc)"

# The daemon's DaemonService rotates the same way; the manager reaches it throughout.
cat > "$T/daemon.yaml" <<YAML
daemon:
  work_dir: $T/work
  grpc_host: 127.0.0.1
  grpc_port: $GP
  http_port: $HP
  tls: {enabled: true, cert_file: $T/dtls/tls.pem, key_file: $T/dtls/tls.key, client_ca_file: $C/ca.pem}
  auth: {manager_token_sha256: $(h $DTOKEN)}
manager:
  address: $M
  tls: {enabled: true, ca_file: $C/ca.pem}
  heartbeat_interval: 1s
  reconnect_interval: 1s
prometheus: {enabled: false}
collectors: {cpu: {enabled: false}, memory: {enabled: false}, disk: {enabled: false}, network: {enabled: false}}
agents:
  - {id: idle, binary_path: /bin/sleep, args: ["100000"]}
YAML
"$BIN/ops-daemon" -c "$T/daemon.yaml" >> "$T/daemon.log" 2>&1 &
DPID=$!; PIDS+=($DPID)
wait_for 10 test -s "$T/work/node_id" || fail "no node_id"
NODE=$(cat "$T/work/node_id")
A() { call --ca "$C/ca.pem" --header "authorization: Bearer $ADMT" $M "ops.admin.v1.AdminService/$1" "$2"; }
listed() { [ "$(jget "$(A ListAgents "{\"node_id\":\"$NODE\"}")" .code)" = OK ]; }
wait_for 15 listed || fail "manager cannot list the daemon's agents: $(A ListAgents "{\"node_id\":\"$NODE\"}")"
expect_eq "$(serial_seen $GP)" "$(serial_of_file "$T/d1.pem")" "daemon serial before rotation"
install_pair d2 "$T/dtls"
kill -HUP $DPID
wait_for 10 grep -q "event=rpc.tls_reloaded server=daemon" "$T/daemon.log" || fail "daemon: no reload line"
expect_eq "$(serial_seen $GP)" "$(serial_of_file "$T/d2.pem")" "daemon serial after rotation"
listed || fail "manager lost the daemon after its rotation"
pass "daemon: rotated on SIGHUP; the manager still reaches it"
