import Foundation
import GRDB
import LifeboatCore
import LifeboatDrill
import LifeboatReplication
import LifeboatSites

/// One run of a job, as the state database keeps it.
public struct RunRecord: Sendable, Equatable, Codable {
    public enum Result: String, Sendable, Codable {
        case running, success
        /// Finished, with files it could not read (the CLI's exit 3).
        case warning
        case failure
        /// The agent died while it ran (found at the next start).
        case interrupted
    }
    public var id: Int64?
    public var job: String
    /// The site it ran against (nil: several, e.g. replication).
    public var site: String?
    public var scheduled: Date?
    public var started: Date
    public var finished: Date?
    public var result: Result
    public var error: String?
    public var snapshot: String?
    public var bytes: Int64 = 0
    public var files: Int64 = 0
    public var errors: Int64 = 0

    public var duration: Double? { finished.map { $0.timeIntervalSince(started) } }
}

/// The newest snapshot of a source at a site, as last seen there.
public struct SiteObservation: Sendable, Equatable {
    public var source: String
    public var site: String
    public var newest: Date?
    public var checked: Date
    public var lastSuccess: Date?
    public var lastError: String?
}

/// The agent's state: job history, last runs, pauses, what each site holds, breaches alerted, scrub coverage.
/// SQLite through GRDB in WAL mode with `synchronous=FULL`: a transaction that returned is on disk, so a SIGKILL
/// loses nothing reported done. History is bounded (`keepRuns` newest rows: a year of hourly backups of 100
/// sources); each job's newest run of each result is kept apart (`last_run`), so that the status does not read the
/// history.
public final class StateStore: Sendable {
    let db: any DatabaseWriter
    public let path: String
    public static let keepRuns = 1_000_000

    /// Opens (creating and migrating) the database at `path` for the agent.
    public init(path: String) throws {
        self.path = path
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700]) }
        var config = Configuration()
        config.busyMode = .timeout(10)
        config.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
        do {
            db = try DatabasePool(path: path, configuration: config)
            try StateStore.migrator.migrate(db)
        } catch {
            throw LifeboatError(.io, "cannot open the agent's state database \(path): \(StateStore.describe(error)); check the path (agent.state) and its permissions")
        }
    }

    /// Opens an existing database read-only (`lifeboat status` without a reachable agent).
    public init(readingFrom path: String) throws {
        self.path = path
        guard FileManager.default.fileExists(atPath: path) else {
            throw LifeboatError(.notFound, "no agent state database at \(path): has the agent run with this plan (agent.state)?")
        }
        var config = Configuration()
        config.readonly = true
        config.busyMode = .timeout(5)
        do { db = try DatabaseQueue(path: path, configuration: config) } catch {
            throw LifeboatError(.io, "cannot read the agent's state database \(path): \(StateStore.describe(error))")
        }
    }

    static func describe(_ error: any Error) -> String {
        if let e = error as? DatabaseError { return e.message ?? "SQLite error \(e.resultCode.rawValue)" }
        return "\(error)"
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE run (
                    id INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT NOT NULL, site TEXT, scheduled REAL, started REAL NOT NULL,
                    finished REAL, result TEXT NOT NULL, error TEXT, snapshot TEXT,
                    bytes INTEGER NOT NULL DEFAULT 0, files INTEGER NOT NULL DEFAULT 0, errors INTEGER NOT NULL DEFAULT 0);
                CREATE INDEX run_job ON run(job, started);
                CREATE TABLE job (job TEXT PRIMARY KEY, last_start REAL, paused INTEGER NOT NULL DEFAULT 0, counter INTEGER NOT NULL DEFAULT 0);
                CREATE TABLE site_source (source TEXT NOT NULL, site TEXT NOT NULL, newest REAL, checked REAL NOT NULL,
                    last_success REAL, last_error TEXT, PRIMARY KEY (source, site));
                CREATE TABLE breach (key TEXT PRIMARY KEY, since REAL NOT NULL);
                CREATE TABLE agent (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                """)
        }
        m.registerMigration("v2: drill reports") { db in
            try db.execute(sql: """
                CREATE TABLE drill_report (id TEXT PRIMARY KEY, drill TEXT NOT NULL, site TEXT NOT NULL, declared REAL NOT NULL,
                    passed INTEGER NOT NULL, rto REAL, rpo REAL, report TEXT NOT NULL);
                CREATE INDEX drill_report_drill ON drill_report(drill, site, declared);
                """)
        }
        m.registerMigration("v3: last runs") { db in
            // The status read each job's newest run with a GROUP BY over the whole history: 2 s for a year of
            // hourly runs of 100 sources. The newest run of each job, site and result, kept as runs end.
            try db.execute(sql: """
                CREATE TABLE last_run (job TEXT NOT NULL, site TEXT NOT NULL, result TEXT NOT NULL, id INTEGER NOT NULL,
                    PRIMARY KEY (job, site, result));
                INSERT INTO last_run SELECT job, coalesce(site, ''), result, MAX(id) FROM run
                    WHERE finished IS NOT NULL AND job IS NOT NULL AND result IS NOT NULL AND typeof(id) = 'integer'
                    GROUP BY job, coalesce(site, ''), result;
                """)
        }
        return m
    }

    func write<T>(_ body: @Sendable (Database) throws -> T) throws -> T {
        do { return try db.write(body) } catch {
            throw LifeboatError(.io, "cannot write the agent's state database \(path): \(StateStore.describe(error))")
        }
    }
    func read<T>(_ body: @Sendable (Database) throws -> T) throws -> T {
        do { return try db.read(body) } catch {
            throw LifeboatError(.io, "cannot read the agent's state database \(path): \(StateStore.describe(error))")
        }
    }

    static func date(_ v: Double?) -> Date? {
        guard let v, v.isFinite, abs(v) < 253_402_300_799 else { return nil }
        return Date(timeIntervalSince1970: v)
    }

    /// A consistent copy of the database (`VACUUM INTO`) while the agent goes on writing: what the agent's own
    /// backup takes.
    public func copy(to path: String) throws {
        do { try db.writeWithoutTransaction { try $0.execute(sql: "VACUUM INTO ?", arguments: [path]) } } catch {
            throw LifeboatError(.io, "cannot copy the agent's state database to \(path): \(StateStore.describe(error))")
        }
    }

    // MARK: drills

    /// Drill reports kept at most (the newest).
    public static let keepDrillReports = 5000

    public func saveDrill(_ r: DrillReport) throws {
        let json = r.json()
        let keep = StateStore.keepDrillReports
        try write { db in
            try db.execute(sql: "INSERT OR REPLACE INTO drill_report (id, drill, site, declared, passed, rto, rpo, report) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           arguments: [r.id, r.drill, r.site, r.declared.timeIntervalSince1970, r.passed ? 1 : 0, r.rtoSeconds, r.rpoSeconds, json])
            try db.execute(sql: "DELETE FROM drill_report WHERE rowid <= (SELECT MAX(rowid) FROM drill_report) - ?", arguments: [keep])
        }
    }

    /// A report from its JSON column; nil when it does not decode (a damaged or hostile file).
    static func drillReport(_ r: Row) -> DrillReport? {
        guard let text = r.text("report"), text.utf8.count <= 4 << 20 else { return nil }
        return try? DrillReport.decoder().decode(DrillReport.self, from: Data(text.utf8))
    }

    /// The newest report of each drill at each site.
    public func latestDrills() throws -> [DrillReport] {
        try read { db in
            try Row.fetchAll(db, sql: """
                SELECT report FROM drill_report WHERE rowid IN (SELECT MAX(rowid) FROM drill_report GROUP BY drill, site) ORDER BY drill, site
                """).compactMap(StateStore.drillReport)
        }
    }

    /// Reports, newest first (of one drill, or all), at most `limit`.
    public func drillReports(drill: String? = nil, limit: Int = 100) throws -> [DrillReport] {
        let n = max(1, min(limit, 10_000))
        return try read { db in
            let rows = drill == nil
                ? try Row.fetchAll(db, sql: "SELECT report FROM drill_report ORDER BY rowid DESC LIMIT ?", arguments: [n])
                : try Row.fetchAll(db, sql: "SELECT report FROM drill_report WHERE drill = ? ORDER BY rowid DESC LIMIT ?", arguments: [drill, n])
            return rows.compactMap(StateStore.drillReport)
        }
    }

    public func drillReport(id: String) throws -> DrillReport? {
        try read { db in try Row.fetchOne(db, sql: "SELECT report FROM drill_report WHERE id = ?", arguments: [id]).flatMap(StateStore.drillReport) }
    }

    // MARK: runs

    /// Records a run's start (and the job's last start, for catch-up); returns its row id.
    public func begin(job: String, site: String?, scheduled: Date?, started: Date) throws -> Int64 {
        try write { db in
            try db.execute(sql: "INSERT INTO run (job, site, scheduled, started, result) VALUES (?, ?, ?, ?, 'running')",
                           arguments: [job, site, scheduled?.timeIntervalSince1970, started.timeIntervalSince1970])
            let id = db.lastInsertedRowID
            try db.execute(sql: """
                INSERT INTO job (job, last_start) VALUES (?, ?) ON CONFLICT(job) DO UPDATE SET last_start = excluded.last_start
                """, arguments: [job, started.timeIntervalSince1970])
            return id
        }
    }

    /// Records a run's end.
    public func end(_ id: Int64, finished: Date, result: RunRecord.Result, error: String? = nil, snapshot: String? = nil,
                    bytes: Int64 = 0, files: Int64 = 0, errors: Int64 = 0) throws {
        let keep = StateStore.keepRuns
        try write { db in
            try db.execute(sql: "UPDATE run SET finished = ?, result = ?, error = ?, snapshot = ?, bytes = ?, files = ?, errors = ? WHERE id = ?",
                           arguments: [finished.timeIntervalSince1970, result.rawValue, error.map { String($0.prefix(4000)) }, snapshot, bytes, files, errors, id])
            try StateStore.noteLastRun(db, where: "id = ?", [id])
            if id % 1000 == 0 { try db.execute(sql: "DELETE FROM run WHERE id <= ?", arguments: [id - Int64(keep)]) }
        }
    }

    /// Runs left `running` by a process that died: marked `interrupted`; returns them.
    public func interruptStale(now: Date) throws -> [RunRecord] {
        try write { db in
            let rows = try Row.fetchAll(db, sql: "SELECT * FROM run WHERE result = 'running'")
            try db.execute(sql: "UPDATE run SET result = 'interrupted', finished = ?, error = 'the agent stopped while it ran' WHERE result = 'running'",
                           arguments: [now.timeIntervalSince1970])
            for r in rows { if let id = r["id"] as Int64? { try StateStore.noteLastRun(db, where: "id = ?", [id]) } }
            return rows.compactMap(StateStore.record)
        }
    }

    /// A run row; nil when it lacks a job name (the file is the agent's, but it may come back from a backup that
    /// a hostile site served: every value is read leniently, never trapping on a wrong type).
    static func record(_ r: Row) -> RunRecord? {
        guard let job = r.text("job") else { return nil }
        return RunRecord(id: r.integer("id"), job: job, site: r.text("site"), scheduled: date(r.real("scheduled")),
                         started: date(r.real("started")) ?? Date(timeIntervalSince1970: 0), finished: date(r.real("finished")),
                         result: RunRecord.Result(rawValue: r.text("result") ?? "") ?? .failure, error: r.text("error"),
                         snapshot: r.text("snapshot"), bytes: r.integer("bytes") ?? 0, files: r.integer("files") ?? 0, errors: r.integer("errors") ?? 0)
    }

    /// The newest runs, newest first (of one job, or all), at most `limit`.
    /// The newest runs (of `job`; started at `since` or later), newest first.
    public func history(job: String? = nil, limit: Int = 100, since: Date? = nil) throws -> [RunRecord] {
        let n = max(1, min(limit, 10_000))
        return try read { db in
            let rows: [Row]
            switch (job, since) {
            case (nil, _): rows = try Row.fetchAll(db, sql: "SELECT * FROM run ORDER BY id DESC LIMIT ?", arguments: [n])
            case (let job?, nil): rows = try Row.fetchAll(db, sql: "SELECT * FROM run WHERE job = ? ORDER BY id DESC LIMIT ?", arguments: [job, n])
            case (let job?, let since?):
                // The index on (job, started) gives the window alone, however long the history.
                rows = try Row.fetchAll(db, sql: "SELECT * FROM run WHERE job = ? AND started >= ? ORDER BY started DESC LIMIT ?",
                                        arguments: [job, since.timeIntervalSince1970, n])
            }
            return rows.compactMap(StateStore.record)
        }
    }

    /// `last_run` after a run ended (in the same transaction).
    static func noteLastRun(_ db: Database, where condition: String, _ arguments: StatementArguments) throws {
        try db.execute(sql: """
            INSERT INTO last_run (job, site, result, id) SELECT job, coalesce(site, ''), result, id FROM run
            WHERE \(condition) AND finished IS NOT NULL AND job IS NOT NULL AND result IS NOT NULL
            ON CONFLICT (job, site, result) DO UPDATE SET id = max(id, excluded.id)
            """, arguments: arguments)
    }

    /// Each job's newest finished run of the given result (nil: any), keyed by "job" or "job@site".
    public func lastRuns(result: RunRecord.Result? = nil) throws -> [String: RunRecord] {
        try read { db in
            let filter = result == nil ? "" : "AND result = ?"
            // A database of an older agent read without migrating it (status with no agent running) has no last_run.
            let rows = try Row.fetchAll(db, sql: try db.tableExists("last_run")
                ? (result == nil
                    ? "SELECT run.* FROM run JOIN (SELECT MAX(id) AS id FROM last_run GROUP BY job, site) l ON run.id = l.id"
                    : "SELECT run.* FROM run JOIN last_run l ON run.id = l.id WHERE l.result = ?")
                : "SELECT * FROM run WHERE id IN (SELECT MAX(id) FROM run WHERE finished IS NOT NULL \(filter) GROUP BY job, site)",
                arguments: result.map { [$0.rawValue] } ?? [])
            var out: [String: RunRecord] = [:]
            for r in rows.compactMap(StateStore.record) { out[r.job + (r.site.map { "@" + $0 } ?? "")] = r }
            return out
        }
    }

    // MARK: jobs

    public struct JobRow: Sendable { public var lastStart: Date?; public var paused: Bool; public var counter: Int }

    public func jobs() throws -> [String: JobRow] {
        try read { db in
            var out: [String: JobRow] = [:]
            for r in try Row.fetchAll(db, sql: "SELECT * FROM job") {
                guard let job = r.text("job") else { continue }
                out[job] = JobRow(lastStart: StateStore.date(r.real("last_start")), paused: (r.integer("paused") ?? 0) != 0,
                                  counter: Int(max(0, min(r.integer("counter") ?? 0, 1 << 40))))
            }
            return out
        }
    }

    public func setPaused(_ job: String, _ paused: Bool) throws {
        try write { db in
            try db.execute(sql: "INSERT INTO job (job, paused) VALUES (?, ?) ON CONFLICT(job) DO UPDATE SET paused = excluded.paused",
                           arguments: [job, paused ? 1 : 0])
        }
    }

    /// Increments a job's counter (the check's rotation through the parts of the data) and returns the old value.
    public func advance(_ job: String) throws -> Int {
        try write { db in
            let row = try Row.fetchOne(db, sql: "SELECT counter FROM job WHERE job = ?", arguments: [job])
            let old = Int(max(0, min(row?.integer("counter") ?? 0, 1 << 40)))
            try db.execute(sql: "INSERT INTO job (job, counter) VALUES (?, ?) ON CONFLICT(job) DO UPDATE SET counter = excluded.counter",
                           arguments: [job, old &+ 1])
            return max(0, old)
        }
    }

    // MARK: sites

    public func observe(_ o: SiteObservation) throws {
        try write { db in
            try db.execute(sql: """
                INSERT INTO site_source (source, site, newest, checked, last_success, last_error) VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT(source, site) DO UPDATE SET newest = excluded.newest, checked = excluded.checked,
                    last_success = excluded.last_success, last_error = excluded.last_error
                """, arguments: [o.source, o.site, o.newest?.timeIntervalSince1970, o.checked.timeIntervalSince1970,
                                 o.lastSuccess?.timeIntervalSince1970, o.lastError])
        }
    }

    public func observations() throws -> [SiteObservation] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM site_source ORDER BY source, site").compactMap { r -> SiteObservation? in
                guard let source = r.text("source"), let site = r.text("site") else { return nil }
                return SiteObservation(source: source, site: site, newest: StateStore.date(r.real("newest")),
                                       checked: StateStore.date(r.real("checked")) ?? Date(timeIntervalSince1970: 0),
                                       lastSuccess: StateStore.date(r.real("last_success")), lastError: r.text("last_error"))
            }
        }
    }

    // MARK: replication

    /// The replicator's per-site state, in this database (the agent's replication state is not a file of its own).
    public func replicationStorage() -> ReplicationStateStorage {
        ReplicationStateStorage(load: { [self] in
            guard let text = try? self.flag("replication_state"),
                  let s = try? JSONDecoder().decode(ReplicationState.self, from: Data(text.utf8)) else { return ReplicationState() }
            return s
        }, save: { [self] state in
            let data = try JSONEncoder().encode(state)
            try self.setFlag("replication_state", String(decoding: data, as: UTF8.self))
        })
    }

    // MARK: breaches, agent flags

    public func breaches() throws -> [String: Date] {
        try read { db in
            var out: [String: Date] = [:]
            for r in try Row.fetchAll(db, sql: "SELECT * FROM breach") {
                if let key = r.text("key") { out[key] = StateStore.date(r.real("since")) ?? Date(timeIntervalSince1970: 0) }
            }
            return out
        }
    }

    public func setBreach(_ key: String, since: Date?) throws {
        try write { db in
            if let since {
                try db.execute(sql: "INSERT OR REPLACE INTO breach (key, since) VALUES (?, ?)", arguments: [key, since.timeIntervalSince1970])
            } else {
                try db.execute(sql: "DELETE FROM breach WHERE key = ?", arguments: [key])
            }
        }
    }

    public func flag(_ key: String) throws -> String? {
        try read { db in try Row.fetchOne(db, sql: "SELECT value FROM agent WHERE key = ?", arguments: [key])?.text("value") }
    }

    public func setFlag(_ key: String, _ value: String?) throws {
        try write { db in
            if let value {
                try db.execute(sql: "INSERT OR REPLACE INTO agent (key, value) VALUES (?, ?)", arguments: [key, value])
            } else {
                try db.execute(sql: "DELETE FROM agent WHERE key = ?", arguments: [key])
            }
        }
    }
}

extension Row {
    /// Lenient reads: nil for NULL, a missing column or a value of another type (GRDB's typed subscripts trap).
    func value(_ column: String) -> DatabaseValue { hasColumn(column) ? self[column] as DatabaseValue : .null }
    func text(_ column: String) -> String? { String.fromDatabaseValue(value(column)) }
    func integer(_ column: String) -> Int64? { Int64.fromDatabaseValue(value(column)) }
    func real(_ column: String) -> Double? { Double.fromDatabaseValue(value(column)) }
}
