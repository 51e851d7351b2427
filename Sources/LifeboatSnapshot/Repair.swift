import Foundation
import LifeboatCore
import LifeboatRepository
import LifeboatStorage

/// What `repair index` did (or, with a dry run, would do).
public struct IndexRepairReport: Sendable {
    /// Packs taken over from intact index files.
    public var packsFromIndex = 0
    /// Packs whose header was read because no intact index file lists them.
    public var packsFromHeaders = 0
    /// Packs whose header could not be read or opened: left out of the index, with the reason.
    public var unreadablePacks: [(id: ID, reason: String)] = []
    /// Packs the old index names but storage no longer has.
    public var missingPacks: [ID] = []
    /// Index files that did not load.
    public var damagedIndexFiles: [ID] = []
    public var oldIndexFiles = 0
    public var newIndexFiles: [ID] = []
}

/// What `repair snapshots` changed in one snapshot.
public struct SnapshotRepairResult: Sendable {
    public var original: ID
    /// The repaired snapshot's ID (nil with a dry run, or when nothing needed repair).
    public var repaired: ID?
    /// Paths changed, with what was wrong.
    public var changes: [(path: String, problem: String)] = []
}

/// Rebuilding what a damaged or lost object took away, as restic's `repair index` and `repair snapshots` do.
public enum Repair {
    /// Rebuilds the index: keeps the entries of intact index files whose packs still exist, reads the header of
    /// every other pack in storage (ranged reads, no pack data), writes new index files, then removes every old
    /// one (new files first, so a crash in between leaves duplicates, never a gap). Prune marks are kept.
    /// The caller holds an exclusive lock.
    public static func index(_ repo: Repository, readAllPacks: Bool = false, dryRun: Bool = false,
                             progress: (@Sendable (Int, Int) -> Void)? = nil) async throws -> IndexRepairReport {
        var report = IndexRepairReport()
        var damagedFiles: [ID] = []
        try await repo.loadIndex { id, _ in damagedFiles.append(id) }
        report.damagedIndexFiles = damagedFiles
        let oldFiles = Array(repo.loadedIndexFiles.keys) + damagedFiles
        report.oldIndexFiles = oldFiles.count
        let stored = try await repo.backend.list(.data).compactMap { o in ID(hex: o.name).map { ($0, o.size) } }
        let storedSet = Set(stored.map(\.0))
        var known: [ID: IndexPack] = [:]
        for p in repo.index.allPacks() {
            if storedSet.contains(p.id) { known[p.id] = p; continue }
            // Not in the listing: confirmed missing only if storage says so for that pack itself.
            do {
                _ = try await repo.backend.stat(Handle(.data, p.id.hex))
                known[p.id] = p
            } catch let e as StorageError where e.kind == .notFound {
                report.missingPacks.append(p.id)
            }
        }
        var packs: [IndexPack] = []
        let toRead = stored.filter { readAllPacks || known[$0.0] == nil }
        let storedIDs = Set(stored.map(\.0))
        for (id, p) in known where !readAllPacks || !storedIDs.contains(id) { packs.append(p) }
        report.packsFromIndex = packs.count
        // Headers are small: read several at once (remote sites answer in parallel).
        let results = await boundedMap(toRead, width: repo.backend.writeConcurrency * 2) { (id, size) -> (ID, Result<IndexPack, Error>) in
            do { return (id, .success(try await repo.readPackHeader(id, size: size))) } catch { return (id, .failure(error)) }
        }
        var done = 0
        for (id, r) in results {
            done += 1
            progress?(done, toRead.count)
            switch r {
            case .success(var p):
                p.markedAt = known[id]?.markedAt
                packs.append(p)
                report.packsFromHeaders += 1
            case .failure(let e) where Repair.isDamage(e):
                // A damaged or truncated pack: keep what an intact index file said, if one did.
                if let p = known[id] { packs.append(p); report.packsFromIndex += 1 }
                report.unreadablePacks.append((id, (e as? LifeboatError)?.message ?? (e as? StorageError)?.message ?? "\(e)"))
            case .failure(let e):
                // Not damage (a timeout, a refused connection): stop, so that no index entry is thrown away.
                throw LifeboatError(.io, "repair index stopped: pack \(id.short) could not be read (\(e)); nothing was changed, run it again", underlying: e as? LifeboatError)
            }
        }
        if dryRun { return report }
        report.newIndexFiles = try await repo.writeIndex(packs.sorted { $0.id < $1.id })
        let keep = Set(report.newIndexFiles)
        for f in oldFiles where !keep.contains(f) {
            try await repo.delete(Handle(.index, f.hex))
        }
        repo.replaceIndex(packs)
        return report
    }

    /// Damage to an object, as opposed to a failure to reach it (which must stop a repair rather than drop data).
    static func isDamage(_ e: Error) -> Bool {
        if let l = e as? LifeboatError { return l.code == .corrupt || l.code == .notFound }
        if let s = e as? StorageError { return s.kind == .notFound || s.kind == .invalidRange }
        return false
    }

    /// Writes, for each snapshot that references data the index does not have (or whose pack is gone), a new
    /// snapshot without it: a file loses the missing pieces of its content and is renamed `NAME.repaired`; a
    /// directory whose listing is missing or damaged becomes an empty directory `NAME.repaired`. The new snapshot
    /// keeps time, host, paths and tags and gets the tag `repaired`; with `forget` the original is removed.
    /// Run `repair index` first, so that the index is complete. The caller holds a lock.
    public static func snapshots(_ repo: Repository, _ snaps: [(id: ID, snapshot: Snapshot)], forget: Bool,
                                 dryRun: Bool) async throws -> [SnapshotRepairResult] {
        // The index must not name lost packs: blobs found there would count as present, and a rewritten tree
        // that happens to equal one in a lost pack would not be stored again.
        _ = try await repo.forgetMissingPacks()
        var walker = TreeRepairer(repo: repo, dryRun: dryRun)
        var out: [SnapshotRepairResult] = []
        for (id, snap) in snaps {
            var result = SnapshotRepairResult(original: id)
            walker.changes = []
            let newRoot = try await walker.repair(tree: snap.tree, path: "", depth: 0)
            result.changes = walker.changes
            if let newRoot, newRoot != snap.tree {
                if !dryRun {
                    try await repo.flush()
                    var s = snap
                    s.tree = newRoot
                    if !s.tags.contains("repaired") { s.tags.append("repaired") }
                    result.repaired = try await repo.saveSnapshot(s)
                    if forget { try await repo.delete(Handle(.snapshots, id.hex)) }
                }
                out.append(result)
            } else if newRoot == nil {
                // The root tree itself is unreadable: nothing of this snapshot can be kept but an empty root.
                if !dryRun {
                    let empty = try await repo.saveTree(Tree(nodes: []))
                    try await repo.flush()
                    var s = snap
                    s.tree = empty.id
                    if !s.tags.contains("repaired") { s.tags.append("repaired") }
                    result.repaired = try await repo.saveSnapshot(s)
                    if forget { try await repo.delete(Handle(.snapshots, id.hex)) }
                }
                out.append(result)
            }
        }
        return out
    }
}

/// Walks trees for `repair snapshots`, remembering what each tree became (trees are shared between snapshots).
struct TreeRepairer {
    let repo: Repository
    let dryRun: Bool
    /// Old tree ID → repaired tree ID (the same ID when nothing below it needed repair).
    var memo: [ID: ID] = [:]
    var changes: [(path: String, problem: String)] = []
    static let maxDepth = 2048

    func blobPresent(_ id: ID, _ type: BlobType) -> Bool { repo.index.lookup(id, type: type) != nil }

    /// The repaired tree's ID, or nil if the tree itself cannot be read.
    mutating func repair(tree: ID, path: String, depth: Int) async throws -> ID? {
        if let done = memo[tree] { return done }
        guard depth < TreeRepairer.maxDepth, blobPresent(tree, .tree) else { return nil }
        let t: Tree
        do { t = try await repo.loadTree(tree) } catch where Repair.isDamage(error) {
            return nil
        }
        var nodes: [Node] = []
        var changed = false
        for var n in t.nodes {
            let p = path + "/" + n.nameString
            switch n.type {
            case .dir:
                guard let sub = n.subtree else { nodes.append(n); continue }
                if let fixed = try await repair(tree: sub, path: p, depth: depth + 1) {
                    if fixed != sub { n.subtree = fixed; changed = true }
                } else {
                    changes.append((p, "directory listing \(sub.short) is missing or damaged: replaced by an empty directory"))
                    let empty = Tree(nodes: [])
                    n.subtree = dryRun ? repo.master.blobID(empty.encoded()) : try await repo.saveTree(empty).id
                    n.name += Array(".repaired".utf8)
                    changed = true
                }
            case .file:
                let content = n.content ?? []
                let kept = content.filter { blobPresent($0, .data) }
                if kept.count != content.count {
                    changes.append((p, "\(content.count - kept.count) of \(content.count) pieces are missing: kept the rest"))
                    n.content = kept
                    n.size = kept.reduce(UInt64(0)) { $0.addingClamped(UInt64(repo.index.lookup($1, type: .data)?.blob.rawLength ?? 0)) }
                    n.name += Array(".repaired".utf8)
                    changed = true
                }
            default: break
            }
            nodes.append(n)
        }
        var result = tree
        if changed {
            let fixed = Tree(nodes: nodes)
            // A dry run names the tree it would write without writing it.
            result = dryRun ? repo.master.blobID(fixed.encoded()) : try await repo.saveTree(fixed).id
        }
        memo[tree] = result
        return result
    }
}
