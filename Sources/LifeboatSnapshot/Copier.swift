import Foundation
import LifeboatChunker
import LifeboatCore
import LifeboatCrypto
import LifeboatRepository
import LifeboatStorage
import Synchronization

/// What a copy did.
public struct CopyReport: Sendable {
    /// (source snapshot, new snapshot at the destination).
    public var copied: [(source: ID, destination: ID)] = []
    /// Source snapshots the destination already had.
    public var alreadyPresent = 0
    /// Blobs stored at the destination, and their bytes as stored there (compressed and encrypted: what
    /// travels, and what `sites status` counts as pending).
    public var blobsSent = 0
    public var bytesSent: UInt64 = 0
    /// Blobs the destination already had.
    public var blobsSkipped = 0
    /// Packs read back from the destination and verified.
    public var packsVerified = 0
    /// Packs an interrupted run had uploaded but not indexed, found at the destination and indexed, so
    /// their blobs are not sent again.
    public var packsRecovered = 0
    /// A stop was asked for; what was copied so far is durable and indexed, the snapshot in progress is not written.
    public var stopped = false
    /// Blobs were re-identified (keys differ) and, if the chunker parameters differ, file contents re-chunked.
    public var reencoded = false
    public var rechunked = false
}

/// Copies snapshots, with all the data they need, from one repository into another.
///
/// Two repositories that share the blob-ID key and chunker parameters (`init --copy-chunker-params-from`)
/// name every blob and tree alike: blobs the destination has are skipped by ID without being read, and
/// trees are copied unchanged. Otherwise each blob is read, re-identified under the destination's key
/// (re-chunked with its chunker when the parameters differ) and trees are rewritten. Either way blobs are
/// decrypted from the source and sealed under the destination's keys; source files are never read.
///
/// A snapshot is written at the destination only after its data and index are durable there and every
/// pack uploaded for it has been read back and verified (SHA-256 of the pack, MAC of every blob). An
/// interrupted copy leaves indexed packs behind; the next copy finds those blobs and does not send them again.
public final class Copier: Sendable {
    public let source: Repository
    public let destination: Repository
    /// Blob copies in flight.
    public let parallelism: Int
    let sameIDs: Bool
    let sameChunker: Bool
    let treeMap = Mutex<[ID: ID]>([:])
    let blobMap = Mutex<[ID: ID]>([:])
    let counters = Mutex(CopyReport())

    public init(source: Repository, destination: Repository, parallelism: Int = 4) {
        self.source = source
        self.destination = destination
        self.parallelism = max(1, parallelism)
        sameChunker = source.config.chunker == destination.config.chunker && source.config.chunkerSeed == destination.config.chunkerSeed
        let macA = source.master.mac.withUnsafeBytes { Data($0) }
        let macB = destination.master.mac.withUnsafeBytes { Data($0) }
        sameIDs = macA == macB && sameChunker
    }

    /// Progress so far (blobs sent and skipped, bytes).
    public var progress: CopyReport { counters.withLock { $0 } }

    /// Which of `snapshots` (from the source) the destination lacks, oldest first. A copy is recognised by
    /// its `original` field, so copies of copies are recognised too.
    public static func missing(_ snapshots: [(id: ID, snapshot: Snapshot)], at destination: [(id: ID, snapshot: Snapshot)])
        -> [(id: ID, snapshot: Snapshot)] {
        var present = Set<ID>()
        for (id, s) in destination { present.insert(id); if let o = s.original { present.insert(o) } }
        return snapshots.filter { !present.contains($0.id) && !present.contains($0.snapshot.original ?? $0.id) }
            .sorted { $0.snapshot.time < $1.snapshot.time }
    }

    /// Copies `snapshots` (indexes of both repositories must be loaded). `shouldStop` is polled between
    /// blobs: when it turns true, the blobs copied so far are flushed and the copy returns with `stopped`.
    public func copy(_ snapshots: [(id: ID, snapshot: Snapshot)], shouldStop: @escaping @Sendable () -> Bool = { false },
                     onSnapshot: @Sendable (ID, ID) -> Void = { _, _ in }) async throws -> CopyReport {
        // Every pack this copy uploads is read back and verified before any index names it: a copy that is
        // stopped or killed leaves only verified, indexed packs or unindexed ones, and unindexed ones are
        // verified blob by blob before a resumed copy relies on them.
        destination.readBackUploads.store(true, ordering: .relaxed)
        let verifiedBefore = destination.writeStats.packsVerified
        let existing = try await destination.listSnapshots()
        let todo = Copier.missing(snapshots, at: existing)
        if !todo.isEmpty { try await recoverUnindexedPacks() }
        counters.withLock { $0.alreadyPresent = snapshots.count - todo.count; $0.reencoded = !sameIDs; $0.rechunked = !sameChunker }
        var copiedIDs: [ID: ID] = [:]
        for (id, snap) in todo {
            let tree: ID
            do {
                tree = try await copyTree(snap.tree, shouldStop: shouldStop)
            } catch is CopyStopped {
                // What was uploaded is verified and indexed, so a resumed copy can rely on it.
                try await destination.flush()
                counters.withLock { $0.stopped = true; $0.packsVerified = destination.writeStats.packsVerified - verifiedBefore }
                return counters.withLock { $0 }
            }
            try await destination.flush()
            counters.withLock { $0.packsVerified = destination.writeStats.packsVerified - verifiedBefore }
            var copy = snap
            copy.tree = tree
            copy.original = snap.original ?? id
            copy.parent = snap.parent.flatMap { copiedIDs[$0] }
            let newID = try await destination.saveSnapshot(copy)
            copiedIDs[id] = newID
            counters.withLock { $0.copied.append((id, newID)) }
            onSnapshot(id, newID)
            if shouldStop() {
                counters.withLock { $0.stopped = true }
                break
            }
        }
        return counters.withLock { $0 }
    }

    struct CopyStopped: Error {}

    /// Indexes the destination's packs that no index lists (uploads of a run that was killed before it
    /// wrote their index), after checking each one's SHA-256 and header, so a resumed copy reuses them.
    func recoverUnindexedPacks() async throws {
        let indexed = Set(destination.index.allPacks().map { $0.id.hex })
        var found: [IndexPack] = []
        for item in try await destination.backend.list(.data) where !indexed.contains(item.name) {
            if let pack = await destination.readUnindexedPack(item.name, verifyBlobs: true) { found.append(pack) }
        }
        guard !found.isEmpty else { return }
        try await destination.writeIndex(found)
        try await destination.loadIndex()
        counters.withLock { $0.packsRecovered = found.count }
    }

    func copyTree(_ id: ID, shouldStop: @escaping @Sendable () -> Bool) async throws -> ID {
        if let done = treeMap.withLock({ $0[id] }) { return done }
        if shouldStop() { throw CopyStopped() }
        let tree = try await source.loadTree(id)
        var nodes = tree.nodes
        // Subtrees first (depth-first), then this tree's files in parallel.
        for i in nodes.indices where nodes[i].type == .dir {
            if let sub = nodes[i].subtree { nodes[i].subtree = try await copyTree(sub, shouldStop: shouldStop) }
        }
        if sameIDs {
            var blobs: [ID] = []
            for n in nodes { blobs += n.content ?? [] }
            try await copyBlobs(blobs, shouldStop: shouldStop)
            if !destination.index.hasLive(id, type: .tree) {
                let raw = try await source.loadBlob(.tree, id)
                let r = try await destination.saveBlob(.tree, raw, id: id)
                counters.withLock { if r.isNew { $0.blobsSent += 1; $0.bytesSent += UInt64(r.storedLength) } }
            }
            treeMap.withLock { $0[id] = id }
            return id
        }
        for i in nodes.indices {
            guard let content = nodes[i].content, !content.isEmpty else { continue }
            if shouldStop() { throw CopyStopped() }
            nodes[i].content = sameChunker ? try await reidentify(content, shouldStop: shouldStop) : try await rechunk(content)
        }
        let newID = try await destination.saveTree(Tree(nodes: nodes)).id
        treeMap.withLock { $0[id] = newID }
        return newID
    }

    /// Copies the data blobs `ids` the destination lacks, reading the source by the pack (`BlobRuns`: a few ranged
    /// reads per pack, several at once) rather than blob by blob. With the same blob-ID key a blob keeps its ID;
    /// otherwise it gets the destination's, recorded in `blobMap`.
    func copyBlobs(_ ids: [ID], shouldStop: @escaping @Sendable () -> Bool) async throws {
        var wanted: [(location: BlobLocation, target: ID)] = []
        var seen = Set<ID>()
        let srcIndex = source.index
        for b in ids where seen.insert(b).inserted {
            if sameIDs ? destination.index.hasLive(b, type: .data) : blobMap.withLock({ $0[b] != nil }) {
                counters.withLock { $0.blobsSkipped += 1 }
                continue
            }
            guard let loc = srcIndex.lookup(b, type: .data) else {
                throw LifeboatError(.notFound, "data blob \(b.short) is not in the source's index")
            }
            wanted.append((loc, b))
        }
        try await asyncForEach(BlobRuns.group(wanted), parallelism: parallelism) { run in
            if shouldStop() { throw CopyStopped() }
            var failure: Error?
            await BlobRuns.read(run, from: self.source) { blob, result in
                guard failure == nil else { return }
                do {
                    // A copy that cannot be read here may exist in another pack of the source.
                    let data = try await { () async throws -> [UInt8] in
                        switch result {
                        case .success(let d): return d
                        case .failure: return try await self.source.loadBlob(.data, blob.location.blob.id)
                        }
                    }()
                    let r = try await self.destination.saveBlob(.data, data, id: self.sameIDs ? blob.location.blob.id : nil)
                    if !self.sameIDs { self.blobMap.withLock { $0[blob.location.blob.id] = r.id } }
                    self.counters.withLock {
                        if r.isNew { $0.blobsSent += 1; $0.bytesSent += UInt64(r.storedLength) } else { $0.blobsSkipped += 1 }
                    }
                } catch {
                    failure = error
                }
            }
            if let failure { throw failure }
        }
    }

    /// Same chunks, new IDs (different blob-ID keys).
    func reidentify(_ content: [ID], shouldStop: @escaping @Sendable () -> Bool) async throws -> [ID] {
        try await copyBlobs(content, shouldStop: shouldStop)
        return try blobMap.withLock { m in
            try content.map { b in
                guard let id = m[b] else { throw LifeboatError.corrupt("data blob \(b.short) was not copied") }
                return id
            }
        }
    }

    /// The file's bytes cut again with the destination's chunker (memory: one chunk plus one blob).
    func rechunk(_ content: [ID]) async throws -> [ID] {
        var out: [ID] = []
        var buffer: [UInt8] = []
        let cdc = destination.chunker
        func emit(_ n: Int) async throws {
            let chunk = Array(buffer[0..<n])
            buffer.removeFirst(n)
            let r = try await destination.saveBlob(.data, chunk)
            counters.withLock {
                if r.isNew { $0.blobsSent += 1; $0.bytesSent += UInt64(r.storedLength) } else { $0.blobsSkipped += 1 }
            }
            out.append(r.id)
        }
        for b in content {
            buffer += try await source.loadBlob(.data, b)
            while let cut = buffer.withUnsafeBytes({ cdc.boundary($0, final: false) }), cut > 0 { try await emit(cut) }
        }
        while !buffer.isEmpty {
            let cut = buffer.withUnsafeBytes { cdc.boundary($0, final: true) } ?? buffer.count
            try await emit(max(1, min(cut, buffer.count)))
        }
        return out
    }
}

/// Runs `body` for every element with at most `parallelism` at once; rethrows the first error.
func asyncForEach<T: Sendable>(_ items: [T], parallelism: Int, _ body: @escaping @Sendable (T) async throws -> Void) async throws {
    try await withThrowingTaskGroup(of: Void.self) { g in
        var it = items.makeIterator()
        for _ in 0..<parallelism {
            guard let x = it.next() else { break }
            g.addTask { try await body(x) }
        }
        while try await g.next() != nil {
            if let x = it.next() { g.addTask { try await body(x) } }
        }
    }
}

extension Copier {
    /// Bytes (as stored at the source) of the blobs that `snapshots` need and `destination` lacks. With
    /// different blob-ID keys the destination cannot be compared by ID: the result is then the size of
    /// everything the snapshots reference (an upper bound) and `exact` is false.
    public static func pendingBytes(_ snapshots: [Snapshot], source: Repository, destination: Repository?) async throws
        -> (bytes: UInt64, exact: Bool) {
        let comparable = destination.map { d in
            d.master.mac.withUnsafeBytes { Data($0) } == source.master.mac.withUnsafeBytes { Data($0) }
        } ?? false
        let index = source.index
        let other = comparable ? destination?.index : nil
        var seenTrees = Set<ID>(), seenBlobs = Set<ID>()
        var total: UInt64 = 0
        func add(_ id: ID, _ type: BlobType) {
            guard seenBlobs.insert(id).inserted else { return }
            if let other, other.hasLive(id, type: type) { return }
            if let loc = index.lookup(id, type: type) { total += UInt64(loc.blob.length) }
        }
        var stack = snapshots.map(\.tree)
        while let t = stack.popLast() {
            guard seenTrees.insert(t).inserted else { continue }
            add(t, .tree)
            // A subtree the destination has is taken as complete there (an estimate: saves walking it).
            if let other, other.hasLive(t, type: .tree) { continue }
            for n in try await source.loadTree(t).nodes {
                if let s = n.subtree { stack.append(s) }
                for b in n.content ?? [] { add(b, .data) }
            }
        }
        return (total, comparable)
    }
}
