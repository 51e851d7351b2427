#!/usr/bin/env python3
"""A fault-injecting HTTP/1.1 proxy for the remote-site tests.

Usage: faultproxy.py LISTEN_PORT UPSTREAM_HOST:PORT [--rate R] [--seed S] [--stall SECONDS] [--log FILE]

Each request is forwarded to the upstream server unless a fault is drawn (probability R in all,
split evenly between the kinds):
  500/503    answer an error without forwarding
  reset      forward the request, then reset the client connection without an answer
             (the upstream did the work: the client must cope with not knowing)
  stall      read the request, then say nothing for --stall seconds and close
  truncate   forward, then send the headers and only half of the body, and close
Prints one line per fault to --log (or stderr). Bounded: the process exits after --max-seconds.
"""
import argparse
import http.client
import random
import socket
import socketserver
import struct
import sys
import threading
import time

KINDS = ["500", "503", "reset", "stall", "truncate"]


def read_request(rfile):
    line = rfile.readline(65537)
    if not line:
        return None
    method, target, _ = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    headers = []
    while True:
        h = rfile.readline(65537)
        if h in (b"\r\n", b"\n", b""):
            break
        k, v = h.decode("latin-1").rstrip("\r\n").split(":", 1)
        headers.append((k.strip(), v.strip()))
    length = 0
    for k, v in headers:
        if k.lower() == "content-length":
            length = int(v)
        if k.lower() == "transfer-encoding" and "chunked" in v.lower():
            raise ValueError("chunked request bodies are not supported by this test proxy")
    body = rfile.read(length) if length else b""
    return method, target, headers, body


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        cfg = self.server.cfg
        while True:
            try:
                req = read_request(self.rfile)
            except (ConnectionError, ValueError):
                return
            if req is None:
                return
            method, target, headers, body = req
            with self.server.lock:
                fault = self.server.rng.choice(KINDS) if self.server.rng.random() < cfg.rate else None
                if fault:
                    self.server.counts[fault] = self.server.counts.get(fault, 0) + 1
            if fault:
                self.server.log(f"{fault} {method} {target}")
            if fault in ("500", "503"):
                msg = b"injected fault\n"
                self.wfile.write(f"HTTP/1.1 {fault} Injected\r\nContent-Length: {len(msg)}\r\nContent-Type: text/plain\r\n\r\n".encode() + msg)
                self.wfile.flush()
                continue
            if fault == "stall":
                time.sleep(cfg.stall)
                return
            try:
                status, reason, rheaders, rbody = self.forward(method, target, headers, body)
            except OSError as e:
                self.server.log(f"upstream error {e}")
                return
            if fault == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            out = f"HTTP/1.1 {status} {reason}\r\n"
            for k, v in rheaders:
                if k.lower() in ("transfer-encoding", "connection", "content-length"):
                    continue
                out += f"{k}: {v}\r\n"
            out += f"Content-Length: {len(rbody)}\r\n\r\n"
            if fault == "truncate" and method != "HEAD" and len(rbody) > 1:
                self.wfile.write(out.encode("latin-1") + rbody[: len(rbody) // 2])
                self.wfile.flush()
                return
            self.wfile.write(out.encode("latin-1") + (b"" if method == "HEAD" else rbody))
            self.wfile.flush()

    def forward(self, method, target, headers, body):
        conn = http.client.HTTPConnection(self.server.cfg.upstream_host, self.server.cfg.upstream_port, timeout=60)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for k, v in headers:
                if k.lower() in ("connection",):
                    continue
                conn.putheader(k, v)
            conn.endheaders(body if body else None)
            r = conn.getresponse()
            data = r.read()
            return r.status, r.reason, r.getheaders(), data
        finally:
            conn.close()


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("upstream")
    ap.add_argument("--rate", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stall", type=float, default=5)
    ap.add_argument("--max-seconds", type=float, default=900)
    ap.add_argument("--log")
    cfg = ap.parse_args()
    cfg.upstream_host, port = cfg.upstream.rsplit(":", 1)
    cfg.upstream_port = int(port)
    srv = Server(("127.0.0.1", cfg.port), Handler)
    srv.cfg = cfg
    srv.rng = random.Random(cfg.seed)
    srv.lock = threading.Lock()
    srv.counts = {}
    logf = open(cfg.log, "a") if cfg.log else sys.stderr

    def log(msg):
        with srv.lock:
            logf.write(msg + "\n")
            logf.flush()

    srv.log = log
    threading.Timer(cfg.max_seconds, srv.shutdown).start()
    print(f"faultproxy listening on 127.0.0.1:{cfg.port} -> {cfg.upstream} (rate {cfg.rate})", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
