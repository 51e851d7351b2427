import Foundation
import LifeboatChunker
import LifeboatCore
import LifeboatRepository
import Synchronization

/// What the database records (PostgreSQL's WAL, SQLite's frames) share: the listing of a repository's snapshots,
/// kept decoded per process, and storing bytes as chunks of the repository's chunker.
public enum RecordIO {
    static let decoded = Mutex<[String: Snapshot]>([:])

    /// Every snapshot of the repository, with the number that could not be read. Records already decoded by this
    /// process are not read again (their names are their contents' hashes).
    public static func listing(_ repo: Repository) async throws -> (snapshots: [(id: ID, snapshot: Snapshot)], unreadable: Int) {
        let ids = try await repo.backend.list(.snapshots).compactMap { ID(hex: $0.name) }
        let prefix = repo.config.id + "/"
        var found: [(id: ID, snapshot: Snapshot)] = []
        var missing: [ID] = []
        decoded.withLock { d in
            for id in ids { if let s = d[prefix + id.hex] { found.append((id, s)) } else { missing.append(id) } }
        }
        // Results in input order, zipped with the IDs: an (ID, Result) tuple as the task's result came back with a
        // garbled ID in release builds (Swift 6.3.1, -O), as ARCHITECTURE.md notes.
        let loaded = await boundedMap(missing, width: 16) { id -> Result<Snapshot, any Error> in
            do { return .success(try await repo.loadSnapshot(id)) } catch { return .failure(error) }
        }
        var unreadable = 0
        for (id, r) in zip(missing, loaded) {
            switch r {
            case .success(let s): found.append((id, s))
            case .failure(let e as LifeboatError) where e.code == .notFound: break  // removed since the listing
            case .failure: unreadable += 1
            }
        }
        decoded.withLock { d in
            if d.count > 200_000 { d.removeAll() }
            for (id, s) in found { d[prefix + id.hex] = s }
        }
        return (found, unreadable)
    }

    /// Chunks bytes with the repository's chunker and stores each chunk as it comes (no second copy).
    public static func store(_ bytes: [UInt8], repo: Repository) async throws -> [ID] {
        var offset = 0
        return try await store(sizeHint: bytes.count, repo: repo) { buf in
            bytes.withUnsafeBytes { src in
                let n = min(buf.count, src.count - offset)
                if n > 0 { buf.baseAddress!.copyMemory(from: src.baseAddress! + offset, byteCount: n) }
                offset += n
                return n
            }
        }
    }

    /// Chunks what `read` returns (0 at the end) and stores each chunk as it comes.
    public static func store(sizeHint: Int?, repo: Repository, read: (UnsafeMutableRawBufferPointer) throws -> Int) async throws -> [ID] {
        var chunker = StreamChunker(cdc: repo.chunker, sizeHint: sizeHint)
        var ids: [ID] = []
        while let c = try chunker.next(read: read) {
            ids.append(try await repo.saveBlob(.data, c).id)
        }
        return ids
    }

    /// The bytes of a file node, at most `max` of them.
    public static func load(_ node: Node, repo: Repository, max: Int) async throws -> [UInt8] {
        guard node.size <= UInt64(max) else { throw LifeboatError.corrupt("\(String(decoding: node.name, as: UTF8.self)) says it has \(node.size) bytes (at most \(max))") }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Int(node.size))
        for id in node.content ?? [] {
            bytes += try await repo.loadBlob(.data, id)
            guard bytes.count <= Int(node.size) else { break }
        }
        guard bytes.count == Int(node.size) else {
            throw LifeboatError.corrupt("\(String(decoding: node.name, as: UTF8.self)) has \(bytes.count) bytes, and its node says \(node.size)")
        }
        return bytes
    }
}
