import Crypto
import Foundation
import Glibc
import Hummingbird
import LifeboatCore
import LifeboatStorage
import Logging
import NIOCore
import Synchronization

/// Settings of `lifeboat serve`; the names follow restic's rest-server.
public struct ServeOptions: Sendable {
    /// The folder that holds the repositories.
    public var path: String
    /// Users and passwords; nil only with `noAuth`.
    public var htpasswd: Htpasswd?
    /// Each user may use only repositories under `/USER/`.
    public var privateRepos = false
    /// No deletes or overwrites, except of lock files.
    public var appendOnly = false
    /// Refuse writes once the folder holds this many bytes.
    public var maxSize: Int? = nil
    /// Serve `/metrics`.
    public var prometheus = false
    /// `/metrics` without credentials.
    public var prometheusNoAuth = false
    /// Check that each upload's SHA-256 matches its name (all objects but `config`).
    public var verifyUploads = true

    public init(path: String) {
        var p = path
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        self.path = p
    }
}

/// The restic REST protocol (v1 and v2) over a folder of repositories, as a Hummingbird responder.
///
/// Every request is authenticated first (HTTP Basic against the htpasswd file), then its path is
/// split into a repository path and an object; names are checked before any file is touched:
/// repository path segments are `[A-Za-z0-9_-][A-Za-z0-9._-]*` and object names are 64 lowercase hex
/// digits, so no request can reach outside the folder. Uploads stream to a temporary file, are
/// checked against their name (SHA-256 of the content) and become visible only once durable.
public struct RepositoryServer: HTTPResponder {
    public typealias Context = BasicRequestContext
    public let options: ServeOptions
    public let metrics = ServerMetrics()
    let used = UsageCounter()

    public init(options: ServeOptions) {
        self.options = options
    }

    struct Reply: Error {
        var status: HTTPResponse.Status
        var message: String
        init(_ status: HTTPResponse.Status, _ message: String) { self.status = status; self.message = message }
    }

    enum Target {
        case repository(String)
        case config(String)
        case list(String, ObjectType)
        case object(String, Handle)
        case metrics
    }

    public func respond(to request: Request, context: Context) async throws -> Response {
        var repoLabel = ""
        var typeLabel = ""
        do {
            // --prometheus-no-auth: /metrics without credentials (with some, the caller's own scope applies).
            let anonymousMetrics = options.prometheusNoAuth && request.uri.path == "/metrics" && request.headers[.authorization] == nil
            let user = anonymousMetrics ? nil : try authenticate(request)
            let target = try parse(request.uri.path)
            switch target {
            case .metrics:
                guard options.prometheus else { throw Reply(.notFound, "not found") }
                if !options.prometheusNoAuth && options.htpasswd != nil && user == nil { throw Reply(.unauthorized, "credentials required") }
                return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                                body: .init(byteBuffer: ByteBuffer(string: metrics.render(metricsScope(user)))))
            case .repository(let r), .config(let r), .list(let r, _), .object(let r, _):
                try authorize(user: user, repo: r)
                // Only after authorization: a refused request names no repository in the metrics.
                repoLabel = r.isEmpty ? "/" : r
            }
            if case .list(_, let t) = target { typeLabel = t.rawValue }
            if case .object(_, let h) = target { typeLabel = h.type.rawValue }
            if case .config = target { typeLabel = "config" }
            let response = try await handle(request, target)
            metrics.count(repo: repoLabel, method: request.method.rawValue, type: typeLabel, status: Int(response.status.code))
            return response
        } catch let r as Reply {
            metrics.count(repo: repoLabel, method: request.method.rawValue, type: typeLabel, status: Int(r.status.code))
            var headers: HTTPFields = [.contentType: "text/plain; charset=utf-8"]
            if r.status == .unauthorized { headers[.wwwAuthenticate] = "Basic realm=\"lifeboat\"" }
            return Response(status: r.status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: r.message + "\n")))
        } catch let e as StorageError {
            // The storage's message names files on the server: it goes to the log, never to the client.
            let status: HTTPResponse.Status
            let message: String
            switch e.kind {
            case .notFound: (status, message) = (.notFound, "not found")
            case .invalidRange: (status, message) = (.rangeNotSatisfiable, "the range is outside the object")
            default: (status, message) = (.internalServerError, "storage error (the server's log has the details)")
            }
            metrics.count(repo: repoLabel, method: request.method.rawValue, type: typeLabel, status: Int(status.code))
            if status == .internalServerError { context.logger.error("\(request.method) \(request.uri.path): \(e.message)") }
            return Response(status: status, headers: [.contentType: "text/plain; charset=utf-8"],
                            body: .init(byteBuffer: ByteBuffer(string: message + "\n")))
        } catch {
            // Anything else (a client that went away mid-upload, an unexpected failure): logged, not shown.
            metrics.count(repo: repoLabel, method: request.method.rawValue, type: typeLabel, status: 500)
            context.logger.error("\(request.method) \(request.uri.path): \(error)")
            return Response(status: .internalServerError, headers: [.contentType: "text/plain; charset=utf-8"],
                            body: .init(byteBuffer: ByteBuffer(string: "internal error (the server's log has the details)\n")))
        }
    }

    /// What `/metrics` shows to `user`: with private repositories, each user sees only the series of their own
    /// repositories, and a caller without credentials (`--prometheus-no-auth`) sees totals without repository
    /// names. Without private repositories every user may use every repository, and sees all of them.
    func metricsScope(_ user: String?) -> MetricsScope {
        guard options.privateRepos else { return .all }
        return user.map { .user($0) } ?? .totals
    }

    // MARK: authentication and paths

    func authenticate(_ request: Request) throws -> String? {
        guard let htpasswd = options.htpasswd else { return nil }
        guard let header = request.headers[.authorization], header.hasPrefix("Basic "),
              let decoded = Data(base64Encoded: String(header.dropFirst(6))),
              let text = String(data: decoded, encoding: .utf8), let colon = text.firstIndex(of: ":") else {
            throw Reply(.unauthorized, "credentials required")
        }
        // bcrypt reads a password as a C string: "secret\0junk" would pass as "secret". No NUL, anywhere.
        guard !decoded.contains(0) else { throw Reply(.unauthorized, "wrong user or password") }
        let user = String(text[..<colon])
        guard htpasswd.verify(user: user, password: String(text[text.index(after: colon)...])) else {
            throw Reply(.unauthorized, "wrong user or password")
        }
        return user
    }

    func authorize(user: String?, repo: String) throws {
        guard options.privateRepos else { return }
        guard let user else { throw Reply(.forbidden, "private repositories need credentials") }
        let first = repo.split(separator: "/").first.map(String.init)
        guard first == user else { throw Reply(.forbidden, "user \(user) may only use repositories under /\(user)/") }
    }

    static func validSegment(_ s: Substring) -> Bool {
        guard let f = s.utf8.first, f != UInt8(ascii: "."), s.utf8.count <= 255 else { return false }
        return s.utf8.allSatisfy { c in
            (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 45 || c == 95 || c == 46
        }
    }

    static func validObjectName(_ s: Substring) -> Bool {
        s.utf8.count == 64 && s.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    func parse(_ path: String) throws -> Target {
        if path == "/metrics" { return .metrics }
        guard path.hasPrefix("/") else { throw Reply(.badRequest, "bad path") }
        let trailingSlash = path.hasSuffix("/")
        var segs = path.split(separator: "/", omittingEmptySubsequences: true)
        if path.contains("//") { throw Reply(.badRequest, "bad path") }
        let typeNames = Set(ObjectType.allCases.map(\.rawValue))
        func repoPath(_ s: ArraySlice<Substring>) throws -> String {
            for seg in s where !RepositoryServer.validSegment(seg) || typeNames.contains(String(seg)) {
                throw Reply(.badRequest, "invalid repository path")
            }
            return s.joined(separator: "/")
        }
        if let last = segs.last, last == "config", !trailingSlash {
            return .config(try repoPath(segs.dropLast()[...]))
        }
        if trailingSlash, let last = segs.last, let t = ObjectType(rawValue: String(last)), t != .config {
            return .list(try repoPath(segs.dropLast()[...]), t)
        }
        if !trailingSlash, segs.count >= 2, let t = ObjectType(rawValue: String(segs[segs.count - 2])), t != .config {
            let name = segs.removeLast()
            segs.removeLast()
            guard RepositoryServer.validObjectName(name) else { throw Reply(.badRequest, "invalid object name") }
            return .object(try repoPath(segs[...]), Handle(t, String(name)))
        }
        return .repository(try repoPath(segs[...]))
    }

    // MARK: operations

    func backend(_ repo: String) -> LocalBackend {
        LocalBackend(path: repo.isEmpty ? options.path : "\(options.path)/\(repo)")
    }

    func repositoryExists(_ repo: String) -> Bool {
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: backend(repo).root, isDirectory: &isDir) && isDir.boolValue
    }

    func handle(_ request: Request, _ target: Target) async throws -> Response {
        let method = request.method
        switch target {
        case .metrics:
            throw Reply(.notFound, "not found")
        case .repository(let repo):
            guard method == .post, request.uri.queryParameters["create"] == "true" else {
                throw Reply(.methodNotAllowed, "only POST ?create=true is allowed on a repository")
            }
            do { try backend(repo).createLayout() } catch let e as StorageError {
                // The message names the folder on the server: logged by respond(), not sent.
                throw StorageError(e.kind == .notFound ? .permanent : e.kind, "cannot create the repository: \(e.message)")
            }
            return Response(status: .ok)
        case .list(let repo, let type):
            guard method == .get else { throw Reply(.methodNotAllowed, "only GET lists") }
            guard repositoryExists(repo) else { throw Reply(.notFound, "no such repository") }
            let items = try await backend(repo).list(type).filter { RepositoryServer.validObjectName(Substring($0.name)) }
            let accept = request.headers[.accept] ?? ""
            if accept.contains("application/vnd.x.restic.rest.v2") {
                let body = "[" + items.map { "{\"name\":\"\($0.name)\",\"size\":\($0.size)}" }.joined(separator: ",") + "]"
                return Response(status: .ok, headers: [.contentType: "application/vnd.x.restic.rest.v2"],
                                body: .init(byteBuffer: ByteBuffer(string: body)))
            }
            let body = "[" + items.map { "\"\($0.name)\"" }.joined(separator: ",") + "]"
            return Response(status: .ok, headers: [.contentType: "application/vnd.x.restic.rest.v1"],
                            body: .init(byteBuffer: ByteBuffer(string: body)))
        case .config(let repo):
            return try await object(request, repo, .config)
        case .object(let repo, let handle):
            return try await object(request, repo, handle)
        }
    }

    func object(_ request: Request, _ repo: String, _ handle: Handle) async throws -> Response {
        guard repositoryExists(repo) else { throw Reply(.notFound, "no such repository") }
        let b = backend(repo)
        switch request.method {
        case .head:
            let info = try await b.stat(handle)
            return Response(status: .ok, headers: [.contentLength: "\(info.size)"])
        case .get:
            return try await get(request, b, handle, repo)
        case .post:
            return try await post(request, b, handle, repo)
        case .delete:
            if options.appendOnly && handle.type != .locks {
                throw Reply(.forbidden, "the server is append-only: deleting \(handle.type.rawValue) is not allowed")
            }
            let size = (try? await b.stat(handle))?.size ?? 0
            try await b.delete(handle)
            used.value.withLock { u in if let v = u { u = max(0, v - size) } }
            return Response(status: .ok)
        default:
            throw Reply(.methodNotAllowed, "method not allowed")
        }
    }

    func get(_ request: Request, _ b: LocalBackend, _ handle: Handle, _ repo: String) async throws -> Response {
        let size = try await b.stat(handle).size
        var range = 0..<size
        var status = HTTPResponse.Status.ok
        var headers: HTTPFields = [.contentType: "application/octet-stream"]
        if let spec = request.headers[.range] {
            guard let r = RepositoryServer.parseRange(spec, size: size) else {
                return Response(status: .rangeNotSatisfiable, headers: [.contentRange: "bytes */\(size)"])
            }
            range = r
            status = .partialContent
            headers[.contentRange] = "bytes \(r.lowerBound)-\(r.upperBound - 1)/\(size)"
        }
        headers[.contentLength] = "\(range.count)"
        metrics.addRead(repo: repo.isEmpty ? "/" : repo, type: handle.type.rawValue, bytes: range.count)
        let chunk = 1 << 20
        let range0 = range
        let body = ResponseBody(contentLength: range.count) { writer in
            let range = range0
            var offset = range.lowerBound
            while offset < range.upperBound {
                let n = min(chunk, range.upperBound - offset)
                let data = try await b.read(handle, range: offset..<(offset + n))
                try await writer.write(ByteBuffer(data: data))
                offset += n
            }
            try await writer.finish(nil)
        }
        return Response(status: status, headers: headers, body: body)
    }

    /// The part of an object of `size` bytes that a `Range` header asks for, or nil when it cannot be served
    /// (answered 416): `HTTPRange.parse` (LifeboatCore, fuzzed), which never overflows on any number.
    public static func parseRange(_ spec: String, size: Int) -> Range<Int>? { HTTPRange.parse(spec, size: size) }

    func currentUsage() -> Int {
        if let u = used.value.withLock({ $0 }) { return u }
        let total = RepositoryServer.diskUsage(options.path)
        return used.value.withLock { u in
            if u == nil { u = total }
            return u!
        }
    }

    static func diskUsage(_ path: String) -> Int {
        guard let e = FileManager.default.enumerator(atPath: path) else { return 0 }
        var total = 0
        while e.nextObject() != nil {
            if let a = e.fileAttributes, a[.type] as? FileAttributeType == .typeRegular {
                total += (a[.size] as? Int) ?? 0
            }
        }
        return total
    }

    func post(_ request: Request, _ b: LocalBackend, _ handle: Handle, _ repo: String) async throws -> Response {
        let replace = !(options.appendOnly && handle.type != .locks)
        if !replace, (try? await b.stat(handle)) != nil {
            throw Reply(.forbidden, "the server is append-only: \(handle) exists and cannot be overwritten")
        }
        let declared = request.headers[.contentLength].flatMap(Int.init)
        // --max-size: room is reserved before any byte is written (the declared length at once, then as the body
        // grows), under the counter's lock, so uploads running side by side can never together pass the limit.
        let quota = options.maxSize
        var reserved = 0
        var previous = 0
        if let quota {
            _ = currentUsage()
            if replace { previous = (try? await b.stat(handle))?.size ?? 0 }
            if let declared, declared > 0 {
                guard used.reserve(declared, within: quota) else { throw RepositoryServer.full(quota) }
                reserved = declared
            }
        }
        var hasher = SHA256()
        var written = 0
        do {
            try await b.write(handle, replace: replace) { sink in
                for try await buffer in request.body {
                    if let quota, sink.count + buffer.readableBytes > reserved {
                        let more = sink.count + buffer.readableBytes - reserved
                        guard used.reserve(more, within: quota) else { throw RepositoryServer.full(quota) }
                        reserved += more
                    }
                    try buffer.withUnsafeReadableBytes { raw in
                        hasher.update(bufferPointer: raw)
                        try sink.write(raw)
                    }
                }
                written = sink.count
                if let declared, declared != written { throw Reply(.badRequest, "the body is shorter than its Content-Length") }
                if handle.type != .config && options.verifyUploads {
                    let digest = hasher.finalize().map { String(format: "%02x", $0) }.joined()
                    guard digest == handle.name else {
                        throw Reply(.badRequest, "the content does not match its name (SHA-256 \(digest))")
                    }
                }
            }
        } catch {
            if quota != nil { used.release(reserved) }
            if let e = error as? StorageError, !replace, e.kind == .permanent, e.message.hasSuffix("already exists") {
                throw Reply(.forbidden, "the server is append-only: \(handle) exists and cannot be overwritten")
            }
            throw error
        }
        // The reservation becomes the object; an object it replaced no longer counts.
        if quota != nil { used.release(reserved - written + previous) }
        metrics.addWritten(repo: repo.isEmpty ? "/" : repo, type: handle.type.rawValue, bytes: written)
        return Response(status: .ok)
    }

    static func full(_ quota: Int) -> Reply {
        Reply(.contentTooLarge, "the server's size limit (\(quota) bytes) would be exceeded")
    }
}

/// Which series of `/metrics` a caller sees.
public enum MetricsScope: Sendable, Equatable {
    /// Every repository's series.
    case all
    /// Only the series of repositories under `/USER/` (private repositories).
    case user(String)
    /// Sums over all repositories, without their names.
    case totals
}

/// Prometheus counters of the server (text exposition format).
public final class ServerMetrics: Sendable {
    struct Key: Hashable { var repo: String; var method: String; var type: String; var status: Int }
    struct State {
        var requests: [Key: Int] = [:]
        var read: [[String]: Int] = [:]
        var written: [[String]: Int] = [:]
    }
    let state = Mutex(State())
    /// Distinct series kept per family; requests for more repositories are counted under `repo="(other)"`, so
    /// clients asking for ever new names cannot make the server's memory grow without bound.
    static let maxSeries = 10_000
    static let other = "(other)"

    func count(repo: String, method: String, type: String, status: Int) {
        state.withLock { s in
            var k = Key(repo: repo, method: method, type: type, status: status)
            if s.requests[k] == nil && s.requests.count >= ServerMetrics.maxSeries { k.repo = ServerMetrics.other }
            s.requests[k, default: 0] += 1
        }
    }
    func addRead(repo: String, type: String, bytes: Int) { state.withLock { ServerMetrics.add(&$0.read, repo, type, bytes) } }
    func addWritten(repo: String, type: String, bytes: Int) { state.withLock { ServerMetrics.add(&$0.written, repo, type, bytes) } }

    static func add(_ d: inout [[String]: Int], _ repo: String, _ type: String, _ bytes: Int) {
        var k = [repo, type]
        if d[k] == nil && d.count >= maxSeries { k[0] = other }
        d[k, default: 0] &+= bytes
    }

    static func label(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }

    /// The `repo="…",` label of a series in `scope`: "" for totals, nil when the caller may not see it.
    static func repoLabel(_ repo: String, _ scope: MetricsScope) -> String? {
        switch scope {
        case .all: return "repo=\"\(label(repo))\","
        case .totals: return ""
        case .user(let u): return repo.split(separator: "/").first == Substring(u) ? "repo=\"\(label(repo))\"," : nil
        }
    }

    public func render(_ scope: MetricsScope = .all) -> String {
        let s = state.withLock { $0 }
        // Series by their rendered labels (summed: totals merge repositories).
        func lines(_ name: String, _ series: [String: Int]) -> String {
            series.sorted { $0.key < $1.key }.map { "\(name)\($0.key.isEmpty ? "" : "{\($0.key)}") \($0.value)\n" }.joined()
        }
        func trim(_ labels: String) -> String { labels.hasSuffix(",") ? String(labels.dropLast()) : labels }
        var requests: [String: Int] = [:], errors: [String: Int] = [:]
        for (k, v) in s.requests {
            guard let r = ServerMetrics.repoLabel(k.repo, scope) else { continue }
            requests["\(r)method=\"\(k.method)\",type=\"\(k.type)\",code=\"\(k.status)\"", default: 0] &+= v
            if k.status >= 400 { errors[trim(r), default: 0] &+= v }
        }
        var out = "# HELP lifeboat_serve_requests_total Requests served, by repository, method, object type and status.\n"
        out += "# TYPE lifeboat_serve_requests_total counter\n"
        out += lines("lifeboat_serve_requests_total", requests)
        out += "# HELP lifeboat_serve_errors_total Requests answered with a status of 400 or more, by repository.\n"
        out += "# TYPE lifeboat_serve_errors_total counter\n"
        out += lines("lifeboat_serve_errors_total", errors)
        for (name, help, dict) in [("lifeboat_serve_read_bytes_total", "Object bytes sent", s.read),
                                   ("lifeboat_serve_written_bytes_total", "Object bytes stored", s.written)] {
            out += "# HELP \(name) \(help), by repository and object type.\n# TYPE \(name) counter\n"
            var series: [String: Int] = [:]
            for (k, v) in dict {
                guard let r = ServerMetrics.repoLabel(k[0], scope) else { continue }
                series["\(r)type=\"\(k[1])\"", default: 0] &+= v
            }
            out += lines(name, series)
        }
        return out
    }
}

/// Bytes stored under the served folder (computed on first need, then kept up to date), uploads in progress
/// counted with the room they reserved.
final class UsageCounter: Sendable {
    let value = Mutex<Int?>(nil)

    /// Adds `n` bytes if the total stays within `limit` (before the first computation, nothing is counted).
    func reserve(_ n: Int, within limit: Int) -> Bool {
        value.withLock { u in
            guard let v = u else { return true }
            let (total, overflow) = v.addingReportingOverflow(n)
            guard !overflow, total <= limit else { return false }
            u = total
            return true
        }
    }

    /// Gives back `n` bytes (never below zero).
    func release(_ n: Int) {
        value.withLock { u in if let v = u { u = max(0, v - n) } }
    }
}
