#!/usr/bin/env bash
# test_packaging: the Debian packages as an admin gets them. Builds the programs again with
# -DCMAKE_INSTALL_PREFIX=/usr in a build dir of its own, makes the .debs with cpack, checks
# their control data (Depends from dpkg-shlibdeps, conffiles, script modes), installs them into
# a scratch root with dpkg (maintainer scripts run chrootless with DPKG_ROOT, so the host's
# users and units are never touched), and checks what landed: files and modes, the system
# user, state directories, enabled units, conffiles kept across a reinstall, the units pass
# `systemd-analyze verify`, the man pages render without warnings and document every key the
# programs accept, and the installed programs talk sd_notify.
source "$(dirname "$0")/lib.sh"

for tool in cpack dpkg dpkg-deb dpkg-shlibdeps systemd-analyze man useradd awk readelf; do
  command -v "$tool" >/dev/null || fail "$tool is missing: run scripts/deps.sh"
done

# OPS_PKG_BUILD_DIR reuses a build dir configured like this one (quicker reruns).
B=${OPS_PKG_BUILD_DIR:-$T/build}
R=$T/root
cmake -S "$SRC" -B "$B" -DCMAKE_INSTALL_PREFIX=/usr -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_SKIP_INSTALL_ALL_DEPENDENCY=ON >"$T/cmake.log" 2>&1 ||
  fail "cmake configure (see $T/cmake.log)"
targets=(ops-manager ops-daemon ops_man)
grep -q '^opsctl:' <(cmake --build "$B" --target help 2>/dev/null | sed 's/^\.\.\. //; s/ .*//; s/$/:/') && targets+=(opsctl)
cmake --build "$B" -j"$(nproc)" --target "${targets[@]}" >"$T/build.log" 2>&1 || fail "build (see $T/build.log)"
# cpack builds its "preinstall" target first: with CMAKE_SKIP_INSTALL_ALL_DEPENDENCY that is
# not "all" (tests, benchmarks), only what is installed, built just above.
rm -f "$B"/*.deb
(cd "$B" && cpack -G DEB >"$T/cpack.log" 2>&1) || fail "cpack (see $T/cpack.log)"
MGR=$(ls "$B"/ops-manager_*.deb) && DMN=$(ls "$B"/ops-daemon_*.deb) || fail "no .debs in $B"
CTL=$(ls "$B"/opsctl_*.deb 2>/dev/null || true)
[ -n "$CTL" ] || [[ " ${targets[*]} " != *" opsctl "* ]] || fail "opsctl is built but has no package"
pass "cpack made $(basename "$MGR") $(basename "$DMN") ${CTL:+$(basename "$CTL")}"

# --- control data ----------------------------------------------------------------------
for deb in $MGR $DMN $CTL; do
  dep=$(dpkg-deb -f "$deb" Depends)
  libs="libc6 libgrpc libprotobuf-c1"
  [ "$deb" = "$CTL" ] || libs="$libs libsystemd0 libcyaml1"   # sd_notify, the config file
  for lib in $libs; do
    [[ "$dep" == *"$lib"* ]] || fail "$(basename "$deb"): Depends lacks $lib: $dep"
  done
done
[[ "$(dpkg-deb -f "$MGR" Depends)" == *adduser* ]] || fail "ops-manager must depend on adduser (postinst)"
[[ "$(dpkg-deb -f "$MGR" Depends)" == *libsqlite3* ]] || fail "ops-manager Depends lacks libsqlite3"
[[ "$(dpkg-deb -f "$DMN" Depends)" == *libmicrohttpd* ]] || fail "ops-daemon Depends lacks libmicrohttpd"
pass "Depends (dpkg-shlibdeps): $(dpkg-deb -f "$MGR" Depends)"

ctl_file() { dpkg-deb --ctrl-tarfile "$1" | tar -xOf - "./$2" 2>/dev/null; }
expect_eq "$(ctl_file "$MGR" conffiles)" "$(printf '/etc/ops/manager.yaml\n/etc/logrotate.d/ops-manager')" "ops-manager conffiles"
expect_eq "$(ctl_file "$DMN" conffiles)" "$(printf '/etc/ops/daemon.yaml\n/etc/logrotate.d/ops-daemon')" "ops-daemon conffiles"
for deb in $MGR $DMN; do
  modes=$(dpkg-deb --ctrl-tarfile "$deb" | tar -tvf - | awk '$6 ~ /(postinst|prerm|postrm)$/ { print $1 }' | sort -u)
  expect_eq "$modes" "-rwxr-xr-x" "$(basename "$deb") maintainer script modes"
  for s in postinst prerm postrm; do ctl_file "$deb" $s | sh -n || fail "$(basename "$deb") $s: syntax"; done
done
pass "conffiles listed, maintainer scripts 0755 and valid sh"

# --- install into a scratch root ----------------------------------------------------------
mkdir -p "$R/etc" "$R/var/lib/dpkg/updates" "$R/var/lib/dpkg/info"
: >"$R/var/lib/dpkg/status"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$R/etc/passwd"
printf 'root:x:0:\n' >"$R/etc/group"
printf 'root:*:19000:0:99999:7:::\n' >"$R/etc/shadow"
printf 'root:*::\n' >"$R/etc/gshadow"
host_passwd=$(md5sum /etc/passwd)
DPKG=(dpkg --root="$R" --force-not-root --force-depends --force-script-chrootless --log=/dev/null)
"${DPKG[@]}" -i $MGR $DMN $CTL >"$T/dpkg.log" 2>&1 || fail "dpkg -i (see $T/dpkg.log)"
expect_eq "$(md5sum /etc/passwd)" "$host_passwd" "the host's /etc/passwd is untouched"

mode() { stat -c '%a %u' "$R$1" 2>/dev/null || echo "missing"; }
check_mode() { expect_eq "$(mode "$1")" "$2" "$1 mode and owner"; }
check_mode /usr/sbin/ops-manager "755 0"
check_mode /usr/sbin/ops-daemon "755 0"
check_mode /etc/ops/manager.yaml "644 0"
check_mode /etc/ops/daemon.yaml "644 0"
check_mode /etc/logrotate.d/ops-manager "644 0"
check_mode /etc/logrotate.d/ops-daemon "644 0"
check_mode /lib/systemd/system/ops-manager.service "644 0"
check_mode /lib/systemd/system/ops-daemon.service "644 0"
for p in /usr/share/man/man8/ops-manager.8.gz /usr/share/man/man8/ops-daemon.8.gz \
         /usr/share/man/man5/ops-manager.yaml.5.gz /usr/share/man/man5/ops-daemon.yaml.5.gz \
         /usr/share/doc/ops-manager/operator-guide.md /usr/share/doc/ops-manager/examples/manager.yaml \
         /usr/share/doc/ops-daemon/examples/daemon.yaml; do
  check_mode "$p" "644 0"
done
if [ -n "$CTL" ]; then
  check_mode /usr/bin/opsctl "755 0"
  check_mode /usr/share/man/man1/opsctl.1.gz "644 0"
fi
! readelf -S "$R/usr/sbin/ops-manager" | grep -q '\.symtab' || fail "the packaged binaries should be stripped"
pass "files landed with the right modes"

# the manager's postinst: system user and group "ops", its state directory
uid=$(awk -F: '$1 == "ops" { print $3 }' "$R/etc/passwd")
gid=$(awk -F: '$1 == "ops" { print $3 }' "$R/etc/group")
[ -n "$uid" ] && [ "$uid" -lt 1000 ] || fail "no system user ops in the root's passwd: $(cat "$R/etc/passwd")"
[ -n "$gid" ] || fail "no group ops"
expect_eq "$(awk -F: '$1 == "ops" { print $6 ":" $7 }' "$R/etc/passwd")" "/var/lib/ops:/usr/sbin/nologin" "ops home and shell"
expect_eq "$(stat -c '%a %u %g' "$R/var/lib/ops")" "750 $uid $gid" "/var/lib/ops"
expect_eq "$(stat -c '%a %u' "$R/var/lib/ops-daemon")" "750 0" "/var/lib/ops-daemon"
for u in ops-manager ops-daemon; do
  [ -L "$R/etc/systemd/system/multi-user.target.wants/$u.service" ] || fail "$u.service is not enabled"
done
pass "postinst: system user ops ($uid:$gid), state dirs, units enabled"

# conffiles: an edit survives reinstalling (dpkg keeps a modified conffile)
echo "# local edit" >>"$R/etc/ops/manager.yaml"
echo "# local edit" >>"$R/etc/ops/daemon.yaml"
"${DPKG[@]}" -i $MGR $DMN >"$T/dpkg2.log" 2>&1 || fail "dpkg -i again (see $T/dpkg2.log)"
tail -1 "$R/etc/ops/manager.yaml" | grep -q "local edit" || fail "upgrade overwrote /etc/ops/manager.yaml"
tail -1 "$R/etc/ops/daemon.yaml" | grep -q "local edit" || fail "upgrade overwrote /etc/ops/daemon.yaml"
pass "conffiles kept across a reinstall"

# the installed configs are valid for the installed programs
"$R/usr/sbin/ops-manager" --check-config "$R/etc/ops/manager.yaml" >/dev/null || fail "installed manager.yaml does not check"
"$R/usr/sbin/ops-daemon" --check-config "$R/etc/ops/daemon.yaml" >/dev/null || fail "installed daemon.yaml does not check"
pass "installed configs pass --check-config"

# --- systemd units ------------------------------------------------------------------------
# systemd-analyze verify checks the binaries exist: point them into the scratch root. Man
# pages of Documentation= are looked up in the root too.
mkdir -p "$T/units"
for u in ops-manager ops-daemon; do
  sed "s|/usr/sbin/|$R/usr/sbin/|g" "$R/lib/systemd/system/$u.service" >"$T/units/$u.service"
  out=$(MANPATH="$R/usr/share/man" systemd-analyze verify "$T/units/$u.service" 2>&1) || fail "systemd-analyze verify $u: $out"
  [ -z "$out" ] || fail "systemd-analyze verify $u printed: $out"
  grep -q '^Type=notify$' "$T/units/$u.service" || fail "$u: not Type=notify"
  grep -q '^WatchdogSec=' "$T/units/$u.service" || fail "$u: no WatchdogSec"
  grep -q '^Restart=on-failure$' "$T/units/$u.service" || fail "$u: no Restart=on-failure"
  grep -q '^ExecReload=/bin/kill -HUP \$MAINPID$' "$T/units/$u.service" || fail "$u: no ExecReload"
done
grep -q '^KillMode=process$' "$T/units/ops-daemon.service" || fail "ops-daemon: agents must survive a stop (KillMode=process)"
for k in User=ops ProtectSystem=strict StateDirectory=ops NoNewPrivileges=yes PrivateTmp=yes ProtectHome=yes \
         'CapabilityBoundingSet=' 'SystemCallFilter=@system-service'; do
  grep -qx "$k" "$T/units/ops-manager.service" || fail "ops-manager.service lacks $k"
done
pass "units pass systemd-analyze verify"

# --- man pages ----------------------------------------------------------------------------
pages=("$R"/usr/share/man/man*/*.gz)
[ ${#pages[@]} -ge 4 ] || fail "man pages missing: ${pages[*]}"
for pg in "${pages[@]}"; do
  w=$(LC_ALL=C.UTF-8 man --warnings -l "$pg" 2>&1 >/dev/null)
  [ -z "$w" ] || fail "man $(basename "$pg") warns: $w"
  [ "$(LC_ALL=C.UTF-8 man -l "$pg" 2>/dev/null | wc -l)" -gt 20 ] || fail "man $(basename "$pg") renders nearly nothing"
done
pass "${#pages[@]} man pages render with no warnings"

# Every key the programs accept (as --print-config shows them) is in the section-5 page: the
# page is generated from configs/*.yaml, so compare the keys of both through the generator.
# in_page KEY PAGE: KEY is a line of its own (a .TP tag or .SS heading) in the rendered PAGE.
declare -A PAGE_LINES
in_page() {
  if [ -z "${PAGE_LINES[$2]+x}" ]; then
    PAGE_LINES[$2]=$'\n'"$(sed 's/^ *//' "$2")"$'\n'
  fi
  [[ "${PAGE_LINES[$2]}" == *$'\n'"$1"$'\n'* ]]
}
man_text() { LC_ALL=C.UTF-8 MANWIDTH=200 man -l "$1" 2>/dev/null; }
keys() { awk -f "$SRC/docs/man/yaml2man.awk" -v keys=1 -v freeform="$2" "$1"; }
FF="labels agents[].env"
"$R/usr/sbin/ops-manager" --print-config "$R/usr/share/doc/ops-manager/examples/manager.yaml" >"$T/m.yaml"
"$R/usr/sbin/ops-daemon" --print-config "$R/usr/share/doc/ops-daemon/examples/daemon.yaml" >"$T/d.yaml"
man_text "$R/usr/share/man/man5/ops-manager.yaml.5.gz" >"$T/m5.txt"
man_text "$R/usr/share/man/man5/ops-daemon.yaml.5.gz" >"$T/d5.txt"
n=0
for k in $(keys "$T/m.yaml" ""); do
  in_page "$k" "$T/m5.txt" || fail "ops-manager key $k is not in ops-manager.yaml(5)"
  n=$((n + 1))
done
documented=$(keys "$SRC/configs/daemon.yaml" "$FF")
for k in $(keys "$T/d.yaml" "$FF"); do
  # an agent's unset keys come from agent_defaults, where they are documented
  alt=${k/#agents\[\]./agent_defaults.}
  grep -qxF "$k" <<<"$documented" || grep -qxF "$alt" <<<"$documented" ||
    fail "ops-daemon key $k is not documented in configs/daemon.yaml"
  in_page "$k" "$T/d5.txt" || in_page "$alt" "$T/d5.txt" || fail "ops-daemon key $k is not in ops-daemon.yaml(5)"
  n=$((n + 1))
done
# and every option of --help is in the program's page
for prog in ops-manager ops-daemon; do
  man_text "$R/usr/share/man/man8/$prog.8.gz" >"$T/$prog.8.txt"
  for opt in $("$R/usr/sbin/$prog" --help | grep -oE -- '--[a-z][a-z-]+' | sort -u); do
    grep -qF -- "$opt" "$T/$prog.8.txt" || fail "$prog $opt is not in $prog(8)"
  done
done
if [ -n "$CTL" ] && "$R/usr/bin/opsctl" --help >"$T/ctl.help" 2>&1; then
  man_text "$R/usr/share/man/man1/opsctl.1.gz" >"$T/opsctl.1.txt"
  for opt in $(grep -oE -- '--[a-z][a-z-]+' "$T/ctl.help" | sort -u); do
    grep -qF -- "$opt" "$T/opsctl.1.txt" || fail "opsctl $opt is not in opsctl(1)"
  done
fi
pass "$n configuration keys and every --option documented in the man pages"

# --- sd_notify from the installed programs -------------------------------------------------
# notify_sink plays systemd's notify socket: READY=1 once listening, WATCHDOG=1 pings,
# STOPPING=1 on SIGTERM.
notify_run() { # NAME CMD...: runs CMD under a fake NOTIFY_SOCKET, checks the messages
  local name=$1; shift
  local sock=$T/$name.sock
  "$BIN/notify_sink" "$sock" 20 >"$T/$name.notify" &
  local sink=$!
  PIDS+=($sink)
  wait_for 5 test -S "$sock" || fail "$name: notify_sink did not start"
  NOTIFY_SOCKET=$sock WATCHDOG_USEC=400000 "$@" >"$T/$name.log" 2>&1 &
  local p=$!
  PIDS+=($p)
  wait_for 10 grep -q '^READY=1|STATUS=' "$T/$name.notify" || fail "$name: no READY=1: $(cat "$T/$name.notify")"
  wait_for 5 grep -q '^WATCHDOG=1$' "$T/$name.notify" || fail "$name: no watchdog ping"
  kill -TERM $p
  wait $p || fail "$name: exit status $?"
  wait $sink
  grep -q '^STOPPING=1|STATUS=' "$T/$name.notify" || fail "$name: no STOPPING=1: $(cat "$T/$name.notify")"
  pass "$name: $(grep -m1 '^READY' "$T/$name.notify")"
}
mp=$(free_port)
cat >"$T/manager.yaml" <<YAML
grpc: {host: 127.0.0.1, port: $mp}
database: {driver: sqlite, dsn: $T/m.db}
YAML
notify_run ops-manager "$R/usr/sbin/ops-manager" -c "$T/manager.yaml"
cat >"$T/daemon.yaml" <<YAML
daemon: {work_dir: $T/dwork, grpc_host: 127.0.0.1, grpc_port: $(free_port), http_port: $(free_port)}
manager: {address: 127.0.0.1:$mp}
agents: []
YAML
notify_run ops-daemon "$R/usr/sbin/ops-daemon" -c "$T/daemon.yaml"

# --- removal --------------------------------------------------------------------------------
"${DPKG[@]}" -r ops-manager ops-daemon >"$T/dpkg-r.log" 2>&1 || fail "dpkg -r (see $T/dpkg-r.log)"
[ ! -e "$R/usr/sbin/ops-manager" ] || fail "ops-manager still installed after -r"
[ -f "$R/etc/ops/manager.yaml" ] || fail "remove (not purge) must keep the conffile"
"${DPKG[@]}" -P ops-manager ops-daemon >"$T/dpkg-p.log" 2>&1 || fail "dpkg -P (see $T/dpkg-p.log)"
[ ! -e "$R/etc/ops/manager.yaml" ] || fail "purge left /etc/ops/manager.yaml"
[ -d "$R/var/lib/ops" ] || fail "purge must keep /var/lib/ops (the database)"
pass "remove keeps conffiles, purge removes them and keeps the data"
echo "PASS test_packaging"
