#!/usr/bin/env bash
# Integration tests of issue 12 part 4: the README's database recipes (section "Databases"), run against real
# servers started here (PostgreSQL 15, MariaDB) and a real SQLite file, each with a writer committing during the
# backup; the restored data must be the data of one moment. And what Lifeboat says about a live database file.
# Usage: tests/integration/databases.sh path/to/lifeboat   (DATABASES_TESTS="t_a t_b" picks tests)
# Runs as root (PostgreSQL runs as the postgres user via runuser); packages from scripts/install-deps.sh.
# The servers get their own data folders and sockets under WORK and no TCP port: a system instance (Debian's
# packages may start one) is neither used nor disturbed.
set -uo pipefail
source "$(dirname "$0")/lib.sh" "${1:?usage: databases.sh path/to/lifeboat}" databases

# The commands below are the README's: `lifeboat` is the binary under test (a command, not a function, so that
# a failing step's line is reported on the test's output, not into the step's redirection).
mkdir -p "$WORK/bin"; ln -s "$BIN" "$WORK/bin/lifeboat"; export PATH=$WORK/bin:$PATH
PGBIN=/usr/lib/postgresql/15/bin
unset PGDATABASE PGPORT PGPASSWORD PGSERVICE PGSERVICEFILE PGPASSFILE MYSQL_UNIX_PORT MYSQL_PWD

gone() { ! alive "$1"; }
# md5 of a query's rows: equal digests mean equal data, row for row.
digest() { "$@" | md5sum | cut -d' ' -f1; }

# ---- PostgreSQL ------------------------------------------------------------------------------------------------

# pg_start NAME: a throwaway cluster in $WORK/NAME, owned by postgres, on the socket folder $WORK/NAME/sock only.
pg_start() {
  local d=$WORK/$1
  mkdir -p "$d/data" "$d/sock"; chown -R postgres: "$d"
  runuser -u postgres -- "$PGBIN/initdb" -D "$d/data" -U postgres --auth=trust --no-sync > "$d/initdb.log" 2>&1 ||
    { tail -5 "$d/initdb.log"; fail "initdb $1"; }
  runuser -u postgres -- "$PGBIN/pg_ctl" start -W -D "$d/data" -l "$d/server.log" \
    -o "-c listen_addresses='' -k $d/sock -c fsync=off" > /dev/null
  wait_until 60 "PostgreSQL $1 to accept connections" pg_isready -q -h "$d/sock" -U postgres ||
    { tail -5 "$d/server.log"; return 1; }
}
pg_stop() {  # pg_stop NAME…: a fast shutdown (rolls back open transactions), waited for
  local n
  for n in "$@"; do
    [ -f "$WORK/$n/data/postmaster.pid" ] || continue
    runuser -u postgres -- "$PGBIN/pg_ctl" stop -D "$WORK/$n/data" -m fast -t 60 > /dev/null || fail "pg_ctl stop $n"
  done
}
pq() { psql -X -A -t -q -v ON_ERROR_STOP=1 "$@"; }
pg_pair() {  # the pair the writer keeps equal, then the orders' count, sum and highest ID
  pq -F ' ' -c "SELECT a.n, a.total, o.c, o.s, o.m FROM accounts a, (SELECT count(*) c, coalesce(sum(amount), 0) s, max(id) m FROM orders) o WHERE a.id = 1" "$1"
}
pg_orders() { pq -c "SELECT id, invoice, amount, note, encode(payload, 'hex') FROM orders WHERE id <= $2 ORDER BY id" "$1"; }

t_postgresql() {
  trap 'pg_stop pg1 pg2' EXIT          # the test's subshell: also when a step fails
  pg_start pg1
  export PGHOST=$WORK/pg1/sock PGUSER=postgres LIFEBOAT_REPOSITORY=$WORK/r-pg
  lifeboat init > /dev/null
  createdb shop
  pq -d shop <<'EOF'
CREATE ROLE shop_app LOGIN;
CREATE SEQUENCE invoice_no START 1000;
CREATE TABLE accounts (id int PRIMARY KEY, n bigint NOT NULL, total bigint NOT NULL);
CREATE TABLE orders (id bigserial PRIMARY KEY, invoice bigint NOT NULL DEFAULT nextval('invoice_no'),
                     amount int NOT NULL, note text, payload bytea);
CREATE TABLE docs (id int PRIMARY KEY, body oid);
GRANT SELECT, INSERT ON orders TO shop_app;
INSERT INTO docs SELECT 1, lo_from_bytea(0, string_agg(sha256(i::text::bytea), ''::bytea)) FROM generate_series(1, 30000) i;
INSERT INTO orders (amount, note, payload) SELECT i % 97, md5(i::text), sha256(i::text::bytea) FROM generate_series(1, 200000) i;
INSERT INTO accounts SELECT 1, count(*), sum(amount) FROM orders;
EOF
  # The writer: each transaction adds an order and updates the pair, so any one moment has n = count(orders).
  python3 -c "
for i in range(20000):
    a = i % 89
    print(f\"BEGIN; INSERT INTO orders (amount, note, payload) VALUES ({a}, 'w{i}', sha256('w{i}'::bytea)); UPDATE accounts SET n = n + 1, total = total + {a} WHERE id = 1; COMMIT; SELECT pg_sleep(0.005);\")
" > "$WORK/pg-writer.sql"
  psql -X -q -v ON_ERROR_STOP=1 -d shop -f "$WORK/pg-writer.sql" > /dev/null 2> "$WORK/pg-writer.err" &
  local writer=$!
  local start; start=$(pg_pair shop); start=${start##* }   # the highest ID before the writer
  pg_wrote() { local p; p=$(pg_pair shop); p=${p##* }; [ "$p" -gt $(( start + 20 )) ]; }
  wait_until 60 "the PostgreSQL writer to commit" pg_wrote
  local before after; before=$(pg_pair shop)

  # The README's commands.
  lifeboat backup --stdin-from-command --stdin-filename shop.dump --tag pg -- pg_dump --format=custom shop > "$WORK/pg-backup.out"
  lifeboat backup --stdin-from-command --stdin-filename pg-globals.sql --tag pg-globals -- pg_dumpall --globals-only > /dev/null

  after=$(pg_pair shop)
  alive "$writer" || { cat "$WORK/pg-writer.err"; fail "the writer ran through the backup"; }
  kill "$writer"; wait "$writer" 2>/dev/null || true
  echo "    before the backup: n=${before%% *}, after: n=${after%% *}"
  [ "${after%% *}" -gt "${before%% *}" ] || fail "the writer committed during the backup"

  # Restore on a new server, as after losing this one: roles first, then the database under a new name.
  pg_start pg2
  export PGHOST=$WORK/pg2/sock
  lifeboat dump --tag pg-globals latest /pg-globals.sql | psql --dbname postgres > "$WORK/pg-globals.out" 2>&1
  createdb shop_restored
  lifeboat dump --tag pg latest /shop.dump | pg_restore --dbname shop_restored

  # One moment: the pair agrees, and the orders are exactly the source's up to the restored highest ID.
  local n total c s m
  read -r n total c s m <<< "$(pg_pair shop_restored)"
  echo "    restored: n=$n orders=$c (highest ID $m)"
  [ "$n" = "$c" ] && [ "$total" = "$s" ] || fail "the restored pair disagrees: n=$n total=$total, orders: $c rows, sum $s"
  [ "$n" -ge "${before%% *}" ] && [ "$n" -le "${after%% *}" ] || fail "restored n=$n is not between ${before%% *} and ${after%% *}"
  [ "$(digest pg_orders shop_restored "$m")" = "$(PGHOST=$WORK/pg1/sock digest pg_orders shop "$m")" ] ||
    fail "the restored orders differ from the source's first $m"
  # The large object, the sequences (a new order gets a new invoice number and ID) and the role with its grant.
  [ "$(pq -c "SELECT md5(lo_get(body)) FROM docs" shop_restored)" = "$(PGHOST=$WORK/pg1/sock pq -c "SELECT md5(lo_get(body)) FROM docs" shop)" ] ||
    fail "the large object differs"
  [ "$(pq -c "SELECT last_value FROM invoice_no" shop_restored)" -ge "$(pq -c "SELECT max(invoice) FROM orders" shop_restored)" ] ||
    fail "the sequence invoice_no was restored behind the data"
  pq -c "INSERT INTO orders (amount) VALUES (1)" shop_restored
  [ "$(pq -c "SELECT has_table_privilege('shop_app', 'orders', 'INSERT')" shop_restored)" = t ] ||
    fail "the role shop_app and its grant came back"
  pg_stop pg1 pg2
}

# ---- MariaDB ---------------------------------------------------------------------------------------------------

# mdb_start NAME: a throwaway server in $WORK/NAME on a socket only (--skip-networking), as root. Its clients
# find the socket in $WORK/NAME/home/.my.cnf: run them with HOME=$WORK/NAME/home (`on NAME CMD…`).
mdb_start() {
  local d=$WORK/$1
  mkdir -p "$d/home"
  printf '[client]\nsocket=%s\n' "$d/sock" > "$d/home/.my.cnf"
  mariadb-install-db --no-defaults --datadir="$d/data" --user=root --auth-root-authentication-method=socket \
    --skip-test-db > "$d/install.log" 2>&1 || { tail -5 "$d/install.log"; fail "mariadb-install-db $1"; }
  mariadbd --no-defaults --datadir="$d/data" --socket="$d/sock" --skip-networking --user=root \
    --pid-file="$d/pid" --log-error="$d/error.log" --innodb-buffer-pool-size=64M > /dev/null 2>&1 &
  wait_until 60 "MariaDB $1 to answer" mdb_up "$1" ||
    { tail -5 "$d/error.log"; return 1; }
}
on() { local n=$1; shift; HOME=$WORK/$n/home "$@"; }
mdb_up() { on "$1" mariadb-admin --connect-timeout=5 ping > /dev/null 2>&1; }
mdb_stop() {
  local n p
  for n in "$@"; do
    p=$(cat "$WORK/$n/pid" 2>/dev/null) || continue
    on "$n" mariadb-admin shutdown > /dev/null 2>&1 || kill "$p" 2>/dev/null || true
    wait_until 60 "MariaDB $n to stop" gone "$p"
  done
}
mq() { on "$1" mariadb --batch --skip-column-names "${@:2}"; }
mdb_pair() {  # mdb_pair NAME [PREFIX]: n and total of PREFIXaccounts, then PREFIXorders' count, sum and highest ID
  mq "$1" -e "SELECT a.n, a.total, o.c, o.s, o.m FROM shop.${2:-}accounts a, (SELECT count(*) c, coalesce(sum(amount), 0) s, max(id) m FROM shop.${2:-}orders) o WHERE a.id = 1"
}
mdb_orders() { mq "$1" -e "SELECT id, amount, note, HEX(payload) FROM shop.orders WHERE id <= $2 ORDER BY id"; }
# mdb_restored WHAT BEFORE AFTER [PREFIX]: server m2 holds one moment of the PREFIX pair, between BEFORE and AFTER
mdb_restored() {
  local n total c s m
  read -r n total c s m <<< "$(mdb_pair m2 "${4:-}")"
  echo "    $1: n=$n orders=$c"
  [ "$n" = "$c" ] && [ "$total" = "$s" ] || fail "$1: the pair disagrees: n=$n total=$total, orders: $c rows, sum $s"
  [ "$n" -ge "${2%%$'\t'*}" ] && [ "$n" -le "${3%%$'\t'*}" ] || fail "$1: n=$n is not between ${2%%$'\t'*} and ${3%%$'\t'*}"
  [ -n "${4:-}" ] || [ "$(digest mdb_orders m2 "$m")" = "$(digest mdb_orders m1 "$m")" ] || fail "$1: the orders differ from the source's up to ID $m"
}

t_mariadb() {
  trap 'mdb_stop m1 m2' EXIT          # the test's subshell: also when a step fails
  mdb_start m1
  export LIFEBOAT_REPOSITORY=$WORK/r-mariadb
  lifeboat init > /dev/null
  mq m1 <<'EOF'
CREATE DATABASE shop;
USE shop;
CREATE TABLE accounts (id INT PRIMARY KEY, n BIGINT NOT NULL, total BIGINT NOT NULL) ENGINE=InnoDB;
CREATE TABLE orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, amount INT NOT NULL, note VARCHAR(64), payload VARBINARY(64)) ENGINE=InnoDB;
INSERT INTO orders (amount, note, payload) SELECT seq % 97, MD5(seq), UNHEX(SHA2(seq, 256)) FROM seq_1_to_200000;
INSERT INTO accounts SELECT 1, count(*), sum(amount) FROM orders;
CREATE TABLE m_accounts (id INT PRIMARY KEY, n BIGINT NOT NULL, total BIGINT NOT NULL) ENGINE=MyISAM;
CREATE TABLE m_orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, amount INT NOT NULL) ENGINE=MyISAM;
INSERT INTO m_orders (amount) SELECT seq % 97 FROM seq_1_to_20000;
INSERT INTO m_accounts SELECT 1, count(*), sum(amount) FROM m_orders;
CREATE PROCEDURE order_count() SELECT count(*) FROM orders;
CREATE EVENT tidy ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM orders WHERE amount < 0;
CREATE USER shop_app@localhost IDENTIFIED BY 'app-password';
GRANT SELECT, INSERT ON shop.* TO shop_app@localhost;
EOF
  # The writer: an InnoDB transaction on one pair, and the same change to a MyISAM pair (no transactions:
  # LOCK TABLES makes its two statements one step for other lockers only).
  python3 -c "
for i in range(20000):
    a = i % 89
    print(f\"BEGIN; INSERT INTO orders (amount, note, payload) VALUES ({a}, 'w{i}', UNHEX(SHA2('w{i}', 256))); UPDATE accounts SET n = n + 1, total = total + {a} WHERE id = 1; COMMIT;\")
    print(f\"LOCK TABLES m_orders WRITE, m_accounts WRITE; INSERT INTO m_orders (amount) VALUES ({a}); UPDATE m_accounts SET n = n + 1, total = total + {a} WHERE id = 1; UNLOCK TABLES; DO SLEEP(0.005);\")
" > "$WORK/mdb-writer.sql"
  HOME=$WORK/m1/home mariadb shop < "$WORK/mdb-writer.sql" > /dev/null 2> "$WORK/mdb-writer.err" &   # $! is the client
  local writer=$!
  local start; start=$(mdb_pair m1); start=${start##*$'\t'}
  mdb_wrote() { local p; p=$(mdb_pair m1); p=${p##*$'\t'}; [ "$p" -gt $(( start + 20 )) ]; }
  wait_until 60 "the MariaDB writer to commit" mdb_wrote

  # The README's commands (HOME points the clients at a server's socket): InnoDB, a consistent snapshot.
  local before after; before=$(mdb_pair m1)
  HOME=$WORK/m1/home lifeboat backup --stdin-from-command --stdin-filename all-databases.sql --tag mariadb -- mariadb-dump --single-transaction --routines --events --flush-privileges --all-databases > /dev/null
  after=$(mdb_pair m1)
  echo "    before the backup: n=${before%%$'\t'*}, after: n=${after%%$'\t'*}"
  [ "${after%%$'\t'*}" -gt "${before%%$'\t'*}" ] || fail "the writer committed during the backup"
  # Restored into a fresh server, as after losing this one.
  mdb_start m2
  lifeboat dump --tag mariadb latest /all-databases.sql | HOME=$WORK/m2/home mariadb
  mdb_restored "--single-transaction, InnoDB" "$before" "$after"
  [ "$(mq m2 -e "SELECT count(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'shop'")" = 1 ] || fail "the procedure came back (--routines)"
  [ "$(mq m2 -e "SELECT count(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = 'shop'")" = 1 ] || fail "the event came back (--events)"
  mq m2 -e "SHOW GRANTS FOR shop_app@localhost" | grep -q "GRANT SELECT, INSERT ON \`shop\`" ||
    fail "the user shop_app and its grant are in force (--flush-privileges)"
  local i_n m_n; i_n=$(mdb_pair m2); m_n=$(mdb_pair m2 m_)
  echo "    --single-transaction: the writer's steps seen: InnoDB $(( ${i_n%%$'\t'*} - 200000 )), MyISAM $(( ${m_n%%$'\t'*} - 20000 )) (not asserted: MyISAM is outside the snapshot)"

  # MyISAM tables: --lock-all-tables (writes wait for the length of the dump).
  local mbefore mafter
  before=$(mdb_pair m1); mbefore=$(mdb_pair m1 m_)
  HOME=$WORK/m1/home lifeboat backup --stdin-from-command --stdin-filename all-databases.sql --tag mariadb -- mariadb-dump --lock-all-tables --routines --events --flush-privileges --all-databases > /dev/null
  after=$(mdb_pair m1); mafter=$(mdb_pair m1 m_)
  alive "$writer" || { cat "$WORK/mdb-writer.err"; fail "the writer ran through the backups"; }
  kill "$writer"; wait "$writer" 2>/dev/null || true
  lifeboat dump --tag mariadb latest /all-databases.sql | HOME=$WORK/m2/home mariadb
  mdb_restored "--lock-all-tables, MyISAM" "$mbefore" "$mafter" m_
  mdb_restored "--lock-all-tables, InnoDB" "$before" "$after"
  # One moment across both engines: the writer's InnoDB commit comes just before its MyISAM step.
  i_n=$(mdb_pair m2); m_n=$(mdb_pair m2 m_)
  local lag=$(( (${i_n%%$'\t'*} - 200000) - (${m_n%%$'\t'*} - 20000) ))
  [ "$lag" -eq 0 ] || [ "$lag" -eq 1 ] || fail "--lock-all-tables: InnoDB and MyISAM from different moments ($lag steps apart)"
  mdb_stop m1 m2
}

# ---- SQLite ----------------------------------------------------------------------------------------------------

# sqlite_pair DB: "ok" from PRAGMA integrity_check, then the pair the writer keeps equal and the orders' count and sum.
sqlite_pair() {
  sqlite3 -cmd '.timeout 10000' "$1" "PRAGMA integrity_check; SELECT a.n || ' ' || a.total || ' ' || count(o.id) || ' ' || coalesce(sum(o.amount), 0) FROM accounts a, orders o WHERE a.id = 1" | tr '\n' ' '
}
sqlite_agrees() {  # sqlite_agrees DB WHAT: integrity ok and the pair equal; prints what it found
  local ok n total c s
  read -r ok n total c s <<< "$(sqlite_pair "$1")"
  echo "    $2: integrity_check $ok, n=$n, orders=$c"
  [ "$ok" = ok ] || fail "$2: PRAGMA integrity_check says $ok"
  [ "$n" = "$c" ] && [ "$total" = "$s" ] || fail "$2: the pair disagrees: n=$n total=$total, orders: $c rows, sum $s"
}

t_sqlite() {
  local D=$WORK/sqlite
  mkdir -p "$D/backups"
  python3 - "$D/app.db" <<'EOF'
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, n INTEGER NOT NULL, total INTEGER NOT NULL)")
db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL, note TEXT)")
db.execute("BEGIN")
db.executemany("INSERT INTO orders (amount, note) VALUES (?, ?)", ((i % 97, os.urandom(100).hex()) for i in range(60000)))
db.execute("INSERT INTO accounts SELECT 1, count(*), sum(amount) FROM orders")
db.execute("COMMIT")
EOF
  # The writer: the application, committing a transaction every few milliseconds until told to stop (or 60 s).
  cat > "$WORK/sqlite-writer.py" <<'EOF'
import os, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=10, isolation_level=None)
end = time.time() + 60
i = 0
while time.time() < end and not os.path.exists(sys.argv[2]):
    a = i % 89
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO orders (amount, note) VALUES (?, ?)", (a, os.urandom(100).hex()))
    db.execute("UPDATE accounts SET n = n + 1, total = total + ? WHERE id = 1", (a,))
    db.execute("COMMIT")
    i += 1
    time.sleep(0.002)
EOF
  python3 "$WORK/sqlite-writer.py" "$D/app.db" "$WORK/sqlite-writer.stop" 2> "$WORK/sqlite-writer.err" &
  local writer=$! n0
  n0=$(sqlite3 "$D/app.db" "SELECT n FROM accounts")
  sqlite_wrote() { [ "$(sqlite3 -cmd '.timeout 10000' "$D/app.db" "SELECT n FROM accounts")" -gt $(( n0 + 20 )) ]; }
  wait_until 60 "the SQLite writer to commit" sqlite_wrote

  # The README's recipe: an online copy with a busy timeout, then a backup of the copy; restore and check it.
  export LIFEBOAT_REPOSITORY=$WORK/r-sqlite
  lifeboat init > /dev/null
  rm -f "$D/backups/app.db"
  sqlite3 -cmd '.timeout 10000' "$D/app.db" "VACUUM INTO '$D/backups/app.db'"
  lifeboat backup --tag sqlite "$D/backups/app.db" > /dev/null
  lifeboat dump --tag sqlite latest "$D/backups/app.db" > "$D/restored.db"
  [ "$(sqlite3 "$D/restored.db" 'PRAGMA integrity_check')" = ok ] || fail "PRAGMA integrity_check of the restored copy"
  sqlite_agrees "$D/restored.db" "VACUUM INTO copy, restored"
  # The other recipe: the SQL text of .dump, through standard input.
  export LIFEBOAT_REPOSITORY=$WORK/r-sqlite-sql
  lifeboat init > /dev/null
  lifeboat backup --stdin-from-command --stdin-filename app.sql --tag sqlite -- sqlite3 -cmd '.timeout 10000' "$D/app.db" .dump > /dev/null
  lifeboat dump --tag sqlite latest /app.sql | sqlite3 "$D/restored-from-sql.db"
  [ "$(lifeboat dump --tag sqlite latest /app.sql | tail -n 1)" = "COMMIT;" ] || fail "the dump ends with COMMIT;"
  sqlite_agrees "$D/restored-from-sql.db" ".dump, restored"

  # The neighbour: the live files themselves, while the writer runs. What changes under the reader is named
  # and gives exit 3, whatever is stored restores as stored; whether a file changes in that window is a race.
  export LIFEBOAT_REPOSITORY=$WORK/r-sqlite-live
  lifeboat init > /dev/null
  local rc=0
  lifeboat backup --tag live "$D/app.db" "$D/app.db-wal" "$D/app.db-shm" > /dev/null 2> "$WORK/live.err" || rc=$?
  alive "$writer" || { cat "$WORK/sqlite-writer.err"; fail "the writer ran through the backups"; }
  touch "$WORK/sqlite-writer.stop"; wait_until 30 "the SQLite writer to stop" gone "$writer"
  wait "$writer" || { cat "$WORK/sqlite-writer.err"; fail "the writer failed"; }
  # (No file may change in that window: grep finding nothing is no failure here.)
  echo "    live files: exit $rc; $(grep -c 'changed while being read' "$WORK/live.err" || true) changed while being read"
  { grep 'changed while being read' "$WORK/live.err" || true; } | sed 's/^/    | /' | head -3
  [ $rc -eq 0 ] || [ $rc -eq 3 ] || { cat "$WORK/live.err"; fail "backup of the live files: exit $rc"; }
  if [ $rc -eq 3 ]; then grep -q "changed while being read" "$WORK/live.err" || { cat "$WORK/live.err"; fail "exit 3 names the changed file"; }
  else ! grep -q "changed while being read" "$WORK/live.err" || fail "a changed file reported with exit 0"; fi
  lifeboat restore --tag live latest --target "$WORK/out-live" --verify > /dev/null
  local got; got=$(sqlite_pair "$WORK/out-live$D/app.db" 2>&1 || true)
  echo "    live files, restored: $(echo "$got" | cut -c1-100)"     # not asserted: it depends on the race
}

# In WAL mode committed transactions live in app.db-wal until a checkpoint: a copy of app.db alone lacks them,
# and a restored app.db put back beside an old app.db-wal is not what was restored.
t_sqlite_wal_file() {
  local D=$WORK/wal
  mkdir -p "$D"
  python3 - "$D/app.db" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("CREATE TABLE t (x INTEGER)")
db.executemany("INSERT INTO t VALUES (?)", ((i,) for i in range(1000)))
EOF
  # The application: 500 more rows committed, the connection kept open, no checkpoint (as between checkpoints).
  python3 - "$D/app.db" "$D/committed" "$D/release" <<'EOF' &
import os, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA wal_autocheckpoint=0")
db.execute("BEGIN"); db.executemany("INSERT INTO t VALUES (?)", ((i,) for i in range(500))); db.execute("COMMIT")
open(sys.argv[2], "w").close()
end = time.time() + 60
while not os.path.exists(sys.argv[3]) and time.time() < end: time.sleep(0.05)
EOF
  local app=$!
  wait_until 30 "the application to commit" test -e "$D/committed"
  export LIFEBOAT_REPOSITORY=$WORK/r-wal
  lifeboat init > /dev/null
  lifeboat backup --tag db-only "$D/app.db" > /dev/null            # nothing changes: exit 0, and yet
  lifeboat backup --tag with-wal "$D" > /dev/null
  touch "$D/release"; wait "$app"
  lifeboat dump --tag db-only latest "$D/app.db" > "$WORK/db-only.db"
  [ "$(sqlite3 "$WORK/db-only.db" "SELECT count(*) FROM t")" = 1000 ] || fail "app.db alone holds only the rows before the checkpoint"
  lifeboat restore --tag with-wal latest --target "$WORK/out-wal" > /dev/null
  # A restored file put back beside a leftover app.db-wal gets that log replayed over it (copied before any open).
  mkdir -p "$WORK/put-back"; cp "$WORK/out-wal$D/app.db-wal" "$WORK/put-back/app.db-wal"
  lifeboat dump --tag db-only latest "$D/app.db" > "$WORK/put-back/app.db"
  [ "$(sqlite3 "$WORK/out-wal$D/app.db" "SELECT count(*) FROM t")" = 1500 ] || fail "app.db with its app.db-wal holds every committed row"
  [ "$(sqlite3 "$WORK/put-back/app.db" "SELECT count(*) FROM t")" = 1500 ] || fail "a leftover app.db-wal is replayed over a restored app.db"
}

# The busy timeout: a writer's lock (here the rollback journal's, held by an open write transaction) makes
# sqlite3 fail at once with "database is locked"; with .timeout it waits for the lock and copies the data.
t_sqlite_busy_timeout() {
  local D=$WORK/busy
  mkdir -p "$D"
  sqlite3 "$D/app.db" "CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);"
  python3 - "$D/app.db" "$D/locked" "$D/release" <<'EOF' &
import os, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE"); db.execute("INSERT INTO t VALUES (2)")
open(sys.argv[2], "w").close()
end = time.time() + 60
while not os.path.exists(sys.argv[3]) and time.time() < end: time.sleep(0.05)
db.execute("COMMIT")
EOF
  local holder=$!
  wait_until 30 "the writer to take its lock" test -e "$D/locked"
  expect_code 5 sqlite3 "$D/app.db" "VACUUM INTO '$D/copy-no-timeout.db'"
  grep -q "database is locked" "$WORK/err" || { cat "$WORK/err"; fail "sqlite3 without a timeout: database is locked"; }
  # .dump without a timeout exits 0 all the same, with an error comment and ROLLBACK in its output.
  local rc=0; sqlite3 "$D/app.db" .dump > "$D/no-timeout.sql" 2>&1 || rc=$?
  grep -q "database is locked" "$D/no-timeout.sql" || fail ".dump without a timeout reports the lock"
  echo "    .dump without a timeout while locked: exit $rc, ends with: $(tail -n 1 "$D/no-timeout.sql")"
  # With the timeout both wait: still running while the lock is held, done once it is released.
  sqlite3 -cmd '.timeout 10000' "$D/app.db" "VACUUM INTO '$D/copy.db'" 2> "$D/copy.err" &
  local copier=$!
  sqlite3 -cmd '.timeout 10000' "$D/app.db" .dump > "$D/app.sql" 2>&1 &
  local dumper=$!
  sleep 0.5
  alive "$copier" || { cat "$D/copy.err"; fail "VACUUM INTO with a busy timeout waits for the lock"; }
  touch "$D/release"; wait "$holder"
  wait "$copier" || { cat "$D/copy.err"; fail "VACUUM INTO with a busy timeout"; }
  wait "$dumper" || { cat "$D/app.sql"; fail ".dump with a busy timeout"; }
  [ "$(sqlite3 "$D/copy.db" "SELECT count(*) FROM t")" = 2 ] || fail "the copy holds the row committed when the lock was released"
  [ "$(tail -n 1 "$D/app.sql")" = "COMMIT;" ] && grep -q "INSERT INTO t VALUES(2);" "$D/app.sql" || { cat "$D/app.sql"; fail ".dump after the wait"; }
}

# Every command line of the README's "## Databases" is one this suite runs: the same words and flags, in the same
# order, once paths (words with a / or ending in .db) and the HOME= that points a client at its server are set aside.
t_readme_recipes() {
  python3 - "$HERE/../../README.md" "$HERE/databases.sh" <<'PY'
import re, sys
def words(line):
    return [w for w in re.sub(r"[\"'()$]", " ", line).split()
            if "/" not in w and not w.endswith(".db") and not w.startswith("HOME=")]
lines = open(sys.argv[1]).read().splitlines()
start = lines.index("## Databases") + 1
end = next(i for i in range(start, len(lines)) if lines[i].startswith("## "))
fence, cmds = False, []
for l in lines[start:end]:
    if l.startswith("```"): fence = not fence; continue
    if fence and l.strip() and not l.startswith("#"): cmds.append(l)
suite = [words(l) for l in open(sys.argv[2]) if not l.lstrip().startswith("#")]
def runs(c):
    w = words(c)
    return any(s[i:i + len(w)] == w for s in suite for i in range(len(s) - len(w) + 1))
missing = [c for c in cmds if not runs(c)]
for c in missing: print("    not run by this suite: " + c)
print("    %d README commands, %d run here" % (len(cmds), len(cmds) - len(missing)))
sys.exit(1 if missing or not cmds else 0)
PY
}

# `lifeboat db restore`: every kind of dump the agent takes (pg_dump, mariadb-dump of one database, SQLite's
# VACUUM INTO, redis-cli --rdb, a command's output) restored into a new, named target by the engine's own tool, and
# checked; an existing target is refused, and a source that cannot be renamed is told how to restore instead.
t_db_restore_every_dump_type() {
  trap 'pg_stop p3; mdb_stop m3; [ -f "$WORK/redis/pid" ] && kill "$(cat "$WORK/redis/pid")" 2>/dev/null; [ -f "$WORK/redis2/pid" ] && kill "$(cat "$WORK/redis2/pid")" 2>/dev/null; true' EXIT
  pg_start p3
  createdb -h "$WORK/p3/sock" -U postgres shop
  pq -h "$WORK/p3/sock" -U postgres -d shop -c "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 5000) i"
  printf 'host=%s user=postgres dbname=shop\n' "$WORK/p3/sock" > "$WORK/shop.dsn"
  mdb_start m3
  mq m3 -e "CREATE DATABASE shop; CREATE TABLE shop.t (id int PRIMARY KEY, v text); INSERT INTO shop.t VALUES (1, 'one'), (2, 'two \`quoted\`'); CREATE DATABASE other; CREATE TABLE other.x (a int)"
  printf '[client]\nsocket=%s\nuser=root\n' "$WORK/m3/sock" > "$WORK/m3.cnf"
  mkdir -p "$WORK/redis"; echo "redis-secret" > "$WORK/redis.pw"
  redis-server --port 0 --unixsocket "$WORK/redis/sock" --dir "$WORK/redis" --requirepass redis-secret --daemonize yes \
    --pidfile "$WORK/redis/pid" --logfile "$WORK/redis/log" --save "" > /dev/null
  wait_until 30 "Redis to answer" sh -c "REDISCLI_AUTH=redis-secret redis-cli -s '$WORK/redis/sock' --no-auth-warning ping | grep -q PONG"
  REDISCLI_AUTH=redis-secret redis-cli -s "$WORK/redis/sock" --no-auth-warning eval "for i=1,2000 do redis.call('set','k'..i,'v'..i) end redis.call('rpush','list','a','b','c') return 1" 0 > /dev/null
  python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('PRAGMA journal_mode=WAL'); c.execute('CREATE TABLE t(x)'); c.executemany('INSERT INTO t VALUES (?)', [(i,) for i in range(1000)]); c.commit()" "$WORK/app.db"
  local port; port=$(free_port)
  head -c 32 /dev/urandom | base64 > "$WORK/db.token"
  lifeboat -r "$WORK/r-db" init > /dev/null
  lifeboat -r "$WORK/r-db2" init --copy-chunker-params-from "$WORK/r-db" > /dev/null
  cat > "$WORK/db.yaml" <<YAML
sites:
  - {name: here, repository: $WORK/r-db, password_file: $WORK/pw, role: primary}
  - {name: there, repository: $WORK/r-db2, password_file: $WORK/pw, role: replica}
replication: {interval: 1h}
agent: {listen: "127.0.0.1:$port", token_file: $WORK/db.token, state: $WORK/db-agent/state.db}
sources:
  - {name: pg, postgres: {dsn_file: $WORK/shop.dsn}, schedule: "0 3 * * *"}
  - {name: maria, mariadb: {defaults_file: $WORK/m3.cnf, databases: [shop]}, schedule: "0 3 * * *"}
  - {name: maria-all, mariadb: {defaults_file: $WORK/m3.cnf}, schedule: "0 3 * * *"}
  - {name: lite, sqlite: {path: $WORK/app.db}, schedule: "0 3 * * *"}
  - {name: cache, redis: {socket: $WORK/redis/sock, password_file: $WORK/redis.pw}, schedule: "0 3 * * *"}
  - {name: cmd, command: [sh, -c, "echo hello from a command"], schedule: "0 3 * * *"}
  - {name: www, paths: [$WORK/redis], schedule: "0 3 * * *"}
YAML
  mkdir -p "$WORK/db-agent"
  lifeboat agent --config "$WORK/db.yaml" > "$WORK/db-agent.log" 2>&1 &
  local agent=$! s
  wait_port "$port"
  for s in pg maria maria-all lite cache cmd; do
    curl -sS --fail-with-body -X POST -H "Authorization: Bearer $(cat "$WORK/db.token")" "http://127.0.0.1:$port/jobs/backup:$s/run" > /dev/null
    wait_log "$WORK/db-agent.log" "backup done.*source=$s\$" 60
  done
  kill -TERM "$agent"; wait "$agent"
  # PostgreSQL: a new database, equal to the source.
  lifeboat db restore pg --config "$WORK/db.yaml" --target shop_copy > "$WORK/db-pg.out" || fail "db restore pg: $(cat "$WORK/db-pg.out")"
  [ "$(digest pq -h "$WORK/p3/sock" -U postgres -d shop_copy -c 'SELECT * FROM t ORDER BY id')" = "$(digest pq -h "$WORK/p3/sock" -U postgres -d shop -c 'SELECT * FROM t ORDER BY id')" ] || fail "the restored PostgreSQL database differs"
  expect_code 1 lifeboat db restore pg --config "$WORK/db.yaml" --target shop_copy
  grep -q "exists" "$WORK/err" || fail "an existing database: $(cat "$WORK/err")"
  expect_code 1 lifeboat db restore pg --config "$WORK/db.yaml" --target "bad name;"
  # MariaDB: the one database under a new name; the source's database untouched.
  lifeboat db restore maria --config "$WORK/db.yaml" --target shop_copy > "$WORK/db-m.out" || fail "db restore maria: $(cat "$WORK/db-m.out")"
  [ "$(mq m3 -e 'SELECT * FROM shop_copy.t ORDER BY id' | md5sum)" = "$(mq m3 -e 'SELECT * FROM shop.t ORDER BY id' | md5sum)" ] || fail "the restored MariaDB database differs"
  expect_code 1 lifeboat db restore maria --config "$WORK/db.yaml" --target shop_copy
  expect_code 1 lifeboat db restore maria-all --config "$WORK/db.yaml" --target x
  grep -q "lifeboat dump" "$WORK/err" || fail "an all-databases dump: $(cat "$WORK/err")"
  # SQLite, Redis, a command: new files, checked.
  lifeboat db restore lite --config "$WORK/db.yaml" --target "$WORK/app-copy.db" > "$WORK/db-l.out" || fail "db restore lite"
  grep -q "integrity_check: ok" "$WORK/db-l.out" || fail "no integrity check: $(cat "$WORK/db-l.out")"
  [ "$(sqlite3 "$WORK/app-copy.db" 'SELECT count(*), sum(x) FROM t')" = "1000|499500" ] || fail "the restored SQLite database"
  expect_code 1 lifeboat db restore lite --config "$WORK/db.yaml" --target "$WORK/app-copy.db"
  lifeboat db restore cache --config "$WORK/db.yaml" --target "$WORK/redis2/dump.rdb" > "$WORK/db-r.out" 2>&1 && fail "a target in a missing folder"
  mkdir -p "$WORK/redis2"
  lifeboat db restore cache --config "$WORK/db.yaml" --target "$WORK/redis2/dump.rdb" > "$WORK/db-r.out" || fail "db restore cache: $(cat "$WORK/db-r.out")"
  grep -q "RDB looks OK" "$WORK/db-r.out" || fail "no redis-check-rdb: $(cat "$WORK/db-r.out")"
  redis-server --port 0 --unixsocket "$WORK/redis2/sock" --dir "$WORK/redis2" --daemonize yes --pidfile "$WORK/redis2/pid" --logfile "$WORK/redis2/log" --save "" > /dev/null
  wait_until 30 "the restored Redis to answer" sh -c "redis-cli -s '$WORK/redis2/sock' ping | grep -q PONG"
  [ "$(redis-cli -s "$WORK/redis2/sock" dbsize)" = 2001 ] || fail "the restored Redis holds $(redis-cli -s "$WORK/redis2/sock" dbsize) keys"
  [ "$(redis-cli -s "$WORK/redis2/sock" get k1234)" = v1234 ] && [ "$(redis-cli -s "$WORK/redis2/sock" lrange list 0 -1 | tr -d '\n')" = abc ] || fail "the restored Redis values"
  lifeboat db restore cmd --config "$WORK/db.yaml" --target "$WORK/cmd.out" > /dev/null
  [ "$(cat "$WORK/cmd.out")" = "hello from a command" ] || fail "the command's output"
  expect_code 1 lifeboat db restore www --config "$WORK/db.yaml" --target x
  grep -q "lifeboat restore" "$WORK/err" || fail "a files source: $(cat "$WORK/err")"
  expect_code 1 lifeboat db restore nope --config "$WORK/db.yaml" --target x
  ! grep -q "redis-secret" "$WORK/db-agent.log" "$WORK"/db-*.out || fail "the Redis password was printed"
}

for t in ${DATABASES_TESTS:-t_readme_recipes t_postgresql t_mariadb t_sqlite t_sqlite_wal_file t_sqlite_busy_timeout t_db_restore_every_dump_type}; do
  run_test "$t"
done
echo "databases: $PASSED passed, $FAILED failed${FAILURES:+ (${FAILURES[*]})}"
[ "$FAILED" -eq 0 ]
