import Foundation
import LifeboatFailover
import LifeboatTestSupport
import Synchronization
import Testing
@testable import LifeboatProxy

/// A blocking TCP server on 127.0.0.1 for the relay tests: each connection is handed to `handler` on a thread.
final class TestServer: @unchecked Sendable {
    let fd: Int32
    let port: Int

    init(_ handler: @escaping @Sendable (Int32) -> Void) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, 4)
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let fd = self.fd
        let ok = withUnsafeMutablePointer(to: &a) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && listen(fd, 64) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard ok else { throw POSIXError(.EADDRINUSE) }
        port = Int(UInt16(bigEndian: a.sin_port))
        // The accept thread closes the socket itself once `stop` has shut it down: closing it here could let the
        // thread accept on a new socket that reused the number (another test's listener).
        Thread.detachNewThread {
            while true {
                let c = accept(fd, nil, nil)
                if c < 0 {
                    close(fd)
                    return
                }
                Thread.detachNewThread { handler(c); close(c) }
            }
        }
    }

    func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
    }

    /// Echoes every byte, then closes its side when the client has closed its own.
    static func echo(_ c: Int32) {
        var buf = [UInt8](repeating: 0, count: 32 * 1024)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(c, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            var off = 0
            while off < n {
                let m = buf.withUnsafeBytes { send(c, $0.baseAddress! + off, n - off, Int32(MSG_NOSIGNAL)) }
                if m <= 0 { return }
                off += m
            }
        }
        shutdown(c, Int32(SHUT_WR))
    }
}

/// A port with nothing listening on it (bound to port 0, then closed).
func closedPort() -> Int { freeLoopbackPort() }

func connectTo(_ port: Int) -> Int32 {
    let c = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    a.sin_port = in_port_t(UInt16(port).bigEndian)
    a.sin_addr.s_addr = inet_addr("127.0.0.1")
    var tv = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    let r = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(c, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    return r == 0 ? c : -1
}

/// Sends `data` on a thread (then half-closes) while reading everything that comes back until the end of input.
func exchange(_ c: Int32, _ data: [UInt8]) -> [UInt8] {
    let sender = Thread {
        var off = 0
        while off < data.count {
            let m = data.withUnsafeBytes { send(c, $0.baseAddress! + off, min(100_000, data.count - off), Int32(MSG_NOSIGNAL)) }
            if m <= 0 { break }
            off += m
        }
        shutdown(c, Int32(SHUT_WR))
    }
    sender.start()
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
        let n = buf.withUnsafeMutableBytes { recv(c, $0.baseAddress, $0.count, 0) }
        if n <= 0 { break }
        out.append(contentsOf: buf[0..<n])
    }
    return out
}

func proxyConfig(listen: Int, backends: [Int], extra: String = "") throws -> ProxyConfig {
    let list = backends.enumerated().map { "      - {name: b\($0.offset), address: 127.0.0.1:\($0.element), priority: \($0.offset + 1)}" }
    return try ProxyConfig.parse("""
    pools:
      - name: web
        listen: 127.0.0.1:\(listen)
        mode: failover
    \(extra)    backends:
    \(list.joined(separator: "\n"))

    """, path: "test.yaml")
}

@Suite struct RelayTests {
    @Test func bytesBothWaysSurviveBackPressureAndHalfClose() async throws {
        let backend = try TestServer(TestServer.echo)
        defer { backend.stop() }
        let port = closedPort()
        let server = ProxyServer(config: try proxyConfig(listen: port, backends: [backend.port]), log: { _ in })
        _ = try await server.start()
        // 6 MiB of varied bytes: more than the sockets buffer, so the relay writes partially and waits.
        var rng = SystemRandomNumberGenerator()
        let data = (0..<(6 << 20)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let c = connectTo(port)
        #expect(c >= 0)
        let back = exchange(c, data)
        close(c)
        #expect(back.count == data.count)
        #expect(back == data)
        _ = await server.drain(timeout: 5)
    }

    @Test func aRefusedBackendIsReplacedBeforeAByteMoves() async throws {
        let backend = try TestServer(TestServer.echo)
        defer { backend.stop() }
        let port = closedPort()
        let server = ProxyServer(config: try proxyConfig(listen: port, backends: [closedPort(), backend.port]), log: { _ in })
        _ = try await server.start()
        let c = connectTo(port)
        let back = exchange(c, Array("hello".utf8))
        close(c)
        #expect(String(decoding: back, as: UTF8.self) == "hello")
        let status = server.pools[0].status()
        #expect(status.state.members[0].health.state == .down)
        #expect(status.accepted == 1)
        _ = await server.drain(timeout: 5)
    }

    @Test func withNoBackendTheClientIsClosedAndCounted() async throws {
        let port = closedPort()
        let server = ProxyServer(config: try proxyConfig(listen: port, backends: [closedPort()]), log: { _ in })
        _ = try await server.start()
        let c = connectTo(port)
        let back = exchange(c, Array("hello".utf8))
        close(c)
        #expect(back.isEmpty)
        #expect(server.pools[0].status().refused == 1)
        #expect(server.openConnections == 0)
        _ = await server.drain(timeout: 5)
    }

    @Test func aStoppedListenerFreesItsPort() async throws {
        let backend = try TestServer(TestServer.echo)
        defer { backend.stop() }
        let port = closedPort()
        for _ in 0..<3 {
            let server = ProxyServer(config: try proxyConfig(listen: port, backends: [backend.port]), log: { _ in })
            _ = try await server.start()
            let c = connectTo(port)
            #expect(exchange(c, [1, 2, 3]) == [1, 2, 3])
            close(c)
            _ = await server.drain(timeout: 5)
        }
    }

    @Test func timersRunByDeadlineThenInOrder() {
        var heap = TimerHeap()
        let log = Mutex<[Int]>([])
        for (i, d) in [30, 10, 20, 10, 40, 10].enumerated() { heap.push(UInt64(d)) { log.withLock { $0.append(i) } } }
        #expect(heap.nextDeadline == 10)
        while let a = heap.popDue(now: 25) { a() }
        #expect(log.withLock { $0 } == [1, 3, 5, 2])
        #expect(heap.popDue(now: 29) == nil)
        while let a = heap.popDue(now: 100) { a() }
        #expect(log.withLock { $0 } == [1, 3, 5, 2, 0, 4])
        #expect(heap.isEmpty)
    }

    @Test func shaperSpacesWritesAndKeepsTheirOrder() {
        var bw = Shaper(kind: .bandwidth(1000))
        #expect(bw.delay(for: 500, now: 0) == 500_000_000)
        #expect(bw.delay(for: 500, now: 100) == 1_000_000_000)
        #expect(bw.delay(for: 1000, now: 3_000_000_000) == 4_000_000_000)
        var lat = Shaper(kind: .latency(0.05))
        let a = lat.delay(for: 1, now: 1_000)
        let b = lat.delay(for: 1, now: 500)  // an earlier clock reading never moves a write before the last one
        #expect(a == 50_001_000 && b == a)
    }
}
