import ArgumentParser
import Foundation
import LifeboatCore
import LifeboatDrill
import LifeboatPlan
import LifeboatReplication
import Logging

struct DatabaseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "db",
        abstract: "Databases of the plan's sources: restore a dump into a new, named target, checked.",
        subcommands: [DatabaseRestoreCommand.self])
}

struct DatabaseRestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Restore a source's newest dump (or one by --snapshot / --time) into a new target, then check it.",
        discussion: """
        The source (in the plan file) names the engine and the connection; --target names what to create:

          postgres   a new database: createdb, then pg_restore --exit-on-error
          mariadb    a new database, for a source that dumps one (renamed)
          sqlite     a new file, checked with PRAGMA integrity_check
                     (a continuous source restores to --time)
          redis      a new RDB file, checked with redis-check-rdb
                     (stop the server, put it in its dir, start it)
          command    a new file holding the command's output

        An existing database or file is refused: a restore never overwrites. \
        The dump comes from the plan's primary site, or --site.

        \(Examples.dbRestore)
        """)
    @OptionGroup var file: PlanFileOptions
    @Argument(help: "The source's name in the plan.") var source: String
    @Option(name: [.short, .customLong("target")], help: "The database or file to create.") var target: String
    @Option(name: .customLong("site"), help: "Restore from this site of the plan (default: the primary).") var site: String?
    @Option(name: .customLong("snapshot"), help: "This snapshot (an ID prefix) instead of the newest.") var snapshot: String?
    @Option(name: .customLong("time"), help: "The newest dump taken at or before this time (RFC 3339); a continuous SQLite source: this point in time.") var time: String?

    func run() async throws {
        let plan = try file.load()
        let out = Output(json: file.json, quiet: false)
        let code: Int32
        do {
            guard let src = plan.sources.first(where: { $0.name == source }) else {
                throw LifeboatError.invalid("the plan has no source \(source) (sources: \(plan.sources.map(\.name).joined(separator: ", ")))")
            }
            let siteName = site ?? plan.sites.primary.name
            guard let s = plan.sites.sites.first(where: { $0.name == siteName }) else { throw LifeboatError.invalid("the plan has no site \(siteName)") }
            var before: Date?
            if let time {
                guard let t = Timestamp.parse(time) ?? Timestamp.parse(time.replacingOccurrences(of: " ", with: "T")) else {
                    throw LifeboatError.invalid("invalid --time \"\(time)\": use RFC 3339 with a zone, e.g. 2026-12-01T06:00:00Z")
                }
                before = t
            }
            let isFile: Bool
            switch src.kind {
            case .postgres, .mariadb: isFile = false
            default: isFile = true
            }
            let goal = isFile ? absolutePath(target) : target
            let repo = try await AgentCommand.siteAccess(logger: Logger(label: "lifeboat")).open(s)
            let start = Date()
            let r = try await repo.withLock(.shared, operation: "db restore \(source)") { () -> DatabaseRestore.Result in
                try await repo.loadIndex()
                return try await DatabaseRestore.run(src, repo: repo, target: goal, snapshot: snapshot, before: before)
            }
            let secs = Date().timeIntervalSince(start)
            out.info("restored source \(source) (snapshot \(r.snapshot.short) of \(Timestamp.format(r.time))) into \(r.target): \(formatBytes(r.bytes)) in \(formatDuration(secs)); \(r.check)")
            out.emit(["message_type": "db_restore", "source": source, "site": siteName, "snapshot": r.snapshot.hex, "time": Timestamp.format(r.time),
                      "target": r.target, "bytes": r.bytes, "seconds": secs, "check": r.check])
            code = 0
        } catch {
            out.warn("Fatal: \(errorText(error))")
            code = (error as? LifeboatError).map(ExitStatus.forError) ?? ExitStatus.failure
        }
        if code != 0 { throw ArgumentParser.ExitCode(code) }
    }
}
