import ArgumentParser
import Foundation
import LifeboatCore
import LifeboatRepository
import LifeboatSnapshot

struct RepairCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "repair", abstract: "Rebuild the index, or rewrite snapshots that reference missing data.",
        discussion: "Run `repair index` first (it makes the index match the packs in storage), then `repair snapshots`.",
        subcommands: [RepairIndex.self, RepairSnapshots.self])
}

struct RepairIndex: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "index", abstract: "Rebuild the index from the packs in storage (reads pack headers only).",
        discussion: """
        Entries of intact index files whose packs exist are kept; every pack no intact index file lists has its \
        header read (two small ranged reads). New index files are written before the old ones are removed.

        \(Examples.repairIndex)
        """)
    @OptionGroup var global: GlobalOptions
    @Flag(name: .customLong("read-all-packs"), help: "Read every pack's header, not only those no intact index lists.") var readAllPacks = false
    @Flag(name: [.customShort("n"), .customLong("dry-run")], help: "Only report what would change.") var dryRun = false

    func run() async throws {
        try await runCommand(global) {
            let out = global.output
            let repo = try await global.open()
            return try await withRepositoryLock(repo, .exclusive, "repair index") {
                let r = try await Repair.index(repo, readAllPacks: readAllPacks, dryRun: dryRun)
                for f in r.damagedIndexFiles { out.warn("index file \(f.short) is damaged: replaced") }
                for p in r.missingPacks { out.warn("pack \(p.short) is named by the index but missing from storage: dropped (run `lifeboat repair snapshots`)") }
                for (p, why) in r.unreadablePacks { out.warn("pack \(p.short) has an unreadable header, left out of the index: \(why)") }
                out.info("\(dryRun ? "would index" : "indexed") \(r.packsFromIndex + r.packsFromHeaders) packs (\(r.packsFromHeaders) from their headers); \(dryRun ? "would replace" : "replaced") \(r.oldIndexFiles) index files with \(dryRun ? "new ones" : String(r.newIndexFiles.count))")
                out.emit(["message_type": "summary", "dry_run": dryRun, "packs_from_index": r.packsFromIndex, "packs_from_headers": r.packsFromHeaders,
                          "unreadable_packs": r.unreadablePacks.map { ["id": $0.id.hex, "reason": $0.reason] },
                          "missing_packs": r.missingPacks.map(\.hex), "damaged_index_files": r.damagedIndexFiles.map(\.hex),
                          "old_index_files": r.oldIndexFiles, "new_index_files": r.newIndexFiles.map(\.hex)])
                return 0
            }
        }
    }
}

struct RepairSnapshots: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshots", abstract: "Write repaired copies of snapshots that reference missing data.",
        discussion: """
        A file that lost pieces keeps the rest and is renamed NAME.repaired; a directory whose listing is lost \
        becomes an empty NAME.repaired. Repaired snapshots get the tag `repaired`. If the files still exist, a new \
        backup is the better repair. Run `repair index` first.

        \(Examples.repairSnapshots)
        """)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var filter: FilterOptions
    @Flag(name: .customLong("forget"), help: "Remove each original snapshot once its repaired copy is written.") var forget = false
    @Flag(name: [.customShort("n"), .customLong("dry-run")], help: "Only report what would change.") var dryRun = false
    @Argument(help: "Snapshots to repair (default: all that match the filters).") var snapshots: [String] = []

    func run() async throws {
        try await runCommand(global) {
            let out = global.output
            let repo = try await global.open()
            return try await withRepositoryLock(repo, .shared, "repair snapshots") {
                // Strict: blobs of a damaged index file would look lost and be cut out of the snapshots.
                do { try await repo.loadIndex(strict: true) } catch let e as LifeboatError where e.code == .corrupt {
                    throw LifeboatError(.corrupt, "\(e.message); run `lifeboat repair index` first")
                }
                var chosen: [(id: ID, snapshot: Snapshot)] = []
                if snapshots.isEmpty {
                    chosen = try await repo.listSnapshots().filter { filter.filter.matches($0.snapshot) }
                } else {
                    for s in snapshots { chosen.append(try await repo.findSnapshot(s, filter: filter.filter)) }
                }
                let results = try await Repair.snapshots(repo, chosen, forget: forget, dryRun: dryRun)
                for r in results {
                    for c in r.changes { out.line("snapshot \(r.original.short): \(c.path): \(c.problem)") }
                    if let n = r.repaired {
                        out.line("snapshot \(r.original.short) repaired as \(n.short)\(forget ? "; the original was removed" : "")")
                    } else if dryRun {
                        out.line("snapshot \(r.original.short) would be repaired")
                    }
                    out.emit(["message_type": "snapshot_repaired", "original": r.original.hex, "repaired": r.repaired?.hex ?? NSNull(),
                              "dry_run": dryRun, "changes": r.changes.map { ["path": $0.path, "problem": $0.problem] }])
                }
                out.info("\(Units.count(chosen.count, "snapshot")) checked, \(results.count) \(dryRun ? "to repair" : "repaired")")
                out.emit(["message_type": "summary", "snapshots": chosen.count, "repaired": results.count, "dry_run": dryRun])
                return 0
            }
        }
    }
}
