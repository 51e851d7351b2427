import Foundation
import Synchronization
import Testing
import LifeboatCore
import LifeboatCrypto
import LifeboatChunker
import LifeboatRepository
import LifeboatStorage
@testable import LifeboatSnapshot

func tempDir(_ tag: String) -> String {
    let d = FileManager.default.temporaryDirectory.appendingPathComponent("lb-\(tag)-\(UUID().uuidString)").path
    try! FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}

@Suite struct RestoreSafetyTests {
    /// A crafted snapshot with hostile names never makes restore write outside its target.
    @Test func hostileNamesStayInsideTarget() async throws {
        let repo = try await Repository.initialize(backend: MemoryBackend(), password: "pw", kdf: ScryptParameters(n: 1024, r: 8, p: 1))
        let base = tempDir("hostile")
        defer { try? FileManager.default.removeItem(atPath: base) }
        let target = base + "/target"
        let payload = try await repo.saveBlob(.data, Array("pwned".utf8)).id
        func file(_ name: [UInt8]) -> Node {
            var n = Node(name: name, type: .file); n.content = [payload]; n.size = 5; n.mode = 0o644; return n
        }
        var link = Node(name: Array("escape".utf8), type: .symlink)
        link.linkTarget = Array(base.utf8)
        // A symlink planted in the target before the restore, where the snapshot has a directory.
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: target + "/planted", withDestinationPath: base)
        var viaLink = Node(name: Array("planted".utf8), type: .dir)
        viaLink.mode = 0o755
        viaLink.subtree = try await repo.saveTree(Tree(nodes: [file(Array("through-link".utf8))])).id
        let hostile: [Node] = [file(Array("..".utf8)), file(Array("../outside".utf8)), file(Array("/etc-like".utf8)),
                               file(Array("a/b".utf8)), file([0x61, 0x00, 0x62]), file([]), file(Array(".".utf8)),
                               file(Array("fine".utf8)), link, viaLink]
        var root = Node(name: [], type: .dir)
        root.subtree = try await repo.saveTree(Tree(nodes: hostile)).id
        try await repo.flush()
        let restorer = Restorer(repository: repo, options: RestoreOptions())
        try await restorer.restore(node: root, snapshotPath: "", target: target)
        let outside = try FileManager.default.contentsOfDirectory(atPath: base)
        #expect(outside == ["target"], "nothing created beside the target: \(outside)")
        #expect(FileManager.default.fileExists(atPath: target + "/fine"))
        #expect(restorer.errors.count >= 6, "each hostile name is reported: \(restorer.errors.map { "\($0.path): \($0.message)" })")
        // The planted symlink was replaced by a real directory instead of being followed.
        var isDir: ObjCBool = false
        #expect(FileManager.default.fileExists(atPath: target + "/planted/through-link", isDirectory: &isDir))
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: target + "/planted")) == nil)
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: target + "/escape")) == base, "a symlink is restored as one")
    }
}

@Suite struct ArchiverTests {
    @Test func sameDirectorySameTreeID() async throws {
        let repo = try await Repository.initialize(backend: MemoryBackend(), password: "pw", kdf: ScryptParameters(n: 1024, r: 8, p: 1))
        let src = tempDir("arch")
        defer { try? FileManager.default.removeItem(atPath: src) }
        try Data("x".utf8).write(to: URL(fileURLWithPath: src + "/a"))
        var o = BackupOptions(); o.paths = [src]
        let r1 = try await Archiver(repository: repo, options: o).run()
        let r2 = try await Archiver(repository: repo, options: o).run()
        // The source directory's subtree is identical (the parents of a temp dir change as other tests run).
        let n1 = try await Restorer.resolve(repo: repo, tree: r1.snapshot.tree, subpath: src)
        let n2 = try await Restorer.resolve(repo: repo, tree: r2.snapshot.tree, subpath: src)
        #expect(n1.subtree != nil && n1.subtree == n2.subtree)
        #expect(r1.snapshotID != nil && r1.snapshotID != r2.snapshotID)
    }

    @Test func forgetPlanGroupsByHostAndPaths() {
        func snap(_ host: String, _ t: String) -> (id: ID, snapshot: Snapshot) {
            (ID(bytes: Seal.randomBytes(32)), Snapshot(time: Timestamp.parse(t)!, tree: .zero, paths: ["/p"], hostname: host))
        }
        let snaps = [snap("a", "2024-01-01T00:00:00Z"), snap("a", "2024-01-02T00:00:00Z"), snap("b", "2024-01-01T00:00:00Z")]
        let groups = Forget.plan(snaps, policy: RetentionPolicy(last: 1), groupBy: GroupBy(), timeZone: TimeZone(identifier: "UTC")!)
        #expect(groups.count == 2)
        #expect(groups[0].keep.count == 1 && groups[0].remove.count == 1)
        #expect(groups[0].keep[0].snapshot.time.hasPrefix("2024-01-02"))
        #expect(groups[1].keep.count == 1 && groups[1].remove.isEmpty)
    }
}

@Suite struct CopierTests {
    let kdf = ScryptParameters(n: 1024, r: 8, p: 1)

    func sourceWithSnapshot() async throws -> (Repository, String) {
        let src = try await Repository.initialize(backend: MemoryBackend(), password: "a", kdf: kdf)
        let dir = tempDir("copy")
        var bytes = [UInt8](repeating: 0, count: 3_000_000)
        for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: (i &* 2_654_435_761) >> 13) }
        try Data(bytes).write(to: URL(fileURLWithPath: dir + "/big"))
        try Data("small".utf8).write(to: URL(fileURLWithPath: dir + "/small"))
        var o = BackupOptions(); o.paths = [dir]; o.scanTotals = false
        _ = try await Archiver(repository: src, options: o).run()
        return (src, dir)
    }

    func contentOf(_ repo: Repository, _ dir: String) async throws -> [UInt8] {
        let snap = try await repo.listSnapshots().last!.snapshot
        let node = try await Restorer.resolve(repo: repo, tree: snap.tree, subpath: dir + "/big")
        var out: [UInt8] = []
        for b in node.content ?? [] { out += try await repo.loadBlob(.data, b) }
        return out
    }

    @Test func sameIDsCopySkipsWhatIsPresentAndKeepsTrees() async throws {
        let (src, dir) = try await sourceWithSnapshot()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await src.loadIndex()
        var o = InitOptions()
        o.chunker = src.config.chunker
        o.chunkerSeed = Array(Data(base64Encoded: src.config.chunkerSeed)!)
        o.blobIDKey = src.master.mac
        let dst = try await Repository.initialize(backend: MemoryBackend(), password: "b", options: o, kdf: kdf)
        try await dst.loadIndex()
        let snaps = try await src.listSnapshots()
        let r1 = try await Copier(source: src, destination: dst).copy(snaps)
        #expect(r1.copied.count == 1 && !r1.reencoded && r1.packsVerified > 0)
        let copied = try await dst.listSnapshots()[0].snapshot
        #expect(copied.tree == snaps[0].snapshot.tree, "trees keep their IDs")
        #expect(copied.original == snaps[0].id)
        #expect(try await contentOf(dst, dir) == contentOf(src, dir))
        // A second copy finds the snapshot by its original and sends nothing.
        let r2 = try await Copier(source: src, destination: dst).copy(snaps)
        #expect(r2.copied.isEmpty && r2.alreadyPresent == 1 && r2.blobsSent == 0)
    }

    @Test func differentKeysAndChunkerReencodeAndStopCleanly() async throws {
        let (src, dir) = try await sourceWithSnapshot()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await src.loadIndex()
        var o = InitOptions()
        o.chunker = ChunkerParameters(min: 64 * 1024, avg: 128 * 1024, max: 512 * 1024)
        let dst = try await Repository.initialize(backend: MemoryBackend(), password: "b", options: o, kdf: kdf)
        try await dst.loadIndex()
        let snaps = try await src.listSnapshots()
        // Asked to stop at once: nothing is written as a snapshot, what was copied stays indexed.
        let stopped = try await Copier(source: src, destination: dst).copy(snaps, shouldStop: { true })
        #expect(stopped.stopped && stopped.copied.isEmpty)
        #expect(try await dst.listSnapshots().isEmpty)
        let r = try await Copier(source: src, destination: dst).copy(snaps)
        #expect(r.copied.count == 1 && r.reencoded && r.rechunked)
        #expect(try await contentOf(dst, dir) == contentOf(src, dir))
        let report = try await Checker(repository: dst, options: CheckOptions()).run()
        #expect(report.errors == 0 && report.duplicateBlobs == 0)
    }
}

/// A backend that runs a hook once, right after the `n`th listing of snapshots (to stage races).
final class SnapshotListingHook: Backend, Sendable {
    let inner: MemoryBackend
    let state = Mutex<(listings: Int, fireAt: Int, hook: (@Sendable () async throws -> Void)?)>((0, 0, nil))
    init(_ inner: MemoryBackend) { self.inner = inner }

    func arm(afterListing n: Int, _ hook: @escaping @Sendable () async throws -> Void) {
        state.withLock { $0 = (0, n, hook) }
    }

    var location: String { inner.location }
    func list(_ type: ObjectType) async throws -> [ObjectInfo] {
        let r = try await inner.list(type)
        if type == .snapshots {
            let hook = state.withLock { s -> (@Sendable () async throws -> Void)? in
                s.listings += 1
                guard s.listings == s.fireAt, let h = s.hook else { return nil }
                s.hook = nil
                return h
            }
            try await hook?()
        }
        return r
    }
    func stat(_ handle: Handle) async throws -> ObjectInfo { try await inner.stat(handle) }
    func read(_ handle: Handle, range: Range<Int>?) async throws -> Data { try await inner.read(handle, range: range) }
    func write(_ handle: Handle, data: Data) async throws { try await inner.write(handle, data: data) }
    func delete(_ handle: Handle) async throws { try await inner.delete(handle) }
}

@Suite struct PrunerTests {
    /// A backup that finishes while prune is between listing snapshots and deciding what to delete must not lose
    /// the pack its new snapshot needs (prune lists locks before snapshots, so the backup is seen one way or
    /// the other).
    @Test func backupFinishingDuringPruneKeepsItsData() async throws {
        let backend = SnapshotListingHook(MemoryBackend())
        let kdf = ScryptParameters(n: 1024, r: 8, p: 1)
        var init_ = InitOptions()
        init_.packSize = 1 << 20
        let pruneRepo = try await Repository.initialize(backend: backend, password: "pw", options: init_, kdf: kdf)
        // A pack no snapshot uses: prune's first pass marks it, so a second pass follows (grace 0).
        _ = try await pruneRepo.saveBlob(.data, Seal.randomBytes(1_100_000))
        try await pruneRepo.flush()
        // The backup: holds its lock, uploads a full pack (not indexed yet: an orphan to prune).
        let backup = try await Repository.open(backend: backend, password: "pw")
        let lock = try await backup.lock(.shared, operation: "backup")
        let data = Seal.randomBytes(1_200_000)
        let blob = try await backup.saveBlob(.data, data).id
        for _ in 0..<200 where try await backend.list(.data).count < 2 { try await Task.sleep(nanoseconds: 10_000_000) }
        #expect(try await backend.list(.data).count == 2)
        // Prune's first pass marks the orphan; in its second pass (grace 0), right after it lists snapshots, the
        // backup completes: tree, index, snapshot, lock released.
        backend.arm(afterListing: 2) {
            var file = Node(name: Array("f".utf8), type: .file)
            file.content = [blob]
            file.size = UInt64(data.count)
            let tree = try await backup.saveTree(Tree(nodes: [file])).id
            try await backup.flush()
            _ = try await backup.saveSnapshot(Snapshot(time: Date(), tree: tree, paths: ["/x"], hostname: "h"))
            await lock.release()
        }
        var o = PruneOptions()
        o.grace = 0
        o.maxUnused = 0
        let report = try await Pruner(repository: pruneRepo, options: o).run()
        #expect(report.passes == 2 && report.packsDeleted == 0)
        // Everything the snapshot needs is still there.
        let reader = try await Repository.open(backend: backend, password: "pw")
        try await reader.loadIndex()
        let snaps = try await reader.listSnapshots()
        try #require(snaps.count == 1)
        let tree = try await reader.loadTree(snaps[0].snapshot.tree)
        let restored = try await reader.loadBlob(.data, tree.nodes[0].content![0])
        #expect(restored == data)
        // A later prune sees the snapshot and keeps (unmarks) what it uses; only the pack nobody uses goes.
        let later = try await Pruner(repository: pruneRepo, options: o).run()
        #expect(later.packsDeleted == 1 && later.packsUnmarked >= 1)
        try await reader.loadIndex()
        #expect(try await reader.loadBlob(.data, blob) == data)
    }

    /// A mark from an earlier prune became visible only when that prune wrote its index, some time after the mark's
    /// time: a backup whose lock is younger than the mark but that may have read the index before it holds off
    /// the sweep.
    @Test func earlierMarksWaitForBackupsThatMayNotHaveSeenThem() async throws {
        let repo = try await Repository.initialize(backend: MemoryBackend(), password: "pw", kdf: ScryptParameters(n: 1024, r: 8, p: 1))
        _ = try await repo.saveBlob(.data, Seal.randomBytes(1000))
        try await repo.flush()
        var mark = PruneOptions()
        mark.grace = 3600
        // The mark is dated 100 s ago, as if writing the index had taken that long.
        let first = try await Pruner(repository: repo, options: mark, now: { Date().addingTimeInterval(-100) }).run()
        #expect(first.packsMarked == 1 && first.packsDeleted == 0)
        let lock = try await repo.lock(.shared, operation: "backup")
        var sweep = PruneOptions()
        sweep.grace = 0
        let waiting = try await Pruner(repository: repo, options: sweep).run()
        #expect(waiting.packsDeleted == 0 && waiting.packsWaiting == 1)
        await lock.release()
        let done = try await Pruner(repository: repo, options: sweep).run()
        #expect(done.packsDeleted == 1)
    }
}

@Suite struct RestorerTests {
    func location(pack: UInt8, offset: UInt32, raw: UInt32) -> BlobLocation {
        BlobLocation(pack: ID(bytes: [UInt8](repeating: pack, count: 32)), salt: [UInt8](repeating: 0, count: 32),
                     blob: PackedBlob(type: .data, id: ID(bytes: Seal.randomBytes(32)), offset: offset, length: raw + 16,
                                      rawLength: raw, compressed: false))
    }

    /// A blob the index does not know has no length: the blobs before it are placed from the start and the
    /// ones after the last unknown blob from the end, so no byte lands at a wrong offset.
    @Test func placementsAroundBlobsTheIndexLacks() async throws {
        let repo = try await smallRepo()
        var ids: [ID] = []
        for i in 0..<5 { ids.append(try await repo.saveBlob(.data, [UInt8](repeating: UInt8(i), count: 1000 * (i + 1))).id) }
        try await repo.flush()
        let unknown = ID(bytes: Seal.randomBytes(32))
        var n = Node(name: Array("f".utf8), type: .file)
        // 1000 + 2000 + [unknown: 7777] + 4000 + 5000
        n.content = [ids[0], ids[1], unknown, ids[3], ids[4]]
        n.size = 1000 + 2000 + 7777 + 4000 + 5000
        let (placed, problems) = Restorer.placements(of: n, index: repo.index)
        let expected: [UInt64] = [0, 1000, 10_777, 14_777]
        #expect(placed.map(\.offset) == expected)
        #expect(placed.map(\.id) == [ids[0], ids[1], ids[3], ids[4]])
        #expect(problems.count == 1 && problems[0].contains("not in the index"))
        // Two unknown blobs with a known one between: that one cannot be placed.
        n.content = [ids[0], unknown, ids[2], unknown, ids[4]]
        let (p2, _) = Restorer.placements(of: n, index: repo.index)
        #expect(p2.map(\.id) == [ids[0], ids[4]])
        #expect(p2.last?.offset == n.size - 5000)
        // A size smaller than the known tail: nothing from the end is placed.
        n.content = [ids[0], unknown, ids[4]]
        n.size = 10
        let (p3, _) = Restorer.placements(of: n, index: repo.index)
        #expect(p3.map(\.id) == [ids[0]])
    }

    @Test func runsMergeNeighboursPerPackAndStayBounded() {
        func job(_ locs: [BlobLocation]) -> Restorer.FileJob {
            Restorer.FileJob(rel: [0x61], path: [0x61], node: Node(name: [0x61], type: .file),
                             placements: locs.map { ($0.blob.id, 0, $0) }, damaged: false)
        }
        let a1 = location(pack: 1, offset: 36, raw: 1000)
        let a2 = location(pack: 1, offset: 36 + 1016, raw: 1000)            // adjacent
        let a3 = location(pack: 1, offset: 36 + 2032 + 200_000, raw: 1000)  // a small gap: same read
        let a4 = location(pack: 1, offset: 36 + 2032 + 200_000 + 1016 + UInt32(BlobRuns.maxGap) + 1, raw: 1000)  // too far
        let b1 = location(pack: 2, offset: 36, raw: 50)
        let runs = Restorer.runs([job([a1, b1, a2]), job([a3, a4, a1])])
        #expect(runs.map(\.blobs.count) == [3, 1, 1])
        #expect(runs.map(\.pack) == [a1.pack, a1.pack, b1.pack])
        #expect(runs[0].blobs.first { $0.location == a1 }!.targets.count == 2, "a blob two files need is read once")
        // Reads never exceed maxRead.
        var big: [BlobLocation] = []
        var off: UInt32 = 36
        for _ in 0..<40 { big.append(location(pack: 3, offset: off, raw: 1 << 20)); off += (1 << 20) + 16 }
        let split = Restorer.runs([job(big)])
        #expect(split.count >= 3 && split.allSatisfy { $0.end - $0.start <= BlobRuns.maxRead })
        #expect(split.reduce(0) { $0 + $1.blobs.count } == 40)
    }

    /// A restore reads packs in few ranged requests, writes every byte where it belongs (also around a blob the
    /// index lacks), and names the damaged file.
    @Test func restoreReadsRunsAndKeepsOffsetsAroundDamage() async throws {
        let repo = try await smallRepo()
        var files: [(String, [UInt8])] = []
        for i in 0..<30 { files.append(("f\(i)", Seal.randomBytes(500 + i * 97))) }
        let chunks = (0..<4).map { _ in Seal.randomBytes(3000) }
        var nodes: [Node] = []
        for (name, data) in files {
            var n = Node(name: Array(name.utf8), type: .file)
            n.content = [try await repo.saveBlob(.data, data).id]; n.size = UInt64(data.count); n.mode = 0o640
            nodes.append(n)
        }
        var big = Node(name: Array("big".utf8), type: .file)
        big.content = []
        for c in chunks { big.content!.append(try await repo.saveBlob(.data, c).id) }
        let ghost = ID(bytes: Seal.randomBytes(32))
        big.content!.insert(ghost, at: 2)     // a blob the index lacks, 1234 bytes long
        big.size = UInt64(4 * 3000 + 1234)
        big.mode = 0o600
        nodes.append(big)
        var root = Node(name: [], type: .dir)
        root.subtree = try await repo.saveTree(Tree(nodes: nodes)).id
        try await repo.flush()
        let target = tempDir("restore-runs")
        defer { try? FileManager.default.removeItem(atPath: target) }
        let r = Restorer(repository: repo, options: RestoreOptions())
        try await r.restore(node: root, snapshotPath: "", target: target)
        for (name, data) in files {
            #expect(FileManager.default.contents(atPath: target + "/" + name) == Data(data))
        }
        let got = [UInt8](FileManager.default.contents(atPath: target + "/big")!)
        #expect(got.count == 4 * 3000 + 1234)
        #expect(Array(got[0..<6000]) == chunks[0] + chunks[1])
        #expect(Array(got[6000..<7234]) == [UInt8](repeating: 0, count: 1234))
        #expect(Array(got[7234...]) == chunks[2] + chunks[3], "blobs after the missing one are at their offsets")
        #expect(r.errors.count == 1 && r.errors[0].path.hasSuffix("big"))
        // All blobs sit in one or two packs: a handful of reads, not one per blob.
        #expect(r.progress.packReads <= 3, "\(r.progress.packReads) reads for 33 blobs")
        #expect(r.progress.filesDone == 31)
    }

    /// The bounded map keeps its results in input order whatever order the tasks finish in (the pattern that
    /// Swift 6.3.1 miscompiled under -O once returned the first index for every task).
    @Test func boundedMapKeepsOrder() async {
        let out = await boundedMap(Array(0..<50), width: 4) { i -> Int in
            try? await Task.sleep(nanoseconds: UInt64((50 - i) % 7) * 1_000_000)
            return i * 2
        }
        #expect(out == (0..<50).map { $0 * 2 })
    }
}
