import Foundation
import Glibc
import LifeboatCore
import LifeboatPostgres
import LifeboatProcess
import LifeboatRepository
import LifeboatWAL

/// The restore of a drill of a PostgreSQL point-in-time source (`postgres: {pitr: true}`): the newest base backup
/// and all the archived WAL after it (up to the disaster's time, when that is before the end of the archive) laid
/// into the sandbox, the server started there as the drill's user, on the run's port and with its socket in the
/// sandbox, with archiving off, and left running once it has replayed the WAL and promoted, for the playbook.
/// The copy holds every file its replay needs, so the server never reads the repository (and never sees its
/// password). The RPO is the disaster's time minus the last transaction the server replayed (from its log).
enum PostgresDrill {
    struct Outcome {
        var backup: ID
        var restoredTo: Date
        var files: Int
        var bytes: UInt64
        var segments: Int
        var phases: [String: Double]
        var detail: String
    }

    /// `target`: the sandbox (the data directory is `target/pgdata`, the socket `target/.s.PGSQL.PORT`).
    static func run(repo: Repository, source: String, site: String, target: String, before: Date?, user: Child.User?, port: Int,
                    deadline: Date?, clock: @Sendable () -> Date) async throws -> Outcome {
        guard user != nil || getuid() != 0 else {
            throw LifeboatError.invalid("the drill of source \(source) starts PostgreSQL, which does not run as root: give the drill `run_as:` (the user that owns the cluster, often postgres)")
        }
        guard (1...65535).contains(port) else { throw LifeboatError.invalid("port \(port) is out of range 1-65535") }
        // The path goes into the server's options through pg_ctl's shell: plain characters only.
        guard target.hasPrefix("/"), target.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "/._-".contains($0)) }) else {
            throw LifeboatError.invalid("the sandbox path \(target) has characters PostgreSQL's options cannot carry safely: give the drill a `sandbox:` of letters, digits, /, ., _ and -")
        }
        // A Unix socket's path has room for 107 bytes.
        guard (target + "/.s.PGSQL.\(port)").utf8.count <= 107 else {
            throw LifeboatError.invalid("the sandbox path \(target) is too long for PostgreSQL's socket (\(target)/.s.PGSQL.\(port) must fit in 107 bytes): give the drill a shorter `sandbox:`")
        }
        let t0 = currentTime()
        try await repo.loadIndex()
        // The cluster: the only one, else the one whose base backups carry the source's tag.
        let catalogs = try await WALStore.catalogs(repo)
        var system: String? = nil
        if catalogs.count > 1 {
            let tagged = catalogs.filter { $0.value.backups.contains { $0.snapshot.tags.contains("source=\(source)") } }.map(\.key)
            guard tagged.count == 1 else {
                throw LifeboatError.invalid("site \(site) holds the records of \(catalogs.count) PostgreSQL clusters (\(catalogs.keys.sorted().joined(separator: ", "))) and \(tagged.isEmpty ? "none" : "several") of them has base backups tagged source=\(source): the drill cannot tell which is this source's")
            }
            system = tagged[0]
        }
        // The end of the archive, or the disaster's time when that comes before it.
        var (_, plan, _) = try await PointInTimeRestore.plan(repo: repo, system: system, target: .latest)
        if let before, let last = plan.reach.lastTime, before < last {
            (_, plan, _) = try await PointInTimeRestore.plan(repo: repo, system: system, target: .time(before))
        }
        let data = target + "/pgdata"
        var options = PointInTimeRestore.Options(target: data, restoreCommand: Spool.restoreCommand(fetch: nil))
        options.recovery = plan.target
        options.system = system
        options.archiveOff = true
        options.selfContained = true
        options.restore.verify = false
        let t1 = currentTime()
        let r = try await PointInTimeRestore.run(repo: repo, options: options)
        try configure(data)
        if let user { try chownTree(target, user) }
        let t2 = currentTime()
        let segments = r.plan.reach.run.segments.filter { s in r.plan.lastNeeded.map { s.name <= $0 } ?? true }.count
        // Started: replay, then promotion (recovery.signal removed, the server ready).
        let log = target + "/server.log"
        let promoted = try await start(data: data, socketDirectory: target, port: port, log: log, user: user, deadline: deadline, clock: clock)
        let t3 = currentTime()
        // What the server says it replayed; else what the archive's records say (never past the target).
        let said = lastReplayed(log)
        var replayed = said ?? plan.reach.lastTime ?? plan.backup.stopTime
        if said == nil, case .time(let t) = plan.target { replayed = min(replayed, t) }
        let to: String
        switch plan.target {
        case .time(let t): to = "to \(Timestamp.format(t))"
        default: to = "to the end of the archive"
        }
        return Outcome(backup: r.backup.id, restoredTo: replayed, files: r.files, bytes: r.bytes, segments: segments,
                       phases: ["fetch": t1.timeIntervalSince(t0), "restore": t2.timeIntervalSince(t1), "replay": t3.timeIntervalSince(t2)],
                       detail: "base backup \(r.backup.id.short) and \(Units.count(segments, "WAL segment")) from \(site) replayed \(to) (last transaction \(String(Timestamp.format(replayed).prefix(23)))); promoted in \(String(format: "%.1f", promoted)) s; server on port \(port), socket in \(target), data in \(data)")
    }

    /// What a sandbox needs beyond the copy: a cluster whose configuration lives elsewhere (Debian keeps it in
    /// /etc/postgresql) gets an empty postgresql.conf, and peer authentication on the socket only.
    static func configure(_ data: String) throws {
        for (name, text) in [("postgresql.conf", "# written by a lifeboat drill: the copy had none\n"),
                             ("pg_hba.conf", "# written by a lifeboat drill: the copy had none\nlocal all all peer\n"),
                             ("pg_ident.conf", "")] where access(data + "/" + name, F_OK) != 0 {
            try writeFileAtomically(data + "/" + name, Data(text.utf8), mode: 0o600)
        }
    }

    /// The cluster's own pg_ctl (its major version's, where Debian installs it), else the one in PATH.
    static func pgctl(_ data: String) -> String {
        let version = (try? String(contentsOfFile: data + "/PG_VERSION", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        let debian = "/usr/lib/postgresql/\(version)/bin/pg_ctl"
        if !version.isEmpty, version.allSatisfy(\.isNumber), access(debian, X_OK) == 0 { return debian }
        return "pg_ctl"
    }

    /// Starts the server and waits until it has promoted; returns the seconds that took. A server that stops on
    /// the way is an error with the end of its log.
    /// What the copy's configuration may not decide in a sandbox: where it listens and keeps its files, anything
    /// that reaches outside (archiving, archive cleanup and end-of-recovery commands, streaming from a primary,
    /// logical replication workers, preloaded libraries such as schedulers, TLS files of the original host), and
    /// how it logs (to the file pg_ctl gives, in English, so that the last replayed transaction can be read).
    static func settings(data: String, socketDirectory: String, port: Int) -> [String: String] {
        ["port": "\(port)", "listen_addresses": "", "unix_socket_directories": socketDirectory,
         "data_directory": data, "hba_file": data + "/pg_hba.conf", "ident_file": data + "/pg_ident.conf",
         "archive_mode": "off", "archive_command": "", "archive_cleanup_command": "", "recovery_end_command": "",
         "primary_conninfo": "", "primary_slot_name": "", "recovery_min_apply_delay": "0",
         "max_logical_replication_workers": "0", "shared_preload_libraries": "", "ssl": "off",
         "logging_collector": "off", "log_destination": "stderr", "lc_messages": "C", "log_min_messages": "warning"]
    }

    static func start(data: String, socketDirectory: String, port: Int, log: String, user: Child.User?, deadline: Date?,
                      clock: @Sendable () -> Date) async throws -> Double {
        let started = ContinuousClock.now
        // Outside a drill (a playbook run by hand), the wait is bounded all the same.
        let deadline = deadline ?? clock().addingTimeInterval(3600)
        // Values are plain (checked paths, numbers, words): single quotes carry the empty ones through the shell.
        let options = settings(data: data, socketDirectory: socketDirectory, port: port).sorted { $0.key < $1.key }
            .map { "-c \($0.key)='\($0.value)'" }.joined(separator: " ")
        let capture = try Capture()
        let child: Child
        do {
            child = try Child.spawn([pgctl(data), "start", "-W", "-D", data, "-l", log, "-o", options], stdout: capture.writeFD, stderr: capture.writeFD, user: user)
        } catch {
            capture.closeWriter()
            throw LifeboatError(.notFound, "pg_ctl cannot run (\(error)): install the PostgreSQL server of the cluster's version")
        }
        capture.closeWriter()
        let exit = await child.wait(timeout: 120)
        guard exit.ok else { throw LifeboatError(.io, "pg_ctl start \(exit.description): \(await capture.text())") }
        var seenPid = false
        while true {
            try Task.checkCancellation()
            let pid = readOwned(data + "/postmaster.pid", last: 4096)
            if pid != nil { seenPid = true }
            let lines = pid?.split(separator: "\n", omittingEmptySubsequences: false) ?? []
            let ready = lines.count > 7 && lines[7].trimmingCharacters(in: .whitespaces) == "ready"
            if ready && access(data + "/recovery.signal", F_OK) != 0 {
                let d = ContinuousClock.now - started
                return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
            }
            let alive = lines.first.flatMap { Int32($0.trimmingCharacters(in: .whitespaces)) }.map { kill($0, 0) == 0 } ?? false
            if (seenPid && !alive) || (!seenPid && ContinuousClock.now - started > .seconds(60)) {
                throw LifeboatError(.io, "the restored server stopped before it promoted; its log ends: \(tail(log))")
            }
            if clock() > deadline {
                throw LifeboatError(.io, "the restored server had not promoted by the drill's deadline; its log ends: \(tail(log))")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// "last completed transaction was at log time 2026-12-02 00:09:17.628819+00" from the server's log.
    static func lastReplayed(_ log: String) -> Date? {
        guard let text = readOwned(log, last: 1 << 20) else { return nil }
        let key = "last completed transaction was at log time "
        guard let line = text.split(separator: "\n").last(where: { $0.contains(key) }),
              let r = line.range(of: key) else { return nil }
        // "YYYY-MM-DD HH:MM:SS.ffffff+00" (the server's log_timezone may give another offset).
        var s = String(line[r.upperBound...]).trimmingCharacters(in: .whitespaces)
        guard s.count >= 22 else { return nil }
        s = s.replacingOccurrences(of: " ", with: "T")
        if let plus = s.lastIndex(where: { $0 == "+" || $0 == "-" }), s.distance(from: plus, to: s.endIndex) == 3 { s += ":00" }
        return Timestamp.parse(s)
    }

    static func tail(_ path: String) -> String {
        guard let text = readOwned(path, last: 64 << 10) else { return "(no log at \(path))" }
        return text.split(separator: "\n").suffix(5).joined(separator: " | ")
    }

    /// The last `last` bytes of a file the drill's user owns and could have replaced (see `readRegularFile`).
    static func readOwned(_ path: String, last: Int) -> String? { readRegularFile(path, limit: last, last: true) }
}
