import Foundation
import Glibc
import GRDB
import LifeboatConfig
import LifeboatCore
import LifeboatPlan
import LifeboatProcess
import LifeboatReplication
import LifeboatRepository
import LifeboatSites
import LifeboatSnapshot
import LifeboatStorage
import Synchronization

/// What a drill needs from its caller (the agent or `lifeboat drill run`).
public struct DrillEnvironment: Sendable {
    public var plan: Plan
    public var access: SiteAccess
    /// Where reports are written (JSON, Markdown, HTML).
    public var reports: String
    /// Keep the sandbox afterwards (to look at it).
    public var keep = false
    public var host: String
    /// Now (`LIFEBOAT_NOW` when set), advancing with the monotonic clock: durations are real even under an injected time.
    public var clock: @Sendable () -> Date = steadyClock()
    public var log: @Sendable (String) -> Void = { _ in }
    /// The recovery kit as it would be printed for a site (from-kit drills start from it alone).
    public var kit: (@Sendable (Site) async throws -> String)?
    /// Proxy backend actions (the agent's API).
    public var backend: (@Sendable (PlaybookStep.BuiltIn, String, String) async throws -> String)?
    /// A proxy pool's state (the agent's pools, or its API): node-crash watches the switch through it.
    public var pool: (@Sendable (String) async throws -> PoolView)?
    public var audit: AuditLog?

    public init(plan: Plan, access: SiteAccess, reports: String, host: String) {
        self.plan = plan; self.access = access; self.reports = reports; self.host = host
    }
}

/// `currentTime()` once, then the monotonic time elapsed since: steps measure real durations under `LIFEBOAT_NOW`.
public func steadyClock() -> @Sendable () -> Date {
    let base = currentTime()
    let start = ContinuousClock.now
    return {
        let d = ContinuousClock.now - start
        return base.addingTimeInterval(Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18)
    }
}

/// Runs drills: for each site of `from`, on its own, a disaster is declared at T, the scenario is played in a
/// fresh sandbox, and the report says whether the source came back within its RTO and RPO from that site alone.
public enum DrillRunner {
    public static func run(_ drill: Drill, sites only: [String]? = nil, env: DrillEnvironment) async -> [DrillReport] {
        var reports: [DrillReport] = []
        for site in drill.targets where only.map({ $0.contains(site) }) ?? true {
            var r = await runSite(drill, site: site, env: env)
            do { _ = try r.write(to: env.reports) } catch { r.notes.append("the report could not be written to \(env.reports): \(error)") }
            env.log("drill \(drill.name) at \(site): \(r.passed ? "passed" : "FAILED")\(r.failures.isEmpty ? "" : ": " + r.failures.joined(separator: "; "))")
            reports.append(r)
        }
        return reports
    }

    /// Whether a drill passed over its sites: every site, except for `ransomware`, which passes when one site's
    /// protection at least kept the clean snapshot (the others are reported as unprotected).
    public static func passed(_ drill: Drill, _ reports: [DrillReport]) -> Bool {
        guard !reports.isEmpty else { return false }
        if drill.scenario == .ransomware { return reports.contains { $0.passed } }
        return reports.allSatisfy(\.passed)
    }

    static func runSite(_ drill: Drill, site siteName: String, env: DrillEnvironment) async -> DrillReport {
        let t = env.clock()
        let plan = env.plan
        // A file name too: `pool:web` becomes `pool-web`.
        let safe = String(siteName.map { $0.isLetter || $0.isNumber || "._-".contains($0) ? $0 : "-" })
        let id = "\(drill.name)-\(safe)-\(PlaybookRunner.newRunID(t))"
        var report = DrillReport(id: id, drill: drill.name, source: drill.source, site: siteName, scenario: drill.scenario.rawValue, host: env.host, declared: t)
        let source = plan.sources.first { $0.name == drill.source }
        report.rtoObjective = source?.objectives?.rto
        report.rpoObjective = source?.objectives?.rpo
        let site = plan.sites.sites.first(where: { $0.name == siteName })
            ?? (drill.scenario == .nodeCrash ? Site(name: siteName, repository: "", role: .replica, passwordFile: nil, credentialsFile: nil) : nil)
        guard let source, let site else {
            report.failures.append("the plan has no source \(drill.source) or no site \(siteName)")
            report.finished = env.clock()
            return report
        }
        let user = drill.runAs.flatMap { Child.User(named: $0) }
        if let name = drill.runAs, user == nil {
            report.failures.append("run_as: no user named \(name) on this host")
            report.finished = env.clock()
            return report
        }
        let sandbox: String
        do { sandbox = try Sandbox.create(root: drill.sandbox, drill: drill.name, site: siteName, now: t) } catch {
            report.failures.append("\(error)")
            report.finished = env.clock()
            return report
        }
        report.sandbox = sandbox
        report.kept = env.keep
        // The whole run is bounded: past the drill's timeout the steps are stopped and the drill fails.
        let deadline = t.addingTimeInterval(drill.timeout)
        let outcome = await withTaskGroup(of: DrillReport?.self) { g in
            g.addTask { [report, user] in
                await play(drill, source: source, site: site, sandbox: sandbox, user: user, deadline: deadline, report: report, env: env)
            }
            g.addTask {
                try? await Task.sleep(for: .milliseconds(Int64(min(drill.timeout, 7 * 86400) * 1000) + 2000))
                return nil
            }
            let first = await g.next() ?? nil
            g.cancelAll()
            return first
        }
        if let outcome { report = outcome } else {
            report.failures.append("the drill did not finish within its timeout of \(describeSeconds(drill.timeout)) and was stopped")
        }
        if !env.keep { await Sandbox.remove(sandbox) } else { report.notes.append("the sandbox is kept at \(sandbox)") }
        report.finished = env.clock()
        report.passed = report.failures.isEmpty
        return report
    }

    /// The scenario, then the verdict against the objectives.
    static func play(_ drill: Drill, source: Source, site: Site, sandbox: String, user: Child.User?, deadline: Date,
                     report base: DrillReport, env: DrillEnvironment) async -> DrillReport {
        var report = base
        let t = report.declared
        switch drill.scenario {
        case .restore, .siteLoss, .fromKit:
            var plan = env.plan
            var access = env.access
            var setup: [StepRecord] = []
            if drill.scenario == .siteLoss {
                report.notes.append("the primary \(plan.sites.primary.name) is treated as lost: only site \(site.name) is read")
            }
            if drill.scenario == .fromKit {
                // Nothing of this host's plan is used past this point: the plan comes back from the site.
                switch await FromKit.rebuild(site: site, sandbox: sandbox, env: env, into: &setup) {
                case .success(let rebuilt):
                    plan = rebuilt
                    access.reuse = nil
                    report.notes.append("the plan was rebuilt from the recovery kit and site \(site.name) alone")
                case .failure(let e):
                    report.steps = setup
                    report.failures.append("\(e)")
                    return report
                }
            }
            let book: Playbook
            do { book = try playbook(drill, source: source) } catch {
                report.failures.append("the playbook cannot be used: \(error)")
                return report
            }
            let actions = SiteActions(plan: plan, access: access, confine: sandbox, onlySite: site.name, before: t, owner: user, backendAction: env.backend,
                                      deadline: deadline, clock: env.clock)
            let runner = drillRunner(book, drill: drill, source: source, site: site.name, sandbox: sandbox, user: user, deadline: deadline,
                                     report: report, actions: actions, env: env)
            let run = await runner.run(id: report.id)
            report.steps = setup + run.steps
            judge(&report, run: run, setupOK: true)
        case .corruption:
            await Corruption.play(site: site, sandbox: sandbox, env: env, report: &report)
        case .ransomware:
            await Ransomware.play(drill: drill, source: source, site: site, sandbox: sandbox, env: env, report: &report)
            if report.unprotected == nil { report.unprotected = false }
        case .nodeCrash:
            await NodeCrash.play(drill, source: source, sandbox: sandbox, user: user, deadline: deadline, report: &report, env: env)
        }
        return report
    }

    /// The RTO (to the end of the last step that is not cleanup), the RPO (T minus the restored snapshot's time)
    /// and the phases; failures for each failed step and each missed objective.
    static func judge(_ report: inout DrillReport, run: PlaybookRun, setupOK: Bool) {
        let t = report.declared
        for s in report.steps where s.result == .failed {
            report.failures.append("\(s.phase == "cleanup" ? "cleanup step" : "step") \"\(s.name)\" failed: \(s.detail ?? "no detail")")
        }
        let main = report.steps.filter { $0.phase != "cleanup" }
        if let restore = main.first(where: { $0.facts?["snapshot"] != nil }) {
            report.snapshot = restore.facts?["snapshot"]
            report.snapshotTime = restore.facts?["snapshot_time"].flatMap(Timestamp.parse)
            report.files = restore.facts?["files"].flatMap(Int.init) ?? 0
            report.bytes = restore.facts?["bytes"].flatMap(UInt64.init) ?? 0
            for (k, v) in restore.phases ?? [:] { report.phases[k, default: 0] += v }
        }
        if let snapshotTime = report.snapshotTime { report.rpoSeconds = max(0, t.timeIntervalSince(snapshotTime)) }
        let playbookTime = main.filter { $0.facts?["snapshot"] == nil && $0.phase == "playbook" }.map(\.seconds).reduce(0, +)
        if playbookTime > 0 { report.phases["playbook", default: 0] += playbookTime }
        for s in main where s.phase == "setup" { report.phases["setup", default: 0] += s.seconds }
        if run.ok, main.allSatisfy({ $0.result == .ok }), let end = main.map(\.ended).max() {
            let rto = end.timeIntervalSince(t)
            report.rtoSeconds = rto
            report.phases["overhead"] = max(0, rto - report.phases.values.reduce(0, +))
        }
        if report.snapshot == nil && report.failures.isEmpty { report.failures.append("nothing was restored") }
        if let o = report.rtoObjective, let m = report.rtoSeconds, m > o {
            report.failures.append("the RTO of \(DrillReport.span(m)) exceeds the objective of \(DrillReport.span(o))")
        }
        if let o = report.rpoObjective, let m = report.rpoSeconds, m > o {
            report.failures.append("the RPO of \(DrillReport.span(m)) exceeds the objective of \(DrillReport.span(o)): the newest snapshot at \(report.site) is too old")
        }
    }

    /// A playbook run as a drill runs it: the run's variables, the drill's user, its deadline and clock, the audit log.
    static func drillRunner(_ book: Playbook, drill: Drill, source: Source, site: String, sandbox: String, user: Child.User?, deadline: Date,
                            report: DrillReport, actions: any PlaybookActions, env: DrillEnvironment) -> PlaybookRunner {
        var vars = book.variables.merging(drill.variables) { $1 }
        vars["sandbox"] = sandbox
        vars["port"] = "\(PlaybookRunner.freePort())"
        vars["snapshot"] = "latest"
        vars["site"] = site
        vars["source"] = source.name
        vars["run_id"] = report.id
        vars["playbook_dir"] = (book.path as NSString).deletingLastPathComponent
        var runner = PlaybookRunner(playbook: book, variables: vars, actions: actions)
        runner.drill = true
        runner.runAs = user
        runner.audit = env.audit
        runner.deadline = deadline
        runner.clock = env.clock
        return runner
    }

    /// The drill's playbook, with a restore step first when it has none (the drill always restores).
    static func playbook(_ drill: Drill, source: Source) throws -> Playbook {
        var book: Playbook
        if let path = drill.playbook {
            // The drill's own variables are defined too.
            book = try Playbook.load(path, extra: Set(drill.variables.keys))
        } else {
            book = Playbook(path: "(built in)", name: "restore \(source.name)", source: source.name, variables: [:], steps: [], cleanup: [])
        }
        let restores = book.steps.contains { if case .lifeboat(.restore, _) = $0.action { return true } else { return false } }
        if !restores {
            book.steps.insert(PlaybookStep(name: "restore", action: .lifeboat(.restore, PlaybookStep.restoreDefaults), location: Location(file: book.path)), at: 0)
        }
        return book
    }
}

extension PlaybookRunner {
    /// The built-in actions of a hand-run playbook: restores and replication over the plan's sites, backend
    /// actions through `backend` (the running agent's API).
    public static func actions(plan: Plan, access: SiteAccess,
                               backend: (@Sendable (PlaybookStep.BuiltIn, String, String) async throws -> String)?) -> any PlaybookActions {
        SiteActions(plan: plan, access: access, confine: nil, onlySite: nil, before: nil, owner: nil, backendAction: backend)
    }
}

/// The built-in actions against the plan's sites. A drill confines restores to its sandbox and to its site,
/// and restores the newest snapshot taken before the disaster.
struct SiteActions: PlaybookActions {
    var plan: Plan
    var access: SiteAccess
    var confine: String?
    var onlySite: String?
    var before: Date?
    var owner: Child.User?
    var backendAction: (@Sendable (PlaybookStep.BuiltIn, String, String) async throws -> String)?
    /// The drill's deadline on its clock (a restore that waits for a server gives up at it).
    var deadline: Date? = nil
    var clock: @Sendable () -> Date = { currentTime() }

    func restore(_ args: [String: String], into r: inout StepRecord) async throws {
        let sourceName = args["source"] ?? ""
        let siteName = args["site"].flatMap { $0.isEmpty ? nil : $0 } ?? onlySite ?? plan.sites.primary.name
        if let onlySite, siteName != onlySite {
            throw LifeboatError.invalid("this drill restores from site \(onlySite) only, and the step names site \(siteName)")
        }
        guard let site = plan.sites.sites.first(where: { $0.name == siteName }) else {
            throw LifeboatError(.notFound, "the plan has no site \(siteName)")
        }
        guard let target = args["target"].flatMap({ $0.isEmpty ? nil : $0 }) else { throw LifeboatError.invalid("the restore step needs a target (with: {target: …})") }
        let standard = URL(fileURLWithPath: target).standardizedFileURL.path
        if let confine, standard != confine && !standard.hasPrefix(confine + "/") {
            throw LifeboatError.invalid("a drill restores inside its sandbox \(confine) only, and the step's target is \(target)")
        }
        let source = plan.sources.first { $0.name == sourceName }
        let t0 = currentTime()
        let repo = try await access.openNew(site)
        // A PostgreSQL point-in-time source: a server replayed to the disaster's time (or the archive's end),
        // promoted and left running for the playbook (the sandbox's removal stops it).
        if case .postgresArchive = source?.kind {
            guard let port = args["port"].flatMap(Int.init) else {
                throw LifeboatError.invalid("the restore of PostgreSQL source \(sourceName) starts a server and needs a port (`with: {port: …}`; drills give {port})")
            }
            let o = try await PostgresDrill.run(repo: repo, source: sourceName, site: siteName, target: target, before: before, user: owner,
                                                port: port, deadline: deadline, clock: clock)
            r.phases = o.phases
            r.facts = ["snapshot": o.backup.short, "snapshot_id": o.backup.hex, "snapshot_time": Timestamp.format(o.restoredTo),
                       "site": siteName, "files": "\(o.files)", "bytes": "\(o.bytes)", "wal_segments": "\(o.segments)"]
            r.detail = o.detail
            return
        }
        // A continuous SQLite source: the point in time before the disaster, from its snapshot and WAL records.
        if case .sqliteContinuous = source?.kind {
            let file = "\(target)/\(sourceName).sqlite"
            try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
            try await repo.loadIndex()
            let t1 = currentTime()
            let res = try await DatabaseRestore.run(source!, repo: repo, target: file, before: before)
            let t2 = currentTime()
            r.phases = ["fetch": t1.timeIntervalSince(t0), "restore": t2.timeIntervalSince(t1)]  // the restore includes its check
            r.facts = ["snapshot": res.snapshot.short, "snapshot_id": res.snapshot.hex, "snapshot_time": Timestamp.format(res.time),
                       "site": siteName, "files": "1", "bytes": "\(res.bytes)"]
            r.detail = "\(sourceName) restored to \(String(Timestamp.format(res.time).prefix(23))) from \(siteName) (snapshot \(res.snapshot.short) and the WAL after it): \(Units.bytes(res.bytes)); \(res.check)"
            if let owner { try chownTree(target, owner) }
            return
        }
        let tag = sourceName.isEmpty ? nil : "source=\(sourceName)"
        let snaps = try await repo.listSnapshots()
        let want = args["snapshot"].flatMap { $0.isEmpty || $0 == "latest" ? nil : $0 }
        let candidates = snaps.filter { s in
            s.snapshot.isFiles && (tag.map { s.snapshot.tags.contains($0) } ?? true) && (before.map { s.snapshot.date <= $0 } ?? true)
                && (want.map { s.id.hex.hasPrefix($0.lowercased()) } ?? true)
        }
        guard let chosen = candidates.max(by: { $0.snapshot.date < $1.snapshot.date }) else {
            throw LifeboatError(.notFound, "site \(siteName) holds no snapshot\(tag.map { " tagged \($0)" } ?? "")\(want.map { " with ID \($0)" } ?? "")\(before.map { " taken before \(Timestamp.format($0))" } ?? "")")
        }
        try await repo.loadIndex()
        let t1 = currentTime()
        let subpath = args["path"].flatMap { $0.isEmpty ? nil : $0 } ?? "/"
        let node = try await Restorer.resolve(repo: repo, tree: chosen.snapshot.tree, subpath: subpath, snapshot: chosen)
        var opts = RestoreOptions()
        opts.verify = false
        let restorer = Restorer(repository: repo, options: opts)
        try await restorer.restore(node: node, snapshotPath: subpath, target: target)
        let t2 = currentTime()
        r.facts = ["snapshot": chosen.id.short, "snapshot_id": chosen.id.hex, "snapshot_time": Timestamp.format(chosen.snapshot.date),
                   "site": siteName, "files": "\(restorer.progress.filesDone)", "bytes": "\(restorer.progress.bytesDone)"]
        if !restorer.errors.isEmpty {
            throw LifeboatError(.corrupt, "\(restorer.errors.count) files could not be restored: " + restorer.errors.prefix(3).map { "\($0.path): \($0.message)" }.joined(separator: "; "))
        }
        // Every file against the snapshot: type, size, mode, times, owner, symlink targets, content hashes.
        let v = try await RestoreVerifier(repository: repo, ownership: opts.restoreOwnership).verify(node: node, target: target)
        let t3 = currentTime()
        guard v.ok else {
            throw LifeboatError(.corrupt, "verification found \(v.mismatches) entries that differ from the snapshot: " + v.problems.prefix(3).joined(separator: "; "))
        }
        // The engine's own check of a database dump.
        let integrity = try await Integrity.check(source?.kind, name: sourceName, target: target)
        let t4 = currentTime()
        r.phases = ["fetch": t1.timeIntervalSince(t0), "restore": t2.timeIntervalSince(t1), "verify": t3.timeIntervalSince(t2), "integrity": t4.timeIntervalSince(t3)]
        r.facts?["verified_files"] = "\(v.files)"
        r.detail = "snapshot \(chosen.id.short) of \(String(Timestamp.format(chosen.snapshot.date).prefix(19))) from \(siteName): \(Units.count(v.files, "file")), \(Units.bytes(v.bytes)) verified\(integrity.map { "; \($0)" } ?? "")"
        // The playbook's commands run as the drill's user: the restored tree is theirs.
        if let owner { try chownTree(target, owner) }
    }

    func replicate(site: String?) async throws -> String {
        if confine != nil { throw LifeboatError.invalid("a drill does not replicate: it must not change a real repository") }
        let replicas = plan.sites.replicas.filter { site == nil || $0.name == site }
        guard !replicas.isEmpty else { throw LifeboatError(.notFound, "no replica site\(site.map { " named \($0)" } ?? "")") }
        let replicator = Replicator(config: plan.sites, access: access, storage: ReplicationStateStorage(load: { ReplicationState() }, save: { _ in }),
                                    clock: { currentTime() })
        let tally = Mutex<(copied: Int, failures: [String])>((0, []))
        _ = try await replicator.pass(replicas, force: true, shouldStop: { Task.isCancelled }) { e in
            switch e {
            case .snapshotCopied: tally.withLock { $0.copied += 1 }
            case .siteFailed(let s, let why), .primaryFailed(let s, let why): tally.withLock { $0.failures.append("\(s): \(why)") }
            default: break
            }
        }
        let (copied, failures) = tally.withLock { $0 }
        guard failures.isEmpty else { throw LifeboatError(.io, "replication failed: \(failures.joined(separator: "; "))") }
        return "\(Units.count(copied, "snapshot")) copied"
    }

    func backend(_ action: PlaybookStep.BuiltIn, pool: String, backend: String) async throws -> String {
        guard let backendAction else { throw LifeboatError.invalid("\(action.rawValue) needs the running agent (its API): none is configured here") }
        if confine != nil, let proxy = plan.proxy, let p = proxy.pools.first(where: { $0.name == pool }),
           let b = p.backends.first(where: { $0.name == backend }), !b.chaos {
            throw LifeboatError.invalid("a drill touches only backends marked `chaos: true`, and \(pool)/\(backend) is not")
        }
        return try await backendAction(action, pool, backend)
    }

}

/// Gives a restored tree to the drill's user (links themselves, never followed).
func chownTree(_ path: String, _ u: Child.User) throws {
    guard lchown(path, u.uid, u.gid) == 0 else { throw LifeboatError(.io, "cannot give \(path) to \(u.name): \(String(cString: strerror(errno)))") }
    guard let e = FileManager.default.enumerator(atPath: path) else { return }
    while let rel = e.nextObject() as? String { _ = lchown(path + "/" + rel, u.uid, u.gid) }
}

/// The database engines' own checks of a restored dump (files and command output have none of their own).
enum Integrity {
    static func check(_ kind: SourceKind?, name: String, target: String) async throws -> String? {
        switch kind {
        case .sqlite?:
            let file = "\(target)/\(name).sqlite"
            do {
                var c = Configuration()
                c.readonly = true
                let q = try DatabaseQueue(path: file, configuration: c)
                defer { try? q.close() }
                let rows = try await q.read { db in try String.fetchAll(db, sql: "PRAGMA integrity_check") }
                guard rows == ["ok"] else { throw LifeboatError(.corrupt, "PRAGMA integrity_check of \(file): \(rows.prefix(3).joined(separator: "; "))") }
                return "PRAGMA integrity_check: ok"
            } catch let e as DatabaseError {
                throw LifeboatError(.corrupt, "the restored SQLite database \(file) cannot be read: \(e.message ?? "SQLite error \(e.resultCode.rawValue)")")
            }
        case .postgres?:
            let file = "\(target)/\(name).pgdump"
            let capture = try Capture()
            let child: Child
            do { child = try Child.spawn(["pg_restore", "--list", file], stdout: nil, stderr: capture.writeFD) } catch {
                capture.closeWriter()
                throw LifeboatError(.notFound, "pg_restore cannot run (\(error)): the restored dump \(file) is not checked; install postgresql-client")
            }
            capture.closeWriter()
            let exit = await child.wait(timeout: 300)
            guard exit.ok else { throw LifeboatError(.corrupt, "pg_restore --list \(file) \(exit.description): \(await capture.text())") }
            return "pg_restore --list: the archive reads"
        case .redis?:
            return try await DatabaseRestore.redisCheck("\(target)/\(name).rdb")
        case .mariadb?:
            let file = "\(target)/\(name).sql"
            guard let h = FileHandle(forReadingAtPath: file) else { throw LifeboatError(.notFound, "the restored dump \(file) is missing") }
            defer { try? h.close() }
            let size = (try? h.seekToEnd()) ?? 0
            try? h.seek(toOffset: size > 4096 ? size - 4096 : 0)
            let tail = String(decoding: (try? h.readToEnd()) ?? Data(), as: UTF8.self)
            guard tail.contains("-- Dump completed") else {
                throw LifeboatError(.corrupt, "the restored dump \(file) does not end with mariadb-dump's \"-- Dump completed\" line: it is cut short")
            }
            return "the dump is complete"
        default:
            return nil
        }
    }
}
