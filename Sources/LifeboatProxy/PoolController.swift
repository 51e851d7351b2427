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

/// Bytes forwarded through one backend, counted by the relay without a lock.
final class TrafficCounters: Sendable {
    /// Client to backend.
    let toBackend = Atomic<UInt64>(0)
    /// Backend to client.
    let fromBackend = Atomic<UInt64>(0)
}

/// Where a new client connection goes, decided under one lock: the backend's stable ID, its address (resolved
/// once per configuration), the connect timeout, an active fault, and its byte counters.
struct Route {
    let id: Int
    let endpoint: Endpoint
    let address: SocketAddress?
    let connectTimeout: TimeAmount
    let fault: Fault?
    let traffic: TrafficCounters
}

/// What the controller keeps per backend beside the pure pool state (by stable ID, so a reload keeps it).
struct BackendExtras {
    /// Resolved when the configuration is loaded; nil: resolve at each connect.
    var address: SocketAddress?
    var fault: Fault?
    var checkLatency = LatencyHistogram()
    var checkFailures: UInt64 = 0
    let traffic = TrafficCounters()
}

/// The live state of one pool: the pure `PoolState` and the configuration behind a lock, the open connections
/// per backend, counters, and the side effects of a switch (log, hook, closing connections to a dead backend).
///
/// Backends are known by a stable ID (`PoolMember.id`), so a configuration reload (`apply`) keeps the health,
/// flags, connections and counters of every backend whose name and address did not change.
public final class PoolController: Sendable {
    struct Live {
        var config: PoolConfig
        var state: PoolState
        var nextID: Int
        var extras: [Int: BackendExtras] = [:]
        var switches = 0
        var lastSwitch: Date?
    }
    let live: Mutex<Live>
    /// Open relayed connections per backend ID.
    let connections = Mutex<[Int: Set<RelayHandle>]>([:])
    /// Client connections accepted and not yet closed (those still connecting included), for draining.
    let open = Atomic<Int>(0)
    let accepted = Atomic<UInt64>(0)
    let refused = Atomic<UInt64>(0)
    let log: ProxyLog

    public init(config: PoolConfig, log: @escaping ProxyLog, now: Date = Date()) {
        self.log = log
        let empty = PoolState(mode: config.mode, failback: config.failback, members: [])
        var l = Live(config: config, state: empty, nextID: 0)
        _ = PoolController.take(config, PoolController.resolve(config), into: &l, now: now)
        live = Mutex(l)
    }

    /// Backend addresses, resolved (getaddrinfo may block: never under the lock).
    static func resolve(_ c: PoolConfig) -> [SocketAddress?] {
        c.backends.map { try? SocketAddress.makeAddressResolvingHost($0.address.host, port: $0.address.port) }
    }

    /// Moves `l` to configuration `c`: members carried over by name and address, and their extras with them.
    static func take(_ c: PoolConfig, _ resolved: [SocketAddress?], into l: inout Live, now: Date) -> Switch? {
        let specs = c.backends.map { PoolState.MemberSpec(key: "\($0.name) \($0.address)", name: $0.name, priority: $0.priority, weight: $0.weight) }
        let (state, sw) = l.state.reloaded(mode: c.mode, failback: c.failback, fall: c.check.fall, rise: c.check.rise,
                                           specs: specs, nextID: &l.nextID, now: now)
        var extras: [Int: BackendExtras] = [:]
        for (i, m) in state.members.enumerated() {
            var x = l.extras[m.id] ?? BackendExtras()
            x.address = resolved[i]
            extras[m.id] = x
        }
        l.config = c
        l.state = state
        l.extras = extras
        return sw
    }

    /// The configuration in force.
    public var config: PoolConfig { live.withLock { $0.config } }

    /// Takes a new configuration for this pool (same name) without touching established connections.
    public func apply(_ config: PoolConfig, now: Date = Date()) {
        let resolved = PoolController.resolve(config)
        let sw = live.withLock { PoolController.take(config, resolved, into: &$0, now: now) }
        afterChange(down: [], sw)
    }

    /// The backend for a new connection (its connection count is taken), or nil when none can serve.
    func route(excluding: Set<Int>, now: Date = Date()) -> Route? {
        live.withLock { l in
            let skip = Set(excluding.compactMap { l.state.index(id: $0) })
            guard let i = l.state.pick(excluding: skip) else { return nil }
            l.state.members[i].connections += 1
            let id = l.state.members[i].id
            if let f = l.extras[id]!.fault, f.until <= now { l.extras[id]!.fault = nil }
            let x = l.extras[id]!
            return Route(id: id, endpoint: l.config.backends[i].address, address: x.address,
                         connectTimeout: .nanoseconds(nanoseconds(max(0.05, l.config.check.timeout))),
                         fault: x.fault, traffic: x.traffic)
        }
    }

    /// The connection chosen by `route` is over (or was never made).
    func release(_ id: Int) {
        live.withLock { l in if let i = l.state.index(id: id) { l.state.members[i].connections -= 1 } }
    }

    /// Tracks a relayed connection to backend `id` (closed if the backend goes down, or at the end of a drain).
    func attach(_ id: Int, _ connection: RelayHandle) {
        connections.withLock { _ = $0[id, default: []].insert(connection) }
    }

    /// The connection is over.
    func detach(_ id: Int, _ connection: RelayHandle) {
        connections.withLock { c in
            c[id]?.remove(connection)
            if c[id]?.isEmpty == true { c[id] = nil }
        }
    }

    /// Closes every open connection (the end of a drain).
    func closeAll() {
        let all = connections.withLock { $0.values.flatMap { $0 } }
        for c in all { c.close() }
    }

    /// Real traffic could not connect to backend `id` (passive detection).
    func connectionFailed(_ id: Int, error: String, now: Date = Date()) {
        let (name, changed, sw) = live.withLock { l -> (String, Bool, Switch?) in
            guard let i = l.state.index(id: id) else { return ("", false, nil) }
            let c = l.state.members[i].health.connectionFailed(at: now)
            return (l.state.members[i].name, c, l.state.reconcile(reason: "connection to \(l.state.members[i].name) failed"))
        }
        if changed { log("pool \(config.name): backend \(name) is down (connect: \(error))") }
        afterChange(down: changed ? [id] : [], sw)
    }

    /// A health check of backend `id` finished (ignored if a reload removed the backend meanwhile).
    public func record(_ id: Int, _ result: BackendHealth.CheckResult) {
        let (name, changed, newState, sw) = live.withLock { l -> (String, Bool, BackendHealth.State, Switch?) in
            guard let i = l.state.index(id: id) else { return ("", false, .up, nil) }
            l.extras[id]?.checkLatency.observe(result.latency)
            if !result.ok { l.extras[id]?.checkFailures += 1 }
            let c = l.state.members[i].health.record(result)
            return (l.state.members[i].name, c, l.state.members[i].health.state, c ? l.state.reconcile() : nil)
        }
        if changed { log("pool \(config.name): backend \(name) is \(newState.rawValue) (\(result.detail))") }
        afterChange(down: changed && newState == .down ? [id] : [], sw)
    }

    /// Operator actions.
    public func promote(_ name: String) -> Switch? {
        let sw = live.withLock { $0.state.promote(name) }
        afterChange(down: [], sw)
        return sw
    }

    public func setFlags(_ name: String, disabled: Bool? = nil, draining: Bool? = nil) -> Bool {
        let sw: Switch?? = live.withLock { l in
            guard let i = l.state.index(of: name) else { return .none }
            if let disabled { l.state.members[i].health.disabled = disabled }
            if let draining { l.state.members[i].health.draining = draining }
            return .some(l.state.reconcile(reason: "operator"))
        }
        guard case .some(let change) = sw else { return false }
        afterChange(down: [], change)
        return true
    }

    /// A backend that went down loses its connections (clients reconnect to the new one); a switch
    /// is logged, counted and handed to the hook.
    func afterChange(down: [Int], _ sw: Switch?) {
        for id in down {
            let open = connections.withLock { $0[id].map { Array($0) } ?? [] }
            for c in open { c.close() }
        }
        guard let sw else { return }
        let config = live.withLock { l in
            l.switches += 1
            l.lastSwitch = Date()
            return l.config
        }
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
        let pool: String? = live.withLock { l in
            guard let i = l.state.index(of: name) else { return nil }
            l.extras[l.state.members[i].id]?.fault = fault
            return l.config.name
        }
        guard let pool, let id = live.withLock({ l in l.state.index(of: name).map { l.state.members[$0].id } }) else { return false }
        // Connections held by a blackhole end with it (and when it is replaced).
        for c in connections.withLock({ $0[id].map { Array($0) } ?? [] }) { c.faultChanged() }
        log("pool \(pool): fault on \(name): \(fault.map { "\($0.name) until \(iso8601($0.until))" } ?? "cleared")")
        return true
    }

    /// A consistent view of the pool for the admin API and metrics.
    public struct Status: Sendable {
        public var config: PoolConfig
        public var state: PoolState
        public var switches: Int
        public var lastSwitch: Date?
        public var accepted: UInt64
        public var refused: UInt64
        public struct Backend: Sendable {
            public var fault: Fault?
            public var checkLatency: LatencyHistogram
            public var checkFailures: UInt64
            public var bytesToBackend: UInt64
            public var bytesFromBackend: UInt64
        }
        /// Per member, in member order.
        public var backends: [Backend]
    }

    public func status(now: Date = Date()) -> Status {
        live.withLock { l in
            Status(config: l.config, state: l.state, switches: l.switches, lastSwitch: l.lastSwitch,
                   accepted: accepted.load(ordering: .relaxed), refused: refused.load(ordering: .relaxed),
                   backends: l.state.members.map { m in
                       let x = l.extras[m.id]!
                       return .init(fault: x.fault.flatMap { $0.until > now ? $0 : nil }, checkLatency: x.checkLatency,
                                    checkFailures: x.checkFailures,
                                    bytesToBackend: x.traffic.toBackend.load(ordering: .relaxed),
                                    bytesFromBackend: x.traffic.fromBackend.load(ordering: .relaxed))
                   })
        }
    }

    /// The backends to health-check now: ID, address as configured, and as resolved.
    var checkTargets: [(id: Int, endpoint: Endpoint, address: SocketAddress?)] {
        live.withLock { l in
            l.state.members.enumerated().map { i, m in
                let b = l.config.backends[i]
                let target = b.checkTarget(l.config.check)
                // A check sent elsewhere than the traffic (`check.port`, `check_address`) resolves its own address.
                return (m.id, target, target == b.address ? l.extras[m.id]!.address : nil)
            }
        }
    }
}

/// `seconds` as nanoseconds for timers, clamped to 0…1 year: a configuration built in code (the file's values are
/// range-checked when read) cannot make a conversion trap.
func nanoseconds(_ seconds: Double) -> Int64 {
    guard seconds.isFinite, seconds > 0 else { return 0 }
    return Int64(min(seconds, 365 * 86_400) * 1e9)
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
