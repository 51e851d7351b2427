import Foundation
import LifeboatCore
import LifeboatRepository

/// What one prune pass knows when it decides: everything was listed and read before, nothing is read after.
public struct PruneInputs: Sendable {
    /// Every pack of the index, plus packs found in storage but in no index (with `markedAt` = now).
    public var packs: [IndexPack]
    /// The packs that came from the index (the others are unindexed uploads of an interrupted run).
    public var indexed: Set<ID>
    /// The packs storage holds.
    public var stored: Set<ID>
    /// Blobs some snapshot needs.
    public var used: Set<ID>
    /// Creation times of live locks other than prune's (backups, copies, restores in progress).
    public var lockTimes: [Date]
    /// When this run's earlier marks became visible (their index written).
    public var visible: [ID: Date]
    public var now: Date
    public var grace: TimeInterval
    public var maxUnused: Double

    public init(packs: [IndexPack], indexed: Set<ID>, stored: Set<ID>, used: Set<ID>, lockTimes: [Date],
                visible: [ID: Date] = [:], now: Date, grace: TimeInterval, maxUnused: Double) {
        self.packs = packs; self.indexed = indexed; self.stored = stored; self.used = used; self.lockTimes = lockTimes
        self.visible = visible; self.now = now; self.grace = grace; self.maxUnused = maxUnused
    }
}

/// The decision of one prune pass, made by a pure function (`make`) and carried out by `Pruner`: which packs
/// the new index lists and with which marks, which packs are deleted, and which are repacked.
///
/// Phase 2 (sweep) first: a marked pack is deleted only if the grace period has passed, no live lock was
/// created before max(mark + grace, the moment the mark became visible), and no snapshot needs a blob found
/// only in it (then it is unmarked instead). Phase 1 (mark): packs no snapshot uses are marked now; partly used
/// packs are chosen for repacking, most wasteful first, until at most `maxUnused` of the repository is unused.
public struct PrunePlan: Sendable, Equatable {
    /// The packs the new index lists, with their marks (repacked packs are marked once the copy is done).
    public var keep: [IndexPack] = []
    /// Packs to delete (swept), or to drop from the index because storage no longer has them.
    public var delete: [IndexPack] = []
    /// Indexes into `keep` of packs whose used blobs are copied into new packs.
    public var repack: [Int] = []
    public var newlyMarked = 0
    public var unmarked = 0
    public var waiting = 0
    public var totalBytes: UInt64 = 0
    public var unusedBytes: UInt64 = 0

    /// How long after its mark time an earlier prune's mark is assumed to have become visible (its index written).
    public static let markVisibilityMargin: TimeInterval = 600

    /// The earliest time (Unix seconds) a pack marked at `m` may be deleted: its grace period is over, and a
    /// backup whose lock is older than the moment the mark became visible may have read the index without it
    /// and deduplicated against the pack. For this run's marks that moment is known (`visible`); for an earlier
    /// run's, it was when that run wrote its index, some time after `m`: allow a margin. (A live lock created
    /// before this time holds the pack longer, until its operation ends.)
    public static func sweepTime(markedAt m: Int64, visible: Date?, grace: TimeInterval) -> Double {
        // Doubles: a mark near Int64.max (a broken writer's) cannot overflow; a time past year 9999 stays one.
        max(Double(m) + grace, visible?.timeIntervalSince1970 ?? (Double(m) + markVisibilityMargin))
    }

    public static func make(_ input: PruneInputs) -> PrunePlan {
        var plan = PrunePlan()
        let nowSecs = Int64(input.now.timeIntervalSince1970)
        var live = Set<ID>()
        for p in input.packs where p.markedAt == nil { for b in p.blobs { live.insert(b.id) } }

        for var p in input.packs {
            guard let m = p.markedAt else { plan.keep.append(p); continue }
            if m == nowSecs && !input.indexed.contains(p.id) { plan.keep.append(p); continue }  // just marked orphan
            if p.blobs.contains(where: { input.used.contains($0.id) && !live.contains($0.id) }) {
                p.markedAt = nil
                for b in p.blobs { live.insert(b.id) }
                plan.unmarked += 1
                plan.keep.append(p)
                continue
            }
            let t = input.now.timeIntervalSince1970
            let graceOver = t - Double(m) >= input.grace
            let cutoff = sweepTime(markedAt: m, visible: input.visible[p.id], grace: input.grace)
            let safeFromLocks = !input.lockTimes.contains { $0.timeIntervalSince1970 < cutoff }
            if !input.stored.contains(p.id) || (graceOver && safeFromLocks) {
                plan.delete.append(p)
            } else {
                plan.waiting += 1
                plan.keep.append(p)
            }
        }

        var candidates: [(index: Int, unused: UInt64, total: UInt64)] = []
        var seenUsed = Set<ID>()
        for (i, p) in plan.keep.enumerated() where p.markedAt == nil {
            var u: UInt64 = 0
            for b in p.blobs where !input.used.contains(b.id) || !seenUsed.insert(b.id).inserted { u &+= UInt64(b.length) }
            let size = UInt64(p.packSize)
            plan.totalBytes &+= size
            if p.blobs.allSatisfy({ !input.used.contains($0.id) }) {
                plan.keep[i].markedAt = nowSecs
                plan.newlyMarked += 1
                continue
            }
            plan.unusedBytes &+= u
            if u > 0 { candidates.append((i, u, size)) }
        }
        let allowed = UInt64(max(0, min(1, input.maxUnused)) * Double(plan.totalBytes))
        var remaining = plan.unusedBytes
        for c in candidates.sorted(by: { Double($0.unused) / Double($0.total) > Double($1.unused) / Double($1.total) }) {
            if remaining <= allowed { break }
            plan.repack.append(c.index)
            remaining -= min(remaining, c.unused)
        }
        return plan
    }
}

/// The space marked packs hold after a prune, and when a later prune may give it back: what `prune` and
/// `forget --prune` tell the user beside what they freed now.
public struct PendingSpace: Sendable, Equatable {
    public var packs = 0
    public var bytes: UInt64 = 0
    /// The earliest and latest moments a later prune may delete them.
    public var freeFrom: Date?
    public var freeBy: Date?
    /// Some of them are also held by a running operation (backup, copy, restore) whose lock is older than
    /// their sweep time: they wait for it to end, whatever the clock says.
    public var heldByLocks = false

    public init() {}

    /// Sums the marked packs of `index` (the index a prune pass wrote, or would write).
    public static func of(_ index: [IndexPack], visible: [ID: Date], grace: TimeInterval, lockTimes: [Date]) -> PendingSpace {
        var r = PendingSpace()
        for p in index {
            guard let m = p.markedAt else { continue }
            let at = PrunePlan.sweepTime(markedAt: m, visible: visible[p.id], grace: grace)
            r.packs += 1
            r.bytes &+= UInt64(p.packSize)
            let date = Date(timeIntervalSince1970: at)
            if r.freeFrom.map({ date < $0 }) ?? true { r.freeFrom = date }
            if r.freeBy.map({ date > $0 }) ?? true { r.freeBy = date }
            if lockTimes.contains(where: { $0.timeIntervalSince1970 < at }) { r.heldByLocks = true }
        }
        return r
    }
}
