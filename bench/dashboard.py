#!/usr/bin/env python3
"""`make bench-dashboard`: the dashboard under the issue's load: 100 services on 3 sites with a year of job
history (an hourly backup of each source for 365 days: 876,000 runs, one in 97 failed), generated straight into
the agent's state database after a first start made it; the agent then serves the overview.

Measures, from outside the agent: the overview's latency (GET / with the bearer token) over at least 1,000
requests with wrk (one connection, so each request is alone: the server's time plus loopback), p50/p99/max; the
same for a service's page (its 30-day charts read 720 runs); and the overview's size. Targets (issue 17): p99 below
100 ms, HTML below 200 kB.

Usage: python3 bench/dashboard.py [--sources 100] [--days 365] [--seconds 15] [--bin .build/release/lifeboat]"""
import argparse, json, os, re, signal, socket, sqlite3, subprocess, sys, tempfile, time, urllib.request, shutil

ap = argparse.ArgumentParser()
ap.add_argument("--sources", type=int, default=100)
ap.add_argument("--days", type=int, default=365)
ap.add_argument("--seconds", type=int, default=15)
ap.add_argument("--bin", default=os.environ.get("LIFEBOAT_BIN", ".build/release/lifeboat"))
a = ap.parse_args()
binary = os.path.abspath(a.bin)
if not shutil.which("wrk"):
    sys.exit("bench-dashboard: wrk is not installed (apt-get install wrk)")

work = tempfile.mkdtemp(prefix="lifeboat-bench-dashboard.")
agent = None


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


try:
    env = dict(os.environ, LIFEBOAT_PASSWORD_FILE=os.path.join(work, "pw"))
    open(os.path.join(work, "pw"), "w").write("bench-password\n")
    sites = ["home", "office", "cloud"]
    for i, s in enumerate(sites):
        cmd = [binary, "-r", f"{work}/{s}", "init"] + ([] if i == 0 else ["--copy-chunker-params-from", f"{work}/home", "--from-password-file", f"{work}/pw"])
        subprocess.run(cmd, env=env, check=True, capture_output=True)
    os.makedirs(f"{work}/data", exist_ok=True)
    open(f"{work}/data/f", "w").write("x")
    token = "bench-token-" + os.urandom(8).hex()
    open(f"{work}/token", "w").write(token); os.chmod(f"{work}/token", 0o600)
    port = free_port()
    plan = ["sites:"]
    for i, s in enumerate(sites):
        plan.append(f"  - {{name: {s}, repository: {work}/{s}, password_file: {work}/pw, role: {'primary' if i == 0 else 'replica'}}}")
    plan.append("sources:")
    for n in range(a.sources):
        plan.append(f"  - {{name: service-{n:03d}, paths: [{work}/data], schedule: every 24h, objectives: {{rpo: 26h, rto: 1h}}}}")
    plan.append(f"replication: {{interval: 24h, state_file: {work}/replication.json}}")
    plan.append(f"agent: {{listen: 127.0.0.1:{port}, token_file: {work}/token, state: {work}/agent.db, self_backup: every 24h}}")
    open(f"{work}/lifeboat.yaml", "w").write("\n".join(plan) + "\n")

    def start():
        before = open(f"{work}/agent.log").read().count("API listening") if os.path.exists(f"{work}/agent.log") else 0
        p = subprocess.Popen([binary, "agent", "--config", f"{work}/lifeboat.yaml"], env=env, stdout=subprocess.DEVNULL,
                             stderr=open(f"{work}/agent.log", "a"), start_new_session=True)
        for _ in range(600):
            if open(f"{work}/agent.log").read().count("API listening") > before:
                return p
            if p.poll() is not None:
                sys.exit("the agent stopped: " + open(f"{work}/agent.log").read()[-2000:])
            time.sleep(0.1)
        sys.exit("the agent's API did not listen")

    # A first start creates the database (and backs every source up once); then a year of history goes in.
    agent = start()
    deadline = time.time() + 600
    while time.time() < deadline:
        db = sqlite3.connect(f"{work}/agent.db")
        n = db.execute("SELECT count(*) FROM run WHERE job LIKE 'backup:service-%' AND finished IS NOT NULL").fetchone()[0]
        db.close()
        if n >= a.sources:
            break
        time.sleep(0.5)
    agent.send_signal(signal.SIGTERM); agent.wait(); agent = None
    now = time.time()
    db = sqlite3.connect(f"{work}/agent.db")
    t0 = time.time()
    hours = a.days * 24
    db.execute("BEGIN")
    for n in range(a.sources):
        job = f"backup:service-{n:03d}"
        # Hourly, oldest first; one in 97 failed.
        db.execute(f"""WITH RECURSIVE h(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM h WHERE i < {hours})
            INSERT INTO run (job, site, scheduled, started, finished, result, error, snapshot, bytes, files, errors)
            SELECT ?, 'home', ? - i * 3600, ? - i * 3600, ? - i * 3600 + 2.5 + (i % 7),
                   CASE WHEN (i + {n}) % 97 = 0 THEN 'failure' ELSE 'success' END,
                   CASE WHEN (i + {n}) % 97 = 0 THEN 'site home: no space left on device' ELSE NULL END,
                   printf('%064x', i), 1000000 + (i % 13) * 4096, 120, 0
            FROM h ORDER BY i DESC""", (job, now, now, now))
    db.execute("COMMIT")
    total = db.execute("SELECT count(*) FROM run").fetchone()[0]
    db.close()
    print(f"history: {total} runs in the state database ({time.time() - t0:.1f} s to generate)", flush=True)

    agent = start()
    url = f"http://127.0.0.1:{port}/"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    html = urllib.request.urlopen(req, timeout=30).read()
    assert b'data-service="service-099"' in html or a.sources < 100, "the overview lists every service"
    size = len(html)

    def wrk(path):
        out = subprocess.run(["wrk", "-t1", "-c1", f"-d{a.seconds}s", "--latency", "-H", f"Authorization: Bearer {token}",
                              f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
        def ms(label):
            m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
            v = float(m.group(1)); return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        mx = re.search(r"Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
        mxv = float(mx.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[mx.group(2)]
        return {"requests": requests, "p50_ms": ms("50%"), "p99_ms": ms("99%"), "max_ms": mxv}

    overview = wrk("/")
    service = wrk("/ui/services/service-042")
    result = {"message_type": "bench_dashboard", "sources": a.sources, "sites": len(sites), "runs": total,
              "overview_bytes": size, "overview": overview, "service_page": service}
    print(json.dumps(result), flush=True)
    print(f"\n| page | requests | p50 | p99 | max | size |\n|---|---|---|---|---|---|")
    print(f"| overview (/) | {overview['requests']} | {overview['p50_ms']:.1f} ms | {overview['p99_ms']:.1f} ms | {overview['max_ms']:.1f} ms | {size / 1024:.0f} kB |")
    print(f"| a service (/ui/services/…) | {service['requests']} | {service['p50_ms']:.1f} ms | {service['p99_ms']:.1f} ms | {service['max_ms']:.1f} ms | |")
    ok = overview["p99_ms"] < 100 and size < 200_000 and overview["requests"] >= 1000
    print(f"targets (p99 < 100 ms over >= 1,000 requests, HTML < 200 kB): {'met' if ok else 'NOT met'}")
finally:
    if agent is not None:
        agent.send_signal(signal.SIGTERM)
        try: agent.wait(timeout=30)
        except subprocess.TimeoutExpired: agent.kill()
    shutil.rmtree(work, ignore_errors=True)
