import Foundation
import Testing
import LifeboatCore
import LifeboatTestSupport
@testable import LifeboatPlan

@Suite struct PlanFileTests {
    let sites = """
    sites:
      - {name: local, repository: /srv/lifeboat/repo, password_file: /etc/lifeboat/local.pw, role: primary}
      - {name: offsite, repository: "s3:https://s3.example.com/dr/web", password_file: /etc/lifeboat/s3.pw, credentials_file: /etc/lifeboat/s3.env, role: replica}

    """
    let sources = """
    sources:
      - name: web-files
        paths: [/srv/www, /etc/nginx]
        exclude: ["*.tmp"]
        schedule: "*/15 * * * *"
        retention: {keep_hourly: 24, keep_daily: 7, keep_weekly: 4, keep_monthly: 12}
        objectives: {rpo: 30m, rto: 15m}
        hooks: {before: ["/usr/local/bin/quiesce"], after: ["/usr/local/bin/resume"], timeout: 60s}
      - name: shop-db
        postgres: {dsn_file: /etc/lifeboat/shop.dsn}
        schedule: every 1h
        objectives: {rpo: 1h, rto: 30m}

    """
    let rest = """
    checks: {schedule: "0 3 * * *", read_data_subset: 5%, full_coverage_within: 30d}
    prune: {schedule: "30 4 * * 0"}
    replication: {interval: 60s, max_backoff: 15m, max_lag: 30m}
    limits: {jobs: 2, nice: 10, ionice: idle}
    alerts:
      - {type: webhook, url: "https://hooks.example.com/T0/B0", on: [failure, rpo_breach, lag, check_error, switch]}
      - {type: healthchecks, url: "https://hc.example.com/ping/UUID"}
      - {type: command, command: ["/usr/local/bin/page-oncall", "{event}", "{source}", "{message}"]}
    agent: {listen: 127.0.0.1:9900, token_file: /etc/lifeboat/agent.token, state: /var/lib/lifeboat/agent.db}
    """

    @Test func theIssuesExampleReads() throws {
        let plan = try Plan.parse(sites + sources + rest, path: "lifeboat.yaml", timeZone: utcZone)
        #expect(plan.sources.map(\.name) == ["web-files", "shop-db"])
        #expect(plan.sources[0].kind == .files(paths: ["/srv/www", "/etc/nginx"], exclude: ["*.tmp"]))
        #expect(plan.sources[1].kind == .postgres(dsnFile: "/etc/lifeboat/shop.dsn"))
        let pitr = try Plan.parse(sites + sources.replacingOccurrences(of: "{dsn_file: /etc/lifeboat/shop.dsn}", with: "{dsn_file: /etc/lifeboat/shop.dsn, pitr: true}") + rest,
                                  path: "lifeboat.yaml", timeZone: utcZone)
        #expect(pitr.sources[1].kind == .postgresArchive(dsnFile: "/etc/lifeboat/shop.dsn"))
        #expect(throws: (any Error).self) {
            try Plan.parse(sites + sources.replacingOccurrences(of: "{dsn_file: /etc/lifeboat/shop.dsn}", with: "{dsn_file: /etc/lifeboat/shop.dsn, pitr: maybe}") + rest,
                           path: "lifeboat.yaml", timeZone: utcZone)
        }
        #expect(plan.sources[0].objectives == Objectives(rpo: 1800, rto: 900))
        #expect(plan.sources[1].schedule == .every(3600))
        #expect(plan.checks?.readDataSubset == "5%" && plan.checks?.fullCoverageWithin == 30 * 86400)
        #expect(plan.maxLag == 1800)
        #expect(plan.alerts.map(\.kind) == [.webhook, .healthchecks, .command])
        #expect(plan.alerts[0].on == [.failure, .rpoBreach, .lag, .checkError, .switch])
        #expect(plan.agent.listen == "127.0.0.1:9900")
        #expect(plan.sites.replicas.map(\.name) == ["offsite"])
    }

    func error(_ text: String) -> String {
        do { _ = try Plan.parse(text, path: "p.yaml", timeZone: utcZone); return "accepted" } catch { return "\(error)" }
    }

    /// A files source over a followed database leaves the database, its WAL and its shared memory to the follower;
    /// other sources and other paths keep their excludes as written.
    @Test func filesSourcesSkipFollowedDatabases() throws {
        let text = sites + """
        sources:
          - {name: files, paths: [/var/lib, /etc], exclude: ["*.tmp"], schedule: every 1h}
          - {name: other, paths: [/var/lib/ap], schedule: every 1h}
          - {name: app, sqlite: {path: "/var/lib/app/a*[1].db", continuous: true}, schedule: every 1h}
          - {name: dump, sqlite: {path: /etc/x.db}, schedule: every 1h}

        """
        let plan = try Plan.parse(text, path: "p.yaml", timeZone: utcZone)
        guard case .files(_, let ex) = plan.sources[0].kind, case .files(_, let other) = plan.sources[1].kind else { Issue.record("kinds"); return }
        #expect(ex.first == "*.tmp" && ex.count == 4)
        let set = PatternSet(ex)
        for p in ["/var/lib/app/a*[1].db", "/var/lib/app/a*[1].db-wal", "/var/lib/app/a*[1].db-shm"] { #expect(set.matches(Array(p.utf8))) }
        for p in ["/var/lib/app/ax1.db", "/var/lib/app/a*[1].db-journal", "/etc/x.db"] { #expect(!set.matches(Array(p.utf8))) }
        #expect(other.isEmpty)
        // Reached through a link: excluded as the archiver will see it.
        let dir = NSTemporaryDirectory() + "plan-link-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir + "/real", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = FileManager.default.createFile(atPath: dir + "/real/app.db", contents: Data())
        try FileManager.default.createSymbolicLink(atPath: dir + "/alias", withDestinationPath: dir + "/real")
        let linked = try Plan.parse(sites + """
        sources:
          - {name: files, paths: [\(dir)/alias], schedule: every 1h}
          - {name: app, sqlite: {path: \(dir)/real/app.db, continuous: true}, schedule: every 1h}

        """, path: "p.yaml", timeZone: utcZone)
        guard case .files(_, let lx) = linked.sources[0].kind else { Issue.record("kind"); return }
        #expect(PatternSet(lx).matches(Array("\(dir)/alias/app.db-wal".utf8)))
    }

    @Test func formErrorsHaveLineAndColumn() {
        #expect(error(sites + sources + "colour: blue\n").hasPrefix("p.yaml:16:1: unknown key \"colour\""))
        #expect(error(sites + "sources:\n  - {name: a, paths: [/a], schedule: \"61 * * * *\"}\n").contains("p.yaml:5:38: `schedule`: minute 61 is out of range"))
        #expect(error(sites + "sources:\n  - {name: a, paths: [/a], schedule: every 1h, sites: [moon]}\n").contains("no site named \"moon\""))
        #expect(error(sites + "sources:\n  - {name: a, paths: [relative], schedule: every 1h}\n").contains("must be absolute"))
        #expect(error(sites + "sources:\n  - {name: a, schedule: every 1h}\n").contains("say what to back up"))
        #expect(error(sites + "sources:\n  - {name: a, paths: [/a], sqlite: {path: /db}, schedule: every 1h}\n").contains("not several"))
        #expect(error(sites + "sources:\n  - {name: a, paths: [/a], schedule: every 1h}\n  - {name: a, paths: [/b], schedule: every 1h}\n").contains("duplicate source name"))
        #expect(error(sites + "sources:\n  - {name: a, paths: [/a], schedule: every 1h, objectives: {rpo: 1e300}}\n").contains("out of range"))
        #expect(error(sites + "sources:\n  - {name: a, paths: [/a], schedule: every 1h, retention: {}}\n").contains("keeps nothing"))
        #expect(error(sites + "sources:\n  - {name: a, paths: [/a], schedule: every 1h, timezone: Mars/Olympus}\n").contains("unknown time zone"))
        #expect(error(sites + sources + "alerts: [{type: webhook, url: ftp://x}]\n").contains("not an http(s) URL"))
        #expect(error(sites + sources + "alerts: [{type: webhook, url: \"https://x\", on: [fire]}]\n").contains("unknown event \"fire\""))
        #expect(error(sites + sources + "checks: {schedule: daily}\n").contains("has 1 fields"))
        #expect(error(sites + sources + "limits: {jobs: 0}\n").contains("`jobs` must be an integer in 1…64"))
        #expect(error(sources).contains("`sites:` must be a list"))
        #expect(error("- just a list\n").contains("expected a mapping"))
    }

    @Test func diagnosesWhatTheFormCannotSay() throws {
        let text = sites + """
        sources:
          - name: hourly
            paths: [/a]
            schedule: "0 * * * *"
            objectives: {rpo: 30m}
          - name: bare
            paths: [/b]
            schedule: every 1h
          - name: never
            paths: [/c]
            schedule: "0 0 30 2 *"
          - name: db
            postgres: {dsn_file: /nowhere/shop.dsn}
            schedule: every 1h
            objectives: {rpo: 2h}

        """
        let plan = try Plan.parse(text, path: "p.yaml", timeZone: utcZone)
        let found = PlanCheck.diagnose(plan, now: utc("2026-12-01T00:00:00Z")) { path in path == "/nowhere/shop.dsn" ? "it does not exist" : nil }
        let texts = found.map(\.description)
        #expect(texts.contains { $0.hasPrefix("p.yaml:8:23: error: source hourly: rpo 30m 00s is shorter than the longest wait between runs of \"0 * * * *\" (1h 00m)") }, "\(texts)")
        #expect(texts.contains { $0.contains("warning: source bare has no objectives") })
        #expect(texts.contains { $0.contains("error: source never: schedule \"0 0 30 2 *\" never runs") })
        #expect(texts.contains { $0.contains("error: source db: dsn_file /nowhere/shop.dsn: it does not exist") })
        #expect(!texts.contains { $0.contains("source db: rpo") })
        let jobs = PlanCheck.preview(plan, now: utc("2026-12-01T00:00:00Z"))
        #expect(jobs.first { $0.name == "hourly" }?.meetsRPO == false)
        #expect(jobs.first { $0.name == "db" }?.meetsRPO == true)
        #expect(jobs.first { $0.name == "hourly" }?.next == [utc("2026-12-01T01:00:00Z"), utc("2026-12-01T02:00:00Z"), utc("2026-12-01T03:00:00Z")])
        #expect(jobs.first { $0.name == "never" }?.next == [])
    }

    @Test func lockedSitesWarnAboutShortRetentionAndAdminAccessParses() throws {
        let text = """
        sites:
          - {name: local, repository: /srv/repo, password_file: /pw, role: primary}
          - name: vault
            repository: "s3:https://s3.example.com/b/p"
            password_file: /pw
            role: replica
            object_lock: {days: 30, mode: compliance}
            admin_repository: "s3:https://s3.example.com/b/p"
            admin_credentials_file: /admin.env
        sources:
          - {name: short, paths: [/a], schedule: every 1h, retention: {keep_daily: 7}}
          - {name: long, paths: [/b], schedule: every 1h, retention: {keep_daily: 7, keep_within: 40d}}
          - {name: local-only, paths: [/c], schedule: every 1h, retention: {keep_last: 2}, sites: [local]}
        """
        let plan = try Plan.parse(text, path: "p.yaml", timeZone: utcZone)
        let vault = plan.sites.sites[1]
        #expect(vault.objectLockDays == 30 && vault.objectLockMode == "compliance")
        #expect(vault.adminRepository == "s3:https://s3.example.com/b/p" && vault.adminCredentialsFile == "/admin.env")
        let found = PlanCheck.diagnose(plan, now: utc("2026-12-01T00:00:00Z")) { $0 == "/admin.env" ? "it does not exist" : nil }.map(\.description)
        #expect(found.contains { $0.contains("warning: source short: its retention forgets snapshots after about 7d") && $0.contains("site vault locks what it receives for 30 days") }, "\(found)")
        #expect(!found.contains { $0.contains("source long: its retention") })
        #expect(!found.contains { $0.contains("source local-only: its retention") })
        #expect(found.contains { $0.contains("error: site vault: admin_credentials_file /admin.env: it does not exist") })
        #expect(PlanCheck.retentionSpan(RetentionPolicy(last: 3), gap: 3600) == Double(10_800))
        #expect(PlanCheck.retentionSpan(RetentionPolicy(daily: 1, tags: [["keep"]]), gap: 3600) == nil)
        // object_lock on a folder; object_lock without days; admin credentials without an admin repository.
        for site in ["{name: v, role: replica, repository: /x, object_lock: {days: 30}}",
                     "{name: v, role: replica, repository: \"s3:https://h/b\", object_lock: {mode: governance}}",
                     "{name: v, role: replica, repository: \"s3:https://h/b\", admin_credentials_file: /a.env}"] {
            let t = "sites:\n  - {name: local, repository: /srv/repo, role: primary}\n  - \(site)\nsources:\n  - {name: a, paths: [/a], schedule: every 1h}\n"
            #expect(throws: (any Error).self, "\(site)") { _ = try Plan.parse(t, path: "p.yaml", timeZone: utcZone) }
        }
    }

    @Test func drillsAreLintedWithTheirPlaybooksAndUsers() throws {
        let dir = NSTemporaryDirectory() + "lifeboat-plancheck-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "steps:\n  - {name: a, run: \"echo {nope}\"}\n".write(toFile: dir + "/bad.yaml", atomically: true, encoding: .utf8)
        try "steps:\n  - {name: a, run: \"echo {rows}\", run_as: ghost}\n".write(toFile: dir + "/good.yaml", atomically: true, encoding: .utf8)
        let plan = try Plan.parse(sites + """
            sources:
              - {name: a, paths: [/a], schedule: every 1h}
            drills:
              - {name: d1, source: a, sandbox: /d, playbook: bad.yaml}
              - {name: d2, source: a, sandbox: /d, playbook: good.yaml, variables: {rows: "1"}, run_as: postgres}
              - {name: d3, source: a, sandbox: /d, scenario: ransomware, from: [local]}
            """, path: dir + "/lifeboat.yaml", timeZone: utcZone)
        let found = PlanCheck.diagnose(plan, now: utc("2026-12-01T00:00:00Z"), readable: { _ in nil }, userExists: { $0 == "postgres" }).map(\.description)
        #expect(found.contains { $0.contains("drill d1: its playbook cannot be used") && $0.contains("undefined variable {nope}") }, "\(found)")
        #expect(found.contains { $0.contains("drill d2: run_as ghost: no such user") }, "\(found)")
        #expect(!found.contains { $0.contains("drill d2: its playbook") || $0.contains("run_as postgres") }, "\(found)")
        #expect(found.contains { $0.contains("warning") && $0.contains("drill d3: every site it drills is a local folder") }, "\(found)")
    }

    @Test func checksMustCoverEveryPackWithinTheirSpan() throws {
        func findings(_ checks: String) throws -> [String] {
            let plan = try Plan.parse(sites + "sources:\n  - {name: a, paths: [/a], schedule: every 1h}\nchecks: \(checks)\n", path: "p.yaml", timeZone: utcZone)
            return PlanCheck.diagnose(plan, now: utc("2026-12-01T00:00:00Z")) { _ in nil }.map(\.description)
        }
        // 5% daily: 20 days for a full cycle.
        #expect(try findings("{schedule: \"0 3 * * *\", read_data_subset: 5%, full_coverage_within: 30d}").allSatisfy { !$0.contains("checks: reading") })
        let slow = try findings("{schedule: \"0 3 * * 0\", read_data_subset: 5%, full_coverage_within: 30d}")
        #expect(slow.contains { $0.contains("error: checks: reading 5% of the data per run, one part of 20 in turn, every pack is read only every 140d") }, "\(slow)")
        #expect(try findings("{schedule: \"0 3 * * *\", read_data_subset: 1/40, full_coverage_within: 30d}").contains { $0.contains("one part of 40") })
        #expect(ChecksJob.parts("30%") == 4 && ChecksJob.parts("100%") == 1 && ChecksJob.parts(nil) == nil && ChecksJob.parts("0.0001%") == 1_000_000)
    }

    @Test func aThousandSourcesValidateQuickly() throws {
        var text = sites + "sources:\n"
        for i in 0..<1000 { text += "  - {name: s\(i), paths: [/srv/\(i)], schedule: \"*/\(i % 59 + 1) * * * *\", objectives: {rpo: 2h}}\n" }
        let start = Date()
        let plan = try Plan.parse(text, path: "big.yaml", timeZone: utcZone)
        _ = PlanCheck.diagnose(plan, now: utc("2026-12-01T00:00:00Z")) { _ in nil }
        #expect(plan.sources.count == 1000)
        // Not a timing test (make bench measures it); a bound against an accidental quadratic walk.
        #expect(Date().timeIntervalSince(start) < 60)
    }
}

/// The fuzz seeds and any crashing inputs `make fuzz` found for the configuration readers, replayed through the
/// plan file reader, its checks and its preview, and as cron expressions: a plan or an error, never a trap.
@Suite struct PlanFuzzRegressionTests {
    @Test func configInputs() {
        let inputs = fuzzInputs("config")
        #expect(!inputs.isEmpty)
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        for i in inputs {
            let text = String(decoding: i, as: UTF8.self)
            if let plan = try? Plan.parse(text, path: "fuzz.yaml", timeZone: berlin) {
                _ = PlanCheck.diagnose(plan, now: now) { _ in nil }
                _ = PlanCheck.preview(plan, now: now)
            }
            if let line = text.split(separator: "\n").first, let s = try? Schedule(parsing: String(line), timeZone: berlin) {
                _ = s.upcoming(3, after: now)
                _ = s.longestGap(from: now)
            }
        }
    }
}
