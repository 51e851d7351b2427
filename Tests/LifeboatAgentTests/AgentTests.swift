import Foundation
import Testing
@testable import LifeboatAgent
@testable import LifeboatDrill
import LifeboatProcess
import LifeboatCore
import LifeboatPlan
import LifeboatSnapshot
import LifeboatSites
import LifeboatBackends
import LifeboatStorage
import LifeboatReplication
import Logging

let t0 = Date(timeIntervalSince1970: 1_796_000_000)  // 2026-11-29T…Z, a whole multiple of 10 s
let utc = TimeZone(identifier: "UTC")!

func every(_ s: Double) -> Schedule { .every(s) }
func cron(_ s: String) -> Schedule { try! Schedule(parsing: s, timeZone: utc) }

@Suite struct SchedulerTests {
    @Test func neverRunJobsRunAtOnceThenOnTheirSchedule() {
        var s = Scheduler()
        let job = JobID.backup("web")
        s.load([(job, every(60))], lastRun: { _ in nil }, paused: { _ in false }, now: t0)
        #expect(s.due(at: t0) == [job])
        let late = s.start(job, now: t0)
        #expect(late == 0)
        #expect(s.due(at: t0.addingTimeInterval(30)).isEmpty)
        s.finish(job)
        let e = s.entry(job)!
        #expect(e.scheduled == Date(timeIntervalSince1970: (t0.timeIntervalSince1970 / 60).rounded(.down) * 60 + 60))
        #expect(e.due! >= e.scheduled!)
        #expect(e.due!.timeIntervalSince(e.scheduled!) <= 6)  // a tenth of the interval at most
        #expect(s.due(at: e.due!) == [job])
    }

    @Test func aRunningJobIsNeverStartedTwice() {
        var s = Scheduler()
        let job = JobID.backup("db")
        s.load([(job, every(1))], lastRun: { _ in nil }, paused: { _ in false }, now: t0)
        s.start(job, now: t0)
        // Its next time passes while it runs: not due again until it ends, then once (no pile-up).
        #expect(s.due(at: t0.addingTimeInterval(10)).isEmpty)
        s.finish(job)
        #expect(s.due(at: t0.addingTimeInterval(10)) == [job])
        s.start(job, now: t0.addingTimeInterval(10))
        #expect(s.due(at: t0.addingTimeInterval(10)).isEmpty)
    }

    @Test func missedRunsAreCaughtUpOnceAtStart() {
        var s = Scheduler()
        let job = JobID.backup("web")
        // Last run 5 hours ago on an hourly schedule: four runs missed, one catch-up now.
        s.load([(job, cron("0 * * * *"))], lastRun: { _ in t0.addingTimeInterval(-5 * 3600) }, paused: { _ in false }, now: t0)
        #expect(s.due(at: t0) == [job])
        let late = s.start(job, now: t0)!
        #expect(late > 3 * 3600)  // measured from the first missed time
        s.finish(job)
        #expect(s.due(at: t0.addingTimeInterval(1)).isEmpty)
        // Not missed: ran 10 minutes ago, next at the hour.
        var fresh = Scheduler()
        let hour = Date(timeIntervalSince1970: (t0.timeIntervalSince1970 / 3600).rounded(.down) * 3600)
        fresh.load([(job, cron("0 * * * *"))], lastRun: { _ in hour.addingTimeInterval(60) }, paused: { _ in false }, now: hour.addingTimeInterval(600))
        #expect(fresh.due(at: hour.addingTimeInterval(600)).isEmpty)
        #expect(fresh.entry(job)!.scheduled == hour.addingTimeInterval(3600))
    }

    @Test func pausedJobsAreNotStartedAndResumeWhereTheyWere() {
        var s = Scheduler()
        let job = JobID.backup("web")
        s.load([(job, every(10))], lastRun: { _ in nil }, paused: { $0 == job }, now: t0)
        #expect(s.due(at: t0.addingTimeInterval(100)).isEmpty)
        #expect(s.nextWake(after: t0) == nil)
        let resumed = s.setPaused(job, false)
        #expect(resumed)
        #expect(s.due(at: t0) == [job])
        let unknown = s.setPaused(JobID.backup("nope"), true)
        #expect(!unknown)
    }

    @Test func runNowOfARunningJobRunsItOnceMoreAfterwards() {
        var s = Scheduler()
        let job = JobID(.replicate)
        s.load([(job, every(3600))], lastRun: { _ in t0 }, paused: { _ in false }, now: t0.addingTimeInterval(1))
        #expect(s.due(at: t0.addingTimeInterval(2)).isEmpty)
        let r1 = s.runNow(job, now: t0.addingTimeInterval(2))
        #expect(r1)
        #expect(s.due(at: t0.addingTimeInterval(2)) == [job])
        let manual = s.start(job, now: t0.addingTimeInterval(2))
        #expect(manual == nil)  // a manual run: no delay to measure
        let r2 = s.runNow(job, now: t0.addingTimeInterval(3))
        #expect(r2)
        #expect(s.due(at: t0.addingTimeInterval(3)).isEmpty)
        s.finish(job)
        #expect(s.due(at: t0.addingTimeInterval(3)) == [job])
        let r3 = s.runNow(JobID(.prune), now: t0)
        #expect(!r3)
    }

    @Test func reloadKeepsUnchangedJobsAndForgetsRemovedOnesAfterTheyEnd() {
        var s = Scheduler()
        let a = JobID.backup("a"), b = JobID.backup("b")
        s.load([(a, every(60)), (b, every(60))], lastRun: { _ in nil }, paused: { _ in false }, now: t0)
        s.start(a, now: t0)
        s.start(b, now: t0)
        s.finish(a)
        let kept = s.entry(a)
        s.load([(a, every(60))], lastRun: { _ in t0 }, paused: { _ in false }, now: t0.addingTimeInterval(5))
        #expect(s.entry(a) == kept)
        #expect(s.entry(b)?.running == true)  // still running: kept until it ends
        #expect(s.due(at: t0.addingTimeInterval(1000)) == [a])
        s.finish(b)
        #expect(s.entry(b) == nil)
        // A changed schedule is a new job.
        s.load([(a, every(30))], lastRun: { _ in t0 }, paused: { _ in false }, now: t0.addingTimeInterval(5))
        #expect(s.entry(a)?.schedule == every(30))
    }

    @Test func delaysAreStableSpreadAndBounded() {
        var seen = Set<Double>()
        for i in 0..<50 {
            let job = JobID.backup("source-\(i)")
            let d = Scheduler.delay(for: job, schedule: cron("*/15 * * * *"), now: t0, maxJitter: 30)
            #expect(d >= 0 && d < 30)
            #expect(d == Scheduler.delay(for: job, schedule: cron("*/15 * * * *"), now: t0.addingTimeInterval(999), maxJitter: 30))
            seen.insert(d)
        }
        #expect(seen.count > 40)
        // A 2-second schedule gets at most 0.2 s.
        #expect(Scheduler.delay(for: .backup("x"), schedule: cron("*/2 * * * * *"), now: t0, maxJitter: 30) < 0.2)
    }

    @Test func jobIDsRoundTripAndRejectNonsense() {
        for s in ["backup:web-files", "replicate", "prune", "check"] { #expect(JobID(parsing: s)?.description == s) }
        for s in ["backup", "backup:", "prune:x", "nope", "", ":"] { #expect(JobID(parsing: s) == nil) }
    }
}

@Suite struct PostgresDSNTests {
    @Test func uriBecomesEnvironment() throws {
        let env = try PostgresDSN.environment("postgresql://shop:s%40cret@db.example.com:5433/shop?sslmode=require&application_name=lifeboat\n")
        #expect(env == ["PGUSER": "shop", "PGPASSWORD": "s@cret", "PGHOST": "db.example.com", "PGPORT": "5433", "PGDATABASE": "shop",
                        "PGSSLMODE": "require", "PGAPPNAME": "lifeboat"])
        let socket = try PostgresDSN.environment("postgres:///shop?host=/run/postgresql&user=postgres")
        #expect(socket == ["PGDATABASE": "shop", "PGHOST": "/run/postgresql", "PGUSER": "postgres"])
        #expect(try PostgresDSN.environment("postgresql://[::1]:5432/x")["PGHOST"] == "::1")
    }

    @Test func keywordValueForm() throws {
        let env = try PostgresDSN.environment("host=localhost port=5432 dbname=shop user=app password = 'it\\'s a \\\\ quoted' sslmode=disable")
        #expect(env["PGHOST"] == "localhost")
        #expect(env["PGDATABASE"] == "shop")
        #expect(env["PGSSLMODE"] == "disable")
        #expect(env["PGPASSWORD"] == "it's a \\ quoted")
    }

    @Test func badDSNsAreRefusedWithoutEchoingThem() {
        for bad in ["", "nonsense", "host=x password='open", "postgresql://u:p@h/db?x", "postgresql://h/db?sslpassword=zz", "postgresql://h/%zz", "zz'x y=1"] {
            do {
                _ = try PostgresDSN.environment(bad)
                Issue.record("accepted \(bad)")
            } catch let e as LifeboatError {
                #expect(!e.message.contains("open") || bad.isEmpty)
                #expect(!e.message.contains("zz"))
            } catch { Issue.record("\(error)") }
        }
    }
}

@Suite struct AgentPureTests {
    @Test func checksRotateThroughEveryPart() {
        #expect(Agent.checkPart(subset: nil, counter: 3).0 == nil)
        #expect(Agent.checkPart(subset: "100%", counter: 3).0 == .all)
        var parts: [ReadDataSubsetPart] = []
        for c in 0..<40 {
            let (s, total) = Agent.checkPart(subset: "5%", counter: c)
            #expect(total == 20)
            if case .part(let n, let t)? = s { parts.append(ReadDataSubsetPart(n: n, t: t)) }
        }
        #expect(Set(parts.prefix(20).map(\.n)) == Set(1...20))
        #expect(parts[20].n == 1)
        #expect(Agent.checkPart(subset: "30%", counter: 0).parts == 4)
        #expect(Agent.checkPart(subset: "1/7", counter: 13).0 == .part(7, 7))
    }

    @Test func logfmtQuotesWhatNeedsIt() {
        #expect(LineLogHandler.quote("plain") == "plain")
        #expect(LineLogHandler.quote("two words") == "\"two words\"")
        #expect(LineLogHandler.quote("a=b") == "\"a=b\"")
        #expect(LineLogHandler.quote("say \"hi\"\nbye") == "\"say \\\"hi\\\"\\nbye\"")
        #expect(LineLogHandler.quote("") == "\"\"")
    }

    func plan(_ extra: String = "") throws -> Plan {
        try Plan.parse("""
            sites:
              - {name: a, repository: /tmp/a, password_file: /dev/null, role: primary}
              - {name: b, repository: /tmp/b, password_file: /dev/null, role: replica}
            sources:
              - {name: web, paths: [/srv], schedule: every 1h, objectives: {rpo: 2h}}
              - {name: db, paths: [/var/db], schedule: every 1h, sites: [a]}
            prune: {schedule: "0 4 * * *"}
            \(extra)
            """, path: "plan.yaml", timeZone: utc)
    }

    @Test func statusJudgesEachSiteAgainstTheObjective() throws {
        let p = try plan()
        let obs = [SiteObservation(source: "web", site: "a", newest: t0.addingTimeInterval(-600), checked: t0),
                   SiteObservation(source: "web", site: "b", newest: t0.addingTimeInterval(-3 * 3600), checked: t0)]
        let s = StatusBuilder.build(plan: p, observations: obs, lastRuns: [:], jobs: [:], scheduler: nil, running: [], facts: [:],
                                    since: t0.addingTimeInterval(-86400), agentStarted: nil, origin: "database", now: t0)
        let web = s.sources.first { $0.name == "web" }!
        #expect(web.sites.map(\.site) == ["a", "b"])
        #expect(web.sites.map(\.meetsRPO) == [true, false])
        #expect(web.sites[1].rpoSeconds == 3 * 3600)
        #expect(!s.objectivesMet)
        let db = s.sources.first { $0.name == "db" }!
        #expect(db.sites.map(\.site) == ["a"])  // its own sites only
        #expect(db.sites[0].meetsRPO == nil)    // no objective
        #expect(s.jobs.map(\.job) == ["replicate", "prune"])
        // Without a snapshot, the RPO counts from `since` and is not met.
        let none = StatusBuilder.build(plan: p, observations: [], lastRuns: [:], jobs: [:], scheduler: nil, running: [], facts: [:],
                                       since: t0.addingTimeInterval(-60), agentStarted: nil, origin: "database", now: t0)
        #expect(none.sources[0].sites[0].rpoSeconds == 60)
        #expect(none.sources[0].sites[0].meetsRPO == false)
        // It encodes and decodes (the API and `lifeboat status`).
        let back = try AgentAPI.decoder().decode(AgentStatus.self, from: AgentAPI.encoder().encode(s))
        #expect(back.sources.count == 2 && back.sources[0].sites[1].meetsRPO == false)
        // `sites status --agent`: the agent's facts as site rows.
        var down = SiteFacts()
        down.reachable = false
        down.lastError = "connection refused"
        down.lagSeconds = 7200.4
        down.snapshotsMissing = 2
        let rows = StatusBuilder.build(plan: p, observations: obs, lastRuns: [:], jobs: [:], scheduler: nil, running: [], facts: ["b": down],
                                       since: t0, agentStarted: t0, origin: "agent", now: t0).siteStatusRows(p)
        #expect(rows.map(\.site) == ["a", "b"])
        #expect(rows[0].reachable && rows[0].lagSeconds == 0)
        #expect(!rows[1].reachable && rows[1].error == "connection refused" && rows[1].lagSeconds == 7200 && rows[1].missing == 2)
        #expect(rows[1].newestSnapshot == Timestamp.format(t0.addingTimeInterval(-3 * 3600)))
    }
}

struct ReadDataSubsetPart: Hashable { var n: Int; var t: Int }

@Suite struct StateStoreTests {
    func tempPath() -> String { NSTemporaryDirectory() + "lifeboat-state-\(UInt64.random(in: 0...UInt64.max))/agent.db" }

    @Test func runsArePersistedAndStaleOnesInterrupted() throws {
        let path = tempPath()
        defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
        do {
            let s = try StateStore(path: path)
            let a = try s.begin(job: "backup:web", site: "a", scheduled: t0, started: t0.addingTimeInterval(0.5))
            try s.end(a, finished: t0.addingTimeInterval(3), result: .success, snapshot: "abcd", bytes: 10, files: 2)
            _ = try s.begin(job: "backup:db", site: "a", scheduled: nil, started: t0.addingTimeInterval(4))
            try s.setPaused("backup:db", true)
            try s.observe(SiteObservation(source: "web", site: "a", newest: t0, checked: t0, lastSuccess: t0, lastError: nil))
            try s.setBreach("rpo:web@b", since: t0)
            #expect(try s.advance("check") == 0)
            #expect(try s.advance("check") == 1)
        }
        // A new process (the agent after a SIGKILL) sees it all; the run left `running` becomes `interrupted`.
        let s = try StateStore(path: path)
        let stale = try s.interruptStale(now: t0.addingTimeInterval(60))
        #expect(stale.map(\.job) == ["backup:db"])
        let h = try s.history()
        #expect(h.map(\.result) == [.interrupted, .success])
        #expect(h[1].snapshot == "abcd" && h[1].duration == 2.5 && h[1].files == 2)
        let jobs = try s.jobs()
        #expect(jobs["backup:db"]?.paused == true)
        #expect(jobs["backup:web"]?.lastStart == t0.addingTimeInterval(0.5))
        #expect(jobs["check"]?.counter == 2)
        #expect(try s.observations().first?.newest == t0)
        #expect(try s.breaches()["rpo:web@b"] == t0)
        #expect(try s.lastRuns(result: .success)["backup:web@a"]?.snapshot == "abcd")
        #expect(try s.lastRuns()["backup:db@a"]?.result == .interrupted)  // the run interrupted counts as the last
        // A later run of the same job and site replaces it in the last runs; another result keeps its own.
        let again = try s.begin(job: "backup:web", site: "a", scheduled: nil, started: t0.addingTimeInterval(100))
        try s.end(again, finished: t0.addingTimeInterval(101), result: .failure, error: "disk full")
        #expect(try s.lastRuns()["backup:web@a"]?.result == .failure)
        #expect(try s.lastRuns(result: .success)["backup:web@a"]?.snapshot == "abcd")
        #expect(try s.lastRuns(result: .failure)["backup:web@a"]?.error == "disk full")
        // Read-only access (status without an agent) sees the same.
        let r = try StateStore(readingFrom: path)
        #expect(try r.history(limit: 1).first?.result == .failure)
        #expect(try r.history(job: "backup:web", limit: 10, since: t0.addingTimeInterval(50)).map(\.result) == [.failure])
        #expect(throws: LifeboatError.self) { try StateStore(readingFrom: path + ".missing") }
        // The replicator's state lives in the database too.
        let storage = s.replicationStorage()
        #expect(storage.load().sites.isEmpty)
        var state = storage.load()
        var site = SiteState()
        site.consecutiveFailures = 3
        site.lastError = "refused"
        state.sites["cloud"] = site
        try storage.save(state)
        #expect(try StateStore(path: path).replicationStorage().load().sites["cloud"]?.consecutiveFailures == 3)
    }
}

@Suite struct HostileStateTests {
    @Test func aStateDatabaseOfWrongTypesIsReadWithoutTrapping() throws {
        // As a hostile site could serve it back through the recovery kit: the migration marked done, tables
        // without constraints, every value of a wrong type.
        let dir = NSTemporaryDirectory() + "lifeboat-hostile-\(UInt64.random(in: 0...UInt64.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = dir + "/agent.db"
        let sql = """
            CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY);
            INSERT INTO grdb_migrations VALUES ('v1');
            CREATE TABLE run (id, job, site, scheduled, started, finished, result, error, snapshot, bytes, files, errors);
            INSERT INTO run VALUES ('x', NULL, 7, 'soon', 1e308, X'00ff', 42, 3.5, NULL, 'many', -1, 9e99);
            INSERT INTO run VALUES (2, 'backup:web', NULL, NULL, 'yesterday', NULL, 'running', NULL, NULL, NULL, NULL, NULL);
            CREATE TABLE job (job, last_start, paused, counter);
            INSERT INTO job VALUES (NULL, 1, 1, 1); INSERT INTO job VALUES ('check', 'x', 'yes', 9e99);
            CREATE TABLE site_source (source, site, newest, checked, last_success, last_error);
            INSERT INTO site_source VALUES ('web', 'a', 'new', -1e300, X'01', 5); INSERT INTO site_source VALUES (NULL, NULL, 1, 1, 1, 1);
            CREATE TABLE breach (key, since); INSERT INTO breach VALUES (1, 'x'); INSERT INTO breach VALUES ('rpo:web@a', 1e400);
            CREATE TABLE agent (key, value); INSERT INTO agent VALUES ('site_facts', 12); INSERT INTO agent VALUES ('replication_state', X'ff');
            """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
        p.arguments = [path, sql]
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/sqlite3") else { return }
        try p.run(); p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        let s = try StateStore(readingFrom: path)
        let h = try s.history()
        #expect(h.map(\.job) == ["backup:web"])
        #expect(h[0].started == Date(timeIntervalSince1970: 0))
        _ = try s.lastRuns()
        #expect(try s.jobs()["check"]?.counter == 0)  // 9e99 is no whole number: ignored
        #expect(try s.observations().map(\.source) == ["web"])
        _ = try s.breaches()
        #expect(try s.flag("site_facts") == nil)
        #expect(SiteFacts.decode(try s.flag("site_facts")).isEmpty)
        let w = try StateStore(path: path)
        #expect(w.replicationStorage().load().sites.isEmpty)
        #expect(try w.interruptStale(now: t0).map(\.job) == ["backup:web"])
        // Its tables lack the keys writes rely on: a clear error, not a trap.
        #expect(throws: LifeboatError.self) { try w.advance("check") }
    }
}

@Suite struct HookTests {
    @Test func aHangingHookIsKilledAtItsTimeout() async throws {
        let start = ContinuousClock.now
        do {
            try await HookRunner.run(["sleep 300 & sleep 300"], timeout: 0.3, environment: [:], what: "before")
            Issue.record("no timeout")
        } catch let e as ChildError {
            #expect(e.description.contains("did not finish within"))
        }
        // Killed, not waited for: far below the hook's 300 s, with room for a loaded machine (a CI run's unit
        // tests, two cores shared by every suite, once took 10.2 s here: a bound of 10 s was a timing test).
        #expect(ContinuousClock.now - start < .seconds(120))
    }

    @Test func aFailingHookSaysWhyAndTheEnvironmentReachesIt() async throws {
        await #expect(throws: ChildError.self) {
            try await HookRunner.run(["echo oops >&2; exit 3"], timeout: 5, environment: [:], what: "after")
        }
        do {
            try await HookRunner.run(["test \"$LIFEBOAT_SOURCE\" = web"], timeout: 5, environment: ["LIFEBOAT_SOURCE": "web"], what: "before")
        }
        do {
            try await HookRunner.run(["exit 7"], timeout: 5, environment: [:], what: "before")
        } catch let e as ChildError {
            #expect(e.description.contains("exit status 7"))
        }
    }
}

@Suite struct PlanChangeAndKitTests {
    func plan(_ sources: String, prune: String = "") throws -> Plan {
        try Plan.parse("""
            sites:
              - {name: a, repository: /tmp/a, password_file: /etc/lifeboat/a.pw, role: primary}
              - {name: b, repository: "rest:https://alice:s3cret@backup.example.com:8000/alice", password_file: /etc/lifeboat/b.pw, credentials_file: /etc/lifeboat/b.env, role: replica}
            sources:
            \(sources)
            \(prune)
            agent: {token_file: /etc/lifeboat/agent.token, state: /var/lib/lifeboat/agent.db, self_backup: "15 * * * *"}
            """, path: "/etc/lifeboat/lifeboat.yaml", timeZone: utc)
    }

    @Test func aReloadShowsWhatChanges() throws {
        let old = try plan("""
              - {name: web, paths: [/srv], schedule: every 1h, objectives: {rpo: 2h}}
              - {name: gone, paths: [/old], schedule: every 1h}
            """)
        let running = StatusBuilder.build(plan: RecoveryKit.withSelfBackup(old), observations: [], lastRuns: [:], jobs: [:], scheduler: nil,
                                          running: [.backup("gone")], facts: [:], since: t0, agentStarted: t0, origin: "agent", now: t0)
        let next = try plan("""
              - {name: web, paths: [/srv], schedule: every 30m, objectives: {rpo: 1h}}
              - {name: db, sqlite: {path: /var/db.sqlite}, schedule: every 1h}
            """, prune: "prune: {schedule: \"0 4 * * *\"}")
        let changes = PlanChange.between(running: running, next: RecoveryKit.withSelfBackup(next))
        #expect(changes.map(\.description) == [
            "~ backup:web: schedule \"every 1h\" -> \"every 30m\"; rpo 2h 00m -> 1h 00m",
            "+ backup:db: sqlite, every 1h",
            "- backup:gone: running now: it finishes first",
            "+ prune: 0 4 * * *",
        ])
        #expect(PlanChange.between(running: running, next: RecoveryKit.withSelfBackup(old)).isEmpty)
    }

    @Test func theKitNamesWhereSecretsLivedButNoSecret() throws {
        let p = RecoveryKit.withSelfBackup(try plan("""
              - {name: web, paths: [/srv], schedule: every 1h, objectives: {rpo: 2h, rto: 30m}}
              - {name: shop, postgres: {dsn_file: /etc/lifeboat/shop.dsn}, schedule: every 1h}
            """))
        let a = p.sites.sites[0], b = p.sites.sites[1]
        let text = RecoveryKit.render(p, sites: [
            RecoveryKit.SiteFacts(site: a, repositoryID: "0123abcd", keyIDs: ["f00dfeedf00dfeedf00dfeed"], snapshots: 3, newest: ["web": t0]),
            RecoveryKit.SiteFacts(site: b, error: "connection refused"),
        ], now: t0, host: "web1")
        #expect(!text.contains("s3cret"))
        #expect(text.contains("`rest:https://…@backup.example.com:8000/alice`"))
        for s in ["/etc/lifeboat/a.pw", "/etc/lifeboat/b.env", "/etc/lifeboat/shop.dsn", "/etc/lifeboat/agent.token", "`0123abcd`",
                  "`f00dfeedf00dfeed`", "NO: connection refused", "restore latest --tag source=lifeboat-agent",
                  "lifeboat restore latest --tag source=web --target /", "pg_restore", "RTO 30m 00s"] {
            #expect(text.contains(s), "the kit has \(s)")
        }
        // A from-kit drill reads the kit as a person would type it: the first reachable site, its secrets' places.
        let lines = try FromKit.parse(text)
        #expect(lines.repository == a.repository && lines.passwordFile == "/etc/lifeboat/a.pw")
        #expect(lines.staging == RecoveryKit.stagingDirectory(p) && lines.planPath == p.path)
        #expect(p.sources.last?.name == "lifeboat-agent" && p.sources.last?.scheduleText == "15 * * * *")
        #expect(p.sources.last?.schedule.next(after: t0).map { Calendar(identifier: .gregorian).component(.minute, from: $0) } == 15)
        #expect(RecoveryKit.redacted("/srv/repo") == "/srv/repo")
        #expect(RecoveryKit.redacted("s3:https://s3.example.com/b/p") == "s3:https://s3.example.com/b/p")
        #expect(RecoveryKit.redacted("rest:http://u:p@h/x@y") == "rest:http://…@h/x@y")
        #expect(throws: (any Error).self) { _ = try plan("  - {name: lifeboat-agent, paths: [/x], schedule: every 1h}") }
    }
}

func tid(_ s: String) -> ID {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
    return ID(w0: h, w1: 1, w2: 2, w3: 3)
}

@Suite struct HoldingsTests {
    func plan() throws -> Plan {
        try Plan.parse("""
            sites:
              - {name: a, repository: /tmp/a, password_file: /dev/null, role: primary}
              - {name: b, repository: /tmp/b, password_file: /dev/null, role: replica}
            sources:
              - {name: web, paths: [/srv], schedule: every 1h}
              - {name: db, sqlite: {path: /var/db.sqlite, continuous: true}, schedule: every 1h}
            """, path: "plan.yaml", timeZone: utc)
    }

    func files(_ n: Int, source: String) -> [(id: ID, snapshot: Snapshot)] {
        (0..<n).map { i in
            var summary = SnapshotSummary()
            summary.totalBytesProcessed = UInt64(1000 + i)
            summary.dataAddedPacked = UInt64(i)
            let s = Snapshot(time: t0.addingTimeInterval(Double(i) * 60), tree: tid("t\(i)"), paths: ["/srv"], hostname: "h",
                             tags: [SourceBackup.tag(source)], summary: summary)
            return (tid("\(source)\(i)"), s)
        }
    }

    func sqlite(_ kind: String, seq: Int, at: Date, last: Date? = nil, source: String = "db", generation: String = "0123456789abcdef") -> (id: ID, snapshot: Snapshot) {
        var s = Snapshot(time: at, tree: tid("\(kind)\(seq)\(generation)"), paths: ["/var/db.sqlite"], hostname: "h", tags: [SourceBackup.tag(source)])
        s.kind = kind
        var r = SQLiteRecord(database: "/var/db.sqlite", generation: generation, seq: seq, pageSize: 4096, cycle: "0011223344556677",
                             firstFrame: kind == "sqlite-wal" ? 1 : 0, lastFrame: kind == "sqlite-wal" ? 4 : 0, checksum: "8899aabbccddeeff", pages: 10)
        if kind == "sqlite-wal" { r.transactions = 2; r.firstTime = Timestamp.format(at); r.lastTime = Timestamp.format(last ?? at) }
        s.sqlite = r
        return (tid("\(kind)\(seq)\(source)"), s)
    }

    /// An agent of `plan()` whose sites cannot be opened, its state in `dir`, at `t0`.
    func offlineAgent(_ dir: String) throws -> (Plan, Agent) {
        let p = try plan()
        let access = SiteAccess(settings: BackendSettings(http: .fromEnvironment(), retry: RetryPolicy(attempts: 1), environment: [:]),
                                password: { site in throw LifeboatError.invalid("no password for \(site.name)") })
        return (p, try Agent(plan: p, store: try StateStore(path: dir + "/agent.db"), access: access, logger: Logger(label: "test"), clock: { t0 }))
    }

    /// A prune and a replication pass list the same site at once: the listing that began first may end last.
    @Test func aListingOlderThanWhatIsRecordedTakesNothingAway() async throws {
        let dir = NSTemporaryDirectory() + "lifeboat-agent-\(UInt64.random(in: 0...UInt64.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (p, agent) = try offlineAgent(dir)
        let a = p.sites.sites.first { $0.name == "a" }!
        func newest() async -> Date? { await agent.observations["web@a"]?.newest }
        // The prune's listing (30 snapshots) begins, then the pass's, after a forget (20 left); the pass ends first.
        let early = await agent.listingTicket(), late = await agent.listingTicket()
        await agent.refresh(site: a, plan: p, snapshots: files(20, source: "web"), listedAt: t0.addingTimeInterval(1), ticket: late)
        let version = await agent.holdingsVersion
        await agent.refresh(site: a, plan: p, snapshots: files(30, source: "web"), listedAt: t0, ticket: early)
        #expect(await agent.holdings(of: "web")["a"]?.count == 20)
        #expect(await agent.holdings(of: "web")["a"]?.listed == t0.addingTimeInterval(1))
        #expect(await agent.holdingsVersion == version)
        #expect(await newest() == t0.addingTimeInterval(19 * 60))
        // A backup recorded while a listing runs: the listing, which began before it, does not move it back...
        let during = await agent.listingTicket()
        await agent.observe(source: "web", site: "a", newest: .some(t0.addingTimeInterval(3600)), success: t0.addingTimeInterval(3600), error: nil)
        await agent.refresh(site: a, plan: p, snapshots: files(20, source: "web"), listedAt: t0.addingTimeInterval(2), ticket: during)
        #expect(await newest() == t0.addingTimeInterval(3600))
        // ...but may add to it (a snapshot it found newer than what was recorded).
        let more = await agent.listingTicket()
        await agent.observe(source: "web", site: "a", newest: .some(t0.addingTimeInterval(3600)), success: nil, error: nil)
        await agent.refresh(site: a, plan: p, snapshots: files(80, source: "web"), listedAt: t0.addingTimeInterval(3), ticket: more)
        #expect(await newest() == t0.addingTimeInterval(79 * 60))
        // A listing begun after everything recorded is the truth, even when it moves back (snapshots forgotten).
        let after = await agent.listingTicket()
        await agent.refresh(site: a, plan: p, snapshots: files(10, source: "web"), listedAt: t0.addingTimeInterval(4), ticket: after)
        #expect(await newest() == t0.addingTimeInterval(9 * 60))
        #expect(await agent.holdings(of: "web")["a"]?.count == 10)
        #expect(await agent.holdingsVersion != version)
    }

    /// Neighbours of the listing order: a failed backup (nothing seen) does not make a listing begun before it
    /// stale, and a stale listing still raises a continuous SQLite source's freshness at a replica.
    @Test func aFailedBackupOrAStaleListingKeepsWhatTheyShould() async throws {
        let dir = NSTemporaryDirectory() + "lifeboat-agent-\(UInt64.random(in: 0...UInt64.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (p, agent) = try offlineAgent(dir)
        let a = p.sites.sites.first { $0.name == "a" }!, b = p.sites.sites.first { $0.name == "b" }!
        await agent.refresh(site: a, plan: p, snapshots: files(30, source: "web"), listedAt: t0, ticket: await agent.listingTicket())
        #expect(await agent.observations["web@a"]?.newest == t0.addingTimeInterval(29 * 60))
        // Snapshots forgotten; a backup fails while the listing that shows it runs: the listing is still the truth.
        let listing = await agent.listingTicket()
        await agent.observe(source: "web", site: "a", newest: nil, success: nil, error: "the site is unreachable")
        await agent.refresh(site: a, plan: p, snapshots: files(5, source: "web"), listedAt: t0.addingTimeInterval(1), ticket: listing)
        #expect(await agent.observations["web@a"]?.newest == t0.addingTimeInterval(4 * 60))
        #expect(await agent.holdings(of: "web")["a"]?.count == 5)
        // A replica holding every record of the primary is as fresh as the follower's sync, even by a listing
        // that began before a newer one was recorded (which keeps its holdings).
        let records = [sqlite("sqlite-snapshot", seq: 0, at: t0), sqlite("sqlite-wal", seq: 0, at: t0.addingTimeInterval(1), last: t0.addingTimeInterval(2))]
        let early = await agent.listingTicket(), late = await agent.listingTicket()
        await agent.refresh(site: b, plan: p, snapshots: [records[0]], listedAt: t0.addingTimeInterval(5), ticket: late, primary: records,
                            synced: ["db": t0.addingTimeInterval(50)])
        #expect(await agent.observations["db@b"]?.newest == t0)
        await agent.refresh(site: b, plan: p, snapshots: records, listedAt: t0.addingTimeInterval(4), ticket: early, primary: records,
                            synced: ["db": t0.addingTimeInterval(50)])
        #expect(await agent.observations["db@b"]?.newest == t0.addingTimeInterval(50))
        #expect(await agent.holdings(of: "db")["b"]?.walRecords == 0)
    }

    @Test func aSiteListsTheNewestSnapshotsOfASourceWithSizes() throws {
        let p = try plan()
        let web = p.sources.first { $0.name == "web" }!
        let h = SourceHoldings.of(web, in: files(30, source: "web") + files(5, source: "other"), listed: t0, keep: 20)
        #expect(h.count == 30)
        #expect(h.copies.count == 20)  // bounded, newest first
        #expect(h.copies.first!.time == t0.addingTimeInterval(29 * 60) && h.copies.first!.bytes == 1029 && h.copies.first!.added == 29)
        #expect(h.copies.allSatisfy { $0.kind == "files" })
        #expect(h.walRecords == nil && h.restorableFrom == nil)
        #expect(SourceHoldings.of(web, in: [], listed: t0).count == 0)
    }

    @Test func aContinuousSQLiteSourceShowsItsRestorableRange() throws {
        let p = try plan()
        let db = p.sources.first { $0.name == "db" }!
        let snaps = [sqlite("sqlite-snapshot", seq: 0, at: t0), sqlite("sqlite-wal", seq: 0, at: t0.addingTimeInterval(1), last: t0.addingTimeInterval(2)),
                     sqlite("sqlite-wal", seq: 1, at: t0.addingTimeInterval(3), last: t0.addingTimeInterval(4)),
                     // After a hole (record 2 missing) the chain stops: record 3 does not extend the range.
                     sqlite("sqlite-wal", seq: 3, at: t0.addingTimeInterval(9), last: t0.addingTimeInterval(10)),
                     // Another source's records of the same path are not this source's.
                     sqlite("sqlite-wal", seq: 2, at: t0.addingTimeInterval(5), last: t0.addingTimeInterval(6), source: "intruder")]
        let h = SourceHoldings.of(db, in: snaps, listed: t0)
        #expect(h.count == 1 && h.copies.first?.kind == "sqlite-snapshot")
        #expect(h.walRecords == 3)
        #expect(h.restorableFrom == t0)
        #expect(h.restorableUntil == t0.addingTimeInterval(4))
        #expect(h.windows.count == 1)
        // The hole is named.
        #expect(h.problems.count == 1 && h.problems[0].contains("1 WAL record missing from number 2"))
    }

    @Test func twoGenerationsAreTwoWindowsNotOneRange() throws {
        let p = try plan()
        let db = p.sources.first { $0.name == "db" }!
        let day = 86400.0
        let snaps = [sqlite("sqlite-snapshot", seq: 0, at: t0), sqlite("sqlite-wal", seq: 0, at: t0.addingTimeInterval(day), last: t0.addingTimeInterval(2 * day)),
                     sqlite("sqlite-snapshot", seq: 0, at: t0.addingTimeInterval(4 * day), generation: "fedcba9876543210"),
                     sqlite("sqlite-wal", seq: 0, at: t0.addingTimeInterval(5 * day), last: t0.addingTimeInterval(6 * day), generation: "fedcba9876543210")]
        let h = SourceHoldings.of(db, in: snaps, listed: t0)
        #expect(h.windows == [.init(from: t0, until: t0.addingTimeInterval(2 * day)),
                              .init(from: t0.addingTimeInterval(4 * day), until: t0.addingTimeInterval(6 * day))])
        #expect(h.problems.isEmpty)
        // Overlapping windows merge; touching ones too; an empty one goes.
        let w = { (a: Double, b: Double) in SourceHoldings.Window(from: t0.addingTimeInterval(a), until: t0.addingTimeInterval(b)) }
        #expect(SourceHoldings.merge([w(5, 9), w(0, 3), w(3, 4), w(8, 12), w(20, 19)]) == [w(0, 4), w(5, 12)])
    }

    @Test func recentEventsAreBoundedNewestFirst() {
        let r = RecentEvents(capacity: 3)
        for i in 0..<5 { r.record(Alert(.failure, source: i % 2 == 0 ? "web" : "db", message: "m\(i)", time: t0.addingTimeInterval(Double(i)))) }
        #expect(r.newest(10).map(\.message) == ["m4", "m3", "m2"])
        #expect(r.newest(10) { $0.source == "web" }.map(\.message) == ["m4", "m2"])
        #expect(r.newest(1).map(\.message) == ["m4"])
        // Every alert sent is recorded, with or without targets.
        let events = RecentEvents()
        AlertDispatcher(targets: [], recent: events) { _ in }.send(Alert(.rpoBreach, source: "web", message: "late", time: t0))
        #expect(events.newest(5).map(\.message) == ["late"])
        // The count the live refresh watches goes on past the capacity.
        let small = RecentEvents(capacity: 2)
        for i in 0..<5 { small.record(Alert(.failure, source: "web", message: "m\(i)", time: t0)) }
        #expect(small.count == 5 && small.newest(10).count == 2)
    }
}
