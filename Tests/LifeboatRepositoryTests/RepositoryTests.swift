import Foundation
import Testing
import LifeboatCore
import LifeboatCrypto
import LifeboatStorage
@testable import LifeboatRepository

let cheap = ScryptParameters(n: 1024, r: 8, p: 1)

func newRepo(_ b: any Backend = MemoryBackend(), packSize: Int = 1 << 20) async throws -> Repository {
    var o = InitOptions()
    o.packSize = packSize
    return try await Repository.initialize(backend: b, password: "pw", options: o, kdf: cheap)
}

func blobData(_ i: Int) -> [UInt8] {
    withUnsafeBytes(of: i) { Array($0) } + (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* (i + 1)) }
}

@Suite struct RepositoryTests {
    @Test func blobsRoundTripAndDedup() async throws {
        let b = MemoryBackend()
        let repo = try await newRepo(b)
        var ids: [ID] = []
        for i in 0..<300 {
            let data = blobData(i)
            let r = try await repo.saveBlob(.data, data)
            #expect(r.isNew)
            ids.append(r.id)
            #expect(try await !repo.saveBlob(.data, data).isNew, "a blob in flight is not stored twice")
        }
        try await repo.flush()
        let reopened = try await Repository.open(backend: b, password: "pw")
        try await reopened.loadIndex()
        #expect(reopened.index.blobCount == 300)
        for (i, id) in ids.enumerated() {
            let data = blobData(i)
            #expect(try await reopened.loadBlob(.data, id) == data)
        }
        // Every pack is named by its SHA-256 and parses with its header.
        for p in try await b.list(.data) {
            let d = try await b.read(Handle(.data, p.name))
            #expect(sha256ID(d).hex == p.name)
            #expect(try PackFormat.parseHeader(d, master: reopened.master).blobs.count > 0)
        }
    }

    @Test func wrongPasswordAndNoRepository() async throws {
        let b = MemoryBackend()
        _ = try await newRepo(b)
        await #expect { try await Repository.open(backend: b, password: "nope") } throws: {
            ($0 as? LifeboatError)?.code == .wrongPassword
        }
        await #expect { try await Repository.open(backend: MemoryBackend(), password: "pw") } throws: {
            ($0 as? LifeboatError)?.code == .noRepository
        }
        await #expect(throws: LifeboatError.self) { try await newRepo(b) }
    }

    @Test func tamperedBlobIsDetected() async throws {
        let b = MemoryBackend()
        let repo = try await newRepo(b)
        let id = try await repo.saveBlob(.data, Array(repeating: 42, count: 5000)).id
        try await repo.flush()
        let pack = try await b.list(.data)[0].name
        b.tamper(Handle(.data, pack)) { $0[Int(PackFormat.headerStart) + 3] ^= 1 }
        await #expect(throws: LifeboatError.self) { try await repo.loadBlob(.data, id) }
    }

    @Test func indexFormatRoundTripAndTruncation() throws {
        var packs: [IndexPack] = []
        for p in 0..<5 {
            var blobs: [PackedBlob] = []
            for i in 0..<7 {
                let type: BlobType = i % 2 == 0 ? .data : .tree
                blobs.append(PackedBlob(type: type, id: ID(bytes: Seal.randomBytes(32)), offset: UInt32(36 + i * 100),
                                        length: 100, rawLength: 200, compressed: true))
            }
            let mark: Int64? = p == 2 ? 1_700_000_000 : nil
            packs.append(IndexPack(id: ID(bytes: Seal.randomBytes(32)), salt: Seal.randomBytes(32), markedAt: mark, blobs: blobs))
        }
        let enc = IndexFormat.encode(packs)
        #expect(try IndexFormat.decode(enc) == packs)
        for cut in [0, 3, 10, enc.count - 1] {
            #expect(throws: LifeboatError.self) { try IndexFormat.decode(Array(enc.prefix(cut))) }
        }
    }

    @Test func masterIndexLookupAndMemory() {
        var idx = MasterIndex()
        var all: [ID] = []
        for p in 0..<50 {
            let blobs = (0..<200).map { i -> PackedBlob in
                let id = ID(bytes: Seal.randomBytes(32))
                all.append(id)
                return PackedBlob(type: .data, id: id, offset: UInt32(36 + i * 10), length: 26, rawLength: 10, compressed: false)
            }
            idx.add(IndexPack(id: ID(bytes: Seal.randomBytes(32)), salt: Seal.randomBytes(32), markedAt: p == 0 ? 1 : nil, blobs: blobs), bulk: true)
        }
        idx.rebuild()
        for id in all { #expect(idx.lookup(id, type: .data)?.blob.id == id) }
        #expect(idx.lookup(ID(bytes: Seal.randomBytes(32)), type: .data) == nil)
        #expect(idx.lookup(all[0], type: .tree) == nil)
        #expect(!idx.hasLive(all[0], type: .data), "blobs in marked packs are not live")
        #expect(idx.hasLive(all[300], type: .data))
        #expect(MemoryLayout<MasterIndex.Entry>.stride == 48, "48 bytes per blob in the index")
    }

    @Test func locksConflictAndRelease() async throws {
        let repo = try await newRepo()
        let shared1 = try await repo.lock(.shared, operation: "backup")
        let shared2 = try await repo.lock(.shared, operation: "backup")
        let prune = try await repo.lock(.prune, operation: "prune")
        await #expect { try await repo.lock(.prune, operation: "prune") } throws: { ($0 as? LifeboatError)?.code == .locked }
        await #expect { try await repo.lock(.exclusive, operation: "x") } throws: { ($0 as? LifeboatError)?.code == .locked }
        try await prune.refresh()
        #expect(try await repo.listLocks().count == 3)
        await shared1.release(); await shared2.release(); await prune.release()
        #expect(try await repo.listLocks().isEmpty)
    }

    @Test func keysAddRemove() async throws {
        let b = MemoryBackend()
        let repo = try await newRepo(b)
        let k2 = try await repo.addKey(password: "second", kdf: cheap)
        let r2 = try await Repository.open(backend: b, password: "second")
        #expect(r2.keyID == k2)
        await #expect(throws: LifeboatError.self) { try await r2.removeKey(k2) }
        try await r2.removeKey(repo.keyID)
        await #expect(throws: LifeboatError.self) { try await Repository.open(backend: b, password: "pw") }
    }
}

/// Counts the reads that reach the wrapped backend, by object type.
final class CountingBackend: Backend, @unchecked Sendable {
    let inner: any Backend
    let lock = NSLock()
    var reads: [ObjectType: Int] = [:]
    init(_ inner: any Backend) { self.inner = inner }
    var location: String { inner.location }
    func list(_ type: ObjectType) async throws -> [ObjectInfo] { try await inner.list(type) }
    func stat(_ h: Handle) async throws -> ObjectInfo { try await inner.stat(h) }
    func read(_ h: Handle, range: Range<Int>?) async throws -> Data {
        lock.withLock { reads[h.type, default: 0] += 1 }
        return try await inner.read(h, range: range)
    }
    func write(_ h: Handle, data: Data) async throws { try await inner.write(h, data: data) }
    func delete(_ h: Handle) async throws { try await inner.delete(h) }
    func count(_ t: ObjectType) -> Int { lock.withLock { reads[t, default: 0] } }
}

@Suite struct MetadataCacheTests {
    @Test func secondRunReadsIndexSnapshotsAndTreesFromTheCache() async throws {
        let cacheRoot = FileManager.default.temporaryDirectory.appendingPathComponent("lb-cache-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: cacheRoot) }
        let memory = MemoryBackend()
        let repo = try await newRepo(CachingBackend(memory, cacheRoot: cacheRoot))
        let blob = try await repo.saveBlob(.data, blobData(1))
        var node = Node(name: Array("f".utf8), type: .file)
        node.content = [blob.id]
        let tree = Tree(nodes: [node])
        let treeID = try await repo.saveTree(tree).id
        try await repo.flush()
        _ = try await repo.saveSnapshot(Snapshot(time: Date(), tree: treeID, paths: ["/x"], hostname: "h", username: "u"))

        func run() async throws -> CountingBackend {
            let counting = CountingBackend(memory)
            let cached = CachingBackend(counting, cacheRoot: cacheRoot)
            let r = try await Repository.open(backend: cached, password: "pw")
            try await r.loadIndex()
            let snaps = try await r.listSnapshots()
            #expect(snaps.count == 1)
            #expect(try await r.loadTree(snaps[0].snapshot.tree) == tree)
            return counting
        }
        let first = try await run()
        #expect(first.count(.index) == 0, "index files written through the cache are cached")
        #expect(first.count(.snapshots) == 0)
        #expect(first.count(.data) == 0, "tree packs written through the cache are cached")
        let second = try await run()
        #expect(second.count(.index) == 0 && second.count(.snapshots) == 0 && second.count(.data) == 0)

        // A damaged cached copy is detected, dropped and fetched again.
        let dir = "\(CachingBackend(memory, cacheRoot: cacheRoot).directory)/data"
        for f in try FileManager.default.contentsOfDirectory(atPath: dir) {
            try Data("garbage".utf8).write(to: URL(fileURLWithPath: "\(dir)/\(f)"))
        }
        let third = try await run()
        #expect(third.count(.data) == 1)
        // A listing evicts what is gone.
        let snapFile = try await memory.list(.snapshots)[0].name
        try await memory.delete(Handle(.snapshots, snapFile))
        _ = try await CachingBackend(memory, cacheRoot: cacheRoot).list(.snapshots)
        #expect(!FileManager.default.fileExists(atPath: "\(CachingBackend(memory, cacheRoot: cacheRoot).directory)/snapshots/\(snapFile)"))
    }
}
