"""An application writing an SQLite database all the time, for the continuous-replication tests.

Usage: sqlite_writer.py DB STATE_DIR [RATE]
Commits RATE transactions a second (default 200): inserts, updates, deletes, now and then a large row (overflow
pages), a schema change, and every 2000 transactions a checkpoint of its own (TRUNCATE).
SIGUSR1 pauses it: after the transaction in progress it writes STATE_DIR/paused (the time of its last commit, in
Unix seconds); SIGUSR2 resumes it (STATE_DIR/paused removed); SIGTERM ends it. STATE_DIR/count holds how many
transactions it committed.
"""
import os, random, signal, sqlite3, sys, time

db_path, state = sys.argv[1], sys.argv[2]
rate = float(sys.argv[3]) if len(sys.argv) > 3 else 200.0
paused = False
stop = False
def on_pause(*_):
    global paused; paused = True
def on_resume(*_):
    global paused; paused = False
def on_term(*_):
    global stop; stop = True
signal.signal(signal.SIGUSR1, on_pause); signal.signal(signal.SIGUSR2, on_resume); signal.signal(signal.SIGTERM, on_term)

db = sqlite3.connect(db_path, timeout=30, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, n INTEGER, body BLOB)")
db.execute("CREATE TABLE IF NOT EXISTS totals (k TEXT PRIMARY KEY, n INTEGER)")
db.execute("INSERT OR IGNORE INTO totals VALUES ('count', 0)")
rnd = random.Random(7)
count = 0
last = time.time()
start = time.time()
tables = 0
while not stop:
    if paused:
        with open(state + "/paused.tmp", "w") as f: f.write("%.6f\n" % last)
        os.rename(state + "/paused.tmp", state + "/paused")
        while paused and not stop: time.sleep(0.01)
        try: os.unlink(state + "/paused")
        except FileNotFoundError: pass
        start = time.time() - count / rate
        continue
    db.execute("BEGIN IMMEDIATE")
    r = rnd.random()
    if r < 0.6:
        size = 100000 if rnd.random() < 0.02 else rnd.randint(10, 400)
        db.execute("INSERT INTO items (n, body) VALUES (?, ?)", (count, rnd.randbytes(size)))
    elif r < 0.85:
        db.execute("UPDATE items SET n = n + 1, body = ? WHERE id = (SELECT id FROM items ORDER BY random() LIMIT 1)", (rnd.randbytes(rnd.randint(10, 300)),))
    elif r < 0.995:
        db.execute("DELETE FROM items WHERE id = (SELECT id FROM items ORDER BY random() LIMIT 1)")
    else:
        tables += 1
        db.execute("CREATE TABLE IF NOT EXISTS extra_%d (x)" % (tables % 5))
    db.execute("UPDATE totals SET n = n + 1 WHERE k = 'count'")
    db.execute("COMMIT")
    count += 1
    last = time.time()
    if count % 2000 == 0:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    with open(state + "/count.tmp", "w") as f: f.write("%d\n" % count)
    os.rename(state + "/count.tmp", state + "/count")
    delay = start + count / rate - time.time()
    if delay > 0: time.sleep(delay)
db.close()
