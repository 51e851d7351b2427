import Foundation

/// The sites page: each site's reachability, lag, what is pending, its last error and how it is protected against
/// deletes (an append-only server, S3 Object Lock).
public struct SitesModel: Sendable {
    public struct Site: Sendable {
        public var name: String
        public var role: String
        /// `local`, `s3`, `rest`, `rclone`: never the location itself, which can hold credentials.
        public var kind: String
        public var reachable: Bool
        public var lagSeconds: Double?
        public var bytesPending: UInt64?
        public var snapshotsMissing: Int?
        public var scrubCoverage: Double?
        public var lastError: String?
        /// "S3 Object Lock, compliance, 30 days", "append-only (deletes through the admin location)", or nil.
        public var protection: String?
        public init(name: String, role: String, kind: String, reachable: Bool, lagSeconds: Double?, bytesPending: UInt64?,
                    snapshotsMissing: Int?, scrubCoverage: Double?, lastError: String?, protection: String?) {
            self.name = name; self.role = role; self.kind = kind; self.reachable = reachable; self.lagSeconds = lagSeconds
            self.bytesPending = bytesPending; self.snapshotsMissing = snapshotsMissing; self.scrubCoverage = scrubCoverage
            self.lastError = lastError; self.protection = protection
        }
    }
    public var time: Date
    public var sites: [Site]
    public var problems: [String]
    public init(time: Date, sites: [Site], problems: [String]) { self.time = time; self.sites = sites; self.problems = problems }
}

/// The failover page: the proxy's pools and backends as the agent runs them.
public struct FailoverModel: Sendable {
    public struct Backend: Sendable {
        public var name: String
        public var address: String
        public var state: String
        public var since: Date?
        public var disabled: Bool
        public var draining: Bool
        public var priority: Int
        public var connections: Int
        public var lastCheckOK: Bool?
        public var lastCheckLatency: Double?
        public var lastCheckDetail: String?
        public var checkFailures: UInt64
        public var fault: String?
        public init(name: String, address: String, state: String, since: Date?, disabled: Bool, draining: Bool, priority: Int,
                    connections: Int, lastCheckOK: Bool?, lastCheckLatency: Double?, lastCheckDetail: String?, checkFailures: UInt64, fault: String?) {
            self.name = name; self.address = address; self.state = state; self.since = since; self.disabled = disabled
            self.draining = draining; self.priority = priority; self.connections = connections; self.lastCheckOK = lastCheckOK
            self.lastCheckLatency = lastCheckLatency; self.lastCheckDetail = lastCheckDetail; self.checkFailures = checkFailures; self.fault = fault
        }
    }
    public struct Pool: Sendable {
        public var name: String
        public var listen: String
        public var mode: String
        public var active: String?
        public var switches: Int
        public var lastSwitch: Date?
        public var connectionsTotal: UInt64
        public var refusedTotal: UInt64
        public var backends: [Backend]
        public init(name: String, listen: String, mode: String, active: String?, switches: Int, lastSwitch: Date?,
                    connectionsTotal: UInt64, refusedTotal: UInt64, backends: [Backend]) {
            self.name = name; self.listen = listen; self.mode = mode; self.active = active; self.switches = switches
            self.lastSwitch = lastSwitch; self.connectionsTotal = connectionsTotal; self.refusedTotal = refusedTotal; self.backends = backends
        }
    }
    /// The quorum HA cluster as this host's `lifeboat ha` node reports it (its `/cluster`).
    public struct Cluster: Sendable {
        public struct Member: Sendable {
            public var name: String
            public var role: String
            public var leader: Bool
            public var timeline: UInt32?
            public var position: String?
            public var lagBytes: UInt64?
            public var candidate: Bool
            public var synchronous: Bool
            public init(name: String, role: String, leader: Bool, timeline: UInt32?, position: String?, lagBytes: UInt64?, candidate: Bool, synchronous: Bool) {
                self.name = name; self.role = role; self.leader = leader; self.timeline = timeline; self.position = position
                self.lagBytes = lagBytes; self.candidate = candidate; self.synchronous = synchronous
            }
        }
        public var name: String
        public var storeReachable: Bool
        public var leader: String?
        public var maintenance: Bool
        public var switchover: String?
        public var members: [Member]
        public var problems: [String]
        public init(name: String, storeReachable: Bool, leader: String?, maintenance: Bool, switchover: String?, members: [Member], problems: [String]) {
            self.name = name; self.storeReachable = storeReachable; self.leader = leader; self.maintenance = maintenance
            self.switchover = switchover; self.members = members; self.problems = problems
        }
    }
    public var time: Date
    public var pools: [Pool]
    /// nil: the plan has no `ha` section.
    public var cluster: Cluster?
    /// Why the cluster could not be read (the node's API did not answer).
    public var clusterError: String?
    public init(time: Date, pools: [Pool], cluster: Cluster? = nil, clusterError: String? = nil) {
        self.time = time; self.pools = pools; self.cluster = cluster; self.clusterError = clusterError
    }
}

extension DashboardPages {
    public static func sites(_ m: SitesModel, viewer: Viewer, live: String? = nil) -> String {
        var h = "<h2>Sites</h2>\n" + problems(m.problems)
        h += "<table id=\"sites\"><thead><tr><th>Site</th><th>Role</th><th>Kind</th><th>Reachable</th><th>Replication lag</th><th>Snapshots missing</th>"
        h += "<th>Bytes pending</th><th>Checked this cycle</th><th>Protection against deletes</th><th>Last error</th></tr></thead><tbody>\n"
        if m.sites.isEmpty { h += "<tr><td colspan=\"10\" class=\"muted\">The plan has no site.</td></tr>\n" }
        for s in m.sites {
            let st = s.reachable ? (s.lastError == nil && (s.snapshotsMissing ?? 0) == 0 ? "ok" : "near") : "breached"
            h += "<tr class=\"\(st)\" data-site=\"\(HTML.escape(s.name))\"><td><b>\(HTML.escape(s.name))</b></td><td>\(HTML.escape(s.role))</td><td>\(HTML.escape(s.kind))</td>"
            h += "<td>\(s.reachable ? "yes" : "<b>no</b>")</td><td>\(s.lagSeconds.map(HTML.duration) ?? "—")</td><td>\(s.snapshotsMissing.map(String.init) ?? "—")</td>"
            h += "<td>\(s.bytesPending.map(HTML.bytes) ?? "—")</td><td>\(s.scrubCoverage.map { String(format: "%.0f%%", min(max($0, 0), 1) * 100) } ?? "—")</td>"
            h += "<td>\(s.protection.map(HTML.escape) ?? "<span class=\"muted\">none</span>")</td>"
            h += "<td>\(s.lastError.map { "<span class=\"error\">\(HTML.escape($0))</span>" } ?? "")</td></tr>\n"
        }
        h += "</tbody></table>\n<p class=\"muted\">As of \(HTML.time(m.time)) UTC. A replica's lag is the age of the newest snapshot it lacks.</p>\n"
        return layout(title: "Lifeboat: sites", viewer: viewer, body: h, live: live)
    }

    public static func failover(_ m: FailoverModel, viewer: Viewer, live: String? = nil) -> String {
        var h = "<h2>Failover</h2>\n"
        if m.pools.isEmpty { h += "<p class=\"muted\" id=\"message\">This agent runs no proxy pool (the plan has no <code>proxy:</code> section).</p>\n" }
        for p in m.pools {
            let name = HTML.escape(p.name)
            h += "<h3 data-pool=\"\(name)\">\(name) <span class=\"muted\">\(HTML.escape(p.mode)) on \(HTML.escape(p.listen))</span></h3>\n"
            h += "<p>Serving: <b>\(p.active.map(HTML.escape) ?? "nothing")</b> · switches: \(p.switches)"
            if let t = p.lastSwitch { h += " (last \(HTML.time(t)) UTC)" }
            h += " · connections: \(p.connectionsTotal), refused: \(p.refusedTotal)</p>\n"
            h += "<table class=\"pool\"><thead><tr><th>Backend</th><th>Address</th><th>State</th><th>Since</th><th>Priority</th><th>Connections</th>"
            h += "<th>Last check</th><th>Failed checks</th><th>Flags</th>\(viewer.mayAct ? "<th>Actions</th>" : "")</tr></thead><tbody>\n"
            for b in p.backends {
                let st = b.disabled ? "unknown" : b.state == "up" ? "ok" : b.state == "down" ? "breached" : "near"
                h += "<tr class=\"\(st)\" data-backend=\"\(HTML.escape(b.name))\"><td><b>\(HTML.escape(b.name))</b>\(b.name == p.active ? " <span class=\"tag\">serving</span>" : "")</td>"
                h += "<td>\(HTML.escape(b.address))</td><td>\(HTML.escape(b.state))</td><td>\(b.since.map { HTML.time($0) } ?? "—")</td><td>\(b.priority)</td><td>\(b.connections)</td><td>"
                if let ok = b.lastCheckOK {
                    h += ok ? "ok" : "<span class=\"error\">failed</span>"
                    if let l = b.lastCheckLatency { h += " in \(String(format: "%.1f", max(0, min(l, 1e6)) * 1000)) ms" }
                    if let d = b.lastCheckDetail, !d.isEmpty { h += " <span class=\"muted\">\(HTML.escape(d))</span>" }
                } else {
                    h += "<span class=\"muted\">not yet</span>"
                }
                var flags: [String] = []
                if b.disabled { flags.append("disabled") }
                if b.draining { flags.append("draining") }
                if let f = b.fault { flags.append("fault: " + f) }
                h += "</td><td>\(b.checkFailures)</td><td>\(HTML.escape(flags.joined(separator: ", ")))</td>"
                if viewer.mayAct {
                    let q = HTML.escape(HTML.pathSegment(p.name) + "/" + HTML.pathSegment(b.name))
                    h += "<td><a href=\"/ui/confirm?action=\(b.disabled ? "enable" : "disable")&amp;target=\(q)\">\(b.disabled ? "enable" : "disable")</a>"
                    if p.mode == "failover" && b.name != p.active { h += " <a href=\"/ui/confirm?action=promote&amp;target=\(q)\">promote</a>" }
                    h += "</td>"
                }
                h += "</tr>\n"
            }
            h += "</tbody></table>\n"
        }
        h += cluster(m)
        h += "<p class=\"muted\">As of \(HTML.time(m.time)) UTC.</p>\n"
        return layout(title: "Lifeboat: failover", viewer: viewer, body: h, live: live)
    }

    /// The HA cluster's members (leader, timeline, lag, candidates), as this host's node sees them.
    static func cluster(_ m: FailoverModel) -> String {
        if let e = m.clusterError {
            return "<h3>HA cluster</h3>\n<p class=\"error\" id=\"cluster-error\">The cluster cannot be read: \(HTML.escape(e))</p>\n"
        }
        guard let c = m.cluster else { return "" }
        let name = HTML.escape(c.name)
        var h = "<h3 data-cluster=\"\(name)\">HA cluster \(name)</h3>\n<p>Leader: <b>\(c.leader.map(HTML.escape) ?? "none")</b>"
        if c.maintenance { h += " · <span class=\"badge near\">maintenance: no automatic failover</span>" }
        if let s = c.switchover { h += " · switchover requested: \(HTML.escape(s))" }
        if !c.storeReachable { h += " · <span class=\"badge breached\">etcd unreachable from this node</span>" }
        h += "</p>\n"
        for p in c.problems.prefix(5) { h += "<p class=\"error\">\(HTML.escape(p))</p>\n" }
        h += "<table class=\"cluster\"><thead><tr><th>Member</th><th>Role</th><th>Timeline</th><th>Position</th><th>Lag</th><th>May take over</th></tr></thead><tbody>\n"
        for x in c.members {
            let st = x.leader ? "ok" : x.role == "standby" && x.candidate ? "ok" : x.role == "standby" ? "near" : "breached"
            h += "<tr class=\"\(st)\" data-member=\"\(HTML.escape(x.name))\"><td><b>\(HTML.escape(x.name))</b>\(x.leader ? " <span class=\"tag\">leader</span>" : "")\(x.synchronous ? " <span class=\"tag\">sync</span>" : "")</td>"
            h += "<td>\(HTML.escape(x.role))</td><td>\(x.timeline.map { String($0) } ?? "?")</td><td>\(HTML.escape(x.position ?? "?"))</td>"
            h += "<td>\(x.lagBytes.map(HTML.bytes) ?? "?")</td><td>\(x.leader ? "—" : x.candidate ? "yes" : "no")</td></tr>\n"
        }
        if c.members.isEmpty { h += "<tr><td colspan=\"6\" class=\"muted\">No member has registered.</td></tr>\n" }
        return h + "</tbody></table>\n"
    }
}
