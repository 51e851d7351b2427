import Foundation
import LifeboatCore
import LifeboatRepository
import LifeboatSnapshot
import LifeboatWAL

/// Point-in-time recovery: lays down the newest base backup from which the target can be reached, with its
/// `backup_label`, and the recovery settings with which `pg_ctl start` replays the archived WAL (through
/// `restore_command`) to exactly the target, then promotes. Everything is checked before a file is written: a
/// target outside the restorable range, a hole in the WAL, or a base backup without its WAL is an error that names
/// what is missing and the nearest restorable point.
public struct PointInTimeRestore: Sendable {
    public struct Options: Sendable {
        public var target: String
        public var recovery: RecoveryTarget = .latest
        /// The cluster (`--cluster`), when the repository holds several.
        public var system: String?
        /// The `restore_command` written into the restored cluster (the CLI builds it from its own options).
        public var restoreCommand: String
        /// What the server does at the target: promote (default), pause or shutdown.
        public var action = "promote"
        /// Turn archiving off in the restored cluster (a drill's copy must not archive into the production archive).
        public var archiveOff = false
        public var restore = RestoreOptions()
        /// Segments laid into the restored cluster's spool (`lifeboat-spool/fetch/`) with the files, so that the
        /// first calls of restore_command need no repository open (0: none).
        public var prefill = 8
        /// Every file the replay needs goes into the spool (all segments to the target, the timeline's history),
        /// so that the copy never reads the repository: a drill's server, run as another user, gets no
        /// repository password. Its restore_command must answer a miss with "not in the archive".
        public var selfContained = false
        public init(target: String, restoreCommand: String) { self.target = target; self.restoreCommand = restoreCommand }
    }

    public struct Result: Sendable {
        public var plan: WALChain.Plan
        public var backup: WALCatalog.Backup
        public var files: Int
        public var bytes: UInt64
        public var errors: [RestoreError]
        public var settings: [String]
    }

    /// The plan alone: which base backup, which timeline, whether the target is reachable.
    public static func plan(repo: Repository, system: String?, target: RecoveryTarget) async throws -> (WALCatalog, WALChain.Plan, WALCatalog.Backup) {
        let catalog = try WALCatalog.select(try await WALStore.catalogs(repo), system: system)
        let plan = try catalog.chain.plan(target, backups: catalog.points)
        guard let backup = catalog.backups.first(where: { $0.point == plan.backup }) else {
            throw LifeboatError(.notFound, "base backup \(plan.backup.id) is not in the catalog")
        }
        return (catalog, plan, backup)
    }

    public static func run(repo: Repository, options: Options, progress: Restorer? = nil) async throws -> Result {
        guard ["promote", "pause", "shutdown"].contains(options.action) else {
            throw LifeboatError.invalid("invalid recovery action \"\(options.action)\": use promote, pause or shutdown")
        }
        let (catalog, plan, backup) = try await self.plan(repo: repo, system: options.system, target: options.recovery)
        let target = options.target
        var st = stat()
        if stat(target, &st) == 0 {
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: target)) ?? ["?"]
            guard (st.st_mode & S_IFMT) == S_IFDIR, entries.isEmpty else {
                throw LifeboatError.invalid("the target \(target) exists and is not an empty folder: a restored cluster needs a folder of its own (nothing was written)")
            }
        }
        guard let db = backup.snapshot.database, let dataDir = backup.snapshot.paths.first, let label = db.label else {
            throw LifeboatError.corrupt("base backup \(backup.id.short) has no data directory or backup label")
        }
        // The label PostgreSQL will trust must say what the record says (the WAL range the plan checked), and no
        // tablespace map (base backups refuse tablespaces; a map would point PostgreSQL's links anywhere).
        try checkLabel(label, backup: backup.point, id: backup.id)
        if let map = db.tablespaceMap, !map.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            throw LifeboatError.corrupt("base backup \(backup.id.short) carries a tablespace map, which Lifeboat's base backups never write: the record is not trustworthy")
        }
        let restorer = progress ?? Restorer(repository: repo, options: options.restore)
        let node = try await Restorer.resolve(repo: repo, tree: backup.snapshot.tree, subpath: dataDir, snapshot: (backup.id, backup.snapshot))
        try await restorer.restore(node: node, snapshotPath: dataDir, target: target)
        let errors = restorer.errors
        guard errors.isEmpty else {
            throw LifeboatError(.io, "\(errors.count) file(s) of base backup \(backup.id.short) could not be restored (first: \(errors[0].path): \(errors[0].message)): the folder \(target) is not a usable cluster")
        }
        // What the backup left out, and the files that make the copy a recovery. None of them may be a symlink
        // (a pg_wal linked elsewhere, kept by the backup, would send the restored server's WAL into another
        // cluster's folder): links are replaced by folders and files of the restored copy's own.
        let uid = node.uid, gid = node.gid
        for d in ["pg_wal", "pg_wal/archive_status", "pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots",
                  "pg_stat_tmp", "pg_subtrans", "pg_tblspc", "pg_logical", "pg_logical/snapshots", "pg_logical/mappings"] {
            let p = target + "/" + d
            var st = stat()
            if lstat(p, &st) == 0 {
                if (st.st_mode & S_IFMT) == S_IFDIR { continue }
                guard (st.st_mode & S_IFMT) == S_IFLNK, unlink(p) == 0 else {
                    throw LifeboatError.corrupt("\(d) in base backup \(backup.id.short) is not a folder: the copy is not a data directory")
                }
            }
            guard mkdir(p, 0o700) == 0 else { throw LifeboatError(.io, "cannot create \(p): \(String(cString: strerror(errno)))") }
            if getuid() == 0 { lchown(p, uid, gid) }
        }
        func write(_ name: String, _ text: String, append: Bool = false) throws {
            let p = target + "/" + name
            var st = stat()
            var data = Data(text.utf8)
            if lstat(p, &st) == 0 {
                guard (st.st_mode & S_IFMT) == S_IFREG else {
                    throw LifeboatError.corrupt("\(name) in base backup \(backup.id.short) is not a regular file: refusing to write through it")
                }
                if append, let old = FileManager.default.contents(atPath: p) { data = old + data }
            }
            try writeFileAtomically(p, data, mode: 0o600)
            if getuid() == 0 { lchown(p, uid, gid) }
        }
        try write("backup_label", label)
        try write("recovery.signal", "")
        var settings = ["restore_command = '\(options.restoreCommand.replacingOccurrences(of: "'", with: "''"))'"]
        // Every recovery target is set, the unused ones empty: a copy of a cluster that was itself restored
        // carries its old target in postgresql.auto.conf, which would stop this replay early or clash with it.
        // No apply delay either (a standby's setting would hold the replay back).
        // PostgreSQL refuses a target setting (even an empty one) after another kind of target was set, and
        // applies the last line of each name where it stands: the empty ones first, the chosen one last.
        var chosen: (String, String)? = nil
        switch options.recovery {
        case .latest: break
        case .time(let t): chosen = ("recovery_target_time", postgresTime(t))
        case .lsn(let l): chosen = ("recovery_target_lsn", l.description)
        }
        for name in ["recovery_target", "recovery_target_name", "recovery_target_xid", "recovery_target_time", "recovery_target_lsn"]
        where name != chosen?.0 {
            settings.append("\(name) = ''")
        }
        if let (name, value) = chosen { settings.append("\(name) = '\(value)'") }
        settings.append("recovery_min_apply_delay = 0")
        if options.recovery != .latest { settings.append("recovery_target_action = '\(options.action)'") }
        settings.append("recovery_target_timeline = '\(plan.timeline)'")
        if options.archiveOff { settings.append("archive_mode = 'off'") }
        let what: String
        switch options.recovery {
        case .latest: what = "the end of the archived WAL"
        case .time(let t): what = Timestamp.format(t)
        case .lsn(let l): what = l.description
        }
        try write("postgresql.auto.conf", "\n# Added by lifeboat pg restore: base backup \(backup.id.short), replay to \(what)\n" + settings.joined(separator: "\n") + "\n", append: true)
        if options.prefill > 0 || options.selfContained {
            try await prefill(repo: repo, catalog: catalog, plan: plan, target: target, count: options.selfContained ? Int.max : options.prefill,
                              complete: options.selfContained, uid: uid, gid: gid)
        }
        chmod(target, 0o700)
        if getuid() == 0 { lchown(target, uid, gid) }
        let p = restorer.progress
        return Result(plan: plan, backup: backup, files: p.filesDone, bytes: p.bytesDone, errors: errors, settings: settings)
    }

    /// `START WAL LOCATION` and `START TIMELINE` of a backup label against the record's.
    static func checkLabel(_ label: String, backup: BaseBackupPoint, id: ID) throws {
        var start: LSN? = nil, timeline: UInt32? = nil
        for line in label.split(separator: "\n") {
            if line.hasPrefix("START WAL LOCATION:") {
                start = line.dropFirst("START WAL LOCATION:".count).split(separator: " ").first.flatMap { LSN(String($0)) }
            } else if line.hasPrefix("START TIMELINE:") {
                timeline = UInt32(line.dropFirst("START TIMELINE:".count).trimmingCharacters(in: .whitespaces))
            }
        }
        guard start == backup.start, timeline == nil || timeline == backup.timeline else {
            throw LifeboatError.corrupt("the backup label of base backup \(id.short) does not match its record (label: \(start?.description ?? "no start"), timeline \(timeline.map(String.init) ?? "?"); record: \(backup.start), timeline \(backup.timeline)): the record is not trustworthy")
        }
    }

    /// The first segments of the replay and the archive's listing, into the spool that restore_command reads.
    /// `complete`: every segment and the timeline's history, and the mark with which restore_command takes them.
    static func prefill(repo: Repository, catalog: WALCatalog, plan: WALChain.Plan, target: String, count: Int, complete: Bool,
                        uid: UInt32, gid: UInt32) async throws {
        let spool = Spool(root: target + "/lifeboat-spool")
        // Whatever the copy holds there (base backups leave it out; a hostile tree might not) goes first.
        try? FileManager.default.removeItem(atPath: spool.root)
        try spool.prepare()
        let store = WALStore(repo: repo)
        var names = plan.reach.run.segments.prefix(count).map(\.name)
        if let last = plan.lastNeeded { names.removeAll { $0 > last } }
        if complete {
            let history = WALFileName.history(plan.timeline)
            if catalog.files[history] != nil { names.insert(history, at: 0) }
        }
        _ = try await tryBoundedMap(Array(names), width: 2) { n in try await store.fetch(n, catalog: catalog, to: spool.fetch + "/" + n) }
        if catalog.unreadable == 0 { spool.writeManifest(Array(catalog.files.keys)) }
        if let last = plan.lastNeeded { try spool.writeUntil(last) }
        if complete { try writeFileAtomically(spool.helperMarker, Data(), durable: false) }
        if getuid() == 0 {
            for p in [spool.root, spool.push, spool.fetch, spool.fetch + "/manifest", spool.fetch + "/until", spool.helperMarker] + names.map({ spool.fetch + "/" + $0 }) { lchown(p, uid, gid) }
        }
    }

    /// A time as recovery_target_time reads it: UTC with microseconds (its precision).
    public static func postgresTime(_ d: Date) -> String {
        let s = Timestamp.format(d)  // 2026-12-01T17:00:00.123456789Z
        let date = s.prefix(10), time = s.dropFirst(11).prefix(15)  // HH:MM:SS.ffffff
        return "\(date) \(time)+00"
    }
}
