import Foundation
import LifeboatConfig
import Yams

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

extension Endpoint {
    /// Whether `ip` is a loopback address written as one: 127.0.0.0/8, ::1, or 127.0.0.0/8 mapped into IPv6
    /// (::ffff:127.x.y.z). A host name is not an address and is never loopback here, whatever it begins with.
    public static func isLoopback(ip: String) -> Bool {
        var v4 = in_addr()
        if inet_pton(AF_INET, ip, &v4) == 1 { return UInt32(bigEndian: v4.s_addr) >> 24 == 127 }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, ip, &v6) == 1 else { return false }
        let b = withUnsafeBytes(of: &v6) { Array($0) }
        guard b.count == 16, b[0..<10].allSatisfy({ $0 == 0 }) else { return false }
        if b[10] == 0 && b[11] == 0 { return b[12..<15].allSatisfy { $0 == 0 } && b[15] == 1 }
        return b[10] == 0xff && b[11] == 0xff && b[12] == 127
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
    /// https: extra CA certificates (PEM) to trust, and whether to verify the certificate at all.
    public var caFile: String? = nil
    public var tlsVerify = true
    /// Check this port (and host) instead of the backend's address: route to a node's PostgreSQL while asking its
    /// HA API (`GET /primary` on port 8008), as HAProxy's `check port`/`addr`. A backend's own `check_port` and
    /// `check_address` win over these.
    public var port: Int? = nil
    public var address: String? = nil
    public init() {}
}

public struct BackendConfig: Sendable, Equatable {
    public var name: String
    public var address: Endpoint
    public var priority: Int
    public var weight: Int
    /// Drills may disable, promote or kill it (`chaos: true`); no drill touches another backend.
    public var chaos = false
    /// Where its health check goes, when not to `address` (see `CheckConfig.port`).
    public var checkPort: Int? = nil
    public var checkAddress: String? = nil

    public init(name: String, address: Endpoint, priority: Int, weight: Int, chaos: Bool = false, checkPort: Int? = nil, checkAddress: String? = nil) {
        self.name = name; self.address = address; self.priority = priority; self.weight = weight; self.chaos = chaos
        self.checkPort = checkPort; self.checkAddress = checkAddress
    }

    /// The endpoint its health check connects to.
    public func checkTarget(_ c: CheckConfig) -> Endpoint {
        Endpoint(host: checkAddress ?? c.address ?? address.host, port: checkPort ?? c.port ?? address.port)
    }
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
    /// How long SIGTERM waits for open connections to finish before closing them.
    public var drainTimeout = 30.0
    public var pools: [PoolConfig]

    public static func load(_ path: String) throws -> ProxyConfig {
        guard let data = FileManager.default.contents(atPath: path) else { throw ConfigError(path, nil, "cannot read the file") }
        return try parse(String(decoding: data, as: UTF8.self), path: path)
    }

    /// Parses and validates everything before anything starts: unknown keys, bad addresses, durations
    /// and numbers, duplicate names and listening ports are reported with their line and column.
    public static func parse(_ text: String, path: String) throws -> ProxyConfig {
        let y = YAMLReader(path: path)
        let (top, root) = try y.document(text, describedAs: "`pools:`")
        try y.keys(top, ["admin", "drain_timeout", "pools"])
        return try parse(top, root: root, reader: y)
    }

    /// The proxy's keys of a mapping: the proxy file's top, or the plan file's `proxy:` section.
    public static func parse(_ top: Yams.Node.Mapping, root: Yams.Node?, reader y: YAMLReader) throws -> ProxyConfig {
        var config = ProxyConfig(adminListen: nil, adminTokenFile: nil, pools: [])
        var listeners: [Endpoint: String] = [:]
        func claim(_ e: Endpoint, _ who: String, _ node: Yams.Node?) throws {
            for (other, owner) in listeners where other.port == e.port &&
                (other.host == e.host || ["0.0.0.0", "::"].contains(other.host) || ["0.0.0.0", "::"].contains(e.host)) {
                throw y.error(node, "\(who) listens on \(e), which \(owner) already uses")
            }
            listeners[e] = who
        }
        if let a = top["admin"] {
            let m = try y.mapping(a, "`admin:`")
            try y.keys(m, ["listen", "token_file"])
            let listen = try y.endpoint(m, "listen", owner: a)
            try claim(listen, "admin", m["listen"])
            config.adminListen = listen
            config.adminTokenFile = try y.string(m, "token_file")
        }
        config.drainTimeout = try y.duration(top, "drain_timeout", DurationLimits.drain) ?? config.drainTimeout
        guard let pools = top["pools"]?.sequence, !pools.isEmpty else {
            throw y.error(top["pools"] ?? root, "`pools:` must be a non-empty list")
        }
        for node in pools {
            let m = try y.mapping(node, "each pool")
            try y.keys(m, ["name", "listen", "mode", "failback", "check", "backends", "hooks"])
            let name = try y.string(m, "name", required: true, owner: node)!
            if config.pools.contains(where: { $0.name == name }) { throw y.error(m["name"], "duplicate pool name \"\(name)\"") }
            let listen = try y.endpoint(m, "listen", owner: node)
            try claim(listen, "pool \(name)", m["listen"])
            var check = CheckConfig()
            if let c = m["check"] {
                let cm = try y.mapping(c, "`check:`")
                try y.keys(cm, ["type", "interval", "timeout", "fall", "rise", "path", "expect_status", "expect_body", "command",
                                "ca_file", "tls_verify", "port", "address"])
                check.kind = try y.enumValue(cm, "type", CheckConfig.Kind.self) ?? .tcp
                check.interval = try y.duration(cm, "interval", DurationLimits.checkInterval) ?? check.interval
                check.timeout = try y.duration(cm, "timeout", DurationLimits.checkTimeout) ?? check.timeout
                check.fall = try y.int(cm, "fall", 1...100) ?? check.fall
                check.rise = try y.int(cm, "rise", 1...100) ?? check.rise
                check.path = try y.string(cm, "path") ?? check.path
                check.expectStatus = try y.int(cm, "expect_status", 100...599) ?? check.expectStatus
                check.expectBody = try y.string(cm, "expect_body")
                check.command = try y.strings(cm, "command") ?? []
                check.caFile = try y.string(cm, "ca_file")
                check.tlsVerify = try y.bool(cm, "tls_verify") ?? true
                check.port = try y.int(cm, "port", 1...65535)
                check.address = try y.checkHost(cm, "address")
                if let ca = check.caFile, !FileManager.default.isReadableFile(atPath: ca) {
                    throw y.error(cm["ca_file"], "cannot read the CA file \(ca)")
                }
                if (check.caFile != nil || !check.tlsVerify) && check.kind != .https {
                    throw y.error(cm["ca_file"] ?? cm["tls_verify"], "ca_file and tls_verify apply to https checks")
                }
                if check.kind == .exec && check.command.isEmpty {
                    throw y.error(c, "an exec check needs `command: [program, args…]`")
                }
            }
            guard let list = m["backends"]?.sequence, !list.isEmpty else {
                throw y.error(m["backends"] ?? node, "pool \(name) needs a non-empty `backends:` list")
            }
            var backends: [BackendConfig] = []
            for (i, b) in list.enumerated() {
                let bm = try y.mapping(b, "each backend")
                try y.keys(bm, ["name", "address", "priority", "weight", "chaos", "check_port", "check_address"])
                let bname = try y.string(bm, "name") ?? "backend\(i + 1)"
                if backends.contains(where: { $0.name == bname }) { throw y.error(bm["name"], "duplicate backend name \"\(bname)\"") }
                backends.append(BackendConfig(name: bname, address: try y.endpoint(bm, "address", owner: b),
                                              priority: try y.int(bm, "priority", 0...1_000_000) ?? (i + 1),
                                              weight: try y.int(bm, "weight", 1...1000) ?? 1, chaos: try y.bool(bm, "chaos") ?? false,
                                              checkPort: try y.int(bm, "check_port", 1...65535), checkAddress: try y.checkHost(bm, "check_address")))
            }
            var onSwitch: [String]? = nil
            var hookTimeout = 10.0
            if let h = m["hooks"] {
                let hm = try y.mapping(h, "`hooks:`")
                try y.keys(hm, ["on_switch", "timeout"])
                onSwitch = try y.strings(hm, "on_switch")
                hookTimeout = try y.duration(hm, "timeout", DurationLimits.hookTimeout) ?? hookTimeout
            }
            config.pools.append(PoolConfig(name: name, listen: listen, mode: try y.enumValue(m, "mode", PoolMode.self) ?? .failover,
                                           failback: try y.enumValue(m, "failback", Failback.self) ?? .manual, check: check,
                                           backends: backends, onSwitch: onSwitch, hookTimeout: hookTimeout))
        }
        return config
    }
}

/// The durations the proxy file accepts, per key, in seconds. Anything outside (`1e300`, `inf`, `1e11`) is an
/// error at validation, with its line and column, so no timer or sleep ever gets a value it cannot hold.
public enum DurationLimits {
    /// `drain_timeout`: how long SIGTERM waits.
    public static let drain = 0.001...86_400.0
    /// `check.interval`.
    public static let checkInterval = 0.001...86_400.0
    /// `check.timeout` (also the connect timeout of client traffic).
    public static let checkTimeout = 0.001...3_600.0
    /// `hooks.timeout`.
    public static let hookTimeout = 0.001...86_400.0
}

extension YAMLReader {
    /// A host name or address for a check (`address`, `check_address`): what `Endpoint` accepts as a host.
    func checkHost(_ m: Yams.Node.Mapping, _ k: String) throws -> String? {
        guard let h = try string(m, k) else { return nil }
        guard Endpoint.parse(h.contains(":") ? "[\(h)]:1" : "\(h):1") != nil else {
            throw error(m[k], "`\(k)`: \"\(h.prefix(80))\" is not a host name or address")
        }
        return h
    }

    public func endpoint(_ m: Yams.Node.Mapping, _ k: String, owner: Yams.Node?) throws -> Endpoint {
        let s = try string(m, k, required: true, owner: owner)!
        guard let e = Endpoint.parse(s) else { throw error(m[k], "`\(k)`: \"\(s)\" is not HOST:PORT (IPv6 as [ADDR]:PORT, port 1–65535)") }
        return e
    }
}
