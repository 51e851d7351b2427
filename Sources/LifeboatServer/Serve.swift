import Foundation
import LifeboatCore
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL

/// Where and how `lifeboat serve` listens.
public struct ListenOptions: Sendable {
    public var host: String = "127.0.0.1"
    public var port: Int = 8000
    public var tlsCert: String? = nil
    public var tlsKey: String? = nil
    /// Timeouts and the cap on connections.
    public var limits = ConnectionLimits()

    public init() {}

    /// Parses `HOST:PORT`, `:PORT` or `[IPv6]:PORT`.
    public static func parse(_ s: String) throws -> (String, Int) {
        guard let colon = s.lastIndex(of: ":"), let port = Int(s[s.index(after: colon)...]), (0...65535).contains(port) else {
            throw ServeError("invalid --listen \"\(s)\": expected HOST:PORT")
        }
        var host = String(s[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty { host = "0.0.0.0" }
        return (host, port)
    }
}

/// Runs the repository server until SIGTERM or SIGINT, then stops accepting connections and returns once the
/// requests in progress have finished (uploads complete or are refused, never cut). `ready` receives the URL it
/// listens on (with the real port when port 0 was asked for).
public func runServer(_ options: ServeOptions, listen: ListenOptions, logLevel: Logger.Level = .warning,
                      ready: @escaping @Sendable (String) -> Void) async throws {
    var logger = Logger(label: "lifeboat.serve")
    logger.logLevel = logLevel
    try listen.limits.validate()
    let descriptors = raiseDescriptorLimit()
    let cap = listen.limits.effectiveMaxConnections(descriptorLimit: descriptors)
    if cap < listen.limits.maxConnections {
        logger.warning("serving at most \(cap) connections at once: the limit on open files is \(descriptors) (ulimit -n)")
    }
    let http = LimitedHTTP1Channel.builder(limits: listen.limits, counter: ConnectionCounter(limit: cap))
    let server: HTTPServerBuilder
    let scheme: String
    if let cert = listen.tlsCert, let key = listen.tlsKey {
        let chain: [NIOSSLCertificate]
        let privateKey: NIOSSLPrivateKey
        do {
            chain = try NIOSSLCertificate.fromPEMFile(cert)
            privateKey = try NIOSSLPrivateKey(file: key, format: .pem)
        } catch {
            throw ServeError("cannot load the TLS certificate \(cert) or key \(key): \(error)")
        }
        let tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) },
                                                           privateKey: .privateKey(privateKey))
        server = try .tls(http, tlsConfiguration: tls)
        scheme = "https"
    } else {
        server = http
        scheme = "http"
    }
    let app = Application(
        responder: RepositoryServer(options: options),
        server: server,
        configuration: .init(address: .hostname(listen.host, port: listen.port), serverName: "lifeboat"),
        onServerRunning: { channel in
            let port = channel.localAddress?.port ?? listen.port
            let host = listen.host.contains(":") ? "[\(listen.host)]" : listen.host
            ready("\(scheme)://\(host):\(port)/")
        },
        logger: logger)
    try await app.runService(gracefulShutdownSignals: [.sigterm, .sigint])
}
