import ArgumentParser
import Foundation
import LifeboatCore
import LifeboatRepository
import LifeboatSnapshot

/// Where a second repository (the source of `copy`, `init --copy-chunker-params-from`) is and how to open it.
struct SourceRepositoryOptions: ParsableArguments {
    @Option(name: .customLong("from-repo"), help: "Source repository (or LIFEBOAT_FROM_REPOSITORY).")
    var fromRepo: String?
    @Option(name: .customLong("from-password-file"), help: "Password file of the source (or LIFEBOAT_FROM_PASSWORD_FILE; default: the destination's).")
    var fromPasswordFile: String?

    var env: [String: String] { ProcessInfo.processInfo.environment }

    func location() throws -> String {
        guard let r = fromRepo ?? env["LIFEBOAT_FROM_REPOSITORY"], !r.isEmpty else {
            throw LifeboatError.invalid("no source repository: use --from-repo or LIFEBOAT_FROM_REPOSITORY")
        }
        return r
    }

    func open(_ global: GlobalOptions) async throws -> Repository {
        try await SourceRepositoryOptions.open(global, location: try location(), passwordFile: fromPasswordFile)
    }

    static func open(_ global: GlobalOptions, location: String, passwordFile: String?) async throws -> Repository {
        let env = ProcessInfo.processInfo.environment
        let backend = try await global.backend(location: location, readOnly: true)
        let password: String
        if let f = passwordFile ?? env["LIFEBOAT_FROM_PASSWORD_FILE"] {
            password = try readPasswordFile(f, from: passwordFile != nil ? "--from-password-file" : "LIFEBOAT_FROM_PASSWORD_FILE")
        } else if let p = env["LIFEBOAT_FROM_PASSWORD"] {
            password = p
        } else {
            password = try global.password(prompt: "enter password for the source repository: ")
        }
        return try await Repository.open(backend: backend, password: password)
    }
}

struct CopyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "copy",
        abstract: "Copy snapshots and the data they need from another repository into this one.",
        discussion: """
        Snapshots the destination already has (copied before, recognised by their original ID) are skipped, and so \
        are blobs it already has. Repositories created with `init --copy-chunker-params-from` name data alike, so \
        nothing present is read twice; otherwise data is re-identified (and re-chunked if the chunker parameters \
        differ). Each snapshot is written only after its data and index are durable at the destination and every \
        pack uploaded for it was read back and verified. An interrupted copy resumes where it stopped.

        \(Examples.copy)
        """)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var source: SourceRepositoryOptions
    @OptionGroup var filter: FilterOptions
    @Argument(help: "Snapshots to copy (IDs or latest; default: all that match the filter).") var snapshots: [String] = []

    func run() async throws {
        gracefulStop = "stopping after the current object"
        try await runCommand(global) {
            let out = global.output
            let src = try await source.open(global)
            let dst = try await global.open()
            let report = try await withRepositoryLock(src, .shared, "copy (source)") {
                try await withRepositoryLock(dst, .shared, "copy") {
                    try await copySnapshots(from: src, to: dst, refs: snapshots, filter: filter.filter, output: out,
                                            shouldStop: { stopRequested() })
                }
            }
            return report.stopped ? ExitStatus.interrupted : 0
        }
    }
}

/// Picks the source snapshots, loads both indexes and copies them, printing one line per snapshot.
func copySnapshots(from src: Repository, to dst: Repository, refs: [String], filter: SnapshotFilter, output out: Output,
                   shouldStop: @escaping @Sendable () -> Bool) async throws -> CopyReport {
    var chosen: [(id: ID, snapshot: Snapshot)] = []
    if refs.isEmpty {
        chosen = try await src.listSnapshots().filter { filter.matches($0.snapshot) }
    } else {
        for r in refs { chosen.append(try await src.findSnapshot(r, filter: filter)) }
    }
    // After the snapshots: a backup running beside the copy writes its index before its snapshot.
    try await src.loadIndex()
    try await dst.loadIndex()
    let copier = Copier(source: src, destination: dst)
    let start = Date()
    let ticker = await copyProgress(copier, chosen, output: out)
    defer { ticker?.stop(out) }
    let report = try await copier.copy(chosen, shouldStop: shouldStop) { from, to in
        out.info("snapshot \(from.short) copied to \(dst.backend.location) as \(to.short)")
        out.emit(["message_type": "snapshot_copied", "source": from.hex, "destination": to.hex])
    }
    let elapsed = Date().timeIntervalSince(start)
    out.info("\(Units.count(report.copied.count, "snapshot")) copied, \(report.alreadyPresent) already present; \(Units.count(report.blobsSent, "blob")) sent "
             + "(\(formatBytes(report.bytesSent))), \(report.blobsSkipped) already there; \(Units.count(report.packsVerified, "pack")) verified"
             + (report.packsRecovered > 0 ? "; \(report.packsRecovered) packs of an interrupted run reused" : "")
             + (report.reencoded ? "; data re-identified\(report.rechunked ? " and re-chunked" : "") (different keys)" : "")
             + (report.stopped ? "; stopped before the end" : ""))
    out.emit(["message_type": "summary", "snapshots_copied": report.copied.count, "snapshots_present": report.alreadyPresent,
              "blobs_sent": report.blobsSent, "bytes_sent": report.bytesSent, "blobs_skipped": report.blobsSkipped,
              "packs_verified": report.packsVerified, "packs_recovered": report.packsRecovered, "stopped": report.stopped, "reencoded": report.reencoded,
              "seconds": (elapsed * 1000).rounded() / 1000])
    return report
}

/// The progress bar of a copy (or a replication to one site), on a terminal only: snapshots and bytes, against
/// totals worked out first (the snapshots the destination lacks, and the stored bytes of the blobs they need
/// that it does not have: a walk of their trees, as `sites status` does).
/// Working the totals out cannot fail the copy: without them the bar counts what was sent.
func copyProgress(_ copier: Copier, _ chosen: [(id: ID, snapshot: Snapshot)], output out: Output) async -> Ticker? {
    guard out.showsProgressBar else { return nil }
    let present = (try? await copier.destination.listSnapshots()) ?? []
    let missing = Copier.missing(chosen, at: present)
    let pending = (try? await Copier.pendingBytes(missing.map(\.snapshot), source: copier.source, destination: copier.destination))?.bytes
    let start = Date()
    return Ticker(output: out) {
        let p = copier.progress
        return (ProgressLine(elapsed: Date().timeIntervalSince(start), items: (p.copied.count, missing.count, "snapshots"),
                             bytes: (p.bytesSent, pending.map { max($0, p.bytesSent) })), [:])
    }
}
