#!/usr/bin/python3
"""A bounded client for the HA suite: writes unique, increasing values through the proxy, one autocommitted
INSERT at a time, and records every attempt as a JSON line: {"v", "ok", "node", "sent", "ack"} or {"v", "ok": false,
"err"}. "node" is the node that acknowledged: pgN for the server address NET.1N (inet_server_addr(): the same for
every HA tool, whatever cluster_name it sets). Each connect and each statement gives
up after 3 s (asynchronous libpq, polled): a write to a frozen server fails instead of hanging the client. Stops
when STOP_FILE exists, after MAX_SECONDS, or after MAX_WRITES attempts.

usage: ha_writer.py HOST PORT RECORD STOP_FILE MAX_SECONDS MAX_WRITES [FIRST_VALUE]"""
import json, os, select, sys, time
import psycopg2
import psycopg2.extensions as ext

host, port, record, stop_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
max_seconds, max_writes = float(sys.argv[5]), int(sys.argv[6])
v = int(sys.argv[7]) if len(sys.argv) > 7 else 1
end = time.time() + max_seconds
TIMEOUT = 3.0


def wait(conn):
    deadline = time.time() + TIMEOUT
    while True:
        state = conn.poll()
        if state == ext.POLL_OK:
            return
        left = deadline - time.time()
        if left <= 0:
            raise TimeoutError("no answer within %.0f s" % TIMEOUT)
        if state == ext.POLL_READ:
            select.select([conn.fileno()], [], [], left)
        elif state == ext.POLL_WRITE:
            select.select([], [conn.fileno()], [], left)


conn = None
with open(record, "a", buffering=1) as out:
    for _ in range(max_writes):
        if os.path.exists(stop_file) or time.time() > end:
            break
        try:
            if conn is None:
                conn = psycopg2.connect(host=host, port=port, user="postgres", dbname="postgres", connect_timeout=3, async_=1)
                wait(conn)
            cur = conn.cursor()
            sent = time.time()
            cur.execute("INSERT INTO t(v) VALUES (%s) RETURNING host(inet_server_addr())" % v)
            wait(conn)
            addr = cur.fetchone()[0] or ""
            last = addr.rsplit(".", 1)[-1]
            node = "pg%d" % (int(last) - 10) if last.isdigit() and 11 <= int(last) <= 19 else addr
            out.write(json.dumps({"v": v, "ok": True, "node": node, "sent": sent, "ack": time.time()}) + "\n")
        except Exception as e:
            text = str(e).strip()
            out.write(json.dumps({"v": v, "ok": False, "err": text.splitlines()[0][:200] if text else type(e).__name__, "at": time.time()}) + "\n")
            try:
                conn.close()
            except Exception:
                pass
            conn = None
            time.sleep(0.05)
        v += 1
        time.sleep(0.01)
