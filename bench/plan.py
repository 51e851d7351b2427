#!/usr/bin/env python3
"""`make bench-plan`: how long `lifeboat config validate` and `lifeboat plan` take on a plan of N sources (the
issue's target: 1,000 sources validated in under 1 s), with cron schedules in a time zone that changes to and from
daylight-saving time (every schedule's longest wait over a year is computed). Fastest of --rounds runs.

Usage: python3 bench/plan.py [--sources 1000] [--rounds 5] [--bin .build/release/lifeboat]"""
import argparse, os, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("--sources", type=int, default=1000)
ap.add_argument("--rounds", type=int, default=5)
ap.add_argument("--bin", default=os.environ.get("LIFEBOAT_BIN", ".build/release/lifeboat"))
a = ap.parse_args()

work = tempfile.mkdtemp(prefix="lifeboat-bench-plan.")
pw = os.path.join(work, "pw")
open(pw, "w").write("pw\n")
schedules = ["*/%d * * * *", "0 */%d * * *", "30 2 * * %d", "every %dm", "0 9 * * mon-fri", "15 3 %d * *"]
lines = ["timezone: Europe/Berlin", "sites:",
         "  - {name: local, repository: %s/repo, password_file: %s, role: primary}" % (work, pw),
         "  - {name: offsite, repository: %s/offsite, password_file: %s, role: replica}" % (work, pw), "sources:"]
for i in range(a.sources):
    s = schedules[i % len(schedules)]
    s = s % (i % 6 + 1) if "%d" in s else s
    lines.append('  - {name: s%d, paths: [/srv/%d], schedule: "%s", objectives: {rpo: 32d, rto: 1h}, retention: {keep_daily: 7}}' % (i, i, s))
lines.append('checks: {schedule: "0 3 * * *", read_data_subset: 5%}')
path = os.path.join(work, "lifeboat.yaml")
open(path, "w").write("\n".join(lines) + "\n")

def fastest(args):
    best = None
    for _ in range(a.rounds):
        t = time.perf_counter()
        r = subprocess.run([a.bin] + args + ["--config", path], capture_output=True, text=True)
        dt = time.perf_counter() - t
        if r.returncode != 0:
            sys.exit("%s failed (%d): %s%s" % (" ".join(args), r.returncode, r.stdout[-500:], r.stderr[-500:]))
        best = dt if best is None else min(best, dt)
    return best

v = fastest(["config", "validate"])
p = fastest(["plan", "--json"])
print("| command (%d sources, Europe/Berlin) | fastest of %d |" % (a.sources, a.rounds))
print("|---|---|")
print("| `lifeboat config validate` | %.3f s |" % v)
print("| `lifeboat plan --json` | %.3f s |" % p)
subprocess.run(["rm", "-rf", work])
sys.exit(0 if v < 1.0 else 1)
