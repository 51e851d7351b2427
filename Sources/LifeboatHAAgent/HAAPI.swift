import Foundation
import Hummingbird
import HummingbirdCore
import LifeboatCore
import LifeboatEtcd
import LifeboatFailover
import LifeboatHA
import LifeboatWAL
import Logging
import NIOCore

/// A node's REST API on `ha.node.api`, as Patroni's:
///
/// - `GET /primary` (also `/leader`, `/master`): 200 only on the node that holds the leader key on a lease renewed
///   in time and runs as primary or is being promoted (as Patroni's); 503 elsewhere. What a proxy's health check asks.
/// - `GET /replica`: 200 only on a running standby that streams and is within `maximum_lag_on_failover`.
/// - `GET /health`: 200 while the local PostgreSQL runs, whatever its role.
/// - `GET /cluster`: the members, the leader, maintenance and a switchover under way (JSON); `GET /status`: this
///   node's own status; `GET /metrics`: Prometheus text.
/// - `POST /switchover?to=NODE`, `DELETE /switchover`, `POST /pause`, `POST /resume`: need
///   `Authorization: Bearer TOKEN` (`token_file`); without one configured they are refused.
///
/// Reads need no credentials and answer nothing secret (no passwords, no connection strings).
public struct HAAPI: Sendable {
    let driver: HADriver
    let token: String?

    public init(driver: HADriver) throws {
        self.driver = driver
        token = try driver.config.tokenFile.map { try readPasswordFile($0, from: "ha.node.token_file") }
    }

    struct Problem: Error { var status: HTTPResponse.Status; var message: String }

    func respond(_ request: Request) async -> Response {
        let parts = request.uri.path.split(separator: "/").map(String.init)
        do {
            switch (request.method, parts.first ?? "") {
            case (.get, "primary"), (.get, "leader"), (.get, "master"), (.head, "primary"):
                let ok = driver.isWritablePrimary()
                return try json(driver.status, status: ok ? .ok : .serviceUnavailable)
            case (.get, "replica"), (.head, "replica"):
                let s = driver.status
                let ok = s.role == HARole.standby.rawValue && s.postgres == "running-standby" && s.streaming
                    && (s.lagBytes ?? .max) <= driver.config.settings.maximumLagOnFailover
                return try json(s, status: ok ? .ok : .serviceUnavailable)
            case (.get, "health"), (.head, "health"):
                let s = driver.status
                return try json(s, status: s.postgres.hasPrefix("running") ? .ok : .serviceUnavailable)
            case (.get, "status"):
                return try json(driver.status)
            case (.get, "cluster"):
                return try json(await cluster())
            case (.get, "metrics"):
                return text(.ok, HAMetrics.render(driver.status, leaseRemaining: driver.leaseRemaining()), contentType: "text/plain; version=0.0.4")
            case (.post, "switchover"), (.delete, "switchover"), (.post, "pause"), (.post, "resume"):
                guard let token else { throw Problem(status: .forbidden, message: "actions need a token: set ha.node.token_file (or agent.token_file)") }
                guard let h = request.headers[.authorization], h.hasPrefix("Bearer "),
                      constantTimeEqual(Array(h.dropFirst(7).utf8), Array(token.utf8)) else {
                    throw Problem(status: .unauthorized, message: "authentication required (Authorization: Bearer TOKEN)")
                }
                let actions = HAActions(store: driver.store)
                let result: String
                switch (request.method, parts[0]) {
                case (.post, "switchover"):
                    guard let to = request.uri.queryParameters["to"].map(String.init) else { throw Problem(status: .badRequest, message: "give ?to=NODE") }
                    result = try await actions.switchover(to: to)
                case (.delete, "switchover"): result = try await actions.cancelSwitchover()
                case (.post, "pause"): result = try await actions.setMaintenance(true)
                default: result = try await actions.setMaintenance(false)
                }
                driver.wake()
                driver.log("ha: API action: \(result)")
                return try json(["result": result])
            default:
                throw Problem(status: .notFound, message: "unknown endpoint: GET /primary, /replica, /health, /cluster, /status, /metrics; POST /switchover?to=NODE, /pause, /resume")
            }
        } catch let p as Problem {
            return text(p.status, p.message + "\n")
        } catch let e as HAActions.Refusal {
            return text(.conflict, e.message + "\n")
        } catch {
            return text(.serviceUnavailable, "\(error)\n")
        }
    }

    /// The cluster as etcd holds it now (or, when it cannot be reached, as this node last saw it).
    func cluster() async -> HAClusterReport {
        let (view, problems) = await driver.store.read()
        let s = driver.status
        return HAClusterReport(view: view, cluster: s.cluster, fallback: s, problems: problems)
    }

    func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        e.dateEncodingStrategy = .custom { d, enc in var c = enc.singleValueContainer(); try c.encode(Timestamp.format(d)) }
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: try e.encode(value))))
    }

    func text(_ status: HTTPResponse.Status, _ s: String, contentType: String = "text/plain; charset=utf-8") -> Response {
        Response(status: status, headers: [.contentType: contentType], body: .init(byteBuffer: ByteBuffer(string: s)))
    }

    /// Serves until cancelled; `ready` receives the bound address.
    public func run(ready: @escaping @Sendable (String) -> Void) async throws {
        let me = self
        var logger = Logger(label: "lifeboat.ha.api")
        logger.logLevel = .critical
        let listen = driver.config.api
        let app = Application(
            responder: CallbackResponder<BasicRequestContext> { request, _ in await me.respond(request) },
            configuration: .init(address: .hostname(listen.host, port: listen.port), serverName: "lifeboat-ha"),
            onServerRunning: { ch in
                ready(ch.localAddress.flatMap { a in a.ipAddress.map { NetworkErrorText.peer(host: $0, port: a.port ?? 0) } } ?? listen.description)
            },
            logger: logger)
        try await app.run()
    }
}

/// The cluster for `GET /cluster` and `lifeboat ha list`: each member with its role, timeline, position and lag
/// behind the leader's published position.
public struct HAClusterReport: Sendable, Codable {
    public struct Member: Sendable, Codable {
        public var name: String
        public var role: String
        public var leader: Bool
        public var timeline: UInt32?
        public var position: String?
        public var lagBytes: UInt64?
        public var candidate: Bool
        public var api: String?
        public var postgres: String?
    }
    public var cluster: String
    public var storeReachable: Bool
    public var leader: String?
    public var leaderPosition: String?
    public var leaderTimeline: UInt32?
    public var maintenance: Bool
    public var switchover: String?
    public var initialized: String?
    /// Synchronous mode: the standbys that hold every acknowledged commit of the leader (the only ones that may take
    /// over); nil when the `sync` key is absent or belongs to another leader.
    public var synchronous: [String]?
    public var members: [Member]
    public var problems: [String]

    public init(view: ClusterView?, cluster: String, fallback: HANodeStatus? = nil, problems: [String]) {
        self.cluster = cluster
        storeReachable = view != nil
        self.problems = problems
        let members = view.map { Array($0.members.values) } ?? fallback?.members ?? []
        leader = view?.leader?.holder ?? fallback?.leader
        leaderPosition = view?.leaderPosition.map { LSN($0).description }
        leaderTimeline = view?.leaderTimeline
        maintenance = view?.maintenance ?? fallback?.maintenance ?? false
        switchover = view?.switchover.map { "\($0.from) -> \($0.to)" }
        initialized = view?.initialized
        synchronous = view?.sync.flatMap { $0.leader == view?.leader?.holder ? $0.standbys : nil }
        let top = view?.leaderPosition
        let leaderName = leader
        self.members = members.sorted { $0.name < $1.name }.map { m in
            let lag: UInt64? = m.name == leaderName ? 0 : top.flatMap { t in m.position.map { t > $0 ? t - $0 : 0 } }
            return Member(name: m.name, role: m.role.rawValue, leader: m.name == leaderName, timeline: m.timeline, position: m.position.map { LSN($0).description },
                          lagBytes: lag, candidate: m.candidate, api: m.api, postgres: m.postgres)
        }
    }
}

/// The operator's actions on a cluster (API and CLI): they write the switchover and maintenance keys; the nodes act
/// on them at their next step.
public struct HAActions: Sendable {
    public let store: HAStore
    public init(store: HAStore) { self.store = store }

    public struct Refusal: Error, CustomStringConvertible { public var message: String; public var description: String { message } }

    /// Asks the leader to hand over to `to` once it is caught up. Refused when there is no leader, `to` is not a
    /// live member, is the leader already, or cannot take over (`no_failover`, behind).
    public func switchover(to: String) async throws -> String {
        guard HASettings.validName(to) else { throw Refusal(message: "\"\(to.prefix(80))\" is not a node name") }
        let (view, _) = await store.read()
        guard let v = view else { throw Refusal(message: "etcd cannot be reached: no switchover") }
        guard let leader = v.leader?.holder else { throw Refusal(message: "the cluster has no leader: a switchover needs one (a failover happens by itself)") }
        guard leader != to else { throw Refusal(message: "\(to) is the leader already") }
        guard let m = v.members[to] else {
            throw Refusal(message: "\(to) is not a live member of cluster \(store.settings.cluster) (members: \(v.members.keys.sorted().joined(separator: ", ")))")
        }
        guard m.role == .standby else { throw Refusal(message: "\(to) is \(m.role.rawValue), not a running standby") }
        let body = try JSONEncoder().encode(["from": leader, "to": to])
        try await store.client.put(store.keys.switchover, Array(body))
        return "switchover from \(leader) to \(to) requested: \(leader) hands over once \(to) is within \(store.settings.maximumLagOnFailover) bytes"
    }

    public func cancelSwitchover() async throws -> String {
        try await store.client.delete(store.keys.switchover)
        return "switchover cancelled"
    }

    public func setMaintenance(_ on: Bool) async throws -> String {
        if on {
            try await store.client.put(store.keys.maintenance, Array("on".utf8))
            return "cluster \(store.settings.cluster) paused: no automatic failover until resumed"
        }
        try await store.client.delete(store.keys.maintenance)
        return "cluster \(store.settings.cluster) resumed: automatic failover on"
    }
}

/// The node's metrics in Prometheus' text format.
public enum HAMetrics {
    public static func render(_ s: HANodeStatus, leaseRemaining: Double?) -> String {
        let labels = "cluster=\"\(esc(s.cluster))\",node=\"\(esc(s.node))\""
        var out = ""
        func metric(_ name: String, _ type: String, _ help: String, _ lines: [String]) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n" + lines.map { $0 + "\n" }.joined()
        }
        let roles = ["primary", "standby", "promoting", "fenced", "bootstrapping", "stopped", "refused"]
        metric("lifeboat_ha_role", "gauge", "The node's role (1 for the current one).",
               roles.map { "lifeboat_ha_role{\(labels),role=\"\($0)\"} \(s.role == $0 ? 1 : 0)" })
        metric("lifeboat_ha_leader", "gauge", "1 while this node holds the leader key.", ["lifeboat_ha_leader{\(labels)} \(s.leader == s.node ? 1 : 0)"])
        metric("lifeboat_ha_lease_remaining_seconds", "gauge", "Seconds before this node must stop taking writes unless a lease renewal succeeds.",
               ["lifeboat_ha_lease_remaining_seconds{\(labels)} \(fmt(leaseRemaining ?? 0))"])
        metric("lifeboat_ha_lag_bytes", "gauge", "Bytes of WAL behind the position the leader last published.",
               ["lifeboat_ha_lag_bytes{\(labels)} \(s.lagBytes.map { String($0) } ?? "NaN")"])
        metric("lifeboat_ha_timeline", "gauge", "The local server's timeline.", ["lifeboat_ha_timeline{\(labels)} \(s.timeline.map { String($0) } ?? "NaN")"])
        metric("lifeboat_ha_store_reachable", "gauge", "1 when the last read of etcd succeeded.", ["lifeboat_ha_store_reachable{\(labels)} \(s.storeReachable ? 1 : 0)"])
        metric("lifeboat_ha_maintenance", "gauge", "1 while the cluster is paused (no automatic failover).", ["lifeboat_ha_maintenance{\(labels)} \(s.maintenance ? 1 : 0)"])
        metric("lifeboat_ha_failovers_total", "counter", "Promotions of this node since the agent started.", ["lifeboat_ha_failovers_total{\(labels)} \(s.failovers)"])
        metric("lifeboat_ha_last_failover_timestamp_seconds", "gauge", "When this node was last promoted (0: never since the agent started).",
               ["lifeboat_ha_last_failover_timestamp_seconds{\(labels)} \(fmt(s.lastFailover?.timeIntervalSince1970 ?? 0))"])
        return out
    }

    static func fmt(_ d: Double) -> String { d.isFinite ? String(format: "%.3f", d) : "NaN" }
    static func esc(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }
}
