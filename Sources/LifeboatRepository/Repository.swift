import Crypto
import Foundation
import LifeboatChunker
import LifeboatCompression
import LifeboatCore
import LifeboatCrypto
import LifeboatStorage
import Synchronization

/// Totals of what this process wrote.
public struct WriteStats: Sendable {
    public var blobsAdded = 0
    public var dataBlobs = 0
    public var treeBlobs = 0
    public var bytesAdded: UInt64 = 0
    public var bytesPacked: UInt64 = 0
    public var packsWritten = 0
}

/// An open repository: a backend, the master key, the config and the in-memory index.
///
/// Blob writes are safe from many tasks at once; blobs are deduplicated against the index and against
/// blobs in flight, compressed outside any lock, sealed into one open pack per blob type, and each full
/// pack is uploaded by the task that filled it (which gives back-pressure). Index files are written
/// after every few packs, so an interrupted backup's uploads are reused by the next one.
public final class Repository: Sendable {
    public let backend: any Backend
    public let master: MasterKey
    public let config: RepositoryConfig
    public let chunker: FastCDC
    /// The key file that opened this repository.
    public let keyID: ID
    public let compression: CompressionMode
    /// When set, nothing is written to the backend.
    public let dryRun: Bool

    struct State: Sendable {
        var index = MasterIndex()
        var pending: Set<PendingKey> = []
        var unindexed: [IndexPack] = []
        var lastIndexFlush = Date()
        var stats = WriteStats()
        var indexFiles: [ID: [ID]] = [:]
        var written: [ID] = []
        var uploaded: [IndexPack] = []
    }
    struct PendingKey: Hashable, Sendable { var type: BlobType; var id: ID }
    let state = Mutex(State())
    /// Open packs per blob type (data and trees never share a pack).
    let packSlots: [BlobType: PackSlots]
    let uploads = Mutex<[Task<Void, Error>]>([])
    /// Pack subkeys by salt (HKDF is too slow to run per blob) and decoded trees by ID (trees are immutable).
    let subkeys = Mutex<[[UInt8]: SymmetricKey]>([:])
    let trees = Mutex<[ID: Tree]>([:])
    static let cacheLimit = 4096

    static let indexFlushPacks = 8
    static let indexFlushSeconds: TimeInterval = 60

    init(backend: any Backend, master: MasterKey, config: RepositoryConfig, keyID: ID,
         compression: CompressionMode?, dryRun: Bool) throws {
        self.backend = backend
        self.master = master
        self.config = config
        self.keyID = keyID
        self.compression = compression ?? config.compression
        self.dryRun = dryRun
        guard let seed = Data(base64Encoded: config.chunkerSeed), seed.count == 32, config.chunker.problem == nil else {
            throw LifeboatError.corrupt("the repository config has invalid chunker parameters")
        }
        chunker = FastCDC(parameters: config.chunker, gear: MasterKey.gearTable(seed: Array(seed)))
        let cores = min(4, ProcessInfo.processInfo.activeProcessorCount)
        packSlots = [.data: PackSlots(count: cores), .tree: PackSlots(count: 1)]
    }

    /// A copy of this repository handle with other write options (shares nothing mutable).
    public func with(compression: CompressionMode?, dryRun: Bool) throws -> Repository {
        try Repository(backend: backend, master: master, config: config, keyID: keyID,
                       compression: compression ?? self.compression, dryRun: dryRun)
    }

    // MARK: - Creating and opening

    /// Creates a new repository. Fails with `.alreadyExists` if one is there.
    public static func initialize(backend: any Backend, password: String, options: InitOptions = InitOptions(),
                                  kdf: ScryptParameters = .fromEnvironment(), now: Date = Date()) async throws -> Repository {
        if let problem = options.chunker.problem { throw LifeboatError.invalid(problem) }
        guard options.packSize >= 1 << 20, options.packSize <= 512 << 20 else {
            throw LifeboatError.invalid("the pack size must be between 1 MiB and 512 MiB")
        }
        // Folders, bucket: idempotent, so it may come before the check for an existing repository.
        try await backend.create()
        if try await backend.exists(.config) {
            throw LifeboatError(.alreadyExists, "a repository already exists at \(backend.location)")
        }
        let master = options.blobIDKey.map { MasterKey(encryption: SymmetricKey(size: .bits256), mac: $0) } ?? MasterKey.random()
        let config = RepositoryConfig(version: RepositoryConfig.currentVersion, id: ID(bytes: Seal.randomBytes(32)).hex,
                                      chunker: options.chunker,
                                      chunkerSeed: Data(options.chunkerSeed ?? Seal.randomBytes(32)).base64EncodedString(),
                                      compression: options.compression, packSize: options.packSize)
        let keyID = try await writeKey(backend: backend, master: master, password: password, kdf: kdf, now: now)
        let plain = try JSONEncoder().encode(config)
        try await backend.write(.config, data: Seal.sealObject(Data(encodeUnpacked(Array(plain), compress: false)), master: master))
        return try Repository(backend: backend, master: master, config: config, keyID: keyID, compression: nil, dryRun: false)
    }

    static func writeKey(backend: any Backend, master: MasterKey, password: String, kdf: ScryptParameters, now: Date) async throws -> ID {
        let kf = try KeyFile.create(master: master, password: password, parameters: kdf,
                                    hostname: localHostname(), username: localUsername(), now: now)
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        let data = try enc.encode(kf)
        let id = sha256ID(data)
        try await backend.write(Handle(.keys, id.hex), data: data)
        return id
    }

    /// Opens a repository with a password. Throws `.noRepository` or `.wrongPassword`.
    public static func open(backend: any Backend, password: String, compression: CompressionMode? = nil,
                            dryRun: Bool = false) async throws -> Repository {
        let configData: Data
        do {
            configData = try await backend.read(.config)
        } catch let e as StorageError where e.kind == .notFound {
            throw LifeboatError(.noRepository, "there is no repository at \(backend.location) (run `lifeboat init` to create one)")
        } catch {
            throw LifeboatError(.io, "cannot read the repository config at \(backend.location)", underlying: error)
        }
        let keys = try await backend.list(.keys)
        var found: (MasterKey, ID)?
        var lastError: Error?
        for k in keys.sorted(by: { $0.name < $1.name }) {
            guard let id = ID(hex: k.name) else { continue }
            do {
                let data = try await backend.read(Handle(.keys, k.name))
                let kf = try JSONDecoder().decode(KeyFile.self, from: data)
                found = (try kf.open(password: password), id)
                break
            } catch {
                lastError = error
            }
        }
        guard let (master, keyID) = found else {
            if let e = lastError as? LifeboatError, e.code != .wrongPassword { throw e }
            throw LifeboatError(.wrongPassword, "wrong password: no key in \(backend.location) opens with it")
        }
        let plain: [UInt8]
        do {
            plain = try decodeUnpacked(Array(try Seal.openObject(configData, master: master)))
        } catch {
            throw LifeboatError(.corrupt, "the repository config is damaged", underlying: error as? LifeboatError)
        }
        let config: RepositoryConfig
        do { config = try JSONDecoder().decode(RepositoryConfig.self, from: Data(plain)) } catch {
            throw LifeboatError(.corrupt, "the repository config does not decode: \(error)")
        }
        guard config.version == RepositoryConfig.currentVersion else {
            throw LifeboatError(.unsupported, "repository format version \(config.version) is not supported (this program reads version \(RepositoryConfig.currentVersion))")
        }
        return try Repository(backend: backend, master: master, config: config, keyID: keyID,
                              compression: compression, dryRun: dryRun)
    }

    // MARK: - Unpacked objects (config, index, snapshots, locks)

    /// Plaintext framing of unpacked objects: `0 | bytes` or `1 | rawLength(u32 LE) | zstd(bytes)`.
    static func encodeUnpacked(_ plain: [UInt8], compress: Bool) -> [UInt8] {
        if compress, plain.count <= Int(UInt32.max), let z = plain.withUnsafeBytes({ Zstd.compress($0, mode: .auto) }) {
            var w = BinaryWriter()
            w.u8(1); w.u32(UInt32(plain.count)); w.raw(z)
            return w.bytes
        }
        return [0] + plain
    }

    static func decodeUnpacked(_ framed: [UInt8]) throws -> [UInt8] {
        guard let first = framed.first else { throw LifeboatError.corrupt("object is empty") }
        switch first {
        case 0: return Array(framed.dropFirst())
        case 1:
            var r = BinaryReader(framed, what: "object")
            _ = try r.u8()
            let raw = Int(try r.u32())
            return try framed.withUnsafeBytes { try Zstd.decompress(UnsafeRawBufferPointer(rebasing: $0[5...]), rawLength: raw) }
        default: throw LifeboatError.corrupt("object has an unknown encoding \(first)")
        }
    }

    /// Seals and writes an object; its name is the SHA-256 of the stored bytes.
    @discardableResult
    public func saveUnpacked(_ type: ObjectType, _ plain: [UInt8]) async throws -> ID {
        let sealed = Seal.sealObject(Data(Repository.encodeUnpacked(plain, compress: type == .index)), master: master)
        let id = sha256ID(sealed)
        if !dryRun || type == .locks { try await backend.write(Handle(type, id.hex), data: sealed) }
        return id
    }

    /// Reads, verifies (name = SHA-256 of the bytes) and opens an object.
    public func loadUnpacked(_ type: ObjectType, _ id: ID) async throws -> [UInt8] {
        let h = Handle(type, id.hex)
        let data: Data
        do { data = try await backend.read(h) } catch let e as StorageError where e.kind == .notFound {
            throw LifeboatError(.notFound, "\(h) does not exist")
        }
        guard sha256ID(data) == id else { throw LifeboatError.corrupt("\(h) is damaged: its SHA-256 does not match its name") }
        do {
            return try Repository.decodeUnpacked(Array(try Seal.openObject(data, master: master)))
        } catch let e as LifeboatError {
            throw LifeboatError.corrupt("\(h) is damaged: \(e.message)")
        }
    }

    // MARK: - Index

    /// Loads every index file. Damaged index files are passed to `onError` (default: thrown).
    ///
    /// An index file that vanishes between listing and reading was replaced by a prune, which writes
    /// the replacement before deleting: the listing is then repeated to pick the replacement up.
    public func loadIndex(onError: ((ID, Error) throws -> Void)? = nil) async throws {
        var loaded: [ID: [IndexPack]] = [:]
        var vanished = Set<ID>()
        for attempt in 0..<5 {
            let files = try await backend.list(.index).compactMap { ID(hex: $0.name) }.filter { loaded[$0] == nil }
            var missing = false
            try await withThrowingTaskGroup(of: (ID, Result<[IndexPack], Error>).self) { g in
                var it = files.makeIterator()
                func next() {
                    guard let f = it.next() else { return }
                    g.addTask {
                        do { return (f, .success(try IndexFormat.decode(try await self.loadUnpacked(.index, f)))) } catch { return (f, .failure(error)) }
                    }
                }
                for _ in 0..<8 { next() }
                while let (f, r) = try await g.next() {
                    switch r {
                    case .success(let packs): loaded[f] = packs
                    case .failure(let e as LifeboatError) where e.code == .notFound:
                        missing = true
                        vanished.insert(f)
                    case .failure(let e):
                        if let onError { try onError(f, e) } else {
                            throw LifeboatError(.corrupt, "index file \(f.short) is damaged (run `lifeboat check`)", underlying: e as? LifeboatError)
                        }
                    }
                    next()
                }
            }
            if !missing { break }
            if attempt == 4 { throw LifeboatError(.io, "index files keep vanishing while being read (\(vanished.count)); try again") }
        }
        state.withLock { s in
            var idx = MasterIndex()
            // Live listings first, then marks, so a mark by prune wins.
            for (f, packs) in loaded {
                s.indexFiles[f] = packs.map(\.id)
                for p in packs where p.markedAt == nil { idx.add(p, bulk: true) }
            }
            for (_, packs) in loaded { for p in packs where p.markedAt != nil { idx.add(p, bulk: true) } }
            idx.rebuild()
            s.index = idx
        }
        if let cache = backend as? CachingBackend {
            // Tree packs are what `ls`, `diff`, backups (parent trees) and `check` read again and again.
            var treePacks = Set<String>()
            for packs in loaded.values {
                for p in packs where p.blobs.contains(where: { $0.type == .tree }) { treePacks.insert(p.id.hex) }
            }
            cache.setCachedPacks(treePacks)
        }
    }

    /// A copy of the in-memory index.
    public var index: MasterIndex { state.withLock { $0.index } }

    /// Index files read by `loadIndex`, with the packs each lists.
    public var loadedIndexFiles: [ID: [ID]] { state.withLock { $0.indexFiles } }

    public var writeStats: WriteStats { state.withLock { $0.stats } }

    /// Writes `packs` as new index files (at most 50,000 packs each) and returns their IDs.
    @discardableResult
    public func writeIndex(_ packs: [IndexPack]) async throws -> [ID] {
        var ids: [ID] = []
        var start = 0
        while start < packs.count {
            let end = min(packs.count, start + 50_000)
            ids.append(try await saveUnpacked(.index, IndexFormat.encode(Array(packs[start..<end]))))
            start = end
        }
        return ids
    }

    // MARK: - Blobs

    public struct SaveResult: Sendable {
        public var id: ID
        public var isNew: Bool
        public var storedLength: Int
    }

    /// Stores a blob unless the repository (or a blob in flight) already has it.
    public func saveBlob(_ type: BlobType, _ plaintext: [UInt8], id knownID: ID? = nil) async throws -> SaveResult {
        let id = knownID ?? master.blobID(plaintext)
        let key = PendingKey(type: type, id: id)
        let isNew = state.withLock { s -> Bool in
            if s.index.hasLive(id, type: type) || s.pending.contains(key) { return false }
            s.pending.insert(key)
            return true
        }
        if !isNew { return SaveResult(id: id, isNew: false, storedLength: 0) }
        let compressed = plaintext.withUnsafeBytes { Zstd.compress($0, mode: compression) }
        let packSize = config.packSize
        // Room for the last blob that crosses the target size and a typical header, so a pack rarely reallocates.
        let maxBlob = config.chunker.max + 256 * 1024
        let master = self.master
        // Sealing happens under the pack slot's lock, not the repository's: savers on other cores go on.
        let (blob, full) = (compressed ?? plaintext).withUnsafeBytes { payload in
            packSlots[type]!.add(type: type, id: id, payload: payload, rawLength: plaintext.count,
                                 compressed: compressed != nil, packSize: packSize) {
                PackBuilder(master: master, capacity: packSize + maxBlob)
            }
        }
        state.withLock { s in
            s.stats.blobsAdded += 1
            if type == .data { s.stats.dataBlobs += 1 } else { s.stats.treeBlobs += 1 }
            s.stats.bytesAdded += UInt64(plaintext.count)
            s.stats.bytesPacked += UInt64(blob.length)
        }
        if let full { try await upload(full) }
        return SaveResult(id: id, isNew: true, storedLength: Int(blob.length))
    }

    /// Hands a full pack to a background upload, so readers keep chunking and compressing while it is
    /// hashed, written and fsynced. At most `backend.writeConcurrency` uploads run; the caller that would exceed
    /// that waits for the oldest (back-pressure). Errors surface here or in `flush()`.
    func upload(_ pack: FinishedPack) async throws {
        let task = Task { try await self.uploadNow(pack) }
        let oldest = uploads.withLock { u -> Task<Void, Error>? in
            u.append(task)
            return u.count > backend.writeConcurrency ? u.removeFirst() : nil
        }
        if let oldest { try await oldest.value }
    }

    /// Waits for every background upload; rethrows the first failure.
    func drainUploads() async throws {
        while true {
            let all = uploads.withLock { u -> [Task<Void, Error>] in defer { u = [] }; return u }
            if all.isEmpty { return }
            var failure: Error?
            for t in all {
                do { try await t.value } catch { if failure == nil { failure = error } }
            }
            if let failure { throw failure }
        }
    }

    func uploadNow(_ pb: FinishedPack) async throws {
        let data = pb.data
        let id = sha256ID(data)
        if !dryRun { try await backend.write(Handle(.data, id.hex), data: data) }
        if !dryRun, let cache = backend as? CachingBackend, pb.blobs.contains(where: { $0.type == .tree }) {
            cache.storeTreePack(id.hex, data)
        }
        let ip = IndexPack(id: id, salt: pb.salt, blobs: pb.blobs)
        let flush = state.withLock { s -> Bool in
            s.index.add(ip)
            for b in pb.blobs { s.pending.remove(PendingKey(type: b.type, id: b.id)) }
            s.unindexed.append(ip)
            s.uploaded.append(ip)
            s.stats.packsWritten += 1
            return s.unindexed.count >= Repository.indexFlushPacks
                || Date().timeIntervalSince(s.lastIndexFlush) > Repository.indexFlushSeconds
        }
        if flush { try await flushIndex() }
    }

    func flushIndex() async throws {
        let packs = state.withLock { s -> [IndexPack] in
            defer { s.unindexed = []; s.lastIndexFlush = Date() }
            return s.unindexed
        }
        if !packs.isEmpty {
            let ids = try await writeIndex(packs)
            state.withLock { $0.written += ids }
        }
    }

    /// What a pack file in storage holds, read from its own header, for a pack that no index lists
    /// (uploads of a run that died before writing their index). Nil if it is unreadable, does not match
    /// its name (SHA-256) or its header does not open.
    public func readUnindexedPack(_ name: String) async -> IndexPack? {
        guard let id = ID(hex: name), let data = try? await backend.read(Handle(.data, name)),
              sha256ID(data) == id, let header = try? PackFormat.parseHeader(data, master: master) else { return nil }
        return IndexPack(id: id, salt: header.salt, blobs: header.blobs)
    }

    /// The packs this handle uploaded since the last call (for read-back verification).
    public func takeUploadedPacks() -> [IndexPack] {
        state.withLock { s in defer { s.uploaded = [] }; return s.uploaded }
    }

    /// Index files this handle wrote while flushing packs.
    public var writtenIndexFiles: [ID] { state.withLock { $0.written } }

    /// Replaces the in-memory index (prune uses it to stop deduplication against packs it repacks).
    public func replaceIndex(_ packs: [IndexPack]) {
        var idx = MasterIndex()
        for p in packs { idx.add(p, bulk: true) }
        idx.rebuild()
        state.withLock { $0.index = idx }
    }

    /// Uploads the open packs and writes the index for everything uploaded. After it returns,
    /// every blob saved so far is durable and indexed: a snapshot that references them may be written.
    public func flush() async throws {
        for type in [BlobType.data, .tree] {
            for pack in packSlots[type]!.takeAll() { try await upload(pack) }
        }
        try await drainUploads()
        try await flushIndex()
    }

    /// Reads, authenticates, decompresses and verifies one blob.
    public func loadBlob(_ type: BlobType, _ id: ID) async throws -> [UInt8] {
        guard let loc = index.lookup(id, type: type) else {
            throw LifeboatError(.notFound, "\(type == .tree ? "tree" : "data") blob \(id.short) is not in the index")
        }
        let start = Int(loc.blob.offset)
        let sealed: Data
        do {
            sealed = try await backend.read(Handle(.data, loc.pack.hex), range: start..<(start + Int(loc.blob.length)))
        } catch let e as StorageError where e.kind == .notFound || e.kind == .invalidRange {
            throw LifeboatError.corrupt("pack \(loc.pack.short) holding blob \(id.short) is missing or truncated")
        }
        return try openBlob(sealed, location: loc)
    }

    /// Opens a sealed blob read from its pack.
    public func openBlob<D: DataProtocol>(_ sealed: D, location loc: BlobLocation) throws -> [UInt8] where D.Index == Int {
        let plain = try decryptBlob(sealed, location: loc)
        let out = try loc.blob.compressed ? decompressBlob(plain, location: loc) : Array(plain)
        guard master.blobID(out) == loc.blob.id else { throw wrongContent(loc) }
        return out
    }

    /// Checks a sealed blob as `openBlob` does (authentication, decompression, content ID) without keeping its
    /// plaintext: `check --read-data` and the read-back after a copy.
    public func verifyBlob<D: DataProtocol>(_ sealed: D, location loc: BlobLocation) throws where D.Index == Int {
        let plain = try decryptBlob(sealed, location: loc)
        let id = try loc.blob.compressed ? master.blobID(decompressBlob(plain, location: loc)) : master.blobID(plain)
        guard id == loc.blob.id else { throw wrongContent(loc) }
    }

    func decryptBlob<D: DataProtocol>(_ sealed: D, location loc: BlobLocation) throws -> Data where D.Index == Int {
        do { return try Seal.open(sealed, key: packKey(salt: loc.salt), counter: UInt64(loc.blob.offset)) } catch {
            throw LifeboatError.corrupt("blob \(loc.blob.id.short) in pack \(loc.pack.short) is damaged: authentication failed")
        }
    }

    func decompressBlob(_ plain: Data, location loc: BlobLocation) throws -> [UInt8] {
        do { return try plain.withUnsafeBytes { try Zstd.decompress($0, rawLength: Int(loc.blob.rawLength)) } } catch {
            throw LifeboatError.corrupt("blob \(loc.blob.id.short) in pack \(loc.pack.short) does not decompress")
        }
    }

    func wrongContent(_ loc: BlobLocation) -> LifeboatError {
        LifeboatError.corrupt("blob \(loc.blob.id.short) in pack \(loc.pack.short) has the wrong content")
    }

    public func loadTree(_ id: ID) async throws -> Tree {
        if let t = trees.withLock({ $0[id] }) { return t }
        let t = try Tree.decode(try await loadBlob(.tree, id))
        trees.withLock { c in
            if c.count >= Repository.cacheLimit { c.removeAll(keepingCapacity: true) }
            c[id] = t
        }
        return t
    }

    func packKey(salt: [UInt8]) -> SymmetricKey {
        if let k = subkeys.withLock({ $0[salt] }) { return k }
        let k = master.subkey(salt: salt)
        subkeys.withLock { c in
            if c.count >= Repository.cacheLimit { c.removeAll(keepingCapacity: true) }
            c[salt] = k
        }
        return k
    }

    /// Serializes and stores a tree; returns its ID (the same directory always gives the same ID).
    public func saveTree(_ tree: Tree) async throws -> SaveResult {
        try await saveBlob(.tree, tree.encoded())
    }

    // MARK: - Snapshots

    public func saveSnapshot(_ s: Snapshot) async throws -> ID {
        try await saveUnpacked(.snapshots, Array(try s.encoded()))
    }

    public func loadSnapshot(_ id: ID) async throws -> Snapshot {
        try Snapshot.decode(Data(try await loadUnpacked(.snapshots, id)))
    }

    /// All snapshots, oldest first. Damaged ones go to `onError` (default: thrown).
    public func listSnapshots(onError: ((ID, Error) -> Void)? = nil) async throws -> [(id: ID, snapshot: Snapshot)] {
        let ids = try await backend.list(.snapshots).compactMap { ID(hex: $0.name) }
        var out: [(id: ID, snapshot: Snapshot)] = []
        try await withThrowingTaskGroup(of: (ID, Result<Snapshot, Error>).self) { g in
            var it = ids.makeIterator()
            func next() {
                guard let id = it.next() else { return }
                g.addTask {
                    do { return (id, .success(try await self.loadSnapshot(id))) } catch { return (id, .failure(error)) }
                }
            }
            for _ in 0..<16 { next() }
            while let (id, r) = try await g.next() {
                switch r {
                case .success(let s): out.append((id, s))
                case .failure(let e as LifeboatError) where e.code == .notFound:
                    break  // removed by a concurrent forget after the listing
                case .failure(let e):
                    if let onError { onError(id, e) } else { throw e }
                }
                next()
            }
        }
        return out.sorted { ($0.snapshot.date, $0.id) < ($1.snapshot.date, $1.id) }
    }

    // MARK: - Keys

    public func listKeys() async throws -> [(id: ID, key: KeyFile)] {
        var out: [(id: ID, key: KeyFile)] = []
        for k in try await backend.list(.keys) {
            guard let id = ID(hex: k.name) else { continue }
            let data = try await backend.read(Handle(.keys, k.name))
            out.append((id, try JSONDecoder().decode(KeyFile.self, from: data)))
        }
        return out.sorted { $0.key.created < $1.key.created }
    }

    @discardableResult
    public func addKey(password: String, kdf: ScryptParameters = .fromEnvironment()) async throws -> ID {
        try await Repository.writeKey(backend: backend, master: master, password: password, kdf: kdf, now: Date())
    }

    public func removeKey(_ id: ID) async throws {
        guard id != keyID else {
            throw LifeboatError.invalid("refusing to remove the key in use; open the repository with another key first")
        }
        do { try await backend.delete(Handle(.keys, id.hex)) } catch let e as StorageError where e.kind == .notFound {
            throw LifeboatError(.notFound, "key \(id.short) does not exist")
        }
    }
}
