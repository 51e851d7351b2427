import Foundation
import Synchronization
import Testing
import LifeboatCore
import LifeboatCrypto
@testable import LifeboatRepository
import LifeboatStorage
@testable import LifeboatSnapshot

let cheapKDF = ScryptParameters(n: 1024, r: 8, p: 1)

func smallRepo(_ b: any Backend = MemoryBackend()) async throws -> Repository {
    var o = InitOptions()
    o.packSize = 1 << 20
    return try await Repository.initialize(backend: b, password: "pw", options: o, kdf: cheapKDF)
}

/// Stores `files` (name → bytes) as one snapshot and returns it; every file's blobs go to their own packs when
/// `packPerFile` (each file is followed by a flush).
@discardableResult
func storeSnapshot(_ repo: Repository, _ files: [(String, [UInt8])], dirs: [String: [(String, [UInt8])]] = [:],
                   packPerFile: Bool = true) async throws -> (ID, Snapshot) {
    func fileNode(_ name: String, _ data: [UInt8]) async throws -> Node {
        var n = Node(name: Array(name.utf8), type: .file)
        n.content = [try await repo.saveBlob(.data, data).id]
        n.size = UInt64(data.count)
        n.mode = 0o644
        if packPerFile { try await repo.flush() }
        return n
    }
    var nodes: [Node] = []
    for (name, data) in files { nodes.append(try await fileNode(name, data)) }
    for (dir, content) in dirs {
        var sub: [Node] = []
        for (name, data) in content { sub.append(try await fileNode(name, data)) }
        var d = Node(name: Array(dir.utf8), type: .dir)
        d.mode = 0o755
        d.subtree = try await repo.saveTree(Tree(nodes: sub)).id
        try await repo.flush()
        nodes.append(d)
    }
    let root = try await repo.saveTree(Tree(nodes: nodes)).id
    try await repo.flush()
    let snap = Snapshot(time: Date(), tree: root, paths: ["/x"], hostname: "h")
    return (try await repo.saveSnapshot(snap), snap)
}

/// Passes every call through, but fails deletes of one object type.
final class FailingDeletes: Backend, Sendable {
    let inner: MemoryBackend
    let failing: ObjectType
    init(_ inner: MemoryBackend, failing: ObjectType) { self.inner = inner; self.failing = failing }
    var location: String { inner.location }
    func list(_ type: ObjectType) async throws -> [ObjectInfo] { try await inner.list(type) }
    func stat(_ handle: Handle) async throws -> ObjectInfo { try await inner.stat(handle) }
    func read(_ handle: Handle, range: Range<Int>?) async throws -> Data { try await inner.read(handle, range: range) }
    func write(_ handle: Handle, data: Data) async throws { try await inner.write(handle, data: data) }
    func delete(_ handle: Handle) async throws {
        if handle.type == failing { throw StorageError(.permanent, "permission denied (test)") }
        try await inner.delete(handle)
    }
}

@Suite struct PrunePlanTests {
    let now = Date(timeIntervalSince1970: 1_000_000)
    func pack(_ n: UInt8, _ blobs: [UInt8], marked: Int64? = nil) -> IndexPack {
        IndexPack(id: ID(bytes: [UInt8](repeating: n, count: 32)), salt: [UInt8](repeating: 0, count: 32), markedAt: marked,
                  blobs: blobs.enumerated().map { i, b in
                      PackedBlob(type: .data, id: ID(bytes: [UInt8](repeating: b, count: 32)), offset: UInt32(36 + 100 * i),
                                 length: 100, rawLength: 200, compressed: true)
                  })
    }
    func blob(_ b: UInt8) -> ID { ID(bytes: [UInt8](repeating: b, count: 32)) }

    struct Case: Sendable, CustomStringConvertible {
        var name: String
        var marked: Int64?          // mark time of pack 1 (relative to now), nil = live
        var used: [UInt8]           // blobs some snapshot uses
        var stored = true           // pack 1 still in storage
        var lockAge: Double? = nil  // a live lock created this many seconds ago
        var grace: Double = 3600
        var expect: (delete: Int, newlyMarked: Int, unmarked: Int, waiting: Int)
        var description: String { name }
    }

    static let cases: [Case] = [
        Case(name: "live and used: kept", marked: nil, used: [1], expect: (0, 0, 0, 0)),
        Case(name: "live and unused: marked", marked: nil, used: [], expect: (0, 1, 0, 0)),
        Case(name: "marked, grace not over: waits", marked: -60, used: [], expect: (0, 0, 0, 1)),
        Case(name: "marked, grace over, no lock: deleted", marked: -7200, used: [], expect: (1, 0, 0, 0)),
        Case(name: "marked, grace over, old lock: waits", marked: -7200, used: [], lockAge: 9000, expect: (0, 0, 0, 1)),
        Case(name: "marked, grace over, young lock but before visibility margin: waits", marked: -7200, used: [], lockAge: 6900, grace: 0, expect: (0, 0, 0, 1)),
        Case(name: "marked, grace 0, lock after visibility: deleted", marked: -7200, used: [], lockAge: 60, grace: 0, expect: (1, 0, 0, 0)),
        Case(name: "marked but needed again: unmarked", marked: -7200, used: [1], expect: (0, 0, 1, 0)),
        Case(name: "marked and gone from storage: dropped", marked: -60, used: [], stored: false, expect: (1, 0, 0, 0)),
    ]

    @Test(arguments: cases)
    func decision(_ c: Case) {
        let p1 = pack(1, [1, 2], marked: c.marked.map { Int64(now.timeIntervalSince1970) + $0 })
        let p2 = pack(2, [3])  // another live pack, used
        var stored: Set<ID> = [p2.id]
        if c.stored { stored.insert(p1.id) }
        let input = PruneInputs(packs: [p1, p2], indexed: [p1.id, p2.id], stored: stored,
                                used: Set(c.used.map(blob) + [blob(3)]),
                                lockTimes: c.lockAge.map { [now.addingTimeInterval(-$0)] } ?? [],
                                now: now, grace: c.grace, maxUnused: 1)
        let plan = PrunePlan.make(input)
        #expect(plan.delete.count == c.expect.delete)
        #expect(plan.newlyMarked == c.expect.newlyMarked)
        #expect(plan.unmarked == c.expect.unmarked)
        #expect(plan.waiting == c.expect.waiting)
        // Whatever is not deleted stays in the new index.
        #expect(plan.keep.count + plan.delete.count == 2)
    }

    @Test func repackChoosesTheMostWastefulUntilTheLimit() {
        let a = pack(1, [1, 2, 3, 4])   // 1 of 4 used: 75% unused
        let b = pack(2, [5, 6])         // 1 of 2 used: 50% unused
        let c = pack(3, [7])            // all used
        let used = Set([blob(1), blob(5), blob(7)])
        func plan(_ maxUnused: Double) -> PrunePlan {
            PrunePlan.make(PruneInputs(packs: [a, b, c], indexed: [a.id, b.id, c.id], stored: [a.id, b.id, c.id], used: used,
                                       lockTimes: [], now: now, grace: 0, maxUnused: maxUnused))
        }
        #expect(plan(1).repack.isEmpty)
        #expect(plan(0).repack.map { plan(0).keep[$0].id } == [a.id, b.id])
        #expect(plan(0.3).repack.map { plan(0.3).keep[$0].id } == [a.id])
    }

    @Test func orphansMarkedThisRunAreKept() {
        var orphan = pack(9, [9])
        orphan.markedAt = Int64(now.timeIntervalSince1970)
        let plan = PrunePlan.make(PruneInputs(packs: [orphan], indexed: [], stored: [orphan.id], used: [], lockTimes: [],
                                              now: now, grace: 0, maxUnused: 0))
        #expect(plan.delete.isEmpty && plan.keep.count == 1)
    }
}

@Suite struct PruneExecutionTests {
    /// If a superseded index file cannot be removed, it would still name the packs the sweep deletes: prune
    /// must stop before deleting any pack.
    @Test func stopsBeforeDeletingPacksWhenAnIndexStepFails() async throws {
        let mem = MemoryBackend()
        let backend = FailingDeletes(mem, failing: .index)
        let repo = try await smallRepo(backend)
        _ = try await repo.saveBlob(.data, Seal.randomBytes(5000))
        try await repo.flush()
        var o = PruneOptions()
        o.grace = 0
        await #expect(throws: LifeboatError.self) { try await Pruner(repository: repo, options: o).run() }
        #expect(try await mem.list(.data).count == 1, "no pack deleted")
    }
}

@Suite struct DamageContainmentTests {
    @Test func damagedSnapshotAndIndexFilesAreSkippedAndNamed() async throws {
        let b = MemoryBackend()
        let repo = try await smallRepo(b)
        try await storeSnapshot(repo, [("a", Seal.randomBytes(3000))])
        let (goodID, _) = try await storeSnapshot(repo, [("b", Seal.randomBytes(3000))])
        let snaps = try await b.list(.snapshots).map(\.name)
        let bad = snaps.first { $0 != goodID.hex }!
        b.tamper(Handle(.snapshots, bad)) { $0.removeLast(10) }
        let idx = try await b.list(.index).map(\.name)
        b.tamper(Handle(.index, idx[0])) { $0.removeLast(5) }

        let reader = try await Repository.open(backend: b, password: "pw")
        let seen = Mutex<[String]>([])
        reader.onDamage { d in seen.withLock { $0.append(d.description) } }
        try await reader.loadIndex()
        let listed = try await reader.listSnapshots()
        #expect(listed.map(\.id) == [goodID])
        #expect(reader.damagedObjects.count == 2)
        #expect(seen.withLock { $0 }.contains { $0.contains("repair index") })
        // Strict callers (prune) refuse.
        await #expect(throws: LifeboatError.self) { try await reader.listSnapshots(strict: true) }
        await #expect(throws: LifeboatError.self) { try await reader.loadIndex(strict: true) }
        var o = PruneOptions()
        o.grace = 0
        await #expect(throws: LifeboatError.self) { try await Pruner(repository: reader, options: o).run() }
    }

    @Test func repairIndexRebuildsFromPackHeaders() async throws {
        let b = MemoryBackend()
        let repo = try await smallRepo(b)
        let data = (0..<4).map { _ in Seal.randomBytes(40_000) }
        let (_, snap) = try await storeSnapshot(repo, data.enumerated().map { ("f\($0.offset)", $0.element) })
        // Lose every index file but one, damage that one.
        let files = try await b.list(.index).map(\.name)
        for f in files.dropFirst() { try await b.delete(Handle(.index, f)) }
        b.tamper(Handle(.index, files[0])) { $0[$0.count / 2] ^= 0xFF }

        let broken = try await Repository.open(backend: b, password: "pw")
        try await broken.loadIndex()
        await #expect(throws: (any Error).self) { try await broken.loadTree(snap.tree) }

        let report = try await Repair.index(broken)
        #expect(report.damagedIndexFiles.count == 1)
        #expect(report.packsFromHeaders == (try await b.list(.data).count))
        #expect(report.unreadablePacks.isEmpty)

        let fixed = try await Repository.open(backend: b, password: "pw")
        try await fixed.loadIndex(strict: true)
        let tree = try await fixed.loadTree(snap.tree)
        for (i, n) in tree.nodes.enumerated() { #expect(try await fixed.loadBlob(.data, n.content![0]) == data[i]) }
        #expect(try await b.list(.index).count == report.newIndexFiles.count)
    }

    @Test func repairIndexDropsLostPacksAndSkipsUnreadableOnes() async throws {
        let b = MemoryBackend()
        let repo = try await smallRepo(b)
        try await storeSnapshot(repo, [("a", Seal.randomBytes(3000)), ("b", Seal.randomBytes(3000))])
        let packs = try await b.list(.data).map(\.name).sorted()
        try await b.delete(Handle(.data, packs[0]))
        // A planted "pack": random bytes under a valid name.
        let junk = Data(Seal.randomBytes(500))
        try await b.write(Handle(.data, sha256ID(junk).hex), data: junk)
        let r = try await Repair.index(try await Repository.open(backend: b, password: "pw"))
        #expect(r.missingPacks.map(\.hex) == [packs[0]])
        #expect(r.unreadablePacks.count == 1)
    }

    @Test func repairSnapshotsKeepsWhatIsLeftAndNamesIt() async throws {
        let b = MemoryBackend()
        let repo = try await smallRepo(b)
        let keep = Seal.randomBytes(3000), lose = Seal.randomBytes(3000), inDir = Seal.randomBytes(3000)
        let (origID, snap) = try await storeSnapshot(repo, [("keep", keep), ("lose", lose)], dirs: ["d": [("x", inDir)]])
        // Find and delete the pack holding "lose".
        try await repo.loadIndex()
        let root = try await repo.loadTree(snap.tree)
        let loseBlob = root.node(named: Array("lose".utf8))!.content![0]
        let pack = repo.index.lookup(loseBlob, type: .data)!.pack
        try await b.delete(Handle(.data, pack.hex))
        // And the pack holding the tree of "d".
        let dTree = root.node(named: Array("d".utf8))!.subtree!
        try await b.delete(Handle(.data, repo.index.lookup(dTree, type: .tree)!.pack.hex))

        let dry = try await Repair.snapshots(repo, [(origID, snap)], forget: false, dryRun: true)
        #expect(dry.count == 1 && dry[0].repaired == nil && dry[0].changes.count == 2)
        #expect(try await b.list(.snapshots).count == 1)

        let results = try await Repair.snapshots(repo, [(origID, snap)], forget: true, dryRun: false)
        let newID = try #require(results.first?.repaired)
        let fresh = try await Repository.open(backend: b, password: "pw")
        try await fresh.loadIndex()
        let s = try await fresh.loadSnapshot(newID)
        #expect(s.tags.contains("repaired"))
        #expect(try await b.list(.snapshots).map(\.name) == [newID.hex], "the original was forgotten")
        let t = try await fresh.loadTree(s.tree)
        #expect(t.nodes.map(\.nameString) == ["d.repaired", "keep", "lose.repaired"])
        #expect(t.node(named: Array("lose.repaired".utf8))!.size == 0)
        #expect(try await fresh.loadTree(t.node(named: Array("d.repaired".utf8))!.subtree!).nodes.isEmpty)
        #expect(try await fresh.loadBlob(.data, t.node(named: Array("keep".utf8))!.content![0]) == keep)
        // A second run finds nothing to repair.
        #expect(try await Repair.snapshots(fresh, [(newID, s)], forget: false, dryRun: true).isEmpty)
    }

    /// A pack the index names but storage lost: the next backup stores the data again instead of referencing it.
    @Test func backupAfterALostPackStoresTheDataAgain() async throws {
        let b = MemoryBackend()
        let repo = try await smallRepo(b)
        let src = tempDir("lostpack")
        defer { try? FileManager.default.removeItem(atPath: src) }
        let content = Seal.randomBytes(50_000)
        try Data(content).write(to: URL(fileURLWithPath: src + "/f"))
        var o = BackupOptions(); o.paths = [src]
        let first = try await Archiver(repository: repo, options: o).run()
        for p in try await b.list(.data) { try await b.delete(Handle(.data, p.name)) }

        let again = try await Repository.open(backend: b, password: "pw")
        try await again.loadIndex()
        let missing = try await again.forgetMissingPacks()
        #expect(missing.count >= 1)
        o.parent = first.snapshotID
        let second = try await Archiver(repository: again, options: o).run()
        let check = try await Checker(repository: try await Repository.open(backend: b, password: "pw"),
                                      options: { var c = CheckOptions(); c.readData = .all; return c }()).run()
        #expect(check.damagedSnapshots[second.snapshotID!] == nil, "the new snapshot is complete: \(check.issues)")
        #expect(check.damagedSnapshots[first.snapshotID!] != nil, "the old one is named as damaged")
    }

    /// A file whose size changes while it is read is stored as read, with a size that matches, and reported.
    /// Files in /proc report a size of 0 but read as text: a deterministic "file that grew".
    @Test func fileThatChangesDuringTheReadIsStoredAsRead() async throws {
        let repo = try await smallRepo()
        var o = BackupOptions(); o.paths = ["/proc/cpuinfo"]
        let r = try await Archiver(repository: repo, options: o).run()
        #expect(r.errors.contains { $0.message.contains("changed while being read") }, "\(r.errors)")
        let root = try await repo.loadTree(r.snapshot.tree)
        var n = root.nodes[0]
        while n.type == .dir { n = try await repo.loadTree(n.subtree!).nodes[0] }
        let stored = try await (n.content ?? []).asyncReduce(0) { $0 + (try await repo.loadBlob(.data, $1)).count }
        #expect(n.size > 0 && n.size == UInt64(stored))
    }
}

extension Sequence {
    func asyncReduce<R>(_ initial: R, _ f: (R, Element) async throws -> R) async rethrows -> R {
        var r = initial
        for e in self { r = try await f(r, e) }
        return r
    }
}

@Suite struct LockLifetimeTests {
    @Test func aLockRefreshedFarInTheFutureIsStale() {
        let now = Date(timeIntervalSince1970: 1_000_000)
        func lock(_ refreshed: Date) -> LockInfo {
            LockInfo(kind: .exclusive, created: Timestamp.format(refreshed), refreshed: Timestamp.format(refreshed),
                     hostname: "elsewhere", username: "u", pid: 1, operation: "backup")
        }
        #expect(!lock(now.addingTimeInterval(-10)).isStale(now: now, staleAfter: 300, localHostname: "here"))
        #expect(lock(now.addingTimeInterval(-301)).isStale(now: now, staleAfter: 300, localHostname: "here"))
        // Clock skew between hosts is tolerated; "the year 9999" is not.
        #expect(!lock(now.addingTimeInterval(600)).isStale(now: now, staleAfter: 300, localHostname: "here"))
        #expect(lock(now.addingTimeInterval(3601)).isStale(now: now, staleAfter: 300, localHostname: "here"))
        #expect(lock(Date(timeIntervalSince1970: 253_402_300_000)).isStale(now: now, staleAfter: 300, localHostname: "here"))
    }

    @Test func leaseIsUsableForHalfTheStaleTime() {
        let t0 = Date(timeIntervalSince1970: 1000)
        var l = LockLease(refreshedAt: t0, refreshInterval: 60, staleAfter: 300)
        #expect(l.isUsable(at: t0.addingTimeInterval(149)))
        #expect(!l.isUsable(at: t0.addingTimeInterval(150)))
        #expect(l.nextAttempt(after: t0) == t0.addingTimeInterval(60))
        l.refreshFailed("timeout")
        #expect(l.nextAttempt(after: t0.addingTimeInterval(60)) == t0.addingTimeInterval(75), "retries soon after a failure")
        l.refreshed(at: t0.addingTimeInterval(80))
        #expect(l.lastFailure == nil && l.isUsable(at: t0.addingTimeInterval(200)))
    }

    @Test func aLostLockFencesWritesAndDeletes() async throws {
        let now = Mutex(Date(timeIntervalSince1970: 1000))
        let fence = LockFence(clock: { now.withLock { $0 } })
        let key = ObjectIdentifier(fence)
        fence.update(key, LockLease(refreshedAt: Date(timeIntervalSince1970: 1000), refreshInterval: 60, staleAfter: 300))
        #expect(throws: Never.self) { try fence.check() }
        now.withLock { $0 = Date(timeIntervalSince1970: 1151) }
        #expect(throws: LifeboatError.self) { try fence.check() }
        fence.remove(key)
        #expect(throws: Never.self) { try fence.check() }
    }

    /// Once a lock could have looked stale to others, a later successful refresh must not reopen the fence: a
    /// prune may have swept in between.
    @Test func aLockThatWentStaleStaysLost() async throws {
        let t0 = Date(timeIntervalSince1970: 1000)
        let lease = LockLease(refreshedAt: t0, refreshInterval: 60, staleAfter: 300)
        #expect(!lease.wasStale(at: t0.addingTimeInterval(299)) && lease.wasStale(at: t0.addingTimeInterval(300)))
        #expect(LockLease(refreshedAt: t0, refreshInterval: 60, staleAfter: 100).refreshInterval == 25, "refresh before the lease ends")
        let now = Mutex(t0)
        let fence = LockFence(clock: { now.withLock { $0 } })
        let key = ObjectIdentifier(fence)
        fence.update(key, lease, lost: "went stale")
        var fresh = lease
        fresh.refreshed(at: t0)
        fence.update(key, fresh)
        #expect(throws: LifeboatError.self) { try fence.check() }

        // Through the lock itself: a lease older than the stale time is never refreshed again.
        let mem = MemoryBackend()
        let repo = try await smallRepo(mem)
        let lock = try await repo.lock(.shared, operation: "backup")
        lock.current.withLock { $0.lease = LockLease(refreshedAt: Date().addingTimeInterval(-10_000), refreshInterval: 60, staleAfter: 300) }
        try await lock.refresh()
        await #expect(throws: LifeboatError.self) { try await repo.saveSnapshot(Snapshot(time: Date(), tree: .zero, paths: [], hostname: "h")) }
        await lock.release()
    }

    @Test func refreshFailuresStopTheOperationAndReleaseWaits() async throws {
        let mem = MemoryBackend()
        let repo = try await smallRepo(mem)
        let lock = try await repo.lock(.shared, operation: "backup")
        // Simulate a lock that could not be refreshed for too long (a suspended process, a dead link).
        let old = LockLease(refreshedAt: Date().addingTimeInterval(-10_000), refreshInterval: 60, staleAfter: 300)
        repo.fence.update(ObjectIdentifier(lock), old)
        await #expect(throws: LifeboatError.self) { try await repo.saveSnapshot(Snapshot(time: Date(), tree: .zero, paths: [], hostname: "h")) }
        await #expect(throws: LifeboatError.self) { try await repo.delete(Handle(.snapshots, ID.zero.hex)) }
        await lock.release()
        #expect(try await mem.list(.locks).isEmpty)
        _ = try await repo.saveSnapshot(Snapshot(time: Date(), tree: .zero, paths: [], hostname: "h"))
    }
}
