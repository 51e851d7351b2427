import Foundation
import Hummingbird
import HummingbirdCore
import LifeboatConfig
import LifeboatFailover
import LifeboatCore
import LifeboatDashboard
import LifeboatPlan
import LifeboatReplication
import LifeboatServer
import Logging
import NIOCore
import NIOSSL
import HummingbirdTLS
import HTTPTypes

/// The agent's local API on `agent.listen`:
///
/// - `GET /status`: `AgentStatus` as JSON.
/// - `GET /history?job=backup:web&limit=N`: the newest runs, newest first.
/// - `POST /jobs/{job}/run`: run a job now (`backup:NAME`, `replicate`, `prune`, `check`).
/// - `POST /jobs/{job}/pause`, `POST /jobs/{job}/resume`; `POST /sources/{name}/pause|resume|run` for backups.
/// - `GET /metrics`: Prometheus text (the proxy's too when the plan has pools).
/// - `/proxy/…`: the proxy's admin endpoints (`GET /proxy/status`, `POST /proxy/pools/P/backends/B/drain`, …).
/// - `/`, `/login`, `/logout`, `/ui/…`: the web dashboard (Dashboard.swift), with a login of its own.
///
/// With `token_file`, `Authorization: Bearer TOKEN` is accepted; with `users` (an htpasswd file, bcrypt), HTTP
/// basic authentication is; with both, either. With neither, the API must listen on a loopback address
/// (checked at start): only local clients reach it. With `tls: {cert, key}` it speaks HTTPS. Answers never hold
/// secrets (no DSNs, passwords, URLs' tokens).
public struct AgentAPI: Sendable {
    let agent: Agent
    let token: String?
    let users: Htpasswd?
    let listen: Endpoint
    let bindHost: String
    let tls: TLSConfiguration?
    /// Users of `users` who may act in the dashboard; the others only look.
    let operators: Set<String>
    let dashboardState = DashboardState()

    public init(agent: Agent, settings: AgentSettings) throws {
        self.agent = agent
        if let cert = settings.tlsCert, let key = settings.tlsKey {
            do {
                let chain = try NIOSSLCertificate.fromPEMFile(cert)
                let privateKey = try NIOSSLPrivateKey(file: key, format: .pem)
                tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(privateKey))
            } catch {
                throw LifeboatError.invalid("agent.tls: cannot load the certificate \(cert) or the key \(key): \(error)")
            }
        } else {
            tls = nil
        }
        guard let l = Endpoint.parse(settings.listen) else { throw LifeboatError.invalid("agent.listen \(settings.listen) is not HOST:PORT") }
        listen = l
        if let f = settings.tokenFile {
            token = try readPasswordFile(f, from: "agent.token_file")
        } else {
            token = nil
        }
        operators = Set(settings.operators)
        if let f = settings.users {
            let file: Htpasswd
            do { file = try Htpasswd(path: f) } catch { throw LifeboatError.invalid("agent.users \(f): \(error)") }
            users = file
            let known = Set(file.users)
            if let missing = settings.operators.first(where: { !known.contains($0) }) {
                throw LifeboatError.invalid("agent.operators names \(missing), who is not a user of \(f)")
            }
        } else {
            users = nil
        }
        if token == nil && users == nil {
            let address = try? SocketAddress.makeAddressResolvingHost(l.host, port: l.port)
            guard let ip = address?.ipAddress, Endpoint.isLoopback(ip: ip) else {
                throw LifeboatError.invalid("agent.listen \(l) is not a loopback address (127.0.0.0/8 or ::1): listen on one, or set agent.token_file or agent.users")
            }
            bindHost = ip
        } else {
            bindHost = l.host
        }
    }

    struct Problem: Error { var status: HTTPResponse.Status; var message: String }

    /// The role of the request's credentials: the token and an open loopback API act; a user of `users` acts
    /// only when `operators` names it. nil: no valid credentials.
    func authorized(_ request: Request) -> DashboardRole? {
        if token == nil && users == nil { return .operator }
        guard let header = request.headers[.authorization] else { return nil }
        if let token, header.hasPrefix("Bearer ") {
            return constantTimeEqual(Array(header.dropFirst(7).utf8), Array(token.utf8)) ? .operator : nil
        }
        if let users, header.hasPrefix("Basic "), let d = Data(base64Encoded: String(header.dropFirst(6))),
           let s = String(data: d, encoding: .utf8), let colon = s.firstIndex(of: ":") {
            let user = String(s[..<colon])
            guard users.verify(user: user, password: String(s[s.index(after: colon)...])) else { return nil }
            return operators.contains(user) ? .operator : .readOnly
        }
        return nil
    }

    public static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        e.dateEncodingStrategy = .custom { d, enc in
            var c = enc.singleValueContainer()
            try c.encode(Timestamp.format(d))
        }
        return e
    }

    public static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .custom { dec in
            let s = try dec.singleValueContainer().decode(String.self)
            guard let t = Timestamp.parse(s) else { throw DecodingError.dataCorrupted(.init(codingPath: dec.codingPath, debugDescription: "bad time \(s)")) }
            return t
        }
        return d
    }

    func respond(_ request: Request) async -> Response {
        let parts = request.uri.path.split(separator: "/").map { String($0).removingPercentEncoding ?? String($0) }
        if AgentAPI.isDashboard(parts) { return await dashboard(request, parts: parts) }
        guard let role = authorized(request) else {
            var r = text(.unauthorized, "authentication required\n")
            if users != nil { r.headers[.wwwAuthenticate] = "Basic realm=\"lifeboat agent\"" }
            return r
        }
        if request.method != .get && request.method != .head {
            // A browser sends basic credentials on its own, even for a form posted from another site: the API's
            // actions are for programs (the dashboard's forms carry a CSRF token instead).
            if request.headers[.origin] != nil || request.headers[HTTPField.Name("Sec-Fetch-Site")!] != nil {
                return text(.forbidden, "the API's actions do not take requests from a browser (Origin header): use the dashboard at /\n")
            }
            if role != .operator {
                return text(.forbidden, "a read-only user cannot act: name it in agent.operators, or use the agent's token\n")
            }
        }
        do {
            switch (request.method, parts.count) {
            case (.get, 1) where parts[0] == "status":
                return try json(await agent.status())
            case (.get, 1) where parts[0] == "metrics":
                agent.metrics.update(await agent.status())
                return text(.ok, agent.metrics.render() + (agent.proxy?.metrics ?? ""), contentType: "text/plain; version=0.0.4")
            case (_, _) where parts.first == "proxy":
                guard let proxy = agent.proxy else { throw Problem(status: .notFound, message: "the plan runs no proxy") }
                return try await proxy.admin.respond(request, parts: Array(parts.dropFirst()))
            case (.get, 1) where parts[0] == "history":
                let q = request.uri.queryParameters
                let limit = q["limit"].map { Int(String($0)) ?? -1 } ?? 100
                guard (1...10_000).contains(limit) else { throw Problem(status: .badRequest, message: "limit must be a whole number from 1 to 10000") }
                return try json(try await agent.history(job: q["job"].map(String.init), limit: limit))
            case (.post, 3) where parts[0] == "jobs" || parts[0] == "sources":
                guard let job = parts[0] == "jobs" ? JobID(parsing: parts[1]) : JobID.backup(parts[1]) as JobID? else {
                    throw Problem(status: .badRequest, message: "a job is backup:SOURCE, replicate, prune or check")
                }
                let result: Agent.ActionResult
                switch parts[2] {
                case "run": result = await agent.runNow(job)
                case "pause": result = await agent.setPaused(job, true)
                case "resume": result = await agent.setPaused(job, false)
                default: throw Problem(status: .notFound, message: "unknown action \(parts[2]): run, pause or resume")
                }
                switch result {
                case .ok: return try json(["job": job.description, "action": parts[2], "result": "ok"])
                case .alreadyRunning: return try json(["job": job.description, "action": parts[2], "result": "running; it runs again when it ends"])
                case .unknown: throw Problem(status: .notFound, message: "no job \(job) in the plan")
                }
            default:
                throw Problem(status: .notFound, message: "unknown endpoint: GET /status, /history, /metrics; POST /jobs/JOB/run|pause|resume")
            }
        } catch let p as Problem {
            return text(p.status, p.message + "\n")
        } catch {
            return text(.internalServerError, errorText(error) + "\n")
        }
    }

    func json<T: Encodable>(_ value: T) throws -> Response {
        let data = try AgentAPI.encoder().encode(value)
        return Response(status: .ok, headers: [.contentType: "application/json", .xContentTypeOptions: "nosniff"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// (`nosniff` on every answer: the dashboard's pages allow scripts from this origin, and no JSON or text answer,
    /// some of which echo a request's path, may ever be taken for one.)
    func text(_ status: HTTPResponse.Status, _ s: String, contentType: String = "text/plain; charset=utf-8") -> Response {
        Response(status: status, headers: [.contentType: contentType, .xContentTypeOptions: "nosniff"], body: .init(byteBuffer: ByteBuffer(string: s)))
    }

    /// Serves until cancelled; `ready` receives the bound address.
    public func run(ready: @escaping @Sendable (String) -> Void) async throws {
        let me = self
        var logger = Logger(label: "lifeboat.agent.api")
        // Hummingbird logs the cancellation of a stop as an error: nothing a user should see.
        logger.logLevel = .critical
        let server: HTTPServerBuilder = try tls.map { try .tls(.http1(), tlsConfiguration: $0) } ?? .http1()
        let app = Application(
            responder: CallbackResponder<BasicRequestContext> { request, _ in await me.respond(request) },
            server: server,
            configuration: .init(address: .hostname(bindHost, port: listen.port), serverName: "lifeboat-agent"),
            onServerRunning: { ch in
                ready(ch.localAddress.flatMap { a in a.ipAddress.map { NetworkErrorText.peer(host: $0, port: a.port ?? 0) } } ?? me.listen.description)
            },
            logger: logger)
        try await app.run()
    }
}

/// swift-log's handler for the agent: logfmt lines (`time=… level=info msg="backup done" source=web …`) or JSON
/// lines, on standard error, one write per line.
public struct LineLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    let json: Bool

    public init(json: Bool) { self.json = json }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var all = metadata
        if let m = event.metadata { all.merge(m) { $1 } }
        let time = Timestamp.format(Date())
        let line: String
        if json {
            var o: [String: String] = ["time": time, "level": event.level.rawValue, "msg": "\(event.message)", "message_type": "log"]
            for (k, v) in all { o[k] = "\(v)" }
            let d = (try? JSONSerialization.data(withJSONObject: o, options: [.sortedKeys])) ?? Data()
            line = String(decoding: d, as: UTF8.self)
        } else {
            var s = "time=\(time) level=\(event.level.rawValue) msg=\(LineLogHandler.quote("\(event.message)"))"
            for (k, v) in all.sorted(by: { $0.key < $1.key }) { s += " \(k)=\(LineLogHandler.quote("\(v)"))" }
            line = s
        }
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }

    static func quote(_ s: String) -> String {
        if !s.isEmpty && s.allSatisfy({ !$0.isWhitespace && $0 != "\"" && $0 != "=" && !$0.isNewline }) { return s }
        return "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n") + "\""
    }
}

/// A client of a running agent's API (`lifeboat status`), with the plan's token or nothing.
public enum AgentClient {
    /// The agent's status: from its API, or, when no agent answers, from its state database (read-only).
    public static func status(of plan: Plan) async throws -> AgentStatus {
        do {
            let body = try await get("/status", settings: plan.agent)
            do { return try AgentAPI.decoder().decode(AgentStatus.self, from: Data(body)) } catch {
                throw LifeboatError(.corrupt, "the agent's answer cannot be read: \(error)")
            }
        } catch let f as Failure {
            if case .refused(let why) = f { throw LifeboatError(.io, why) }
            // Nothing answers, or it wants a user and password: what the agent last wrote to its database.
            let store = try StateStore(readingFrom: plan.agent.state)
            let runs = try store.lastRuns()
            let since = runs.values.map(\.started).min() ?? currentTime()
            return StatusBuilder.build(plan: RecoveryKit.withSelfBackup(plan), observations: try store.observations(), lastRuns: runs,
                                       jobs: try store.jobs(), scheduler: nil, running: [], facts: SiteFacts.decode(try store.flag(SiteFacts.key)),
                                       since: since, agentStarted: nil, origin: "database", now: currentTime(),
                                       drillReports: (try? store.latestDrills()) ?? [])
        }
    }

    public enum Failure: Error, CustomStringConvertible {
        case unreachable(String), refused(String), unauthorized(String)
        public var description: String {
            switch self { case .unreachable(let s), .refused(let s), .unauthorized(let s): return s }
        }
    }

    /// GET `path` from the agent of `settings`; `.unreachable` when nothing answers (the caller then reads the
    /// database), `.refused` for an HTTP error.
    public static func get(_ path: String, settings: AgentSettings, timeout: Double = 5) async throws(Failure) -> [UInt8] {
        try await request(post: false, path, settings: settings, timeout: timeout)
    }

    /// A request to the agent of `settings` (POST for actions).
    public static func request(post: Bool, _ path: String, settings: AgentSettings, timeout: Double = 5) async throws(Failure) -> [UInt8] {
        guard let l = Endpoint.parse(settings.listen) else { throw .refused("agent.listen \(settings.listen) is not HOST:PORT") }
        let host = (l.host == "0.0.0.0" ? "127.0.0.1" : l.host == "::" ? "::1" : l.host)
        let scheme = settings.tlsCert != nil ? "https" : "http"
        var req = HTTPClientRequest(url: "\(scheme)://\(host.contains(":") ? "[\(host)]" : host):\(l.port)\(path)")
        req.method = post ? .POST : .GET
        if let f = settings.tokenFile, let t = try? readPasswordFile(f, from: "agent.token_file") {
            req.headers.add(name: "Authorization", value: "Bearer \(t)")
        }
        // HTTPS: the agent's own certificate is trusted as a root (it is often self-signed), and the name is not
        // checked: this client talks to the agent of this host's plan, on the address the plan gives.
        var client = HTTPClient.shared
        var owned: HTTPClient?
        if let cert = settings.tlsCert {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.additionalTrustRoots = [.file(cert)]
            tls.certificateVerification = .noHostnameVerification
            owned = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: .init(tlsConfiguration: tls))
            client = owned!
        }
        defer { if let owned { Task { try? await owned.shutdown() } } }
        do {
            let resp = try await client.execute(req, timeout: .milliseconds(Int64(timeout * 1000)))
            let body = try await resp.body.collect(upTo: 64 << 20)
            if resp.status.code == 401 {
                throw Failure.unauthorized("the agent at \(l) wants credentials this client does not have (agent.users without agent.token_file)")
            }
            guard resp.status.code == 200 else {
                throw Failure.refused("the agent at \(l) answered \(resp.status.code): \(String(buffer: body).trimmingCharacters(in: .whitespacesAndNewlines))")
            }
            return Array(buffer: body)
        } catch let f as Failure {
            throw f
        } catch {
            throw .unreachable("no agent answers at \(l): \(error)")
        }
    }
}

import AsyncHTTPClient
