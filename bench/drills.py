#!/usr/bin/env python3
"""`make bench-drills`: drills of a 1 GiB file source and a PostgreSQL database (pgbench scale 50) from a local
site and an S3 site (moto), beside the same restore done by hand with restic, in one run.

For each drill and site, the fastest of --rounds runs: the RTO and its parts from the drill's own report (fetch:
opening the site and its index; restore; verify: every file re-read against the snapshot; integrity: the engine's
check; playbook: for PostgreSQL a pg_restore into a scratch server and a row count), the drill's own overhead
(everything else: sandbox, reports, process starts), and the RPO. Beside them: `lifeboat restore` and
`restic restore` of the same file tree from the same kind of site, timed from outside.
Target (issue 14): the overhead below 5% of the RTO.

Usage: python3 bench/drills.py [--scale 1.0] [--pgbench-scale 50] [--rounds 3] [--bin .build/release/lifeboat]
Needs: postgresql-15 (initdb, pgbench), restic, moto_server; runs as root (the scratch servers run as postgres)."""
import argparse, json, os, shutil, signal, socket, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("--scale", type=float, default=1.0, help="the file source, in GiB (bench/gen_data.py --scale)")
ap.add_argument("--pgbench-scale", type=int, default=50)
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--bin", default=os.environ.get("LIFEBOAT_BIN", ".build/release/lifeboat"))
ap.add_argument("--out", default="bench/results")
ap.add_argument("--restore-dir", default="/dev/shm",
                help="where sandboxes and hand restores are written (default tmpfs: on ext4, a tree created right after "
                     "one was deleted waits on the inode allocator's recently-deleted scan, which swamps every tool's time)")
a = ap.parse_args()
LB = os.path.abspath(a.bin)
HERE = os.path.dirname(os.path.abspath(__file__))
PGBIN = "/usr/lib/postgresql/15/bin"
for tool in ("restic", "moto_server", "pg_restore", "psql"):
    if not shutil.which(tool):
        sys.exit("bench/drills.py needs %s (make deps installs it)" % tool)

work = tempfile.mkdtemp(prefix="lifeboat-bench-drills.", dir="/var/tmp")
os.chmod(work, 0o755)   # the scratch PostgreSQL servers run as postgres in sandboxes under it
out_dir = tempfile.mkdtemp(prefix="lifeboat-bench-drills.", dir=a.restore_dir)
os.chmod(out_dir, 0o755)
procs = []

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def sh(argv, env=None, **kw):
    r = subprocess.run(argv, env=env, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit("%s failed (%d): %s" % (" ".join(argv[:4]), r.returncode, (r.stderr or r.stdout)[-2000:]))
    return r.stdout

def timed(argv, env=None):
    t = time.perf_counter(); sh(argv, env); return time.perf_counter() - t

def cleanup(*_):
    for p in procs:
        try: os.killpg(p.pid, signal.SIGKILL)
        except OSError: pass
    if os.path.exists(work + "/pg/data/postmaster.pid"):
        subprocess.run(["runuser", "-u", "postgres", "--", PGBIN + "/pg_ctl", "stop", "-D", work + "/pg/data", "-m", "immediate"],
                       capture_output=True)
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(out_dir, ignore_errors=True)

signal.signal(signal.SIGTERM, lambda *_: (cleanup(), sys.exit(1)))
try:
    moto_port = free_port()
    moto = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(moto_port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    procs.append(moto)
    env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1",
               LIFEBOAT_PASSWORD_FILE=work + "/pw", RESTIC_PASSWORD_FILE=work + "/pw",
               LIFEBOAT_CACHE_DIR=work + "/cache", RESTIC_CACHE_DIR=work + "/restic-cache")
    open(work + "/pw", "w").write("bench-password\n")
    for _ in range(600):
        try:
            import urllib.request
            urllib.request.urlopen("http://127.0.0.1:%d/" % moto_port, timeout=30).read(); break
        except Exception:
            time.sleep(0.1)
    s3 = "s3:http://127.0.0.1:%d/bench" % moto_port

    # The file source: the benchmark's usual data set (source-like text, mixed binaries, large files, duplicates).
    data = work + "/data"
    print("generating %.1f GiB of files …" % a.scale, file=sys.stderr)
    sh([sys.executable, HERE + "/gen_data.py", "create", data, "--scale", str(a.scale)])
    size = int(sh(["du", "-sb", data]).split()[0])

    # PostgreSQL: a cluster owned by postgres on a socket folder, pgbench's tables at the given scale.
    pg = work + "/pg"
    os.makedirs(pg + "/sock"); shutil.chown(pg, "postgres"); shutil.chown(pg + "/sock", "postgres")
    print("initialising PostgreSQL with pgbench scale %d …" % a.pgbench_scale, file=sys.stderr)
    sh(["runuser", "-u", "postgres", "--", PGBIN + "/initdb", "-D", pg + "/data", "-U", "postgres", "--auth=trust", "--no-sync"])
    sh(["runuser", "-u", "postgres", "--", PGBIN + "/pg_ctl", "start", "-w", "-D", pg + "/data", "-l", pg + "/server.log",
        "-o", "-c listen_addresses='' -k %s/sock -c fsync=off" % pg])
    sh(["createdb", "-h", pg + "/sock", "-U", "postgres", "bench"])
    sh(["pgbench", "-i", "-q", "-s", str(a.pgbench_scale), "-h", pg + "/sock", "-U", "postgres", "bench"])
    rows = a.pgbench_scale * 100000
    open(work + "/pg.dsn", "w").write("host=%s/sock user=postgres dbname=bench\n" % pg)

    # Both sites: a local folder and an S3 bucket; the sources backed up at the first, replicated to the second.
    sh([LB, "-r", work + "/local", "init"], env)
    sh([LB, "-r", s3, "init", "--copy-chunker-params-from", work + "/local", "--from-password-file", work + "/pw"], env)
    print("backing up …", file=sys.stderr)
    sh([LB, "-r", work + "/local", "backup", data, "--tag", "source=files", "-q"], env)
    dump = subprocess.Popen(["pg_dump", "--format=custom", "-h", pg + "/sock", "-U", "postgres", "bench"], stdout=subprocess.PIPE)
    subprocess.run([LB, "-r", work + "/local", "backup", "--stdin", "--stdin-filename", "pg.pgdump", "--tag", "source=pg", "-q"],
                   stdin=dump.stdout, env=env, check=True)
    dump.stdout.close()
    if dump.wait() != 0: sys.exit("pg_dump failed")
    open(work + "/sites.yaml", "w").write("""sites:
  - {name: local, repository: %s/local, password_file: %s/pw, role: primary}
  - {name: s3, repository: '%s', password_file: %s/pw, role: replica}
replication: {state_file: %s/replication.json}
""" % (work, work, s3, work, work))
    sh([LB, "replicate", "--config", work + "/sites.yaml"], env)

    # restic beside it: the same tree in a local repository and in the same S3 server.
    for repo in (work + "/restic", "s3:http://127.0.0.1:%d/restic-bench" % moto_port):
        sh(["restic", "-r", repo, "init", "-q"], env)
        sh(["restic", "-r", repo, "backup", data, "-q"], env)

    os.makedirs(work + "/playbooks")
    open(work + "/playbooks/pg.yaml", "w").write("""name: PostgreSQL into a scratch server
source: pg
steps:
  - {name: restore, lifeboat: restore}
  - {name: initdb, run: ["%(bin)s/initdb", "-D", "{sandbox}/pgdata", "-U", "postgres", "--auth=trust", "--no-sync"], timeout: 5m}
  - {name: start, run: ["%(bin)s/pg_ctl", "start", "-w", "-D", "{sandbox}/pgdata", "-l", "{sandbox}/server.log", "-o", "-c listen_addresses='' -k {sandbox} -p {port} -c fsync=off"], timeout: 2m}
  - {name: pg_restore, run: ["pg_restore", "-h", "{sandbox}", "-p", "{port}", "-U", "postgres", "-d", "postgres", "--create", "-j", "2", "{sandbox}/pg.pgdump"], timeout: 1h}
  - {name: rows, check: "psql -X -h {sandbox} -p {port} -U postgres -d bench -tAc 'select count(*) from pgbench_accounts' | grep -qx {rows}", within: 30s}
cleanup:
  - {name: stop, run: ["%(bin)s/pg_ctl", "stop", "-D", "{sandbox}/pgdata", "-m", "immediate"]}
""" % {"bin": PGBIN})
    api = free_port()
    open(work + "/lifeboat.yaml", "w").write("""sites:
  - {name: local, repository: %(w)s/local, password_file: %(w)s/pw, role: primary}
  - {name: s3, repository: '%(s3)s', password_file: %(w)s/pw, role: replica}
sources:
  - {name: files, paths: [%(w)s/data], schedule: "0 3 * * *", objectives: {rpo: 1d, rto: 1h}}
  - {name: pg, postgres: {dsn_file: %(w)s/pg.dsn}, schedule: "0 3 * * *", objectives: {rpo: 1d, rto: 1h}}
drills:
  - {name: files, source: files, from: [local, s3], sandbox: %(o)s/sandbox, timeout: 2h}
  - {name: pg, source: pg, from: [local, s3], sandbox: %(o)s/sandbox, playbook: playbooks/pg.yaml, run_as: postgres,
     variables: {rows: "%(rows)d"}, timeout: 2h}
replication: {state_file: %(w)s/replication.json}
agent: {listen: 127.0.0.1:%(api)d, state: %(w)s/agent.db}
""" % {"w": work, "o": out_dir, "s3": s3, "rows": rows, "api": api})

    best = {}      # (drill, site) -> the fastest report
    by_hand = {}   # (tool, site) -> the fastest restore
    for rnd in range(a.rounds):
        print("round %d of %d …" % (rnd + 1, a.rounds), file=sys.stderr)
        for drill in ("files", "pg"):
            r = subprocess.run([LB, "drill", "run", "--config", work + "/lifeboat.yaml", drill, "--json"], env=env, capture_output=True, text=True)
            reports = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
            for rep in reports:
                if not rep["passed"]:
                    sys.exit("drill %s at %s failed: %s" % (drill, rep["site"], "; ".join(rep["failures"])))
                key = (drill, rep["site"])
                if key not in best or rep["rto_seconds"] < best[key]["rto_seconds"]:
                    best[key] = rep
            if r.returncode != 0: sys.exit("drill %s: %s" % (drill, r.stderr[-2000:]))
        for site, lb_repo, restic_repo in (("local", work + "/local", work + "/restic"),
                                           ("s3", s3, "s3:http://127.0.0.1:%d/restic-bench" % moto_port)):
            for tool, argv in (("lifeboat restore", [LB, "-r", lb_repo, "restore", "latest", "--tag", "source=files", "--target", out_dir + "/by-hand", "-q"]),
                               ("restic restore", ["restic", "-r", restic_repo, "restore", "latest", "--target", out_dir + "/by-hand", "-q"])):
                shutil.rmtree(out_dir + "/by-hand", ignore_errors=True)
                t = timed(argv, env)
                by_hand[(tool, site)] = min(t, by_hand.get((tool, site), t))
        shutil.rmtree(out_dir + "/by-hand", ignore_errors=True)

    def s(v): return "%.2f" % v if v is not None else "-"
    lines = ["| drill | site | RTO s | fetch | restore | verify | integrity | playbook | overhead (share of RTO) | RPO s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    worst = 0.0
    for (drill, site), rep in sorted(best.items()):
        p = rep["phases"]
        over = p.get("overhead", 0.0)
        share = over / rep["rto_seconds"] if rep["rto_seconds"] else 0
        worst = max(worst, share)
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s (%.1f%%) | %s |" % (
            drill, site, s(rep["rto_seconds"]), s(p.get("fetch")), s(p.get("restore")), s(p.get("verify")), s(p.get("integrity")),
            s(p.get("playbook")), s(over), share * 100, s(rep.get("rpo_seconds"))))
    lines += ["", "| the file source by hand | local s | s3 s |", "|---|---|---|"]
    for tool in ("lifeboat restore", "restic restore"):
        lines.append("| %s | %s | %s |" % (tool, s(by_hand.get((tool, "local"))), s(by_hand.get((tool, "s3")))))
    head = ("Drills, fastest of %d rounds: files %.2f GiB (bench/gen_data.py), PostgreSQL pgbench scale %d (%d rows; "
            "playbook: pg_restore -j 2 into a scratch server, row count); sandboxes and hand restores in %s. "
            "Overhead target: below 5%% of the RTO; worst %.1f%%.") % (
            a.rounds, size / 2**30, a.pgbench_scale, rows, a.restore_dir, worst * 100)
    out = head + "\n\n" + "\n".join(lines) + "\n"
    print(out)
    os.makedirs(a.out, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d")
    open(os.path.join(a.out, "drills-%s.md" % stamp), "w").write(out)
    json.dump({"rounds": a.rounds, "bytes": size, "pgbench_scale": a.pgbench_scale,
               "drills": {"%s@%s" % k: v for k, v in best.items()}, "by_hand": {"%s@%s" % k: v for k, v in by_hand.items()}},
              open(os.path.join(a.out, "drills-%s.json" % stamp), "w"), indent=1, default=str)
    sys.exit(0 if worst < 0.05 else 2)
finally:
    cleanup()
