import Foundation
import LifeboatFailover
import NIOCore
import Synchronization

/// The TCP proxy: one listener per pool, relayed by the `RelayLoop`s (one per core). A new client connection is
/// held (not read) until a backend accepts; if the chosen backend refuses or times out, it is marked down at once
/// and the next healthy backend is tried before any byte is forwarded, so a crashed primary costs clients nothing.
/// With no backend left, the client is closed at once.
///
/// `reload` takes a new configuration without touching established connections; `drain` stops accepting and
/// waits for the open connections to finish.
public final class ProxyServer: Sendable {
    /// The pool a listener hands new connections to, read at each accept.
    final class PoolRef: Sendable {
        let current: Mutex<PoolController>
        init(_ p: PoolController) { current = Mutex(p) }
    }

    struct State {
        var pools: [PoolController]
        var listeners: [RelayListener] = []
        /// Pools a reload removed whose connections are still open (kept for draining).
        var retired: [PoolController] = []
        var generation = 0
    }

    let state: Mutex<State>
    let log: ProxyLog

    public init(config: ProxyConfig, log: @escaping ProxyLog) {
        self.log = log
        state = Mutex(State(pools: config.pools.map { PoolController(config: $0, log: log) }))
    }

    /// The pools in force, in configuration order.
    public var pools: [PoolController] { state.withLock { $0.pools } }

    /// Changes each time a reload changes the pools (the health checker restarts on it).
    public var generation: Int { state.withLock { $0.generation } }

    /// Binds every pool's listener; returns the bound addresses in pool order.
    public func start() async throws -> [SocketAddress?] {
        var bound: [RelayListener] = []
        do {
            for pool in pools { bound.append(try RelayListener.bind(pool.config.listen, pool: PoolRef(pool))) }
        } catch {
            for l in bound { Glibc.close(l.fd) }
            throw error
        }
        for l in bound { l.start() }
        state.withLock { $0.listeners = bound }
        return bound.map(\.address)
    }

    /// What a reload changed, for the log.
    public struct ReloadSummary: Sendable, CustomStringConvertible {
        public var added: [String] = [], removed: [String] = [], kept: [String] = []
        public var description: String {
            "\(added.count) pools added\(added.isEmpty ? "" : " (\(added.joined(separator: ", ")))"), "
                + "\(removed.count) removed\(removed.isEmpty ? "" : " (\(removed.joined(separator: ", ")))"), "
                + "\(kept.count) kept"
        }
    }

    /// Takes a new configuration. Pools keep their identity by name (health, flags, connections and counters
    /// of unchanged backends are kept); listeners are bound for new addresses first, so if one cannot be bound
    /// nothing changes and the error is thrown. Established connections are never closed by a reload, even
    /// those of a removed pool or backend.
    public func reload(_ config: ProxyConfig) async throws -> ReloadSummary {
        let (oldPools, oldListeners) = state.withLock { ($0.pools, $0.listeners) }
        var summary = ReloadSummary()
        var next: [(PoolController, PoolConfig, isNew: Bool)] = []
        for pc in config.pools {
            if let p = oldPools.first(where: { $0.config.name == pc.name }) {
                next.append((p, pc, false))
                summary.kept.append(pc.name)
            } else {
                next.append((PoolController(config: pc, log: log), pc, true))
                summary.added.append(pc.name)
            }
        }
        summary.removed = oldPools.map { $0.config.name }.filter { n in !config.pools.contains { $0.name == n } }
        // 1. Bind what is new; undo on failure.
        var fresh: [RelayListener] = []
        do {
            for (p, pc, _) in next where !oldListeners.contains(where: { $0.endpoint == pc.listen }) {
                fresh.append(try RelayListener.bind(pc.listen, pool: PoolRef(p)))
            }
        } catch {
            for l in fresh { Glibc.close(l.fd) }
            throw error
        }
        for l in fresh { l.start() }
        // 2. Apply: existing pools take their new configuration, kept listeners point at their pool.
        for (p, pc, isNew) in next where !isNew { p.apply(pc) }
        var keep: [RelayListener] = []
        var close: [RelayListener] = []
        for l in oldListeners {
            if let (p, _, _) = next.first(where: { $0.1.listen == l.endpoint }) {
                l.pool.current.withLock { $0 = p }
                keep.append(l)
            } else {
                close.append(l)
            }
        }
        let removed = oldPools.filter { o in !next.contains { $0.0 === o } }
        state.withLock { s in
            s.pools = next.map { $0.0 }
            s.listeners = keep + fresh
            s.retired = (s.retired + removed).filter { $0.open.load(ordering: .relaxed) > 0 }
            s.generation += 1
        }
        // 3. Stop listening where no pool listens any more (accepted connections stay open).
        for l in close { await l.stop() }
        return summary
    }

    /// Open client connections in every pool, removed ones included.
    public var openConnections: Int {
        state.withLock { s in (s.pools + s.retired).reduce(0) { $0 + $1.open.load(ordering: .relaxed) } }
    }

    /// Stops accepting, waits up to `timeout` for open connections to finish (or `stop()` to return true), then
    /// closes what is left. Returns the number of connections closed by force.
    public func drain(timeout: Double, stop: @Sendable () -> Bool = { false }) async -> Int {
        let listeners = state.withLock { s in
            let l = s.listeners
            s.listeners = []
            return l
        }
        for l in listeners { await l.stop() }
        let deadline = Date().addingTimeInterval(timeout)
        while openConnections > 0 && Date() < deadline && !stop() {
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
        let left = openConnections
        for p in state.withLock({ $0.pools + $0.retired }) { p.closeAll() }
        return left
    }
}
