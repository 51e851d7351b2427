import Foundation
import LifeboatCore
import LifeboatHA
import LifeboatHTTP
import Synchronization

/// One key of etcd as a range read returns it.
public struct EtcdKV: Sendable, Equatable {
    public var key: String
    public var value: [UInt8]
    public var createRevision: Int64
    public var modRevision: Int64
    public var version: Int64
    /// The lease it lives on (0: none).
    public var lease: Int64
    public init(key: String, value: [UInt8], createRevision: Int64 = 0, modRevision: Int64 = 0, version: Int64 = 0, lease: Int64 = 0) {
        self.key = key; self.value = value; self.createRevision = createRevision; self.modRevision = modRevision
        self.version = version; self.lease = lease
    }
}

/// What an etcd request can end in, besides an answer.
public struct EtcdError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable { case unreachable, refused, malformed }
    public var kind: Kind
    public var message: String
    public init(_ kind: Kind, _ message: String) { self.kind = kind; self.message = message }
    public var description: String { message }
}

/// A client of etcd v3 through its JSON gateway (etcd 3.4: `/v3/kv/*`, `/v3/lease/*`): the few calls HA needs.
/// Several endpoints are tried in turn, starting at the one that answered last; every request is bounded by
/// `timeout` (connect and stall). Answers are size-bounded and checked field by field: a hostile or broken
/// endpoint gets an error, never a crash.
public final class EtcdClient: Sendable {
    public let endpoints: [String]
    let transports: [any HTTPTransport]
    let current = Mutex(0)
    /// At most this many bytes in an answer (a cluster's keys are a few kilobytes).
    static let maxAnswer = 16 << 20

    /// - Parameter endpoints: `http://host:port` (or https), at least one.
    public init(endpoints: [String], timeout: Double) throws {
        guard !endpoints.isEmpty, endpoints.count <= 16 else { throw LifeboatError.invalid("ha.etcd.endpoints: give 1 to 16 endpoints") }
        var t: [any HTTPTransport] = []
        for e in endpoints {
            guard HAConfig.validEndpoint(e) else {
                throw LifeboatError.invalid("ha.etcd.endpoints: \"\(e.prefix(100))\" is not an http://host:port address")
            }
            var o = HTTPOptions()
            o.connectTimeout = timeout
            o.readTimeout = timeout
            o.connections = 2
            o.maxBody = Self.maxAnswer
            let origin = e.hasSuffix("/") ? String(e.dropLast()) : e
            t.append(try AsyncHTTPTransport(origin: origin, options: o))
        }
        self.endpoints = endpoints
        transports = t
    }

    public func shutdown() async {
        for t in transports { await t.shutdown() }
    }

    /// POSTs `body` to `path` at the endpoint that answered last, then at each other in turn; an endpoint that
    /// cannot be reached or answers 5xx passes the request on. 4xx is the request's fault: refused at once.
    func call(_ path: String, _ body: [String: Any]) async throws -> [String: Any] {
        let data = try JSONSerialization.data(withJSONObject: body)
        let start = current.withLock { $0 }
        var failures: [String] = []
        for k in 0..<transports.count {
            let i = (start + k) % transports.count
            let t = transports[i]
            do {
                let r = try await t.send(HTTPRequestSpec(method: "POST", target: path, headers: [("Content-Type", "application/json")], body: data))
                guard r.body.count <= Self.maxAnswer else { throw EtcdError(.malformed, "\(t.origin)\(path): an answer of \(r.body.count) bytes") }
                if r.status >= 500 { failures.append("\(t.origin): HTTP \(r.status) \(Self.message(r.body))"); continue }
                guard r.status == 200 else {
                    throw EtcdError(.refused, "etcd at \(t.origin) refused \(path): HTTP \(r.status) \(Self.message(r.body))")
                }
                guard let obj = (try? JSONSerialization.jsonObject(with: r.body)) as? [String: Any] else {
                    throw EtcdError(.malformed, "etcd at \(t.origin) answered \(path) with something that is not a JSON object")
                }
                current.withLock { $0 = i }
                return obj
            } catch let e as EtcdError {
                throw e
            } catch {
                failures.append("\(t.origin): \(error)")
            }
        }
        throw EtcdError(.unreachable, "no etcd endpoint answered \(path): \(failures.joined(separator: "; "))")
    }

    static func message(_ body: Data) -> String {
        let o = (try? JSONSerialization.jsonObject(with: body)) as? [String: Any]
        let m = (o?["message"] as? String) ?? (o?["error"] as? String) ?? String(decoding: body.prefix(200), as: UTF8.self)
        return String(m.prefix(300))
    }

    // MARK: leases

    /// Grants a lease of `ttl` seconds: its ID and the TTL granted.
    public func grant(ttl: Int) async throws -> (id: Int64, ttl: Int) {
        let o = try await call("/v3/lease/grant", ["TTL": String(ttl)])
        guard let id = Self.int(o["ID"]), id != 0, let granted = Self.int(o["TTL"]), granted > 0 else {
            throw EtcdError(.malformed, "etcd granted no lease: \(Self.errorText(o))")
        }
        return (id, Int(clamping: granted))
    }

    /// Renews a lease: the TTL it has again, or 0 when it is gone (expired or revoked).
    public func keepAlive(_ id: Int64) async throws -> Int {
        let o = try await call("/v3/lease/keepalive", ["ID": String(id)])
        guard let r = o["result"] as? [String: Any] else { throw EtcdError(.malformed, "etcd answered a keepalive without a result: \(Self.errorText(o))") }
        return Int(clamping: max(0, Self.int(r["TTL"]) ?? 0))
    }

    public func revoke(_ id: Int64) async throws {
        _ = try await call("/v3/lease/revoke", ["ID": String(id)])
    }

    // MARK: keys

    /// Every key under `prefix` (at most `limit`), and the store's revision at that read.
    public func range(prefix: String, limit: Int = 1000) async throws -> (revision: Int64, kvs: [EtcdKV], more: Bool) {
        let o = try await call("/v3/kv/range", ["key": Self.b64(prefix), "range_end": Data(Self.prefixEnd(prefix)).base64EncodedString(), "limit": String(limit)])
        guard let header = o["header"] as? [String: Any], let revision = Self.int(header["revision"]) else {
            throw EtcdError(.malformed, "etcd answered a range read without a revision")
        }
        var out: [EtcdKV] = []
        for case let kv as [String: Any] in (o["kvs"] as? [Any] ?? []).prefix(limit) {
            guard let k = (kv["key"] as? String).flatMap({ Data(base64Encoded: $0) }) else { continue }
            let v = (kv["value"] as? String).flatMap { Data(base64Encoded: $0) } ?? Data()
            out.append(EtcdKV(key: String(decoding: k, as: UTF8.self), value: [UInt8](v), createRevision: Self.int(kv["create_revision"]) ?? 0,
                              modRevision: Self.int(kv["mod_revision"]) ?? 0, version: Self.int(kv["version"]) ?? 0, lease: Self.int(kv["lease"]) ?? 0))
        }
        return (revision, out, (o["more"] as? Bool) ?? false)
    }

    /// Writes `key` only if it does not exist. True when this write won.
    public func createIfAbsent(_ key: String, _ value: [UInt8], lease: Int64 = 0) async throws -> Bool {
        try await txn([["key": Self.b64(key), "target": "VERSION", "result": "EQUAL", "version": "0"]], put(key, value, lease))
    }

    /// Writes `key` only if its modification revision is still `revision`. True when this write won.
    public func putIfRevision(_ key: String, _ value: [UInt8], lease: Int64 = 0, revision: Int64) async throws -> Bool {
        try await txn([["key": Self.b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": String(revision)]], put(key, value, lease))
    }

    /// Writes `key` only if it holds `expected` now (and exists). True when this write won.
    public func putIfValue(_ key: String, _ value: [UInt8], lease: Int64 = 0, expected: [UInt8]) async throws -> Bool {
        try await txn([["key": Self.b64(key), "target": "VALUE", "result": "EQUAL", "value": Data(expected).base64EncodedString()]], put(key, value, lease))
    }

    /// Writes `key` only if another key, `guardKey`, holds `expected` now. True when this write won.
    public func putIf(_ key: String, _ value: [UInt8], lease: Int64 = 0, guardKey: String, holds expected: [UInt8]) async throws -> Bool {
        try await txn([["key": Self.b64(guardKey), "target": "VALUE", "result": "EQUAL", "value": Data(expected).base64EncodedString()]], put(key, value, lease))
    }

    public func put(_ key: String, _ value: [UInt8], lease: Int64 = 0) async throws {
        _ = try await call("/v3/kv/put", putRequest(key, value, lease))
    }

    /// Deletes `key` only if it holds `expected`. True when it did.
    public func deleteIfValue(_ key: String, expected: [UInt8]) async throws -> Bool {
        try await txn([["key": Self.b64(key), "target": "VALUE", "result": "EQUAL", "value": Data(expected).base64EncodedString()]],
                      ["requestDeleteRange": ["key": Self.b64(key)]])
    }

    /// Deletes `key` only if another key, `guardKey`, holds `expected` now. True when the condition held.
    public func deleteIf(_ key: String, guardKey: String, holds expected: [UInt8]) async throws -> Bool {
        try await txn([["key": Self.b64(guardKey), "target": "VALUE", "result": "EQUAL", "value": Data(expected).base64EncodedString()]],
                      ["requestDeleteRange": ["key": Self.b64(key)]])
    }

    public func delete(_ key: String) async throws {
        _ = try await call("/v3/kv/deleterange", ["key": Self.b64(key)])
    }

    /// A put's body (`/v3/kv/put`, or inside a transaction as `requestPut`).
    func putRequest(_ key: String, _ value: [UInt8], _ lease: Int64) -> [String: Any] {
        var p: [String: Any] = ["key": Self.b64(key), "value": Data(value).base64EncodedString()]
        if lease != 0 { p["lease"] = String(lease) }
        return p
    }

    func put(_ key: String, _ value: [UInt8], _ lease: Int64) -> [String: Any] { ["requestPut": putRequest(key, value, lease)] }

    func txn(_ compare: [[String: Any]], _ success: [String: Any]) async throws -> Bool {
        let o = try await call("/v3/kv/txn", ["compare": compare, "success": [success]])
        guard o["header"] is [String: Any] else { throw EtcdError(.malformed, "etcd answered a transaction without a header: \(Self.errorText(o))") }
        return (o["succeeded"] as? Bool) ?? false
    }

    // MARK: encoding

    static func b64(_ s: String) -> String { Data(s.utf8).base64EncodedString() }

    /// The end of the range of keys that start with `prefix`: the prefix with its last byte incremented.
    static func prefixEnd(_ prefix: String) -> [UInt8] {
        var b = Array(prefix.utf8)
        while let last = b.last {
            if last < 0xFF { b[b.count - 1] = last + 1; return b }
            b.removeLast()
        }
        return [0]  // every key
    }

    /// int64 fields come as JSON strings from the gateway (numbers are accepted too).
    static func int(_ v: Any?) -> Int64? {
        if let s = v as? String { return Int64(s) }
        if let n = v as? Int { return Int64(n) }
        return nil
    }

    static func errorText(_ o: [String: Any]) -> String {
        String(((o["error"] as? String) ?? (o["message"] as? String) ?? "no error given").prefix(300))
    }
}
