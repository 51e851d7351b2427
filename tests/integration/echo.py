#!/usr/bin/env python3
"""A TCP echo server and a long-lived client, for proxy tests.

  echo.py server PORT [HOST]       echo every byte back, one thread per connection
  echo.py client PORT SECONDS      connect, send a numbered line every 50 ms for SECONDS, check every echo;
                                   exit 0 if the connection carried everything, 1 if it broke; prints
                                   "connected" once the first line came back (tests wait for it)
"""
import socket
import sys
import threading
import time


def server(port, host):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(64)

    def handle(c):
        with c:
            while True:
                d = c.recv(65536)
                if not d:
                    return
                c.sendall(d)

    while True:
        c, _ = s.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()


def client(port, seconds):
    c = socket.create_connection(("127.0.0.1", port), timeout=3)
    deadline = time.time() + seconds
    n = 0
    try:
        while time.time() < deadline:
            line = b"line %d\n" % n
            c.sendall(line)
            got = b""
            while len(got) < len(line):
                d = c.recv(len(line) - len(got))
                if not d:
                    print("connection closed after %d lines" % n, file=sys.stderr)
                    return 1
                got += d
            if got != line:
                print("wrong echo %r for %r" % (got, line), file=sys.stderr)
                return 1
            n += 1
            if n == 1:
                print("connected", flush=True)
            time.sleep(0.05)
    except OSError as e:
        print("connection broke after %d lines: %s" % (n, e), file=sys.stderr)
        return 1
    print("%d lines echoed" % n)
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1")
    else:
        sys.exit(client(int(sys.argv[2]), float(sys.argv[3])))
