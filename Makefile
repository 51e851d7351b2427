# Lifeboat: `make demo` runs the main job on a sample folder; `make test` runs every test.
export PATH := /opt/swift/usr/bin:$(PATH)
SHELL := /bin/bash
# Integration tests and the demo drive the release binary, the one users run: an optimizer bug once made a
# release-only crash that the debug build could not show (docs/ARCHITECTURE.md, "Tests").
BIN := .build/release/lifeboat

.PHONY: deps build test unit integration demo bench bench-failover bench-plan bench-agent bench-drills bench-pitr bench-sqlite bench-ha bench-dashboard fuzz clean

deps:
	@scripts/install-deps.sh

build: deps
	swift build -c release --product lifeboat
	@mkdir -p .build/man
	python3 scripts/manpage.py $(BIN) .build/man/lifeboat.1

unit: deps
	mkdir -p .build
	set -o pipefail; swift test 2>&1 | tee .build/unit-tests.log
	@grep -E "Executed [0-9]+ tests|Test run with [0-9]+ tests" .build/unit-tests.log | tail -2

integration: build
	bash tests/integration/run.sh $(BIN)
	bash tests/integration/remote.sh $(BIN)
	bash tests/integration/replication.sh $(BIN)
	bash tests/integration/failover.sh $(BIN)
	bash tests/integration/hardening.sh $(BIN)
	bash tests/integration/databases.sh $(BIN)
	bash tests/integration/pitr.sh $(BIN)
	bash tests/integration/sqlite.sh $(BIN)
	bash tests/integration/agent.sh $(BIN)
	bash tests/integration/drills.sh $(BIN)
	bash tests/integration/ha.sh $(BIN)
	bash tests/integration/examples.sh $(BIN)

test: unit integration

demo: build
	bash scripts/demo.sh $(BIN)

bench: deps
	bash bench/run.sh

# lifeboat proxy beside HAProxy with wrk and two nginx backends (installs nginx, haproxy, wrk if missing).
bench-failover: deps
	swift build -c release --product lifeboat
	python3 bench/failover.py

# The agent with 50 sources on 2 sites every minute for 10 minutes: idle CPU and RSS, API latency, start delay.
bench-agent: build
	python3 bench/agent.py

# The dashboard with 100 services, 3 sites and a year of history: the overview's p99 over 1,000+ requests (wrk).
bench-dashboard: build
	python3 bench/dashboard.py

# `config validate` and `plan` on a plan of 1,000 sources (target: validate under 1 s).
bench-plan: build
	python3 bench/plan.py

# Drills of a 1 GiB file source and PostgreSQL (pgbench scale 50) from a local and an S3 (moto) site, beside
# restic restore (target: the drill's own overhead below 5% of its RTO).
bench-drills: deps
	swift build -c release --product lifeboat
	python3 bench/drills.py

# PostgreSQL archiving and point-in-time recovery beside pgBackRest 2.45 (pgbench scale 100, 8 clients, 5 minutes;
# a backlog of 500 segments): archive lag, backlog drain, base backup, restore with replay, repository size.
bench-pitr: deps
	swift build -c release --product lifeboat
	python3 bench/pitr.py

# Failover against Patroni (Debian's 3.0) in network namespaces, same etcd, proxy, TTL and loop (docs/HA.md).
bench-ha: deps
	dpkg -s patroni >/dev/null 2>&1 || apt-get install -y patroni
	swift build -c release --product lifeboat
	bash bench/ha.sh .build/release/lifeboat

bench-sqlite: deps
	swift build -c release --product lifeboat
	python3 bench/sqlite.py

# libFuzzer on the parsers (tree, index, pack header, object framing, YAML configs, HTTP ranges), FUZZ_SECONDS each.
fuzz: deps
	bash fuzz/run.sh

clean:
	rm -rf .build .build-fuzz fuzz/.build
