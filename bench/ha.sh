#!/usr/bin/env bash
# Failover, side by side: `lifeboat ha` and Patroni (Debian's 3.0) on the same etcd, network namespaces, proxy
# (`lifeboat proxy` checking each node's /primary), writer and checker as tests/integration/ha.sh, with the same
# TTL and loop (HA_TTL, default 10 s: Lifeboat steps every TTL/3, Patroni's loop_wait is TTL/3 rounded down and its
# retry_timeout the rest halved, as Patroni requires loop_wait + 2 × retry_timeout ≤ ttl).
# For each scenario and round: the time from the primary's death (the kill, the freeze, the cut) to the first write
# acknowledged by the new primary through the proxy, the writes that failed meanwhile, acknowledged writes lost
# (asynchronous replication), and split brain (acknowledged commits on a deposed primary: must be 0).
# usage: bench/ha.sh BIN   (HA_SYNC=false, HA_ROUNDS=5, HA_TOOLS="lifeboat patroni", HA_SCENARIOS="kill freeze cut-etcd cut-all")
set -u
source "$(dirname "$0")/../tests/integration/lib.sh" "$1" habench
SUITE=bench-ha
HA_TTL=${HA_TTL:-10}
source "$HERE/ha_net.sh"
command -v patroni > /dev/null || { echo "bench-ha: Patroni is not installed (apt-get install patroni)"; exit 1; }
ROUNDS=${HA_ROUNDS:-5}
SYNC=${HA_SYNC:-false}   # true: synchronous replication for both (Lifeboat's synchronous, Patroni's synchronous_mode)
case "$SYNC" in true|false) ;; *) echo "bench-ha: HA_SYNC must be true or false"; exit 2 ;; esac
RESULTS="$WORK/results.jsonl"

for i in $NODES; do
  mkdir -p "$WORK/n$i"; chown postgres "$WORK/n$i"; chmod 755 "$WORK/n$i"
  lifeboat_config "$i" "$SYNC" > "$WORK/lifeboat$i.yaml"
  cat > "$WORK/patroni$i.yaml" <<EOF
scope: shop
name: pg$i
restapi: {listen: "$NET.1$i:8008", connect_address: "$NET.1$i:8008"}
etcd3: {hosts: ["$NET.21:2379", "$NET.22:2379", "$NET.23:2379"]}
bootstrap:
  dcs:
    ttl: $TTL
    loop_wait: $(( TTL / 3 ))
    retry_timeout: $(( (TTL - TTL / 3) / 2 ))
    maximum_lag_on_failover: 1048576
    synchronous_mode: $SYNC
    postgresql:
      use_pg_rewind: true
      parameters: {wal_level: replica, hot_standby: "on", wal_keep_size: 256MB, max_wal_senders: 10, wal_log_hints: "on", hot_standby_feedback: "on"}
  initdb: [{encoding: UTF8}, data-checksums]
postgresql:
  listen: "$NET.1$i:5432"
  connect_address: "$NET.1$i:5432"
  data_dir: $WORK/n$i/data
  bin_dir: $PG_BIN
  pgpass: $WORK/n$i/pgpass
  authentication:
    replication: {username: replicator, password: repl-$$-secret}
    superuser: {username: postgres, password: super-$$-secret}
    rewind: {username: postgres, password: super-$$-secret}
  parameters: {unix_socket_directories: "$WORK/n$i", log_min_duration_statement: 0, log_line_prefix: "%m [%p] ", log_timezone: UTC,
               logging_collector: "on", log_directory: "$WORK/n$i", log_filename: data.log, log_rotation_age: 0, log_rotation_size: 0,
               log_checkpoints: "off"}
  pg_hba: ["local all all trust", "host all all $NET.0/24 trust", "host replication replicator $NET.0/24 trust"]
EOF
done

# Each node runs under a supervisor (here, not in a scenario's subshell) while $WORK/n$i.run names the tool.
supervise() {
  local tool
  while :; do
    tool=$(cat "$WORK/n$1.run" 2>/dev/null)
    case "$tool" in
      lifeboat) in_ns "n$1" "$BIN" ha run --config "$WORK/lifeboat$1.yaml" >> "$WORK/n$1.agent.log" 2>&1 ;;
      patroni) in_ns "n$1" runuser -u postgres -- patroni "$WORK/patroni$1.yaml" >> "$WORK/n$1.agent.log" 2>&1 ;;
    esac
    sleep 0.1
  done
}
primary() { local i; for i in $NODES; do [ "$(api "$i" primary)" = 200 ] && { echo "$i"; return; }; done; }
psql_leader() { psql -X -A -t -h "$NET.1$(primary)" -p 5432 -U postgres -d postgres "$@"; }
converged() {
  local i p=0 r=0
  for i in $NODES; do
    [ "$(api "$i" primary)" = 200 ] && p=$((p+1))
    [ "$(api "$i" replica)" = 200 ] && r=$((r+1))
  done
  [ $p = 1 ] && [ $r = 2 ] && { [ "$SYNC" = false ] || sync_named; }
}
# Synchronous mode: the tool's sync key names a standby (else the next failover rightly waits for the old leader).
sync_named() {
  local key=/service/shop/sync
  [ "$tool" = lifeboat ] && key=/lifeboat/ha/shop/sync   # $tool: the loop's or the scenario's
  ETCDCTL_API=3 etcdctl --endpoints "http://$NET.21:2379,http://$NET.22:2379,http://$NET.23:2379" get "$key" --print-value-only \
    | /usr/bin/python3 -c "import json,sys; v=json.loads(sys.stdin.read() or '{}'); sys.exit(0 if v.get('standbys') or v.get('sync_standby') else 1)"
}
first_ack_after() {  # first_ack_after TIME NODE: seconds from TIME to the first ack by another node than NODE
  /usr/bin/python3 -c "import json; a=[json.loads(l) for l in open('$WREC')]; a=[x['ack'] for x in a if x['ok'] and x['ack'] > $1 and x['node'] != '$2']; print('%.2f' % (min(a) - $1) if a else '')"
}

servers_stopped() { ! pgrep -f -- "-D $WORK/n" > /dev/null; }
nodes_stopped() { ! pgrep -f -- "ha run --config $WORK/lifeboat|patroni $WORK/patroni" > /dev/null; }
stop_tool() {
  local i p
  for i in $NODES; do rm -f "$WORK/n$i.run"; done
  for i in $NODES; do p=$(pgrep -f -- "ha run --config $WORK/lifeboat$i.yaml|patroni $WORK/patroni$i.yaml"); [ -n "$p" ] && kill -TERM $p; done
  wait_until 60 "the nodes to stop" nodes_stopped
  # Standbys' servers outlive their agents: stopped here, and waited for, before the next tool bootstraps.
  for i in $NODES; do
    p=$(head -1 "$WORK/n$i/data/postmaster.pid" 2>/dev/null) && kill -QUIT "$p" 2>/dev/null
  done
  wait_until 60 "the servers to stop" servers_stopped || pkill -KILL -f -- "-D $WORK/n"
  for i in $NODES; do rm -rf "$WORK/n$i"/data* "$WORK/n$i/data.log"; done
}

# The leader key's changes, each with the time it was seen (etcdctl watch from the host: it is never cut), so that
# the time from the key's expiry to the first write on the new primary (the tool's own reaction, whatever the
# fault's phase) is measured beside the time from the fault.
leader_key() { [ "$1" = lifeboat ] && echo /lifeboat/ha/shop/leader || echo /service/shop/leader; }
start_watch() {  # start_watch TOOL FILE
  ETCDCTL_API=3 etcdctl --endpoints "http://$NET.21:2379,http://$NET.22:2379,http://$NET.23:2379" watch "$(leader_key "$1")" \
    | /usr/bin/python3 -u -c "import sys, time
for l in sys.stdin: print('%.6f %s' % (time.time(), l.strip()), flush=True)" > "$2" &
  WATCH_PID=$!
}
stop_watch() { pkill -f -- "etcdctl --endpoints .* watch $(leader_key "$1")"; wait "$WATCH_PID" 2>/dev/null; }
expired_at() {  # expired_at FILE TIME: when the key was first deleted after TIME
  /usr/bin/python3 -c "import sys; t=[float(l.split()[0]) for l in open('$1') if l.split()[1:2] == ['DELETE'] and float(l.split()[0]) > $2]; print('%.6f' % t[0] if t else '')"
}

# One scenario, one round: break, measure, heal, converge, check.
scenario() {  # scenario TOOL NAME ROUND
  local tool=$1 name=$2 round=$3 old t gap delay expiry react ok=1 watch="$WORK/watch-$1-$2-$3.log"
  wait_until 120 "the cluster to converge" converged || return 1
  start_writer
  start_watch "$tool" "$watch"
  # The fault falls at a uniformly random point of the leader's renewal period (Lifeboat renews every TTL/3,
  # Patroni every loop_wait): otherwise it falls at whatever phase the convergence check happens to catch (just
  # after a renewal, for one tool and not the other), and the time to failover measures that phase, not the tool.
  delay=$(/usr/bin/python3 -c "import random; print('%.3f' % random.uniform(0, $TTL / 3 if '$tool' == 'lifeboat' else $TTL // 3))")
  sleep "$delay"
  old=$(primary); t=$(date +%s.%N)
  case "$name" in
    kill) rm -f "$WORK/n$old.run"; kill -KILL $(pgrep -f -- "ha run --config $WORK/lifeboat$old.yaml|patroni $WORK/patroni$old.yaml") "$(head -1 "$WORK/n$old/data/postmaster.pid")" ;;
    freeze) kill -STOP $(ip netns pids "${TAG}n$old") ;;
    cut-etcd) for i in 1 2 3; do in_ns "n$old" ip route add blackhole "$NET.2$i/32"; done ;;
    cut-all) ip link set "${TAG}n$old" down ;;
  esac
  wait_until 60 "a write acknowledged by a new primary" acked_after "$t" "pg$old" || ok=0
  gap=$(first_ack_after "$t" "pg$old")
  expiry=$(expired_at "$watch" "$t")
  react=$([ -n "$gap" ] && [ -n "$expiry" ] && /usr/bin/python3 -c "print('%.2f' % ($t + $gap - $expiry))")
  sleep 2   # writes go on through the new primary for a moment (the measure is taken)
  case "$name" in
    kill) echo "$tool" > "$WORK/n$old.run" ;;
    freeze) kill -CONT $(ip netns pids "${TAG}n$old") ;;
    cut-etcd) for i in 1 2 3; do in_ns "n$old" ip route del blackhole "$NET.2$i/32"; done ;;
    cut-all) ip link set "${TAG}n$old" up ;;
  esac
  wait_until 180 "the cluster to converge again" converged || ok=0
  stop_writer
  stop_watch "$tool"
  local logs=() i
  for i in $NODES; do logs+=("pg$i=$WORK/n$i/data.log"); done
  psql_leader -c "SELECT v FROM t" > "$WORK/final.txt"
  local check; check=$(/usr/bin/python3 "$HERE/ha_check.py" "$WREC" "$WSTART" "$WORK/final.txt" "${logs[@]}")
  echo "$check" | /usr/bin/python3 -c "import json,sys; c=json.load(sys.stdin); c.update(tool='$tool', scenario='$name', round=$round, failover_seconds=float('${gap:-nan}'), after_expiry_seconds=float('${react:-nan}'), fault_delay_seconds=$delay, converged=bool($ok)); print(json.dumps(c))" >> "$RESULTS"
  printf '  %-9s %-9s round %s: first write on the new primary after %ss (%ss after the key expired), failed %s, lost %s, split brain %s\n' "$tool" "$name" "$round" "${gap:-?}" "${react:-?}" \
    "$(echo "$check" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["failed"])')" \
    "$(echo "$check" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["lost"])')" \
    "$(echo "$check" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["split_brain_commits"])')"
}

wait_until 60 "etcd to be healthy" etcd_healthy
for i in $NODES; do supervise "$i" & done
"$BIN" proxy --config "$WORK/proxy.yaml" > "$WORK/proxy.log" 2>&1 &
wait_port "$PPORT"
for tool in ${HA_TOOLS:-lifeboat patroni}; do
  echo "$tool: bootstrapping"
  for i in $NODES; do echo "$tool" > "$WORK/n$i.run"; done
  wait_until 180 "$tool to bootstrap the cluster" converged || { tail -n 20 "$WORK"/n*.agent.log; exit 1; }
  psql_leader -q -c "CREATE TABLE t(v bigint PRIMARY KEY, node text DEFAULT current_setting('cluster_name'))"
  for name in ${HA_SCENARIOS:-kill freeze cut-etcd cut-all}; do
    for round in $(seq 1 "$ROUNDS"); do scenario "$tool" "$name" "$round"; done
  done
  stop_tool
done

/usr/bin/python3 - "$RESULTS" <<'EOF'
import json, math, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
tools = sorted(set(r["tool"] for r in rows), key=lambda t: t != "lifeboat")
scenarios = []
for r in rows:
    if r["scenario"] not in scenarios: scenarios.append(r["scenario"])
print("\n| scenario | tool | failover: median / mean / fastest (s) | after the key expired: median / mean (s) | failed writes (median) | acknowledged writes lost (max) | split brain (max) | converged |")
print("|---|---|---|---|---|---|---|---|")
for s in scenarios:
    for t in tools:
        rs = [r for r in rows if r["tool"] == t and r["scenario"] == s]
        if not rs: continue
        times = [r["failover_seconds"] for r in rs if not math.isnan(r["failover_seconds"])]
        f = "%.2f / %.2f / %.2f" % (statistics.median(times), statistics.mean(times), min(times)) if times else "none"
        ex = [r["after_expiry_seconds"] for r in rs if not math.isnan(r.get("after_expiry_seconds", float("nan")))]
        e = "%.2f / %.2f" % (statistics.median(ex), statistics.mean(ex)) if ex else "none"
        print("| %s | %s | %s | %s | %d | %d | %d | %d/%d |" % (s, t, f, e, statistics.median([r["failed"] for r in rs]), max(r["lost"] for r in rs),
              max(r["split_brain_commits"] + (1 if r["problems"] and "client" in " ".join(r["problems"]) else 0) for r in rs),
              sum(1 for r in rs if r["converged"]), len(rs)))
EOF
cp "$RESULTS" "$(dirname "$0")/results/ha-last.jsonl" 2>/dev/null || true
