#!/usr/bin/env bash
# Integration tests of `lifeboat proxy` with real backend servers on loopback (python http.server).
# Usage: tests/integration/failover.sh path/to/lifeboat
set -uo pipefail
source "$(dirname "$0")/lib.sh" "${1:?usage: failover.sh path/to/lifeboat}" failover

# backend NAME PORT: an HTTP server answering NAME, in the background; sets PID_<NAME>.
backend() {
  mkdir -p "$WORK/www-$1"; echo "$1" > "$WORK/www-$1/index.html"
  python3 -m http.server "$2" --bind 127.0.0.1 -d "$WORK/www-$1" > "$WORK/$1.log" 2>&1 &
  eval "PID_$1=$!"
  wait_port "$2"
}

# handles_sighup PID: PID ignores or catches SIGHUP (/proc/PID/status), i.e. a reload signal no longer kills it.
handles_sighup() {
  local k v ign=0 cgt=0
  while read -r k v; do case $k in SigIgn:) ign=$v;; SigCgt:) cgt=$v;; esac; done 2>/dev/null < "/proc/$1/status" || return 1
  (( (0x$ign | 0x$cgt) & 1 ))
}

start_proxy() {  # start_proxy CONFIG: waits until every pool, and the admin API if there is one, listens
  "$BIN" proxy --config "$1" > "$WORK/proxy.log" 2>&1 &
  PROXY_PID=$!
  local pools want end=$(( SECONDS + 30 ))
  pools=$("$BIN" proxy --check --config "$1" | sed -n 's/^configuration ok: \([0-9]*\) pools\?,.*/\1/p')
  want=$(( ${pools:-1} + $(grep -c '^admin:' "$1" || true) ))
  while [ $SECONDS -lt $end ] && alive "$PROXY_PID"; do
    # The proxy logs that its pools listen before it sets up SIGHUP: wait for both, a HUP before would kill it.
    [ "$(grep -c -e ' pool .* listening on ' -e ' admin API listening on ' "$WORK/proxy.log" || true)" -ge "$want" ] && handles_sighup "$PROXY_PID" && return 0
    sleep 0.1
  done
  cat "$WORK/proxy.log"; fail "proxy did not start: $want listeners expected within 30 s"
}

get() { curl -s -m 3 "http://127.0.0.1:$1/"; }

t_config_errors() {
  cat > "$WORK/bad.yaml" <<YAML
pools:
  - name: db
    listen: 127.0.0.1:70000
    backends: [{name: a, address: 127.0.0.1:1}]
YAML
  expect_code 1 lb proxy --config "$WORK/bad.yaml"
  grep -q "bad.yaml:3:13" "$WORK/err" || fail "a bad port is reported with line and column"
  sed -i 's/70000/7000/; s/backends:/backendz:/' "$WORK/bad.yaml"
  expect_code 1 lb proxy --config "$WORK/bad.yaml"
  grep -q 'unknown key "backendz"' "$WORK/err" || fail "an unknown key is named"
}

t_failover_no_failed_requests() {
  local P1 P2 PP; P1=$(free_port); P2=$(free_port); PP=$(free_port)
  backend primary "$P1"; backend standby "$P2"
  printf '#!/bin/sh\necho "$@" >> %s/hook.log\n' "$WORK" > "$WORK/hook.sh"; chmod +x "$WORK/hook.sh"
  cat > "$WORK/f.yaml" <<YAML
pools:
  - name: web
    listen: 127.0.0.1:$PP
    mode: failover
    failback: manual
    check: {type: tcp, interval: 100ms, timeout: 500ms, fall: 2, rise: 2}
    backends:
      - {name: primary, address: 127.0.0.1:$P1, priority: 1}
      - {name: standby, address: 127.0.0.1:$P2, priority: 2}
    hooks:
      on_switch: ["$WORK/hook.sh", "{new}", "{old}", "{pool}"]
YAML
  start_proxy "$WORK/f.yaml"
  [ "$(get "$PP")" = primary ] || fail "traffic goes to the primary"
  # A bounded request loop; the primary crashes in the middle. No request may fail.
  local failed=0 served_standby=0
  for i in $(seq 1 60); do
    [ "$i" = 20 ] && kill -9 "$PID_primary"
    r=$(get "$PP") || r=""
    [ -z "$r" ] && failed=$((failed + 1))
    [ "$r" = standby ] && served_standby=$((served_standby + 1))
  done
  [ "$failed" = 0 ] || fail "$failed requests failed during failover"
  [ "$served_standby" -ge 40 ] || fail "the standby took over"
  wait_log "$WORK/hook.log" "standby primary web" || fail "the hook ran with {new} {old} {pool}"
  # Manual failback: the old primary comes back (its checks pass again) but takes no traffic.
  backend primary "$P1"
  wait_log "$WORK/proxy.log" "backend primary is up"
  [ "$(get "$PP")" = standby ] || fail "manual failback keeps the standby"
  # All backends down: a new client is closed at once, not left hanging (curl would wait 10 s).
  kill -9 "$PID_primary" "$PID_standby"
  wait_log "$WORK/proxy.log" "backend standby is down"
  wait_until 30 "the primary to be down again" eval '[ "$(grep -c "backend primary is down" "$WORK/proxy.log" || true)" -ge 2 ]'
  local t0; t0=$(date +%s%N)
  curl -s -m 10 "http://127.0.0.1:$PP/" && fail "no backend, no answer"
  [ $(( ($(date +%s%N) - t0) / 1000000 )) -lt 5000 ] || fail "the client is closed at once"
  # Issue 12: a refused connection reads as one, named by address and port, in the log and in /status.
  grep -q "backend standby is down (.*connection refused by 127.0.0.1:$P2" "$WORK/proxy.log" || { cat "$WORK/proxy.log"; fail "the log says the connection was refused, and by whom"; }
  grep -qi "errno\|error set" "$WORK/proxy.log" && { cat "$WORK/proxy.log"; fail "no library wording in the log"; }
  # A clean stop logs no error.
  kill -TERM "$PROXY_PID"; wait "$PROXY_PID" 2>/dev/null || true
  grep -qi "error\|cancel" "$WORK/proxy.log" && { cat "$WORK/proxy.log"; fail "a clean stop logs no error"; }
  return 0
}

t_round_robin_and_hung_backend() {
  local A B C PP; A=$(free_port); B=$(free_port); C=$(free_port); PP=$(free_port)
  backend a "$A"; backend b "$B"; backend c "$C"
  cat > "$WORK/rr.yaml" <<YAML
pools:
  - name: web
    listen: 127.0.0.1:$PP
    mode: round-robin
    check: {type: http, path: /, expect_status: 200, interval: 100ms, timeout: 300ms, fall: 2, rise: 2}
    backends:
      - {name: a, address: 127.0.0.1:$A}
      - {name: b, address: 127.0.0.1:$B}
      - {name: c, address: 127.0.0.1:$C, weight: 2}
YAML
  start_proxy "$WORK/rr.yaml"
  for i in $(seq 1 40); do get "$PP" || echo -n FAILED; echo; done | sort | uniq -c > "$WORK/rr.counts"
  grep -q "10 a" "$WORK/rr.counts" && grep -q "10 b" "$WORK/rr.counts" && grep -q "20 c" "$WORK/rr.counts" || { cat "$WORK/rr.counts" "$WORK/proxy.log"; fail "weighted round robin"; }
  # A backend that accepts but never answers (SIGSTOP) is found by the HTTP check's timeout.
  kill -STOP "$PID_b"
  wait_log "$WORK/proxy.log" "backend b is down" || fail "the hung backend is detected"
  for i in $(seq 1 12); do get "$PP" || echo -n FAILED; echo; done | sort | uniq -c > "$WORK/rr2.counts"
  ! grep -q " b$" "$WORK/rr2.counts" || fail "no traffic to the hung backend"
  kill -CONT "$PID_b"
  kill "$PROXY_PID"
}

t_admin_api() {
  local P1 P2 PP PA; P1=$(free_port); P2=$(free_port); PP=$(free_port); PA=$(free_port)
  backend primary "$P1"; backend standby "$P2"
  echo "s3cret-token" > "$WORK/token"
  cat > "$WORK/a.yaml" <<YAML
admin: {listen: 127.0.0.1:$PA, token_file: $WORK/token}
pools:
  - name: web
    listen: 127.0.0.1:$PP
    check: {type: tcp, interval: 100ms, timeout: 500ms, fall: 2, rise: 2}
    backends:
      - {name: primary, address: 127.0.0.1:$P1, priority: 1}
      - {name: standby, address: 127.0.0.1:$P2, priority: 2}
YAML
  start_proxy "$WORK/a.yaml"
  local A="http://127.0.0.1:$PA" H="Authorization: Bearer s3cret-token"
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$A/status")" = 401 ] || fail "the admin API needs the token"
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer wrong" "$A/status")" = 401 ] || fail "a wrong token is refused"
  curl -s -H "$H" "$A/status" | python3 -c "import json,sys; p=json.load(sys.stdin)['pools'][0]; assert p['active']=='primary', p; assert p['backends'][0]['state']=='up'"
  curl -s -X POST -H "$H" "$A/pools/web/backends/primary/disable" >/dev/null
  [ "$(get "$PP")" = standby ] || fail "disable moves traffic away"
  curl -s -X POST -H "$H" "$A/pools/web/backends/primary/enable" >/dev/null
  [ "$(get "$PP")" = standby ] || fail "manual failback: enabling does not move traffic back"
  [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "$H" "$A/pools/web/promote/primary")" = 200 ] || fail "promote"
  [ "$(get "$PP")" = primary ] || fail "promote moves traffic"
  [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "$H" "$A/pools/web/promote/nobody")" = 409 ] || fail "promoting an unknown backend is refused"
  # Fault injection for drills, bounded in time.
  [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "$H" "$A/pools/web/backends/primary/fault?kind=reset")" = 400 ] || fail "a fault needs a duration"
  curl -s -X POST -H "$H" "$A/pools/web/backends/primary/fault?kind=latency&ms=400&seconds=30" >/dev/null
  local t0 ms; t0=$(date +%s%N); [ "$(get "$PP")" = primary ]; ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  [ "$ms" -ge 400 ] || fail "latency is added ($ms ms)"
  curl -s -X POST -H "$H" "$A/pools/web/backends/primary/fault?kind=reset&seconds=30" >/dev/null
  local rc=0; curl -s -m 2 "http://127.0.0.1:$PP/" >/dev/null || rc=$?
  [ "$rc" = 56 ] || [ "$rc" = 52 ] || [ "$rc" = 7 ] || fail "reset: the connection is reset (curl $rc)"
  curl -s -X POST -H "$H" "$A/pools/web/backends/primary/fault?kind=blackhole&seconds=30" >/dev/null
  rc=0; curl -s -m 1 "http://127.0.0.1:$PP/" >/dev/null || rc=$?
  [ "$rc" = 28 ] || fail "blackhole: the client gets nothing (curl $rc)"
  head -c 300000 /dev/urandom > "$WORK/www-primary/big"
  curl -s -X POST -H "$H" "$A/pools/web/backends/primary/fault?kind=bandwidth&bytes_per_second=200000&seconds=30" >/dev/null
  t0=$(date +%s%N); curl -s -m 10 -o "$WORK/big.out" "http://127.0.0.1:$PP/big"; ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  cmp -s "$WORK/big.out" "$WORK/www-primary/big" || fail "bandwidth: the data arrives intact"
  [ "$ms" -ge 1200 ] || fail "bandwidth is limited (300 kB in $ms ms at 200 kB/s)"
  curl -s -X POST -H "$H" "$A/pools/web/backends/primary/fault?kind=latency&ms=50&seconds=1" >/dev/null
  fault_ended() { curl -s -H "$H" "$A/status" | python3 -c "import json,sys; sys.exit('fault' in json.load(sys.stdin)['pools'][0]['backends'][0])"; }
  wait_until 30 "the 1 s fault to end" fault_ended
  t0=$(date +%s%N); [ "$(get "$PP")" = primary ]; ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  [ "$ms" -lt 400 ] || fail "a fault ends by itself"
  curl -s -H "$H" "$A/metrics" > "$WORK/metrics.txt"
  grep -q 'lifeboat_proxy_switches_total{pool="web"} 2' "$WORK/metrics.txt" || { cat "$WORK/metrics.txt"; fail "switches are counted"; }
  grep -q 'lifeboat_proxy_backend_active{pool="web",backend="primary"} 1' "$WORK/metrics.txt" || fail "the active backend is exported"
  kill "$PROXY_PID"
  # Without a token the admin API must listen on loopback.
  sed -i "s|admin: {listen: 127.0.0.1:$PA, token_file: $WORK/token}|admin: {listen: 0.0.0.0:$PA}|" "$WORK/a.yaml"
  expect_code 1 lb proxy --config "$WORK/a.yaml"
  grep -q "loopback" "$WORK/err" || fail "a non-loopback admin address without token is refused"
}

t_exec_check_and_hook_timeout() {
  local P1 P2 PP; P1=$(free_port); P2=$(free_port); PP=$(free_port)
  backend primary "$P1"; backend standby "$P2"
  touch "$WORK/ok-$P1" "$WORK/ok-$P2"
  printf '#!/bin/sh\nsleep 5\n' > "$WORK/slow-hook.sh"; chmod +x "$WORK/slow-hook.sh"
  cat > "$WORK/e.yaml" <<YAML
pools:
  - name: db
    listen: 127.0.0.1:$PP
    check: {type: exec, command: ["/bin/sh", "-c", "test -e $WORK/ok-{port}"], interval: 100ms, timeout: 1s, fall: 2, rise: 2}
    backends:
      - {name: primary, address: 127.0.0.1:$P1, priority: 1}
      - {name: standby, address: 127.0.0.1:$P2, priority: 2}
    hooks: {on_switch: ["$WORK/slow-hook.sh"], timeout: 300ms}
YAML
  start_proxy "$WORK/e.yaml"
  [ "$(get "$PP")" = primary ] || fail "traffic goes to the primary"
  rm "$WORK/ok-$P1"   # the role check says the primary is no longer primary; it still accepts connections
  wait_log "$WORK/proxy.log" "backend primary is down (exec: exit 1)"
  [ "$(get "$PP")" = standby ] || { cat "$WORK/proxy.log"; fail "the exec check moved traffic"; }
  wait_log "$WORK/proxy.log" "killed after 0.3 s"
  grep -q "slow-hook.sh killed after 0.3 s" "$WORK/proxy.log" || { cat "$WORK/proxy.log"; fail "a hook is killed at its timeout"; }
  kill "$PROXY_PID"
}

# echo_server NAME PORT [HOST]: a TCP echo server in the background; sets PID_<NAME>.
echo_server() {
  python3 "$(dirname "$0")/echo.py" server "$2" "${3:-127.0.0.1}" > "$WORK/$1.log" 2>&1 &
  eval "PID_$1=$!"
  wait_port "$2" "${3:-127.0.0.1}"
}

t_reload_keeps_connections() {
  local P1 P2 E PP PE PN PA; P1=$(free_port); P2=$(free_port); E=$(free_port); PP=$(free_port); PE=$(free_port); PN=$(free_port); PA=$(free_port)
  backend primary "$P1"; backend standby "$P2"; echo_server echo "$E"
  # web_pool EXTRA_BACKEND: the common head of both configurations.
  web_pool() { printf 'admin: {listen: 127.0.0.1:%s}\npools:\n  - name: web\n    listen: 127.0.0.1:%s\n' "$PA" "$PP"
    printf '    check: {type: tcp, interval: 100ms, timeout: 500ms, fall: 2, rise: 2}\n    backends:\n'
    printf '      - {name: primary, address: 127.0.0.1:%s, priority: 1}\n%s' "$P1" "$1"; }
  { web_pool ""; cat <<YAML
  - name: echo
    listen: 127.0.0.1:$PE
    backends: [{name: e, address: 127.0.0.1:$E}]
YAML
  } > "$WORK/r.yaml"
  start_proxy "$WORK/r.yaml"
  curl -sf -X POST "http://127.0.0.1:$PA/pools/web/backends/primary/drain" > /dev/null
  # A long-lived connection through the echo pool, which the reload below removes.
  python3 "$(dirname "$0")/echo.py" client "$PE" 3 > "$WORK/client1.out" 2>&1 & local C1=$!
  wait_log "$WORK/client1.out" "connected"
  # 1. A broken file: the running configuration stays.
  echo "pools: [{name: web, listen: 127.0.0.1:$PP, backendz: []}]" > "$WORK/r.yaml"; kill -HUP "$PROXY_PID"
  wait_log "$WORK/proxy.log" "reload failed"
  grep -q 'reload failed, the running configuration stays: .*r.yaml:1:' "$WORK/proxy.log" || { cat "$WORK/proxy.log"; fail "a bad reload is reported with its line"; }
  # 2. A good one: the web pool gains a standby, the echo pool is removed, a new pool appears.
  { web_pool "      - {name: standby, address: 127.0.0.1:$P2, priority: 2}
"; cat <<YAML
  - name: new
    listen: 127.0.0.1:$PN
    backends: [{name: s, address: 127.0.0.1:$P2}]
YAML
  } > "$WORK/r.yaml"
  kill -HUP "$PROXY_PID"
  wait_log "$WORK/proxy.log" "reloaded"
  grep -q "reloaded .*1 pools added (new), 1 removed (echo), 1 kept" "$WORK/proxy.log" || { cat "$WORK/proxy.log"; fail "the reload is logged"; }
  [ "$(get "$PN")" = standby ] || fail "the new pool serves"
  [ "$(get "$PP")" = standby ] || fail "the drained primary stays drained across the reload; the new standby serves"
  curl -s "http://127.0.0.1:$PA/status" | python3 -c "
import json,sys; p={x['name']:x for x in json.load(sys.stdin)['pools']}
assert set(p)=={'web','new'}, p.keys(); b={x['name']:x for x in p['web']['backends']}
assert b['primary']['draining'] and len(b)==2, b" || fail "status shows the new configuration and keeps operator flags"
  curl -s -m 1 "http://127.0.0.1:$PE/" > /dev/null && fail "the removed pool no longer listens"
  wait "$C1" || { cat "$WORK/client1.out"; fail "an established connection survived the reload"; }
  grep -q "lines echoed" "$WORK/client1.out" || fail "the client finished"
  kill "$PROXY_PID"
}

t_sigterm_drains() {
  local E PE PA; E=$(free_port); PE=$(free_port)
  echo_server echo "$E"
  cat > "$WORK/d.yaml" <<YAML
drain_timeout: 10s
pools:
  - name: echo
    listen: 127.0.0.1:$PE
    backends: [{name: e, address: 127.0.0.1:$E}]
YAML
  start_proxy "$WORK/d.yaml"
  python3 "$(dirname "$0")/echo.py" client "$PE" 2 > "$WORK/client.out" 2>&1 & local C=$!
  wait_log "$WORK/client.out" "connected"
  local t0; t0=$(date +%s%N)
  kill -TERM "$PROXY_PID"
  wait_log "$WORK/proxy.log" "draining"
  wait_until 30 "the draining proxy to close its listener" eval '[ "$(tcp_sockets 0A "$PE")" = 0 ]'
  python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $PE), timeout=1)" 2>/dev/null && fail "a draining proxy accepts no new connection"
  wait "$C" || { cat "$WORK/client.out"; fail "the open connection finished during the drain"; }
  local rc=0; wait "$PROXY_PID" || rc=$?
  [ "$rc" = 0 ] || { cat "$WORK/proxy.log"; fail "a drained proxy exits 0 (got $rc)"; }
  grep -q "draining 1 connections" "$WORK/proxy.log" && grep -q "every connection finished" "$WORK/proxy.log" || { cat "$WORK/proxy.log"; fail "the drain is logged"; }
  # A connection that outlives drain_timeout is closed at its end.
  sed -i 's/drain_timeout: 10s/drain_timeout: 700ms/' "$WORK/d.yaml"
  start_proxy "$WORK/d.yaml"
  # A file of its own: the first client's "connected" must not be read before this one's redirect truncates it.
  python3 "$(dirname "$0")/echo.py" client "$PE" 5 > "$WORK/client2.out" 2>&1 & C=$!
  wait_log "$WORK/client2.out" "connected"
  t0=$(date +%s%N); kill -TERM "$PROXY_PID"; wait "$PROXY_PID"; rc=$?
  local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  [ "$rc" = 0 ] && [ "$ms" -lt 3000 ] || fail "the drain ends at drain_timeout (rc $rc, $ms ms)"
  grep -q "closed 1 connections still open" "$WORK/proxy.log" || { cat "$WORK/proxy.log"; fail "forced closes are logged"; }
  wait "$C" && fail "the long connection was closed at the end of the drain"
  true
}

t_ipv6_and_metrics() {
  local P1 PP PA; P1=$(free_port); PP=$(free_port); PA=$(free_port)
  mkdir -p "$WORK/www-v6"; echo v6 > "$WORK/www-v6/index.html"; head -c 100000 /dev/urandom > "$WORK/www-v6/blob"
  python3 -m http.server "$P1" --bind ::1 -d "$WORK/www-v6" > "$WORK/v6.log" 2>&1 &
  wait_port "$P1" ::1
  cat > "$WORK/v6.yaml" <<YAML
admin: {listen: "[::1]:$PA"}
pools:
  - name: v6
    listen: "[::1]:$PP"
    check: {type: http, path: /, interval: 100ms, timeout: 500ms}
    backends: [{name: a, address: "[::1]:$P1"}]
YAML
  start_proxy "$WORK/v6.yaml"
  [ "$(curl -s -g -m 3 "http://[::1]:$PP/")" = v6 ] || { cat "$WORK/proxy.log"; fail "an IPv6 listener forwards to an IPv6 backend"; }
  curl -s -g -m 3 -o "$WORK/blob.out" "http://[::1]:$PP/blob"; cmp -s "$WORK/blob.out" "$WORK/www-v6/blob" || fail "the data is intact"
  # Counters are updated when a connection closes and as checks run: poll until the metrics agree.
  v6_metrics() { curl -s -g "http://[::1]:$PA/metrics" > "$WORK/m.txt"; python3 - "$WORK/m.txt" 2>"$WORK/m.err" <<'PY'
import re, sys
m = {}
for line in open(sys.argv[1]):
    if not line.startswith("#"):
        k, v = line.rsplit(" ", 1); m[k] = float(v)
l = 'pool="v6",backend="a"'
assert m['lifeboat_proxy_backend_bytes_total{%s,direction="from_backend"}' % l] > 100000, "bytes from the backend"
assert m['lifeboat_proxy_backend_bytes_total{%s,direction="to_backend"}' % l] > 100, "bytes to the backend"
n = m['lifeboat_proxy_check_duration_seconds_count{%s}' % l]
assert n >= 3 and m['lifeboat_proxy_check_duration_seconds_bucket{%s,le="+Inf"}' % l] == n, "a histogram of checks"
assert m['lifeboat_proxy_check_duration_seconds_bucket{%s,le="0.5"}' % l] == n, "every check under the timeout"
assert m['lifeboat_proxy_connections_total{pool="v6"}'] == 2
PY
  }
  wait_until 30 "the metrics to count checks, bytes and connections" v6_metrics || { cat "$WORK/m.txt" "$WORK/m.err"; fail "bytes and check latency are exported"; }
  kill "$PROXY_PID"
}

t_https_check() {
  local P1 PP; P1=$(free_port); PP=$(free_port)
  make_cert
  mkdir -p "$WORK/www-tls"; echo tls > "$WORK/www-tls/index.html"
  ( cd "$WORK/www-tls" && exec python3 -c "
import http.server, ssl
s = http.server.ThreadingHTTPServer(('127.0.0.1', $P1), http.server.SimpleHTTPRequestHandler)
c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain('$WORK/cert.pem', '$WORK/key.pem')
s.socket = c.wrap_socket(s.socket, server_side=True); s.serve_forever()" ) > "$WORK/tls.log" 2>&1 &
  wait_port "$P1"
  tls_config() { cat <<YAML
pools:
  - name: tls
    listen: 127.0.0.1:$PP
    check: {type: https, path: /, expect_body: tls, interval: 100ms, timeout: 1s, fall: 2, rise: 2$1}
    backends: [{name: a, address: "localhost:$P1"}]
YAML
  }
  # A self-signed certificate that nobody trusts: the check fails.
  tls_config "" > "$WORK/tls.yaml"
  start_proxy "$WORK/tls.yaml"
  wait_log "$WORK/proxy.log" "backend a is down"
  grep -q "backend a is down (https: the certificate is not trusted" "$WORK/proxy.log" || { cat "$WORK/proxy.log"; fail "an untrusted certificate fails the check"; }
  # Trusting it (reload): the backend comes up.
  tls_config ", ca_file: $WORK/cert.pem" > "$WORK/tls.yaml"; kill -HUP "$PROXY_PID"
  wait_log "$WORK/proxy.log" "backend a is up"
  grep -q "backend a is up (http 200)" "$WORK/proxy.log" || { cat "$WORK/proxy.log"; fail "ca_file trusts the certificate"; }
  kill "$PROXY_PID"
  tls_config ", tls_verify: false" > "$WORK/tls.yaml"
  lb proxy --check --config "$WORK/tls.yaml" > /dev/null || fail "tls_verify: false is accepted"
  tls_config ", ca_file: $WORK/missing.pem" > "$WORK/tls.yaml"
  expect_code 1 lb proxy --config "$WORK/tls.yaml"
  grep -q "tls.yaml:4:.*cannot read the CA file" "$WORK/err" || fail "a missing CA file is named with its line"
}

# Issue 11: durations that passed validation and trapped later (at SIGTERM, or on a SIGHUP reload).
t_config_duration_ranges() {
  local E PE; E=$(free_port); PE=$(free_port)
  for bad in 1e300 inf nan 1e11 -1 0; do
    for key in drain_timeout interval timeout hook; do
      case $key in
        drain_timeout) printf 'drain_timeout: "%s"\npools:\n  - name: e\n    listen: 127.0.0.1:%s\n    backends: [{address: 127.0.0.1:%s}]\n' "$bad" "$PE" "$E" ;;
        interval|timeout) printf 'pools:\n  - name: e\n    listen: 127.0.0.1:%s\n    check: {%s: "%s"}\n    backends: [{address: 127.0.0.1:%s}]\n' "$PE" "$key" "$bad" "$E" ;;
        hook) printf 'pools:\n  - name: e\n    listen: 127.0.0.1:%s\n    backends: [{address: 127.0.0.1:%s}]\n    hooks: {on_switch: [/bin/true], timeout: "%s"}\n' "$PE" "$E" "$bad" ;;
      esac > "$WORK/dur.yaml"
      expect_code 1 lb proxy --check --config "$WORK/dur.yaml" || { cat "$WORK/dur.yaml"; fail "$key: $bad is refused"; }
      grep -q "dur.yaml:[0-9]*:[0-9]*: " "$WORK/err" || { cat "$WORK/err"; fail "$key: $bad is reported with line and column"; }
    done
  done
  # A running proxy keeps its configuration when a reload brings one, and still drains and exits 0 on SIGTERM.
  echo_server echo "$E"
  printf 'drain_timeout: 2s\npools:\n  - name: e\n    listen: 127.0.0.1:%s\n    backends: [{address: 127.0.0.1:%s}]\n' "$PE" "$E" > "$WORK/dur.yaml"
  start_proxy "$WORK/dur.yaml"
  sed -i 's/drain_timeout: 2s/drain_timeout: 1e300/' "$WORK/dur.yaml"
  kill -HUP "$PROXY_PID"
  for _ in $(seq 1 50); do grep -q "reload failed" "$WORK/proxy.log" && break; sleep 0.1; done
  grep -q 'reload failed, the running configuration stays: .*dur.yaml:1:16: `drain_timeout`: 1e300 is out of range' "$WORK/proxy.log" || { cat "$WORK/proxy.log"; fail "the reload names the duration"; }
  kill -TERM "$PROXY_PID"
  local rc=0; wait "$PROXY_PID" || rc=$?
  [ "$rc" = 0 ] || { cat "$WORK/proxy.log"; fail "the proxy drains and exits 0 after a refused reload (got $rc)"; }
}

# Issue 11: "loopback only" is decided on the address the admin listener binds, not on how its name begins.
t_admin_loopback_is_an_address() {
  local E PE PA; E=$(free_port); PE=$(free_port); PA=$(free_port)
  for host in 127.lifeboat.invalid 127.0.0.1.lifeboat.invalid; do
    printf 'admin: {listen: "%s:%s"}\npools:\n  - name: e\n    listen: 127.0.0.1:%s\n    backends: [{address: 127.0.0.1:%s}]\n' "$host" "$PA" "$PE" "$E" > "$WORK/adm.yaml"
    expect_code 1 lb proxy --config "$WORK/adm.yaml" || fail "admin on $host without a token is refused"
    grep -q "is not a loopback address" "$WORK/err" || { cat "$WORK/err" "$WORK/out"; fail "the refusal says why ($host)"; }
  done
  # localhost resolves to a loopback address: accepted, and the API answers there.
  printf 'admin: {listen: "localhost:%s"}\npools:\n  - name: e\n    listen: 127.0.0.1:%s\n    backends: [{address: 127.0.0.1:%s}]\n' "$PA" "$PE" "$E" > "$WORK/adm.yaml"
  start_proxy "$WORK/adm.yaml"
  for _ in $(seq 1 50); do grep -q "admin API listening" "$WORK/proxy.log" && break; sleep 0.1; done
  grep -q "admin API listening" "$WORK/proxy.log" || { cat "$WORK/proxy.log"; fail "the admin API listens on localhost"; }
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PA/status")" = 200 ] || fail "the admin API answers"
  kill "$PROXY_PID"
}

# Issue 11: under a bandwidth fault the proxy applies back-pressure instead of buffering what the client sends.
t_shaped_memory_bounded() {
  local B PP PA; B=$(free_port); PP=$(free_port); PA=$(free_port)
  # A backend that reads and discards everything.
  python3 -c "
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', $B)); s.listen(8)
def sink(c):
    while c.recv(1 << 20): pass
while True:
    c, _ = s.accept(); threading.Thread(target=sink, args=(c,), daemon=True).start()" > "$WORK/sink.log" 2>&1 &
  wait_port "$B"
  printf 'admin: {listen: 127.0.0.1:%s}\npools:\n  - name: s\n    listen: 127.0.0.1:%s\n    backends: [{name: sink, address: 127.0.0.1:%s}]\n' "$PA" "$PP" "$B" > "$WORK/shape.yaml"
  start_proxy "$WORK/shape.yaml"
  for _ in $(seq 1 50); do grep -q "admin API listening" "$WORK/proxy.log" && break; sleep 0.1; done
  curl -sf -X POST "http://127.0.0.1:$PA/pools/s/backends/sink/fault?kind=bandwidth&bytes_per_second=1000000&seconds=120" > /dev/null || fail "bandwidth fault set"
  local before; before=$(awk '/VmRSS/ {print $2}' "/proc/$PROXY_PID/status")
  # Push up to 300 MiB as fast as possible; stop once the proxy has not taken a byte for 1 s (back-pressure).
  python3 - "$PP" > "$WORK/push.out" <<'PY' || { cat "$WORK/push.out"; fail "the client pushes"; }
import select, socket, sys, time
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
c.setblocking(False)
chunk, sent, total = b"x" * (1 << 20), 0, 300 << 20
stalled_since = None
deadline = time.time() + 60
while sent < total and time.time() < deadline:
    _, w, _ = select.select([], [c], [], 0.1)
    if w:
        try:
            n = c.send(chunk)
        except BlockingIOError:
            n = 0
        sent += n
        if n:
            stalled_since = None
            continue
    stalled_since = stalled_since or time.time()
    if time.time() - stalled_since >= 1.0:
        break
print(sent >> 20, "MiB pushed,", "back-pressure" if sent < total else "no back-pressure")
PY
  local after; after=$(awk '/VmRSS/ {print $2}' "/proc/$PROXY_PID/status")
  echo "    $(cat "$WORK/push.out"); proxy RSS $((before / 1024)) MiB -> $((after / 1024)) MiB"
  grep -q "back-pressure" "$WORK/push.out" && ! grep -q "no back-pressure" "$WORK/push.out" || fail "the client is held back"
  [ $(( (after - before) / 1024 )) -lt 64 ] || fail "the proxy's memory stays bounded (grew $(( (after - before) / 1024 )) MiB)"
  kill "$PROXY_PID"
}

# Issue 11: with a refused standby configured, a client that sends its request and half-closes before the backend
# accepted used to lose both (NIO reads up to the end of input at once): no answer, and the proxy's socket stayed in
# CLOSE-WAIT until a drain. Many short half-closing connections: every one is answered and none is left open.
t_no_close_wait_after_short_connections() {
  local P1 P2 PP; P1=$(free_port); P2=$(free_port); PP=$(free_port)
  backend primary "$P1"
  for mode in failover round-robin; do
    cat > "$WORK/cw.yaml" <<YAML
pools:
  - name: web
    listen: 127.0.0.1:$PP
    mode: $mode
    check: {type: tcp, interval: 100ms, timeout: 500ms, fall: 2, rise: 2}
    backends:
      - {name: primary, address: 127.0.0.1:$P1, priority: 1}
      - {name: standby, address: 127.0.0.1:$P2, priority: 2}
YAML
    start_proxy "$WORK/cw.yaml"
    python3 - "$PP" > "$WORK/cw.out" <<'PY'
import socket, sys
port, unanswered = int(sys.argv[1]), 0
for i in range(200):
    c = socket.create_connection(("127.0.0.1", port), timeout=3)
    c.settimeout(2)
    c.sendall(b"GET / HTTP/1.0\r\n\r\n")
    c.shutdown(socket.SHUT_WR)
    answer = b""
    try:
        while True:
            d = c.recv(65536)
            if not d:
                break
            answer += d
    except socket.timeout:
        pass
    c.close()
    if not answer.startswith(b"HTTP/1.0 200"):
        unanswered += 1
        if unanswered >= 3:
            break
print("%d connections, %d unanswered" % (i + 1, unanswered))
PY
    local left; left=$(ss -Htan state close-wait "( sport = :$PP )" | wc -l)
    echo "    $mode: $(cat "$WORK/cw.out"), $left in CLOSE-WAIT"
    [ "$left" = 0 ] || { ss -tan state close-wait "( sport = :$PP )"; fail "$mode: no connection left in CLOSE-WAIT ($left)"; }
    grep -q " 0 unanswered" "$WORK/cw.out" || fail "$mode: every short connection is answered"
    kill "$PROXY_PID"; wait "$PROXY_PID" 2>/dev/null || true
  done
}

# Issue 11 part 6 (the epoll relay): 20 clients at once send 2 MiB each through the proxy to an echo backend and
# get exactly their bytes back (partial writes, back-pressure, half-close); then, with the proxy limited to 64 file
# descriptors, 150 idle connections exhaust them: the proxy must not spin on accept (CPU) and must serve again
# once they are gone.
t_relay_integrity_and_descriptor_exhaustion() {
  local B PP PA; B=$(free_port); PP=$(free_port); PA=$(free_port)
  python3 -c "
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', $B)); s.listen(256)
def echo(c):
    while True:
        d = c.recv(65536)
        if not d: break
        c.sendall(d)
    c.shutdown(socket.SHUT_WR); c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=echo, args=(c,), daemon=True).start()" > "$WORK/echo.log" 2>&1 &
  wait_port "$B"
  printf 'admin: {listen: 127.0.0.1:%s}\npools:\n  - name: e\n    listen: 127.0.0.1:%s\n    check: {type: tcp, interval: 100ms}\n    backends: [{name: echo, address: 127.0.0.1:%s}]\n' "$PA" "$PP" "$B" > "$WORK/echo.yaml"
  ( ulimit -n 64; exec "$BIN" proxy --config "$WORK/echo.yaml" > "$WORK/proxy.log" 2>&1 ) &
  PROXY_PID=$!
  wait_log "$WORK/proxy.log" "admin API listening on" || fail "proxy listens"
  python3 - "$PP" > "$WORK/integrity.out" <<'PY' || { cat "$WORK/integrity.out"; fail "20 clients get their bytes back"; }
import hashlib, os, socket, sys, threading
port, bad = int(sys.argv[1]), []
def client(i):
    data = os.urandom(2 << 20)
    c = socket.create_connection(("127.0.0.1", port), timeout=30)
    def send():
        c.sendall(data); c.shutdown(socket.SHUT_WR)
    t = threading.Thread(target=send); t.start()
    got = bytearray()
    while True:
        d = c.recv(1 << 16)
        if not d: break
        got += d
    t.join(); c.close()
    if hashlib.sha256(got).digest() != hashlib.sha256(data).digest():
        bad.append((i, len(got)))
ts = [threading.Thread(target=client, args=(i,)) for i in range(20)]
[t.start() for t in ts]; [t.join() for t in ts]
print("20 clients x 2 MiB, %d wrong: %s" % (len(bad), bad))
sys.exit(1 if bad else 0)
PY
  echo "    $(cat "$WORK/integrity.out")"
  # Exhaust the descriptors with idle connections (each takes a client and a backend socket).
  python3 - "$PP" "$PROXY_PID" "$PA" > "$WORK/emfile.out" <<'PY' || { cat "$WORK/emfile.out"; tail -5 "$WORK/proxy.log"; fail "no accept spin when out of descriptors"; }
import json, socket, sys, time, urllib.request
port, pid, admin = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def cpu():
    f = open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / 100.0
held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(150)]
before = cpu(); time.sleep(2.0); used = cpu() - before
# The admin API and the health checks still have descriptors (the relay keeps a reserve).
status = json.loads(urllib.request.urlopen("http://127.0.0.1:%s/status" % admin, timeout=5).read())
pool = status["pools"][0]
for c in held: c.close()
print("150 idle connections against 64 descriptors: proxy CPU %.2f s in 2 s; /status answers, %d refused, backend %s"
      % (used, pool["connections_refused_total"], pool["backends"][0]["state"]))
sys.exit(1 if used > 0.5 or pool["connections_refused_total"] == 0 or pool["backends"][0]["state"] != "up" else 0)
PY
  echo "    $(cat "$WORK/emfile.out")"
  # Serves again once the descriptors are back (the paused accept resumes within 100 ms).
  wait_until 10 "an answer after the exhaustion" python3 -c "
import socket, sys
c = socket.create_connection(('127.0.0.1', $PP), timeout=2); c.sendall(b'ping'); c.shutdown(socket.SHUT_WR)
sys.exit(0 if c.recv(16) == b'ping' else 1)" 2>/dev/null || fail "the proxy serves again after descriptor exhaustion"
  alive "$PROXY_PID" || fail "the proxy survives descriptor exhaustion"
  grep -q "echo is down" "$WORK/proxy.log" && fail "running out of descriptors is not the backend's fault"
  grep -q "new connections refused: the relay holds" "$WORK/proxy.log" || fail "the refusals are logged"
  kill "$PROXY_PID"
}

# Issue 12: --pid-file for the proxy and serve, so a reload or stop signals that process, not every lifeboat.
t_pid_file() {
  local P1 PP S; P1=$(free_port); PP=$(free_port); S=$(free_port)
  backend primary "$P1"
  printf 'pools:\n  - name: web\n    listen: 127.0.0.1:%s\n    backends: [{name: primary, address: 127.0.0.1:%s}]\n' "$PP" "$P1" > "$WORK/pid.yaml"
  "$BIN" proxy --config "$WORK/pid.yaml" --pid-file "$WORK/proxy.pid" > "$WORK/proxy.log" 2>&1 &
  PROXY_PID=$!
  wait_log "$WORK/proxy.log" "listening on" || fail "proxy listens"
  wait_until 10 "SIGHUP handled" handles_sighup "$PROXY_PID"
  [ "$(cat "$WORK/proxy.pid")" = "$PROXY_PID" ] || fail "the pid file names the proxy"
  # A second proxy with the same file is refused and leaves the file alone.
  expect_code 1 "$BIN" proxy --config "$WORK/pid.yaml" --pid-file "$WORK/proxy.pid"
  grep -q "names process $PROXY_PID, which is still running" "$WORK/err" || { cat "$WORK/err"; fail "the refusal names the running process"; }
  [ "$(cat "$WORK/proxy.pid")" = "$PROXY_PID" ] || fail "the file still names the first proxy"
  kill -HUP "$(cat "$WORK/proxy.pid")"
  wait_log "$WORK/proxy.log" "reloaded" || fail "HUP through the pid file reloads"
  kill -TERM "$(cat "$WORK/proxy.pid")"
  local rc=0; wait "$PROXY_PID" || rc=$?
  [ $rc = 0 ] || fail "the proxy stops with 0 (got $rc)"
  [ ! -e "$WORK/proxy.pid" ] || fail "the pid file is removed at the stop"
  # A file left by a process that is gone is taken over; serve removes its own at the stop too.
  echo 999999 > "$WORK/serve.pid"
  mkdir -p "$WORK/served"
  "$BIN" serve --path "$WORK/served" --listen "127.0.0.1:$S" --no-auth --pid-file "$WORK/serve.pid" > "$WORK/serve.log" 2>&1 &
  local spid=$!
  wait_log "$WORK/serve.log" "serving" || fail "serve starts"
  [ "$(cat "$WORK/serve.pid")" = "$spid" ] || fail "serve takes over a stale pid file"
  kill -TERM "$(cat "$WORK/serve.pid")"
  rc=0; wait "$spid" || rc=$?
  [ $rc = 0 ] || fail "serve stops with 0 (got $rc)"
  [ ! -e "$WORK/serve.pid" ] || fail "serve removes its pid file"
}

for t in ${FAILOVER_TESTS:-t_config_errors t_failover_no_failed_requests t_round_robin_and_hung_backend t_admin_api t_exec_check_and_hook_timeout t_reload_keeps_connections t_sigterm_drains t_ipv6_and_metrics t_https_check t_config_duration_ranges t_admin_loopback_is_an_address t_shaped_memory_bounded t_no_close_wait_after_short_connections t_relay_integrity_and_descriptor_exhaustion t_pid_file}; do
  run_test "$t"
done
echo "failover: $PASSED passed, $FAILED failed${FAILURES:+ (${FAILURES[*]})}"
[ "$FAILED" -eq 0 ]
