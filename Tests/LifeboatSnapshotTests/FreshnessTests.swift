import Foundation
import Testing
import LifeboatCore
@testable import LifeboatRepository
@testable import LifeboatSnapshot

/// `check --max-age` and `snapshots --max-age`: the newest snapshot per host and paths, judged on an injected clock.
@Suite struct FreshnessTests {
    let now = Date(timeIntervalSince1970: 2_000_000_000)
    func snap(_ n: UInt8, host: String, paths: [String], ago: Double) -> (id: ID, snapshot: Snapshot) {
        (ID(bytes: [UInt8](repeating: n, count: 32)),
         Snapshot(time: now.addingTimeInterval(-ago), tree: ID(bytes: [UInt8](repeating: 0, count: 32)), paths: paths, hostname: host))
    }

    @Test func newestOfEachGroupDecides() {
        let snaps = [snap(1, host: "a", paths: ["/srv"], ago: 90_000), snap(2, host: "a", paths: ["/srv"], ago: 600),
                     snap(3, host: "b", paths: ["/srv"], ago: 90_000), snap(4, host: "a", paths: ["/etc"], ago: 100)]
        let ages = Freshness.groups(snaps, maxAge: 3600, now: now)
        #expect(ages.map(\.host) == ["a", "a", "b"])
        #expect(ages.map(\.paths) == [["/etc"], ["/srv"], ["/srv"]])
        #expect(ages.map(\.stale) == [false, false, true])
        #expect(ages[1].latestID == snaps[1].id)
        #expect(abs(ages[2].ageSeconds - 90_000) < 0.001)
    }

    @Test func orderOfTheListingDoesNotMatter() {
        let old = snap(1, host: "a", paths: ["/srv"], ago: 90_000), new = snap(2, host: "a", paths: ["/srv"], ago: 10)
        #expect(Freshness.groups([new, old], maxAge: 60, now: now) == Freshness.groups([old, new], maxAge: 60, now: now))
        #expect(Freshness.groups([new, old], maxAge: 60, now: now).first?.latestID == new.id)
    }

    @Test func theLimitItselfIsFresh_andTheFutureIsNotStale() {
        #expect(Freshness.groups([snap(1, host: "a", paths: ["/"], ago: 3600)], maxAge: 3600, now: now)[0].stale == false)
        #expect(Freshness.groups([snap(1, host: "a", paths: ["/"], ago: 3601)], maxAge: 3600, now: now)[0].stale == true)
        // A snapshot from a host whose clock runs ahead: negative age, not stale.
        let ahead = Freshness.groups([snap(1, host: "a", paths: ["/"], ago: -300)], maxAge: 60, now: now)[0]
        #expect(ahead.ageSeconds < 0 && !ahead.stale)
    }

    @Test func datedFarAheadIsStale_nearAheadIsClockSkew() {
        // A host whose clock runs 5 minutes ahead is fine; a snapshot dated a day ahead would otherwise pass every
        // --max-age check until that day.
        let near = Freshness.groups([snap(1, host: "a", paths: ["/"], ago: -Freshness.futureTolerance)], maxAge: 60, now: now)[0]
        #expect(!near.future && !near.stale)
        let far = Freshness.groups([snap(1, host: "a", paths: ["/"], ago: -86_400)], maxAge: 1e9, now: now)[0]
        #expect(far.future && far.stale)
    }

    @Test func noSnapshotsNoGroups() {
        #expect(Freshness.groups([], maxAge: 60, now: now).isEmpty)
    }

    @Test func pathsAreAGroupAsAList() {
        // [/a, /b] and [/a] are different groups; the same list is one group.
        let ages = Freshness.groups([snap(1, host: "h", paths: ["/a", "/b"], ago: 10), snap(2, host: "h", paths: ["/a"], ago: 10),
                                     snap(3, host: "h", paths: ["/a", "/b"], ago: 5)], maxAge: 60, now: now)
        #expect(ages.count == 2)
    }
}

/// What `prune` says it left marked, and when a later prune may free it.
@Suite struct PendingSpaceTests {
    let now = Date(timeIntervalSince1970: 1_000_000)
    func pack(_ n: UInt8, marked: Int64?, length: UInt32 = 100) -> IndexPack {
        IndexPack(id: ID(bytes: [UInt8](repeating: n, count: 32)), salt: [UInt8](repeating: 0, count: 32), markedAt: marked,
                  blobs: [PackedBlob(type: .data, id: ID(bytes: [UInt8](repeating: n, count: 32)), offset: 36, length: length,
                                     rawLength: length, compressed: false)])
    }

    @Test func sumsMarkedPacksAndTheirTimes() {
        let t = Int64(now.timeIntervalSince1970)
        let index = [pack(1, marked: nil), pack(2, marked: t), pack(3, marked: t - 1800, length: 300)]
        // This run's mark became visible now; an earlier run's is assumed visible 10 minutes after its mark.
        let p = PendingSpace.of(index, visible: [index[1].id: now], grace: 3600, lockTimes: [])
        #expect(p.packs == 2)
        #expect(p.bytes == UInt64(index[1].packSize + index[2].packSize))
        #expect(p.freeFrom == Date(timeIntervalSince1970: Double(t - 1800 + 3600)))
        #expect(p.freeBy == Date(timeIntervalSince1970: Double(t + 3600)))
        #expect(!p.heldByLocks)
    }

    @Test func graceZeroWaitsForVisibility_andOldLocksHold() {
        let t = Int64(now.timeIntervalSince1970)
        let index = [pack(1, marked: t - 60)]
        let p = PendingSpace.of(index, visible: [:], grace: 0, lockTimes: [now.addingTimeInterval(-3600)])
        #expect(p.freeBy == Date(timeIntervalSince1970: Double(t - 60) + PrunePlan.markVisibilityMargin))
        #expect(p.heldByLocks)
    }

    @Test func nothingMarkedNothingPending() {
        let p = PendingSpace.of([pack(1, marked: nil)], visible: [:], grace: 3600, lockTimes: [])
        #expect(p == PendingSpace())
    }

    @Test func theSweepAgreesWithThePendingTime() {
        // A pack is deleted by a plan made at its sweep time, and not one second before.
        let m = Int64(now.timeIntervalSince1970)
        let p = pack(1, marked: m)
        let at = PendingSpace.of([p], visible: [p.id: now], grace: 3600, lockTimes: []).freeBy!
        func plan(_ when: Date) -> PrunePlan {
            PrunePlan.make(PruneInputs(packs: [p], indexed: [p.id], stored: [p.id], used: [], lockTimes: [],
                                       visible: [p.id: now], now: when, grace: 3600, maxUnused: 1))
        }
        #expect(plan(at.addingTimeInterval(-1)).delete.isEmpty)
        #expect(plan(at).delete.map(\.id) == [p.id])
    }
}
