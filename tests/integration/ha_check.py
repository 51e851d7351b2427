#!/usr/bin/python3
"""The HA suite's checker for one scenario. Reads the writer's record, every node's server log (statements logged
on completion: log_min_duration_statement = 0) and the values the converged cluster holds, and decides:

* split brain, from the client: acknowledgements by two nodes interleave in time (an ack by a node after another
  node's first ack since the scenario began, and before its own later leadership: more node runs than leader
  changes + 1);
* split brain, from the servers: a completed INSERT on one node at a moment when another node had already completed
  one later than it took over (runs of completions by node, in time order, that return to an earlier node), each
  such commit counted; those never acknowledged to the client (the proxy had closed the connection) and discarded
  by pg_rewind are reported apart as "stale commits";
* acknowledged writes missing from the cluster (lost), which must be 0 when --lossless;
* writes that failed, and the time from the last ack before the switch to the first ack after it.

Prints one JSON line; exits 1 when a rule is broken.
usage: ha_check.py RECORD SINCE FINAL_VALUES_FILE [--lossless] [--expect-changes N] NODE=LOG ..."""
import json, re, sys

args = sys.argv[1:]
lossless = "--lossless" in args
args = [a for a in args if a != "--lossless"]
expect_changes = None
if "--expect-changes" in args:
    i = args.index("--expect-changes"); expect_changes = int(args[i + 1]); del args[i:i + 2]
record, since, final_file = args[0], float(args[1]), args[2]
logs = dict(a.split("=", 1) for a in args[3:])

attempts = [json.loads(l) for l in open(record) if l.strip()]
attempts = [a for a in attempts if a.get("sent", a.get("at", 0)) >= since]
acks = sorted([a for a in attempts if a["ok"]], key=lambda a: a["ack"])
failed = [a for a in attempts if not a["ok"]]
final = set(int(x) for x in open(final_file).read().split() if x.strip())

def runs(seq):
    out = []
    for n in seq:
        if not out or out[-1] != n:
            out.append(n)
    return out

problems = []
client_runs = runs([a["node"] for a in acks])
if len(client_runs) != len(set(client_runs)):
    problems.append("split brain in the client's record: acknowledgements went %s" % " -> ".join(client_runs))
if expect_changes is not None and len(client_runs) > expect_changes + 1:
    problems.append("more leader changes than expected: %s" % " -> ".join(client_runs))

# Server logs: "2026-12-02 07:23:22.600 UTC [pid] LOG:  duration: 0.1 ms  statement: INSERT INTO t(v) VALUES (5) ..."
line_re = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) UTC .*duration: [\d.]+ ms  statement: INSERT INTO t\(v\) VALUES \((\d+)\)")
import datetime
completions = []
for node, path in logs.items():
    try:
        text = open(path, errors="replace").read()
    except OSError:
        continue
    for l in text.splitlines():
        m = line_re.match(l)
        if not m:
            continue
        t = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc).timestamp()
        if t >= since:
            completions.append((t, node, int(m.group(2))))
completions.sort()
server_runs = runs([n for _, n, _ in completions])
acked_values = set(a["v"] for a in acks)
stale, overlapping = [], []
if len(server_runs) != len(set(server_runs)):
    # Completions by a node after another node's run began, returning to it: which of them were acknowledged?
    seen_first = {}
    order = []
    for t, n, v in completions:
        if n not in seen_first:
            seen_first[n] = t; order.append(n)
    for t, n, v in completions:
        later = [m for m in order if seen_first[m] > seen_first[n] and seen_first[m] <= t]
        if later:
            (overlapping if v in acked_values else stale).append({"node": n, "v": v, "time": t, "after": later[0]})
if overlapping:
    problems.append("split brain in the server logs: %d acknowledged commits on a deposed primary" % len(overlapping))

lost = sorted(v for v in acked_values if v not in final)
if lossless and lost:
    problems.append("%d acknowledged writes lost (synchronous mode): %s" % (len(lost), lost[:10]))

gap = None
if len(client_runs) > 1:
    for a, b in zip(acks, acks[1:]):
        if a["node"] != b["node"]:
            gap = b["ack"] - a["ack"]
            break

print(json.dumps({"message_type": "ha_check", "acknowledged": len(acks), "failed": len(failed), "lost": len(lost),
                  "client_runs": client_runs, "server_runs": server_runs, "stale_commits": len(stale),
                  "split_brain_commits": len(overlapping), "switch_gap_seconds": gap, "problems": problems}))
sys.exit(1 if problems else 0)
