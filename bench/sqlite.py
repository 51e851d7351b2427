#!/usr/bin/env python3
"""`make bench-sqlite`: SQLite continuous replication by the agent (issue 15), under a steady write load.

An application commits --rate transactions a second (one row of ~200 bytes each) into a WAL-mode database for
--seconds; the agent follows it as a `sqlite: {continuous: true, interval: --interval}` source into a local
repository. Measured over the load, after a warm-up:
  * the RPO: at each instant (every 10 ms), the newest committed transaction's time minus the newest restorable
    one's: a WAL record is restorable from the moment its file is in the repository (the snapshot file's mtime),
    and holds every transaction committed before its last poll (its `last_time`); p50, p99, max;
  * the agent's CPU: user + system time over the load, as a share of one core;
  * a restore of the latest state (time) and its check against the database.
Targets (issue 15): RPO p99 at most 1.5 s with a 1 s interval, the agent below 5% of a core. Litestream is not in
Debian or PyPI, so it is not run beside it (its documented default is a 1 s sync interval).

Usage: python3 bench/sqlite.py [--rate 500] [--seconds 60] [--interval 1s] [--bin .build/release/lifeboat]"""
import argparse, datetime, json, os, shutil, signal, sqlite3, subprocess, sys, tempfile, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("--rate", type=float, default=500)
ap.add_argument("--seconds", type=float, default=60)
ap.add_argument("--warmup", type=float, default=5)
ap.add_argument("--interval", default="1s")
ap.add_argument("--bin", default=os.environ.get("LIFEBOAT_BIN", ".build/release/lifeboat"))
a = ap.parse_args()

work = tempfile.mkdtemp(prefix="lifeboat-bench-sqlite.", dir="/var/tmp")
LB = os.path.abspath(a.bin)
procs = []
def cleanup(*_):
    for p in procs:
        try: os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError: pass
    if os.environ.get("KEEP_WORK"): print("kept", work)
    else: shutil.rmtree(work, ignore_errors=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

def sh(argv, env=None):
    r = subprocess.run(argv, capture_output=True, text=True, env=env)
    if r.returncode != 0: sys.exit("%s failed (%d): %s" % (" ".join(argv[:5]), r.returncode, (r.stderr or r.stdout)[-2000:]))
    return r.stdout

def free_port():
    import socket
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def ticks(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

def parse_time(s):
    return datetime.datetime.fromisoformat(s[:26].rstrip("Z") + "+00:00").timestamp()

try:
    env = dict(os.environ, LIFEBOAT_PASSWORD_FILE=work + "/pw", LIFEBOAT_KDF_PARAMS="16384,8,1")
    open(work + "/pw", "w").write("bench-password\n")
    open(work + "/token", "w").write("bench-token\n")
    for r in ("repo", "replica"):
        sh([LB, "-r", work + "/" + r, "init"], env=env)
    db = work + "/app.db"
    c = sqlite3.connect(db, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, at REAL, body TEXT)")
    c.close()
    port = free_port()
    open(work + "/plan.yaml", "w").write(f"""sites:
  - {{name: local, repository: {work}/repo, password_file: {work}/pw, role: primary}}
  - {{name: replica, repository: {work}/replica, password_file: {work}/pw, role: replica}}
replication: {{interval: 1h}}
agent: {{listen: "127.0.0.1:{port}", token_file: {work}/token, state: {work}/agent/state.db}}
sources:
  - name: app
    sqlite: {{path: {db}, continuous: true, interval: {a.interval}}}
    schedule: "0 3 * * *"
    objectives: {{rpo: 5s, rto: 1m}}
""")
    os.makedirs(work + "/agent")
    log = open(work + "/agent.log", "w")
    agent = subprocess.Popen([LB, "agent", "--config", work + "/plan.yaml"], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    procs.append(agent)
    deadline = time.time() + 60
    while "sqlite snapshot stored" not in open(work + "/agent.log").read():
        if time.time() > deadline or agent.poll() is not None: sys.exit("the agent did not start following:\n" + open(work + "/agent.log").read()[-2000:])
        time.sleep(0.05)

    # The application: --rate transactions a second, on schedule.
    stop = threading.Event()
    committed = [0]
    def writer():
        w = sqlite3.connect(db, timeout=30, isolation_level=None)
        start = time.time(); n = 0
        while not stop.is_set():
            w.execute("INSERT INTO events (at, body) VALUES (?, ?)", (time.time(), "x" * 200))
            n += 1; committed[0] = n
            d = start + n / a.rate - time.time()
            if d > 0: time.sleep(d)
        w.close()
    t = threading.Thread(target=writer); t.start()
    time.sleep(a.warmup)
    w0, c0 = time.time(), ticks(agent.pid)
    time.sleep(a.seconds)
    w1, c1 = time.time(), ticks(agent.pid)
    stop.set(); t.join()
    achieved = committed[0] / (w1 - w0 + a.warmup)
    time.sleep(2)
    agent.send_signal(signal.SIGTERM); agent.wait(60)

    # Records: when each was in the repository, and the newest transaction it holds.
    out = sh([LB, "-r", work + "/repo", "snapshots", "--records", "--json"], env=env)
    recs = []
    for line in out.splitlines():
        d = json.loads(line)
        if d.get("kind") != "sqlite-wal": continue
        stored = os.stat(work + "/repo/snapshots/" + d["id"]).st_mtime
        recs.append((stored, parse_time(d["sqlite"]["last_time"])))
    recs.sort()
    samples = []
    i, newest = 0, None
    s = w0
    while s <= w1:
        while i < len(recs) and recs[i][0] <= s:
            newest = recs[i][1] if newest is None else max(newest, recs[i][1]); i += 1
        if newest is not None: samples.append(s - newest)
        s += 0.01
    samples.sort()
    pct = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]
    cpu = (c1 - c0) / (w1 - w0) * 100
    t0 = time.time()
    sh([LB, "-r", work + "/repo", "sqlite", "restore", db, "--latest", "--target", work + "/restored.db"], env=env)
    restore = time.time() - t0
    n_src = sqlite3.connect(db).execute("SELECT count(*) FROM events").fetchone()[0]
    n_dst = sqlite3.connect(work + "/restored.db").execute("SELECT count(*) FROM events").fetchone()[0]
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(work + "/repo") for f in fs)
    print("load: %.0f transactions/s for %.0f s; %d WAL records (%.2f a second); database %.1f MiB, repository %.1f MiB"
          % (achieved, w1 - w0, len(recs), len(recs) / (w1 - w0 + a.warmup), os.path.getsize(db) / 2**20, size / 2**20))
    print("RPO: p50 %.2f s, p99 %.2f s, max %.2f s (target p99 <= 1.5 s with a 1 s interval)" % (pct(0.5), pct(0.99), samples[-1]))
    lat = sorted(st - last for st, last in recs)
    print("store latency (a record's newest transaction seen -> the record in the repository): p50 %.3f s, p99 %.3f s, max %.3f s"
          % (lat[len(lat) // 2], lat[min(len(lat) - 1, int(0.99 * len(lat)))], lat[-1]))
    print("agent CPU: %.1f%% of a core (target < 5%%)" % cpu)
    print("restore --latest: %.2f s, %d rows of %d%s" % (restore, n_dst, n_src, "" if n_dst == n_src else "  MISMATCH"))
    print()
    print("| SQLite, %.0f tx/s for %.0f s, interval %s | Lifeboat agent | target |" % (achieved, w1 - w0, a.interval))
    print("|---|---:|---:|")
    print("| RPO p50 / p99 / max | %.2f / %.2f / %.2f s | p99 ≤ 1.5 s |" % (pct(0.5), pct(0.99), samples[-1]))
    print("| agent CPU | %.1f%% of a core | < 5%% |" % cpu)
    print("| restore --latest | %.2f s | |" % restore)
    if n_dst != n_src: sys.exit(1)
finally:
    cleanup()
