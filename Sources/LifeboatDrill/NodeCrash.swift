import CLifeboatSys
import Foundation
import Glibc
import LifeboatConfig
import LifeboatCore
import LifeboatFailover
import LifeboatPlan
import LifeboatProcess
import Synchronization

/// What a drill sees of a proxy pool: the backend serving and each backend's state (the agent's pool status).
public struct PoolView: Sendable, Equatable {
    public struct Member: Sendable, Equatable {
        public var name: String
        /// up, down, …
        public var state: String
        public var disabled: Bool
        public init(name: String, state: String, disabled: Bool) { self.name = name; self.state = state; self.disabled = disabled }
    }
    public var active: String?
    public var backends: [Member]
    public init(active: String?, backends: [Member]) { self.active = active; self.backends = backends }

    /// Whether `name` no longer serves: another backend is active, or it is down.
    public func switched(from name: String) -> Bool {
        if let active, active != name { return true }
        return backends.first { $0.name == name }?.state == "down"
    }
}

/// node-crash's clients: one request at a time through the pool, on a thread of their own (each request blocks
/// for up to its timeout), until stopped; bounded in count and time.
final class RequestLoop: Sendable {
    struct Sample: Sendable { var at: Date; var ok: Bool; var code: Int32 }
    /// The newest samples (at most `maxSamples`: past that the oldest half goes) and counts of every request.
    struct Record: Sendable { var samples: [Sample] = []; var total = 0; var failed = 0 }
    let record = Mutex(Record())
    let stopped = Atomic<Bool>(false)
    /// Set by the thread when it ends; `stop()` waits on it without spinning.
    let done = Mutex<(finished: Bool, waiter: CheckedContinuation<Void, Never>?)>((false, nil))
    static let maxSamples = 200_000

    /// Starts the loop against `host:port`; it stops by itself after `limit` seconds.
    init(host: String, port: Int, settings: ClientLoop, limit: Double, clock: @escaping @Sendable () -> Date) {
        let payload = Array(settings.send.utf8)
        let interval = settings.interval, timeoutMS = Int32(max(10, min(60_000, settings.timeout * 1000)))
        let start = ContinuousClock.now
        let thread = Thread { [self] in
            while !stopped.load(ordering: .relaxed) {
                let t0 = ContinuousClock.now
                if t0 - start > .seconds(limit) { break }
                let code = payload.withUnsafeBytes { lb_tcp_probe(host, Int32(port), $0.baseAddress, $0.count, timeoutMS) }
                record.withLock { r in
                    r.total += 1
                    if code != 0 { r.failed += 1 }
                    // Long runs keep their newest samples (the crash and what followed, unless the run is hours long).
                    if r.samples.count >= RequestLoop.maxSamples { r.samples.removeFirst(RequestLoop.maxSamples / 2) }
                    r.samples.append(Sample(at: clock(), ok: code == 0, code: code))
                }
                let spent = ContinuousClock.now - t0
                let wait = Duration.seconds(interval) - spent
                if wait > .zero { usleep(UInt32(min(60_000_000, Double(wait.components.seconds) * 1e6 + Double(wait.components.attoseconds) / 1e12))) }
            }
            let waiter = done.withLock { d -> CheckedContinuation<Void, Never>? in
                d.finished = true
                defer { d.waiter = nil }
                return d.waiter
            }
            waiter?.resume()
        }
        thread.stackSize = 256 << 10
        thread.start()
    }

    /// Stops the loop and waits for its thread (at most one request's timeout and one interval).
    func stop() async {
        stopped.store(true, ordering: .relaxed)
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = done.withLock { d -> Bool in
                if d.finished { return true }
                d.waiter = c
                return false
            }
            if now { c.resume() }
        }
    }

    var snapshot: [Sample] { record.withLock { $0.samples } }
    var counts: (total: Int, failed: Int) { record.withLock { ($0.total, $0.failed) } }

    static func describe(_ code: Int32) -> String {
        switch code {
        case -1: return "connection failed"
        case -2: return "timed out"
        case -3: return "closed without an answer"
        default: return "ok"
        }
    }
}

/// The figures of a node-crash run, from the clients' samples: a pure function, unit-tested.
struct CrashFigures: Equatable {
    var requests = 0
    var failed = 0
    var failedAfterCrash = 0
    /// Seconds from the crash to the first success after the last failure (0: no request failed).
    var serviceBack: Double?
    var lastFailure: String?

    static func of(_ samples: [RequestLoop.Sample], crash: Date) -> CrashFigures {
        var f = CrashFigures()
        f.requests = samples.count
        f.failed = samples.filter { !$0.ok }.count
        let after = samples.filter { $0.at >= crash }
        f.failedAfterCrash = after.filter { !$0.ok }.count
        if let last = after.lastIndex(where: { !$0.ok }) {
            f.lastFailure = RequestLoop.describe(after[last].code)
            f.serviceBack = after[(last + 1)...].first(where: \.ok).map { $0.at.timeIntervalSince(crash) }
        } else if !after.isEmpty {
            f.serviceBack = 0
        }
        return f
    }
}

/// `node-crash`: clients run through a proxy pool while the drill crashes the backend serving it (by the drill's
/// `crash` command: a kill, a SIGSTOP, a service stop); the drill measures when the proxy switched, how many
/// requests failed and when service was back, runs the playbook (promotion steps), checks that requests succeed
/// after it, and compares the time with the RTO objective. Only a backend marked `chaos: true` is crashed; every
/// backend the run left disabled is enabled again, and the drill's `recover` command runs at the end.
enum NodeCrash {
    static func play(_ drill: Drill, source: Source, sandbox: String, user: Child.User?, deadline: Date,
                     report: inout DrillReport, env: DrillEnvironment) async {
        let clock = env.clock
        guard let poolName = drill.pool, let crash = drill.crash,
              let pool = env.plan.proxy?.pools.first(where: { $0.name == poolName }) else {
            report.failures.append("the drill names no pool of the plan's proxy, or no crash command")
            return
        }
        guard let status = env.pool else {
            report.failures.append("node-crash needs the running agent, whose proxy serves pool \(poolName) (its API): none answers")
            return
        }
        func step(_ name: String, _ summary: String, phase: String, _ body: (inout StepRecord) async throws -> Void) async -> Bool {
            var r = StepRecord(index: report.steps.count, name: name, kind: "drill", summary: summary, phase: phase, started: clock(), ended: clock(), result: .ok)
            do { try await body(&r) } catch {
                r.result = .failed
                r.detail = "\(error)"
            }
            r.ended = clock()
            report.steps.append(r)
            if r.result == .failed { report.failures.append("step \"\(name)\" failed: \(r.detail ?? "")") }
            return r.result == .ok
        }

        // The backend serving now, which must be one the drill may crash.
        var before: PoolView?
        var victim = ""
        guard await step("find the serving backend", "pool \(poolName)", phase: "setup", { r in
            let view = try await status(poolName)
            before = view
            guard let active = view.active else { throw LifeboatError(.notFound, "pool \(poolName) serves from no backend now: nothing to crash") }
            guard pool.backends.first(where: { $0.name == active })?.chaos == true else {
                throw LifeboatError.invalid("pool \(poolName) serves from \(active), which is not marked `chaos: true`: the drill crashes no other backend")
            }
            victim = active
            r.detail = "\(active) serves pool \(poolName)"
        }) else { return }

        // Interrupted from here on, the process still enables what the run disabled and recovers the victim.
        let undo = NodeCrash.undo(drill, pool: poolName, victim: victim, before: before, user: user, env: env)
        DrillUndo.register(report.id) { _ = await undo() }
        let reportID = report.id
        do {
            try UndoJournal.write(reports: env.reports, id: reportID, pool: poolName,
                                  enabledBefore: (before?.backends ?? []).filter { !$0.disabled }.map(\.name))
        } catch {
            report.notes.append("the undo journal cannot be written (\(error)): if this process is killed, enable what the playbook disabled by hand")
        }
        defer { DrillUndo.clear(reportID) }

        var host = pool.listen.host
        if host == "0.0.0.0" || host.isEmpty { host = "127.0.0.1" } else if host == "::" { host = "::1" }
        let limit = min(drill.timeout, deadline.timeIntervalSince(clock()) + 1)
        let clients = RequestLoop(host: host, port: pool.listen.port, settings: drill.clients, limit: max(1, limit), clock: clock)
        var crashAt = clock()
        var switchedAt: Date?
        var playbookEnd: Date?

        // Requests must go through before the crash, or the drill proves nothing.
        let warm = await step("requests go through the pool", "to \(pool.listen) every \(describeSeconds(drill.clients.interval))", phase: "setup") { r in
            let until = clock().addingTimeInterval(max(5, drill.clients.timeout * 3))
            while clock() < until {
                if clients.snapshot.filter(\.ok).count >= 3 { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            let s = clients.snapshot
            guard s.filter(\.ok).count >= 3 else {
                throw LifeboatError(.io, "\(s.filter(\.ok).count) of \(s.count) requests through \(pool.listen) succeeded before the crash (last: \(s.last.map { RequestLoop.describe($0.code) } ?? "none"))")
            }
            r.detail = "\(s.count) requests, \(s.filter { !$0.ok }.count) failed"
        }
        if warm {
            crashAt = clock()
            report.declared = crashAt
            let crashed = await step("crash the serving backend", crash.joined(separator: " "), phase: "attack") { r in
                r.detail = try await run(crash, user: user, vars: ["LIFEBOAT_POOL": poolName, "LIFEBOAT_BACKEND": victim])
            }
            if crashed {
                _ = await step("the proxy switches", "away from \(victim)", phase: "switch") { r in
                    let until = crashAt.addingTimeInterval(drill.clients.duration)
                    while clock() < until {
                        let view = try await status(poolName)
                        if view.switched(from: victim) {
                            switchedAt = clock()
                            r.detail = "\(victim) is \(view.backends.first { $0.name == victim }?.state ?? "gone"); \(view.active.map { "\($0) serves" } ?? "no backend serves")"
                            return
                        }
                        try await Task.sleep(for: .milliseconds(50))
                    }
                    throw LifeboatError(.io, "the proxy still sends pool \(poolName) to \(victim) \(describeSeconds(drill.clients.duration)) after the crash")
                }
                if drill.playbook != nil {
                    let run = await runPlaybook(drill, source: source, sandbox: sandbox, user: user, deadline: deadline, report: report, env: env)
                    let base = report.steps.count
                    report.steps += run.steps.enumerated().map { i, step in var s = step; s.index = base + i; return s }
                    for s in run.steps where s.result == .failed {
                        report.failures.append("\(s.phase == "cleanup" ? "cleanup step" : "step") \"\(s.name)\" failed: \(s.detail ?? "no detail")")
                    }
                    if run.steps.isEmpty, let f = run.failedStep { report.failures.append(f) }
                    playbookEnd = run.steps.filter { $0.phase != "cleanup" }.map(\.ended).max()
                }
                // After the switch and the playbook, requests must succeed again.
                _ = await step("requests succeed after recovery", "the next \(describeSeconds(max(1, drill.clients.interval * 10))) of requests", phase: "verify") { r in
                    let from = clock()
                    try await Task.sleep(for: .milliseconds(Int64(max(1, drill.clients.interval * 10) * 1000)))
                    let tail = clients.snapshot.filter { $0.at >= from }
                    let bad = tail.filter { !$0.ok }
                    guard !tail.isEmpty, bad.isEmpty else {
                        throw LifeboatError(.io, "\(bad.count) of \(tail.count) requests through pool \(poolName) still fail (\(bad.last.map { RequestLoop.describe($0.code) } ?? "no request was made"))")
                    }
                    r.detail = "\(tail.count) requests, all answered"
                }
            }
        }
        await clients.stop()

        // What the clients saw.
        var figures = CrashFigures.of(clients.snapshot, crash: crashAt)
        (figures.requests, figures.failed) = clients.counts
        report.requests = figures.requests
        report.failedRequests = figures.failedAfterCrash
        if let s = switchedAt { report.switchSeconds = s.timeIntervalSince(crashAt); report.phases["switch"] = report.switchSeconds }
        report.notes.append("\(figures.failedAfterCrash) of the requests after the crash failed\(figures.lastFailure.map { " (last: \($0))" } ?? ""); \(figures.requests) requests in all")
        if let back = figures.serviceBack {
            report.notes.append(back == 0 ? "no request failed: the proxy moved every new connection at once" : "requests succeeded again \(DrillReport.span(back)) after the crash")
        }
        if report.failures.isEmpty {
            let ends = [switchedAt, playbookEnd, figures.serviceBack.map { crashAt.addingTimeInterval($0) }].compactMap { $0 }
            if let end = ends.max() {
                report.rtoSeconds = end.timeIntervalSince(crashAt)
                if let p = playbookEnd, let s = switchedAt, p > s { report.phases["playbook"] = p.timeIntervalSince(s) }
            }
        }
        if let o = report.rtoObjective, let m = report.rtoSeconds, m > o {
            report.failures.append("the RTO of \(DrillReport.span(m)) exceeds the objective of \(DrillReport.span(o))")
        }
        report.notes.append("node-crash measures no RPO: nothing is restored")

        // Whatever happened: backends the run disabled are enabled again, and the crashed one is recovered, also when
        // the drill was cancelled (its timeout, the agent stopping): in a task of its own, which is not.
        let undone = await Task { await undo() }.value
        if undone.failures.isEmpty { UndoJournal.remove(reports: env.reports, id: reportID) }
        report.notes += undone.notes
        report.failures += undone.failures
        if drill.recover != nil {
            report.steps.append(undone.recover ?? StepRecord(index: report.steps.count, name: "recover the crashed backend", kind: "drill",
                                                             summary: "", phase: "cleanup", started: clock(), ended: clock(), result: .ok))
            report.steps[report.steps.count - 1].index = report.steps.count - 1
            if undone.recover?.result == .failed { report.failures.append("step \"recover the crashed backend\" failed: \(undone.recover?.detail ?? "")") }
        }
    }

    struct Undone: Sendable {
        var notes: [String] = []
        var failures: [String] = []
        var recover: StepRecord?
    }

    /// Enables every backend of the pool that is disabled now and was not before the run, then runs `recover`.
    static func undo(_ drill: Drill, pool: String, victim: String, before: PoolView?, user: Child.User?,
                     env: DrillEnvironment) -> @Sendable () async -> Undone {
        let clock = env.clock
        return {
            var out = Undone()
            if let backendAction = env.backend, let status = env.pool {
                let now: PoolView
                do { now = try await status(pool) } catch {
                    out.failures.append("the state of pool \(pool) cannot be read to enable what the drill disabled: \(error) (the agent will, from the drill's undo journal)")
                    return out
                }
                for b in now.backends where b.disabled && before?.backends.first(where: { $0.name == b.name })?.disabled == false {
                    do {
                        _ = try await backendAction(.enableBackend, pool, b.name)
                        out.notes.append("\(pool)/\(b.name) was left disabled and is enabled again")
                    } catch {
                        out.failures.append("\(pool)/\(b.name) is left disabled: enabling it failed: \(error)")
                    }
                }
            }
            if let recover = drill.recover {
                var r = StepRecord(index: 0, name: "recover the crashed backend", kind: "drill", summary: recover.joined(separator: " "),
                                   phase: "cleanup", started: clock(), ended: clock(), result: .ok)
                do { r.detail = try await run(recover, user: user, vars: ["LIFEBOAT_POOL": pool, "LIFEBOAT_BACKEND": victim]) } catch {
                    r.result = .failed
                    r.detail = "\(error)"
                }
                r.ended = clock()
                out.recover = r
            }
            return out
        }
    }

    /// The drill's playbook (no restore step is added: node-crash restores nothing), in the sandbox.
    static func runPlaybook(_ drill: Drill, source: Source, sandbox: String, user: Child.User?, deadline: Date,
                            report: DrillReport, env: DrillEnvironment) async -> PlaybookRun {
        let book: Playbook
        do {
            book = try Playbook.load(drill.playbook ?? "", extra: Set(drill.variables.keys))
        } catch {
            var run = PlaybookRun(id: report.id)
            run.failedStep = "the playbook cannot be used: \(error)"
            return run
        }
        let actions = SiteActions(plan: env.plan, access: env.access, confine: sandbox, onlySite: nil, before: report.declared, owner: user,
                                  backendAction: env.backend)
        let runner = DrillRunner.drillRunner(book, drill: drill, source: source, site: report.site, sandbox: sandbox, user: user,
                                             deadline: deadline, report: report, actions: actions, env: env)
        return await runner.run(id: report.id)
    }

    /// Runs a drill command (the crash, the recovery) with a 60 s limit; its output's tail is the detail.
    static func run(_ argv: [String], user: Child.User?, vars: [String: String]) async throws -> String {
        let capture = try Capture()
        let child: Child
        do { child = try Child.spawn(argv, environment: vars, stdout: capture.writeFD, stderr: capture.writeFD, user: user) } catch {
            capture.closeWriter()
            throw error
        }
        capture.closeWriter()
        let exit = await child.wait(timeout: 60)
        let out = await capture.text()
        guard exit.ok else { throw LifeboatError(.io, "\(argv.first ?? "") \(exit.description)\(out.isEmpty ? "" : ": \(out)")") }
        return out.isEmpty ? "done" : String(out.suffix(300))
    }
}

/// What running drills must undo if this process is interrupted (SIGINT, SIGTERM): backends they disabled, the
/// crashed backend's recovery. The CLI's interrupt handler runs them before it exits, as it releases locks.
public enum DrillUndo {
    static let pending = Mutex<[String: @Sendable () async -> Void]>([:])

    static func register(_ id: String, _ undo: @escaping @Sendable () async -> Void) { pending.withLock { $0[id] = undo } }
    static func clear(_ id: String) { _ = pending.withLock { $0.removeValue(forKey: id) } }

    /// Runs and forgets every pending undo.
    public static func runAll() async {
        let all = pending.withLock { p in defer { p = [:] }; return Array(p.values) }
        for undo in all { await undo() }
    }
}

/// The same undo on disk, for a drill process that dies without running it (SIGKILL): `REPORTS/undo/ID.json` names
/// the writer (PID and start time), the pool and the backends that were enabled before the run. The agent, which
/// runs the pools, sweeps the files of dead writers and enables those backends again.
public enum UndoJournal {
    public struct Entry: Codable, Sendable, Equatable {
        public var pid: Int32
        public var start: UInt64
        public var pool: String
        public var enabledBefore: [String]
    }

    public static func directory(reports: String) -> String { reports + "/undo" }

    static func write(reports: String, id: String, pool: String, enabledBefore: [String]) throws {
        let dir = directory(reports: reports)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let e = Entry(pid: getpid(), start: Sandbox.processStart(getpid()) ?? 0, pool: pool, enabledBefore: enabledBefore)
        try writeFileAtomically("\(dir)/\(id).json", try JSONEncoder().encode(e))
    }

    static func remove(reports: String, id: String) { unlink("\(directory(reports: reports))/\(id).json") }

    /// Entries whose writer is gone (not this process, and no live process with its PID and start time); an
    /// unreadable file is an orphan with nothing to undo.
    public static func orphans(reports: String) -> [(path: String, entry: Entry?)] {
        let dir = directory(reports: reports)
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return [] }
        return names.filter { $0.hasSuffix(".json") }.compactMap { name -> (String, Entry?)? in
            let path = "\(dir)/\(name)"
            var st = stat()
            guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_size <= 65536,
                  let data = FileManager.default.contents(atPath: path), let e = try? JSONDecoder().decode(Entry.self, from: data) else {
                return (path, nil)
            }
            if e.pid == getpid() { return nil }
            if e.pid > 0 {
                // The same process (PID and start time), or one whose /proc entry cannot be read but that exists.
                if let start = Sandbox.processStart(e.pid) { if start == e.start { return nil } }
                else if kill(e.pid, 0) == 0 || errno == EPERM { return nil }
            }
            return (path, e)
        }
    }
}
