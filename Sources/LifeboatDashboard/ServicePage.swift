import Foundation

/// A service's page: its objectives and each site's RPO now, a 30-day timeline of its backups (duration, size,
/// result) and of its RPO against the objective, its drills and its recent failures.
public struct ServiceModel: Sendable {
    public struct Backup: Sendable {
        public var started: Date
        public var duration: Double?
        public var bytes: Int64
        public var ok: Bool
        public var result: String
        public var error: String?
        public init(started: Date, duration: Double?, bytes: Int64, ok: Bool, result: String, error: String?) {
            self.started = started; self.duration = duration; self.bytes = bytes; self.ok = ok; self.result = result; self.error = error
        }
    }
    /// What a site held of the service at the agent's last listing of it.
    public struct Holdings: Sendable {
        public struct Copy: Sendable {
            public var id: String
            public var time: Date
            public var kind: String
            public var bytes: UInt64?
            public var added: UInt64?
            public init(id: String, time: Date, kind: String, bytes: UInt64?, added: UInt64?) {
                self.id = id; self.time = time; self.kind = kind; self.bytes = bytes; self.added = added
            }
        }
        public var site: String
        /// nil: not listed since the agent started.
        public var listed: Date?
        public var count: Int
        public var copies: [Copy]
        public var walRecords: Int?
        /// The times it restores to, oldest first (a time between two windows cannot be restored).
        public var windows: [(from: Date, until: Date)]
        public var problems: [String]
        public init(site: String, listed: Date?, count: Int, copies: [Copy], walRecords: Int?, windows: [(from: Date, until: Date)], problems: [String]) {
            self.site = site; self.listed = listed; self.count = count; self.copies = copies; self.walRecords = walRecords
            self.windows = windows; self.problems = problems
        }
    }
    /// An event of the agent about the service or one of its sites (an alert: a failure, a breach, a WAL gap, …).
    public struct Event: Sendable {
        public var time: Date
        public var kind: String
        public var site: String?
        public var message: String
        public var resolved: Bool
        public init(time: Date, kind: String, site: String?, message: String, resolved: Bool) {
            self.time = time; self.kind = kind; self.site = site; self.message = message; self.resolved = resolved
        }
    }
    public var service: OverviewModel.Service
    public var time: Date
    /// The runs of the window, any order.
    public var backups: [Backup]
    public var drills: [OverviewModel.Drill]
    public var problems: [String]
    /// Per site of the service, in the plan's order.
    public var holdings: [Holdings] = []
    /// Newest first.
    public var events: [Event] = []
    /// Whether the service restores to any point in time (PostgreSQL archiving, continuous SQLite).
    public var pointInTime = false
    /// The plan's drills of this service, for the "Run a drill now" buttons.
    public var drillNames: [String] = []
    /// The window the charts cover, in seconds before `time`.
    public var window: Double = 30 * 86400
    public init(service: OverviewModel.Service, time: Date, backups: [Backup], drills: [OverviewModel.Drill], problems: [String]) {
        self.service = service; self.time = time; self.backups = backups; self.drills = drills; self.problems = problems
    }
}

/// Charts drawn on the server as SVG (no script, no outside asset).
public enum Chart {
    /// The RPO over time from the successful backups' times: it grows by one second a second and falls to zero
    /// at each success. Points (time, RPO) from `from` (or the first success, when none came before: there is no
    /// RPO before a service's first backup) to `to`, at most two per success; none without any success.
    public static func rpoSteps(successes: [Date], from: Date, to: Date) -> [(Date, Double)] {
        let s = successes.filter { $0 <= to }.sorted()
        var points: [(Date, Double)] = []
        var last = s.last { $0 < from }
        if let b = last { points.append((from, from.timeIntervalSince(b))) }
        for t in s where t >= from {
            if let l = last { points.append((t, t.timeIntervalSince(l))) }
            points.append((t, 0))
            last = t
        }
        if let l = last { points.append((to, to.timeIntervalSince(l))) }
        return points
    }

    /// An SVG of bars (one per run: height = value, red when it failed) and an optional polyline and limit line,
    /// over [from, to]. Values are clamped to [0, the largest finite one]; the y axis is labelled with `label`.
    public static func svg(id: String, title: String, from: Date, to: Date, bars: [(Date, Double, Bool)], line: [(Date, Double)] = [],
                           limit: Double? = nil, label: (Double) -> String, width: Int = 900, height: Int = 160) -> String {
        let span = max(1, to.timeIntervalSince(from))
        let (left, right, top, bottom) = (60.0, 10.0, 16.0, 20.0)
        let w = Double(width) - left - right, h = Double(height) - top - bottom
        let values = bars.map(\.1) + line.map(\.1) + (limit.map { [$0] } ?? [])
        let top0 = values.filter { $0.isFinite && $0 > 0 }.max() ?? 1
        let ymax = top0 * 1.1
        func x(_ d: Date) -> Double { left + min(max(d.timeIntervalSince(from) / span, 0), 1) * w }
        func y(_ v: Double) -> Double { top + h - min(max(v.isFinite ? v : 0, 0), ymax) / ymax * h }
        var o = "<svg id=\"\(HTML.escape(id))\" class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height)\" viewBox=\"0 0 \(width) \(height)\" role=\"img\" aria-label=\"\(HTML.escape(title))\">"
        o += "<text x=\"\(Int(left))\" y=\"12\" font-size=\"12\" fill=\"#333\">\(HTML.escape(title))</text>"
        o += "<line x1=\"\(Int(left))\" y1=\"\(fmt(top + h))\" x2=\"\(fmt(left + w))\" y2=\"\(fmt(top + h))\" stroke=\"#999\"/>"
        for frac in [0.5, 1.0] {
            let v = ymax / 1.1 * frac
            o += "<text x=\"\(Int(left - 4))\" y=\"\(fmt(y(v) + 4))\" font-size=\"10\" text-anchor=\"end\" fill=\"#666\">\(HTML.escape(label(v)))</text>"
            o += "<line x1=\"\(Int(left))\" y1=\"\(fmt(y(v)))\" x2=\"\(fmt(left + w))\" y2=\"\(fmt(y(v)))\" stroke=\"#eee\"/>"
        }
        let barWidth = max(1, min(6, w / Double(max(1, bars.count))))
        for (d, v, ok) in bars where d >= from && d <= to {
            let yy = y(v)
            o += "<rect x=\"\(fmt(x(d) - barWidth / 2))\" y=\"\(fmt(yy))\" width=\"\(fmt(barWidth))\" height=\"\(fmt(max(0.5, top + h - yy)))\" fill=\"\(ok ? "#5b8def" : "#c62828")\"/>"
        }
        if line.count > 1 {
            o += "<polyline fill=\"none\" stroke=\"#13294b\" stroke-width=\"1.2\" points=\"" + line.map { "\(fmt(x($0.0))),\(fmt(y($0.1)))" }.joined(separator: " ") + "\"/>"
        }
        if let limit {
            o += "<line class=\"limit\" x1=\"\(Int(left))\" y1=\"\(fmt(y(limit)))\" x2=\"\(fmt(left + w))\" y2=\"\(fmt(y(limit)))\" stroke=\"#c62828\" stroke-dasharray=\"4 3\"/>"
            o += "<text x=\"\(fmt(left + w - 2))\" y=\"\(fmt(y(limit) - 3))\" font-size=\"10\" text-anchor=\"end\" fill=\"#c62828\">objective \(HTML.escape(label(limit)))</text>"
        }
        o += "<text x=\"\(Int(left))\" y=\"\(height - 4)\" font-size=\"10\" fill=\"#666\">\(HTML.time(from))</text>"
        o += "<text x=\"\(fmt(left + w))\" y=\"\(height - 4)\" font-size=\"10\" text-anchor=\"end\" fill=\"#666\">\(HTML.time(to))</text>"
        return o + "</svg>"
    }

    static func fmt(_ v: Double) -> String { String(format: "%.1f", v.isFinite ? v : 0) }
}

extension DashboardPages {
    public static func service(_ m: ServiceModel, viewer: Viewer, live: String? = nil) -> String {
        let s = m.service
        let name = HTML.escape(s.name)
        var h = "<h2 data-service=\"\(name)\" class=\"\(s.state.rawValue)\">\(name) <span class=\"muted\">\(HTML.escape(s.kind))</span></h2>\n" + problems(m.problems)
        h += "<p>RPO objective: <b>\(s.rpoObjective.map(HTML.duration) ?? "none")</b> · RTO objective: <b>\(s.rtoObjective.map(HTML.duration) ?? "none")</b>"
        h += " · RTO measured: <b>\(s.measuredRTO.map(HTML.duration) ?? "not drilled")</b></p>\n"
        h += "<table id=\"site-rpo\"><thead><tr><th>Site</th><th>Newest snapshot</th><th>RPO now</th><th>Last error</th></tr></thead><tbody>\n"
        for site in s.sites {
            let st = ObjectiveState.of(site.rpoSeconds, objective: s.rpoObjective)
            h += "<tr class=\"\(st.rawValue)\"><td><b>\(HTML.escape(site.site))</b></td><td>\(site.newest.map { HTML.time($0) } ?? "none yet")</td>"
            h += "<td><span class=\"badge \(st.rawValue)\">\(site.rpoSeconds.map(HTML.duration) ?? "?")</span></td><td>\(site.lastError.map { "<span class=\"error\">\(HTML.escape($0))</span>" } ?? "")</td></tr>\n"
        }
        h += "</tbody></table>\n"
        h += holdings(m)
        let from = m.time.addingTimeInterval(-m.window)
        let runs = m.backups.filter { $0.started >= from && $0.started <= m.time }.sorted { $0.started < $1.started }
        h += "<h3>The last \(Int(m.window / 86400)) days: \(runs.count) backup\(runs.count == 1 ? "" : "s"), \(runs.filter { !$0.ok }.count) failed</h3>\n"
        h += Chart.svg(id: "durations", title: "Backup duration", from: from, to: m.time,
                       bars: runs.map { ($0.started, $0.duration ?? 0, $0.ok) }, label: HTML.duration) + "\n"
        h += Chart.svg(id: "sizes", title: "Bytes added", from: from, to: m.time,
                       bars: runs.map { ($0.started, Double(max(0, $0.bytes)), $0.ok) }, label: { HTML.bytes(UInt64(max(0, min($0, 9e18)))) }) + "\n"
        let successes = runs.filter(\.ok).map(\.started)
        h += Chart.svg(id: "rpo", title: "RPO at the primary site (from the backups' starts)", from: from, to: m.time, bars: [],
                       line: Chart.rpoSteps(successes: successes, from: from, to: m.time), limit: s.rpoObjective, label: HTML.duration) + "\n"
        h += "<h3>Drills</h3>\n<table id=\"drills\"><thead><tr><th>Drill</th><th>Site</th><th>Declared</th><th>Result</th><th>RTO</th><th>RPO</th><th>Report</th></tr></thead><tbody>\n"
        if m.drills.isEmpty { h += "<tr><td colspan=\"7\" class=\"muted\">No drill of this service has run.</td></tr>\n" }
        for d in m.drills.sorted(by: { $0.declared > $1.declared }) {
            h += "<tr class=\"\(d.passed ? "ok" : "breached")\"><td>\(HTML.escape(d.name))</td><td>\(HTML.escape(d.site))</td><td>\(HTML.time(d.declared))</td>"
            h += "<td><span class=\"badge \(d.passed ? "ok" : "breached")\">\(d.passed ? "passed" : "failed")</span></td>"
            h += "<td>\(d.rtoSeconds.map(HTML.duration) ?? "—")</td><td>\(d.rpoSeconds.map(HTML.duration) ?? "—")</td>"
            h += "<td>\(d.report.map { "<a href=\"/ui/drills/\(HTML.escape(HTML.pathSegment($0)))\">report</a>" } ?? "")</td></tr>\n"
        }
        h += "</tbody></table>\n<h3>Recent events</h3>\n<ul id=\"events\">"
        // Failed backups (from the history) and the agent's alerts about the service, newest first.
        var lines: [(Date, String)] = runs.filter { !$0.ok }.suffix(20).map { r in
            (r.started, "\(HTML.time(r.started)) <b>backup \(HTML.escape(r.result))</b>\(r.error.map { ": <span class=\"error\">\(HTML.escape($0))</span>" } ?? "")")
        }
        lines += m.events.prefix(30).map { e in
            (e.time, "\(HTML.time(e.time)) <b>\(HTML.escape(e.kind))\(e.resolved ? " (resolved)" : "")</b>\(e.site.map { " at \(HTML.escape($0))" } ?? ""): <span class=\"\(e.resolved ? "muted" : "error")\">\(HTML.escape(e.message))</span>")
        }
        if lines.isEmpty { h += "<li class=\"muted\">None in the window.</li>" }
        for (_, line) in lines.sorted(by: { $0.0 > $1.0 }).prefix(40) { h += "<li>\(line)</li>" }
        h += "</ul>\n"
        if viewer.mayAct {
            let q = HTML.escape(HTML.pathSegment(s.name))
            h += "<p><a class=\"button\" href=\"/ui/confirm?action=backup&amp;target=\(q)\">Back up now</a> "
            for d in m.drillNames {
                h += "<a class=\"button\" href=\"/ui/confirm?action=drill&amp;target=\(HTML.escape(HTML.pathSegment(d)))\">Run the drill \(HTML.escape(d)) now</a> "
            }
            h += s.paused ? "<a href=\"/ui/confirm?action=resume&amp;target=\(q)\">Resume</a></p>\n" : "<a href=\"/ui/confirm?action=pause&amp;target=\(q)\">Pause</a></p>\n"
        }
        return layout(title: "Lifeboat: \(s.name)", viewer: viewer, body: h, live: live)
    }

    /// Each site's copies of the service (the newest, with sizes) and, for point-in-time sources, the range a
    /// restore can reach there.
    static func holdings(_ m: ServiceModel) -> String {
        guard !m.holdings.isEmpty else { return "" }
        var h = "<h3>Copies at each site</h3>\n"
        for site in m.holdings {
            let name = HTML.escape(site.site)
            h += "<h4 data-site=\"\(name)\">\(name) <span class=\"muted\">"
            guard let listed = site.listed else {
                h += "not listed since the agent started (sites are listed after each replication pass)</span></h4>\n"
                continue
            }
            h += "\(site.count) \(m.pointInTime ? "base backup" : "snapshot")\(site.count == 1 ? "" : "s")"
            if let w = site.walRecords { h += ", \(w) WAL record\(w == 1 ? "" : "s")" }
            h += ", as listed \(HTML.time(listed))</span></h4>\n"
            if m.pointInTime {
                if site.windows.count == 1, let w = site.windows.first {
                    h += "<p class=\"restorable\">Restorable to any time from <b>\(HTML.time(w.from))</b> to <b>\(HTML.time(w.until))</b></p>\n"
                } else if !site.windows.isEmpty {
                    h += "<p class=\"restorable\">Restorable to any time in \(site.windows.count) windows, not between them:</p>\n<ul class=\"restorable\">"
                    for w in site.windows.suffix(10) { h += "<li><b>\(HTML.time(w.from))</b> to <b>\(HTML.time(w.until))</b></li>" }
                    if site.windows.count > 10 { h += "<li class=\"muted\">and \(site.windows.count - 10) older</li>" }
                    h += "</ul>\n"
                } else {
                    h += "<p class=\"restorable error\">No restorable range at this site yet.</p>\n"
                }
            }
            for p in site.problems.prefix(5) { h += "<p class=\"error\">\(HTML.escape(p))</p>\n" }
            guard !site.copies.isEmpty else { continue }
            h += "<table class=\"copies\"><thead><tr><th>Snapshot</th><th>Time</th><th>Kind</th><th>Size</th><th>Added</th></tr></thead><tbody>\n"
            for c in site.copies {
                h += "<tr><td><code>\(HTML.escape(c.id))</code></td><td>\(HTML.time(c.time))</td><td>\(HTML.escape(c.kind))</td>"
                h += "<td>\(c.bytes.map(HTML.bytes) ?? "?")</td><td>\(c.added.map(HTML.bytes) ?? "?")</td></tr>\n"
            }
            if site.count > site.copies.count { h += "<tr><td colspan=\"5\" class=\"muted\">and \(site.count - site.copies.count) older</td></tr>\n" }
            h += "</tbody></table>\n"
        }
        return h
    }
}
