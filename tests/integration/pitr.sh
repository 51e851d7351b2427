#!/usr/bin/env bash
# Integration tests of issue 15, part 1: PostgreSQL continuous archiving and point-in-time recovery against a real
# PostgreSQL 15: archive_command = 'lifeboat pg wal-push --async …' under pgbench, `pg backup`, `pg restore` to a
# recorded time (a table of inserts with commit timestamps decides which rows must be there), the same from a
# replica site after the primary site is deleted, a missing segment named by `pg check` and `pg timeline`, the
# archiving helper SIGKILLed in a loop, and bad input (wrong names, sizes, clusters, a full spool, bad targets).
# Usage: tests/integration/pitr.sh path/to/lifeboat   (PITR_TESTS="t_a t_b" picks tests)
# Runs as root; PostgreSQL and every lifeboat command it runs (archive_command, restore_command) run as postgres.
# Clusters live under WORK with their own socket folder and no TCP port.
set -uo pipefail
source "$(dirname "$0")/lib.sh" "${1:?usage: pitr.sh path/to/lifeboat}" pitr

PGBIN=/usr/lib/postgresql/15/bin
unset PGDATABASE PGPORT PGPASSWORD PGSERVICE PGSERVICEFILE PGPASSFILE PGHOST PGUSER
# The binary where the postgres user can run it, and a password file it can read.
cp "$BIN" "$WORK/lifeboat"; chmod 755 "$WORK/lifeboat"
LB=$WORK/lifeboat
install -o postgres -m 600 "$WORK/pw" "$WORK/pg.pw"
chown postgres: "$WORK"                      # repositories and clusters are the postgres user's
as_pg() { runuser -u postgres -- env LIFEBOAT_KDF_PARAMS="$LIFEBOAT_KDF_PARAMS" LIFEBOAT_PASSWORD_FILE="$WORK/pg.pw" "$@"; }
pq() { psql -X -A -t -q -v ON_ERROR_STOP=1 -h "$WORK/$1/sock" -U postgres "${@:2}"; }

# pg_start NAME REPO [ARCHIVE_COMMAND]: a cluster in WORK/NAME archiving into REPO (made if missing).
pg_start() {
  local d=$WORK/$1 repo=$2
  mkdir -p "$d/sock"; chown postgres: "$d" "$d/sock"
  [ -d "$repo" ] || as_pg "$LB" -r "$repo" init > /dev/null
  as_pg "$PGBIN/initdb" -D "$d/data" -U postgres --auth=trust --no-sync ${INITDB_ARGS:-} > "$d/initdb.log" 2>&1 || { tail -5 "$d/initdb.log"; fail "initdb $1"; }
  cat >> "$d/data/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$d/sock'
fsync = off
wal_level = replica
archive_mode = on
archive_command = '${3:-$LB pg wal-push --async -r $repo %p}'
track_commit_timestamp = on
max_wal_size = 64MB
EOF
  as_pg "$PGBIN/pg_ctl" start -W -D "$d/data" -l "$d/server.log" > /dev/null
  wait_until 60 "PostgreSQL $1 to accept connections" pg_isready -q -h "$d/sock" -U postgres || { tail -5 "$d/server.log"; return 1; }
}
pg_stop() { local n; for n in "$@"; do [ -f "$WORK/$n/data/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" stop -D "$WORK/$n/data" -m fast -t 60 > /dev/null; done; return 0; }
# pg_restored NAME: start a restored data directory WORK/NAME (its own socket) and wait until recovery ended.
pg_restored() {
  local d=$WORK/$1
  mkdir -p "$d-sock"; chown postgres: "$d-sock"
  as_pg "$PGBIN/pg_ctl" start -D "$d" -l "$d.log" -o "-c listen_addresses='' -k $d-sock" > /dev/null
  promoted() { [ "$(psql -X -A -t -q -h "$d-sock" -U postgres -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; }
  wait_until 120 "the restored cluster $1 to finish recovery" promoted || { tail -15 "$d.log"; return 1; }
}
# pg_marked NAME REPO: a cluster archiving into REPO with an empty table of marks and a base backup.
pg_marked() {
  pg_start "$1" "$2" || return 1
  pq "$1" -c "CREATE TABLE marks (id serial PRIMARY KEY, note text)"
  (cd / && as_pg env PGHOST="$WORK/$1/sock" PGUSER=postgres "$LB" -r "$2" pg backup) > /dev/null || fail "pg backup of $1"
}
rq() { psql -X -A -t -q -v ON_ERROR_STOP=1 -h "$WORK/$1-sock" -U postgres "${@:2}"; }
# archived NAME: every WAL file PostgreSQL has handed over is archived (none ready, and the current one is done).
archived() {
  local seg; seg=$(pq "$1" -c "SELECT pg_walfile_name(pg_switch_wal())")
  caught_up() { [ -z "$(ls "$WORK/$1/data/pg_wal/archive_status" | grep ready)" ] && [ "$(pq "$1" -c "SELECT last_archived_wal >= '$seg' FROM pg_stat_archiver")" = t ]; }
  wait_until 120 "PostgreSQL $1 to archive up to $seg" caught_up "$1" || { tail -5 "$WORK/$1/server.log"; return 1; }
}
now_utc() { pq "$1" -c "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"; }

t_pitr_under_pgbench() {
  trap 'pg_stop pg r1 r2' EXIT
  local repo=$WORK/repo
  pg_start pg "$repo"
  as_pg pgbench -i -s 5 -q -h "$WORK/pg/sock" -U postgres postgres > "$WORK/pgbench-init.log" 2>&1 || { tail -3 "$WORK/pgbench-init.log"; fail "pgbench -i"; }
  pq pg -c "CREATE TABLE marks (id serial PRIMARY KEY, note text)"
  (cd / && as_pg env PGHOST="$WORK/pg/sock" PGUSER=postgres "$LB" -r "$repo" pg backup --json) > "$WORK/backup.json" || fail "pg backup"
  [ "$(json_field "$WORK/backup.json" pg_backup timeline)" = 1 ] || fail "the base backup records timeline 1"
  # Load, and a writer of marks, one transaction each; the recorded time T falls in the middle.
  as_pg pgbench -c 4 -j 2 -T 12 -h "$WORK/pg/sock" -U postgres postgres > "$WORK/pgbench.log" 2>&1 &
  local bench=$!
  python3 -c "
for i in range(600): print(f\"INSERT INTO marks (note) VALUES ('m{i}'); SELECT pg_sleep(0.02);\")" > "$WORK/marks.sql"
  pq pg -f "$WORK/marks.sql" > /dev/null &
  local writer=$!
  marks() { [ "$(pq pg -c 'SELECT count(*) FROM marks')" -ge "$1" ]; }
  wait_until 60 "200 marks" marks 200
  local T; T=$(now_utc pg)
  wait_until 60 "400 marks" marks 400
  local rc=0; wait $bench || rc=$?; [ $rc = 0 ] || { tail -3 "$WORK/pgbench.log"; fail "pgbench"; }
  wait $writer || fail "the writer"
  local want want_max all
  want=$(pq pg -c "SELECT count(*) FROM marks WHERE pg_xact_commit_timestamp(xmin) <= '$T'")
  want_max=$(pq pg -c "SELECT coalesce(max(id), 0) FROM marks WHERE pg_xact_commit_timestamp(xmin) <= '$T'")
  all=$(pq pg -c "SELECT count(*) FROM marks")
  echo "    T=$T: $want of $all marks committed by then"
  [ "$want" -gt 100 ] && [ "$want" -lt "$all" ] || fail "T falls in the middle of the writes"
  archived pg

  # The archive: no hole, and T within the restorable range.
  as_pg "$LB" -r "$repo" pg check > "$WORK/check.out" || { cat "$WORK/check.out"; fail "pg check"; }
  as_pg "$LB" -r "$repo" pg timeline --json > "$WORK/timeline.json"
  python3 - "$WORK/timeline.json" "$T" <<'PY' || fail "pg timeline's range holds T"
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])][0]
assert r["first_restorable"] < sys.argv[2] < r["last_restorable"], (r["first_restorable"], sys.argv[2], r["last_restorable"])
assert not r["problems"], r["problems"]
assert r["timelines"][0]["missing_count"] == 0
PY
  # No file snapshot shows: records are not files.
  [ -z "$(as_pg "$LB" -r "$repo" snapshots --json)" ] || fail "snapshots lists no WAL or base backup"
  [ "$(as_pg "$LB" -r "$repo" snapshots --records --json | grep -c '"pg-base"')" = 1 ] || fail "snapshots --records lists the base backup"
  lb -r "$repo" check > "$WORK/repo-check.out" || { tail -3 "$WORK/repo-check.out"; fail "lifeboat check"; }

  # Restore to T: exactly the marks committed by T.
  (cd / && as_pg "$LB" -r "$repo" pg restore --time "$T" --target "$WORK/r1" --no-archive) > "$WORK/restore.out" || { cat "$WORK/restore.out"; fail "pg restore --time"; }
  grep -q "recovery_target_time" "$WORK/r1/postgresql.auto.conf" || fail "the target time is written"
  pg_restored r1
  [ "$(rq r1 -c 'SELECT count(*) FROM marks')" = "$want" ] || fail "restored marks: $(rq r1 -c 'SELECT count(*) FROM marks'), want $want"
  [ "$(rq r1 -c 'SELECT max(id) FROM marks')" = "$want_max" ] || fail "restored highest mark"
  grep -q "recovery stopping before commit" "$WORK/r1.log" || fail "recovery stopped at the target"
  as_pg "$PGBIN/pg_amcheck" --install-missing -h "$WORK/r1-sock" -U postgres -d postgres > "$WORK/amcheck.out" 2>&1 || { tail -3 "$WORK/amcheck.out"; fail "pg_amcheck on the restored cluster"; }

  # A replica site alone: replicate, delete the primary site, restore everything archived from the replica.
  cat > "$WORK/sites.yaml" <<EOF
sites:
  - {name: main, repository: $repo, password_file: $WORK/pg.pw, role: primary}
  - {name: far, repository: $WORK/far, password_file: $WORK/pg.pw, role: replica}
replication: {interval: 60s, state_file: $WORK/replication.json}
EOF
  chown postgres: "$WORK/sites.yaml"; touch "$WORK/replication.json"; chown postgres: "$WORK/replication.json"
  as_pg "$LB" -r "$WORK/far" init --copy-chunker-params-from "$repo" > /dev/null
  as_pg "$LB" replicate --config "$WORK/sites.yaml" > "$WORK/replicate.out" 2>&1 || { tail -3 "$WORK/replicate.out"; fail "replicate"; }
  pg_stop pg
  rm -rf "$repo"
  (cd / && as_pg "$LB" pg restore --config "$WORK/sites.yaml" --site far --latest --target "$WORK/r2" --no-archive) > "$WORK/restore2.out" || { cat "$WORK/restore2.out"; fail "pg restore --latest from the replica"; }
  grep -q -- "--site far" "$WORK/r2/postgresql.auto.conf" || fail "restore_command reads the replica site"
  pg_restored r2
  [ "$(rq r2 -c 'SELECT count(*) FROM marks')" = "$all" ] || fail "every mark from the replica: $(rq r2 -c 'SELECT count(*) FROM marks'), want $all"
  [ "$(rq r2 -c 'SELECT count(*) FROM pgbench_accounts')" = 500000 ] || fail "pgbench's accounts from the replica"
}

# A record of segments after the base backup is forgotten (as a careless operator or an attacker could): check
# and timeline name the first missing segment; a restore past it is refused with the nearest restorable time,
# one before it works.
t_missing_segment_is_named() {
  trap 'pg_stop pg2 r3 r4' EXIT
  local repo=$WORK/repo2
  pg_marked pg2 "$repo"
  local i T1 T2
  for i in 1 2 3 4 5 6; do
    pq pg2 -c "INSERT INTO marks (note) SELECT 'r$i' FROM generate_series(1, 50)"
    [ $i = 2 ] && T1=$(now_utc pg2)
    [ $i = 5 ] && T2=$(now_utc pg2)
    archived pg2
  done
  # The record holding the fourth segment after the backup's.
  as_pg "$LB" -r "$repo" snapshots --records --json > "$WORK/records.json"
  local victim missing
  read -r victim missing < <(python3 - "$WORK/records.json" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
segs = sorted((f["name"], r["id"]) for r in recs if r["kind"] == "pg-wal" for f in r["database"]["files"] if len(f["name"]) == 24)
name, rid = segs[-3]
first = min(f["name"] for r in recs if r["id"] == rid for f in r["database"]["files"] if len(f["name"]) == 24)
print(rid, first)
PY
)
  [ -n "$victim" ] || fail "a record to remove"
  lb -r "$repo" forget "$victim" > /dev/null
  expect_code 1 as_pg "$LB" -r "$repo" pg check
  grep -q "$missing" "$WORK/out" || { cat "$WORK/out"; fail "pg check names $missing"; }
  expect_code 1 as_pg "$LB" -r "$repo" pg timeline
  grep -q "$missing" "$WORK/out" || { cat "$WORK/out"; fail "pg timeline names $missing"; }
  # Past the hole: refused, naming the segment and the newest restorable time. --latest too.
  expect_code 1 as_pg "$LB" -r "$repo" pg restore --time "$T2" --target "$WORK/r3"
  grep -q "$missing" "$WORK/err" && grep -q "newest restorable time" "$WORK/err" || { cat "$WORK/err"; fail "the refusal names the hole and the nearest time"; }
  [ ! -e "$WORK/r3" ] || fail "a refused restore writes nothing"
  expect_code 1 as_pg "$LB" -r "$repo" pg restore --latest --target "$WORK/r3"
  grep -q "$missing" "$WORK/err" || fail "--latest names the hole"
  # wal-fetch: the missing segment is "not in the archive" (exit 1: recovery may end there), not a failure.
  expect_code 1 as_pg "$LB" -r "$repo" pg wal-fetch "$missing" "$WORK/seg"
  # Before the hole: restores.
  (cd / && as_pg "$LB" -r "$repo" pg restore --time "$T1" --target "$WORK/r3" --no-archive) > /dev/null || fail "a restore before the hole"
  pg_restored r3
  [ "$(rq r3 -c 'SELECT count(*) FROM marks')" = 100 ] || fail "the rows of the first two inserts"
  # A new base backup, then retention keeps it and the WAL after its start only: the hole goes with the old WAL.
  (cd / && as_pg env PGHOST="$WORK/pg2/sock" PGUSER=postgres "$LB" -r "$repo" pg backup) > /dev/null || fail "a second pg backup"
  as_pg "$LB" -r "$repo" pg forget --keep-last 1 --json > "$WORK/forget.json" || fail "pg forget"
  [ "$(json_field "$WORK/forget.json" pg_forget removed_files)" -ge 5 ] || { cat "$WORK/forget.json"; fail "the old WAL is removed"; }
  as_pg "$LB" -r "$repo" pg check > "$WORK/check2.out" || { cat "$WORK/check2.out"; fail "no hole is left"; }
  [ "$(as_pg "$LB" -r "$repo" snapshots --records --json | grep -c '"pg-base"')" = 1 ] || fail "one base backup is kept"
  as_pg "$LB" -r "$repo" prune --grace 0s > /dev/null || fail "prune after pg forget"
  as_pg "$LB" -r "$repo" check > /dev/null || fail "the repository checks after prune"
  as_pg "$LB" -r "$repo" pg restore --latest --target "$WORK/r4" --no-archive > /dev/null || fail "a restore from the kept backup"
}

# The archiving helper and archive_command are SIGKILLed again and again while PostgreSQL switches segments:
# nothing acknowledged is lost, nothing partial is stored. archive_command also keeps a copy of each file, to
# compare with what wal-fetch returns.
t_wal_push_killed_in_a_loop_loses_nothing() {
  trap 'pg_stop pg3' EXIT
  local repo=$WORK/repo3
  mkdir -p "$WORK/copies"; chown postgres: "$WORK/copies"
  pg_start pg3 "$repo" "cp %p $WORK/copies/%f && $LB pg wal-push --async --wait 20 -r $repo %p"
  pq pg3 -c "CREATE TABLE t (id serial, pad text)"
  # The load switches segments until told to stop (at most 400 times).
  (
    for i in $(seq 1 400); do
      [ -e "$WORK/stop-load" ] && break
      pq pg3 -c "INSERT INTO t (pad) SELECT md5(g::text) || repeat('x', 400) FROM generate_series(1, 3000) g; SELECT pg_switch_wal()" > /dev/null
    done
  ) &
  local load=$! kills=0 i
  # The helper 0.2 to 1.2 s into each of its lives (wal-push starts a new one when it finds none, at most once a
  # second), for about 20 s; archive_command itself now and then (PostgreSQL then restarts its archiver).
  for i in $(seq 1 30); do
    if [ $((i % 10)) = 0 ]; then pkill -KILL -f "$WORK/lifeboat pg wal-push --async" && kills=$((kills + 1))
    else pkill -KILL -f "$WORK/lifeboat pg wal-push-helper" && kills=$((kills + 1)); fi
    sleep "$(( RANDOM % 2 )).$(( RANDOM % 10 ))"; sleep 0.2
  done
  touch "$WORK/stop-load"
  wait $load || fail "the load"
  echo "    $kills kills"
  [ $kills -gt 8 ] || fail "the helper was killed again and again"
  archived pg3
  as_pg "$LB" -r "$repo" pg timeline --json > "$WORK/tl.json" || true   # exit 1: no base backup here
  python3 - "$WORK/tl.json" <<'PY' || fail "one timeline, no segment missing"
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])][0]
t = r["timelines"]
assert len(t) == 1 and t[0]["missing_count"] == 0 and t[0]["first_segment"] == "000000010000000000000001", t
PY
  # Every file PostgreSQL handed over is archived, byte for byte.
  local f n=0 bad=0
  for f in "$WORK"/copies/0*; do
    n=$((n + 1))
    as_pg "$LB" -r "$repo" pg wal-fetch --spool "$WORK/fetch-spool" "$(basename "$f")" "$WORK/fetched" > /dev/null 2>&1 || { echo "    $(basename "$f") not fetched"; bad=1; continue; }
    cmp -s "$f" "$WORK/fetched" || { echo "    $(basename "$f") differs"; bad=1; }
  done
  echo "    $n files compared"
  [ $bad = 0 ] && [ $n -gt 30 ] || fail "every archived file fetched back as it was"
  lb -r "$repo" check > /dev/null || fail "the repository checks"
}

t_bad_input() {
  trap 'pg_stop pg4 pg5' EXIT
  local repo=$WORK/repo4
  pg_start pg4 "$repo"
  pq pg4 -c "CREATE TABLE t AS SELECT 1 AS x"
  archived pg4
  local seg d=$WORK/bad
  seg=$(ls "$WORK/pg4/data/pg_wal" | grep -E '^[0-9A-F]{24}$' | head -1)
  mkdir -p "$d"; chown postgres: "$d"
  # A name that is not a WAL file's; a truncated segment; a segment under another name.
  cp "$WORK/pg4/data/pg_wal/$seg" "$d/RECOVERYXLOG"
  chown -R postgres: "$d"; expect_code 1 as_pg "$LB" -r "$repo" pg wal-push "$d/RECOVERYXLOG"
  grep -q "not a WAL file name" "$WORK/err" || fail "a bad name is named"
  head -c 1000000 "$WORK/pg4/data/pg_wal/$seg" > "$d/00000001000000000000007F"
  chown -R postgres: "$d"; expect_code 1 as_pg "$LB" -r "$repo" pg wal-push "$d/00000001000000000000007F"
  grep -q "1000000 bytes" "$WORK/err" || { cat "$WORK/err"; fail "a truncated segment is refused with its size"; }
  cp "$WORK/pg4/data/pg_wal/$seg" "$d/00000001000000000000007E"
  chown -R postgres: "$d"; expect_code 1 as_pg "$LB" -r "$repo" pg wal-push "$d/00000001000000000000007E"
  grep -q "another name" "$WORK/err" || { cat "$WORK/err"; fail "a renamed segment is refused"; }
  # Another cluster's segment into this archive.
  pg_start pg5 "$WORK/repo5"
  local other; other=$(ls "$WORK/pg5/data/pg_wal" | grep -E '^[0-9A-F]{24}$' | head -1)
  cp "$WORK/pg5/data/pg_wal/$other" "$d/000000010000000000000070"
  python3 - "$d/000000010000000000000070" <<'PY'
import struct, sys
# Give it the address its new name says, so that only the cluster differs.
with open(sys.argv[1], "r+b") as f: f.seek(8); f.write(struct.pack("<Q", 0x70 * 16 * 1024 * 1024))
PY
  chown -R postgres: "$d"; expect_code 1 as_pg "$LB" -r "$repo" pg wal-push "$d/000000010000000000000070"
  grep -q "database system" "$WORK/err" || { cat "$WORK/err"; fail "another cluster's segment is refused"; }
  # The same name with other bytes than archived: refused, nothing overwritten.
  cp "$WORK/pg4/data/pg_wal/$seg" "$d/$seg"; printf 'X' | dd of="$d/$seg" bs=1 seek=9000 conv=notrunc 2>/dev/null
  chown -R postgres: "$d"; expect_code 1 as_pg "$LB" -r "$repo" pg wal-push "$d/$seg"
  grep -q "other contents" "$WORK/err" || { cat "$WORK/err"; fail "a second push with other bytes is refused"; }
  # A full spool: wal-push --async fails (PostgreSQL retries), and works once there is room.
  mkdir -p "$d/spool"; mount -t tmpfs -o size=64k tmpfs "$d/spool"; chown postgres: "$d/spool"
  head -c 100000 /dev/zero > "$d/spool/filler" 2>/dev/null || true
  mkdir -p "$d/good"; cp "$WORK/pg4/data/pg_wal/$seg" "$d/good/"; chown -R postgres: "$d/good"
  expect_code 1 as_pg "$LB" -r "$repo" pg wal-push --async --spool "$d/spool" --wait 5 "$d/good/$seg"
  rm -f "$d/spool/filler"
  as_pg "$LB" -r "$repo" pg wal-push --async --spool "$d/spool" --wait 30 "$d/good/$seg" > /dev/null 2> "$WORK/err" || { cat "$WORK/err"; fail "wal-push once the spool has room"; }
  pkill -f "$d/spool" ; umount "$d/spool" 2>/dev/null || umount -l "$d/spool"
  # Restore targets: exactly one; an existing folder; a time before any backup.
  expect_code 1 as_pg "$LB" -r "$repo" pg restore --target "$d/x"
  expect_code 1 as_pg "$LB" -r "$repo" pg restore --latest --time 2026-01-01T00:00:00Z --target "$d/x"
  expect_code 1 as_pg "$LB" -r "$repo" pg restore --latest --target "$d/x"
  grep -q "no base backup" "$WORK/err" || { cat "$WORK/err"; fail "no base backup is said"; }
  (cd / && as_pg env PGHOST="$WORK/pg4/sock" PGUSER=postgres "$LB" -r "$repo" pg backup) > /dev/null || fail "pg backup"
  expect_code 1 as_pg "$LB" -r "$repo" pg restore --time 2020-01-01T00:00:00Z --target "$d/x"
  grep -q "before the oldest restorable time" "$WORK/err" || { cat "$WORK/err"; fail "a time before the backup is refused"; }
  expect_code 1 as_pg "$LB" -r "$repo" pg restore --latest --target "$d"
  grep -q "not an empty folder" "$WORK/err" || fail "a non-empty target is refused"
  # A password in the DSN is refused before anything connects.
  expect_code 1 as_pg "$LB" -r "$repo" pg backup --dsn "host=$WORK/pg4/sock user=postgres password=hunter2"
  grep -q "password" "$WORK/err" && ! grep -q hunter2 "$WORK/err" || fail "a DSN password is refused without echoing it"
}

# The agent with a PostgreSQL PITR source (it runs as postgres, as the archive_command does): a base backup run
# from the API, the RPO measured by the newest archived WAL (not the base backup), the records replicated to a
# second site, and a hole in the WAL raised as one wal_gap alert.
t_agent_pitr_source() {
  trap 'pg_stop pg6; [ -n "${AGENT:-}" ] && kill -TERM "$AGENT" 2>/dev/null; true' EXIT
  local repo=$WORK/home6 far=$WORK/far6 a=$WORK/agent6 port hook
  pg_start pg6 "$repo"
  as_pg "$LB" -r "$far" init --copy-chunker-params-from "$repo" > /dev/null
  mkdir -p "$a"; chown postgres: "$a"
  echo "host=$WORK/pg6/sock user=postgres dbname=postgres" > "$a/db.dsn"; chown postgres: "$a/db.dsn"; chmod 600 "$a/db.dsn"
  port=$(free_port); hook=$(free_port)
  python3 "$HERE/webhook.py" "$hook" "$WORK/hooks6.jsonl" 0 &
  wait_port "$hook"
  cat > "$a/lifeboat.yaml" <<YAML
sites:
  - {name: home, repository: $repo, password_file: $WORK/pg.pw, role: primary}
  - {name: far, repository: $far, password_file: $WORK/pg.pw, role: replica}
sources:
  - name: db
    postgres: {dsn_file: $a/db.dsn, pitr: true}
    schedule: every 1d
    retention: {keep_last: 2}
    objectives: {rpo: 10m}
replication: {interval: 2s, max_backoff: 2s, state_file: $a/replication.json}
alerts:
  - {type: webhook, url: "http://127.0.0.1:$hook/alert"}
agent: {listen: 127.0.0.1:$port, token_file: $a/token, state: $a/agent.db}
YAML
  head -c 24 /dev/urandom | base64 > "$a/token"; chmod 600 "$a/token"
  chown postgres: "$a/lifeboat.yaml" "$a/token"
  as_pg "$LB" config validate --config "$a/lifeboat.yaml" > "$WORK/validate6.out" 2>&1 || { cat "$WORK/validate6.out"; fail "the plan validates"; }
  as_pg "$LB" agent --config "$a/lifeboat.yaml" > "$a/agent.log" 2>&1 &
  AGENT=$!
  wait_until 60 "the agent's API" eval 'grep -q "API listening" "$a/agent.log"' || { tail -5 "$a/agent.log"; return 1; }
  api6() { curl -sS --fail-with-body -X "$1" -H "Authorization: Bearer $(cat "$a/token")" "http://127.0.0.1:$port$2"; }
  newest6() {  # newest6 SITE: the newest copy of db the agent reports there
    api6 GET /status | python3 -c "import json,sys; s=json.load(sys.stdin); print([x for x in [r for r in s['sources'] if r['name']=='db'][0]['sites'] if x['site']=='$1'][0].get('newest_snapshot'))"
  }
  api6 POST /jobs/backup:db/run > /dev/null || fail "run the base backup now"
  has_base() { as_pg "$LB" -r "$repo" snapshots --records --json | grep -q '"pg-base"'; }
  wait_until 120 "the agent's base backup" has_base || { tail -5 "$a/agent.log"; return 1; }
  local base_time; base_time=$(as_pg "$LB" -r "$repo" snapshots --records --json | python3 -c "import json,sys; print([json.loads(l) for l in sys.stdin if '\"pg-base\"' in l][0]['time'])")
  # WAL after the base backup moves the newest copy (the RPO's clock) past the base backup's time.
  pq pg6 -c "CREATE TABLE t AS SELECT generate_series(1, 1000) AS x"
  archived pg6
  later() { local n; n=$(newest6 "$1"); [ "$n" != None ] && [[ "$n" > "$base_time" ]]; }
  wait_until 60 "the newest WAL to count at home" later home || { api6 GET /status | head -c 1500; return 1; }
  wait_until 60 "the records to reach far" later far || { tail -5 "$a/agent.log"; return 1; }
  # A hole: one record of WAL after the base backup is removed at home; the agent alerts wal_gap once.
  pq pg6 -c "INSERT INTO t SELECT generate_series(1, 1000)"; archived pg6
  pq pg6 -c "INSERT INTO t SELECT generate_series(1, 1000)"; archived pg6
  local victim
  victim=$(as_pg "$LB" -r "$repo" snapshots --records --json | python3 -c "
import json, sys
r = [json.loads(l) for l in sys.stdin]
w = [x for x in r if x['kind'] == 'pg-wal' and any(len(f['name']) == 24 for f in x['database']['files'])]
print(w[-2]['id'])")
  as_pg "$LB" -r "$repo" forget "$victim" > /dev/null
  gap_alerts() { python3 -c "
import json, sys
n = 0
for l in open('$WORK/hooks6.jsonl'):
    r = json.loads(l); b = json.loads(r['body'])
    if b['event'] == 'wal_gap' and b.get('site') == 'home' and not b['resolved']: n += 1
print(n)" 2>/dev/null || echo 0; }
  wait_until 60 "a wal_gap alert for home" eval '[ "$(gap_alerts)" -ge 1 ]' || { tail -5 "$a/agent.log"; return 1; }
  sleep 5   # several replication passes (each refreshes the site): the alert is not repeated
  [ "$(gap_alerts)" = 1 ] || fail "one wal_gap alert, not one per pass (got $(gap_alerts))"
  # SIGTERM to the agent itself (AGENT is runuser, which passes its exit status on).
  pkill -TERM -f "^$LB agent --config $a/lifeboat.yaml"
  local rc=0; wait "$AGENT" || rc=$?
  [ $rc = 0 ] || { tail -3 "$a/agent.log"; fail "the agent exits 0 on SIGTERM (got $rc)"; }
  AGENT=
}

# A base backup taken from a streaming standby (pg_backup_start works there; the primary archives the WAL, which
# the backup waits for), restored to the newest archived point.
t_base_backup_from_a_standby() {
  trap 'pg_stop pg7; [ -f "$WORK/sb/data/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" stop -D "$WORK/sb/data" -m fast > /dev/null; pg_stop r7' EXIT
  local repo=$WORK/repo7
  pg_start pg7 "$repo"
  pq pg7 -c "CREATE TABLE marks (id serial PRIMARY KEY, note text); INSERT INTO marks (note) SELECT 'before' FROM generate_series(1, 500)"
  mkdir -p "$WORK/sb/sock"; chown -R postgres: "$WORK/sb"
  as_pg "$PGBIN/pg_basebackup" -D "$WORK/sb/data" -h "$WORK/pg7/sock" -U postgres -R -X stream > "$WORK/sb/basebackup.log" 2>&1 || { cat "$WORK/sb/basebackup.log"; fail "pg_basebackup for the standby"; }
  as_pg "$PGBIN/pg_ctl" start -W -D "$WORK/sb/data" -l "$WORK/sb/server.log" -o "-c listen_addresses='' -k $WORK/sb/sock -c unix_socket_directories='$WORK/sb/sock'" > /dev/null
  standby_up() { [ "$(psql -X -A -t -q -h "$WORK/sb/sock" -U postgres -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = t ]; }
  wait_until 60 "the standby" standby_up || { tail -5 "$WORK/sb/server.log"; return 1; }
  # The primary keeps writing and switching segments, so that the WAL the standby's backup needs gets archived.
  ( for i in $(seq 1 120); do [ -e "$WORK/stop7" ] && break; pq pg7 -c "INSERT INTO marks (note) VALUES ('w$i'); SELECT pg_switch_wal()" > /dev/null; sleep 0.5; done ) &
  local writer=$!
  (cd / && as_pg env PGHOST="$WORK/sb/sock" PGUSER=postgres "$LB" -r "$repo" pg backup --json) > "$WORK/sb-backup.json" || { touch "$WORK/stop7"; fail "pg backup from the standby"; }
  touch "$WORK/stop7"; wait $writer || true
  [ "$(json_field "$WORK/sb-backup.json" pg_backup standby)" = True ] || fail "the record says it came from a standby"
  archived pg7
  local want; want=$(pq pg7 -c "SELECT count(*) FROM marks")
  # Only the standby's backup exists: the restore must use it.
  [ "$(as_pg "$LB" -r "$repo" snapshots --records --json | grep -c '"pg-base"')" = 1 ] || fail "one base backup"
  (cd / && as_pg "$LB" -r "$repo" pg restore --latest --target "$WORK/r7" --no-archive) > /dev/null || fail "restore from the standby's backup"
  pg_restored r7
  [ "$(rq r7 -c 'SELECT count(*) FROM marks')" = "$want" ] || fail "every mark archived: $(rq r7 -c 'SELECT count(*) FROM marks'), want $want"
}

# A cluster whose pg_wal is a link to a folder elsewhere (initdb --waldir): the restored copy gets a pg_wal folder
# of its own, never the link (its WAL would go into the original cluster's folder).
t_linked_pg_wal_is_not_restored_as_a_link() {
  trap 'pg_stop pg8 r8' EXIT
  local repo=$WORK/repo8
  mkdir -p "$WORK/walelsewhere"; chown postgres: "$WORK/walelsewhere"
  INITDB_ARGS="--waldir=$WORK/walelsewhere/wal" pg_start pg8 "$repo"
  [ -L "$WORK/pg8/data/pg_wal" ] || fail "initdb made pg_wal a link"
  pq pg8 -c "CREATE TABLE t AS SELECT generate_series(1, 100) AS x"
  (cd / && as_pg env PGHOST="$WORK/pg8/sock" PGUSER=postgres "$LB" -r "$repo" pg backup) > /dev/null || fail "pg backup"
  archived pg8
  (cd / && as_pg "$LB" -r "$repo" pg restore --latest --target "$WORK/r8" --no-archive) > /dev/null || fail "pg restore"
  [ -d "$WORK/r8/pg_wal" ] && [ ! -L "$WORK/r8/pg_wal" ] || fail "the restored pg_wal is a folder of its own"
  local before; before=$(ls "$WORK/walelsewhere/wal" | wc -l)
  pg_restored r8
  [ "$(rq r8 -c 'SELECT count(*) FROM t')" = 100 ] || fail "the rows"
  rq r8 -c "SELECT pg_switch_wal()" > /dev/null
  [ "$(ls "$WORK/walelsewhere/wal" | grep -c '^0000000[2-9]')" = 0 ] || fail "the restored cluster wrote into the original's WAL folder"
}

# A drill of a PITR source: at each site alone (the primary's and a replica's copy of the records), the newest
# base backup and all archived WAL into the sandbox, the server started as run_as on {port}, replayed and promoted,
# the playbook's query against it; the RPO from the last replayed transaction. A disaster declared in the past
# (LIFEBOAT_NOW) replays to that time and no further. Without run_as the drill fails, named. Every server stopped,
# every sandbox gone.
t_drill_of_a_pitr_source() {
  trap 'pg_stop dp' EXIT
  local repo=$WORK/drepo
  pg_marked dp "$repo"
  pq dp -c "INSERT INTO marks (note) SELECT 'a' || g FROM generate_series(1, 500) g"
  archived dp
  local t; t=$(now_utc dp)
  pq dp -c "INSERT INTO marks (note) SELECT 'b' || g FROM generate_series(1, 300) g"
  archived dp
  lb -r "$WORK/dusb" --password-file "$WORK/pg.pw" init --copy-chunker-params-from "$repo" --from-password-file "$WORK/pg.pw" > /dev/null
  echo "host=$WORK/dp/sock user=postgres" > "$WORK/dp.dsn"; chown postgres: "$WORK/dp.dsn"
  cat > "$WORK/dp.yaml" <<'YAML'
name: the archive replayed
source: db
steps:
  - {name: restore, lifeboat: restore}
  - {name: rows, check: "psql -X -h {sandbox} -p {port} -U postgres -d postgres -tAc 'select count(*) from marks' | grep -qx {rows}", within: 20s}
  - {name: writable, run: ["psql", "-X", "-h", "{sandbox}", "-p", "{port}", "-U", "postgres", "-d", "postgres", "-c", "insert into marks (note) values ('drill')"]}
YAML
  cat > "$WORK/dplan.yaml" <<YAML
sites:
  - {name: home, repository: $repo, password_file: $WORK/pg.pw, role: primary}
  - {name: usb, repository: $WORK/dusb, password_file: $WORK/pg.pw, role: replica}
sources:
  - {name: db, postgres: {dsn_file: $WORK/dp.dsn, pitr: true}, schedule: "0 3 * * *", objectives: {rpo: 10m, rto: 10m}}
drills:
  - {name: dbd, source: db, sandbox: $WORK/dsb, playbook: $WORK/dp.yaml, run_as: postgres, variables: {rows: "800"}}
  - {name: dbt, source: db, from: [usb], sandbox: $WORK/dsb, playbook: $WORK/dp.yaml, run_as: postgres, variables: {rows: "500"}}
  - {name: dbroot, source: db, from: [home], sandbox: $WORK/dsb}
replication: {state_file: $WORK/drepl.json}
agent: {state: $WORK/dagent.db}
YAML
  sed -n '1,3p;/^replication/p' "$WORK/dplan.yaml" > "$WORK/dsites.yaml"
  lb config validate --config "$WORK/dplan.yaml" > "$WORK/validate" 2>&1
  grep -q 'drill dbroot: source db is restored as a running PostgreSQL server' "$WORK/validate" || { cat "$WORK/validate"; fail "validate warns of a PITR drill without run_as"; }
  lb replicate --config "$WORK/dsites.yaml" > /dev/null || fail "replicate the records to usb"
  lb drill run --config "$WORK/dplan.yaml" dbd --json > "$WORK/dbd.out" 2> "$WORK/dbd.err" || { tail -5 "$WORK/dbd.err"; cat "$WORK/dbd.out"; fail "the drill at home and usb"; }
  python3 - "$WORK/dbd.out" <<'PY' || { cat "$WORK/dbd.out"; fail "replayed to the end, 800 rows, writable, RPO from the last transaction, phases"; }
import json, sys
rs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{") and '"drill_report"' in l]
assert sorted(r["site"] for r in rs) == ["home", "usb"], rs
for r in rs:
    steps = {s["name"]: s for s in r["steps"]}
    assert steps["rows"]["result"] == "ok" and steps["writable"]["result"] == "ok", r["steps"]
    d = steps["restore"]["detail"]
    assert "replayed to the end of the archive" in d and "WAL segment" in d, d
    assert 0 <= r["rpo_seconds"] < 600 and r["rto_seconds"] > 0, r
    assert r["phases"]["replay"] > 0 and r["phases"]["restore"] > 0, r["phases"]
PY
  # The disaster at T, before the last 300 rows: replayed to T, from the replica alone.
  LIFEBOAT_NOW=$t lb drill run --config "$WORK/dplan.yaml" dbt --json > "$WORK/dbt.out" 2>&1 || { cat "$WORK/dbt.out"; fail "the drill to T"; }
  grep -q "replayed to ${t:0:16}" "$WORK/dbt.out" || { cat "$WORK/dbt.out"; fail "the restore says it replayed to T"; }
  expect_code 23 lb drill run --config "$WORK/dplan.yaml" dbroot
  cat "$WORK/out" "$WORK/err" | grep -q "does not run as root" || { cat "$WORK/out" "$WORK/err"; fail "a drill without run_as is refused, named"; }
  ! pgrep -f "$WORK/dsb" > /dev/null || { pgrep -af "$WORK/dsb"; fail "every drill server is stopped"; }
  [ -z "$(ls -A "$WORK/dsb" 2>/dev/null)" ] || { ls -la "$WORK/dsb"; fail "no sandbox is left behind"; }
  [ "$(pq dp -c 'SELECT count(*) FROM marks')" = 800 ] || fail "the production cluster is untouched"
}

for t in ${PITR_TESTS:-t_pitr_under_pgbench t_missing_segment_is_named t_wal_push_killed_in_a_loop_loses_nothing t_bad_input t_agent_pitr_source t_base_backup_from_a_standby t_linked_pg_wal_is_not_restored_as_a_link t_drill_of_a_pitr_source}; do
  run_test "$t"
done
echo "pitr: $PASSED passed, $FAILED failed${FAILURES:+ (${FAILURES[*]})}"
[ "$FAILED" -eq 0 ]
