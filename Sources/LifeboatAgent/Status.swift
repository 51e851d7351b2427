import Foundation
import LifeboatCore
import LifeboatDrill
import LifeboatPlan
import LifeboatReplication

/// What `lifeboat status` shows and `GET /status` answers: every source with, per site, its newest snapshot, its
/// current RPO against the objective and its last success; every job's next and last run; the sites' lag.
public struct AgentStatus: Sendable, Codable {
    public struct SourceSite: Sendable, Codable {
        public var site: String
        public var newestSnapshot: Date?
        /// Age of the newest snapshot (since `since` when there is none yet).
        public var rpoSeconds: Double
        public var meetsRPO: Bool?
        public var lastSuccess: Date?
        public var lastError: String?
    }
    public struct SourceRow: Sendable, Codable {
        public var name: String
        public var kind: String
        public var schedule: String
        public var nextRun: Date?
        public var paused: Bool
        public var running: Bool
        public var rpoObjectiveSeconds: Double?
        public var rtoObjectiveSeconds: Double?
        /// The longest RTO the newest drill at each site measured.
        public var measuredRTOSeconds: Double?
        public var sites: [SourceSite]
        public var lastRun: RunRecord?
        public var lastError: String?
    }
    public struct JobRow: Sendable, Codable {
        public var job: String
        public var schedule: String
        public var nextRun: Date?
        public var paused: Bool
        public var running: Bool
        public var lastRun: RunRecord?
    }
    public struct SiteRow: Sendable, Codable {
        public var site: String
        public var role: String
        public var reachable: Bool
        public var lagSeconds: Double?
        public var snapshotsMissing: Int?
        public var bytesPending: UInt64?
        public var lastError: String?
        public var scrubCoverage: Double?
    }

    public var time: Date
    public var plan: String
    /// Where this status came from: "agent" (its API) or "database" (read while no agent answered).
    public var origin: String
    public var agentStarted: Date?
    public var sources: [SourceRow]
    public var jobs: [JobRow]
    public var sites: [SiteRow]
    public var running: [String]
    /// Each drill's last run at each site.
    public var drills: [DrillRow]?

    public struct DrillRow: Sendable, Codable {
        public var drill: String
        public var source: String
        public var scenario: String
        public var site: String
        public var passed: Bool
        public var declared: Date
        public var rtoSeconds: Double?
        public var rpoSeconds: Double?
        public var report: String
        public var failures: [String]
        enum CodingKeys: String, CodingKey {
            case drill, source, scenario, site, passed, declared, rtoSeconds = "rto_seconds", rpoSeconds = "rpo_seconds", report, failures
        }
    }

    /// Whether every RPO is met.
    public var objectivesMet: Bool { !sources.contains { $0.sites.contains { $0.meetsRPO == false } } }

    enum CodingKeys: String, CodingKey {
        case time, plan, origin, agentStarted = "agent_started", sources, jobs, sites, running, drills
    }
}

extension AgentStatus.SourceSite {
    enum CodingKeys: String, CodingKey {
        case site, newestSnapshot = "newest_snapshot", rpoSeconds = "rpo_seconds", meetsRPO = "meets_rpo", lastSuccess = "last_success", lastError = "last_error"
    }
}
extension AgentStatus.SourceRow {
    enum CodingKeys: String, CodingKey {
        case name, kind, schedule, nextRun = "next_run", paused, running, rpoObjectiveSeconds = "rpo_objective_seconds",
             rtoObjectiveSeconds = "rto_objective_seconds", measuredRTOSeconds = "measured_rto_seconds", sites, lastRun = "last_run", lastError = "last_error"
    }
}
extension AgentStatus.JobRow {
    enum CodingKeys: String, CodingKey { case job, schedule, nextRun = "next_run", paused, running, lastRun = "last_run" }
}
extension AgentStatus.SiteRow {
    enum CodingKeys: String, CodingKey {
        case site, role, reachable, lagSeconds = "lag_seconds", snapshotsMissing = "snapshots_missing", bytesPending = "bytes_pending",
             lastError = "last_error", scrubCoverage = "scrub_coverage"
    }
}

/// Replication and check facts per site that the agent keeps in memory (and the database's `site_source`).
public struct SiteFacts: Sendable, Equatable, Codable {
    public var reachable = true
    public var lagSeconds: Double?
    public var snapshotsMissing: Int?
    public var bytesPending: UInt64?
    public var lastError: String?
    public var scrubCoverage: Double?
    public init() {}

    /// Kept in the state database (for `lifeboat status` without an agent) as one JSON value.
    public static let key = "site_facts"
    public static func decode(_ text: String?) -> [String: SiteFacts] {
        guard let text, let d = try? JSONDecoder().decode([String: SiteFacts].self, from: Data(text.utf8)) else { return [:] }
        return d
    }
}

/// Builds the status, pure: from the plan, what the database holds, the scheduler (nil: no agent running, next
/// runs computed from the schedules) and now.
public enum StatusBuilder {
    /// The sites a source's RPO is judged at: its `sites`, or every site.
    public static func sites(of source: Source, in plan: Plan) -> [String] {
        source.sites.isEmpty ? plan.sites.sites.map(\.name) : source.sites
    }

    public static func build(plan: Plan, observations: [SiteObservation], lastRuns: [String: RunRecord], jobs: [String: StateStore.JobRow],
                             scheduler: Scheduler?, running: Set<JobID>, facts: [String: SiteFacts], since: Date, agentStarted: Date?,
                             origin: String, now: Date, drillReports: [DrillReport] = []) -> AgentStatus {
        var obs: [String: SiteObservation] = [:]
        for o in observations { obs["\(o.source)@\(o.site)"] = o }
        func next(_ job: JobID, _ schedule: Schedule) -> Date? {
            if let s = scheduler { return s.entry(job)?.due }
            return schedule.next(after: max(now, jobs[job.description]?.lastStart ?? now))
        }
        var sources: [AgentStatus.SourceRow] = []
        for s in plan.sources {
            let id = JobID.backup(s.name)
            var rows: [AgentStatus.SourceSite] = []
            for site in sites(of: s, in: plan) {
                let o = obs["\(s.name)@\(site)"]
                let age = RPOWatch.age(newest: o?.newest, now: now) ?? max(0, now.timeIntervalSince(since))
                rows.append(.init(site: site, newestSnapshot: o?.newest, rpoSeconds: age,
                                  meetsRPO: s.objectives?.rpo.map { o?.newest != nil && age <= $0 },
                                  lastSuccess: o?.lastSuccess, lastError: o?.lastError))
            }
            let last = lastRuns[id.description] ?? lastRuns.first { $0.key.hasPrefix(id.description + "@") }?.value
            sources.append(.init(name: s.name, kind: s.kind.name, schedule: s.scheduleText, nextRun: next(id, s.schedule),
                                 paused: scheduler?.entry(id)?.paused ?? jobs[id.description]?.paused ?? false,
                                 running: running.contains(id), rpoObjectiveSeconds: s.objectives?.rpo, rtoObjectiveSeconds: s.objectives?.rto,
                                 measuredRTOSeconds: drillReports.filter { $0.source == s.name }.compactMap(\.rtoSeconds).max(),
                                 sites: rows, lastRun: last, lastError: last?.result == .failure ? last?.error : nil))
        }
        var jobRows: [AgentStatus.JobRow] = []
        for (id, schedule, text) in otherJobs(plan) {
            let last = lastRuns[id.description] ?? lastRuns.filter { $0.key.hasPrefix(id.description + "@") }.values.max { $0.started < $1.started }
            jobRows.append(.init(job: id.description, schedule: text, nextRun: next(id, schedule),
                                 paused: scheduler?.entry(id)?.paused ?? jobs[id.description]?.paused ?? false,
                                 running: running.contains(id), lastRun: last))
        }
        let siteRows = plan.sites.sites.map { site -> AgentStatus.SiteRow in
            let f = facts[site.name] ?? SiteFacts()
            return .init(site: site.name, role: site.role.rawValue, reachable: f.reachable, lagSeconds: site.role == .primary ? 0 : f.lagSeconds,
                         snapshotsMissing: site.role == .primary ? 0 : f.snapshotsMissing, bytesPending: site.role == .primary ? 0 : f.bytesPending,
                         lastError: f.lastError, scrubCoverage: f.scrubCoverage)
        }
        let drills = drillReports.filter { r in plan.drills.contains { $0.name == r.drill } }.map {
            AgentStatus.DrillRow(drill: $0.drill, source: $0.source, scenario: $0.scenario, site: $0.site, passed: $0.passed, declared: $0.declared,
                                 rtoSeconds: $0.rtoSeconds, rpoSeconds: $0.rpoSeconds, report: $0.id, failures: $0.failures)
        }
        return AgentStatus(time: now, plan: plan.path, origin: origin, agentStarted: agentStarted, sources: sources, jobs: jobRows,
                           sites: siteRows, running: running.map(\.description).sorted(), drills: drills)
    }

    /// The plan's jobs other than backups: replication (on its interval), prune and check (on their schedules).
    public static func otherJobs(_ plan: Plan) -> [(JobID, Schedule, String)] {
        var out: [(JobID, Schedule, String)] = [(JobID(.replicate), .every(plan.sites.interval), "every \(Units.span(plan.sites.interval).replacingOccurrences(of: " ", with: ""))")]
        if let p = plan.prune { out.append((JobID(.prune), p.schedule, p.scheduleText)) }
        if let c = plan.checks { out.append((JobID(.check), c.job.schedule, c.job.scheduleText)) }
        for d in plan.drills { if let s = d.schedule { out.append((JobID(.drill, d.name), s, d.scheduleText ?? "")) } }
        return out
    }

    /// Every job of the plan with its schedule.
    public static func jobs(_ plan: Plan) -> [(JobID, Schedule)] {
        plan.sources.map { (JobID.backup($0.name), $0.schedule) } + otherJobs(plan).map { ($0.0, $0.1) }
    }
}

/// What a reload would change: the running agent's jobs and sites (from its status) against a plan file. Pure.
public struct PlanChange: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable { case added, removed, changed }
    public var kind: Kind
    /// The job (`backup:web`, `prune`, …) or `site:NAME`.
    public var subject: String
    public var detail: String

    public var description: String {
        let mark = switch kind { case .added: "+"; case .removed: "-"; case .changed: "~" }
        return "\(mark) \(subject)\(detail.isEmpty ? "" : ": \(detail)")"
    }

    public static func between(running: AgentStatus, next plan: Plan) -> [PlanChange] {
        var out: [PlanChange] = []
        func span(_ v: Double?) -> String { v.map { Units.span($0) } ?? "none" }
        let old = Dictionary(running.sources.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let new = Dictionary(plan.sources.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for s in plan.sources {
            let job = JobID.backup(s.name).description
            guard let o = old[s.name] else {
                out.append(PlanChange(kind: .added, subject: job, detail: "\(s.kind.name), \(s.scheduleText)"))
                continue
            }
            var what: [String] = []
            if o.kind != s.kind.name { what.append("\(o.kind) -> \(s.kind.name)") }
            if o.schedule != s.scheduleText { what.append("schedule \"\(o.schedule)\" -> \"\(s.scheduleText)\"") }
            if o.rpoObjectiveSeconds != s.objectives?.rpo { what.append("rpo \(span(o.rpoObjectiveSeconds)) -> \(span(s.objectives?.rpo))") }
            if o.rtoObjectiveSeconds != s.objectives?.rto { what.append("rto \(span(o.rtoObjectiveSeconds)) -> \(span(s.objectives?.rto))") }
            let oldSites = o.sites.map(\.site), newSites = StatusBuilder.sites(of: s, in: plan)
            if oldSites != newSites { what.append("sites \(oldSites.joined(separator: ",")) -> \(newSites.joined(separator: ","))") }
            if !what.isEmpty { out.append(PlanChange(kind: .changed, subject: job, detail: what.joined(separator: "; "))) }
        }
        for o in running.sources where new[o.name] == nil {
            out.append(PlanChange(kind: .removed, subject: JobID.backup(o.name).description, detail: o.running ? "running now: it finishes first" : ""))
        }
        let oldJobs = Dictionary(running.jobs.map { ($0.job, $0.schedule) }, uniquingKeysWith: { a, _ in a })
        let newJobs = StatusBuilder.otherJobs(plan)
        for (id, _, text) in newJobs {
            if let s = oldJobs[id.description] {
                if s != text { out.append(PlanChange(kind: .changed, subject: id.description, detail: "schedule \"\(s)\" -> \"\(text)\"")) }
            } else {
                out.append(PlanChange(kind: .added, subject: id.description, detail: text))
            }
        }
        for (job, _) in oldJobs.sorted(by: { $0.key < $1.key }) where !newJobs.contains(where: { $0.0.description == job }) {
            out.append(PlanChange(kind: .removed, subject: job, detail: ""))
        }
        let oldSites = Set(running.sites.map(\.site))
        for s in plan.sites.sites where !oldSites.contains(s.name) {
            out.append(PlanChange(kind: .added, subject: "site:\(s.name)", detail: "\(s.role.rawValue), \(s.repository)"))
        }
        for s in running.sites where !plan.sites.sites.contains(where: { $0.name == s.site }) {
            out.append(PlanChange(kind: .removed, subject: "site:\(s.site)", detail: ""))
        }
        return out
    }
}

extension AgentStatus {
    /// The agent's view of each site as `sites status` prints it (no site is opened: reachability, lag and the
    /// last error are the agent's last contact).
    public func siteStatusRows(_ plan: Plan) -> [SiteStatus] {
        sites.map { row in
            let site = plan.sites.sites.first { $0.name == row.site }
            var s = SiteStatus(site: row.site, role: row.role, repository: RecoveryKit.redacted(site?.repository ?? ""), reachable: row.reachable)
            s.error = row.reachable ? nil : row.lastError
            s.lastError = row.lastError
            s.missing = row.snapshotsMissing
            s.bytesPending = row.bytesPending
            s.lagSeconds = row.lagSeconds.map { Int($0.rounded()) }
            let successes = sources.flatMap(\.sites).filter { $0.site == row.site }.compactMap(\.lastSuccess)
            s.lastSuccess = successes.max().map { Timestamp.format($0) }
            let newest = sources.flatMap(\.sites).filter { $0.site == row.site }.compactMap(\.newestSnapshot).max()
            s.newestSnapshot = newest.map { Timestamp.format($0) }
            return s
        }
    }
}
