import Foundation
import LifeboatFailover
import NIOCore
import NIOPosix

/// The TCP proxy: one listener per pool. A new client connection is held (not read) until a backend
/// accepts; if the chosen backend refuses or times out, it is marked down at once and the next healthy
/// backend is tried before any byte is forwarded, so a crashed primary costs clients nothing. With no
/// backend left, the client is closed at once.
public final class ProxyServer: Sendable {
    public let pools: [PoolController]
    let group: any EventLoopGroup
    let log: ProxyLog

    public init(config: ProxyConfig, log: @escaping ProxyLog, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.log = log
        self.group = group
        pools = config.pools.map { PoolController(config: $0, log: log) }
    }

    /// Binds every pool's listener; returns the bound addresses in pool order.
    public func start() async throws -> [any Channel] {
        var channels: [any Channel] = []
        for pool in pools {
            let ch = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 1024)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.so_keepalive), value: 1)
                .childChannelOption(.autoRead, value: false)
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                .childChannelInitializer { client in
                    // Connect only once the client channel is active: the initializer runs before it is
                    // registered, and a backend that answers first would find it unusable.
                    client.eventLoop.makeCompletedFuture {
                        try client.pipeline.syncOperations.addHandler(ConnectOnActive(pool: pool))
                    }
                }
                .bind(host: pool.config.listen.host, port: pool.config.listen.port).get()
            channels.append(ch)
        }
        return channels
    }

    static func connect(_ client: any Channel, pool: PoolController, excluded: Set<Int>) {
        guard let i = pool.pick(excluding: excluded) else {
            pool.counters.withLock { $0.refused += 1 }
            client.close(promise: nil)
            return
        }
        let fault = pool.fault(i)
        if let fault {
            switch fault.kind {
            case .reset:
                pool.release(i)
                // SO_LINGER 0: the close sends a reset, as a crashed or firewalled service would.
                if let s = client as? any SocketOptionProvider {
                    s.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in client.close(promise: nil) }
                } else {
                    client.close(promise: nil)
                }
                return
            case .blackhole:
                // Accepted, then nothing, until the fault ends.
                client.eventLoop.scheduleTask(in: .milliseconds(Int64(max(0, fault.until.timeIntervalSinceNow) * 1000))) {
                    pool.release(i)
                    client.close(promise: nil)
                }
                return
            case .latency, .bandwidth:
                break
            }
        }
        let shaping = fault?.kind
        let target = pool.config.backends[i].address
        let timeout = TimeAmount.milliseconds(Int64(max(0.05, pool.config.check.timeout) * 1000))
        ClientBootstrap(group: client.eventLoop)
            .connectTimeout(timeout)
            .channelOption(.autoRead, value: false)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(host: target.host, port: target.port)
            .whenComplete { result in
                switch result {
                case .failure(let error):
                    pool.release(i)
                    pool.connectionFailed(i, error: "\(error)")
                    connect(client, pool: pool, excluded: excluded.union([i]))
                case .success(let backend):
                    guard client.isActive else {
                        pool.release(i)
                        backend.close(promise: nil)
                        client.close(promise: nil)
                        return
                    }
                    let (a, b) = GlueHandler.matchedPair()
                    if let shaping {
                        a.shaper = Shaper(kind: shaping)
                        b.shaper = Shaper(kind: shaping)
                    }
                    let channels: [any Channel] = [client, backend]
                    pool.register(i, channels)
                    pool.counters.withLock { $0.accepted += 1 }
                    a.onClose = {
                        pool.release(i)
                        pool.unregister(i, channels)
                    }
                    do {
                        try client.pipeline.syncOperations.addHandler(a)
                        try backend.pipeline.syncOperations.addHandler(b)
                    } catch {
                        client.close(promise: nil)
                        backend.close(promise: nil)
                        return
                    }
                    // From now on each side reads whenever its partner can take the bytes (GlueHandler.read).
                    _ = client.setOption(.autoRead, value: true)
                    _ = backend.setOption(.autoRead, value: true)
                }
            }
    }
}

/// Starts the backend connection when the client connection becomes active, then steps aside.
final class ConnectOnActive: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    let pool: PoolController
    init(pool: PoolController) { self.pool = pool }

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        ProxyServer.connect(channel, pool: pool, excluded: [])
    }
}
