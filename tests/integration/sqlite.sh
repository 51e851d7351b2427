#!/usr/bin/env bash
# Integration tests of issue 15 part 2: SQLite continuous replication (`lifeboat sqlite replicate`, the agent's
# `sqlite: {continuous: true}` sources) and point-in-time restore, against real SQLite files written all the time
# by an application (sqlite_writer.py: inserts, updates, deletes, large rows, schema changes, its own checkpoints).
# Usage: tests/integration/sqlite.sh path/to/lifeboat   (SQLITE_TESTS="t_a t_b" picks tests)
set -uo pipefail
source "$(dirname "$0")/lib.sh" "${1:?usage: sqlite.sh path/to/lifeboat}" sqlite
LB=$BIN

# The database's content, whole: its schema and every table's rows in rowid order (equal digests, equal data).
db_digest() {
  python3 - "$1" <<'PYEOF'
import hashlib, sqlite3, sys
c = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
h = hashlib.sha256()
for (name, sql) in c.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name"):
    h.update(sql.encode())
    for row in c.execute('SELECT rowid, * FROM "%s" ORDER BY rowid' % name):
        h.update(repr(row).encode())
print(h.hexdigest())
PYEOF
}
integrity() { python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])" "$1"; }
# A consistent copy of a live database (SQLite's backup API).
save_copy() { python3 -c "import sqlite3,sys; s=sqlite3.connect(sys.argv[1]); d=sqlite3.connect(sys.argv[2]); s.backup(d); d.close()" "$1" "$2"; }
total_of() { python3 -c "import sqlite3,sys; print(sqlite3.connect('file:%s?mode=ro' % sys.argv[1], uri=True).execute(\"SELECT n FROM totals WHERE k = 'count'\").fetchone()[0])" "$1" 2>&1; }
count_of() { cat "$1/count" 2>/dev/null || echo 0; }
committed_at_least() { [ "$(count_of "$1")" -ge "$2" ]; }          # committed_at_least STATE N
records_at_least() { [ "$(grep -c '"sqlite_wal"' "$1" 2>/dev/null)" -ge "$2" ]; }  # records_at_least LOG N

start_writer() {  # start_writer DB STATE [RATE]: sets WRITER
  mkdir -p "$2"
  python3 "$HERE/sqlite_writer.py" "$1" "$2" "${3:-200}" &
  WRITER=$!
  wait_until 30 "the writer to commit" test -s "$2/count"
}
# new_app N RATE: repository r<N>, database app<N>/app.db (DB) written by a writer at RATE a second (STATE, WRITER).
new_app() {
  export LIFEBOAT_REPOSITORY=$WORK/r$1
  lb init > /dev/null
  DB=$WORK/app$1/app.db STATE=$WORK/app$1/state
  mkdir -p "$WORK/app$1"
  [ "$2" = 0 ] || start_writer "$DB" "$STATE" "$2"
}
pause_writer() { kill -USR1 "$WRITER"; wait_until 30 "the writer to pause" test -f "$1/paused"; }
resume_writer() { kill -USR2 "$WRITER"; wait_until 30 "the writer to resume" test ! -f "$1/paused"; }
# stored_after LOG T: replicate's --json log says every transaction committed before a moment at or after T (Unix
# seconds) is stored (`sqlite_synced`). (A WAL record's `newest` is when a read saw its last transaction, which can
# be later than a read that began before that commit: it proves nothing about T.)
stored_after() {
  python3 - "$1" "$2" <<'PYEOF'
import json, sys, datetime
t = float(sys.argv[2])
for line in open(sys.argv[1]):
    if '"sqlite_synced"' not in line: continue
    d = json.loads(line)
    n = datetime.datetime.fromisoformat(d["through"][:26].rstrip("Z") + "+00:00").timestamp()
    if n >= t: sys.exit(0)
sys.exit(1)
PYEOF
}
now_rfc3339() { date -u +%Y-%m-%dT%H:%M:%S.%NZ; }

# An application writes all the time; three moments are saved (the writer paused a moment each time), the follower
# runs throughout (with the writer's own TRUNCATE checkpoints and the follower's); each moment restores exactly.
t_three_times_match_three_copies() {
  new_app 1 300
  local db=$DB state=$STATE
  "$LB" sqlite replicate "$db" --json > "$WORK/rep1.log" 2> "$WORK/rep1.err" &
  local rep=$!
  wait_log "$WORK/rep1.log" '"sqlite_snapshot"'
  local k c
  for k in 1 2 3; do
    wait_until 60 "$(( k * 700 )) transactions" committed_at_least "$state" $(( k * 700 ))
    pause_writer "$state"
    c=$(cat "$state/paused")
    wait_until 30 "the follower to store what was committed before the pause" stored_after "$WORK/rep1.log" "$c" || {
      echo "    paused after a commit at $c; the follower's last lines:"; tail -5 "$WORK/rep1.log" | sed 's/^/    | /'
      tail -5 "$WORK/rep1.err" | sed 's/^/    ! /'; return 1; }
    now_rfc3339 > "$WORK/t$k"
    save_copy "$db" "$WORK/copy$k.db"
    resume_writer "$state"
  done
  wait_until 60 "2500 transactions" committed_at_least "$state" 2500
  kill -TERM "$WRITER"; wait "$WRITER"
  kill -INT "$rep"; wait "$rep" || fail "replicate exit status"
  grep -q '"sqlite_checkpoint"' "$WORK/rep1.log" || fail "the follower never checkpointed"
  ! grep -q '"sqlite_generation".*replaced' "$WORK/rep1.log" || fail "the history broke: $(grep sqlite_generation "$WORK/rep1.log")"
  for k in 1 2 3; do
    "$LB" sqlite restore "$db" --time "$(cat "$WORK/t$k")" --target "$WORK/restored$k.db" > "$WORK/restore$k.out" || fail "restore $k"
    [ "$(db_digest "$WORK/restored$k.db")" = "$(db_digest "$WORK/copy$k.db")" ] || fail "moment $k: the restored database differs from the copy saved then"
    [ "$(integrity "$WORK/restored$k.db")" = ok ] || fail "integrity_check of moment $k"
  done
  # --latest: everything, as the file is now (the writer stopped, the follower stored what it copied).
  "$LB" sqlite restore "$db" --latest --target "$WORK/latest.db" > "$WORK/latest.out" 2>&1 || { cat "$WORK/latest.out"; fail "restore --latest"; }
  [ "$(db_digest "$WORK/latest.db")" = "$(db_digest "$db")" ] || {
    echo "    restored $(total_of "$WORK/latest.db") transactions, the database $(total_of "$db"), the writer counted $(count_of "$state")"
    sed 's/^/    | /' "$WORK/latest.out"; grep -v '"sqlite_wal"' "$WORK/rep1.log" | tail -8 | sed 's/^/    | /'; tail -3 "$WORK/rep1.log" | sed 's/^/    | /'
    fail "--latest differs from the database"
  }
  # Three times, three different states.
  [ "$(db_digest "$WORK/copy1.db")" != "$(db_digest "$WORK/copy2.db")" ] || fail "the moments are not different"
}

# The follower killed (SIGKILL) while the application writes, started again: it continues the same generation when
# the WAL still holds its last point; after the application checkpointed and truncated the WAL with no follower
# holding it, a new generation begins with a snapshot. Every restore still matches.
t_killed_follower_continues_or_begins_a_generation() {
  new_app 2 200
  local db=$DB state=$STATE
  "$LB" sqlite replicate "$db" --json --checkpoint-pages 100000 > "$WORK/rep2a.log" 2>&1 &
  local rep=$!
  wait_log "$WORK/rep2a.log" '"sqlite_wal"'
  # Paused while no follower holds the WAL: the application's own automatic checkpoint would restart it.
  pause_writer "$state"
  kill -KILL "$rep"; wait "$rep" 2>/dev/null || true
  "$LB" sqlite replicate "$db" --json --checkpoint-pages 100000 > "$WORK/rep2b.log" 2>&1 &
  rep=$!
  wait_log "$WORK/rep2b.log" '"sqlite_resumed"' || fail "the follower did not continue its generation"
  resume_writer "$state"
  wait_log "$WORK/rep2b.log" '"sqlite_wal"'
  kill -KILL "$rep"; wait "$rep" 2>/dev/null || true
  # With no follower, the application's checkpoint empties the WAL: the history is broken.
  pause_writer "$state"
  python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchone())" "$db" > /dev/null
  resume_writer "$state"
  "$LB" sqlite replicate "$db" --json > "$WORK/rep2c.log" 2>&1 &
  rep=$!
  wait_log "$WORK/rep2c.log" '"sqlite_generation"'
  wait_log "$WORK/rep2c.log" '"sqlite_wal"'
  kill -TERM "$WRITER"; wait "$WRITER"
  kill -INT "$rep"; wait "$rep" || fail "replicate exit status"
  "$LB" sqlite timeline "$db" > "$WORK/timeline2" || fail "timeline: $(cat "$WORK/timeline2")"
  [ "$(grep -c '^[0-9a-f]\{16\} ' "$WORK/timeline2")" = 2 ] || fail "two generations expected: $(cat "$WORK/timeline2")"
  "$LB" sqlite restore "$db" --latest --target "$WORK/latest2.db" > /dev/null
  [ "$(db_digest "$WORK/latest2.db")" = "$(db_digest "$db")" ] || fail "--latest differs from the database"
}

# Bad input and damage: clear errors that name what is wrong, and nothing written.
t_bad_input_and_damage() {
  new_app 3 0
  local db=$DB state=$STATE
  expect_code 1 "$LB" sqlite replicate "$WORK/app3/none.db"
  grep -q "does not exist" "$WORK/err" || fail "a missing database: $(cat "$WORK/err")"
  expect_code 1 "$LB" sqlite replicate "$db" --interval 0s
  grep -q "interval" "$WORK/err" || fail "--interval 0s: $(cat "$WORK/err")"
  # A database in rollback-journal mode is switched to WAL.
  python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('PRAGMA journal_mode=DELETE'); c.execute('CREATE TABLE t(x)'); c.execute('INSERT INTO t VALUES (1)'); c.commit()" "$db"
  local before; before=$(now_rfc3339)
  start_writer "$db" "$state" 100
  "$LB" sqlite replicate "$db" --json > "$WORK/rep3.log" 2>&1 &
  local rep=$!
  wait_until 60 "six records" records_at_least "$WORK/rep3.log" 6
  kill -TERM "$WRITER"; wait "$WRITER"
  kill -INT "$rep"; wait "$rep"
  [ "$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA journal_mode').fetchone()[0])" "$db")" = wal ] || fail "not switched to WAL"
  # Before the first copy: refused, with the nearest restorable time.
  expect_code 1 "$LB" sqlite restore "$db" --time 2001-01-01T00:00:00Z --target "$WORK/x.db"
  grep -q "nearest restorable time" "$WORK/err" || fail "before the first copy: $(cat "$WORK/err")"
  [ ! -e "$WORK/x.db" ] || fail "a file was written"
  expect_code 1 "$LB" sqlite restore "$db" --time "not a time" --target "$WORK/x.db"
  expect_code 1 "$LB" sqlite restore "$db" --target "$WORK/x.db"
  # An existing target is never overwritten.
  echo keep > "$WORK/exists.db"
  expect_code 1 "$LB" sqlite restore "$db" --latest --target "$WORK/exists.db"
  [ "$(cat "$WORK/exists.db")" = keep ] || fail "the existing file was changed"
  # A WAL record in the middle deleted: timeline and restore name it; before it still restores.
  local third; third=$(python3 -c "
import json,sys
recs=[json.loads(l) for l in open(sys.argv[1]) if '\"sqlite_wal\"' in l]
print(recs[3]['id'], recs[2]['newest'])" "$WORK/rep3.log")
  rm "$WORK/r3/snapshots/${third%% *}"
  expect_code 1 "$LB" sqlite timeline "$db"
  grep -q "first record 3" "$WORK/out" || fail "timeline does not name the hole: $(cat "$WORK/out")"
  expect_code 1 "$LB" sqlite restore "$db" --latest --target "$WORK/x.db"
  grep -q "WAL record 3 .* is missing" "$WORK/err" || fail "restore does not name the missing record: $(cat "$WORK/err")"
  "$LB" sqlite restore "$db" --time "${third#* }" --target "$WORK/before-hole.db" > /dev/null || fail "a time before the hole"
  [ "$(integrity "$WORK/before-hole.db")" = ok ] || fail "integrity before the hole"
  # A record's data damaged: the restore fails naming it (from this site), never a silently different file.
  local pack; pack=$(find "$WORK/r3/data" -type f | head -1)
  python3 -c "import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[len(b)//2]^=0xff; open(p,'wb').write(b)" "$pack"
  "$LB" sqlite restore "$db" --time "${third#* }" --target "$WORK/damaged.db" > "$WORK/out" 2>&1 && {
    [ "$(integrity "$WORK/damaged.db")" = ok ] || fail "a damaged restore was written"
  }
  true
}

# The agent follows a `sqlite: {continuous: true}` source: its RPO is the follower's, its scheduled job stores a
# snapshot, a stop stores what was copied, a start continues; the restore matches.
t_agent_continuous_source() {
  local repo=$WORK/r4 db=$WORK/app4/app.db state=$WORK/app4/state port
  mkdir -p "$WORK/app4"
  LIFEBOAT_REPOSITORY=$repo lb init > /dev/null
  LIFEBOAT_REPOSITORY=$WORK/r4-copy lb init --copy-chunker-params-from "$repo" > /dev/null
  start_writer "$db" "$state" 100
  port=$(free_port)
  head -c 32 /dev/urandom | base64 > "$WORK/token4"
  cat > "$WORK/plan4.yaml" <<YAML
sites:
  - {name: local, repository: $repo, password_file: $WORK/pw, role: primary}
  - {name: copy, repository: $WORK/r4-copy, password_file: $WORK/pw, role: replica}
replication: {interval: 2s}
agent: {listen: "127.0.0.1:$port", token_file: $WORK/token4, state: $WORK/agent4/state.db}
sources:
  - name: app
    sqlite: {path: $db, continuous: true, interval: 500ms}
    schedule: "0 3 * * *"
    objectives: {rpo: 5s, rto: 1m}
    retention: {keep_last: 2}
drills:
  - {name: app-restore, source: app, from: [local], sandbox: $WORK/sandbox4}
YAML
  mkdir -p "$WORK/agent4"
  "$LB" plan --config "$WORK/plan4.yaml" > "$WORK/check4" 2>&1 || fail "plan: $(cat "$WORK/check4")"
  "$LB" agent --config "$WORK/plan4.yaml" > "$WORK/agent4.log" 2>&1 &
  local agent=$!
  wait_log "$WORK/agent4.log" "follower started"
  wait_log "$WORK/agent4.log" "sqlite snapshot stored"
  wait_port "$port"
  # The RPO at the site is the follower's: below a second or two while it keeps up.
  rpo_small() {
    "$LB" status --config "$WORK/plan4.yaml" --json > "$WORK/status4" 2>/dev/null || [ $? = 22 ]
    python3 -c "
import json, sys
s = json.load(open(sys.argv[1]))
r = [x for x in [r for r in s['sources'] if r['name'] == 'app'][0]['sites'] if x['site'] == 'local'][0].get('rpo_seconds')
sys.exit(0 if r is not None and r < 3 else 1)" "$WORK/status4"
  }
  wait_until 30 "the source's RPO below 3 s" rpo_small || { head -c 1500 "$WORK/status4"; return 1; }
  # The scheduled job, run now: a snapshot record.
  curl -sS --fail-with-body -X POST -H "Authorization: Bearer $(cat "$WORK/token4")" "http://127.0.0.1:$port/jobs/backup:app/run" > /dev/null
  snapshots_of_app() { [ "$(LIFEBOAT_REPOSITORY=$repo "$LB" snapshots --records --json | grep -o '"sqlite-snapshot"' | wc -l)" -ge 2 ]; }
  wait_until 60 "a second snapshot record" snapshots_of_app
  # A stop stores what was copied; a start continues the generation (the writer paused meanwhile: with nobody
  # holding the WAL, its automatic checkpoint would restart it, and a new generation would begin).
  pause_writer "$state"
  kill -TERM "$agent"; wait "$agent" || fail "agent exit status"
  grep -q "agent stopped" "$WORK/agent4.log" || fail "no clean stop"
  "$LB" agent --config "$WORK/plan4.yaml" > "$WORK/agent4b.log" 2>&1 &
  agent=$!
  wait_log "$WORK/agent4b.log" "sqlite follower continues"
  resume_writer "$state"
  wait_until 30 "more transactions" committed_at_least "$state" $(( $(count_of "$state") + 50 ))
  kill -TERM "$WRITER"; wait "$WRITER"
  kill -TERM "$agent"; wait "$agent" || fail "agent exit status"
  LIFEBOAT_REPOSITORY=$repo "$LB" sqlite restore "$db" --latest --target "$WORK/latest4.db" > /dev/null || fail "restore"
  [ "$(db_digest "$WORK/latest4.db")" = "$(db_digest "$db")" ] || fail "the restore differs from the database"
  # The same through db restore, and a drill: the point in time before the disaster, checked, RTO and RPO measured.
  "$LB" db restore app --config "$WORK/plan4.yaml" --target "$WORK/db4.db" > /dev/null || fail "db restore"
  [ "$(db_digest "$WORK/db4.db")" = "$(db_digest "$db")" ] || fail "db restore differs from the database"
  "$LB" drill run app-restore --config "$WORK/plan4.yaml" --json > "$WORK/drill4.json" || fail "drill: $(tail -c 600 "$WORK/drill4.json")"
  grep -q '"passed":true' "$WORK/drill4.json" || fail "the drill did not pass: $(tail -c 600 "$WORK/drill4.json")"
  grep -q 'integrity_check: ok' "$WORK/drill4.json" || fail "the drill did not check the database"
}

for t in ${SQLITE_TESTS:-t_three_times_match_three_copies t_killed_follower_continues_or_begins_a_generation t_bad_input_and_damage t_agent_continuous_source}; do
  run_test "$t"
done
echo "sqlite: $PASSED passed, $FAILED failed${FAILURES:+ (${FAILURES[*]})}"
[ "$FAILED" -eq 0 ]
