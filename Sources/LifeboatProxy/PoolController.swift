import Foundation
import LifeboatFailover
import NIOCore
import Synchronization

/// What the proxy logs: one line per event (switches, state changes, hook results).
public typealias ProxyLog = @Sendable (String) -> Void

/// A fault injected into a backend's new connections for drills, always bounded in time.
public struct Fault: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// Each forwarded chunk is delayed by this many seconds.
        case latency(Double)
        /// Forwarding is limited to this many bytes per second in each direction.
        case bandwidth(Int)
        /// New connections are reset at once.
        case reset
        /// New connections are accepted and then get nothing (until the fault ends).
        case blackhole
    }
    public var kind: Kind
    public var until: Date
    public init(kind: Kind, until: Date) { self.kind = kind; self.until = until }

    public var name: String {
        switch kind {
        case .latency(let s): return "latency \(Int(s * 1000)) ms"
        case .bandwidth(let b): return "bandwidth \(b) B/s"
        case .reset: return "reset"
        case .blackhole: return "blackhole"
        }
    }
}

/// The live state of one pool: the pure `PoolState` behind a lock, the open connections per backend,
/// counters, and the side effects of a switch (log, hook, closing connections to a dead backend).
public final class PoolController: Sendable {
    public let config: PoolConfig
    let state: Mutex<PoolState>
    let connections = Mutex<[Int: [ObjectIdentifier: any Channel]]>([:])
    let counters = Mutex<Counters>(Counters())
    let log: ProxyLog
    let faults = Mutex<[Int: Fault]>([:])

    struct Counters {
        var switches = 0
        var lastSwitch: Date?
        var accepted = 0
        var refused = 0
        var bytes: [Int: (in: UInt64, out: UInt64)] = [:]
    }

    public init(config: PoolConfig, log: @escaping ProxyLog, now: Date = Date()) {
        self.config = config
        self.log = log
        let members = config.backends.map {
            PoolMember(name: $0.name, priority: $0.priority, weight: $0.weight,
                       health: BackendHealth(fall: config.check.fall, rise: config.check.rise, now: now))
        }
        state = Mutex(PoolState(mode: config.mode, failback: config.failback, members: members))
    }

    /// The backend for a new connection (its connection count is taken), or nil when none can serve.
    func pick(excluding: Set<Int>) -> Int? {
        state.withLock { s in
            guard let i = s.pick(excluding: excluding) else { return nil }
            s.members[i].connections += 1
            return i
        }
    }

    func release(_ i: Int) { state.withLock { $0.members[i].connections -= 1 } }

    func register(_ i: Int, _ channels: [any Channel]) {
        connections.withLock { c in for ch in channels { c[i, default: [:]][ObjectIdentifier(ch)] = ch } }
    }

    func unregister(_ i: Int, _ channels: [any Channel]) {
        connections.withLock { c in for ch in channels { c[i]?[ObjectIdentifier(ch)] = nil } }
    }

    /// Real traffic could not connect to backend `i` (passive detection).
    func connectionFailed(_ i: Int, error: String, now: Date = Date()) {
        let (changed, sw) = state.withLock { s -> (Bool, Switch?) in
            let c = s.members[i].health.connectionFailed(at: now)
            return (c, s.reconcile(reason: "connection to \(s.members[i].name) failed"))
        }
        if changed { log("pool \(config.name): backend \(config.backends[i].name) is down (connect: \(error))") }
        afterChange(down: changed ? [i] : [], sw)
    }

    /// A health check of backend `i` finished.
    public func record(_ i: Int, _ result: BackendHealth.CheckResult) {
        let (changed, newState, sw) = state.withLock { s -> (Bool, BackendHealth.State, Switch?) in
            let c = s.members[i].health.record(result)
            return (c, s.members[i].health.state, c ? s.reconcile() : nil)
        }
        if changed {
            log("pool \(config.name): backend \(config.backends[i].name) is \(newState.rawValue) (\(result.detail))")
        }
        afterChange(down: changed && newState == .down ? [i] : [], sw)
    }

    /// Operator actions.
    public func promote(_ name: String) -> Switch? {
        let sw = state.withLock { $0.promote(name) }
        afterChange(down: [], sw)
        return sw
    }

    public func setFlags(_ name: String, disabled: Bool? = nil, draining: Bool? = nil) -> Bool {
        let sw: Switch?? = state.withLock { s in
            guard let i = s.index(of: name) else { return .none }
            if let disabled { s.members[i].health.disabled = disabled }
            if let draining { s.members[i].health.draining = draining }
            return .some(s.reconcile(reason: "operator"))
        }
        guard case .some(let change) = sw else { return false }
        afterChange(down: [], change)
        return true
    }

    /// A backend that went down loses its connections (clients reconnect to the new one); a switch
    /// is logged, counted and handed to the hook.
    func afterChange(down: [Int], _ sw: Switch?) {
        for i in down {
            let open = connections.withLock { $0[i].map { Array($0.values) } ?? [] }
            for ch in open { ch.close(promise: nil) }
        }
        guard let sw else { return }
        counters.withLock { $0.switches += 1; $0.lastSwitch = Date() }
        log("pool \(config.name): switch \(sw.old ?? "none") -> \(sw.new ?? "none") (\(sw.reason))")
        if let hook = config.onSwitch, sw.new != nil {
            let args = hook.map {
                $0.replacingOccurrences(of: "{new}", with: sw.new ?? "").replacingOccurrences(of: "{old}", with: sw.old ?? "")
                    .replacingOccurrences(of: "{pool}", with: config.name)
            }
            let timeout = config.hookTimeout
            let log = self.log
            let pool = config.name
            Task.detached { await runHook(args, timeout: timeout, pool: pool, log: log) }
        }
    }

    /// Injects a fault into backend `name`'s new connections until it expires; nil clears it.
    public func setFault(_ name: String, _ fault: Fault?) -> Bool {
        guard let i = config.backends.firstIndex(where: { $0.name == name }) else { return false }
        faults.withLock { $0[i] = fault }
        log("pool \(config.name): fault on \(name): \(fault.map { "\($0.name) until \(iso8601($0.until))" } ?? "cleared")")
        return true
    }

    /// The fault active on backend `i` now, if any.
    public func fault(_ i: Int, now: Date = Date()) -> Fault? {
        faults.withLock { f in
            guard let x = f[i] else { return nil }
            if x.until <= now { f[i] = nil; return nil }
            return x
        }
    }

    public var snapshot: PoolState { state.withLock { $0 } }
    public var switches: (count: Int, last: Date?) { counters.withLock { ($0.switches, $0.lastSwitch) } }
}

/// How a command run with a time limit ended.
enum CommandOutcome: Equatable {
    case exited(Int32)
    case timedOut
    case cannotStart(String)
}

/// Runs `argv` (no shell, no input or output) and SIGKILLs it, with its children, if it outlives `timeout`.
func runCommand(_ argv: [String], timeout: Double) async -> CommandOutcome {
    guard let exe = argv.first else { return .cannotStart("empty command") }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: exe)
    p.arguments = Array(argv.dropFirst())
    p.standardInput = FileHandle.nullDevice
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    do { try p.run() } catch { return .cannotStart("\(error)") }
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning && Date() < deadline { try? await Task.sleep(nanoseconds: 5_000_000) }
    if p.isRunning {
        // The whole process group: a shell script's children (`sleep`…) would otherwise outlive it and
        // keep `waitUntilExit` waiting. Process starts each command as the leader of its own group.
        let pid = p.processIdentifier
        kill(getpgid(pid) == pid ? -pid : pid, SIGKILL)
        p.waitUntilExit()
        return .timedOut
    }
    return .exited(p.terminationStatus)
}

/// Runs a hook command with a timeout and logs how it ended.
func runHook(_ argv: [String], timeout: Double, pool: String, log: ProxyLog) async {
    let command = argv.joined(separator: " ")
    switch await runCommand(argv, timeout: timeout) {
    case .exited(let status): log("pool \(pool): hook \(command) exited \(status)")
    case .timedOut: log("pool \(pool): hook \(command) killed after \(timeout) s")
    case .cannotStart(let why): log("pool \(pool): hook \(command) could not start: \(why)")
    }
}
