import Foundation
import LifeboatCore
import LifeboatWAL

/// What `pg timeline` and `pg check` say of one cluster's archive: its base backups with the range each can be
/// restored to, its timelines with their holes, and every problem in plain words.
public struct ArchiveReport: Sendable, Encodable {
    public struct Backup: Sendable, Encodable {
        public var id: String
        public var timeline: UInt32
        public var startLSN: String
        public var stopLSN: String
        public var stopTime: String
        public var consistent: Bool
        /// The segment between start and stop that is missing.
        public var missing: String?
        public var restorableFrom: String?
        public var restorableUntil: String?
        /// The first missing segment after the stop (restores cannot go past it).
        public var hole: String?
        enum CodingKeys: String, CodingKey {
            case id, timeline, startLSN = "start_lsn", stopLSN = "stop_lsn", stopTime = "stop_time", consistent, missing
            case restorableFrom = "restorable_from", restorableUntil = "restorable_until", hole
        }
    }
    public struct Timeline: Sendable, Encodable {
        public var timeline: UInt32
        public var parent: UInt32?
        /// Where it left its parent (the switch point in its history file): the parent's WAL up to there.
        public var branchedAt: String?
        public var firstSegment: String?
        public var lastSegment: String?
        public var segments: Int
        public var missing: [String]
        public var missingCount: Int
        enum CodingKeys: String, CodingKey {
            case timeline, parent, branchedAt = "branched_at", firstSegment = "first_segment", lastSegment = "last_segment", segments, missing, missingCount = "missing_count"
        }
    }

    public var system: String
    public var segmentSize: UInt64
    public var backups: [Backup]
    public var timelines: [Timeline]
    public var firstRestorable: String?
    public var lastRestorable: String?
    public var newestArchive: String?
    public var walFiles: Int
    public var problems: [String]
    public var healthy: Bool { problems.isEmpty }

    enum CodingKeys: String, CodingKey {
        case system, segmentSize = "segment_size", backups, timelines, firstRestorable = "first_restorable"
        case lastRestorable = "last_restorable", newestArchive = "newest_archive", walFiles = "wal_files", problems
    }

    public init(_ c: WALCatalog) {
        system = c.system
        segmentSize = c.size.bytes
        walFiles = c.files.count
        newestArchive = c.newestArchive.map(Timestamp.format)
        var problems: [String] = []
        var first: Date? = nil, last: Date? = nil
        backups = c.backups.sorted { ($0.point.stopTime, $0.point.stop) < ($1.point.stopTime, $1.point.stop) }.map { b in
            let r = c.chain.reach(b.point)
            if let m = r.missingForConsistency {
                problems.append("base backup \(b.id.short) lacks WAL segment \(m), between its start \(b.point.start) and stop \(b.point.stop): it cannot be restored")
            } else {
                first = min(first ?? r.firstTime, r.firstTime)
                if let l = r.lastTime { last = max(last ?? l, l) }
            }
            return Backup(id: b.id.hex, timeline: b.point.timeline, startLSN: b.point.start.description, stopLSN: b.point.stop.description,
                          stopTime: Timestamp.format(b.point.stopTime), consistent: r.consistent, missing: r.missingForConsistency,
                          restorableFrom: r.consistent ? Timestamp.format(r.firstTime) : nil,
                          restorableUntil: r.consistent ? r.lastTime.map(Timestamp.format) : nil, hole: r.run.hole)
        }
        if c.backups.isEmpty { problems.append("no base backup: the archived WAL cannot be restored without one (`lifeboat pg backup`)") }
        firstRestorable = first.map(Timestamp.format)
        lastRestorable = last.map(Timestamp.format)
        var rows: [Timeline] = []
        for t in c.chain.timelines {
            let own = c.chain.lineage(t).last!.firstSegment
            let numbers = (c.chain.segments[t] ?? [:]).keys.filter { $0 >= own }.sorted()
            var missing: [String] = []
            var count = 0
            // The gaps between neighbours (never a walk over every number: a hostile record may name one 2^40 away).
            for (a, b) in zip(numbers, numbers.dropFirst()) where b - a > 1 {
                count = min(Int.max / 2, count + Int(clamping: b - a - 1))
                var s = a + 1
                while s < b && missing.count < 10 { missing.append(WALFileName.segment(timeline: t, number: s, size: c.size)); s += 1 }
            }
            if count > 0 {
                problems.append("timeline \(t): \(count) WAL segment(s) missing (first: \(missing[0])); no restore can replay past the first one")
            }
            if t > 1, c.chain.histories[t] == nil, !(c.chain.segments[t] ?? [:]).isEmpty {
                problems.append("timeline \(t): its history file (\(WALFileName.history(t))) is not in the archive, so restores cannot follow it")
            }
            rows.append(Timeline(timeline: t, parent: c.chain.histories[t]?.last?.parent, branchedAt: c.chain.histories[t]?.last?.end.description,
                                 firstSegment: numbers.first.map { WALFileName.segment(timeline: t, number: $0, size: c.size) },
                                 lastSegment: numbers.last.map { WALFileName.segment(timeline: t, number: $0, size: c.size) },
                                 segments: numbers.count, missing: missing, missingCount: count))
        }
        timelines = rows
        for n in c.conflicts { problems.append("WAL file \(n) was archived twice with different contents (the first copy is the one restored)") }
        problems += c.problems
        self.problems = problems
    }
}
