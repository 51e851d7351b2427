import CLifeboatSys
import Foundation
import LifeboatCore
import LifeboatFailover
import LifeboatHTTP
import NIOCore
import Synchronization

/// A relayed connection as other threads know it: its loop and its number there. `close()` asks the loop to close
/// it (a backend that went down, the end of a drain).
struct RelayHandle: Hashable, Sendable {
    let loop: Int
    let id: Int

    func close() {
        guard loop >= 0, loop < RelayLoop.all.count else { return }
        let id = self.id
        RelayLoop.all[loop].execute { $0.connections[id]?.close() }
    }

    /// The fault on its backend changed or ended (a connection held by a blackhole is let go).
    func faultChanged() {
        guard loop >= 0, loop < RelayLoop.all.count else { return }
        let id = self.id
        RelayLoop.all[loop].execute { $0.connections[id]?.faultChanged() }
    }
}

/// Why a listener could not be opened, in plain words.
struct ListenError: Error, CustomStringConvertible {
    let description: String
}

/// A listening socket, accepted on by every relay loop (EPOLLEXCLUSIVE wakes one loop per connection, which keeps
/// it: no hand-over between threads). Its pool is read at each accept, so a reload can swap it.
final class RelayListener: Sendable {
    let fd: Int32
    let endpoint: Endpoint
    /// The bound address (the port filled in when 0 was asked for).
    let address: SocketAddress?
    let pool: ProxyServer.PoolRef
    private let stopped = Atomic<Bool>(false)
    private let holders = Atomic<Int>(0)

    private init(fd: Int32, endpoint: Endpoint, address: SocketAddress?, pool: ProxyServer.PoolRef) {
        self.fd = fd
        self.endpoint = endpoint
        self.address = address
        self.pool = pool
    }

    /// Binds and listens (SO_REUSEADDR, backlog 1024; accepted sockets inherit TCP_NODELAY and SO_KEEPALIVE).
    static func bind(_ endpoint: Endpoint, pool: ProxyServer.PoolRef) throws -> RelayListener {
        guard RelayLoop.all.allSatisfy(\.usable) else {
            throw ListenError(description: "the proxy's event loops could not start (out of file descriptors?)")
        }
        let addr: SocketAddress
        do { addr = try SocketAddress.makeAddressResolvingHost(endpoint.host, port: endpoint.port) } catch {
            throw ListenError(description: "\(endpoint): cannot resolve \(endpoint.host)")
        }
        let fd = socket(Int32(addr.protocol.rawValue), Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ListenError(description: "\(endpoint): socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, 4)
        _ = setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, 4)
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, 4)
        let bound = addr.withSockAddr { Glibc.bind(fd, $0, socklen_t($1)) }
        if bound != 0 || listen(fd, 1024) != 0 {
            let e = errno
            Glibc.close(fd)
            throw ListenError(description: "\(endpoint): \(String(cString: strerror(e)))")
        }
        // The address as resolved, with the port the kernel chose when 0 was asked for (sin_port and sin6_port
        // sit at the same offset).
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } } == 0
        let port = named ? Int(UInt16(bigEndian: withUnsafeBytes(of: storage) { $0.load(fromByteOffset: 2, as: UInt16.self) })) : nil
        let local = port.flatMap { p in addr.ipAddress.flatMap { try? SocketAddress(ipAddress: $0, port: p) } }
        return RelayListener(fd: fd, endpoint: endpoint, address: local, pool: pool)
    }

    /// Starts accepting on every loop.
    func start() {
        for loop in RelayLoop.all {
            holders.add(1, ordering: .relaxed)
            loop.execute { [self] loop in
                guard !stopped.load(ordering: .relaxed) else { return }
                loop.register(fd, events: EPOLLIN.rawValue | EPOLLEXCLUSIVE.rawValue, owner: .listener(self))
            }
        }
    }

    /// Stops accepting; returns once every loop has let go and the socket is closed (the port is free again).
    /// Accepted connections stay open.
    func stop() async {
        stopped.store(true, ordering: .relaxed)
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            for loop in RelayLoop.all {
                loop.execute { [self] loop in
                    loop.unregister(fd, remove: true)
                    if holders.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
                        Glibc.close(fd)
                        done.resume()
                    }
                }
            }
        }
    }

    /// Accepts what is waiting (at most 64 at a time: the listener is level-triggered, the rest wakes us again).
    func acceptAll(on loop: RelayLoop) {
        for _ in 0..<64 {
            let c = lb_accept4(fd)
            if c < 0 {
                switch errno {
                case EAGAIN, EWOULDBLOCK: return
                case EINTR, ECONNABORTED, EPROTO: continue
                case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                    // Out of descriptors or memory: stop accepting on this loop for 100 ms rather than spin on a
                    // listener that stays readable. Waiting clients stay in the backlog.
                    loop.unregister(fd, remove: true)
                    loop.schedule(at: monotonicNanoseconds() + 100_000_000) { [self] in
                        guard !stopped.load(ordering: .relaxed) else { return }
                        loop.register(fd, events: EPOLLIN.rawValue | EPOLLEXCLUSIVE.rawValue, owner: .listener(self))
                    }
                    return
                default: return
                }
            }
            let pool = self.pool.current.withLock { $0 }
            // A client and its backend take two sockets: past the budget, the client is turned away at once.
            if RelayLoop.sockets.load(ordering: .relaxed) + 2 > RelayLoop.socketBudget {
                Glibc.close(c)
                pool.refused.add(1, ordering: .relaxed)
                let now = monotonicNanoseconds()
                if now &- loop.lastBudgetLog >= 60_000_000_000 || loop.lastBudgetLog == 0 {
                    loop.lastBudgetLog = now
                    pool.log("pool \(pool.config.name): new connections refused: the relay holds \(RelayLoop.sockets.load(ordering: .relaxed)) sockets, its limit (the descriptor limit less a reserve; raise it with LimitNOFILE= or ulimit -n)")
                }
                continue
            }
            RelayConnection.start(client: c, pool: pool, loop: loop)
        }
    }
}

/// One direction of a relay: what is read from its source and written to its destination.
struct RelayDirection {
    /// Readiness as epoll last reported it (edge-triggered: remembered until a read or write says otherwise).
    var srcReadable = false
    var dstWritable = false
    /// The source reported a hang-up: read to the end rather than trust a short read.
    var srcHungUp = false
    /// Bytes read and not yet written (a partial write), from `offset`.
    var pending: [UInt8] = []
    var offset = 0
    /// The source's end of input was read.
    var eof = false
    var shutdownSent = false
    /// Shaped chunks waiting for their time (fault injection), from `head`; their times never decrease.
    var shaper: Shaper?
    var shaped: [(at: UInt64, bytes: [UInt8])] = []
    var head = 0
    var shapedBytes = 0

    var pendingCount: Int { pending.count - offset }
    var finished: Bool { shutdownSent }
    /// When the next shaped chunk may go out.
    var nextShaped: UInt64? { head < shaped.count ? shaped[head].at : nil }

    /// Moves the shaped chunks whose time has come to the bytes to write.
    mutating func releaseShaped(now: UInt64) {
        while head < shaped.count, shaped[head].at <= now {
            let chunk = shaped[head].bytes
            shaped[head].bytes = []
            head += 1
            shapedBytes -= chunk.count
            if offset == pending.count {
                pending = chunk
                offset = 0
            } else {
                // Drop what has gone out before appending: a destination that never quite drains must not make
                // the buffer grow with everything it was ever sent.
                if offset > 0 {
                    pending.removeFirst(offset)
                    offset = 0
                }
                pending.append(contentsOf: chunk)
            }
        }
        if head == shaped.count {
            shaped.removeAll(keepingCapacity: true)
            head = 0
        }
    }
}

/// A client connection and its backend connection, relayed by one loop. Nothing is read from the client until a
/// backend has accepted: the kernel holds what the client sends (and its end of input), so a backend that refuses
/// is replaced by the next one without a byte lost.
final class RelayConnection {
    enum State { case connecting, relaying, held, closed }

    let id: Int
    let loop: RelayLoop
    let pool: PoolController
    let client: Int32
    var backend: Int32 = -1
    /// `host:port` of the backend being connected to, as connect errors name it.
    var backendPeer = ""
    var state = State.connecting
    /// The backend chosen (its connection count taken), and whether the pool tracks this connection under it.
    var routeID: Int?
    var attached = false
    var excluded: Set<Int> = []
    var connectTimeout: UInt64 = 0
    var up = RelayDirection()
    var down = RelayDirection()
    var traffic: TrafficCounters?
    /// In the loop's ready list.
    var queued = false
    /// While connecting: when the attempt times out. While held by a blackhole fault: when the fault ends.
    var waitUntil: UInt64 = 0

    /// Shaped bytes per direction above which the source is not read (back-pressure under a bandwidth or latency
    /// fault: memory stays bounded whatever the client sends).
    static let shapedHighWater = 256 * 1024
    /// Shaped chunks (each a timer) per direction: a client that sends a byte at a time is bounded too.
    static let shapedChunks = 1024
    /// Reads per direction per turn, before other connections get theirs.
    static let readBudget = 16
    /// Backend host names resolved at once per loop (each on a thread of its own); more clients are turned away.
    static let maxResolving = 16

    var handle: RelayHandle { RelayHandle(loop: loop.index, id: id) }

    init(id: Int, loop: RelayLoop, pool: PoolController, client: Int32) {
        self.id = id
        self.loop = loop
        self.pool = pool
        self.client = client
    }

    static let connectionEvents = EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLRDHUP.rawValue | EPOLLET.rawValue

    static func start(client fd: Int32, pool: PoolController, loop: RelayLoop) {
        let c = RelayConnection(id: loop.newConnectionID(), loop: loop, pool: pool, client: fd)
        guard loop.register(fd, events: connectionEvents, owner: .client(c)) else {
            Glibc.close(fd)
            return
        }
        RelayLoop.sockets.add(1, ordering: .relaxed)
        loop.connections[c.id] = c
        pool.open.add(1, ordering: .relaxed)
        c.connect()
    }

    // MARK: - Connecting

    /// Picks a backend (not one that failed this connection already) and connects to it.
    func connect() {
        guard state == .connecting else { return }
        guard let route = pool.route(excluding: excluded) else {
            refuse()
            return
        }
        routeID = route.id
        traffic = route.traffic
        if let fault = route.fault {
            switch fault.kind {
            case .reset:
                // SO_LINGER 0: the close sends a reset, as a crashed or firewalled service would.
                var l = linger(l_onoff: 1, l_linger: 0)
                _ = setsockopt(client, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
                close()
                return
            case .blackhole:
                // Accepted, then nothing, until the fault ends (or the client goes away).
                state = .held
                pool.attach(route.id, handle)
                attached = true
                waitUntil = monotonicNanoseconds() &+ UInt64(nanoseconds(fault.until.timeIntervalSinceNow))
                loop.setDeadline(id, waitUntil)
                return
            case .latency, .bandwidth:
                up.shaper = Shaper(kind: fault.kind)
                down.shaper = Shaper(kind: fault.kind)
            }
        }
        let timeout = UInt64(max(0, route.connectTimeout.nanoseconds))
        if let address = route.address {
            open(address, timeout: timeout)
        } else {
            // Not resolved with the configuration: resolve now, off the loop (getaddrinfo blocks), a bounded
            // number at a time.
            guard loop.resolving < RelayConnection.maxResolving else { refuse(); return }
            loop.resolving += 1
            let endpoint = route.endpoint, loop = self.loop, id = self.id, routeID = route.id
            Thread.detachNewThread {
                let address = try? SocketAddress.makeAddressResolvingHost(endpoint.host, port: endpoint.port)
                loop.execute { loop in
                    loop.resolving -= 1
                    guard let c = loop.connections[id], c.state == .connecting, c.routeID == routeID, c.backend < 0 else { return }
                    if let address { c.open(address, timeout: timeout) } else { c.connectFailed("cannot resolve \(endpoint.host)") }
                }
            }
        }
    }

    private func open(_ address: SocketAddress, timeout: UInt64) {
        backendPeer = NetworkErrors.peer(address)
        let fd = socket(Int32(address.protocol.rawValue), Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        // Out of descriptors here is the proxy's trouble, not the backend's: the client is turned away and the
        // backend keeps its health.
        guard fd >= 0 else { refuse(); return }
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, 4)
        let r = address.withSockAddr { Glibc.connect(fd, $0, socklen_t($1)) }
        let e = errno
        if r != 0 && e != EINPROGRESS {
            Glibc.close(fd)
            if HealthChecker.isLocalTrouble(errno: e) { refuse() } else { connectFailed(NetworkErrorText.describe(errno: e, peer: backendPeer)) }
            return
        }
        guard loop.register(fd, events: RelayConnection.connectionEvents, owner: .backend(self)) else {
            Glibc.close(fd)
            refuse()
            return
        }
        RelayLoop.sockets.add(1, ordering: .relaxed)
        backend = fd
        connectTimeout = timeout
        waitUntil = monotonicNanoseconds() &+ timeout
        loop.setDeadline(id, waitUntil)
        if r == 0 { connected() }
    }

    private func refuse() {
        pool.refused.add(1, ordering: .relaxed)
        close()
    }

    /// The backend refused, timed out or failed: it is marked down (passive detection) and the next one is tried.
    func connectFailed(_ error: String) {
        if backend >= 0 {
            loop.unregister(backend)
            Glibc.close(backend)
            RelayLoop.sockets.subtract(1, ordering: .relaxed)
            backend = -1
        }
        if let id = routeID {
            routeID = nil
            pool.release(id)
            excluded.insert(id)
            pool.connectionFailed(id, error: error)
        }
        connect()
    }

    private func connected() {
        guard let id = routeID else { return }
        loop.setDeadline(self.id, nil)
        state = .relaying
        pool.attach(id, handle)
        attached = true
        pool.accepted.add(1, ordering: .relaxed)
        // Speculative: the client's request is usually there already, and both sockets are fresh.
        up.srcReadable = true
        up.dstWritable = true
        down.dstWritable = true
        pump()
    }

    // MARK: - Events

    func event(_ e: UInt32, client isClient: Bool) {
        let hangup = e & (EPOLLRDHUP.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0
        let readable = hangup || e & EPOLLIN.rawValue != 0
        let writable = e & (EPOLLOUT.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0
        switch state {
        case .closed:
            return
        case .held:
            // Held by a blackhole fault: a client that closes (or resets) ends it.
            if hangup { close() }
            return
        case .connecting where isClient:
            // Not read yet (a half-close waits for the backend); a client that is gone altogether (reset, or both
            // directions shut) ends it.
            up.srcHungUp = up.srcHungUp || hangup
            up.srcReadable = up.srcReadable || readable
            down.dstWritable = down.dstWritable || writable
            if e & (EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 { close() }
            return
        case .connecting:
            guard writable else {
                if readable { down.srcReadable = true; down.srcHungUp = down.srcHungUp || hangup }
                return
            }
            var err: Int32 = 0
            var len = socklen_t(4)
            _ = getsockopt(backend, SOL_SOCKET, SO_ERROR, &err, &len)
            if err != 0 {
                connectFailed(NetworkErrorText.describe(errno: err, peer: backendPeer))
                return
            }
            if readable { down.srcReadable = true; down.srcHungUp = hangup }
            connected()
            return
        case .relaying:
            // A socket error (a reset): whatever is still to move cannot reach that side, and its edge would be
            // spent while back-pressure keeps the relay from reading or writing it. Close now.
            if e & EPOLLERR.rawValue != 0 {
                close()
                return
            }
            if isClient {
                if readable { up.srcReadable = true; up.srcHungUp = up.srcHungUp || hangup }
                if writable { down.dstWritable = true }
            } else {
                if readable { down.srcReadable = true; down.srcHungUp = down.srcHungUp || hangup }
                if writable { up.dstWritable = true }
            }
            pump()
        }
    }

    // MARK: - Relaying

    enum Progress { case idle, more, failed }

    /// Moves bytes both ways as far as the sockets allow; closes when both directions have ended or one failed.
    func pump() {
        guard state == .relaying else { return }
        let a = move(&up, from: client, to: backend, toBackend: true)
        let b = a == .failed ? .failed : move(&down, from: backend, to: client, toBackend: false)
        if a == .failed || b == .failed || (up.finished && down.finished) {
            close()
            return
        }
        if a == .more || b == .more { loop.markReady(self) }
        if up.shaper != nil {
            switch (up.nextShaped, down.nextShaped) {
            case (nil, nil): loop.setDeadline(id, nil)
            case (let x?, nil), (nil, let x?): loop.setDeadline(id, x)
            case (let x?, let y?): loop.setDeadline(id, min(x, y))
            }
        }
    }

    private func move(_ d: inout RelayDirection, from src: Int32, to dst: Int32, toBackend: Bool) -> Progress {
        let flags = Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT)
        var budget = RelayConnection.readBudget
        while true {
            // 1. What is waiting goes first.
            if d.pendingCount > 0 {
                guard d.dstWritable else { return .idle }
                let n = d.pending.withUnsafeBytes { send(dst, $0.baseAddress! + d.offset, $0.count - d.offset, flags) }
                if n < 0 {
                    switch errno {
                    case EAGAIN, EWOULDBLOCK: d.dstWritable = false; return .idle
                    case EINTR: continue
                    default: return .failed
                    }
                }
                d.offset += n
                if d.offset == d.pending.count {
                    d.pending = []
                    d.offset = 0
                } else {
                    d.dstWritable = false
                    return .idle
                }
                continue
            }
            // 2. The end of input, once everything before it has gone out.
            if d.eof {
                if d.shapedBytes == 0 && !d.shutdownSent {
                    _ = shutdown(dst, Int32(SHUT_WR))
                    d.shutdownSent = true
                }
                return .idle
            }
            guard d.srcReadable else { return .idle }
            if d.shaper != nil && (d.shapedBytes + d.pendingCount >= RelayConnection.shapedHighWater
                                   || d.shaped.count - d.head >= RelayConnection.shapedChunks) { return .idle }
            guard budget > 0 else { return .more }
            budget -= 1
            // 3. Read.
            let n = recv(src, loop.scratch.baseAddress!, RelayLoop.scratchSize, flags)
            if n < 0 {
                switch errno {
                case EAGAIN, EWOULDBLOCK: d.srcReadable = false; return .idle
                case EINTR: continue
                default: return .failed
                }
            }
            if n == 0 {
                d.eof = true
                continue
            }
            // A short read emptied the socket: new bytes will raise a new edge. Unless the peer hung up, whose
            // edge may already be spent: then read on to the end of input.
            if n < RelayLoop.scratchSize && !d.srcHungUp { d.srcReadable = false }
            if let traffic {
                if toBackend { traffic.toBackend.add(UInt64(n), ordering: .relaxed) } else { traffic.fromBackend.add(UInt64(n), ordering: .relaxed) }
            }
            // 4. Write: at once, or at the shaper's time.
            if var shaper = d.shaper {
                let at = shaper.delay(for: n, now: monotonicNanoseconds())
                d.shaper = shaper
                d.shaped.append((at, Array(UnsafeRawBufferPointer(rebasing: loop.scratch[0..<n]))))
                d.shapedBytes += n
                continue
            }
            var m = 0
            if d.dstWritable {
                m = send(dst, loop.scratch.baseAddress!, n, flags)
                if m < 0 {
                    switch errno {
                    case EAGAIN, EWOULDBLOCK, EINTR: m = 0
                    default: return .failed
                    }
                }
            }
            if m < n {
                d.pending = Array(UnsafeRawBufferPointer(rebasing: loop.scratch[m..<n]))
                d.offset = 0
                d.dstWritable = false
            }
        }
    }

    /// A time this connection waited for has come: a connect timeout, the end of a blackhole fault, or shaped
    /// chunks due to go out.
    func deadlineReached(now: UInt64) {
        switch state {
        case .connecting:
            if backend >= 0 && now >= waitUntil { connectFailed("timed out after \(connectTimeout / 1_000_000) ms") }
            else if backend >= 0 { loop.setDeadline(id, waitUntil) }
        case .held:
            if now >= waitUntil { close() } else { loop.setDeadline(id, waitUntil) }
        case .relaying:
            up.releaseShaped(now: now)
            down.releaseShaped(now: now)
            pump()
        case .closed:
            return
        }
    }

    /// The fault on this connection's backend changed or ended: a connection held by a blackhole is let go.
    func faultChanged() {
        if state == .held { close() }
    }

    // MARK: - Closing

    /// Closes both sockets and gives the backend's connection count back.
    func close() {
        guard state != .closed else { return }
        state = .closed
        // The books first: whoever sees the sockets close sees the counts that go with it.
        if let id = routeID {
            if attached { pool.detach(id, handle) }
            pool.release(id)
            routeID = nil
        }
        pool.open.subtract(1, ordering: .relaxed)
        loop.setDeadline(id, nil)
        loop.unregister(client)
        Glibc.close(client)
        RelayLoop.sockets.subtract(1, ordering: .relaxed)
        if backend >= 0 {
            loop.unregister(backend)
            Glibc.close(backend)
            RelayLoop.sockets.subtract(1, ordering: .relaxed)
            backend = -1
        }
        loop.connections[id] = nil
        up = RelayDirection()
        down = RelayDirection()
    }
}

/// When each write may go out under a latency or bandwidth fault (monotonic nanoseconds); writes keep their order.
struct Shaper {
    let kind: Fault.Kind
    var lastSend: UInt64 = 0

    init(kind: Fault.Kind) { self.kind = kind }

    mutating func delay(for bytes: Int, now: UInt64) -> UInt64 {
        var at: UInt64
        switch kind {
        case .latency(let s):
            at = now &+ UInt64(nanoseconds(s))
        case .bandwidth(let rate):
            let start = max(now, lastSend)
            at = start &+ UInt64(nanoseconds(Double(bytes) / Double(max(1, rate))))
        case .reset, .blackhole:
            at = now
        }
        if at < lastSend { at = lastSend }
        lastSend = at
        return at
    }
}
