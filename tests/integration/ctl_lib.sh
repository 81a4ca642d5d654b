# Shell helpers for the opsctl script tests (sourced after lib.sh): run opsctl capturing its
# output and exit code, and check what it printed.

# Nothing from the caller's environment or home may leak into opsctl's settings.
unset OPS_MANAGER OPS_TOKEN OPS_CA OPS_CERT OPS_KEY
export HOME=$T/home XDG_CONFIG_HOME=$T/xdg COLUMNS=100 TZ=UTC
mkdir -p "$HOME" "$XDG_CONFIG_HOME"

# ctl ARGS...: runs opsctl; sets OUT, ERR and RC, never fails the script itself.
ctl() {
  set +e
  OUT=$("$BIN/opsctl" "$@" 2>"$T/ctl.err")
  RC=$?
  set -e
  ERR=$(cat "$T/ctl.err")
}
expect_rc() { [ "$RC" = "$1" ] || fail "$2: exit $RC, expected $1; stdout: ${OUT:0:600}; stderr: ${ERR:0:600}"; }
# has TEXT NEEDLE WHAT
has() { grep -qF -- "$2" <<<"$1" || fail "$3: expected '$2' in: ${1:0:1500}"; }
hasnt() { ! grep -qF -- "$2" <<<"$1" || fail "$3: did not expect '$2' in: ${1:0:1500}"; }
# jq_is JSON FILTER EXPECTED WHAT
jq_is() {
  local got
  got=$(jq -r "$2" <<<"$1") || fail "$4: not JSON: ${1:0:600}"
  [ "$got" = "$3" ] || fail "$4: $2 = '$got', expected '$3'"
}
# has_braille TEXT: a braille pattern (U+2800..U+28FF) somewhere in TEXT.
has_braille() { LC_ALL=C grep -q $'\xe2[\xa0-\xa3]' <<<"$1"; }
# has_sparkline TEXT: a block element (U+2581..U+2588) somewhere in TEXT.
has_sparkline() { LC_ALL=C grep -q $'\xe2\x96[\x81-\x88]' <<<"$1"; }
