#!/usr/bin/env python3
"""Failover proxy benchmark: Lifeboat's `proxy` beside HAProxy (mode tcp), same backends, same run.

Two nginx backends on loopback serve a small static page. For each path (direct to nginx, through HAProxy,
through Lifeboat) wrk measures requests per second and p99 latency. Then, for failover, a bounded request
loop runs through each proxy while the primary is killed (SIGKILL) or hung (SIGSTOP): the time from the
fault to the first answer from the standby, and the failed requests, are reported. HAProxy is run with
`inter 100 fall 2`, an HTTP check (`option httpchk`) and a `backup` server, with and without
`option redispatch`; Lifeboat with the same: HTTP check every 100 ms, timeout 500 ms, fall 2.

Usage: bench/failover.py [--duration 10] [--out bench/results]   (needs: nginx, haproxy, wrk; release build)
"""
import argparse, datetime, json, os, platform, re, shutil, signal, socket, subprocess, sys, tempfile, time
import http.client

HERE = os.path.dirname(os.path.abspath(__file__))
LB = os.environ.get("LIFEBOAT_BIN") or os.path.join(HERE, "..", ".build", "release", "lifeboat")


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close(); return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d did not open" % port)


def ensure_tools():
    missing = [p for p, c in (("nginx", "nginx"), ("haproxy", "haproxy"), ("wrk", "wrk")) if not shutil.which(c) and not os.path.exists("/usr/sbin/" + c)]
    if missing:
        subprocess.run(["apt-get", "update"], check=True)
        subprocess.run(["apt-get", "install", "-y"] + missing, check=True)


class Nginx:
    def __init__(self, work, name, port):
        self.dir = os.path.join(work, "nginx-" + name)
        os.makedirs(os.path.join(self.dir, "www"), exist_ok=True)
        open(os.path.join(self.dir, "www", "index.html"), "w").write(name + "\n")
        self.conf = os.path.join(self.dir, "nginx.conf")
        open(self.conf, "w").write("""
master_process off; worker_processes 1; daemon off; pid %(d)s/nginx.pid; error_log %(d)s/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000;
  client_body_temp_path %(d)s; proxy_temp_path %(d)s; fastcgi_temp_path %(d)s; uwsgi_temp_path %(d)s; scgi_temp_path %(d)s;
  server { listen 127.0.0.1:%(p)d; root %(d)s/www; } }
""" % {"d": self.dir, "p": port})
        self.port = port
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(["nginx", "-c", self.conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait()
            subprocess.run(["pkill", "-9", "-f", self.conf])

    def stop(self):
        if self.proc:
            subprocess.run(["pkill", "-CONT", "-f", self.conf])
            subprocess.run(["pkill", "-9", "-f", self.conf])
            self.proc.wait()


def haproxy_config(work, port, p1, p2, redispatch):
    path = os.path.join(work, "haproxy-%d.cfg" % port)
    open(path, "w").write("""global
  maxconn 4000
defaults
  mode tcp
  timeout connect 500ms
  timeout check 500ms
  timeout client 30s
  timeout server 30s
  %s
listen web
  bind 127.0.0.1:%d
  option httpchk GET /
  server primary 127.0.0.1:%d check inter 100 fall 2 rise 2
  server standby 127.0.0.1:%d check inter 100 fall 2 rise 2 backup
""" % ("option redispatch\n  retries 3" if redispatch else "", port, p1, p2))
    return path


def lifeboat_config(work, port, p1, p2):
    path = os.path.join(work, "lifeboat-%d.yaml" % port)
    open(path, "w").write("""pools:
  - name: web
    listen: 127.0.0.1:%d
    mode: failover
    failback: manual
    check: {type: http, path: /, interval: 100ms, timeout: 500ms, fall: 2, rise: 2}
    backends:
      - {name: primary, address: 127.0.0.1:%d, priority: 1}
      - {name: standby, address: 127.0.0.1:%d, priority: 2}
""" % (port, p1, p2))
    return path


def start_proxy(kind, work, port, p1, p2, redispatch=False):
    if kind == "lifeboat":
        proc = subprocess.Popen([LB, "proxy", "--config", lifeboat_config(work, port, p1, p2)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        proc = subprocess.Popen(["haproxy", "-f", haproxy_config(work, port, p1, p2, redispatch)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    time.sleep(0.5)
    return proc


def wrk(port, duration, connections=50, close=False, threads=2):
    """wrk's requests per second and p99; with `close`, every request on a new connection (set-up cost)."""
    extra = ["-H", "Connection: close"] if close else []
    out = subprocess.run(["wrk", "-t%d" % threads, "-c%d" % connections, "-d%ds" % duration, "--latency"] + extra + ["http://127.0.0.1:%d/" % port],
                         capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p99_ms": p99, "socket_errors": errors.group(1) if errors else ""}


def failover_run(port, primary, fault, seconds=4.0):
    """Sequential requests (new connection each, 1 s timeout) for `seconds`; the fault hits the primary after 1 s."""
    start = time.time()
    fault_at = None
    first_standby = None
    failed = 0
    total = 0
    while time.time() - start < seconds:
        if fault_at is None and time.time() - start >= 1.0:
            primary.kill(fault)
            fault_at = time.time()
        total += 1
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
            c.request("GET", "/")
            body = c.getresponse().read().decode().strip()
            c.close()
        except Exception:
            failed += 1
            continue
        if fault_at is not None and first_standby is None and body == "standby":
            first_standby = time.time()
    return {"switch_ms": round((first_standby - fault_at) * 1000, 1) if first_standby else None,
            "failed": failed, "requests": total}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the throughput measurements (the median counts)")
    ap.add_argument("--skip-failover", action="store_true", help="throughput only")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    a = ap.parse_args()
    ensure_tools()
    if not os.path.exists(LB):
        sys.exit("missing %s: run `swift build -c release`" % LB)
    work = tempfile.mkdtemp(prefix="lifeboat-failover-bench-")
    results = {"throughput": {}, "new_connections": {}, "sequential": {}, "failover": {}, "rounds": a.rounds}
    try:
        p1, p2 = free_port(), free_port()
        n1, n2 = Nginx(work, "primary", p1), Nginx(work, "standby", p2)
        n1.start(); n2.start()
        print("throughput (wrk -t2 -c50 -d%ds; keep-alive, then a new connection per request; then one client "
              "with a new connection per request), median of %d rounds ..." % (a.duration, a.rounds), flush=True)
        runs = {k: {"throughput": [], "new_connections": [], "sequential": []} for k in ("direct", "haproxy", "lifeboat")}

        def measure(kind, port):
            runs[kind]["throughput"].append(wrk(port, a.duration))
            runs[kind]["new_connections"].append(wrk(port, a.duration, close=True))
            runs[kind]["sequential"].append(wrk(port, a.duration, connections=1, close=True, threads=1))
            print(" ", kind, {m: runs[kind][m][-1]["rps"] for m in runs[kind]}, flush=True)

        # Rounds interleave the proxies, so a slow spell of a shared machine hits both.
        for _ in range(a.rounds):
            measure("direct", p1)
            for kind in ("haproxy", "lifeboat"):
                port = free_port()
                proc = start_proxy(kind, work, port, p1, p2)
                measure(kind, port)
                proc.kill(); proc.wait()
        for kind, m in runs.items():
            for metric, rs in m.items():
                rs = sorted(rs, key=lambda r: r["rps"])
                med = dict(rs[len(rs) // 2]); med["rounds"] = [r["rps"] for r in rs]
                results[metric][kind] = med
        if a.skip_failover:
            n1.stop(); n2.stop()
        for fault_name, fault in (() if a.skip_failover else (("crash (SIGKILL)", signal.SIGKILL), ("hang (SIGSTOP)", signal.SIGSTOP))):
            for kind, redispatch in (("haproxy", False), ("haproxy+redispatch", True), ("lifeboat", False)):
                n1.stop(); n1.start()
                port = free_port()
                proc = start_proxy("lifeboat" if kind == "lifeboat" else "haproxy", work, port, p1, p2, redispatch)
                r = failover_run(port, n1, fault)
                results["failover"]["%s / %s" % (kind, fault_name)] = r
                print(kind, fault_name, r, flush=True)
                proc.kill(); proc.wait()
        if not a.skip_failover:
            n1.stop(); n2.stop()
    finally:
        subprocess.run(["pkill", "-9", "-f", work])
        shutil.rmtree(work, ignore_errors=True)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    hv = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    report = {"date": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu, "cores": os.cpu_count(), "haproxy": hv, **results}
    t, nc, sq = results["throughput"], results["new_connections"], results["sequential"]
    lines = ["Failover proxy benchmark of %s on %s (%d cores); %s. Medians of %d rounds (wrk, %d s each)." % (
                 report["date"], cpu, os.cpu_count(), hv, a.rounds, a.duration), "",
             "| path | requests/s, keep-alive (50 clients) | p99 | requests/s, new connection each (50 clients) | p99 | one client, new connection each: time per request |",
             "|---|---|---|---|---|---|"]
    for k in ("direct", "haproxy", "lifeboat"):
        lines.append("| %s | %.0f | %.2f ms | %.0f | %.2f ms | %.3f ms |" % (k, t[k]["rps"], t[k]["p99_ms"], nc[k]["rps"], nc[k]["p99_ms"], 1000.0 / sq[k]["rps"]))
    lines.append("")
    lines.append("Lifeboat / HAProxy, requests per second: %.2fx keep-alive, %.2fx new connection each, %.2fx one client "
                 "with a new connection each; p99 latency %.2fx, %.2fx." % (
        t["lifeboat"]["rps"] / t["haproxy"]["rps"], nc["lifeboat"]["rps"] / nc["haproxy"]["rps"], sq["lifeboat"]["rps"] / sq["haproxy"]["rps"],
        t["lifeboat"]["p99_ms"] / t["haproxy"]["p99_ms"], nc["lifeboat"]["p99_ms"] / nc["haproxy"]["p99_ms"]))
    if results["failover"]:
        lines += ["", "| proxy / fault on the primary | time to first answer from the standby | failed requests |", "|---|---|---|"]
    for k, r in results["failover"].items():  # (empty with --skip-failover)
        lines.append("| %s | %s | %d of %d |" % (k, "%.0f ms" % r["switch_ms"] if r["switch_ms"] is not None else "never", r["failed"], r["requests"]))
    md = "\n".join(lines) + "\n"
    os.makedirs(a.out, exist_ok=True)
    open(os.path.join(a.out, "failover.md"), "w").write(md)
    json.dump(report, open(os.path.join(a.out, "failover.json"), "w"), indent=2)
    print("\n" + md)


if __name__ == "__main__":
    main()
