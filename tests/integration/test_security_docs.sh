#!/usr/bin/env bash
# docs/security.md works as written: its `sh` blocks run in order (PKI = a temp dir) and make a
# CA, certificates and a token that verify; its manager.yaml and daemon.yaml blocks pass
# --check-config with the paths pointed at them; a real ops-daemon set up the documented way
# (with a localhost certificate issued by the page's own `issue` helper) lets in the manager's
# certificate and the manager's token and refuses everyone else; the documented renewal gives
# a new serial.
source "$(dirname "$0")/lib.sh"
command -v jq >/dev/null || fail "jq is required"
DOC=$SRC/docs/security.md
PKI=$T/pki
# blocks LANG: the fenced blocks of that language, in order.
blocks() { awk -v lang="$1" '/^```/{ if (inb) { inb=0; next } if ($0 == "```" lang) { inb=1; next } } inb' "$DOC"; }
blocks sh > "$T/doc.sh"
[ "$(grep -c . "$T/doc.sh")" -gt 10 ] || fail "no sh blocks found in $DOC"
# The page's commands, then ours in the same shell (the page's `issue` helper is used again).
cat "$T/doc.sh" > "$T/run.sh"
cat >> "$T/run.sh" <<'EOF'
openssl x509 -in manager.pem -noout -serial | cut -d= -f2 > renewed.serial
issue localhost-daemon localhost serverAuth,clientAuth "DNS:localhost,IP:127.0.0.1"
issue intruder node-9 clientAuth "DNS:node-9"
EOF
(export PKI; cd "$T" && bash -euo pipefail "$T/run.sh") > "$T/doc-run.log" 2>&1 || { cat "$T/doc-run.log"; fail "the page's commands failed"; }
for f in ca.pem ca.key manager.pem manager.key web1.pem web1.key daemon-token daemon-token.sha256; do
  [ -s "$PKI/$f" ] || fail "the page's commands made no $f"
done
openssl verify -CAfile "$PKI/ca.pem" "$PKI/manager.pem" "$PKI/web1.pem" "$PKI/localhost-daemon.pem" >/dev/null || fail "verify"
openssl x509 -in "$PKI/manager.pem" -noout -ext extendedKeyUsage | grep -q "TLS Web Client Authentication" || fail "manager EKU"
expect_eq "$(stat -c %a "$PKI/ca.key")" 600 "ca.key mode"
expect_eq "$(stat -c %a "$PKI/daemon-token")" 600 "daemon-token mode"
expect_eq "$(grep -c "TLS Web Server Authentication" "$T/doc-run.log")" 1 "the page prints the manager's usages"
pass "the page's commands: a CA, manager/web1 certificates that verify, a 0600 token and its hash"

# The yaml blocks, pointed at the temp dir, pass --check-config.
HASH=$(cat "$PKI/daemon-token.sha256")
blocks yaml | awk -v dir="$T" 'BEGIN{n=0} /^grpc:/{n++} /^daemon:/{n++} {print > (dir "/doc" n ".yaml")}'
for f in "$T/doc1.yaml" "$T/doc2.yaml"; do
  sed -i -e "s#/etc/ops/pki#$PKI#g" -e "s/0\{64\}/$HASH/" "$f"
done
grep -q "^grpc:" "$T/doc1.yaml" && grep -q "^daemon:" "$T/doc2.yaml" || fail "yaml blocks not found"
printf 'database: {driver: sqlite, dsn: %s/check.db}\n' "$T" >> "$T/doc1.yaml"
"$BIN/ops-manager" --check-config "$T/doc1.yaml" > "$T/check1.log" 2>&1 || fail "manager.yaml block: $(cat "$T/check1.log")"
"$BIN/ops-daemon" --check-config "$T/doc2.yaml" > "$T/check2.log" 2>&1 || fail "daemon.yaml block: $(cat "$T/check2.log")"
pass "manager.yaml and daemon.yaml blocks pass --check-config"

# A real daemon configured like the page (localhost certificate, the page's auth section).
GP=$(free_port); HP=$(free_port)
sed -e "s/grpc_host: 0.0.0.0/grpc_host: 127.0.0.1/" -e "s/grpc_port: 9091/grpc_port: $GP/" \
    -e "s#$PKI/web1#$PKI/localhost-daemon#g" -e "s#manager.example.net:9090#127.0.0.1:1#" "$T/doc2.yaml" > "$T/daemon.yaml"
cat >> "$T/daemon.yaml" <<YAML
  heartbeat_interval: 1s
prometheus: {enabled: false}
agents:
  - {id: idle, binary_path: /bin/sleep, args: ["100000"]}
YAML
sed -i "/^daemon:/a\\  work_dir: $T/work\n  http_port: $HP" "$T/daemon.yaml"
"$BIN/ops-daemon" -c "$T/daemon.yaml" >> "$T/daemon.log" 2>&1 &
PIDS+=($!)
D=127.0.0.1:$GP
wait_for 10 "$BIN/pbcall" --ca "$PKI/ca.pem" $D grpc.health.v1.Health/Check || fail "daemon did not start: $(tail -5 "$T/daemon.log")"
c() { jget "$(call --ca "$PKI/ca.pem" "$@" $D proto.DaemonService/ListAgents)" .code; }
expect_eq "$(c --cert "$PKI/manager.pem" --key "$PKI/manager.key")" OK "manager certificate"
expect_eq "$(c --header "authorization: Bearer $(cat "$PKI/daemon-token")")" OK "manager token"
expect_eq "$(c)" UNAUTHENTICATED "no credentials"
expect_eq "$(c --cert "$PKI/intruder.pem" --key "$PKI/intruder.key")" PERMISSION_DENIED "another identity of our CA"
pass "a daemon set up as documented obeys the manager's certificate and token only"

# The documented renewal produced a different serial from the first manager certificate.
grep -q "serial=" "$T/doc-run.log" || fail "no serial printed"
[ "$(grep -c "serial=" "$T/doc-run.log")" -ge 2 ] || fail "renewal did not print a serial"
S1=$(grep "serial=" "$T/doc-run.log" | head -1 | cut -d= -f2); S2=$(cat "$PKI/renewed.serial")
[ "$S1" != "$S2" ] || fail "renewal kept serial $S1"
pass "renewal: serial $S1 -> $S2"
