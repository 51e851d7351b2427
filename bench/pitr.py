#!/usr/bin/env python3
"""`make bench-pitr`: PostgreSQL continuous archiving and point-in-time recovery, Lifeboat beside pgBackRest 2.45
(Debian), on one PostgreSQL 15 cluster in one run, each tool in turn:

1. a base backup (time, size added to the repository);
2. pgbench (--clients, --seconds) with the tool as archive_command (Lifeboat: `wal-push --async`; pgBackRest:
   `archive-async=y`, `process-max=2`): the archive lag of every segment, from the moment PostgreSQL marks it ready
   (its `.ready` file appears) to the moment archive_command returns for it, p50 and p99;
3. a restore to the time in the middle of the load, replay included: from the command's start until the restored
   server has promoted (it accepts a query outside recovery); --restore-rounds times (default 3) from the same
   repository, the page cache dropped before each, the fastest counted;
4. a backlog: archiving stopped (archive_command fails), --backlog segments of bulk inserts, then the tool's
   archive_command again: the time until PostgreSQL has no segment left to archive;
5. the repository's size at the end.
Then, since each tool's load writes its own WAL (not the same amount), a restore on the same WAL: both tools archive
at once (archive_command runs one, then the other), each takes a base backup, one pgbench load of
--same-wal-seconds (default 120; 0 skips it), and each restores to the same time in its middle, --restore-rounds
times, the fastest counted: the restore comparison with equal work.
Both encrypt (Lifeboat always; pgBackRest aes-256-cbc) and compress with zstd (pgBackRest compress-type=zst).
Targets (issue 15): backlog drained at least as fast as pgBackRest, archive lag p99 below 2 s, restore time at most
1.0x pgBackRest's, storage at most 1.1x.

Usage: python3 bench/pitr.py [--scale 100] [--clients 8] [--seconds 300] [--backlog 500] [--restore-rounds 3]
       [--bin .build/release/lifeboat]
Runs as root; the cluster and both tools run as postgres. Needs postgresql-15 (pgbench) and pgbackrest."""
import argparse, json, os, shutil, signal, subprocess, sys, tempfile, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("--scale", type=int, default=100)
ap.add_argument("--clients", type=int, default=8)
ap.add_argument("--seconds", type=int, default=300)
ap.add_argument("--backlog", type=int, default=500)
ap.add_argument("--bin", default=os.environ.get("LIFEBOAT_BIN", ".build/release/lifeboat"))
ap.add_argument("--out", default="bench/results")
ap.add_argument("--tools", default="lifeboat,pgbackrest")
ap.add_argument("--restore-rounds", type=int, default=3)
ap.add_argument("--same-wal-seconds", type=int, default=120)
a = ap.parse_args()
PGBIN = "/usr/lib/postgresql/15/bin"
if not shutil.which("pgbackrest"):
    subprocess.run(["apt-get", "install", "-y", "pgbackrest"], check=True, capture_output=True)

work = tempfile.mkdtemp(prefix="lifeboat-bench-pitr.", dir="/var/tmp")
os.chmod(work, 0o755)
LB = work + "/lifeboat"
shutil.copy(os.path.abspath(a.bin), LB); os.chmod(LB, 0o755)
DATA, SOCK = work + "/data", work + "/sock"

def sh(argv, check=True, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        sys.exit("%s failed (%d): %s" % (" ".join(argv[:6]), r.returncode, (r.stderr or r.stdout)[-2000:]))
    return r.stdout

def pg(*argv, check=True):
    return sh(["runuser", "-u", "postgres", "--"] + list(argv), check=check)

def psql(sql, sock=SOCK):
    return pg("psql", "-X", "-A", "-t", "-q", "-h", sock, "-U", "postgres", "-c", sql).strip()

def cleanup(*_):
    for d in (DATA, work + "/restored"):
        if os.path.exists(d + "/postmaster.pid"):
            pg(PGBIN + "/pg_ctl", "stop", "-D", d, "-m", "immediate", check=False)
    subprocess.run(["pkill", "-KILL", "-f", work], capture_output=True)
    if os.environ.get("KEEP_WORK"): print("kept", work)
    else: shutil.rmtree(work, ignore_errors=True)

signal.signal(signal.SIGTERM, lambda *_: (cleanup(), sys.exit(143)))
for d in (SOCK, work + "/times", work + "/pgbr-spool", work + "/pgbr-log", work + "/pgbr-lock"):
    os.makedirs(d, exist_ok=True)
with open(work + "/pw", "w") as f: f.write("bench-password\n")
os.chmod(work + "/pw", 0o600)
with open(work + "/pgbackrest.conf", "w") as f:
    f.write(f"""[global]
repo1-path={work}/pgbr-repo
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=bench-password-bench-password
compress-type=zst
archive-async=y
spool-path={work}/pgbr-spool
process-max=2
log-level-console=warn
log-level-file=off
lock-path={work}/pgbr-lock
start-fast=y
[bench]
pg1-path={DATA}
pg1-socket-path={SOCK}
""")
sh(["chown", "-R", "postgres:", work])
BR = ["pgbackrest", "--config=" + work + "/pgbackrest.conf", "--stanza=bench"]
LBR = [LB, "-r", work + "/lb-repo", "--password-file", work + "/pw"]
# archive_command per tool; each success appends "NAME TIME" (the tool's return) to times/TOOL.
ARCHIVE = {
    "lifeboat": " ".join(LBR) + " pg wal-push --async %p",
    "pgbackrest": " ".join(BR) + " archive-push %p",
}

def stop_helpers():
    # The tools' background archivers (Lifeboat's wal-push helper, pgBackRest's async archive-push) push what
    # PostgreSQL marks ready ahead of the calls: when a phase turns archiving off or hands it to the other tool, a
    # helper still running would archive a backlog before it is measured, or compete with the other tool.
    subprocess.run(["pkill", "-KILL", "-f", "pg wal-push-helper"], capture_output=True)
    subprocess.run(["pkill", "-KILL", "-f", "archive-push:async"], capture_output=True)

def set_archive(cmd, log):
    if cmd is None or log.endswith("warmup"): stop_helpers()
    full = "false" if cmd is None else f"{cmd} && echo \"%f $(date +%s.%N)\" >> {work}/times/{log}"
    psql("ALTER SYSTEM SET archive_command = '%s'" % full.replace("'", "''"))
    psql("SELECT pg_reload_conf()")

def ready_count():
    return sum(1 for f in os.listdir(DATA + "/pg_wal/archive_status") if f.endswith(".ready"))

def wait_archived(limit=3600):
    seg = psql("SELECT pg_walfile_name(pg_switch_wal())")
    t0 = time.time()
    while time.time() - t0 < limit:
        if ready_count() == 0 and psql("SELECT coalesce(last_archived_wal, '') >= '%s' FROM pg_stat_archiver" % seg) == "t":
            return
        time.sleep(0.05)
    sys.exit("archiving did not catch up within %d s" % limit)

class ReadyWatcher(threading.Thread):
    """When each segment's .ready file first appears (polled every 20 ms)."""
    def __init__(self):
        super().__init__(daemon=True); self.seen = {}; self.stop = False
    def run(self):
        d = DATA + "/pg_wal/archive_status"
        while not self.stop:
            now = time.time()
            for f in os.listdir(d):
                if f.endswith(".ready") and len(f) == 30 and f[:24] not in self.seen: self.seen[f[:24]] = now
            time.sleep(0.02)

def pct(xs, p):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")

def du(path):
    return int(sh(["du", "-sb", path]).split()[0])

def restore_rounds(tool, target):
    rounds = []
    for rnd in range(a.restore_rounds):
        dest = work + "/restored"
        shutil.rmtree(dest, ignore_errors=True); os.makedirs(dest); sh(["chown", "postgres:", dest]); os.chmod(dest, 0o700)
        os.makedirs(work + "/rsock", exist_ok=True); sh(["chown", "postgres:", work + "/rsock"])
        if os.path.exists(work + "/restored.log"): os.unlink(work + "/restored.log")
        sh(["sync"])
        with open("/proc/sys/vm/drop_caches", "w") as f: f.write("3\n")
        t = time.time()
        if tool == "lifeboat":
            pg(*LBR, "pg", "restore", "--time", target, "--target", dest, "--no-archive")
        else:
            pg(*BR, "--pg1-path=" + dest, "restore", "--type=time", "--target=" + target.replace("T", " ").replace("Z", "+00"),
               "--target-action=promote", "--archive-mode=off")
        files = time.time() - t
        pg(PGBIN + "/pg_ctl", "start", "-D", dest, "-l", work + "/restored.log", "-o", f"-c listen_addresses='' -k {work}/rsock -c port=5433")
        while True:
            q = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-A", "-t", "-q", "-h", work + "/rsock", "-p", "5433", "-U", "postgres",
                                "-c", "SELECT pg_is_in_recovery()"], capture_output=True, text=True)
            if q.stdout.strip() == "f": break
            if time.time() - t > 3600: sys.exit("the restored server did not promote")
            time.sleep(0.05)
        total = time.time() - t
        pg(PGBIN + "/pg_ctl", "stop", "-D", dest, "-m", "fast")
        # Each tool's load writes its own WAL: the segments replayed say how much work the restore had.
        replayed = sum(1 for l in open(work + "/restored.log") if "restored log file" in l and ".history" not in l)
        rounds.append((total, files, replayed))
        print("  restore to %s, round %d: %.1f s (files %.1f s, replay and promotion %.1f s; %d segments restored by restore_command)" % (
            target, rnd + 1, total, files, total - files, replayed), flush=True)
    return rounds


# The cluster.
pg(PGBIN + "/initdb", "-D", DATA, "-U", "postgres", "--auth=trust", "--no-sync")
with open(DATA + "/postgresql.conf", "a") as f:
    f.write(f"""listen_addresses = ''
unix_socket_directories = '{SOCK}'
wal_level = replica
archive_mode = on
archive_command = 'false'
max_wal_size = 4GB
checkpoint_timeout = 15min
shared_buffers = 512MB
""")
pg(PGBIN + "/pg_ctl", "start", "-W", "-D", DATA, "-l", work + "/server.log")
for _ in range(600):
    if subprocess.run(["pg_isready", "-q", "-h", SOCK], capture_output=True).returncode == 0: break
    time.sleep(0.1)
t = time.time()
pg("pgbench", "-i", "-s", str(a.scale), "-q", "-h", SOCK, "-U", "postgres", "postgres")
print("pgbench -i -s %d: %.0f s, database %.2f GiB" % (a.scale, time.time() - t, int(psql("SELECT pg_database_size('postgres')")) / 2**30), flush=True)
psql("CREATE TABLE filler (id bigserial, pad text)")
pg(*LBR, "init")
pg(*BR, "stanza-create")

results = {}
for tool in a.tools.split(","):
    r = results[tool] = {}
    print(f"== {tool}", flush=True)
    # Archiving by this tool from here on; whatever the previous phase left ready is archived first.
    set_archive(ARCHIVE[tool], tool + "-warmup")
    wait_archived()
    # 1. Base backup.
    before = du(work + ("/lb-repo" if tool == "lifeboat" else "/pgbr-repo"))
    t = time.time()
    if tool == "lifeboat":
        pg("env", "PGHOST=" + SOCK, "PGUSER=postgres", *LBR, "pg", "backup")
    else:
        pg(*BR, "backup", "--type=full")
    r["backup_seconds"] = time.time() - t
    r["backup_bytes"] = du(work + ("/lb-repo" if tool == "lifeboat" else "/pgbr-repo")) - before
    print("  base backup: %.1f s, %.0f MiB" % (r["backup_seconds"], r["backup_bytes"] / 2**20), flush=True)
    # 2. Load: archive lag per segment.
    set_archive(ARCHIVE[tool], tool)
    w = ReadyWatcher(); w.start()
    bench = subprocess.Popen(["runuser", "-u", "postgres", "--", "pgbench", "-c", str(a.clients), "-j", "2", "-T", str(a.seconds),
                              "-h", SOCK, "-U", "postgres", "postgres"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(a.seconds / 2)
    target = psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    tps = bench.communicate()[0]
    wait_archived()
    w.stop = True; w.join()
    archived = {}
    for line in open(work + "/times/" + tool):
        name, when = line.split(); archived.setdefault(name, float(when))
    lags = [archived[s] - w.seen[s] for s in w.seen if s in archived]
    r["segments"] = len(lags)
    r["lag_p50"], r["lag_p99"], r["lag_max"] = pct(lags, 50), pct(lags, 99), max(lags) if lags else float("nan")
    r["tps"] = next((l.split("=")[1].split()[0] for l in tps.splitlines() if l.startswith("tps")), "?")
    print("  load: %s tps, %d segments, archive lag p50 %.2f s, p99 %.2f s, max %.2f s" % (r["tps"], r["segments"], r["lag_p50"], r["lag_p99"], r["lag_max"]), flush=True)
    # 3. Restore to the middle of the load, replay included: --restore-rounds times from the same repository, each
    # with the page cache dropped first (neither tool finds its repository or the last copy in memory); the
    # fastest round counts, as for every other figure of the benchmarks.
    rounds = restore_rounds(tool, target)
    best = min(rounds)
    r["restore_seconds"], r["restore_files_seconds"], r["replayed_segments"] = best
    r["restore_rounds"] = [x[0] for x in rounds]
    # 4. Backlog: archiving off, bulk inserts until --backlog segments wait, then the tool drains them.
    set_archive(None, tool)
    while ready_count() < a.backlog:
        psql("INSERT INTO filler (pad) SELECT md5(random()::text) || repeat(md5(g::text), 4) FROM generate_series(1, 200000) g")
    backlog = ready_count()
    set_archive(ARCHIVE[tool], tool + "-backlog")
    t = time.time()
    while ready_count() > 0: time.sleep(0.05)
    r["backlog"] = backlog
    r["drain_seconds"] = time.time() - t
    print("  backlog of %d segments drained in %.1f s (%.1f segments/s)" % (backlog, r["drain_seconds"], backlog / r["drain_seconds"]), flush=True)
    psql("TRUNCATE filler"); psql("CHECKPOINT")
    r["repo_bytes"] = du(work + ("/lb-repo" if tool == "lifeboat" else "/pgbr-repo"))
    print("  repository: %.2f GiB" % (r["repo_bytes"] / 2**30), flush=True)

# 6. The same WAL for both: both archive every segment, each takes a base backup, one load, each restores to the
# same time in its middle.
same = {}
tools = a.tools.split(",")
if a.same_wal_seconds > 0 and len(tools) > 1:
    print("== same WAL for %s" % " and ".join(tools), flush=True)
    both = " && ".join(ARCHIVE[t] for t in tools)
    set_archive(both, "same-warmup")
    wait_archived()
    for tool in tools:
        if tool == "lifeboat":
            pg("env", "PGHOST=" + SOCK, "PGUSER=postgres", *LBR, "pg", "backup")
        else:
            pg(*BR, "backup", "--type=full")
    set_archive(both, "same")
    bench = subprocess.Popen(["runuser", "-u", "postgres", "--", "pgbench", "-c", str(a.clients), "-j", "2", "-T", str(a.same_wal_seconds),
                              "-h", SOCK, "-U", "postgres", "postgres"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(a.same_wal_seconds / 2)
    target = psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    bench.communicate()
    wait_archived()
    for tool in tools:
        print("  %s:" % tool, flush=True)
        rounds = restore_rounds(tool, target)
        best = min(rounds)
        same[tool] = {"restore_seconds": best[0], "restore_files_seconds": best[1], "replayed_segments": best[2], "restore_rounds": [x[0] for x in rounds]}
    for tool in tools: results[tool]["same_wal"] = same[tool]

cleanup()
os.makedirs(a.out, exist_ok=True)
stamp = time.strftime("%Y%m%d-%H%M%S")
with open(os.path.join(a.out, "pitr-%s.json" % stamp), "w") as f:
    json.dump({"scale": a.scale, "clients": a.clients, "seconds": a.seconds, "backlog": a.backlog, "same_wal_seconds": a.same_wal_seconds,
               "results": results}, f, indent=1)
rows = [("base backup", "backup_seconds", "%.1f s"), ("base backup size", "backup_bytes", "MiB"), ("archive lag p50", "lag_p50", "%.2f s"),
        ("archive lag p99", "lag_p99", "%.2f s"), ("restore to mid-run, replay included", "restore_seconds", "%.1f s"),
        ("segments restore_command fetched in that restore", "replayed_segments", "%d"),
        ("backlog drain", "drain_seconds", "%.1f s"), ("repository after the run", "repo_bytes", "GiB")]
print("\n| PostgreSQL 15, pgbench scale %d, %d clients, %d s; backlog %d segments | %s |" % (a.scale, a.clients, a.seconds, a.backlog, " | ".join(results)))
print("|---|" + "---:|" * len(results))
for label, key, fmt in rows:
    cells = []
    for tool in results:
        v = results[tool].get(key)
        if v is None: cells.append("-"); continue
        cells.append("%.0f MiB" % (v / 2**20) if fmt == "MiB" else "%.2f GiB" % (v / 2**30) if fmt == "GiB" else fmt % v)
    print("| %s | %s |" % (label, " | ".join(cells)))
if same:
    print("| restore on the same WAL (%d s load), replay included | %s |" % (a.same_wal_seconds, " | ".join("%.1f s" % same[t]["restore_seconds"] for t in results)))
    print("| segments restore_command fetched in that restore | %s |" % " | ".join("%d" % same[t]["replayed_segments"] for t in results))
    if "lifeboat" in same and "pgbackrest" in same:
        print("restore on the same WAL: Lifeboat %.2fx pgBackRest (target at most 1.0x)" % (same["lifeboat"]["restore_seconds"] / same["pgbackrest"]["restore_seconds"]))
