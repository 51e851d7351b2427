# Shared set-up and helpers of the integration suites.
# Usage, at the top of a suite: source "$(dirname "$0")/lib.sh" BIN NAME
# Sets BIN (absolute), HERE (this folder) and WORK (a fresh folder, removed with every process using it on exit).
BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=$(mktemp -d "/tmp/lifeboat-$2.XXXXXX")
chmod 755 "$WORK"
trap 'pkill -9 -f "$WORK" 2>/dev/null; pkill -9 -P $$ 2>/dev/null; umount "$WORK"/src-xfs/mnt 2>/dev/null; rm -rf "$WORK"' EXIT
export LIFEBOAT_KDF_PARAMS=1024,8,1          # cheap scrypt for tests only
echo "secret-password" > "$WORK/pw"
export LIFEBOAT_PASSWORD_FILE=$WORK/pw
unset LIFEBOAT_REPOSITORY LIFEBOAT_PASSWORD

PASSED=0; FAILED=0; FAILURES=()
lb() { "$BIN" "$@"; }
fail() { echo "    FAIL: $*"; return 1; }
expect_code() { local want=$1 got=0; shift; "$@" >"$WORK/out" 2>"$WORK/err" || got=$?; [ "$got" -eq "$want" ] || { cat "$WORK/out" "$WORK/err" | tail -5; fail "expected exit $want, got $got: $*"; }; }
json_field() { python3 -c "import json,sys; d=[json.loads(l) for l in open('$1') if l.strip().startswith('{')]; d=[x for x in d if x.get('message_type')=='$2'][-1]; print(d['$3'])"; }
run_test() {
  local name=$1
  echo "--- $name"
  # Not in an `if` condition: bash ignores `set -e` there, and a failed step must fail the test.
  ( set -eE; trap 'echo "    FAIL at line $LINENO: $BASH_COMMAND"' ERR; "$name" )
  if [ $? -eq 0 ]; then PASSED=$((PASSED+1)); echo "    ok"; else FAILED=$((FAILED+1)); FAILURES+=("$name"); fi
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
wait_port() { local h=${2:-127.0.0.1}; for _ in $(seq 1 200); do (echo > "/dev/tcp/$h/$1") 2>/dev/null && return 0; sleep 0.1; done; fail "port $1 did not open"; }  # wait_port PORT [HOST]

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
  for _ in $(seq 1 100); do
    SERVE_URL=$(python3 -c "import json; print(json.loads(open('$WORK/serve-$name.out').readline())['url'])" 2>/dev/null) && return 0
    sleep 0.1
  done
  cat "$WORK/serve-$name.err"; fail "serve $name did not start"
}

start_moto() {
  MOTO_PORT=$(free_port)
  moto_server -H 127.0.0.1 -p "$MOTO_PORT" > "$WORK/moto.log" 2>&1 &
  wait_port "$MOTO_PORT"
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

