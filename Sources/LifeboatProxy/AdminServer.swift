import Foundation
import Hummingbird
import LifeboatConfig
import LifeboatCore
import LifeboatFailover
import Logging
import NIOCore

/// The admin API of `lifeboat proxy` (HTTP on its own port).
///
/// - `GET /status`: every pool and backend (state, since, last check and its latency, connections, flags).
/// - `POST /pools/{pool}/backends/{backend}/{disable|enable|drain|undrain}`
/// - `POST /pools/{pool}/promote/{backend}`: make it the serving backend now (failover pools).
/// - `POST /pools/{pool}/backends/{backend}/fault?kind=latency&ms=N|bandwidth&bytes_per_second=N|reset|blackhole&seconds=N`:
///   a fault on that backend's new connections for N seconds (at most an hour); `DELETE` on the same path ends it.
/// - `GET /metrics`: Prometheus text.
///
/// With `token_file`, every request needs `Authorization: Bearer <token>`. Without one the API must listen
/// on a loopback address (checked at start), so only local clients reach it.
public struct AdminServer: Sendable {
    let server: ProxyServer
    let token: String?
    let listen: Endpoint
    /// What is bound: the checked loopback address without a token, else the configured host.
    let bindHost: String

    public init(server: ProxyServer, listen: Endpoint, tokenFile: String?) throws {
        self.server = server
        self.listen = listen
        if let f = tokenFile {
            guard let d = FileManager.default.contents(atPath: f),
                  case let t = String(decoding: d, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines), !t.isEmpty else {
                throw ConfigError("admin", nil, "cannot read a token from \(f)")
            }
            token = t
            bindHost = listen.host
        } else {
            // The address the name resolves to is what gets bound, and what must be loopback: a name such as
            // 127.example.com can point anywhere.
            let address = try? SocketAddress.makeAddressResolvingHost(listen.host, port: listen.port)
            guard let ip = address?.ipAddress, Endpoint.isLoopback(ip: ip) else {
                let resolved = address?.ipAddress.map { " (\($0))" } ?? " (it does not resolve)"
                throw ConfigError("admin", nil, "admin.listen \(listen)\(resolved) is not a loopback address (127.0.0.0/8 or ::1): "
                                  + "listen on one, or set admin.token_file")
            }
            bindHost = ip
            token = nil
        }
    }

    /// The same endpoints inside another API (the agent's, under `/proxy/`), which does its own authentication.
    public init(embeddedIn server: ProxyServer) {
        self.server = server
        listen = Endpoint(host: "127.0.0.1", port: 0)
        bindHost = "127.0.0.1"
        token = nil
    }

    struct Problem: Error { var status: HTTPResponse.Status; var message: String }

    func respond(_ request: Request) async throws -> Response {
        if let token, !constantTimeEqual(Array((request.headers[.authorization] ?? "").utf8), Array("Bearer \(token)".utf8)) {
            return text(.unauthorized, "a bearer token is required\n")
        }
        return try await respond(request, parts: request.uri.path.split(separator: "/").map(String.init))
    }

    /// Answers a request whose path, split at "/", is `parts` (after any prefix of the embedding API).
    public func respond(_ request: Request, parts: [String]) async throws -> Response {
        let pools = server.pools
        do {
            switch (request.method, parts.count) {
            case (.get, 1) where parts[0] == "status":
                return json(["pools": pools.map(AdminServer.status)])  // one object, lists inside (issue 12)
            case (.get, 1) where parts[0] == "metrics":
                return text(.ok, ProxyMetrics.render(pools), contentType: "text/plain; version=0.0.4")
            case (.post, 4) where parts[0] == "pools" && parts[2] == "promote":
                let pool = try find(parts[1], in: pools)
                guard pool.config.mode == .failover else { throw Problem(status: .badRequest, message: "promote applies to failover pools") }
                guard let sw = pool.promote(parts[3]) else {
                    throw Problem(status: .conflict, message: "\(parts[3]) is unknown, not healthy, or already serving")
                }
                return json(["old": sw.old ?? "", "new": sw.new ?? ""])
            case (.post, 5) where parts[0] == "pools" && parts[2] == "backends" && parts[4] == "fault":
                let pool = try find(parts[1], in: pools)
                let q = request.uri.queryParameters
                guard let seconds = q["seconds"].flatMap({ Double(String($0)) }), seconds > 0, seconds <= 3600 else {
                    throw Problem(status: .badRequest, message: "a fault needs seconds=N (at most 3600): faults always end")
                }
                let kind: Fault.Kind
                switch q["kind"].map(String.init) {
                case "latency":
                    guard let ms = q["ms"].flatMap({ Double(String($0)) }), ms > 0, ms <= 60_000 else { throw Problem(status: .badRequest, message: "latency needs ms=1..60000") }
                    kind = .latency(ms / 1000)
                case "bandwidth":
                    guard let r = q["bytes_per_second"].flatMap({ Int(String($0)) }), r > 0 else { throw Problem(status: .badRequest, message: "bandwidth needs bytes_per_second=N") }
                    kind = .bandwidth(r)
                case "reset": kind = .reset
                case "blackhole": kind = .blackhole
                default: throw Problem(status: .badRequest, message: "kind must be latency, bandwidth, reset or blackhole")
                }
                guard pool.setFault(parts[3], Fault(kind: kind, until: Date().addingTimeInterval(seconds))) else {
                    throw Problem(status: .notFound, message: "no backend \(parts[3]) in pool \(parts[1])")
                }
                return json(AdminServer.status(pool))
            case (.delete, 5) where parts[0] == "pools" && parts[2] == "backends" && parts[4] == "fault":
                let pool = try find(parts[1], in: pools)
                guard pool.setFault(parts[3], nil) else { throw Problem(status: .notFound, message: "no backend \(parts[3]) in pool \(parts[1])") }
                return json(AdminServer.status(pool))
            case (.post, 5) where parts[0] == "pools" && parts[2] == "backends":
                let pool = try find(parts[1], in: pools)
                let ok: Bool
                switch parts[4] {
                case "disable": ok = pool.setFlags(parts[3], disabled: true)
                case "enable": ok = pool.setFlags(parts[3], disabled: false, draining: false)
                case "drain": ok = pool.setFlags(parts[3], draining: true)
                case "undrain": ok = pool.setFlags(parts[3], draining: false)
                default: throw Problem(status: .notFound, message: "unknown action \(parts[4])")
                }
                guard ok else { throw Problem(status: .notFound, message: "no backend \(parts[3]) in pool \(parts[1])") }
                return json(AdminServer.status(pool))
            default:
                throw Problem(status: .notFound, message: "unknown endpoint")
            }
        } catch let p as Problem {
            return text(p.status, p.message + "\n")
        }
    }

    func find(_ name: String, in pools: [PoolController]) throws -> PoolController {
        guard let p = pools.first(where: { $0.config.name == name }) else { throw Problem(status: .notFound, message: "no pool \(name)") }
        return p
    }

    static func status(_ pool: PoolController) -> [String: Any] {
        let st = pool.status()
        let (c, s) = (st.config, st.state)
        return [
            "name": c.name, "listen": c.listen.description, "mode": c.mode.rawValue,
            "failback": c.failback.rawValue, "active": s.activeName ?? NSNull(), "switches": st.switches,
            "last_switch": st.lastSwitch.map { iso8601($0) } ?? NSNull(),
            "connections_total": st.accepted, "connections_refused_total": st.refused,
            "backends": s.members.enumerated().map { i, m -> [String: Any] in
                let x = st.backends[i]
                var b: [String: Any] = [
                    "name": m.name, "address": c.backends[i].address.description, "state": m.health.state.rawValue,
                    "since": iso8601(m.health.since), "connections": m.connections,
                    "disabled": m.health.disabled, "draining": m.health.draining, "priority": m.priority, "weight": m.weight,
                    "bytes_to_backend": x.bytesToBackend, "bytes_from_backend": x.bytesFromBackend,
                    "checks": x.checkLatency.count, "check_failures": x.checkFailures,
                ]
                if let f = x.fault {
                    b["fault"] = ["kind": f.name, "until": iso8601(f.until)]
                }
                if let c = m.health.lastCheck {
                    b["last_check"] = ["ok": c.ok, "latency_seconds": c.latency, "detail": c.detail,
                                       "at": iso8601(c.at)] as [String: Any]
                }
                return b
            },
        ]
    }

    func json(_ object: Any) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(data: data)))
    }

    func text(_ status: HTTPResponse.Status, _ s: String, contentType: String = "text/plain; charset=utf-8") -> Response {
        Response(status: status, headers: [.contentType: contentType], body: .init(byteBuffer: ByteBuffer(string: s)))
    }

    /// Serves until cancelled; `ready` receives the bound address.
    public func run(ready: @escaping @Sendable (String) -> Void) async throws {
        let me = self
        var logger = Logger(label: "lifeboat.proxy.admin")
        logger.logLevel = .warning
        let app = Application(
            responder: CallbackResponder<BasicRequestContext> { request, _ in try await me.respond(request) },
            configuration: .init(address: .hostname(bindHost, port: listen.port), serverName: "lifeboat-proxy"),
            onServerRunning: { ch in ready("\(ch.localAddress.map { "\($0)" } ?? me.listen.description)") },
            logger: logger)
        try await app.run()
    }
}

/// Prometheus text for the proxy.
public enum ProxyMetrics {
    public static func render(_ pools: [PoolController]) -> String {
        let all = pools.map { $0.status() }
        var out = ""
        func family(_ name: String, _ type: String, _ help: String) { out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n" }
        func perBackend(_ name: String, _ type: String, _ help: String,
                        _ value: (PoolController.Status, Int) -> String) {
            family(name, type, help)
            for st in all { for (i, m) in st.state.members.enumerated() {
                out += "\(name){pool=\"\(st.config.name)\",backend=\"\(m.name)\"} \(value(st, i))\n"
            } }
        }
        func perPool(_ name: String, _ type: String, _ help: String, _ value: (PoolController.Status) -> String) {
            family(name, type, help)
            for st in all { out += "\(name){pool=\"\(st.config.name)\"} \(value(st))\n" }
        }
        perBackend("lifeboat_proxy_backend_up", "gauge", "1 if the backend is up (health), 0 if down.") {
            $0.state.members[$1].health.state == .up ? "1" : "0"
        }
        perBackend("lifeboat_proxy_backend_active", "gauge", "1 for the backend a failover pool sends traffic to.") {
            $0.state.active == $1 ? "1" : "0"
        }
        perBackend("lifeboat_proxy_backend_connections", "gauge", "Open client connections per backend.") {
            "\($0.state.members[$1].connections)"
        }
        family("lifeboat_proxy_backend_bytes_total", "counter", "Bytes forwarded, by direction (to_backend: from clients).")
        for st in all { for (i, m) in st.state.members.enumerated() {
            let l = "pool=\"\(st.config.name)\",backend=\"\(m.name)\""
            out += "lifeboat_proxy_backend_bytes_total{\(l),direction=\"to_backend\"} \(st.backends[i].bytesToBackend)\n"
            out += "lifeboat_proxy_backend_bytes_total{\(l),direction=\"from_backend\"} \(st.backends[i].bytesFromBackend)\n"
        } }
        family("lifeboat_proxy_check_duration_seconds", "histogram", "Duration of health checks.")
        for st in all { for (i, m) in st.state.members.enumerated() {
            let l = "pool=\"\(st.config.name)\",backend=\"\(m.name)\""
            let h = st.backends[i].checkLatency
            for (le, n) in h.cumulative {
                out += "lifeboat_proxy_check_duration_seconds_bucket{\(l),le=\"\(le.isInfinite ? "+Inf" : "\(le)")\"} \(n)\n"
            }
            out += "lifeboat_proxy_check_duration_seconds_sum{\(l)} \(h.sum)\n"
            out += "lifeboat_proxy_check_duration_seconds_count{\(l)} \(h.count)\n"
        } }
        perBackend("lifeboat_proxy_check_failures_total", "counter", "Failed health checks.") { "\($0.backends[$1].checkFailures)" }
        perPool("lifeboat_proxy_connections_total", "counter", "Client connections forwarded to a backend.") { "\($0.accepted)" }
        perPool("lifeboat_proxy_connections_refused_total", "counter", "Client connections closed because no backend could serve.") {
            "\($0.refused)"
        }
        perPool("lifeboat_proxy_switches_total", "counter", "Changes of the serving backend.") { "\($0.switches)" }
        perPool("lifeboat_proxy_last_switch_timestamp_seconds", "gauge", "Unix time of the last switch (0: none).") {
            "\($0.lastSwitch.map { Int($0.timeIntervalSince1970) } ?? 0)"
        }
        return out
    }
}

func iso8601(_ d: Date) -> String { ISO8601DateFormatter().string(from: d) }
