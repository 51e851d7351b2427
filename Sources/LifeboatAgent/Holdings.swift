import Foundation
import LifeboatCore
import LifeboatPlan
import LifeboatPostgres
import LifeboatSQLiteWAL

/// What one site holds of one source, as the agent last listed it (after each replication pass and prune): the
/// newest snapshots with their sizes and, for point-in-time sources, the restorable range. Kept in memory, bounded
/// (at most `keep` snapshots per source and site), shown on the dashboard's service page.
public struct SourceHoldings: Sendable, Equatable {
    public struct Copy: Sendable, Equatable {
        public var id: String
        public var time: Date
        /// `files`, `pg-base`, `sqlite-snapshot`, …
        public var kind: String
        /// The snapshot's size as backed up (bytes processed) and what it added to the repository (packed).
        public var bytes: UInt64?
        public var added: UInt64?
    }
    public var listed: Date
    /// How many snapshots (base backups, SQLite snapshots) of the source the site holds; `copies` are the newest.
    public var count: Int
    public var copies: [Copy]
    /// WAL records of a point-in-time source (PostgreSQL segments, SQLite WAL records).
    public var walRecords: Int?
    /// The times a point-in-time source restores to, oldest first, overlapping ones merged: one per base backup
    /// (to the end of its WAL without a hole) or per stretch of a SQLite generation. A time between two windows
    /// cannot be restored.
    public var windows: [Window] = []
    public var restorableFrom: Date? { windows.first?.from }
    public var restorableUntil: Date? { windows.map(\.until).max() }
    public var problems: [String] = []

    public struct Window: Sendable, Equatable {
        public var from: Date
        public var until: Date
        public init(from: Date, until: Date) { self.from = from; self.until = until }
    }

    /// Sorted, overlapping windows merged; empty ones (until before from) dropped.
    public static func merge(_ windows: [Window]) -> [Window] {
        var out: [Window] = []
        for w in windows.filter({ $0.until >= $0.from }).sorted(by: { $0.from < $1.from }) {
            if let last = out.last, w.from <= last.until { out[out.count - 1].until = max(last.until, w.until) } else { out.append(w) }
        }
        return out
    }

    public static let keep = 20

    /// Pure: a source's holdings in one site's listing.
    public static func of(_ source: Source, in snapshots: [(id: ID, snapshot: Snapshot)], listed: Date, keep: Int = keep) -> SourceHoldings {
        let tag = SourceBackup.tag(source.name)
        var mine: [(id: ID, snapshot: Snapshot)]
        var h = SourceHoldings(listed: listed, count: 0, copies: [])
        var windows: [Window] = []
        switch source.kind {
        case .postgresArchive:
            let systems = SourceBackup.systems(of: source, in: snapshots)
            mine = snapshots.filter { $0.snapshot.kind == "pg-base" && $0.snapshot.tags.contains(tag) }
            let catalogs = WALCatalog.build(snapshots)
            var wal = 0
            for system in systems.sorted() {
                guard let c = catalogs[system] else { continue }
                let r = ArchiveReport(c)
                wal += r.walFiles
                for b in r.backups {
                    if let f = b.restorableFrom.flatMap(Timestamp.parse), let u = b.restorableUntil.flatMap(Timestamp.parse) {
                        windows.append(Window(from: f, until: u))
                    }
                }
                h.problems += r.problems.filter { !$0.hasPrefix("no base backup") }
            }
            h.walRecords = wal
            h.windows = merge(windows)
        case .sqliteContinuous(let path, _):
            mine = snapshots.filter { $0.snapshot.kind == "sqlite-snapshot" && $0.snapshot.sqlite?.database == path && $0.snapshot.tags.contains(tag) }
            let own = Set(snapshots.filter { $0.snapshot.sqlite?.database == path && $0.snapshot.tags.contains(tag) }.map(\.id))
            var wal = 0
            for (_, c) in SQLiteCatalog.build(snapshots.filter { own.contains($0.id) }) where c.database == path {
                for g in c.ordered {
                    wal += g.wal.count
                    windows += g.stretches.map { Window(from: $0.from, until: $0.until) }
                    if let first = g.snapshots.first?.record.seq {
                        let hole = g.missing(from: first)
                        if hole.count > 0, let at = hole.first {
                            h.problems.append("generation \(g.name): \(hole.count) WAL record\(hole.count == 1 ? "" : "s") missing from number \(at): the times in the hole cannot be restored")
                        }
                    }
                }
            }
            h.walRecords = wal
            h.windows = merge(windows)
        default:
            mine = snapshots.filter { $0.snapshot.isFiles && $0.snapshot.tags.contains(tag) }
        }
        h.count = mine.count
        h.copies = mine.sorted { $0.snapshot.date > $1.snapshot.date }.prefix(max(0, keep)).map {
            Copy(id: $0.id.short, time: $0.snapshot.date, kind: $0.snapshot.kind ?? "files",
                 bytes: $0.snapshot.summary?.totalBytesProcessed, added: $0.snapshot.summary?.dataAddedPacked)
        }
        return h
    }
}
