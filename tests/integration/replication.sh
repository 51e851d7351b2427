#!/usr/bin/env bash
# Integration tests of replication: three sites of different kinds (a local folder as primary, a moto S3
# server and a `lifeboat serve` instance as replicas), outages, SIGKILL, --watch, lag, restore from replicas.
# Usage: tests/integration/replication.sh path/to/lifeboat
set -uo pipefail
source "$(dirname "$0")/lib.sh" "${1:?usage: replication.sh path/to/lifeboat}" repl
unset LIFEBOAT_PASSWORD_FILE
export LIFEBOAT_RETRY=3,0.05,0.2 LIFEBOAT_TIMEOUT=3 LIFEBOAT_CONNECT_TIMEOUT=2 LIFEBOAT_CACHE_DIR=$WORK/cache

status_field() {  # status_field SITE FIELD: from `sites status --json`
  lb sites status --config "$WORK/sites.yaml" --json | python3 -c "import json,sys; print([r for r in [json.loads(l) for l in sys.stdin if l.strip()] if r['site']=='$1'][0].get('$2'))"
}

setup_sites() {
  echo pw-primary > "$WORK/p1"; echo pw-s3 > "$WORK/p2"; echo pw-serve > "$WORK/p3"
  start_moto
  printf 'AWS_ACCESS_KEY_ID=test\nAWS_SECRET_ACCESS_KEY=test\n' > "$WORK/s3.env"
  unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
  SERVE_PORT=$(free_port)
  mkdir -p "$WORK/served"
  SERVE_LISTEN=127.0.0.1:$SERVE_PORT start_serve site --path "$WORK/served" --no-auth
  cat > "$WORK/sites.yaml" <<YAML
sites:
  - {name: home, repository: $WORK/primary, password_file: $WORK/p1, role: primary}
  - name: cloud
    repository: s3:http://127.0.0.1:$MOTO_PORT/replica/lifeboat
    password_file: $WORK/p2
    credentials_file: $WORK/s3.env
    role: replica
  - {name: server, repository: "rest:http://127.0.0.1:$SERVE_PORT/home", password_file: $WORK/p3, role: replica}
replication: {interval: 1s, max_backoff: 2s, state_file: $WORK/state.json}
YAML
  lb -r "$WORK/primary" --password-file "$WORK/p1" init >/dev/null
  # The S3 replica names data like the primary (fast path); the server replica has its own keys (re-encoded).
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test lb -r "s3:http://127.0.0.1:$MOTO_PORT/replica/lifeboat" --password-file "$WORK/p2" \
    init --copy-chunker-params-from "$WORK/primary" --from-password-file "$WORK/p1" >/dev/null
  lb -r "rest:http://127.0.0.1:$SERVE_PORT/home" --password-file "$WORK/p3" init >/dev/null
}

primary() { lb -r "$WORK/primary" --password-file "$WORK/p1" "$@"; }
cloud() { AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test lb -r "s3:http://127.0.0.1:$MOTO_PORT/replica/lifeboat" --password-file "$WORK/p2" "$@"; }
server() { lb -r "rest:http://127.0.0.1:$SERVE_PORT/home" --password-file "$WORK/p3" "$@"; }

t_replication() {
  local S=$WORK/src
  mkdir -p "$S"; make_tree "$S"
  setup_sites
  primary backup "$S" -q >/dev/null
  echo "second" > "$S/dir/second.txt"
  primary backup "$S" -q >/dev/null
  [ "$(status_field cloud missing)" = 2 ] || fail "two snapshots missing before replication"

  # 1. Replicate: every site converges and checks out.
  lb replicate --config "$WORK/sites.yaml" > "$WORK/rep1.out"
  for site in cloud server; do
    [ "$(status_field $site missing)" = 0 ] || fail "$site has every snapshot"
    [ "$(status_field $site lag_seconds)" = 0 ] || fail "$site has no lag"
  done
  cloud check --read-data --json > "$WORK/c1.json"
  server check --read-data --json > "$WORK/c2.json"
  [ "$(json_field "$WORK/c1.json" summary duplicate_blobs)" = 0 ] || fail "cloud: no blob stored twice"
  [ "$(json_field "$WORK/c2.json" summary duplicate_blobs)" = 0 ] || fail "server: no blob stored twice"
  # A second pass sends nothing.
  lb replicate --config "$WORK/sites.yaml" --json > "$WORK/rep2.json"
  python3 -c "import json; d=[json.loads(l) for l in open('$WORK/rep2.json') if l.startswith('{')]; assert all(x['blobs_sent']==0 for x in d if x['message_type']=='site_done'), d"

  # 2. One site down: the others go on, the error is recorded, and the site catches up when it returns.
  kill "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true
  echo "third" > "$S/dir/third.txt"
  primary backup "$S" -q >/dev/null
  expect_code 1 lb replicate --config "$WORK/sites.yaml"
  grep -q "server:" "$WORK/err" || fail "the failing site is named"
  [ "$(status_field cloud missing)" = 0 ] || fail "cloud went on"
  [ "$(status_field server reachable)" = False ] || fail "server is reported unreachable"
  [ "$(status_field server last_error)" != None ] || fail "server's last error is kept"
  # Issue 12: usable as a health check: 20 while a site cannot be reached.
  expect_code 20 lb sites status --config "$WORK/sites.yaml"
  grep -q "NO" "$WORK/out" || fail "the table says the site is not reachable"
  SERVE_LISTEN=127.0.0.1:$SERVE_PORT start_serve site2 --path "$WORK/served" --no-auth
  lb replicate --config "$WORK/sites.yaml" >/dev/null
  [ "$(status_field server missing)" = 0 ] || fail "server caught up"
  server check --read-data --json > "$WORK/c3.json"
  [ "$(json_field "$WORK/c3.json" summary duplicate_blobs)" = 0 ] || fail "server: no blob stored twice after the outage"

  # 3. Lag against an injected clock: a snapshot taken but not replicated, one hour later.
  echo "fourth" > "$S/dir/fourth.txt"
  primary backup "$S" -q >/dev/null
  local later; later=$(primary snapshots --json | python3 -c "import json,sys,datetime; s=[json.loads(l) for l in sys.stdin if l.strip()][-1]['time']; print('%.6f' % (datetime.datetime.fromisoformat(s[:26].rstrip('Z')+'+00:00').timestamp() + 3600))")
  [ "$(LIFEBOAT_NOW=$later status_field cloud lag_seconds)" = 3600 ] || fail "lag is one hour"
  [ "$(LIFEBOAT_NOW=$later status_field server missing)" = 1 ] || fail "one snapshot missing"
  # 21 when a replica lags more than --max-lag; 0 within it; a bad value is a usage error.
  LIFEBOAT_NOW=$later expect_code 21 lb sites status --config "$WORK/sites.yaml" --max-lag 30m
  LIFEBOAT_NOW=$later expect_code 0 lb sites status --config "$WORK/sites.yaml" --max-lag 2h
  expect_code 1 lb sites status --config "$WORK/sites.yaml" --max-lag soon
  grep -q -- "--max-lag" "$WORK/err" || fail "the bad --max-lag is named"
  [ "$(status_field cloud bytes_pending)" -gt 0 ] || fail "bytes pending are counted"
  # Issue 12: the lag reads with its units, and what was pending is what replication then sends (both count
  # bytes as stored: compressed and encrypted), for a replica that names data like the primary.
  LIFEBOAT_NOW=$later lb sites status --config "$WORK/sites.yaml" > "$WORK/table.out" || true
  grep -q "1h 00m" "$WORK/table.out" || { cat "$WORK/table.out"; fail "the lag is printed with its units"; }
  local pending; pending=$(status_field cloud bytes_pending)
  [ "$(status_field cloud bytes_pending_exact)" = True ] || fail "the S3 replica's pending bytes are exact"
  lb replicate --config "$WORK/sites.yaml" --site cloud --json > "$WORK/rep3.json"
  [ "$(json_field "$WORK/rep3.json" site_done bytes_sent)" = "$pending" ] || fail "bytes sent ($(json_field "$WORK/rep3.json" site_done bytes_sent)) = bytes pending ($pending)"

  # 4. SIGKILL in the middle of a replication, then a rerun: the destination stays consistent and nothing
  #    that had arrived is sent again (no blob is stored twice).
  head -c 80000000 /dev/urandom > "$S/big.bin"
  primary backup "$S" -q >/dev/null
  "$BIN" replicate --config "$WORK/sites.yaml" --site server > "$WORK/killed.out" 2>&1 &
  local pid=$!
  wait_until 120 "three packs to reach the server replica" eval '[ "$(find "$WORK/served/home/data" -type f ! -name ".tmp-*" | wc -l)" -ge 3 ]'
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  ! grep -q "server: up to date" "$WORK/killed.out" || fail "the kill came in the middle of the copy"
  server check >/dev/null || fail "consistent after SIGKILL"
  lb replicate --config "$WORK/sites.yaml" --site server --json > "$WORK/resumed.json"
  server check --read-data --json > "$WORK/check.json"
  [ "$(json_field "$WORK/check.json" summary duplicate_blobs)" = 0 ] || fail "no blob was sent twice"
  [ "$(status_field server missing)" = 0 ] || fail "server converged after the kill"

  # 5. --watch picks up new snapshots by itself and stops cleanly on SIGTERM.
  "$BIN" replicate --config "$WORK/sites.yaml" --watch > "$WORK/watch.out" 2>&1 &
  pid=$!
  wait_until 30 "replicate --watch to hold the replication lock" holds_flock "$pid" "$WORK/state.json.lock"
  expect_code 11 lb replicate --config "$WORK/sites.yaml"
  grep -q "another" "$WORK/err" || fail "a second replicate is refused while one runs"
  echo "fifth" > "$S/dir/fifth.txt"
  primary backup "$S" -q >/dev/null
  local ok=0
  for _ in $(seq 1 100); do
    if [ "$(status_field cloud missing)" = 0 ] && [ "$(status_field server missing)" = 0 ]; then ok=1; break; fi
    sleep 0.3
  done
  [ $ok = 1 ] || fail "--watch replicated the new snapshot"
  # Issue 12: its lines reach the file while it runs (standard output is line-buffered, not held until exit).
  alive "$pid" || fail "--watch still runs"
  wait_until 10 "the copied lines in watch.out while --watch runs" grep -q "copied as" "$WORK/watch.out"
  kill -TERM "$pid"
  local rc=0; wait "$pid" || rc=$?
  [ $rc = 0 ] || { cat "$WORK/watch.out"; fail "--watch exits 0 on SIGTERM (got $rc)"; }

  # 6. The primary is lost: each replica alone, with its own password, restores everything exactly.
  rm -rf "$WORK/primary"
  cloud restore latest --target "$WORK/from-cloud" -q
  python3 "$HERE/compare_trees.py" "$S" "$WORK/from-cloud$S"
  server restore latest --target "$WORK/from-server" -q
  python3 "$HERE/compare_trees.py" "$S" "$WORK/from-server$S"
  expect_code 1 lb replicate --config "$WORK/sites.yaml"
  grep -q "primary site home" "$WORK/err" || fail "a lost primary is named"
}

t_copy_command() {
  local S=$WORK/src-copy
  mkdir -p "$S"; make_tree "$S"
  echo pw > "$WORK/pa"; echo other > "$WORK/pb"
  lb -r "$WORK/ca" --password-file "$WORK/pa" init >/dev/null
  lb -r "$WORK/ca" --password-file "$WORK/pa" backup "$S" --tag one -q >/dev/null
  lb -r "$WORK/ca" --password-file "$WORK/pa" backup "$S" --tag two -q >/dev/null
  # Different chunker parameters: data is re-chunked; a tag filter picks one snapshot.
  lb -r "$WORK/cb" --password-file "$WORK/pb" init --chunk-min 65536 --chunk-avg 131072 --chunk-max 524288 >/dev/null
  lb -r "$WORK/cb" --password-file "$WORK/pb" copy --from-repo "$WORK/ca" --from-password-file "$WORK/pa" --tag two --json > "$WORK/copy.json"
  [ "$(json_field "$WORK/copy.json" summary snapshots_copied)" = 1 ] || fail "one snapshot copied"
  lb -r "$WORK/cb" --password-file "$WORK/pb" check --read-data >/dev/null
  lb -r "$WORK/cb" --password-file "$WORK/pb" restore latest --target "$WORK/cb-out" -q
  python3 "$HERE/compare_trees.py" "$S" "$WORK/cb-out$S"
  [ "$(lb -r "$WORK/cb" --password-file "$WORK/pb" snapshots --json | python3 -c 'import json,sys; print([json.loads(l) for l in sys.stdin if l.strip()][0]["tags"])')" = "['two']" ] || fail "tags kept"
  # Copying again copies nothing; a wrong source password is refused.
  lb -r "$WORK/cb" --password-file "$WORK/pb" copy --from-repo "$WORK/ca" --from-password-file "$WORK/pa" --json > "$WORK/copy2.json"
  [ "$(json_field "$WORK/copy2.json" summary snapshots_present)" = 1 ] || fail "the copied snapshot is recognised"
  expect_code 12 lb -r "$WORK/cb" --password-file "$WORK/pb" copy --from-repo "$WORK/ca" --from-password-file "$WORK/pb"
}

for t in ${REPLICATION_TESTS:-t_copy_command t_replication}; do
  run_test "$t"
done
echo "replication: $PASSED passed, $FAILED failed${FAILURES:+ (${FAILURES[*]})}"
[ "$FAILED" -eq 0 ]
