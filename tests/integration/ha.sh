#!/usr/bin/env bash
# High availability on etcd (issue 16), proved on this machine: 3 etcd members and 3 PostgreSQL 15 nodes, each in a
# network namespace of its own, joined by veth pairs to a bridge; `lifeboat proxy` in front (its checks ask each
# node's API for /primary), a bounded writer through it recording every acknowledged write, and a checker after
# each scenario (tests/integration/ha_check.py): no split brain (client record and server logs), lost writes
# counted, the cluster converged on one timeline. Links are cut with blackhole routes or by taking a veth down;
# nodes are frozen with SIGSTOP on every process of their namespace. PostgreSQL runs as postgres, never root.
# Everything made here (namespaces, links, processes) is removed on exit, also when a step fails.
# usage: ha.sh BIN   (HA_TESTS="t_bootstrap t_kill_primary" to pick)
set -u
source "$(dirname "$0")/lib.sh" "$1" ha
SUITE=ha

source "$HERE/ha_net.sh"

# --- the nodes' configuration
SYNC=${HA_SYNC:-false}
for i in $NODES; do
  mkdir -p "$WORK/n$i"; chmod 755 "$WORK/n$i"
  lifeboat_config "$i" "$SYNC" > "$WORK/n$i.yaml"
done
# Each node's agent runs under a supervisor started here (a test's own processes are stopped when it ends): it
# (re)starts the agent while $WORK/n$i.run exists. A test stops a node by removing the file and killing the agent.
supervise() {
  while :; do
    if [ -f "$WORK/n$1.run" ]; then in_ns "n$1" "$BIN" ha run --config "$WORK/n$1.yaml" >> "$WORK/n$1.log" 2>&1; fi
    sleep 0.1
  done
}
start_node() { touch "$WORK/n$1.run"; }
hold_node() { rm -f "$WORK/n$1.run"; }
node_pid() { pgrep -f -- "ha run --config $WORK/n$1.yaml" | head -1; }

wait_until 60 "etcd to be healthy" etcd_healthy
for i in $NODES; do start_node "$i"; supervise "$i" & done
"$BIN" proxy --config "$WORK/proxy.yaml" > "$WORK/proxy.log" 2>&1 &
wait_port "$PPORT"

leader() {  # the node holding the leader key (from etcd), or nothing
  "$BIN" ha list --config "$WORK/n1.yaml" --json 2>/dev/null | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print((d.get("leader") or "").replace("pg",""))' 2>/dev/null
}
# One leader answering /primary, the two others streaming standbys within the lag limit (/replica), every member
# on the leader's timeline.
converged() {
  local l i p=0 r=0
  l=$(leader); [ -n "$l" ] || return 1
  for i in $NODES; do
    [ "$(api "$i" primary)" = 200 ] && p=$((p+1))
    [ "$(api "$i" replica)" = 200 ] && r=$((r+1))
  done
  [ $p = 1 ] && [ $r = 2 ] && [ "$(api "$l" primary)" = 200 ] || return 1
  "$BIN" ha list --config "$WORK/n1.yaml" --json 2>/dev/null | /usr/bin/python3 -c 'import json,sys
d=json.load(sys.stdin); tl=d["leaderTimeline"]; ms=d["members"]
sys.exit(0 if len(ms) == 3 and all(m["timeline"] == tl for m in ms) else 1)'
}
wait_converged() { wait_until "${1:-90}" "the cluster to converge (one primary, two streaming standbys, one timeline)" converged || { show_state; return 1; }; }
show_state() {
  "$BIN" ha list --config "$WORK/n1.yaml" 2>&1 | sed 's/^/    | /'
  for i in $NODES; do echo "    | n$i:"; tail -n 6 "$WORK/n$i.log" | sed 's/^/    |   /'; done
}
psql_leader() { psql -X -A -t -h "$NET.1$(leader)" -p 5432 -U postgres -d postgres "$@"; }

# ---------------------------------------------------------------------------------------------------------------
t_bootstrap() {
  wait_converged 120
  local l; l=$(leader)
  grep -q "bootstrapping: initdb" "$WORK/n$l.log" || fail "the leader pg$l did not run initdb"
  for i in $NODES; do [ "$i" = "$l" ] || grep -q "copying pg$l (pg_basebackup) done" "$WORK/n$i.log" || fail "pg$i did not copy the leader"; done
  # PostgreSQL runs as postgres, never root.
  [ -z "$(ps -o user= -C postgres | grep -v '^postgres$')" ] || fail "a postgres process does not run as the postgres user"
  psql_leader -c "CREATE TABLE t(v bigint PRIMARY KEY, node text DEFAULT current_setting('cluster_name'), at timestamptz DEFAULT clock_timestamp())" > /dev/null
  # ha list: members, roles, lag, timeline.
  "$BIN" ha list --config "$WORK/n1.yaml" > "$WORK/list.txt"
  grep -q "leader pg$l, timeline 1" "$WORK/list.txt" || { cat "$WORK/list.txt"; fail "ha list does not name the leader and timeline"; }
  [ "$(grep -c "standby" "$WORK/list.txt")" = 2 ] || fail "ha list does not show two standbys"
  # The API: reads need nothing, actions need the token; the replication password is never in an answer.
  for e in cluster status health metrics; do curl -s -m 2 "http://$NET.1$l:8008/$e" >> "$WORK/answers.txt"; done
  ! grep -q "repl-$$-secret" "$WORK/answers.txt" || fail "an API answer holds the replication password"
  ! pgrep -f "repl-$$-secret" > /dev/null || fail "the replication password is in a process's arguments"
  [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' -X POST "http://$NET.1$l:8008/pause")" = 401 ] || fail "an action without the token was not refused"
  [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' -X POST -H 'Authorization: Bearer wrong' "http://$NET.1$l:8008/pause")" = 401 ] || fail "a wrong token was not refused"
  curl -s -m 2 "http://$NET.1$l:8008/metrics" > "$WORK/metrics.txt"
  grep -q "lifeboat_ha_role{cluster=\"shop\",node=\"pg$l\",role=\"primary\"} 1" "$WORK/metrics.txt" || fail "the leader's metrics do not say primary"
  if command -v promtool > /dev/null; then promtool check metrics < "$WORK/metrics.txt" || fail "promtool rejects the metrics"; fi
  # A standby answers /replica, not /primary.
  local s; for s in $NODES; do [ "$s" = "$l" ] || break; done
  [ "$(api "$s" primary)" = 503 ] && [ "$(api "$s" replica)" = 200 ] || fail "standby pg$s: /primary $(api "$s" primary), /replica $(api "$s" replica)"
  # The dashboard of an agent whose plan holds a node's ha section shows the cluster as that node reports it.
  local port; port=$(free_port)
  echo -n "dash-$$" > "$WORK/dash.pw"; chmod 600 "$WORK/dash.pw"; mkdir -p "$WORK/dash"
  lb -r "$WORK/dash-a" --password-file "$WORK/dash.pw" init > /dev/null
  lb -r "$WORK/dash-b" --password-file "$WORK/dash.pw" init --copy-chunker-params-from "$WORK/dash-a" --from-password-file "$WORK/dash.pw" > /dev/null
  { cat <<EOF
sites:
  - {name: a, repository: $WORK/dash-a, password_file: $WORK/dash.pw, role: primary}
  - {name: b, repository: $WORK/dash-b, password_file: $WORK/dash.pw, role: replica}
sources:
  - {name: conf, paths: [$WORK/n$s.yaml], schedule: every 24h}
agent: {listen: 127.0.0.1:$port, token_file: $WORK/token, state: $WORK/dash/agent.db}
EOF
    cat "$WORK/n$s.yaml"; } > "$WORK/dash.yaml"
  "$BIN" agent --config "$WORK/dash.yaml" > "$WORK/dash.log" 2>&1 &
  local dash=$!
  wait_port "$port"
  curl -s -m 10 -H "Authorization: Bearer token-$$" "http://127.0.0.1:$port/ui/failover" > "$WORK/failover.html"
  kill -TERM "$dash"; wait "$dash"
  grep -q "HA cluster shop" "$WORK/failover.html" && grep -q "Leader: <b>pg$l</b>" "$WORK/failover.html" \
    && [ "$(grep -o 'data-member="pg[123]"' "$WORK/failover.html" | wc -l)" = 3 ] && grep -Eq "data-member=\"pg$s\"><td><b>pg$s</b>( <span class=\"tag\">sync</span>)?</td><td>standby</td>" "$WORK/failover.html" \
    || { cat "$WORK/failover.html" "$WORK/dash.log"; fail "the dashboard's failover page shows the cluster"; }
}

# The primary node dies at once (its agent and PostgreSQL SIGKILLed): a standby takes over after the TTL, the
# writer continues through the proxy, the old node comes back rewound as a standby.
t_kill_primary() {
  wait_converged
  start_writer
  local old; old=$(leader)
  local killed; killed=$(date +%s.%N)
  hold_node "$old"
  kill -KILL "$(node_pid "$old")" "$(head -1 "$WORK/n$old/data/postmaster.pid")"
  wait_until 30 "writes acknowledged by a new primary" acked_after "$killed" "pg$old"
  start_node "$old"
  wait_converged
  stop_writer
  grep -q "rewinding from" "$WORK/n$old.log" || fail "the old primary was not rewound"
  check_scenario kill-primary --expect-changes 1
}

other_than() {  # other_than N…: the first node that is none of them
  local i x skip; for i in $NODES; do skip=; for x in "$@"; do [ "$i" = "$x" ] && skip=1; done; [ -z "$skip" ] && { echo "$i"; return; }; done
}
frozen_pids() { ip netns pids "${TAG}n$1"; }
new_leader_other_than() { local l; l=$(leader); [ -n "$l" ] && [ "$l" != "$1" ]; }
no_primary_answers() { local i; for i in $NODES; do [ "$(api "$i" primary)" = 200 ] && return 1; done; return 0; }

# The whole primary node frozen (every process of its namespace stopped) for 3 × TTL, then resumed: a standby
# takes over meanwhile; on resuming, the old primary stops at once (its deadline passed) and is rewound.
t_freeze_primary() {
  wait_converged
  start_writer
  local old t; old=$(leader); t=$(date +%s.%N)
  kill -STOP $(frozen_pids "$old")
  wait_until 30 "writes acknowledged by a new primary" acked_after "$t" "pg$old"
  sleep $((TTL * 3 - 2))  # the freeze itself is the scenario: longer than the TTL, whatever the machine's speed
  kill -CONT $(frozen_pids "$old")
  wait_converged
  stop_writer
  grep -q "fenced" "$WORK/n$old.log" || fail "the resumed primary pg$old did not fence"
  check_scenario freeze-primary --expect-changes 1
}

# The primary's namespace loses etcd (blackhole routes to the three members) but not its clients: it stops taking
# writes before its lease can expire, a standby takes over, and once etcd is back the old primary follows.
t_cut_primary_from_etcd() {
  wait_converged
  start_writer
  local old t i; old=$(leader); t=$(date +%s.%N)
  for i in 1 2 3; do in_ns "n$old" ip route add blackhole "$NET.2$i/32"; done
  wait_until 30 "writes acknowledged by a new primary" acked_after "$t" "pg$old"
  wait_log "$WORK/n$old.log" "fenced" 10
  for i in 1 2 3; do in_ns "n$old" ip route del blackhole "$NET.2$i/32"; done
  wait_converged
  stop_writer
  check_scenario cut-from-etcd --expect-changes 1
}

# The primary cut from everything (its veth down): the same, and the proxy's checks find it gone.
t_cut_primary_from_all() {
  wait_converged
  start_writer
  local old t; old=$(leader); t=$(date +%s.%N)
  ip link set "${TAG}n$old" down
  wait_until 30 "writes acknowledged by a new primary" acked_after "$t" "pg$old"
  sleep "$TTL"
  ip link set "${TAG}n$old" up
  wait_converged
  stop_writer
  check_scenario cut-from-all --expect-changes 1
}

# A standby more than maximum_lag_on_failover behind (its replication cut and its replay paused) when the primary
# dies: the caught-up standby is promoted, never the lagging one; the lagging one then catches up and follows.
t_lagging_standby_not_promoted() {
  wait_converged
  local old lag good t; old=$(leader); lag=$(other_than "$old"); good=$(other_than "$old" "$lag")
  local before; before=$(wc -l < "$WORK/n$lag.log")
  psql -X -q -h "$NET.1$lag" -U postgres -d postgres -c "SELECT pg_wal_replay_pause()" > /dev/null
  in_ns "n$lag" ip route add blackhole "$NET.1$old/32"
  psql_leader -q -c "CREATE TABLE IF NOT EXISTS big(i int, pad text); INSERT INTO big SELECT g, repeat('x', 1000) FROM generate_series(1, 4000) g"
  # Both standbys report; the lagging one is far behind the leader's published position.
  wait_until 30 "pg$lag to report itself more than 1 MB behind" bash -c "'$BIN' ha list --config '$WORK/n1.yaml' --json | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); m=[x for x in d[\"members\"] if x[\"name\"]==\"pg$lag\"][0]; sys.exit(0 if (m[\"lagBytes\"] or 0) > 1048576 and not m[\"candidate\"] else 1)'"
  # Caught up for real (its server has the insert), not only by its agent's last report, which may predate the
  # leader's publishing the insert's position.
  local end; end=$(psql_leader -c "SELECT pg_current_wal_flush_lsn()")
  wait_until 30 "pg$good to receive the WAL up to $end" bash -c "[ \"\$(psql -X -A -t -h $NET.1$good -U postgres -d postgres -c \"SELECT pg_last_wal_receive_lsn() >= '$end'\")\" = t ]"
  wait_until 30 "pg$good to catch up" bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' http://$NET.1$good:8008/replica)\" = 200 ]"
  start_writer
  t=$(date +%s.%N)
  local seen; seen=$(wc -l < "$WORK/n$lag.log")
  hold_node "$old"
  kill -KILL "$(node_pid "$old")" "$(head -1 "$WORK/n$old/data/postmaster.pid")"
  wait_until 30 "writes acknowledged by a new primary" acked_after "$t" "pg$old"
  [ "$(leader)" = "$good" ] || fail "pg$(leader) was promoted, not the caught-up pg$good"
  in_ns "n$lag" ip route del blackhole "$NET.1$old/32"
  psql -X -q -h "$NET.1$lag" -U postgres -d postgres -c "SELECT pg_wal_replay_resume()" > /dev/null 2>&1 || true
  start_node "$old"
  wait_converged
  stop_writer
  ! tail -n +"$((seen + 1))" "$WORK/n$lag.log" | grep -q "promoting" || fail "the lagging pg$lag promoted"
  # Cut from the leader, it did not stream, but it holds no WAL the leader lacks: nothing to rewind, and nothing
  # to move aside.
  ! tail -n +"$((before + 1))" "$WORK/n$lag.log" | grep -q "rewinding\|moved to" || fail "the lagging pg$lag was rewound or recloned"
  check_scenario lagging-standby --expect-changes 1
}

# etcd gone from every node (all three members stopped): nobody promotes, the primary fences after its deadline,
# and everything recovers when etcd returns.
t_etcd_unreachable() {
  wait_converged
  local e t
  e=$(pgrep -f "etcd --name e[123] --data-dir $ETCD_DATA")
  t=$(date +%s)
  kill -STOP $e
  wait_until 10 "no node to answer /primary" no_primary_answers
  sleep $((TTL * 2))
  no_primary_answers || fail "a node answered /primary while etcd was unreachable"
  local i; for i in $NODES; do ! grep -q "promoting" <(awk -v t="$(date -u -d @"$t" +%H:%M:%S)" 'substr($1, 12, 8) >= t' "$WORK/n$i.log") || fail "pg$i promoted while etcd was unreachable"; done
  kill -CONT $e
  wait_converged 120
}

# A planned switchover: the leader stops cleanly once the target is caught up, the target leads, no acknowledged
# write is lost (the clean stop sends the last WAL), and the old leader follows.
t_switchover() {
  wait_converged
  start_writer
  local old to; old=$(leader); to=$(other_than "$old")
  "$BIN" ha switchover --config "$WORK/n$old.yaml" --to "pg$to" --timeout 60 > "$WORK/switchover.out" || { cat "$WORK/switchover.out"; fail "switchover failed"; }
  [ "$(leader)" = "$to" ] || fail "pg$(leader) leads, not pg$to"
  wait_converged
  stop_writer
  check_scenario switchover --expect-changes 1 --lossless
  # Refused: to the leader itself, to a node that does not exist.
  expect_code 1 "$BIN" ha switchover --config "$WORK/n1.yaml" --to "pg$to"
  grep -q "is the leader already" "$WORK/err" || fail "a switchover to the leader was not refused clearly"
  expect_code 1 "$BIN" ha switchover --config "$WORK/n1.yaml" --to pg9
  grep -q "not a live member" "$WORK/err" || fail "a switchover to an unknown node was not refused clearly"
  # A name that would smuggle another query parameter (or another node's name) into the request.
  expect_code 1 "$BIN" ha switchover --config "$WORK/n1.yaml" --to "pg$old&to=pg$old"
  grep -q "not a node name" "$WORK/err" || fail "a hostile --to was not refused"
  for bad in 1e300 nan 0 inf; do
    expect_code 1 "$BIN" ha switchover --config "$WORK/n1.yaml" --to "pg$old" --timeout "$bad"
    grep -q "timeout must be between" "$WORK/err" || fail "--timeout $bad was not refused clearly"
  done
}

# Maintenance: no automatic failover while paused, even when the primary dies; a failover right after resume.
t_pause_resume() {
  wait_converged
  local old; old=$(leader)
  local live; live=$(other_than "$old")
  "$BIN" ha pause --config "$WORK/n$live.yaml" | grep -q "paused" || fail "pause did not say so"
  hold_node "$old"
  kill -KILL "$(node_pid "$old")" "$(head -1 "$WORK/n$old/data/postmaster.pid")"
  sleep $((TTL * 2 + 1))
  [ -z "$(leader)" ] || fail "pg$(leader) took over while the cluster was paused"
  "$BIN" ha list --config "$WORK/n1.yaml" | grep -q "PAUSED" || fail "ha list does not show the pause"
  "$BIN" ha resume --config "$WORK/n$live.yaml" | grep -q "resumed" || fail "resume did not say so"
  wait_until 20 "a leader after resume" new_leader_other_than "$old"
  start_node "$old"
  wait_converged
}

# A node whose data directory is another database system refuses to join, and never takes the leader key.
t_foreign_node_refused() {
  wait_converged
  mkdir -p "$WORK/x"; chown postgres "$WORK/x"
  runuser -u postgres -- "$PG_BIN/initdb" -D "$WORK/x/data" > /dev/null 2>&1
  sed -e "s/name: pg1/name: pgx/" -e "s/$NET.11:8008/127.0.0.1:$(free_port)/" -e "s#$WORK/n1/data#$WORK/x/data#" -e "s/$NET.11:5432/127.0.0.1:$(free_port)/" \
    "$WORK/n1.yaml" > "$WORK/x.yaml"
  "$BIN" ha run --config "$WORK/x.yaml" > "$WORK/x.log" 2>&1 &
  wait_log "$WORK/x.log" "does not join" 30
  [ "$(leader)" != x ] && [ -n "$(leader)" ] || fail "the foreign node disturbed the leader"
  kill %1 2>/dev/null || true
}

sync_published() {  # the sync key names a standby of the current leader
  "$BIN" ha list --config "$WORK/n1.yaml" --json 2>/dev/null | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d.get("synchronous") else 1)'
}

# Synchronous mode (`synchronous: true`): the agents restart with it, the leader requires a standby for every commit
# and publishes it; then the primary is killed, and frozen: no acknowledged write is lost, the new leader is the
# published standby, and a frozen primary commits nothing after the switch (its commits wait for a standby that
# follows someone else).
t_synchronous_mode() {
  wait_converged
  local i p
  # A key left from an earlier synchronous period, naming standbys long gone: the asynchronous leader removes it
  # (else it would bind the standbys once the mode is on, and nobody could take over).
  local ectl=(env ETCDCTL_API=3 etcdctl --endpoints "http://$NET.21:2379,http://$NET.22:2379,http://$NET.23:2379")
  "${ectl[@]}" put /lifeboat/ha/shop/sync '{"leader": "pg7", "standbys": ["pg8"]}' > /dev/null || fail "cannot write the test's sync key"
  sync_key_gone() { [ -z "$("${ectl[@]}" get /lifeboat/ha/shop/sync --print-value-only)" ]; }
  wait_until 30 "the asynchronous leader to remove the leftover sync key" sync_key_gone
  for i in $NODES; do sed -i 's/synchronous: false/synchronous: true/' "$WORK/n$i.yaml"; done
  for i in $NODES; do
    [ "$i" = "$(leader)" ] && continue
    kill -TERM "$(node_pid "$i")"; wait_converged
  done
  kill -TERM "$(node_pid "$(leader)")"
  wait_converged
  wait_until 30 "a synchronous standby to be published" sync_published
  psql_leader -c "SHOW synchronous_standby_names" | grep -q FIRST || fail "the leader's synchronous_standby_names is not set"
  # Killed.
  start_writer
  local old sync t; old=$(leader)
  sync=$("$BIN" ha list --config "$WORK/n1.yaml" --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["synchronous"][0].replace("pg",""))')
  t=$(date +%s.%N)
  hold_node "$old"
  kill -KILL "$(node_pid "$old")" "$(head -1 "$WORK/n$old/data/postmaster.pid")"
  wait_until 30 "writes acknowledged by a new primary" acked_after "$t" "pg$old"
  [ "$(leader)" = "$sync" ] || fail "pg$(leader) took over, not the synchronous standby pg$sync"
  start_node "$old"
  wait_converged
  wait_until 30 "a synchronous standby to be published" sync_published
  stop_writer
  check_scenario sync-kill --expect-changes 1 --lossless
  # Frozen.
  start_writer
  old=$(leader); t=$(date +%s.%N)
  kill -STOP $(frozen_pids "$old")
  wait_until 30 "writes acknowledged by a new primary" acked_after "$t" "pg$old"
  sleep $((TTL * 3 - 2))  # the scenario: frozen for longer than the TTL
  kill -CONT $(frozen_pids "$old")
  wait_converged
  stop_writer
  check_scenario sync-freeze --expect-changes 1 --lossless
  tail -n 1 "$WORK/checks.jsonl" | grep -q '"stale_commits": 0' || fail "the frozen primary committed after the switch in synchronous mode"
}

# The cluster outlives each test (its agents run under the supervisors), so tests run in order, each from a
# converged cluster, and a test's leftovers are only its writer (stopped here), never a node.
run_ha_test() {
  local name=$1 rc
  echo "--- $name"
  ( set -eE; trap 'echo "    FAIL at line $LINENO: $BASH_COMMAND"' ERR; "$name" ) &
  wait $!; rc=$?
  pkill -f "ha_writer.py 127.0.0.1 $PPORT" 2>/dev/null
  if [ $rc -eq 0 ]; then PASSED=$((PASSED+1)); echo "    ok"; else FAILED=$((FAILED+1)); FAILURES+=("$name"); show_state; fi
  heal
}
# Whatever a failed test left: every node running and unfrozen, links up, no blackhole route, etcd running.
heal() {
  local i ns
  kill -CONT $(pgrep -f "etcd --name e[123] --data-dir $ETCD_DATA") 2>/dev/null
  for i in $NODES; do
    ns="${TAG}n$i"
    kill -CONT $(ip netns pids "$ns") 2>/dev/null
    ip link set "$ns" up
    ip netns exec "$ns" ip route show type blackhole | while read -r _ dst _; do ip netns exec "$ns" ip route del blackhole "$dst"; done
    start_node "$i"
    psql -X -q -h "$NET.1$i" -U postgres -d postgres -c "SELECT pg_wal_replay_resume()" > /dev/null 2>&1
  done
  for i in $NODES; do "$BIN" ha resume --config "$WORK/n$i.yaml" > /dev/null 2>&1 && break; done
}
ALL_TESTS="t_bootstrap t_kill_primary t_freeze_primary t_cut_primary_from_etcd t_cut_primary_from_all t_lagging_standby_not_promoted t_etcd_unreachable t_switchover t_pause_resume t_foreign_node_refused t_synchronous_mode"
for t in ${HA_TESTS:-$ALL_TESTS}; do run_ha_test "$t"; done
echo "ha: $PASSED passed, $FAILED failed${FAILURES[*]:+ (${FAILURES[*]})}"
[ "$FAILED" -eq 0 ]
