import ArgumentParser
import Foundation
import LifeboatConfig
import LifeboatCore
import LifeboatRepository
import LifeboatSQLite
import LifeboatSQLiteWAL

struct SQLiteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sqlite",
        abstract: "SQLite: continuous replication of the WAL and point-in-time restore.",
        discussion: """
        `lifeboat sqlite replicate DB` follows a database as it is written (the agent does the same for a source \
        `sqlite: {path: …, continuous: true}`); `lifeboat sqlite restore DB --time T --target FILE` brings it back \
        as it was at T. The application needs nothing but a busy timeout (the follower holds the write lock for a \
        moment when it checkpoints).
        """,
        subcommands: [SQLiteReplicate.self, SQLiteRestoreCommand.self, SQLiteTimeline.self])
}

struct SQLiteReplicate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replicate",
        abstract: "Follow a database's WAL into the repository until SIGINT or SIGTERM.",
        discussion: """
        Holds a read transaction, copies each transaction as it is committed, stores them at most every --interval, \
        checkpoints the WAL itself past --checkpoint-pages, and stores the whole database every --snapshot-interval \
        and whenever the WAL's history is broken (a new generation). Started again, it continues where it stopped \
        when the WAL still holds that point.

        \(Examples.sqliteReplicate)
        """)
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The database file.") var database: String
    @Option(name: .customLong("interval"), help: "Store new transactions at most this often (default 1s; 100ms to 1h).") var interval = "1s"
    @Option(name: .customLong("snapshot-interval"), help: "Store the whole database this often (default 1h).") var snapshotInterval = "1h"
    @Option(name: .customLong("checkpoint-pages"), help: "Checkpoint when the WAL holds this many frames (default 1000).") var checkpointPages = 1000
    @Option(name: .customLong("tag"), help: "Tag the records (repeatable).") var tags: [String] = []

    func run() async throws {
        try await runCommand(global) {
            var o = SQLiteFollower.Options()
            o.interval = try Bounds.check(try parseDurationOption(interval, "--interval"), 0.1...3600, "--interval")
            o.poll = min(0.05, o.interval / 4)
            o.snapshotInterval = try Bounds.check(try parseDurationOption(snapshotInterval, "--snapshot-interval"), 1...366 * 86400, "--snapshot-interval")
            guard (10...10_000_000).contains(checkpointPages) else {
                throw LifeboatError.invalid("--checkpoint-pages must be between 10 and 10000000 frames (got \(checkpointPages))")
            }
            o.checkpointPages = checkpointPages
            let repo = try await global.open()
            let out = global.output
            gracefulStop = "stopping: storing what is copied"
            let follower = SQLiteFollower(path: absolutePath(database), store: SQLiteStore(repo: repo, tags: tags), options: o)
            out.info("following \(follower.path) (store every \(formatDuration(o.interval)), snapshot every \(formatDuration(o.snapshotInterval)))")
            try await follower.run(shouldStop: { stopRequested() }) { e in
                switch e {
                case .generation(let g, let why):
                    out.info("generation \(g) begins: \(why)")
                    out.emit(["message_type": "sqlite_generation", "generation": g, "reason": why])
                case .resumed(let g, let seq):
                    out.info("continuing generation \(g) at record \(seq)")
                    out.emit(["message_type": "sqlite_resumed", "generation": g, "seq": seq])
                case .snapshot(let id, let g, let bytes):
                    out.info("snapshot \(id.short) of generation \(g): \(formatBytes(UInt64(bytes)))")
                    out.emit(["message_type": "sqlite_snapshot", "id": id.hex, "generation": g, "bytes": bytes])
                case .shipped(let id, let seq, let n, let bytes, let newest):
                    out.emit(["message_type": "sqlite_wal", "id": id.hex, "seq": seq, "transactions": n, "bytes": bytes, "newest": Timestamp.format(newest)])
                case .synced(let through):
                    out.emit(["message_type": "sqlite_synced", "through": Timestamp.format(through)])
                case .checkpoint(let log, let done):
                    out.emit(["message_type": "sqlite_checkpoint", "log_frames": log, "checkpointed_frames": done])
                case .retrying(let why):
                    out.warn("cannot store, trying again: \(why)")
                    out.emit(["message_type": "sqlite_retrying", "error": why])
                }
            }
            out.info("stopped; everything copied is stored")
            return 0
        }
    }
}

func parseDurationOption(_ s: String, _ flag: String) throws -> Double {
    guard let v = parseDuration(s) else { throw LifeboatError.invalid("invalid \(flag) \"\(s)\": use e.g. 500ms, 1s, 5m, 1h") }
    return v
}

/// Which database's records: the file as it was followed, on which host, at which site.
struct SQLiteSourceOptions: ParsableArguments {
    @OptionGroup var site: PGSourceOptions
    @Option(name: .customLong("host"), help: "The host that followed the database (default: this one).") var host: String?
}

struct SQLiteRestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Restore a database to a point in time, into a new file.",
        discussion: """
        Takes the newest snapshot of the database taken at or before the target and applies the transactions stored \
        after it, up to the last one seen committed at or before --time (or all of them, --latest). The file is \
        checked with PRAGMA integrity_check before it appears at --target, which must not exist. A time before the \
        first copy, or past a hole in the records, is refused with the nearest restorable times (`lifeboat sqlite \
        timeline`).

        \(Examples.sqliteRestore)
        """)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var source: SQLiteSourceOptions
    @Argument(help: "The database as it was followed (its absolute path).") var database: String
    @Option(name: [.short, .customLong("target")], help: "The new database file.") var target: String
    @Option(name: .customLong("time"), help: "Restore the transactions committed at or before this time (RFC 3339).") var time: String?
    @Flag(name: .customLong("latest"), help: "Restore every stored transaction.") var latest = false

    func run() async throws {
        try await runCommand(global) {
            guard (time != nil) != latest else { throw LifeboatError.invalid("give exactly one of --time or --latest") }
            var goal = SQLiteCatalog.Target.latest
            if let time {
                guard let t = Timestamp.parse(time) ?? Timestamp.parse(time.replacingOccurrences(of: " ", with: "T")) else {
                    throw LifeboatError.invalid("invalid --time \"\(time)\": use RFC 3339 with a zone, e.g. 2026-12-01T06:00:00.250Z")
                }
                goal = .time(t)
            }
            let repo = try await source.site.open(global)
            let out = global.output
            let start = Date()
            let store = SQLiteStore(repo: repo)
            let db = absolutePath(database)
            let r = try await withRepositoryLock(repo, .shared, "sqlite restore", readOnly: global) { () -> SQLiteRestore.Result in
                try await repo.loadIndex()
                guard let c = try await store.catalog(db, hostname: source.host) else {
                    throw LifeboatError(.notFound, "the repository holds no record of SQLite database \(db) of host \(source.host ?? localHostname()) (see `lifeboat sqlite timeline`)")
                }
                return try await SQLiteRestore.run(try c.plan(goal), store: store, target: absolutePath(target))
            }
            let secs = Date().timeIntervalSince(start)
            out.info("restored \(db) to \(Timestamp.format(r.restoredTo)) (snapshot \(r.snapshot.short), \(r.records) WAL records, \(r.transactions) transactions) into \(absolutePath(target)): \(formatBytes(UInt64(r.bytes))) in \(formatDuration(secs)); integrity_check \(r.integrity)")
            out.emit(["message_type": "sqlite_restore", "database": db, "target": absolutePath(target), "snapshot": r.snapshot.hex,
                      "generation": r.generation, "records": r.records, "transactions": r.transactions,
                      "restored_to": Timestamp.format(r.restoredTo), "bytes": r.bytes, "seconds": secs, "integrity": r.integrity])
            return 0
        }
    }
}

struct SQLiteTimeline: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "timeline",
        abstract: "The restorable range of each followed database: generations, snapshots, WAL records, holes.",
        discussion: Examples.sqliteTimeline)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var source: SQLiteSourceOptions
    @Argument(help: "Only this database (its absolute path).") var database: String?

    func run() async throws {
        try await runCommand(global) {
            let repo = try await source.site.open(global)
            let out = global.output
            let all = try await SQLiteStore.catalogs(repo).values
                .filter { c in database.map { absolutePath($0) == c.database } ?? true }
                .filter { c in source.host.map { $0 == c.hostname } ?? true }
                .sorted { ($0.hostname, $0.database) < ($1.hostname, $1.database) }
            guard !all.isEmpty else { throw LifeboatError(.notFound, "the repository holds no SQLite record\(database.map { " of \($0)" } ?? "")") }
            var healthy = true
            for c in all {
                var table = [["generation", "snapshots", "WAL records", "transactions", "from", "until", "holes"]]
                var gens: [[String: Any]] = []
                for g in c.ordered {
                    let from = g.snapshots.first?.record.seq ?? 0
                    let holes = g.missing(from: from)
                    if holes.count > 0 || g.snapshots.isEmpty { healthy = false }
                    let tx = g.wal.values.reduce(0) { $0 + ($1.record.transactions ?? 0) }
                    table.append([g.name, String(g.snapshots.count), String(g.wal.count), String(tx),
                                  g.start.map { String(Timestamp.format($0).prefix(23)) } ?? "-",
                                  g.end.map { String(Timestamp.format($0).prefix(23)) } ?? "-",
                                  g.snapshots.isEmpty ? "no snapshot" : holes.first.map { "\(holes.count) (first record \($0))" } ?? "0"])
                    gens.append(["generation": g.name, "snapshots": g.snapshots.count, "wal_records": g.wal.count, "transactions": tx,
                                 "from": g.start.map(Timestamp.format) ?? NSNull(), "until": g.end.map(Timestamp.format) ?? NSNull(),
                                 "missing": holes.count, "first_missing": holes.first.map { $0 as Any } ?? NSNull()])
                }
                out.line("\(c.hostname):\(c.database)")
                out.line(String(StatusCommand.table(table).dropLast()))
                if !c.invalid.isEmpty { out.line("  \(c.invalid.count) record(s) with invalid metadata ignored: \(c.invalid.prefix(3).map(\.short).joined(separator: ", "))"); healthy = false }
                out.emit(["message_type": "sqlite_timeline", "host": c.hostname, "database": c.database, "generations": gens, "invalid": c.invalid.map(\.hex)])
            }
            return healthy ? 0 : ExitStatus.failure
        }
    }
}
