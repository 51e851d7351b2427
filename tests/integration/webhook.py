"""A webhook receiver for the agent's suite: appends each POST as one JSON line (path, body) to a file.
Usage: webhook.py PORT FILE [FAIL_FIRST]: answers 500 to the first FAIL_FIRST requests to /alert (to test retries)."""
import http.server, json, sys, threading

port, path = int(sys.argv[1]), sys.argv[2]
fail_first = int(sys.argv[3]) if len(sys.argv) > 3 else 0
lock = threading.Lock()
seen = 0

class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        global seen
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(n, 1 << 20)).decode("utf-8", "replace")
        with lock:
            if self.path.startswith("/alert"):
                seen += 1
            failing = self.path.startswith("/alert") and seen <= fail_first
            with open(path, "a") as f:
                f.write(json.dumps({"path": self.path, "body": body, "answered": 500 if failing else 200}) + "\n")
        self.send_response(500 if failing else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
