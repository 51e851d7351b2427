#!/usr/bin/env bash
# Integration tests: run the built `lifeboat` binary against real files and a real repository.
# Usage: tests/integration/run.sh path/to/lifeboat
set -uo pipefail
source "$(dirname "$0")/lib.sh" "${1:?usage: run.sh path/to/lifeboat}" it

t_init_and_errors() {
  local R=$WORK/r-init
  lb -r "$R" init >/dev/null
  expect_code 1 lb -r "$R" init
  grep -q "already exists" "$WORK/err" || fail "second init names the cause"
  expect_code 10 lb -r "$WORK/nothing-here" snapshots
  grep -q "no repository" "$WORK/err" || fail "clear no-repository message"
  echo wrong > "$WORK/wrongpw"
  expect_code 12 lb -r "$R" --password-file "$WORK/wrongpw" snapshots
  grep -q "wrong password" "$WORK/err" || fail "clear wrong-password message"
  # Issue 12: a mistyped command gets a suggestion (and the usage exit code), at any depth.
  expect_code 64 lb snapshot
  grep -q "did you mean 'snapshots'" "$WORK/err" || { cat "$WORK/err"; fail "a suggestion for 'snapshot'"; }
  expect_code 64 lb -r "$R" key lst
  grep -q "lifeboat key: unknown command 'lst': did you mean 'list'" "$WORK/err" || { cat "$WORK/err"; fail "a suggestion for 'key lst'"; }
  local before; before=$(find "$R" -type f | wc -l)
  expect_code 12 lb -r "$R" --password-file "$WORK/wrongpw" backup "$HERE"
  [ "$(find "$R" -type f | wc -l)" -eq "$before" ] || fail "wrong password wrote nothing"
  LIFEBOAT_REPOSITORY=$R lb snapshots --json | python3 -c "import json,sys; assert [json.loads(l) for l in sys.stdin if l.strip()]==[]"
  lb version | grep -q "repository format 1"
  expect_code 64 lb -r "$R" snapshots --no-such-flag
}

t_roundtrip_every_kind() {
  local R=$WORK/r-rt S=$WORK/src-rt
  mkdir -p "$S"; make_tree "$S"
  lb -r "$R" init >/dev/null
  lb -r "$R" backup "$S" --tag a,b --host testhost --json > "$WORK/b.json"
  [ "$(json_field "$WORK/b.json" summary error_count)" = 0 ] || fail "no errors"
  lb -r "$R" restore latest --target "$WORK/out-rt" --verify >/dev/null
  python3 "$HERE/compare_trees.py" "$S" "$WORK/out-rt$S"
  # Sparse file restored sparse.
  [ "$(stat -c %b "$WORK/out-rt$S/sparse.img")" -le $(( 2 * $(stat -c %b "$S/sparse.img") + 256 )) ] || fail "sparse file restored sparse"
  lb -r "$R" check --read-data >/dev/null
  lb -r "$R" check --read-data-subset 1/2 --json | python3 -c "import json,sys; d=[json.loads(l) for l in sys.stdin][-1]; assert d['errors']==0, d"
  lb -r "$R" check --read-data-subset 50% >/dev/null
  expect_code 1 lb -r "$R" check --read-data-subset 3/2
  lb -r "$R" snapshots --tag a --host testhost --json | python3 -c "import json,sys; s=[json.loads(l) for l in sys.stdin if l.strip()]; assert len(s)==1 and s[0]['tags']==['a','b'], s"
  lb -r "$R" snapshots --tag nope --json | python3 -c "import json,sys; assert [json.loads(l) for l in sys.stdin if l.strip()]==[]"
}

t_incremental_and_parent() {
  local R=$WORK/r-inc S=$WORK/src-inc
  mkdir -p "$S"; for i in $(seq 1 50); do head -c 20000 /dev/urandom > "$S/f$i"; done
  lb -r "$R" init >/dev/null
  lb -r "$R" backup "$S" --json > "$WORK/1.json"
  [ "$(json_field "$WORK/1.json" summary files_new)" = 50 ] || fail "50 new files"
  lb -r "$R" backup "$S" --json > "$WORK/2.json"
  [ "$(json_field "$WORK/2.json" summary files_unmodified)" = 50 ] || fail "50 unmodified files on re-backup"
  [ "$(json_field "$WORK/2.json" summary data_blobs)" = 0 ] || fail "no new data on re-backup"
  echo changed >> "$S/f7"; rm "$S/f8"; echo new > "$S/new"
  lb -r "$R" backup "$S" --json > "$WORK/3.json"
  [ "$(json_field "$WORK/3.json" summary files_changed)" = 1 ] || fail "one changed file"
  [ "$(json_field "$WORK/3.json" summary files_new)" = 1 ] || fail "one new file"
  local ids; ids=$(lb -r "$R" snapshots --json | python3 -c "import json,sys; print(' '.join(s['short_id'] for s in [json.loads(l) for l in sys.stdin if l.strip()]))")
  set -- $ids
  lb -r "$R" diff "$2" "$3" > "$WORK/diff.txt"
  grep -q "^M .*f7$" "$WORK/diff.txt" && grep -q "^- .*f8$" "$WORK/diff.txt" && grep -q "^+ .*new$" "$WORK/diff.txt" || { cat "$WORK/diff.txt"; fail "diff shows M f7, - f8, + new"; }
  # Dry run writes nothing.
  local before; before=$(find "$R" -type f | wc -l)
  echo more > "$S/more"
  lb -r "$R" backup "$S" --dry-run >/dev/null
  [ "$(find "$R" -type f | wc -l)" -eq "$before" ] || fail "dry run wrote nothing"
}

t_backup_root() {  # "/" itself as the backup path (system directories excluded to keep it small)
  local R=$WORK/r-root ex=() d code=0
  for d in usr opt root tmp var work proc sys home dev run srv mnt media snap boot lib lib64 lib32 libx32 bin sbin; do ex+=(--exclude "/$d"); done
  lb -r "$R" init >/dev/null
  lb -r "$R" backup / -x "${ex[@]}" >/dev/null 2>&1 || code=$?
  [ "$code" -eq 0 ] || [ "$code" -eq 3 ] || fail "backup of / exits 0 (or 3 for a file that vanished), got $code"
  lb -r "$R" snapshots --json | python3 -c "import json,sys; s=[json.loads(l) for l in sys.stdin if l.strip()]; assert s[0]['paths']==['/'], s"
  lb -r "$R" dump latest /etc/passwd | cmp - /etc/passwd
}

t_excludes() {
  local R=$WORK/r-ex S=$WORK/src-ex
  mkdir -p "$S/keep" "$S/cache" "$S/logs" "$S/node_modules/x"
  echo k > "$S/keep/a.txt"; echo l > "$S/logs/a.log"; echo t > "$S/keep/b.tmp"; echo n > "$S/node_modules/x/y"
  printf 'Signature: 8a477f597d28d172789f06886806bc55\n' > "$S/cache/CACHEDIR.TAG"; echo c > "$S/cache/data"
  printf '# comment\n*.tmp\n' > "$WORK/excl"
  lb -r "$R" init >/dev/null
  lb -r "$R" backup "$S" --exclude '*.log' --exclude node_modules --exclude-file "$WORK/excl" --exclude-caches >/dev/null
  lb -r "$R" ls latest --recursive > "$WORK/ls.txt"
  grep -q "keep/a.txt" "$WORK/ls.txt" || fail "kept file listed"
  ! grep -qE "a.log|b.tmp|node_modules|cache/data" "$WORK/ls.txt" || { cat "$WORK/ls.txt"; fail "excluded entries absent"; }
  grep -q "cache/CACHEDIR.TAG" "$WORK/ls.txt" || fail "CACHEDIR.TAG itself kept"
}

t_one_file_system() {
  local R=$WORK/r-xfs S=$WORK/src-xfs
  mkdir -p "$S/mnt"; echo here > "$S/here"
  mount -t tmpfs lifeboat-test "$S/mnt" 2>/dev/null || { echo "    (skipped: cannot mount tmpfs)"; return 0; }
  echo other-fs > "$S/mnt/there"
  lb -r "$R" init >/dev/null
  local rc=0
  lb -r "$R" backup -x "$S" >/dev/null || rc=$?
  lb -r "$R" ls latest --recursive > "$WORK/xfs.txt" || rc=$?
  umount "$S/mnt"
  [ $rc -eq 0 ] && grep -q "/here$" "$WORK/xfs.txt" && grep -q "/mnt$" "$WORK/xfs.txt" && ! grep -q "there" "$WORK/xfs.txt" || { cat "$WORK/xfs.txt"; fail "--one-file-system keeps the mount point, skips its contents"; }
}

t_stdin_and_dump() {
  local R=$WORK/r-in
  lb -r "$R" init >/dev/null
  seq 1 100000 | lb -r "$R" backup --stdin --stdin-filename numbers.txt --tag dump >/dev/null
  lb -r "$R" dump latest numbers.txt | cmp - <(seq 1 100000)
  lb -r "$R" backup --stdin-from-command --stdin-filename db.sql -- sh -c 'echo CREATE TABLE t; echo INSERT 1' >/dev/null
  lb -r "$R" dump latest db.sql | grep -q "INSERT 1"
  local n; n=$(lb -r "$R" snapshots --json | python3 -c "import json,sys; print(len([json.loads(l) for l in sys.stdin if l.strip()]))")
  expect_code 1 lb -r "$R" backup --stdin-from-command --stdin-filename bad.sql -- sh -c 'echo partial; exit 3'
  grep -q "failed with exit status 3" "$WORK/err" || fail "failing command named"
  [ "$(lb -r "$R" snapshots --json | python3 -c "import json,sys; print(len([json.loads(l) for l in sys.stdin if l.strip()]))")" = "$n" ] || fail "no snapshot from a failed command"
  # A directory dumps as tar.
  local S=$WORK/src-tar; mkdir -p "$S/d"; echo one > "$S/d/1"; echo two > "$S/2"
  lb -r "$R" backup "$S" >/dev/null
  mkdir "$WORK/untar"; lb -r "$R" dump latest "$S" | tar -x -C "$WORK/untar"
  diff -r "$S" "$WORK/untar/$(basename "$S")"
  lb -r "$R" find '*.sql' | grep -q db.sql
  lb -r "$R" stats --json | python3 -c "import json,sys; d=json.load(sys.stdin); assert d['snapshots_count']==3 and d['total_file_count']>=4, d"
}

t_restore_options() {
  local R=$WORK/r-ro S=$WORK/src-ro
  mkdir -p "$S/a" "$S/b"; echo 1 > "$S/a/x.txt"; echo 2 > "$S/a/y.dat"; echo 3 > "$S/b/z.txt"
  lb -r "$R" init >/dev/null; lb -r "$R" backup "$S" >/dev/null
  lb -r "$R" restore latest --target "$WORK/o1" --include '*.txt' >/dev/null
  [ -f "$WORK/o1$S/a/x.txt" ] && [ -f "$WORK/o1$S/b/z.txt" ] && [ ! -e "$WORK/o1$S/a/y.dat" ] || fail "--include"
  lb -r "$R" restore latest --target "$WORK/o2" --exclude "$S/b" >/dev/null
  [ -f "$WORK/o2$S/a/y.dat" ] && [ ! -e "$WORK/o2$S/b" ] || fail "--exclude"
  lb -r "$R" restore "latest:$S/a" --target "$WORK/o3" >/dev/null
  [ "$(cat "$WORK/o3/x.txt")" = 1 ] || fail "SNAPSHOT:SUBPATH"
  echo local-change > "$WORK/o3/x.txt"
  lb -r "$R" restore "latest:$S/a" --target "$WORK/o3" --overwrite never >/dev/null
  [ "$(cat "$WORK/o3/x.txt")" = local-change ] || fail "--overwrite never keeps files"
  lb -r "$R" restore "latest:$S/a" --target "$WORK/o3" --overwrite if-changed >/dev/null
  [ "$(cat "$WORK/o3/x.txt")" = 1 ] || fail "--overwrite if-changed replaces changed files"
  # A symlink planted in the target never redirects the restore outside it.
  mkdir -p "$WORK/outside" "$WORK/o4"; ln -s "$WORK/outside" "$WORK/o4/a"
  lb -r "$R" restore "latest:$S" --target "$WORK/o4" >/dev/null
  [ -z "$(ls -A "$WORK/outside")" ] || fail "nothing written through a planted symlink"
  [ -d "$WORK/o4/a" ] && [ ! -L "$WORK/o4/a" ] && [ -f "$WORK/o4/a/x.txt" ] || fail "the symlink was replaced by the directory"
}

t_forget_prune() {
  local R=$WORK/r-fp S=$WORK/src-fp
  mkdir -p "$S"; lb -r "$R" init >/dev/null
  for i in 1 2 3 4 5; do head -c 400000 /dev/urandom > "$S/f$i"; lb -r "$R" backup "$S" --tag "n$i" >/dev/null; done
  lb -r "$R" forget --keep-last 2 --keep-tag n1 --dry-run > "$WORK/plan.txt"
  grep -q "last snapshot" "$WORK/plan.txt" && grep -q "has tags n1" "$WORK/plan.txt" || { cat "$WORK/plan.txt"; fail "reasons printed"; }
  [ "$(lb -r "$R" snapshots --json | python3 -c "import json,sys; print(len([json.loads(l) for l in sys.stdin if l.strip()]))")" = 5 ] || fail "dry run kept all"
  lb -r "$R" forget --keep-last 2 --json > "$WORK/forget.json"
  [ "$(lb -r "$R" snapshots --json | python3 -c "import json,sys; print(len([json.loads(l) for l in sys.stdin if l.strip()]))")" = 2 ] || fail "two kept"
  rm "$S/f5" "$S/f4"; lb -r "$R" backup "$S" >/dev/null
  lb -r "$R" forget --keep-last 1 >/dev/null
  local size_before; size_before=$(du -sb "$R/data" | cut -f1)
  lb -r "$R" prune --grace 1h > "$WORK/p1.txt"
  grep -q "freed now: 0 B (0 packs deleted)" "$WORK/p1.txt" || { cat "$WORK/p1.txt"; fail "first pass only marks"; }
  # Issue 12: it says how much is marked and when a prune gives it back (the time, in UTC), in text and JSON.
  grep -Eq "^marked for deletion: [0-9.]+ [KM]iB in [0-9]+ packs?; a prune run after 20[0-9-]+ [0-9:]+ UTC frees" "$WORK/p1.txt" \
    || { cat "$WORK/p1.txt"; fail "the marked space and its time are told"; }
  lb -r "$R" prune --grace 1h -n --json > "$WORK/p1.json"
  python3 - "$WORK/p1.json" <<'PY' || fail "the JSON tells the pending bytes and their time, an hour from now"
import json, sys, datetime
d = [json.loads(l) for l in open(sys.argv[1]) if l.strip()][-1]
assert d["message_type"] == "prune" and d["dry_run"] and d["pending_bytes"] > 0 and d["pending_packs"] > 0, d
t = datetime.datetime.fromisoformat(d["free_by"][:26].rstrip("Z") + "+00:00").timestamp()
now = datetime.datetime.now(datetime.timezone.utc).timestamp()
assert 3000 < t - now < 3700, (t - now, d)
PY
  # Before that time a prune frees nothing; at it (the clock set by LIFEBOAT_NOW), the space comes back.
  local free_by; free_by=$(json_field "$WORK/p1.json" prune free_by)
  lb -r "$R" prune --grace 1h > "$WORK/p1b.txt"
  grep -q "freed now: 0 B" "$WORK/p1b.txt" || { cat "$WORK/p1b.txt"; fail "nothing is freed before the time"; }
  LIFEBOAT_NOW=$(python3 -c "import datetime; print(datetime.datetime.fromisoformat('${free_by:0:26}'.rstrip('Z') + '+00:00').timestamp() + 60)") \
    lb -r "$R" prune --grace 1h > "$WORK/p1c.txt"
  grep -Eq "freed now: [0-9.]+ [KM]iB \([1-9][0-9]* packs? deleted\)" "$WORK/p1c.txt" && grep -q "nothing is left marked" "$WORK/p1c.txt" \
    || { cat "$WORK/p1c.txt"; fail "the space is freed once the time has come"; }
  lb -r "$R" prune --grace 0s --max-unused 0% > "$WORK/p2.txt"
  [ "$(du -sb "$R/data" | cut -f1)" -lt "$size_before" ] || { cat "$WORK/p2.txt"; fail "prune freed space"; }
  lb -r "$R" check --read-data >/dev/null
  lb -r "$R" restore latest --target "$WORK/o-fp" >/dev/null
  diff -r "$S" "$WORK/o-fp$S"
}

t_repack() {  # a pack left mostly unused is repacked; its live blobs survive
  local R=$WORK/r-repack S=$WORK/src-repack
  mkdir -p "$S"; for i in $(seq 1 40); do head -c 50000 /dev/urandom > "$S/f$i"; done
  lb -r "$R" init >/dev/null; lb -r "$R" backup "$S" >/dev/null
  rm "$S"/f1? "$S"/f2? "$S"/f3?
  lb -r "$R" backup "$S" >/dev/null
  lb -r "$R" forget --keep-last 1 >/dev/null
  lb -r "$R" prune --grace 0s --max-unused 0% --json > "$WORK/repack.json"
  [ "$(json_field "$WORK/repack.json" prune packs_repacked)" -ge 1 ] || { cat "$WORK/repack.json"; fail "a mostly unused pack is repacked"; }
  [ "$(json_field "$WORK/repack.json" prune packs_deleted)" -ge 1 ] || fail "the repacked pack is deleted"
  lb -r "$R" check --read-data >/dev/null
  lb -r "$R" restore latest --target "$WORK/o-repack" >/dev/null
  diff -r "$S" "$WORK/o-repack$S"
}

t_keys_and_locks() {
  local R=$WORK/r-key
  lb -r "$R" init >/dev/null
  echo second > "$WORK/pw2"; echo third > "$WORK/pw3"
  lb -r "$R" key add --new-password-file "$WORK/pw2" >/dev/null
  lb -r "$R" --password-file "$WORK/pw2" snapshots >/dev/null
  [ "$(lb -r "$R" key list --json | python3 -c "import json,sys; print(len([json.loads(l) for l in sys.stdin if l.strip()]))")" = 2 ]
  lb -r "$R" --password-file "$WORK/pw2" key passwd --new-password-file "$WORK/pw3" >/dev/null
  expect_code 12 lb -r "$R" --password-file "$WORK/pw2" snapshots
  lb -r "$R" --password-file "$WORK/pw3" snapshots >/dev/null
  local other; other=$(lb -r "$R" --password-file "$WORK/pw3" key list --json | python3 -c "import json,sys; print([k['id'] for k in [json.loads(l) for l in sys.stdin if l.strip()] if not k['current']][0])")
  expect_code 1 lb -r "$R" --password-file "$WORK/pw3" key remove "$(lb -r "$R" --password-file "$WORK/pw3" key list --json | python3 -c "import json,sys; print([k['id'] for k in [json.loads(l) for l in sys.stdin if l.strip()] if k['current']][0])")"
  lb -r "$R" --password-file "$WORK/pw3" key remove "${other:0:8}" >/dev/null
  expect_code 12 lb -r "$R" snapshots
  # A live lock is not stale; a lock left by a killed process is stale and removed by unlock.
  mkfifo "$WORK/never"
  LIFEBOAT_PASSWORD_FILE=$WORK/pw3 "$BIN" -r "$R" backup --stdin <> "$WORK/never" >/dev/null &
  local pid=$!
  wait_until 30 "the backup to take its lock" eval '[ -n "$(ls "$R/locks")" ]'
  [ -n "$(ls "$R/locks")" ] || fail "backup holds a lock"
  LIFEBOAT_PASSWORD_FILE=$WORK/pw3 lb -r "$R" unlock | grep -q "removed 0 stale locks" || fail "a live lock is not stale"
  kill -9 $pid; wait $pid 2>/dev/null || true
  LIFEBOAT_PASSWORD_FILE=$WORK/pw3 lb -r "$R" check 2> "$WORK/stale.txt" >/dev/null
  grep -q "stale lock .* is ignored" "$WORK/stale.txt" || { cat "$WORK/stale.txt"; fail "a stale lock is reported"; }
  LIFEBOAT_PASSWORD_FILE=$WORK/pw3 lb -r "$R" unlock > "$WORK/unlock.txt"
  grep -qE "removed [1-9] stale locks" "$WORK/unlock.txt" || { cat "$WORK/unlock.txt"; ls "$R/locks"; fail "stale lock removed"; }
  # SIGTERM releases the lock and exits with 130.
  LIFEBOAT_PASSWORD_FILE=$WORK/pw3 "$BIN" -r "$R" backup --stdin <> "$WORK/never" >/dev/null 2>&1 &
  pid=$!
  wait_until 30 "the backup to take its lock" eval '[ -n "$(ls "$R/locks")" ]'
  [ -n "$(ls "$R/locks")" ] || fail "backup holds a lock"
  kill -TERM $pid
  local code=0; wait $pid || code=$?
  [ "$code" -eq 130 ] || fail "SIGTERM exits 130, got $code"
  [ -z "$(ls "$R/locks")" ] || fail "SIGTERM released the lock"
}

t_sigkill_during_backup() {
  local R=$WORK/r-kill S=$WORK/src-kill
  mkdir -p "$S"; echo first > "$S/first"
  lb -r "$R" init >/dev/null; lb -r "$R" backup "$S" >/dev/null
  for i in $(seq 1 8); do head -c 8000000 /dev/urandom > "$S/big$i"; done
  for delay in 0.3 0.8 1.5; do
    "$BIN" -r "$R" backup "$S" >/dev/null 2>&1 &
    local pid=$!; sleep $delay; kill -9 $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
    lb -r "$R" check >/dev/null || fail "check passes after kill at ${delay}s"
  done
  lb -r "$R" restore "$(lb -r "$R" snapshots --json | python3 -c "import json,sys; print([json.loads(l) for l in sys.stdin if l.strip()][0]['id'])")" --target "$WORK/o-kill" >/dev/null
  [ "$(cat "$WORK/o-kill$S/first")" = first ] || fail "earlier snapshot restores"
  lb -r "$R" unlock >/dev/null
  lb -r "$R" backup "$S" --json > "$WORK/kill.json"
  local added; added=$(json_field "$WORK/kill.json" summary data_added)
  [ "$added" -lt 64000000 ] || fail "next backup reuses uploaded data (added $added bytes)"
  lb -r "$R" check --read-data >/dev/null
  lb -r "$R" restore latest --target "$WORK/o-kill2" >/dev/null
  diff -r "$S" "$WORK/o-kill2$S"
}

t_concurrent_backups_and_prune() {
  local R=$WORK/r-conc A=$WORK/src-ca B=$WORK/src-cb
  mkdir -p "$A" "$B"
  for i in 1 2 3; do head -c 6000000 /dev/urandom > "$A/a$i"; head -c 6000000 /dev/urandom > "$B/b$i"; done
  cp "$A/a1" "$B/shared"
  lb -r "$R" init >/dev/null
  lb -r "$R" backup "$A" >/dev/null; lb -r "$R" forget --keep-last 1 >/dev/null
  head -c 100000 /dev/urandom > "$A/garbage"; lb -r "$R" backup "$A" >/dev/null
  lb -r "$R" forget "$(lb -r "$R" snapshots --json | python3 -c "import json,sys; print([json.loads(l) for l in sys.stdin if l.strip()][-1]['id'])")" >/dev/null
  rm "$A/garbage"
  lb -r "$R" backup "$A" > "$WORK/ca.txt" 2>&1 &
  local p1=$!
  lb -r "$R" backup "$B" > "$WORK/cb.txt" 2>&1 &
  local p2=$!
  lb -r "$R" prune --grace 0s --max-unused 0% > "$WORK/cp.txt" 2>&1 &
  local p3=$!
  wait $p1 || { cat "$WORK/ca.txt"; fail "backup A"; }
  wait $p2 || { cat "$WORK/cb.txt"; fail "backup B"; }
  wait $p3 || { cat "$WORK/cp.txt"; fail "prune during backups"; }
  lb -r "$R" check --read-data >/dev/null || fail "check after concurrent backups and prune"
  lb -r "$R" restore latest --path "$A" --target "$WORK/o-ca" >/dev/null
  lb -r "$R" restore latest --path "$B" --target "$WORK/o-cb" >/dev/null
  diff -r "$A" "$WORK/o-ca$A" && diff -r "$B" "$WORK/o-cb$B"
  # Once the backups are done, the next prune sweeps what the concurrent one could only mark.
  lb -r "$R" prune --grace 0s >/dev/null
  lb -r "$R" check --read-data >/dev/null
}

t_prune_stress() {  # repeated rounds of two backups racing forget + prune (grace 0): no data is ever lost
  local R=$WORK/r-stress A=$WORK/src-sa B=$WORK/src-sb
  mkdir -p "$A" "$B"; lb -r "$R" init >/dev/null
  for i in 1 2 3 4 5 6; do
    head -c 3000000 /dev/urandom > "$A/f$((i % 4))"; head -c 2000000 /dev/urandom > "$B/g$((i % 3))"
    "$BIN" -r "$R" backup "$A" -q > "$WORK/sa" 2>&1 & local p1=$!
    "$BIN" -r "$R" backup "$B" -q > "$WORK/sb" 2>&1 & local p2=$!
    ( "$BIN" -r "$R" forget --keep-last 2 -q && "$BIN" -r "$R" prune --grace 0s --max-unused 0% -q ) > "$WORK/sp" 2>&1 & local p3=$!
    wait $p1 || { cat "$WORK/sa"; fail "round $i: backup A"; }
    wait $p2 || { cat "$WORK/sb"; fail "round $i: backup B"; }
    wait $p3 || { cat "$WORK/sp"; fail "round $i: forget + prune"; }
  done
  lb -r "$R" check --read-data >/dev/null
  lb -r "$R" restore latest --path "$A" --target "$WORK/o-sa" >/dev/null
  lb -r "$R" restore latest --path "$B" --target "$WORK/o-sb" >/dev/null
  diff -r "$A" "$WORK/o-sa$A" && diff -r "$B" "$WORK/o-sb$B"
}

t_corruption() {
  local R=$WORK/r-cor S=$WORK/src-cor
  mkdir -p "$S"; head -c 2000000 /dev/urandom > "$S/one"; head -c 2000000 /dev/urandom > "$S/two"; echo small > "$S/small"
  lb -r "$R" init --pack-size 1 >/dev/null; lb -r "$R" backup "$S" >/dev/null
  local pack; pack=$(find "$R/data" -type f -printf "%s %p\n" | sort -n | tail -1 | cut -d" " -f2)  # the largest pack holds file data
  python3 - "$pack" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read()); b[1000] ^= 0x40; open(p, "wb").write(b)
PY
  expect_code 1 lb -r "$R" check --read-data
  grep -q "$(basename "$pack")" "$WORK/err" || { cat "$WORK/err"; fail "check names the damaged pack"; }
  grep -q "snapshot .* is damaged" "$WORK/err" || fail "check names the damaged snapshot"
  expect_code 3 lb -r "$R" restore latest --target "$WORK/o-cor"
  grep -qE "/(one|two)" "$WORK/err" || fail "restore lists the damaged file"
  [ "$(cat "$WORK/o-cor$S/small")" = small ] || fail "other files restored"
  # Truncated index and snapshot files are named.
  local idx; idx=$(ls "$R/index" | head -1)
  truncate -s 20 "$R/index/$idx"
  expect_code 1 lb -r "$R" check
  grep -q "$idx" "$WORK/err" || fail "check names the damaged index"
  local snap; snap=$(ls "$R/snapshots" | head -1)
  truncate -s 10 "$R/snapshots/$snap"
  expect_code 1 lb -r "$R" check
  grep -q "$snap" "$WORK/err" || fail "check names the damaged snapshot file"
}

t_unreadable_files() {
  id nobody >/dev/null 2>&1 || { echo "    (skipped: no user nobody)"; return 0; }
  local D=$WORK/unread; mkdir -p "$D/src"; chmod 777 "$D"
  echo ok > "$D/src/readable"; echo secret > "$D/src/secret"; chmod 000 "$D/src/secret"
  cp "$WORK/pw" "$D/pw"; chmod 644 "$D/pw"
  chown -R nobody "$D/src/readable"
  runuser -u nobody -- env LIFEBOAT_KDF_PARAMS=1024,8,1 "$BIN" -r "$D/repo" --password-file "$D/pw" init >/dev/null
  expect_code 3 runuser -u nobody -- env LIFEBOAT_KDF_PARAMS=1024,8,1 "$BIN" -r "$D/repo" --password-file "$D/pw" backup "$D/src"
  grep -q "secret" "$WORK/err" || fail "the unreadable file is named"
  runuser -u nobody -- "$BIN" -r "$D/repo" --password-file "$D/pw" ls latest --recursive | grep -q readable || fail "readable file backed up"
}

# Issue 12: with --json, every command's standard output is JSON lines: one object per line, each with a
# message_type (docs/JSON.md lists them). Run on a scratch repository; the types seen are printed.
t_json_lines_everywhere() {
  local R=$WORK/r-json D=$WORK/json-src
  mkdir -p "$D/sub"; echo one > "$D/a.txt"; echo two > "$D/sub/b.txt"
  : > "$WORK/all.jsonl"
  j() { "$BIN" --json "$@" >> "$WORK/all.jsonl" 2>>"$WORK/json.err" || fail "--json $*"; }
  j -r "$R" init
  j -r "$R" backup "$D" --tag t
  echo three > "$D/c.txt"
  j -r "$R" backup "$D"
  local ids; ids=$("$BIN" -r "$R" --json snapshots | python3 -c "import json,sys; print(' '.join(json.loads(l)['short_id'] for l in sys.stdin))")
  j -r "$R" snapshots
  j -r "$R" snapshots --latest 1
  j -r "$R" snapshots --latest 1 --max-age 1d
  j -r "$R" ls latest
  j -r "$R" find a.txt
  j -r "$R" diff $ids
  "$BIN" -r "$R" diff $ids > "$WORK/diff.txt"
  grep -q "^+    $D/c.txt\$" "$WORK/diff.txt" && grep -q "Files: 1 new, 0 removed, 0 changed" "$WORK/diff.txt" || { cat "$WORK/diff.txt"; fail "diff names the added file"; }
  j -r "$R" stats
  j -r "$R" check --read-data --max-age 1d
  j -r "$R" restore latest --target "$WORK/json-restore"
  j -r "$R" forget --keep-last 1 --dry-run
  j -r "$R" prune --dry-run
  j -r "$R" key list
  j -r "$R" unlock
  j -r "$R" repair index --dry-run
  j -r "$R" repair snapshots --dry-run
  j version
  python3 - "$WORK/all.jsonl" <<'PY' || fail "every line is one JSON object with a message_type"
import json, sys, collections
seen = collections.Counter()
for n, line in enumerate(open(sys.argv[1]), 1):
    o = json.loads(line)
    assert isinstance(o, dict), "line %d is not an object: %r" % (n, line[:80])
    assert isinstance(o.get("message_type"), str), "line %d has no message_type: %r" % (n, line[:120])
    seen[o["message_type"]] += 1
print("    message types:", ", ".join("%s %d" % kv for kv in sorted(seen.items())))
PY
}

# Issue 12: a reader of `backup --json | …` gets the first status line while the backup still runs. The data comes
# from a command that waits, after its first 8 MiB, until the reader has seen a status line: were standard output
# held until exit, it would wait forever (bounded here by a timeout) and the test fails.
t_json_streams_through_a_pipe() {
  local R=$WORK/r-pipe
  lb -r "$R" init >/dev/null
  mkfifo "$WORK/gate"
  timeout 60 "$BIN" -r "$R" backup --json --stdin-from-command --stdin-filename stream.bin -- \
      sh -c "head -c 8388608 /dev/urandom; read line < '$WORK/gate'; head -c 1048576 /dev/urandom" \
    | timeout 60 python3 -c '
import json, sys
gate, first = sys.argv[1], None
for n, line in enumerate(sys.stdin):
    o = json.loads(line)
    if first is None and o["message_type"] == "status":
        first = o
        with open(gate, "w") as g: g.write("go\n")   # lets the data source finish
last = o
assert first is not None and first["bytes_done"] < 9437184, first
assert last["message_type"] == "summary" and last["total_bytes_processed"] == 9437184, last
' "$WORK/gate" || fail "the status line reached the pipe while the backup ran"
}

# Issue 13 (first part): the plan file, `config validate` and `plan`.
t_plan_file() {
  local P=$WORK/plan
  mkdir -p "$P"; echo pw > "$P/local.pw"; echo pw > "$P/usb.pw"
  cat > "$P/lifeboat.yaml" <<YAML
timezone: UTC
sites:
  - {name: local, repository: $P/repo, password_file: $P/local.pw, role: primary}
  - {name: usb, repository: $P/usb, password_file: $P/usb.pw, role: replica}
sources:
  - name: web
    paths: [$P/www]
    schedule: "*/15 * * * *"
    objectives: {rpo: 30m, rto: 15m}
  - name: weekdays
    paths: [$P/docs]
    schedule: "0 9 * * mon-fri"
    objectives: {rpo: 1d}
checks: {schedule: "0 3 * * *", read_data_subset: 5%}
prune: {schedule: "@weekly"}
YAML
  # The weekday job waits from Friday to Monday: three days, more than its RPO of one day.
  expect_code 1 lb config validate --config "$P/lifeboat.yaml"
  grep -q "lifeboat.yaml:[0-9]*:[0-9]*: error: source weekdays: rpo 1d 0h is shorter than the longest wait between runs of \"0 9 \* \* mon-fri\" (3d 0h)" "$WORK/err" \
    || { cat "$WORK/err"; fail "the RPO the schedule cannot meet is an error with its place"; }
  grep -q "configuration has 1 error" "$WORK/out" || fail "the summary counts the error"
  LIFEBOAT_NOW=2026-12-04T10:07:00Z LIFEBOAT_CONFIG=$P/lifeboat.yaml expect_code 1 lb plan
  grep -q "next:       2026-12-07 09:00:00 UTC, 2026-12-08 09:00:00 UTC, 2026-12-09 09:00:00 UTC" "$WORK/out" || { cat "$WORK/out"; fail "plan shows the next runs"; }
  grep -q "NOT met: the longest wait between runs is 3d 0h" "$WORK/out" || fail "plan says the RPO is not met"
  sed -i 's/rpo: 1d}/rpo: 3d}/' "$P/lifeboat.yaml"
  expect_code 0 lb config validate --config "$P/lifeboat.yaml"
  grep -q "configuration ok: 2 sources, 2 sites, 0 alert targets" "$WORK/out" || fail "a good plan is ok"
  LIFEBOAT_NOW=2026-12-01T10:07:00Z expect_code 0 lb plan --config "$P/lifeboat.yaml" --json
  python3 - "$WORK/out" <<'PY' || fail "plan --json: one job per line with its next runs"
import json, sys
jobs = [json.loads(l) for l in open(sys.argv[1])]
assert [j["name"] for j in jobs] == ["web", "weekdays", "check (read 5%)", "prune"], jobs
web = jobs[0]
assert web["message_type"] == "job" and web["next"][0].startswith("2026-12-01T10:15:00") and web["meets_rpo"] is True, web
assert web["sites"] == ["local", "usb"] and web["rpo_seconds"] == 1800 and web["longest_gap_seconds"] == 900, web
PY
  # Neighbours: a missing password file, a bad cron field, an unknown key, no file at all.
  rm "$P/usb.pw"
  expect_code 1 lb config validate --config "$P/lifeboat.yaml"
  grep -q "error: site usb: password_file $P/usb.pw: it does not exist" "$WORK/err" || { cat "$WORK/err"; fail "a missing password file"; }
  grep -q "^pw" "$WORK/err" "$WORK/out" && fail "no secret in the output"
  echo pw > "$P/usb.pw"
  sed -i 's|"\*/15 \* \* \* \*"|"*/15 25 * * *"|' "$P/lifeboat.yaml"
  expect_code 1 lb config validate --config "$P/lifeboat.yaml"
  grep -q "lifeboat.yaml:8:15: \`schedule\`: hour 25 is out of range 0-23" "$WORK/err" || { cat "$WORK/err"; fail "a bad cron field with its place"; }
  printf 'colour: blue\n' >> "$P/lifeboat.yaml"
  sed -i 's|"\*/15 25 \* \* \*"|"*/15 * * * *"|' "$P/lifeboat.yaml"
  expect_code 1 lb config validate --config "$P/lifeboat.yaml" --json
  grep -q '"message_type":"diagnostic"' "$WORK/out" && grep -q 'unknown key \\"colour\\"' "$WORK/out" || { cat "$WORK/out"; fail "an unknown key, as JSON"; }
  expect_code 1 lb config validate --config "$P/none.yaml"
  grep -q "none.yaml: cannot read the plan file" "$WORK/err" || fail "no file"
}

# Issue 12: health checks on the age of the newest snapshots (exit 22), per host and paths.
t_max_age() {
  local R=$WORK/r-age A=$WORK/age-a B=$WORK/age-b
  mkdir -p "$A" "$B"; echo a > "$A/f"; echo b > "$B/f"
  expect_code 0 lb -r "$R" init
  # No snapshot at all is the oldest there is.
  expect_code 22 lb -r "$R" check --max-age 1h
  grep -q "no snapshots" "$WORK/err" || fail "an empty repository is named"
  lb -r "$R" backup "$A" -q; lb -r "$R" backup "$B" -q
  expect_code 0 lb -r "$R" check --max-age 1h
  expect_code 0 lb -r "$R" snapshots --latest 1 --max-age 1h
  # Two hours later (LIFEBOAT_NOW), one group is backed up again (the time set with --time, as restic's):
  # only the other is too old, and named.
  local later; later=$(( $(date +%s) + 7200 ))
  echo a2 > "$A/f"; LIFEBOAT_NOW=$later lb -r "$R" backup "$A" -q --time "$later"
  expect_code 1 lb -r "$R" backup "$A" --time yesterday
  grep -q -- "invalid --time" "$WORK/err" || fail "a bad --time is named"
  LIFEBOAT_NOW=$later expect_code 22 lb -r "$R" check --max-age 1h
  grep -Eq "too old: the newest snapshot of .* \[$B\] is [0-9a-f]{8}, (1h 59m|2h 00m) old \(--max-age 1h 00m\)" "$WORK/err" || { cat "$WORK/err"; fail "the old group is named with its age"; }
  grep -q "$A" "$WORK/err" && fail "the fresh group is not reported"
  LIFEBOAT_NOW=$later expect_code 22 lb -r "$R" snapshots --latest 1 --max-age 1h
  grep -q "2 snapshots" "$WORK/out" || fail "the listing is still printed"
  LIFEBOAT_NOW=$later expect_code 0 lb -r "$R" snapshots --max-age 1h --path "$A"
  LIFEBOAT_NOW=$later expect_code 0 lb -r "$R" check --max-age 3h
  # Back at the real time, A's newest snapshot is dated two hours ahead: its age cannot be judged (exit 22).
  expect_code 22 lb -r "$R" check --max-age 3h
  grep -q "dated in the future: the newest snapshot of .* \[$A\] is [0-9a-f]\{8\}, 1h 5[0-9]m ahead\|dated in the future: the newest snapshot of .* \[$A\] is [0-9a-f]\{8\}, 2h 00m ahead" "$WORK/err" \
    || { cat "$WORK/err"; fail "a snapshot dated ahead is named"; }
  LIFEBOAT_NOW=$later lb -r "$R" --json snapshots --max-age 1h > "$WORK/age.json" || true
  python3 - "$WORK/age.json" "$B" <<'PY' || fail "snapshot_age objects tell each group's age"
import json, sys
ages = [o for o in map(json.loads, open(sys.argv[1])) if o["message_type"] == "snapshot_age"]
assert len(ages) == 2, ages
old = [a for a in ages if a["stale"]]
assert len(old) == 1 and old[0]["paths"] == [sys.argv[2]] and 7190 < old[0]["age_seconds"] < 7300 and old[0]["max_age_seconds"] == 3600, ages
PY
  # A repository error wins over age (exit 1); bad spans are refused with the option named.
  expect_code 1 lb -r "$R" check --max-age soon
  grep -q -- "--max-age soon" "$WORK/err" || fail "the bad --max-age is named"
  expect_code 1 lb -r "$R" snapshots --max-age 0
  expect_code 1 lb -r "$R" snapshots --latest 0
}

# Issue 12: errors name the thing, the cause and the next step; short flags follow restic; completions.
t_cli_words() {
  local R=$WORK/r-words S=$WORK/src-words
  mkdir -p "$S"; echo x > "$S/x"
  lb -r "$R" init >/dev/null; lb -r "$R" backup "$S" -q
  # dump/restore of a path that is not there say which snapshot "latest" was, and how to look inside.
  expect_code 1 lb -r "$R" dump latest /nope
  grep -Eq "/nope is not in snapshot [0-9a-f]{8} \(20[0-9-]+ [0-9:]+, host .*, paths $S\); see what it holds with .lifeboat ls [0-9a-f]{8}." "$WORK/err" \
    || { cat "$WORK/err"; fail "dump names the snapshot"; }
  expect_code 1 lb -r "$R" restore "latest:/nope" --target "$WORK/o-words"
  grep -q "is not in snapshot [0-9a-f]\{8\}" "$WORK/err" || fail "restore names the snapshot"
  # An empty or wrong password file names where the path came from.
  LIFEBOAT_PASSWORD_FILE= expect_code 1 lb -r "$R" snapshots
  grep -q "LIFEBOAT_PASSWORD_FILE is empty: give the path of a file" "$WORK/err" || { cat "$WORK/err"; fail "an empty LIFEBOAT_PASSWORD_FILE is named"; }
  expect_code 1 lb -r "$R" --password-file "$WORK/none" snapshots
  grep -q "cannot read the password file $WORK/none (from --password-file): it does not exist" "$WORK/err" || { cat "$WORK/err"; fail "a missing password file"; }
  expect_code 1 lb -r "$R" --password-file "$WORK" snapshots
  grep -q "it is a directory" "$WORK/err" || fail "a directory as password file"
  # A device is refused, not read to its end (/dev/zero never ends); a pipe works.
  expect_code 1 lb -r "$R" --password-file /dev/zero snapshots
  grep -q "it is not a regular file" "$WORK/err" || { cat "$WORK/err"; fail "a device as password file"; }
  expect_code 0 lb -r "$R" --password-file <(cat "$LIFEBOAT_PASSWORD_FILE") snapshots
  # A snapshot may not be dated ahead (it would pass --max-age checks until then).
  expect_code 1 lb -r "$R" backup "$S" --time "$(( $(date +%s) + 86400 ))"
  grep -q "is in the future" "$WORK/err" || { cat "$WORK/err"; fail "--time ahead is refused"; }
  # A refused connection reads as one, named by address and port, once (no nested library wording).
  local port; port=$(free_port)
  LIFEBOAT_RETRY=1,0.01,0.01 expect_code 1 lb -r "rest:http://127.0.0.1:$port/repo" snapshots
  grep -q "connection refused by 127.0.0.1:$port (is the server running" "$WORK/err" || { cat "$WORK/err"; fail "a refused connection is said plainly"; }
  grep -qi "errno\|error set" "$WORK/err" && { cat "$WORK/err"; fail "no library wording"; }
  # -n is the dry run (restic's letter) in backup, forget and prune; -d is --keep-daily.
  echo y > "$S/y"
  expect_code 0 lb -r "$R" backup -n "$S"
  [ "$(lb -r "$R" --json snapshots | wc -l)" = 1 ] || fail "backup -n writes no snapshot"
  expect_code 0 lb -r "$R" forget -d 1 -n
  expect_code 0 lb -r "$R" prune -n
  expect_code 64 lb -r "$R" prune -d
  # Shell completions from the argument parser; an unknown shell is a usage error.
  lb completion bash > "$WORK/c.bash"
  bash -n "$WORK/c.bash" && bash -c "source '$WORK/c.bash' && complete -p lifeboat" >/dev/null || fail "the bash completion loads"
  grep -q "snapshots" "$WORK/c.bash" || fail "bash completion knows the commands"
  lb completion zsh | grep -q "#compdef lifeboat" || fail "zsh completion"
  lb completion fish | grep -q "^complete -c 'lifeboat'" || fail "fish completion"
  if command -v zsh >/dev/null; then lb completion zsh > "$WORK/c.zsh"; zsh -n "$WORK/c.zsh" || fail "zsh parses it"; fi
  expect_code 64 lb completion tcsh
  # --stdin-from-command: a command killed by a signal, one that is not there, a bad file name: each said plainly.
  expect_code 1 lb -r "$R" backup --stdin-from-command --stdin-filename x.sql -- sh -c 'echo part; kill -9 $$'
  grep -q "the command sh was killed by signal 9" "$WORK/err" || { cat "$WORK/err"; fail "a killed command is named as killed"; }
  expect_code 1 lb -r "$R" backup --stdin-from-command --stdin-filename x.sql -- no-such-cmd-lifeboat
  grep -q "cannot run no-such-cmd-lifeboat: no such command in PATH" "$WORK/err" && ! grep -q "NSCocoa\|Domain=" "$WORK/err" || { cat "$WORK/err"; fail "a missing command"; }
  expect_code 1 lb -r "$R" backup --stdin --stdin-filename db/x.sql < /dev/null
  grep -q 'give a plain file name (no "/"' "$WORK/err" || { cat "$WORK/err"; fail "why the file name is refused"; }
  # stats --mode picks what is printed; a mode it does not know is a usage error.
  lb -r "$R" stats > "$WORK/st1.txt"; lb -r "$R" stats --mode raw-data > "$WORK/st2.txt"
  grep -q "Total restore size" "$WORK/st1.txt" && ! grep -q "Deduplicated raw size" "$WORK/st1.txt" || fail "restore-size mode"
  grep -q "Deduplicated raw size" "$WORK/st2.txt" && ! grep -q "Total restore size" "$WORK/st2.txt" || fail "raw-data mode"
  expect_code 64 lb -r "$R" stats --mode bogus
  # serve refuses TLS files without --tls instead of serving plain HTTP beside them.
  expect_code 1 lb serve --path "$WORK" --no-auth --tls-cert "$WORK/none.pem" --tls-key "$WORK/none.key" --listen 127.0.0.1:0
  grep -q "add --tls" "$WORK/err" || { cat "$WORK/err"; fail "TLS files without --tls are refused"; }
  # A snapshot's further paths line up under its first.
  mkdir -p "$WORK/p2a" "$WORK/p2b"; lb -r "$R" backup "$WORK/p2a" "$WORK/p2b" -q >/dev/null
  lb -r "$R" snapshots > "$WORK/snaps.txt"
  python3 - "$WORK/snaps.txt" "$WORK/p2a" "$WORK/p2b" <<'PY' || { cat "$WORK/snaps.txt"; fail "paths line up"; }
import sys
lines = open(sys.argv[1]).read().splitlines()
a = [l for l in lines if l.endswith(sys.argv[2])][0]; b = [l for l in lines if l.endswith(sys.argv[3])][0]
assert a.index(sys.argv[2]) == b.index(sys.argv[3]), (a, b)
PY
  # The man page `make build` writes from the argument parser: every command, its options and its examples.
  local man; man=$(dirname "$BIN")/../man/lifeboat.1
  python3 "$HERE/../../scripts/manpage.py" "$BIN" "$WORK/lifeboat.1"
  [ ! -f "$man" ] || cmp -s <(grep -v '^\.TH' "$man") <(grep -v '^\.TH' "$WORK/lifeboat.1") || fail "the built man page is this binary's"
  for c in init backup restore "key add" "sites status" completion; do grep -q "^\.SS lifeboat $c\$" "$WORK/lifeboat.1" || fail "man page: lifeboat $c"; done
  grep -qF -- '\-\-max\-age' "$WORK/lifeboat.1" && grep -q 'EXAMPLES:' "$WORK/lifeboat.1" || fail "man page: options and examples"
  if command -v man >/dev/null; then MANWIDTH=80 man -l "$WORK/lifeboat.1" > "$WORK/man.txt" 2>/dev/null; grep -q "lifeboat backup" "$WORK/man.txt" || fail "man renders the page"; fi
  # Global options and exit codes in the top-level help.
  lb --help > "$WORK/help.txt"
  for w in "--repo" "--password-file" "--json" "22 a snapshot is older than"; do grep -q -- "$w" "$WORK/help.txt" || fail "top-level help shows $w"; done
}

for t in ${CORE_TESTS:-t_init_and_errors t_roundtrip_every_kind t_incremental_and_parent t_backup_root t_excludes t_one_file_system t_stdin_and_dump \
         t_restore_options t_forget_prune t_repack t_keys_and_locks t_sigkill_during_backup t_concurrent_backups_and_prune \
         t_prune_stress t_corruption t_unreadable_files t_json_lines_everywhere t_json_streams_through_a_pipe t_max_age t_cli_words t_plan_file}; do
  run_test "$t"
done
echo "integration: $PASSED passed, $FAILED failed${FAILURES:+ (${FAILURES[*]})}"
[ "$FAILED" -eq 0 ]
