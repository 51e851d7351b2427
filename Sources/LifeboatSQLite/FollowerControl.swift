import Foundation
import LifeboatCore
import Synchronization

/// How a running follower is watched and driven from outside (the agent): when everything committed was last
/// stored, snapshots asked for, a stop.
public final class FollowerControl: Sendable {
    struct State {
        var syncedAt: Date?
        var stop = false
        var requested = 0
        var completed = 0
        var result: Result<ID, LifeboatError>?
        var lastError: String?
        var running = false
    }
    let state = Mutex(State())
    public init() {}

    /// Every transaction committed before this time is stored (nil: not yet).
    public var syncedAt: Date? { state.withLock { $0.syncedAt } }
    public var lastError: String? { state.withLock { $0.lastError } }
    public var isRunning: Bool { state.withLock { $0.running } }
    public var stopRequested: Bool { state.withLock { $0.stop } }

    public func requestStop() { state.withLock { $0.stop = true } }

    func synced(_ t: Date) { state.withLock { s in s.syncedAt = max(s.syncedAt ?? t, t); s.lastError = nil } }
    func failed(_ why: String) { state.withLock { $0.lastError = why } }
    func setRunning(_ on: Bool) { state.withLock { $0.running = on } }

    var snapshotWanted: Bool { state.withLock { $0.requested > $0.completed } }
    func snapshotDone(_ r: Result<ID, LifeboatError>) {
        state.withLock { s in s.completed = s.requested; s.result = r }
    }

    /// Asks the follower for a snapshot and waits until it is stored (or `timeout` seconds pass).
    public func snapshot(timeout: Double) async throws -> ID {
        let ticket = state.withLock { s -> Int in s.requested += 1; return s.requested }
        let deadline = ContinuousClock.now + .milliseconds(Int64(timeout * 1000))
        while ContinuousClock.now < deadline {
            let (done, result, running) = state.withLock { ($0.completed >= ticket, $0.result, $0.running) }
            if done, let result { return try result.get() }
            if !running, let why = lastError { throw LifeboatError(.io, "the follower is not running: \(why)") }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw LifeboatError(.io, "the follower did not store a snapshot within \(Int(timeout)) s\(lastError.map { ": \($0)" } ?? "")")
    }
}
