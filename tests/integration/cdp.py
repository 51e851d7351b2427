#!/usr/bin/env python3
"""A small driver of headless Chromium over the DevTools protocol, for the dashboard's browser tests.

Usage (run with /usr/bin/python3: Debian's python3-websocket):
    cdp.py WORKDIR SCRIPT.json
SCRIPT is a list of steps, each a list: ["goto", URL], ["fill", CSS, TEXT], ["submit", CSS], ["click", CSS],
["expect", JS-EXPRESSION, WHAT] (retried up to 40 s, reloading between tries when the step has "reload" as a 4th
item), ["screenshot", FILE], ["eval", JS]. Prints one line per step; exits 1 at the first step that fails.
Chromium is started with its own profile under WORKDIR and killed (its whole process group) at the end.
"""
import base64, json, os, signal, subprocess, sys, time
import websocket

work, script = sys.argv[1], json.load(open(sys.argv[2]))
profile = os.path.join(work, "chromium-profile")
os.makedirs(profile, exist_ok=True)
port_file = os.path.join(profile, "DevToolsActivePort")
if os.path.exists(port_file):
    os.remove(port_file)
chromium = subprocess.Popen(
    ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
     "--disable-background-networking", "--disable-sync", "--ignore-certificate-errors", "--window-size=1400,1000",
     "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={profile}", "about:blank"],
    stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "chromium.log"), "w"), start_new_session=True)


def finish(code):
    try:
        os.killpg(chromium.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    chromium.wait()
    sys.exit(code)


deadline = time.time() + 60
while not os.path.exists(port_file) or len(open(port_file).read().split()) < 2:
    if time.time() > deadline or chromium.poll() is not None:
        print("chromium did not start (chromium.log)"); finish(1)
    time.sleep(0.05)
port = open(port_file).read().split()[0]
import urllib.request
for _ in range(200):
    targets = [t for t in json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list")) if t["type"] == "page"]
    if targets:
        break
    time.sleep(0.05)
ws = websocket.create_connection(targets[0]["webSocketDebuggerUrl"], timeout=30)
next_id = [0]
events = []


def call(method, **params):
    next_id[0] += 1
    ws.send(json.dumps({"id": next_id[0], "method": method, "params": params}))
    while True:
        m = json.loads(ws.recv())
        if m.get("id") == next_id[0]:
            if "error" in m:
                raise RuntimeError(f"{method}: {m['error']}")
            return m.get("result", {})
        events.append(m)


def wait_load(timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        while events:
            if events.pop(0).get("method") == "Page.loadEventFired":
                return
        ws.settimeout(max(0.1, end - time.time()))
        try:
            events.append(json.loads(ws.recv()))
        except websocket.WebSocketTimeoutException:
            break
    raise RuntimeError("the page did not load")


def js(expr):
    r = call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
    if "exceptionDetails" in r:
        raise RuntimeError(f"{expr}: {r['exceptionDetails'].get('text')}")
    return r["result"].get("value")


call("Page.enable")
call("Runtime.enable")
try:
    for step in script:
        kind = step[0]
        if kind == "goto":
            events.clear()
            call("Page.navigate", url=step[1]); wait_load()
        elif kind == "fill":
            js(f"document.querySelector({json.dumps(step[1])}).value = {json.dumps(step[2])}")
        elif kind in ("submit", "click"):
            events.clear()
            js(f"document.querySelector({json.dumps(step[1])}).{'submit' if kind == 'submit' else 'click'}()"); wait_load()
        elif kind == "expect":
            end = time.time() + 40
            while True:
                v = js(step[1])
                if v:
                    break
                if time.time() > end:
                    print(f"FAILED: {step[2]} ({step[1]} is {v!r}); page: {js('document.body.innerText')[:1500]!r}")
                    finish(1)
                if len(step) > 3 and step[3] == "reload":
                    events.clear(); call("Page.reload"); wait_load()
                else:
                    time.sleep(0.2)
        elif kind == "screenshot":
            png = call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
            open(step[1], "wb").write(base64.b64decode(png))
        elif kind == "eval":
            js(step[1])
        print(f"ok: {' '.join(str(x) for x in step[:2])[:120]}", flush=True)
except Exception as e:  # a step that cannot run is a failure, with what the page shows
    print(f"FAILED: {step}: {e}")
    finish(1)
finish(0)
