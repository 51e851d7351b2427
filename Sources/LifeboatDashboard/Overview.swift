import Foundation

/// How an objective stands: green, amber near the limit (80% of it used), red when breached; grey without an
/// objective or a measure.
public enum ObjectiveState: String, Sendable, Equatable {
    case ok, near, breached, unknown

    /// `value` (seconds) against `objective`.
    public static func of(_ value: Double?, objective: Double?) -> ObjectiveState {
        guard let value, let objective, value.isFinite, objective.isFinite, objective > 0 else { return .unknown }
        if value > objective { return .breached }
        if value >= objective * 0.8 { return .near }
        return .ok
    }

    /// The worse of two.
    func worse(_ o: ObjectiveState) -> ObjectiveState {
        let rank: [ObjectiveState: Int] = [.unknown: 0, .ok: 1, .near: 2, .breached: 3]
        return rank[o]! > rank[self]! ? o : self
    }
}

/// What the overview shows, read by the agent from its status, its database and its proxy. Plain values: the
/// page is a function of it, tested without a server.
public struct OverviewModel: Sendable {
    public struct SiteRPO: Sendable {
        public var site: String
        public var rpoSeconds: Double?
        public var newest: Date?
        public var lastError: String?
        public init(site: String, rpoSeconds: Double?, newest: Date?, lastError: String?) {
            self.site = site; self.rpoSeconds = rpoSeconds; self.newest = newest; self.lastError = lastError
        }
    }
    public struct Run: Sendable {
        public var started: Date
        public var result: String
        public var duration: Double?
        public var bytes: Int64
        public var error: String?
        public init(started: Date, result: String, duration: Double?, bytes: Int64, error: String?) {
            self.started = started; self.result = result; self.duration = duration; self.bytes = bytes; self.error = error
        }
    }
    public struct Drill: Sendable {
        public var name: String
        public var site: String
        public var passed: Bool
        public var declared: Date
        public var rtoSeconds: Double?
        public var rpoSeconds: Double?
        /// The report's ID (its page: `/ui/drills/ID`).
        public var report: String?
        public init(name: String, site: String, passed: Bool, declared: Date, rtoSeconds: Double?, rpoSeconds: Double?, report: String? = nil) {
            self.name = name; self.site = site; self.passed = passed; self.declared = declared; self.rtoSeconds = rtoSeconds; self.rpoSeconds = rpoSeconds
            self.report = report
        }
    }
    public struct Service: Sendable {
        public var name: String
        public var kind: String
        public var paused: Bool
        public var running: Bool
        public var rpoObjective: Double?
        public var rtoObjective: Double?
        public var measuredRTO: Double?
        public var sites: [SiteRPO]
        public var lastBackup: Run?
        public var lastDrill: Drill?
        public init(name: String, kind: String, paused: Bool, running: Bool, rpoObjective: Double?, rtoObjective: Double?,
                    measuredRTO: Double?, sites: [SiteRPO], lastBackup: Run?, lastDrill: Drill?) {
            self.name = name; self.kind = kind; self.paused = paused; self.running = running; self.rpoObjective = rpoObjective
            self.rtoObjective = rtoObjective; self.measuredRTO = measuredRTO; self.sites = sites; self.lastBackup = lastBackup; self.lastDrill = lastDrill
        }

        /// The row's colour: the worst of its sites' RPO and of the measured RTO.
        public var state: ObjectiveState {
            var s = sites.reduce(ObjectiveState.unknown) { $0.worse(.of($1.rpoSeconds, objective: rpoObjective)) }
            s = s.worse(.of(measuredRTO, objective: rtoObjective))
            if let d = lastDrill, !d.passed { s = s.worse(.breached) }
            return s
        }
    }
    public struct Site: Sendable {
        public var name: String
        public var role: String
        public var reachable: Bool
        public var lagSeconds: Double?
        public var bytesPending: UInt64?
        public var lastError: String?
        public init(name: String, role: String, reachable: Bool, lagSeconds: Double?, bytesPending: UInt64?, lastError: String?) {
            self.name = name; self.role = role; self.reachable = reachable; self.lagSeconds = lagSeconds; self.bytesPending = bytesPending; self.lastError = lastError
        }
    }
    public struct Pool: Sendable {
        public struct Backend: Sendable {
            public var name: String
            public var state: String
            public var disabled: Bool
            public init(name: String, state: String, disabled: Bool) { self.name = name; self.state = state; self.disabled = disabled }
        }
        public var name: String
        public var active: String?
        public var backends: [Backend]
        public init(name: String, active: String?, backends: [Backend]) { self.name = name; self.active = active; self.backends = backends }
    }

    public var plan: String
    public var time: Date
    public var services: [Service]
    public var sites: [Site]
    public var pools: [Pool]
    /// What could not be read (a busy database, an unreachable site): said on the page, which renders anyway.
    public var problems: [String]

    public init(plan: String, time: Date, services: [Service], sites: [Site], pools: [Pool], problems: [String]) {
        self.plan = plan; self.time = time; self.services = services; self.sites = sites; self.pools = pools; self.problems = problems
    }

    /// What the live refresh watches: a digest (FNV-1a, 16 hex digits) of everything the pages show that changes
    /// by events (a row's colour, a backup or drill that ran, a job started or paused, a site down or back, a
    /// backend's state), not of the RPOs' seconds ticking up.
    public var liveDigest: String { Self.digest { add in liveParts(add) } }

    /// FNV-1a (16 hex digits) of the strings `feed` adds, each one delimited.
    public static func digest(_ feed: ((String) -> Void) -> Void) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        feed { s in for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }; h = (h ^ 0x1f) &* 0x100_0000_01b3 }
        return String(format: "%016llx", h)
    }

    func liveParts(_ add: (String) -> Void) {
        func t(_ d: Date?) -> String { d.map { String(format: "%.0f", $0.timeIntervalSince1970) } ?? "-" }
        for s in services {
            add(s.name); add(s.state.rawValue); add("\(s.running)\(s.paused)")
            for site in s.sites { add(site.site); add(ObjectiveState.of(site.rpoSeconds, objective: s.rpoObjective).rawValue); add(t(site.newest)); add(site.lastError ?? "") }
            if let b = s.lastBackup { add(t(b.started)); add(b.result) }
            if let d = s.lastDrill { add(d.name); add(t(d.declared)); add("\(d.passed)") }
        }
        for s in sites { add(s.name); add("\(s.reachable)"); add(s.lastError ?? ""); add("\(s.bytesPending ?? 0)") }
        for p in pools {
            add(p.name); add(p.active ?? "-")
            for b in p.backends { add(b.name); add(b.state); add("\(b.disabled)") }
        }
        for p in problems { add(p) }
    }
}

/// Who looks at a page: forms carry `csrf` (nil for a client with the bearer token, which sends no cookie).
public struct Viewer: Sendable, Equatable {
    public var user: String
    public var role: DashboardRole
    public var csrf: String?
    public init(user: String, role: DashboardRole, csrf: String?) { self.user = user; self.role = role; self.csrf = csrf }
    public var mayAct: Bool { role == .operator }
}

public enum DashboardPages {
    /// The overview at `/`: one row per protected service, then the sites and the proxy's pools.
    public static func overview(_ m: OverviewModel, viewer: Viewer, live: String? = nil) -> String {
        var h = ""
        let breached = m.services.filter { $0.state == .breached }.count
        let near = m.services.filter { $0.state == .near }.count
        h += "<section class=\"summary\"><p class=\"\(breached > 0 ? "breached" : near > 0 ? "near" : "ok")\" id=\"verdict\">"
        if breached > 0 {
            h += "\(breached) of \(m.services.count) service\(m.services.count == 1 ? "" : "s") outside \(breached == 1 ? "its" : "their") objectives"
        } else if near > 0 {
            h += "Every objective met; \(near) near \(near == 1 ? "its" : "their") limit"
        } else {
            h += "Every objective met (\(m.services.count) service\(m.services.count == 1 ? "" : "s"))"
        }
        h += "</p><p class=\"muted\">plan \(HTML.escape(m.plan)) · \(HTML.time(m.time)) UTC</p></section>\n"
        h += problems(m.problems)

        h += "<h2>Services</h2>\n<table id=\"services\"><thead><tr><th>Service</th><th>RPO objective</th><th>RPO at each site</th>"
        h += "<th>RTO objective</th><th>RTO measured</th><th>Last backup</th><th>Last drill</th>\(viewer.mayAct ? "<th>Actions</th>" : "")</tr></thead><tbody>\n"
        if m.services.isEmpty { h += "<tr><td colspan=\"8\" class=\"muted\">The plan protects no source.</td></tr>\n" }
        for s in m.services {
            let name = HTML.escape(s.name)
            h += "<tr class=\"\(s.state.rawValue)\" data-service=\"\(name)\"><td><a href=\"/ui/services/\(HTML.escape(HTML.pathSegment(s.name)))\"><b>\(name)</b></a> <span class=\"muted\">\(HTML.escape(s.kind))</span>"
            if s.paused { h += " <span class=\"tag\">paused</span>" }
            if s.running { h += " <span class=\"tag\">running</span>" }
            h += "</td><td>\(s.rpoObjective.map(HTML.duration) ?? "—")</td><td>"
            if s.sites.isEmpty { h += "<span class=\"muted\">no site</span>" }
            for site in s.sites {
                let st = ObjectiveState.of(site.rpoSeconds, objective: s.rpoObjective)
                let title = site.lastError.map { " title=\"\(HTML.escape($0))\"" } ?? ""
                h += "<span class=\"badge \(st.rawValue)\"\(title)>\(HTML.escape(site.site)): \(site.newest == nil ? "none yet, " : "")\(site.rpoSeconds.map(HTML.duration) ?? "?")</span> "
            }
            h += "</td><td>\(s.rtoObjective.map(HTML.duration) ?? "—")</td>"
            let rto = ObjectiveState.of(s.measuredRTO, objective: s.rtoObjective)
            h += "<td><span class=\"badge \(rto.rawValue)\">\(s.measuredRTO.map(HTML.duration) ?? "not drilled")</span></td><td>"
            if let b = s.lastBackup {
                h += "\(HTML.escape(b.result)) \(HTML.time(b.started))"
                if let d = b.duration { h += " <span class=\"muted\">in \(HTML.duration(d)), \(HTML.bytes(UInt64(max(0, b.bytes))))</span>" }
                if let e = b.error { h += "<br><span class=\"error\">\(HTML.escape(e))</span>" }
            } else {
                h += "<span class=\"muted\">never</span>"
            }
            h += "</td><td>"
            if let d = s.lastDrill {
                h += "<span class=\"badge \(d.passed ? "ok" : "breached")\">\(d.passed ? "passed" : "failed")</span> \(HTML.escape(d.name)) at \(HTML.escape(d.site)), \(HTML.time(d.declared))"
            } else {
                h += "<span class=\"muted\">none</span>"
            }
            h += "</td>"
            if viewer.mayAct {
                let q = HTML.escape(HTML.pathSegment(s.name))
                h += "<td><a class=\"button\" href=\"/ui/confirm?action=backup&amp;target=\(q)\">Back up now</a> "
                h += s.paused ? "<a href=\"/ui/confirm?action=resume&amp;target=\(q)\">Resume</a>" : "<a href=\"/ui/confirm?action=pause&amp;target=\(q)\">Pause</a>"
                h += "</td>"
            }
            h += "</tr>\n"
        }
        h += "</tbody></table>\n"

        h += "<h2>Sites</h2>\n<table id=\"sites\"><thead><tr><th>Site</th><th>Role</th><th>Reachable</th><th>Replication lag</th><th>Bytes pending</th><th>Last error</th></tr></thead><tbody>\n"
        for s in m.sites {
            h += "<tr class=\"\(s.reachable ? (s.lastError == nil ? "ok" : "near") : "breached")\"><td><b>\(HTML.escape(s.name))</b></td><td>\(HTML.escape(s.role))</td>"
            h += "<td>\(s.reachable ? "yes" : "<b>no</b>")</td><td>\(s.lagSeconds.map(HTML.duration) ?? "—")</td><td>\(s.bytesPending.map(HTML.bytes) ?? "—")</td>"
            h += "<td>\(s.lastError.map { "<span class=\"error\">\(HTML.escape($0))</span>" } ?? "")</td></tr>\n"
        }
        h += "</tbody></table>\n"

        if !m.pools.isEmpty {
            h += "<h2>Proxy pools</h2>\n<table id=\"pools\"><thead><tr><th>Pool</th><th>Serving</th><th>Backends</th></tr></thead><tbody>\n"
            for p in m.pools {
                h += "<tr class=\"\(p.active == nil ? "breached" : "ok")\"><td><b>\(HTML.escape(p.name))</b></td><td>\(p.active.map(HTML.escape) ?? "<b>nothing</b>")</td><td>"
                for b in p.backends {
                    let st: ObjectiveState = b.disabled ? .unknown : b.state == "up" ? .ok : b.state == "down" ? .breached : .near
                    h += "<span class=\"badge \(st.rawValue)\">\(HTML.escape(b.name)): \(HTML.escape(b.state))\(b.disabled ? ", disabled" : "")</span>"
                    if viewer.mayAct {
                        let q = HTML.escape(HTML.pathSegment(p.name) + "/" + HTML.pathSegment(b.name))
                        h += " <a href=\"/ui/confirm?action=\(b.disabled ? "enable" : "disable")&amp;target=\(q)\">\(b.disabled ? "enable" : "disable")</a>"
                        h += " <a href=\"/ui/confirm?action=promote&amp;target=\(q)\">promote</a>"
                    }
                    h += " "
                }
                h += "</td></tr>\n"
            }
            h += "</tbody></table>\n"
        }
        return layout(title: "Lifeboat: \(m.plan)", viewer: viewer, body: h, live: live)
    }

    static func problems(_ list: [String]) -> String {
        guard !list.isEmpty else { return "" }
        return "<div class=\"problems\"><b>Could not read everything:</b><ul>" + list.map { "<li>\(HTML.escape($0))</li>" }.joined() + "</ul></div>\n"
    }

    /// An action's confirmation: what will happen, and a form (with the CSRF token) that does it.
    public static func confirm(what: String, action: String, target: String, viewer: Viewer) -> String {
        var h = "<h2>Confirm</h2><p>\(HTML.escape(what))?</p>\n<form method=\"post\" action=\"/ui/actions\">"
        h += "<input type=\"hidden\" name=\"action\" value=\"\(HTML.escape(action))\">"
        h += "<input type=\"hidden\" name=\"target\" value=\"\(HTML.escape(target))\">"
        if let c = viewer.csrf { h += "<input type=\"hidden\" name=\"csrf\" value=\"\(HTML.escape(c))\">" }
        h += "<button type=\"submit\" id=\"confirm\">Yes, do it</button> <a href=\"/\">Cancel</a></form>\n"
        return layout(title: "Confirm", viewer: viewer, body: h)
    }

    /// A short page after an action, or for an error.
    public static func message(_ title: String, _ text: String, viewer: Viewer?, error: Bool = false) -> String {
        layout(title: title, viewer: viewer, body: "<h2>\(HTML.escape(title))</h2><p class=\"\(error ? "error" : "")\" id=\"message\">\(HTML.escape(text))</p><p><a href=\"/\">Back to the overview</a></p>\n")
    }

    /// The login form: a user and password from `agent.users`, or the agent's token as the password.
    public static func login(error: String?, tokenAccepted: Bool, usersAccepted: Bool) -> String {
        var h = "<h2>Log in</h2>\n"
        if let error { h += "<p class=\"error\" id=\"message\">\(HTML.escape(error))</p>\n" }
        h += "<form method=\"post\" action=\"/login\" class=\"login\">"
        if usersAccepted { h += "<label>User <input name=\"user\" autocomplete=\"username\"></label>" }
        h += "<label>Password <input type=\"password\" name=\"password\" autocomplete=\"current-password\" required></label>"
        h += "<button type=\"submit\">Log in</button></form>\n"
        if tokenAccepted { h += "<p class=\"muted\">\(usersAccepted ? "Or leave the user empty and give" : "Give") the agent's token (agent.token_file) as the password.</p>\n" }
        return layout(title: "Lifeboat: log in", viewer: nil, body: h)
    }

    /// `live`: the state digest the page was rendered from; the page then loads the live refresh (`/ui/live.js`),
    /// which listens to `/ui/events` and reloads the page's content when the digest changes.
    static func layout(title: String, viewer: Viewer?, body: String, live: String? = nil) -> String {
        var h = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        h += "<title>\(HTML.escape(title))</title><link rel=\"stylesheet\" href=\"/ui/style.css\">"
        if live != nil { h += "<script src=\"/ui/live.js\" defer></script>" }
        h += "</head>\n<body><header><h1><a href=\"/\">Lifeboat</a></h1>"
        if let v = viewer {
            h += "<nav><span class=\"muted\">\(HTML.escape(v.user)) (\(v.role.rawValue))</span>"
            if let c = v.csrf {
                h += " <form method=\"post\" action=\"/logout\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"\(HTML.escape(c))\"><button type=\"submit\">Log out</button></form>"
            }
            h += "</nav>"
        }
        if viewer != nil {
            h += "</header>\n<nav class=\"pages\"><a href=\"/\">Overview</a> <a href=\"/ui/sites\">Sites</a> <a href=\"/ui/failover\">Failover</a></nav>"
        } else {
            h += "</header>"
        }
        h += "\n<main\(live.map { " data-live=\"\(HTML.escape($0))\"" } ?? "")>\n" + body + "</main></body></html>\n"
        return h
    }

    /// The live refresh, embedded: pages work without it. It listens to `/ui/events` (server-sent events) and,
    /// when the state digest differs from the page's `data-live`, fetches the page again and swaps its content.
    public static let liveScript = """
    (function () {
      var main = document.querySelector('main[data-live]');
      if (!main || !window.EventSource || !window.fetch || !window.DOMParser) return;
      var busy = false, again = false;
      function refresh() {
        if (busy) { again = true; return; }
        busy = true;
        fetch(location.href, {credentials: 'same-origin', headers: {'X-Lifeboat-Live': '1'}, cache: 'no-store'})
          .then(function (r) { return r.ok ? r.text() : null; })
          .then(function (t) {
            if (t === null) { events.close(); return; }
            var doc = new DOMParser().parseFromString(t, 'text/html');
            var next = doc.querySelector('main[data-live]');
            if (!next) { events.close(); return; }
            main.replaceWith(next);
            main = next;
            document.title = doc.title;
          })
          .catch(function () {})
          .then(function () { busy = false; if (again) { again = false; refresh(); } });
      }
      var events = new EventSource('/ui/events');
      events.addEventListener('state', function (e) {
        if (e.data !== main.getAttribute('data-live')) refresh();
      });
      events.addEventListener('end', function () { events.close(); });
    })();

    """

    /// The one style sheet, embedded (nothing is fetched from elsewhere).
    public static let css = """
    body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
    header{display:flex;justify-content:space-between;align-items:center;padding:8px 16px;background:#13294b;color:#fff}
    header a{color:#fff;text-decoration:none}header .muted{color:#c5cfdc}h1{font-size:18px;margin:0}main{padding:8px 16px}
    table{border-collapse:collapse;width:100%;background:#fff;margin-bottom:16px}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e3e6ea;vertical-align:top}
    th{background:#eef1f5;font-weight:600}tr.breached td:first-child{border-left:4px solid #c62828}tr.near td:first-child{border-left:4px solid #ef8f00}
    tr.ok td:first-child{border-left:4px solid #2e7d32}tr.unknown td:first-child{border-left:4px solid #9aa3ad}
    tr.breached{background:#fdecea}svg.chart{display:block;background:#fff;margin:6px 0;max-width:100%;height:auto}.badge{display:inline-block;padding:1px 6px;border-radius:3px;margin:1px;white-space:nowrap}
    .badge.ok{background:#e3f3e4;color:#1b5e20}.badge.near{background:#fff1d6;color:#8a5300}.badge.breached{background:#c62828;color:#fff}.badge.unknown{background:#eceff1;color:#455a64}
    .summary p{margin:4px 0}#verdict{font-size:16px;font-weight:600}#verdict.breached{color:#c62828}#verdict.near{color:#8a5300}#verdict.ok{color:#2e7d32}
    .muted{color:#68717a}.error{color:#c62828}.tag{font-size:11px;background:#e0e7ff;padding:0 4px;border-radius:3px}
    .problems{background:#fff6e0;border:1px solid #f0c36d;padding:4px 12px;margin:8px 0}form.inline{display:inline}
    nav.pages{padding:6px 16px;background:#e8edf4}nav.pages a{margin-right:14px;color:#13294b;font-weight:600}
    form.login label{display:block;margin:6px 0}a.button,button{background:#13294b;color:#fff;border:0;padding:3px 8px;border-radius:3px;text-decoration:none;cursor:pointer}
    """
}
