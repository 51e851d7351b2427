#!/usr/bin/env bash
# Integration tests of drills and playbooks with the release binary: restore drills from each site (files and
# SQLite), site-loss with the primary gone, from-kit, corruption; failures that must fail, naming the cause (a
# stale replica's RPO, a verification query, an RTO too tight, a hung step); playbooks linted, dry-run, run,
# failed and resumed; the mass-change detector on ransomware-like and ordinary changes; scheduled drills in the
# agent (metrics, status, alerts) and a drill killed with the agent (its sandbox swept at the next start);
# ransomware against an unprotected folder, an append-only server and an S3 bucket with Object Lock.
# Usage: tests/integration/drills.sh path/to/lifeboat   (DRILL_TESTS="t_a t_b" runs only those)
set -uo pipefail
source "$(dirname "$0")/lib.sh" "${1:?usage: drills.sh path/to/lifeboat}" drills
unset LIFEBOAT_PASSWORD_FILE LIFEBOAT_NOW
export LIFEBOAT_CACHE_DIR=$WORK/cache

# Two local sites (home primary, usb replica), a tree, a SQLite database; backed up (tagged as the agent does)
# and replicated.
setup_world() {
  rm -rf "$WORK"/{home,usb,www,sandbox,agent.db*,drills,audit.jsonl,replication.json,self-backup}
  echo pw-home > "$WORK/home.pw"; echo pw-usb > "$WORK/usb.pw"; chmod 600 "$WORK"/*.pw
  lb -r "$WORK/home" --password-file "$WORK/home.pw" init >/dev/null
  lb -r "$WORK/usb" --password-file "$WORK/usb.pw" init --copy-chunker-params-from "$WORK/home" --from-password-file "$WORK/home.pw" >/dev/null
  mkdir -p "$WORK/www/site" "$WORK/playbooks"
  echo "<h1>hello drill</h1>" > "$WORK/www/site/index.html"
  head -c 300000 /dev/urandom > "$WORK/www/site/logo.png"
  chmod 640 "$WORK/www/site/index.html"; ln -sf index.html "$WORK/www/site/home.html"
  rm -f "$WORK/shop.db"
  sqlite3 "$WORK/shop.db" "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT); INSERT INTO orders (item) VALUES ('boat'), ('oar');"
  API_PORT=$(free_port)
  write_playbook
  write_plan
  backup_www
  lb -r "$WORK/home" --password-file "$WORK/home.pw" backup --stdin --stdin-filename shop-db.sqlite --tag source=shop-db < "$WORK/shop.db" >/dev/null
  replicate
}
replicate() {
  cat > "$WORK/sites.yaml" <<YAML
sites:
  - {name: home, repository: $WORK/home, password_file: $WORK/home.pw, role: primary}
  - {name: usb, repository: $WORK/usb, password_file: $WORK/usb.pw, role: replica}
replication: {state_file: $WORK/replication.json}
YAML
  lb replicate --config "$WORK/sites.yaml" >/dev/null
}
backup_www() { lb -r "$WORK/home" --password-file "$WORK/home.pw" backup "$WORK/www" --tag source=www "$@" >/dev/null; }

write_playbook() {
  cat > "$WORK/playbooks/www.yaml" <<'YAML'
name: restore www
source: www
variables: {page: site/index.html}
steps:
  - name: restore
    lifeboat: restore
    with: {source: "{source}", site: "{site}", target: "{sandbox}"}
  - name: the page is there
    check: "grep -q 'hello drill' .{www}/{page}"
    within: 5s
    interval: 200ms
  - name: serve it
    run: ["sh", "-c", "echo serving on port $LIFEBOAT_PORT"]
cleanup:
  - name: stop
    run: "true"
YAML
  sed -i "s#{www}#$WORK/www#" "$WORK/playbooks/www.yaml"
}

# write_plan [EXTRA-DRILLS-YAML]: www (RPO ${RPO:-1h}, RTO ${RTO:-15m}) and shop-db, drills of each.
write_plan() {
  cat > "$WORK/lifeboat.yaml" <<YAML
sites:
  - {name: home, repository: $WORK/home, password_file: $WORK/home.pw, role: primary}
  - {name: usb, repository: $WORK/usb, password_file: $WORK/usb.pw, role: replica}
sources:
  - name: www
    paths: [$WORK/www]
    schedule: "${WWW_SCHEDULE:-*/30 * * * *}"
    objectives: {rpo: ${RPO:-1h}, rto: ${RTO:-15m}}
  - name: shop-db
    sqlite: {path: $WORK/shop.db}
    schedule: "*/30 * * * *"
    objectives: {rpo: 1h, rto: 30m}
drills:
  - {name: www-restore, source: www, scenario: restore, sandbox: $WORK/sandbox, playbook: playbooks/www.yaml${DRILL_SCHEDULE:-}}
  - {name: shop-restore, source: shop-db, from: [usb], sandbox: $WORK/sandbox}
  - {name: www-site-loss, source: www, scenario: site-loss, sandbox: $WORK/sandbox, playbook: playbooks/www.yaml}
  - {name: www-corruption, source: www, scenario: corruption, from: [usb], sandbox: $WORK/sandbox}
  - {name: www-from-kit, source: www, scenario: from-kit, from: [usb], sandbox: $WORK/sandbox, playbook: playbooks/www.yaml}
${1:-}
replication: {interval: 2s, max_backoff: 2s, state_file: $WORK/replication.json}
agent: {listen: 127.0.0.1:$API_PORT, state: $WORK/agent.db, self_backup: "every 1h"}
YAML
}
drill() { lb drill run --config "$WORK/lifeboat.yaml" "$@"; }
no_sandbox_left() { [ -z "$(ls -A "$WORK/sandbox" 2>/dev/null)" ] || { ls -la "$WORK/sandbox"; fail "no sandbox is left behind"; }; }
report_field() {  # report_field FILE SITE FIELD: from `drill run --json` output
  python3 -c "import json,sys; r=[json.loads(l) for l in open('$1') if l.startswith('{')]; r=[x for x in r if x.get('message_type')=='drill_report' and x['site']=='$2'][-1]; print(r['$3'])"
}

t_restore_drill_from_each_site() {
  setup_world
  drill www-restore --json > "$WORK/out" 2>"$WORK/err" || { cat "$WORK/out" "$WORK/err"; fail "the restore drill passes at home and usb"; }
  [ "$(report_field "$WORK/out" home passed)" = True ] && [ "$(report_field "$WORK/out" usb passed)" = True ] || fail "both sites passed"
  python3 - "$WORK/out" <<'PY' || fail "the report measures RTO and RPO, with the restore's phases and every step"
import json, sys
for r in (json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")):
    assert 0 < r["rto_seconds"] < 60 and 0 <= r["rpo_seconds"] < 600, r
    assert r["rto_objective"] == 900 and r["rpo_objective"] == 3600
    assert {"fetch", "restore", "verify", "playbook", "overhead"} <= set(r["phases"]), r["phases"]
    names = [s["name"] for s in r["steps"]]
    assert names == ["restore", "the page is there", "serve it", "stop"], names
    assert r["files"] >= 2 and r["snapshot"], r
PY
  no_sandbox_left
  local id; id=$(report_field "$WORK/out" usb id)
  for ext in json md html; do [ -s "$WORK/drills/$id.$ext" ] || fail "report $id.$ext written"; done
  grep -q "PASSED" "$WORK/drills/$id.html" && ! grep -qi "<script" "$WORK/drills/$id.html" || fail "the HTML report is self-contained and says PASSED"
  lb drill list --config "$WORK/lifeboat.yaml" > "$WORK/list"
  grep -E "^www-restore +www +restore +usb .* passed" "$WORK/list" >/dev/null || { cat "$WORK/list"; fail "drill list shows the result"; }
  lb drill report --config "$WORK/lifeboat.yaml" www-restore | grep -q "^| RTO |" || fail "drill report prints the Markdown"
  # SQLite: no playbook: restore, verify, PRAGMA integrity_check.
  drill shop-restore > "$WORK/out" 2>&1 || { cat "$WORK/out"; fail "the SQLite drill passes"; }
  grep -q "integrity_check: ok" "$WORK/out" || { cat "$WORK/out"; fail "the engine's check ran"; }
  # --keep keeps the sandbox, restored.
  drill www-restore --site usb --keep > "$WORK/out" 2>&1 || fail "a kept drill passes"
  ls "$WORK"/sandbox/lifeboat-drill-www-restore-usb-*/"$WORK"/www/site/index.html >/dev/null || fail "the kept sandbox holds the restored tree"
}

t_site_loss_never_reads_the_primary() {
  setup_world
  mv "$WORK/home" "$WORK/home.lost"
  drill www-site-loss > "$WORK/out" 2>&1 || { cat "$WORK/out"; fail "site-loss passes from usb alone with the primary gone"; }
  grep -q "drill www-site-loss at usb: PASSED" "$WORK/out" || fail "it drilled usb"
  mv "$WORK/home.lost" "$WORK/home"
  # A newer backup reaches home only: usb misses the RPO when the disaster comes two hours later.
  local later; later=$(( $(date +%s) + 7200 ))
  LIFEBOAT_NOW=$later backup_www --time "$later"
  LIFEBOAT_NOW=$((later + 5)) expect_code 23 drill www-site-loss
  grep -q "RPO of .* exceeds the objective of 1h 00m: the newest snapshot at usb is too old" "$WORK/out" || { cat "$WORK/out"; fail "the stale replica fails on its RPO, named"; }
  LIFEBOAT_NOW=$((later + 5)) drill www-restore --site home > "$WORK/out" 2>&1 || { cat "$WORK/out"; fail "home, up to date, passes"; }
  no_sandbox_left
}

t_failures_are_named() {
  setup_world
  # A verification query that fails.
  sed -i 's/hello drill/goodbye/' "$WORK/playbooks/www.yaml"
  expect_code 23 drill www-restore --site usb
  grep -q 'step "the page is there" failed: did not succeed within 5s' "$WORK/out" || { cat "$WORK/out"; fail "the failed check is named"; }
  write_playbook
  # An objective too tight for the measured RTO.
  sed -i 's/echo serving on port $LIFEBOAT_PORT/sleep 1.2/' "$WORK/playbooks/www.yaml"
  RTO=1s write_plan
  expect_code 23 drill www-restore --site usb
  grep -q "the RTO of .* exceeds the objective of 1.00 s" "$WORK/out" || { cat "$WORK/out"; fail "the RTO is compared with the objective"; }
  write_playbook; write_plan
  # A hung step is killed at its timeout, with everything it started.
  cat >> "$WORK/playbooks/www.yaml" <<'YAML'
  - name: hangs
    run: "sleep 300 & sleep 301"
    timeout: 1s
YAML
  python3 - "$WORK/playbooks/www.yaml" <<'PY'
import sys
p = sys.argv[1]; t = open(p).read()
# The hung step belongs among the steps, before the cleanup.
body, cleanup = t.split("cleanup:\n")
steps_cleanup = cleanup.split("  - name: hangs")
open(p, "w").write(body + "  - name: hangs" + steps_cleanup[1] + "cleanup:\n" + steps_cleanup[0])
PY
  lb playbook lint "$WORK/playbooks/www.yaml" >/dev/null || fail "the edited playbook lints"
  expect_code 23 drill www-restore --site usb
  grep -q 'step "hangs" failed: did not finish within 1s and was killed' "$WORK/out" || { cat "$WORK/out"; fail "the hung step is named"; }
  ! pgrep -s 0 -f "sleep 30[01]" >/dev/null || fail "the hung step's processes are gone"  # this suite's session only
  no_sandbox_left
  # A playbook with an error is refused before its first step.
  write_playbook
  sed -i 's/echo serving on port/echo {nope} serving on port/' "$WORK/playbooks/www.yaml"
  expect_code 23 drill www-restore --site usb
  grep -q "undefined variable {nope}" "$WORK/out" && ! grep -q "step \"restore\"" "$WORK/out" || { cat "$WORK/out"; fail "a broken playbook is refused first"; }
}

t_corruption_names_every_damaged_pack() {
  setup_world
  local before; before=$(find "$WORK/usb" -type f -exec md5sum {} + | sort | md5sum)
  drill www-corruption > "$WORK/out" 2>&1 || { cat "$WORK/out"; fail "check --read-data names every damaged pack"; }
  grep -q "damaged packs named: \([0-9]\) of \1" "$WORK/out" || { cat "$WORK/out"; fail "the count of named packs is shown"; }
  [ "$before" = "$(find "$WORK/usb" -type f -exec md5sum {} + | sort | md5sum)" ] || fail "the real site is untouched"
  lb -r "$WORK/usb" --password-file "$WORK/usb.pw" check --read-data >/dev/null || fail "the real site checks clean"
  no_sandbox_left
}

t_from_kit_rebuilds_the_plan_from_a_site() {
  setup_world
  # The agent's own backup (plan and state) must be at the site: one agent start makes it, replication carries it.
  "$BIN" agent --config "$WORK/lifeboat.yaml" > "$WORK/agent.log" 2>&1 &
  local agent=$!
  wait_log "$WORK/agent.log" 'msg=replicated' 60 || { kill "$agent"; return 1; }
  wait_until 60 "the agent's own backup at usb" sh -c "'$BIN' -r '$WORK/usb' --password-file '$WORK/usb.pw' snapshots --tag source=lifeboat-agent --json | grep -q short_id"
  kill -TERM "$agent"; wait "$agent" || true
  drill www-from-kit > "$WORK/out" 2>&1 || { cat "$WORK/out"; fail "from-kit passes"; }
  grep -q "rebuild the plan" "$WORK/out" && grep -q "restore the agent's own backup" "$WORK/out" || fail "the kit's steps are shown"
  # Without the agent's backup at the site, from-kit fails and says why.
  rm -rf "$WORK/usb"; lb -r "$WORK/usb" --password-file "$WORK/usb.pw" init --copy-chunker-params-from "$WORK/home" --from-password-file "$WORK/home.pw" >/dev/null
  expect_code 23 drill www-from-kit
  grep -q "the agent's own backup cannot be restored from the kit's site" "$WORK/out" || { cat "$WORK/out"; fail "the missing self-backup is named"; }
  no_sandbox_left
}

t_playbook_lint_run_fail_and_resume() {
  setup_world
  cat > "$WORK/bad.yaml" <<'YAML'
steps:
  - name: one
    run: "echo {undefined}"
YAML
  expect_code 1 lb playbook lint "$WORK/bad.yaml"
  grep -q "bad.yaml:3:10: step \"one\": undefined variable {undefined}" "$WORK/err" || { cat "$WORK/err"; fail "line:column of an undefined variable"; }
  printf 'steps:\n  - name: one\n    reboot: now\n' > "$WORK/bad.yaml"
  expect_code 1 lb playbook lint "$WORK/bad.yaml"
  grep -q "bad.yaml:3:5: unknown key \"reboot\"" "$WORK/err" || { cat "$WORK/err"; fail "an unknown action is named at its place"; }
  lb playbook lint --var undefined=x "$WORK/bad.yaml" >/dev/null 2>&1 && fail "still an error"
  cat > "$WORK/playbooks/two.yaml" <<YAML
name: two steps
source: www
steps:
  - {name: restore, lifeboat: restore, with: {target: "{sandbox}/r"}}
  - {name: flag is set, check: "test -f $WORK/flag", within: 1s, interval: 100ms}
  - {name: done, run: "echo done > {sandbox}/done"}
YAML
  lb playbook run --config "$WORK/lifeboat.yaml" "$WORK/playbooks/two.yaml" --target "$WORK/pb" --dry-run > "$WORK/out"
  grep -q "2. flag is set: check test -f $WORK/flag" "$WORK/out" && grep -q "target=$WORK/pb/r" "$WORK/out" || { cat "$WORK/out"; fail "dry-run resolves every step"; }
  [ ! -e "$WORK/pb" ] || fail "a dry run runs nothing"
  rm -f "$WORK/flag"
  expect_code 24 lb playbook run --config "$WORK/lifeboat.yaml" "$WORK/playbooks/two.yaml" --target "$WORK/pb"
  local id; id=$(sed -nE 's/^run ([0-9T-]+[0-9a-f]+): .*/\1/p' "$WORK/out" | head -1)
  [ -n "$id" ] && grep -q -- "--resume $id" "$WORK/out" || { cat "$WORK/out"; fail "the failed run says how to resume"; }
  [ -f "$WORK/pb/r$WORK/www/site/index.html" ] || fail "step 1 restored"
  touch "$WORK/flag"
  lb playbook run --config "$WORK/lifeboat.yaml" "$WORK/playbooks/two.yaml" --resume "$id" > "$WORK/out" 2>&1 || { cat "$WORK/out"; fail "the resumed run finishes"; }
  grep -q "resuming run $id at step 2" "$WORK/out" && ! grep -q "^ok   1. restore" "$WORK/out" || { cat "$WORK/out"; fail "the resumed run starts at the failed step"; }
  [ "$(cat "$WORK/pb/done")" = done ] || fail "the last step ran with the first run's {sandbox}"
  python3 - "$WORK/audit.jsonl" "$id" <<'PY' || fail "the audit log holds the run: start, each step, the resume, the end"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
mine = [r for r in rows if r.get("run_id") == sys.argv[2]]
kinds = [r["message_type"] for r in mine]
assert kinds[0] == "playbook_run" and "playbook_resume" in kinds and kinds.count("playbook_end") == 2, kinds
steps = [(r["name"], r["result"]) for r in mine if r["message_type"] == "playbook_step"]
assert steps == [("restore", "ok"), ("flag is set", "failed"), ("flag is set", "ok"), ("done", "ok")], steps
PY
  expect_code 1 lb playbook run --config "$WORK/lifeboat.yaml" "$WORK/playbooks/two.yaml" --resume "$id"
  grep -q "finished every step already" "$WORK/err" || fail "a finished run is not resumed again"
}

t_mass_change_flags_encryption_not_ordinary_change() {
  setup_world
  rm -rf "$WORK/www"; mkdir -p "$WORK/www"
  for i in $(seq 1 40); do python3 -c "import sys; sys.stdout.write(''.join('record %d of file $i: the quick brown fox\n' % j for j in range(120)))" > "$WORK/www/f$i.txt"; done
  WWW_SCHEDULE="*/2 * * * * *" write_plan
  "$BIN" agent --config "$WORK/lifeboat.yaml" > "$WORK/agent.log" 2>&1 &
  local agent=$! n
  wait_until 60 "a first backup of www" sh -c "grep 'backup done' '$WORK/agent.log' | grep -q 'source=www'"
  # An ordinary change: 2 of 40 files edited.
  for i in 1 2; do echo "an edit" >> "$WORK/www/f$i.txt"; done
  n=$(grep -c 'backup done.*source=www' "$WORK/agent.log")
  wait_until 60 "a backup after the edit" sh -c "[ \$(grep -c 'backup done.*source=www' '$WORK/agent.log') -gt $n ]"
  ! grep -q "mass change" "$WORK/agent.log" || { kill "$agent"; fail "a 5% change is not flagged"; }
  # Ransomware: every file overwritten with random bytes.
  for f in "$WORK"/www/*.txt; do head -c "$(stat -c %s "$f")" /dev/urandom > "$f.tmp" && mv "$f.tmp" "$f"; done
  wait_log "$WORK/agent.log" 'msg="mass change"' 60 || { kill "$agent"; fail "the encrypted backup is flagged"; return 1; }
  grep 'msg="mass change"' "$WORK/agent.log" | grep -q "40 of 40 files changed" || { grep "mass change" "$WORK/agent.log"; kill "$agent"; fail "the detector's figures are logged"; }
  kill -TERM "$agent"; wait "$agent" || true
  sqlite3 "$WORK/agent.db" "SELECT result, error FROM run WHERE job='backup:www' AND error LIKE '%mass change%'" | grep -q "^warning|suspicious mass change" || fail "the run is a warning naming it"
  # `lifeboat backup` by hand runs the detector too: text again, then encrypted.
  for i in $(seq 1 40); do python3 -c "import sys; sys.stdout.write(''.join('entry %d of file $i\n' % j for j in range(150)))" > "$WORK/www/f$i.txt"; done
  lb -r "$WORK/home" --password-file "$WORK/home.pw" backup "$WORK/www" --json > "$WORK/out" 2>"$WORK/err" || fail "a backup by hand"
  for f in "$WORK"/www/*.txt; do head -c "$(stat -c %s "$f")" /dev/urandom > "$f.tmp" && mv "$f.tmp" "$f"; done
  lb -r "$WORK/home" --password-file "$WORK/home.pw" backup "$WORK/www" --json > "$WORK/out" 2>"$WORK/err" || fail "the encrypted backup by hand is saved"
  grep -q "warning: suspicious mass change against snapshot" "$WORK/err" || { cat "$WORK/err"; fail "the backup by hand warns"; }
  python3 -c "import json; s=[json.loads(l) for l in open('$WORK/out') if '\"summary\"' in l][-1]; m=s['mass_change']; assert m['suspicious'] and m['changed'] == 40, m" \
    || { cat "$WORK/out"; fail "its JSON summary carries the figures"; }
}

t_agent_runs_drills_on_schedule_and_sweeps_killed_ones() {
  setup_world
  DRILL_SCHEDULE=', schedule: "*/3 * * * * *"' write_plan
  # With a token, so that the dashboard serves the drills' reports.
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/agent.token"; chmod 600 "$WORK/agent.token"
  sed -i "s#agent: {listen: 127.0.0.1:$API_PORT,#agent: {listen: 127.0.0.1:$API_PORT, token_file: $WORK/agent.token,#" "$WORK/lifeboat.yaml"
  local auth="Authorization: Bearer $(cat "$WORK/agent.token")"
  "$BIN" agent --config "$WORK/lifeboat.yaml" > "$WORK/agent.log" 2>&1 &
  local agent=$!
  wait_port "$API_PORT"
  wait_until 90 "a scheduled drill at both sites" sh -c "curl -s -H '$auth' http://127.0.0.1:$API_PORT/metrics | grep -c '^lifeboat_drill_passed{' | grep -q 2"
  curl -s -H "$auth" "http://127.0.0.1:$API_PORT/metrics" > "$WORK/metrics"
  grep -q '^lifeboat_drill_passed{drill="www-restore",site="usb"} 1' "$WORK/metrics" && grep -q '^lifeboat_drill_rto_seconds{drill="www-restore",site="home"}' "$WORK/metrics" \
    && grep -q '^lifeboat_drill_rpo_seconds{' "$WORK/metrics" && grep -q '^lifeboat_drill_last_run_timestamp_seconds{' "$WORK/metrics" || { grep drill "$WORK/metrics"; fail "drill metrics"; }
  promtool check metrics < "$WORK/metrics" >/dev/null 2>&1 || { promtool check metrics < "$WORK/metrics"; fail "promtool check metrics"; }
  lb status --config "$WORK/lifeboat.yaml" --json > "$WORK/status" || true
  python3 -c "import json; s=json.load(open('$WORK/status')); d=[x for x in s['drills'] if x['drill']=='www-restore']; assert len(d)==2 and all(x['passed'] for x in d), d; assert [x for x in s['sources'] if x['name']=='www'][0]['measured_rto_seconds'] > 0" \
    || { cat "$WORK/status"; fail "status shows drills and the measured RTO"; }
  # The dashboard: www's page links each drill's report and offers to run the drill; the report is served from
  # the state database, as a page with no script; a made-up or hostile report name is not found.
  local U="http://127.0.0.1:$API_PORT" code
  curl -sS --fail-with-body -H "$auth" "$U/ui/services/www" > "$WORK/www.html" || fail "www's page"
  grep -q 'Run the drill www-restore now' "$WORK/www.html" || fail "www's page offers the drill"
  local report; report=$(grep -o 'href="/ui/drills/[^"]*"' "$WORK/www.html" | head -1 | sed 's#href="/ui/drills/##; s#"##')
  [ -n "$report" ] || { cat "$WORK/www.html"; fail "www's page links a drill report"; }
  curl -sS --fail-with-body -D "$WORK/report.h" -H "$auth" "$U/ui/drills/$report" > "$WORK/report.html" || fail "the drill report $report"
  grep -q "Drill www-restore at site" "$WORK/report.html" && grep -q "PASSED" "$WORK/report.html" || fail "the drill report's content"
  grep -qi "^content-security-policy: default-src 'none'; style-src 'unsafe-inline'" "$WORK/report.h" || { cat "$WORK/report.h"; fail "the report's page runs no script"; }
  for bad in nope ..%2F..%2Fagent.db "%3Cscript%3E" "$(printf 'x%.0s' $(seq 200))"; do
    code=$(curl -s -o "$WORK/bad.html" -w '%{http_code}' -H "$auth" "$U/ui/drills/$bad"); [ "$code" = 404 ] || fail "drill report $bad (got $code)"
  done
  code=$(curl -s -o /dev/null -w '%{http_code}' "$U/ui/drills/$report"); [ "$code" = 401 ] || fail "a drill report without a login (got $code)"
  # A drill that hangs when the agent is killed: its sandbox and processes go at the next start.
  kill -TERM "$agent"; wait "$agent" || true
  sed -i 's/echo serving on port $LIFEBOAT_PORT/sleep 120/' "$WORK/playbooks/www.yaml"
  "$BIN" agent --config "$WORK/lifeboat.yaml" > "$WORK/agent.log" 2>&1 &
  agent=$!
  wait_until 60 "a drill mid-step" sh -c 'pgrep -s 0 -f "^sleep 120" >/dev/null'
  ls -d "$WORK"/sandbox/lifeboat-drill-* >/dev/null 2>&1 || fail "the drill has its sandbox"
  kill -KILL "$agent"; wait "$agent" 2>/dev/null || true
  write_playbook
  "$BIN" agent --config "$WORK/lifeboat.yaml" > "$WORK/agent.log" 2>&1 &
  agent=$!
  wait_log "$WORK/agent.log" "removed the sandbox of an interrupted drill" 60 || { kill "$agent"; return 1; }
  ! pgrep -s 0 -f "^sleep 120" >/dev/null || fail "the killed drill's step is stopped"
  # A failing drill alerts once (drill_failed in the log), and clears when it passes again.
  sed -i 's/hello drill/goodbye/' "$WORK/playbooks/www.yaml"
  wait_log "$WORK/agent.log" "event=drill_failed" 90 || { kill "$agent"; return 1; }
  write_playbook
  wait_until 90 "the drill passing again" sh -c "grep -q 'passes again' '$WORK/agent.log'"
  kill -TERM "$agent"; wait "$agent" || true
}

# Ransomware: home (a local folder: unprotected), vault (`lifeboat serve --append-only`), cloud (S3 with Object Lock).
t_ransomware_needs_a_protected_site() {
  setup_world
  # Documents worth encrypting: text the detector can see turn random.
  for i in $(seq 1 30); do python3 -c "import sys; sys.stdout.write(''.join('line %d of document $i: the quick brown fox\n' % j for j in range(100)))" > "$WORK/www/site/doc$i.txt"; done
  backup_www
  start_moto
  mkdir -p "$WORK/vault-data"
  start_serve vault --path "$WORK/vault-data" --no-auth --append-only
  local VAULT="rest:${SERVE_URL}vault" CLOUD="s3:http://127.0.0.1:$MOTO_PORT/drill-bucket/cloud"
  local GOV="s3:http://127.0.0.1:$MOTO_PORT/drill-bucket/gov"
  lb -r "$VAULT" --password-file "$WORK/home.pw" init --copy-chunker-params-from "$WORK/home" --from-password-file "$WORK/home.pw" >/dev/null
  lb -r "$CLOUD" --password-file "$WORK/home.pw" --s3-object-lock-days 1 --s3-object-lock-mode compliance init --copy-chunker-params-from "$WORK/home" --from-password-file "$WORK/home.pw" >/dev/null
  lb -r "$GOV" --password-file "$WORK/home.pw" --s3-object-lock-days 1 init --copy-chunker-params-from "$WORK/home" --from-password-file "$WORK/home.pw" >/dev/null
  python3 - "$WORK/lifeboat.yaml" "$VAULT" "$CLOUD" "$WORK" <<'PY'
import sys
p, vault, cloud, work = sys.argv[1:]
t = open(p).read()
t = t.replace("role: replica}\n", "role: replica}\n"
  f"  - {{name: vault, repository: '{vault}', password_file: {work}/home.pw, role: replica}}\n"
  f"  - {{name: cloud, repository: '{cloud}', password_file: {work}/home.pw, role: replica, object_lock: {{days: 1, mode: compliance}}}}\n"
  f"  - {{name: gov, repository: '{cloud[:-5]}gov', password_file: {work}/home.pw, role: replica, object_lock: {{days: 1}}}}\n", 1)
t = t.replace("drills:\n", "drills:\n"
  f"  - {{name: www-ransomware, source: www, scenario: ransomware, from: [home, vault, cloud, gov], sandbox: {work}/sandbox}}\n"
  f"  - {{name: www-ransomware-home, source: www, scenario: ransomware, from: [home], sandbox: {work}/sandbox}}\n", 1)
open(p, "w").write(t)
PY
  cat > "$WORK/sites-rw.yaml" <<YAML
sites:
  - {name: home, repository: $WORK/home, password_file: $WORK/home.pw, role: primary}
  - {name: vault, repository: '$VAULT', password_file: $WORK/home.pw, role: replica}
  - {name: cloud, repository: '$CLOUD', password_file: $WORK/home.pw, role: replica, object_lock: {days: 1, mode: compliance}}
  - {name: gov, repository: '$GOV', password_file: $WORK/home.pw, role: replica, object_lock: {days: 1}}
replication: {state_file: $WORK/replication-rw.json}
YAML
  lb replicate --config "$WORK/sites-rw.yaml" >/dev/null || fail "replication to vault and cloud"
  local vault_before cloud_before
  vault_before=$(find "$WORK/vault-data/vault" -type f ! -path "*/locks/*" | sort | xargs md5sum | md5sum)
  cloud_before=$(lb -r "$CLOUD" --password-file "$WORK/home.pw" snapshots --json | grep -c short_id)
  drill www-ransomware --json > "$WORK/out" 2>"$WORK/err" || { cat "$WORK/out" "$WORK/err"; fail "the drill passes: vault and cloud kept the clean snapshot"; }
  python3 - "$WORK/out" <<'PY' || { cat "$WORK/out"; fail "home is unprotected; vault and cloud restored the clean snapshot; the encrypted backup was flagged"; }
import json, sys
r = {x["site"]: x for x in (json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")) if x.get("message_type") == "drill_report"}
for site in ("home", "gov"):   # a folder; governance retention, which the client's keys may bypass (moto grants it)
    assert r[site]["unprotected"] is True and not r[site]["passed"], r[site]["failures"]
    assert any("site %s is unprotected" % site in f for f in r[site]["failures"]), r[site]["failures"]
for site in ("vault", "cloud"):
    x = r[site]
    assert x["passed"] and x["unprotected"] is False, (site, x["failures"])
    steps = {s["name"]: s for s in x["steps"]}
    assert steps["back up the encrypted copy"]["facts"]["suspicious"] == "true", steps["back up the encrypted copy"]
    restore = steps["restore the clean snapshot"]
    assert restore["result"] == "ok" and int(restore["facts"]["verified_files"]) >= 2, restore
    assert x["rto_seconds"] > 0 and x["rpo_seconds"] >= 0, x
assert "as of" in {s["name"]: s for s in r["cloud"]["steps"]}["restore the clean snapshot"]["summary"]
PY
  # The real repositories are untouched; the drill repositories sit beside them.
  [ "$vault_before" = "$(find "$WORK/vault-data/vault" -type f ! -path "*/locks/*" | sort | xargs md5sum | md5sum)" ] || fail "the vault's repository is untouched"
  [ "$cloud_before" = "$(lb -r "$CLOUD" --password-file "$WORK/home.pw" snapshots --json | grep -c short_id)" ] || fail "the cloud's snapshots are untouched"
  ls -d "$WORK"/vault-data/lifeboat-drill/www-ransomware/* >/dev/null || fail "the vault's drill repository is beside the real one"
  [ ! -e "$WORK/lifeboat-drill" ] || fail "the local drill repository is removed"
  lb -r "$WORK/home" --password-file "$WORK/home.pw" check >/dev/null || fail "home checks clean"
  no_sandbox_left
  # With only the unprotected site the drill fails, and says why.
  expect_code 23 drill www-ransomware-home
  grep -q "site home is unprotected" "$WORK/out" && grep -q "FAILED: no site kept the clean snapshot" "$WORK/out" || { cat "$WORK/out"; fail "an unprotected site fails the drill, named"; }
}

# node-crash: clients through the agent's proxy pool while the primary backend is killed; the switch is measured,
# the playbook fences the crashed node, requests succeed after it, and no backend is left disabled.
t_node_crash_measures_the_switch() {
  setup_world
  local A B P
  A=$(free_port); B=$(free_port); P=$(free_port)
  python3 "$HERE/echo.py" server "$A" & local pid_a=$!
  python3 "$HERE/echo.py" server "$B" &
  wait_port "$A"; wait_port "$B"
  cat > "$WORK/playbooks/fence.yaml" <<YAML
name: fence the crashed web node
steps:
  - {name: fence it, lifeboat: disable-backend, with: {pool: web, backend: primary}}
  - {name: web answers, check: "python3 -c \"import socket; socket.create_connection(('127.0.0.1', $P), 1)\"", within: 5s, interval: 100ms}
YAML
  cat > "$WORK/playbooks/fence-slow.yaml" <<YAML
steps:
  - {name: fence it, lifeboat: disable-backend, with: {pool: web, backend: primary}}
  - {name: a long step, run: "sleep 60"}
YAML
  cat >> "$WORK/lifeboat.yaml" <<YAML
proxy:
  pools:
    - name: web
      listen: 127.0.0.1:$P
      mode: failover
      check: {type: tcp, interval: 200ms, timeout: 200ms, fall: 1, rise: 1}
      backends:
        - {name: primary, address: 127.0.0.1:$A, priority: 1, chaos: true}
        - {name: standby, address: 127.0.0.1:$B, priority: 2, chaos: true}
    - name: calm
      listen: 127.0.0.1:$(free_port)
      mode: failover
      backends:
        - {name: only, address: 127.0.0.1:$B}
        - {name: spare, address: 127.0.0.1:$A, priority: 2, chaos: true}
YAML
  python3 - "$WORK/lifeboat.yaml" "$pid_a" "$WORK" <<'PY'
import sys
p, pid, work = sys.argv[1:]
t = open(p).read()
t = t.replace("drills:\n", "drills:\n"
  f"  - {{name: web-crash, source: www, scenario: node-crash, pool: web, crash: 'kill -9 {pid}', sandbox: {work}/sandbox,\n"
  f"     playbook: playbooks/fence.yaml, clients: {{interval: 20ms, timeout: 500ms, duration: 20s}}}}\n"
  f"  - {{name: calm-crash, source: www, scenario: node-crash, pool: calm, crash: 'true', sandbox: {work}/sandbox}}\n"
  f"  - {{name: web-stopped, source: www, scenario: node-crash, pool: web, crash: 'true', sandbox: {work}/sandbox,\n"
  f"     playbook: playbooks/fence-slow.yaml, clients: {{duration: 1s}}}}\n", 1)
open(p, "w").write(t)
PY
  "$BIN" agent --config "$WORK/lifeboat.yaml" > "$WORK/agent.log" 2>&1 &
  local agent=$!
  wait_port "$API_PORT"; wait_port "$P"
  active() { curl -s "http://127.0.0.1:$API_PORT/proxy/status" | python3 -c "import json,sys; p=[x for x in json.load(sys.stdin)['pools'] if x['name']=='web'][0]; print(p['active'], [b['disabled'] for b in p['backends']])"; }
  wait_until 20 "the pool to serve from primary" eval '[ "$(active)" = "primary [False, False]" ]'
  # A drill interrupted after its playbook disabled a backend: the interrupted process enables it again.
  "$BIN" drill run --config "$WORK/lifeboat.yaml" web-stopped > "$WORK/stopped.out" 2>&1 &
  local stopped=$!
  wait_until 30 "the playbook to disable primary" eval '[ "$(active)" = "standby [True, False]" ]'
  local rc=0; kill -TERM "$stopped"; wait "$stopped" || rc=$?
  [ "$rc" = 130 ] || { cat "$WORK/stopped.out"; fail "an interrupted drill exits 130"; }
  [ "$(active)" = "standby [False, False]" ] || { active; cat "$WORK/stopped.out"; fail "the interrupted drill enabled primary again"; }
  curl -s -X POST "http://127.0.0.1:$API_PORT/proxy/pools/web/promote/primary" >/dev/null
  wait_until 20 "the pool to serve from primary again" eval '[ "$(active)" = "primary [False, False]" ]'
  # Killed (SIGKILL), it cannot: its undo journal makes the agent enable the backend.
  "$BIN" drill run --config "$WORK/lifeboat.yaml" web-stopped > "$WORK/stopped.out" 2>&1 &
  stopped=$!
  wait_until 30 "the playbook to disable primary" eval '[ "$(active)" = "standby [True, False]" ]'
  kill -KILL "$stopped"; wait "$stopped" 2>/dev/null || true
  wait_until 20 "the agent to enable primary again" eval '[ "$(active)" = "standby [False, False]" ]'
  grep -q "a drill that died left a backend disabled: enabled again" "$WORK/agent.log" || fail "the agent logs it"
  [ -z "$(ls -A "$WORK/drills/undo")" ] || fail "the journal is gone"
  curl -s -X POST "http://127.0.0.1:$API_PORT/proxy/pools/web/promote/primary" >/dev/null
  wait_until 20 "the pool to serve from primary again" eval '[ "$(active)" = "primary [False, False]" ]'
  drill web-crash --json > "$WORK/out" 2>"$WORK/err" || { cat "$WORK/out" "$WORK/err"; kill "$agent"; fail "the node-crash drill passes"; return 1; }
  python3 - "$WORK/out" <<'PY' || { cat "$WORK/out"; fail "the report has the switch time, the requests, the playbook and the RTO"; }
import json, sys
r = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")][-1]
assert r["site"] == "pool:web" and r["passed"], r["failures"]
names = [s["name"] for s in r["steps"]]
assert names[:3] == ["find the serving backend", "requests go through the pool", "crash the serving backend"], names
assert "the proxy switches" in names and "fence it" in names and "web answers" in names and names[-1] == "requests succeed after recovery", names
assert 0 < r["switch_seconds"] < 10 and r["requests"] > 10 and r["failed_requests"] >= 0, r
assert 0 < r["rto_seconds"] < 60 and r.get("rpo_seconds") is None, r
assert any("is enabled again" in n for n in r["notes"]), r["notes"]
PY
  [ "$(active)" = "standby [False, False]" ] || { active; fail "standby serves, and the fenced primary is enabled again"; }
  # A pool whose serving backend is not marked chaos: refused before anything is crashed.
  expect_code 23 drill calm-crash
  grep -q "serves from only, which is not marked \`chaos: true\`" "$WORK/out" || { cat "$WORK/out"; fail "the drill touches chaos backends only"; }
  kill -TERM "$agent"; wait "$agent" || true
  # Without the agent, the drill cannot see the pool and says so.
  expect_code 23 drill web-crash
  grep -q "the agent's API does not answer for pool web" "$WORK/out" || { cat "$WORK/out"; fail "no agent: named"; }
}

# PostgreSQL (pgbench scale 5): the dump restored and checked (pg_restore --list), then the playbook, as postgres,
# starts a scratch server in the sandbox on a free port, restores into it and counts the rows.
PGBIN=/usr/lib/postgresql/15/bin
t_postgresql_drill_restores_into_a_scratch_server() {
  setup_world
  local d=$WORK/pg1
  mkdir -p "$d/sock"; chown -R postgres: "$d"
  runuser -u postgres -- "$PGBIN/initdb" -D "$d/data" -U postgres --auth=trust --no-sync > "$d/initdb.log" 2>&1 || { tail -5 "$d/initdb.log"; fail "initdb"; return 1; }
  runuser -u postgres -- "$PGBIN/pg_ctl" start -W -D "$d/data" -l "$d/server.log" -o "-c listen_addresses='' -k $d/sock -c fsync=off" > /dev/null
  trap 'runuser -u postgres -- "$PGBIN/pg_ctl" stop -D "$WORK/pg1/data" -m immediate >/dev/null 2>&1' EXIT
  wait_until 60 "PostgreSQL to accept connections" pg_isready -q -h "$d/sock" -U postgres || return 1
  createdb -h "$d/sock" -U postgres bench
  pgbench -i -q -s 5 -h "$d/sock" -U postgres bench > /dev/null 2>&1 || fail "pgbench -i"
  echo "host=$d/sock user=postgres dbname=bench" > "$WORK/pg.dsn"
  pg_dump --format=custom -h "$d/sock" -U postgres bench | lb -r "$WORK/home" --password-file "$WORK/home.pw" backup --stdin --stdin-filename pg.pgdump --tag source=pg >/dev/null
  replicate
  cat > "$WORK/playbooks/pg.yaml" <<YAML
name: PostgreSQL into a scratch server
source: pg
steps:
  - {name: restore, lifeboat: restore}
  - {name: initdb, run: ["$PGBIN/initdb", "-D", "{sandbox}/pgdata", "-U", "postgres", "--auth=trust", "--no-sync"], timeout: 2m}
  - {name: start, run: ["$PGBIN/pg_ctl", "start", "-w", "-D", "{sandbox}/pgdata", "-l", "{sandbox}/server.log", "-o", "-c listen_addresses='' -k {sandbox} -p {port}"], timeout: 1m}
  - {name: pg_restore, run: ["pg_restore", "-h", "{sandbox}", "-p", "{port}", "-U", "postgres", "-d", "postgres", "--create", "{sandbox}/pg.pgdump"], timeout: 5m}
  - {name: rows, check: "psql -X -h {sandbox} -p {port} -U postgres -d bench -tAc 'select count(*) from pgbench_accounts' | grep -qx {rows}", within: 10s}
cleanup:
  - {name: stop, run: ["$PGBIN/pg_ctl", "stop", "-D", "{sandbox}/pgdata", "-m", "immediate"]}
YAML
  python3 - "$WORK/lifeboat.yaml" "$WORK" <<'PY'
import sys
p, work = sys.argv[1:]
t = open(p).read()
t = t.replace("drills:\n", "drills:\n"
  f"  - {{name: pg-restore, source: pg, sandbox: {work}/sandbox, playbook: playbooks/pg.yaml, run_as: postgres, variables: {{rows: '500000'}}}}\n"
  f"  - {{name: pg-wrong, source: pg, from: [usb], sandbox: {work}/sandbox, playbook: playbooks/pg.yaml, run_as: postgres, variables: {{rows: '7'}}}}\n", 1)
t = t.replace("drills:\n", f"  - {{name: pg, postgres: {{dsn_file: {work}/pg.dsn}}, schedule: '0 3 * * *', objectives: {{rpo: 1d, rto: 10m}}}}\ndrills:\n", 1)
open(p, "w").write(t)
PY
  lb config validate --config "$WORK/lifeboat.yaml" > "$WORK/validate" 2>&1 || { cat "$WORK/validate"; fail "the plan with the PostgreSQL drill validates"; }
  drill pg-restore --json > "$WORK/out" 2>"$WORK/err" || { cat "$WORK/out" "$WORK/err"; fail "the PostgreSQL drill passes at home and usb"; }
  python3 - "$WORK/out" <<'PY' || { cat "$WORK/out"; fail "restored, pg_restore --list, the scratch server's row count, as postgres"; }
import json, sys
rs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
assert sorted(r["site"] for r in rs) == ["home", "usb"], rs
for r in rs:
    steps = {s["name"]: s for s in r["steps"]}
    assert "pg_restore --list" in steps["restore"]["detail"], steps["restore"]
    assert steps["rows"]["result"] == "ok" and steps["stop"]["result"] == "ok", r["steps"]
    assert r["phases"]["playbook"] > 0 and r["rto_seconds"] > 0, r
PY
  ! pgrep -u postgres -f "pgdata" >/dev/null || fail "the scratch servers are stopped"
  expect_code 23 drill pg-wrong
  grep -q 'step "rows" failed: did not succeed within 10s' "$WORK/out" || { cat "$WORK/out"; fail "a wrong row count fails the drill, named"; }
  no_sandbox_left
}

ALL="t_restore_drill_from_each_site t_site_loss_never_reads_the_primary t_failures_are_named t_corruption_names_every_damaged_pack
t_from_kit_rebuilds_the_plan_from_a_site t_playbook_lint_run_fail_and_resume t_mass_change_flags_encryption_not_ordinary_change
t_agent_runs_drills_on_schedule_and_sweeps_killed_ones t_ransomware_needs_a_protected_site
t_node_crash_measures_the_switch t_postgresql_drill_restores_into_a_scratch_server"
for t in ${DRILL_TESTS:-$ALL}; do run_test "$t"; done
echo "drills: $PASSED passed, $FAILED failed${FAILURES:+ (${FAILURES[*]})}"
[ "$FAILED" -eq 0 ]
