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
    public private(set) var fall: Int
    public private(set) var rise: Int

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

    /// New `fall`/`rise` thresholds (a configuration reload); the state and counts are kept.
    public mutating func setThresholds(fall: Int, rise: Int) {
        self.fall = max(1, fall)
        self.rise = max(1, rise)
    }

    mutating func transition(_ s: State, _ at: Date) -> Bool {
        state = s
        since = at
        return true
    }
}

/// A Prometheus-style histogram of durations (health-check latency): cumulative bucket counts, sum, count.
public struct LatencyHistogram: Sendable, Equatable {
    /// Upper bounds in seconds, ascending; `+Inf` is implied.
    public let bounds: [Double]
    /// Observations at or below each bound (not cumulative); the last slot is above every bound.
    public private(set) var counts: [UInt64]
    public private(set) var sum = 0.0
    public private(set) var count: UInt64 = 0

    public static let defaultBounds = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

    public init(bounds: [Double] = LatencyHistogram.defaultBounds) {
        self.bounds = bounds
        counts = Array(repeating: 0, count: bounds.count + 1)
    }

    public mutating func observe(_ seconds: Double) {
        let i = bounds.firstIndex { seconds <= $0 } ?? bounds.count
        counts[i] += 1
        sum += seconds
        count += 1
    }

    /// (upper bound, observations at or below it) for each bound, then (+Inf, count): Prometheus's `le` buckets.
    public var cumulative: [(le: Double, count: UInt64)] {
        var running: UInt64 = 0
        return counts.enumerated().map { i, c in
            running += c
            return (i < bounds.count ? bounds[i] : .infinity, running)
        }
    }
}
