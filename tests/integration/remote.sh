#!/usr/bin/env bash
# Integration tests of remote sites: `lifeboat serve` (TLS, htpasswd, append-only), restic against it,
# S3 on a real moto server, rclone, and random faults injected by a proxy.
# Usage: tests/integration/remote.sh path/to/lifeboat
# Needs: openssl, htpasswd (apache2-utils), restic, rclone, moto_server (pip install 'moto[server]').
set -uo pipefail
source "$(dirname "$0")/lib.sh" "${1:?usage: remote.sh path/to/lifeboat}" remote
# Short retries and timeouts so that fault tests stay bounded.
export LIFEBOAT_RETRY=8,0.05,0.5 LIFEBOAT_TIMEOUT=3 LIFEBOAT_CONNECT_TIMEOUT=3

for tool in openssl htpasswd restic rclone moto_server; do
  command -v "$tool" >/dev/null || { echo "remote.sh needs $tool (make deps installs it)"; exit 1; }
done

# cycle REPO SRC: init, backup, second backup, restore (exact), check --read-data, forget --prune, check.
cycle() {
  local R=$1 S=$2 out=$WORK/out-$RANDOM
  lb -r "$R" init >/dev/null
  lb -r "$R" backup "$S" -q
  echo "more" > "$S/dir/added.txt"
  lb -r "$R" backup "$S" -q
  [ "$(lb -r "$R" snapshots --json | python3 -c 'import json,sys; print(len([json.loads(l) for l in sys.stdin if l.strip()]))')" = 2 ] || fail "two snapshots"
  lb -r "$R" restore latest --target "$out" -q
  python3 "$HERE/compare_trees.py" "$S" "$out$S"
  lb -r "$R" check --read-data >/dev/null
  lb -r "$R" forget --keep-last 1 --prune >/dev/null
  [ "$(lb -r "$R" snapshots --json | python3 -c 'import json,sys; print(len([json.loads(l) for l in sys.stdin if l.strip()]))')" = 1 ] || fail "one snapshot left"
  lb -r "$R" check --read-data >/dev/null
  rm -f "$S/dir/added.txt"
}

t_serve_tls_htpasswd() {
  local D=$WORK/serve-tls S=$WORK/src-tls
  mkdir -p "$D" "$S"; make_tree "$S"; make_cert
  # Without an htpasswd file the server refuses to start.
  expect_code 1 lb serve --path "$D" --listen 127.0.0.1:0
  grep -q "htpasswd" "$WORK/err" || fail "serve names the missing htpasswd file"
  htpasswd -B -b -c "$D/.htpasswd" alice 's3cret pass' 2>/dev/null
  start_serve tls --path "$D" --tls --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem" --prometheus
  local port=${SERVE_URL##*:}; port=${port%/}
  export LIFEBOAT_CACERT=$WORK/cert.pem LIFEBOAT_REST_PASSWORD='s3cret pass'
  cycle "rest:https://alice@localhost:$port/alice-repo" "$S"
  # The password never needs to be in argv; in the URL it also works and is never printed.
  LIFEBOAT_REST_PASSWORD= lb -r "rest:https://alice:s3cret%20pass@localhost:$port/alice-repo" snapshots > "$WORK/snaps.txt"
  ! grep -q "s3cret" "$WORK/snaps.txt" || fail "password printed"
  # Wrong password, no CA, wrong name: clear errors, quickly.
  expect_code 1 env LIFEBOAT_REST_PASSWORD=wrong "$BIN" -r "rest:https://alice@localhost:$port/alice-repo" snapshots
  grep -qi "401\|password" "$WORK/err" || fail "wrong password is named"
  local t0=$SECONDS
  expect_code 1 env -u LIFEBOAT_CACERT "$BIN" -r "rest:https://alice@localhost:$port/alice-repo" snapshots
  grep -qi "TLS\|certificate" "$WORK/err" || fail "untrusted certificate is named"
  expect_code 1 "$BIN" -r "rest:https://alice@127.0.0.1:$port/alice-repo" snapshots
  grep -qi "TLS\|certificate" "$WORK/err" || fail "name mismatch is named"
  [ $((SECONDS - t0)) -lt 20 ] || fail "TLS errors are reported quickly"
  # Unreachable host: named, within the timeouts.
  t0=$SECONDS
  expect_code 1 "$BIN" -r "rest:https://alice@localhost:$(free_port)/alice-repo" snapshots
  grep -qi "connect" "$WORK/err" || fail "refused connection is named"
  [ $((SECONDS - t0)) -lt 30 ] || fail "unreachable host is reported within the retry budget"
  # Metrics need credentials and count by repository.
  [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$WORK/cert.pem" "https://localhost:$port/metrics")" = 401 ] || fail "metrics need auth"
  curl -s --cacert "$WORK/cert.pem" -u 'alice:s3cret pass' "https://localhost:$port/metrics" > "$WORK/metrics.txt"
  grep -q 'lifeboat_serve_requests_total{repo="alice-repo",method="POST",type="data",code="200"}' "$WORK/metrics.txt" || fail "request metrics"
  grep -q 'lifeboat_serve_written_bytes_total{repo="alice-repo",type="data"}' "$WORK/metrics.txt" || fail "byte metrics"
  unset LIFEBOAT_CACERT LIFEBOAT_REST_PASSWORD
}

t_restic_against_serve() {
  local D=$WORK/serve-restic S=$WORK/src-restic
  mkdir -p "$D" "$S"; small_tree "$S"; make_cert
  htpasswd -B -b -c "$D/.htpasswd" bob pw 2>/dev/null
  start_serve restic --path "$D" --tls --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem" --private-repos
  local port=${SERVE_URL##*:}; port=${port%/}
  export RESTIC_PASSWORD=restic-pw
  local R="rest:https://bob:pw@localhost:$port/bob/restic"
  restic -q --cacert "$WORK/cert.pem" -r "$R" init >/dev/null
  restic -q --cacert "$WORK/cert.pem" -r "$R" backup "$S" >/dev/null
  restic -q --cacert "$WORK/cert.pem" -r "$R" check --read-data >/dev/null
  restic -q --cacert "$WORK/cert.pem" -r "$R" restore latest --target "$WORK/restic-out" >/dev/null
  python3 "$HERE/compare_trees.py" "$S" "$WORK/restic-out$S"
  restic -q --cacert "$WORK/cert.pem" -r "$R" forget --keep-last 1 --prune >/dev/null
  # Private repositories: bob cannot create one outside /bob/.
  ! restic -q --cacert "$WORK/cert.pem" -r "rest:https://bob:pw@localhost:$port/alice/x" init >/dev/null 2>&1 || fail "private repos"
  unset RESTIC_PASSWORD
}

t_append_only() {
  local D=$WORK/serve-ao S=$WORK/src-ao
  mkdir -p "$D" "$S"; small_tree "$S"
  start_serve ao --path "$D" --no-auth --append-only
  local R="rest:${SERVE_URL}repo"
  lb -r "$R" init >/dev/null
  lb -r "$R" backup "$S" -q
  echo change >> "$S/dir/hello.txt"
  lb -r "$R" backup "$S" -q
  find "$D/repo" -type f ! -path "*/locks/*" | sort > "$WORK/ao-before"
  expect_code 1 lb -r "$R" forget --keep-last 1 --prune
  grep -qi "append-only\|403" "$WORK/err" || fail "the refusal is named"
  find "$D/repo" -type f ! -path "*/locks/*" | sort > "$WORK/ao-after"
  diff "$WORK/ao-before" "$WORK/ao-after" || fail "nothing was deleted"
  [ -z "$(ls "$D/repo/locks")" ] || fail "no lock left behind"
  lb -r "$R" backup "$S" -q
  lb -r "$R" check --read-data >/dev/null
}

t_s3_moto() {
  local S=$WORK/src-s3
  mkdir -p "$S"; make_tree "$S"
  start_moto
  cycle "s3:http://127.0.0.1:$MOTO_PORT/lifeboat-bucket/some/prefix" "$S"
  # A second repository in the same bucket does not see the first.
  lb -r "s3:http://127.0.0.1:$MOTO_PORT/lifeboat-bucket/other" init >/dev/null
  [ "$(lb -r "s3:http://127.0.0.1:$MOTO_PORT/lifeboat-bucket/other" snapshots --json)" = "" ] || fail "prefixes are separate"
  # Missing bucket and missing repository.
  expect_code 1 lb -r "s3:http://127.0.0.1:$MOTO_PORT/no-such-bucket/x" snapshots
  grep -q "does not exist" "$WORK/err" || fail "missing bucket is named"
  expect_code 10 lb -r "s3:http://127.0.0.1:$MOTO_PORT/lifeboat-bucket/nothing" snapshots
  # No credentials.
  expect_code 1 env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY HOME=$WORK "$BIN" -r "s3:http://127.0.0.1:$MOTO_PORT/b/x" snapshots
  grep -q "AWS_ACCESS_KEY_ID" "$WORK/err" || fail "missing credentials are named"
  # Object Lock: written objects carry a retention date (not lock files).
  local R="s3:http://127.0.0.1:$MOTO_PORT/locked-bucket/repo"
  lb -r "$R" --s3-object-lock-days 3 --s3-object-lock-mode compliance init >/dev/null
  lb -r "$R" --s3-object-lock-days 3 --s3-object-lock-mode compliance backup "$S" -q
  python3 - "$MOTO_PORT" <<'EOF'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1")
keys = [o["Key"] for o in s3.list_objects_v2(Bucket="locked-bucket", Prefix="repo/")["Contents"]]
assert any(k.startswith("repo/data/") for k in keys), keys
for k in keys:
    h = s3.head_object(Bucket="locked-bucket", Key=k)
    assert h.get("ObjectLockMode") == "COMPLIANCE", (k, h.get("ObjectLockMode"))
    assert h.get("ObjectLockRetainUntilDate") is not None, k
EOF
}

t_s3_as_of() {
  # Object Lock keeps every version; a forget --prune with the client's credentials only hides them behind delete
  # markers. --s3-as-of reads the bucket as it was, from the versions: the hidden snapshots come back, read-only.
  start_moto
  local S=$WORK/src-asof R="s3:http://127.0.0.1:$MOTO_PORT/asof-bucket/repo" t0
  mkdir -p "$S"; small_tree "$S"
  lb -r "$R" --s3-object-lock-days 1 init >/dev/null
  lb -r "$R" --s3-object-lock-days 1 backup "$S" -q
  echo change >> "$S/dir/hello.txt"
  lb -r "$R" --s3-object-lock-days 1 backup "$S" -q
  # The next whole second: moto keeps whole seconds, so T is after every clean object and before every marker.
  t0=$(date +%s); wait_until 3 "a new second" sh -c "[ \$(date +%s) -gt $t0 ]"
  local T; T=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
  wait_until 3 "a new second" sh -c "[ \$(date +%s) -gt $((t0 + 1)) ]"
  lb -r "$R" forget --keep-last 1 --prune > "$WORK/out" 2>&1 || { cat "$WORK/out"; fail "forget --prune exits 0 on a locked bucket (delete markers)"; }
  lb -r "$R" forget --prune "$(lb -r "$R" snapshots --json | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["id"])')" >/dev/null \
    || fail "the last snapshot is forgotten too"
  [ -z "$(lb -r "$R" snapshots --json)" ] || fail "every snapshot is hidden now"
  [ "$(lb -r "$R" --s3-as-of "$T" snapshots --json | grep -c short_id)" = 2 ] || fail "both snapshots are there as of T"
  lb -r "$R" --s3-as-of "$T" restore latest --target "$WORK/asof-out" -q || fail "restore as of T"
  python3 "$HERE/compare_trees.py" "$S" "$WORK/asof-out$S" || fail "the restored tree is the last clean one"
  lb -r "$R" --s3-as-of "$T" check --read-data >/dev/null || fail "check --read-data as of T"
  # Read-only, and only for S3; bad times are refused with their name.
  expect_code 1 lb -r "$R" --s3-as-of "$T" backup "$S"
  grep -q "read-only" "$WORK/err" || { cat "$WORK/err"; fail "a write as of T is refused, named"; }
  expect_code 1 lb -r "$WORK/local-asof" --s3-as-of "$T" snapshots
  grep -q "applies to s3: repositories only" "$WORK/err" || fail "--s3-as-of on a local repository is refused"
  expect_code 1 lb -r "$R" --s3-as-of yesterday snapshots
  grep -q 'invalid --s3-as-of "yesterday"' "$WORK/err" || fail "a bad time is named"
  expect_code 1 lb -r "$R" --s3-as-of 2999-01-01T00:00:00Z snapshots
  grep -q "in the future" "$WORK/err" || fail "a future time is refused"
  # Before the repository existed there is nothing.
  expect_code 10 lb -r "$R" --s3-as-of 2000-01-01T00:00:00Z snapshots
}

t_s3_signatures() {
  # moto with authentication: the first 3 requests (IAM set-up) pass, then every request's SigV4 signature is
  # checked against the user's secret, as AWS does. (moto mis-verifies listings whose prefix holds a slash,
  # boto3's own included, so only `init` runs: HEAD, PUT of the bucket, and signed uploads with bodies.)
  local P; P=$(free_port)
  INITIAL_NO_AUTH_ACTION_COUNT=3 moto_server -H 127.0.0.1 -p "$P" > "$WORK/moto-auth.log" 2>&1 &
  wait_port "$P" 127.0.0.1 60   # no warm-up request: it would use one of the 3 unauthenticated actions
  read -r KID KSEC < <(python3 "$HERE/moto_iam_user.py" "$P")
  local R="s3:http://127.0.0.1:$P/signed/repo"
  AWS_ACCESS_KEY_ID=$KID AWS_SECRET_ACCESS_KEY=$KSEC lb -r "$R" init >/dev/null
  python3 - "$P" "$KID" "$KSEC" <<'EOF'
import sys, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1",
                  aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3], config=Config(s3={"addressing_style": "path"}))
assert s3.head_object(Bucket="signed", Key="repo/config")["ContentLength"] > 0
EOF
  expect_code 1 env AWS_ACCESS_KEY_ID="$KID" AWS_SECRET_ACCESS_KEY=wrong "$BIN" -r "$R" snapshots
  grep -q "AWS_SECRET_ACCESS_KEY" "$WORK/err" || fail "a wrong secret is named"
  expect_code 1 env AWS_ACCESS_KEY_ID=AKIANOBODY AWS_SECRET_ACCESS_KEY=wrong "$BIN" -r "$R" snapshots
  grep -q "AWS_ACCESS_KEY_ID" "$WORK/err" || fail "an unknown access key is named"
}

t_rclone() {
  local S=$WORK/src-rclone
  mkdir -p "$S"; make_tree "$S"
  cycle "rclone:$WORK/rclone-remote/repo" "$S"
  # The same repository read directly from the folder: the layouts agree.
  lb -r "$WORK/rclone-remote/repo" check >/dev/null
  expect_code 1 env LIFEBOAT_RCLONE_PROGRAM=/nonexistent "$BIN" -r "rclone:$WORK/x" snapshots
  grep -q "rclone" "$WORK/err" || fail "missing rclone is named"
}

t_metadata_cache() {
  local D=$WORK/serve-cache S=$WORK/src-cache
  mkdir -p "$D" "$S"; small_tree "$S"
  start_serve cache --path "$D" --no-auth --prometheus
  local R="rest:${SERVE_URL}repo"
  export LIFEBOAT_CACHE_DIR=$WORK/cache
  reads() { curl -s "${SERVE_URL}metrics" | awk -F'[{}" ]' '/^lifeboat_serve_read_bytes_total/ && /type="(data|index|snapshots)"/ {sum += $NF} END {print sum+0}'; }
  lb -r "$R" init >/dev/null
  lb -r "$R" backup "$S" -q >/dev/null
  lb -r "$R" ls latest --recursive >/dev/null   # fetches each tree pack once
  local before; before=$(reads)
  lb -r "$R" snapshots >/dev/null
  lb -r "$R" ls latest --recursive >/dev/null
  lb -r "$R" backup "$S" -q >/dev/null     # unchanged: parent trees from the cache
  lb -r "$R" check >/dev/null
  [ "$(reads)" = "$before" ] || { curl -s "${SERVE_URL}metrics" | grep read_bytes; fail "no index, snapshot or tree downloads with a warm cache ($before -> $(reads))"; }
  lb -r "$R" --no-cache ls latest >/dev/null
  [ "$(reads)" -gt "$before" ] || fail "--no-cache downloads"
  unset LIFEBOAT_CACHE_DIR
}

# fault_run NAME REPO: backups through a proxy that injects faults. Each attempt either succeeds or
# fails with a clear message; after every attempt the repository (read without faults) passes check.
fault_backups() {
  local via=$1 direct=$2 S=$3
  local ok=0
  for attempt in 1 2 3 4; do
    if timeout 300 "$BIN" -r "$via" backup "$S" -q > "$WORK/fault-out" 2> "$WORK/fault-err"; then ok=1; else
      tail -1 "$WORK/fault-err" | grep -q "Fatal:" || { cat "$WORK/fault-err" | tail -5; fail "a failed backup says why"; }
    fi
    lb -r "$direct" check >/dev/null || fail "repository consistent after attempt $attempt"
    [ $ok = 1 ] && break
  done
  [ $ok = 1 ] || fail "a rerun completes"
  lb -r "$direct" check --read-data >/dev/null
  timeout 300 "$BIN" -r "$via" check --read-data >/dev/null || fail "check --read-data through the faults"
  timeout 300 "$BIN" -r "$via" restore latest --target "$WORK/fault-restore-$RANDOM" -q || fail "restore through the faults"
}

# start_faultproxy UPSTREAM SEED NAME: faultproxy.py in front of UPSTREAM (15% faults); sets FAULT_PORT.
start_faultproxy() {
  FAULT_PORT=$(free_port)
  python3 "$HERE/faultproxy.py" "$FAULT_PORT" "$1" --rate 0.15 --seed "$2" --stall 6 --max-seconds 900 --log "$WORK/faults-$3.log" >/dev/null &
  wait_port "$FAULT_PORT"
}

faults_were_injected() {  # faults_were_injected NAME: prints the faults by kind; there must be some
  echo "    faults injected: $(sort "$WORK/faults-$1.log" | cut -d' ' -f1 | uniq -c | tr '\n' ' ')"
  [ "$(wc -l < "$WORK/faults-$1.log")" -gt 5 ] || fail "faults were injected"
}

t_faults_rest() {
  local D=$WORK/serve-fault S=$WORK/src-fault
  mkdir -p "$D" "$S"; make_tree "$S"; small_tree "$S/more"
  start_serve fault --path "$D" --no-auth
  local up=${SERVE_URL#http://}; up=${up%/}
  start_faultproxy "$up" 7 rest
  lb -r "rest:${SERVE_URL}repo" init --pack-size 1 >/dev/null
  fault_backups "rest:http://127.0.0.1:$FAULT_PORT/repo" "rest:${SERVE_URL}repo" "$S"
  faults_were_injected rest
}

t_faults_s3() {
  local S=$WORK/src-fault-s3
  mkdir -p "$S"; make_tree "$S"
  start_moto
  start_faultproxy "127.0.0.1:$MOTO_PORT" 11 s3
  lb -r "s3:http://127.0.0.1:$MOTO_PORT/faulty/repo" init --pack-size 1 >/dev/null
  fault_backups "s3:http://127.0.0.1:$FAULT_PORT/faulty/repo" "s3:http://127.0.0.1:$MOTO_PORT/faulty/repo" "$S"
  faults_were_injected s3
}

# serve_repo_and_blob TAG BYTES: `lifeboat serve` on $WORK/serve-TAG (no auth) with a repository "repo", and
# $WORK/TAG-blob, BYTES of random data; BLOB_NAME is its SHA-256 (the object name it may be stored under).
serve_repo_and_blob() {
  mkdir -p "$WORK/serve-$1"
  start_serve "$1" --path "$WORK/serve-$1" --no-auth
  lb -r "rest:${SERVE_URL}repo" init >/dev/null
  head -c "$2" /dev/urandom > "$WORK/$1-blob"
  BLOB_NAME=$(sha256sum "$WORK/$1-blob" | cut -d" " -f1)
}

t_serve_graceful_stop() {  # SIGTERM: no new connections, the upload in progress completes, exit 0
  local D=$WORK/serve-gs name
  serve_repo_and_blob gs 600000; name=$BLOB_NAME
  # A slow upload (200 kB/s: 3 s), interrupted by SIGTERM after 1 s.
  curl -s -o /dev/null -w '%{http_code}' --limit-rate 200k -X POST --data-binary @"$WORK/gs-blob" \
    "${SERVE_URL}repo/data/$name" > "$WORK/gs-code" &
  local up=$!
  # The upload is in progress (the server streams it to a temporary file) when the stop comes.
  wait_until 30 "the slow upload to reach the server" has_nonempty_file "$D/repo/data" ".tmp-${name:0:16}-*"
  kill -TERM "$SERVE_PID"
  local port=${SERVE_URL##*:}; port=${port%/}
  wait_until 30 "serve to close its listener after SIGTERM" eval '[ "$(tcp_sockets 0A "$port")" = 0 ]'
  local rc=0; curl -s -m 2 -o /dev/null "${SERVE_URL}repo/config" || rc=$?
  [ "$rc" = 7 ] || fail "a stopping server accepts no new connection (curl $rc)"
  wait "$up"
  [ "$(cat "$WORK/gs-code")" = 200 ] || fail "the upload in progress completed (HTTP $(cat "$WORK/gs-code"))"
  cmp -s "$WORK/gs-blob" "$D/repo/data/${name:0:2}/$name" || cmp -s "$WORK/gs-blob" "$D/repo/data/$name" || fail "the uploaded object is whole"
  rc=0; wait "$SERVE_PID" || rc=$?
  [ "$rc" = 0 ] || fail "serve exits 0 after a graceful stop (got $rc)"
}

# Issue 11: `Range: bytes=0-9223372036854775807` on an existing pack killed the server (overflow). Every form is
# answered, and the server lives on.
t_serve_range_requests() {
  local D=$WORK/serve-range name
  serve_repo_and_blob range 100000; name=$BLOB_NAME
  [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary @"$WORK/range-blob" "${SERVE_URL}repo/data/$name")" = 200 ] || fail "upload"
  local U="${SERVE_URL}repo/data/$name" spec code bytes got
  while read -r spec code bytes; do
    got=$(curl -s -m 5 -o "$WORK/range-out" -w '%{http_code}' -H "Range: $spec" "$U") || true
    [ "$got" = "$code" ] || fail "Range: $spec answered $got, expected $code"
    [ "$code" != 206 ] || [ "$(stat -c %s "$WORK/range-out")" = "$bytes" ] || fail "Range: $spec gave $(stat -c %s "$WORK/range-out") bytes, expected $bytes"
  done <<RANGES
bytes=0-9223372036854775807 206 100000
bytes=99990-9223372036854775807 206 10
bytes=0-99999999999999999999999999999 206 100000
bytes=-9223372036854775807 206 100000
bytes=-99999999999999999999999999999 206 100000
bytes=9223372036854775807- 416 0
bytes=9223372036854775806-9223372036854775807 416 0
bytes=0-9 206 10
bytes=10- 206 99990
bytes=-10 206 10
bytes=100000- 416 0
bytes=5-4 416 0
bytes=0-1,5-6 416 0
bytes=abc 416 0
bytes=-0 416 0
RANGES
  curl -s -o "$WORK/range-out" -H "Range: bytes=0-9223372036854775807" "$U"
  cmp -s "$WORK/range-out" "$WORK/range-blob" || fail "the whole object comes back"
  kill -0 "$SERVE_PID" || fail "the server is still running"
  [ "$(curl -s -o /dev/null -w '%{http_code}' "${SERVE_URL}repo/config")" = 200 ] || fail "the server still answers"
  kill "$SERVE_PID"
}

# Issue 11: 300 connections that send half a request line used to exhaust the server's descriptors (accept then
# failed over and over, and the server sometimes died). With a small descriptor limit: connections over the cap are
# answered 503 at once, the stalled ones get 408 after --header-timeout, and the server serves again afterwards.
t_serve_connection_flood() {
  local D=$WORK/serve-flood url=""
  mkdir -p "$D"
  ( ulimit -n 256; exec "$BIN" serve --json --listen 127.0.0.1:0 --path "$D" --no-auth --header-timeout 1 --max-connections 100 ) \
    > "$WORK/serve-flood.out" 2> "$WORK/serve-flood.err" &
  local pid=$!
  for _ in $(seq 1 100); do
    url=$(python3 -c "import json; print(json.loads(open('$WORK/serve-flood.out').readline())['url'])" 2>/dev/null) && break
    sleep 0.1
  done
  [ -n "$url" ] || { cat "$WORK/serve-flood.err"; fail "serve did not start"; }
  lb -r "rest:${url}repo" init >/dev/null
  local port=${url##*:}; port=${port%/}
  python3 - "$port" > "$WORK/flood.out" <<'PY'
import select, socket, sys, time
port, n = int(sys.argv[1]), 300
socks = []
for _ in range(n):
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /repo/con")          # half a request line, then nothing
    except OSError:
        pass
    s.setblocking(False)
    socks.append(s)
answers, open_ = {}, {s: b"" for s in socks}
deadline = time.time() + 20
while open_ and time.time() < deadline:
    r, _, _ = select.select(list(open_), [], [], 0.5)
    for s in r:
        try:
            d = s.recv(4096)
        except OSError:
            d = b""
        if d:
            open_[s] += d
            continue
        status = open_.pop(s)[:12].decode(errors="replace") or "closed"
        answers[status] = answers.get(status, 0) + 1
        s.close()
print(" ".join("%s:%d" % (k.replace(" ", "_"), v) for k, v in sorted(answers.items())), "still-open:%d" % len(open_))
PY
  echo "    $(cat "$WORK/flood.out")"
  grep -q "still-open:0" "$WORK/flood.out" || fail "every stalled connection is closed by the server in bounded time"
  grep -q "HTTP/1.1_408" "$WORK/flood.out" || fail "stalled requests are answered 408"
  grep -q "HTTP/1.1_503" "$WORK/flood.out" || fail "connections over the cap are answered 503"
  kill -0 "$pid" || { cat "$WORK/serve-flood.err"; fail "the server survived the flood"; }
  [ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "${url}repo/config")" = 200 ] || fail "the server answers after the flood"
  lb -r "rest:${url}repo" snapshots >/dev/null || fail "a client works after the flood"
  kill "$pid"
}

# Issue 11: five concurrent 9 MB uploads against a 30 MB quota: three fit, two are refused, never all five.
t_serve_quota_race() {
  local D=$WORK/serve-quota
  mkdir -p "$D"
  start_serve quota --path "$D" --no-auth --max-size 30000000
  lb -r "rest:${SERVE_URL}repo" init >/dev/null
  local pids=() i name
  for i in 1 2 3 4 5; do
    head -c 9000000 /dev/urandom > "$WORK/quota-$i"
    name=$(sha256sum "$WORK/quota-$i" | cut -d" " -f1)
    curl -s -m 60 -o /dev/null -w '%{http_code}\n' -X POST --data-binary @"$WORK/quota-$i" "${SERVE_URL}repo/data/$name" > "$WORK/quota-code-$i" &
    pids+=($!)
  done
  wait "${pids[@]}"
  local ok; ok=$(cat "$WORK"/quota-code-* | grep -c '^200$' || true)
  local full; full=$(cat "$WORK"/quota-code-* | grep -c '^413$' || true)
  [ "$ok" = 3 ] && [ "$full" = 2 ] || { cat "$WORK"/quota-code-*; fail "three uploads fit, two are refused (got $ok stored, $full refused)"; }
  local used; used=$(du -sb "$D" | cut -f1)
  [ "$used" -le 30000000 ] || fail "the folder stays under the quota ($used bytes)"
  kill "$SERVE_PID"
}

# Issue 11: a NUL in credentials, /metrics of other users' repositories, server paths in error bodies.
t_serve_credentials_metrics_errors() {
  local D=$WORK/serve-creds
  mkdir -p "$D"
  htpasswd -B -b -c "$D/.htpasswd" alice secret 2>/dev/null
  htpasswd -B -b "$D/.htpasswd" bob secret 2>/dev/null
  start_serve creds --path "$D" --private-repos --prometheus
  local nul; nul=$(printf 'alice:secret\0junk' | base64)
  [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Basic $nul" "${SERVE_URL}alice/r?create=true")" = 401 ] \
    || fail "password\\0junk does not authenticate as password"
  local hostport=${SERVE_URL#http://}; hostport=${hostport%/}
  LIFEBOAT_REST_PASSWORD=secret lb -r "rest:http://alice@$hostport/alice/r" init >/dev/null
  LIFEBOAT_REST_PASSWORD=secret lb -r "rest:http://bob@$hostport/bob/r" init >/dev/null
  curl -s -u alice:secret "${SERVE_URL}metrics" > "$WORK/alice-metrics"
  grep -q 'repo="alice/r"' "$WORK/alice-metrics" || fail "alice sees her repository"
  ! grep -q 'bob' "$WORK/alice-metrics" || fail "alice does not see bob's repository"
  local body; body=$(curl -s -u alice:secret "${SERVE_URL}alice/r/data/$(printf 'ab%.0s' $(seq 32))")
  [ -n "$body" ] && ! grep -q "$D" <<< "$body" || fail "a 404 does not reveal the server's folder ($body)"
  : > "$D/alice/blocked"
  body=$(curl -s -u alice:secret -X POST "${SERVE_URL}alice/blocked?create=true")
  ! grep -q "$D" <<< "$body" || fail "a 500 does not reveal the server's folder ($body)"
  kill "$SERVE_PID"
}

for t in ${REMOTE_TESTS:-t_serve_tls_htpasswd t_restic_against_serve t_append_only t_s3_moto t_s3_as_of t_s3_signatures t_rclone t_metadata_cache t_faults_rest t_faults_s3 t_serve_graceful_stop t_serve_range_requests t_serve_connection_flood t_serve_quota_race t_serve_credentials_metrics_errors}; do
  run_test "$t"
done
echo "remote: $PASSED passed, $FAILED failed${FAILURES:+ (${FAILURES[*]})}"
[ "$FAILED" -eq 0 ]
