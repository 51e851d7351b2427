import ArgumentParser
import Foundation
import Synchronization
import Glibc
import LifeboatCore
import LifeboatRepository
import LifeboatSnapshot

struct RestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "restore", abstract: "Restore a snapshot (or a part of it) into a directory.", discussion: Examples.restore)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var filter: FilterOptions
    @Argument(help: "SNAPSHOT[:SUBPATH]: an ID, prefix or latest, optionally with a path inside it.") var snapshot: String
    @Option(name: [.short, .customLong("target")], help: "Directory to restore into.") var target: String
    @Option(name: [.short, .customLong("include")], help: "Restore only paths matching (repeatable).") var includes: [String] = []
    @Option(name: [.short, .customLong("exclude")], help: "Do not restore paths matching (repeatable).") var excludes: [String] = []
    @Flag(name: .customLong("verify"), help: "Re-read every restored file and check it against the snapshot.") var verify = false
    @Option(name: .customLong("overwrite"), help: "Existing files: always, if-changed, never.") var overwrite = "always"

    func run() async throws {
        try await runCommand(global) {
            guard let mode = OverwriteMode(rawValue: overwrite) else {
                throw LifeboatError.invalid("invalid --overwrite \"\(overwrite)\": use always, if-changed or never")
            }
            let out = global.output
            let repo = try await global.open()
            return try await withRepositoryLock(repo, .shared, "restore", readOnly: global) {
                try await repo.loadIndex()
                let (ref, sub) = splitSnapshotRef(snapshot)
                let (id, snap) = try await repo.findSnapshot(ref, filter: filter.filter)
                let node = try await Restorer.resolve(repo: repo, tree: snap.tree, subpath: sub, snapshot: (id, snap))
                var opts = RestoreOptions()
                opts.includes = includes
                opts.excludes = excludes
                opts.verify = verify
                opts.overwrite = mode
                let restorer = Restorer(repository: repo, options: opts)
                out.info("restoring snapshot \(id.short) of \(snap.paths) at \(snap.time) to \(target)")
                let start = Date()
                let ticker = Ticker(output: out) {
                    let p = restorer.progress
                    return (ProgressLine(elapsed: Date().timeIntervalSince(start), items: (p.filesDone, p.totalFiles, "files"),
                                         bytes: (p.bytesDone, p.totalBytes)),
                            ["message_type": "status", "files_restored": p.filesDone, "total_files": p.totalFiles,
                             "bytes_restored": p.bytesDone, "total_bytes": p.totalBytes, "seconds_elapsed": Date().timeIntervalSince(start)])
                }
                let subPath = sub.split(separator: "/").joined(separator: "/")
                do {
                    try await restorer.restore(node: node, snapshotPath: subPath.isEmpty ? "" : "/" + subPath, target: target)
                } catch { ticker.stop(out); throw error }
                ticker.stop(out)
                let p = restorer.progress
                let errors = restorer.errors
                for e in errors { out.warn("error: \(e.path): \(e.message)") }
                out.info("restored \(p.filesDone) files, \(formatBytes(p.bytesDone)) in \(formatDuration(Date().timeIntervalSince(start)))\(p.filesSkipped > 0 ? ", \(p.filesSkipped) skipped" : "")\(verify ? ", \(p.filesVerified) verified" : ""); \(p.packReads) pack reads")
                out.emit(["message_type": "summary", "files_restored": p.filesDone, "files_skipped": p.filesSkipped,
                          "files_verified": p.filesVerified, "bytes_restored": p.bytesDone, "total_files": p.totalFiles,
                          "seconds_elapsed": Date().timeIntervalSince(start), "error_count": errors.count, "pack_reads": p.packReads,
                          "errors": errors.map { ["path": $0.path, "message": $0.message] }])
                return errors.isEmpty ? 0 : ExitStatus.partial
            }
        }
    }
}

struct DumpCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dump", abstract: "Write a file from a snapshot to stdout (a directory as tar).", discussion: Examples.dump)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var filter: FilterOptions
    @Argument(help: "Snapshot ID, prefix or latest.") var snapshot: String
    @Argument(help: "Path of a file (written as is) or directory (written as tar) inside the snapshot.") var path: String

    func run() async throws {
        try await runCommand(global) {
            let repo = try await global.open()
            return try await withRepositoryLock(repo, .shared, "dump", readOnly: global) {
                try await repo.loadIndex()
                let (id, snap) = try await repo.findSnapshot(snapshot, filter: filter.filter)
                let node = try await Restorer.resolve(repo: repo, tree: snap.tree, subpath: path, snapshot: (id, snap))
                let problems = try await Dumper(repository: repo, sink: FileDescriptorSink(fd: 1, name: "standard output")).dump(node, path: path)
                for e in problems { global.output.warn("error: \(e)") }
                return problems.isEmpty ? 0 : ExitStatus.partial
            }
        }
    }
}
