#!/usr/bin/env bash
# Creates the throw-away TLS material used by the TLS/mTLS tests and interop peers.
#
#   gen-certs.sh [--force] OUTDIR
#
# Files written to OUTDIR (EC P-256 keys, SHA-256 signatures):
#   ca.pem ca.key                  test CA
#   server.pem server.key          CN=localhost, SAN DNS:localhost IP:127.0.0.1, serverAuth, by ca
#   client.pem client.key          CN=node-1, SAN DNS:node-1, clientAuth, by ca
#   other-ca.pem other-ca.key      an unrelated CA (for "wrong CA" tests)
#   other-client.pem other-client.key  CN=node-1 client cert signed by other-ca
#   other-server.pem other-server.key  CN=localhost server cert signed by other-ca
#   expired-server.pem expired-server.key  like server.pem but valid only in Jan 2020
#   expired-client.pem expired-client.key  like client.pem but valid only in Jan 2020
#   node-a.pem node-a.key, node-b.pem node-b.key  client certs CN/SAN node-a, node-b, by ca
#
# Idempotent: if OUTDIR/ca.pem exists nothing is done unless --force. Everything is built in a
# staging directory and ca.pem is moved in last, so an interrupted run never looks complete.
set -euo pipefail

force=0
outdir=""
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        -*) echo "gen-certs.sh: unknown option $arg" >&2; exit 2 ;;
        *) [ -z "$outdir" ] || { echo "gen-certs.sh: only one OUTDIR" >&2; exit 2; }
           outdir="$arg" ;;
    esac
done
[ -n "$outdir" ] || { echo "usage: gen-certs.sh [--force] OUTDIR" >&2; exit 2; }

if [ -e "$outdir/ca.pem" ] && [ "$force" -eq 0 ]; then
    exit 0
fi
mkdir -p "$outdir"
stage=$(mktemp -d "$outdir/.gen-certs.XXXXXX")
trap 'rm -rf "$stage"' EXIT

newkey() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$stage/$1.key" 2>/dev/null
}

# A random positive serial: distinct certificates must not share (issuer, serial).
serial() { echo "0x7$(openssl rand -hex 15)"; }

# make_ca NAME CN
make_ca() {
    newkey "$1"
    cat > "$stage/$1.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3
[dn]
CN = $2
[v3]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
    openssl req -x509 -new -sha256 -days 3650 -set_serial "$(serial)" \
        -config "$stage/$1.cnf" -key "$stage/$1.key" -out "$stage/$1.pem"
}

# leaf_ext FILE EKU SAN
leaf_ext() {
    cat > "$1" <<EOF
[v3]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = $2
subjectAltName = $3
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
}

# make_leaf NAME CA CN EKU SAN
make_leaf() {
    newkey "$1"
    openssl req -new -sha256 -key "$stage/$1.key" -subj "/CN=$3" -out "$stage/$1.csr"
    leaf_ext "$stage/$1.ext" "$4" "$5"
    openssl x509 -req -sha256 -days 825 -set_serial "$(serial)" \
        -in "$stage/$1.csr" -CA "$stage/$2.pem" -CAkey "$stage/$2.key" \
        -extfile "$stage/$1.ext" -extensions v3 -out "$stage/$1.pem" 2>/dev/null
}

# make_expired NAME CA CN EKU SAN: `openssl x509` (3.0) cannot back-date, `openssl ca` can.
make_expired() {
    newkey "$1"
    openssl req -new -sha256 -key "$stage/$1.key" -subj "/CN=$3" -out "$stage/$1.csr"
    leaf_ext "$stage/$1.ext" "$4" "$5"
    local db="$stage/$1.db"
    mkdir -p "$db"
    : > "$db/index.txt"
    openssl rand -hex 16 > "$db/serial"
    cat > "$db/ca.cnf" <<EOF
[ca]
default_ca = test
[test]
database = $db/index.txt
serial = $db/serial
new_certs_dir = $db
certificate = $stage/$2.pem
private_key = $stage/$2.key
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[any]
commonName = supplied
EOF
    openssl ca -batch -notext -config "$db/ca.cnf" -extfile "$stage/$1.ext" -extensions v3 \
        -startdate 20200101000000Z -enddate 20200201000000Z \
        -in "$stage/$1.csr" -out "$stage/$1.pem" 2>/dev/null
}

make_ca ca "ops test CA"
make_ca other-ca "ops other test CA"
make_leaf server ca localhost serverAuth "DNS:localhost, IP:127.0.0.1"
make_leaf client ca node-1 clientAuth "DNS:node-1"
make_leaf other-server other-ca localhost serverAuth "DNS:localhost, IP:127.0.0.1"
make_leaf other-client other-ca node-1 clientAuth "DNS:node-1"
make_leaf node-a ca node-a clientAuth "DNS:node-a"
make_leaf node-b ca node-b clientAuth "DNS:node-b"
make_expired expired-server ca localhost serverAuth "DNS:localhost, IP:127.0.0.1"
make_expired expired-client ca node-1 clientAuth "DNS:node-1"

# Self-check before publishing anything.
openssl verify -CAfile "$stage/ca.pem" "$stage/server.pem" "$stage/client.pem" >/dev/null
openssl verify -CAfile "$stage/other-ca.pem" "$stage/other-server.pem" "$stage/other-client.pem" >/dev/null

names="ca other-ca server client other-server other-client expired-server expired-client node-a node-b"
for n in $names; do
    chmod 600 "$stage/$n.key"
    chmod 644 "$stage/$n.pem"
    mv -f "$stage/$n.key" "$outdir/$n.key"
    [ "$n" = ca ] || mv -f "$stage/$n.pem" "$outdir/$n.pem"
done
mv -f "$stage/ca.pem" "$outdir/ca.pem"
