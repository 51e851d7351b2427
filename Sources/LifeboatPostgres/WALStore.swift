import Foundation
import LifeboatChunker
import LifeboatCore
import LifeboatCrypto
import LifeboatRepository
import LifeboatSnapshot
import LifeboatWAL

/// A WAL file to archive: where it is, and its name (`%f`).
public struct WALInput: Sendable {
    public var path: String
    public var name: WALFileName
    public init(path: String, name: WALFileName) { self.path = path; self.name = name }

    /// `%p` as PostgreSQL passes it (relative to the data directory, the working directory of archive_command).
    public init(path: String) throws {
        let base = (path as NSString).lastPathComponent
        guard let n = WALFileName(base) else {
            throw LifeboatError.invalid("\"\(base.prefix(80))\" is not a WAL file name (24 hexadecimal digits, TIMELINE.history, SEGMENT.OFFSET.backup or SEGMENT.partial): archive_command must pass %p")
        }
        self.path = path; name = n
    }
}

/// Archives WAL files into a repository and fetches them back: the archive's two primitives, which `wal-push`,
/// its helper, `wal-fetch` and its prefetch share.
public struct WALStore: Sendable {
    public let repo: Repository
    public var hostname: String
    public var tags: [String]
    /// Files read and stored at once (memory: a segment each).
    public var width: Int
    public init(repo: Repository, hostname: String = localHostname(), tags: [String] = [], width: Int = 2) {
        self.repo = repo; self.hostname = hostname; self.tags = tags; self.width = max(1, width)
    }

    /// What a push did: the files stored (in one new record), and those already archived with the same bytes.
    public struct PushResult: Sendable {
        public var record: ID?
        public var stored: [WALFileRecord] = []
        public var alreadyArchived: [String] = []
    }

    /// The catalog of every cluster in the repository (a listing of the records). Records already decoded by this
    /// process are not read again (their names are their contents' hashes); unreadable ones are counted.
    public static func catalogs(_ repo: Repository) async throws -> [String: WALCatalog] {
        let (snaps, unreadable) = try await listing(repo)
        var out = WALCatalog.build(snaps)
        for k in out.keys { out[k]!.unreadable = unreadable }
        return out
    }

    /// Every snapshot of the repository (decoded ones from this process's cache).
    static func listing(_ repo: Repository) async throws -> ([(id: ID, snapshot: Snapshot)], Int) {
        let r = try await RecordIO.listing(repo)
        return (r.snapshots, r.unreadable)
    }

    static let maxSmallFile = 64 << 10

    struct Read: Sendable {
        var input: WALInput
        var bytes: [UInt8]
        var record: WALFileRecord
        var system: UInt64?
        var size: SegmentSize?
    }

    /// Reads and checks one file. Segments must be whole, of this cluster and named for what they hold.
    static func read(_ input: WALInput, expectedSystem: UInt64?) throws -> Read {
        var st = stat()
        guard stat(input.path, &st) == 0 else {
            throw LifeboatError(.notFound, "cannot read WAL file \(input.path): \(String(cString: strerror(errno)))")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw LifeboatError.invalid("WAL file \(input.path) is not a regular file") }
        let size = Int(st.st_size)
        switch input.name.kind {
        case .segment, .partial:
            guard SegmentSize(UInt64(max(0, size))) != nil else {
                throw LifeboatError.invalid("WAL segment \(input.name) has \(size) bytes: a segment is a power of two from 1 MiB to 1 GiB (a truncated or partly copied file?); nothing was archived")
            }
        case .history, .backup:
            guard size <= maxSmallFile else { throw LifeboatError.invalid("WAL file \(input.name) has \(size) bytes (at most \(maxSmallFile) for a \(input.name.kind.rawValue) file)") }
        }
        let bytes = try readWhole(input.path, size: size)
        var rec = WALFileRecord(name: input.name.name, size: UInt64(bytes.count), sha256: sha256ID(bytes).hex)
        var system: UInt64? = nil
        var segSize: SegmentSize? = nil
        switch input.name.kind {
        case .segment, .partial:
            let info = try WALSegmentInfo.inspect(bytes, name: input.name, expectedSystem: expectedSystem)
            rec.end = info.end.description
            rec.lastRecord = info.lastRecord?.description
            rec.firstTime = info.firstTime.map(Timestamp.format)
            rec.lastTime = info.lastTime.map(Timestamp.format)
            system = info.systemIdentifier
            segSize = info.segmentSize
        case .history:
            _ = try TimelineSwitch.parse(bytes)
            rec.history = String(decoding: bytes, as: UTF8.self)
        case .backup:
            break
        }
        return Read(input: input, bytes: bytes, record: rec, system: system, size: segSize)
    }

    static func readWhole(_ path: String, size: Int) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw LifeboatError(.io, "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var out = [UInt8](repeating: 0, count: size)
        var done = 0
        while done < size {
            let n = out.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + done, size - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw LifeboatError(.io, "cannot read \(path): \(n < 0 ? String(cString: strerror(errno)) : "it shrank to \(done) bytes while read")")
            }
            done += n
        }
        var extra: UInt8 = 0
        guard Glibc.read(fd, &extra, 1) == 0 else { throw LifeboatError(.io, "\(path) grew while it was read: a WAL file must not change once PostgreSQL hands it over") }
        return out
    }

    /// Archives `inputs` as one record. `system`: the cluster's identifier when known (from `global/pg_control`),
    /// checked against every segment; `known`: what the archive holds already (a name already there with the same
    /// bytes is done; with other bytes, an error). Returns only once the record, its data and index are durable.
    public func push(_ inputs: [WALInput], system: UInt64?, known: WALCatalog?) async throws -> PushResult {
        guard !inputs.isEmpty else { return PushResult() }
        let expected = system ?? known.flatMap { UInt64($0.system) }
        let reads = try await tryBoundedMap(inputs, width: width) { input in
            try WALStore.read(input, expectedSystem: expected)
        }
        return try await store(reads, system: system, known: known)
    }

    /// The records that hold an archived file: its record, then its copies (see `WALCatalog.Entry.copies`).
    static func holders(_ entry: WALCatalog.Entry) -> [ID] { [entry.record] + entry.copies.prefix(8) }

    /// The blob IDs of archived file `entry` in `record`'s tree.
    func content(of entry: WALCatalog.Entry, in record: ID) async throws -> [ID] {
        let snap = try await repo.loadSnapshot(record)
        let tree = try await repo.loadTree(snap.tree)
        guard let node = tree.node(named: Array(entry.file.name.utf8)), let content = node.content else {
            throw LifeboatError.corrupt("record \(record.short) lists \(entry.file.name) but its tree does not hold it")
        }
        return content
    }

    /// Whether an archived file's record (or one of its copies) and tree can be read and every blob of it is in
    /// a live pack.
    func readable(_ entry: WALCatalog.Entry) async -> Bool {
        for record in Self.holders(entry) {
            guard let content = try? await content(of: entry, in: record) else { continue }
            let index = repo.index
            if content.allSatisfy({ index.hasLive($0, type: .data) }) { return true }
        }
        return false
    }

    /// Stores files already read and checked (`read`), as one record.
    func store(_ reads: [Read], system: UInt64?, known: WALCatalog?) async throws -> PushResult {
        guard !reads.isEmpty else { return PushResult() }
        let expected = system ?? known.flatMap { UInt64($0.system) }
        var result = PushResult()
        var todo: [Read] = []
        for r in reads {
            if let old = known?.files[r.record.name] {
                guard old.file.sha256 == r.record.sha256 else {
                    throw LifeboatError.invalid("WAL file \(r.record.name) is archived already with other contents (record \(old.record.short), \(old.file.size) bytes): two clusters writing to one archive, or a restored copy still archiving to the old one? Nothing was overwritten")
                }
                // Acknowledged only while the old copy can be read back: a record whose data went (a lost pack,
                // `lifeboat check` names it) gets the file stored again, under the same blob IDs, which repairs it.
                if await readable(old) { result.alreadyArchived.append(r.record.name) } else { todo.append(r) }
            } else {
                todo.append(r)
            }
        }
        guard !todo.isEmpty else { return result }
        let systems = Set(todo.compactMap(\.system))
        guard systems.count <= 1 else {
            throw LifeboatError.invalid("the WAL files come from \(systems.count) database systems (\(systems.sorted().map(String.init).joined(separator: ", "))): one archive holds one cluster")
        }
        guard let sys = expected ?? systems.first else {
            throw LifeboatError.invalid("cannot tell which cluster \(todo.map(\.record.name).joined(separator: ", ")) belongs to: run wal-push in the data directory (archive_command does), or archive a segment first")
        }
        // The segment size: the segments' own, else the archive's; a record of histories alone before any segment
        // of its cluster is archived says 0 (unknown), and joins its cluster's catalog when that has one.
        let sizes = Set(todo.compactMap(\.size))
        guard sizes.count <= 1, known.map({ k in !k.sizeKnown || sizes.allSatisfy { $0 == k.size } }) ?? true else {
            throw LifeboatError.invalid("the WAL segments' size differs from the archive's (\(known?.size.bytes ?? 0) bytes)")
        }
        let segSize = sizes.first?.bytes ?? (known?.sizeKnown == true ? known!.size.bytes : 0)
        let repo = self.repo
        let nodes = try await tryBoundedMap(todo, width: width) { r -> Node in
            var node = Node(name: Array(r.record.name.utf8), type: .file)
            node.mode = 0o600
            node.size = UInt64(r.bytes.count)
            node.mtimeNs = Int64(currentTime().timeIntervalSince1970 * 1e9)
            node.content = try await WALStore.store(r.bytes, repo: repo)
            return node
        }
        let tree = try await repo.saveTree(Tree(nodes: nodes.sorted { $0.name.lexicographicallyPrecedes($1.name) }))
        try await repo.flush()
        var db = DatabaseRecord(system: String(sys), segmentSize: segSize)
        db.files = todo.map(\.record).sorted { $0.name < $1.name }
        var snap = Snapshot(time: currentTime(), tree: tree.id, paths: ["/pg_wal"], hostname: hostname, username: localUsername(),
                            uid: getuid(), gid: getgid(), tags: tags)
        snap.kind = "pg-wal"
        snap.database = db
        result.record = try await repo.saveSnapshot(snap)
        result.stored = db.files ?? []
        return result
    }

    static func store(_ bytes: [UInt8], repo: Repository) async throws -> [ID] { try await RecordIO.store(bytes, repo: repo) }

    /// Writes archived file `name` to `path`, whole or not at all (a temporary file renamed; not fsynced:
    /// PostgreSQL asks again after a crash, and a prefetched file is fetched again), blob by blob: one blob in
    /// memory at a time, each checked against its ID and the whole against the record's size and SHA-256.
    /// Throws `.notFound` when the archive does not hold it.
    public func fetch(_ name: String, catalog: WALCatalog, to path: String) async throws {
        guard let entry = catalog.files[name] else {
            throw LifeboatError(.notFound, "WAL file \(name) is not in the archive")
        }
        try await fetch(entry, to: path)
    }

    /// The record first, then its copies; the record's error when none reads.
    func fetch(_ entry: WALCatalog.Entry, to path: String) async throws {
        var first: (any Error)? = nil
        for record in Self.holders(entry) {
            do {
                let file = try AtomicFile(path)
                try await read(entry, in: record) { try file.write($0) }
                try file.commit(durable: false)
                return
            } catch {
                if first == nil { first = error }
            }
        }
        throw first!
    }

    /// An archived file's blobs in `record` (its record when nil) in order, each given to `body` once read; throws
    /// (after the last one) unless the whole matches the record's size and SHA-256.
    func read(_ entry: WALCatalog.Entry, in record: ID? = nil, _ body: ([UInt8]) throws -> Void) async throws {
        let record = record ?? entry.record
        guard entry.file.size <= 1 << 30 else { throw LifeboatError.corrupt("record \(record.short) says \(entry.file.name) has \(entry.file.size) bytes") }
        let content = try await content(of: entry, in: record)
        var hash = StreamingSHA256()
        var count = 0
        for id in content {
            let blob = try await repo.loadBlob(.data, id)
            count += blob.count
            guard count <= Int(entry.file.size) else { break }
            hash.update(blob)
            try body(blob)
        }
        guard count == Int(entry.file.size), hash.finalize().hex == entry.file.sha256 else {
            throw LifeboatError.corrupt("WAL file \(entry.file.name) in record \(record.short) does not match its checksum (\(count)\(count > Int(entry.file.size) ? " or more" : "") bytes, expected \(entry.file.size)): restore it from another site")
        }
    }
}

/// `boundedMap` for work that throws: every result, or the first error in input order.
func tryBoundedMap<T: Sendable, R: Sendable>(_ items: [T], width: Int, _ body: @escaping @Sendable (T) async throws -> R) async throws -> [R] {
    let results = await boundedMap(items, width: width) { item -> Result<R, any Error> in
        do { return .success(try await body(item)) } catch { return .failure(error) }
    }
    return try results.map { try $0.get() }
}
