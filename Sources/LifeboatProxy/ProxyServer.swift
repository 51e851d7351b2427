import Foundation
import LifeboatFailover
import NIOCore
import NIOPosix
import Synchronization

/// The TCP proxy: one listener per pool. A new client connection is held (not read) until a backend
/// accepts; if the chosen backend refuses or times out, it is marked down at once and the next healthy
/// backend is tried before any byte is forwarded, so a crashed primary costs clients nothing. With no
/// backend left, the client is closed at once.
///
/// `reload` takes a new configuration without touching established connections; `drain` stops accepting and
/// waits for the open connections to finish.
public final class ProxyServer: Sendable {
    /// A bound listener and the pool its new connections go to (swapped by a reload).
    struct Listener: Sendable {
        let endpoint: Endpoint
        let channel: any Channel
        let pool: PoolRef
    }

    /// The pool a listener hands new connections to, read at each accept.
    final class PoolRef: Sendable {
        let current: Mutex<PoolController>
        init(_ p: PoolController) { current = Mutex(p) }
    }

    struct State {
        var pools: [PoolController]
        var listeners: [Listener] = []
        /// Pools a reload removed whose connections are still open (kept for draining).
        var retired: [PoolController] = []
        var generation = 0
    }

    let state: Mutex<State>
    let group: any EventLoopGroup
    let log: ProxyLog

    public init(config: ProxyConfig, log: @escaping ProxyLog, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.log = log
        self.group = group
        state = Mutex(State(pools: config.pools.map { PoolController(config: $0, log: log) }))
    }

    /// The pools in force, in configuration order.
    public var pools: [PoolController] { state.withLock { $0.pools } }

    /// Changes each time a reload changes the pools (the health checker restarts on it).
    public var generation: Int { state.withLock { $0.generation } }

    /// Binds every pool's listener; returns the bound addresses in pool order.
    public func start() async throws -> [SocketAddress?] {
        var bound: [Listener] = []
        do {
            for pool in pools { bound.append(try await bind(pool.config.listen, pool)) }
        } catch {
            for l in bound { try? await l.channel.close() }
            throw error
        }
        state.withLock { $0.listeners = bound }
        return bound.map { $0.channel.localAddress }
    }

    func bind(_ endpoint: Endpoint, _ pool: PoolController) async throws -> Listener {
        // The listener's pool is read when a connection arrives, so a reload can swap it.
        let ref = PoolRef(pool)
        let ch = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { client in
                // Connect only once the client channel is active: the initializer runs before it is
                // registered, and a backend that answers first would find it unusable. Options are set here,
                // synchronously (TCP_NODELAY is inherited from the listener): bootstrap options cost a future each.
                client.eventLoop.makeCompletedFuture {
                    let pool = ref.current.withLock { $0 }
                    try ProxyServer.relayOptions(client)
                    try client.syncOptions?.setOption(.socketOption(.so_keepalive), value: 1)
                    try client.pipeline.syncOperations.addHandler(ConnectOnActive(pool: pool))
                }
            }
            .bind(host: endpoint.host, port: endpoint.port).get()
        return Listener(endpoint: endpoint, channel: ch, pool: ref)
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
        var fresh: [Listener] = []
        do {
            for (p, pc, _) in next where !oldListeners.contains(where: { $0.endpoint == pc.listen }) {
                fresh.append(try await bind(pc.listen, p))
            }
        } catch {
            for l in fresh { try? await l.channel.close() }
            throw error
        }
        // 2. Apply: existing pools take their new configuration, kept listeners point at their pool.
        for (p, pc, isNew) in next where !isNew { p.apply(pc) }
        var keep: [Listener] = []
        var close: [Listener] = []
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
        for l in close { try? await l.channel.close() }
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
        for l in listeners { try? await l.channel.close() }
        let deadline = Date().addingTimeInterval(timeout)
        while openConnections > 0 && Date() < deadline && !stop() {
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
        let left = openConnections
        for p in state.withLock({ $0.pools + $0.retired }) { p.closeAll() }
        return left
    }

    /// Both sides of a relay: nothing is read until the partner exists (then `GlueHandler` reads when the
    /// partner can write), and half-closes are passed through.
    static func relayOptions(_ channel: any Channel) throws {
        guard let options = channel.syncOptions else { throw ChannelError.operationUnsupported }
        try options.setOption(.autoRead, value: false)
        try options.setOption(.allowRemoteHalfClosure, value: true)
    }

    static func connect(_ client: any Channel, pool: PoolController, excluded: Set<Int>) {
        guard let route = pool.route(excluding: excluded) else {
            pool.refused.add(1, ordering: .relaxed)
            client.close(promise: nil)
            return
        }
        let id = route.id
        if let fault = route.fault {
            switch fault.kind {
            case .reset:
                pool.release(id)
                // SO_LINGER 0: the close sends a reset, as a crashed or firewalled service would.
                if let s = client as? any SocketOptionProvider {
                    s.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in client.close(promise: nil) }
                } else {
                    client.close(promise: nil)
                }
                return
            case .blackhole:
                // Accepted, then nothing, until the fault ends.
                pool.attach(id, [client])
                client.eventLoop.scheduleTask(in: .nanoseconds(nanoseconds(fault.until.timeIntervalSinceNow))) {
                    client.close(promise: nil)
                }
                return
            case .latency, .bandwidth:
                break
            }
        }
        // TCP_NODELAY is a ClientBootstrap default.
        let bootstrap = ClientBootstrap(group: client.eventLoop)
            .connectTimeout(route.connectTimeout)
            .channelInitializer { backend in backend.eventLoop.makeCompletedFuture { try ProxyServer.relayOptions(backend) } }
        let connecting = route.address.map { bootstrap.connect(to: $0) }
            ?? bootstrap.connect(host: route.endpoint.host, port: route.endpoint.port)
        connecting.whenComplete { result in
            switch result {
            case .failure(let error):
                pool.release(id)
                pool.connectionFailed(id, error: "\(error)")
                connect(client, pool: pool, excluded: excluded.union([id]))
            case .success(let backend):
                guard client.isActive else {
                    pool.release(id)
                    backend.close(promise: nil)
                    client.close(promise: nil)
                    return
                }
                let (a, b) = GlueHandler.matchedPair()
                if let fault = route.fault {
                    a.shaper = Shaper(kind: fault.kind)
                    b.shaper = Shaper(kind: fault.kind)
                }
                a.traffic = route.traffic
                a.isClientSide = true
                b.traffic = route.traffic
                pool.attach(id, [client, backend])
                pool.accepted.add(1, ordering: .relaxed)
                do {
                    try client.pipeline.syncOperations.addHandler(a)
                    try backend.pipeline.syncOperations.addHandler(b)
                } catch {
                    client.close(promise: nil)
                    backend.close(promise: nil)
                    return
                }
                // What the client sent (and its end of input) before the relay existed goes to the backend first.
                (try? client.pipeline.syncOperations.handler(type: ConnectOnActive.self))?.handOver()
                // From now on each side reads whenever its partner can take the bytes (GlueHandler.read).
                try? client.syncOptions?.setOption(.autoRead, value: true)
                try? backend.syncOptions?.setOption(.autoRead, value: true)
            }
        }
    }
}

/// Starts the backend connection when the client connection becomes active, holds what the client sends until
/// the relay is in place, then hands it over and steps aside.
///
/// Holding matters although the client channel does not read (autoRead is off): a client that sends its request
/// and half-closes (or closes) before the backend accepts makes epoll report the end of input, and NIO then
/// reads everything up to it at once, reads or not. Those bytes and the end of input used to reach the end of the
/// pipeline before the relay existed and were lost: the backend never got the request, the client never got an
/// answer, and the client's socket stayed in CLOSE-WAIT until a drain. They are now replayed into the relay.
final class ConnectOnActive: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    let pool: PoolController
    private var context: ChannelHandlerContext?
    private var held: [ByteBuffer] = []
    private var inputClosed = false

    init(pool: PoolController) { self.pool = pool }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        let pool = self.pool
        pool.open.add(1, ordering: .relaxed)
        channel.closeFuture.whenComplete { _ in pool.open.subtract(1, ordering: .relaxed) }
        context.fireChannelActive()
        ProxyServer.connect(channel, pool: pool, excluded: [])
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        held.append(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {}

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, case .inputClosed = e {
            inputClosed = true
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    /// The relay's handler is in the pipeline after this one: pass on what was held, then leave.
    func handOver() {
        guard let context else { return }
        let bytes = held
        held = []
        for b in bytes { context.fireChannelRead(wrapInboundOut(b)) }
        if !bytes.isEmpty { context.fireChannelReadComplete() }
        if inputClosed { context.fireUserInboundEventTriggered(ChannelEvent.inputClosed) }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

@available(*, unavailable)
extension ConnectOnActive: Sendable {}
