import Foundation
import LifeboatCore
import LifeboatProcess
import LifeboatRepository
import LifeboatSnapshot
import LifeboatWAL

/// A base backup through PostgreSQL's backup API: `pg_backup_start` in a session of its own, the data directory
/// copied file by file (deduplicated against earlier base backups), `pg_backup_stop`, whose label and stop position
/// go into the record. The copy is inconsistent by itself; the WAL from its start to its stop (which must be in the
/// archive: the backup waits for it) makes it consistent. Works on a primary and on a standby.
public struct BaseBackup: Sendable {
    public struct Options: Sendable {
        /// libpq's environment for the connection (no password: PGPASSFILE or ~/.pgpass).
        public var environment: [String: String] = [:]
        public var psql = "psql"
        public var hostname = localHostname()
        public var tags: [String] = []
        /// An immediate checkpoint at the start (else the backup waits for the next scheduled one).
        public var fastCheckpoint = true
        /// How long to wait for the WAL the backup needs to reach the archive.
        public var walTimeout: Double = 120
        public var fileReaders = 2
        /// The record's time (the agent's scheduled time).
        public var time: Date? = nil
        public init() {}
    }

    public struct Result: Sendable {
        public var id: ID?
        public var snapshot: Snapshot
        public var vanished: Int
        public var changed: Int
        public var warnings: [String]
    }

    /// What is left out of a data directory, as pgBackRest and pg_basebackup leave it out: WAL (the archive holds
    /// it), server runtime state, temporary files, and recovery signals.
    public static func excludes(dataDirectory d: String) -> [String] {
        // global/pg_control is copied last, apart (backup): on a standby its minimum recovery point ends the backup.
        ["global/pg_control", "pg_wal/*", "pg_replslot/*", "pg_dynshmem/*", "pg_notify/*", "pg_serial/*", "pg_snapshots/*", "pg_stat_tmp/*",
         "pg_subtrans/*", "postmaster.pid", "postmaster.opts", "backup_label", "backup_label.old", "tablespace_map",
         "recovery.signal", "standby.signal", "recovery.conf"].map { "\(d)/\($0)" }
            + ["\(d)/**/pgsql_tmp*", "\(d)/**/pg_internal.init", "\(d)/lifeboat-spool"]
    }

    public static func run(repo: Repository, options: Options, log: @escaping @Sendable (String) -> Void = { _ in }) async throws -> Result {
        if options.environment["PGPASSWORD"] != nil {
            throw LifeboatError.invalid("the connection settings hold a password: put it in a password file (PGPASSFILE or ~/.pgpass), never in the DSN or the environment")
        }
        let session = try PSQLSession(environment: options.environment, psql: options.psql)
        do {
            let r = try await backup(session, repo: repo, options: options, log: log)
            await session.end()
            return r
        } catch {
            await session.end()  // the server aborts a backup whose session ends
            throw error
        }
    }

    static func backup(_ s: PSQLSession, repo: Repository, options: Options, log: @escaping @Sendable (String) -> Void) async throws -> Result {
        let facts = try await s.query("""
            SELECT current_setting('data_directory'), (SELECT system_identifier FROM pg_control_system()),
                   (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'), current_setting('server_version_num'),
                   pg_is_in_recovery(), current_setting('archive_mode'), current_setting('archive_command')
            """)
        guard let f = facts.first, f.count == 7, let system = UInt64(f[1]), let seg = UInt64(f[2]).flatMap(SegmentSize.init),
              let version = Int(f[3]) else {
            throw LifeboatError(.io, "PostgreSQL's settings did not read as expected (\(facts.first?.joined(separator: " ") ?? "no row"))")
        }
        guard version >= 150000 else { throw LifeboatError.invalid("PostgreSQL \(version / 10000) has no pg_backup_start: base backups need PostgreSQL 15 or later") }
        let dataDir = f[0], standby = f[4] == "t", archiveMode = f[5]
        guard archiveMode == "on" || archiveMode == "always" else {
            throw LifeboatError.invalid("archive_mode is \(archiveMode): a base backup is useless without the WAL after it; set archive_mode = on and archive_command = 'lifeboat pg wal-push %p' (a restart), then back up")
        }
        var warnings: [String] = []
        // Not echoed: another tool's archive_command may carry its credentials.
        if !f[6].contains("lifeboat") { warnings.append("archive_command is not lifeboat's: the backup waits for its WAL in this repository") }
        // The data directory must be this host's: the files are read here.
        guard BaseBackup.systemIdentifier(dataDirectory: dataDir) == system else {
            throw LifeboatError.invalid("the server's data directory \(dataDir) is not readable here as system \(system) (run lifeboat on the database host, as a user that can read the data directory)")
        }
        if let tbs = try? FileManager.default.contentsOfDirectory(atPath: dataDir + "/pg_tblspc"), !tbs.isEmpty {
            throw LifeboatError.invalid("the cluster has \(tbs.count) tablespace(s) outside its data directory, which base backups do not copy yet: nothing was backed up")
        }

        log("starting the backup (\(options.fastCheckpoint ? "immediate" : "scheduled") checkpoint)")
        let started = try await s.query("SELECT pg_backup_start('lifeboat \(Timestamp.format(currentTime()))', \(options.fastCheckpoint))")
        guard let startLSN = started.first?.first.flatMap(LSN.init) else { throw LifeboatError(.io, "pg_backup_start returned no position") }
        log("backup started at \(startLSN)")

        var opts = BackupOptions()
        opts.paths = [dataDir]
        opts.excludes = excludes(dataDirectory: dataDir)
        opts.hostname = options.hostname
        opts.tags = options.tags
        opts.fileReaders = max(1, options.fileReaders)
        opts.time = options.time ?? currentTime()
        let sys = String(system)
        let waitTimeout = options.walTimeout
        // After the files and before the record: stop the backup, then wait for its WAL in the archive. A failure
        // saves no record (the data stays, deduplicated, for the next try).
        opts.finish = { snap, errors in
            let serious = errors.filter { !$0.vanished && !$0.changed }
            guard serious.isEmpty else {
                throw LifeboatError(.io, "\(serious.count) file(s) of the data directory could not be read (first: \(serious[0].path): \(serious[0].message)); no base backup was recorded")
            }
            // pg_control after every other file and before the stop, as pg_basebackup copies it.
            let tree = try await addControlFile(repo: repo, root: snap.tree, dataDirectory: dataDir)
            let b64 = { (e: String) in "translate(encode(convert_to(coalesce(\(e), ''), 'UTF8'), 'base64'), E'\\n', '')" }
            let rows = try await s.query("SELECT lsn, \(b64("labelfile")), \(b64("spcmapfile")), extract(epoch FROM clock_timestamp()) FROM pg_backup_stop(true)")
            guard let r = rows.first, r.count == 4, let stop = LSN(r[0]),
                  let label = Data(base64Encoded: r[1]).map({ String(decoding: $0, as: UTF8.self) }),
                  let map = Data(base64Encoded: r[2]).map({ String(decoding: $0, as: UTF8.self) }),
                  let epoch = Double(r[3]) else {
                throw LifeboatError(.io, "pg_backup_stop's reply did not read as expected")
            }
            log("backup stopped at \(stop)")
            var db = DatabaseRecord(system: sys, segmentSize: seg.bytes)
            db.timeline = labelTimeline(label) ?? 1
            db.startLSN = startLSN.description
            db.stopLSN = stop.description
            db.stopTime = Timestamp.format(Date(timeIntervalSince1970: epoch))
            db.label = label
            db.tablespaceMap = map.isEmpty ? nil : map
            db.version = version
            db.dataDirectory = dataDir
            db.standby = standby
            try await waitForWAL(repo: repo, system: sys, size: seg, record: db, timeout: waitTimeout, log: log)
            var snap = snap
            snap.tree = tree
            snap.kind = "pg-base"
            snap.database = db
            return snap
        }
        let archiver = Archiver(repository: repo, options: opts)
        let result = try await archiver.run()
        return Result(id: result.snapshotID, snapshot: result.snapshot, vanished: result.errors.filter(\.vanished).count,
                      changed: result.errors.filter(\.changed).count, warnings: warnings)
    }

    /// Stores `global/pg_control` and returns the root tree with it added under the data directory's path.
    static func addControlFile(repo: Repository, root: ID, dataDirectory: String) async throws -> ID {
        let path = dataDirectory + "/global/pg_control"
        var st = stat()
        guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_size > 0, st.st_size <= 1 << 20 else {
            throw LifeboatError(.io, "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        let bytes = try WALStore.readWhole(path, size: Int(st.st_size))
        var node = Node(name: Array("pg_control".utf8), type: .file)
        node.mode = UInt32(st.st_mode & 0o7777)
        node.uid = st.st_uid; node.gid = st.st_gid
        node.mtimeNs = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
        node.ctimeNs = Int64(st.st_ctim.tv_sec) * 1_000_000_000 + Int64(st.st_ctim.tv_nsec)
        node.inode = UInt64(st.st_ino); node.device = UInt64(st.st_dev)
        node.size = UInt64(bytes.count)
        node.content = try await WALStore.store(bytes, repo: repo)
        let components = (dataDirectory + "/global").split(separator: "/").map { Array($0.utf8) }
        let newRoot = try await insert(node, into: root, at: components[...], repo: repo)
        try await repo.flush()
        return newRoot
    }

    /// The tree `tree` with `node` put into the folder at `path` below it (every tree on the way saved anew).
    static func insert(_ node: Node, into tree: ID, at path: ArraySlice<[UInt8]>, repo: Repository) async throws -> ID {
        var t = try await repo.loadTree(tree)
        if let first = path.first {
            guard let i = t.nodes.firstIndex(where: { $0.name == first }), t.nodes[i].type == .dir, let sub = t.nodes[i].subtree else {
                throw LifeboatError(.io, "the backup's tree lacks the folder \(String(decoding: first, as: UTF8.self))")
            }
            t.nodes[i].subtree = try await insert(node, into: sub, at: path.dropFirst(), repo: repo)
        } else {
            t.nodes.removeAll { $0.name == node.name }
            t.nodes.append(node)
            t.nodes.sort { $0.name.lexicographicallyPrecedes($1.name) }
        }
        return try await repo.saveTree(t).id
    }

    /// The system identifier in a data directory's `global/pg_control` (its first eight bytes), if readable.
    public static func systemIdentifier(dataDirectory: String) -> UInt64? {
        guard let h = FileHandle(forReadingAtPath: dataDirectory + "/global/pg_control") else { return nil }
        defer { try? h.close() }
        guard let d = try? h.read(upToCount: 8), d.count == 8 else { return nil }
        return d.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
    }

    static func labelTimeline(_ label: String) -> UInt32? {
        for line in label.split(separator: "\n") where line.hasPrefix("START TIMELINE:") {
            return UInt32(line.dropFirst("START TIMELINE:".count).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }

    /// Waits until the archive holds every segment from the backup's start to its stop.
    static func waitForWAL(repo: Repository, system: String, size: SegmentSize, record: DatabaseRecord, timeout: Double,
                           log: @Sendable (String) -> Void) async throws {
        guard let start = record.startLSN.flatMap(LSN.init), let stop = record.stopLSN.flatMap(LSN.init), let tli = record.timeline else { return }
        let deadline = ContinuousClock.now + .seconds(timeout)
        var said = false
        while true {
            let catalogs = try await WALStore.catalogs(repo)
            var missing: [String] = []
            if let c = catalogs[system] {
                let point = BaseBackupPoint(id: "new", timeline: tli, start: start, stop: stop, stopTime: currentTime())
                if let m = c.chain.reach(point).missingForConsistency { missing = [m] }
            } else {
                missing = [WALFileName.segment(timeline: tli, number: size.segment(of: start), size: size)]
            }
            if missing.isEmpty { return }
            guard ContinuousClock.now < deadline else {
                throw LifeboatError(.notFound, "the WAL of the backup (\(start) to \(stop)) did not reach the archive within \(Int(timeout)) s: segment \(missing[0]) is missing. Check that archive_command is 'lifeboat pg wal-push %p' with this repository (on a standby, the primary archives: set archive_timeout there). No base backup was recorded")
            }
            if !said { log("waiting for WAL segment \(missing[0]) to be archived"); said = true }
            try await Task.sleep(for: .milliseconds(500))
        }
    }
}

