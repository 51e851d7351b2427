import CLifeboatSys
import Foundation
import Glibc
import LifeboatBackends
import LifeboatCore
import LifeboatDrill
import LifeboatPlan
import LifeboatProcess
import LifeboatReplication
import LifeboatRepository
import LifeboatSites
import LifeboatSnapshot
import LifeboatStorage
import Logging

/// `lifeboat agent`: one long-running process that carries out the plan. It schedules each source's backup
/// (then its retention, then a replication pass), replication on its interval, prune and check on theirs; at
/// most `limits.jobs` at once, never two runs of one job; records every run in the state database before and
/// after; watches each source's RPO at each site and alerts once per breach and once per recovery; and answers
/// the API (status, history, run now, pause, resume, metrics).
public actor Agent {
    public private(set) var plan: Plan
    let store: StateStore
    var scheduler: Scheduler
    var alerts: AlertDispatcher
    public nonisolated let metrics: AgentMetrics
    let logger: Logger
    let access: SiteAccess
    let clock: @Sendable () -> Date
    public let started: Date

    /// Each site's repository, opened once (keys unlocked once); jobs work on derived handles.
    var repositories: [String: Repository] = [:]
    var running: [JobID: Task<Void, Never>] = [:]
    /// Undo journals whose backends could not be enabled yet (logged once, tried again every 2 s).
    var undoFailuresLogged: Set<String> = []
    var observations: [String: SiteObservation] = [:]
    var facts: [String: SiteFacts] = [:]
    /// What each site held of each source at its last listing ("source@site"), for the dashboard.
    var holdings: [String: SourceHoldings] = [:]
    /// Changes of `holdings` since the start (the live refresh watches it).
    public private(set) var holdingsVersion = 0
    /// Orders listings and observations without the wall clock (which may jump): a listing takes a ticket when it
    /// begins (`listingTicket()`); `observedAt` and `heldAt` keep, per "source@site", the ticket of the newest
    /// listing recorded or of a later observation (a backup, a follower's progress).
    var ticks: UInt64 = 0
    var observedAt: [String: UInt64] = [:]
    var heldAt: [String: UInt64] = [:]

    func listingTicket() -> UInt64 {
        ticks &+= 1
        return ticks
    }
    var watches: [String: RPOWatch] = [:]
    var stopping = false
    public var isStopping: Bool { stopping }
    let alertBox: AlertBox
    /// Open conditions (alerted, not yet cleared): key → since.
    var conditions: [String: Date]?
    /// Continuous SQLite sources' followers, by source; when each one's progress was last written to the state database.
    var followers: [String: FollowerHandle] = [:]
    var persisted: [String: Date] = [:]
    /// Sites that could not be reached, and until when they are not tried again.
    var down: [String: (until: Date, failures: Int, why: String)] = [:]

    /// The plan's proxy pools, run by the agent (nil without a `proxy:` section at start).
    public nonisolated let proxy: AgentProxy?
    /// The newest alerts (the dashboard's recent events), kept across reloads.
    public nonisolated let events: RecentEvents

    /// What each site held of `source` at its last listing, by site.
    public func holdings(of source: String) -> [String: SourceHoldings] {
        var out: [String: SourceHoldings] = [:]
        for (key, h) in holdings where key.hasPrefix(source + "@") { out[String(key.dropFirst(source.count + 1))] = h }
        return out
    }

    public init(plan: Plan, store: StateStore, access: SiteAccess, logger: Logger, retryBase: Double = 1,
                clock: @escaping @Sendable () -> Date = { currentTime() }) throws {
        self.plan = RecoveryKit.withSelfBackup(plan)
        self.store = store
        self.logger = logger
        self.clock = clock
        started = clock()
        scheduler = Scheduler()
        metrics = AgentMetrics(started: started)
        let log = logger
        let events = RecentEvents()
        self.events = events
        alerts = AlertDispatcher(targets: plan.alerts, retryBase: retryBase, recent: events) { log.warning("\($0)") }
        self.access = access
        // A switch of a pool is an alert; the dispatcher is looked up when it happens (a reload may replace it).
        let box = AlertBox()
        proxy = plan.proxy.map { AgentProxy(config: $0, logger: logger) { line in box.send(Alert(.switch, message: line, time: clock())) } }
        alertBox = box
        box.set(alerts)
        for o in try store.observations() { observations["\(o.source)@\(o.site)"] = o }
        facts = SiteFacts.decode(try store.flag(SiteFacts.key))
    }

    // MARK: - Running

    /// Runs until `stop()`: schedules, starts jobs, watches objectives. Returns when every job has ended or
    /// `stopTimeout` has passed since the stop.
    public func run(stopTimeout: Double) async throws {
        // The pools first: a pool that cannot listen stops the start before anything is recorded.
        var healthChecks: Task<Void, Never>?
        if let proxy {
            do { try await proxy.start(logger: logger) } catch {
                throw LifeboatError(.io, "the proxy cannot listen: \(error); the agent does not start")
            }
            healthChecks = Task { await proxy.runHealthChecks() }
        }
        let now = clock()
        // A previous agent that died mid-run left rows `running`: they are recorded as interrupted, alerted once.
        let stale = try store.interruptStale(now: now)
        let cleanStop = try store.flag("clean_stop")
        try store.setFlag("clean_stop", nil)
        if !stale.isEmpty || cleanStop == "0" {
            let what = stale.isEmpty ? "" : ": \(stale.map(\.job).joined(separator: ", ")) interrupted"
            logger.warning("the previous agent did not stop cleanly\(what)")
            alerts.send(Alert(.agentRestart, message: "the agent restarted after an unclean stop\(what)", time: now))
        }
        try store.setFlag("clean_stop", "0")
        // Sandboxes of drills that a dead agent left (SIGKILL mid-drill): their processes stopped, the folders gone.
        for root in Set(plan.drills.map(\.sandbox)) {
            for d in await Sandbox.sweep(root: root) { logger.warning("removed the sandbox of an interrupted drill", metadata: ["sandbox": "\(d)"]) }
        }
        for r in (try? store.latestDrills()) ?? [] where plan.drills.contains(where: { $0.name == r.drill }) { metrics.drill(r) }
        loadSchedule(now: now)
        applyLimits()
        syncFollowers()
        logger.info("agent started", metadata: ["plan": "\(plan.path)", "sources": "\(plan.sources.count)", "sites": "\(plan.sites.sites.count)",
                                                "jobs_at_once": "\(plan.limits.jobs)"])

        var undoSwept = ContinuousClock.now - .seconds(60)
        while !stopping {
            let now = clock()
            observeFollowers()
            evaluateObjectives(now: now)
            if ContinuousClock.now - undoSwept > .seconds(2) {
                undoSwept = ContinuousClock.now
                undoKilledDrills()
            }
            for job in scheduler.due(at: now) where running.count < plan.limits.jobs {
                start(job, now: now)
            }
            let wake = scheduler.nextWake(after: now).map { $0.timeIntervalSince(now) } ?? 1
            try? await Task.sleep(for: .milliseconds(Int64(max(0.01, min(wake, 0.25)) * 1000)))
        }

        logger.info("stopping: no new jobs; waiting for \(running.count) running (at most \(Int(stopTimeout)) s)")
        let deadline = ContinuousClock.now + .milliseconds(Int64(stopTimeout * 1000))
        // Followers store what they copied and stop (a snapshot job waiting on one fails).
        await stopFollowers(deadline: deadline)
        observeFollowers()
        for (key, o) in observations where persisted[key] != nil { try? store.observe(o) }
        while !running.isEmpty && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        if !running.isEmpty {
            logger.warning("stop timeout: cancelling \(running.keys.map(\.description).sorted().joined(separator: ", "))")
            for t in running.values { t.cancel() }
            let grace = ContinuousClock.now + .seconds(5)
            while !running.isEmpty && ContinuousClock.now < grace { try? await Task.sleep(for: .milliseconds(50)) }
        }
        if let proxy {
            await proxy.drain(logger: logger)
            healthChecks?.cancel()
        }
        await RepositoryLock.releaseAll()
        await alerts.finish(timeout: 5)
        try? store.setFlag("clean_stop", "1")
        logger.info("agent stopped")
    }

    /// Asks the loop to stop scheduling (SIGTERM).
    public func stop() { stopping = true }

    /// Re-reads the plan file (SIGHUP): a file that does not parse or has errors keeps the running plan, and
    /// the log says why. Returns whether the new plan was taken.
    @discardableResult
    public func reload(from path: String) -> Bool {
        do {
            let next = try Plan.load(path)
            let problems = PlanCheck.diagnose(next, now: currentTime()).filter { $0.severity == .error }
            guard problems.isEmpty else {
                logger.error("reload refused, the running plan stays: \(problems.map(\.description).joined(separator: "; "))")
                return false
            }
            reload(next)
            return true
        } catch {
            logger.error("reload refused, the running plan stays: \(error)")
            return false
        }
    }

    func loadSchedule(now: Date) {
        let rows = (try? store.jobs()) ?? [:]
        scheduler.load(StatusBuilder.jobs(plan), lastRun: { rows[$0.description]?.lastStart }, paused: { rows[$0.description]?.paused ?? false }, now: now)
        // Breaches alerted before a restart are not alerted again.
        let open = (try? store.breaches()) ?? [:]
        var next: [String: RPOWatch] = [:]
        for s in plan.sources {
            guard let rpo = s.objectives?.rpo else { continue }
            for site in StatusBuilder.sites(of: s, in: plan) {
                let key = "rpo:\(s.name)@\(site)"
                var w = watches[key].flatMap { $0.objective == rpo ? $0 : nil } ?? RPOWatch(objective: rpo)
                if open[key] != nil && !w.breached { w = RPOWatch(objective: rpo, breached: true) }
                next[key] = w
            }
        }
        watches = next
    }

    /// nice and ionice for the whole agent (its hooks and dump tools inherit them).
    func applyLimits() {
        errno = 0
        if setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, Int32(plan.limits.nice)) != 0 {
            logger.warning("cannot set nice \(plan.limits.nice): \(String(cString: strerror(errno)))")
        }
        let cls: Int32 = switch plan.limits.ionice { case .realtime: 1; case .bestEffort: 2; case .idle: 3 }
        if lb_ioprio_set_self(cls, cls == 3 ? 0 : 4) != 0 {
            logger.warning("cannot set ionice \(plan.limits.ionice.rawValue): \(String(cString: strerror(errno)))")
        }
    }

    /// Takes a new plan (SIGHUP): jobs that stay keep their state; the running ones finish. A plan that does not
    /// parse or validate never replaces the running one.
    public func reload(_ file: Plan) {
        let old = plan
        let next = RecoveryKit.withSelfBackup(file)
        plan = next
        let removedSites = Set(old.sites.sites.map(\.name)).subtracting(next.sites.sites.map(\.name))
        for s in old.sites.sites where removedSites.contains(s.name) || next.sites.sites.first(where: { $0.name == s.name }) != s {
            forgetRepository(s.name)
        }
        if old.alerts != next.alerts {
            let log = logger
            let previous = alerts
            alerts = AlertDispatcher(targets: next.alerts, recent: events) { log.warning("\($0)") }
            alertBox.set(alerts)
            Task { await previous.finish(timeout: 30) }
        }
        switch (proxy, next.proxy) {
        case (let p?, let c?): Task { await p.reload(c, logger: logger) }
        case (nil, _?): logger.warning("the plan now has a proxy section: its pools start at the agent's next start")
        case (_?, nil): logger.warning("the plan no longer has a proxy section: the pools run until the agent's next start")
        case (nil, nil): break
        }
        loadSchedule(now: clock())
        syncFollowers()
        logger.info("plan reloaded", metadata: ["plan": "\(next.path)", "sources": "\(next.sources.count)"])
    }

    // MARK: - API actions

    public enum ActionResult: Sendable, Equatable { case ok, unknown, alreadyRunning }

    public func runNow(_ job: JobID) -> ActionResult {
        if running[job] != nil { _ = scheduler.runNow(job, now: clock()); return .alreadyRunning }
        return scheduler.runNow(job, now: clock()) ? .ok : .unknown
    }

    public func setPaused(_ job: JobID, _ paused: Bool) -> ActionResult {
        guard scheduler.setPaused(job, paused) else { return .unknown }
        do { try store.setPaused(job.description, paused) } catch { logger.error("\(errorText(error))") }
        logger.info(paused ? "paused" : "resumed", metadata: ["job": "\(job)"])
        return .ok
    }

    public func status() -> AgentStatus {
        let now = clock()
        let s = StatusBuilder.build(plan: plan, observations: Array(observations.values), lastRuns: (try? store.lastRuns()) ?? [:],
                                    jobs: (try? store.jobs()) ?? [:], scheduler: scheduler, running: Set(running.keys), facts: facts,
                                    since: started, agentStarted: started, origin: "agent", now: now,
                                    drillReports: (try? store.latestDrills()) ?? [])
        return s
    }

    public func history(job: String?, limit: Int, since: Date? = nil) throws -> [RunRecord] { try store.history(job: job, limit: limit, since: since) }

    /// The newest reports of the plan's drills of `source`, newest first, at most `limit` of each drill.
    public func drillReports(source: String, limit: Int) throws -> [DrillReport] {
        try plan.drills.filter { $0.source == source }.flatMap { try store.drillReports(drill: $0.name, limit: limit) }
            .sorted { $0.declared > $1.declared }
    }

    public func drillReport(id: String) throws -> DrillReport? { try store.drillReport(id: id) }

    // MARK: - Objectives

    func evaluateObjectives(now: Date) {
        for s in plan.sources {
            for site in StatusBuilder.sites(of: s, in: plan) {
                let key = "rpo:\(s.name)@\(site)"
                guard var w = watches[key] else { continue }
                // No snapshot yet: the clock runs from the agent's start.
                let newest = observations["\(s.name)@\(site)"]?.newest
                let t = w.observe(newest: newest ?? (now.timeIntervalSince(started) > w.objective ? nil : now), now: now)
                watches[key] = w
                switch t {
                case .breached(let age, let objective)?:
                    let ageText = age.map { "its newest snapshot there is \(Units.span($0)) old" } ?? "it has no snapshot there"
                    logger.warning("RPO breached", metadata: ["source": "\(s.name)", "site": "\(site)", "objective": "\(Units.span(objective))"])
                    alerts.send(Alert(.rpoBreach, source: s.name, site: site,
                                      message: "source \(s.name) misses its RPO of \(Units.span(objective)) at site \(site): \(ageText)", time: now))
                    try? store.setBreach(key, since: now)
                case .cleared(let age, let objective)?:
                    logger.info("RPO met again", metadata: ["source": "\(s.name)", "site": "\(site)"])
                    alerts.send(Alert(.rpoBreach, source: s.name, site: site,
                                      message: "source \(s.name) meets its RPO of \(Units.span(objective)) at site \(site) again: newest snapshot \(Units.span(age)) old",
                                      time: now, resolved: true))
                    try? store.setBreach(key, since: nil)
                case nil: break
                }
            }
        }
    }

    /// A condition (a site down or lagging, a job failing) alerted once when it starts and once when it ends,
    /// across restarts (the `breach` table).
    func condition(_ key: String, _ on: Bool, event: AlertEvent, source: String? = nil, site: String?, message: String) {
        if conditions == nil { conditions = (try? store.breaches()) ?? [:] }
        let open = conditions?[key] != nil
        guard open != on else { return }
        conditions?[key] = on ? clock() : nil
        try? store.setBreach(key, since: on ? clock() : nil)
        alerts.send(Alert(event, source: source, site: site, message: message, time: clock(), resolved: !on))
        if on { logger.warning("alert", metadata: ["event": "\(event.rawValue)", "message": "\(message)"]) }
        else { logger.info("alert cleared", metadata: ["event": "\(event.rawValue)", "message": "\(message)"]) }
    }

    /// Whether an error means the site cannot be reached (after the backend's retries), not that the job failed.
    static func unreachable(_ error: any Error) -> Bool {
        if let e = error as? StorageError { return e.kind == .transient }
        if let e = error as? LifeboatError, let u = e.underlying { return unreachable(u) }
        return false
    }

    /// A failed job alerts once until it succeeds again; a failure because its site cannot be reached marks the
    /// site down (its one `failure` alert, and a backoff during which jobs needing it fail at once instead of
    /// holding a job slot through timeouts) instead of one alert per job.
    func failed(_ key: String, event: AlertEvent, source: String?, site: String, error: (any Error)?, message: String) {
        if let error, Agent.unreachable(error) {
            siteDown(site, errorText(error))
        } else {
            condition("fail:\(key)", true, event: event, source: source, site: site, message: message)
        }
    }

    func succeeded(_ key: String, event: AlertEvent, source: String?, site: String, message: String) {
        siteUp(site)
        condition("fail:\(key)", false, event: event, source: source, site: site, message: message)
    }

    /// A site that could not be reached: not tried again before its backoff (the replication interval, doubled
    /// per failure, at most max_backoff) ends.
    func siteDown(_ site: String, _ why: String) {
        forgetRepository(site)
        // A job that failed at once because the site is in its backoff does not extend it.
        if let d = down[site], clock() < d.until { return }
        var d = down[site] ?? (until: clock(), failures: 0, why: why)
        d.failures = min(d.failures + 1, 30)
        d.why = why
        d.until = clock().addingTimeInterval(min(plan.sites.maxBackoff, plan.sites.interval * pow(2, Double(d.failures - 1))))
        down[site] = d
        reachable(site, error: why)
    }

    func siteUp(_ site: String) {
        down[site] = nil
        reachable(site, error: nil)
    }

    /// Records whether a site answered (nil: it did) and alerts on the change.
    func reachable(_ site: String, error why: String?) {
        var f = facts[site] ?? SiteFacts()
        f.reachable = why == nil
        f.lastError = why
        facts[site] = f
        condition("down:\(site)", why != nil, event: .failure, site: site,
                  message: why.map { "site \(site) cannot be reached: \($0)" } ?? "site \(site) is reachable again")
    }

    // MARK: - Jobs

    func start(_ job: JobID, now: Date) {
        let delay = scheduler.start(job, now: now)
        let scheduled = delay.map { now.addingTimeInterval(-$0) }
        let task = Task { [plan] in
            await self.execute(job, plan: plan, scheduled: scheduled, delay: delay)
            self.finished(job)
        }
        running[job] = task
    }

    func finished(_ job: JobID) {
        running[job] = nil
        scheduler.finish(job)
    }

    /// A site's repository: a fresh handle on the cached one (opened at first use, again after a failure).
    func repository(_ site: Site) async throws -> Repository {
        if let d = down[site.name], clock() < d.until {
            throw LifeboatError(.io, "site \(site.name) is down (\(d.why)); it is tried again after \(Timestamp.format(d.until))",
                                underlying: StorageError(.transient, d.why))
        }
        if let r = repositories[site.name] { return try r.with(compression: nil, dryRun: false) }
        let r = try await access.openNew(site)
        repositories[site.name] = r
        // Locks that processes of this host left when they died (this agent, killed mid-backup): gone for good.
        if let removed = try? await r.removeDeadLocalLocks(), !removed.isEmpty {
            logger.info("removed locks of dead processes", metadata: ["site": "\(site.name)",
                        "locks": "\(removed.map { "\($0.id.short) (\($0.info.operation), PID \($0.info.pid))" }.joined(separator: ", "))"])
        }
        return try r.with(compression: nil, dryRun: false)
    }

    func forgetRepository(_ site: String) { repositories[site] = nil; repositories[site + "#admin"] = nil }

    /// Where a site's deletes (retention, prune) go: its `admin_repository` when it has one (an append-only
    /// server or a locked bucket refuses them), else the site itself.
    func deleter(_ site: Site) async throws -> Repository {
        guard site.adminRepository != nil else { return try await repository(site) }
        let key = site.name + "#admin"
        if let r = repositories[key] { return try r.with(compression: nil, dryRun: false) }
        let r = try await access.openAdmin(site)
        repositories[key] = r
        return try r.with(compression: nil, dryRun: false)
    }

    /// The access the replicator and status use: through the cache.
    func cachedAccess() -> SiteAccess {
        var a = access
        a.reuse = { [weak self] site in
            guard let self else { throw LifeboatError(.interrupted, "the agent stopped") }
            return try await self.repository(site)
        }
        return a
    }

    func record(_ id: Int64?, _ run: RunRecord, delay: Double?) {
        if let d = try? JSONEncoder().encode(facts) { try? store.setFlag(SiteFacts.key, String(decoding: d, as: UTF8.self)) }
        if let id {
            do {
                try store.end(id, finished: run.finished ?? clock(), result: run.result, error: run.error, snapshot: run.snapshot,
                              bytes: run.bytes, files: run.files, errors: run.errors)
            } catch { logger.error("\(errorText(error))") }
        }
        metrics.jobFinished(run, delay: delay)
    }

    func begin(_ job: JobID, site: String?, scheduled: Date?) -> (Int64?, RunRecord) {
        let now = clock()
        let run = RunRecord(job: job.description, site: site, scheduled: scheduled, started: now, result: .running)
        do { return (try store.begin(job: job.description, site: site, scheduled: scheduled, started: now), run) } catch {
            logger.error("\(errorText(error))")
            return (nil, run)
        }
    }

    func execute(_ job: JobID, plan: Plan, scheduled: Date?, delay: Double?) async {
        alerts.ping(job: job.description, .start)
        var meta: Logger.Metadata = ["job": "\(job)"]
        if let delay { meta["delay"] = "\(String(format: "%.3f", delay))" }
        logger.info("job started", metadata: meta)
        let ok: Bool
        switch job.kind {
        case .backup:
            guard let source = plan.sources.first(where: { $0.name == job.source }) else { return }
            ok = await backup(source, plan: plan, job: job, scheduled: scheduled, delay: delay)
        case .replicate: ok = await replicate(plan: plan, job: job, scheduled: scheduled, delay: delay)
        case .prune: ok = await prune(plan: plan, job: job, scheduled: scheduled, delay: delay)
        case .check: ok = await check(plan: plan, job: job, scheduled: scheduled, delay: delay)
        case .drill:
            guard let drill = plan.drills.first(where: { $0.name == job.source }) else { return }
            ok = await self.drill(drill, plan: plan, job: job, scheduled: scheduled, delay: delay)
        }
        alerts.ping(job: job.description, ok ? .success : .failure("see the agent's log and `lifeboat status`"))
    }

    /// The site a source's backups are written to: the primary (replicas get them by replication), or the first
    /// of its own `sites` when it names no primary.
    static func target(of source: Source, in plan: Plan) -> Site {
        if source.sites.isEmpty || source.sites.contains(plan.sites.primary.name) { return plan.sites.primary }
        return plan.sites.sites.first { $0.name == source.sites[0] } ?? plan.sites.primary
    }

    func backup(_ source: Source, plan: Plan, job: JobID, scheduled: Date?, delay: Double?) async -> Bool {
        let site = Agent.target(of: source, in: plan)
        let (id, base) = begin(job, site: site.name, scheduled: scheduled)
        var run = base
        let env = ["LIFEBOAT_SOURCE": source.name, "LIFEBOAT_SITE": site.name]
        var failure: String?
        var failureError: (any Error)?
        var outcome: BackupOutcome?
        var snapshotTime = clock()
        do {
            if source.name == RecoveryKit.selfSource { try RecoveryKit.stage(plan, store: store) }
            if let h = source.hooks, !h.before.isEmpty { try await HookRunner.run(h.before, timeout: h.timeout, environment: env, what: "before") }
            do {
                let repo = try await repository(site)
                snapshotTime = clock()
                outcome = try await SourceBackup.run(source, repo: repo, time: snapshotTime, massChange: plan.massChange,
                                                     follower: followers[source.name]?.control)
                // Retention where deletes are allowed (a site's admin access when it has one).
                if source.retention != nil, outcome?.snapshot != nil {
                    outcome?.removed = try await SourceBackup.forget(source, repo: try await deleter(site))
                }
            } catch {
                failure = errorText(error)
                failureError = error
                if !(error is LifeboatError) || (error as? LifeboatError)?.code == .wrongPassword { forgetRepository(site.name) }
            }
            // After hooks run whatever happened (a `resume` after a `quiesce`).
            if let h = source.hooks, !h.after.isEmpty {
                do { try await HookRunner.run(h.after, timeout: h.timeout, environment: env, what: "after") } catch {
                    failure = [failure, "\(error)"].compactMap { $0 }.joined(separator: "; ")
                }
            }
        } catch {
            failure = "\(error)"
        }
        run.finished = clock()
        if let o = outcome {
            run.snapshot = o.snapshot?.hex
            run.bytes = Int64(clamping: o.bytes)
            run.files = Int64(o.files)
            run.errors = Int64(o.errors.count)
        }
        if let failure {
            run.result = .failure
            run.error = failure
            logger.error("backup failed", metadata: ["source": "\(source.name)", "site": "\(site.name)", "error": "\(failure)"])
            failed(job.description, event: .failure, source: source.name, site: site.name, error: failureError,
                   message: "backup of \(source.name) to \(site.name) failed: \(failure)")
            observe(source: source.name, site: site.name, newest: nil, success: nil, error: failure)
        } else if let o = outcome {
            run.result = o.errors.isEmpty ? .success : .warning
            if !o.errors.isEmpty {
                let first = o.errors.prefix(3).map { "\($0.path): \($0.message)" }.joined(separator: "; ")
                run.error = "\(o.errors.count) file\(o.errors.count == 1 ? "" : "s") not read: \(first)"
                alerts.send(Alert(.warning, source: source.name, site: site.name, message: "backup of \(source.name) finished with \(run.error!)", time: clock()))
            }
            if let m = o.massChange, m.suspicious {
                // Ransomware encrypting the source looks like this: the run is a warning and the alert names the snapshot.
                run.result = .warning
                let text = "suspicious mass change in snapshot \(o.snapshot?.short ?? "?") of \(source.name): \(m.description)"
                run.error = [run.error, text].compactMap { $0 }.joined(separator: "; ")
                logger.warning("mass change", metadata: ["source": "\(source.name)", "snapshot": "\(o.snapshot?.short ?? "-")", "detail": "\(m.description)"])
                alerts.send(Alert(.massChange, source: source.name, site: site.name,
                                  message: text + ". Do not let retention or prune remove the snapshots before it; restore from an older one if the source was encrypted",
                                  time: clock()))
            }
            succeeded(job.description, event: .failure, source: source.name, site: site.name, message: "backup of \(source.name) to \(site.name) succeeds again")
            logger.info("backup done", metadata: ["source": "\(source.name)", "site": "\(site.name)", "snapshot": "\(o.snapshot?.short ?? "-")",
                                                  "files": "\(o.files)", "bytes": "\(o.bytes)", "added": "\(o.added)", "forgotten": "\(o.removed)"])
            observe(source: source.name, site: site.name, newest: o.snapshot == nil ? nil : snapshotTime, success: clock(), error: nil)
            // The new snapshot goes to the replicas now, not at the next interval.
            _ = scheduler.runNow(JobID(.replicate), now: clock())
        }
        record(id, run, delay: delay)
        return failure == nil
    }

    /// A drill: each site of `from` on its own; a report per site (state database, files, metrics); one
    /// `drill_failed` alert while it fails at a site, one when it passes again.
    func drill(_ drill: Drill, plan: Plan, job: JobID, scheduled: Date?, delay: Double?) async -> Bool {
        var env = DrillEnvironment(plan: plan, access: access, reports: Agent.reportDirectory(plan), host: localHostname())
        let log = logger
        env.log = { log.info("\($0)") }
        env.audit = AuditLog(path: Agent.auditLogPath(plan))
        env.kit = { site in await Agent.kit(plan, site: site, access: self.access) }
        env.backend = { [proxy] action, pool, backend in try AgentProxy.act(proxy, action, pool: pool, backend: backend) }
        env.pool = { [proxy] pool in try AgentProxy.view(proxy, pool: pool) }
        var allOK = true
        var all: [DrillReport] = []
        for site in drill.targets {
            let (id, base) = begin(job, site: site, scheduled: scheduled)
            var run = base
            let reports = await DrillRunner.run(drill, sites: [site], env: env)
            all += reports
            for r in reports {
                do { try store.saveDrill(r) } catch { logger.error("\(errorText(error))") }
                metrics.drill(r)
                run.result = r.passed ? .success : .failure
                run.error = r.failures.isEmpty ? nil : r.failures.joined(separator: "; ")
                run.snapshot = r.snapshot
                run.bytes = Int64(clamping: r.bytes)
                run.files = Int64(r.files)
                let measured = "RTO \(DrillReport.span(r.rtoSeconds)), RPO \(DrillReport.span(r.rpoSeconds))"
                condition("drill:\(drill.name)@\(site)", !r.passed, event: .drillFailed, source: drill.source, site: site,
                          message: r.passed ? "drill \(drill.name) passes again at \(site): \(measured)"
                                            : "drill \(drill.name) of \(drill.source) failed at \(site): \(r.failures.joined(separator: "; ")) (report \(r.id))")
            }
            if reports.isEmpty { run.result = .failure; run.error = "no report"; allOK = false }
            run.finished = clock()
            record(id, run, delay: delay)
        }
        // A ransomware drill passes when one site kept the clean snapshot; each unprotected site still alerts.
        return allOK && DrillRunner.passed(drill, all)
    }

    /// Backends that a node-crash drill disabled and could not enable again because its process died (SIGKILL):
    /// its undo journal names them; they are enabled here, in the pools this agent runs.
    func undoKilledDrills() {
        for (path, entry) in UndoJournal.orphans(reports: Agent.reportDirectory(plan)) {
            var done = true
            if let e = entry {
                do {
                    let view = try AgentProxy.view(proxy, pool: e.pool)
                    for b in view.backends where b.disabled && e.enabledBefore.contains(b.name) {
                        do {
                            _ = try AgentProxy.act(proxy, .enableBackend, pool: e.pool, backend: b.name)
                            logger.warning("a drill that died left a backend disabled: enabled again", metadata: ["pool": "\(e.pool)", "backend": "\(b.name)"])
                        } catch {
                            done = false
                            if !undoFailuresLogged.contains(path) { logger.error("a drill that died left \(e.pool)/\(b.name) disabled, and enabling it failed: \(error); trying again") }
                        }
                    }
                } catch let e as LifeboatError where e.code == .notFound {
                    // No proxy, or the pool is gone (a reload): nothing is left to enable.
                } catch {
                    done = false
                }
            }
            if done { unlink(path); undoFailuresLogged.remove(path) } else { undoFailuresLogged.insert(path) }
        }
    }

    /// Where drill reports are written: `drills/` beside the state database.
    public static func reportDirectory(_ plan: Plan) -> String {
        ((plan.agent.state as NSString).deletingLastPathComponent as NSString).appendingPathComponent("drills")
    }

    /// The playbooks' audit log: `audit.jsonl` beside the state database.
    public static func auditLogPath(_ plan: Plan) -> String {
        ((plan.agent.state as NSString).deletingLastPathComponent as NSString).appendingPathComponent("audit.jsonl")
    }

    /// The recovery kit as it would be printed with only `site` reachable (a from-kit drill starts from it).
    public static func kit(_ plan: Plan, site: Site, access: SiteAccess) async -> String {
        var one = plan
        one.sites.sites = plan.sites.sites.filter { $0.name == site.name }
        let facts = await RecoveryKit.gather(one, access: access)
        return RecoveryKit.render(RecoveryKit.withSelfBackup(plan), sites: facts, now: currentTime(), host: localHostname())
    }

    func observe(source: String, site: String, newest: Date??, success: Date?, error: String?) {
        let key = "\(source)@\(site)"
        var o = observations[key] ?? SiteObservation(source: source, site: site, newest: nil, checked: clock())
        o.checked = clock()
        if let newest, let n = newest {
            o.newest = max(o.newest ?? n, n)
            // A snapshot seen since a listing began: that listing may only add to it (a failed backup saw nothing).
            observedAt[key] = listingTicket()
        }
        if let success { o.lastSuccess = success; o.lastError = nil }
        if let error { o.lastError = error }
        observations[key] = o
        do { try store.observe(o) } catch { logger.error("\(errorText(error))") }
    }

    /// Records what a listing of a site's snapshots, begun at `listedAt` with `ticket`, says of each source there:
    /// its newest snapshot and its holdings. A replication pass and a prune list the same site concurrently, and the
    /// one that began first may end last: a listing older than the holdings recorded changes none of them, and one older than
    /// an observation recorded (a newer listing, a backup since) may only raise the source's newest snapshot.
    /// `synced`: for continuous SQLite sources, when the primary held every transaction committed before (taken
    /// before the primary's listing); a site that holds all of the primary's records of such a source is that fresh.
    func refresh(site: Site, plan: Plan, snapshots: [(id: ID, snapshot: Snapshot)], listedAt: Date, ticket: UInt64, primary: [(id: ID, snapshot: Snapshot)]? = nil,
                 synced: [String: Date] = [:]) {
        for s in plan.sources where StatusBuilder.sites(of: s, in: plan).contains(site.name) {
            let key = "\(s.name)@\(site.name)"
            var newest = SourceBackup.newest(s, in: snapshots)
            var fresh: Date?  // a continuous SQLite source's freshness by its follower's sync
            if case .sqliteContinuous = s.kind, let t = synced[s.name] {
                let tag = SourceBackup.tag(s.name)
                let here = Set(snapshots.map(\.id))
                let all = (primary ?? snapshots).filter { $0.snapshot.sqlite != nil && $0.snapshot.tags.contains(tag) }.allSatisfy { here.contains($0.id) }
                if all { newest = max(newest ?? t, t); fresh = t }
            }
            // The holdings (and the WAL chain's holes) are those of the newest listing begun; an older one that ends
            // later changes none of them, nor the newest snapshot (it may show snapshots forgotten since), but its
            // follower's sync may still raise a SQLite source's freshness (a prune's listing carries none).
            let current = heldAt[key].map { $0 <= ticket } ?? true
            if current {
                heldAt[key] = ticket
                let held = SourceHoldings.of(s, in: snapshots, listed: listedAt)
                var before = holdings[key]
                before?.listed = held.listed  // (a new listing of the same holdings is no change)
                if before != held { holdingsVersion &+= 1 }
                holdings[key] = held
                if case .postgresArchive = s.kind {
                    let problems = held.problems
                    condition("wal_gap:\(s.name)@\(site.name)", !problems.isEmpty, event: .walGap, source: s.name, site: site.name,
                              message: problems.isEmpty ? "the WAL archive of source \(s.name) at site \(site.name) has no hole again"
                                                        : "the WAL archive of source \(s.name) at site \(site.name): \(problems[0])\(problems.count > 1 ? " (and \(problems.count - 1) more)" : "")")
                }
            }
            var o = observations[key] ?? SiteObservation(source: s.name, site: site.name, newest: nil, checked: listedAt)
            if let recorded = observedAt[key], recorded > ticket {
                // Something recorded since the listing began: the listing may only add to it.
                if let n = current ? newest : fresh { o.newest = max(o.newest ?? n, n) }
            } else {
                // Forgotten or pruned snapshots move the newest back: the listing is the truth.
                o.newest = newest
                o.checked = listedAt
                observedAt[key] = ticket
            }
            observations[key] = o
            try? store.observe(o)
        }
    }

    func replicate(plan: Plan, job: JobID, scheduled: Date?, delay: Double?) async -> Bool {
        let (id, base) = begin(job, site: nil, scheduled: scheduled)
        var run = base
        let now = clock()
        // Sites that are down wait out their backoff; the others are brought up to date on every pass.
        let due = plan.sites.replicas.filter { down[$0.name].map { now >= $0.until } ?? true }
        let failed = Mutex<[String: String]>([:])
        let copied = Mutex<Int>(0)
        let bytes = Mutex<UInt64>(0)
        let replicator = Replicator(config: plan.sites, access: cachedAccess(), storage: store.replicationStorage(), clock: clock)
        let logger = self.logger
        do {
            _ = try await replicator.pass(due, force: true, shouldStop: { Task.isCancelled }) { event in
                switch event {
                case .primaryFailed(let site, let error): failed.withLock { $0[site] = error }
                case .siteFailed(let site, let error): failed.withLock { $0[site] = error }
                case .snapshotCopied: copied.withLock { $0 += 1 }
                case .siteDone(let site, let report):
                    bytes.withLock { $0 += report.bytesSent }
                    if !report.copied.isEmpty { logger.info("replicated", metadata: ["site": "\(site)", "snapshots": "\(report.copied.count)", "bytes": "\(report.bytesSent)"]) }
                case .staleLocks(let site, let locks):
                    logger.warning("stale locks ignored", metadata: ["site": "\(site)", "locks": "\(locks.map(\.id.short).joined(separator: ","))"])
                }
            }
        } catch {
            failed.withLock { $0[plan.sites.primary.name] = errorText(error) }
        }
        let failures = failed.withLock { $0 }
        // What each site holds now: newest per source, lag of each replica behind the primary.
        var primarySnaps: [(id: ID, snapshot: Snapshot)]?
        var primaryRepo: Repository?
        let synced = followers.compactMapValues { $0.control.syncedAt }
        for site in [plan.sites.primary] + plan.sites.replicas {
            if let why = failures[site.name] {
                siteDown(site.name, why)
                continue
            }
            guard site.role == .primary || due.contains(where: { $0.name == site.name }) else { continue }
            do {
                let repo = try await repository(site)
                let listedAt = clock(), ticket = listingTicket()
                let snaps = try await repo.listSnapshots()
                refresh(site: site, plan: plan, snapshots: snaps, listedAt: listedAt, ticket: ticket, primary: primarySnaps, synced: synced)
                siteUp(site.name)
                var f = facts[site.name] ?? SiteFacts()
                if site.role == .primary { primarySnaps = snaps; primaryRepo = repo } else if let p = primarySnaps {
                    let missing = Copier.missing(p, at: snaps)
                    f.snapshotsMissing = missing.count
                    f.lagSeconds = replicationLag(missing: missing.map(\.snapshot.date), now: clock()).lag
                    f.bytesPending = 0
                    // Behind (a copy stopped half-way, a site back from an outage): how much is still to send.
                    if !missing.isEmpty, let source = primaryRepo {
                        try await source.loadIndex()
                        try await repo.loadIndex()
                        f.bytesPending = try await Copier.pendingBytes(missing.map(\.snapshot), source: source, destination: repo).bytes
                    }
                }
                facts[site.name] = f
                if let maxLag = plan.maxLag, let lag = f.lagSeconds {
                    condition("lag:\(site.name)", lag > maxLag, event: .lag, site: site.name,
                              message: lag > maxLag ? "site \(site.name) lags \(Units.span(lag)) behind the primary (max_lag \(Units.span(maxLag)))"
                                                    : "site \(site.name) is within max_lag again")
                }
            } catch {
                siteDown(site.name, errorText(error))
            }
        }
        run.finished = clock()
        run.bytes = Int64(clamping: bytes.withLock { $0 })
        run.files = Int64(copied.withLock { $0 })
        run.errors = Int64(failures.count)
        if failures.isEmpty { run.result = .success } else {
            run.result = .failure
            run.error = failures.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "; ")
            logger.error("replication failed", metadata: ["error": "\(run.error!)"])
        }
        record(id, run, delay: delay)
        return failures.isEmpty
    }

    func prune(plan: Plan, job: JobID, scheduled: Date?, delay: Double?) async -> Bool {
        var allOK = true
        for site in plan.sites.sites {
            let (id, base) = begin(job, site: site.name, scheduled: scheduled)
            var run = base
            do {
                _ = try await repository(site)  // down sites fail here, at once
                let repo = try await deleter(site)
                var forgotten = 0
                for s in plan.sources where StatusBuilder.sites(of: s, in: plan).contains(site.name) {
                    forgotten += try await SourceBackup.forget(s, repo: repo)
                }
                var opts = PruneOptions()
                opts.grace = 3600
                let r = try await Pruner(repository: repo, options: opts, now: clock).run()
                run.result = .success
                run.bytes = Int64(clamping: r.bytesDeleted)
                run.files = Int64(r.packsDeleted)
                logger.info("prune done", metadata: ["site": "\(site.name)", "forgotten": "\(forgotten)", "packs_deleted": "\(r.packsDeleted)",
                                                     "bytes_freed": "\(r.bytesDeleted)", "pending_bytes": "\(r.pending.bytes)"])
                let listedAt = clock(), ticket = listingTicket()
                refresh(site: site, plan: plan, snapshots: try await repo.listSnapshots(), listedAt: listedAt, ticket: ticket)
                succeeded("prune@\(site.name)", event: .failure, source: nil, site: site.name, message: "prune at \(site.name) succeeds again")
            } catch {
                allOK = false
                forgetRepository(site.name)
                run.result = .failure
                run.error = errorText(error)
                logger.error("prune failed", metadata: ["site": "\(site.name)", "error": "\(run.error!)"])
                failed("prune@\(site.name)", event: .failure, source: nil, site: site.name, error: error, message: "prune at \(site.name) failed: \(run.error!)")
            }
            run.finished = clock()
            record(id, run, delay: delay)
        }
        return allOK
    }

    /// The part of the data a check reads this time: `read_data_subset` as N/T parts, rotating, so that every
    /// pack is read once per T runs.
    public static func checkPart(subset: String?, counter: Int) -> (ReadDataSubset?, parts: Int) {
        guard let total = ChecksJob.parts(subset) else { return (nil, 0) }
        return (total == 1 ? .all : .part(counter % total + 1, total), total)
    }

    func check(plan: Plan, job: JobID, scheduled: Date?, delay: Double?) async -> Bool {
        let counter = (try? store.advance(job.description)) ?? 0
        let (subset, parts) = Agent.checkPart(subset: plan.checks?.readDataSubset, counter: counter)
        var allOK = true
        for site in plan.sites.sites {
            let (id, base) = begin(job, site: site.name, scheduled: scheduled)
            var run = base
            do {
                let repo = try await repository(site)
                var opts = CheckOptions()
                opts.readData = subset
                let report = try await repo.withLock(.shared, operation: "check (agent)") { try await Checker(repository: repo, options: opts).run() }
                run.bytes = Int64(clamping: report.bytesRead)
                run.files = Int64(report.packsRead)
                run.errors = Int64(report.errors)
                if parts > 0 {
                    var f = facts[site.name] ?? SiteFacts()
                    f.scrubCoverage = Double(counter % parts + 1) / Double(parts)
                    facts[site.name] = f
                }
                if report.errors > 0 {
                    run.result = .failure
                    let first = report.issues.filter { $0.severity == .error }.prefix(3).map(\.description).joined(separator: "; ")
                    run.error = "\(report.errors) error\(report.errors == 1 ? "" : "s"): \(first)"
                    failed("check@\(site.name)", event: .checkError, source: nil, site: site.name, error: nil, message: "check of \(site.name) found \(run.error!)")
                    allOK = false
                } else {
                    run.result = .success
                    succeeded("check@\(site.name)", event: .checkError, source: nil, site: site.name, message: "check of \(site.name) finds no error again")
                }
                logger.info("check done", metadata: ["site": "\(site.name)", "errors": "\(report.errors)", "packs_read": "\(report.packsRead)",
                                                     "part": "\(subset.map { "\($0)" } ?? "metadata")"])
            } catch {
                allOK = false
                forgetRepository(site.name)
                run.result = .failure
                run.error = errorText(error)
                failed("check@\(site.name)", event: .checkError, source: nil, site: site.name, error: error, message: "check of \(site.name) could not run: \(run.error!)")
            }
            run.finished = clock()
            record(id, run, delay: delay)
        }
        return allOK
    }
}

import Synchronization

/// The current alert dispatcher, for senders outside the actor (the proxy's switch callback).
final class AlertBox: Sendable {
    let current = Mutex<AlertDispatcher?>(nil)
    func set(_ d: AlertDispatcher) { current.withLock { $0 = d } }
    func send(_ a: Alert) { current.withLock { $0 }?.send(a) }
}
