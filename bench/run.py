#!/usr/bin/env python3
"""Side-by-side benchmark: Lifeboat, restic and BorgBackup on the same data, in one run, interleaved.

Steps (each tool in turn): init; first backup; second backup with nothing changed; backup after a 5%
mutation; full restore (checked to be exact, next to a plain `cp -a` of the same tree); check of all data;
repository size. Each command runs under /usr/bin/time -v: wall time, CPU time, peak RSS.
Then micro-benchmarks of Lifeboat's primitives next to the machine's own reference figures.

Usage: bench/run.py [--scale 1.0] [--work DIR] [--tools lifeboat,restic,borg] [--skip-micro]
Needs a release build (.build/release/lifeboat and lifeboat-bench): `make bench` does everything.
Page cache: warm for every tool (the data is read once before the first step).
"""
import argparse, datetime, json, os, platform, re, shutil, socket, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LB = os.path.join(ROOT, ".build/release/lifeboat")
LBBENCH = os.path.join(ROOT, ".build/release/lifeboat-bench")

def sh(cmd, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=True, capture_output=True, text=True, **kw)

def timed(cmd, env, cwd=None):
    """Runs cmd under /usr/bin/time -v; returns wall, cpu, rss (MiB). Raises on failure."""
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s\n%s" % (" ".join(cmd), p.returncode, p.stdout[-2000:], p.stderr[-3000:]))
    t = p.stderr
    def field(name):
        m = re.search(re.escape(name) + r":\s*(.+)", t)
        return m.group(1).strip()
    wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss)")
    parts = [float(x) for x in wall.split(":")]
    wall_s = sum(v * 60 ** i for i, v in enumerate(reversed(parts)))
    cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
    rss = int(field("Maximum resident set size (kbytes)")) / 1024
    return {"wall_s": round(wall_s, 2), "cpu_s": round(cpu, 2), "rss_mib": round(rss, 1)}

def du(path):
    return int(sh(["du", "-sb", path]).stdout.split()[0])

def tree_bytes(path):
    total = 0
    for d, _, fs in os.walk(path):
        for f in fs:
            p = os.path.join(d, f)
            if os.path.isfile(p) and not os.path.islink(p):
                total += os.path.getsize(p)
    return total

def ensure_tools(tools):
    missing = [pkg for tool, pkg in (("restic", "restic"), ("borg", "borgbackup")) if tool in tools and not shutil.which(tool)]
    for c, pkg in (("zstd", "zstd"), ("openssl", "openssl")):
        if not shutil.which(c): missing.append(pkg)
    if not os.path.exists("/usr/bin/time"): missing.append("time")
    if missing:
        subprocess.run(["apt-get", "update"], check=True)
        subprocess.run(["apt-get", "install", "-y"] + missing, check=True)

class Tool:
    def __init__(self, name, work, pwfile):
        self.name, self.repo = name, os.path.join(work, "repo-" + name)
        self.env = dict(os.environ, LIFEBOAT_PASSWORD_FILE=pwfile, RESTIC_PASSWORD_FILE=pwfile,
                        BORG_PASSPHRASE=open(pwfile).read().strip(), BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
                        BORG_RELOCATED_REPO_ACCESS_IS_OK="yes", BORG_CACHE_DIR=os.path.join(work, "borg-cache"),
                        RESTIC_CACHE_DIR=os.path.join(work, "restic-cache"), XDG_CACHE_HOME=os.path.join(work, "cache"))
        self.n = 0

    def version(self):
        out = {"lifeboat": [LB, "version"], "restic": ["restic", "version"], "borg": ["borg", "--version"]}[self.name]
        return sh(out, env=self.env).stdout.strip().splitlines()[0]

    def init(self):
        c = {"lifeboat": [LB, "-r", self.repo, "init", "-q"],
             "restic": ["restic", "-r", self.repo, "init", "--repository-version", "2", "-q"],
             "borg": ["borg", "init", "-e", "repokey", self.repo]}[self.name]
        return timed(c, self.env)

    def backup(self, data):
        self.n += 1
        c = {"lifeboat": [LB, "-r", self.repo, "backup", data, "-q"],
             "restic": ["restic", "-r", self.repo, "backup", data, "-q"],
             "borg": ["borg", "create", "--compression", "zstd,3", "%s::s%d" % (self.repo, self.n), data]}[self.name]
        return timed(c, self.env)

    def restore(self, target):
        os.makedirs(target)
        if self.name == "lifeboat": return timed([LB, "-r", self.repo, "restore", "latest", "--target", target, "-q"], self.env)
        if self.name == "restic": return timed(["restic", "-r", self.repo, "restore", "latest", "--target", target, "-q"], self.env)
        return timed(["borg", "extract", "%s::s%d" % (self.repo, self.n)], self.env, cwd=target)

    def copy(self, pwfile):
        """A second repository with the same chunker parameters, then a copy of every snapshot into it (timed)."""
        dst = self.repo + "-copy"
        env = dict(self.env, RESTIC_FROM_PASSWORD_FILE=pwfile)
        if self.name == "lifeboat":
            sh([LB, "-r", dst, "init", "-q", "--copy-chunker-params-from", self.repo, "--from-password-file", pwfile], env=env)
            return timed([LB, "-r", dst, "copy", "-q", "--from-repo", self.repo, "--from-password-file", pwfile], env)
        sh(["restic", "-r", dst, "init", "-q", "--repository-version", "2", "--from-repo", self.repo, "--copy-chunker-params"], env=env)
        return timed(["restic", "-r", dst, "copy", "-q", "--from-repo", self.repo], env)

    def s3_backup(self, data, endpoint):
        """init + first backup of `data` into a fresh prefix of a moto S3 server (timed: the backup)."""
        env = dict(self.env, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
        repo = "s3:%s/bench/%s" % (endpoint, self.name)
        if self.name == "lifeboat":
            sh([LB, "-r", repo, "init", "-q"], env=env)
            return timed([LB, "-r", repo, "backup", data, "-q"], env)
        sh(["restic", "-r", repo, "init", "--repository-version", "2", "-q"], env=env)
        return timed(["restic", "-r", repo, "backup", data, "-q"], env)

    def remote_restore(self, repo, target, env):
        """Restores the latest snapshot of a remote repository (timed); the metadata cache starts empty."""
        os.makedirs(target)
        env = dict(env, LIFEBOAT_CACHE_DIR=target + "-cache", RESTIC_CACHE_DIR=target + "-cache")
        if self.name == "lifeboat":
            return timed([LB, "-r", repo, "restore", "latest", "--target", target, "-q"], env)
        return timed(["restic", "-r", repo, "restore", "latest", "--target", target, "-q"], env)

    def remote_backup(self, repo, data, env):
        if self.name == "lifeboat":
            sh([LB, "-r", repo, "init", "-q"], env=env)
            return timed([LB, "-r", repo, "backup", data, "-q"], env)
        sh(["restic", "-r", repo, "init", "--repository-version", "2", "-q"], env=env)
        return timed(["restic", "-r", repo, "backup", data, "-q"], env)

    def check(self):
        c = {"lifeboat": [LB, "-r", self.repo, "check", "--read-data", "-q"],
             "restic": ["restic", "-r", self.repo, "check", "--read-data", "-q"],
             "borg": ["borg", "check", "--verify-data", self.repo]}[self.name]
        return timed(c, self.env)

class FreshFS:
    """A new ext4 file system (a sparse loop image) for one restore target, unmounted and deleted afterwards.

    ext4 slows down after mass creation and deletion: on this VM the same restore went from 6 s to 17 s of which
    16 s system time after a few rounds of restoring and deleting 20,000 files, for every tool alike. Each restore
    (and `cp -a`) therefore writes into a file system of its own. Without root (or mkfs.ext4) the target is a plain
    directory under the work directory, as before."""
    def __init__(self, work, name, size):
        self.dir = os.path.join(work, "fs-" + name)
        self.image = self.dir + ".img"
        self.mounted = False
        os.makedirs(self.dir)
        if os.geteuid() != 0 or not shutil.which("mkfs.ext4"):
            return
        with open(self.image, "wb") as f:
            f.truncate(max(size, 1 << 30))
        ok = subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", self.image],
                            capture_output=True).returncode == 0
        self.mounted = ok and subprocess.run(["mount", "-o", "loop", self.image, self.dir], capture_output=True).returncode == 0
        if not self.mounted and os.path.exists(self.image):
            os.remove(self.image)

    def path(self, sub):
        return os.path.join(self.dir, sub)

    def close(self):
        if self.mounted:
            subprocess.run(["umount", self.dir], check=False)
            os.remove(self.image)
        shutil.rmtree(self.dir, ignore_errors=True)

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def wait_port(port):
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close(); return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("moto_server did not start")

def serve_requests(port, repo):
    """GET requests `lifeboat serve` answered for `repo` so far (its Prometheus counter), and how many of them
    read pack data."""
    import urllib.request
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read().decode()
    total = data = 0
    for line in text.splitlines():
        m = re.match(r'lifeboat_serve_requests_total\{repo="([^"]*)",method="(GET|HEAD)",type="([^"]*)",code="[^"]*"\} (\d+)', line)
        if m and m.group(1).strip("/") == repo:
            total += int(m.group(4))
            if m.group(3) == "data": data += int(m.group(4))
    return total, data

def packs_in(repo_dir):
    return sum(len(fs) for d, _, fs in os.walk(os.path.join(repo_dir, "data")))

def verify_restore(data, target):
    restored = os.path.join(target, data.lstrip("/"))
    p = subprocess.run(["diff", "-r", "-q", data, restored], capture_output=True, text=True)
    return p.returncode == 0

def micro(work, data):
    sample = os.path.join(work, "sample.bin")
    with open(sample, "wb") as out:  # a slice of the real data: source text, binaries, logs
        for sub, limit in (("src", 24 << 20), ("media", 24 << 20), ("big/app.log", 16 << 20)):
            n = 0
            p = os.path.join(data, sub)
            files = [p] if os.path.isfile(p) else sorted(os.path.join(d, f) for d, _, fs in os.walk(p) for f in fs)
            for f in files:
                b = open(f, "rb").read(limit - n); out.write(b); n += len(b)
                if n >= limit: break
    res = {"lifeboat": json.loads(sh([LBBENCH, "--json", sample]).stdout)}
    ref = {}
    o = sh("openssl speed -evp sha256 -bytes 1048576 -seconds 2 2>/dev/null").stdout
    ref["openssl sha256"] = float(o.strip().splitlines()[-1].split()[-1].rstrip("k")) * 1000 / 1e6
    o = sh("openssl speed -evp aes-256-gcm -bytes 1048576 -seconds 2 2>/dev/null").stdout
    ref["openssl aes-256-gcm"] = float(o.strip().splitlines()[-1].split()[-1].rstrip("k")) * 1000 / 1e6
    for lvl in (1, 3):
        o = sh(["zstd", "-b%d" % lvl, "-i2", sample]).stderr + sh(["zstd", "-b%d" % lvl, "-i2", sample]).stdout
        m = re.findall(r"([\d.]+) MB/s", o)
        ref["zstd -%d compress" % lvl] = float(m[0]) * 1.048576 if m else None  # zstd prints MiB/s as MB/s
    size = os.path.getsize(sample)
    t = time.time(); sh(["sha256sum", sample]); ref["sha256sum"] = size / (time.time() - t) / 1e6
    res["reference"] = {k: round(v, 1) for k, v in ref.items() if v}
    return res

def memory_scaling(work, pwfile):
    """Peak RSS of Lifeboat backing up one file of growing size: it must stay flat."""
    out = []
    env = dict(os.environ, LIFEBOAT_PASSWORD_FILE=pwfile)
    for mib in (64, 256, 1024):
        d = os.path.join(work, "mem-%d" % mib); os.makedirs(d)
        with open(os.path.join(d, "big.bin"), "wb") as f:
            r = __import__("random").Random(mib)
            for _ in range(mib): f.write(r.randbytes(1 << 20))
        repo = os.path.join(work, "mem-repo-%d" % mib)
        sh([LB, "-r", repo, "init", "-q"], env=env)
        t = timed([LB, "-r", repo, "backup", d, "-q"], env)
        out.append({"file_mib": mib, "rss_mib": t["rss_mib"], "wall_s": t["wall_s"]})
        shutil.rmtree(d)
    return out

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--work", default="/tmp/lifeboat-bench")
    ap.add_argument("--tools", default="lifeboat,restic,borg")
    ap.add_argument("--skip-micro", action="store_true")
    ap.add_argument("--skip-s3", action="store_true")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each remote restore (the median counts)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    a = ap.parse_args()
    tools_wanted = a.tools.split(",")
    ensure_tools(tools_wanted)
    for b in (LB, LBBENCH):
        if not os.path.exists(b): sys.exit("missing %s: run `swift build -c release` (or `make bench`)" % b)
    shutil.rmtree(a.work, ignore_errors=True); os.makedirs(a.work)
    pw = os.path.join(a.work, "password"); open(pw, "w").write("benchmark-password\n")
    data = os.path.join(a.work, "data")
    print("generating data (scale %.2f) ..." % a.scale, flush=True)
    subprocess.run([sys.executable, os.path.join(HERE, "gen_data.py"), "create", data, "--scale", str(a.scale)], check=True)
    nbytes = tree_bytes(data)
    nfiles = sum(len(fs) for _, _, fs in os.walk(data))
    sh(["sh", "-c", "find '%s' -type f -exec cat {} + > /dev/null" % data])  # warm the page cache
    tools = [Tool(t, a.work, pw) for t in tools_wanted]
    results = {t.name: {"version": t.version()} for t in tools}

    def step(name, fn, bytes_=None, only=None):
        for t in tools:
            if only and t.name not in only: continue
            print("%-9s %-22s" % (t.name, name), end=" ", flush=True)
            r = fn(t)
            if bytes_: r["mb_s"] = round(bytes_ / r["wall_s"] / 1e6, 1) if r["wall_s"] > 0 else None
            results[t.name][name] = r
            print(r, flush=True)

    step("init", lambda t: t.init())
    step("first backup", lambda t: t.backup(data), nbytes)
    step("second backup", lambda t: t.backup(data), nbytes)
    subprocess.run([sys.executable, os.path.join(HERE, "gen_data.py"), "mutate", data], check=True)
    sh(["sh", "-c", "find '%s' -type f -exec cat {} + > /dev/null" % data])
    nbytes2 = tree_bytes(data)
    step("backup after mutation", lambda t: t.backup(data), nbytes2)
    # The file-system bound for a restore: `cp -a` of the same tree into a fresh file system, once before and once
    # after the restores (the faster counts).
    def cp_a(n):
        fs = FreshFS(a.work, "cp-%d" % n, 3 * nbytes2)
        try:
            r = timed(["cp", "-a", data, fs.path("t")], os.environ)
        finally:
            fs.close()
        r["mb_s"] = round(nbytes2 / r["wall_s"] / 1e6, 1)
        return r
    cp = cp_a(1)
    # Every restore target is a file system of its own (FreshFS): mass deletions make ext4's next inode
    # allocations slow, which would penalise whichever tool runs next.
    def restore(t):
        fs = FreshFS(a.work, "restore-" + t.name, 3 * nbytes2)
        try:
            target = fs.path("t")
            r = t.restore(target)
            r["exact"] = verify_restore(data, target)
        finally:
            fs.close()
        return r
    step("full restore", restore, nbytes2)
    cp2 = cp_a(2)
    print("cp -a: %.2f s, then %.2f s" % (cp["wall_s"], cp2["wall_s"]), flush=True)
    cp = min(cp, cp2, key=lambda r: r["wall_s"])
    step("check all data", lambda t: t.check(), nbytes2)
    for t in tools:
        results[t.name]["repository size"] = {"bytes": du(t.repo)}
    step("copy to a second repository", lambda t: t.copy(pw), nbytes2, only=("lifeboat", "restic"))
    if not a.skip_s3 and shutil.which("moto_server"):
        # Both tools upload the same data to the same S3 server (moto on loopback), one after the other.
        port = free_port()
        moto = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            step("backup to S3 (moto)", lambda t: t.s3_backup(data, "http://127.0.0.1:%d" % port), nbytes2, only=("lifeboat", "restic"))
        finally:
            moto.kill(); subprocess.run(["pkill", "-9", "-f", "moto_server -H 127.0.0.1 -p %d" % port])

    if not a.skip_s3 and shutil.which("moto_server") and "restic" in tools_wanted:
        # Restores from the remote sites, as a disaster recovery does: median of `rounds` runs each, cache empty.
        port = free_port()
        moto = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sport = free_port()
        serve_root = os.path.join(a.work, "serve")
        os.makedirs(serve_root)
        serve = subprocess.Popen([LB, "serve", "--path", serve_root, "--listen", "127.0.0.1:%d" % sport, "--no-auth",
                                  "--prometheus", "--prometheus-no-auth"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port); wait_port(sport)
            s3env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
            for t in tools:
                if t.name in ("lifeboat", "restic"):
                    t.s3repo = "s3:http://127.0.0.1:%d/restore/%s" % (port, t.name)
                    t.remote_backup(t.s3repo, data, dict(t.env, **s3env))
                    t.restrepo = "rest:http://127.0.0.1:%d/%s" % (sport, t.name)
                    t.remote_backup(t.restrepo, data, t.env)
            def median_restore(t, repo, env, tag, count=None):
                runs = []
                for i in range(a.rounds):
                    fs = FreshFS(a.work, "rr-%s-%s-%d" % (tag, t.name, i), 3 * nbytes2)
                    try:
                        target = fs.path("t")  # its metadata cache goes to t-cache, on the same file system
                        before = count() if count else None
                        r = t.remote_restore(repo, target, env)
                        if count:
                            after = count()
                            r["requests"], r["data_requests"] = after[0] - before[0], after[1] - before[1]
                        r["exact"] = verify_restore(data, target)
                    finally:
                        fs.close()
                    runs.append(r)
                runs.sort(key=lambda r: r["wall_s"])
                med = dict(runs[len(runs) // 2]); med["rounds"] = [x["wall_s"] for x in runs]
                return med
            step("restore from S3 (moto)", lambda t: median_restore(t, t.s3repo, dict(t.env, **s3env), "s3"), nbytes2, only=("lifeboat", "restic"))
            def rest(t):
                r = median_restore(t, t.restrepo, t.env, "rest", lambda: serve_requests(sport, t.name))
                r["packs"] = packs_in(os.path.join(serve_root, t.name))
                return r
            step("restore from lifeboat serve", rest, nbytes2, only=("lifeboat", "restic"))
        finally:
            moto.kill(); serve.kill()
            subprocess.run(["pkill", "-9", "-f", "moto_server -H 127.0.0.1 -p %d" % port])

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    report = {"date": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"), "machine": {"cpu": cpu, "cores": os.cpu_count(),
              "kernel": platform.release()}, "data": {"bytes": nbytes, "files": nfiles, "bytes_after_mutation": nbytes2, "scale": a.scale},
              "cp -a": cp, "tools": results}
    if not a.skip_micro:
        print("micro-benchmarks ...", flush=True)
        report["micro"] = micro(a.work, data)
        print("memory against file size ...", flush=True)
        report["memory"] = memory_scaling(a.work, pw)
    os.makedirs(a.out, exist_ok=True)
    json.dump(report, open(os.path.join(a.out, "latest.json"), "w"), indent=2)
    md = markdown(report, [t.name for t in tools])
    open(os.path.join(a.out, "latest.md"), "w").write(md)
    print("\n" + md)
    shutil.rmtree(a.work, ignore_errors=True)

def markdown(r, names):
    L = []
    m = r["machine"]; d = r["data"]
    L.append("Benchmark of %s on %s (%d cores), %s; data: %.2f GB in %d files (warm page cache)." % (
        r["date"], m["cpu"], m["cores"], m["kernel"], d["bytes"] / 1e9, d["files"]))
    L.append("Versions: " + "; ".join("%s" % r["tools"][n]["version"] for n in names) + ".")
    L.append("")
    L.append("| step | " + " | ".join(names) + (" | lifeboat vs restic |" if "restic" in names and "lifeboat" in names else " |"))
    L.append("|---" * (len(names) + 1 + ("restic" in names and "lifeboat" in names)) + "|")
    def cell(x):
        s = "%.2f s" % x["wall_s"]
        if "mb_s" in x and x["mb_s"]: s += ", %.0f MB/s" % x["mb_s"]
        s += "<br>CPU %.1f s, RSS %.0f MiB" % (x["cpu_s"], x["rss_mib"])
        if x.get("exact") is False: s += "<br>**NOT EXACT**"
        if "requests" in x: s += "<br>%d requests (%d for data; %d packs)" % (x["requests"], x["data_requests"], x.get("packs", 0))
        if "rounds" in x: s += "<br>median of %s s" % ", ".join("%.2f" % v for v in x["rounds"])
        return s
    for step in ("init", "first backup", "second backup", "backup after mutation", "full restore", "check all data", "copy to a second repository", "backup to S3 (moto)", "restore from S3 (moto)", "restore from lifeboat serve"):
        if not all(step in r["tools"][n] for n in names if n != "borg"): continue
        row = "| %s | " % step + " | ".join(cell(r["tools"][n][step]) if step in r["tools"][n] else "n/a" for n in names)
        if "restic" in names and "lifeboat" in names:
            row += " | %.2fx |" % (r["tools"]["restic"][step]["wall_s"] / max(r["tools"]["lifeboat"][step]["wall_s"], 0.001))
        else:
            row += " |"
        L.append(row)
    cp = r["cp -a"]
    L.append("| (`cp -a` of the same tree, faster of two) | %.2f s, %.0f MB/s |" % (cp["wall_s"], cp["mb_s"]) + " |" * (len(names) - 1 + ("restic" in names and "lifeboat" in names)))
    row = "| repository size | " + " | ".join("%.1f MB" % (r["tools"][n]["repository size"]["bytes"] / 1e6) for n in names)
    if "restic" in names and "lifeboat" in names:
        row += " | %.3fx |" % (r["tools"]["lifeboat"]["repository size"]["bytes"] / r["tools"]["restic"]["repository size"]["bytes"])
    else:
        row += " |"
    L.append(row)
    if "micro" in r:
        L.append("")
        L.append("| primitive (one core) | MB/s |")
        L.append("|---|---|")
        for k, v in r["micro"]["lifeboat"].items(): L.append("| lifeboat: %s | %.0f |" % (k, v))
        for k, v in r["micro"]["reference"].items(): L.append("| reference: %s | %.0f |" % (k, v))
    if "memory" in r:
        L.append("")
        L.append("Peak RSS of a Lifeboat backup of one file: " + ", ".join(
            "%d MiB file: %.0f MiB" % (m["file_mib"], m["rss_mib"]) for m in r["memory"]) + ".")
    return "\n".join(L) + "\n"

if __name__ == "__main__":
    main()
