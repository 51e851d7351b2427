import ArgumentParser
import Foundation
import Glibc
import LifeboatCore
import LifeboatRepository
import LifeboatSnapshot

struct BackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "backup", abstract: "Back up files, or standard input, into a new snapshot.", discussion: Examples.backup)
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Files and directories to back up.") var paths: [String] = []
    @Option(name: [.short, .customLong("exclude")], help: "Exclude a pattern (repeatable).") var excludes: [String] = []
    @Option(name: .customLong("exclude-file"), help: "Read exclude patterns from a file (repeatable).") var excludeFiles: [String] = []
    @Flag(name: .customLong("exclude-caches"), help: "Exclude directories holding a CACHEDIR.TAG file.") var excludeCaches = false
    @Flag(name: [.customShort("x"), .customLong("one-file-system")], help: "Do not cross file-system boundaries.") var oneFileSystem = false
    @Option(name: .customLong("tag"), help: "Add tags (a,b or repeat).") var tags: [String] = []
    @Option(name: .customLong("host"), help: "Hostname to record (default: this host).") var host: String?
    @Option(name: .customLong("parent"), help: "Parent snapshot (default: the latest of the same host and paths).") var parent: String?
    @Flag(name: .customLong("force"), help: "Read every file, ignoring the parent snapshot.") var force = false
    @Flag(name: [.customShort("n"), .customLong("dry-run")], help: "Do everything but write to the repository.") var dryRun = false
    @Flag(name: .customLong("stdin"), help: "Back up standard input as one file.") var stdin = false
    @Option(name: .customLong("stdin-filename"), help: "File name for --stdin.") var stdinFilename = "stdin"
    @Flag(name: .customLong("stdin-from-command"), help: "Run the command after -- and back up its output (fails if it fails).") var stdinFromCommand = false
    @Option(name: .customLong("compression"), help: "Compression for this backup: off, fast, auto, max.") var compression: String?
    @Option(name: .customLong("read-concurrency"), help: "Files read at once.") var readConcurrency: Int?
    @Option(name: .customLong("time"), help: "Time to record for the snapshot instead of now: RFC 3339 (2026-12-01T06:00:00Z) or Unix seconds.")
    var time: String?

    func validate() throws {
        if (stdin || stdinFromCommand) == false && paths.isEmpty { throw ValidationError("give at least one path to back up, or --stdin") }
        if stdin && !paths.isEmpty { throw ValidationError("--stdin takes no paths") }
        if stdinFromCommand && paths.isEmpty { throw ValidationError("--stdin-from-command needs a command after --") }
    }

    func run() async throws {
        try await runCommand(global) {
            let out = global.output
            let repo = try await global.open(compression: compression, dryRun: dryRun)
            return try await withRepositoryLock(repo, .shared, "backup") {
            try await repo.loadIndex()
            // A pack the index names but storage lost must not be referenced again: its data is stored anew.
            let missing = try await repo.forgetMissingPacks()
            if !missing.isEmpty {
                out.warn("warning: \(missing.count) pack\(missing.count == 1 ? " is" : "s are") named by the index but missing from the repository (\(missing.prefix(5).map(\.short).joined(separator: ", "))\(missing.count > 5 ? ", …" : "")): their data is stored again if it is still on disk; run `lifeboat repair index` and `lifeboat repair snapshots`")
            }
            var opts = BackupOptions()
            opts.paths = paths
            opts.excludes = excludes
            for f in excludeFiles {
                guard let d = FileManager.default.contents(atPath: f) else { throw LifeboatError.invalid("cannot read --exclude-file \(f)") }
                opts.excludes += String(decoding: d, as: UTF8.self).split(whereSeparator: \.isNewline)
                    .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
            }
            opts.excludeCaches = excludeCaches
            opts.oneFileSystem = oneFileSystem
            opts.tags = tags.flatMap { $0.split(separator: ",").map(String.init) }
            if let host { opts.hostname = host }
            if let r = readConcurrency { opts.fileReaders = max(1, r) }
            if let time {
                guard let t = currentTimeOverride(time) else {
                    throw LifeboatError.invalid("invalid --time \"\(time)\": use RFC 3339 (2026-12-01T06:00:00Z) or Unix seconds")
                }
                // A snapshot dated ahead would pass `--max-age` health checks until that date.
                guard t.timeIntervalSince(currentTime()) <= Freshness.futureTolerance else {
                    throw LifeboatError.invalid("--time \(time) is in the future: a snapshot may be dated now or earlier")
                }
                opts.time = t
            }
            opts.scanTotals = out.showsProgressBar || (out.json && !out.quiet)
            if stdin || stdinFromCommand {
                opts.paths = []
            } else if let parent {
                opts.parent = try await repo.findSnapshot(parent).id
            } else if !force {
                let abs = Set(paths.map { absolutePath($0).lossy })
                opts.parent = try await repo.listSnapshots().last { $0.snapshot.isFiles && $0.snapshot.hostname == opts.hostname && Set($0.snapshot.paths) == abs }?.id
            }
            let archiver = Archiver(repository: repo, options: opts)
            let start = Date()
            let ticker = Ticker(output: out) {
                let p = archiver.progress
                // Totals grow while the scan runs: a percent, a bar and an ETA only once they are final.
                let done = p.scanFinished
                return (ProgressLine(elapsed: Date().timeIntervalSince(start),
                                     items: (p.filesDone, done ? p.totalFiles : nil, done ? "files" : "files (scanning)"),
                                     bytes: (p.bytesDone, done ? p.totalBytes : nil)),
                        ["message_type": "status", "files_done": p.filesDone, "total_files": p.totalFiles,
                         "bytes_done": p.bytesDone, "total_bytes": p.totalBytes, "seconds_elapsed": Date().timeIntervalSince(start),
                         "percent_done": p.totalBytes > 0 ? Double(p.bytesDone) / Double(p.totalBytes) : 0, "error_count": p.errors])
            }
            let result: BackupResult
            do {
                if stdinFromCommand {
                    result = try await backupCommandOutput(archiver)
                } else if stdin {
                    result = try await archiver.runStream(name: stdinFilename, read: { buf in
                        while true {
                            let n = Glibc.read(0, buf.baseAddress, buf.count)
                            if n >= 0 { return n }
                            if errno != EINTR { throw LifeboatError(.io, "cannot read standard input") }
                        }
                    })
                } else {
                    result = try await archiver.run()
                }
            } catch {
                ticker.stop(out)
                throw error
            }
            ticker.stop(out)
            // Every backup with a parent is compared with it (ransomware shows as most files turned random); the
            // backup stands whatever the comparison finds or fails on.
            var massChange: MassChangeReport?
            if let parentID = opts.parent, result.snapshotID != nil, let parentSnapshot = try? await repo.loadSnapshot(parentID) {
                massChange = try? await MassChangeDetector.compare(repo, parent: parentSnapshot, current: result.snapshot,
                                                                   thresholds: MassChangeThresholds(), sampleLimit: 64)
                if let m = massChange, m.suspicious {
                    out.warn("warning: suspicious mass change against snapshot \(parentID.short): \(m.description) (ransomware at work?)")
                }
            }
            for e in result.errors { out.warn("error: \(e.path): \(e.message)") }
            let s = result.snapshot.summary ?? SnapshotSummary()
            let dur = Date().timeIntervalSince(start)
            out.info("Files:       \(s.filesNew) new, \(s.filesChanged) changed, \(s.filesUnmodified) unmodified")
            out.info("Dirs:        \(s.dirsNew) new, \(s.dirsChanged) changed, \(s.dirsUnmodified) unmodified")
            out.info("Added to the repository: \(formatBytes(s.dataAdded)) (\(formatBytes(s.dataAddedPacked)) stored)")
            out.info("processed \(s.totalFilesProcessed) files, \(formatBytes(s.totalBytesProcessed)) in \(formatDuration(dur))")
            if let id = result.snapshotID {
                out.line("snapshot \(id.short) saved")
            } else {
                out.line("dry run: no snapshot saved")
            }
            var summary: [String: Any] = ["message_type": "summary", "files_new": s.filesNew, "files_changed": s.filesChanged,
                                          "files_unmodified": s.filesUnmodified, "dirs_new": s.dirsNew, "dirs_changed": s.dirsChanged,
                                          "dirs_unmodified": s.dirsUnmodified, "data_blobs": s.dataBlobs, "tree_blobs": s.treeBlobs,
                                          "data_added": s.dataAdded, "data_added_packed": s.dataAddedPacked,
                                          "total_files_processed": s.totalFilesProcessed, "total_bytes_processed": s.totalBytesProcessed,
                                          "total_duration": dur, "dry_run": dryRun, "error_count": result.errors.count]
            if let id = result.snapshotID { summary["snapshot_id"] = id.hex }
            if let m = massChange {
                summary["mass_change"] = ["suspicious": m.suspicious, "files_changed_share": m.changedShare, "high_entropy_share": m.entropyShare,
                                          "changed": m.changed, "added": m.added, "removed": m.removed, "sampled": m.sampled,
                                          "became_random": m.becameRandom] as [String: Any]
            }
            out.emit(summary)
            return result.errors.isEmpty ? 0 : ExitStatus.partial
            }
        }
    }

    /// Runs `paths` (the command after --) and backs up its standard output; fails if it exits non-zero.
    func backupCommandOutput(_ archiver: Archiver) async throws -> BackupResult {
        let p = Process()
        let exe = paths[0]
        guard let path = exe.contains("/") ? exe : findInPath(exe) else {
            throw LifeboatError.invalid("cannot run \(exe): no such command in PATH (\(ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")); no snapshot was saved")
        }
        guard access(path, X_OK) == 0 else {
            throw LifeboatError.invalid("cannot run \(path): \(String(cString: strerror(errno))); no snapshot was saved")
        }
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = Array(paths.dropFirst())
        let pipe = Pipe()
        p.standardOutput = pipe
        do { try p.run() } catch { throw LifeboatError.invalid("cannot run \(path): \((error as NSError).localizedDescription); no snapshot was saved") }
        let fd = pipe.fileHandleForReading.fileDescriptor
        return try await archiver.runStream(name: stdinFilename, read: { buf in
            while true {
                let n = Glibc.read(fd, buf.baseAddress, buf.count)
                if n >= 0 { return n }
                if errno != EINTR { throw LifeboatError(.io, "cannot read the command's output") }
            }
        }, finish: {
            p.waitUntilExit()
            if p.terminationReason == .uncaughtSignal {
                let sig = p.terminationStatus
                let name = strsignal(sig).map { String(cString: $0) } ?? "signal \(sig)"
                throw LifeboatError(.io, "the command \(exe) was killed by signal \(sig) (\(name)); no snapshot was saved")
            }
            if p.terminationStatus != 0 {
                throw LifeboatError(.io, "the command \(exe) failed with exit status \(p.terminationStatus); no snapshot was saved")
            }
        })
    }
}

func findInPath(_ name: String) -> String? {
    guard !name.isEmpty else { return nil }
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let p = "\(dir)/\(name)"
        var st = stat()
        if access(p, X_OK) == 0, stat(p, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG { return p }
    }
    return nil
}
