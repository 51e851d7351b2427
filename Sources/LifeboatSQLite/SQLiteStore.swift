import Foundation
import Glibc
import LifeboatCore
import LifeboatRepository
import LifeboatSnapshot
import LifeboatSQLiteWAL

/// Stores a database's SQLite records in a repository and reads them back (FORMAT.md, "SQLite records").
public struct SQLiteStore: Sendable {
    public let repo: Repository
    public var hostname: String
    public var tags: [String]
    public init(repo: Repository, hostname: String = localHostname(), tags: [String] = []) {
        self.repo = repo; self.hostname = hostname; self.tags = tags
    }

    /// The catalog of `database` (an absolute path) of host `hostname` at this repository (nil: no record).
    public func catalog(_ database: String, hostname: String? = nil) async throws -> SQLiteCatalog? {
        try await Self.catalogs(repo)[(hostname ?? self.hostname) + ":" + database]
    }

    /// Every SQLite database's catalog at a repository, keyed `hostname:path`.
    public static func catalogs(_ repo: Repository) async throws -> [String: SQLiteCatalog] {
        SQLiteCatalog.build(try await RecordIO.listing(repo).snapshots)
    }

    /// Stores a frame log as WAL record `seq` of `generation`. Returns once it is durable.
    public func saveWAL(_ log: FrameLogBuilder, database: String, generation: String, seq: Int) async throws -> ID {
        var r = SQLiteRecord(database: database, generation: generation, seq: seq, pageSize: log.header.pageSize,
                             cycle: log.header.cycle.description, firstFrame: log.firstFrame, lastFrame: log.lastFrame,
                             checksum: log.checksumAfter.description, pages: log.pages)
        r.transactions = log.transactions
        let first = Date(timeIntervalSince1970: Double(log.firstTimeMillis ?? 0) / 1000)
        let last = Date(timeIntervalSince1970: Double(log.lastTimeMillis ?? 0) / 1000)
        r.firstTime = Timestamp.format(first)
        r.lastTime = Timestamp.format(last)
        let repo = self.repo
        return try await repo.withLock(.shared, operation: "sqlite replicate \(database)") {
            let content = try await RecordIO.store(log.bytes, repo: repo)
            return try await save(kind: "sqlite-wal", name: "frames", size: log.bytes.count, content: content, record: r, time: last)
        }
    }

    /// Stores the database as it is at the source's position as snapshot record of `generation`, followed by WAL
    /// record `seq`.
    public func saveSnapshot(_ source: inout PageSource, database: String, generation: String, seq: Int, time: Date) async throws -> ID {
        let r = SQLiteRecord(database: database, generation: generation, seq: seq, pageSize: source.pageSize, cycle: source.cycle,
                             firstFrame: 0, lastFrame: source.lastFrame, checksum: source.checksum, pages: source.pages)
        let repo = self.repo
        let size = Int(source.pages) * source.pageSize
        return try await repo.withLock(.shared, operation: "sqlite snapshot \(database)") {
            var src = source
            let content = try await RecordIO.store(sizeHint: size, repo: repo) { buf in try src.read(into: buf) }
            return try await save(kind: "sqlite-snapshot", name: (database as NSString).lastPathComponent, size: size, content: content, record: r, time: time)
        }
    }

    func save(kind: String, name: String, size: Int, content: [ID], record: SQLiteRecord, time: Date) async throws -> ID {
        var node = Node(name: Array(name.utf8), type: .file)
        node.mode = 0o600
        node.size = UInt64(size)
        node.mtimeNs = Int64(time.timeIntervalSince1970 * 1e9)
        node.content = content
        let tree = try await repo.saveTree(Tree(nodes: [node]))
        try await repo.flush()
        var snap = Snapshot(time: time, tree: tree.id, paths: [record.database], hostname: hostname, username: localUsername(),
                            uid: getuid(), gid: getgid(), tags: tags)
        snap.kind = kind
        snap.sqlite = record
        return try await repo.saveSnapshot(snap)
    }

    /// The one file a record's tree holds, and its bytes streamed to `body` blob by blob.
    func file(of item: SQLiteCatalog.Item) async throws -> Node {
        let tree = try await repo.loadTree(item.snapshot.tree)
        guard tree.nodes.count == 1, let node = tree.nodes.first, node.type == .file else {
            throw LifeboatError.corrupt("SQLite record \(item.id.short) should hold one file and holds \(tree.nodes.count) entries")
        }
        return node
    }
}

/// The database image at a position of its WAL, read page by page: pages from the newest frame of the cycle up
/// to the position when there is one, else from the database file. Valid while the follower's read transaction
/// holds the WAL still.
public struct PageSource: @unchecked Sendable {
    let dbFD: Int32
    let walFD: Int32
    let map: [UInt32: off_t]
    public let pages: UInt32
    public let pageSize: Int
    public let cycle: String
    public let lastFrame: Int
    public let checksum: String
    var next = 1
    var staged: [UInt8] = []
    var stagedAt = 0

    init(dbFD: Int32, walFD: Int32, map: [UInt32: off_t], pages: UInt32, pageSize: Int, cycle: String, lastFrame: Int, checksum: String) {
        self.dbFD = dbFD; self.walFD = walFD; self.map = map; self.pages = pages; self.pageSize = pageSize
        self.cycle = cycle; self.lastFrame = lastFrame; self.checksum = checksum
        let c = WALCycle(hex: cycle) ?? WALCycle(salt1: 0, salt2: 0)
        var b: [UInt8] = []
        for v in [c.salt1, c.salt2] {
            for shift: UInt32 in [24, 16, 8, 0] { b.append(UInt8(truncatingIfNeeded: v >> shift)) }
        }
        salts = b
    }

    /// The cycle's salts as a frame header holds them (bytes 8 to 15).
    let salts: [UInt8]

    func frameHeader(at off: off_t, page: Int) throws -> [UInt8] {
        var h = [UInt8](repeating: 0, count: SQLiteWALHeader.frameHeaderSize)
        let n = h.withUnsafeMutableBytes { pread(walFD, $0.baseAddress!, $0.count, off) }
        guard n >= 0 else { throw LifeboatError(.io, "cannot read the WAL frame of page \(page): \(String(cString: strerror(errno)))") }
        // Shorter: an application's checkpoint truncated the log under the snapshot.
        guard n == h.count else { throw HistoryBroken("the WAL of the database was truncated while a snapshot read it (page \(page))") }
        return h
    }

    /// Closes the WAL descriptor (the database's belongs to the follower and stays open).
    public func close() {
        if walFD >= 0 { Glibc.close(walFD) }
    }

    mutating func read(into buf: UnsafeMutableRawBufferPointer) throws -> Int {
        if stagedAt == staged.count {
            guard next <= Int(pages) else { return 0 }
            let count = min(Int(pages) - next + 1, 256)
            staged = [UInt8](repeating: 0, count: count * pageSize)
            let want = staged.count
            let n = staged.withUnsafeMutableBytes { pread(dbFD, $0.baseAddress!, want, off_t(Int(next - 1) * pageSize)) }
            guard n >= 0 else { throw LifeboatError(.io, "cannot read the database file: \(String(cString: strerror(errno)))") }
            for k in 0..<count {
                guard let off = map[UInt32(next + k)] else { continue }
                let size = pageSize
                // The frame's header before and after its page: a writer that restarted the log meanwhile wrote a
                // header of another cycle there first, so the same header on both sides means the page read is the
                // frame's own.
                let before = try frameHeader(at: off - off_t(SQLiteWALHeader.frameHeaderSize), page: next + k)
                let m = staged.withUnsafeMutableBytes { pread(walFD, $0.baseAddress! + k * size, size, off) }
                guard m >= 0 else { throw LifeboatError(.io, "cannot read page \(next + k) from the WAL: \(String(cString: strerror(errno)))") }
                guard m == pageSize else { throw HistoryBroken("the WAL of the database was truncated while a snapshot read it (page \(next + k))") }
                let after = try frameHeader(at: off - off_t(SQLiteWALHeader.frameHeaderSize), page: next + k)
                guard before == after, before.count == 24, Array(before[8..<16]) == salts else {
                    throw HistoryBroken("the WAL of the database restarted while a snapshot read it (page \(next + k))")
                }
            }
            next += count
            stagedAt = 0
        }
        let n = min(buf.count, staged.count - stagedAt)
        staged.withUnsafeBytes { s in buf.baseAddress!.copyMemory(from: s.baseAddress! + stagedAt, byteCount: n) }
        stagedAt += n
        return n
    }
}

extension FollowerCore {
    /// The database at the current position, as a page source (the follower's database descriptor, a WAL one of its own).
    func pageSource() throws -> PageSource {
        let map = try pageMap()
        let wal = map.isEmpty ? -1 : dup(walFD)
        let count = pages > 0 ? pages : dbPages()
        return PageSource(dbFD: dbFD, walFD: wal, map: map, pages: count, pageSize: pageSize,
                          cycle: (header ?? lastHeader).map { $0.cycle.description } ?? "0000000000000000",
                          lastFrame: header == nil ? 0 : nextFrame - 1,
                          checksum: header == nil ? "0000000000000000" : checksum.description)
    }
}
