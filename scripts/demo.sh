#!/usr/bin/env bash
# The main job on an embedded default: back up a sample folder into a default repository under the
# user's data directory, restore it, and verify the restored tree byte for byte; then let the agent run a
# two-site plan (the repository and a replica folder) until both sites hold a fresh copy, and show its status.
set -euo pipefail
BIN=${1:-.build/release/lifeboat}
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
DATA=${XDG_DATA_HOME:-$HOME/.local/share}/lifeboat
mkdir -p "$DATA"
REPO=$DATA/demo-repo
PWF=$DATA/demo-password
[ -f "$PWF" ] || { head -c 24 /dev/urandom | base64 > "$PWF"; chmod 600 "$PWF"; }
export LIFEBOAT_REPOSITORY=$REPO LIFEBOAT_PASSWORD_FILE=$PWF

SRC=$DATA/demo-source
rm -rf "$SRC"; mkdir -p "$SRC/docs" "$SRC/bin" "$SRC/empty"
for i in $(seq 1 200); do printf 'line %d of a sample text file\n' $(seq 1 $i) > "$SRC/docs/file$i.txt"; done
head -c 3000000 /dev/urandom > "$SRC/bin/random.bin"
cat "$SRC/bin/random.bin" "$SRC/bin/random.bin" > "$SRC/bin/twice.bin"
ln -sf ../docs/file1.txt "$SRC/bin/link"
ln -f "$SRC/docs/file2.txt" "$SRC/docs/hardlink.txt"

[ -f "$REPO/config" ] || "$BIN" init
"$BIN" backup --tag demo "$SRC"
"$BIN" snapshots --tag demo
OUT=$(mktemp -d)
"$BIN" restore latest --target "$OUT" --verify
diff -r "$SRC" "$OUT$SRC"
"$BIN" check --read-data
rm -rf "$OUT"
echo "demo: backup, restore (byte-identical) and check passed; repository at $REPO"

# The agent: the same source every 5 s, replicated to a second site, RPO 1 min, until both sites have it.
REPLICA=$DATA/demo-replica
[ -f "$REPLICA/config" ] || "$BIN" -r "$REPLICA" init --copy-chunker-params-from "$REPO" --from-password-file "$PWF" > /dev/null
PLAN=$DATA/demo-lifeboat.yaml
PORT=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
cat > "$PLAN" <<YAML
sites:
  - {name: local, repository: $REPO, password_file: $PWF, role: primary}
  - {name: replica, repository: $REPLICA, password_file: $PWF, role: replica}
sources:
  - {name: demo, paths: [$SRC], schedule: every 5s, retention: {keep_last: 10}, objectives: {rpo: 1m, rto: 15m}}
replication: {interval: 5s, state_file: $DATA/demo-replication.json}
agent: {listen: 127.0.0.1:$PORT, state: $DATA/demo-agent.db}
YAML
"$BIN" config validate --config "$PLAN"
"$BIN" agent --config "$PLAN" 2> "$DATA/demo-agent.log" &
AGENT=$!
trap 'kill $AGENT 2>/dev/null || true' EXIT
# Until every objective is met at both sites (status exits 0), at most a minute.
for _ in $(seq 1 120); do "$BIN" status --config "$PLAN" > /dev/null 2>&1 && break; sleep 0.5; done
"$BIN" status --config "$PLAN" || { tail -20 "$DATA/demo-agent.log"; echo "demo: the agent did not back up and replicate in time" >&2; exit 1; }
kill -TERM $AGENT; wait $AGENT
trap - EXIT
echo "demo: the agent backed up and replicated the source; every RPO is met (lifeboat status exited 0)"
