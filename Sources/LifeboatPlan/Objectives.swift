import Foundation

/// Runs missed while the agent was down: one catch-up run at start for a source whose schedule came due since
/// its last run (systemd's `Persistent=true`), not one per missed time.
public enum CatchUp {
    /// Whether a job last run at `lastRun` (nil: never) is due at `now`.
    public static func isDue(_ schedule: Schedule, lastRun: Date?, now: Date) -> Bool {
        guard let lastRun else { return true }
        guard let next = schedule.next(after: lastRun) else { return false }
        return next <= now
    }
}

/// The recovery point of one source at one site, against its objective: the age of the newest snapshot there.
/// A breach alerts once when it starts and once when it clears (`RPOWatch.observe`), however often it is checked.
public struct RPOWatch: Sendable, Equatable {
    public enum Transition: Sendable, Equatable {
        /// The age passed the objective (the newest snapshot's time, nil when the site has none).
        case breached(age: Double?, objective: Double)
        case cleared(age: Double, objective: Double)
    }

    public let objective: Double
    public private(set) var breached = false

    public init(objective: Double, breached: Bool = false) { self.objective = objective; self.breached = breached }

    /// The current RPO: seconds since the newest snapshot (nil when there is none: infinitely old).
    public static func age(newest: Date?, now: Date) -> Double? {
        newest.map { max(0, now.timeIntervalSince($0)) }
    }

    /// Judges the newest snapshot at `now`; returns the transition to alert on, if this observation makes one.
    public mutating func observe(newest: Date?, now: Date) -> Transition? {
        let age = RPOWatch.age(newest: newest, now: now)
        let over = age.map { $0 > objective } ?? true
        defer { breached = over }
        switch (breached, over) {
        case (false, true): return .breached(age: age, objective: objective)
        case (true, false): return .cleared(age: age ?? 0, objective: objective)
        default: return nil
        }
    }
}
