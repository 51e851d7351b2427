import Foundation
import LifeboatCore
import LifeboatCrypto
import LifeboatRepository
import LifeboatStorage

public struct PruneOptions: Sendable {
    /// How long a pack stays marked before it may be deleted. 0 runs both phases at once,
    /// which is safe only when no backup runs at the same time.
    public var grace: TimeInterval = 3600
    /// Repack partly used packs until at most this fraction of the repository is unused.
    public var maxUnused: Double = 0.05
    public var dryRun = false
    public init() {}
}

public struct PruneReport: Sendable {
    public var snapshots = 0
    public var packsMarked = 0
    public var packsUnmarked = 0
    public var packsDeleted = 0
    public var packsRepacked = 0
    public var packsWaiting = 0
    public var bytesDeleted: UInt64 = 0
    public var bytesRepacked: UInt64 = 0
    public var unusedBytes: UInt64 = 0
    public var totalBytes: UInt64 = 0
    public var passes = 0
    public var notes: [String] = []
    /// What the marked packs left in the index hold, and when a later prune may delete them.
    public var pending = PendingSpace()
}

/// Two-phase garbage collection that never blocks backups.
///
/// Phase 1 (mark): packs holding no blob that any snapshot uses, and packs just repacked, are marked
/// with the time in a rewritten index; backups stop deduplicating against marked packs.
/// Phase 2 (sweep, on a later run): a marked pack is deleted only if (a) the grace period has passed,
/// (b) no live lock other than a prune's was created before mark time + grace or before the mark became
/// visible (a backup that might have read the index before the mark is still running), and (c) no snapshot
/// uses a blob that exists only in it — else it is unmarked. Locks are listed before snapshots, so a backup
/// that finishes during the pass is seen one way or the other. Only one prune runs at a time (prune lock).
public final class Pruner: Sendable {
    let repo: Repository
    let options: PruneOptions
    let now: @Sendable () -> Date

    public init(repository: Repository, options: PruneOptions, now: @escaping @Sendable () -> Date = { Date() }) {
        repo = repository
        self.options = options
        self.now = now
    }


    public func run() async throws -> PruneReport {
        let lock = try await repo.lock(.prune, operation: "prune")
        do {
            var report = PruneReport()
            var visible: [ID: Date] = [:]
            let marked = try await pass(&report, visible: &visible)
            if options.grace <= 0 && marked > 0 && !options.dryRun {
                _ = try await pass(&report, visible: &visible)
            }
            await lock.release()
            return report
        } catch {
            await lock.release()
            throw error
        }
    }

    /// Blob IDs used by every snapshot. Fails if any tree cannot be read: pruning then could lose data.
    func usedBlobs(_ snaps: [(id: ID, snapshot: Snapshot)]) async throws -> Set<ID> {
        var used = Set<ID>()
        var stack = snaps.map(\.snapshot.tree)
        while let t = stack.popLast() {
            if !used.insert(t).inserted { continue }
            let tree: Tree
            do { tree = try await repo.loadTree(t) } catch {
                throw LifeboatError(.corrupt, "cannot read tree \(t.short); prune stops so that nothing is lost (run `lifeboat check`)", underlying: error as? LifeboatError)
            }
            for n in tree.nodes {
                if let s = n.subtree { stack.append(s) }
                for b in n.content ?? [] { used.insert(b) }
            }
        }
        return used
    }

    /// One mark-and-sweep pass: gather (locks, snapshots, index, storage listing), decide (`PrunePlan.make`,
    /// pure), execute. Returns the number of packs newly marked.
    ///
    /// `visible` records when this run's marks became visible (their index written): a backup whose lock
    /// is older than that may have read the index before the marks and must hold off the sweep, even with
    /// a zero grace period.
    func pass(_ report: inout PruneReport, visible: inout [ID: Date]) async throws -> Int {
        report.passes += 1
        // Locks first, then snapshots, then the index. A backup holds its lock until its snapshot is written, so
        // every backup is either in this lock listing (and holds off the sweep) or finished, with its snapshot in
        // the listing that follows; listing locks last would miss a backup that finished in between and delete
        // packs its new snapshot needs. A snapshot is written only after its index, so every listed snapshot's
        // data is in the index loaded next.
        let t = now()
        let nowSecs = Int64(t.timeIntervalSince1970)
        let locks = try await repo.listLocks(now: t).filter { !$0.stale && $0.info.kind != .prune }
        // Strict: a snapshot or index file that cannot be read could name packs that would otherwise look unused.
        let snaps = try await repo.listSnapshots(strict: true)
        report.snapshots = snaps.count
        try await repo.loadIndex(strict: true)
        let loadedFiles = Set(repo.loadedIndexFiles.keys)
        let used = try await usedBlobs(snaps)
        var packs = repo.index.allPacks()
        let stored = Set(try await repo.backend.list(.data).compactMap { ID(hex: $0.name) })

        // Packs in storage but in no index (an interrupted backup's last uploads): index them as marked.
        let indexed = Set(packs.map(\.id))
        for id in stored where !indexed.contains(id) {
            guard var pack = await repo.readUnindexedPack(id.hex) else {
                report.notes.append("pack \(id.short) is unreadable and in no index; left alone (run `lifeboat check`)")
                continue
            }
            pack.markedAt = nowSecs
            packs.append(pack)
            report.packsMarked += 1
        }

        var plan = PrunePlan.make(PruneInputs(packs: packs, indexed: indexed, stored: stored, used: used,
                                              lockTimes: locks.map(\.info.createdDate), visible: visible, now: t,
                                              grace: options.grace, maxUnused: options.maxUnused))
        report.packsUnmarked += plan.unmarked
        report.packsWaiting += plan.waiting
        report.packsMarked += plan.newlyMarked
        report.totalBytes = plan.totalBytes
        report.unusedBytes = plan.unusedBytes
        var newlyMarked = plan.newlyMarked
        let sweep = plan.delete.filter { stored.contains($0.id) }

        let lockTimes = locks.map(\.info.createdDate)
        if options.dryRun {
            report.packsRepacked += plan.repack.count
            report.packsDeleted += sweep.count
            report.bytesDeleted += sweep.reduce(0) { $0 + UInt64($1.packSize) }
            var marking = plan.keep
            for i in plan.repack { marking[i].markedAt = nowSecs }
            report.pending = PendingSpace.of(marking, visible: visible, grace: options.grace, lockTimes: lockTimes)
            return newlyMarked
        }

        // Repack: copy used blobs of chosen packs into new packs, then mark the old ones.
        var writerFiles: [ID] = []
        if !plan.repack.isEmpty {
            let writer = try repo.with(compression: nil, dryRun: false)
            // The writer's index has the chosen packs marked, so their blobs are stored anew.
            var marking = plan.keep
            for i in plan.repack { marking[i].markedAt = nowSecs }
            writer.replaceIndex(marking)
            var copied = Set<ID>()
            for i in plan.repack {
                let p = plan.keep[i]
                let data = try await repo.backend.read(Handle(.data, p.id.hex))
                for b in p.blobs where used.contains(b.id) && copied.insert(b.id).inserted {
                    let start = Int(b.offset), end = Int(b.offset) + Int(b.length)
                    guard end <= data.count else {
                        throw LifeboatError.corrupt("pack \(p.id.short) is shorter than its index says; prune stops (run `lifeboat check`)")
                    }
                    let plain = try repo.openBlob(data[start..<end], location: BlobLocation(pack: p.id, salt: p.salt, blob: b))
                    _ = try await writer.saveBlob(b.type, plain, id: b.id)
                    report.bytesRepacked += UInt64(b.rawLength)
                }
                plan.keep[i].markedAt = nowSecs
                report.packsRepacked += 1
                report.packsMarked += 1
                newlyMarked += 1
            }
            try await writer.flush()
            let kept = Set(plan.keep.map(\.id))
            plan.keep += writer.index.allPacks().filter { !kept.contains($0.id) }.map { var q = $0; q.markedAt = nil; return q }
            writerFiles = writer.writtenIndexFiles
        }

        // Write the new index, then remove the index files it replaces; only if every one of them is gone are
        // packs deleted (a surviving old index file would name deleted packs).
        let newFiles = try await repo.writeIndex(plan.keep)
        let writtenAt = now()
        for p in plan.keep where p.markedAt == nowSecs && visible[p.id] == nil { visible[p.id] = writtenAt }
        var failed: [String] = []
        for f in loadedFiles.union(writerFiles).subtracting(newFiles) {
            do { try await repo.delete(Handle(.index, f.hex)) } catch let e as LifeboatError where e.code == .locked {
                throw e
            } catch {
                failed.append("\(f.short): \(error)")
            }
        }
        if !failed.isEmpty {
            throw LifeboatError(.io, "prune stopped before deleting any pack: \(failed.count) superseded index file\(failed.count == 1 ? "" : "s") could not be removed (\(failed.prefix(3).joined(separator: "; "))); the marks are saved, run prune again")
        }
        for p in sweep {
            try await repo.delete(Handle(.data, p.id.hex))
            report.packsDeleted += 1
            report.bytesDeleted += UInt64(p.packSize)
        }
        report.pending = PendingSpace.of(plan.keep, visible: visible, grace: options.grace, lockTimes: lockTimes)
        return newlyMarked
    }
}
