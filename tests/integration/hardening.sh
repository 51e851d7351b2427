#!/usr/bin/env bash
# Integration tests of issue 11 (hardening): hostile numbers, damaged and lost repository objects, repairs,
# read-only media, key files, lock lifetimes, files that change while read, and remote restores that read packs.
# Usage: tests/integration/hardening.sh path/to/lifeboat   (HARDENING_TESTS="t_a t_b" picks tests)
set -uo pipefail
source "$(dirname "$0")/lib.sh" "${1:?usage: hardening.sh path/to/lifeboat}" hardening

# Numbers from options, the environment and configuration files are checked: a clear error, exit 1, no trap.
t_hostile_numbers() {
  local R=$WORK/r-num
  lb -r "$R" init >/dev/null
  expect_code 1 lb -r "$R" --timeout 1e300 snapshots;            grep -q -- "--timeout must be between" "$WORK/err"
  expect_code 1 lb -r "$R" --timeout nan snapshots;              grep -q -- "--timeout" "$WORK/err"
  expect_code 1 env LIFEBOAT_RETRY=1e300 "$BIN" -r "$R" snapshots; grep -q "LIFEBOAT_RETRY" "$WORK/err"
  expect_code 1 env LIFEBOAT_RETRY=3,inf "$BIN" -r "$R" snapshots; grep -q "LIFEBOAT_RETRY" "$WORK/err"
  expect_code 1 env LIFEBOAT_TIMEOUT=inf "$BIN" -r "$R" snapshots; grep -q "LIFEBOAT_TIMEOUT" "$WORK/err"
  expect_code 1 env LIFEBOAT_LOCK_REFRESH=-1 "$BIN" -r "$R" snapshots; grep -q "LIFEBOAT_LOCK_REFRESH" "$WORK/err"
  expect_code 1 env LIFEBOAT_NOW=1e300 "$BIN" -r "$R" snapshots; grep -q "LIFEBOAT_NOW" "$WORK/err"
  expect_code 1 env LIFEBOAT_KDF_PARAMS=4194304,32,16 "$BIN" -r "$WORK/r-num2" init; grep -q "LIFEBOAT_KDF_PARAMS" "$WORK/err"
  expect_code 1 lb -r "$WORK/r-num3" init --pack-size 99999999999999999; grep -q -- "--pack-size" "$WORK/err"
  expect_code 1 lb -r "$R" init --s3-object-lock-days 99999999999999; grep -q "object-lock-days" "$WORK/err"
  expect_code 1 lb -r "$R" check --read-data-subset 1/99999999999999999999999
  expect_code 1 lb -r "$R" prune --grace 1e300
  expect_code 1 lb -r "$R" prune --grace inf
  # Durations in the sites file: the line and column of the bad value.
  local v
  for v in 1e300 inf nan 1e11 -5s 0; do
    printf 'sites:\n  - {name: a, repository: %s, password_file: %s, role: primary}\n  - {name: b, repository: %s, password_file: %s, role: replica}\nreplication:\n  interval: %s\n' "$R" "$WORK/pw" "$R-b" "$WORK/pw" "$v" > "$WORK/sites.yaml"
    expect_code 1 lb replicate --config "$WORK/sites.yaml"
    grep -q "sites.yaml:5:" "$WORK/err" || { cat "$WORK/err"; fail "interval $v: error at line 5"; }
  done
  # --read-data-subset N/T with T above 256 reads its share of the packs (it read nothing before).
  mkdir -p "$WORK/src-num"; for i in $(seq 1 40); do head -c 300000 /dev/urandom > "$WORK/src-num/f$i"; done
  lb -r "$WORK/r-subset" init --pack-size 1 >/dev/null
  lb -r "$WORK/r-subset" backup "$WORK/src-num" -q
  local total=0 n
  for n in $(seq 1 300); do
    total=$(( total + $(lb -r "$WORK/r-subset" check --read-data-subset "$n/300" --json | python3 -c "import json,sys; print([json.loads(l) for l in sys.stdin][-1]['packs_read'])") ))
  done
  local packs; packs=$(find "$WORK/r-subset/data" -type f | wc -l)
  [ "$total" -eq "$packs" ] || fail "the 300 parts read $total packs, the repository has $packs"
}

# One damaged index file and one damaged snapshot file: everything else works, each is named, repair fixes it.
t_damaged_index_and_snapshot() {
  local R=$WORK/r-dmg S=$WORK/src-dmg
  mkdir -p "$S"; small_tree "$S"
  lb -r "$R" init >/dev/null
  lb -r "$R" backup "$S" -q
  echo more > "$S/more"; lb -r "$R" backup "$S" -q
  # The older snapshot is damaged, so that `latest` (the newer one) is the one to restore.
  local snaps=( $(lb -r "$R" snapshots --json | python3 -c "import json,sys; print(' '.join(s['id'] for s in [json.loads(l) for l in sys.stdin if l.strip()]))") ) idx=( $(ls "$R/index") )
  truncate -s 20 "$R/snapshots/${snaps[0]}"
  truncate -s 30 "$R/index/${idx[0]}"
  lb -r "$R" snapshots --json > "$WORK/s.json" 2> "$WORK/s.err"
  python3 -c "import json; assert len([json.loads(l) for l in open('$WORK/s.json') if l.strip()]) == 1"
  grep -q "snapshot ${snaps[0]:0:8} is damaged" "$WORK/s.err" || { cat "$WORK/s.err"; fail "the damaged snapshot is named"; }
  # restore latest goes on (it may lack the blobs the damaged index listed: those files are named, exit 3)
  local rc=0; lb -r "$R" restore latest --target "$WORK/out-dmg1" >/dev/null 2>"$WORK/r.err" || rc=$?
  [ $rc -eq 0 ] || [ $rc -eq 3 ] || { cat "$WORK/r.err"; fail "restore latest with a damaged index: exit $rc"; }
  grep -q "index file ${idx[0]:0:8} is damaged" "$WORK/r.err" || { cat "$WORK/r.err"; fail "the damaged index file is named"; }
  # prune refuses: it cannot see what the damaged objects name.
  expect_code 1 lb -r "$R" prune --grace 0
  lb -r "$R" repair index --json > "$WORK/ri.json"
  [ "$(json_field "$WORK/ri.json" summary packs_from_headers)" -ge 1 ] || fail "repair index read pack headers"
  lb -r "$R" restore latest --target "$WORK/out-dmg2" --verify >/dev/null
  diff -r "$S" "$WORK/out-dmg2$S" >/dev/null || fail "the restore after repair index is exact"
  expect_code 1 lb -r "$R" check
  lb -r "$R" forget "${snaps[0]:0:8}" >/dev/null      # a damaged snapshot can be removed by its ID
  lb -r "$R" check --read-data >/dev/null
  lb -r "$R" prune --grace 0 >/dev/null
  lb -r "$R" check --read-data >/dev/null
}

# A pack lost from storage: the next backup notices and stores that data again; repair snapshots fixes the old ones.
t_lost_pack() {
  local R=$WORK/r-lost S=$WORK/src-lost
  mkdir -p "$S"; for i in $(seq 1 6); do head -c 400000 /dev/urandom > "$S/f$i"; done
  lb -r "$R" init --pack-size 1 >/dev/null
  lb -r "$R" backup "$S" -q
  local victim; victim=$(find "$R/data" -type f -size +300k | sort | head -1)   # a data pack (tree packs are small)
  rm "$victim"
  lb -r "$R" backup "$S" > /dev/null 2> "$WORK/b.err"
  grep -q "missing from the repository" "$WORK/b.err" || { cat "$WORK/b.err"; fail "the backup says a pack is gone"; }
  expect_code 1 lb -r "$R" check            # the old snapshot lacks data; the index names the lost pack
  lb -r "$R" restore latest --target "$WORK/out-lost" --verify >/dev/null
  diff -r "$S" "$WORK/out-lost$S" >/dev/null || fail "the new snapshot restores exactly"
  # The new backup stored the same blobs again, which heals the old snapshot too: once the index no longer
  # names the lost pack, the repository is whole.
  lb -r "$R" repair index >/dev/null 2>&1
  lb -r "$R" check --read-data >/dev/null
  # Without a new backup, `repair snapshots` rewrites the snapshot around what is lost.
  local R2=$WORK/r-lost2
  lb -r "$R2" init --pack-size 1 >/dev/null
  lb -r "$R2" backup "$S" -q
  rm "$(find "$R2/data" -type f -size +300k | sort | head -1)"
  lb -r "$R2" repair index >/dev/null 2>&1
  lb -r "$R2" repair snapshots --dry-run --json > "$WORK/rs-dry.json"
  [ "$(json_field "$WORK/rs-dry.json" summary repaired)" = 1 ] || fail "the dry run finds the snapshot to repair"
  lb -r "$R2" repair snapshots --forget --json > "$WORK/rs.json"
  [ "$(json_field "$WORK/rs.json" summary repaired)" = 1 ] || fail "a snapshot was repaired"
  lb -r "$R2" snapshots --json | python3 -c "import json,sys; s=[json.loads(l) for l in sys.stdin if l.strip()]; assert len(s) == 1 and 'repaired' in s[0]['tags'], s"
  lb -r "$R2" ls latest --recursive | grep -q '\.repaired$' || fail "the damaged file is renamed .repaired"
  lb -r "$R2" check --read-data >/dev/null
}

# A repository on read-only media: restore, check, ls and find work (without a lock); backup fails cleanly.
t_read_only_media() {
  local R=$WORK/r-ro S=$WORK/src-ro M=$WORK/ro
  mkdir -p "$S" "$M"; small_tree "$S"
  lb -r "$R" init >/dev/null; lb -r "$R" backup "$S" -q
  mount -t tmpfs -o size=64m tmpfs "$M" || { echo "    (no tmpfs mount here: skipped)"; return 0; }
  cp -a "$R" "$M/repo"; mount -o remount,ro "$M"
  lb -r "$M/repo" restore latest --target "$WORK/out-ro" --verify >/dev/null 2>"$WORK/ro.err"
  grep -q "read-only" "$WORK/ro.err" || fail "the missing lock is explained"
  diff -r "$S" "$WORK/out-ro$S" >/dev/null || fail "exact restore from read-only media"
  lb -r "$M/repo" check --read-data >/dev/null 2>&1
  lb -r "$M/repo" ls latest --no-lock >/dev/null
  lb -r "$M/repo" find hello.txt >/dev/null 2>&1
  expect_code 1 lb -r "$M/repo" backup "$S"
  grep -q "Read-only file system" "$WORK/err" || fail "backup names the cause"
  umount "$M"
}

# Key files: restic's format, a damaged key, and a planted key with huge scrypt parameters.
t_key_files() {
  local R=$WORK/r-keys
  if command -v restic >/dev/null; then
    RESTIC_PASSWORD=x restic init -r "$WORK/restic-repo" >/dev/null 2>&1
    expect_code 10 lb -r "$WORK/restic-repo" snapshots
    grep -qi "restic" "$WORK/err" || { cat "$WORK/err"; fail "a restic repository is named as such"; }
  fi
  lb -r "$R" init >/dev/null
  local key; key=$(ls "$R/keys")
  python3 - "$R/keys" <<'EOF'
import hashlib, json, os, sys
d = sys.argv[1]
k = json.load(open(os.path.join(d, os.listdir(d)[0])))
k["scrypt"] = {"n": 4194304, "r": 32, "p": 16}
b = json.dumps(k, sort_keys=True).encode()
open(os.path.join(d, "0" * 8 + hashlib.sha256(b).hexdigest()[8:]), "wb").write(b)  # sorts first; name does not match
open(os.path.join(d, hashlib.sha256(b).hexdigest()), "wb").write(b)
EOF
  local start=$SECONDS
  lb -r "$R" snapshots >/dev/null
  [ $(( SECONDS - start )) -lt 20 ] || fail "the costly keys were not derived"
  lb -r "$R" key list > "$WORK/keys.txt"
  grep -q "scrypt" "$WORK/keys.txt" || { cat "$WORK/keys.txt"; fail "key list names the unusable key"; }
  echo wrong > "$WORK/wrong"
  expect_code 12 lb -r "$R" --password-file "$WORK/wrong" snapshots
  # The only usable key damaged: not "wrong password", but the key named.
  printf '{"broken":' > "$R/keys/$key"
  expect_code 1 lb -r "$R" snapshots
  grep -q "${key:0:8}" "$WORK/err" || { cat "$WORK/err"; fail "the damaged key is named"; }
}

# A lock that cannot be refreshed stops the backup before the lock could look stale; no snapshot is written.
t_lock_refresh_failure() {
  local R=$WORK/r-lock
  lb -r "$R" init >/dev/null
  ( rc=0; LIFEBOAT_LOCK_REFRESH=0.2 LIFEBOAT_LOCK_STALE=2 "$BIN" -r "$R" backup --stdin --stdin-filename slow.bin \
      < <(head -c 100000 /dev/urandom; sleep 4; head -c 100000 /dev/urandom 2>/dev/null || true) > "$WORK/lock.out" 2> "$WORK/lock.err" || rc=$?
    echo $rc > "$WORK/lock.rc" ) &
  wait_until 30 "the backup's lock" has_nonempty_file "$R/locks" "[0-9a-f]*"
  chattr +i "$R/locks" 2>/dev/null || { wait; echo "    (no chattr here: skipped)"; return 0; }
  wait_until 60 "the backup to stop" test -s "$WORK/lock.rc"
  chattr -i "$R/locks"
  [ "$(cat "$WORK/lock.rc")" = 11 ] || { cat "$WORK/lock.err"; fail "the backup went on without its lock (exit $(cat "$WORK/lock.rc"))"; }
  grep -q "lock" "$WORK/lock.err" || { cat "$WORK/lock.err"; fail "the lost lock is the reason given"; }
  [ -z "$(ls "$R/snapshots")" ] || fail "no snapshot written after the lock was lost"
  lb -r "$R" check >/dev/null 2>&1
}

# Prune deletes no pack when a superseded index file cannot be removed.
t_prune_stops_on_index_failure() {
  local R=$WORK/r-pidx S=$WORK/src-pidx
  mkdir -p "$S"; head -c 2000000 /dev/urandom > "$S/a"
  lb -r "$R" init --pack-size 1 >/dev/null
  lb -r "$R" backup "$S" -q
  lb -r "$R" forget latest >/dev/null
  local before old; before=$(find "$R/data" -type f | wc -l); old=$(ls "$R/index")
  # The index folder stays writable (the new index is written), but the old index file cannot be removed.
  chattr +i "$R/index/$old" 2>/dev/null || { echo "    (no chattr here: skipped)"; return 0; }
  expect_code 1 lb -r "$R" prune --grace 0
  chattr -i "$R/index/$old"
  grep -q "before deleting any pack" "$WORK/err" || { cat "$WORK/err"; fail "the reason is given"; }
  [ "$(find "$R/data" -type f | wc -l)" -eq "$before" ] || fail "no pack deleted"
  lb -r "$R" prune --grace 0 >/dev/null
  lb -r "$R" check --read-data >/dev/null
}

# A file that changes while it is read: stored as read, size matching, reported (exit 3); restore --verify passes.
t_file_changing_during_backup() {
  local R=$WORK/r-grow S=$WORK/src-grow
  mkdir -p "$S"
  lb -r "$R" init >/dev/null
  # /proc files report size 0 and read as text: a file whose size changes under the reader, every time.
  expect_code 3 lb -r "$R" backup /proc/cpuinfo
  grep -q "changed while being read" "$WORK/err" || fail "the change is reported"
  lb -r "$R" restore latest --target "$WORK/out-proc" --verify >/dev/null
  [ -s "$WORK/out-proc/proc/cpuinfo" ] || fail "the bytes read were stored"
  lb -r "$R" dump latest /proc | tar -t >/dev/null || fail "dump's tar stream is intact"
  # A real file appended to while it is read: exit 0 or 3, and whatever was stored restores and verifies.
  head -c 20000000 /dev/urandom > "$S/growing"
  ( for i in $(seq 1 200); do head -c 65536 /dev/urandom >> "$S/growing"; sleep 0.01; done ) &
  local writer=$! rc=0
  lb -r "$R" backup "$S" -q 2>/dev/null || rc=$?
  kill "$writer" 2>/dev/null; wait "$writer" 2>/dev/null || true
  [ $rc -eq 0 ] || [ $rc -eq 3 ] || fail "backup of a growing file: exit $rc"
  lb -r "$R" restore latest --target "$WORK/out-grow" --verify >/dev/null
}

# Restores from lifeboat serve read packs, not blobs: data requests at most twice the packs touched.
t_remote_restore_reads_packs() {
  local S=$WORK/src-rr
  mkdir -p "$S"
  python3 - "$S" <<'EOF'
import os, random, sys
r = random.Random(7)
for i in range(2000):
    d = os.path.join(sys.argv[1], "d%02d" % (i % 40))
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "f%04d" % i), "wb").write(r.randbytes(r.randint(100, 20000)))
open(os.path.join(sys.argv[1], "big"), "wb").write(r.randbytes(12 << 20))
EOF
  start_serve rr --path "$WORK/serve-rr" --no-auth --prometheus --prometheus-no-auth
  local R=rest:${SERVE_URL}rr
  lb -r "$R" init >/dev/null
  lb -r "$R" backup "$S" -q
  local packs; packs=$(find "$WORK/serve-rr/rr/data" -type f | wc -l)
  data_gets() { curl -s "${SERVE_URL}metrics" | awk '/lifeboat_serve_requests_total\{repo="\/?rr",method="GET",type="data"/ { n += $2 } END { print n + 0 }'; }
  local before after
  before=$(data_gets)
  lb -r "$R" --cache-dir "$WORK/cache-rr" restore latest --target "$WORK/out-rr" --json > "$WORK/rr.json"
  after=$(data_gets)
  diff -r "$S" "$WORK/out-rr$S" >/dev/null || fail "exact restore"
  local reads=$(( after - before ))
  echo "    $reads data requests for $packs packs (pack_reads $(json_field "$WORK/rr.json" summary pack_reads))"
  [ "$reads" -le $(( 2 * packs )) ] || fail "$reads data requests for $packs packs"
}

for t in ${HARDENING_TESTS:-t_hostile_numbers t_damaged_index_and_snapshot t_lost_pack t_read_only_media t_key_files \
         t_lock_refresh_failure t_prune_stops_on_index_failure t_file_changing_during_backup t_remote_restore_reads_packs}; do
  run_test "$t"
done
echo "hardening: $PASSED passed, $FAILED failed${FAILURES:+ (${FAILURES[*]})}"
[ "$FAILED" -eq 0 ]
