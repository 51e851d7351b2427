import Foundation
import LifeboatCore

/// A segment of the archive, as its record describes it.
public struct ArchivedSegment: Sendable, Equatable {
    public var name: String
    public var timeline: UInt32
    public var number: UInt64
    public var end: LSN
    /// Where the last whole record that starts in it starts (nil: none does, or a record stored without it).
    public var lastRecord: LSN?
    public var firstTime: Date?
    public var lastTime: Date?
    public init(name: String, timeline: UInt32, number: UInt64, end: LSN, lastRecord: LSN? = nil, firstTime: Date? = nil, lastTime: Date? = nil) {
        self.name = name; self.timeline = timeline; self.number = number; self.end = end; self.lastRecord = lastRecord
        self.firstTime = firstTime; self.lastTime = lastTime
    }
}

/// A base backup: where its WAL starts and where the copy is consistent (its stop), and when it stopped.
public struct BaseBackupPoint: Sendable, Equatable {
    public var id: String
    public var timeline: UInt32
    public var start: LSN
    public var stop: LSN
    public var stopTime: Date
    public init(id: String, timeline: UInt32, start: LSN, stop: LSN, stopTime: Date) {
        self.id = id; self.timeline = timeline; self.start = start; self.stop = stop; self.stopTime = stopTime
    }
}

public enum RecoveryTarget: Sendable, Equatable {
    case latest
    case time(Date)
    case lsn(LSN)
}

/// The WAL archive of one cluster: its segments per timeline and its timelines' histories. Pure: what restore,
/// `pg timeline` and `pg check` decide is decided here, and unit-tested.
public struct WALChain: Sendable {
    public let size: SegmentSize
    public private(set) var segments: [UInt32: [UInt64: ArchivedSegment]] = [:]
    public private(set) var histories: [UInt32: [TimelineSwitch]] = [:]

    public init(size: SegmentSize) { self.size = size }

    /// Segment numbers come from names (at most 2^64 / size); larger ones are ignored.
    public mutating func add(_ s: ArchivedSegment) {
        guard s.number < UInt64.max / 2 else { return }
        segments[s.timeline, default: [:]][s.number] = s
    }
    public mutating func addHistory(timeline: UInt32, _ switches: [TimelineSwitch]) { histories[timeline] = switches }

    public var timelines: [UInt32] { Set(segments.keys).union(histories.keys).sorted() }

    /// The timelines a recovery on `timeline` reads, oldest first, each with the first segment it supplies.
    /// Timeline 1 and a timeline without a history file have no ancestors.
    public func lineage(_ timeline: UInt32) -> [(timeline: UInt32, firstSegment: UInt64)] {
        guard let h = histories[timeline], !h.isEmpty else { return [(timeline, 0)] }
        var out: [(UInt32, UInt64)] = []
        var begin: UInt64 = 0
        for s in h {
            out.append((s.parent, begin))
            begin = size.segment(of: s.end)
        }
        out.append((timeline, begin))
        return out
    }

    /// Which timeline supplies segment `number` to a recovery on `timeline` (PostgreSQL's rule: the newest one that
    /// began at or before it).
    public func timeline(of number: UInt64, on timeline: UInt32) -> UInt32 {
        lineage(timeline).last { $0.firstSegment <= number }?.timeline ?? timeline
    }

    /// A walk along the chain from a segment: the segments present one after the other, and the first one missing
    /// when later segments exist (a hole), or nil when the run reaches the end of the archive.
    public struct Run: Sendable, Equatable {
        public var first: UInt64
        public var segments: [ArchivedSegment]
        public var hole: String?
        /// Later segments that exist beyond the hole (what a restore past it would need).
        public var beyondHole: Int
        public var last: ArchivedSegment? { segments.last }
        public var end: LSN? { segments.last?.end }
        /// Whether a recovery to position `l` stops inside the run: PostgreSQL stops after the first record that
        /// starts at or after `l`, so one must start there (segments stored without `last_record`: before `end`).
        public func reaches(_ l: LSN) -> Bool {
            if let r = segments.compactMap(\.lastRecord).max() { return l <= r }
            return end.map { l < $0 } ?? false
        }
        /// The last position `reaches` accepts, for messages.
        public var lastReachable: String {
            if let r = segments.compactMap(\.lastRecord).max() { return "\(r) (where the last archived record starts)" }
            return end.map { "before \($0)" } ?? "?"
        }
        /// The newest commit or abort time in the run.
        public var lastTime: Date? { segments.compactMap(\.lastTime).max() }
        public var firstTime: Date? { segments.compactMap(\.firstTime).min() }
        public func covers(_ number: UInt64) -> Bool { number >= first && number < first + UInt64(segments.count) }
    }

    public func run(from number: UInt64, on timeline: UInt32) -> Run {
        let tlis = lineage(timeline)
        // The highest segment the lineage holds, each timeline up to where its successor begins.
        var highest: UInt64? = nil
        for (i, t) in tlis.enumerated() {
            let limit = i + 1 < tlis.count ? tlis[i + 1].firstSegment : UInt64.max
            if let m = segments[t.timeline]?.keys.filter({ $0 >= t.firstSegment && $0 < limit }).max() {
                highest = max(highest ?? 0, m)
            }
        }
        var run = Run(first: number, segments: [], hole: nil, beyondHole: 0)
        guard let highest, highest >= number else { return run }
        var s = number
        while s <= highest {
            let t = self.timeline(of: s, on: timeline)
            guard let seg = segments[t]?[s] else {
                run.hole = WALFileName.segment(timeline: t, number: s, size: size)
                // Counted from the segments that exist (a hostile record may name a segment 2^40 away).
                var beyond = 0
                for (i, l) in tlis.enumerated() {
                    let limit = i + 1 < tlis.count ? tlis[i + 1].firstSegment : UInt64.max
                    beyond += segments[l.timeline]?.keys.filter { $0 > s && $0 >= l.firstSegment && $0 < limit }.count ?? 0
                }
                run.beyondHole = beyond
                return run
            }
            run.segments.append(seg)
            s += 1
        }
        return run
    }

    /// The newest timeline whose lineage reads `backup`'s start segment from the backup's own timeline (where a
    /// recovery from that backup ends up with `recovery_target_timeline = 'latest'`).
    /// A child timeline that branched off before the backup's stop is not on its path (replaying the child's WAL
    /// over pages that hold the parent's later changes would corrupt the copy), as PostgreSQL's own check says.
    public func latestTimeline(from backup: BaseBackupPoint) -> UInt32 {
        let startSegment = size.segment(of: backup.start)
        for t in timelines.reversed() where t >= backup.timeline {
            guard timeline(of: startSegment, on: t) == backup.timeline else { continue }
            if t != backup.timeline, let sw = histories[t]?.first(where: { $0.parent == backup.timeline }), sw.end < backup.stop { continue }
            return t
        }
        return backup.timeline
    }

    /// What a base backup gives: the run of WAL after its start on the newest timeline that follows it, whether the
    /// run reaches its stop (else the backup cannot be made consistent), and the times it can be restored to.
    public struct Reach: Sendable, Equatable {
        public var backup: BaseBackupPoint
        public var timeline: UInt32
        public var run: Run
        /// The first segment between the backup's start and stop that is missing, if any.
        public var missingForConsistency: String?
        public var consistent: Bool { missingForConsistency == nil }
        /// Restorable times: after the backup's stop, and before the newest transaction of the run.
        public var firstTime: Date { backup.stopTime }
        public var lastTime: Date? { run.lastTime.flatMap { $0 > backup.stopTime ? $0 : nil } }
    }

    public func reach(_ backup: BaseBackupPoint) -> Reach {
        let tli = latestTimeline(from: backup)
        let first = size.segment(of: backup.start)
        let r = run(from: first, on: tli)
        let stopSegment = size.segment(of: backup.stop)
        var missing: String? = nil
        if !r.covers(stopSegment) {
            let s = first + UInt64(r.segments.count)
            missing = WALFileName.segment(timeline: timeline(of: s, on: tli), number: s, size: size)
        }
        return Reach(backup: backup, timeline: tli, run: r, missingForConsistency: missing)
    }

    /// The plan of a point-in-time recovery: which base backup, up to which segment, on which timeline.
    public struct Plan: Sendable, Equatable {
        public var reach: Reach
        public var target: RecoveryTarget
        public var backup: BaseBackupPoint { reach.backup }
        public var timeline: UInt32 { reach.timeline }

        /// The last segment the replay can ask for (nil: the end of the archive, for `--latest`): the first one
        /// holding a transaction after the target time, or the one holding the target position, and the one after
        /// it (the server reads ahead across a segment's end). A prefetch beyond it is wasted.
        public var lastNeeded: String? {
            let segments = reach.run.segments
            let at: Int?
            switch target {
            case .latest: return nil
            case .time(let t): at = segments.firstIndex { ($0.lastTime.map { $0 > t }) ?? false }
            case .lsn(let l): at = segments.firstIndex { l < $0.end }
            }
            guard let i = at else { return nil }
            return segments[min(i + 1, segments.count - 1)].name
        }
    }

    public static func describe(_ d: Date) -> String { Timestamp.format(d) }

    /// Chooses the newest base backup from which `target` can be reached through archived WAL with no hole. Every
    /// refusal names what is missing and the nearest restorable point.
    public func plan(_ target: RecoveryTarget, backups: [BaseBackupPoint]) throws -> Plan {
        guard !backups.isEmpty else {
            throw LifeboatError(.notFound, "the archive has no base backup of this cluster: take one with `lifeboat pg backup` (WAL alone cannot be restored)")
        }
        let reaches = backups.sorted { ($0.stopTime, $0.stop) < ($1.stopTime, $1.stop) }.map(reach)
        let usable = reaches.filter(\.consistent)
        guard !usable.isEmpty else {
            let r = reaches.last!
            throw LifeboatError(.notFound, "no base backup can be made consistent: base backup \(r.backup.id) lacks WAL segment \(r.missingForConsistency ?? "?") (between its start \(r.backup.start) and stop \(r.backup.stop)); check that archive_command runs `lifeboat pg wal-push`, then take a new base backup")
        }
        switch target {
        case .latest:
            let r = usable.last!
            if let hole = r.run.hole {
                throw LifeboatError(.notFound, "--latest cannot replay everything: WAL segment \(hole) is missing and \(r.run.beyondHole) later segment(s) exist; the newest restorable time before the hole is \(r.lastTime.map(Self.describe) ?? "none (no transaction after the backup)"): give an earlier --time (or --lsn before \(r.run.end.map(\.description) ?? "?"))")
            }
            return Plan(reach: r, target: target)
        case .time(let t):
            let oldest = usable.first!
            guard t >= oldest.firstTime else {
                throw LifeboatError(.notFound, "\(Self.describe(t)) is before the oldest restorable time \(Self.describe(oldest.firstTime)) (the end of base backup \(oldest.backup.id))")
            }
            let candidates = usable.filter { $0.firstTime <= t }
            if let r = candidates.last(where: { ($0.lastTime.map { t < $0 }) ?? false }) {
                return Plan(reach: r, target: target)
            }
            let best = candidates.last!
            let newest = candidates.compactMap(\.lastTime).max()
            if let hole = best.run.hole {
                throw LifeboatError(.notFound, "\(Self.describe(t)) cannot be reached: WAL segment \(hole) is missing (\(best.run.beyondHole) later segments exist); the newest restorable time before the hole is \(newest.map(Self.describe) ?? "none (no transaction after the backup)") (targets must be before it)")
            }
            throw LifeboatError(.notFound, "\(Self.describe(t)) is after the newest restorable time: the last archived transaction ended at \(newest.map(Self.describe) ?? "(none after the base backup)"); give an earlier --time, or --latest to replay all archived WAL")
        case .lsn(let l):
            let candidates = usable.filter { $0.backup.stop <= l }
            guard !candidates.isEmpty else {
                throw LifeboatError(.notFound, "\(l) is before the oldest restorable position \(usable.first!.backup.stop) (the end of base backup \(usable.first!.backup.id))")
            }
            if let r = candidates.last(where: { $0.run.reaches(l) }) {
                return Plan(reach: r, target: target)
            }
            let best = candidates.last!
            if let hole = best.run.hole {
                throw LifeboatError(.notFound, "\(l) cannot be reached: WAL segment \(hole) is missing; the archive's WAL runs without a hole up to \(best.run.lastReachable)")
            }
            throw LifeboatError(.notFound, "\(l) is after the end of the archived WAL: the last reachable position is \(best.run.lastReachable); give an earlier --lsn, or --latest")
        }
    }
}
