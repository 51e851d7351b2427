import Crypto
import Foundation
import Synchronization
import LifeboatCore
import LifeboatCrypto

/// The type of a blob.
public enum BlobType: UInt8, Sendable, Codable {
    case data = 0
    case tree = 1
}

/// Where a blob lives inside a pack, as the pack header and the index record it.
public struct PackedBlob: Sendable, Equatable {
    public var type: BlobType
    public var id: ID
    /// Offset of the sealed blob in the pack file.
    public var offset: UInt32
    /// Sealed length (compressed length + 16-byte tag).
    public var length: UInt32
    /// Plaintext length before compression.
    public var rawLength: UInt32
    public var compressed: Bool

    public init(type: BlobType, id: ID, offset: UInt32, length: UInt32, rawLength: UInt32, compressed: Bool) {
        self.type = type; self.id = id; self.offset = offset; self.length = length
        self.rawLength = rawLength; self.compressed = compressed
    }
}

/// Pack file format (see docs/FORMAT.md):
///
///     "LBP1" | salt (32) | blob 0 | blob 1 | ... | sealed header | header length (u32 LE)
///
/// Each pack has its own key, HKDF(master, salt). A blob's nonce is its offset in the pack (unique, > 0);
/// the header's nonce is 0. The file's name is the SHA-256 of all its bytes.
public enum PackFormat {
    public static let magic: [UInt8] = Array("LBP1".utf8)
    public static let headerStart = 4 + Seal.saltSize
    static let headerEntrySize = 1 + 1 + 4 + 4 + 32

    /// Encodes and seals the header for `blobs`.
    static func sealedHeader(_ blobs: [PackedBlob], key: SymmetricKey) -> Data {
        var w = BinaryWriter()
        for b in blobs {
            w.u8(b.type.rawValue)
            w.u8(b.compressed ? 1 : 0)
            w.u32(b.rawLength)
            w.u32(b.length)
            w.id(b.id)
        }
        return Seal.seal(w.bytes, key: key, counter: 0)
    }

    /// The largest pack this program writes (512 MiB) with room to spare; offsets are 32-bit.
    public static let maxPackSize = Int(UInt32.max)

    /// Parses a whole pack file's header (the pack's bytes must be complete).
    public static func parseHeader(_ pack: Data, master: MasterKey) throws -> (salt: [UInt8], blobs: [PackedBlob]) {
        guard pack.count >= headerStart + Seal.tagSize + 4, Array(pack.prefix(4)) == magic else {
            throw LifeboatError.corrupt("not a pack file (bad magic or too short)")
        }
        let salt = Array(pack[pack.startIndex + 4..<pack.startIndex + headerStart])
        let hlen = try headerLength(tail: pack.suffix(4), packSize: pack.count)
        let sealed = Data(pack[(pack.startIndex + pack.count - 4 - hlen)..<(pack.startIndex + pack.count - 4)])
        return (salt, try openHeader(sealed, salt: salt, packSize: pack.count, master: master))
    }

    /// The sealed header's length from a pack's last four bytes, checked against the pack's size.
    public static func headerLength<D: DataProtocol>(tail: D, packSize: Int) throws -> Int {
        guard tail.count == 4, packSize >= headerStart + Seal.tagSize + 4, packSize <= maxPackSize else {
            throw LifeboatError.corrupt("pack size \(packSize) is impossible")
        }
        let t = Array(tail)
        let hlen = Int(UInt32(t[0]) | UInt32(t[1]) << 8 | UInt32(t[2]) << 16 | UInt32(t[3]) << 24)
        guard hlen >= Seal.tagSize, hlen <= packSize - 4 - headerStart else { throw LifeboatError.corrupt("pack header length \(hlen) is invalid") }
        return hlen
    }

    /// Opens and parses a sealed header; every blob must lie between the salt and the header, end to end.
    public static func openHeader(_ sealed: Data, salt: [UInt8], packSize: Int, master: MasterKey) throws -> [PackedBlob] {
        let hstart = packSize - 4 - sealed.count
        guard salt.count == Seal.saltSize, hstart >= headerStart else { throw LifeboatError.corrupt("pack header length is invalid") }
        let plain = try Seal.open(sealed, key: master.subkey(salt: salt), counter: 0)
        return try entries(Array(plain), dataEnd: hstart)
    }

    /// The blobs a decrypted header lists; they must lie end to end from the salt to `dataEnd` (where the
    /// sealed header starts).
    public static func entries(_ plain: [UInt8], dataEnd hstart: Int) throws -> [PackedBlob] {
        guard hstart >= headerStart, hstart <= maxPackSize else { throw LifeboatError.corrupt("pack header length is invalid") }
        guard plain.count % headerEntrySize == 0 else { throw LifeboatError.corrupt("pack header has a partial entry") }
        var r = BinaryReader(plain, what: "pack header")
        var blobs: [PackedBlob] = []
        blobs.reserveCapacity(plain.count / headerEntrySize)
        var offset = headerStart
        while !r.atEnd {
            guard let type = BlobType(rawValue: try r.u8()) else { throw LifeboatError.corrupt("pack header has an unknown blob type") }
            let comp = try r.u8()
            let raw = try r.u32()
            let len = try r.u32()
            let id = try r.id()
            guard len >= UInt32(Seal.tagSize), Int(len) <= hstart - offset else {
                throw LifeboatError.corrupt("pack header names a blob of \(len) bytes beyond the pack's data")
            }
            blobs.append(PackedBlob(type: type, id: id, offset: UInt32(offset), length: len, rawLength: raw, compressed: comp == 1))
            offset += Int(len)
        }
        guard offset == hstart else { throw LifeboatError.corrupt("pack header does not describe the pack's bytes") }
        return blobs
    }
}

/// Accumulates sealed blobs into one pack file in memory.
struct PackBuilder {
    let salt: [UInt8]
    let key: SymmetricKey
    var data: Data
    var blobs: [PackedBlob] = []

    init(master: MasterKey, capacity: Int) {
        salt = Seal.randomBytes(Seal.saltSize)
        key = master.subkey(salt: salt)
        data = Data(capacity: capacity)
        data.append(contentsOf: PackFormat.magic)
        data.append(contentsOf: salt)
    }

    var size: Int { data.count }

    /// Seals `payload` (already compressed or not) at the end of the pack.
    mutating func add(type: BlobType, id: ID, payload: UnsafeRawBufferPointer, rawLength: Int, compressed: Bool) -> PackedBlob {
        let offset = data.count
        Seal.seal(payload, key: key, counter: UInt64(offset), appendingTo: &data)
        let b = PackedBlob(type: type, id: id, offset: UInt32(offset), length: UInt32(data.count - offset),
                           rawLength: UInt32(rawLength), compressed: compressed)
        blobs.append(b)
        return b
    }

    /// Appends the header: the pack's bytes are complete (hashing them for the name can happen elsewhere, as it
    /// only reads). Consumes the builder, so the bytes are never copied.
    consuming func finish() -> FinishedPack {
        let header = PackFormat.sealedHeader(blobs, key: key)
        data.append(header)
        var len = UInt32(header.count).littleEndian
        withUnsafeBytes(of: &len) { data.append(contentsOf: $0) }
        return FinishedPack(salt: salt, blobs: blobs, data: data)
    }
}

/// A complete pack, ready to be named (SHA-256) and uploaded.
struct FinishedPack: Sendable {
    let salt: [UInt8]
    let blobs: [PackedBlob]
    let data: Data
}

/// Where blobs of one type are packed: a few builders, each behind its own lock, so that several tasks seal
/// blobs at once without holding the repository's lock. A saver takes the first free slot; when all are busy it
/// waits for one (there are as many as cores, so a wait means the cores are busy anyway). Memory: at most
/// `slots` open packs per type.
final class PackSlots: Sendable {
    final class Slot: Sendable { let open = Mutex<PackBuilder?>(nil) }
    let slots: [Slot]
    let next = Atomic<Int>(0)

    init(count: Int) {
        slots = (0..<max(1, count)).map { _ in Slot() }
    }

    /// Seals the payload into some open pack (a new one if needed); returns the blob's place and, if that
    /// pack reached `packSize`, the finished pack to upload.
    func add(type: BlobType, id: ID, payload: UnsafeRawBufferPointer, rawLength: Int, compressed: Bool,
             packSize: Int, newBuilder: () -> PackBuilder) -> (PackedBlob, FinishedPack?) {
        func fill(_ slot: inout PackBuilder?) -> (PackedBlob, FinishedPack?) {
            if slot == nil { slot = newBuilder() }
            let b = slot!.add(type: type, id: id, payload: payload, rawLength: rawLength, compressed: compressed)
            if slot!.size >= packSize { return (b, slot.take()!.finish()) }
            return (b, nil)
        }
        let start = next.add(1, ordering: .relaxed).oldValue
        for k in 0..<slots.count {
            if let r = slots[(start + k) % slots.count].open.withLockIfAvailable({ fill(&$0) }) { return r }
        }
        return slots[start % slots.count].open.withLock { fill(&$0) }
    }

    /// Takes every open pack (for `flush`), finished.
    func takeAll() -> [FinishedPack] {
        slots.compactMap { slot in slot.open.withLock { s -> FinishedPack? in
            guard let b = s.take(), !b.blobs.isEmpty else { return nil }
            return b.finish()
        } }
    }
}
