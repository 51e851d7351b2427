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
    /// Packs read back and verified before being indexed (`readBackUploads`).
    public var packsVerified = 0
}

/// An object that was found damaged and skipped, so that the rest of the repository stays usable.
public struct DamagedObject: Sendable, CustomStringConvertible {
    public var type: ObjectType
    public var id: ID
    public var reason: String
    public var description: String {
        let what = type == .index ? "index file" : (type == .snapshots ? "snapshot" : "\(type.rawValue) object")
        let hint = type == .index ? "run `lifeboat repair index`" : (type == .snapshots ? "remove it with `lifeboat forget \(id.short)`, or restore the file from a copy" : "run `lifeboat check`")
        return "\(what) \(id.short) is damaged and was skipped (\(reason)); \(hint)"
    }
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
    /// Stops writes and deletes once a lock held through this handle can no longer be relied on.
    public let fence: LockFence
    /// Read every uploaded pack back and verify it (SHA-256, every blob) before it is indexed, so that no index
    /// ever names a pack that was not verified (copies and replication set this).
    public let readBackUploads = Atomic<Bool>(false)

    struct State: Sendable {
        var index = MasterIndex()
        var pending: Set<PendingKey> = []
        var unindexed: [IndexPack] = []
        var lastIndexFlush = Date()
        var stats = WriteStats()
        var indexFiles: [ID: [ID]] = [:]
        var written: [ID] = []
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
    /// Damaged objects skipped so far, and who to tell (the CLI prints a warning; the library never prints).
    let damage = Mutex<(seen: [DamagedObject], handler: (@Sendable (DamagedObject) -> Void)?)>(([], nil))

    /// Calls `handler` for every damaged object that is skipped from now on.
    public func onDamage(_ handler: @escaping @Sendable (DamagedObject) -> Void) {
        damage.withLock { $0.handler = handler }
    }

    /// Damaged objects skipped by this handle.
    public var damagedObjects: [DamagedObject] { damage.withLock { $0.seen } }

    func reportDamage(_ type: ObjectType, _ id: ID, _ error: Error) {
        let reason = (error as? LifeboatError).map(\.description) ?? "\(error)"
        let d = DamagedObject(type: type, id: id, reason: reason)
        let handler = damage.withLock { s -> (@Sendable (DamagedObject) -> Void)? in s.seen.append(d); return s.handler }
        handler?(d)
    }

    static let indexFlushPacks = 8
    static let indexFlushSeconds: TimeInterval = 60

    init(backend: any Backend, master: MasterKey, config: RepositoryConfig, keyID: ID,
         compression: CompressionMode?, dryRun: Bool, fence: LockFence = LockFence()) throws {
        self.fence = fence
        self.backend = backend
        self.master = master
        self.config = config
        self.keyID = keyID
        self.compression = compression ?? config.compression
        self.dryRun = dryRun
        guard let seed = Data(base64Encoded: config.chunkerSeed), seed.count == 32, config.chunker.problem == nil else {
            throw LifeboatError.corrupt("the repository config has invalid chunker parameters")
        }
        guard config.packSize >= 1 << 20, config.packSize <= 512 << 20, config.chunker.max <= 64 << 20 else {
            throw LifeboatError.corrupt("the repository config has an impossible pack size (\(config.packSize)) or chunk size")
        }
        chunker = FastCDC(parameters: config.chunker, gear: MasterKey.gearTable(seed: Array(seed)))
        let cores = min(4, ProcessInfo.processInfo.activeProcessorCount)
        packSlots = [.data: PackSlots(count: cores), .tree: PackSlots(count: 1)]
    }

    /// A copy of this repository handle with other write options (shares nothing mutable).
    public func with(compression: CompressionMode?, dryRun: Bool) throws -> Repository {
        try Repository(backend: backend, master: master, config: config, keyID: keyID,
                       compression: compression ?? self.compression, dryRun: dryRun, fence: fence)
    }

    /// Throws if a lock held through this handle is lost (see `LockFence`). Every write but a lock's, and every
    /// delete through `delete(_:)`, checks it first.
    public func checkFence() throws { try fence.check() }

    /// Deletes an object after checking the fence; an object that is already gone counts as deleted.
    public func delete(_ h: Handle) async throws {
        try checkFence()
        do { try await backend.delete(h) } catch let e as StorageError where e.kind == .notFound {}
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
        let (master, keyID) = try await openKey(backend: backend, password: password)
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

    /// What reading one key file gave.
    enum KeyCandidate {
        case usable(ID, KeyFile)
        case damaged(ID, String)
        case foreign(ID, String)
    }

    /// Reads and classifies one key file: ours and intact, damaged (name does not match the content, JSON or
    /// parameters unusable, scrypt cost above the limit), or another program's (restic's key format).
    static func readKey(backend: any Backend, name: String) async throws -> KeyCandidate? {
        guard let id = ID(hex: name) else { return nil }
        let data: Data
        do { data = try await backend.read(Handle(.keys, name)) } catch let e as StorageError where e.kind == .notFound {
            return nil  // removed since the listing
        }
        guard data.count < 64 * 1024 else { return .damaged(id, "it is \(data.count) bytes long, far more than a key") }
        if let kf = try? JSONDecoder().decode(KeyFile.self, from: data) {
            guard sha256ID(data) == id else { return .damaged(id, "its SHA-256 does not match its name") }
            if let problem = kf.scrypt.problem { return .damaged(id, "unusable scrypt parameters: \(problem)") }
            return .usable(id, kf)
        }
        if let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any], o["kdf"] != nil, o["N"] != nil,
           o["salt"] != nil, o["data"] != nil, o["scrypt"] == nil {
            return .foreign(id, "restic")
        }
        return .damaged(id, "it is not a Lifeboat key file (does not decode)")
    }

    /// Finds the key that opens with `password`, trying the cheapest scrypt parameters first (a hostile key
    /// with costly ones is reached only when every other key failed). Tells apart a wrong password, damaged
    /// key files and another program's repository.
    static func openKey(backend: any Backend, password: String) async throws -> (MasterKey, ID) {
        var usable: [(ID, KeyFile)] = []
        var damaged: [(ID, String)] = []
        var foreign: [(ID, String)] = []
        for k in try await backend.list(.keys).sorted(by: { $0.name < $1.name }) {
            switch try await readKey(backend: backend, name: k.name) {
            case .usable(let id, let kf): usable.append((id, kf))
            case .damaged(let id, let why): damaged.append((id, why))
            case .foreign(let id, let what): foreign.append((id, what))
            case nil: break
            }
        }
        var wrong = 0
        for (id, kf) in usable.sorted(by: { ($0.1.scrypt.cost, $0.0) < ($1.1.scrypt.cost, $1.0) }) {
            do { return (try kf.open(password: password), id) } catch let e as LifeboatError where e.code == .wrongPassword {
                wrong += 1
            } catch {
                damaged.append((id, "\(error)"))
            }
        }
        let damage = damaged.map { "key \($0.0.short): \($0.1)" }.joined(separator: "; ")
        if wrong > 0 {
            throw LifeboatError(.wrongPassword, "wrong password: none of the \(wrong) key\(wrong == 1 ? "" : "s") in \(backend.location) opens with it"
                                + (damaged.isEmpty ? "" : " (also damaged: \(damage))"))
        }
        if !foreign.isEmpty && damaged.isEmpty {
            throw LifeboatError(.noRepository, "\(backend.location) is not a Lifeboat repository: its key files are in \(foreign[0].1)'s format (open it with \(foreign[0].1))")
        }
        if !damaged.isEmpty {
            throw LifeboatError(.corrupt, "no usable key file in \(backend.location): \(damage); restore a key file from a copy of the repository, or open a replica")
        }
        throw LifeboatError(.corrupt, "\(backend.location) has a config but no key files: the repository is damaged (restore keys/ from a copy)")
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

    /// The plaintext of an unpacked object from its framing (after decryption); public for the fuzz targets.
    public static func decodeObjectFraming(_ framed: [UInt8]) throws -> [UInt8] { try decodeUnpacked(framed) }

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
        if type != .locks { try checkFence() }
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
        } catch {
            throw LifeboatError.corrupt("\(h) is damaged: \(error)")
        }
    }

    // MARK: - Index

    /// Loads every index file. A damaged index file goes to `onError` if given; otherwise it is thrown with
    /// `strict` (prune, and anything else that would delete what an unreadable index names), or skipped and
    /// reported (`onDamage`, `damagedObjects`): the blobs it lists are then unknown, which costs a re-upload in
    /// a backup and names those files in a restore, but never stops the rest of the repository.
    ///
    /// An index file that vanishes between listing and reading was replaced by a prune, which writes
    /// the replacement before deleting: everything read is then thrown away and the index is read again from a
    /// fresh listing. Files of two generations are never merged: an older file's "live" entry for a pack that a
    /// newer pass marked and swept would otherwise survive, and a backup would deduplicate against deleted data.
    public func loadIndex(strict: Bool = false, onError: ((ID, Error) throws -> Void)? = nil) async throws {
        var loaded: [ID: [IndexPack]] = [:]
        var vanished = Set<ID>()
        for attempt in 0..<5 {
            loaded = [:]
            let files = try await backend.list(.index).compactMap { ID(hex: $0.name) }
            var missing = false
            let results = await boundedMap(files, width: 8) { f -> (ID, Result<[IndexPack], Error>) in
                do { return (f, .success(try IndexFormat.decode(try await self.loadUnpacked(.index, f)))) } catch { return (f, .failure(error)) }
            }
            var damaged: [(ID, Error)] = []
            for (f, r) in results {
                switch r {
                case .success(let packs): loaded[f] = packs
                case .failure(let e as LifeboatError) where e.code == .notFound:
                    missing = true
                    vanished.insert(f)
                case .failure(let e): damaged.append((f, e))
                }
            }
            if !missing {
                // Damage is reported for the generation that is kept, once.
                for (f, e) in damaged {
                    if let onError { try onError(f, e) } else if strict {
                        throw LifeboatError(.corrupt, "index file \(f.short) is damaged (run `lifeboat repair index`)", underlying: e as? LifeboatError)
                    } else {
                        reportDamage(.index, f, e)
                    }
                }
                break
            }
            if attempt == 4 { throw LifeboatError(.io, "index files keep vanishing while being read (\(vanished.count)); try again") }
        }
        state.withLock { s in
            var idx = MasterIndex()
            s.indexFiles = [:]
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
        // Reading a pack back takes as long again as writing it: let that overlap the next uploads.
        let limit = readBackUploads.load(ordering: .relaxed) ? backend.writeConcurrency + 2 : backend.writeConcurrency
        let oldest = uploads.withLock { u -> Task<Void, Error>? in
            u.append(task)
            return u.count > limit ? u.removeFirst() : nil
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
        try checkFence()
        let data = pb.data
        let id = sha256ID(data)
        if !dryRun { try await backend.write(Handle(.data, id.hex), data: data) }
        if !dryRun && readBackUploads.load(ordering: .relaxed) {
            try await verifyStoredPack(IndexPack(id: id, salt: pb.salt, blobs: pb.blobs))
        }
        if !dryRun, let cache = backend as? CachingBackend, pb.blobs.contains(where: { $0.type == .tree }) {
            cache.storeTreePack(id.hex, data)
        }
        let ip = IndexPack(id: id, salt: pb.salt, blobs: pb.blobs)
        let flush = state.withLock { s -> Bool in
            s.index.add(ip)
            for b in pb.blobs { s.pending.remove(PendingKey(type: b.type, id: b.id)) }
            s.unindexed.append(ip)
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
    /// With `verifyBlobs`, every blob must also open and match its ID.
    public func readUnindexedPack(_ name: String, verifyBlobs: Bool = false) async -> IndexPack? {
        guard let id = ID(hex: name), let data = try? await backend.read(Handle(.data, name)),
              sha256ID(data) == id, let header = try? PackFormat.parseHeader(data, master: master) else { return nil }
        let pack = IndexPack(id: id, salt: header.salt, blobs: header.blobs)
        if verifyBlobs { guard (try? verifyPackData(pack, data)) != nil else { return nil } }
        return pack
    }

    /// Reads a stored pack back and checks it: its SHA-256 must be its name and every blob must open and match
    /// its ID.
    public func verifyStoredPack(_ p: IndexPack) async throws {
        let data = try await backend.read(Handle(.data, p.id.hex))
        guard sha256ID(data) == p.id else {
            throw LifeboatError.corrupt("pack \(p.id.short) reads back from \(backend.location) with a different SHA-256")
        }
        try verifyPackData(p, data)
        state.withLock { $0.stats.packsVerified += 1 }
    }

    func verifyPackData(_ p: IndexPack, _ data: Data) throws {
        for b in p.blobs {
            let start = Int(b.offset), end = Int(b.offset) + Int(b.length)
            guard end <= data.count else { throw LifeboatError.corrupt("pack \(p.id.short) is truncated") }
            try verifyBlob(data[start..<end], location: BlobLocation(pack: p.id, salt: p.salt, blob: b))
        }
    }

    /// What a pack holds, read from its header alone with ranged reads (the salt at the start, the header at the
    /// end): `repair index` rebuilds the index this way without downloading pack data. The header is
    /// authenticated; the pack's content hash is not checked (that needs every byte: `check --read-data`).
    public func readPackHeader(_ id: ID, size: Int) async throws -> IndexPack {
        let h = Handle(.data, id.hex)
        guard size >= PackFormat.headerStart + Seal.tagSize + 4, size <= PackFormat.maxPackSize else {
            throw LifeboatError.corrupt("pack \(id.short) has an impossible size of \(size) bytes")
        }
        // One read of the start and one of the end usually suffice (a header is 42 bytes per blob).
        let head = try await backend.read(h, range: 0..<PackFormat.headerStart)
        guard Array(head.prefix(4)) == PackFormat.magic else { throw LifeboatError.corrupt("pack \(id.short) does not start like a pack") }
        let salt = Array(head.dropFirst(4))
        let guess = min(size - PackFormat.headerStart, 64 * 1024)
        var tail = try await backend.read(h, range: (size - guess)..<size)
        guard tail.count == guess else { throw LifeboatError.corrupt("pack \(id.short) is shorter than listed") }
        let hlen = try PackFormat.headerLength(tail: tail.suffix(4), packSize: size)
        if hlen + 4 > guess { tail = try await backend.read(h, range: (size - 4 - hlen)..<size) }
        let sealed = Data(tail.suffix(hlen + 4).prefix(hlen))
        let blobs = try PackFormat.openHeader(sealed, salt: salt, packSize: size, master: master)
        return IndexPack(id: id, salt: salt, blobs: blobs)
    }

    /// Drops from the in-memory index every pack that storage no longer has, so that a backup stores that data
    /// again instead of referencing it (a pack deleted by hand, a failed disk sector, a bucket lifecycle rule).
    /// Returns the missing packs. One listing of the data folder; the index is rebuilt only if something is missing.
    public func forgetMissingPacks() async throws -> [ID] {
        let stored = Set(try await backend.list(.data).compactMap { ID(hex: $0.name) })
        // A listing can be incomplete (a flaky site, an eventually consistent one): each pack it lacks is looked
        // up on its own before it counts as lost.
        var missing: [ID] = []
        for p in index.packIDs where !stored.contains(p) {
            do { _ = try await backend.stat(Handle(.data, p.hex)) } catch let e as StorageError where e.kind == .notFound {
                missing.append(p)
            }
        }
        return state.withLock { s -> [ID] in
            guard !missing.isEmpty else { return [] }
            let gone = Set(missing)
            var idx = MasterIndex()
            for p in s.index.allPacks() where !gone.contains(p.id) { idx.add(p, bulk: true) }
            idx.rebuild()
            s.index = idx
            return missing
        }
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

    /// Reads, authenticates, decompresses and verifies one blob. When a copy is missing or damaged, the other
    /// copies the index knows are tried (live packs first), so one lost pack costs only what exists nowhere else.
    public func loadBlob(_ type: BlobType, _ id: ID) async throws -> [UInt8] {
        let idx = index
        guard let first = idx.lookup(id, type: type) else {
            throw LifeboatError(.notFound, "\(type == .tree ? "tree" : "data") blob \(id.short) is not in the index")
        }
        do {
            return try await loadBlob(at: first)
        } catch let e as LifeboatError where e.code == .corrupt {
            for loc in idx.lookupAll(id) where loc.blob.type == type && loc != first {
                if let b = try? await loadBlob(at: loc) { return b }
            }
            throw e
        }
    }

    /// Reads and opens the blob at one location.
    public func loadBlob(at loc: BlobLocation) async throws -> [UInt8] {
        let start = Int(loc.blob.offset)
        let sealed: Data
        do {
            sealed = try await backend.read(Handle(.data, loc.pack.hex), range: start..<(start + Int(loc.blob.length)))
        } catch let e as StorageError where e.kind == .notFound || e.kind == .invalidRange {
            throw LifeboatError.corrupt("pack \(loc.pack.short) holding blob \(loc.blob.id.short) is missing or truncated")
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

    /// All snapshots, oldest first. A damaged one goes to `onError` if given; otherwise it is thrown with `strict`
    /// (prune: an unreadable snapshot's data must not be deleted), or skipped and reported (`onDamage`).
    public func listSnapshots(strict: Bool = false, onError: ((ID, Error) -> Void)? = nil) async throws -> [(id: ID, snapshot: Snapshot)] {
        let ids = try await backend.list(.snapshots).compactMap { ID(hex: $0.name) }
        var out: [(id: ID, snapshot: Snapshot)] = []
        let results = await boundedMap(ids, width: 16) { id -> (ID, Result<Snapshot, Error>) in
            do { return (id, .success(try await self.loadSnapshot(id))) } catch { return (id, .failure(error)) }
        }
        for (id, r) in results {
            switch r {
            case .success(let s): out.append((id, s))
            case .failure(let e as LifeboatError) where e.code == .notFound:
                break  // removed by a concurrent forget after the listing
            case .failure(let e):
                if let onError { onError(id, e) } else if strict {
                    throw LifeboatError(.corrupt, "snapshot \(id.short) is damaged; prune cannot tell what it needs (remove it with `lifeboat forget \(id.short)` or restore it from a copy)", underlying: e as? LifeboatError)
                } else {
                    reportDamage(.snapshots, id, e)
                }
            }
        }
        return out.sorted { ($0.snapshot.date, $0.id) < ($1.snapshot.date, $1.id) }
    }

    // MARK: - Keys

    /// Every key file: the intact ones with their contents, damaged or foreign ones with what is wrong
    /// (so that `key list` shows them and `key remove` can remove them).
    public func listKeys() async throws -> [(id: ID, key: KeyFile?, problem: String?)] {
        var out: [(id: ID, key: KeyFile?, problem: String?)] = []
        for k in try await backend.list(.keys) {
            switch try await Repository.readKey(backend: backend, name: k.name) {
            case .usable(let id, let kf): out.append((id, kf, nil))
            case .damaged(let id, let why): out.append((id, nil, "damaged: \(why)"))
            case .foreign(let id, let what): out.append((id, nil, "a \(what) key file"))
            case nil: break
            }
        }
        return out.sorted { ($0.key?.created ?? "", $0.id) < ($1.key?.created ?? "", $1.id) }
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
