import Foundation
import Hummingbird
import HTTPTypes
import LifeboatCore
import LifeboatDashboard
import LifeboatDrill
import LifeboatPlan
import LifeboatProxy
import LifeboatSites
import LifeboatReplication
import NIOCore
import Synchronization

/// The dashboard's sessions, shared by the API's requests.
final class DashboardState: Sendable {
    let sessions = Mutex(SessionTable())
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
        case (.get, "login"):
            return page(.ok, loginPage(nil))
        case (.post, "login"):
            return await login(request, now: now)
        default:
            break
        }
        guard let viewer = identify(request, now: now) else {
            return page(.unauthorized, loginPage(nil))
        }
        switch (request.method, parts.first ?? "", parts.count) {
        case (.get, "", 0):
            return page(.ok, DashboardPages.overview(await overviewModel(), viewer: viewer))
        case (.post, "logout", 1):
            guard let form = try? await readForm(request), csrfPasses(form, viewer) else { return forged(viewer) }
            if let id = SessionTable.cookie(in: request.headers[.cookie]) { dashboardState.sessions.withLock { $0.close(id) } }
            var r = redirect("/login")
            r.headers[.setCookie] = SessionTable.clearCookie(secure: tls != nil)
            return r
        case (.get, "ui", 3) where parts[1] == "services":
            guard let m = await serviceModel(parts[2]) else {
                return page(.notFound, DashboardPages.message("Not found", "no service \(parts[2]) in the plan", viewer: viewer, error: true))
            }
            return page(.ok, DashboardPages.service(m, viewer: viewer))
        case (.get, "ui", 2) where parts[1] == "sites":
            return page(.ok, DashboardPages.sites(await sitesModel(), viewer: viewer))
        case (.get, "ui", 2) where parts[1] == "failover":
            return page(.ok, DashboardPages.failover(failoverModel(), viewer: viewer))
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

    /// The session of the request's cookie, or the operator with the bearer token.
    func identify(_ request: Request, now: Double) -> Viewer? {
        if let token, let header = request.headers[.authorization], header.hasPrefix("Bearer "),
           constantTimeEqual(Array(header.dropFirst(7).utf8), Array(token.utf8)) {
            return Viewer(user: "token", role: .operator, csrf: nil)
        }
        guard let id = SessionTable.cookie(in: request.headers[.cookie]),
              let s = dashboardState.sessions.withLock({ $0.lookup(id, now: now) }) else { return nil }
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
        let drills = (status.drills ?? []).filter { $0.source == name }.map {
            OverviewModel.Drill(name: $0.drill, site: $0.site, passed: $0.passed, declared: $0.declared, rtoSeconds: $0.rtoSeconds, rpoSeconds: $0.rpoSeconds)
        }
        return ServiceModel(service: service, time: status.time, backups: backups, drills: drills, problems: problems)
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

    /// The failover page's figures: every pool of the agent's proxy, as its admin API reports them.
    func failoverModel() -> FailoverModel {
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
        r.headers[.contentSecurityPolicy] = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
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
}
