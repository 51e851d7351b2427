import Foundation
import Glibc
import LifeboatCore
import LifeboatPlan
import LifeboatProcess
import LifeboatRepository
import LifeboatSnapshot
import LifeboatSQLite
import LifeboatSQLiteWAL

/// `lifeboat db restore SOURCE --target NAME`: a source's dump restored into a new, named target by its engine's
/// own tool, then checked (the same check drills run). What a target is depends on the source:
/// * postgres: a database to create (`createdb`, then `pg_restore --exit-on-error` from the dump, streamed);
/// * mariadb: a database to create, for a source that dumps exactly one (the dump's `CREATE DATABASE` and `USE`
///   lines renamed), fed to `mariadb` streamed;
/// * sqlite: a new file (`PRAGMA integrity_check`); a continuous one restores to `before` (a point in time);
/// * redis: a new RDB file (`redis-check-rdb`), for a stopped server's `dir` to start from;
/// * command: a new file holding the command's output.
/// An existing target (database or file) is refused: a restore never overwrites.
public enum DatabaseRestore {
    public struct Result: Sendable {
        public var snapshot: ID
        public var time: Date
        public var target: String
        public var bytes: UInt64
        public var check: String
    }

    /// The dump file a source's snapshots hold (at their root).
    public static func dumpName(_ source: Source) -> String? {
        switch source.kind {
        case .postgres: "\(source.name).pgdump"
        case .mariadb: "\(source.name).sql"
        case .sqlite: "\(source.name).sqlite"
        case .redis: "\(source.name).rdb"
        case .command: source.name
        case .files, .postgresArchive, .sqliteContinuous: nil
        }
    }

    public static func run(_ source: Source, repo: Repository, target: String, snapshot: String? = nil, before: Date? = nil) async throws -> Result {
        switch source.kind {
        case .files: throw LifeboatError.invalid("source \(source.name) backs up files: restore them with `lifeboat restore latest --tag source=\(source.name) --target DIR`")
        case .postgresArchive: throw LifeboatError.invalid("source \(source.name) archives PostgreSQL's WAL: restore it with `lifeboat pg restore --time T --target DIR`")
        case .sqliteContinuous(let path, _):
            guard snapshot == nil else { throw LifeboatError.invalid("a continuous SQLite source restores to a time (--time), not a snapshot") }
            let store = SQLiteStore(repo: repo)
            let all = try await SQLiteStore.catalogs(repo).values
            guard let c = all.first(where: { $0.database == path && $0.hostname == localHostname() }) ?? all.first(where: { $0.database == path }) else {
                throw LifeboatError(.notFound, "the repository holds no record of \(path) (source \(source.name))")
            }
            let r = try await SQLiteRestore.run(try c.plan(before.map { .time($0) } ?? .latest), store: store, target: target)
            return Result(snapshot: r.snapshot, time: r.restoredTo, target: target, bytes: UInt64(r.bytes), check: "PRAGMA integrity_check: \(r.integrity)")
        default: break
        }
        let name = dumpName(source)!
        let tag = "source=\(source.name)"
        let snaps = try await repo.listSnapshots().filter { s in
            s.snapshot.isFiles && s.snapshot.tags.contains(tag) && (before.map { s.snapshot.date <= $0 } ?? true)
                && (snapshot.map { s.id.hex.hasPrefix($0.lowercased()) } ?? true)
        }
        guard let chosen = snaps.max(by: { $0.snapshot.date < $1.snapshot.date }) else {
            throw LifeboatError(.notFound, "the repository holds no snapshot of source \(source.name)\(snapshot.map { " with ID \($0)" } ?? "")\(before.map { " taken at or before \(Timestamp.format($0))" } ?? "")")
        }
        let tree = try await repo.loadTree(chosen.snapshot.tree)
        guard let node = tree.node(named: Array(name.utf8)), node.type == .file else {
            throw LifeboatError.corrupt("snapshot \(chosen.id.short) of source \(source.name) does not hold /\(name)")
        }
        let check: String
        switch source.kind {
        case .postgres(let dsnFile):
            let env = try PostgresDSN.environment(try readPasswordFile(dsnFile, from: "dsn_file of source \(source.name)"))
            try validDatabaseName(target)
            try await output(["createdb", "--no-password", target], environment: env, what: "createdb \(target)")
            do {
                try await feed(node, repo: repo, to: ["pg_restore", "--no-password", "--exit-on-error", "--dbname", target], environment: env)
            } catch {
                throw LifeboatError(.io, "\(error); the database \(target) was created and is incomplete: drop it (dropdb \(target)) before trying again")
            }
            check = "pg_restore: every object restored"
        case .mariadb(let defaults, let databases):
            guard databases.count == 1 else {
                throw LifeboatError.invalid("source \(source.name) dumps \(databases.isEmpty ? "every database" : "\(databases.count) databases"): `db restore` renames one database only; restore this dump with `lifeboat dump latest --tag \(tag) /\(name) | mariadb`")
            }
            try validDatabaseName(target)
            let base = ["mariadb", "--defaults-extra-file=\(defaults)"]
            let exists = try await output(base + ["-N", "-B", "-e", "SHOW DATABASES"], what: "mariadb")
            guard !exists.split(separator: "\n").contains(where: { $0 == target }) else {
                throw LifeboatError(.alreadyExists, "the database \(target) exists: a restore never overwrites; name a new one")
            }
            let rename = DumpRename(from: databases[0], to: target)
            let renamer = Renamer(rename)
            try await feed(node, repo: repo, to: base, environment: [:], filter: { renamer.filter(&$0) }, end: { renamer.finish() })
            check = "mariadb: every statement ran"
        case .sqlite:
            try await write(node, repo: repo, to: target)
            let c = try SQLiteRestore.integrityCheck(target)
            guard c == "ok" else { throw LifeboatError.corrupt("\(target) fails PRAGMA integrity_check: \(c)") }
            check = "PRAGMA integrity_check: ok"
        case .redis:
            try await write(node, repo: repo, to: target)
            check = try await redisCheck(target)
        default:
            try await write(node, repo: repo, to: target)
            check = "written"
        }
        return Result(snapshot: chosen.id, time: chosen.snapshot.date, target: target, bytes: node.size, check: check)
    }

    /// `redis-check-rdb FILE`: the RDB reads whole.
    public static func redisCheck(_ file: String) async throws -> String {
        let out = try await output(["redis-check-rdb", file], what: "redis-check-rdb \(file)")
        guard out.contains("RDB looks OK") else { throw LifeboatError.corrupt("redis-check-rdb \(file): \(out.suffix(300))") }
        return "redis-check-rdb: RDB looks OK"
    }

    static func validDatabaseName(_ n: String) throws {
        guard !n.isEmpty, n.utf8.count <= 63, n.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }), !n.hasPrefix("-") else {
            throw LifeboatError.invalid("\"\(n)\" is not a database name this restore creates (letters, digits, _ and -, at most 63)")
        }
    }

    /// Writes the node's bytes to a new file (O_EXCL: never over an existing one), synced, renamed into place.
    static func write(_ node: Node, repo: Repository, to target: String) async throws {
        var st = stat()
        guard lstat(target, &st) != 0 else { throw LifeboatError(.alreadyExists, "\(target) exists: a restore never overwrites; name a new file") }
        let tmp = (target as NSString).deletingLastPathComponent + "/." + (target as NSString).lastPathComponent + ".lifeboat-\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw LifeboatError(.io, "cannot create \(tmp): \(String(cString: strerror(errno)))") }
        var ok = false
        defer { close(fd); if !ok { unlink(tmp) } }
        for id in node.content ?? [] {
            let b = try await repo.loadBlob(.data, id)
            try writeAll(fd, b, what: tmp)
        }
        guard fsync(fd) == 0 else { throw LifeboatError(.io, "cannot finish \(target): \(String(cString: strerror(errno)))") }
        ok = true
        try placeNewFile(tmp, at: target)
    }

    static func writeAll(_ fd: Int32, _ b: [UInt8], what: String) throws {
        var done = 0
        while done < b.count {
            let n = b.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, b.count - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw LifeboatError(.io, "cannot write to \(what): \(String(cString: strerror(errno)))") }
            done += n
        }
    }

    /// Streams the node's bytes (through `filter`) into a tool's standard input; its exit status decides.
    static func feed(_ node: Node, repo: Repository, to argv: [String], environment: [String: String],
                     filter: ((inout [UInt8]) -> Void)? = nil, end: (() -> [UInt8])? = nil) async throws {
        var fds: [Int32] = [0, 0]
        guard makePipe(&fds) else { throw LifeboatError(.io, "cannot create a pipe: \(String(cString: strerror(errno)))") }
        let capture = try Capture()
        let child: Child
        do { child = try Child.spawn(argv, environment: environment, stdout: capture.writeFD, stderr: capture.writeFD, stdin: fds[0]) } catch {
            close(fds[0]); close(fds[1]); capture.closeWriter()
            throw LifeboatError(.notFound, "\(argv[0]) cannot run (\(error)): install the database's client tools")
        }
        close(fds[0]); capture.closeWriter()
        var writeError: (any Error)?
        do {
            for id in node.content ?? [] {
                var b = try await repo.loadBlob(.data, id)
                filter?(&b)
                try writeAll(fds[1], b, what: argv[0])
            }
            if let end { try writeAll(fds[1], end(), what: argv[0]) }
        } catch { writeError = error }
        close(fds[1])
        let exit = await child.wait(timeout: 86400)
        guard exit.ok else { throw LifeboatError(.io, "\(argv[0]) \(exit.description): \(await capture.text(lines: 5))") }
        if let writeError { throw writeError }
    }

    /// Runs a tool to its end; its output (standard output and error), or an error naming its exit and last lines.
    @discardableResult
    static func output(_ argv: [String], environment: [String: String] = [:], what: String) async throws -> String {
        let capture = try Capture(limit: 1 << 20)
        let child: Child
        do { child = try Child.spawn(argv, environment: environment, stdout: capture.writeFD, stderr: capture.writeFD) } catch {
            capture.closeWriter()
            throw LifeboatError(.notFound, "\(argv[0]) cannot run (\(error)): install the database's client tools")
        }
        capture.closeWriter()
        let exit = await child.wait(timeout: 600)
        let text = await capture.all()
        guard exit.ok else { throw LifeboatError(.io, "\(what) \(exit.description): \(text.suffix(400))") }
        return text
    }
}

/// The rename's state across the blobs of one stream (used by one task at a time).
final class Renamer {
    var r: DumpRename
    init(_ r: DumpRename) { self.r = r }
    func filter(_ b: inout [UInt8]) { r.filter(&b) }
    func finish() -> [UInt8] { r.finish() }
}

/// Renames one database in a `mariadb-dump --databases NAME` stream: its `CREATE DATABASE … \`NAME\`` and
/// `USE \`NAME\`;` lines name the target instead. Lines are judged by their start only (a dump's INSERT lines may
/// be megabytes long): at most the first 200 bytes of a line are held back.
struct DumpRename {
    let from: String
    let to: String
    var head: [UInt8] = []   // the current line's start while undecided
    var passing = false      // the current line is not one to rename: its bytes go through
    init(from: String, to: String) { self.from = from; self.to = to }

    mutating func filter(_ bytes: inout [UInt8]) {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + 64)
        for b in bytes {
            if passing {
                out.append(b)
                if b == 0x0A { passing = false }
                continue
            }
            head.append(b)
            if b == 0x0A { out += decide(final: true); continue }
            if head.count >= 200 || !couldMatch() { out += head; head = []; passing = true }
        }
        bytes = out
    }

    mutating func finish() -> [UInt8] {
        defer { head = [] }
        return passing ? [] : decide(final: true)
    }

    func couldMatch() -> Bool {
        let p1 = Array("CREATE DATABASE".utf8), p2 = Array("USE `".utf8)
        let n = head.count
        return Array(p1.prefix(n)) == Array(head.prefix(p1.count)) || Array(p2.prefix(n)) == Array(head.prefix(p2.count))
    }

    mutating func decide(final: Bool) -> [UInt8] {
        let line = String(decoding: head, as: UTF8.self)
        head = []
        let quoted = "`" + from.replacingOccurrences(of: "`", with: "``") + "`"
        let target = "`" + to + "`"
        if line.hasPrefix("CREATE DATABASE") || line.hasPrefix("USE `") {
            return Array(line.replacingOccurrences(of: quoted, with: target).utf8)
        }
        return Array(line.utf8)
    }
}
