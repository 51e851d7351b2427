#!/usr/bin/env bash
# The examples of every command's --help: each command has 2 to 4, README.md's "Examples" section lists the same
# ones, `lifeboat help CMD` shows what `lifeboat CMD --help` shows, and every example runs, as written, in a scratch
# world against a prepared repository.
# Usage: tests/integration/examples.sh path/to/lifeboat
#   EXAMPLES_SOURCE=swift  take the examples from Sources/LifeboatCommands/Examples.swift instead of --help
#                          (to try examples before they are built in; the commands still come from the binary)
#   EXAMPLES_TESTS="t_readme_lists_the_examples ex_serve_*"  only these tests (shell patterns)
#
# The scratch world. Examples are written for a user `me` whose repository is /srv/lifeboat (LIFEBOAT_REPOSITORY,
# password in LIFEBOAT_PASSWORD_FILE), with a second repository on a USB disk at /mnt/usb/repo, a sites file, a
# proxy configuration and a folder of served repositories (/backup). The test builds all that under ROOT
# ($WORK/root), runs each example with HOME=ROOT/home/me, in that folder, with `lifeboat` on PATH (a symlink to
# the binary), under `bash -o pipefail -c`, and resets ROOT to the prepared state before each example (a copy:
# every example starts from the same state, whatever the others did). Before they run, examples are changed in
# these ways only, each printed with the example:
#   * an absolute path (after a space, =, :, or a quote) is taken under ROOT: /srv/lifeboat -> ROOT/srv/lifeboat,
#     as if the example ran in a chroot; not "//" (URLs), /dev, /proc, /sys, nor a lone "/" (a restore with
#     --target / then writes the snapshot's paths, which all lie under ROOT, in place);
#   * the IDs 4bd1c2a9 and e2f0b917 stand for the first and second snapshot, 6a3c5d21 (and its prefix 6a3c) for
#     the repository's second key: they become the real IDs;
#   * `serve` listens on a free loopback port: 127.0.0.1:8000 (written, or the default when --listen is absent)
#     becomes 127.0.0.1:PORT;
#   * an `init` example finds no repository where it creates one (the prepared one is removed first);
#   * password prompts (`key add`, `key passwd` without --new-password-file) are answered by LIFEBOAT_NEW_PASSWORD.
# An example passes when it exits 0. Those that run until stopped (`serve`, `proxy` without --check,
# `replicate --watch`) are started in the background; the test waits (bounded) until the port listens or the log
# says it is ready, checks the --pid-file if one is given, sends SIGTERM and expects exit 0 (and the PID file gone).
set -uo pipefail
source "$(dirname "$0")/lib.sh" "${1:?usage: examples.sh path/to/lifeboat}" examples

SRC=$(cd "$HERE/../.." && pwd)
SOURCE=${EXAMPLES_SOURCE:-help}
ROOT=$WORK/root
ME=$ROOT/home/me
mkdir -p "$WORK/bin"; ln -s "$BIN" "$WORK/bin/lifeboat"
export LIFEBOAT_REPOSITORY=$ROOT/srv/lifeboat LIFEBOAT_PASSWORD_FILE=$ROOT/etc/lifeboat/password
export LIFEBOAT_SITES=$ROOT/etc/lifeboat/sites.yaml LIFEBOAT_NEW_PASSWORD=typed-at-the-prompt
export LIFEBOAT_CONFIG=$ROOT/etc/lifeboat/lifeboat.yaml
export LIFEBOAT_CACHE_DIR=$WORK/cache

# ---- The examples: $WORK/examples.tsv, one per line: command path ("key list"), description, command line.

help_of() { COLUMNS=80 LINES=24 "$BIN" "$@" 2>&1; }  # help as an 80-column terminal shows it (wider ones wrap less)

commands_under() {  # commands_under [GROUP…]: the command paths below, from the SUBCOMMANDS of each --help
  local sub
  for sub in $(help_of "$@" --help | awk '/^SUBCOMMANDS:/ { s = 1; next } s && /^$/ { exit } s && /^  [a-z]/ { print $1 }'); do
    [ "$sub" = help ] && continue
    if grep -q '^SUBCOMMANDS:' <<< "$(help_of "$@" "$sub" --help)"; then commands_under "$@" "$sub"; else echo "$*${*:+ }$sub"; fi
  done
}

examples_in_help() {  # examples_in_help PATH < HELP: "PATH<TAB>DESCRIPTION<TAB>COMMAND" for each example rendered in HELP
  awk -v p="$1" '/^    \$ lifeboat / { d = prev; sub(/^  /, "", d); sub(/:$/, "", d); print p "\t" d "\t" substr($0, 7) } { prev = $0 }'
}

examples_in_swift() {  # every ("description", "command") of Examples.swift, with the command path from the static's name
  python3 - "$SRC/Sources/LifeboatCommands/Examples.swift" <<'PY'
import re, sys
src = open(sys.argv[1]).read()
string = r'"((?:[^"\\]|\\.)*)"'
unescape = lambda s: re.sub(r'\\(.)', r'\1', s)
for name, body in re.findall(r'static let (`?\w+`?) = render\(\[(.*?)\]\)', src, re.S):
    path = re.sub(r'[A-Z]', lambda m: ' ' + m.group(0).lower(), name.strip('`'))
    for d, c in re.findall(r'\(\s*' + string + r',\s*' + string + r'\s*\)', body, re.S):
        print("%s\t%s\t%s" % (path, unescape(d), unescape(c)))
PY
}

commands_under > "$WORK/commands.txt"
if [ "$SOURCE" = swift ]; then
  examples_in_swift > "$WORK/examples.tsv"
else
  while read -r c; do help_of $c --help | examples_in_help "$c"; done < "$WORK/commands.txt" > "$WORK/examples.tsv"
fi
echo "examples from $SOURCE: $(wc -l < "$WORK/examples.tsv") for $(cut -f1 "$WORK/examples.tsv" | sort -u | wc -l) commands; the binary has $(wc -l < "$WORK/commands.txt") commands"

# ---- What the help shows.

t_every_command_has_examples() {
  local c n bad=0
  while read -r c; do
    n=$(awk -F'\t' -v c="$c" '$1 == c' "$WORK/examples.tsv" | wc -l)
    if [ "$n" -lt 2 ] || [ "$n" -gt 4 ]; then echo "    lifeboat $c: $n examples (2 to 4 wanted)"; bad=1; fi
  done < "$WORK/commands.txt"
  for c in $(cut -f1 "$WORK/examples.tsv" | sort -u | tr ' ' '+'); do
    grep -qxF "${c//+/ }" "$WORK/commands.txt" || { echo "    examples for '${c//+/ }', which the binary has no command for"; bad=1; }
  done
  # Each example is one line that an 80-column terminal shows unwrapped, for the command it is listed under.
  python3 - "$WORK/examples.tsv" <<'PY' || bad=1
import sys
seen, bad = set(), False
for line in open(sys.argv[1]):
    path, desc, cmd = line.rstrip("\n").split("\t")
    problems = []
    if not cmd.startswith("lifeboat "): problems.append("does not start with 'lifeboat '")
    if len(cmd) > 73: problems.append("%d characters (73 at most: '    $ ' + it fits 79 columns)" % len(cmd))
    if len(desc) > 76: problems.append("description of %d characters (76 at most)" % len(desc))
    if not desc: problems.append("no description")
    if not (cmd + desc).isascii(): problems.append("not plain ASCII")
    words = cmd.split()
    at = [i for i in range(len(words)) if words[i:i + len(path.split())] == path.split()]
    if not at: problems.append("does not run 'lifeboat %s'" % path)
    if cmd in seen: problems.append("listed twice")
    seen.add(cmd)
    for p in problems: print("    %s: %s" % (cmd, p)); bad = True
sys.exit(1 if bad else 0)
PY
  [ "$bad" = 0 ] || fail "every command has 2 to 4 examples, each a valid line"
}

t_help_subcommand_shows_the_same() {  # `lifeboat help CMD` and `lifeboat CMD --help` show the same examples
  local c bad=0 a b
  while read -r c; do
    a=$(help_of $c --help | examples_in_help "$c")
    b=$(help_of help $c | examples_in_help "$c")
    [ "$a" = "$b" ] || { echo "    'lifeboat help $c' and 'lifeboat $c --help' differ:"; diff <(echo "$a") <(echo "$b") | sed 's/^/      /' | head -10; bad=1; }
  done < "$WORK/commands.txt"
  [ "$SOURCE" = help ] || echo "    (EXAMPLES_SOURCE=$SOURCE: compared whatever this binary's help shows)"
  [ "$bad" = 0 ] || fail "help CMD shows the examples of CMD --help"
}

t_readme_lists_the_examples() {  # README.md's "## Examples": the same command lines, each under its description
  local rc=0
  python3 - "$SRC/README.md" "$WORK/examples.tsv" <<'PY' || rc=$?
import sys
lines = open(sys.argv[1]).read().splitlines()
if "## Examples" not in lines: print("    README.md has no '## Examples' section"); sys.exit(1)
start = lines.index("## Examples") + 1
end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
readme, comment, fence, bad = {}, None, False, False
for l in lines[start:end]:
    if l.startswith("```"): fence = l.strip() == "```sh" and not fence; comment = None; continue
    if not fence: continue
    if l.startswith("# "): comment = l[2:]
    elif l.startswith("lifeboat "):
        if l in readme: print("    listed twice in README.md: " + l); bad = True
        readme[l] = comment; comment = None
helps = {}
for line in open(sys.argv[2]):
    path, desc, cmd = line.rstrip("\n").split("\t")
    helps[cmd] = desc
for c in sorted(set(helps) - set(readme)): print("    missing in README.md: " + c); bad = True
for c in sorted(set(readme) - set(helps)): print("    in README.md but in no --help: " + c); bad = True
for c in sorted(set(helps) & set(readme)):
    if readme[c] != helps[c]:
        print("    %s: README says '# %s', --help says '%s'" % (c, readme[c], helps[c])); bad = True
print("    %d examples in README.md, %d in the help" % (len(readme), len(helps)))
sys.exit(1 if bad else 0)
PY
  [ "$rc" = 0 ] || fail "README.md lists the examples of --help"
}

# ---- The scratch world (prepared once in $WORK/base, copied to ROOT before each example).

t_prepare_scratch_world() {
  rm -rf "$ROOT"
  mkdir -p "$ME"/{Documents/taxes,Pictures,.cache/thumbnails,.config/lifeboat,.config/fish/completions,.zfunc,backups} \
    "$ROOT"/{srv,mnt/usb,etc/lifeboat,etc/bash_completion.d,run,tmp,var/lib/lifeboat,backup}
  echo "Buy milk" > "$ME/Documents/notes.txt"
  head -c 300000 /dev/urandom > "$ME/Documents/report.odt"
  head -c 100000 /dev/urandom > "$ME/Documents/taxes/2024.pdf"
  echo "a draft" > "$ME/Documents/letter.tmp"
  head -c 400000 /dev/urandom > "$ME/Pictures/beach.jpg"
  head -c 300000 /dev/urandom > "$ME/Pictures/cat.jpg"
  printf 'Signature: 8a477f597d28d172789f06886806bc55\n' > "$ME/.cache/thumbnails/CACHEDIR.TAG"
  head -c 100000 /dev/urandom > "$ME/.cache/thumbnails/1.png"
  printf '# one pattern per line\n*.tmp\n.cache\n' > "$ME/.config/lifeboat/excludes"
  cp "$WORK/pw" "$ROOT/etc/lifeboat/password"; cp "$WORK/pw" "$ROOT/etc/lifeboat/usb.pw"
  echo "alice-password" > "$ROOT/etc/lifeboat/alice.pw"; echo "new-password" > "$ROOT/etc/lifeboat/new.pw"
  chmod 600 "$ROOT"/etc/lifeboat/*.pw "$ROOT/etc/lifeboat/password"

  # The repository: two snapshots of Documents and Pictures (the second after some changes), and a second key.
  lb init >/dev/null
  lb backup "$ME/Documents" "$ME/Pictures" --tag home >/dev/null
  echo "Buy milk and eggs" > "$ME/Documents/notes.txt"
  head -c 100000 /dev/urandom > "$ME/Documents/taxes/2025.pdf"
  rm "$ME/Pictures/cat.jpg"
  lb backup "$ME/Documents" "$ME/Pictures" --tag home >/dev/null
  lb key add --new-password-file "$ROOT/etc/lifeboat/alice.pw" >/dev/null
  lb -r "$ROOT/mnt/usb/repo" init --copy-chunker-params-from "$LIFEBOAT_REPOSITORY" >/dev/null
  local ids key
  ids=$(lb snapshots --json | python3 -c "import json,sys; print(' '.join(json.loads(l)['short_id'] for l in sys.stdin if l.strip()))")
  key=$(lb key list --json | python3 -c "import json,sys; print([k['id'] for k in map(json.loads, sys.stdin) if not k['current']][0])")
  set -- $ids
  [ $# = 2 ] || fail "two snapshots prepared (got: $ids)"
  printf '4bd1c2a9\t%s\ne2f0b917\t%s\n6a3c5d21\t%s\n6a3c\t%s\n' "$1" "$2" "${key:0:8}" "${key:0:4}" > "$WORK/ids.tsv"

  cat > "$LIFEBOAT_SITES" <<YAML
sites:
  - {name: home, repository: $LIFEBOAT_REPOSITORY, password_file: $ROOT/etc/lifeboat/password, role: primary}
  - {name: usb, repository: $ROOT/mnt/usb/repo, password_file: $ROOT/etc/lifeboat/usb.pw, role: replica}
replication: {interval: 60s, max_backoff: 15m, state_file: $ROOT/var/lib/lifeboat/replication.json}
YAML
  # An application's SQLite database, followed by the plan's continuous source `app`.
  mkdir -p "$ROOT/var/lib/app"
  python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('PRAGMA journal_mode=WAL'); c.execute('CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)'); c.executemany('INSERT INTO notes (body) VALUES (?)', [('note %d' % i,) for i in range(100)]); c.commit()" "$ROOT/var/lib/app/app.db"
  # The plan file, at LIFEBOAT_CONFIG and as ./lifeboat.yaml in the home folder (the examples' working folder).
  cat > "$LIFEBOAT_CONFIG" <<YAML
sites:
  - {name: home, repository: $LIFEBOAT_REPOSITORY, password_file: $ROOT/etc/lifeboat/password, role: primary}
  - {name: usb, repository: $ROOT/mnt/usb/repo, password_file: $ROOT/etc/lifeboat/usb.pw, role: replica}
sources:
  - name: documents
    paths: [$ME/Documents]
    schedule: "*/15 * * * *"
    retention: {keep_hourly: 24, keep_daily: 7}
    objectives: {rpo: 30m, rto: 15m}
  - name: app
    sqlite: {path: $ROOT/var/lib/app/app.db, continuous: true}
    schedule: "0 3 * * *"
checks: {schedule: "0 3 * * *", read_data_subset: 5%, full_coverage_within: 30d}
prune: {schedule: "30 4 * * 0"}
replication: {state_file: $ROOT/var/lib/lifeboat/replication.json}
agent: {listen: 127.0.0.1:$(free_port), state: $ROOT/var/lib/lifeboat/agent.db}
drills:
  - {name: documents-weekly, source: documents, sandbox: $ROOT/var/lib/lifeboat/drills, playbook: $ME/playbooks/docs.yaml}
YAML
  cp "$LIFEBOAT_CONFIG" "$ME/lifeboat.yaml"
  cp "$WORK/haex/pg1.yaml" "$ROOT/etc/lifeboat/ha.yaml" 2>/dev/null; cp "$WORK/haex/pg1.yaml" "$ME/ha.yaml" 2>/dev/null
  cp "$WORK/haex/pg2.yaml" "$ROOT/etc/lifeboat/ha-pg2.yaml" 2>/dev/null
  mkdir -p "$ME/playbooks"
  cat > "$ME/playbooks/docs.yaml" <<YAML
name: restore documents
source: documents
steps:
  - {name: restore, lifeboat: restore}
  - {name: the notes are back, check: "grep -q milk {sandbox}$ME/Documents/notes.txt", within: 10s}
YAML
  # The agent once: it backs up the source and replicates it (for `lifeboat status`), then stops on SIGTERM.
  "$BIN" agent > "$WORK/agent.log" 2>&1 &  # not through lb(): $! must be the agent
  local agent=$!
  wait_log "$WORK/agent.log" "msg=replicated" 60 || { kill "$agent"; fail "the agent backs up and replicates at its first start"; return 1; }
  wait_log "$WORK/agent.log" "sqlite snapshot stored" 60 || { kill "$agent"; fail "the agent follows the SQLite source"; return 1; }
  kill -TERM "$agent"
  wait "$agent" || { fail "the agent exits 0 after SIGTERM"; return 1; }
  # A first drill, for `drill report`.
  lb drill run documents-weekly >/dev/null || { fail "the scratch world's drill passes"; return 1; }
  # The agent's own backup is now the newest snapshot; the examples' `latest` means the home folders again.
  lb backup "$ME/Documents" "$ME/Pictures" --tag home >/dev/null
  # A proxy pool on a free port; nothing listens at its backends (the proxy runs all the same, and says so).
  cat > "$ROOT/etc/lifeboat/proxy.yml" <<YAML
drain_timeout: 5s
pools:
  - name: web
    listen: 127.0.0.1:$(free_port)
    mode: failover
    check: {type: tcp, interval: 1s, timeout: 500ms, fall: 2, rise: 2}
    backends:
      - {name: primary, address: 127.0.0.1:$(free_port), priority: 1}
      - {name: standby, address: 127.0.0.1:$(free_port), priority: 2}
YAML
  # Served repositories: one user (bcrypt, as htpasswd -B makes), a certificate for --tls in the home folder.
  if command -v htpasswd >/dev/null; then
    htpasswd -B -b -c "$ROOT/backup/.htpasswd" alice alice-password 2>/dev/null
  else
    python3 -c "import crypt; print('alice:' + crypt.crypt('alice-password', crypt.mksalt(crypt.METHOD_BLOWFISH)))" > "$ROOT/backup/.htpasswd"
  fi
  make_cert; cp "$WORK/cert.pem" "$WORK/key.pem" "$ME/"
  pg_world || { fail "the scratch world's PostgreSQL"; return 1; }
  rm -rf "$WORK/base"; cp -a "$ROOT" "$WORK/base"
}

# PostgreSQL for the pg examples: a cluster outside ROOT (PGHOST and PGUSER name it) whose archive_command runs as
# the postgres user and pushes through a `lifeboat serve` of ROOT/srv (so that every file of ROOT's repository
# stays root's, whichever copy of ROOT is current); a base backup, rows before and after the moment that
# 2026-11-30T06:00:00Z stands for, a segment at /srv/pg/pg_wal, and the records replicated to the usb site.
PGBIN=/usr/lib/postgresql/15/bin
# The server and `lifeboat serve` start before the world is prepared, outside any test (a test's leftover
# processes are stopped after it), and stop at the end.
pg_world_start() {
  local d=$WORK/pgex
  PGEX_PORT=$(free_port)
  mkdir -p "$d/sock" "$d/archive" "$ROOT/srv"; chown -R postgres: "$d"
  cp "$BIN" "$d/lifeboat"; echo "secret-password" > "$d/pw"; chown postgres: "$d/pw"; chmod 600 "$d/pw"
  "$BIN" serve --path "$ROOT/srv" --listen "127.0.0.1:$PGEX_PORT" --no-auth > "$d/serve.log" 2>&1 &
  wait_port "$PGEX_PORT" || return 1
  runuser -u postgres -- "$PGBIN/initdb" -D "$d/data" -U postgres --auth=trust --no-sync > "$d/initdb.log" 2>&1 || return 1
  cat >> "$d/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$d/sock'
fsync = off
archive_mode = on
archive_command = 'cp %p $d/archive/%f && $d/lifeboat pg wal-push -r rest:http://127.0.0.1:$PGEX_PORT/lifeboat --password-file $d/pw %p'
CONF
  runuser -u postgres -- "$PGBIN/pg_ctl" start -W -D "$d/data" -l "$d/server.log" > /dev/null || return 1
  export PGHOST=$d/sock PGUSER=postgres
  wait_until 60 "PostgreSQL to accept connections" pg_isready -q
}
pg_world() {
  local d=$WORK/pgex i T
  psql -X -q -v ON_ERROR_STOP=1 -c "CREATE TABLE orders (id serial, note text)" || return 1
  lb pg backup > /dev/null || { tail -3 "$d/server.log"; return 1; }
  for i in 1 2 3; do
    psql -X -q -c "INSERT INTO orders (note) SELECT 'o' FROM generate_series(1, 100)" || return 1
    [ $i = 2 ] && T=$(psql -X -A -t -q -c "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    psql -X -q -c "SELECT pg_switch_wal()" > /dev/null || return 1
  done
  pg_archived() { [ -e "$d/archive/000000010000000000000004" ] && [ -z "$(ls "$d/data/pg_wal/archive_status" | grep ready)" ]; }
  wait_until 60 "PostgreSQL to archive its segments" pg_archived || return 1
  mkdir -p "$ROOT/srv/pg/pg_wal"; cp "$d/archive/000000010000000000000003" "$ROOT/srv/pg/pg_wal/"
  printf '2026-11-30T06:00:00Z\t%s\n' "$T" >> "$WORK/ids.tsv"
  lb pg check > /dev/null || { lb pg check; return 1; }
  lb replicate > /dev/null || return 1
}
# A two-node HA cluster for the ha examples (outside ROOT, as the pg one): etcd on loopback, pg1 bootstrapped first
# (so that it leads), pg2 its standby; their files at /etc/lifeboat/ha.yaml and ha-pg2.yaml in the world.
ha_world_start() {
  local d=$WORK/haex i
  command -v etcd > /dev/null && id postgres > /dev/null 2>&1 || return 1
  mkdir -p "$d"; chmod 755 "$d"
  local ec ep; ec=$(free_port); ep=$(free_port)
  etcd --data-dir "$d/etcd" --listen-client-urls "http://127.0.0.1:$ec" --advertise-client-urls "http://127.0.0.1:$ec" \
    --listen-peer-urls "http://127.0.0.1:$ep" --initial-advertise-peer-urls "http://127.0.0.1:$ep" --initial-cluster "default=http://127.0.0.1:$ep" > "$d/etcd.log" 2>&1 &
  wait_port "$ec" || return 1
  echo -n "repl-secret" > "$d/repl.pw"; echo -n "ha-token" > "$d/token"; chmod 600 "$d/repl.pw" "$d/token"
  for i in 1 2; do
    cat > "$d/pg$i.yaml" <<YAML
ha:
  cluster: examples
  etcd: {endpoints: ["http://127.0.0.1:$ec"]}
  ttl: 3s
  node:
    name: pg$i
    api: 127.0.0.1:$(free_port)
    token_file: $d/token
    postgres: {bin_dir: $PGBIN, data_dir: $d/data$i, listen: 127.0.0.1:$(free_port), password_file: $d/repl.pw,
               pg_hba: ["host replication replicator 127.0.0.1/32 scram-sha-256"], parameters: {fsync: "off"}}
YAML
  done
  "$BIN" ha run --config "$d/pg1.yaml" > "$d/pg1.log" 2>&1 &
  ha_leads() { "$BIN" ha list --config "$d/pg1.yaml" --json 2>/dev/null | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin).get("leader") == "pg1" else 1)'; }
  wait_until 120 "pg1 to bootstrap the HA cluster" ha_leads || { tail -5 "$d/pg1.log"; return 1; }
  "$BIN" ha run --config "$d/pg2.yaml" > "$d/pg2.log" 2>&1 &
  ha_standby() { "$BIN" ha list --config "$d/pg1.yaml" --json 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if any(m["name"] == "pg2" and m["role"] == "standby" and m["candidate"] for m in d["members"]) else 1)'; }
  wait_until 120 "pg2 to follow pg1" ha_standby || { tail -5 "$d/pg2.log"; return 1; }
}
ha_world_stop() {
  local p; p=$(pgrep -f -- "ha run --config $WORK/haex/pg")
  [ -n "$p" ] && kill -TERM $p && wait_until 30 "the HA examples' nodes to stop" eval '! pgrep -f -- "ha run --config $WORK/haex/pg" > /dev/null'
  for p in "$WORK"/haex/data*/postmaster.pid; do [ -f "$p" ] && kill -QUIT "$(head -1 "$p")" 2>/dev/null; done
  return 0
}

pg_world_stop() { [ -f "$WORK/pgex/data/postmaster.pid" ] && runuser -u postgres -- "$PGBIN/pg_ctl" stop -D "$WORK/pgex/data" -m fast > /dev/null; return 0; }

# The examples as they run: paths under ROOT, the real IDs ($WORK/run.tsv: path, description, command, command run).
rewrite_examples() {
  python3 - "$WORK/examples.tsv" "$WORK/ids.tsv" "$ROOT" > "$WORK/run.tsv" <<'PY'
import re, sys
ids = dict(l.rstrip("\n").split("\t") for l in open(sys.argv[2]))
root = sys.argv[3]
for line in open(sys.argv[1]):
    path, desc, cmd = line.rstrip("\n").split("\t")
    run = re.sub(r"\b(%s)\b" % "|".join(map(re.escape, ids)), lambda m: ids[m.group(1)], cmd)
    run = re.sub(r"""(?<![^\s=:'"])/(?=[^\s/])(?!(dev|proc|sys)(/|\s|$))""", lambda m: root + "/", run)
    print("\t".join((path, desc, cmd, run)))
PY
}

show_output() {  # the end of what the example printed (all of it with EXAMPLES_VERBOSE=1)
  if [ -n "${EXAMPLES_VERBOSE:-}" ]; then cat "$WORK/ex.out" "$WORK/ex.err"; else tail -n 1 "$WORK/ex.out"; fi | cut -c1-110 | sed 's/^/      > /'
}

reset_world() { rm -rf "$ROOT" && cp -a "$WORK/base" "$ROOT"; }

# in_world COMMAND…: becomes COMMAND, run as the example's user: in the home folder, HOME set, `lifeboat` on PATH.
# In a subshell: `(in_world …)` or `in_world … &`.
in_world() { cd "$ME" && HOME=$ME PATH=$WORK/bin:$PATH exec "$@"; }

run_example() {  # run_example N: the Nth line of run.tsv
  local path desc cmd run rc=0 pid ready="" pidfile="" target port out=$WORK/ex.out err=$WORK/ex.err
  IFS=$'\t' read -r path desc cmd run < <(sed -n "${1}p" "$WORK/run.tsv")
  echo "    $desc:"
  echo "    \$ $cmd"
  reset_world
  case "$run" in
    "lifeboat serve "*)
      port=$(free_port)
      if [[ $run == *--listen* ]]; then run=${run//127.0.0.1:8000/127.0.0.1:$port}; else run="$run --listen 127.0.0.1:$port"; fi
      [[ $run == *"127.0.0.1:$port"* ]] || { fail "a serve example listens on 127.0.0.1:8000 (for the test to choose the port)"; return 1; }
      ready=port ;;
    "lifeboat proxy "*) [[ $run == *--check* ]] || ready="log:listening on" ;;
    "lifeboat agent"*) ready="err:API listening" ;;
    "lifeboat sqlite replicate "*) ready="log:following" ;;
    *" --watch"*) ready="log:up to date" ;;
    *" init"|*" init "*)
      target=$(sed -nE 's/^lifeboat (.* )?(-r|--repo)[ =]([^ ]+).*/\3/p' <<< "$run")
      target=${target:-$LIFEBOAT_REPOSITORY}; target=${target/#\~/$ME}
      rm -rf "$target" ;;
  esac
  [ "$run" = "$cmd" ] || echo "      (runs as: ${run//$ROOT/ROOT})"
  if [ -z "$ready" ]; then
    (in_world timeout 120 bash -o pipefail -c "$run") > "$out" 2> "$err" || rc=$?
    if [ "$rc" -ne 0 ]; then
      tail -n 8 "$out" "$err" 2>/dev/null | sed 's/^/      | /'
      fail "exit $rc, expected 0"; return 1
    fi
    show_output
    return 0
  fi
  [[ $run =~ --pid-file[\ =]([^ ]+) ]] && pidfile=${BASH_REMATCH[1]}
  in_world bash -o pipefail -c "exec $run" > "$out" 2> "$err" &  # exec: the PID is lifeboat's
  pid=$!
  case "$ready" in
    port) wait_port "$port" 127.0.0.1 30 || { tail -n 8 "$out" "$err" | sed 's/^/      | /'; return 1; } ;;
    log:*) wait_log "$out" "${ready#log:}" 30 || { tail -n 8 "$err" | sed 's/^/      | /'; return 1; } ;;
    err:*) wait_log "$err" "${ready#err:}" 30 || return 1 ;;
  esac
  alive "$pid" || { fail "it stopped on its own"; return 1; }
  if [ -n "$pidfile" ]; then
    [ "$(cat "$pidfile" 2>/dev/null)" = "$pid" ] || { fail "--pid-file $pidfile holds its PID $pid (has: $(cat "$pidfile" 2>/dev/null))"; return 1; }
  fi
  kill -TERM "$pid"
  wait_until 30 "it to stop after SIGTERM" eval '! alive '"$pid" || return 1
  wait "$pid" || rc=$?
  [ "$rc" -eq 0 ] || { tail -n 8 "$out" "$err" | sed 's/^/      | /'; fail "exit $rc after SIGTERM, expected 0"; return 1; }
  if [ -n "$pidfile" ] && [ -e "$pidfile" ]; then fail "the PID file $pidfile is left after the stop"; return 1; fi
  show_output
  echo "      (ran until SIGTERM, then exited 0)"
}

selected() {  # selected NAME: whether EXAMPLES_TESTS (shell patterns) picks the test; all by default
  [ -z "${EXAMPLES_TESTS:-}" ] && return 0
  local p; for p in $EXAMPLES_TESTS; do [[ $1 == $p ]] && return 0; done; return 1
}

for t in t_every_command_has_examples t_help_subcommand_shows_the_same t_readme_lists_the_examples; do
  selected "$t" && run_test "$t"
done
# Each example is a test of its own: ex_backup_1, ex_key_list_2, ...
names=(); n=0; last=""; i=0
while IFS=$'\t' read -r path _; do
  i=$((i + 1)); [ "$path" = "$last" ] && n=$((n + 1)) || n=1; last=$path
  name="ex_${path// /_}_$n"
  selected "$name" || continue
  eval "$name() { run_example $i; }"
  names+=("$name")
done < "$WORK/examples.tsv"
if [ ${#names[@]} -gt 0 ]; then
  pg_world_start || echo "    PostgreSQL for the pg examples did not start"
  ha_world_start || echo "    the HA cluster for the ha examples did not start"
  run_test t_prepare_scratch_world
  if [ -d "$WORK/base" ]; then
    rewrite_examples
    for name in "${names[@]}"; do run_test "$name"; done
  fi
  pg_world_stop
  ha_world_stop
fi
echo "examples: $PASSED passed, $FAILED failed${FAILURES:+ (${FAILURES[*]})}"
[ "$FAILED" -eq 0 ]
