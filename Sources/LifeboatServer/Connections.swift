import Glibc
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTPTypes
import Synchronization

/// Bounds on what one client connection may hold of the server: time and a share of the descriptors.
public struct ConnectionLimits: Sendable, Equatable {
    /// A connection with no request in progress, or whose request makes no progress (no byte read, none
    /// written), is closed after this many seconds.
    public var idleTimeout: Double = 60
    /// A request's line and headers must be complete this many seconds after its first byte; otherwise the
    /// client gets 408 and the connection is closed (a client that sends half a request line and stalls).
    public var headerTimeout: Double = 10
    /// Connections served at once. One more is answered 503 and closed at once, so the server never runs out of
    /// descriptors (which would make accept fail over and over) and the client knows why.
    public var maxConnections: Int = 1000

    public init() {}

    /// Valid ranges, checked by `validate()`.
    public static let idleRange = 0.05...86_400.0
    public static let headerRange = 0.05...3_600.0
    public static let connectionRange = 1...1_000_000

    /// Throws a `ServeError` naming the option that is out of range.
    public func validate() throws {
        guard idleTimeout.isFinite, ConnectionLimits.idleRange.contains(idleTimeout) else {
            throw ServeError("--idle-timeout \(idleTimeout) is out of range: give 0.05 to 86400 seconds")
        }
        guard headerTimeout.isFinite, ConnectionLimits.headerRange.contains(headerTimeout) else {
            throw ServeError("--header-timeout \(headerTimeout) is out of range: give 0.05 to 3600 seconds")
        }
        guard ConnectionLimits.connectionRange.contains(maxConnections) else {
            throw ServeError("--max-connections \(maxConnections) is out of range: give 1 to 1000000")
        }
    }

    /// `maxConnections`, lowered to what the descriptor limit allows: each connection may hold a socket and an
    /// open object file, and some descriptors stay for the listener, the log and the htpasswd file.
    public func effectiveMaxConnections(descriptorLimit: Int) -> Int {
        max(1, min(maxConnections, (descriptorLimit - 64) / 2))
    }
}

/// Counts open connections against a cap (shared by every event loop).
final class ConnectionCounter: Sendable {
    let open = Atomic<Int>(0)
    let limit: Int
    init(limit: Int) { self.limit = limit }

    /// Takes a place if one is free.
    func admit() -> Bool {
        if open.add(1, ordering: .relaxed).newValue <= limit { return true }
        open.subtract(1, ordering: .relaxed)
        return false
    }
    func leave() { open.subtract(1, ordering: .relaxed) }
}

/// HTTP/1.1 with the limits of `ConnectionLimits`, around Hummingbird's `HTTP1Channel`: a connection over the cap
/// is answered 503 and closed, the others get `ConnectionDeadlineHandler` in front of the HTTP decoder and
/// `RequestBoundaryHandler` behind it.
struct LimitedHTTP1Channel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value
    let base: HTTP1Channel
    let limits: ConnectionLimits
    let counter: ConnectionCounter

    static func builder(limits: ConnectionLimits, counter: ConnectionCounter) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in
            LimitedHTTP1Channel(
                base: HTTP1Channel(responder: responder,
                                   configuration: .init(additionalChannelHandlers: [RequestBoundaryHandler()])),
                limits: limits, counter: counter)
        }
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let admitted = counter.admit()
        if admitted {
            let counter = self.counter
            channel.closeFuture.whenComplete { _ in counter.leave() }
        }
        do {
            // Appended after TLS (when the server speaks TLS), before the HTTP handlers that base.setup adds.
            if admitted {
                try channel.pipeline.syncOperations.addHandler(ConnectionDeadlineHandler(limits))
            } else {
                try channel.pipeline.syncOperations.addHandler(RefuseConnectionHandler(limit: counter.limit,
                                                                                        within: limits.headerTimeout))
            }
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
        return base.setup(channel: channel, logger: logger)
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

/// Told by `RequestBoundaryHandler` to `ConnectionDeadlineHandler` (an outbound user event).
enum RequestBoundary: Sendable {
    /// A request's head was decoded.
    case headReceived
    /// A response's end was written.
    case responseEnded
}

/// Sits behind the HTTP decoder and tells the connection's deadline handler where requests begin and end.
final class RequestBoundaryHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head = unwrapInboundIn(data) {
            context.triggerUserOutboundEvent(RequestBoundary.headReceived, promise: nil)
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let isEnd: Bool
        if case .end = unwrapOutboundIn(data) { isEnd = true } else { isEnd = false }
        context.write(data, promise: promise)
        if isEnd { context.triggerUserOutboundEvent(RequestBoundary.responseEnded, promise: nil) }
    }
}

@available(*, unavailable)
extension RequestBoundaryHandler: Sendable {}

/// Closes a connection that holds the server without progress, on raw bytes (after TLS, before HTTP):
/// - between requests, after `idleTimeout` without a byte;
/// - from the first byte of a request until its head is decoded, after `headerTimeout` (answered 408);
/// - during a request, after `idleTimeout` in which no byte was read and no write completed.
final class ConnectionDeadlineHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = Any
    typealias OutboundOut = Any

    enum Phase: Equatable {
        /// No request in progress and no byte of the next one.
        case idle
        /// Bytes of a request arrived at `since`; its head is not complete.
        case head(since: NIODeadline)
        /// Requests whose head was decoded and whose response has not ended.
        case request
    }

    let idle: TimeAmount
    let header: TimeAmount
    var phase = Phase.idle
    var heads = 0
    var ends = 0
    var lastProgress = NIODeadline.now()
    var timer: Scheduled<Void>?
    var timerAt: NIODeadline?

    init(_ limits: ConnectionLimits) {
        idle = .nanoseconds(Int64(limits.idleTimeout * 1e9))
        header = .nanoseconds(Int64(limits.headerTimeout * 1e9))
    }

    var deadline: NIODeadline {
        switch phase {
        case .idle, .request: return lastProgress + idle
        case .head(let since): return since + header
        }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        lastProgress = .now()
        arm(context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    /// Makes sure a check runs no later than the current deadline.
    func arm(_ context: ChannelHandlerContext) {
        let at = deadline
        if let t = timerAt, t <= at, timer != nil { return }
        timer?.cancel()
        timerAt = at
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: at) { [self] in
            self.timer = nil
            self.timerAt = nil
            self.expire(context)
        }
    }

    func expire(_ context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        if NIODeadline.now() < deadline {
            arm(context)
            return
        }
        if case .head = phase {
            let body = "the request's line and headers did not arrive in time\n"
            var b = context.channel.allocator.buffer(capacity: 160)
            b.writeString("HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain\r\n"
                          + "Content-Length: \(body.utf8.count)\r\n\r\n\(body)")
            context.writeAndFlush(NIOAny(b)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            // A client that reads nothing does not keep the connection either.
            context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(1)) { context.close(promise: nil) }
        } else {
            context.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let n = unwrapInboundIn(data).readableBytes
        if n > 0 {
            lastProgress = .now()
            if phase == .idle {
                phase = .head(since: lastProgress)
                arm(context)
            }
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let done = promise ?? context.eventLoop.makePromise()
        done.futureResult.assumeIsolated().whenSuccess { self.lastProgress = .now() }
        context.write(data, promise: done)
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard let boundary = event as? RequestBoundary else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        switch boundary {
        case .headReceived: heads += 1
        case .responseEnded: ends += 1
        }
        lastProgress = .now()
        phase = heads > ends ? .request : .idle
        arm(context)
        promise?.succeed(())
    }
}

@available(*, unavailable)
extension ConnectionDeadlineHandler: Sendable {}

/// Answers a connection over the cap with 503 and closes it (after TLS when the server speaks TLS, so the
/// answer is readable; a client that never completes the handshake is closed after `within` seconds).
final class RefuseConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    let limit: Int
    let within: TimeAmount
    init(limit: Int, within: Double) {
        self.limit = limit
        self.within = .nanoseconds(Int64(within * 1e9))
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        let body = "the server is serving its maximum of \(limit) connections: try again later\n"
        var b = context.channel.allocator.buffer(capacity: 200)
        b.writeString("HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
                      + "Content-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
        context.writeAndFlush(NIOAny(b)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        context.eventLoop.assumeIsolated().scheduleTask(in: within) { context.close(promise: nil) }
    }

    /// What the client sends is dropped: no request of a refused connection reaches the server.
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}

@available(*, unavailable)
extension RefuseConnectionHandler: Sendable {}
