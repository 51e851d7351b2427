import Foundation
import LifeboatCore
import LifeboatFailover
import LifeboatHTTP
import NIOCore
import NIOPosix

/// Runs each backend's health check every `interval` and feeds the results to its pool.
public struct HealthChecker: Sendable {
    let group: any EventLoopGroup

    public init(group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.group = group
    }

    /// Checks the server's pools until the task is cancelled; starts over with the new backends after a reload.
    public func run(_ server: ProxyServer) async {
        while !Task.isCancelled {
            let generation = server.generation
            await withTaskGroup(of: Void.self) { g in
                for pool in server.pools {
                    let check = pool.config.check
                    for target in pool.checkTargets {
                        g.addTask {
                            var lastSkipLogged = Date.distantPast
                            while !Task.isCancelled {
                                let r = await self.check(target.endpoint, resolved: target.address, check)
                                if Task.isCancelled { break }
                                switch r {
                                case .success(let result):
                                    pool.record(target.id, result)
                                case .failure(let trouble):
                                    // The proxy's own trouble says nothing about the backend: not recorded.
                                    if Date().timeIntervalSince(lastSkipLogged) >= 60 {
                                        lastSkipLogged = Date()
                                        pool.log("pool \(pool.config.name): check of \(target.endpoint) not run: \(trouble.detail)")
                                    }
                                }
                                try? await Task.sleep(nanoseconds: UInt64(nanoseconds(check.interval)))
                            }
                        }
                    }
                }
                g.addTask {
                    while !Task.isCancelled && server.generation == generation {
                        try? await Task.sleep(nanoseconds: 50_000_000)
                    }
                }
                await g.next()
                g.cancelAll()
            }
        }
    }

    /// A check the proxy could not run for its own reasons (out of descriptors, memory or local ports).
    struct LocalTrouble: Error { let detail: String }

    /// Errors that are the proxy's trouble, not the backend's: out of file descriptors, memory, buffers or local
    /// ports. Neither a check nor a client's connect that fails with one of them marks a backend down.
    static let localErrnos: [Int32] = [EMFILE, ENFILE, ENOBUFS, ENOMEM, EADDRNOTAVAIL]

    static func isLocalTrouble(errno e: Int32) -> Bool { localErrnos.contains(e) }

    /// The same for an error as NIO, AsyncHTTPClient or Foundation report it (by errno, else by its text).
    static func isLocalTrouble(_ error: any Error) -> Bool {
        if let io = error as? IOError { return isLocalTrouble(errno: io.errnoCode) }
        return isLocalTrouble(text: "\(error)")
    }

    static func isLocalTrouble(text: String) -> Bool {
        localErrnos.contains { text.contains(String(cString: strerror($0))) }
    }

    func check(_ target: Endpoint, resolved: SocketAddress?, _ c: CheckConfig) async -> Result<BackendHealth.CheckResult, LocalTrouble> {
        let start = Date()
        let (ok, detail) = await probe(target, resolved: resolved, c)
        guard let ok else { return .failure(LocalTrouble(detail: detail)) }
        return .success(.init(ok: ok, latency: Date().timeIntervalSince(start), detail: detail, at: Date()))
    }

    /// One check of the configured kind: healthy or not (nil: not run, the proxy's own trouble), and why.
    func probe(_ target: Endpoint, resolved: SocketAddress?, _ c: CheckConfig) async -> (Bool?, String) {
        switch c.kind {
        case .tcp:
            do {
                let bootstrap = ClientBootstrap(group: group).connectTimeout(.nanoseconds(nanoseconds(c.timeout)))
                let ch = try await (resolved.map { bootstrap.connect(to: $0) }
                    ?? bootstrap.connect(host: target.host, port: target.port)).get()
                try? await ch.close()
                return (true, "tcp connect ok")
            } catch {
                let peer = resolved.map(NetworkErrors.peer) ?? NetworkErrorText.peer(host: target.host, port: target.port)
                return (HealthChecker.isLocalTrouble(error) ? nil : false, "tcp connect: \(NetworkErrors.describe(error, peer: peer) ?? "\(error)")")
            }
        case .exec:
            let argv = c.command.map {
                $0.replacingOccurrences(of: "{host}", with: target.host).replacingOccurrences(of: "{port}", with: "\(target.port)")
            }
            switch await runCommand(argv, timeout: c.timeout) {
            case .exited(let status): return (status == 0, "exec: exit \(status)")
            case .timedOut: return (false, "exec: timed out after \(c.timeout) s")
            case .cannotStart(let why):
                return (HealthChecker.isLocalTrouble(text: why) ? nil : false, "exec: cannot start \(argv[0])")
            }
        case .http, .https:
            return await httpProbe(target, c)
        }
    }
}

import AsyncHTTPClient
import NIOSSL
import Synchronization

extension HealthChecker {
    /// HTTP clients for https checks with their own trust settings, one per setting, kept for the process's life.
    static let clients = Mutex<[String: HTTPClient]>([:])

    static func client(caFile: String?, verify: Bool) throws -> HTTPClient {
        if caFile == nil && verify { return HTTPClient.shared }
        return try clients.withLock { cache in
            let key = "\(verify) \(caFile ?? "")"
            if let c = cache[key] { return c }
            var tls = TLSConfiguration.makeClientConfiguration()
            if let caFile { tls.additionalTrustRoots = [.certificates(try NIOSSLCertificate.fromPEMFile(caFile))] }
            if !verify { tls.certificateVerification = .none }
            let c = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
            cache[key] = c
            return c
        }
    }

    /// GET `path`; healthy when the status is `expect_status` and the body holds `expect_body` (if set),
    /// all within `timeout`. A server that accepts but never answers fails by the timeout.
    func httpProbe(_ target: Endpoint, _ c: CheckConfig) async -> (Bool?, String) {
        let url = "\(c.kind == .https ? "https" : "http")://\(target)\(c.path.hasPrefix("/") ? c.path : "/" + c.path)"
        var request = HTTPClientRequest(url: url)
        request.method = .GET
        do {
            let client = try HealthChecker.client(caFile: c.caFile, verify: c.tlsVerify)
            let response = try await client.execute(request, timeout: .nanoseconds(nanoseconds(c.timeout)))
            let body = try await response.body.collect(upTo: 1 << 20)
            guard Int(response.status.code) == c.expectStatus else {
                return (false, "http: status \(response.status.code), expected \(c.expectStatus)")
            }
            if let want = c.expectBody, !String(buffer: body).contains(want) {
                return (false, "http: body lacks \"\(want)\"")
            }
            return (true, "http \(response.status.code)")
        } catch {
            let text = "\(error)"
            if text.contains("CERTIFICATE_VERIFY_FAILED") {
                return (false, "https: the certificate is not trusted (set ca_file, or tls_verify: false)")
            }
            let plain = NetworkErrors.describe(error, peer: NetworkErrorText.peer(host: target.host, port: target.port))
            return (HealthChecker.isLocalTrouble(error) ? nil : false, "http: \(plain ?? text)")
        }
    }
}
