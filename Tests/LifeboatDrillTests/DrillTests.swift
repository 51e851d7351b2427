import Foundation
import Testing
import LifeboatCore
import LifeboatPlan
import LifeboatProcess
@testable import LifeboatDrill

/// Built-in actions that restore nothing: a restore records a snapshot (or fails when told to).
struct FakeActions: PlaybookActions {
    var failRestore = false
    func restore(_ args: [String: String], into r: inout StepRecord) async throws {
        if failRestore { throw LifeboatError(.notFound, "no snapshot") }
        r.facts = ["snapshot": "abcd1234", "snapshot_time": "2026-12-01T10:00:00Z", "files": "3", "bytes": "42"]
        r.phases = ["fetch": 0.1, "restore": 0.2, "verify": 0.05, "integrity": 0]
    }
    func replicate(site: String?) async throws -> String { "0 snapshots copied" }
    func backend(_ action: PlaybookStep.BuiltIn, pool: String, backend: String) async throws -> String { "done" }
}

@Suite struct PlaybookRunnerTests {
    func book(_ text: String) throws -> Playbook { try Playbook.parse(text, path: "pb.yaml") }
    func dir() -> String {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("lb-drill-\(UUID().uuidString)").path
        try! FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    @Test func stopsAtTheFirstFailureAndAlwaysCleansUp() async throws {
        let d = dir()
        defer { try? FileManager.default.removeItem(atPath: d) }
        let b = try book("""
            steps:
              - {name: one, run: "echo one > {sandbox}/one"}
              - {name: two, run: "echo out; echo err >&2; exit 3"}
              - {name: three, run: "touch {sandbox}/three"}
            cleanup:
              - {name: clean, run: "touch {sandbox}/clean"}
            """)
        var r = PlaybookRunner(playbook: b, variables: ["sandbox": d, "run_id": "r1"], actions: FakeActions())
        r.audit = AuditLog(path: d + "/audit.jsonl")
        let run = await r.run(id: "r1")
        #expect(run.failedStep == "two")
        #expect(run.steps.map(\.name) == ["one", "two", "clean"])
        #expect(run.steps[1].detail?.contains("failed with exit status 3") == true && run.steps[1].output?.contains("err") == true)
        #expect(FileManager.default.fileExists(atPath: d + "/one") && !FileManager.default.fileExists(atPath: d + "/three"))
        #expect(FileManager.default.fileExists(atPath: d + "/clean"), "cleanup runs after a failure")
        let log = try #require(try AuditLog(path: d + "/audit.jsonl").run("r1"))
        #expect(log.variables["sandbox"] == d && log.steps["two"]?.result == .failed && log.steps["one"]?.result == .ok)
    }

    @Test func retriesChecksTimeoutsAndManualSteps() async throws {
        let d = dir()
        defer { try? FileManager.default.removeItem(atPath: d) }
        let b = try book("""
            steps:
              - {name: flaky, run: "test -f {sandbox}/tried || { touch {sandbox}/tried; exit 1; }", retries: 1, retry_delay: 10ms}
              - {name: third try, check: "n=$(cat {sandbox}/n 2>/dev/null || echo 0); echo $((n+1)) > {sandbox}/n; [ $n -ge 2 ]", within: 60s, interval: 10ms}
              - {name: confirm, manual: "Call the bank", confirmed_in_drills: true}
              - {name: hangs, run: "sleep 300", timeout: 200ms}
            """)
        var r = PlaybookRunner(playbook: b, variables: ["sandbox": d], actions: FakeActions())
        r.drill = true
        let start = ContinuousClock.now
        let run = await r.run(id: "r2")
        #expect(run.steps[0].result == .ok && run.steps[0].attempts == 2)
        #expect(run.steps[1].result == .ok && run.steps[1].attempts == 3, "a check is polled until it succeeds")
        #expect(run.steps[2].result == .ok, "a drill takes the confirmation from the file")
        #expect(run.steps[3].result == .failed && run.steps[3].detail?.contains("was killed") == true)
        #expect(ContinuousClock.now - start < .seconds(120), "the hung step did not hold the run (it sleeps 300 s)")
        // Outside a drill nobody confirms on a pipe: the manual step fails; a drill without the flag fails it too.
        let m = try book("steps:\n  - {name: m, manual: \"Do it\"}\n")
        #expect(await PlaybookRunner(playbook: m, variables: [:], actions: FakeActions()).run(id: "r3").failedStep == "m")
        var drill = PlaybookRunner(playbook: m, variables: [:], actions: FakeActions())
        drill.drill = true
        #expect(await drill.run(id: "r4").steps[0].detail?.contains("confirmed_in_drills") == true)
        var asked = PlaybookRunner(playbook: m, variables: [:], actions: FakeActions())
        asked.confirm = { _ in true }
        #expect(await asked.run(id: "r5").ok)
    }

    @Test func theDeadlineStopsTheRun() async throws {
        let b = try book("steps:\n  - {name: long, run: \"sleep 30\"}\n  - {name: next, run: \"true\"}\n")
        var r = PlaybookRunner(playbook: b, variables: [:], actions: FakeActions())
        r.deadline = Date().addingTimeInterval(0.3)
        let run = await r.run(id: "r6")
        #expect(run.failedStep == "long" && run.steps.count == 1)
    }
}

@Suite struct DrillJudgeTests {
    func report(rto: Double?, rpo: Double?) -> DrillReport {
        var r = DrillReport(id: "x", drill: "d", source: "s", site: "usb", scenario: "restore", host: "h",
                            declared: Timestamp.parse("2026-12-01T12:00:00Z")!)
        r.rtoObjective = rto
        r.rpoObjective = rpo
        return r
    }
    func step(_ name: String, _ start: Double, _ end: Double, ok: Bool = true, restore: Bool = false, phase: String = "playbook") -> StepRecord {
        let t = Timestamp.parse("2026-12-01T12:00:00Z")!
        var s = StepRecord(index: 1, name: name, kind: "run", summary: "", phase: phase, started: t.addingTimeInterval(start),
                           ended: t.addingTimeInterval(end), result: ok ? .ok : .failed)
        if restore {
            s.facts = ["snapshot": "abcd", "snapshot_time": "2026-12-01T11:30:00Z", "files": "2", "bytes": "10"]
            s.phases = ["fetch": 1, "restore": 3, "verify": 1, "integrity": 0]
        }
        return s
    }

    @Test func rtoAndRpoAgainstObjectives() {
        var r = report(rto: 60, rpo: 3600)
        r.steps = [step("restore", 0, 5, restore: true), step("check", 5, 7), step("stop", 7, 100, phase: "cleanup")]
        DrillRunner.judge(&r, run: PlaybookRun(id: "x"), setupOK: true)
        #expect(r.failures.isEmpty, "\(r.failures)")
        #expect(r.rtoSeconds == 7, "cleanup does not count")
        #expect(r.rpoSeconds == 1800)
        #expect(r.phases["playbook"] == 2 && r.phases["overhead"] == 0)
        var tight = report(rto: 6, rpo: 600)
        tight.steps = [step("restore", 0, 5, restore: true), step("check", 5, 7)]
        DrillRunner.judge(&tight, run: PlaybookRun(id: "x"), setupOK: true)
        #expect(tight.failures.count == 2)
        #expect(tight.failures[0].contains("RTO of 7.00 s exceeds the objective of 6.00 s"))
        #expect(tight.failures[1].contains("RPO of 30m 00s exceeds the objective"))
        var failed = report(rto: 60, rpo: 3600)
        failed.steps = [step("restore", 0, 5, restore: true), step("check", 5, 7, ok: false)]
        DrillRunner.judge(&failed, run: PlaybookRun(id: "x", failedStep: "check"), setupOK: true)
        #expect(failed.rtoSeconds == nil, "no recovery, no RTO")
        #expect(failed.failures == ["step \"check\" failed: no detail"])
    }

    @Test func reportsEscapeHostileNames() {
        var r = report(rto: 60, rpo: nil)
        r.drill = "<script>alert(1)</script>"
        r.steps = [step("<img src=x onerror=alert(1)>", 0, 1)]
        r.failures = ["a \"quoted\" & <b>bold</b> reason"]
        let html = r.html()
        #expect(!html.contains("<script>alert") && !html.contains("<img") && !html.contains("<b>bold"))
        #expect(html.contains("&lt;script&gt;") && html.contains("&amp;"))
        let back = try? DrillReport.decoder().decode(DrillReport.self, from: Data(r.json().utf8))
        #expect(back == r, "the JSON report reads back")
        #expect(r.markdown().contains("| RTO |"))
    }
}

@Suite struct KitAndSandboxTests {
    @Test func shellWordsOfTheKit() {
        #expect(FromKit.shellWords("export A='x y' B=\"q\" C=a\\ b") == ["export", "A=x y", "B=q", "C=a b"])
        #expect(FromKit.shellWords("'it'\\''s'") == ["it's"])
        #expect(throws: LifeboatError.self) { try FromKit.parse("# nothing here\n") }
    }

    @Test func staleSandboxesAreThoseOfDeadMakers() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("lb-sbx-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let mine = try Sandbox.create(root: root, drill: "d", site: "s", now: Date())
        try FileManager.default.createDirectory(atPath: root + "/lifeboat-drill-dead", withIntermediateDirectories: true)
        try "999999999 1\n".write(toFile: root + "/lifeboat-drill-dead/.lifeboat-drill", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: root + "/lifeboat-drill-nomarker", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/not-a-drill", withIntermediateDirectories: true)
        let stale = Set(Sandbox.stale(root: root).map { ($0 as NSString).lastPathComponent })
        #expect(stale == ["lifeboat-drill-dead", "lifeboat-drill-nomarker"], "this process's own sandbox and other folders stay")
        #expect(FileManager.default.fileExists(atPath: mine))
    }
}

@Suite struct RansomwareTests {
    @Test func drillRepositoriesSitBesideTheSitesOwn() {
        let run = "20261201T050000-0000abcd"
        let leaf = "lifeboat-drill/db-weekly/\(run)"
        let cases: [(String, String)] = [
            ("/srv/lifeboat/repo", "/srv/lifeboat/\(leaf)"),
            ("/srv/lifeboat/repo/", "/srv/lifeboat/\(leaf)"),
            ("/srv/lifeboat/repo/.", "/srv/lifeboat/\(leaf)"),
            ("/srv/lifeboat/repo/./", "/srv/lifeboat/\(leaf)"),
            ("local:/mnt/usb/repo", "local:/mnt/usb/\(leaf)"),
            ("repo", leaf),
            ("s3:https://s3.example.com/backups/home", "s3:https://s3.example.com/backups/\(leaf)"),
            ("s3:https://s3.example.com/backups/a/home", "s3:https://s3.example.com/backups/a/\(leaf)"),
            ("s3:http://127.0.0.1:9000/backups", "s3:http://127.0.0.1:9000/backups/\(leaf)"),
            ("s3:s3.example.com/backups/home", "s3:s3.example.com/backups/\(leaf)"),
            ("s3:backups/home", "s3:backups/\(leaf)"),
            ("s3:backups", "s3:backups/\(leaf)"),
            ("rest:https://u:p@host:8000/alice/repo", "rest:https://u:p@host:8000/alice/\(leaf)"),
            ("rest:http://host:8000/", "rest:http://host:8000/\(leaf)"),
            ("rest:http://host:8000", "rest:http://host:8000/\(leaf)"),
            ("rclone:remote:backups/home", "rclone:remote:backups/\(leaf)"),
            ("rclone:remote:", "rclone:remote:\(leaf)"),
        ]
        for (site, want) in cases {
            let got = DrillRepository.location(site, drill: "db-weekly", run: run)
            #expect(got == want, "\(site)")
            #expect(got != site)
        }
    }

    @Test func ransomwarePassesWithOneProtectedSiteOthersAllSites() {
        func report(_ site: String, _ passed: Bool) -> DrillReport {
            var r = DrillReport(id: site, drill: "d", source: "s", site: site, scenario: "x", host: "h", declared: Date(timeIntervalSince1970: 0))
            r.passed = passed
            return r
        }
        let loc = Location(file: "plan.yaml")
        let ransom = Drill(name: "d", source: "s", from: ["a", "b"], scenario: .ransomware, sandbox: "/tmp", location: loc)
        let restore = Drill(name: "d", source: "s", from: ["a", "b"], scenario: .restore, sandbox: "/tmp", location: loc)
        let mixed = [report("a", false), report("b", true)]
        #expect(DrillRunner.passed(ransom, mixed))
        #expect(!DrillRunner.passed(restore, mixed))
        #expect(!DrillRunner.passed(ransom, [report("a", false)]))
        #expect(!DrillRunner.passed(ransom, []))
        #expect(DrillRunner.passed(restore, [report("a", true), report("b", true)]))
    }

    @Test func randomBytesOverEveryFileKeepTheSizes() throws {
        let dir = NSTemporaryDirectory() + "lifeboat-ransom-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir + "/sub", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let text = Data(String(repeating: "plain text ", count: 300).utf8)
        try text.write(to: URL(fileURLWithPath: dir + "/a.txt"))
        try text.write(to: URL(fileURLWithPath: dir + "/sub/b.txt"))
        try Data().write(to: URL(fileURLWithPath: dir + "/empty"))
        try FileManager.default.createSymbolicLink(atPath: dir + "/link", withDestinationPath: "/etc/hostname")
        #expect(try Ransomware.overwriteWithRandom(dir) == 3)
        for f in ["a.txt", "sub/b.txt"] {
            let d = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + f))
            #expect(d.count == text.count && d != text)
            #expect(Entropy.bitsPerByte(d) > 7)
        }
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: dir + "/link") == "/etc/hostname")
    }
}

@Suite struct NodeCrashTests {
    let crash = Date(timeIntervalSince1970: 1000)
    func sample(_ dt: Double, _ ok: Bool, _ code: Int32 = 0) -> RequestLoop.Sample {
        RequestLoop.Sample(at: crash.addingTimeInterval(dt), ok: ok, code: ok ? 0 : code)
    }

    @Test func figuresFromTheClientsSamples() {
        let s = [sample(-0.2, true), sample(-0.1, false, -1), sample(0.05, true), sample(0.1, false, -1), sample(0.2, false, -2),
                 sample(0.3, true), sample(0.4, true)]
        let f = CrashFigures.of(s, crash: crash)
        #expect(f.requests == 7 && f.failed == 3 && f.failedAfterCrash == 2)
        #expect(f.lastFailure == "timed out")
        #expect(abs((f.serviceBack ?? 0) - 0.3) < 1e-6)
    }

    @Test func noFailureIsServiceAtOnce_andNoRecoveryIsNil() {
        #expect(CrashFigures.of([sample(0.1, true), sample(0.2, true)], crash: crash).serviceBack == 0)
        let down = CrashFigures.of([sample(0.1, true), sample(0.2, false, -3)], crash: crash)
        #expect(down.serviceBack == nil && down.lastFailure == "closed without an answer")
        #expect(CrashFigures.of([], crash: crash).serviceBack == nil)
    }

    @Test func theSwitchIsAnotherActiveBackendOrTheVictimDown() {
        let up = PoolView.Member(name: "a", state: "up", disabled: false)
        #expect(!PoolView(active: "a", backends: [up]).switched(from: "a"))
        #expect(PoolView(active: "b", backends: [up]).switched(from: "a"))
        #expect(PoolView(active: nil, backends: [PoolView.Member(name: "a", state: "down", disabled: false)]).switched(from: "a"))
        #expect(!PoolView(active: nil, backends: [up]).switched(from: "a"))
    }
}

@Suite struct DrillPlaybookTests {
    @Test func theDrillsVariablesAreDefinedInItsPlaybook() throws {
        let path = NSTemporaryDirectory() + "lifeboat-pb-\(UInt32.random(in: 0...UInt32.max)).yaml"
        try "steps:\n  - {name: rows, check: \"test {rows} -gt 0\", within: 1s}\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { unlink(path) }
        var drill = Drill(name: "d", source: "s", from: ["a"], scenario: .restore, sandbox: "/tmp", location: Location(file: "plan.yaml"))
        drill.playbook = path
        let loc = Location(file: "plan.yaml")
        let source = Source(name: "s", kind: .files(paths: ["/x"], exclude: []), schedule: .every(3600), scheduleText: "every 1h", retention: nil,
                            objectives: nil, hooks: nil, sites: [], location: loc, scheduleLocation: loc, rpoLocation: nil)
        #expect(throws: (any Error).self) { try DrillRunner.playbook(drill, source: source) }
        drill.variables = ["rows": "5"]
        let book = try DrillRunner.playbook(drill, source: source)
        #expect(book.steps.map(\.name) == ["restore", "rows"], "a restore step comes first")
    }
}

@Suite struct PostgresDrillTests {
    /// The RPO comes from the server's own log line; other offsets, no line, a cut line and junk give nil or the
    /// right instant, never a trap.
    @Test func lastReplayedTransactionFromTheLog() throws {
        let dir = NSTemporaryDirectory() + "pgdrill-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let log = dir + "/server.log"
        func with(_ text: String) -> Date? {
            try? Data(text.utf8).write(to: URL(fileURLWithPath: log))
            return PostgresDrill.lastReplayed(log)
        }
        let utc = with("x LOG:  redo done\n2026-12-02 00:09:52.135 UTC [663] LOG:  last completed transaction was at log time 2026-12-02 00:09:17.628819+00\n")
        #expect(utc == Timestamp.parse("2026-12-02T00:09:17.628819Z"))
        #expect(with("LOG:  last completed transaction was at log time 2026-12-02 02:09:17.5+02\n") == Timestamp.parse("2026-12-02T00:09:17.5Z"))
        #expect(with("LOG:  redo done at 0/2538E778\n") == nil)
        #expect(with("LOG:  last completed transaction was at log time 2026-12-02 00:0") == nil)
        #expect(with("LOG:  last completed transaction was at log time 9999-99-99 99:99:99+00\n") == nil)
        #expect(PostgresDrill.lastReplayed(dir + "/none.log") == nil)
    }
}
