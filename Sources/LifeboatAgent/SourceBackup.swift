import Foundation
import Glibc
import GRDB
import LifeboatCore
import LifeboatPlan
import LifeboatRepository
import LifeboatSnapshot

/// What one backup of a source did.
public struct BackupOutcome: Sendable {
    public var snapshot: ID?
    public var files: Int
    public var bytes: UInt64
    public var added: UInt64
    /// Files that could not be read (the run is a warning, not a failure).
    public var errors: [SourceError]
    public var removed = 0
}

/// Backs up one source of the plan into a repository: files through the archiver, databases and commands as
/// one stream (`pg_dump --format=custom`, `mariadb-dump --single-transaction`, SQLite's `VACUUM INTO`, the
/// command's standard output). Snapshots carry the tag `source=NAME`, by which retention and the RPO find them.
/// Then applies the source's retention (forget, per host and paths) at that repository.
public enum SourceBackup {
    public static func tag(_ source: String) -> String { "source=\(source)" }

    public static func run(_ source: Source, repo: Repository, hostname: String = localHostname(), time: Date,
                           shouldStop: @escaping @Sendable () -> Bool = { false }) async throws -> BackupOutcome {
        try await repo.withLock(.shared, operation: "backup \(source.name) (agent)") {
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
                    $0.snapshot.hostname == hostname && Set($0.snapshot.paths) == abs && $0.snapshot.tags.contains(tag(source.name))
                }?.id
                archiver = Archiver(repository: repo, options: opts)
                result = try await archiver.run()
            case .postgres(let dsnFile):
                let env = try PostgresDSN.environment(try readSecretFile(dsnFile, what: "dsn_file of source \(source.name)"))
                archiver = Archiver(repository: repo, options: opts)
                result = try await stream(["pg_dump", "--format=custom", "--no-password"], environment: env,
                                          name: "\(source.name).pgdump", archiver: archiver)
            case .mariadb(let defaults, let databases):
                archiver = Archiver(repository: repo, options: opts)
                var argv = ["mariadb-dump", "--defaults-extra-file=\(defaults)", "--single-transaction", "--routines", "--events", "--triggers"]
                argv += databases.isEmpty ? ["--all-databases"] : ["--databases"] + databases
                result = try await stream(argv, environment: [:], name: "\(source.name).sql", archiver: archiver)
            case .sqlite(let path):
                archiver = Archiver(repository: repo, options: opts)
                result = try await sqlite(path, name: "\(source.name).sqlite", archiver: archiver)
            case .command(let argv):
                archiver = Archiver(repository: repo, options: opts)
                result = try await stream(argv, environment: [:], name: source.name, archiver: archiver)
            }
            let s = result.snapshot.summary ?? SnapshotSummary()
            var outcome = BackupOutcome(snapshot: result.snapshotID, files: s.totalFilesProcessed, bytes: s.totalBytesProcessed,
                                        added: s.dataAddedPacked, errors: result.errors)
            if let policy = source.retention {
                let mine = try await repo.listSnapshots().filter { $0.snapshot.tags.contains(tag(source.name)) }
                let groups = Forget.plan(mine, policy: policy, groupBy: GroupBy())
                outcome.removed = try await Forget.execute(groups, repo: repo)
            }
            return outcome
        }
    }

    /// Applies a source's retention at a repository (the replicas, before their prune).
    public static func forget(_ source: Source, repo: Repository) async throws -> Int {
        guard let policy = source.retention else { return 0 }
        return try await repo.withLock(.shared, operation: "forget \(source.name) (agent)") {
            let mine = try await repo.listSnapshots().filter { $0.snapshot.tags.contains(tag(source.name)) }
            return try await Forget.execute(Forget.plan(mine, policy: policy, groupBy: GroupBy()), repo: repo)
        }
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
func blockingRead(_ fd: Int32, max: Int, what: String) async throws -> [UInt8] {
    try await withCheckedThrowingContinuation { (cont: CheckedContinuation<[UInt8], any Error>) in
        DispatchQueue.global().async {
            var b = [UInt8](repeating: 0, count: max)
            while true {
                let n = b.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, max) }
                if n >= 0 { b.removeLast(max - n); cont.resume(returning: b); return }
                if errno != EINTR { cont.resume(throwing: LifeboatError(.io, "cannot read \(what): \(String(cString: strerror(errno)))")); return }
            }
        }
    }
}

/// A PostgreSQL connection string (URI `postgresql://user:password@host:port/db?param=value`, or libpq's
/// `key=value` form) turned into libpq's environment variables, so that the password never reaches argv.
public enum PostgresDSN {
    static let variables = [
        "host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT", "dbname": "PGDATABASE", "user": "PGUSER",
        "password": "PGPASSWORD", "passfile": "PGPASSFILE", "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT",
        "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY", "connect_timeout": "PGCONNECT_TIMEOUT", "application_name": "PGAPPNAME",
        "options": "PGOPTIONS", "target_session_attrs": "PGTARGETSESSIONATTRS", "service": "PGSERVICE",
    ]

    public static func environment(_ dsn: String) throws -> [String: String] {
        let text = dsn.trimmingCharacters(in: .whitespacesAndNewlines)
        var pairs: [(String, String)] = []
        if text.hasPrefix("postgresql://") || text.hasPrefix("postgres://") {
            let rest = text[text.range(of: "://")!.upperBound...]
            let (main, query) = rest.firstIndex(of: "?").map { (rest[..<$0], rest[rest.index(after: $0)...]) } ?? (rest, "")
            let (authority, db) = main.firstIndex(of: "/").map { (main[..<$0], main[main.index(after: $0)...]) } ?? (main, "")
            var hostPart = authority
            if let at = authority.lastIndex(of: "@") {
                let cred = authority[..<at]
                hostPart = authority[authority.index(after: at)...]
                if let colon = cred.firstIndex(of: ":") {
                    pairs.append(("user", try decode(cred[..<colon])))
                    pairs.append(("password", try decode(cred[cred.index(after: colon)...])))
                } else if !cred.isEmpty {
                    pairs.append(("user", try decode(cred)))
                }
            }
            if !hostPart.isEmpty {
                if hostPart.hasPrefix("["), let end = hostPart.firstIndex(of: "]") {
                    pairs.append(("host", String(hostPart[hostPart.index(after: hostPart.startIndex)..<end])))
                    let after = hostPart[hostPart.index(after: end)...]
                    if after.hasPrefix(":") { pairs.append(("port", String(after.dropFirst()))) }
                } else if let colon = hostPart.lastIndex(of: ":") {
                    pairs.append(("host", try decode(hostPart[..<colon])))
                    pairs.append(("port", String(hostPart[hostPart.index(after: colon)...])))
                } else {
                    pairs.append(("host", try decode(hostPart)))
                }
            }
            if !db.isEmpty { pairs.append(("dbname", try decode(db))) }
            for item in query.split(separator: "&") where !item.isEmpty {
                guard let eq = item.firstIndex(of: "=") else { throw LifeboatError.invalid("the PostgreSQL DSN has a parameter without a value") }
                pairs.append((try decode(item[..<eq]), try decode(item[item.index(after: eq)...])))
            }
        } else {
            var i = text.startIndex
            func skipSpace() { while i < text.endIndex, text[i].isWhitespace { i = text.index(after: i) } }
            while true {
                skipSpace()
                if i == text.endIndex { break }
                guard let eq = text[i...].firstIndex(of: "=") else { throw LifeboatError.invalid("the PostgreSQL DSN is neither a postgresql:// URI nor key=value pairs") }
                let key = text[i..<eq].trimmingCharacters(in: .whitespaces)
                i = text.index(after: eq)
                skipSpace()
                var value = ""
                if i < text.endIndex, text[i] == "'" {
                    i = text.index(after: i)
                    var closed = false
                    while i < text.endIndex {
                        let c = text[i]
                        i = text.index(after: i)
                        if c == "\\", i < text.endIndex { value.append(text[i]); i = text.index(after: i); continue }
                        if c == "'" { closed = true; break }
                        value.append(c)
                    }
                    guard closed else { throw LifeboatError.invalid("the PostgreSQL DSN has an unterminated quoted value") }
                } else {
                    while i < text.endIndex, !text[i].isWhitespace {
                        if text[i] == "\\", text.index(after: i) < text.endIndex { i = text.index(after: i) }
                        value.append(text[i]); i = text.index(after: i)
                    }
                }
                pairs.append((key, value))
            }
        }
        var env: [String: String] = [:]
        for (k, v) in pairs {
            guard let name = variables[k] else {
                // Only a plain word is named: anything else may be a piece of a password.
                guard k.count <= 40, k.allSatisfy({ $0.isASCII && ($0.isLetter || $0 == "_") }) else {
                    throw LifeboatError.invalid("the PostgreSQL DSN does not parse as key=value pairs (a parameter name is not a word)")
                }
                throw LifeboatError.invalid("the PostgreSQL DSN has the parameter \"\(k)\", which Lifeboat does not pass on (it knows: \(variables.keys.sorted().joined(separator: ", ")))")
            }
            env[name] = v
        }
        guard !env.isEmpty else { throw LifeboatError.invalid("the PostgreSQL DSN is empty") }
        return env
    }

    static func decode(_ s: Substring) throws -> String {
        guard let d = String(s).removingPercentEncoding else { throw LifeboatError.invalid("the PostgreSQL DSN has a bad %-escape") }
        return d
    }
}
