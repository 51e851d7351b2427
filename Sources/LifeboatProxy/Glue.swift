import LifeboatFailover
import NIOCore
import Synchronization

/// Joins two channels on the same event loop: what one reads, the other writes, with back-pressure
/// (a side stops reading while its partner cannot write) and half-closes passed through.
final class GlueHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var partner: GlueHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    /// Delays what this side writes (fault injection: latency, bandwidth).
    var shaper: Shaper?
    /// Counts the bytes this side reads: as client-to-backend bytes on the client side, else backend-to-client.
    var traffic: TrafficCounters?
    var isClientSide = false

    static func matchedPair() -> (GlueHandler, GlueHandler) {
        let a = GlueHandler(), b = GlueHandler()
        a.partner = b
        b.partner = a
        return (a, b)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    /// Bytes this side holds for shaped writes that have not gone out yet. Above `shapedHighWater` the partner
    /// stops reading (as when this channel is not writable), so a fault never buffers more than about that much
    /// per direction, whatever the client sends; it reads again once the queue is back under the mark.
    private var shapedPending = 0
    static let shapedHighWater = 256 * 1024

    private func partnerWrite(_ buffer: ByteBuffer) {
        guard var shaper, let context else { self.context?.write(wrapOutboundOut(buffer), promise: nil); return }
        let n = buffer.readableBytes
        let at = shaper.delay(for: n, now: NIODeadline.now())
        self.shaper = shaper
        shapedPending += n
        context.eventLoop.scheduleTask(deadline: at) { [weak self] in
            guard let self else { return }
            self.shapedPending -= n
            guard let c = self.context else { return }
            c.writeAndFlush(self.wrapOutboundOut(buffer), promise: nil)
            if self.partnerWritable { self.partner?.partnerBecameWritable() }
        }
    }
    private func partnerFlush() { if shaper == nil { context?.flush() } }
    private func partnerWriteEOF() { afterPendingWrites { $0.close(mode: .output, promise: nil) } }
    private func partnerCloseFull() { afterPendingWrites { $0.close(promise: nil) } }

    /// Runs `body` once the shaped writes queued so far have gone out (at once without shaping).
    private func afterPendingWrites(_ body: @escaping (ChannelHandlerContext) -> Void) {
        guard let context else { return }
        guard let shaper else { body(context); return }
        context.eventLoop.scheduleTask(deadline: shaper.lastSend) { [weak self] in
            if let c = self?.context { body(c) }
        }
    }
    private func partnerBecameWritable() {
        if pendingRead {
            pendingRead = false
            context?.read()
        }
    }
    private var partnerWritable: Bool {
        (context?.channel.isWritable ?? false) && shapedPending < GlueHandler.shapedHighWater
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        if let traffic {
            let n = UInt64(buffer.readableBytes)
            if isClientSide { traffic.toBackend.add(n, ordering: .relaxed) } else { traffic.fromBackend.add(n, ordering: .relaxed) }
        }
        partner?.partnerWrite(buffer)
    }
    func channelReadComplete(context: ChannelHandlerContext) { partner?.partnerFlush() }

    func channelInactive(context: ChannelHandlerContext) {
        partner?.partnerCloseFull()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, case .inputClosed = e {
            partner?.partnerWriteEOF()
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        partner?.partnerCloseFull()
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if partnerWritable { partner?.partnerBecameWritable() }
    }

    func read(context: ChannelHandlerContext) {
        if partner?.partnerWritable ?? false {
            context.read()
        } else {
            pendingRead = true
        }
    }
}

/// When each write may go out under a latency or bandwidth fault; writes keep their order.
struct Shaper {
    let kind: Fault.Kind
    var lastSend = NIODeadline.now()

    init(kind: Fault.Kind) { self.kind = kind }

    mutating func delay(for bytes: Int, now: NIODeadline) -> NIODeadline {
        var at: NIODeadline
        switch kind {
        case .latency(let s):
            at = now + .nanoseconds(nanoseconds(s))
        case .bandwidth(let rate):
            let start = max(now, lastSend)
            at = start + .nanoseconds(nanoseconds(Double(bytes) / Double(max(1, rate))))
        case .reset, .blackhole:
            at = now
        }
        if at < lastSend { at = lastSend }
        lastSend = at
        return at
    }
}
