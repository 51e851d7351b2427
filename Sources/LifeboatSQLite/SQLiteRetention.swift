import Foundation
import LifeboatCore
import LifeboatRepository
import LifeboatSnapshot
import LifeboatSQLiteWAL
import LifeboatStorage

/// Retention of a database's SQLite records: snapshots by a policy (as `forget` keeps snapshots, over every
/// generation), and the WAL records the kept snapshots need. A generation with no kept snapshot goes whole; in one
/// that keeps some, the WAL records before its oldest kept snapshot go. The newest snapshot always stays.
public enum SQLiteRetention {
    public struct Plan: Sendable {
        public var keep: [SQLiteCatalog.Item]
        public var remove: [SQLiteCatalog.Item]
    }

    public static func plan(_ c: SQLiteCatalog, policy: RetentionPolicy, timeZone: TimeZone = .current) -> Plan {
        let snaps = c.generations.values.flatMap(\.snapshots)
        let groups = Forget.plan(snaps.map { (id: $0.id, snapshot: $0.snapshot) }, policy: policy,
                                 groupBy: GroupBy(host: false, paths: false), timeZone: timeZone)
        var kept = Set(groups.flatMap { $0.keep.map(\.id) })
        if let newest = snaps.max(by: { $0.date < $1.date }) { kept.insert(newest.id) }
        var keep: [SQLiteCatalog.Item] = []
        var remove: [SQLiteCatalog.Item] = []
        for g in c.generations.values {
            let mine = g.snapshots.filter { kept.contains($0.id) }
            keep += mine
            remove += g.snapshots.filter { !kept.contains($0.id) }
            let from = mine.map(\.record.seq).min()
            for (seq, r) in g.wal {
                if let from, seq >= from { keep.append(r) } else { remove.append(r) }
            }
        }
        // Generations without a snapshot (the first one never stored): their records cannot be restored.
        return Plan(keep: keep, remove: remove.sorted { $0.date < $1.date })
    }

    /// Removes what the plan says: snapshots first, so that a failure half-way never leaves a snapshot whose WAL
    /// records are gone.
    public static func execute(_ plan: Plan, repo: Repository) async throws -> Int {
        var n = 0
        for r in plan.remove where r.snapshot.kind == "sqlite-snapshot" { try await repo.delete(Handle(.snapshots, r.id.hex)); n += 1 }
        for r in plan.remove where r.snapshot.kind == "sqlite-wal" { try await repo.delete(Handle(.snapshots, r.id.hex)); n += 1 }
        return n
    }
}
