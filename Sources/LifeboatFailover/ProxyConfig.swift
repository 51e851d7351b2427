import Foundation
import Yams

/// A problem in the proxy configuration, with file, line and column.
public struct ProxyConfigError: Error, CustomStringConvertible {
    public var description: String
    public init(_ file: String, _ mark: Mark?, _ message: String) {
        description = mark.map { "\(file):\($0.line):\($0.column): \(message)" } ?? "\(file): \(message)"
    }
}

/// `HOST:PORT` (IPv6 in brackets).
public struct Endpoint: Sendable, Equatable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public init(host: String, port: Int) { self.host = host; self.port = port }
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    public static func parse(_ s: String) -> Endpoint? {
        guard let colon = s.lastIndex(of: ":"), let port = Int(s[s.index(after: colon)...]), (1...65535).contains(port) else { return nil }
        var host = String(s[..<colon])
        if host.hasPrefix("[") {
            guard host.hasSuffix("]") else { return nil }
            host = String(host.dropFirst().dropLast())
        } else if host.contains(":") {
            return nil
        }
        guard !host.isEmpty, host.allSatisfy({ $0.isLetter || $0.isNumber || ".-:_".contains($0) }) else { return nil }
        return Endpoint(host: host, port: port)
    }
}

/// How a backend's health is checked.
public struct CheckConfig: Sendable, Equatable {
    public enum Kind: String, Sendable { case tcp, http, https, exec }
    public var kind: Kind = .tcp
    public var interval = 2.0
    public var timeout = 1.0
    public var fall = 3
    public var rise = 2
    /// http(s): path, expected status, optional body substring.
    public var path = "/"
    public var expectStatus = 200
    public var expectBody: String? = nil
    /// exec: a command (argv) run per check; `{host}` and `{port}` are replaced; exit 0 = healthy.
    public var command: [String] = []
}

public struct BackendConfig: Sendable, Equatable {
    public var name: String
    public var address: Endpoint
    public var priority: Int
    public var weight: Int
}

public struct PoolConfig: Sendable, Equatable {
    public var name: String
    public var listen: Endpoint
    public var mode: PoolMode
    public var failback: Failback
    public var check: CheckConfig
    public var backends: [BackendConfig]
    /// argv run when the serving backend changes; `{new}`, `{old}`, `{pool}` are replaced.
    public var onSwitch: [String]?
    public var hookTimeout: Double
}

public struct ProxyConfig: Sendable, Equatable {
    public var adminListen: Endpoint?
    public var adminTokenFile: String?
    public var pools: [PoolConfig]

    public static func load(_ path: String) throws -> ProxyConfig {
        guard let data = FileManager.default.contents(atPath: path) else { throw ProxyConfigError(path, nil, "cannot read the file") }
        return try parse(String(decoding: data, as: UTF8.self), path: path)
    }

    /// Parses and validates everything before anything starts: unknown keys, bad addresses, durations
    /// and numbers, duplicate names and listening ports are reported with their line and column.
    public static func parse(_ text: String, path: String) throws -> ProxyConfig {
        let root: Yams.Node?
        do { root = try Yams.compose(yaml: text) } catch {
            throw ProxyConfigError(path, nil, "not valid YAML: \(error)")
        }
        let p = Parser(path: path)
        guard let top = root?.mapping else { throw ProxyConfigError(path, root?.mark, "expected a mapping with `pools:`") }
        try p.keys(top, ["admin", "pools"])
        var config = ProxyConfig(adminListen: nil, adminTokenFile: nil, pools: [])
        var listeners: [Endpoint: String] = [:]
        func claim(_ e: Endpoint, _ who: String, _ mark: Mark?) throws {
            for (other, owner) in listeners where other.port == e.port &&
                (other.host == e.host || ["0.0.0.0", "::"].contains(other.host) || ["0.0.0.0", "::"].contains(e.host)) {
                throw ProxyConfigError(path, mark, "\(who) listens on \(e), which \(owner) already uses")
            }
            listeners[e] = who
        }
        if let a = top["admin"] {
            guard let m = a.mapping else { throw ProxyConfigError(path, a.mark, "`admin:` must be a mapping") }
            try p.keys(m, ["listen", "token_file"])
            config.adminListen = try p.endpoint(m, "listen", required: true)
            try claim(config.adminListen!, "admin", m["listen"]?.mark)
            config.adminTokenFile = try p.string(m, "token_file")
        }
        guard let pools = top["pools"]?.sequence, !pools.isEmpty else {
            throw ProxyConfigError(path, top["pools"]?.mark ?? root?.mark, "`pools:` must be a non-empty list")
        }
        for node in pools {
            guard let m = node.mapping else { throw ProxyConfigError(path, node.mark, "each pool is a mapping") }
            try p.keys(m, ["name", "listen", "mode", "failback", "check", "backends", "hooks"])
            let name = try p.string(m, "name", required: true)!
            if config.pools.contains(where: { $0.name == name }) { throw ProxyConfigError(path, m["name"]?.mark, "duplicate pool name \"\(name)\"") }
            let listen = try p.endpoint(m, "listen", required: true)!
            try claim(listen, "pool \(name)", m["listen"]?.mark)
            let mode = try p.enumValue(m, "mode", PoolMode.self) ?? .failover
            let failback = try p.enumValue(m, "failback", Failback.self) ?? .manual
            var check = CheckConfig()
            if let c = m["check"] {
                guard let cm = c.mapping else { throw ProxyConfigError(path, c.mark, "`check:` must be a mapping") }
                try p.keys(cm, ["type", "interval", "timeout", "fall", "rise", "path", "expect_status", "expect_body", "command"])
                check.kind = try p.enumValue(cm, "type", CheckConfig.Kind.self) ?? .tcp
                check.interval = try p.duration(cm, "interval") ?? check.interval
                check.timeout = try p.duration(cm, "timeout") ?? check.timeout
                check.fall = try p.int(cm, "fall", 1...100) ?? check.fall
                check.rise = try p.int(cm, "rise", 1...100) ?? check.rise
                check.path = try p.string(cm, "path") ?? check.path
                check.expectStatus = try p.int(cm, "expect_status", 100...599) ?? check.expectStatus
                check.expectBody = try p.string(cm, "expect_body")
                check.command = try p.strings(cm, "command") ?? []
                if check.kind == .exec && check.command.isEmpty {
                    throw ProxyConfigError(path, c.mark, "an exec check needs `command: [program, args…]`")
                }
            }
            guard let list = m["backends"]?.sequence, !list.isEmpty else {
                throw ProxyConfigError(path, m["backends"]?.mark ?? node.mark, "pool \(name) needs a non-empty `backends:` list")
            }
            var backends: [BackendConfig] = []
            for (i, b) in list.enumerated() {
                guard let bm = b.mapping else { throw ProxyConfigError(path, b.mark, "each backend is a mapping") }
                try p.keys(bm, ["name", "address", "priority", "weight"])
                let bname = try p.string(bm, "name") ?? "backend\(i + 1)"
                if backends.contains(where: { $0.name == bname }) { throw ProxyConfigError(path, bm["name"]?.mark, "duplicate backend name \"\(bname)\"") }
                backends.append(BackendConfig(name: bname, address: try p.endpoint(bm, "address", required: true)!,
                                              priority: try p.int(bm, "priority", 0...1_000_000) ?? (i + 1),
                                              weight: try p.int(bm, "weight", 1...1000) ?? 1))
            }
            var onSwitch: [String]? = nil
            var hookTimeout = 10.0
            if let h = m["hooks"] {
                guard let hm = h.mapping else { throw ProxyConfigError(path, h.mark, "`hooks:` must be a mapping") }
                try p.keys(hm, ["on_switch", "timeout"])
                onSwitch = try p.strings(hm, "on_switch")
                hookTimeout = try p.duration(hm, "timeout") ?? hookTimeout
            }
            config.pools.append(PoolConfig(name: name, listen: listen, mode: mode, failback: failback, check: check,
                                           backends: backends, onSwitch: onSwitch, hookTimeout: hookTimeout))
        }
        return config
    }
}

/// Typed reads from YAML mappings that fail with the position of the offending value.
struct Parser {
    let path: String

    func keys(_ m: Yams.Node.Mapping, _ allowed: [String]) throws {
        for k in m.keys where !allowed.contains(k.string ?? "") {
            throw ProxyConfigError(path, k.mark, "unknown key \"\(k.string ?? "?")\" (expected one of: \(allowed.joined(separator: ", ")))")
        }
    }

    func string(_ m: Yams.Node.Mapping, _ k: String, required: Bool = false) throws -> String? {
        guard let n = m[k] else {
            if required { throw ProxyConfigError(path, nil, "missing `\(k)`") }
            return nil
        }
        guard n.scalar != nil, let s = n.string, !s.isEmpty else { throw ProxyConfigError(path, n.mark, "`\(k)` must be a non-empty string") }
        return s
    }

    func strings(_ m: Yams.Node.Mapping, _ k: String) throws -> [String]? {
        guard let n = m[k] else { return nil }
        guard let seq = n.sequence, !seq.isEmpty else { throw ProxyConfigError(path, n.mark, "`\(k)` must be a list of strings") }
        return try seq.map { e in
            guard e.scalar != nil, let s = e.string else { throw ProxyConfigError(path, e.mark, "`\(k)` must be a list of strings") }
            return s
        }
    }

    func int(_ m: Yams.Node.Mapping, _ k: String, _ range: ClosedRange<Int>) throws -> Int? {
        guard let n = m[k] else { return nil }
        guard let v = n.int, range.contains(v) else { throw ProxyConfigError(path, n.mark, "`\(k)` must be an integer in \(range.lowerBound)…\(range.upperBound)") }
        return v
    }

    func endpoint(_ m: Yams.Node.Mapping, _ k: String, required: Bool) throws -> Endpoint? {
        guard let s = try string(m, k, required: required) else { return nil }
        guard let e = Endpoint.parse(s) else { throw ProxyConfigError(path, m[k]?.mark, "`\(k)`: \"\(s)\" is not HOST:PORT (IPv6 as [ADDR]:PORT, port 1–65535)") }
        return e
    }

    func enumValue<E: RawRepresentable>(_ m: Yams.Node.Mapping, _ k: String, _ type: E.Type) throws -> E? where E.RawValue == String {
        guard let s = try string(m, k) else { return nil }
        guard let v = E(rawValue: s) else { throw ProxyConfigError(path, m[k]?.mark, "`\(k)`: unknown value \"\(s)\"") }
        return v
    }

    func duration(_ m: Yams.Node.Mapping, _ k: String) throws -> Double? {
        guard let n = m[k] else { return nil }
        guard let s = n.string, let v = parseDuration(s), v > 0 else {
            throw ProxyConfigError(path, n.mark, "`\(k)` must be a duration such as 100ms, 2s or 1m")
        }
        return v
    }
}

/// `100ms`, `1.5s`, `2m`, `1h`, or a bare number of seconds.
public func parseDuration(_ s: String) -> Double? {
    let t = s.trimmingCharacters(in: .whitespaces)
    for (suffix, scale) in [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)] where t.hasSuffix(suffix) {
        return Double(t.dropLast(suffix.count)).map { $0 * scale }
    }
    return Double(t)
}
