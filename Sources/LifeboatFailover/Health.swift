import Foundation

/// The health of one backend, as checks and traffic see it.
///
/// A pure state machine: it is fed check results and connection outcomes with the time they happened
/// (an injected clock), and never looks at a clock or a socket itself, so every transition is unit-tested.
/// - `fall` consecutive failed checks take an up backend down; `rise` consecutive successes bring a down
///   backend up (HAProxy's semantics).
/// - A failed connection attempt from real traffic (passive detection) takes it down at once.
/// - An operator may disable it (no traffic, checks still run) or drain it (no new connections).
public struct BackendHealth: Sendable, Equatable {
    public enum State: String, Sendable { case up, down }

    public private(set) var state: State
    public private(set) var since: Date
    public private(set) var consecutiveSuccesses = 0
    public private(set) var consecutiveFailures = 0
    public private(set) var lastCheck: CheckResult?
    public var disabled = false
    public var draining = false
    let fall: Int
    let rise: Int

    /// The outcome of one health check.
    public struct CheckResult: Sendable, Equatable {
        public var ok: Bool
        public var latency: Double
        public var detail: String
        public var at: Date
        public init(ok: Bool, latency: Double, detail: String, at: Date) {
            self.ok = ok; self.latency = latency; self.detail = detail; self.at = at
        }
    }

    /// Starts `up`, as HAProxy does, so traffic flows before the first checks complete; a dead backend
    /// is found by its first failed connection (passive) or after `fall` checks.
    public init(fall: Int, rise: Int, now: Date, initial: State = .up) {
        self.fall = max(1, fall)
        self.rise = max(1, rise)
        state = initial
        since = now
    }

    /// Whether new connections may go to this backend.
    public var acceptsTraffic: Bool { state == .up && !disabled && !draining }

    /// Records a check; returns true if the state changed.
    @discardableResult
    public mutating func record(_ r: CheckResult) -> Bool {
        lastCheck = r
        if r.ok {
            consecutiveSuccesses += 1
            consecutiveFailures = 0
            if state == .down && consecutiveSuccesses >= rise { return transition(.up, r.at) }
        } else {
            consecutiveFailures += 1
            consecutiveSuccesses = 0
            if state == .up && consecutiveFailures >= fall { return transition(.down, r.at) }
        }
        return false
    }

    /// A connection from real traffic could not be established: down at once.
    @discardableResult
    public mutating func connectionFailed(at now: Date) -> Bool {
        consecutiveSuccesses = 0
        consecutiveFailures = max(consecutiveFailures, fall)
        return state == .up ? transition(.down, now) : false
    }

    mutating func transition(_ s: State, _ at: Date) -> Bool {
        state = s
        since = at
        return true
    }
}
