import Foundation
import LifeboatCore

/// The SQLite records of one database at one site, by generation: what can be restored, and from what.
public struct SQLiteCatalog: Sendable {
    public struct Item: Sendable {
        public var id: ID
        public var snapshot: Snapshot
        public var record: SQLiteRecord
        public var date: Date { snapshot.date }
    }

    public struct Generation: Sendable {
        public var name: String
        /// Snapshots, oldest first.
        public var snapshots: [Item] = []
        /// WAL records by number.
        public var wal: [Int: Item] = [:]

        /// When the generation begins: its first snapshot.
        public var start: Date? { snapshots.first?.date }
        /// The newest WAL record's number, if any.
        public var lastSeq: Int? { wal.keys.max() }

        /// Record numbers missing between `from` and the newest record (holes in the chain): how many, and the first.
        /// Counted from the records present, so that a hostile number (2^31) costs nothing.
        public func missing(from: Int) -> (count: Int, first: Int?) {
            var count = 0
            var first: Int?
            var next = from
            for k in wal.keys.sorted() where k >= from {
                if k > next { count += k - next; first = first ?? next }
                next = k + 1
            }
            return (count, first)
        }

        /// The last time the records reach without a hole: from each snapshot that starts a stretch (the first,
        /// and any at or past a hole), the newest transaction before the next missing record.
        public var end: Date? { stretches.map(\.until).max() }

        /// The times the generation restores to: from each snapshot that starts a stretch (the first, and any at or
        /// past a hole) to the newest transaction before the next missing record. A time between two stretches (in
        /// a hole) cannot be restored.
        public var stretches: [(from: Date, until: Date)] {
            var out: [(from: Date, until: Date)] = []
            var walked = Int.min  // the first record number the stretches walked so far do not reach
            for s in snapshots where s.record.seq >= walked {
                var t = s.date
                var k = s.record.seq
                while let r = wal[k] {
                    if let l = r.record.lastTime.flatMap(Timestamp.parse), l > t { t = l }
                    k += 1
                }
                walked = k
                out.append((s.date, t))
            }
            return out
        }
    }

    public var database: String
    public var hostname: String
    public var generations: [String: Generation] = [:]
    /// Records whose metadata is out of bounds (ignored, named by `problems`).
    public var invalid: [ID] = []

    /// Generations, oldest first (by their first snapshot; those without one last).
    public var ordered: [Generation] {
        generations.values.sorted { a, b in
            switch (a.start, b.start) {
            case let (x?, y?): return x < y || (x == y && a.name < b.name)
            case (nil, _?): return false
            case (_?, nil): return true
            default: return a.name < b.name
            }
        }
    }

    /// Every database's catalog in a listing, keyed by `hostname:path`.
    public static func build(_ snaps: [(id: ID, snapshot: Snapshot)]) -> [String: SQLiteCatalog] {
        var out: [String: SQLiteCatalog] = [:]
        for s in snaps {
            guard let kind = s.snapshot.kind, kind == "sqlite-wal" || kind == "sqlite-snapshot", let r = s.snapshot.sqlite else { continue }
            let key = s.snapshot.hostname + ":" + r.database
            var c = out[key] ?? SQLiteCatalog(database: r.database, hostname: s.snapshot.hostname)
            guard valid(r, kind: kind) else { c.invalid.append(s.id); out[key] = c; continue }
            let item = Item(id: s.id, snapshot: s.snapshot, record: r)
            var g = c.generations[r.generation] ?? Generation(name: r.generation)
            if kind == "sqlite-snapshot" {
                g.snapshots.append(item)
                g.snapshots.sort { ($0.date, $0.record.seq) < ($1.date, $1.record.seq) }
            } else if let old = g.wal[r.seq] {
                // Two records with one number (a copy made twice): the older one.
                if item.date < old.date { g.wal[r.seq] = item }
            } else {
                g.wal[r.seq] = item
            }
            c.generations[r.generation] = g
            out[key] = c
        }
        return out
    }

    static func valid(_ r: SQLiteRecord, kind: String) -> Bool {
        r.generation.utf8.count == 16 && r.generation.allSatisfy(\.isHexDigit) && (0...Int(Int32.max)).contains(r.seq)
            && validPageSize(r.pageSize) && WALCycle(hex: r.cycle) != nil && WALChecksum(hex: r.checksum) != nil
            && (0...Int(Int32.max)).contains(r.firstFrame) && (0...Int(Int32.max)).contains(r.lastFrame)
            && (kind == "sqlite-snapshot" || (r.firstFrame >= 1 && r.lastFrame >= r.firstFrame && (1...FrameLog.maxTransactions).contains(r.transactions ?? 0)))
    }

    /// What a restore reads: a snapshot, then WAL records in order, applying transactions seen at or before `until`.
    public struct RestorePlan: Sendable {
        public var generation: String
        public var snapshot: Item
        public var wal: [Item]
        public var until: Date?
        /// The time of the newest transaction the plan restores (the snapshot's when none).
        public var restoredTo: Date
    }

    public enum Target: Sendable, Equatable {
        case latest
        case time(Date)
    }

    /// The plan for `target`: the generation in force at that time, its newest snapshot taken at or before it, and
    /// the unbroken run of WAL records after that snapshot. A time before every copy, or past a hole in the chain,
    /// is an error naming the nearest restorable times.
    public func plan(_ target: Target) throws -> RestorePlan {
        let gens = ordered.filter { $0.start != nil }
        guard !gens.isEmpty else {
            throw LifeboatError(.notFound, "the repository holds no snapshot of SQLite database \(database) (host \(hostname)): nothing to restore from")
        }
        let t: Date?
        switch target {
        case .latest: t = nil
        case .time(let d): t = d
        }
        let chosen: Generation
        if let t {
            guard let g = gens.last(where: { $0.start! <= t }) else {
                throw LifeboatError(.notFound, "\(Timestamp.format(t)) is before the first copy of \(database): the nearest restorable time is \(Timestamp.format(gens[0].start!))")
            }
            chosen = g
        } else {
            chosen = gens.last!
        }
        let snap = chosen.snapshots.last { t == nil || $0.date <= t! }!
        var wal: [Item] = []
        var seq = snap.record.seq
        var restoredTo = snap.date
        var reached = false  // the target time lies before the next record
        var covered = snap.date  // the newest transaction time of the records taken
        while let r = chosen.wal[seq] {
            if let t, let first = r.record.firstTime.flatMap(Timestamp.parse), first > t { reached = true; break }
            wal.append(r)
            if let l = r.record.lastTime.flatMap(Timestamp.parse) {
                covered = max(covered, l)
                if t.map({ l <= $0 }) ?? true { restoredTo = max(restoredTo, l) }
            }
            seq += 1
        }
        // A hole: the chain stops at a missing record that later ones follow, before the target.
        if !reached, let last = chosen.lastSeq, seq <= last {
            // Records taken reach the target: what the missing one holds came after it.
            if !(t.map { $0 <= covered } ?? false) {
                let after = chosen.snapshots.first { $0.record.seq > seq }
                throw LifeboatError(.notFound, "WAL record \(seq) of generation \(chosen.name) of \(database) is missing (deleted or not yet copied to this site): the chain from snapshot \(snap.id.short) stops at \(Timestamp.format(restoredTo))\(after.map { "; the next snapshot after the hole is \($0.id.short) of \(Timestamp.format($0.date))" } ?? ""). Restore to one of those times, or from another site")
            }
        }
        return RestorePlan(generation: chosen.name, snapshot: snap, wal: wal, until: t, restoredTo: restoredTo)
    }
}
