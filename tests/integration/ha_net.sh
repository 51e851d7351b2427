# The HA proof's network, shared by tests/integration/ha.sh and bench/ha.sh (sourced after lib.sh, with SUITE set):
# 3 etcd members and 3 database nodes, each in a network namespace of its own (NET.21-23, NET.11-13), veth pairs to
# a bridge in this namespace (NET.1); etcd's data on tmpfs; the proxy's configuration (each node's PostgreSQL on
# 5432, checked through its API's /primary on 8008); the writer and the checker. Everything made here is removed
# on exit. The including script defines psql_leader (for the checker) and starts what runs on the nodes.

PG_BIN=/usr/lib/postgresql/15/bin
if [ ! -x "$PG_BIN/postgres" ] || ! command -v etcd >/dev/null || ! id postgres >/dev/null 2>&1 || ! /usr/bin/python3 -c 'import psycopg2' 2>/dev/null; then
  echo "$SUITE: SKIP (needs postgresql-15, etcd-server, python3-psycopg2 and a postgres user: scripts/install-deps.sh)"; exit 0
fi
if ! ip netns add "lbha-probe-$$" 2>/dev/null; then echo "$SUITE: SKIP (network namespaces need root)"; exit 0; fi
ip netns del "lbha-probe-$$"

TAG=h$$                      # interface names: at most 15 bytes
NET=10.78.$(( $$ % 200 + 20 ))
BR=${TAG}br
TTL=${HA_TTL:-3}
NODES="1 2 3"

ha_cleanup() {
  set +e
  for i in $NODES; do
    [ -f "$WORK/n$i/data/postmaster.pid" ] && kill -CONT $(ip netns pids "${TAG}n$i" 2>/dev/null) 2>/dev/null
  done
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${TAG}"); do
    kill -CONT $(ip netns pids "$ns") 2>/dev/null
    kill -KILL $(ip netns pids "$ns") 2>/dev/null
  done
  for i in $NODES; do
    p=$(head -1 "$WORK/n$i/data/postmaster.pid" 2>/dev/null) && kill -KILL "$p" 2>/dev/null
  done
  sleep 0.2
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${TAG}"); do ip netns del "$ns"; done
  rm -rf "$ETCD_DATA"
  for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^${TAG}"); do ip link del "$l" 2>/dev/null; done
  suite_cleanup
}
trap ha_cleanup EXIT

# --- the network: a bridge in this namespace (NET.1), one namespace per etcd member (NET.21-23) and node (NET.11-13)
ip link add "$BR" type bridge && ip addr add "$NET.1/24" dev "$BR" && ip link set "$BR" up
add_ns() {  # add_ns NAME ADDRESS
  local ns="${TAG}$1"
  ip netns add "$ns"
  ip link add "$ns" type veth peer name "${ns}p"
  ip link set "${ns}p" netns "$ns"
  ip link set "$ns" master "$BR" up
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" ip link set "${ns}p" name eth0
  ip netns exec "$ns" ip addr add "$2/24" dev eth0
  ip netns exec "$ns" ip link set eth0 up
  ip netns exec "$ns" ip route add default via "$NET.1"
}
for i in 1 2 3; do add_ns "e$i" "$NET.2$i"; add_ns "n$i" "$NET.1$i"; done
in_ns() { local ns="${TAG}$1"; shift; ip netns exec "$ns" "$@"; }

# --- etcd: three members, their data on tmpfs (etcd stalls when an fsync takes seconds, as on a disk that
# PostgreSQL's checkpoints keep busy; its own guidance is a dedicated fast disk)
ETCD_DATA=/dev/shm/lifeboat-ha-$$
mkdir -p "$ETCD_DATA"
CLUSTER="e1=http://$NET.21:2380,e2=http://$NET.22:2380,e3=http://$NET.23:2380"
ENDPOINTS="\"http://$NET.21:2379\", \"http://$NET.22:2379\", \"http://$NET.23:2379\""
for i in 1 2 3; do
  in_ns "e$i" etcd --name "e$i" --data-dir "$ETCD_DATA/e$i" --listen-peer-urls "http://$NET.2$i:2380" --initial-advertise-peer-urls "http://$NET.2$i:2380" \
    --listen-client-urls "http://$NET.2$i:2379" --advertise-client-urls "http://$NET.2$i:2379" --initial-cluster "$CLUSTER" \
    --initial-cluster-state new --initial-cluster-token "lbha-$$" > "$WORK/etcd$i.log" 2>&1 &
done
etcd_healthy() { ETCDCTL_API=3 etcdctl --endpoints "http://$NET.21:2379,http://$NET.22:2379,http://$NET.23:2379" endpoint health > /dev/null 2>&1; }


api() { curl -s -m 2 -o /dev/null -w '%{http_code}' "http://$NET.1$1:8008/$2"; }

# --- the proxy: routes to PostgreSQL (5432), checks each node's API (/primary on 8008)
PPORT=$(free_port)
cat > "$WORK/proxy.yaml" <<EOF
pools:
  - name: pg
    listen: 127.0.0.1:$PPORT
    mode: failover
    failback: auto
    check: {type: http, path: /primary, port: 8008, interval: 200ms, timeout: 500ms, fall: 2, rise: 1}
    backends:
      - {name: pg1, address: $NET.11:5432}
      - {name: pg2, address: $NET.12:5432}
      - {name: pg3, address: $NET.13:5432}
EOF

# --- the writer and the checker
start_writer() {  # a writer for at most 120 s; sets WSTART and WREC
  # (each test runs in a subshell: the count lives in a file)
  WRITER_N=$(( $(cat "$WORK/writers" 2>/dev/null || echo 0) + 1 )); echo "$WRITER_N" > "$WORK/writers"
  WREC="$WORK/writes$WRITER_N.jsonl"; WSTOP="$WORK/stop$WRITER_N"; WSTART=$(date +%s.%N)
  /usr/bin/python3 "$HERE/ha_writer.py" 127.0.0.1 "$PPORT" "$WREC" "$WSTOP" 120 100000 $((WRITER_N * 1000000)) &
  WRITER_PID=$!
  wait_until 30 "the writer's first acknowledged write" grep -qs '"ok": true' "$WREC"
}
acked_after() {  # acked_after TIME NODE: a write acknowledged after TIME by another node than NODE
  /usr/bin/python3 -c "import json,sys; a=[json.loads(l) for l in open('$WREC')]; sys.exit(0 if any(x['ok'] and x['ack'] > $1 and x['node'] != '$2' for x in a) else 1)"
}
stop_writer() { touch "$WSTOP"; wait "$WRITER_PID" 2>/dev/null; }
check_scenario() {  # check_scenario NAME [checker flags]: after the cluster converged
  local name=$1; shift
  psql_leader -c "SELECT v FROM t" > "$WORK/final$WRITER_N.txt"
  local logs=() i
  for i in $NODES; do logs+=("pg$i=$WORK/n$i/data.log"); done
  /usr/bin/python3 "$HERE/ha_check.py" "$WREC" "$WSTART" "$WORK/final$WRITER_N.txt" "$@" "${logs[@]}" | tee -a "$WORK/checks.jsonl" | sed "s/^/    $name: /"
  return "${PIPESTATUS[0]}"
}

# lifeboat_config N SYNCHRONOUS: node pgN's `ha:` file (the suite's and the benchmark's), on stdout. The
# replication password is $WORK/repl.pw; actions need $WORK/token.
lifeboat_config() {
  cat <<EOF
ha:
  cluster: shop
  etcd: {endpoints: [$ENDPOINTS]}
  ttl: ${TTL}s
  maximum_lag_on_failover: 1MB
  synchronous: $2
  node:
    name: pg$1
    api: $NET.1$1:8008
    token_file: $WORK/token
    postgres:
      bin_dir: $PG_BIN
      data_dir: $WORK/n$1/data
      listen: $NET.1$1:5432
      password_file: $WORK/repl.pw
      pg_hba: ["host all all $NET.0/24 trust", "host replication replicator $NET.0/24 scram-sha-256"]
      parameters: {log_min_duration_statement: 0, log_line_prefix: "%m [%p] ", log_timezone: UTC, log_checkpoints: "off"}
EOF
}
echo -n "repl-$$-secret" > "$WORK/repl.pw"; chmod 600 "$WORK/repl.pw"
echo -n "token-$$" > "$WORK/token"; chmod 600 "$WORK/token"
