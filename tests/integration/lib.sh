# Shared set-up and helpers of the integration suites.
# Usage, at the top of a suite: source "$(dirname "$0")/lib.sh" BIN NAME
# Sets BIN (absolute), HERE (this folder) and WORK (a fresh folder, removed with every process using it on exit).
# A suite takes one argument (BIN) and picks tests with an environment variable (e.g. CORE_TESTS=t_repack);
# KEEP_WORK=1 keeps WORK for inspection.

# Each suite runs as the leader of a session (and process group) of its own, so that it can stop every process
# it started: servers started by a test's subshell are orphans once the subshell ends (no longer children of
# the suite), and the commands lifeboat runs (hooks, exec checks, rclone) get process groups of their own,
# but all stay in the session. The suite is also a child subreaper: orphans become its children and are
# reaped, instead of staying zombies under a PID 1 that reaps nothing (as in some containers). A small parent
# stays in the caller's process group and passes INT, TERM and HUP on, so Ctrl-C or a killed `make` still
# stops the whole suite.
if [ -z "${LIFEBOAT_SUITE_SESSION:-}" ] && [ "$(ps -o sid= -p $$ | tr -d ' ')" != "$$" ]; then
  LIFEBOAT_SUITE_SESSION=1 setsid python3 -c 'import ctypes, os, sys
try: ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER (kept across exec)
except Exception: pass
os.execvp("bash", ["bash"] + sys.argv[1:])' "$0" "$1" < /dev/null &
  _suite=$!
  trap 'kill -TERM -- -"$_suite" 2>/dev/null' INT TERM HUP
  while :; do wait "$_suite"; _rc=$?; kill -0 "$_suite" 2>/dev/null || exit "$_rc"; done
fi

BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=$(mktemp -d "/tmp/lifeboat-$2.XXXXXX")
chmod 755 "$WORK"

# Processes: alive (not a zombie: PID 1 of a container may not reap orphans), and this suite's.
alive() { local s; read -r s 2>/dev/null < "/proc/$1/stat" || return 1; s=${s##*) }; [ "${s%% *}" != Z ]; }
suite_pids() {  # sets PIDS: the live processes of the suite's session (its process group if it leads no session), but itself
  local p all
  PIDS=()
  if [ "$(ps -o sid= -p $$ | tr -d ' ')" = "$$" ]; then all=$(pgrep -s $$); else all=$(pgrep -g "$(ps -o pgid= -p $$ | tr -d ' ')"); fi
  for p in $all; do [ "$p" != $$ ] && alive "$p" && PIDS+=("$p"); done
  return 0
}
stop_pids() {  # stop_pids PID…: SIGTERM (and SIGCONT, for stopped ones), then SIGKILL whatever is left after 3 s
  [ $# -gt 0 ] || return 0
  local p i left=("$@")
  kill -TERM "$@" 2>/dev/null; kill -CONT "$@" 2>/dev/null
  for i in $(seq 1 60); do  # 30 tenths of a second with TERM, then 30 after KILL
    [ "$i" = 31 ] && kill -KILL "${left[@]}" 2>/dev/null
    set -- "${left[@]}"; left=()
    for p in "$@"; do alive "$p" && left+=("$p"); done
    [ ${#left[@]} -eq 0 ] && return 0
    sleep 0.1
  done
  echo "    warning: processes $(echo "${left[*]}") outlived SIGKILL" >&2
}
suite_cleanup() {  # on exit, whatever happened: stop everything the suite started, then remove WORK
  [ -n "${SUITE_CLEANED:-}" ] && return; SUITE_CLEANED=1
  trap '' INT TERM HUP
  suite_pids; stop_pids "${PIDS[@]}"
  pkill -9 -f "$WORK" 2>/dev/null   # anything that left the session on its own (none should)
  umount "$WORK"/src-xfs/mnt 2>/dev/null
  umount "$WORK"/small 2>/dev/null
  if [ -n "${KEEP_WORK:-}" ]; then echo "kept $WORK (KEEP_WORK)"; else rm -rf "$WORK"; fi
}
trap suite_cleanup EXIT
trap 'exit 130' INT; trap 'exit 143' TERM; trap 'exit 129' HUP
export LIFEBOAT_KDF_PARAMS=1024,8,1          # cheap scrypt for tests only
echo "secret-password" > "$WORK/pw"
export LIFEBOAT_PASSWORD_FILE=$WORK/pw
unset LIFEBOAT_REPOSITORY LIFEBOAT_PASSWORD

PASSED=0; FAILED=0; FAILURES=()
lb() { "$BIN" "$@"; }
fail() { echo "    FAIL: $*"; return 1; }
expect_code() { local want=$1 got=0; shift; "$@" >"$WORK/out" 2>"$WORK/err" || got=$?; [ "$got" -eq "$want" ] || { cat "$WORK/out" "$WORK/err" | tail -5; fail "expected exit $want, got $got: $*"; }; }
json_field() { python3 -c "import json,sys; d=[json.loads(l) for l in open('$1') if l.strip().startswith('{')]; d=[x for x in d if x.get('message_type')=='$2'][-1]; print(d['$3'])"; }
has_elder() {  # has_elder PID " PIDS… ": whether an ancestor of PID below the suite is one of PIDS
  local p=$1 s
  while :; do
    read -r s 2>/dev/null < "/proc/$p/stat" || return 1
    s=${s##*) }; s=${s#* }; p=${s%% *}   # after "(comm) ": state, then the parent's PID
    { [ "$p" = $$ ] || [ "$p" -le 1 ]; } && return 1
    [[ $2 == *" $p "* ]] && return 0
  done
}
run_test() {
  local name=$1
  echo "--- $name"
  # Processes the test leaves behind (servers it started, also when it failed half-way) are stopped after it.
  local before p rc left=(); suite_pids; before=" ${PIDS[*]} "
  # Not in an `if` condition: bash ignores `set -e` there, and a failed step must fail the test. In the
  # background, waited for: a signal to the suite then runs its trap at once, not after the test.
  ( set -eE; trap 'echo "    FAIL at line $LINENO: $BASH_COMMAND"' ERR; "$name" ) &
  wait $!; rc=$?
  # A process a server started before the test spawned meanwhile (an HA agent's psql probe or pg_basebackup) is
  # that server's, not the test's: killing it failed the probe and made the leader give its key up.
  suite_pids; for p in "${PIDS[@]}"; do [[ $before == *" $p "* ]] || has_elder "$p" "$before" || left+=("$p"); done
  stop_pids "${left[@]}"
  if [ $rc -eq 0 ]; then PASSED=$((PASSED+1)); echo "    ok"; else FAILED=$((FAILED+1)); FAILURES+=("$name"); fi
}

make_tree() {  # a tree with every kind of file and metadata
  local d=$1
  mkdir -p "$d/dir/sub" "$d/empty-dir"
  echo "hello world" > "$d/dir/hello.txt"
  : > "$d/empty-file"
  head -c 3000000 /dev/urandom > "$d/dir/sub/random.bin"
  python3 -c "import sys; sys.stdout.write(''.join('log line %d: something happened\n' % i for i in range(100000)))" > "$d/dir/log.txt"
  ln -s hello.txt "$d/dir/link-rel"
  ln -s /etc/hostname "$d/dir/link-abs"
  ln "$d/dir/hello.txt" "$d/dir/hardlink.txt"
  mkfifo "$d/fifo"
  mknod "$d/chardev" c 1 3 2>/dev/null || true
  chmod 4750 "$d/dir/hello.txt"
  chmod 700 "$d/dir/sub"
  chown 1234:5678 "$d/dir/log.txt"
  setfattr -n user.color -v blue "$d/dir/log.txt" 2>/dev/null || true
  setfattr -n user.bin -v 0x00ff00 "$d/empty-file" 2>/dev/null || true
  touch -d "2001-02-03 04:05:06.123456789" "$d/dir/log.txt"
  printf 'bytes' > "$d/$(printf 'name-\xff\xfe-latin1')"
  printf 'spaces' > "$d/name with spaces and ünïcödé"
  truncate -s 50M "$d/sparse.img"; printf 'data in the middle' | dd of="$d/sparse.img" bs=1 seek=20000000 conv=notrunc status=none
  touch -d "2010-01-01" "$d/dir/sub"
}


# Servers for the remote-site and replication suites.
free_port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }

# Waits: each polls for what the next step needs, with a bound that holds on a loaded machine, and fails naming it.
# wait_until SECONDS WHAT COMMAND…: until COMMAND succeeds; "WHAT" (a description) in the failure message.
wait_until() {
  local secs=$1 what=$2 end; shift 2
  end=$(( $(date +%s%N) + secs * 1000000000 ))
  until "$@"; do
    [ "$(date +%s%N)" -lt "$end" ] || { fail "timed out after ${secs} s waiting for $what"; return 1; }
    sleep 0.1
  done
}
port_open() { (echo > "/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null; }
wait_port() { wait_until "${3:-30}" "port ${2:-127.0.0.1}:$1 to listen" port_open "$1" "${2:-127.0.0.1}"; }  # wait_port PORT [HOST [SECONDS]]
# wait_log FILE PATTERN [SECONDS]: until FILE has a line matching PATTERN (grep); prints the file's end if not.
wait_log() {
  wait_until "${3:-30}" "\"$2\" in $(basename "$1")" grep -q -- "$2" "$1" 2>/dev/null || { tail -20 "$1" 2>/dev/null | sed 's/^/    | /'; return 1; }
}
has_nonempty_file() { [ -n "$(find "$1" -name "$2" -size +0c -print -quit 2>/dev/null || true)" ]; }  # has_nonempty_file DIR NAME-PATTERN
holds_flock() {  # holds_flock PID FILE: PID holds a flock(2) lock on FILE (read from /proc/locks: taking it would disturb PID)
  local ino; ino=$(stat -c %i "$2" 2>/dev/null) || return 1
  grep -Eq "^[0-9]+: FLOCK +[A-Z]+ +[A-Z]+ +$1 [0-9a-f]+:[0-9a-f]+:$ino " /proc/locks
}
tcp_sockets() {  # tcp_sockets STATE PORT: how many TCP sockets in STATE (0A listening, 01 established) have PORT at either end
  awk -v p="$(printf '%04X' "$2")" -v s="$1" 'FNR > 1 { split($2, l, ":"); split($3, r, ":"); if ($4 == s && (l[2] == p || r[2] == p)) n++ } END { print n + 0 }' /proc/net/tcp $([ -r /proc/net/tcp6 ] && echo /proc/net/tcp6)
}

make_cert() {  # $WORK/cert.pem and key.pem: a self-signed certificate for the name localhost only
  [ -f "$WORK/cert.pem" ] && return 0
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -days 2 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost" 2>/dev/null
}

# start_serve NAME ARGS…: runs `lifeboat serve` in the background; sets SERVE_URL (http(s)://host:port/).
start_serve() {
  local name=$1; shift
  "$BIN" serve --json --listen "${SERVE_LISTEN:-127.0.0.1:0}" "$@" > "$WORK/serve-$name.out" 2> "$WORK/serve-$name.err" &
  SERVE_PID=$!
  local end=$(( SECONDS + 30 ))
  while [ $SECONDS -lt $end ] && alive "$SERVE_PID"; do
    SERVE_URL=$(python3 -c "import json; print(json.loads(open('$WORK/serve-$name.out').readline())['url'])" 2>/dev/null) && return 0
    sleep 0.1
  done
  cat "$WORK/serve-$name.err"; fail "serve $name did not start within 30 s"
}

s3_answers() { [ "$(curl -s -m 30 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/")" = 200 ]; }
start_moto() {
  MOTO_PORT=$(free_port)
  moto_server -H 127.0.0.1 -p "$MOTO_PORT" > "$WORK/moto.log" 2>&1 &
  MOTO_PID=$!
  wait_port "$MOTO_PORT" 127.0.0.1 60
  # moto loads its S3 backend on the first S3 request: do it here, not in a command with short timeouts.
  wait_until 60 "moto to answer S3 requests" s3_answers "$MOTO_PORT"
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
}

small_tree() {
  local d=$1
  mkdir -p "$d/dir/sub"
  echo "hello" > "$d/dir/hello.txt"
  head -c 2000000 /dev/urandom > "$d/dir/sub/random.bin"
  python3 -c "import sys; sys.stdout.write(''.join('line %d\n' % i for i in range(50000)))" > "$d/dir/log.txt"
  ln -s hello.txt "$d/dir/link"
}

