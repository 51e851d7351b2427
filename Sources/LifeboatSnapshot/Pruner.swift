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

    /// How long after its mark time an earlier prune's mark is assumed to have become visible (its index written).
    static let markVisibilityMargin: TimeInterval = 600

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

    /// One mark-and-sweep pass. Returns the number of packs newly marked.
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
        let snaps = try await repo.listSnapshots()
        report.snapshots = snaps.count
        try await repo.loadIndex()
        let loadedFiles = Set(repo.loadedIndexFiles.keys)
        let used = try await usedBlobs(snaps)
        var packs = repo.index.allPacks()
        let stored = Dictionary(try await repo.backend.list(.data).map { ($0.name, $0.size) }, uniquingKeysWith: { a, _ in a })

        // Packs in storage but in no index (an interrupted backup's last uploads): index them as marked.
        let indexed = Set(packs.map { $0.id.hex })
        for (name, _) in stored where !indexed.contains(name) {
            guard var pack = await repo.readUnindexedPack(name) else {
                report.notes.append("pack \(name.prefix(8)) is unreadable and in no index; left alone (run `lifeboat check`)")
                continue
            }
            pack.markedAt = nowSecs
            packs.append(pack)
            report.packsMarked += 1
        }

        // Blobs available in a live pack.
        var live = Set<ID>()
        for p in packs where p.markedAt == nil { for b in p.blobs { live.insert(b.id) } }

        var toDelete: [IndexPack] = []
        var keep: [IndexPack] = []
        // Phase 2: sweep or unmark earlier marks.
        for var p in packs {
            guard let m = p.markedAt else { keep.append(p); continue }
            if m == nowSecs && !indexed.contains(p.id.hex) { keep.append(p); continue }  // just marked orphan
            let needed = p.blobs.contains { used.contains($0.id) && !live.contains($0.id) }
            if needed {
                p.markedAt = nil
                for b in p.blobs { live.insert(b.id) }
                report.packsUnmarked += 1
                keep.append(p)
                continue
            }
            let graceOver = t.timeIntervalSince1970 - Double(m) >= options.grace
            // A backup whose lock is older than the moment the mark became visible may have read the index
            // without it and deduplicated against the pack. For this run's marks that moment is known; for an
            // earlier run's, it was when that run wrote its index, some time after `m`: allow a margin.
            let markVisible = visible[p.id]?.timeIntervalSince1970 ?? (Double(m) + Pruner.markVisibilityMargin)
            let cutoff = max(Double(m) + options.grace, markVisible)
            let safeFromLocks = !locks.contains { $0.info.createdDate.timeIntervalSince1970 < cutoff }
            if graceOver && safeFromLocks && stored[p.id.hex] != nil {
                toDelete.append(p)
            } else if stored[p.id.hex] == nil {
                // Already gone: drop it from the index.
                toDelete.append(p)
            } else {
                report.packsWaiting += 1
                keep.append(p)
            }
        }

        // Phase 1: mark unused packs; choose partly used packs to repack.
        var newlyMarked = 0
        var candidates: [(index: Int, unused: UInt64, total: UInt64)] = []
        var totalBytes: UInt64 = 0, unusedBytes: UInt64 = 0
        var seenUsed = Set<ID>()
        for (i, p) in keep.enumerated() where p.markedAt == nil {
            var u: UInt64 = 0
            for b in p.blobs where !used.contains(b.id) || !seenUsed.insert(b.id).inserted { u += UInt64(b.length) }
            let size = UInt64(p.packSize)
            totalBytes += size
            if p.blobs.allSatisfy({ !used.contains($0.id) }) {
                keep[i].markedAt = nowSecs
                newlyMarked += 1
                report.packsMarked += 1
                continue
            }
            unusedBytes += u
            if u > 0 { candidates.append((i, u, size)) }
        }
        report.totalBytes = totalBytes
        report.unusedBytes = unusedBytes

        var repack: [Int] = []
        var writerFiles: [ID] = []
        let allowed = UInt64(options.maxUnused * Double(totalBytes))
        var remaining = unusedBytes
        for c in candidates.sorted(by: { Double($0.unused) / Double($0.total) > Double($1.unused) / Double($1.total) }) {
            if remaining <= allowed { break }
            repack.append(c.index)
            remaining -= c.unused
        }

        if options.dryRun {
            report.packsRepacked += repack.count
            report.packsDeleted += toDelete.count
            report.bytesDeleted += toDelete.reduce(0) { $0 + UInt64($1.packSize) }
            return newlyMarked
        }

        // Repack: copy used blobs of chosen packs into new packs, then mark the old ones.
        if !repack.isEmpty {
            let writer = try repo.with(compression: nil, dryRun: false)
            // The writer's index has the chosen packs marked, so their blobs are stored anew.
            var marking = keep
            for i in repack { marking[i].markedAt = nowSecs }
            writer.replaceIndex(marking)
            var copied = Set<ID>()
            for i in repack {
                let p = keep[i]
                let data = try await repo.backend.read(Handle(.data, p.id.hex))
                for b in p.blobs where used.contains(b.id) && copied.insert(b.id).inserted {
                    let plain = try repo.openBlob(data[Int(b.offset)..<Int(b.offset + b.length)],
                                                  location: BlobLocation(pack: p.id, salt: p.salt, blob: b))
                    _ = try await writer.saveBlob(b.type, plain, id: b.id)
                    report.bytesRepacked += UInt64(b.rawLength)
                }
                keep[i].markedAt = nowSecs
                report.packsRepacked += 1
                report.packsMarked += 1
                newlyMarked += 1
            }
            try await writer.flush()
            let written = writer.index.allPacks().filter { p in !keep.contains { $0.id == p.id } }
            keep += written.map { var q = $0; q.markedAt = nil; return q }
            writerFiles = writer.writtenIndexFiles
        }

        // Write the new index, then remove the index files it replaces, then the swept packs.
        let newFiles = try await repo.writeIndex(keep)
        let writtenAt = now()
        for p in keep where p.markedAt == nowSecs && visible[p.id] == nil { visible[p.id] = writtenAt }
        // Index files read at the start and those the repack flushed are all covered by the new index.
        for f in loadedFiles.union(writerFiles).subtracting(newFiles) {
            try? await repo.backend.delete(Handle(.index, f.hex))
        }
        for p in toDelete where stored[p.id.hex] != nil {
            try await repo.backend.delete(Handle(.data, p.id.hex))
            report.packsDeleted += 1
            report.bytesDeleted += UInt64(p.packSize)
        }
        return newlyMarked
    }
}
