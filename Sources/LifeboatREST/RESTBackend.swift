import Foundation
import LifeboatHTTP
import LifeboatStorage

/// A repository on a server that speaks the restic REST protocol, version 2: `lifeboat serve`,
/// restic's rest-server, or `rclone serve restic`.
///
/// | operation | request |
/// |---|---|
/// | create | `POST {base}/?create=true` |
/// | list | `GET {base}/{type}/` with `Accept: application/vnd.x.restic.rest.v2` → `[{"name","size"}]` |
/// | stat | `HEAD {base}/{type}/{name}` (`{base}/config` for the config) |
/// | read | `GET …` with `Range: bytes=A-B` |
/// | write | `POST …` with the body |
/// | delete | `DELETE …` |
public struct RESTBackend: Backend {
    public let transport: any HTTPTransport
    /// The repository's path on the server: empty or `/a/b`, percent-encoded, no trailing slash.
    public let basePath: String
    let authorization: String?
    public let location: String
    /// Uploads in flight (`LIFEBOAT_CONNECTIONS`, default 4).
    public var writeConcurrency: Int = max(1, HTTPOptions.fromEnvironment().connections - 1)

    static let v2 = "application/vnd.x.restic.rest.v2"

    public init(transport: any HTTPTransport, basePath: String, user: String? = nil, password: String? = nil, location: String) {
        self.transport = transport
        var p = basePath
        while p.hasSuffix("/") { p.removeLast() }
        if !p.isEmpty && !p.hasPrefix("/") { p = "/" + p }
        self.basePath = p
        if let user {
            authorization = "Basic " + Data("\(user):\(password ?? "")".utf8).base64EncodedString()
        } else {
            authorization = nil
        }
        self.location = location
    }

    /// Parses `rest:http(s)://[user[:password]@]host[:port][/path]` (after the `rest:` prefix).
    /// The password may also come from `LIFEBOAT_REST_PASSWORD`, to keep it out of argv.
    public static func make(url: String, options: HTTPOptions = .fromEnvironment(),
                            environment: [String: String] = ProcessInfo.processInfo.environment) throws -> RESTBackend {
        guard let c = URLComponents(string: url), let scheme = c.scheme, scheme == "http" || scheme == "https",
              let host = c.host, !host.isEmpty else {
            throw StorageError(.permanent, "invalid REST URL \"\(redact(url))\": expected rest:http(s)://[user:password@]host[:port]/path")
        }
        let hostPart = host.contains(":") ? "[\(host)]" : host
        let origin = "\(scheme)://\(hostPart)" + (c.port.map { ":\($0)" } ?? "")
        let transport = try AsyncHTTPTransport(origin: origin, options: options)
        let password = c.password ?? environment["LIFEBOAT_REST_PASSWORD"]
        return RESTBackend(transport: transport, basePath: c.percentEncodedPath, user: c.user, password: password,
                           location: "rest:\(origin)\(c.percentEncodedPath)")
    }

    /// The URL with any password replaced by `***`.
    public static func redact(_ url: String) -> String {
        guard var c = URLComponents(string: url), c.password != nil else { return url }
        c.password = "***"
        return c.string ?? url
    }

    func target(_ h: Handle) -> String {
        h.type == .config ? "\(basePath)/config" : "\(basePath)/\(h.type.rawValue)/\(h.name)"
    }

    func send(_ method: String, _ target: String, headers: [(String, String)] = [], body: Data? = nil) async throws -> HTTPResponseSpec {
        var h = headers
        if let authorization { h.append(("Authorization", authorization)) }
        return try await transport.send(HTTPRequestSpec(method: method, target: target, headers: h, body: body))
    }

    func check(_ r: HTTPResponseSpec, _ what: String, ok: ClosedRange<Int> = 200...299) throws {
        guard ok.contains(r.status) else { throw StorageError.fromHTTP(r, what, server: transport.origin) }
    }

    public func create() async throws {
        let r = try await send("POST", "\(basePath)/?create=true")
        try check(r, "create repository \(location)")
    }

    public func list(_ type: ObjectType) async throws -> [ObjectInfo] {
        if type == .config {
            return (try? await stat(.config)).map { [$0] } ?? []
        }
        let r = try await send("GET", "\(basePath)/\(type.rawValue)/", headers: [("Accept", RESTBackend.v2)])
        if r.status == 404 { return [] }
        try check(r, "list \(type.rawValue)")
        struct Entry: Decodable { var name: String; var size: Int }
        if (r.header("Content-Type") ?? "").contains(RESTBackend.v2) {
            guard let entries = try? JSONDecoder().decode([Entry].self, from: r.body) else {
                throw StorageError(.transient, "list \(type.rawValue): \(transport.origin) sent an unreadable listing")
            }
            return entries.map { ObjectInfo(name: $0.name, size: $0.size) }
        }
        // Protocol version 1 servers list names only.
        guard let names = try? JSONDecoder().decode([String].self, from: r.body) else {
            throw StorageError(.transient, "list \(type.rawValue): \(transport.origin) sent an unreadable listing")
        }
        var out: [ObjectInfo] = []
        for n in names { out.append(try await stat(Handle(type, n))) }
        return out
    }

    public func stat(_ handle: Handle) async throws -> ObjectInfo {
        let r = try await send("HEAD", target(handle))
        try check(r, "stat \(handle)")
        guard let size = r.header("Content-Length").flatMap(Int.init) else {
            throw StorageError(.transient, "stat \(handle): \(transport.origin) sent no Content-Length")
        }
        return ObjectInfo(name: handle.name, size: size)
    }

    public func read(_ handle: Handle, range: Range<Int>?) async throws -> Data {
        var headers: [(String, String)] = []
        if let range {
            if range.isEmpty {
                _ = try await stat(handle)
                return Data()
            }
            headers.append(rangeHeader(range))
        }
        let r = try await send("GET", target(handle), headers: headers)
        try check(r, "read \(handle)")
        return try r.rangedBody(range, "\(handle)")
    }

    public func write(_ handle: Handle, data: Data) async throws {
        let r = try await send("POST", target(handle), headers: [("Content-Type", "application/octet-stream")], body: data)
        try check(r, "write \(handle)")
    }

    public func delete(_ handle: Handle) async throws {
        let r = try await send("DELETE", target(handle))
        try check(r, "delete \(handle)")
    }
}
