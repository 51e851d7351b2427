#!/usr/bin/env bash
# Integration tests of `lifeboat agent` with the release binary: a local primary and a moto S3 replica, sources on
# a 2-second schedule, replication, prune and checks; a real Prometheus server scraping the agent and firing a
# rule when a site stops; a webhook receiver getting the alert and its clearing; SIGHUP with a broken plan;
# SIGKILL in the middle of a backup, then a restart; SIGTERM while a job runs; hooks that hang.
# Usage: tests/integration/agent.sh path/to/lifeboat   (AGENT_TESTS="t_a t_b" runs only those)
set -uo pipefail
source "$(dirname "$0")/lib.sh" "${1:?usage: agent.sh path/to/lifeboat}" agent
unset LIFEBOAT_PASSWORD_FILE
export LIFEBOAT_RETRY=2,0.05,0.2 LIFEBOAT_TIMEOUT=2 LIFEBOAT_CONNECT_TIMEOUT=1 LIFEBOAT_CACHE_DIR=$WORK/cache
REPO_ROOT=$(cd "$HERE/../.." && pwd)

# The world: two sites (home: a folder; cloud: moto S3), a webhook receiver, a token, a source tree, a SQLite db.
setup_world() {
  echo pw-home > "$WORK/home.pw"; echo pw-cloud > "$WORK/cloud.pw"; chmod 600 "$WORK"/*.pw
  start_moto
  printf 'AWS_ACCESS_KEY_ID=test\nAWS_SECRET_ACCESS_KEY=test\n' > "$WORK/s3.env"
  unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
  CLOUD="s3:http://127.0.0.1:$MOTO_PORT/lifeboat-dr/web"
  lb -r "$WORK/home" --password-file "$WORK/home.pw" init >/dev/null
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test lb -r "$CLOUD" --password-file "$WORK/cloud.pw" \
    init --copy-chunker-params-from "$WORK/home" --from-password-file "$WORK/home.pw" >/dev/null
  mkdir -p "$WORK/www/site"
  echo "<h1>hello</h1>" > "$WORK/www/site/index.html"
  head -c 200000 /dev/urandom > "$WORK/www/site/logo.png"
  echo "scratch" > "$WORK/www/site/x.tmp"
  rm -f "$WORK/shop.db"
  sqlite3 "$WORK/shop.db" "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT); INSERT INTO orders (item) VALUES ('boat'), ('oar');"
  head -c 32 /dev/urandom | base64 > "$WORK/agent.token"
  HOOK_PORT=$(free_port)
  python3 "$HERE/webhook.py" "$HOOK_PORT" "$WORK/hooks.jsonl" "${HOOK_FAIL_FIRST:-0}" &
  wait_port "$HOOK_PORT"
  API_PORT=$(free_port)
}

# write_plan [EXTRA-SOURCES-YAML]: the plan; RPO of `www` is $RPO (default 1m).
write_plan() {
  cat > "$WORK/lifeboat.yaml" <<YAML
sites:
  - {name: home, repository: $WORK/home, password_file: $WORK/home.pw, role: primary}
  - {name: cloud, repository: "$CLOUD", password_file: $WORK/cloud.pw, credentials_file: $WORK/s3.env, role: replica, limit_upload: 102400}
sources:
  - name: www
    paths: [$WORK/www]
    exclude: ["*.tmp"]
    schedule: "*/2 * * * * *"
    retention: {keep_last: 3}
    objectives: {rpo: ${RPO:-1m}, rto: 15m}
    hooks: {before: ["echo before \$LIFEBOAT_SOURCE >> $WORK/hook.log"], after: ["echo after >> $WORK/hook.log"], timeout: 10s}
  - name: shop-db
    sqlite: {path: $WORK/shop.db}
    schedule: "*/2 * * * * *"
    retention: {keep_last: 2}
    objectives: {rpo: 1m, rto: 30m}
${1:-}
checks: {schedule: "*/3 * * * * *", read_data_subset: 50%}
prune: {schedule: "*/5 * * * * *"}
replication: {interval: 2s, max_backoff: 2s, max_lag: 1h, state_file: $WORK/replication.json}
limits: {jobs: 2, nice: 5, ionice: best-effort}
alerts:
  - {type: webhook, url: "http://127.0.0.1:$HOOK_PORT/alert"}
${ALERTS_EXTRA:-}
agent: {listen: 127.0.0.1:$API_PORT, token_file: $WORK/agent.token, state: $WORK/agent.db}
YAML
}

start_agent() {  # start_agent [ARGS…]: in the background (AGENT_PID), logs in $WORK/agent.log (appended), until the API listens
  local starts; starts=$(grep -c "API listening" "$WORK/agent.log" 2>/dev/null || true)
  "$BIN" agent --config "$WORK/lifeboat.yaml" "$@" >> "$WORK/agent.log" 2>&1 &  # not through lb(): $! must be the agent
  AGENT_PID=$!
  wait_until 60 "the agent's API to listen" eval '[ "$(grep -c "API listening" "$WORK/agent.log")" -gt "${starts:-0}" ]' || return 1
  wait_port "$API_PORT"
}
restart_log() { : > "$WORK/agent.log"; }
stop_agent() {  # SIGTERM; the agent exits 0
  local rc=0
  kill -TERM "$AGENT_PID"; wait "$AGENT_PID" || rc=$?
  [ "$rc" = 0 ] || { tail -5 "$WORK/agent.log"; fail "SIGTERM: exit 0 (got $rc)"; }
}

api() {  # api METHOD PATH: with the token; prints the body, fails on an HTTP error
  curl -sS --fail-with-body -X "$1" -H "Authorization: Bearer $(cat "$WORK/agent.token")" "http://127.0.0.1:$API_PORT$2"
}
status_json() { lb status --config "$WORK/lifeboat.yaml" --json || [ $? = 22 ]; }  # 22: an RPO is missed
# newest SOURCE SITE: the newest snapshot time the agent reports ("None" if none)
newest() {
  status_json > "$WORK/newest.json"
  python3 -c "import json,sys; s=json.loads(sys.stdin.read()); print([x for x in [r for r in s['sources'] if r['name']=='$1'][0]['sites'] if x['site']=='$2'][0].get('newest_snapshot'))" < "$WORK/newest.json" || { head -c 2000 "$WORK/newest.json"; return 1; }
}
has_snapshot() { [ "$(newest "$1" "$2")" != None ]; }
newest_api() {  # newest_api SOURCE SITE: the same from the running agent's API (while the plan file is broken)
  api GET /status | python3 -c "import json,sys; s=json.load(sys.stdin); print([x for x in [r for r in s['sources'] if r['name']=='$1'][0]['sites'] if x['site']=='$2'][0].get('newest_snapshot'))"
}
# events EVENT [SITE] [RESOLVED]: how many webhook alerts of EVENT (at SITE; resolved true/false) arrived
events() {
  python3 - "$WORK/hooks.jsonl" "$1" "${2:-}" "${3:-}" <<'PY'
import json, sys
n = 0
for l in open(sys.argv[1]) if __import__("os").path.exists(sys.argv[1]) else []:
    r = json.loads(l)
    if r["answered"] != 200 or not r["path"].startswith("/alert"): continue
    b = json.loads(r["body"])
    if b["event"] != sys.argv[2]: continue
    if sys.argv[3] and b.get("site") != sys.argv[3]: continue
    if sys.argv[4] and str(b["resolved"]).lower() != sys.argv[4]: continue
    n += 1
print(n)
PY
}
history_has() {  # history_has JOB RESULT [SITE]
  api GET "/history?job=$1&limit=50" | python3 -c "import json,sys; h=json.load(sys.stdin); sys.exit(0 if any(r['result']=='$2' and ('$3'=='' or r.get('site')=='$3') for r in h) else 1)"
}
cloud() { AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test lb -r "$CLOUD" --password-file "$WORK/cloud.pw" "$@"; }

t_agent_runs_the_plan() {
  setup_world; write_plan
  start_agent
  # Both sources reach both sites: backed up to home, replicated to cloud, within a few schedules.
  for s in www shop-db; do for site in home cloud; do
    wait_until 60 "$s at $site" has_snapshot "$s" "$site"
  done; done
  wait_until 30 "every objective met" eval 'status_json | python3 -c "import json,sys; sys.exit(0 if json.loads(sys.stdin.read())[\"objectives_met\"] else 1)"'
  # Prune and check ran at both sites; retention keeps the newest 3 of www at home.
  for site in home cloud; do
    wait_until 60 "prune at $site" history_has prune success "$site"
    wait_until 60 "check at $site" history_has check success "$site"
  done
  wait_until 30 "retention at home" eval '[ "$(lb -r "$WORK/home" --password-file "$WORK/home.pw" snapshots --tag source=www --json | grep -c "\"id\"")" -le 4 ]'
  grep -q "^before www" "$WORK/hook.log" && grep -q "^after" "$WORK/hook.log" || fail "the hooks ran, with LIFEBOAT_SOURCE"

  # What the cloud holds restores: the database is a consistent copy, the tree lacks the excluded file.
  cloud restore latest --tag source=shop-db --target "$WORK/r-db" -q
  [ "$(sqlite3 "$WORK/r-db/shop-db.sqlite" "SELECT group_concat(item) FROM orders")" = "boat,oar" ] || fail "the database restores from the replica"
  cloud restore latest --tag source=www --target "$WORK/r-www" -q
  cmp "$WORK/www/site/logo.png" "$WORK/r-www$WORK/www/site/logo.png" || fail "the tree restores from the replica"
  [ ! -e "$WORK/r-www$WORK/www/site/x.tmp" ] || fail "excluded files are not backed up"

  # The API: a token is needed; status, history, metrics; pause and resume; run now.
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$API_PORT/status")" = 401 ] || fail "no token: 401"
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer wrong' "http://127.0.0.1:$API_PORT/status")" = 401 ] || fail "a wrong token: 401"
  api GET /metrics > "$WORK/metrics.txt"
  for m in 'lifeboat_source_rpo_seconds{source="www",site="cloud"}' 'lifeboat_source_rpo_objective_seconds{source="www"} 60' \
           'lifeboat_job_runs_total{job="backup:www",result="success"}' 'lifeboat_replication_lag_seconds{site="cloud"}' \
           'lifeboat_scrub_coverage_ratio{site="home"}' 'lifeboat_site_up{site="cloud"} 1' 'lifeboat_job_start_delay_seconds{job="backup:www"}'; do
    grep -qF "$m" "$WORK/metrics.txt" || fail "/metrics has $m"
  done
  if command -v promtool >/dev/null; then promtool check metrics < "$WORK/metrics.txt" || fail "promtool accepts /metrics"; fi
  ! grep -q "pw-home\|pw-cloud\|AWS_SECRET\|$(cat "$WORK/agent.token")" "$WORK/metrics.txt" "$WORK/agent.log" || fail "no secret in metrics or logs"
  api POST /jobs/backup:www/pause > /dev/null
  local runs; runs=$(api GET "/history?job=backup:www&limit=10000" | python3 -c "import json,sys; print(len(json.load(sys.stdin)))")
  [ "$(status_json | python3 -c "import json,sys; print([r for r in json.loads(sys.stdin.read())['sources'] if r['name']=='www'][0]['paused'])")" = True ] || fail "paused shows"
  sleep 4.5  # two schedules pass while paused (the test of an absence needs a span)
  local after; after=$(api GET "/history?job=backup:www&limit=10000" | python3 -c "import json,sys; print(len(json.load(sys.stdin)))")
  [ "$after" -le $((runs + 1)) ] || fail "a paused source does not run ($runs runs, then $after)"
  api POST /jobs/backup:www/resume > /dev/null
  wait_until 20 "www runs again" eval '[ "$(api GET "/history?job=backup:www&limit=10000" | python3 -c "import json,sys; print(len(json.load(sys.stdin)))")" -gt '"$after"' ]'
  api POST /jobs/nope/run > /dev/null 2>&1 && fail "an unknown job is refused"
  [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $(cat "$WORK/agent.token")" "http://127.0.0.1:$API_PORT/jobs/backup:nope/run")" = 404 ] || fail "unknown job: 404"
  api POST /jobs/check/run | grep -q '"result"' || fail "run now answers"

  # Text status through the API, then from the database once the agent is gone.
  lb status --config "$WORK/lifeboat.yaml" > "$WORK/status.txt" || fail "status exits 0 while objectives are met"
  grep -q "agent running since" "$WORK/status.txt" && grep -qE "^www +home" "$WORK/status.txt" || { cat "$WORK/status.txt"; fail "text status"; }
  stop_agent
  grep -q "agent stopped" "$WORK/agent.log" || fail "the agent says it stopped"
  lb status --config "$WORK/lifeboat.yaml" > "$WORK/status2.txt" || fail "status from the database"
  grep -q "from its database" "$WORK/status2.txt" || fail "status says it read the database"
  # An hour later, nothing has run: every RPO is missed, exit 22.
  local rc=0; LIFEBOAT_NOW=$(( $(date +%s) + 3600 )) lb status --config "$WORK/lifeboat.yaml" --json > "$WORK/late.json" || rc=$?
  [ "$rc" = 22 ] || fail "missed objectives: exit 22 (got $rc)"
  grep -q '"objectives_met":false' "$WORK/late.json" || fail "objectives_met false"
  [ "$(events agent_restart)" = 0 ] || fail "a clean start sends no agent_restart"
}

t_site_outage_alerts_once_and_prometheus_fires() {
  setup_world; RPO=6s write_plan
  # Prometheus scrapes the agent every second with the token and evaluates the shipped rules.
  local PROM_PORT; PROM_PORT=$(free_port)
  mkdir -p "$WORK/prom"
  cat > "$WORK/prom/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [$REPO_ROOT/docs/deploy/prometheus-rules.yml]
scrape_configs:
  - job_name: lifeboat
    authorization: {credentials_file: $WORK/agent.token}
    static_configs: [{targets: ["127.0.0.1:$API_PORT"]}]
YAML
  prometheus --config.file="$WORK/prom/prometheus.yml" --storage.tsdb.path="$WORK/prom/data" \
    --web.listen-address="127.0.0.1:$PROM_PORT" > "$WORK/prom.log" 2>&1 &
  wait_port "$PROM_PORT" 127.0.0.1 60
  start_agent
  wait_until 60 "www at cloud" has_snapshot www cloud
  prom_alert() {  # prom_alert NAME SITE: firing in Prometheus
    curl -s "http://127.0.0.1:$PROM_PORT/api/v1/alerts" | python3 -c "import json,sys; a=json.load(sys.stdin)['data']['alerts']; sys.exit(0 if any(x['labels'].get('alertname')=='$1' and x['labels'].get('site')=='$2' and x['state']=='firing' for x in a) else 1)"
  }
  wait_until 30 "Prometheus to scrape the agent" eval 'curl -s "http://127.0.0.1:$PROM_PORT/api/v1/query?query=up%7Bjob%3D%22lifeboat%22%7D" | grep -q "\"1\"\]"'
  prom_alert LifeboatRPOBreached cloud && fail "no alert while the site is up"

  # The cloud stops answering (moto frozen): replication fails; the RPO at cloud passes its 6 s objective.
  kill -STOP "$MOTO_PID"
  wait_until 60 "the webhook to get rpo_breach for cloud" eval '[ "$(events rpo_breach cloud false)" -ge 1 ]'
  wait_until 60 "Prometheus to fire LifeboatRPOBreached for cloud" prom_alert LifeboatRPOBreached cloud
  prom_alert LifeboatRPOBreached home && fail "home still meets its objective"
  wait_until 30 "the site-down alert" eval '[ "$(events failure cloud false)" -ge 1 ]'
  # Backups to home go on while cloud is down.
  local before; before=$(newest www home)
  wait_until 20 "backups to home go on" eval '[ "$(newest www home)" != "$before" ]'
  [ "$(events rpo_breach cloud false)" -le 2 ] || fail "one rpo_breach per source at cloud, not one per check ($(events rpo_breach cloud false))"
  [ "$(events failure cloud false)" = 1 ] || fail "one site-down alert, not one per pass ($(events failure cloud false))"
  local rc=0; lb status --config "$WORK/lifeboat.yaml" > "$WORK/st.txt" || rc=$?
  [ "$rc" = 22 ] || fail "status exits 22 while an RPO is missed (got $rc)"

  # Back: replication catches up, the RPO clears, the webhook hears it once, the Prometheus alert ends.
  kill -CONT "$MOTO_PID"
  wait_until 60 "the rpo_breach at cloud to clear" eval '[ "$(events rpo_breach cloud true)" -ge 1 ]'
  wait_until 60 "Prometheus to stop firing" eval '! prom_alert LifeboatRPOBreached cloud'
  wait_until 30 "the site-up alert" eval '[ "$(events failure cloud true)" = 1 ]'
  python3 - "$WORK/hooks.jsonl" <<'PY' || fail "webhook bodies are complete JSON without secrets"
import json, sys
for l in open(sys.argv[1]):
    b = json.loads(json.loads(l)["body"])
    assert {"event", "message", "time", "resolved", "host"} <= b.keys(), b
    assert "pw-" not in l and "AWS_SECRET" not in l, l
PY
  stop_agent
}

t_webhook_retries_until_delivered() {
  HOOK_FAIL_FIRST=2 setup_world
  # Beside the webhook: healthchecks pings (to the same receiver) and a command that pages (into a file).
  ALERTS_EXTRA="  - {type: healthchecks, url: \"http://127.0.0.1:$HOOK_PORT/hc/0f1e\"}
  - {type: command, command: [sh, -c, 'echo \"\$0|\$1|\$2\" >> $WORK/paged', '{event}', '{source}', '{message}'], on: [failure]}" \
    write_plan '  - {name: broken, command: [sh, -c, "exit 4"], schedule: "*/2 * * * * *"}'
  start_agent
  # The command source fails: one failure alert (retried past two 500s), not one per run.
  wait_until 60 "the failure alert" eval '[ "$(events failure)" -ge 1 ]'
  wait_until 30 "a third failing run" eval '[ "$(api GET "/history?job=backup:broken" | grep -o "\"failure\"" | wc -l)" -ge 3 ]'
  [ "$(events failure)" = 1 ] || fail "one failure alert while the job keeps failing ($(events failure))"
  [ "$(grep -c '"answered": 500' "$WORK/hooks.jsonl")" = 2 ] || fail "two refused deliveries before"
  api GET "/history?job=backup:broken&limit=1" | grep -q "exit status 4" || fail "the run's error names the exit status"
  # healthchecks: /start at each start, the bare URL on success, /fail on failure.
  wait_until 20 "healthchecks pings" eval 'grep -q "\"/hc/0f1e/fail\"" "$WORK/hooks.jsonl" && grep -q "\"/hc/0f1e/start\"" "$WORK/hooks.jsonl" && grep -q "\"/hc/0f1e\"" "$WORK/hooks.jsonl"'
  grep '"/hc/0f1e/fail"' "$WORK/hooks.jsonl" | grep -q "backup:broken" || fail "the failing job is named in its fail ping"
  # The command target: only failures (its `on`), once, with the placeholders filled in.
  wait_until 20 "the paging command" test -s "$WORK/paged"
  [ "$(cat "$WORK/paged")" = "failure|broken|backup of broken to home failed: sh failed with exit status 4; no snapshot was saved" ] \
    || { cat "$WORK/paged"; fail "the command got {event}, {source} and {message}"; }
  stop_agent
}

t_sighup_with_a_broken_plan_keeps_the_running_one() {
  setup_world; write_plan
  start_agent --pid-file "$WORK/agent.pid"
  wait_until 60 "www at home" has_snapshot www home
  cp "$WORK/lifeboat.yaml" "$WORK/good.yaml"
  sed -i 's#schedule: "\*/2 \* \* \* \* \*"#schedule: "*/2 * * * * * *"#' "$WORK/lifeboat.yaml"  # 7 fields: an error
  kill -HUP "$(cat "$WORK/agent.pid")"
  wait_log "$WORK/agent.log" "reload refused, the running plan stays" 20
  grep -q "lifeboat.yaml:[0-9]*:[0-9]*" <(grep "reload refused" "$WORK/agent.log") || fail "the refusal names file:line:column"
  alive "$AGENT_PID" || fail "the agent runs on"
  local before; before=$(newest_api www home)
  wait_until 20 "backups go on with the old plan" eval '[ "$(newest_api www home)" != "$before" ]'
  # A good change is taken: a new source appears and runs.
  cp "$WORK/good.yaml" "$WORK/lifeboat.yaml"
  write_plan '  - {name: notes, command: [sh, -c, "echo a note"], schedule: "*/2 * * * * *"}'
  kill -HUP "$AGENT_PID"
  wait_log "$WORK/agent.log" "plan reloaded" 20
  wait_until 30 "the new source to back up" has_snapshot notes home
  stop_agent
  [ ! -e "$WORK/agent.pid" ] || fail "the PID file is removed"
  # A plan with errors never starts the agent.
  sed -i 's#rpo: 1m, rto: 30m#rpo: 1s, rto: 30m#' "$WORK/lifeboat.yaml"
  local rc=0; lb agent --config "$WORK/lifeboat.yaml" > "$WORK/bad.out" 2>&1 || rc=$?
  [ "$rc" = 1 ] || fail "a plan with errors: exit 1 (got $rc)"
  grep -q "the agent does not start" "$WORK/bad.out" && grep -q "lifeboat.yaml:[0-9]*:[0-9]*: error" "$WORK/bad.out" || { cat "$WORK/bad.out"; fail "says why, with file:line:column"; }
}

t_sigkill_mid_backup_then_restart() {
  setup_world
  # A source whose dump takes long: killed mid-backup.
  write_plan "  - {name: slow, command: [sh, -c, \"head -c 100000 /dev/urandom; echo started > $WORK/slow.started; sleep 20\"], schedule: every 1h}"
  start_agent
  wait_until 60 "www at home" has_snapshot www home
  wait_until 30 "the slow backup to be under way" test -e "$WORK/slow.started"
  local runs_before; runs_before=$(sqlite3 "$WORK/agent.db" "SELECT count(*) FROM run WHERE result='success'")
  kill -KILL "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null || true
  # The state database survived: every run reported done is there, the killed one is still `running`.
  [ "$(sqlite3 "$WORK/agent.db" "PRAGMA integrity_check")" = ok ] || fail "the database is intact"
  [ "$(sqlite3 "$WORK/agent.db" "SELECT count(*) FROM run WHERE result='success'")" -ge "$runs_before" ] || fail "no finished run lost"
  [ "$(sqlite3 "$WORK/agent.db" "SELECT count(*) FROM run WHERE job='backup:slow' AND result='running'")" = 1 ] || fail "the killed run was recorded as running"
  ls "$WORK/home/locks" | grep -q . || fail "the dead agent left its lock"
  # Restart: the run becomes `interrupted`, one agent_restart alert, the stale lock is no obstacle.
  rm -f "$WORK/slow.started"
  start_agent --stop-timeout 2s
  wait_log "$WORK/agent.log" "did not stop cleanly" 20
  [ "$(sqlite3 "$WORK/agent.db" "SELECT count(*) FROM run WHERE job='backup:slow' AND result='interrupted'")" = 1 ] || fail "recorded as interrupted"
  wait_until 30 "the agent_restart alert" eval '[ "$(events agent_restart)" = 1 ]'
  # It is caught up: the hourly source last started before the kill is not due again, the others go on; prune
  # (which must not delete what the dead backup wrote while its lock is there) succeeds.
  local t; t=$(newest www home)
  wait_until 20 "backups after the restart" eval '[ "$(newest www home)" != "$t" ]'
  wait_until 60 "prune after the restart" eval 'api GET "/history?job=prune&limit=5" | grep -q "\"success\""'
  api POST /jobs/backup:slow/run > /dev/null
  wait_until 30 "the slow backup to start again" test -e "$WORK/slow.started"
  # SIGTERM while it runs, with a short stop timeout: cancelled, locks released, exit 0.
  kill -TERM "$AGENT_PID"
  wait_until 30 "the agent to stop" eval '! alive "$AGENT_PID"'
  wait "$AGENT_PID" || fail "SIGTERM with a job running: exit 0"
  grep -q "stop timeout: cancelling backup:slow" "$WORK/agent.log" || fail "the log says the job was cancelled"
  [ "$(sqlite3 "$WORK/agent.db" "SELECT value FROM agent WHERE key='clean_stop'")" = 1 ] || fail "a clean stop is recorded"
  [ -z "$(ls "$WORK/home/locks")" ] || fail "no lock left after the stop (the dead agent's removed at the restart)"
  grep -q "removed locks of dead processes" "$WORK/agent.log" || fail "the log names the dead agent's locks it removed"
}

t_hook_timeout_kills_the_hook() {
  setup_world
  write_plan "  - {name: hung, paths: [$WORK/www], schedule: every 1h, hooks: {before: [\"sleep 300 # hung-hook-$$\"], timeout: 1s}}"
  start_agent --stop-timeout 2s
  wait_until 30 "the hook to time out" eval 'api GET "/history?job=backup:hung" | grep -q "did not finish within 1 s"'
  pgrep -f "hung-hook-$$" > /dev/null && fail "the hung hook was killed"
  [ "$(events failure)" = 1 ] || fail "one failure alert"
  kill -TERM "$AGENT_PID"; wait "$AGENT_PID" || fail "exit 0"
}

t_recovery_kit_rebuilds_from_one_site_alone() {
  setup_world; write_plan
  start_agent
  wait_until 60 "the agent's own backup at cloud" has_snapshot lifeboat-agent cloud
  wait_until 60 "shop-db at cloud" has_snapshot shop-db cloud
  # Its own backup runs hourly (and at the first start, before any history): once more now, with history.
  local first; first=$(newest lifeboat-agent cloud)
  api POST /jobs/backup:lifeboat-agent/run > /dev/null
  wait_until 60 "a second own backup at cloud" eval '[ "$(newest lifeboat-agent cloud)" != "$first" ]'
  # `plan` with the agent running: nothing to change; then an edit shows.
  lb plan --config "$WORK/lifeboat.yaml" > "$WORK/plan1.txt"
  grep -q "a reload changes nothing" "$WORK/plan1.txt" || { tail -3 "$WORK/plan1.txt"; fail "plan: nothing changes"; }
  sed 's#schedule: "\*/2 \* \* \* \* \*"#schedule: "*/4 * * * * *"#' "$WORK/lifeboat.yaml" > "$WORK/edited.yaml"
  lb plan --config "$WORK/edited.yaml" --json > "$WORK/plan2.json"
  grep -q '"message_type":"change".*"subject":"backup:www"' "$WORK/plan2.json" || { cat "$WORK/plan2.json"; fail "plan --json: the change"; }
  stop_agent
  lb recovery-kit --config "$WORK/lifeboat.yaml" --output "$WORK/kit.md" 2> "$WORK/kit.err" || { cat "$WORK/kit.err"; fail "recovery-kit exits 0"; }
  [ "$(stat -c %a "$WORK/kit.md")" = 600 ] || fail "the kit is written 0600"
  for s in "| home | primary |" "| cloud | replica |" "$WORK/home.pw" "$WORK/s3.env" "$WORK/agent.token" "source=shop-db"; do
    grep -qF "$s" "$WORK/kit.md" || fail "the kit has $s"
  done
  ! grep -q "pw-home\|pw-cloud\|AWS_SECRET\|$(cat "$WORK/agent.token")" "$WORK/kit.md" || fail "no secret in the kit"

  # Disaster: the host loses its primary, its plan, its state and its data. Only the cloud and the secrets remain.
  # (The kit is written while the plan is still there: this one after the primary is gone, to show that it then
  # rebuilds from the site that answers.)
  rm -rf "$WORK/home"
  local rc=0; lb recovery-kit --config "$WORK/lifeboat.yaml" --output "$WORK/kit2.md" 2> /dev/null || rc=$?
  [ "$rc" = 20 ] || fail "a site that cannot be opened: exit 20 (got $rc)"
  cp "$WORK/lifeboat.yaml" "$WORK/plan.before"
  rm -rf "$WORK/lifeboat.yaml" "$WORK/agent.db"* "$WORK/www" "$WORK/shop.db" "$WORK/self-backup"
  grep -q "| home | primary | .* NO: " "$WORK/kit2.md" || fail "the kit says home could not be reached"
  # Follow its section 3 (rebuild from cloud) and 4 (restore every source) as written, then compare.
  rm -rf /tmp/lifeboat-self
  python3 - "$WORK/kit2.md" > "$WORK/rebuild.sh" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
print("set -euo pipefail")
print(blocks[0])                     # rebuild: the plan and the state database back in place
for line in blocks[1].splitlines():  # restore: the files source and the SQLite source
    if "source=www" in line or "source=shop-db" in line or "config validate" in line:
        print(line.split("   #")[0])
PY
  grep -q "LIFEBOAT_REPOSITORY=.*lifeboat-dr/web" "$WORK/rebuild.sh" || { cat "$WORK/rebuild.sh"; fail "the kit rebuilds from cloud, the site that answers"; }
  (unset LIFEBOAT_REPOSITORY; PATH=$(dirname "$BIN"):$PATH bash "$WORK/rebuild.sh") > "$WORK/rebuild.out" 2>&1 || { cat "$WORK/rebuild.sh" "$WORK/rebuild.out"; fail "the kit's commands run"; }
  rm -rf /tmp/lifeboat-self
  cmp "$WORK/plan.before" "$WORK/lifeboat.yaml" || fail "the plan file is back"
  [ "$(sqlite3 "$WORK/agent.db" "PRAGMA integrity_check")" = ok ] || fail "the state database is back and intact"
  [ "$(sqlite3 "$WORK/agent.db" "SELECT count(*) FROM run WHERE result='success'")" -gt 0 ] || fail "with its history"
  [ -f "$WORK/www/site/logo.png" ] && [ ! -e "$WORK/www/site/x.tmp" ] || fail "the files are back"
  [ "$(sqlite3 "$WORK/shop.db" "SELECT group_concat(item) FROM orders")" = "boat,oar" ] || fail "the database is back"
}

t_append_only_site_prunes_through_admin_access() {
  setup_world
  mkdir -p "$WORK/served"
  start_serve vault --path "$WORK/served" --append-only --no-auth
  SERVE_URL=${SERVE_URL%/}
  echo pw-vault > "$WORK/vault.pw"
  lb -r "rest:$SERVE_URL/vault" --password-file "$WORK/vault.pw" init --copy-chunker-params-from "$WORK/home" --from-password-file "$WORK/home.pw" > /dev/null
  vault_plan() {  # vault_plan [ADMIN-LINE]
    cat > "$WORK/lifeboat.yaml" <<YAML
sites:
  - {name: home, repository: $WORK/home, password_file: $WORK/home.pw, role: primary}
  - name: vault
    repository: "rest:$SERVE_URL/vault"
    password_file: $WORK/vault.pw
    role: replica
    $1
sources:
  - {name: www, paths: [$WORK/www], schedule: "*/2 * * * * *", retention: {keep_last: 2}, objectives: {rpo: 1m}}
prune: {schedule: "*/3 * * * * *"}
replication: {interval: 2s, max_backoff: 2s, state_file: $WORK/replication.json}
alerts:
  - {type: webhook, url: "http://127.0.0.1:$HOOK_PORT/alert"}
agent: {listen: 127.0.0.1:$API_PORT, token_file: $WORK/agent.token, state: $WORK/agent.db}
YAML
  }
  vault_count() { lb -r "$WORK/served/vault" --password-file "$WORK/vault.pw" snapshots --tag source=www --json | grep -c '"id"' || true; }
  # Without admin access, the append-only server refuses the prune's deletes: it fails, alerting once.
  vault_plan ""
  start_agent
  wait_until 60 "a prune refused at vault" history_has prune failure vault
  api GET "/history?job=prune&limit=20" | grep -q "append-only\|403\|forbidden\|Forbidden" || { api GET "/history?job=prune&limit=3"; fail "the error says the server refuses"; }
  wait_until 30 "the failure alert" eval '[ "$(events failure vault false)" = 1 ]'
  stop_agent
  # With admin_repository (the server's own folder: no append-only there), retention and prune reach the vault.
  vault_plan "admin_repository: $WORK/served/vault"
  start_agent
  wait_until 60 "a prune at vault" history_has prune success vault
  local t; t=$(newest www vault)
  wait_until 30 "more backups replicated to vault" eval '[ "$(newest www vault)" != "$t" ]'
  wait_until 60 "the next prune at vault" eval '[ "$(api GET "/history?job=prune&limit=100" | grep -o "\"site\":\"vault\"[^}]*\"success\"\|\"success\"[^}]*\"site\":\"vault\"" | wc -l)" -ge 2 ]'
  [ "$(vault_count)" -le 4 ] || fail "the vault keeps what the retention keeps, give or take the newest runs (has $(vault_count))"
  wait_until 30 "the failure to clear" eval '[ "$(events failure vault true)" = 1 ]'
  stop_agent
}

t_proxy_pools_run_in_the_agent() {
  setup_world
  local A B P; A=$(free_port); B=$(free_port); P=$(free_port)
  python3 "$HERE/echo.py" server "$A" & local primary=$!
  python3 "$HERE/echo.py" server "$B" &
  wait_port "$A"; wait_port "$B"
  write_plan
  cat >> "$WORK/lifeboat.yaml" <<YAML
proxy:
  drain_timeout: 2s
  pools:
    - name: web
      listen: 127.0.0.1:$P
      mode: failover
      check: {type: tcp, interval: 200ms, timeout: 200ms, fall: 1, rise: 1}
      backends:
        - {name: primary, address: 127.0.0.1:$A, priority: 1}
        - {name: standby, address: 127.0.0.1:$B, priority: 2}
YAML
  start_agent
  wait_port "$P"
  active() { api GET /proxy/status | python3 -c "import json,sys; print(json.load(sys.stdin)['pools'][0]['active'])"; }
  wait_until 20 "the pool to serve from primary" eval '[ "$(active)" = primary ]'
  [ "$(printf 'hello\n' | timeout 5 python3 -c "import socket,sys; s=socket.create_connection(('127.0.0.1',$P)); s.sendall(b'hello\n'); print(s.recv(100).decode().strip())")" = hello ] || fail "the pool forwards"
  wait_until 20 "the proxy's metrics in the agent's" eval 'api GET /metrics | grep -q "lifeboat_proxy_backend_up{pool=\"web\",backend=\"primary\"} 1"'
  # The primary dies: the pool switches, and the switch is an alert.
  kill "$primary"
  wait_until 20 "the switch to standby" eval '[ "$(active)" = standby ]'
  wait_until 20 "the switch alert" eval '[ "$(events switch)" -ge 1 ]'
  # Administered through the agent's API: drain, and the pool's admin answers under /proxy/.
  api POST /proxy/pools/web/backends/primary/disable | grep -q '"disabled":true' || fail "disable through the agent's API"
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$API_PORT/proxy/status")" = 401 ] || fail "the proxy's endpoints need the token too"
  # The dashboard's failover page: the pool, the standby serving, the primary disabled and down.
  api GET /ui/failover > "$WORK/failover.html"
  grep -q '<tr class="unknown" data-backend="primary">' "$WORK/failover.html" && grep -q 'data-backend="standby"><td><b>standby</b> <span class="tag">serving' "$WORK/failover.html" \
    || { cat "$WORK/failover.html"; fail "the failover page shows the pool"; }
  stop_agent
  grep -q "proxy drained" "$WORK/agent.log" || fail "the pools drain at the stop"
  ! port_open "$P" || fail "the pool stops listening"
}

t_api_authentication_choices() {
  setup_world; write_plan
  # No token and no users: only a loopback address is allowed.
  sed -i "s#agent: {listen: 127.0.0.1:$API_PORT, token_file: $WORK/agent.token,#agent: {listen: 0.0.0.0:$API_PORT,#" "$WORK/lifeboat.yaml"
  local rc=0; "$BIN" agent --config "$WORK/lifeboat.yaml" > "$WORK/open.out" 2>&1 || rc=$?
  [ "$rc" = 1 ] && grep -q "not a loopback address" "$WORK/open.out" || { cat "$WORK/open.out"; fail "an open API on 0.0.0.0 is refused (exit $rc)"; }
  # Users (htpasswd, bcrypt) over HTTPS: basic authentication; status falls back to the database without them.
  make_cert
  if command -v htpasswd > /dev/null; then htpasswd -B -b -c "$WORK/agent.htpasswd" ops ops-password 2>/dev/null
  else python3 -c "import crypt; print('ops:' + crypt.crypt('ops-password', crypt.mksalt(crypt.METHOD_BLOWFISH)))" > "$WORK/agent.htpasswd"; fi
  sed -i "s#agent: {listen: 0.0.0.0:$API_PORT,#agent: {listen: 127.0.0.1:$API_PORT, users: $WORK/agent.htpasswd, tls: {cert: $WORK/cert.pem, key: $WORK/key.pem},#" "$WORK/lifeboat.yaml"
  lb config validate --config "$WORK/lifeboat.yaml" > /dev/null
  start_agent
  [ "$(curl -s --cacert "$WORK/cert.pem" -o /dev/null -w '%{http_code}' -u ops:ops-password "https://localhost:$API_PORT/status")" = 200 ] || fail "basic auth over HTTPS"
  [ "$(curl -s --cacert "$WORK/cert.pem" -o /dev/null -w '%{http_code}' -u ops:wrong "https://localhost:$API_PORT/status")" = 401 ] || fail "a wrong password: 401"
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$API_PORT/status")" != 200 ] || fail "no plain HTTP when tls is set"
  wait_until 60 "www at home" has_snapshot www home
  lb status --config "$WORK/lifeboat.yaml" > "$WORK/st.txt" 2>&1 || [ $? = 22 ] || { cat "$WORK/st.txt"; fail "status without the users' password"; }
  grep -q "from its database" "$WORK/st.txt" || { cat "$WORK/st.txt"; fail "status reads the database when the API wants a user"; }
  stop_agent
  # A token over HTTPS: `lifeboat status` asks the agent itself (its certificate trusted as a root).
  sed -i "s#users: $WORK/agent.htpasswd,#token_file: $WORK/agent.token,#" "$WORK/lifeboat.yaml"
  start_agent
  lb status --config "$WORK/lifeboat.yaml" > "$WORK/st2.txt" 2>&1 || [ $? = 22 ] || { cat "$WORK/st2.txt"; fail "status over HTTPS"; }
  grep -q "agent running since" "$WORK/st2.txt" || { cat "$WORK/st2.txt"; fail "status asks the agent over HTTPS"; }
  stop_agent
}

t_full_disk_fails_the_job_then_the_next_run_succeeds() {
  setup_world
  mkdir -p "$WORK/small"
  mount -t tmpfs -o size=2m tmpfs "$WORK/small" 2>/dev/null || { echo "    (cannot mount a tmpfs here: skipped)"; return 0; }
  lb -r "$WORK/small/repo" --password-file "$WORK/home.pw" init > /dev/null
  head -c 3000000 /dev/urandom > "$WORK/www/site/big.bin"
  write_plan
  sed -i "s#repository: $WORK/home,#repository: $WORK/small/repo,#" "$WORK/lifeboat.yaml"
  start_agent
  wait_until 60 "a backup that fails on the full disk" eval 'api GET "/history?job=backup:www&limit=20" | grep -q "No space left on device\|no space"'
  [ "$(events failure)" -ge 1 ] || wait_until 20 "the failure alert" eval '[ "$(events failure)" -ge 1 ]'
  # Space comes back: the next run succeeds, the failure clears.
  mount -o remount,size=64m "$WORK/small"
  wait_until 60 "www backed up after the disk grew" eval 'api GET "/history?job=backup:www&limit=1" | grep -q "\"success\""'
  wait_until 30 "the failure to clear" eval '[ "$(events failure "" true)" -ge 1 ]'
  lb -r "$WORK/small/repo" --password-file "$WORK/home.pw" check > /dev/null || fail "the repository checks clean after the full disk"
  stop_agent
  umount "$WORK/small"
}

t_bandwidth_limits() {
  lb -r "$WORK/bw" --password-file "$WORK/pw" init > /dev/null
  mkdir -p "$WORK/bwdata"; head -c 1572864 /dev/urandom > "$WORK/bwdata/blob"
  local t0 t1; t0=$(date +%s%N)
  lb -r "$WORK/bw" --password-file "$WORK/pw" backup "$WORK/bwdata" --limit-upload 512 -q
  t1=$(date +%s%N)
  # 1.5 MiB at 512 KiB/s with a burst of one second: at least 2 s (a lower bound holds on a loaded machine).
  [ $(( (t1 - t0) / 1000000 )) -ge 1800 ] || fail "--limit-upload 512 holds the upload to 512 KiB/s (took $(( (t1 - t0) / 1000000 )) ms)"
  expect_code 1 lb -r "$WORK/bw" --password-file "$WORK/pw" snapshots --limit-upload 0
  grep -q "limit-upload" "$WORK/err" "$WORK/out" || fail "an out-of-range limit is named"
  LIFEBOAT_LIMIT_DOWNLOAD=abc expect_code 1 lb -r "$WORK/bw" --password-file "$WORK/pw" snapshots
  grep -q "LIFEBOAT_LIMIT_DOWNLOAD" "$WORK/err" "$WORK/out" || fail "a bad LIFEBOAT_LIMIT_DOWNLOAD is named"
}

t_unit_and_rules_are_valid() {
  command -v systemd-analyze > /dev/null || { echo "    (no systemd-analyze: skipped the unit)"; return 0; }
  sed "s#/usr/local/bin/lifeboat#$BIN#g" "$REPO_ROOT/docs/deploy/lifeboat-agent.service" > "$WORK/lifeboat-agent.service"
  systemd-analyze verify "$WORK/lifeboat-agent.service" > "$WORK/verify.out" 2>&1 || { cat "$WORK/verify.out"; fail "systemd-analyze verify"; }
  ! grep -v "^$" "$WORK/verify.out" | grep -q . || { cat "$WORK/verify.out"; fail "no warning"; }
  promtool check rules "$REPO_ROOT/docs/deploy/prometheus-rules.yml" > /dev/null || fail "promtool check rules"
  (cd "$REPO_ROOT/docs/deploy" && promtool test rules prometheus-rules.test.yml > /dev/null) || fail "promtool test rules"
}

# The web dashboard: a login before anything, sessions and CSRF, roles, actions written to the audit log, names
# shown as text; in headless Chromium, an RPO breach turns a row red and a backup runs from the page.
t_dashboard() {
  setup_world; RPO=8s write_plan
  sed -i '/name: shop-db/,/objectives/ { s#schedule: .*#schedule: every 24h#; s#rpo: 1m#rpo: 48h# }' "$WORK/lifeboat.yaml"  # runs at the start, then by hand
  htpasswd -B -b -c "$WORK/agent.htpasswd" ops ops-password 2>/dev/null
  htpasswd -B -b "$WORK/agent.htpasswd" viewer viewer-password 2>/dev/null
  htpasswd -B -b "$WORK/agent.htpasswd" '<script>alert(1)</script>' xss-password 2>/dev/null
  # An operator who is not a user is refused at the start.
  sed -i "s#token_file: $WORK/agent.token,#token_file: $WORK/agent.token, users: $WORK/agent.htpasswd, operators: [ops, nobody],#" "$WORK/lifeboat.yaml"
  local rc=0; "$BIN" agent --config "$WORK/lifeboat.yaml" > "$WORK/op.out" 2>&1 || rc=$?
  [ "$rc" = 1 ] && grep -q "agent.operators names nobody" "$WORK/op.out" || { cat "$WORK/op.out"; fail "an operator who is not a user (exit $rc)"; }
  sed -i "s#operators: \[ops, nobody\]#operators: [ops]#" "$WORK/lifeboat.yaml"
  start_agent
  successes() { api GET "/history?job=backup:shop-db&limit=100" | python3 -c "import json,sys; print(sum(r['result']=='success' for r in json.load(sys.stdin)))"; }
  wait_until 60 "shop-db's first backup" eval '[ "$(successes)" -ge 1 ]'
  local U="http://127.0.0.1:$API_PORT" code
  # Without a login: the login page, and nothing of the plan.
  for path in / "/ui/confirm?action=backup&target=www" /ui/nothing; do
    code=$(curl -s -o "$WORK/anon.html" -w '%{http_code}' "$U$path")
    [ "$code" = 401 ] && grep -q 'action="/login"' "$WORK/anon.html" && ! grep -q "www\|shop-db" "$WORK/anon.html" || fail "GET $path without a login: the login page only (got $code)"
  done
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d "action=backup&target=www" "$U/ui/actions"); [ "$code" = 401 ] || fail "an action without a login (got $code)"
  code=$(curl -s -o /dev/null -w '%{http_code}' -u ops:ops-password "$U/"); [ "$code" = 401 ] || fail "basic authentication does not open the dashboard (got $code)"
  # The bearer token opens every page.
  curl -sS --fail-with-body -H "Authorization: Bearer $(cat "$WORK/agent.token")" "$U/" > "$WORK/bearer.html" || fail "the overview with the token"
  grep -q 'data-service="www"' "$WORK/bearer.html" || fail "the overview lists www"
  curl -sS --fail-with-body -H "Authorization: Bearer $(cat "$WORK/agent.token")" "$U/ui/sites" > "$WORK/sites.html" || fail "the sites page"
  grep -q 'data-site="cloud"' "$WORK/sites.html" && ! grep -q "$CLOUD" "$WORK/sites.html" || fail "the sites page lists cloud, not its location"
  curl -sS --fail-with-body -H "Authorization: Bearer $(cat "$WORK/agent.token")" "$U/ui/failover" | grep -q "runs no proxy pool" || fail "the failover page without a proxy"
  curl -sS -D "$WORK/h.txt" -o /dev/null -H "Authorization: Bearer $(cat "$WORK/agent.token")" "$U/"
  grep -qi "^content-security-policy: default-src 'none'" "$WORK/h.txt" && grep -qi "^x-frame-options: DENY" "$WORK/h.txt" || { cat "$WORK/h.txt"; fail "security headers"; }
  # Logins: a wrong password, then a read-only user with a session cookie.
  code=$(curl -s -o "$WORK/bad.html" -w '%{http_code}' --data-urlencode user=viewer --data-urlencode password=wrong "$U/login")
  [ "$code" = 401 ] && grep -q "Wrong user or password" "$WORK/bad.html" || fail "a wrong password (got $code)"
  curl -s -D "$WORK/login.h" -o /dev/null -c "$WORK/viewer.jar" --data-urlencode user=viewer --data-urlencode password=viewer-password "$U/login"
  grep -q "^HTTP/1.1 303" "$WORK/login.h" && grep -qi "^set-cookie: lifeboat_session=.*HttpOnly; SameSite=Strict" "$WORK/login.h" || { cat "$WORK/login.h"; fail "a login sets an HTTP-only, same-site cookie"; }
  curl -sS --fail-with-body -b "$WORK/viewer.jar" "$U/" > "$WORK/viewer.html" || fail "the overview with the viewer's session"
  grep -q 'data-service="www"' "$WORK/viewer.html" && ! grep -q "/ui/confirm" "$WORK/viewer.html" || fail "a read-only user sees no action"
  local csrf; csrf=$(grep -o 'name="csrf" value="[0-9a-f]*"' "$WORK/viewer.html" | head -1 | sed 's/.*value="//; s/"//')
  [ ${#csrf} = 64 ] || fail "the page carries a CSRF token"
  code=$(curl -s -o "$WORK/ro.html" -w '%{http_code}' -b "$WORK/viewer.jar" -d "action=backup&target=www&csrf=$csrf" "$U/ui/actions")
  [ "$code" = 403 ] && grep -q "read-only" "$WORK/ro.html" || fail "a read-only user cannot act (got $code)"
  # The operator: a form without the CSRF token, or with another session's, is refused; with it, it runs.
  curl -s -o /dev/null -c "$WORK/ops.jar" --data-urlencode user=ops --data-urlencode password=ops-password "$U/login"
  code=$(curl -s -o "$WORK/forged.html" -w '%{http_code}' -b "$WORK/ops.jar" -d "action=backup&target=www" "$U/ui/actions")
  [ "$code" = 403 ] && grep -q "CSRF" "$WORK/forged.html" || fail "a forged form is refused (got $code)"
  code=$(curl -s -o /dev/null -w '%{http_code}' -b "$WORK/ops.jar" -d "action=backup&target=www&csrf=$csrf" "$U/ui/actions")
  [ "$code" = 403 ] || fail "another session's CSRF token is refused (got $code)"
  [ ! -s "$WORK/audit.jsonl" ] || ! grep -q dashboard_action "$WORK/audit.jsonl" || fail "nothing refused is done or logged"
  local ops_csrf; ops_csrf=$(curl -s -b "$WORK/ops.jar" "$U/" | grep -o 'name="csrf" value="[0-9a-f]*"' | head -1 | sed 's/.*value="//; s/"//')
  code=$(curl -s -o "$WORK/unknown.html" -w '%{http_code}' -b "$WORK/ops.jar" -d "action=backup&target=nope&csrf=$ops_csrf" "$U/ui/actions")
  [ "$code" = 400 ] && grep -q "no source nope" "$WORK/unknown.html" || fail "an unknown source is named (got $code)"
  code=$(curl -s -o "$WORK/paused.html" -w '%{http_code}' -b "$WORK/ops.jar" -d "action=pause&target=shop-db&csrf=$ops_csrf" "$U/ui/actions")
  [ "$code" = 200 ] || { cat "$WORK/paused.html"; fail "pause from the dashboard (got $code)"; }
  grep -q '"action":"pause".*"result":"ok".*"user":"ops"' "$WORK/audit.jsonl" || { cat "$WORK/audit.jsonl"; fail "the action is in the audit log"; }
  api GET /status | python3 -c "import json,sys; s=json.load(sys.stdin); sys.exit(0 if [x for x in s['sources'] if x['name']=='shop-db'][0]['paused'] else 1)" || fail "shop-db paused"
  # The API's actions: a read-only user cannot act there either, and no browser request (CSRF) is taken.
  code=$(curl -s -o /dev/null -w '%{http_code}' -u viewer:viewer-password -X POST "$U/jobs/backup:www/run"); [ "$code" = 403 ] || fail "a read-only user's API action (got $code)"
  code=$(curl -s -o /dev/null -w '%{http_code}' -u ops:ops-password -X POST "$U/sources/shop-db/resume"); [ "$code" = 200 ] || fail "an operator's API action (got $code)"
  code=$(curl -s -o /dev/null -w '%{http_code}' -u ops:ops-password -H "Origin: http://evil.example" -X POST "$U/sources/shop-db/pause"); [ "$code" = 403 ] || fail "an API action posted from a web page (got $code)"
  curl -s -o /dev/null -u ops:ops-password -X POST "$U/sources/shop-db/pause"
  # The live refresh: server-sent events carrying the state digest, for a login only, and only while it lasts.
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$U/ui/events"); [ "$code" = 401 ] || fail "the live stream without a login (got $code)"
  # At most 32 live streams (none is open before this): the 33rd ends at once, says why and when to try again; a stream whose client left frees its place.
  local auth="Authorization: Bearer $(cat "$WORK/agent.token")" pids=() i
  for i in $(seq 32); do curl -sN --max-time 60 -H "$auth" "$U/ui/events" > "$WORK/sse-$i.txt" & pids+=($!); done
  wait_until 30 "32 live streams to open" eval '[ "$(grep -l "^event: state" "$WORK"/sse-*.txt | wc -l)" = 32 ]'
  curl -sN --max-time 10 -H "$auth" "$U/ui/events" > "$WORK/sse-over.txt" || true
  grep -q "^retry: 30000" "$WORK/sse-over.txt" && grep -q "too many live dashboards" "$WORK/sse-over.txt" && ! grep -q "^event:" "$WORK/sse-over.txt" || { cat "$WORK/sse-over.txt"; fail "the 33rd live stream is refused, to try again later"; }
  kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null || true
  wait_until 30 "a live stream's place to be freed" eval 'curl -sN --max-time 2 -H "$auth" "$U/ui/events" > "$WORK/sse-free.txt"; grep -q "^event: state" "$WORK/sse-free.txt"'
  curl -sN --max-time 3 -b "$WORK/ops.jar" "$U/ui/events" > "$WORK/sse.txt" || true
  grep -q '^retry: 3000' "$WORK/sse.txt" && grep -q '^event: state' "$WORK/sse.txt" && grep -qE '^data: [0-9a-f]{16}$' "$WORK/sse.txt" || { cat "$WORK/sse.txt"; fail "the live stream sends the state digest"; }
  curl -s "$U/ui/live.js" | grep -q "new EventSource('/ui/events')" || fail "the live script is served"
  curl -s -b "$WORK/ops.jar" "$U/" | grep -q '<main data-live="[0-9a-f]\{16\}">' || fail "the overview carries its digest"
  curl -sN --max-time 60 -b "$WORK/ops.jar" "$U/ui/events" > "$WORK/sse2.txt" & local sse=$!
  wait_until 10 "the live stream to open" grep -q '^event: state' "$WORK/sse2.txt"
  # Logged out: the session no longer opens anything, and its live stream ends.
  curl -s -o /dev/null -b "$WORK/ops.jar" -d "csrf=$ops_csrf" "$U/logout"
  code=$(curl -s -o /dev/null -w '%{http_code}' -b "$WORK/ops.jar" "$U/"); [ "$code" = 401 ] || fail "a closed session (got $code)"
  wait_until 10 "the live stream to end with its session" grep -q '^event: end' "$WORK/sse2.txt"
  wait_until 10 "the live stream to close" eval '! kill -0 $sse 2>/dev/null'

  # In a browser: log in, see www green, the cloud stop (moto frozen) turn its row red, resume shop-db and back it up.
  wait_until 60 "www at cloud" has_snapshot www cloud
  local before; before=$(successes)
  cat > "$WORK/browser.json" <<JSON
[["goto", "$U/"],
 ["expect", "document.querySelector('form[action=\"/login\"]') !== null && document.querySelector('#services') === null", "the login page first"],
 ["fill", "input[name=user]", "<script>alert(1)</script>"], ["fill", "input[name=password]", "xss-password"], ["submit", "form.login"],
 ["expect", "document.querySelector('header nav').innerText.includes('<script>alert(1)</script>') && Array.from(document.querySelectorAll('script')).every(function (s) { return s.getAttribute('src') === '/ui/live.js'; })", "a user named <script> shown as text (no script but the live refresh)"],
 ["screenshot", "$WORK/artifacts/dashboard-xss.png"],
 ["click", "form.inline button"],
 ["fill", "input[name=user]", "ops"], ["fill", "input[name=password]", "ops-password"], ["submit", "form.login"],
 ["expect", "document.querySelector('tr[data-service=\"www\"]').className === 'ok'", "www green while both sites keep up", "reload"],
 ["screenshot", "$WORK/artifacts/dashboard-overview.png"]]
JSON
  mkdir -p "$WORK/artifacts"
  /usr/bin/python3 "$HERE/cdp.py" "$WORK" "$WORK/browser.json" > "$WORK/cdp.out" 2>&1 || { cat "$WORK/cdp.out"; fail "the browser: login and overview"; }
  kill -STOP "$MOTO_PID"
  cat > "$WORK/browser2.json" <<JSON
[["goto", "$U/login"], ["fill", "input[name=user]", "ops"], ["fill", "input[name=password]", "ops-password"], ["submit", "form.login"],
 ["expect", "document.querySelector('tr[data-service=\"www\"]').className === 'breached'", "www red once the cloud stopped past its RPO", "reload"],
 ["screenshot", "$WORK/artifacts/dashboard-breach.png"],
 ["goto", "$U/ui/sites"], ["expect", "document.querySelector('tr[data-site=\"cloud\"]') !== null", "the sites page"],
 ["screenshot", "$WORK/artifacts/dashboard-sites.png"],
 ["goto", "$U/"], ["click", "tr[data-service=\"www\"] td a"],
 ["expect", "document.querySelectorAll('svg#durations rect').length > 0 && document.querySelector('svg#rpo line.limit') !== null", "www's page with its timelines"],
 ["expect", "document.querySelector('#events').innerText.includes('rpo_breach') && document.querySelector('#events').innerText.includes('cloud')", "www's page shows the breach at cloud in its events"],
 ["goto", "$U/ui/confirm?action=resume&target=shop-db"], ["click", "#confirm"],
 ["expect", "document.querySelector('#message').innerText.includes('resumed')", "resumed"],
 ["goto", "$U/"], ["click", "tr[data-service=\"shop-db\"] a.button"],
 ["expect", "document.body.innerText.includes('Back up shop-db now?')", "the confirmation"],
 ["click", "#confirm"],
 ["expect", "document.querySelector('#message').innerText.includes('backup:shop-db')", "the backup started"]]
JSON
  /usr/bin/python3 "$HERE/cdp.py" "$WORK" "$WORK/browser2.json" > "$WORK/cdp2.out" 2>&1 || { kill -CONT "$MOTO_PID"; cat "$WORK/cdp2.out"; fail "the browser: breach and backup"; }
  kill -CONT "$MOTO_PID"
  grep -q '"action":"backup".*"target":"shop-db"' "$WORK/audit.jsonl" || fail "the backup is in the audit log"
  wait_until 60 "the backup from the page to finish" eval '[ "$(successes)" -gt "$before" ]'
  # The live refresh in the browser: a change (www paused through the page's own form) shows without a reload;
  # then each site's copies of www with their sizes, and the failover page.
  cat > "$WORK/browser3.json" <<JSON
[["goto", "$U/login"], ["fill", "input[name=user]", "ops"], ["fill", "input[name=password]", "ops-password"], ["submit", "form.login"],
 ["expect", "document.querySelector('main[data-live]') !== null && document.querySelectorAll('script[src=\"/ui/live.js\"]').length === 1", "the overview loads the live refresh"],
 ["eval", "window.notReloaded = true; fetch('/ui/actions', {method: 'POST', body: new URLSearchParams({action: 'pause', target: 'www', csrf: document.querySelector('input[name=csrf]').value})}).then(function () { window.posted = true; })"],
 ["expect", "window.posted === true && window.notReloaded === true && document.querySelector('tr[data-service=\"www\"]').innerText.includes('paused')", "www shown paused by the live refresh, without a reload"],
 ["goto", "$U/ui/services/www"],
 ["expect", "document.querySelector('h4[data-site=\"home\"]').innerText.includes('snapshot') && document.querySelectorAll('table.copies tr').length > 1", "www's copies at home with their sizes", "reload"],
 ["screenshot", "$WORK/artifacts/dashboard-service.png"],
 ["goto", "$U/ui/failover"], ["expect", "document.body.innerText.includes('runs no proxy pool')", "the failover page"],
 ["screenshot", "$WORK/artifacts/dashboard-failover.png"]]
JSON
  /usr/bin/python3 "$HERE/cdp.py" "$WORK" "$WORK/browser3.json" > "$WORK/cdp3.out" 2>&1 || { cat "$WORK/cdp3.out"; fail "the browser: live refresh"; }
  grep -q '"action":"pause".*"target":"www"' "$WORK/audit.jsonl" || fail "the pause from the page's script is in the audit log"
  # An open live stream does not hold up the agent's stop.
  curl -sN --max-time 120 -H "Authorization: Bearer $(cat "$WORK/agent.token")" "$U/ui/events" > "$WORK/sse3.txt" & sse=$!
  wait_until 10 "the live stream to open" grep -q '^event: state' "$WORK/sse3.txt"
  stop_agent
  wait_until 10 "the live stream to close with the agent" eval '! kill -0 $sse 2>/dev/null'
  mkdir -p "$REPO_ROOT/.build/artifacts" && cp "$WORK"/artifacts/*.png "$REPO_ROOT/.build/artifacts/" 2>/dev/null || true
}

ALL="t_unit_and_rules_are_valid t_api_authentication_choices t_dashboard t_full_disk_fails_the_job_then_the_next_run_succeeds t_bandwidth_limits t_append_only_site_prunes_through_admin_access t_proxy_pools_run_in_the_agent t_agent_runs_the_plan t_recovery_kit_rebuilds_from_one_site_alone t_site_outage_alerts_once_and_prometheus_fires t_webhook_retries_until_delivered
t_sighup_with_a_broken_plan_keeps_the_running_one t_sigkill_mid_backup_then_restart t_hook_timeout_kills_the_hook"
for t in ${AGENT_TESTS:-$ALL}; do restart_log; rm -f "$WORK/hooks.jsonl" "$WORK/hook.log" "$WORK/agent.db"*; rm -rf "$WORK/home" "$WORK/prom" "$WORK/cache" "$WORK/replication.json"; run_test "$t"; done
echo "agent: $PASSED passed, $FAILED failed${FAILURES:+ (${FAILURES[*]})}"
[ "$FAILED" -eq 0 ]
