#!/usr/bin/python3
"""A bounded client for the HA suite: writes unique, increasing values through the proxy, one autocommitted
INSERT at a time, and records every attempt as a JSON line: {"v", "ok", "node", "sent", "ack"} or {"v", "ok": false,
"err"}. "node" is the server's cluster_name (the HA node that acknowledged). Stops when STOP_FILE exists, after
MAX_SECONDS, or after MAX_WRITES attempts.

usage: ha_writer.py HOST PORT RECORD STOP_FILE MAX_SECONDS MAX_WRITES [FIRST_VALUE]"""
import json, os, sys, time
import psycopg2

host, port, record, stop_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
max_seconds, max_writes = float(sys.argv[5]), int(sys.argv[6])
v = int(sys.argv[7]) if len(sys.argv) > 7 else 1
end = time.time() + max_seconds
conn = None
with open(record, "a", buffering=1) as out:
    for _ in range(max_writes):
        if os.path.exists(stop_file) or time.time() > end:
            break
        try:
            if conn is None:
                conn = psycopg2.connect(host=host, port=port, user="postgres", dbname="postgres", connect_timeout=2,
                                        options="-c statement_timeout=3000")
                conn.autocommit = True
            cur = conn.cursor()
            sent = time.time()
            cur.execute("INSERT INTO t(v) VALUES (%s) RETURNING current_setting('cluster_name')" % v)
            node = cur.fetchone()[0]
            out.write(json.dumps({"v": v, "ok": True, "node": node, "sent": sent, "ack": time.time()}) + "\n")
        except Exception as e:
            out.write(json.dumps({"v": v, "ok": False, "err": str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__,
                                  "at": time.time()}) + "\n")
            try:
                conn.close()
            except Exception:
                pass
            conn = None
            time.sleep(0.05)
        v += 1
        time.sleep(0.01)
