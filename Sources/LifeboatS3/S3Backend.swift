import Crypto
import Foundation
import LifeboatCore
import LifeboatHTTP
import LifeboatStorage
import Synchronization

/// Errors found before any request is sent.
public enum S3Error: Error, CustomStringConvertible {
    case noCredentials(profile: String, file: String)
    case invalidURL(String)

    public var description: String {
        switch self {
        case .noCredentials(let profile, let file):
            return "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or add profile [\(profile)] to \(file)"
        case .invalidURL(let u):
            return "invalid S3 location \"\(u)\": use s3:https://HOST[:PORT]/BUCKET[/PREFIX] or s3:BUCKET[/PREFIX] (AWS)"
        }
    }
}

/// S3 Object Lock retention for written objects (all but lock files).
public struct ObjectLock: Sendable {
    public enum Mode: String, Sendable { case governance = "GOVERNANCE", compliance = "COMPLIANCE" }
    public var days: Int
    public var mode: Mode
    public init(days: Int, mode: Mode) { self.days = days; self.mode = mode }
}

/// A repository in an S3 bucket (AWS, MinIO, Ceph, Wasabi, B2's S3 API, …).
///
/// Layout under the prefix, as for a local folder: `config`, `keys/ID`, `index/ID`, `snapshots/ID`,
/// `locks/ID`, `data/XX/ID`. Objects are written with one PUT carrying `Content-MD5` and the signed
/// SHA-256 of the body, so S3 rejects anything damaged in transit; packs are at most 512 MiB (the
/// repository's limit), far below the 5 GiB a single PUT allows.
public struct S3Backend: Backend {
    public let transport: any HTTPTransport
    public let bucket: String
    /// Empty or ending with `/`.
    public let prefix: String
    public let pathStyle: Bool
    public let host: String
    public let signer: SigV4Signer
    public let objectLock: ObjectLock?
    public let location: String
    /// Uploads in flight (`LIFEBOAT_CONNECTIONS`, default 4).
    public var writeConcurrency: Int = max(1, HTTPOptions.fromEnvironment().connections - 1)
    /// The bucket as it was at this time (`--s3-as-of`): each key is the newest version written at or before it,
    /// read by version ID, so what a delete (or an attacker's delete marker) hid since comes back. Read-only.
    public let asOf: Date?
    let catalog: VersionCatalog?

    public init(transport: any HTTPTransport, host: String, bucket: String, prefix: String, pathStyle: Bool,
                signer: SigV4Signer, objectLock: ObjectLock? = nil, asOf: Date? = nil) {
        self.transport = transport
        self.host = host
        self.bucket = bucket
        var p = prefix
        while p.hasPrefix("/") { p.removeFirst() }
        while p.hasSuffix("/") { p.removeLast() }
        self.prefix = p.isEmpty ? "" : p + "/"
        self.pathStyle = pathStyle
        self.signer = signer
        self.objectLock = objectLock
        self.asOf = asOf
        catalog = asOf.map { _ in VersionCatalog() }
        location = "s3:\(transport.origin)/\(bucket)/\(p)" + (asOf.map { " as of \(Timestamp.format($0).prefix(23))Z" } ?? "")
    }

    /// Parses a location (after `s3:`): `https://HOST[:PORT]/BUCKET[/PREFIX]` (path-style requests,
    /// unless `LIFEBOAT_S3_BUCKET_LOOKUP=dns`), `HOST/BUCKET[/PREFIX]` when the first part has a dot
    /// (HTTPS), or `BUCKET[/PREFIX]` for AWS in the configured region (virtual-host-style).
    public static func make(_ spec: String, options: HTTPOptions = .fromEnvironment(), objectLock: ObjectLock? = nil, asOf: Date? = nil,
                            environment env: [String: String] = ProcessInfo.processInfo.environment) throws -> S3Backend {
        let credentials = try AWSConfig.credentials(environment: env)
        let region = AWSConfig.region(environment: env)
        var rest = spec
        var scheme = "https"
        var hostPort: String
        var pathStyle = true
        if let r = rest.range(of: "://") {
            scheme = String(rest[..<r.lowerBound])
            guard scheme == "http" || scheme == "https" else { throw S3Error.invalidURL(spec) }
            rest = String(rest[r.upperBound...])
            guard let slash = rest.firstIndex(of: "/") else { throw S3Error.invalidURL(spec) }
            hostPort = String(rest[..<slash])
            rest = String(rest[rest.index(after: slash)...])
        } else if let slash = rest.firstIndex(of: "/"), rest[..<slash].contains(".") || rest[..<slash].contains(":") {
            hostPort = String(rest[..<slash])
            rest = String(rest[rest.index(after: slash)...])
        } else {
            hostPort = region == "us-east-1" ? "s3.amazonaws.com" : "s3.\(region).amazonaws.com"
            pathStyle = false
        }
        if let lookup = env["LIFEBOAT_S3_BUCKET_LOOKUP"] { pathStyle = lookup != "dns" }
        let parts = rest.split(separator: "/", maxSplits: 1)
        guard let b = parts.first, !b.isEmpty, !hostPort.isEmpty else { throw S3Error.invalidURL(spec) }
        let bucket = String(b)
        let prefix = parts.count > 1 ? String(parts[1]) : ""
        let host = pathStyle ? hostPort : "\(bucket).\(hostPort)"
        let transport = try AsyncHTTPTransport(origin: "\(scheme)://\(host)", options: options)
        return S3Backend(transport: transport, host: host, bucket: bucket, prefix: prefix, pathStyle: pathStyle,
                         signer: SigV4Signer(credentials: credentials, region: region), objectLock: objectLock, asOf: asOf)
    }

    // MARK: requests

    func key(_ h: Handle) -> String {
        switch h.type {
        case .config: return prefix + "config"
        case .data: return prefix + "data/\(h.name.prefix(2))/\(h.name)"
        default: return prefix + "\(h.type.rawValue)/\(h.name)"
        }
    }

    /// The request target for a key (nil: the bucket itself) and a query.
    func target(_ key: String?, query: String = "") -> String {
        var path = pathStyle ? "/\(percentEncode(bucket))" : ""
        if let key { path += "/" + percentEncode(key, keepSlash: true) } else if !pathStyle || path.isEmpty { path += "/" }
        return query.isEmpty ? path : "\(path)?\(query)"
    }

    func send(_ method: String, _ target: String, headers: [(String, String)] = [], body: Data? = nil) async throws -> HTTPResponseSpec {
        let signed = signer.sign(method: method, host: host, target: target, headers: headers, body: body)
        return try await transport.send(HTTPRequestSpec(method: method, target: target, headers: signed, body: body))
    }

    /// Turns an S3 error response into a storage error with a message that names the cause.
    func failure(_ r: HTTPResponseSpec, _ what: String) -> StorageError {
        let text = String(decoding: r.body, as: UTF8.self)
        let code = XML.values("Code", in: text).first ?? ""
        let message = XML.values("Message", in: text).first ?? ""
        switch code {
        case "NoSuchBucket":
            return StorageError(.permanent, "\(what): the bucket \"\(bucket)\" does not exist on \(transport.origin) (create it, or run `lifeboat init`)")
        case "InvalidAccessKeyId":
            return StorageError(.permanent, "\(what): the access key \(signer.credentials.accessKeyID) is not known to \(transport.origin): check AWS_ACCESS_KEY_ID")
        case "SignatureDoesNotMatch":
            return StorageError(.permanent, "\(what): the signature was rejected: check AWS_SECRET_ACCESS_KEY")
        case "AccessDenied":
            return StorageError(.permanent, "\(what): access denied by \(transport.origin)\(message.isEmpty ? "" : " (\(message))"): check the credentials and the bucket policy")
        case "RequestTimeTooSkewed":
            return StorageError(.permanent, "\(what): this machine's clock differs too much from the server's: fix the clock (NTP)")
        case "SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout":
            return StorageError(.transient, "\(what): \(transport.origin) answered \(r.status) \(code)")
        case "InvalidRange":
            return StorageError(.invalidRange, "\(what): range not satisfiable")
        case "NoSuchKey":
            return StorageError(.notFound, "\(what): not found")
        default:
            if r.status == 403 {
                return StorageError(.permanent, "\(what): access denied by \(transport.origin) (403 \(code)): check the credentials")
            }
            var e = StorageError.fromHTTP(r, what, server: transport.origin)
            if !code.isEmpty { e.message = "\(what): \(transport.origin) answered \(r.status) \(code)\(message.isEmpty ? "" : ": \(message)")" }
            return e
        }
    }

    // MARK: Backend

    /// Creates the bucket if it does not exist (with Object Lock enabled when retention is asked for).
    public func create() async throws {
        if asOf != nil { throw readOnly("create the bucket") }
        let head = try await send("HEAD", target(nil))
        if (200...299).contains(head.status) { return }
        if head.status != 404 {
            if head.status == 403 { throw StorageError(.permanent, "access to the bucket \"\(bucket)\" was denied: check the credentials") }
            throw StorageError.fromHTTP(head, "check bucket \(bucket)", server: transport.origin)
        }
        var headers: [(String, String)] = []
        if objectLock != nil { headers.append(("x-amz-bucket-object-lock-enabled", "true")) }
        var body: Data? = nil
        if signer.region != "us-east-1" {
            body = Data("<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>\(signer.region)</LocationConstraint></CreateBucketConfiguration>".utf8)
        }
        let r = try await send("PUT", target(nil), headers: headers, body: body)
        if !(200...299).contains(r.status) {
            let e = failure(r, "create bucket \(bucket)")
            if e.message.contains("BucketAlreadyOwnedByYou") { return }
            throw e
        }
    }

    public func list(_ type: ObjectType) async throws -> [ObjectInfo] {
        if type == .config {
            return (try? await stat(.config)).map { [$0] } ?? []
        }
        let listPrefix = prefix + type.rawValue + "/"
        if let asOf, let catalog {
            return try await catalog.resolved(listPrefix) { try await self.versionsAsOf(listPrefix, asOf) }.compactMap { key, v in
                let name = key.split(separator: "/").last.map(String.init) ?? key
                return name.hasPrefix(".") ? nil : ObjectInfo(name: name, size: v.size)
            }
        }
        var out: [ObjectInfo] = []
        var token: String? = nil
        repeat {
            // Slashes stay literal in the URL (the signature's canonical form encodes them either way);
            // some S3 implementations (moto) mis-verify signatures when the URL carries %2F.
            var query = "list-type=2&prefix=\(percentEncode(listPrefix, keepSlash: true))"
            if let token { query += "&continuation-token=\(percentEncode(token))" }
            let r = try await send("GET", target(nil, query: query))
            guard r.status == 200 else { throw failure(r, "list \(type.rawValue)") }
            let text = String(decoding: r.body, as: UTF8.self)
            for item in XML.elements("Contents", in: text) {
                guard let key = XML.values("Key", in: item).first, let size = XML.values("Size", in: item).first.flatMap(Int.init) else { continue }
                let name = key.split(separator: "/").last.map(String.init) ?? key
                if name.hasPrefix(".") { continue }
                out.append(ObjectInfo(name: name, size: size))
            }
            let truncated = XML.values("IsTruncated", in: text).first == "true"
            token = truncated ? XML.values("NextContinuationToken", in: text).first : nil
            if truncated && token == nil { throw StorageError(.transient, "list \(type.rawValue): truncated listing without a continuation token") }
        } while token != nil
        return out
    }

    public func stat(_ handle: Handle) async throws -> ObjectInfo {
        if asOf != nil { return ObjectInfo(name: handle.name, size: try await version(handle).size) }
        let r = try await send("HEAD", target(key(handle)))
        if r.status == 404 && handle.type == .config {
            // A HEAD answer has no body to tell a missing key from a missing bucket: ask about the bucket.
            let b = try await send("HEAD", target(nil))
            if b.status == 404 {
                throw StorageError(.permanent, "the bucket \"\(bucket)\" does not exist on \(transport.origin) (create it, or run `lifeboat init`)")
            }
        }
        guard r.status == 200 else { throw failure(r, "stat \(handle)") }
        guard let size = r.header("Content-Length").flatMap(Int.init) else {
            throw StorageError(.transient, "stat \(handle): no Content-Length")
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
        var query = ""
        // "null" is the ID of what was written before versioning was enabled: it is asked for by that name too.
        if asOf != nil, let v = try await version(handle).versionID { query = "versionId=\(percentEncode(v))" }
        let r = try await send("GET", target(key(handle), query: query), headers: headers)
        guard r.status == 200 || r.status == 206 else { throw failure(r, "read \(handle)") }
        return try r.rangedBody(range, "\(handle)")
    }

    public func write(_ handle: Handle, data: Data) async throws {
        if asOf != nil { throw readOnly("write \(handle)") }
        var headers: [(String, String)] = [
            ("Content-Type", "application/octet-stream"),
            ("Content-MD5", Data(Insecure.MD5.hash(data: data)).base64EncodedString()),
        ]
        if let lock = objectLock, handle.type != .locks {
            let until = Date().addingTimeInterval(Double(lock.days) * 86400)
            let f = ISO8601DateFormatter()
            f.formatOptions = [.withInternetDateTime]
            headers.append(("x-amz-object-lock-mode", lock.mode.rawValue))
            headers.append(("x-amz-object-lock-retain-until-date", f.string(from: until)))
        }
        let r = try await send("PUT", target(key(handle)), headers: headers, body: data)
        guard (200...299).contains(r.status) else { throw failure(r, "write \(handle)") }
    }

    /// S3 answers a DELETE of a missing key with success, so the key is looked up first to keep the
    /// contract (`notFound`).
    public func delete(_ handle: Handle) async throws {
        if asOf != nil { throw readOnly("delete \(handle)") }
        _ = try await stat(handle)
        let r = try await send("DELETE", target(key(handle)))
        guard (200...299).contains(r.status) else { throw failure(r, "delete \(handle)") }
    }
}

// MARK: object versions (`--s3-as-of`, the ransomware drill)

/// One version of a key, or a delete marker, as ListObjectVersions names it.
public struct ObjectVersion: Sendable, Equatable {
    public var key: String
    /// The server's ID: `null` for what was written before versioning was enabled; nil when the answer names none.
    public var versionID: String?
    public var deleteMarker: Bool
    public var lastModified: Date
    public var size: Int
    public init(key: String, versionID: String?, deleteMarker: Bool, lastModified: Date, size: Int) {
        self.key = key; self.versionID = versionID; self.deleteMarker = deleteMarker; self.lastModified = lastModified; self.size = size
    }
}

extension S3Backend {
    /// A listing of versions stops after this many pages (1,000 entries each): 100 million versions.
    static let maxVersionPages = 100_000

    /// Every version and delete marker of every key under the repository's prefix followed by `under`, in the
    /// server's order (by key, newest first), over as many requests as the listing takes (at most `maxVersions`).
    public func versions(under: String = "") async throws -> [ObjectVersion] {
        var out: [ObjectVersion] = []
        try await forEachVersionPage(prefix + under) { page in
            out += page
            guard out.count <= S3Backend.maxVersions else {
                throw StorageError(.permanent, "list versions under \(prefix + under): more than \(S3Backend.maxVersions) versions")
            }
        }
        return out
    }

    /// At most this many versions are collected in one list (`versions(under:)`); resolving a point in time keeps
    /// one entry per key instead.
    static let maxVersions = 10_000_000

    /// Calls `body` with each page of ListObjectVersions under `listPrefix`; a page that fails is retried (3 tries).
    func forEachVersionPage(_ listPrefix: String, _ body: ([ObjectVersion]) throws -> Void) async throws {
        var marker: (key: String, version: String)? = nil
        var pages = 0
        repeat {
            var query = "versions=&prefix=\(percentEncode(listPrefix, keepSlash: true))"
            if let marker {
                query += "&key-marker=\(percentEncode(marker.key, keepSlash: true))"
                if !marker.version.isEmpty { query += "&version-id-marker=\(percentEncode(marker.version))" }
            }
            var attempt = 0
            var response: HTTPResponseSpec
            while true {
                attempt += 1
                do {
                    response = try await send("GET", target(nil, query: query))
                    if response.status == 200 { break }
                    let e = failure(response, "list versions under \(listPrefix.isEmpty ? "/" : listPrefix)")
                    guard e.kind == .transient, attempt < 3 else { throw e }
                } catch let e as StorageError where e.kind == .transient && attempt < 3 {
                    _ = e
                }
                try await Task.sleep(for: .milliseconds(200 * attempt))
            }
            let page = S3Backend.parseVersions(String(decoding: response.body, as: UTF8.self))
            try body(page.entries)
            pages += 1
            guard page.truncated else { break }
            guard let next = page.next, next.key != marker?.key || next.version != marker?.version else {
                throw StorageError(.transient, "list versions under \(listPrefix): a truncated listing without a new marker")
            }
            guard pages < S3Backend.maxVersionPages else {
                throw StorageError(.permanent, "list versions under \(listPrefix): more than \(S3Backend.maxVersionPages) pages")
            }
            marker = next
        } while true
    }

    /// One page of a ListObjectVersions answer: `Version` and `DeleteMarker` entries in their order, and the markers
    /// of the next page. Entries with a key, a time or a size that does not parse are left out.
    static func parseVersions(_ text: String) -> (entries: [ObjectVersion], truncated: Bool, next: (key: String, version: String)?) {
        var entries: [ObjectVersion] = []
        var rest = text[...]
        // The next of each kind is found once and kept until consumed: one pass over the page.
        var nextVersion = rest.range(of: "<Version>"), nextMarker = rest.range(of: "<DeleteMarker>")
        while true {
            guard let open = [nextVersion, nextMarker].compactMap({ $0 }).min(by: { $0.lowerBound < $1.lowerBound }) else { break }
            let isMarker = open == nextMarker
            guard let close = rest.range(of: isMarker ? "</DeleteMarker>" : "</Version>", range: open.upperBound..<rest.endIndex) else { break }
            let body = rest[open.upperBound..<close.lowerBound]
            rest = rest[close.upperBound...]
            if isMarker || (nextMarker.map { $0.lowerBound < close.upperBound } ?? false) { nextMarker = rest.range(of: "<DeleteMarker>") }
            if !isMarker || (nextVersion.map { $0.lowerBound < close.upperBound } ?? false) { nextVersion = rest.range(of: "<Version>") }
            guard let key = XML.values("Key", in: body).first, !key.isEmpty,
                  let time = XML.values("LastModified", in: body).first.flatMap(Timestamp.parse) else { continue }
            let size = isMarker ? 0 : (XML.values("Size", in: body).first.flatMap { Int($0) } ?? -1)
            guard size >= 0 else { continue }
            let id = XML.values("VersionId", in: body).first
            entries.append(ObjectVersion(key: key, versionID: id.flatMap { $0.isEmpty ? nil : $0 }, deleteMarker: isMarker,
                                         lastModified: time, size: size))
        }
        let truncated = XML.values("IsTruncated", in: text).first == "true"
        let next = XML.values("NextKeyMarker", in: text).first.map { ($0, XML.values("NextVersionIdMarker", in: text).first ?? "") }
        return (entries, truncated, next)
    }

    /// What each key was at `asOf`: its newest version written at or before that time, unless that is a delete
    /// marker (the key did not exist then). Of entries with the same time, the one the server lists first (newer) wins.
    public static func resolve(_ versions: [ObjectVersion], asOf: Date) -> [String: ObjectVersion] {
        var best: [String: ObjectVersion] = [:]
        keepNewest(versions, asOf: asOf, in: &best)
        return best.filter { !$0.value.deleteMarker }
    }

    /// Folds one page into `best`: per key, the newest entry (version or marker) at or before `asOf`.
    static func keepNewest(_ page: [ObjectVersion], asOf: Date, in best: inout [String: ObjectVersion]) {
        for v in page where v.lastModified <= asOf {
            if let b = best[v.key], b.lastModified >= v.lastModified { continue }
            best[v.key] = v
        }
    }

    /// The point in time of a folder, page by page: one entry per key is kept, never the whole history.
    func versionsAsOf(_ listPrefix: String, _ asOf: Date) async throws -> [String: ObjectVersion] {
        var best: [String: ObjectVersion] = [:]
        try await forEachVersionPage(listPrefix) { page in S3Backend.keepNewest(page, asOf: asOf, in: &best) }
        return best.filter { !$0.value.deleteMarker }
    }

    /// The version of `handle` at `asOf`: the whole folder of its type is listed once and kept.
    func version(_ handle: Handle) async throws -> ObjectVersion {
        guard let asOf, let catalog else { throw StorageError(.permanent, "no point in time is set") }
        let k = key(handle)
        let folder = handle.type == .config ? k : prefix + handle.type.rawValue + "/"
        let map = try await catalog.resolved(folder) { try await self.versionsAsOf(folder, asOf) }
        guard let v = map[k] else { throw StorageError(.notFound, "\(handle): not found as of \(Timestamp.format(asOf))") }
        return v
    }

    func readOnly(_ what: String) -> StorageError {
        StorageError(.permanent, "\(what): the repository is opened as of \(Timestamp.format(asOf ?? Date())) (--s3-as-of) and is read-only")
    }

    /// Deletes one version of a key for good (refused by S3 while Object Lock retains it). `bypassGovernance` sends
    /// `x-amz-bypass-governance-retention`, as an attacker holding `s3:BypassGovernanceRetention` would.
    public func deleteVersion(_ v: ObjectVersion, bypassGovernance: Bool = false) async throws {
        let query = "versionId=\(percentEncode(v.versionID ?? "null"))"
        let r = try await send("DELETE", target(v.key, query: query), headers: bypassGovernance ? [("x-amz-bypass-governance-retention", "true")] : [])
        guard (200...299).contains(r.status) else { throw failure(r, "delete \(v.key) version \(v.versionID ?? "null")") }
    }
}

/// The versions of each folder at the point in time, listed once per folder and shared by concurrent readers.
final class VersionCatalog: Sendable {
    let folders = Mutex<[String: Task<[String: ObjectVersion], any Error>]>([:])

    func resolved(_ folder: String, _ load: @escaping @Sendable () async throws -> [String: ObjectVersion]) async throws -> [String: ObjectVersion] {
        let task = folders.withLock { f in
            if let t = f[folder] { return t }
            let t = Task { try await load() }
            f[folder] = t
            return t
        }
        do { return try await task.value } catch {
            // A failed listing is tried again by the next caller (the retrying decorator above retries it).
            folders.withLock { f in if f[folder] == task { f[folder] = nil } }
            throw error
        }
    }
}

/// Just enough XML for S3's answers: the text of simple elements, entities decoded.
enum XML {
    /// The inner text of every `<tag>…</tag>` (no attributes, no nesting of the same tag).
    static func elements(_ tag: String, in text: String) -> [Substring] {
        var out: [Substring] = []
        let open = "<\(tag)>", close = "</\(tag)>"
        var rest = text[...]
        while let a = rest.range(of: open), let b = rest.range(of: close, range: a.upperBound..<rest.endIndex) {
            out.append(rest[a.upperBound..<b.lowerBound])
            rest = rest[b.upperBound...]
        }
        return out
    }

    static func values(_ tag: String, in text: some StringProtocol) -> [String] {
        elements(tag, in: String(text)).map { unescape(String($0)) }
    }

    static func unescape(_ s: String) -> String {
        guard s.contains("&") else { return s }
        var out = ""
        var i = s.startIndex
        while i < s.endIndex {
            if s[i] == "&", let semi = s[i...].firstIndex(of: ";") {
                let entity = s[s.index(after: i)..<semi]
                var replacement: String?
                switch entity {
                case "amp": replacement = "&"
                case "lt": replacement = "<"
                case "gt": replacement = ">"
                case "quot": replacement = "\""
                case "apos": replacement = "'"
                default:
                    if entity.hasPrefix("#x"), let v = UInt32(entity.dropFirst(2), radix: 16), let u = Unicode.Scalar(v) { replacement = String(u) }
                    else if entity.hasPrefix("#"), let v = UInt32(entity.dropFirst()), let u = Unicode.Scalar(v) { replacement = String(u) }
                }
                if let replacement {
                    out += replacement
                    i = s.index(after: semi)
                    continue
                }
            }
            out.append(s[i])
            i = s.index(after: i)
        }
        return out
    }
}
