import Foundation
import LifeboatCore
import LifeboatRepository

/// Sizes of a set of snapshots: what a restore of them would write, and the deduplicated data they share
/// (before and after compression). What `lifeboat stats` prints and the agent reports.
public struct RepositoryStats: Sendable, Codable, Equatable {
    public var snapshots = 0
    /// Files in all the snapshots, and their bytes: what restoring every one of them writes.
    public var files = 0
    public var restoreSize: UInt64 = 0
    /// Distinct data blobs the snapshots reference, their bytes before and after compression (and encryption).
    public var blobs = 0
    public var rawSize: UInt64 = 0
    public var storedSize: UInt64 = 0
    /// Bytes of every pack in the repository (all snapshots, and data not yet pruned).
    public var packBytes: UInt64 = 0

    public init() {}

    /// Restored bytes per distinct raw byte.
    public var dedupRatio: Double { rawSize > 0 ? Double(restoreSize) / Double(rawSize) : 0 }
    /// Raw bytes per stored byte.
    public var compressionRatio: Double { storedSize > 0 ? Double(rawSize) / Double(storedSize) : 0 }

    enum CodingKeys: String, CodingKey {
        case snapshots = "snapshots_count", files = "total_file_count", restoreSize = "total_size", blobs = "total_blob_count"
        case rawSize = "total_uncompressed_size", storedSize = "total_stored_size", packBytes = "repository_pack_bytes"
    }

    /// Walks the snapshots' trees (each tree once for its blobs; every file counted per snapshot, as a restore
    /// of each would write it) and sums the index's lengths of the blobs they reference.
    public static func compute(_ snaps: [(id: ID, snapshot: Snapshot)], repository repo: Repository) async throws -> RepositoryStats {
        var r = RepositoryStats()
        r.snapshots = snaps.count
        var blobs = Set<ID>()
        var seenTrees = Set<ID>()
        for (_, s) in snaps {
            var stack = [s.tree]
            while let t = stack.popLast() {
                let tree = try await repo.loadTree(t)
                let firstVisit = seenTrees.insert(t).inserted
                for n in tree.nodes {
                    if let st = n.subtree { stack.append(st) }
                    if n.type == .file { r.files += 1; r.restoreSize = r.restoreSize.addingClamped(n.size) }
                    if firstVisit { for b in n.content ?? [] { blobs.insert(b) } }
                }
            }
        }
        r.blobs = blobs.count
        for b in blobs {
            if let l = repo.index.lookup(b, type: .data) {
                r.rawSize = r.rawSize.addingClamped(UInt64(l.blob.rawLength))
                r.storedSize = r.storedSize.addingClamped(UInt64(l.blob.length))
            }
        }
        r.packBytes = try await repo.backend.list(.data).reduce(UInt64(0)) { $0.addingClamped(UInt64(max(0, $1.size))) }
        return r
    }
}
