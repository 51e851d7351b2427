import Foundation
import Synchronization
import Testing
import LifeboatCore
import LifeboatCrypto
import LifeboatStorage
import LifeboatTestSupport
@testable import LifeboatRepository

/// Key files, index files and pack headers written by someone hostile: each is told apart and contained.
@Suite struct KeyFileTests {
    @Test func foreignDamagedAndWrongPasswordAreToldApart() async throws {
        // restic's key format in an otherwise empty "repository".
        let restic = MemoryBackend()
        try await restic.write(.config, data: Data("x".utf8))
        let rk = Data(#"{"created":"2024-01-01T00:00:00Z","username":"u","hostname":"h","kdf":"scrypt","N":32768,"r":8,"p":3,"salt":"AAAA","data":"AAAA"}"#.utf8)
        try await restic.write(Handle(.keys, sha256ID(rk).hex), data: rk)
        await #expect { try await Repository.open(backend: restic, password: "pw") } throws: {
            guard let e = $0 as? LifeboatError else { return false }
            return e.code == .noRepository && e.message.contains("restic")
        }

        // A Lifeboat repository whose only key is damaged: not "wrong password".
        let b = MemoryBackend()
        _ = try await newRepo(b)
        let key = try await b.list(.keys)[0].name
        b.tamper(Handle(.keys, key)) { $0.removeLast(20) }
        await #expect { try await Repository.open(backend: b, password: "pw") } throws: {
            guard let e = $0 as? LifeboatError else { return false }
            return e.code == .corrupt && e.message.contains(String(key.prefix(8)))
        }

        // Damaged key beside a good one: the good one opens; a wrong password is still "wrong password".
        let c = MemoryBackend()
        let repo = try await newRepo(c)
        try await repo.addKey(password: "second", kdf: cheap)
        let k2 = try await c.list(.keys).map(\.name).first { $0 != repo.keyID.hex }!
        c.tamper(Handle(.keys, k2)) { $0[10] ^= 0x55 }
        _ = try await Repository.open(backend: c, password: "pw")
        await #expect { try await Repository.open(backend: c, password: "nope") } throws: { ($0 as? LifeboatError)?.code == .wrongPassword }
        let listed = try await repo.listKeys()
        #expect(listed.count == 2 && listed.contains { $0.problem != nil })
    }

    @Test func costlyScryptParametersAreRefusedBeforeAnyWork() async throws {
        #expect(ScryptParameters(n: 1 << 22, r: 32, p: 16).problem != nil)
        #expect(ScryptParameters(n: 1 << 20, r: 8, p: 1).problem != nil, "1 GiB of memory")
        #expect(ScryptParameters(n: 1 << 15, r: 8, p: 3).problem == nil, "the default")
        #expect(ScryptParameters(n: 1000, r: 8, p: 1).problem != nil, "not a power of two")
        let b = MemoryBackend()
        _ = try await newRepo(b)
        // A planted key with huge parameters, named to sort first.
        var kf = try KeyFile.create(master: MasterKey.random(), password: "x", parameters: cheap, hostname: "h", username: "u", now: Date())
        kf.scrypt = ScryptParameters(n: 1 << 22, r: 32, p: 16)
        let data = try JSONEncoder().encode(kf)
        try await b.write(Handle(.keys, sha256ID(data).hex), data: data)
        let start = Date()
        _ = try await Repository.open(backend: b, password: "pw")
        #expect(Date().timeIntervalSince(start) < 30, "the hostile key was not derived")
        let listed = try await (try await Repository.open(backend: b, password: "pw")).listKeys()
        #expect(listed.contains { $0.problem?.contains("scrypt") == true })
    }
}

@Suite struct HostileIndexTests {
    func entry(offset: UInt32, length: UInt32, raw: UInt32, compressed: Bool) -> [UInt8] {
        let p = IndexPack(id: ID(bytes: [UInt8](repeating: 1, count: 32)), salt: [UInt8](repeating: 0, count: 32),
                          blobs: [PackedBlob(type: .data, id: ID(bytes: [UInt8](repeating: 2, count: 32)), offset: offset,
                                             length: length, rawLength: raw, compressed: compressed)])
        return IndexFormat.encode([p])
    }

    @Test func impossibleEntriesAreDamage() {
        #expect(throws: Never.self) { try IndexFormat.decode(entry(offset: 36, length: 116, raw: 100, compressed: false)) }
        #expect(throws: Never.self) { try IndexFormat.decode(entry(offset: 36, length: 50, raw: 1000, compressed: true)) }
        #expect(throws: LifeboatError.self) { try IndexFormat.decode(entry(offset: 0xFFFF_FFF0, length: 0x100, raw: 1, compressed: true)) }
        #expect(throws: LifeboatError.self) { try IndexFormat.decode(entry(offset: 36, length: 50, raw: 0xFFFF_FFF0, compressed: true)) }
        #expect(throws: LifeboatError.self) { try IndexFormat.decode(entry(offset: 36, length: 8, raw: 1, compressed: true)) }
        #expect(throws: LifeboatError.self) { try IndexFormat.decode(entry(offset: 2, length: 50, raw: 10, compressed: true)) }
        #expect(throws: LifeboatError.self) { try IndexFormat.decode(entry(offset: 36, length: 50, raw: 10, compressed: false)) }
        // A count of 2^32 - 1 packs in a 12-byte file reserves nothing big and fails cleanly.
        #expect(throws: LifeboatError.self) { try IndexFormat.decode(Array("LBI1".utf8) + [0xFF, 0xFF, 0xFF, 0xFF]) }
    }

    @Test func hostileFramingCannotDemandGigabytes() async throws {
        let b = MemoryBackend()
        let repo = try await newRepo(b)
        // A snapshot object that claims to expand to 4 GiB.
        let framed: [UInt8] = [1, 0xFF, 0xFF, 0xFF, 0xFF, 0x28, 0xB5, 0x2F, 0xFD, 0, 0, 0, 0]
        let sealed = Seal.sealObject(Data(framed), master: repo.master)
        try await b.write(Handle(.snapshots, sha256ID(sealed).hex), data: sealed)
        await #expect(throws: LifeboatError.self) { try await repo.loadUnpacked(.snapshots, sha256ID(sealed)) }
    }

    @Test func packHeadersReadWithRangesMatchTheWholePack() async throws {
        let b = MemoryBackend()
        let repo = try await newRepo(b)
        for i in 0..<30 { _ = try await repo.saveBlob(.data, blobData(i)) }
        try await repo.flush()
        for o in try await b.list(.data) {
            let id = ID(hex: o.name)!
            let viaRanges = try await repo.readPackHeader(id, size: o.size)
            let whole = await repo.readUnindexedPack(o.name)
            #expect(viaRanges == whole)
        }
        // Impossible sizes and truncated packs are errors, not traps.
        let one = try await b.list(.data)[0]
        await #expect(throws: (any Error).self) { try await repo.readPackHeader(ID(hex: one.name)!, size: Int.max) }
        await #expect(throws: (any Error).self) { try await repo.readPackHeader(ID(hex: one.name)!, size: 10) }
        b.tamper(Handle(.data, one.name)) { $0.removeLast(3) }
        await #expect(throws: (any Error).self) { try await repo.readPackHeader(ID(hex: one.name)!, size: one.size) }
    }
}

/// Seeds and crashing inputs found by `make fuzz` for the repository's decoders, replayed.
@Suite struct RepositoryFuzzRegressionTests {
    @Test func decodersRefuseOrDecodeEveryInput() {
        for i in fuzzInputs("index") { _ = try? IndexFormat.decode(i) }
        for i in fuzzInputs("object") { _ = try? Repository.decodeObjectFraming(i) }
        for i in fuzzInputs("packheader") where i.count >= 8 {
            let size = i[0..<8].reduce(0) { $0 << 8 | Int($1) } & Int.max
            _ = try? PackFormat.headerLength(tail: i.suffix(4), packSize: size)
            _ = try? PackFormat.entries(Array(i.dropFirst(8)), dataEnd: size)
        }
    }
}

/// Runs a hook when an index file other than `first` is read, once `first` has been read: as a prune pass
/// replacing index files between a reader's listing and its reads, after the reader got `first`.
final class IndexReplacedDuringRead: Backend, Sendable {
    let inner: MemoryBackend
    let hook = Mutex<(@Sendable () async throws -> Void)?>(nil)
    let first = Mutex<String>("")
    let firstDone = Mutex(false)
    init(_ inner: MemoryBackend) { self.inner = inner }
    var location: String { inner.location }
    func list(_ type: ObjectType) async throws -> [ObjectInfo] { try await inner.list(type) }
    func stat(_ handle: Handle) async throws -> ObjectInfo { try await inner.stat(handle) }
    func read(_ handle: Handle, range: Range<Int>?) async throws -> Data {
        guard handle.type == .index else { return try await inner.read(handle, range: range) }
        let isFirst = handle.name == first.withLock { $0 }
        if !isFirst, let h = hook.withLock({ h -> (@Sendable () async throws -> Void)? in defer { h = nil }; return h }) {
            for _ in 0..<100_000 where !firstDone.withLock({ $0 }) { await Task.yield() }
            try await h()
        }
        let d = try await inner.read(handle, range: range)
        if isFirst { firstDone.withLock { $0 = true } }
        return d
    }
    func write(_ handle: Handle, data: Data) async throws { try await inner.write(handle, data: data) }
    func delete(_ handle: Handle) async throws { try await inner.delete(handle) }
}

@Suite struct IndexGenerationTests {
    /// A reader that saw an index file vanish reads the whole index again; it never keeps an older file's "live"
    /// entry for a pack the newer generation dropped (a backup would deduplicate against deleted data).
    @Test func vanishedIndexFileMeansAFreshRead() async throws {
        let mem = MemoryBackend()
        let b = IndexReplacedDuringRead(mem)
        let repo = try await newRepo(b)
        let p = IndexPack(id: ID(bytes: [UInt8](repeating: 7, count: 32)), salt: [UInt8](repeating: 0, count: 32),
                          blobs: [PackedBlob(type: .data, id: ID(bytes: [UInt8](repeating: 8, count: 32)), offset: 36, length: 116,
                                             rawLength: 100, compressed: false)])
        let old = try await repo.writeIndex([p])       // the older generation: P live
        let q = IndexPack(id: ID(bytes: [UInt8](repeating: 9, count: 32)), salt: p.salt, blobs: [])
        let other = try await repo.writeIndex([q])
        // Once the reader has the older file, a prune replaces both files with one that no longer lists P.
        b.first.withLock { $0 = old[0].hex }
        b.hook.withLock { $0 = {
            _ = try await repo.writeIndex([q])
            for f in old + other { try await mem.delete(Handle(.index, f.hex)) }
        } }
        let reader = try await Repository.open(backend: b, password: "pw")
        try await reader.loadIndex(strict: true)
        #expect(!reader.index.contains(pack: p.id), "the older generation's entry for P must not survive")
        #expect(reader.index.contains(pack: q.id))
    }
}
