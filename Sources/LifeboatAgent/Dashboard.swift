import AsyncHTTPClient
import Foundation
import Hummingbird
import HTTPTypes
import LifeboatCore
import LifeboatDashboard
import LifeboatDrill
import LifeboatFailover
import LifeboatHA
import LifeboatHAAgent
import LifeboatHTTP
import LifeboatPlan
import LifeboatProxy
import LifeboatSites
import LifeboatReplication
import NIOCore
import Synchronization

/// The dashboard's sessions, shared by the API's requests.
final class DashboardState: Sendable {
    let sessions = Mutex(SessionTable())
    /// Open live-refresh streams (at most `maxStreams`).
    let streams = Mutex(0)
    static let maxStreams = 32
    /// The newest state digest and when it was computed (shared by the streams: one computation a second at most).
    let digest = Mutex<(at: ContinuousClock.Instant, value: String)?>(nil)
    /// The HA cluster's summary for the digest, and when it was read (at most every 5 s).
    let cluster = Mutex<(at: ContinuousClock.Instant, value: String)?>(nil)
}

/// The web dashboard on the agent's API port: `/` (the overview), `/login`, `/logout`, `/ui/…`. It always needs a
/// login: a session cookie from `POST /login` (a user of `agent.users`, or the agent's token as the password), or
/// `Authorization: Bearer TOKEN`; HTTP basic authentication, which browsers send on their own to any site that
/// asks, does not open it. Every form carries the session's CSRF token; every action is written to the audit log.
extension AgentAPI {
    static func isDashboard(_ parts: [String]) -> Bool {
        parts.isEmpty || ["login", "logout", "ui"].contains(parts[0])
    }

    func dashboard(_ request: Request, parts: [String]) async -> Response {
        guard token != nil || users != nil else {
            return text(.notFound, "this agent serves no dashboard: it has neither agent.token_file nor agent.users, and the dashboard always needs a login\n")
        }
        let now = Date().timeIntervalSince1970
        switch (request.method, parts.first ?? "") {
        case (.get, "ui") where parts == ["ui", "style.css"]:
            var r = text(.ok, DashboardPages.css, contentType: "text/css; charset=utf-8")
            r.headers[.cacheControl] = "max-age=3600"
            return r
        case (.get, "ui") where parts == ["ui", "live.js"]:
            var r = text(.ok, DashboardPages.liveScript, contentType: "text/javascript; charset=utf-8")
            r.headers[.cacheControl] = "max-age=3600"
            return r
        case (.get, "login"):
            return page(.ok, loginPage(nil))
        case (.post, "login"):
            return await login(request, now: now)
        default:
            break
        }
        // The live refresh (its stream, and the page it fetches again) does not count as the user's activity.
        let live = parts == ["ui", "events"] || request.headers[HTTPField.Name("X-Lifeboat-Live")!] == "1"
        guard let viewer = identify(request, now: now, touch: !live) else {
            return page(.unauthorized, loginPage(nil))
        }
        switch (request.method, parts.first ?? "", parts.count) {
        case (.get, "", 0):
            let live = await liveDigest()
            return page(.ok, DashboardPages.overview(await overviewModel(), viewer: viewer, live: live))
        case (.get, "ui", 2) where parts[1] == "events":
            return liveEvents(request, viewer: viewer)
        case (.post, "logout", 1):
            guard let form = try? await readForm(request), csrfPasses(form, viewer) else { return forged(viewer) }
            if let id = SessionTable.cookie(in: request.headers[.cookie]) { dashboardState.sessions.withLock { $0.close(id) } }
            var r = redirect("/login")
            r.headers[.setCookie] = SessionTable.clearCookie(secure: tls != nil)
            return r
        case (.get, "ui", 3) where parts[1] == "services":
            // The digest before the model: content newer than its digest costs one extra refresh; older, a stale page.
            let live = await liveDigest()
            guard let m = await serviceModel(parts[2]) else {
                return page(.notFound, DashboardPages.message("Not found", "no service \(parts[2]) in the plan", viewer: viewer, error: true))
            }
            return page(.ok, DashboardPages.service(m, viewer: viewer, live: live))
        case (.get, "ui", 3) where parts[1] == "drills":
            return await drillReportPage(parts[2], viewer: viewer)
        case (.get, "ui", 2) where parts[1] == "sites":
            let live = await liveDigest()
            return page(.ok, DashboardPages.sites(await sitesModel(), viewer: viewer, live: live))
        case (.get, "ui", 2) where parts[1] == "failover":
            let live = await liveDigest()
            return page(.ok, DashboardPages.failover(await failoverModel(), viewer: viewer, live: live))
        case (.get, "ui", 2) where parts[1] == "confirm":
            guard viewer.mayAct else { return readOnly(viewer) }
            let q = request.uri.queryParameters
            let action = q["action"].map(String.init) ?? "", target = q["target"].map(String.init) ?? ""
            switch await describe(action: action, target: target) {
            case .success(let what): return page(.ok, DashboardPages.confirm(what: what, action: action, target: target, viewer: viewer))
            case .failure(let e): return page(.badRequest, DashboardPages.message("Unknown action", e.message, viewer: viewer, error: true))
            }
        case (.post, "ui", 2) where parts[1] == "actions":
            guard let form = try? await readForm(request) else {
                return page(.badRequest, DashboardPages.message("Refused", "the form cannot be read (at most 16 KiB of URL-encoded UTF-8)", viewer: viewer, error: true))
            }
            guard csrfPasses(form, viewer) else { return forged(viewer) }
            guard viewer.mayAct else { return readOnly(viewer) }
            return await act(action: form["action"] ?? "", target: form["target"] ?? "", viewer: viewer)
        default:
            return page(.notFound, DashboardPages.message("Not found", "no page \(request.uri.path)", viewer: viewer, error: true))
        }
    }

    func loginPage(_ error: String?) -> String {
        DashboardPages.login(error: error, tokenAccepted: token != nil, usersAccepted: users != nil)
    }

    /// `POST /login`: a user and password of `agent.users`, or the token (with no user) opens a session.
    func login(_ request: Request, now: Double) async -> Response {
        guard let form = try? await readForm(request) else { return page(.badRequest, loginPage("the form cannot be read")) }
        let user = form["user"] ?? "", password = form["password"] ?? ""
        var who: (String, DashboardRole)?
        if user.isEmpty, let token, constantTimeEqual(Array(password.utf8), Array(token.utf8)) {
            who = ("token", .operator)
        } else if !user.isEmpty, let users, users.verify(user: user, password: password) {
            who = (user, operators.contains(user) ? .operator : .readOnly)
        }
        guard let who else {
            agent.logger.warning("dashboard: failed login", metadata: ["user": "\(user.prefix(64))"])
            return page(.unauthorized, loginPage("Wrong user or password."))
        }
        let (name, role) = who
        let session = dashboardState.sessions.withLock { $0.open(user: name, role: role, now: now) }
        agent.logger.info("dashboard: login", metadata: ["user": "\(name)", "role": "\(role.rawValue)"])
        var r = redirect("/")
        r.headers[.setCookie] = SessionTable.setCookie(session, secure: tls != nil, lifetime: dashboardState.sessions.withLock { $0.lifetime })
        return r
    }

    /// The session of the request's cookie (marked as seen unless `touch` is false), or the operator with the
    /// bearer token.
    func identify(_ request: Request, now: Double, touch: Bool = true) -> Viewer? {
        if let token, let header = request.headers[.authorization], header.hasPrefix("Bearer "),
           constantTimeEqual(Array(header.dropFirst(7).utf8), Array(token.utf8)) {
            return Viewer(user: "token", role: .operator, csrf: nil)
        }
        guard let id = SessionTable.cookie(in: request.headers[.cookie]),
              let s = dashboardState.sessions.withLock({ $0.lookup(id, now: now, touch: touch) }) else { return nil }
        return Viewer(user: s.user, role: s.role, csrf: s.csrf)
    }

    /// A form posted with a session must carry its CSRF token; a bearer client (no cookie) needs none.
    func csrfPasses(_ form: FormBody, _ viewer: Viewer) -> Bool {
        guard let expected = viewer.csrf else { return true }
        return constantTimeEqual(Array((form["csrf"] ?? "").utf8), Array(expected.utf8))
    }

    func readForm(_ request: Request) async throws -> FormBody {
        let buffer = try await request.body.collect(upTo: FormBody.maxBytes)
        return try FormBody(Array(buffer: buffer))
    }

    struct ActionProblem: Error { var message: String }

    /// What `action` on `target` would do, in words, if both exist.
    func describe(action: String, target: String) async -> Result<String, ActionProblem> {
        let plan = await agent.plan
        switch action {
        case "backup", "pause", "resume":
            guard plan.sources.contains(where: { $0.name == target }) || target == RecoveryKit.selfSource else {
                return .failure(ActionProblem(message: "no source \(target) in the plan"))
            }
            return .success(action == "backup" ? "Back up \(target) now" : "\(action == "pause" ? "Pause" : "Resume") the scheduled backups of \(target)")
        case "drill":
            guard plan.drills.contains(where: { $0.name == target }) else { return .failure(ActionProblem(message: "no drill \(target) in the plan")) }
            return .success("Run the drill \(target) now")
        case "disable", "enable", "promote":
            let pb = target.split(separator: "/", maxSplits: 1).map(String.init)
            guard pb.count == 2, let view = try? AgentProxy.view(agent.proxy, pool: pb[0]), view.backends.contains(where: { $0.name == pb[1] }) else {
                return .failure(ActionProblem(message: "no backend \(target) (POOL/BACKEND) in the agent's proxy"))
            }
            return .success("\(action.prefix(1).uppercased() + action.dropFirst()) the backend \(pb[1]) of pool \(pb[0])")
        default:
            return .failure(ActionProblem(message: "unknown action \(action): backup, pause, resume, drill, disable, enable or promote"))
        }
    }

    /// Runs a confirmed action and writes it to the audit log (refused when the log cannot be written).
    func act(action: String, target: String, viewer: Viewer) async -> Response {
        let what: String
        switch await describe(action: action, target: target) {
        case .success(let w): what = w
        case .failure(let e): return page(.badRequest, DashboardPages.message("Refused", e.message, viewer: viewer, error: true))
        }
        let plan = await agent.plan
        let audit = AuditLog(path: Agent.auditLogPath(plan))
        var record: [String: Any] = ["message_type": "dashboard_action", "time": Timestamp.format(Date()), "user": viewer.user,
                                     "role": viewer.role.rawValue, "action": action, "target": target]
        let outcome: Result<String, ActionProblem>
        switch action {
        case "backup", "pause", "resume", "drill":
            let job = action == "drill" ? JobID(.drill, target) : JobID.backup(target)
            let r: Agent.ActionResult
            if action == "pause" || action == "resume" { r = await agent.setPaused(job, action == "pause") } else { r = await agent.runNow(job) }
            switch r {
            case .ok: outcome = .success(action == "pause" ? "\(job) paused" : action == "resume" ? "\(job) resumed" : "\(job) started")
            case .alreadyRunning: outcome = .success("\(job) is running; it runs again when it ends")
            case .unknown: outcome = .failure(ActionProblem(message: "no job \(job) in the plan"))
            }
        default:
            let pb = target.split(separator: "/", maxSplits: 1).map(String.init)
            let builtIn: PlaybookStep.BuiltIn = action == "disable" ? .disableBackend : action == "enable" ? .enableBackend : .promoteBackend
            do { outcome = .success(try AgentProxy.act(agent.proxy, builtIn, pool: pb[0], backend: pb[1])) } catch {
                outcome = .failure(ActionProblem(message: errorText(error)))
            }
        }
        switch outcome {
        case .success(let s): record["result"] = "ok"; record["detail"] = s
        case .failure(let e): record["result"] = "failed"; record["detail"] = e.message
        }
        do { try audit.append(record) } catch {
            agent.logger.error("dashboard: \(error)")
            return page(.internalServerError, DashboardPages.message("Not done", "\(what): the audit log cannot be written (\(errorText(error))); nothing was logged", viewer: viewer, error: true))
        }
        agent.logger.info("dashboard: \(what)", metadata: ["user": "\(viewer.user)", "result": "\(record["result"]!)"])
        switch outcome {
        case .success(let s): return page(.ok, DashboardPages.message("Done", "\(what): \(s)", viewer: viewer))
        case .failure(let e): return page(.conflict, DashboardPages.message("Failed", "\(what): \(e.message)", viewer: viewer, error: true))
        }
    }

    func forged(_ viewer: Viewer) -> Response {
        page(.forbidden, DashboardPages.message("Refused", "the form's CSRF token is missing or wrong (a form from another site, or from before the last login): reload the page and try again", viewer: viewer, error: true))
    }

    func readOnly(_ viewer: Viewer) -> Response {
        page(.forbidden, DashboardPages.message("Refused", "\(viewer.user) is a read-only user: actions need an operator (agent.operators) or the agent's token", viewer: viewer, error: true))
    }

    /// The overview's figures: the agent's status, its drills and its proxy's pools.
    func overviewModel() async -> OverviewModel { overviewModel(from: await agent.status()) }

    func overviewModel(from status: AgentStatus) -> OverviewModel {
        var problems: [String] = []
        let services = status.sources.map { s in
            let drill = (status.drills ?? []).filter { $0.source == s.name }.max { $0.declared < $1.declared }
            return OverviewModel.Service(
                name: s.name, kind: s.kind, paused: s.paused, running: s.running, rpoObjective: s.rpoObjectiveSeconds,
                rtoObjective: s.rtoObjectiveSeconds, measuredRTO: s.measuredRTOSeconds,
                sites: s.sites.map { .init(site: $0.site, rpoSeconds: $0.rpoSeconds, newest: $0.newestSnapshot, lastError: $0.lastError) },
                lastBackup: s.lastRun.map { .init(started: $0.started, result: $0.result.rawValue, duration: $0.duration, bytes: $0.bytes, error: $0.error) },
                lastDrill: drill.map { .init(name: $0.drill, site: $0.site, passed: $0.passed, declared: $0.declared, rtoSeconds: $0.rtoSeconds, rpoSeconds: $0.rpoSeconds) })
        }
        let sites = status.sites.map {
            OverviewModel.Site(name: $0.site, role: $0.role, reachable: $0.reachable, lagSeconds: $0.lagSeconds, bytesPending: $0.bytesPending, lastError: $0.lastError)
        }
        var pools: [OverviewModel.Pool] = []
        if let proxy = agent.proxy {
            for p in proxy.server.pools {
                do {
                    let v = try AgentProxy.view(proxy, pool: p.config.name)
                    pools.append(.init(name: p.config.name, active: v.active, backends: v.backends.map { .init(name: $0.name, state: $0.state, disabled: $0.disabled) }))
                } catch { problems.append("proxy pool \(p.config.name): \(errorText(error))") }
            }
        }
        return OverviewModel(plan: status.plan, time: status.time, services: services, sites: sites, pools: pools, problems: problems)
    }

    /// A service's page: its row of the overview, its backups of the last 30 days from the state database, its drills.
    func serviceModel(_ name: String) async -> ServiceModel? {
        let status = await agent.status()
        guard let service = overviewModel(from: status).services.first(where: { $0.name == name }) else { return nil }
        var problems: [String] = []
        var backups: [ServiceModel.Backup] = []
        do {
            let since = status.time.addingTimeInterval(-30 * 86400)
            backups = try await agent.history(job: JobID.backup(name).description, limit: 10_000, since: since).map {
                ServiceModel.Backup(started: $0.started, duration: $0.duration, bytes: $0.bytes,
                                    ok: $0.result == .success || $0.result == .warning, result: $0.result.rawValue, error: $0.error)
            }
        } catch {
            problems.append("the backup history cannot be read: \(errorText(error))")
        }
        var drills: [OverviewModel.Drill] = []
        do {
            drills = try await agent.drillReports(source: name, limit: 10).map {
                OverviewModel.Drill(name: $0.drill, site: $0.site, passed: $0.passed, declared: $0.declared, rtoSeconds: $0.rtoSeconds,
                                    rpoSeconds: $0.rpoSeconds, report: $0.id)
            }
        } catch {
            problems.append("the drill reports cannot be read: \(errorText(error))")
        }
        let plan = await agent.plan
        let source = plan.sources.first { $0.name == name }
        let held = await agent.holdings(of: name)
        var m = ServiceModel(service: service, time: status.time, backups: backups, drills: drills, problems: problems)
        m.holdings = service.sites.map { row in
            guard let h = held[row.site] else {
                return .init(site: row.site, listed: nil, count: 0, copies: [], walRecords: nil, windows: [], problems: [])
            }
            return .init(site: row.site, listed: h.listed, count: h.count,
                         copies: h.copies.map { .init(id: $0.id, time: $0.time, kind: $0.kind, bytes: $0.bytes, added: $0.added) },
                         walRecords: h.walRecords, windows: h.windows.map { ($0.from, $0.until) }, problems: h.problems)
        }
        switch source?.kind {
        case .postgresArchive?, .sqliteContinuous?: m.pointInTime = true
        default: break
        }
        let sites = Set(service.sites.map(\.site))
        m.events = agent.events.newest(30) { $0.source == name || ($0.source == nil && $0.site.map(sites.contains) == true) }.map {
            .init(time: $0.time, kind: $0.event.rawValue, site: $0.site, message: $0.message, resolved: $0.resolved)
        }
        m.drillNames = plan.drills.filter { $0.source == name }.map(\.name)
        return m
    }

    /// `/ui/drills/ID`: a drill's HTML report, rebuilt from the state database's record (no file is read).
    func drillReportPage(_ id: String, viewer: Viewer) async -> Response {
        let found: DrillReport?
        do { found = id.utf8.count <= 128 ? try await agent.drillReport(id: id) : nil } catch {
            return page(.internalServerError, DashboardPages.message("Cannot read the report", "the state database did not answer: \(errorText(error))", viewer: viewer, error: true))
        }
        guard let report = found else {
            return page(.notFound, DashboardPages.message("Not found", "no drill report \(id.prefix(128))", viewer: viewer, error: true))
        }
        var r = page(.ok, report.html())
        // The report is a page of its own, with its own inline style (and still no script).
        r.headers[.contentSecurityPolicy] = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        return r
    }

    /// The sites page's figures: the status's per-site facts and the plan's protection of each site.
    func sitesModel() async -> SitesModel {
        let status = await agent.status()
        let plan = await agent.plan
        let sites = status.sites.map { row -> SitesModel.Site in
            let site = plan.sites.sites.first { $0.name == row.site }
            var protection: String?
            if let days = site?.objectLockDays {
                protection = "S3 Object Lock, \(site?.objectLockMode ?? "governance") mode, \(days) day\(days == 1 ? "" : "s")"
            } else if site?.adminRepository != nil {
                protection = "refuses deletes (append-only); prune deletes through its admin location"
            }
            let repo = site?.repository ?? ""
            let kind = ["s3", "rest", "rclone", "sftp"].first { repo.hasPrefix($0 + ":") } ?? "local"
            return SitesModel.Site(name: row.site, role: row.role, kind: kind, reachable: row.reachable, lagSeconds: row.lagSeconds,
                                   bytesPending: row.bytesPending, snapshotsMissing: row.snapshotsMissing, scrubCoverage: row.scrubCoverage,
                                   lastError: row.lastError, protection: protection)
        }
        return SitesModel(time: status.time, sites: sites, problems: [])
    }

    /// The failover page's figures: every pool of the agent's proxy, as its admin API reports them, and the HA
    /// cluster as this host's node reports it when the plan has an `ha` section.
    func failoverModel() async -> FailoverModel {
        var m = proxyPools()
        if let ha = await agent.plan.ha {
            switch await AgentAPI.haCluster(ha) {
            case .success(let c): m.cluster = c
            case .failure(let e): m.clusterError = e.message
            }
        }
        return m
    }

    /// `GET /cluster` of this host's HA node (`ha.node.api`, a wildcard address read as loopback), within 2 s.
    static func haCluster(_ ha: HAConfig) async -> Result<FailoverModel.Cluster, ActionProblem> {
        var host = ha.api.host
        if host.isEmpty || host == "0.0.0.0" { host = "127.0.0.1" } else if host == "::" { host = "::1" }
        let address = Endpoint(host: host, port: ha.api.port)
        do {
            // Within 2 s, the body included (execute's own timeout ends with the headers): a node that trickles its
            // answer does not hold the page.
            let (code, body) = try await withThrowingTaskGroup(of: (UInt, ByteBuffer)?.self) { group in
                group.addTask {
                    let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: "http://\(address)/cluster"), timeout: .seconds(2))
                    return (response.status.code, try await response.body.collect(upTo: 1 << 20))
                }
                group.addTask { try await Task.sleep(for: .seconds(2)); return nil }
                defer { group.cancelAll() }
                guard let first = try await group.next(), let answer = first else {
                    throw LifeboatError(.io, "no whole answer within 2 s")
                }
                return answer
            }
            guard code == 200 else {
                return .failure(ActionProblem(message: "the node's API at \(address) answered \(code) to GET /cluster"))
            }
            let r = try AgentAPI.decoder().decode(HAClusterReport.self, from: Data(buffer: body))
            let sync = Set(r.synchronous ?? [])
            return .success(FailoverModel.Cluster(
                name: r.cluster, storeReachable: r.storeReachable, leader: r.leader, maintenance: r.maintenance, switchover: r.switchover,
                members: r.members.prefix(100).map { .init(name: $0.name, role: $0.role, leader: $0.leader, timeline: $0.timeline, position: $0.position,
                                               lagBytes: $0.lagBytes, candidate: $0.candidate, synchronous: sync.contains($0.name)) },
                problems: Array(r.problems.prefix(20))))
        } catch is DecodingError {
            return .failure(ActionProblem(message: "the node's API at \(address) answered GET /cluster with something that is not a cluster report"))
        } catch {
            let why = NetworkErrors.describe(error, peer: address.description) ?? "\(error)"
            return .failure(ActionProblem(message: "the node's API at \(address) (ha.node.api) does not answer: \(why)"))
        }
    }

    func proxyPools() -> FailoverModel {
        guard let proxy = agent.proxy else { return FailoverModel(time: Date(), pools: []) }
        let pools = proxy.server.pools.map { pool -> FailoverModel.Pool in
            let st = pool.status()
            let (c, s) = (st.config, st.state)
            let backends = s.members.enumerated().map { i, m -> FailoverModel.Backend in
                let x = i < st.backends.count ? st.backends[i] : nil
                return FailoverModel.Backend(
                    name: m.name, address: i < c.backends.count ? c.backends[i].address.description : "?", state: m.health.state.rawValue,
                    since: m.health.since, disabled: m.health.disabled, draining: m.health.draining, priority: m.priority,
                    connections: m.connections, lastCheckOK: m.health.lastCheck?.ok, lastCheckLatency: m.health.lastCheck?.latency,
                    lastCheckDetail: m.health.lastCheck?.detail, checkFailures: x?.checkFailures ?? 0, fault: x?.fault?.name)
            }
            return FailoverModel.Pool(name: c.name, listen: c.listen.description, mode: c.mode.rawValue, active: s.activeName,
                                      switches: st.switches, lastSwitch: st.lastSwitch, connectionsTotal: st.accepted,
                                      refusedTotal: st.refused, backends: backends)
        }
        return FailoverModel(time: Date(), pools: pools)
    }

    func page(_ status: HTTPResponse.Status, _ html: String) -> Response {
        var r = text(status, html, contentType: "text/html; charset=utf-8")
        r.headers[.cacheControl] = "no-store"
        r.headers[.contentSecurityPolicy] = "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        r.headers[HTTPField.Name("X-Frame-Options")!] = "DENY"
        r.headers[.xContentTypeOptions] = "nosniff"
        r.headers[HTTPField.Name("Referrer-Policy")!] = "no-referrer"
        return r
    }

    func redirect(_ to: String) -> Response {
        var r = Response(status: .seeOther, headers: [.location: to, .cacheControl: "no-store"])
        r.headers[.contentLength] = "0"
        return r
    }

    /// The state digest of the overview's figures, computed at most once a second.
    func liveDigest() async -> String {
        let now = ContinuousClock.now
        if let d = dashboardState.digest.withLock({ $0 }), now - d.at < .milliseconds(900) { return d.value }
        let overview = await overviewModel()
        let holdings = await agent.holdingsVersion
        let events = agent.events.count
        let cluster = await haSummary()
        let value = OverviewModel.digest { add in
            add(overview.liveDigest); add("\(holdings)"); add("\(events)"); add(cluster)
        }
        dashboardState.digest.withLock { $0 = (now, value) }
        return value
    }

    /// What the failover page shows of the HA cluster, as one string (the leader, each member's role and timeline,
    /// maintenance, a switchover, or why it cannot be read), asked of the node at most every 5 s.
    func haSummary() async -> String {
        guard let ha = await agent.plan.ha else { return "" }
        let now = ContinuousClock.now
        if let c = dashboardState.cluster.withLock({ $0 }), now - c.at < .seconds(5) { return c.value }
        let value: String
        switch await AgentAPI.haCluster(ha) {
        case .success(let c):
            value = ([c.leader ?? "-", "\(c.maintenance)", c.switchover ?? "-", "\(c.storeReachable)"]
                     + c.members.map { "\($0.name)=\($0.role)/\($0.timeline.map(String.init) ?? "-")/\($0.candidate)" } + c.problems).joined(separator: ",")
        case .failure(let e): value = "unreadable: " + e.message
        }
        dashboardState.cluster.withLock { $0 = (now, value) }
        return value
    }

    /// `GET /ui/events`: server-sent events for the live refresh. `event: state` with the digest at once and
    /// whenever it changes (checked every second); a comment every 5 s keeps proxies from closing the stream. It
    /// ends after 5 minutes (the browser reconnects after `retry`), when the session ends, and when the agent stops.
    /// At most 32 streams at once: beyond, the stream ends at once and tells the browser to try again in 30 s. A
    /// stream is counted while its body runs, so a client gone before it started costs nothing.
    func liveEvents(_ request: Request, viewer: Viewer) -> Response {
        let me = self
        let cookie = viewer.csrf == nil ? nil : SessionTable.cookie(in: request.headers[.cookie])
        let body = ResponseBody { writer in
            let admitted = me.dashboardState.streams.withLock { n -> Bool in
                guard n < DashboardState.maxStreams else { return false }
                n += 1
                return true
            }
            guard admitted else {
                // Not `event: end` (the script would stop for good): the browser tries again in 30 s.
                try await writer.write(ByteBuffer(string: "retry: 30000\n: too many live dashboards are open (at most \(DashboardState.maxStreams)); trying again in 30 s\n\n"))
                try await writer.finish(nil)
                return
            }
            defer { me.dashboardState.streams.withLock { $0 -= 1 } }
            var last = ""
            var quiet = 0
            try await writer.write(ByteBuffer(string: "retry: 3000\n\n"))
            for _ in 0..<300 {
                if await me.agent.isStopping || Task.isCancelled { break }
                if let cookie, me.dashboardState.sessions.withLock({ $0.lookup(cookie, now: Date().timeIntervalSince1970, touch: false) }) == nil {
                    try await writer.write(ByteBuffer(string: "event: end\ndata: the session ended\n\n"))
                    break
                }
                let d = await me.liveDigest()
                if d != last {
                    try await writer.write(ByteBuffer(string: "event: state\ndata: \(d)\n\n"))
                    last = d
                    quiet = 0
                } else {
                    quiet += 1
                    // Also how a client that left is noticed (the write fails): every 5 s.
                    if quiet >= 5 { try await writer.write(ByteBuffer(string: ": still here\n\n")); quiet = 0 }
                }
                try await Task.sleep(for: .seconds(1))
            }
            try await writer.finish(nil)
        }
        var headers: HTTPFields = [.contentType: "text/event-stream; charset=utf-8", .cacheControl: "no-store"]
        headers[HTTPField.Name("X-Accel-Buffering")!] = "no"
        return Response(status: .ok, headers: headers, body: body)
    }
}
