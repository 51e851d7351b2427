import Foundation
import LifeboatCore
import LifeboatRepository
import LifeboatSnapshot
import LifeboatStorage
import LifeboatWAL

/// Retention of a cluster's archive: base backups by a policy (as `forget` keeps snapshots), and the WAL that the
/// kept base backups need, nothing older. A WAL record goes when every segment in it is older than the start of the
/// oldest kept base backup; timeline histories stay (a few lines each, and restores need them to follow timelines).
/// `prune` then frees the space.
public enum WALRetention {
    public struct Plan: Sendable {
        public var keep: [WALCatalog.Backup]
        public var removeBackups: [WALCatalog.Backup]
        /// WAL records to remove, with the files they hold.
        public var removeRecords: [(id: ID, names: [String])]
        /// The oldest segment kept: where the oldest kept base backup starts.
        public var oldestNeeded: String?
    }

    public static func plan(_ c: WALCatalog, policy: RetentionPolicy, timeZone: TimeZone = .current) -> Plan {
        let items = c.backups.map { (id: $0.id, snapshot: $0.snapshot) }
        let groups = Forget.plan(items, policy: policy, groupBy: GroupBy(host: false, paths: false), timeZone: timeZone)
        let keptIDs = Set(groups.flatMap { $0.keep.map(\.id) })
        let keep = c.backups.filter { keptIDs.contains($0.id) }
        let remove = c.backups.filter { !keptIDs.contains($0.id) }
        // Without a kept base backup, no WAL is known to be unneeded.
        guard let oldest = keep.map({ c.size.segment(of: $0.point.start) }).min() else {
            return Plan(keep: keep, removeBackups: remove, removeRecords: [], oldestNeeded: nil)
        }
        let records = c.walRecords.filter { r in
            !r.names.isEmpty && r.names.allSatisfy { n in
                guard let f = WALFileName(n), f.kind != .history, let number = f.segmentNumber(c.size) else { return false }
                return number < oldest
            }
        }
        let first = keep.min { $0.point.start < $1.point.start }!
        return Plan(keep: keep, removeBackups: remove, removeRecords: records,
                    oldestNeeded: WALFileName.segment(timeline: first.point.timeline, number: oldest, size: c.size))
    }

    /// Removes what the plan says: base backups first (so that a failure half-way never leaves a backup whose WAL
    /// is gone), then the WAL records.
    public static func execute(_ plan: Plan, repo: Repository) async throws -> Int {
        var n = 0
        for b in plan.removeBackups { try await repo.delete(Handle(.snapshots, b.id.hex)); n += 1 }
        for r in plan.removeRecords { try await repo.delete(Handle(.snapshots, r.id.hex)); n += 1 }
        return n
    }
}
