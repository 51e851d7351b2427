import AsyncHTTPClient
import Foundation
import LifeboatCore
import LifeboatStorage
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import NIOPosix
import NIOSSL

/// HTTP/1.1 (and HTTPS) to one origin through AsyncHTTPClient, with a bounded connection pool,
/// connect and read (stall) timeouts, and extra trusted CA certificates.
public final class AsyncHTTPTransport: HTTPTransport {
    public let origin: String
    let client: HTTPClient
    let host: String
    /// `host:port` of the origin, as errors name it.
    let peer: String
    let maxBody: Int

    /// - Parameter origin: `http://host:port` or `https://host:port` (no path).
    public init(origin: String, options: HTTPOptions = .fromEnvironment()) throws {
        self.origin = origin
        maxBody = options.maxBody
        let url = URL(string: origin)
        host = url?.host ?? origin
        peer = NetworkErrorText.peer(host: host, port: url?.port ?? (origin.hasPrefix("https:") ? 443 : 80))
        var tls = TLSConfiguration.makeClientConfiguration()
        if let ca = options.caCertFile {
            do {
                tls.additionalTrustRoots = [.certificates(try NIOSSLCertificate.fromPEMFile(ca))]
            } catch {
                throw StorageError(.permanent, "cannot read the CA certificate file \(ca): \(error)")
            }
        }
        if options.insecureTLS { tls.certificateVerification = .none }
        var config = HTTPClient.Configuration(
            tlsConfiguration: tls,
            redirectConfiguration: .disallow,
            timeout: .init(connect: .milliseconds(Int64(options.connectTimeout * 1000)),
                           read: .milliseconds(Int64(options.readTimeout * 1000))),
            connectionPool: .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: options.connections),
            decompression: .disabled)
        config.httpVersion = .http1Only
        config.connectionPool.retryConnectionEstablishment = false
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
    }

    deinit {
        try? client.syncShutdown()
    }

    public func shutdown() async {
        try? await client.shutdown()
    }

    public func send(_ spec: HTTPRequestSpec) async throws -> HTTPResponseSpec {
        var request = HTTPClientRequest(url: origin + spec.target)
        request.method = HTTPMethod(rawValue: spec.method)
        for (k, v) in spec.headers { request.headers.add(name: k, value: v) }
        if let body = spec.body {
            request.body = .bytes(ByteBuffer(data: body))
        }
        do {
            // The read timeout catches stalls; this deadline only bounds a pathological trickle.
            let response = try await client.execute(request, timeout: .hours(1))
            let expected = response.headers.first(name: "content-length").flatMap(Int.init)
            var body = Data()
            if spec.method != "HEAD" {
                let buffer = try await response.body.collect(upTo: maxBody)
                body = Data(buffer: buffer)
                if let expected, body.count != expected {
                    throw StorageError(.transient, "\(spec.method) \(origin): the body was cut short (\(body.count) of \(expected) bytes)")
                }
            }
            return HTTPResponseSpec(status: Int(response.status.code),
                                    headers: response.headers.map { ($0.name, $0.value) }, body: body)
        } catch let e as StorageError {
            throw e
        } catch {
            throw classify(error, spec)
        }
    }

    func classify(_ error: any Error, _ spec: HTTPRequestSpec) -> StorageError {
        let what = "\(spec.method) \(origin)"
        // A failed connection is the peer's trouble, said once and plainly ("connection refused by HOST:PORT").
        if let text = NetworkErrors.describe(error, peer: peer) { return StorageError(.transient, text) }
        if let e = error as? HTTPClientError {
            switch e {
            case .connectTimeout: return StorageError(.transient, "\(what): connection timed out (host unreachable?)")
            case .readTimeout: return StorageError(.transient, "\(what): the server stopped sending (read timeout)")
            case .writeTimeout: return StorageError(.transient, "\(what): the server stopped reading (write timeout)")
            case .deadlineExceeded: return StorageError(.transient, "\(what): the request took too long")
            case .remoteConnectionClosed: return StorageError(.transient, "\(what): the server closed the connection")
            case .bodyLengthMismatch: return StorageError(.transient, "\(what): the body was cut short")
            case .tlsHandshakeTimeout: return StorageError(.transient, "\(what): TLS handshake timed out")
            case .invalidURL, .emptyHost, .emptyScheme: return StorageError(.permanent, "\(what): invalid URL")
            default: return StorageError(.transient, "\(what): \(e)")
            }
        }
        if let e = error as? NIOSSLError {
            return StorageError(.permanent, "\(what): TLS failed (\(e)); if the server uses a private CA, pass it with --cacert")
        }
        if let e = error as? BoringSSLError {
            return StorageError(.permanent, "\(what): TLS failed (\(e)); if the server uses a private CA, pass it with --cacert")
        }
        if let e = error as? NIOSSLExtraError {
            return StorageError(.permanent, "\(what): TLS failed: \(e) (the certificate does not name \(host)?)")
        }
        if let e = error as? NIOConnectionError {
            let causes = e.connectionErrors.map { "\($0.error)" }.joined(separator: "; ")
            return StorageError(.transient, "cannot connect to \(peer) (\(causes.isEmpty ? "\(e)" : causes))")
        }
        if error is ChannelError {
            return StorageError(.transient, "\(what): connection failed: \(error)")
        }
        if error is CancellationError { return StorageError(.permanent, "\(what): cancelled") }
        let text = "\(error)"
        if text.contains("certificate") || text.contains("handshake") {
            return StorageError(.permanent, "\(what): TLS failed (\(text)); if the server uses a private CA, pass it with --cacert")
        }
        return StorageError(.transient, "\(what): \(text)")
    }
}
