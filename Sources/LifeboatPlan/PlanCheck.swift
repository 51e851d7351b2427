import Foundation
import LifeboatCore
import LifeboatSites

/// A finding of `config validate`: an error stops the agent from starting (or from taking a reload), a warning
/// does not.
public struct Diagnostic: Sendable, Equatable, CustomStringConvertible {
    public enum Severity: String, Sendable { case error, warning }
    public var severity: Severity
    public var location: String
    public var message: String
    public var description: String { "\(location): \(severity.rawValue): \(message)" }
}

/// What the agent will do with one job, as `lifeboat plan` shows it.
public struct JobPreview: Sendable {
    public enum Kind: String, Sendable { case backup, check, prune }
    public var kind: Kind
    public var name: String
    public var schedule: String
    public var next: [Date]
    /// Where it writes (backups: the primary and, by replication, the replicas).
    public var sites: [String]
    public var rpo: Double?
    public var rto: Double?
    /// The longest wait between two runs in the coming year, and whether the RPO covers it.
    public var longestGap: Double?
    public var meetsRPO: Bool?
}

public enum PlanCheck {
    /// Checks the plan against the world and against itself: objectives the schedule cannot meet, schedules that
    /// never run, password, credentials and DSN files that cannot be read, sources without objectives. Reads
    /// files only to see that they can be read; their contents are never reported.
    public static func diagnose(_ plan: Plan, now: Date, readable: (String) -> String? = PlanCheck.unreadable,
                                userExists: (String) -> Bool = { getpwnam($0) != nil }) -> [Diagnostic] {
        var out: [Diagnostic] = []
        func error(_ at: CustomStringConvertible, _ m: String) { out.append(Diagnostic(severity: .error, location: at.description, message: m)) }
        func warn(_ at: CustomStringConvertible, _ m: String) { out.append(Diagnostic(severity: .warning, location: at.description, message: m)) }
        for site in plan.sites.sites {
            if let f = site.passwordFile, let why = readable(f) { error(plan.path, "site \(site.name): password_file \(f): \(why)") }
            if site.passwordFile == nil { warn(plan.path, "site \(site.name) has no password_file: the agent cannot open it without one") }
            if let f = site.credentialsFile, let why = readable(f) { error(plan.path, "site \(site.name): credentials_file \(f): \(why)") }
            if let f = site.adminCredentialsFile, let why = readable(f) { error(plan.path, "site \(site.name): admin_credentials_file \(f): \(why)") }
        }
        for s in plan.sources {
            guard let gap = s.schedule.longestGap(from: now) else {
                error(s.scheduleLocation, "source \(s.name): schedule \"\(s.scheduleText)\" never runs")
                continue
            }
            // A PITR source's RPO is kept by WAL archiving between its base backups, not by its schedule.
            if case .postgresArchive = s.kind {
                warn(s.location, "source \(s.name): its RPO is kept by archive_command = 'lifeboat pg wal-push --async …' into site \(plan.sites.primary.name) (set archive_timeout below the RPO for quiet hours)")
            } else if case .sqliteContinuous(_, let interval) = s.kind {
                // The follower keeps the RPO; the schedule takes the snapshots a restore starts from.
                if let rpo = s.objectives?.rpo, interval >= rpo {
                    error(s.rpoLocation ?? s.location, "source \(s.name): rpo \(Units.span(rpo)) is not longer than its interval \(Units.span(interval)): the follower cannot meet it")
                }
            } else if let rpo = s.objectives?.rpo, gap > rpo {
                error(s.rpoLocation ?? s.location, "source \(s.name): rpo \(Units.span(rpo)) is shorter than the longest wait between runs of \"\(s.scheduleText)\" (\(Units.span(gap))): the schedule cannot meet it")
            }
            if s.objectives?.rpo == nil {
                warn(s.location, "source \(s.name) has no objectives: add `objectives: {rpo: …, rto: …}` to have them measured")
            }
            // A site that locks what it receives longer than the retention keeps it: forget fails until the lock ends.
            if let policy = s.retention, policy.tags.isEmpty, let span = PlanCheck.retentionSpan(policy, gap: gap) {
                for site in plan.sites.sites where s.sites.isEmpty || s.sites.contains(site.name) {
                    guard let days = site.objectLockDays, span < Double(days) * 86400 else { continue }
                    warn(s.location, "source \(s.name): its retention forgets snapshots after about \(Units.span(span)), but site \(site.name) locks what it receives for \(days) days: forgetting them fails there until the lock ends (keep them at least \(days) days, e.g. keep_within: \(days)d, or shorten the lock)")
                }
            }
            switch s.kind {
            case .postgres(let f), .postgresArchive(let f): if let why = readable(f) { error(s.location, "source \(s.name): dsn_file \(f): \(why)") }
            case .mariadb(let f, _): if let why = readable(f) { error(s.location, "source \(s.name): defaults_file \(f): \(why)") }
            case .sqlite(let p), .sqliteContinuous(let p, _): if let why = readable(p) { error(s.location, "source \(s.name): database \(p): \(why)") }
            case .redis(let t):
                if let f = t.passwordFile, let why = readable(f) { error(s.location, "source \(s.name): password_file \(f): \(why)") }
            case .files, .command: break
            }
        }
        for d in plan.drills {
            var users = d.runAs.map { [$0] } ?? []
            if let p = d.playbook {
                do {
                    let book = try Playbook.load(p, extra: Set(d.variables.keys))
                    users += (book.steps + book.cleanup).compactMap(\.runAs)
                } catch let why {
                    error(d.location, "drill \(d.name): its playbook cannot be used: \(why)")
                }
            }
            for u in Set(users).sorted() where !userExists(u) {
                error(d.location, "drill \(d.name): run_as \(u): no such user on this host")
            }
            if d.scenario == .ransomware {
                let sites = plan.sites.sites.filter { d.from.contains($0.name) }
                if sites.allSatisfy({ s in ["s3:", "rest:", "rclone:"].allSatisfy { !s.repository.hasPrefix($0) } }) {
                    warn(d.location, "drill \(d.name): every site it drills is a local folder, which the attacker deletes with this host's access: the drill will find them unprotected (add an append-only server or an S3 site with object_lock)")
                }
            }
            if d.runAs == nil, [.restore, .siteLoss, .fromKit].contains(d.scenario),
               case .postgresArchive? = plan.sources.first(where: { $0.name == d.source })?.kind {
                warn(d.location, "drill \(d.name): source \(d.source) is restored as a running PostgreSQL server, which does not run as root: give the drill `run_as:` (the cluster's owner, often postgres) unless the agent runs as that user")
            }
            if d.scenario == .nodeCrash, d.recover == nil {
                warn(d.location, "drill \(d.name): no `recover` command: the crashed backend stays down after the drill unless its playbook's cleanup brings it back")
            }
        }
        if let c = plan.checks, c.job.schedule.longestGap(from: now) == nil { error(c.job.location, "checks: the schedule never runs") }
        if let p = plan.prune, p.schedule.longestGap(from: now) == nil { error(p.location, "prune: the schedule never runs") }
        if let c = plan.checks, let within = c.fullCoverageWithin, c.readDataSubset == nil {
            error(c.job.location, "checks: full_coverage_within \(Units.span(within)) needs read_data_subset (the part of the data each check reads)")
        }
        // Each check reads one of `parts` parts in turn: a full cycle takes parts × the longest wait between checks.
        if let c = plan.checks, let within = c.fullCoverageWithin, let parts = c.parts, let gap = c.job.schedule.longestGap(from: now),
           Double(parts) * gap > within {
            error(c.job.location, "checks: reading \(c.readDataSubset ?? "") of the data per run, one part of \(parts) in turn, every pack is read only every \(Units.span(Double(parts) * gap)) (the longest wait between checks is \(Units.span(gap))), not within full_coverage_within \(Units.span(within)): read a larger part or check more often")
        }
        return out
    }

    /// About how long a retention policy keeps a snapshot (the longest of its rules; `keep_last` counted in
    /// runs `gap` apart); nil when it keeps some forever (`keep_tag`) or keeps nothing.
    public static func retentionSpan(_ p: RetentionPolicy, gap: Double) -> Double? {
        guard p.tags.isEmpty, !p.isEmpty else { return nil }
        var span = Double(p.last) * gap
        span = max(span, Double(p.hourly) * 3600, Double(p.daily) * 86400, Double(p.weekly) * 7 * 86400)
        span = max(span, Double(p.monthly) * 30 * 86400, Double(p.yearly) * 365 * 86400)
        if let w = p.within {
            span = max(span, Double(w.years) * 365 * 86400 + Double(w.months) * 30 * 86400 + Double(w.days) * 86400 + Double(w.hours) * 3600)
        }
        return span
    }

    /// Why `path` cannot be read, or nil when it can (not a secret: only whether).
    public static func unreadable(_ path: String) -> String? {
        var st = stat()
        guard stat(path, &st) == 0 else { return errno == ENOENT ? "it does not exist" : String(cString: strerror(errno)) }
        if (st.st_mode & S_IFMT) == S_IFDIR { return "it is a directory" }
        return access(path, R_OK) == 0 ? nil : "this user (uid \(getuid())) may not read it"
    }

    /// Every job of the plan with its next `count` runs after `now`.
    public static func preview(_ plan: Plan, now: Date, count: Int = 3) -> [JobPreview] {
        var jobs: [JobPreview] = []
        let allSites = plan.sites.sites.map(\.name)
        for s in plan.sources {
            var gap = s.schedule.longestGap(from: now)
            // A continuous SQLite source's RPO is kept by its follower, which stores new transactions every interval.
            if case .sqliteContinuous(_, let interval) = s.kind { gap = interval }
            jobs.append(JobPreview(kind: .backup, name: s.name, schedule: s.schedule.description, next: s.schedule.upcoming(count, after: now),
                                   sites: s.sites.isEmpty ? allSites : s.sites, rpo: s.objectives?.rpo, rto: s.objectives?.rto,
                                   longestGap: gap, meetsRPO: s.objectives?.rpo.map { rpo in gap.map { $0 <= rpo } ?? false }))
        }
        if let c = plan.checks {
            jobs.append(JobPreview(kind: .check, name: "check" + (c.readDataSubset.map { " (read \($0))" } ?? ""), schedule: c.job.schedule.description,
                                   next: c.job.schedule.upcoming(count, after: now), sites: allSites))
        }
        if let p = plan.prune {
            jobs.append(JobPreview(kind: .prune, name: "prune", schedule: p.schedule.description, next: p.schedule.upcoming(count, after: now),
                                   sites: allSites))
        }
        return jobs
    }
}
