import Foundation
import Glibc
import LifeboatConfig
import LifeboatCore
import LifeboatPlan
import LifeboatProcess

/// What Lifeboat does itself in `lifeboat:` steps. A drill and a hand-run playbook give their own (a drill's
/// restore is confined to its sandbox and reads only the site drilled).
public protocol PlaybookActions: Sendable {
    /// Restores, verifies and checks; the record's facts name the snapshot (`snapshot`, `snapshot_time`).
    func restore(_ args: [String: String], into record: inout StepRecord) async throws
    func replicate(site: String?) async throws -> String
    func backend(_ action: PlaybookStep.BuiltIn, pool: String, backend: String) async throws -> String
}

/// The append-only audit log of playbook runs: one JSON object per line (`message_type` playbook_run,
/// playbook_step, playbook_end), each line written with O_APPEND and fsynced before the next step starts.
public struct AuditLog: Sendable {
    public let path: String
    public init(path: String) { self.path = path }

    public func append(_ object: [String: Any]) throws {
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) else {
            throw LifeboatError(.io, "cannot encode an audit record")
        }
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700]) }
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw LifeboatError(.io, "cannot open the audit log \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let line = Array(data) + [0x0A]
        let n = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard n == line.count, fsync(fd) == 0 else { throw LifeboatError(.io, "cannot write the audit log \(path): \(String(cString: strerror(errno)))") }
    }

    public static func record(_ r: StepRecord, run: String) -> [String: Any] {
        var o: [String: Any] = ["message_type": "playbook_step", "run_id": run]
        if let d = try? DrillReport.encoder().encode(r), let j = try? JSONSerialization.jsonObject(with: d) as? [String: Any] { o.merge(j) { a, _ in a } }
        return o
    }

    /// What the log holds of run `id`: its variables and playbook path (from its first line), and the newest
    /// record of each step. At most 64 MiB are read; lines that are not JSON are skipped.
    public func run(_ id: String) throws -> (playbook: String, variables: [String: String], steps: [String: StepRecord])? {
        var st = stat()
        guard stat(path, &st) == 0 else { throw LifeboatError(.notFound, "no audit log at \(path)") }
        guard st.st_size <= 64 << 20 else { throw LifeboatError(.invalidArgument, "the audit log \(path) is \(st.st_size) bytes: rotate it (at most 64 MiB are read)") }
        guard let data = FileManager.default.contents(atPath: path) else { throw LifeboatError(.io, "cannot read the audit log \(path)") }
        var found: (String, [String: String])?
        var steps: [String: StepRecord] = [:]
        for line in data.split(separator: 0x0A) {
            guard let o = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any], o["run_id"] as? String == id else { continue }
            switch o["message_type"] as? String {
            case "playbook_run":
                if found == nil { found = (o["playbook"] as? String ?? "", o["variables"] as? [String: String] ?? [:]) }
            case "playbook_step":
                var j = o
                j["message_type"] = nil; j["run_id"] = nil
                if let d = try? JSONSerialization.data(withJSONObject: j), let r = try? DrillReport.decoder().decode(StepRecord.self, from: d) {
                    steps[r.name] = r
                }
            default: break
            }
        }
        return found.map { ($0.0, $0.1, steps) }
    }
}

/// The outcome of a playbook run.
public struct PlaybookRun: Sendable {
    public var id: String
    public var steps: [StepRecord] = []
    public var failedStep: String?
    public var ok: Bool { failedStep == nil }
}

/// Runs a playbook's steps in order, each resolved with the run's variables: commands in their own process
/// group (as `runAs` when set), killed at their timeout, retried; checks polled until their deadline; built-in
/// actions through `actions`; manual steps confirmed by `confirm` (a drill: by the file). The first failed
/// step stops the run; cleanup steps run whatever happened. Every step is written to the audit log.
public struct PlaybookRunner: Sendable {
    public var playbook: Playbook
    public var variables: [String: String]
    public var actions: any PlaybookActions
    public var runAs: Child.User?
    public var audit: AuditLog?
    /// A drill: manual steps need `confirmed_in_drills`.
    public var drill = false
    /// Asks a person to confirm a manual step (nil: nobody can, the step fails).
    public var confirm: (@Sendable (String) async -> Bool)?
    /// Hears each step as it ends.
    public var onStep: @Sendable (StepRecord) -> Void = { _ in }
    /// The whole run's end: a step still going then is killed.
    public var deadline: Date?
    public var clock: @Sendable () -> Date = steadyClock()

    public init(playbook: Playbook, variables: [String: String], actions: any PlaybookActions) {
        self.playbook = playbook; self.variables = variables; self.actions = actions
    }

    /// Runs the steps from `start` (0-based; a resumed run starts at its failed step), then the cleanup.
    public func run(id: String, from start: Int = 0, resumed: Bool = false) async -> PlaybookRun {
        var run = PlaybookRun(id: id)
        var start = max(0, min(start, playbook.steps.count))
        if !resumed {
            do {
                try audit?.append(["message_type": "playbook_run", "run_id": id, "playbook": playbook.path, "name": playbook.name,
                                   "variables": variables, "started": Timestamp.format(clock()), "drill": drill])
            } catch {
                var r = StepRecord(index: 0, name: "audit log", kind: "audit", summary: audit?.path ?? "", phase: "setup", started: clock(), ended: clock(), result: .failed)
                r.detail = "\(error); nothing was run"
                run.steps.append(r)
                run.failedStep = r.name
                return run
            }
        } else {
            try? audit?.append(["message_type": "playbook_resume", "run_id": id, "from_step": playbook.steps.indices.contains(start) ? playbook.steps[start].name : "",
                                "started": Timestamp.format(clock())])
        }
        while start < playbook.steps.count {
            let r = await step(playbook.steps[start], index: start + 1, phase: "playbook")
            run.steps.append(r)
            if r.result == .failed { run.failedStep = r.name; break }
            start += 1
        }
        for (i, c) in playbook.cleanup.enumerated() {
            run.steps.append(await step(c, index: playbook.steps.count + i + 1, phase: "cleanup", cleanup: true))
        }
        try? audit?.append(["message_type": "playbook_end", "run_id": id, "ok": run.ok, "failed_step": run.failedStep ?? NSNull(),
                            "ended": Timestamp.format(clock())])
        return run
    }

    func remaining() -> Double? { deadline.map { $0.timeIntervalSince(clock()) } }

    func step(_ raw: PlaybookStep, index: Int, phase: String, cleanup: Bool = false) async -> StepRecord {
        let s = raw.resolved(variables)
        var r = StepRecord(index: index, name: s.name, kind: s.action.kind, summary: s.summary, phase: phase, started: clock(), ended: clock(), result: .ok)
        // Cleanup runs after the deadline too (it stops what the steps started), within its own timeout.
        if !cleanup, let left = remaining(), left <= 0 {
            r.result = .failed
            r.detail = "not started: the run's time limit was reached"
        } else {
            await perform(s, &r, cleanup: cleanup)
        }
        r.ended = clock()
        try? audit?.append(AuditLog.record(r, run: variables["run_id"] ?? ""))
        onStep(r)
        return r
    }

    func perform(_ s: PlaybookStep, _ r: inout StepRecord, cleanup: Bool) async {
        switch s.action {
        case .run(let c):
            for attempt in 0...s.retries {
                r.attempts = attempt + 1
                let (ok, why, out) = await command(c, timeout: s.timeout, runAs: s.runAs, cleanup: cleanup)
                r.output = out
                if ok { r.result = .ok; r.detail = nil; return }
                r.result = .failed
                r.detail = why
                if attempt < s.retries {
                    if let left = remaining(), left < s.retryDelay { break }
                    try? await Task.sleep(for: .milliseconds(Int64(s.retryDelay * 1000)))
                }
            }
        case .check(let c, let within, let interval):
            let end = clock().addingTimeInterval(within)
            var tries = 0
            while true {
                tries += 1
                r.attempts = tries
                let left = min(end.timeIntervalSince(clock()), remaining() ?? .infinity)
                let (ok, why, out) = await command(c, timeout: max(0.05, min(s.timeout, left)), runAs: s.runAs, cleanup: cleanup)
                r.output = out
                if ok { r.result = .ok; r.detail = "succeeded at try \(tries)"; return }
                if clock().addingTimeInterval(interval) >= end || (remaining().map { $0 <= interval } ?? false) {
                    r.result = .failed
                    r.detail = "did not succeed within \(describeSeconds(within)) (\(tries) tries); last: \(why)"
                    return
                }
                try? await Task.sleep(for: .milliseconds(Int64(interval * 1000)))
            }
        case .lifeboat(let a, let args):
            do {
                switch a {
                case .restore:
                    try await actions.restore(args, into: &r)
                case .replicate:
                    r.detail = try await actions.replicate(site: args["site"])
                case .disableBackend, .enableBackend, .promoteBackend:
                    r.detail = try await actions.backend(a, pool: args["pool"] ?? "", backend: args["backend"] ?? "")
                }
                r.result = .ok
            } catch {
                r.result = .failed
                r.detail = "\(error)"
            }
        case .manual(let text, let confirmedInDrills):
            if drill {
                r.result = confirmedInDrills ? .ok : .failed
                r.detail = confirmedInDrills ? "confirmed by the playbook (confirmed_in_drills)" :
                    "a manual step in a drill needs `confirmed_in_drills: true` in the playbook: \(text)"
            } else if let confirm {
                let yes = await confirm(text)
                r.result = yes ? .ok : .failed
                r.detail = yes ? "confirmed" : "not confirmed"
            } else {
                r.result = .failed
                r.detail = "needs a person to confirm (run on a terminal): \(text)"
            }
        }
    }

    /// Runs a command: its own process group, standard output and error captured (the tail kept), killed at the
    /// timeout. Variables reach it as LIFEBOAT_* environment variables too.
    func command(_ c: PlaybookStep.Command, timeout: Double, runAs stepUser: String?, cleanup: Bool) async -> (Bool, String, String?) {
        let argv: [String] = switch c { case .shell(let t): ["/bin/sh", "-c", t]; case .argv(let a): a }
        var user = runAs
        if let name = stepUser {
            guard let u = Child.User(named: name) else { return (false, "no user named \(name) on this host", nil) }
            user = u
        }
        var env: [String: String] = [:]
        for (k, v) in variables { env["LIFEBOAT_" + k.uppercased()] = v }
        let limit = cleanup ? timeout : min(timeout, max(0.05, remaining() ?? timeout))
        do {
            let capture = try Capture(limit: 64 << 10)
            let child: Child
            let dir = variables["sandbox"].flatMap { FileManager.default.fileExists(atPath: $0) ? $0 : nil }
            do { child = try Child.spawn(argv, environment: env, stdout: capture.writeFD, stderr: capture.writeFD, user: user, directory: dir) } catch {
                capture.closeWriter()
                return (false, "\(error)", nil)
            }
            capture.closeWriter()
            let exit = await child.wait(timeout: limit)
            let out = await capture.text(lines: 10)
            if exit.ok { return (true, "", out.isEmpty ? nil : out) }
            let why = exit.timedOut ? "did not finish within \(describeSeconds(limit)) and was killed" : exit.description
            return (false, why + (out.isEmpty ? "" : ": \(String(out.suffix(400)))"), out.isEmpty ? nil : out)
        } catch {
            return (false, "\(error)", nil)
        }
    }

    /// A free TCP port on 127.0.0.1 (the kernel's choice), for `{port}`.
    public static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        return ok ? Int(UInt16(bigEndian: addr.sin_port)) : 0
    }

    /// A run's ID: the time and 4 random bytes (sorts by time, names one run).
    public static func newRunID(_ now: Date) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyyMMdd'T'HHmmss"
        return f.string(from: now) + "-" + String(format: "%08x", UInt32.random(in: 0...UInt32.max))
    }
}
