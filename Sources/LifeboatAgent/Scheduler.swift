import Foundation
import LifeboatPlan

/// A job of the agent: a source's backup (with its retention), the replication pass, prune, or the check.
public struct JobID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable { case backup, replicate, prune, check, drill }
    public var kind: Kind
    /// The source's name for backups, the drill's for drills; empty for the others.
    public var source: String

    public init(_ kind: Kind, _ source: String = "") { self.kind = kind; self.source = source }
    public static func backup(_ source: String) -> JobID { JobID(.backup, source) }

    /// "backup:web-files", "prune": the key in the state database and the API.
    public var description: String { source.isEmpty ? kind.rawValue : "\(kind.rawValue):\(source)" }
    public init?(parsing s: String) {
        let parts = s.split(separator: ":", maxSplits: 1).map(String.init)
        guard let k = parts.first.flatMap(Kind.init(rawValue:)) else { return nil }
        if k == .backup || k == .drill { guard parts.count == 2, !parts[1].isEmpty else { return nil } } else if parts.count != 1 { return nil }
        self.init(k, parts.count == 2 ? parts[1] : "")
    }
    public static func < (a: JobID, b: JobID) -> Bool { a.description < b.description }
}

/// When each job runs next: pure, over an injected "now". Each job has a fixed delay of its own, derived from its
/// name, within `maxJitter` (so that 50 sources on `*/15` do not all start in the same second, and a job's
/// delay does not change from run to run: systemd's `RandomizedDelaySec` with `FixedRandomDelay`). A job whose
/// schedule came due while the agent was down runs once at start (`CatchUp`), never once per missed time; a job
/// that is running is not started again until it ends; a paused job stays due but is not started.
public struct Scheduler: Sendable {
    public struct Entry: Sendable, Equatable {
        public var schedule: Schedule
        /// The run time the next start stands for (what delay is measured from).
        public var scheduled: Date?
        /// When it may start: `scheduled` plus the job's delay (or now, for a catch-up or a manual run).
        public var due: Date?
        public var running = false
        public var paused = false
        public var delay: Double = 0
    }

    public private(set) var entries: [JobID: Entry] = [:]
    /// The largest delay a job gets: a tenth of its shortest interval, at most this.
    public var maxJitter: Double

    public init(maxJitter: Double = 30) { self.maxJitter = maxJitter }

    /// A job's delay: a stable fraction (FNV-1a of its name) of a tenth of its shortest gap, at most `maxJitter`.
    public static func delay(for job: JobID, schedule: Schedule, now: Date, maxJitter: Double) -> Double {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in job.description.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        let fraction = Double(h % 10_000) / 10_000
        let gap: Double
        switch schedule {
        case .every(let v): gap = v
        case .cron:
            // The first few gaps: enough to see a `*/2 * * * * *` or a daily job without scanning a year.
            let times = schedule.upcoming(4, after: now)
            gap = zip(times, times.dropFirst()).map { $1.timeIntervalSince($0) }.min() ?? 86400
        }
        return fraction * min(maxJitter, gap / 10)
    }

    /// Sets the jobs of a plan (at start, and at a reload: jobs that stay keep their state; a running job that
    /// was removed finishes and is then forgotten). `lastRun` is each job's last start, from the state database.
    public mutating func load(_ jobs: [(JobID, Schedule)], lastRun: (JobID) -> Date?, paused: (JobID) -> Bool, now: Date) {
        var next: [JobID: Entry] = [:]
        for (id, schedule) in jobs {
            let delay = Scheduler.delay(for: id, schedule: schedule, now: now, maxJitter: maxJitter)
            if var e = entries[id], e.schedule == schedule {
                e.paused = paused(id)
                next[id] = e
                continue
            }
            var e = Entry(schedule: schedule, paused: paused(id), delay: delay)
            e.running = entries[id]?.running ?? false
            let last = lastRun(id)
            if CatchUp.isDue(schedule, lastRun: last, now: now) {
                // Missed (or never run): once, now; delay measured from the time it was due.
                e.scheduled = last.flatMap { schedule.next(after: $0) } ?? now
                e.due = now
            } else {
                e.scheduled = schedule.next(after: now)
                e.due = e.scheduled.map { $0.addingTimeInterval(delay) }
            }
            next[id] = e
        }
        for (id, e) in entries where e.running && next[id] == nil {
            var gone = e
            gone.due = nil
            gone.scheduled = nil
            next[id] = gone
            removedWhileRunning.insert(id)
        }
        entries = next
    }

    /// Jobs removed from the plan while they ran: forgotten when they finish.
    var removedWhileRunning: Set<JobID> = []

    /// Jobs that may start at `now`, earliest scheduled first (not running, not paused).
    public func due(at now: Date) -> [JobID] {
        entries.filter { _, e in !e.running && !e.paused && (e.due.map { $0 <= now } ?? false) }
            .sorted { ($0.value.scheduled ?? .distantPast, $0.key) < ($1.value.scheduled ?? .distantPast, $1.key) }
            .map(\.key)
    }

    /// When the next job becomes due (nil: none ever will).
    public func nextWake(after now: Date) -> Date? {
        entries.values.filter { !$0.running && !$0.paused }.compactMap(\.due).min()
    }

    /// Marks a job started; returns how late it starts against its scheduled time (nil for a manual run).
    @discardableResult
    public mutating func start(_ job: JobID, now: Date) -> Double? {
        guard var e = entries[job] else { return nil }
        e.running = true
        let late = e.scheduled.map { max(0, now.timeIntervalSince($0)) }
        // The next run: after now (a run that took longer than its interval skips, never piles up).
        e.scheduled = e.schedule.next(after: now)
        e.due = e.scheduled.map { $0.addingTimeInterval(e.delay) }
        entries[job] = e
        return late
    }

    /// Marks a job finished.
    public mutating func finish(_ job: JobID) {
        if removedWhileRunning.remove(job) != nil { entries[job] = nil; return }
        entries[job]?.running = false
    }

    /// Makes a job due now (the API's "run now", a replication after a backup); a running job is not doubled:
    /// it runs once more after it ends.
    public mutating func runNow(_ job: JobID, now: Date) -> Bool {
        guard var e = entries[job] else { return false }
        e.due = now
        if e.scheduled == nil || e.scheduled! > now { e.scheduled = nil }
        entries[job] = e
        return true
    }

    public mutating func setPaused(_ job: JobID, _ paused: Bool) -> Bool {
        guard entries[job] != nil else { return false }
        entries[job]!.paused = paused
        return true
    }

    public func entry(_ job: JobID) -> Entry? { entries[job] }
}
