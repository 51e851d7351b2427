import Foundation
import LifeboatConfig
import LifeboatCore
import LifeboatFailover
import LifeboatHA
import LifeboatSites
import Yams

/// Where something was written in the plan file (`file:line:column`), for messages about it.
public struct Location: Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int
    public var description: String { line > 0 ? "\(file):\(line):\(column)" : file }
    public init(file: String, line: Int = 0, column: Int = 0) { self.file = file; self.line = line; self.column = column }
    init(_ file: String, _ node: Yams.Node?) {
        self.file = file
        line = node?.mark?.line ?? 0
        column = node?.mark?.column ?? 0
    }
}

/// What a source backs up.
public enum SourceKind: Sendable, Equatable {
    case files(paths: [String], exclude: [String])
    /// `pg_dump --format=custom` of the database the DSN file names (the DSN never reaches argv or logs).
    case postgres(dsnFile: String)
    /// PostgreSQL point-in-time recovery (`pitr: true`): base backups on the schedule (the backup API, through the
    /// DSN file's connection); the WAL comes from `archive_command = 'lifeboat pg wal-push …'` in between.
    case postgresArchive(dsnFile: String)
    /// SQLite's online copy (`VACUUM INTO`) of a database file.
    case sqlite(path: String)
    /// SQLite continuous replication (`continuous: true`): the agent follows the WAL and stores new transactions at
    /// most every `interval` seconds; the schedule stores the whole database (a snapshot record).
    case sqliteContinuous(path: String, interval: Double)
    /// `mariadb-dump --single-transaction` with a client defaults file (user, password, socket).
    case mariadb(defaultsFile: String, databases: [String])
    /// `redis-cli --rdb -`: the server's RDB snapshot (a TCP address or a Unix socket; the password from a file,
    /// passed in REDISCLI_AUTH, never argv).
    case redis(RedisTarget)
    /// Any command whose standard output is the backup.
    case command([String])

    public var name: String {
        switch self {
        case .files: "files"
        case .postgres: "postgres"
        case .postgresArchive: "postgres-pitr"
        case .sqlite: "sqlite"
        case .sqliteContinuous: "sqlite-continuous"
        case .mariadb: "mariadb"
        case .redis: "redis"
        case .command: "command"
        }
    }
}

/// Where a Redis server listens, and the file with its password.
public struct RedisTarget: Sendable, Equatable {
    public var host: String?
    public var port: Int?
    public var socket: String?
    public var passwordFile: String?
    public init(host: String? = nil, port: Int? = nil, socket: String? = nil, passwordFile: String? = nil) {
        self.host = host; self.port = port; self.socket = socket; self.passwordFile = passwordFile
    }
    /// redis-cli's connection arguments.
    public var arguments: [String] {
        if let socket { return ["-s", socket] }
        return ["-h", host ?? "127.0.0.1", "-p", String(port ?? 6379)]
    }
}

/// A service's recovery objectives: how much data it may lose (RPO) and how long a restore may take (RTO).
public struct Objectives: Sendable, Equatable {
    public var rpo: Double?
    public var rto: Double?
}

public struct Hooks: Sendable, Equatable {
    public var before: [String] = []
    public var after: [String] = []
    public var timeout: Double = 300
}

/// One protected source of the plan.
public struct Source: Sendable {
    public var name: String
    public var kind: SourceKind
    public var schedule: Schedule
    public var scheduleText: String
    public var retention: RetentionPolicy?
    public var objectives: Objectives?
    public var hooks: Hooks?
    /// The sites it writes to (the primary; replicas get it by replication). Empty: every site.
    public var sites: [String]
    public var location: Location
    public var scheduleLocation: Location
    public var rpoLocation: Location?

    public init(name: String, kind: SourceKind, schedule: Schedule, scheduleText: String, retention: RetentionPolicy?, objectives: Objectives?,
                hooks: Hooks?, sites: [String], location: Location, scheduleLocation: Location, rpoLocation: Location?) {
        self.name = name; self.kind = kind; self.schedule = schedule; self.scheduleText = scheduleText; self.retention = retention
        self.objectives = objectives; self.hooks = hooks; self.sites = sites; self.location = location
        self.scheduleLocation = scheduleLocation; self.rpoLocation = rpoLocation
    }
}

/// A job on a schedule of its own (checks, prune).
public struct PeriodicJob: Sendable {
    public var schedule: Schedule
    public var scheduleText: String
    public var location: Location
}

public struct ChecksJob: Sendable {
    public var job: PeriodicJob
    /// What each run reads: "5%" or "1/7" (nil: metadata only).
    public var readDataSubset: String?
    /// Every pack read at least once within this span.
    public var fullCoverageWithin: Double?

    /// How many parts the data is read in, one per run, in turn: `5%` is 20, `1/7` is 7 (nil: metadata only).
    public var parts: Int? { ChecksJob.parts(readDataSubset) }

    public static func parts(_ subset: String?) -> Int? {
        guard let subset else { return nil }
        var total = 1
        if subset.hasSuffix("%"), let p = Double(subset.dropLast()), p.isFinite, p > 0 {
            total = Int(min(1_048_576.0, (100 / p).rounded(.up)))
        } else {
            let parts = subset.split(separator: "/")
            total = parts.count == 2 ? Int(parts[1]) ?? 1 : 1
        }
        return max(1, min(total, 1 << 20))
    }
}

public struct Limits: Sendable, Equatable {
    public enum IOClass: String, Sendable { case idle, bestEffort = "best-effort", realtime }
    public var jobs = 2
    public var nice = 10
    public var ionice: IOClass = .idle
}

/// Where alerts go, and which events they take (empty: every event).
public struct AlertTarget: Sendable, Equatable {
    public enum Kind: String, Sendable { case webhook, healthchecks, command }
    public var kind: Kind
    public var url: String?
    public var command: [String]?
    public var on: [AlertEvent]
}

/// Every event Lifeboat alerts on (later features add theirs).
public enum AlertEvent: String, Sendable, CaseIterable {
    case failure, warning, rpoBreach = "rpo_breach", lag, checkError = "check_error", `switch`, agentRestart = "agent_restart"
    case drillFailed = "drill_failed", massChange = "mass_change"
    /// A PostgreSQL archive has a hole (a missing WAL segment) or a base backup without its WAL.
    case walGap = "wal_gap"
}

/// What a drill plays out.
public enum DrillScenario: String, Sendable, CaseIterable {
    /// Restore the newest snapshot at each site into the sandbox, verify it, run the playbook.
    case restore
    /// The primary is lost: each replica alone, without one read from the primary.
    case siteLoss = "site-loss"
    /// A copy of the source is encrypted and backed up to a drill repository at each site, then the attacker's
    /// deletes are tried with the client's credentials; the clean snapshot must survive and restore.
    case ransomware
    /// Bytes of a sandbox copy of a site's repository are flipped; the check must name every damaged pack.
    case corruption
    /// Recovery from nothing: the recovery kit alone rebuilds the plan from a site, which restores the source.
    case fromKit = "from-kit"
    /// The primary backend of a proxy pool is killed while clients run through the proxy.
    case nodeCrash = "node-crash"
}

/// A drill of the plan: a scenario, for a source, from each site of `from` on its own.
public struct Drill: Sendable {
    public var name: String
    public var source: String
    /// The sites drilled, each on its own (default: every site that holds the source).
    public var from: [String]
    public var scenario: DrillScenario
    /// Where each run restores, in a fresh folder of its own that is removed afterwards.
    public var sandbox: String
    /// The recovery procedure (relative paths are taken from the plan file's folder).
    public var playbook: String?
    public var schedule: Schedule?
    public var scheduleText: String?
    /// The user that the playbook's commands run as (PostgreSQL refuses to run as root).
    public var runAs: String?
    /// The whole run's time limit; a run still going then is killed and fails.
    public var timeout: Double = 3600
    /// Variables for the playbook (as `--var`).
    public var variables: [String: String] = [:]
    public var location: Location
    /// node-crash: the proxy pool, the command that crashes its serving backend, the client loop through the pool.
    public var pool: String?
    public var crash: [String]?
    /// node-crash: run at the end whatever happened (`kill -CONT`, a service start).
    public var recover: [String]?
    public var clients = ClientLoop()

    public init(name: String, source: String, from: [String], scenario: DrillScenario, sandbox: String, location: Location) {
        self.name = name; self.source = source; self.from = from; self.scenario = scenario; self.sandbox = sandbox; self.location = location
    }

    /// What each run drills: the sites of `from`, or for node-crash the pool (`pool:NAME`, one run).
    public var targets: [String] { scenario == .nodeCrash ? pool.map { ["pool:\($0)"] } ?? [] : from }
}

/// node-crash's clients: one request every `interval` (connect, send `send`, at least one byte back within
/// `timeout`), for the whole drill and at most `duration` past the crash.
public struct ClientLoop: Sendable, Equatable {
    public var interval: Double = 0.05
    public var duration: Double = 60
    public var timeout: Double = 1
    public var send = "GET / HTTP/1.0\r\nHost: lifeboat-drill\r\n\r\n"
    public init() {}
}

public struct AgentSettings: Sendable, Equatable {
    public var listen = "127.0.0.1:9900"
    public var tokenFile: String?
    public var users: String?
    /// Users of `users` who may act in the dashboard (back up, drill, pause, backend actions); the others only look.
    public var operators: [String] = []
    public var tlsCert: String?
    public var tlsKey: String?
    public var state = "/var/lib/lifeboat/agent.db"
    /// When the agent backs up its own plan and state (the source `lifeboat-agent`).
    public var selfBackup: Schedule = .every(3600)
    public var selfBackupText = "every 1h"
}

/// A files source never copies a database that a continuous SQLite source follows (nor its -wal and -shm): a
/// file copy of a live database is no backup, and the agent opening and closing the file would free the
/// follower's POSIX locks on it. The exclusions are added to the source.
func excludingFollowedDatabases(_ sources: [Source]) -> [Source] {
    let followed = sources.compactMap { s -> String? in
        if case .sqliteContinuous(let path, _) = s.kind { return path }
        return nil
    }
    guard !followed.isEmpty else { return sources }
    return sources.map { s in
        guard case .files(let paths, let exclude) = s.kind else { return s }
        // As the archiver will see it: under a source path as written, or reached through a link on the way
        // (both sides resolved when they exist here).
        var seen: [String] = []
        for db in followed {
            for p in paths {
                let dir = p.hasSuffix("/") ? String(p.dropLast()) : p
                if db == dir || db.hasPrefix(dir + "/") { seen.append(db) }
                if let rp = resolved(dir), let rd = resolved(db), rd.hasPrefix(rp + "/") { seen.append(dir + rd.dropFirst(rp.count)) }
            }
        }
        guard !seen.isEmpty else { return s }
        var t = s
        var extra: [String] = []
        for d in seen { for p in [d, d + "-wal", d + "-shm"].map(PathPattern.literal) where !exclude.contains(p) && !extra.contains(p) { extra.append(p) } }
        t.kind = .files(paths: paths, exclude: exclude + extra)
        return t
    }
}

private func resolved(_ path: String) -> String? {
    guard let r = realpath(path, nil) else { return nil }
    defer { free(r) }
    return String(cString: r)
}

/// The whole disaster-recovery plan (`lifeboat.yaml`): sites, sources with schedules, retention and objectives,
/// checks, prune, replication, the proxy, limits, alerts and the agent. Parsing checks the file's form (unknown
/// keys, types, ranges, cron expressions, names) with line and column; `PlanCheck` checks it against the world.
public struct Plan: Sendable {
    public var path: String
    public var sites: SitesConfig
    public var maxLag: Double?
    public var sources: [Source]
    public var checks: ChecksJob?
    public var prune: PeriodicJob?
    public var proxy: ProxyConfig?
    /// `ha:` (issue 16; read and checked here, run by `lifeboat ha` once it exists: docs/HA.md).
    public var ha: HAConfig?
    public var limits = Limits()
    public var alerts: [AlertTarget] = []
    public var agent = AgentSettings()
    public var drills: [Drill] = []
    public var massChange = MassChangeThresholds()

    public static let defaultPath = "/etc/lifeboat/lifeboat.yaml"

    public init(path: String, sites: SitesConfig, sources: [Source]) { self.path = path; self.sites = sites; self.sources = sources }
    static func nameCharacters(_ c: Character) -> Bool { c.isLetter || c.isNumber || c == "-" || c == "_" || c == "." }

    public static func load(_ path: String) throws -> Plan {
        var st = stat()
        if stat(path, &st) == 0, st.st_size > 16 << 20 {
            throw ConfigError(path, nil, "the file is \(st.st_size) bytes: a plan file is text of at most 16 MiB")
        }
        guard let data = FileManager.default.contents(atPath: path) else { throw ConfigError(path, nil, "cannot read the plan file") }
        return try parse(String(decoding: data, as: UTF8.self), path: path)
    }

    public static func parse(_ text: String, path: String, timeZone: TimeZone = .current) throws -> Plan {
        let y = YAMLReader(path: path)
        let (top, root) = try y.document(text, describedAs: "`sites:` and `sources:`")
        try y.keys(top, ["sites", "sources", "checks", "prune", "replication", "proxy", "ha", "limits", "alerts", "agent", "timezone", "drills", "mass_change"])
        let sites = try SitesConfig.parse(top, root: root, reader: y, replicationKeys: ["max_lag"])
        var plan = Plan(path: path, sites: sites, sources: [])
        var zone = timeZone
        if let z = try y.string(top, "timezone") {
            guard let tz = TimeZone(identifier: z) else { throw y.error(top["timezone"], "unknown time zone \"\(z)\" (use a name such as Europe/Berlin or UTC)") }
            zone = tz
        }
        if let r = top["replication"]?.mapping { plan.maxLag = try y.duration(r, "max_lag") }

        guard let list = top["sources"]?.sequence, !list.isEmpty else {
            throw y.error(top["sources"] ?? root, "`sources:` must be a non-empty list of what to back up")
        }
        for node in list { plan.sources.append(try source(node, y, plan, zone)) }
        plan.sources = excludingFollowedDatabases(plan.sources)

        if let c = top["checks"] {
            let m = try y.mapping(c, "`checks:`")
            try y.keys(m, ["schedule", "read_data_subset", "full_coverage_within", "timezone"])
            var subset: String?
            if let s = try y.string(m, "read_data_subset") {
                guard (try? ReadDataSubsetText.validate(s)) != nil else {
                    throw y.error(m["read_data_subset"], "`read_data_subset`: \"\(s)\" is not N% (0-100) or N/T")
                }
                subset = s
            }
            plan.checks = ChecksJob(job: try job(m, c, y, zone), readDataSubset: subset,
                                    fullCoverageWithin: try y.duration(m, "full_coverage_within", 3600...(3660 * 86400)))
        }
        if let p = top["prune"] {
            let m = try y.mapping(p, "`prune:`")
            try y.keys(m, ["schedule", "timezone"])
            plan.prune = try job(m, p, y, zone)
        }
        if let p = top["proxy"] { plan.proxy = try ProxyConfig.parse(try y.mapping(p, "`proxy:`"), root: p, reader: y) }
        if let h = top["ha"] { plan.ha = try HAConfig.parse(try y.mapping(h, "`ha:`"), owner: h, reader: y) }
        if let l = top["limits"] {
            let m = try y.mapping(l, "`limits:`")
            try y.keys(m, ["jobs", "nice", "ionice"])
            plan.limits.jobs = try y.int(m, "jobs", 1...64) ?? plan.limits.jobs
            plan.limits.nice = try y.int(m, "nice", -20...19) ?? plan.limits.nice
            if let s = try y.string(m, "ionice") {
                guard let c = Limits.IOClass(rawValue: s) else { throw y.error(m["ionice"], "`ionice`: use idle, best-effort or realtime") }
                plan.limits.ionice = c
            }
        }
        if let a = top["alerts"] {
            guard let seq = a.sequence else { throw y.error(a, "`alerts:` must be a list") }
            for node in seq { plan.alerts.append(try alert(node, y)) }
        }
        if let a = top["agent"] {
            let m = try y.mapping(a, "`agent:`")
            try y.keys(m, ["listen", "token_file", "users", "operators", "tls", "state", "self_backup"])
            if let text = try y.string(m, "self_backup") {
                switch Result(catching: { () throws(ScheduleError) -> Schedule in try Schedule(parsing: text, timeZone: zone) }) {
                case .success(let schedule): plan.agent.selfBackup = schedule
                case .failure(let e): throw y.error(m["self_backup"], "`self_backup`: \(e.description)")
                }
                plan.agent.selfBackupText = text
            }
            if m["listen"] != nil { plan.agent.listen = try y.endpoint(m, "listen", owner: a).description }
            plan.agent.tokenFile = try y.string(m, "token_file")
            plan.agent.users = try y.string(m, "users")
            plan.agent.operators = try y.strings(m, "operators") ?? []
            if !plan.agent.operators.isEmpty && plan.agent.users == nil {
                throw y.error(m["operators"], "`operators` names users of `users`, and there is no `users` file")
            }
            plan.agent.state = try y.string(m, "state") ?? plan.agent.state
            if let t = m["tls"] {
                let tm = try y.mapping(t, "`tls:`")
                try y.keys(tm, ["cert", "key"])
                plan.agent.tlsCert = try y.string(tm, "cert", required: true, owner: t)
                plan.agent.tlsKey = try y.string(tm, "key", required: true, owner: t)
            }
        }
        if let d = top["drills"] {
            guard let seq = d.sequence else { throw y.error(d, "`drills:` must be a list") }
            for node in seq { plan.drills.append(try drill(node, y, plan, zone)) }
        }
        if let mc = top["mass_change"] {
            let m = try y.mapping(mc, "`mass_change:`")
            try y.keys(m, ["changed_files", "high_entropy", "min_files", "entropy_bits"])
            plan.massChange.changedShare = try share(m, "changed_files", y) ?? plan.massChange.changedShare
            plan.massChange.entropyShare = try share(m, "high_entropy", y) ?? plan.massChange.entropyShare
            plan.massChange.minFiles = try y.int(m, "min_files", 1...100_000_000) ?? plan.massChange.minFiles
            if let n = m["entropy_bits"] {
                guard let v = n.float, v.isFinite, v >= 1, v <= 8 else { throw y.error(n, "`entropy_bits` must be a number from 1 to 8") }
                plan.massChange.entropyBits = v
            }
        }
        return plan
    }

    /// `50%` or a fraction from 0 to 1.
    static func share(_ m: Yams.Node.Mapping, _ k: String, _ y: YAMLReader) throws -> Double? {
        guard let n = m[k] else { return nil }
        let s = n.string ?? ""
        let v = s.hasSuffix("%") ? Double(s.dropLast()).map { $0 / 100 } : Double(s)
        guard let v, v.isFinite, v > 0, v <= 1 else { throw y.error(n, "`\(k)` must be a share such as 50% (or 0.5), above 0 and at most 100%") }
        return v
    }

    static func drill(_ node: Yams.Node, _ y: YAMLReader, _ plan: Plan, _ zone: TimeZone) throws -> Drill {
        let m = try y.mapping(node, "each drill")
        try y.keys(m, ["name", "source", "from", "scenario", "sandbox", "playbook", "schedule", "timezone", "run_as", "timeout", "variables",
                       "pool", "crash", "recover", "clients"])
        let name = try y.string(m, "name", required: true, owner: node)!
        guard name.count <= 64, name.allSatisfy(nameCharacters) else {
            throw y.error(m["name"], "drill name \"\(name)\" may hold letters, digits, - _ . only (at most 64)")
        }
        guard !plan.drills.contains(where: { $0.name == name }) else { throw y.error(m["name"], "duplicate drill name \"\(name)\"") }
        let sourceName = try y.string(m, "source", required: true, owner: node)!
        guard let source = plan.sources.first(where: { $0.name == sourceName }) else {
            throw y.error(m["source"], "drill \(name): no source named \"\(sourceName)\" (sources: \(plan.sources.map(\.name).joined(separator: ", ")))")
        }
        let scenario = try y.enumValue(m, "scenario", DrillScenario.self) ?? .restore
        for k in ["pool", "crash", "recover", "clients"] where m[k] != nil && scenario != .nodeCrash {
            throw y.error(m[k], "drill \(name): `\(k)` belongs to node-crash drills")
        }
        let holding = source.sites.isEmpty ? plan.sites.sites.map(\.name) : source.sites
        var from = try y.strings(m, "from") ?? []
        for (i, s) in from.enumerated() where !plan.sites.sites.contains(where: { $0.name == s }) {
            throw y.error(m["from"]?.sequence?[i], "drill \(name): no site named \"\(s)\" (sites: \(plan.sites.sites.map(\.name).joined(separator: ", ")))")
        }
        if from.isEmpty { from = scenario == .siteLoss ? holding.filter { $0 != plan.sites.primary.name } : holding }
        if scenario == .siteLoss {
            if let i = from.firstIndex(of: plan.sites.primary.name) {
                throw y.error(m["from"]?.sequence?[i], "drill \(name): site-loss drills the replicas with the primary lost: leave the primary \(plan.sites.primary.name) out of `from`")
            }
            guard !from.isEmpty else { throw y.error(node, "drill \(name): site-loss needs a replica site, and the plan has none") }
        }
        let sandbox = try y.string(m, "sandbox", required: true, owner: node)!
        guard sandbox.hasPrefix("/"), !sandbox.split(separator: "/").contains(".."), sandbox != "/" else {
            throw y.error(m["sandbox"], "drill \(name): `sandbox` must be an absolute folder other than / (each run makes a fresh folder in it)")
        }
        var drill = Drill(name: name, source: sourceName, from: from, scenario: scenario, sandbox: sandbox, location: Location(y.path, m["name"]))
        if let p = try y.string(m, "playbook") {
            drill.playbook = p.hasPrefix("/") ? p : ((y.path as NSString).deletingLastPathComponent as NSString).appendingPathComponent(p)
        }
        if m["schedule"] != nil {
            let (s, text) = try schedule(m, node, y, zone)
            drill.schedule = s
            drill.scheduleText = text
        }
        drill.runAs = try y.string(m, "run_as")
        drill.timeout = try y.duration(m, "timeout", 1...(7 * 86400)) ?? drill.timeout
        if scenario == .nodeCrash { try nodeCrash(&drill, m, node, y, plan) }
        if let v = m["variables"] {
            for (k, val) in try y.mapping(v, "`variables:`") {
                guard let key = k.string, !key.isEmpty, val.scalar != nil, let s = val.string else { throw y.error(k, "each variable is a name and a string") }
                drill.variables[key] = s
            }
        }
        return drill
    }

    /// node-crash: a pool of the plan's proxy with a backend marked `chaos: true`, a crash command, the client loop.
    static func nodeCrash(_ drill: inout Drill, _ m: Yams.Node.Mapping, _ node: Yams.Node, _ y: YAMLReader, _ plan: Plan) throws {
        let name = drill.name
        let pool = try y.string(m, "pool", required: true, owner: node)!
        guard let proxy = plan.proxy, let p = proxy.pools.first(where: { $0.name == pool }) else {
            throw y.error(m["pool"], "drill \(name): no proxy pool named \"\(pool)\" (pools: \(plan.proxy?.pools.map(\.name).joined(separator: ", ") ?? "none"))")
        }
        guard p.backends.contains(where: \.chaos) else {
            throw y.error(m["pool"], "drill \(name): pool \(pool) has no backend marked `chaos: true`, and a drill crashes no other")
        }
        drill.pool = pool
        drill.from = []
        guard m["crash"] != nil else { throw y.error(node, "drill \(name): missing `crash` (the command that crashes the serving backend)") }
        func command(_ k: String) throws -> [String]? {
            guard let c = m[k] else { return nil }
            return c.sequence != nil ? try y.strings(m, k) : ["/bin/sh", "-c", try y.string(m, k)!]
        }
        drill.crash = try command("crash")
        drill.recover = try command("recover")
        if let cl = m["clients"] {
            let cm = try y.mapping(cl, "`clients:`")
            try y.keys(cm, ["interval", "duration", "timeout", "send"])
            drill.clients.interval = try y.duration(cm, "interval", 0.005...60) ?? drill.clients.interval
            drill.clients.duration = try y.duration(cm, "duration", 1...3600) ?? drill.clients.duration
            drill.clients.timeout = try y.duration(cm, "timeout", 0.01...60) ?? drill.clients.timeout
            if let n = cm["send"] {
                guard n.scalar != nil, let text = n.string, text.utf8.count <= 65536 else { throw y.error(n, "`send` must be a string of at most 64 KiB") }
                drill.clients.send = text
            }
        }
    }

    static func zone(_ m: Yams.Node.Mapping, _ y: YAMLReader, _ fallback: TimeZone) throws -> TimeZone {
        guard let z = try y.string(m, "timezone") else { return fallback }
        guard let tz = TimeZone(identifier: z) else { throw y.error(m["timezone"], "unknown time zone \"\(z)\" (use a name such as Europe/Berlin or UTC)") }
        return tz
    }

    static func schedule(_ m: Yams.Node.Mapping, _ owner: Yams.Node, _ y: YAMLReader, _ zone: TimeZone) throws -> (Schedule, String) {
        let text = try y.string(m, "schedule", required: true, owner: owner)!
        do {
            let s = try Schedule(parsing: text, timeZone: try Plan.zone(m, y, zone))
            return (s, text)
        } catch let e as ScheduleError {
            throw y.error(m["schedule"], "`schedule`: \(e.description)")
        }
    }

    static func job(_ m: Yams.Node.Mapping, _ node: Yams.Node, _ y: YAMLReader, _ zone: TimeZone) throws -> PeriodicJob {
        let (s, text) = try schedule(m, node, y, zone)
        return PeriodicJob(schedule: s, scheduleText: text, location: Location(y.path, m["schedule"]))
    }

    static func source(_ node: Yams.Node, _ y: YAMLReader, _ plan: Plan, _ zone: TimeZone) throws -> Source {
        let m = try y.mapping(node, "each source")
        try y.keys(m, ["name", "paths", "exclude", "postgres", "sqlite", "mariadb", "redis", "command", "schedule", "timezone",
                       "retention", "objectives", "hooks", "sites"])
        let name = try y.string(m, "name", required: true, owner: node)!
        guard name.count <= 64, name.allSatisfy(nameCharacters) else {
            throw y.error(m["name"], "source name \"\(name)\" may hold letters, digits, - _ . only (at most 64)")
        }
        guard !plan.sources.contains(where: { $0.name == name }) else { throw y.error(m["name"], "duplicate source name \"\(name)\"") }
        // The agent's own backup (its plan and state database; RecoveryKit.selfSource).
        guard name != "lifeboat-agent" else { throw y.error(m["name"], "the source name \"lifeboat-agent\" is the agent's own backup: choose another") }
        let kinds = ["paths", "postgres", "sqlite", "mariadb", "redis", "command"].filter { m[$0] != nil }
        guard kinds.count == 1 else {
            throw y.error(node, kinds.isEmpty ? "source \(name): say what to back up: paths, postgres, sqlite, mariadb, redis or command"
                                              : "source \(name): one of \(kinds.joined(separator: ", ")), not several")
        }
        let kind: SourceKind
        switch kinds[0] {
        case "paths":
            let paths = try y.strings(m, "paths")!
            for (i, p) in paths.enumerated() where !p.hasPrefix("/") {
                throw y.error(m["paths"]?.sequence?[i], "source \(name): path \"\(p)\" must be absolute")
            }
            kind = .files(paths: paths, exclude: try y.strings(m, "exclude") ?? [])
        case "postgres":
            let pm = try y.mapping(m["postgres"]!, "`postgres:`")
            try y.keys(pm, ["dsn_file", "pitr"])
            let dsn = try y.string(pm, "dsn_file", required: true, owner: m["postgres"])!
            kind = try y.bool(pm, "pitr") == true ? .postgresArchive(dsnFile: dsn) : .postgres(dsnFile: dsn)
        case "sqlite":
            let sm = try y.mapping(m["sqlite"]!, "`sqlite:`")
            try y.keys(sm, ["path", "continuous", "interval"])
            let path = try y.string(sm, "path", required: true, owner: m["sqlite"])!
            guard path.hasPrefix("/") else { throw y.error(sm["path"], "source \(name): the SQLite database path \"\(path)\" must be absolute") }
            if try y.bool(sm, "continuous") == true {
                kind = .sqliteContinuous(path: path, interval: try y.duration(sm, "interval", 0.1...3600) ?? 1)
            } else {
                guard sm["interval"] == nil else { throw y.error(sm["interval"], "source \(name): `interval` applies to `continuous: true` only") }
                kind = .sqlite(path: path)
            }
        case "mariadb":
            let mm = try y.mapping(m["mariadb"]!, "`mariadb:`")
            try y.keys(mm, ["defaults_file", "databases"])
            kind = .mariadb(defaultsFile: try y.string(mm, "defaults_file", required: true, owner: m["mariadb"])!,
                            databases: try y.strings(mm, "databases") ?? [])
        case "redis":
            let rm = try y.mapping(m["redis"]!, "`redis:`")
            try y.keys(rm, ["host", "port", "socket", "password_file"])
            var t = RedisTarget(host: try y.string(rm, "host"), port: try y.int(rm, "port", 1...65535), socket: try y.string(rm, "socket"),
                                passwordFile: try y.string(rm, "password_file"))
            if t.socket != nil && (t.host != nil || t.port != nil) {
                throw y.error(m["redis"], "source \(name): `socket` or `host`/`port`, not both")
            }
            if let h = t.host, h.isEmpty || h.hasPrefix("-") || h.contains(where: { $0.isWhitespace }) {
                throw y.error(rm["host"], "source \(name): \"\(h)\" is not a host name")
            }
            if let sock = t.socket, !sock.hasPrefix("/") { throw y.error(rm["socket"], "source \(name): the socket path must be absolute") }
            if t.socket == nil && t.host == nil { t.host = "127.0.0.1" }
            kind = .redis(t)
        default:
            kind = .command(try y.strings(m, "command")!)
        }
        if m["exclude"] != nil, case .files = kind {} else if m["exclude"] != nil {
            throw y.error(m["exclude"], "source \(name): `exclude` applies to `paths` only")
        }
        let (sched, text) = try schedule(m, node, y, zone)
        var retention: RetentionPolicy?
        if let r = m["retention"] {
            let rm = try y.mapping(r, "`retention:`")
            try y.keys(rm, ["keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly", "keep_within", "keep_tag"])
            let limit = 0...1_000_000
            var p = RetentionPolicy(last: try y.int(rm, "keep_last", limit) ?? 0, hourly: try y.int(rm, "keep_hourly", limit) ?? 0,
                                    daily: try y.int(rm, "keep_daily", limit) ?? 0, weekly: try y.int(rm, "keep_weekly", limit) ?? 0,
                                    monthly: try y.int(rm, "keep_monthly", limit) ?? 0, yearly: try y.int(rm, "keep_yearly", limit) ?? 0)
            if let w = try y.string(rm, "keep_within") {
                do { p.within = try CalendarDuration(parsing: w) } catch { throw y.error(rm["keep_within"], "`keep_within`: \"\(w)\" is not a span such as 1y2m3d4h") }
            }
            p.tags = (try y.strings(rm, "keep_tag") ?? []).map { $0.split(separator: ",").map(String.init) }
            guard !p.isEmpty else { throw y.error(r, "source \(name): `retention:` keeps nothing; give keep_daily, keep_last, …, or leave it out to keep everything") }
            retention = p
        }
        var objectives: Objectives?
        var rpoLocation: Location?
        if let o = m["objectives"] {
            let om = try y.mapping(o, "`objectives:`")
            try y.keys(om, ["rpo", "rto"])
            objectives = Objectives(rpo: try y.duration(om, "rpo", 1...(3660 * 86400)), rto: try y.duration(om, "rto", 1...(3660 * 86400)))
            rpoLocation = Location(y.path, om["rpo"])
        }
        var hooks: Hooks?
        if let h = m["hooks"] {
            let hm = try y.mapping(h, "`hooks:`")
            try y.keys(hm, ["before", "after", "timeout"])
            hooks = Hooks(before: try y.strings(hm, "before") ?? [], after: try y.strings(hm, "after") ?? [],
                          timeout: try y.duration(hm, "timeout", 0.001...86_400) ?? 300)
        }
        var sites: [String] = []
        if m["sites"] != nil {
            sites = try y.strings(m, "sites") ?? []
            for (i, s) in sites.enumerated() where !plan.sites.sites.contains(where: { $0.name == s }) {
                throw y.error(m["sites"]?.sequence?[i], "source \(name): no site named \"\(s)\" (sites: \(plan.sites.sites.map(\.name).joined(separator: ", ")))")
            }
        }
        return Source(name: name, kind: kind, schedule: sched, scheduleText: text, retention: retention, objectives: objectives,
                      hooks: hooks, sites: sites, location: Location(y.path, m["name"]), scheduleLocation: Location(y.path, m["schedule"]),
                      rpoLocation: rpoLocation)
    }

    static func alert(_ node: Yams.Node, _ y: YAMLReader) throws -> AlertTarget {
        let m = try y.mapping(node, "each alert target")
        try y.keys(m, ["type", "url", "command", "on"])
        guard let kind = try y.enumValue(m, "type", AlertTarget.Kind.self) else {
            throw y.error(node, "an alert target needs `type`: webhook, healthchecks or command")
        }
        var target = AlertTarget(kind: kind, on: [])
        switch kind {
        case .webhook, .healthchecks:
            let url = try y.string(m, "url", required: true, owner: node)!
            guard let u = URL(string: url), ["http", "https"].contains(u.scheme ?? ""), u.host != nil else {
                throw y.error(m["url"], "`url`: \"\(url)\" is not an http(s) URL")
            }
            target.url = url
        case .command:
            target.command = try y.strings(m, "command")
            guard target.command != nil else { throw y.error(node, "a command alert needs `command: [program, args…]`") }
        }
        for (i, e) in (try y.strings(m, "on") ?? []).enumerated() {
            guard let ev = AlertEvent(rawValue: e) else {
                throw y.error(m["on"]?.sequence?[i], "unknown event \"\(e)\" (events: \(AlertEvent.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            target.on.append(ev)
        }
        return target
    }
}

/// `N%` or `N/T`, as `check --read-data-subset` takes it.
enum ReadDataSubsetText {
    static func validate(_ s: String) throws {
        if s.hasSuffix("%") {
            guard let v = Double(s.dropLast()), v.isFinite, v > 0, v <= 100 else { throw ScheduleError("bad") }
            return
        }
        let parts = s.split(separator: "/")
        guard parts.count == 2, let n = Int(parts[0]), let t = Int(parts[1]), t >= 1, t <= 1_000_000, n >= 1, n <= t else { throw ScheduleError("bad") }
    }
}
