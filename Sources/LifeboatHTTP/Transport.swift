import Foundation
import LifeboatCore
import LifeboatStorage

/// One HTTP request, as the remote backends build it.
public struct HTTPRequestSpec: Sendable {
    public var method: String
    /// Path and query, percent-encoded, starting with `/` (the transport adds scheme and host).
    public var target: String
    public var headers: [(String, String)]
    public var body: Data?

    public init(method: String, target: String, headers: [(String, String)] = [], body: Data? = nil) {
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
    }
}

/// One HTTP response, body read in full (bodies are bounded by the pack size).
public struct HTTPResponseSpec: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: Data

    public init(status: Int, headers: [(String, String)], body: Data) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// The first value of a header (case-insensitive name).
    public func header(_ name: String) -> String? {
        headers.first { $0.0.caseInsensitiveCompare(name) == .orderedSame }?.1
    }

    /// The body as text, shortened for messages.
    public var bodySnippet: String {
        let s = String(decoding: body.prefix(512), as: UTF8.self)
        return s.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// Sends HTTP requests to one server. Implementations map every network failure to a
/// `StorageError`: `.transient` for what a retry may cure (refused or reset connections, timeouts,
/// truncated bodies), `.permanent` otherwise (TLS verification, bad URLs). HTTP statuses are
/// returned, not thrown: the backend knows what they mean.
public protocol HTTPTransport: Sendable {
    /// `scheme://host:port`, for messages.
    var origin: String { get }
    func send(_ request: HTTPRequestSpec) async throws -> HTTPResponseSpec
    /// Releases connections and processes; the transport cannot be used afterwards.
    func shutdown() async
}

/// Timeouts and limits for network transports.
public struct HTTPOptions: Sendable {
    /// Seconds to establish a connection (TCP and TLS).
    public var connectTimeout: Double = 10
    /// Seconds without a byte from the server before a request fails (detects stalls).
    public var readTimeout: Double = 60
    /// Connections per host (requests beyond this wait).
    public var connections: Int = 5
    /// A PEM file of extra CA certificates to trust (self-signed servers).
    public var caCertFile: String? = nil
    /// Trust any certificate (testing only).
    public var insecureTLS = false
    /// The largest answer body read (a longer one is an error, not a larger buffer).
    public var maxBody = 1 << 30

    public init() {}

    /// `LIFEBOAT_CONNECT_TIMEOUT`, `LIFEBOAT_TIMEOUT` (read/stall), `LIFEBOAT_CONNECTIONS`, `LIFEBOAT_CACERT`.
    /// An invalid value is ignored here; the CLI rejects it at start-up through `validatedFromEnvironment`.
    public static func fromEnvironment() -> HTTPOptions {
        (try? validatedFromEnvironment()) ?? HTTPOptions()
    }

    /// The same, with every number range-checked: timeouts of 1 ms to 1 day, 1 to 256 connections.
    public static func validatedFromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) throws -> HTTPOptions {
        var o = HTTPOptions()
        if let v = try Bounds.environment("LIFEBOAT_CONNECT_TIMEOUT", HTTPOptions.timeoutRange, env) { o.connectTimeout = v }
        if let v = try Bounds.environment("LIFEBOAT_TIMEOUT", HTTPOptions.timeoutRange, env) { o.readTimeout = v }
        if let v = try Bounds.environmentInt("LIFEBOAT_CONNECTIONS", 1...256, env) { o.connections = v }
        if let v = env["LIFEBOAT_CACERT"], !v.isEmpty { o.caCertFile = v }
        return o
    }

    /// Timeouts a user may set (seconds).
    public static let timeoutRange: ClosedRange<Double> = 0.001...86400
}

/// Percent-encoding for URL path segments and query values (RFC 3986 unreserved characters only,
/// as AWS Signature Version 4 requires).
public func percentEncode(_ s: String, keepSlash: Bool = false) -> String {
    var out = ""
    out.reserveCapacity(s.utf8.count)
    for b in s.utf8 {
        switch b {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
            out.unicodeScalars.append(Unicode.Scalar(b))
        case UInt8(ascii: "/") where keepSlash:
            out.append("/")
        default:
            out += String(format: "%%%02X", b)
        }
    }
    return out
}

/// Parses `Content-Range: bytes A-B/TOTAL` into its total size.
func contentRangeTotal(_ value: String?) -> Int? {
    guard let v = value, let slash = v.lastIndex(of: "/") else { return nil }
    return Int(v[v.index(after: slash)...])
}

/// The `Range` request header for a non-empty byte range.
public func rangeHeader(_ range: Range<Int>) -> (String, String) {
    ("Range", "bytes=\(range.lowerBound)-\(range.upperBound - 1)")
}

extension HTTPResponseSpec {
    /// The bytes a successful GET returned for `range` (nil: the whole object), as the `Backend` contract
    /// wants them. A server that ignored the range (200) has it cut out of the whole body; a short 206 body
    /// is a range past the end (`invalidRange`, per Content-Range) or a transfer cut short (`transient`).
    public func rangedBody(_ range: Range<Int>?, _ what: String) throws -> Data {
        guard let range else { return body }
        if status == 200 {
            guard range.upperBound <= body.count else {
                throw StorageError(.invalidRange, "\(what): range \(range) is outside its \(body.count) bytes")
            }
            return body.subdata(in: range)
        }
        if body.count != range.count {
            if let total = contentRangeTotal(header("Content-Range")), range.upperBound > total {
                throw StorageError(.invalidRange, "\(what): range \(range) is outside its \(total) bytes")
            }
            throw StorageError(.transient, "read \(what): got \(body.count) of \(range.count) bytes")
        }
        return body
    }
}

extension StorageError {
    /// Classifies an HTTP status that is not a success into a storage error.
    public static func fromHTTP(_ response: HTTPResponseSpec, _ what: String, server: String) -> StorageError {
        let detail = response.bodySnippet.isEmpty ? "" : ": \(response.bodySnippet)"
        switch response.status {
        case 404: return StorageError(.notFound, "\(what): not found on \(server)")
        case 416: return StorageError(.invalidRange, "\(what): range not satisfiable")
        case 401: return StorageError(.permanent, "\(what): \(server) asks for credentials (401 Unauthorized): check the user and password in the repository URL")
        case 403: return StorageError(.permanent, "\(what): \(server) refused access (403 Forbidden)\(detail)")
        case 408, 425, 429, 500...599:
            return StorageError(.transient, "\(what): \(server) answered \(response.status)\(detail)")
        default: return StorageError(.permanent, "\(what): \(server) answered \(response.status)\(detail)")
        }
    }
}
