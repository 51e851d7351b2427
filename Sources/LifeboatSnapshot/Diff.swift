import Foundation
import LifeboatCore
import LifeboatRepository

/// One difference between two snapshots, as restic's `diff` names them.
public struct SnapshotChange: Sendable, Codable, Equatable {
    public enum Modifier: String, Sendable, Codable {
        /// Added, removed, content (or link target) changed, type changed, metadata (mode, owner, xattrs) changed.
        case added = "+", removed = "-", modified = "M", typeChanged = "T", metadataChanged = "U"
    }
    public var modifier: Modifier
    /// Absolute path inside the snapshots; a directory's ends with `/`.
    public var path: String
}

/// What `diff` counted.
public struct DiffStatistics: Sendable, Codable, Equatable {
    public var added = 0
    public var removed = 0
    public var changed = 0
    public init() {}
}

public enum SnapshotDiff {
    /// Walks both trees in name order, skipping subtrees with the same ID, and reports each change as it is
    /// found (a whole added or removed directory is reported entry by entry).
    public static func compare(_ repo: Repository, from a: ID, to b: ID,
                               onChange: (SnapshotChange) throws -> Void) async throws -> DiffStatistics {
        var stats = DiffStatistics()
        func walk(_ ta: ID?, _ tb: ID?, _ path: String) async throws {
            if ta == tb { return }
            let na = try await ta.asyncMap { try await repo.loadTree($0).nodes } ?? []
            let nb = try await tb.asyncMap { try await repo.loadTree($0).nodes } ?? []
            let ma = Dictionary(na.map { ($0.name, $0) }, uniquingKeysWith: { x, _ in x })
            let mb = Dictionary(nb.map { ($0.name, $0) }, uniquingKeysWith: { x, _ in x })
            let names = Set(ma.keys).union(mb.keys).sorted { $0.lexicographicallyPrecedes($1) }
            for n in names {
                let p = path + "/" + String(decoding: n, as: UTF8.self)
                switch (ma[n], mb[n]) {
                case (nil, let y?):
                    stats.added += 1
                    try onChange(SnapshotChange(modifier: .added, path: p + (y.type == .dir ? "/" : "")))
                    if y.type == .dir { try await walk(nil, y.subtree, p) }
                case (let x?, nil):
                    stats.removed += 1
                    try onChange(SnapshotChange(modifier: .removed, path: p + (x.type == .dir ? "/" : "")))
                    if x.type == .dir { try await walk(x.subtree, nil, p) }
                case (let x?, let y?):
                    if x.type != y.type {
                        stats.changed += 1; try onChange(SnapshotChange(modifier: .typeChanged, path: p))
                    } else if x.type == .dir {
                        try await walk(x.subtree, y.subtree, p)
                    } else if x.content != y.content || x.linkTarget != y.linkTarget {
                        stats.changed += 1; try onChange(SnapshotChange(modifier: .modified, path: p))
                    } else if x.mode != y.mode || x.uid != y.uid || x.gid != y.gid || x.xattrs != y.xattrs {
                        stats.changed += 1; try onChange(SnapshotChange(modifier: .metadataChanged, path: p))
                    }
                default: break
                }
            }
        }
        try await walk(a, b, "")
        return stats
    }
}
