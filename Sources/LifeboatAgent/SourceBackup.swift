import Foundation
import Glibc
import GRDB
import LifeboatCore
import LifeboatPlan
import LifeboatPostgres
import LifeboatProcess
import LifeboatRepository
import LifeboatSnapshot
import LifeboatSQLite
import LifeboatSQLiteWAL

/// What one backup of a source did.
public struct BackupOutcome: Sendable {
    public var snapshot: ID?
    public var files: Int
    public var bytes: UInt64
    public var added: UInt64
    /// Files that could not be read (the run is a warning, not a failure).
    public var errors: [SourceError]
    public var removed = 0
    /// What the mass-change detector found against the parent snapshot (files sources with a parent).
    public var massChange: MassChangeReport?
}

/// Backs up one source of the plan into a repository: files through the archiver, databases and commands as
/// one stream (`pg_dump --format=custom`, `mariadb-dump --single-transaction`, SQLite's `VACUUM INTO`, the
/// command's standard output). Snapshots carry the tag `source=NAME`, by which retention and the RPO find them.
/// `forget` applies the source's retention (per host and paths) at a repository.
public enum SourceBackup {
    public static func tag(_ source: String) -> String { "source=\(source)" }

    public static func run(_ source: Source, repo: Repository, hostname: String = localHostname(), time: Date,
                           massChange: MassChangeThresholds? = MassChangeThresholds(), follower: FollowerControl? = nil,
                           shouldStop: @escaping @Sendable () -> Bool = { false }) async throws -> BackupOutcome {
        // A continuous SQLite source: its follower stores the snapshot (it alone knows the WAL position).
        if case .sqliteContinuous(let path, _) = source.kind {
            guard let follower, follower.isRunning || follower.lastError == nil else {
                throw LifeboatError(.io, "the follower of source \(source.name) (\(path)) is not running\(follower?.lastError.map { ": \($0)" } ?? ""); no snapshot was taken")
            }
            let id = try await follower.snapshot(timeout: 900)
            let snap = try await repo.loadSnapshot(id)
            let size = snap.sqlite.map { UInt64($0.pages) * UInt64($0.pageSize) } ?? 0
            return BackupOutcome(snapshot: id, files: 1, bytes: size, added: 0, errors: [])
        }
        return try await repo.withLock(.shared, operation: "backup \(source.name) (agent)") {
            try await repo.loadIndex()
            _ = try await repo.forgetMissingPacks()
            var opts = BackupOptions()
            opts.tags = [tag(source.name)]
            opts.hostname = hostname
            opts.time = time
            opts.scanTotals = false
            let archiver: Archiver
            let result: BackupResult
            switch source.kind {
            case .files(let paths, let exclude):
                opts.paths = paths
                opts.excludes = exclude
                let abs = Set(paths)
                opts.parent = try await repo.listSnapshots().last {
                    $0.snapshot.isFiles && $0.snapshot.hostname == hostname && Set($0.snapshot.paths) == abs && $0.snapshot.tags.contains(tag(source.name))
                }?.id
                archiver = Archiver(repository: repo, options: opts)
                result = try await archiver.run()
            case .postgres(let dsnFile):
                let env = try PostgresDSN.environment(try readSecretFile(dsnFile, what: "dsn_file of source \(source.name)"))
                archiver = Archiver(repository: repo, options: opts)
                result = try await stream(["pg_dump", "--format=custom", "--no-password"], environment: env,
                                          name: "\(source.name).pgdump", archiver: archiver)
            case .postgresArchive(let dsnFile):
                // A base backup (the WAL in between comes from archive_command); the lock and index are this one's.
                var o = BaseBackup.Options()
                o.environment = try PostgresDSN.environment(try readSecretFile(dsnFile, what: "dsn_file of source \(source.name)"))
                o.tags = opts.tags
                o.hostname = hostname
                o.time = time
                let r = try await BaseBackup.run(repo: repo, options: o)
                let s = r.snapshot.summary ?? SnapshotSummary()
                return BackupOutcome(snapshot: r.id, files: s.totalFilesProcessed, bytes: s.totalBytesProcessed, added: s.dataAddedPacked, errors: [])
            case .sqliteContinuous:
                throw LifeboatError(.io, "internal: continuous SQLite sources are backed up by their follower")
            case .mariadb(let defaults, let databases):
                archiver = Archiver(repository: repo, options: opts)
                var argv = ["mariadb-dump", "--defaults-extra-file=\(defaults)", "--single-transaction", "--routines", "--events", "--triggers"]
                argv += databases.isEmpty ? ["--all-databases"] : ["--databases"] + databases
                result = try await stream(argv, environment: [:], name: "\(source.name).sql", archiver: archiver)
            case .sqlite(let path):
                archiver = Archiver(repository: repo, options: opts)
                result = try await sqlite(path, name: "\(source.name).sqlite", archiver: archiver)
            case .redis(let t):
                archiver = Archiver(repository: repo, options: opts)
                var env: [String: String] = [:]
                if let f = t.passwordFile { env["REDISCLI_AUTH"] = try readSecretFile(f, what: "password_file of source \(source.name)") }
                result = try await stream(["redis-cli"] + t.arguments + ["--no-auth-warning", "--rdb", "-"], environment: env,
                                          name: "\(source.name).rdb", archiver: archiver)
            case .command(let argv):
                archiver = Archiver(repository: repo, options: opts)
                result = try await stream(argv, environment: [:], name: source.name, archiver: archiver)
            }
            let s = result.snapshot.summary ?? SnapshotSummary()
            var outcome = BackupOutcome(snapshot: result.snapshotID, files: s.totalFilesProcessed, bytes: s.totalBytesProcessed,
                                        added: s.dataAddedPacked, errors: result.errors)
            // Every backup with a parent is compared with it: ransomware shows as most files turned random.
            if let t = massChange, let parentID = opts.parent, result.snapshotID != nil, let parent = try? await repo.loadSnapshot(parentID) {
                outcome.massChange = try? await MassChangeDetector.compare(repo, parent: parent, current: result.snapshot, thresholds: t)
            }
            return outcome
        }
    }

    /// Applies a source's retention at a repository (the replicas, before their prune). A PostgreSQL PITR source's
    /// policy applies to its base backups, and the WAL no kept base backup needs goes with them.
    public static func forget(_ source: Source, repo: Repository) async throws -> Int {
        guard let policy = source.retention else { return 0 }
        if case .sqliteContinuous(let path, _) = source.kind {
            return try await repo.withLock(.shared, operation: "forget \(source.name) (agent)") {
                let catalogs = SQLiteCatalog.build(try await repo.listSnapshots())
                var n = 0
                for c in catalogs.values where c.database == path && c.hostname == localHostname() {
                    n += try await SQLiteRetention.execute(SQLiteRetention.plan(c, policy: policy), repo: repo)
                }
                return n
            }
        }
        if case .postgresArchive = source.kind {
            return try await repo.withLock(.shared, operation: "forget \(source.name) (agent)") {
                let snaps = try await repo.listSnapshots()
                let catalogs = WALCatalog.build(snaps)
                var n = 0
                for system in systems(of: source, in: snaps) {
                    guard let c = catalogs[system] else { continue }
                    n += try await WALRetention.execute(WALRetention.plan(c, policy: policy), repo: repo)
                }
                return n
            }
        }
        return try await repo.withLock(.shared, operation: "forget \(source.name) (agent)") {
            let mine = try await repo.listSnapshots().filter { $0.snapshot.isFiles && $0.snapshot.tags.contains(tag(source.name)) }
            return try await Forget.execute(Forget.plan(mine, policy: policy, groupBy: GroupBy()), repo: repo)
        }
    }

    /// The database systems whose base backups the source took (its records carry its tag).
    public static func systems(of source: Source, in snapshots: [(id: ID, snapshot: Snapshot)]) -> Set<String> {
        Set(snapshots.compactMap { s in
            s.snapshot.kind == "pg-base" && s.snapshot.tags.contains(tag(source.name)) ? s.snapshot.database?.system : nil
        })
    }

    /// When the newest copy of a source at a site was made: its newest snapshot; for a PostgreSQL PITR source, the
    /// newest archived WAL (or base backup) of its cluster, which is what its RPO is measured by.
    public static func newest(_ source: Source, in snapshots: [(id: ID, snapshot: Snapshot)]) -> Date? {
        if case .sqliteContinuous(let path, _) = source.kind {
            return snapshots.filter { $0.snapshot.sqlite?.database == path && $0.snapshot.tags.contains(tag(source.name)) }.map(\.snapshot.date).max()
        }
        if case .postgresArchive = source.kind {
            let systems = systems(of: source, in: snapshots)
            return snapshots.filter { s in
                (s.snapshot.kind == "pg-wal" || s.snapshot.kind == "pg-base") && s.snapshot.database.map { systems.contains($0.system) } == true
            }.map(\.snapshot.date).max()
        }
        return snapshots.filter { $0.snapshot.isFiles && $0.snapshot.tags.contains(tag(source.name)) }.map(\.snapshot.date).max()
    }

    /// Runs `argv` and backs up its standard output as one file; fails (no snapshot) when it fails.
    static func stream(_ argv: [String], environment: [String: String], name: String, archiver: Archiver) async throws -> BackupResult {
        var fds: [Int32] = [0, 0]
        guard makePipe(&fds) else { throw LifeboatError(.io, "cannot create a pipe: \(String(cString: strerror(errno)))") }
        let readFD = fds[0], writeFD = fds[1]
        let errors = try Capture()
        let child: Child
        do {
            child = try Child.spawn(argv, environment: environment, stdout: writeFD, stderr: errors.writeFD)
        } catch {
            close(readFD); close(writeFD); errors.closeWriter()
            throw LifeboatError(.io, "\(error); no snapshot was saved")
        }
        close(writeFD)
        errors.closeWriter()
        defer { close(readFD) }
        let program = argv[0]
        do {
            // Cancelled (the agent stops): the child's whole group is killed, so the read below ends.
            return try await withTaskCancellationHandler {
                try await archiver.runStream(name: name, readAsync: { max in
                    try await blockingRead(readFD, max: max, what: "the output of \(program)")
                }, finish: {
                    // The end of the output: the child's exit status decides (a failed dump saves no snapshot).
                    let exit = await child.wait()
                    if let sig = exit.signal { throw ChildError("\(program) was killed by signal \(sig)") }
                    if exit.status != 0 { throw ChildError("\(program) failed with exit status \(exit.status)") }
                })
            } onCancel: {
                child.killGroup()
            }
        } catch let e as ChildError {
            let why = await errors.text()
            throw LifeboatError(.io, "\(e.description)\(why.isEmpty ? "" : ": \(why)"); no snapshot was saved")
        } catch {
            child.killGroup()
            var st: Int32 = 0
            _ = waitpid(child.pid, &st, 0)
            throw error
        }
    }

    /// SQLite's online copy: `VACUUM INTO` a private temporary file (a consistent copy while writers go on, waiting
    /// up to 10 s for a lock), backed up as one file, then removed.
    static func sqlite(_ path: String, name: String, archiver: Archiver) async throws -> BackupResult {
        guard FileManager.default.fileExists(atPath: path) else { throw LifeboatError(.notFound, "the SQLite database \(path) does not exist") }
        let dir = (ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp") + "/lifeboat-sqlite-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        guard mkdir(dir, 0o700) == 0 else { throw LifeboatError(.io, "cannot create \(dir): \(String(cString: strerror(errno)))") }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let copy = dir + "/copy.sqlite"
        do {
            var config = Configuration()
            config.readonly = true
            config.busyMode = .timeout(10)
            let q = try DatabaseQueue(path: path, configuration: config)
            try await q.writeWithoutTransaction { db in try db.execute(sql: "VACUUM INTO ?", arguments: [copy]) }
            try q.close()
        } catch let e as DatabaseError {
            throw LifeboatError(.io, "cannot copy the SQLite database \(path): \(e.message ?? "SQLite error \(e.resultCode.rawValue)")")
        }
        let fd = open(copy, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw LifeboatError(.io, "cannot read the copy of \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        return try await archiver.runStream(name: name, readAsync: { max in
            try await blockingRead(fd, max: max, what: "the copy of \(path)")
        })
    }

    /// A secret file's text (a DSN): at most 64 KiB, trimmed.
    static func readSecretFile(_ path: String, what: String) throws -> String {
        try readPasswordFile(path, from: what)
    }
}

/// Reads up to `max` bytes on a Dispatch thread, not on one of Swift concurrency's few: a pipe that stays
/// quiet (a dump tool waiting on a lock) must not stall the agent's other jobs and its API.

