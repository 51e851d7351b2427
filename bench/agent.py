#!/usr/bin/env python3
"""`make bench-agent`: the agent under the issue's load: 50 sources on 2 sites (a local primary and a local
replica), each backed up every minute (with retention and a replication pass after each), for 10 minutes.

Measures, from outside the agent:
* its own CPU time and resident memory while no job runs (the quiet part of each minute: from 25 s to 55 s past
  the minute, when every job of the minute has ended), from /proc/PID/stat and /proc/PID/status;
* the latency of GET /metrics and GET /status (a client asking each 5 times a second, new connection each
  time, paused during the quiet windows so that they measure the agent alone), p50/p99/max;
* the scheduling delay: start time minus scheduled time of every backup, from the agent's state database; each
  source has a fixed delay of its own (up to a tenth of its interval, 6 s here) on purpose, so the lateness is each
  start's delay minus its source's smallest delay (the first run of each source, a catch-up at start, left out).
Targets (issue 13): idle CPU below 1% of a core and RSS below 64 MiB; /metrics and /status p99 below 20 ms;
lateness p99 below 1 s.

Usage: python3 bench/agent.py [--sources 50] [--minutes 10] [--bin .build/release/lifeboat]"""
import argparse, json, os, signal, socket, sqlite3, subprocess, sys, tempfile, threading, time, urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("--sources", type=int, default=50)
ap.add_argument("--minutes", type=float, default=10)
ap.add_argument("--bin", default=os.environ.get("LIFEBOAT_BIN", ".build/release/lifeboat"))
a = ap.parse_args()
binary = os.path.abspath(a.bin)

work = tempfile.mkdtemp(prefix="lifeboat-bench-agent.")
env = dict(os.environ, LIFEBOAT_PASSWORD_FILE=os.path.join(work, "pw"))
open(os.path.join(work, "pw"), "w").write("bench-password\n")
subprocess.run([binary, "-r", work + "/primary", "init"], env=env, check=True, capture_output=True)
subprocess.run([binary, "-r", work + "/replica", "init", "--copy-chunker-params-from", work + "/primary",
                "--from-password-file", work + "/pw"], env=env, check=True, capture_output=True)
# Each source: a small tree of its own (20 files, 2 of them changed before every minute's run).
for i in range(a.sources):
    d = os.path.join(work, "data", "s%d" % i)
    os.makedirs(d)
    for j in range(20):
        with open(os.path.join(d, "f%d" % j), "wb") as f:
            f.write(os.urandom(4096 if j else 65536))

s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
lines = ["sites:",
         "  - {name: local, repository: %s/primary, password_file: %s/pw, role: primary}" % (work, work),
         "  - {name: copy, repository: %s/replica, password_file: %s/pw, role: replica}" % (work, work),
         "sources:"]
for i in range(a.sources):
    lines.append('  - {name: s%d, paths: [%s/data/s%d], schedule: "* * * * *", retention: {keep_last: 5}, objectives: {rpo: 5m, rto: 30m}}' % (i, work, i))
lines += ["replication: {interval: 1m, state_file: %s/replication.json}" % work,
          "agent: {listen: 127.0.0.1:%d, state: %s/agent.db}" % (port, work)]
plan = os.path.join(work, "lifeboat.yaml")
open(plan, "w").write("\n".join(lines) + "\n")

log = open(os.path.join(work, "agent.log"), "w")
agent = subprocess.Popen([binary, "agent", "--config", plan], env=env, stdout=log, stderr=log)
tick = os.sysconf("SC_CLK_TCK")

def cpu_seconds():
    f = open("/proc/%d/stat" % agent.pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick

def rss_mib():
    for l in open("/proc/%d/status" % agent.pid):
        if l.startswith("VmRSS:"):
            return int(l.split()[1]) / 1024
    return 0

deadline = time.time() + 60
while time.time() < deadline:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close(); break
    except OSError:
        time.sleep(0.1)
else:
    agent.kill(); sys.exit("the agent did not listen: see %s/agent.log" % work)

latencies = {"/metrics": [], "/status": []}
stop = threading.Event()
quiet = threading.Event()   # set: the poller pauses (CPU windows measure the agent alone)
def poll():
    while not stop.is_set():
        if quiet.is_set():
            stop.wait(0.05); continue
        for path in latencies:
            t = time.perf_counter()
            urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5).read()
            latencies[path].append(time.perf_counter() - t)
        stop.wait(0.2)
poller = threading.Thread(target=poll, daemon=True); poller.start()

# Changes before each minute; CPU and RSS over the quiet part of each minute.
idle = []   # (cpu seconds, wall seconds) per quiet window
rss = []
end = time.time() + a.minutes * 60
while time.time() < end:
    now = time.time()
    minute = now - now % 60
    if now - minute < 50:
        time.sleep(50 - (now - minute))
    for i in range(a.sources):
        with open(os.path.join(work, "data", "s%d" % i, "f%d" % (int(time.time()) % 19 + 1)), "wb") as f:
            f.write(os.urandom(4096))
    # the next minute: jobs at :00 (+ up to 6 s), quiet from :25 to :55
    nxt = minute + 60
    time.sleep(max(0, nxt + 25 - time.time()))
    if time.time() > end:
        break
    running = json.loads(urllib.request.urlopen("http://127.0.0.1:%d/status" % port).read())["running"]
    quiet.set(); time.sleep(0.5)
    c0, w0 = cpu_seconds(), time.time()
    time.sleep(24)
    c1, w1 = cpu_seconds(), time.time()
    quiet.clear()
    running += json.loads(urllib.request.urlopen("http://127.0.0.1:%d/status" % port).read())["running"]
    if not running:
        idle.append((c1 - c0, w1 - w0)); rss.append(rss_mib())
    else:
        print("  (window with jobs running skipped: %s)" % ", ".join(running), file=sys.stderr)

stop.set(); poller.join()
total_cpu = cpu_seconds()
agent.send_signal(signal.SIGTERM); agent.wait(timeout=120)

db = sqlite3.connect(os.path.join(work, "agent.db"))
# The first run of each source is the catch-up at start (never run before): not a scheduled start.
rows = db.execute("""SELECT job, started - scheduled, result FROM run r WHERE job LIKE 'backup:%' AND scheduled IS NOT NULL
                     AND id > (SELECT MIN(id) FROM run WHERE job = r.job)""").fetchall()
bad = db.execute("SELECT job, result, error FROM run WHERE result <> 'success'").fetchall()
failed = len(bad)
for job, result, error in bad[:5]:
    print("  %s: %s: %s" % (job, result, (error or "")[:200]), file=sys.stderr)
by_job = {}
for job, d, _ in rows:
    by_job.setdefault(job, []).append(d)
delays = sorted(d for ds in by_job.values() for d in ds)
late = sorted(d - min(ds) for ds in by_job.values() for d in ds)

def pct(xs, p):
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")

idle_cpu = sum(c for c, _ in idle) / max(1e-9, sum(w for _, w in idle))
print("| agent, %d sources x 2 sites, every minute, %g min | measured | target |" % (a.sources, a.minutes))
print("|---|---|---|")
print("| CPU while idle (%d quiet windows) | %.2f%% of a core | < 1%% |" % (len(idle), idle_cpu * 100))
print("| RSS while idle (max) | %.1f MiB | < 64 MiB |" % (max(rss) if rss else float("nan")))
print("| CPU in all (jobs included) | %.1f s over %.0f s | |" % (total_cpu, a.minutes * 60))
for path, xs in latencies.items():
    xs = sorted(xs)
    print("| GET %s latency p50 / p99 / max (%d requests) | %.1f / %.1f / %.1f ms | p99 < 20 ms |" % (
        path, len(xs), pct(xs, 0.5) * 1000, pct(xs, 0.99) * 1000, xs[-1] * 1000 if xs else float("nan")))
print("| backups started (failed runs of any job) | %d (%d) | |" % (len(rows), failed))
print("| start delay p50 / p99 (fixed per-source delay included) | %.2f / %.2f s | |" % (pct(delays, 0.5), pct(delays, 0.99)))
print("| lateness beyond the fixed delay p50 / p99 / max | %.3f / %.3f / %.3f s | p99 < 1 s |" % (
    pct(late, 0.5), pct(late, 0.99), late[-1] if late else float("nan")))
subprocess.run(["rm", "-rf", work])
