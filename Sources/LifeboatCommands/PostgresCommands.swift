import ArgumentParser
import Foundation
import Glibc
import LifeboatConfig
import LifeboatCore
import LifeboatPlan
import LifeboatPostgres
import LifeboatCompression
import LifeboatProcess
import LifeboatReplication
import LifeboatRepository
import LifeboatSites
import LifeboatSnapshot
import LifeboatWAL

struct PostgresCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pg",
        abstract: "PostgreSQL: continuous WAL archiving, base backups and point-in-time recovery.",
        discussion: """
        In postgresql.conf (archive_command and restore_command run in the data directory, as the server's user):
          archive_mode = on
          archive_command = 'lifeboat pg wal-push --async -r REPO --password-file FILE %p'
        Then `lifeboat pg backup` now and then, and `lifeboat pg restore --time T --target DIR` when needed: it lays
        down the base backup and the recovery settings, and `pg_ctl start` replays to T.
        """,
        subcommands: [PGWalPush.self, PGWalFetch.self, PGBackup.self, PGRestore.self, PGTimeline.self, PGCheck.self, PGForget.self, PGPushHelper.self, PGFetchHelper.self])
}

/// Where the records are read: the repository options, or one site of a sites file (`--site`), and which cluster.
struct PGSourceOptions: ParsableArguments {
    @Option(name: .customLong("site"), help: "Read this site of the sites file (--config) instead of --repo.") var site: String?
    @Option(name: .customLong("config"), help: "The sites file, with --site (or LIFEBOAT_SITES; default /etc/lifeboat/sites.yaml).") var config: String?
    @Option(name: .customLong("cluster"), help: "The database system identifier, when the repository holds several clusters.") var cluster: String?

    func open(_ global: GlobalOptions) async throws -> Repository {
        guard let name = site else { return try await global.open() }
        let path = config ?? ProcessInfo.processInfo.environment["LIFEBOAT_SITES"] ?? "/etc/lifeboat/sites.yaml"
        let sites: SitesConfig
        do { sites = try SitesConfig.load(path) } catch let e as ConfigError { throw LifeboatError.invalid(e.description) }
        guard let s = sites.sites.first(where: { $0.name == name }) else {
            throw LifeboatError.invalid("no site named \"\(name)\" in \(path) (sites: \(sites.sites.map(\.name).joined(separator: ", ")))")
        }
        return try await global.siteAccess().open(s)
    }

    /// The options that name the same records again (for the restore_command written into a restored cluster).
    func arguments(_ global: GlobalOptions) -> [String] {
        PGSourceOptions.arguments(global, site: site, config: config, cluster: cluster)
    }

    static func arguments(_ global: GlobalOptions, site: String? = nil, config: String? = nil, cluster: String? = nil) -> [String] {
        var a: [String] = []
        if let site {
            a += ["--site", site]
            if let config { a += ["--config", absolutePath(config)] }
        } else if let r = global.repo ?? ProcessInfo.processInfo.environment["LIFEBOAT_REPOSITORY"], !r.isEmpty {
            // A password in the location (rest:https://USER:PASS@…) is left out: it comes from LIFEBOAT_REST_PASSWORD.
            a += ["--repo", r.contains(":") && !r.hasPrefix("/") && !r.hasPrefix("local:") ? withoutPassword(r) : absolutePath(r.hasPrefix("local:") ? String(r.dropFirst(6)) : r)]
        }
        // The password's file (never the password itself: LIFEBOAT_PASSWORD alone cannot be passed on).
        if let f = global.passwordFile ?? ProcessInfo.processInfo.environment["LIFEBOAT_PASSWORD_FILE"], site == nil {
            a += ["--password-file", absolutePath(f)]
        }
        if let c = global.cacert { a += ["--cacert", absolutePath(c)] }
        if global.noCache { a.append("--no-cache") }
        if let c = global.cacheDir { a += ["--cache-dir", absolutePath(c)] }
        if let cluster { a += ["--cluster", cluster] }
        return a
    }
}

/// A location without the password of its user information (`rest:https://u:p@h/x` → `rest:https://u@h/x`).
func withoutPassword(_ location: String) -> String {
    guard let scheme = location.range(of: "://"), let at = location[scheme.upperBound...].firstIndex(of: "@") else { return location }
    let user = location[scheme.upperBound..<at]
    guard let colon = user.firstIndex(of: ":") else { return location }
    return String(location[..<colon]) + String(location[at...])
}

func absolutePath(_ p: String) -> String {
    p.hasPrefix("/") ? p : FileManager.default.currentDirectoryPath + "/" + p
}

/// The spool folder: --spool, LIFEBOAT_SPOOL, or `lifeboat-spool` in the working directory (the data directory when
/// PostgreSQL runs the command).
func spoolPath(_ option: String?, system: String?) -> String {
    Spool.root(option: option, environment: ProcessInfo.processInfo.environment, system: system,
               directory: FileManager.default.currentDirectoryPath)
}

/// The cluster's system identifier from `global/pg_control` in the working directory, when it is a data directory.
func localSystemIdentifier() -> UInt64? { BaseBackup.systemIdentifier(dataDirectory: ".") }

/// The repository for archiving WAL: compressed as `--compression` says, else as the repository says, except that
/// its default (`auto`, zstd level 3) becomes `fast` (level 1) for WAL: on PostgreSQL's WAL level 1 is as small as
/// level 3 (pgbench's WAL and bulk inserts, measured in bench/pitr.py runs) and two to three times faster, and
/// archiving must keep up with the server. A repository created with `off`, `fast` or `max` keeps its choice.
func openForWAL(_ global: GlobalOptions, compression: String?) async throws -> Repository {
    let repo = try await global.open(compression: compression)
    guard compression == nil, repo.config.compression == .auto else { return repo }
    let wal = try repo.with(compression: .fast, dryRun: false)
    let out = global.output
    wal.onDamage { out.warn("warning: \($0)") }
    return wal
}

struct PGWalPush: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal-push",
        abstract: "Archive a WAL file (archive_command = 'lifeboat pg wal-push %p').",
        discussion: """
        Checks the file (its name, its size, its header: the cluster, the position its name says), stores it in the \
        repository (deduplicated, compressed, encrypted) and exits 0 only once it is durable there. A file already \
        archived with the same bytes succeeds at once; with other bytes it fails (nothing is overwritten).

        --async: a helper process started on demand keeps the repository open and archives the files PostgreSQL \
        marks ready (archive_status) in batches, ahead of the calls; each call waits for its file's acknowledgement \
        in the spool (written only after the repository has the file). Exit 1 makes PostgreSQL retry the file.

        \(Examples.pgWalPush)
        """)
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The file (%p: pg_wal/NAME, relative to the data directory).") var path: String
    @Flag(name: .customLong("async"), help: "Hand the file to the archiving helper and wait for its acknowledgement.") var async = false
    @Option(name: .customLong("spool"), help: "Spool folder (or LIFEBOAT_SPOOL; default lifeboat-spool in the data directory); a folder given gets a subfolder per cluster.") var spool: String?
    @Option(name: .customLong("wait"), help: "Seconds to wait for the acknowledgement with --async (default 60).") var wait: Double = 60
    @Option(name: .customLong("tag"), help: "Tag the records (repeatable).") var tags: [String] = []
    @Option(name: .customLong("compression"), help: "Compression of the WAL: off, fast, auto, max (default: the repository's, fast for its default auto).") var compression: String?

    func run() async throws {
        try await runCommand(global) {
            let input = try WALInput(path: path)
            _ = try Bounds.check(wait, 0.1...86400, "--wait")
            if let c = compression, CompressionMode(rawValue: c) == nil { throw LifeboatError.invalid("invalid --compression \"\(c)\": use off, fast, auto or max") }
            if async { return try await handOver(input) }
            let repo = try await openForWAL(global, compression: compression)
            let store = WALStore(repo: repo, tags: tags)
            let system = localSystemIdentifier()
            let r = try await withRepositoryLock(repo, .shared, "wal-push") {
                try await repo.loadIndex()
                let all = try await WALStore.catalogs(repo)
                let known = system.flatMap { all[String($0)] } ?? (all.count == 1 ? all.values.first : nil)
                return try await store.push([input], system: system, known: known)
            }
            global.output.emit(["message_type": "wal_push", "file": input.name.name, "record": r.record?.hex ?? NSNull(),
                                "already_archived": !r.alreadyArchived.isEmpty])
            return 0
        }
    }

    func handOver(_ input: WALInput) async throws -> Int32 {
        let spool = Spool(root: spoolPath(self.spool, system: localSystemIdentifier().map(String.init)))
        try spool.prepare()
        spool.noteCall()
        let name = input.name.name
        switch spool.ack(name) {
        case .ok: spool.consume(name); return 0
        case .failed: spool.clear(name)  // from an earlier try: this call tries again
        case nil: break
        }
        try spool.want(name, path: absolutePath(input.path))
        spool.noteCall()  // again, after the request: a helper reads the spool again when this changes
        let deadline = ContinuousClock.now + .seconds(wait)
        var lastStart: ContinuousClock.Instant? = nil
        while ContinuousClock.now < deadline {
            switch spool.ack(name) {
            case .ok: spool.consume(name); return 0
            case .failed(let m):
                spool.clear(name)
                throw LifeboatError(.io, "archiving \(name) failed: \(m)")
            case nil: break
            }
            if !spool.helperRunning(spool.push), lastStart.map({ ContinuousClock.now - $0 > .seconds(1) }) ?? true {
                try startHelper(spool: spool, walDirectory: (absolutePath(input.path) as NSString).deletingLastPathComponent)
                lastStart = .now
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw LifeboatError(.io, "\(name) was not acknowledged within \(Int(wait)) s (see \(spool.push)/helper.log); PostgreSQL will retry it")
    }

    func startHelper(spool: Spool, walDirectory: String) throws {
        var argv = [CommandLine.executablePath, "pg", "wal-push-helper", "--spool", spool.root, "--wal-dir", walDirectory]
        argv += PGSourceOptions.arguments(global)
        for t in tags { argv += ["--tag", t] }
        if let c = compression { argv += ["--compression", c] }
        if let s = localSystemIdentifier() { argv += ["--system", String(s)] }
        let log = open(spool.push + "/helper.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        defer { if log >= 0 { close(log) } }
        _ = try Child.spawn(argv, stdout: log >= 0 ? log : nil, stderr: log >= 0 ? log : nil)
    }
}

/// A helper's log line (its standard error is the spool's helper.log): the time, then the message.
@Sendable func helperLog(_ message: String) {
    FileHandle.standardError.write(Data("\(Timestamp.format(currentTime())) \(message)\n".utf8))
}

extension CommandLine {
    /// This program, for the helpers it starts (not argv[0]: a relative name or a symlink resolved elsewhere).
    static var executablePath: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? arguments[0]
    }
}

struct PGPushHelper: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal-push-helper", abstract: "The archiving helper that `wal-push --async` starts (not run by hand).",
        shouldDisplay: false)
    @OptionGroup var global: GlobalOptions
    @Option(name: .customLong("spool")) var spool: String
    @Option(name: .customLong("wal-dir")) var walDirectory: String
    @Option(name: .customLong("system")) var system: UInt64?
    @Option(name: .customLong("idle"), help: "Seconds without a wal-push call before the helper exits.") var idle: Double = 60
    @Option(name: .customLong("tag")) var tags: [String] = []
    @Option(name: .customLong("batch"), help: "Files per record.") var batch: Int = 16
    @Option(name: .customLong("compression")) var compression: String?

    func run() async throws {
        try await runCommand(global) {
            let spool = Spool(root: spool)
            try spool.prepare()
            guard let lock = spool.lockHelper(spool.push) else { return 0 }  // another helper runs
            defer { close(lock) }
            let repo = try await openForWAL(global, compression: compression)
            try await repo.loadIndex()
            var helper = PushHelper(store: WALStore(repo: repo, tags: tags), spool: spool, walDirectory: walDirectory, system: system)
            helper.idle = try Bounds.check(idle, 1...86400, "--idle")
            helper.batchFiles = try Bounds.check(batch, 1...1000, "--batch")
            try await helper.run(stop: { stopRequested() }, log: helperLog)
            return 0
        }
    }
}

struct PGWalFetch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal-fetch",
        abstract: "Fetch an archived WAL file (restore_command = 'lifeboat pg wal-fetch %f %p').",
        discussion: """
        Exit 0: the file is at PATH (checked against its checksum). Exit 1: the archive does not hold it (PostgreSQL \
        ends recovery there, or tries another timeline). Exit 126: any other failure (an unreachable site, a damaged \
        record): PostgreSQL then stops recovery instead of ending it early at the wrong point.
        With --prefetch N (default 16) a helper started on the first call keeps the repository open and the next N \
        segments fetched into the spool; later calls take them from there without opening the repository, and \
        probes for files the archive does not hold are answered from its listing.

        \(Examples.pgWalFetch)
        """)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var source: PGSourceOptions
    @Argument(help: "The file's name (%f).") var name: String
    @Argument(help: "Where to write it (%p).") var path: String
    @Option(name: .customLong("spool"), help: "Spool folder (or LIFEBOAT_SPOOL; default lifeboat-spool in the data directory); a folder given gets a subfolder per cluster.") var spool: String?
    @Option(name: .customLong("prefetch"), help: "Segments to keep fetched ahead by a helper (0: none).") var prefetch: Int = 16

    func run() async throws {
        let out = global.output
        let code: Int32
        do {
            code = try await fetch()
        } catch {
            // Only "the archive does not hold it" may end recovery (exit 1); anything else must stop it.
            out.warn("Fatal: \(error) (exit 126: PostgreSQL stops recovery rather than end it at the wrong point)")
            throw ExitCode(126)
        }
        if code != 0 { throw ExitCode(code) }
    }

    func fetch() async throws -> Int32 {
        guard let file = WALFileName(name) else {
            global.output.warn("\"\(name.prefix(80))\" is not a WAL file name: not in the archive")
            return 1
        }
        _ = try Bounds.check(prefetch, 0...256, "--prefetch")
        let system = source.cluster ?? localSystemIdentifier().map(String.init)
        let spool = Spool(root: spoolPath(self.spool, system: system))
        if prefetch > 0 {
            // Prefetched: no repository open at all.
            if spool.take(name, to: path) {
                spool.request(name)
                try? startHelper(spool, system: system)
                return 0
            }
            // A probe for what the archive does not hold (the next timeline's history, the segment after the end),
            // answered from the helper's listing while it is at most 5 s old (the helper lists again every 2 s
            // while the segments it looks for are missing; it keeps the listing when it exits at promotion).
            if let m = spool.manifest(maxAge: 5), !m.contains(name) {
                global.output.warn("\(name) is not in the archive")
                return 1
            }
        }
        let repo = try await source.open(global)
        let catalog = try WALCatalog.select(try await WALStore.catalogs(repo), system: system)
        guard catalog.files[name] != nil else {
            // Absent from what could be read; a damaged record might hold it: ending recovery here could be wrong.
            if catalog.unreadable > 0 {
                throw LifeboatError(.corrupt, "\(name) is in no readable record, but \(catalog.unreadable) record(s) of the repository cannot be read: it may be in one of them (see `lifeboat check`)")
            }
            global.output.warn("\(name) is not in the archive")
            return 1
        }
        try await repo.loadIndex()
        let store = WALStore(repo: repo)
        try await store.fetch(name, catalog: catalog, to: path)
        if prefetch > 0, file.kind == .segment, let number = file.segmentNumber(catalog.size) {
            try? spool.prepare()
            spool.request(name)
            try? startHelper(spool, system: system)
            // While the helper opens the repository, the next two segments from this open one: the calls that
            // follow at once find them in the spool.
            let have = spool.prefetched()
            let next = (1...2).map { WALFileName.segment(timeline: file.timeline, number: number + UInt64($0), size: catalog.size) }
                .filter { catalog.files[$0] != nil && !have.contains($0) }
            _ = await boundedMap(next, width: 2) { n in (try? await store.fetch(n, catalog: catalog, to: spool.fetch + "/" + n)) != nil }
        }
        return 0
    }

    /// Starts the prefetch helper unless one runs for this spool.
    func startHelper(_ spool: Spool, system: String?) throws {
        guard !spool.helperRunning(spool.fetch) else { return }
        try? writeFileAtomically(spool.helperMarker, Data(), durable: false)
        var argv = [CommandLine.executablePath, "pg", "wal-fetch-helper", "--spool", spool.root, "--prefetch", String(prefetch)]
        argv += PGSourceOptions.arguments(global, site: source.site, config: source.config, cluster: system)
        let log = open(spool.fetch + "/helper.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        defer { if log >= 0 { close(log) } }
        _ = try Child.spawn(argv, stdout: log >= 0 ? log : nil, stderr: log >= 0 ? log : nil)
    }
}

struct PGFetchHelper: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wal-fetch-helper", abstract: "The prefetch helper that `wal-fetch` starts (not run by hand).",
        shouldDisplay: false)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var source: PGSourceOptions
    @Option(name: .customLong("spool")) var spool: String
    @Option(name: .customLong("prefetch")) var prefetch: Int = 16
    @Option(name: .customLong("idle"), help: "Seconds without a request before the helper exits.") var idle: Double = 30

    func run() async throws {
        try await runCommand(global) {
            let spool = Spool(root: spool)
            try spool.prepare()
            guard let lock = spool.lockHelper(spool.fetch) else { return 0 }
            defer { close(lock) }
            let repo = try await source.open(global)
            try await repo.loadIndex()
            var helper = FetchHelper(store: WALStore(repo: repo), spool: spool, system: source.cluster)
            helper.depth = try Bounds.check(prefetch, 1...256, "--prefetch")
            helper.idle = try Bounds.check(idle, 1...86400, "--idle")
            // Started by restore_command, in the data directory: recovery goes on while a signal file is there.
            let directory = FileManager.default.currentDirectoryPath
            let recovering = access(directory + "/recovery.signal", F_OK) == 0 || access(directory + "/standby.signal", F_OK) == 0
            try await helper.run(stop: { stopRequested() }, inRecovery: {
                !recovering || access(directory + "/recovery.signal", F_OK) == 0 || access(directory + "/standby.signal", F_OK) == 0
            }, log: helperLog)
            return 0
        }
    }
}

struct PGBackup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Take a base backup of a running cluster (primary or standby) through the backup API.",
        discussion: """
        Connects with psql (the DSN: host, port, user, dbname; no password: it comes from PGPASSFILE or ~/.pgpass), \
        starts the backup, copies the data directory (on this host) into the repository, stops the backup and waits \
        until the WAL from its start to its stop is archived, then records it with its label and positions.

        \(Examples.pgBackup)
        """)
    @OptionGroup var global: GlobalOptions
    @Option(name: .customLong("dsn"), help: "libpq connection string without a password (default: libpq's PG* environment).") var dsn: String?
    @Option(name: .customLong("tag"), help: "Tag the record (repeatable).") var tags: [String] = []
    @Option(name: .customLong("checkpoint"), help: "fast (an immediate checkpoint, default) or spread (wait for the next one).") var checkpoint = "fast"
    @Option(name: .customLong("wal-timeout"), help: "Seconds to wait for the backup's WAL to be archived (default 120).") var walTimeout: Double = 120
    @Option(name: .customLong("host"), help: "Host name recorded (default: this host's).") var host: String?

    func run() async throws {
        try await runCommand(global) {
            let out = global.output
            guard checkpoint == "fast" || checkpoint == "spread" else { throw LifeboatError.invalid("invalid --checkpoint \"\(checkpoint)\": use fast or spread") }
            var opts = BaseBackup.Options()
            if let dsn {
                opts.environment = try PostgresDSN.environment(dsn)
                if opts.environment["PGPASSWORD"] != nil {
                    throw LifeboatError.invalid("--dsn holds a password, which would show in the process list: put it in a password file (PGPASSFILE or ~/.pgpass)")
                }
            }
            opts.tags = tags
            opts.fastCheckpoint = checkpoint == "fast"
            opts.walTimeout = try Bounds.check(walTimeout, 1...86400, "--wal-timeout")
            if let host { opts.hostname = host }
            let repo = try await global.open()
            let start = Date()
            let r = try await withRepositoryLock(repo, .shared, "pg backup") {
                try await repo.loadIndex()
                return try await BaseBackup.run(repo: repo, options: opts, log: { out.info($0) })
            }
            for w in r.warnings { out.warn("warning: \(w)") }
            let db = r.snapshot.database
            out.info("base backup \(r.id?.short ?? "-") of \(db?.dataDirectory ?? "?") (system \(db?.system ?? "?"), timeline \(db?.timeline ?? 0)): WAL \(db?.startLSN ?? "?") to \(db?.stopLSN ?? "?"), \(r.snapshot.summary?.totalFilesProcessed ?? 0) files, \(formatBytes(r.snapshot.summary?.totalBytesProcessed ?? 0)) (\(formatBytes(r.snapshot.summary?.dataAddedPacked ?? 0)) new) in \(formatDuration(Date().timeIntervalSince(start)))\(r.vanished > 0 ? "; \(r.vanished) file(s) removed during the backup (the WAL replays that)" : "")")
            out.emit(["message_type": "pg_backup", "id": r.id?.hex ?? NSNull(), "system": db?.system ?? "", "timeline": db?.timeline ?? 0,
                      "start_lsn": db?.startLSN ?? "", "stop_lsn": db?.stopLSN ?? "", "stop_time": db?.stopTime ?? "",
                      "files": r.snapshot.summary?.totalFilesProcessed ?? 0, "bytes": r.snapshot.summary?.totalBytesProcessed ?? 0,
                      "bytes_added_packed": r.snapshot.summary?.dataAddedPacked ?? 0, "seconds": Date().timeIntervalSince(start),
                      "vanished": r.vanished, "changed": r.changed, "standby": db?.standby ?? false])
            return 0
        }
    }
}

/// `--time`, `--lsn`, `--latest` as a recovery target.
func recoveryTarget(time: String?, lsn: String?, latest: Bool) throws -> RecoveryTarget {
    let given = [time != nil, lsn != nil, latest].filter { $0 }.count
    guard given == 1 else { throw LifeboatError.invalid("give exactly one of --time, --lsn or --latest") }
    if let time {
        guard let t = Timestamp.parse(time) ?? Timestamp.parse(time.replacingOccurrences(of: " ", with: "T")) else {
            throw LifeboatError.invalid("invalid --time \"\(time)\": use RFC 3339 with a zone, e.g. 2026-12-01T06:00:00.250Z")
        }
        return .time(t)
    }
    if let lsn {
        guard let l = LSN(lsn) else { throw LifeboatError.invalid("invalid --lsn \"\(lsn)\": use PostgreSQL's form, e.g. 0/16B3748") }
        return .lsn(l)
    }
    return .latest
}

struct PGRestore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Lay down a base backup and the recovery settings for a point in time.",
        discussion: """
        Chooses the newest base backup from which the target can be reached through archived WAL without a hole, \
        restores it into --target (a new or empty folder), writes backup_label, recovery.signal and, in \
        postgresql.auto.conf, restore_command (this program's wal-fetch with the same repository options), the \
        target and the timeline. Start the server (`pg_ctl -D DIR start`): it replays to exactly the target, then \
        promotes. A target outside the restorable range is refused with the nearest restorable point; see \
        `lifeboat pg timeline`.

        \(Examples.pgRestore)
        """)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var source: PGSourceOptions
    @Option(name: [.short, .customLong("target")], help: "The new data directory.") var target: String
    @Option(name: .customLong("time"), help: "Replay up to this time (RFC 3339; transactions that ended at or before it).") var time: String?
    @Option(name: .customLong("lsn"), help: "Replay up to this WAL position (X/Y).") var lsn: String?
    @Flag(name: .customLong("latest"), help: "Replay every archived segment.") var latest = false
    @Option(name: .customLong("action"), help: "At the target: promote (default), pause or shutdown.") var action = "promote"
    @Flag(name: .customLong("no-archive"), help: "archive_mode = off in the restored cluster (a copy that must not archive).") var noArchive = false
    @Option(name: .customLong("restore-command"), help: "The restore_command to write instead of this program's wal-fetch.") var restoreCommand: String?

    func run() async throws {
        try await runCommand(global) {
            let out = global.output
            let goal = try recoveryTarget(time: time, lsn: lsn, latest: latest)
            let repo = try await source.open(global)
            // PostgreSQL replaces %f, %p, %r and %% in restore_command: a % of a path is doubled.
            let fetchArgs = ([CommandLine.executablePath, "pg", "wal-fetch"] + source.arguments(global)).map { shellQuote($0).replacingOccurrences(of: "%", with: "%%") }
            let command = restoreCommand ?? Spool.restoreCommand(fetch: fetchArgs)
            var opts = PointInTimeRestore.Options(target: absolutePath(target), restoreCommand: command)
            opts.recovery = goal
            opts.system = source.cluster
            opts.action = action
            opts.archiveOff = noArchive
            let start = Date()
            let r = try await withRepositoryLock(repo, .shared, "pg restore", readOnly: global) {
                try await repo.loadIndex()
                return try await PointInTimeRestore.run(repo: repo, options: opts)
            }
            out.info("restored base backup \(r.backup.id.short) (WAL \(r.backup.point.start) to \(r.backup.point.stop), timeline \(r.plan.timeline)): \(r.files) files, \(formatBytes(r.bytes)) in \(formatDuration(Date().timeIntervalSince(start)))")
            out.info("start the server to replay the WAL: pg_ctl -D \(opts.target) start")
            out.emit(["message_type": "pg_restore", "base_backup": r.backup.id.hex, "timeline": Int(r.plan.timeline), "target": opts.target,
                      "files": r.files, "bytes": r.bytes, "seconds": Date().timeIntervalSince(start), "settings": r.settings])
            return 0
        }
    }
}

/// Quotes a word for /bin/sh (restore_command runs through the shell).
func shellQuote(_ s: String) -> String {
    if !s.isEmpty, s.allSatisfy({ $0.isLetter || $0.isNumber || "/._-:=%@+,".contains($0) }) { return s }
    return "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
}

struct PGTimeline: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "timeline",
        abstract: "The restorable range of each cluster: base backups, WAL per timeline, holes, first and last restorable time.",
        discussion: Examples.pgTimeline)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var source: PGSourceOptions

    func run() async throws {
        try await runCommand(global) {
            let repo = try await source.open(global)
            let catalogs = try await WALStore.catalogs(repo)
            let chosen = try source.cluster.map { [try WALCatalog.select(catalogs, system: $0)] } ?? catalogs.values.sorted { $0.system < $1.system }
            guard !chosen.isEmpty else { throw LifeboatError(.notFound, "the repository holds no PostgreSQL records") }
            let reports = chosen.map(ArchiveReport.init)
            reports.forEach { printTimeline($0, global.output) }
            return reports.allSatisfy(\.healthy) ? 0 : ExitStatus.failure
        }
    }
}

struct PGCheck: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check that the WAL chain from each base backup has no hole (exit 1 names what is missing).",
        discussion: Examples.pgCheck)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var source: PGSourceOptions

    func run() async throws {
        try await runCommand(global) {
            let repo = try await source.open(global)
            let catalogs = try await WALStore.catalogs(repo)
            let chosen = try source.cluster.map { [try WALCatalog.select(catalogs, system: $0)] } ?? catalogs.values.sorted { $0.system < $1.system }
            guard !chosen.isEmpty else { throw LifeboatError(.notFound, "the repository holds no PostgreSQL records") }
            let out = global.output
            var ok = true
            for r in chosen.map(ArchiveReport.init) {
                for p in r.problems { out.line("system \(r.system): \(p)"); ok = false }
                out.emit(["message_type": "pg_check", "system": r.system, "ok": r.healthy, "problems": r.problems])
                if r.healthy { out.info("system \(r.system): \(r.backups.count) base backup(s), \(r.walFiles) WAL file(s), no hole") }
            }
            return ok ? 0 : ExitStatus.failure
        }
    }
}

func printTimeline(_ r: ArchiveReport, _ out: Output) {
    out.emit(Output.object(r).merging(["message_type": "pg_timeline"]) { a, _ in a })
    out.line("system \(r.system) (\(r.segmentSize >> 20) MiB segments): restorable from \(r.firstRestorable ?? "-") until \(r.lastRestorable ?? "-") (exclusive); newest WAL archived \(r.newestArchive ?? "-")")
    var table = [["base backup", "timeline", "start", "stop", "stopped", "restorable until", "state"]]
    for b in r.backups {
        table.append([String(b.id.prefix(8)), String(b.timeline), b.startLSN, b.stopLSN, String(b.stopTime.prefix(19)),
                      b.restorableUntil.map { String($0.prefix(23)) } ?? "-",
                      b.missing.map { "lacks \($0)" } ?? (b.hole.map { "hole at \($0)" } ?? "ok")])
    }
    out.line(String(StatusCommand.table(table).dropLast()))
    var tl = [["timeline", "branched from", "first segment", "last segment", "segments", "missing"]]
    for t in r.timelines {
        tl.append([String(t.timeline), t.parent.map { "\($0) at \(t.branchedAt ?? "?")" } ?? "-", t.firstSegment ?? "-", t.lastSegment ?? "-", String(t.segments),
                   t.missingCount == 0 ? "0" : "\(t.missingCount) (first \(t.missing[0]))"])
    }
    out.line(String(StatusCommand.table(tl).dropLast()))
    for p in r.problems { out.line("problem: \(p)") }
}

struct PGForget: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forget",
        abstract: "Remove base backups by a policy, and the WAL that no kept base backup needs.",
        discussion: """
        The policy applies to base backups as `forget` applies it to snapshots. WAL records go when every segment in \
        them is older than the start of the oldest kept base backup; timeline histories stay. Then `lifeboat prune` \
        frees the space.

        \(Examples.pgForget)
        """)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var source: PGSourceOptions
    @Option(name: [.customShort("l"), .customLong("keep-last")], help: "Keep the newest N base backups.") var keepLast = 0
    @Option(name: [.customShort("d"), .customLong("keep-daily")], help: "Keep the newest base backup of each of the last N days that have one.") var keepDaily = 0
    @Option(name: [.customShort("w"), .customLong("keep-weekly")], help: "Keep the newest base backup of each of the last N weeks that have one.") var keepWeekly = 0
    @Option(name: [.customShort("m"), .customLong("keep-monthly")], help: "Keep the newest base backup of each of the last N months that have one.") var keepMonthly = 0
    @Option(name: .customLong("keep-within"), help: "Keep base backups within this span of the newest, e.g. 14d.") var keepWithin: String?
    @Flag(name: [.customShort("n"), .customLong("dry-run")], help: "Show what would be removed; remove nothing.") var dryRun = false

    func run() async throws {
        try await runCommand(global) {
            let out = global.output
            let policy = RetentionPolicy(last: try Bounds.check(keepLast, 0...1_000_000, "--keep-last"),
                                         daily: try Bounds.check(keepDaily, 0...1_000_000, "--keep-daily"),
                                         weekly: try Bounds.check(keepWeekly, 0...1_000_000, "--keep-weekly"),
                                         monthly: try Bounds.check(keepMonthly, 0...1_000_000, "--keep-monthly"),
                                         within: try keepWithin.map { try CalendarDuration(parsing: $0) })
            guard !policy.isEmpty else { throw LifeboatError.invalid("no policy given: use --keep-last, --keep-daily, --keep-weekly, --keep-monthly or --keep-within") }
            let repo = try await source.open(global)
            return try await withRepositoryLock(repo, .shared, "pg forget") {
                let catalog = try WALCatalog.select(try await WALStore.catalogs(repo), system: source.cluster)
                let plan = WALRetention.plan(catalog, policy: policy)
                for b in plan.keep { out.info("keep base backup \(b.id.short) (\(b.snapshot.time.prefix(19)))") }
                for b in plan.removeBackups { out.line("remove base backup \(b.id.short) (\(b.snapshot.time.prefix(19)))\(dryRun ? " (dry run)" : "")") }
                let files = plan.removeRecords.reduce(0) { $0 + $1.names.count }
                out.line("remove \(plan.removeRecords.count) WAL record(s) with \(files) file(s) older than \(plan.oldestNeeded ?? "-")\(dryRun ? " (dry run)" : "")")
                if !dryRun { _ = try await WALRetention.execute(plan, repo: repo) }
                out.emit(["message_type": "pg_forget", "system": catalog.system, "kept": plan.keep.map { $0.id.hex },
                          "removed_backups": plan.removeBackups.map { $0.id.hex }, "removed_records": plan.removeRecords.map { $0.id.hex },
                          "removed_files": files, "oldest_needed": plan.oldestNeeded ?? NSNull(), "dry_run": dryRun])
                if !dryRun && !(plan.removeBackups.isEmpty && plan.removeRecords.isEmpty) { out.info("run `lifeboat prune` to free the space") }
                return 0
            }
        }
    }
}
