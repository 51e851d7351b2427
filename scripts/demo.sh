#!/usr/bin/env bash
# The main job on an embedded default: back up a sample folder into a default repository under the
# user's data directory, restore it, and verify the restored tree byte for byte.
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
