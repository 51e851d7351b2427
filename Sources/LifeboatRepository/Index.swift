import Foundation
import LifeboatCore

/// One pack as an index file records it.
public struct IndexPack: Sendable, Equatable {
    public var id: ID
    /// The pack's key salt (also stored in the pack), so a blob is read with one ranged read.
    public var salt: [UInt8]
    /// When prune marked this pack for deletion (Unix seconds); nil while the pack is live.
    public var markedAt: Int64?
    public var blobs: [PackedBlob]

    public init(id: ID, salt: [UInt8], markedAt: Int64? = nil, blobs: [PackedBlob]) {
        self.id = id; self.salt = salt; self.markedAt = markedAt; self.blobs = blobs
    }

    /// Bytes the pack file occupies.
    public var packSize: Int {
        PackFormat.headerStart + blobs.reduce(0) { $0 + Int($1.length) }
            + blobs.count * PackFormat.headerEntrySize + 16 + 4
    }
}

/// Index file format (plaintext, before compression and sealing):
///
///     "LBI1" | u32 pack count | per pack: id(32) salt(32) markedAt(i64, 0 = live) u32 blob count
///     | per blob: type(u8) compressed(u8) offset(u32) length(u32) rawLength(u32) id(32)
public enum IndexFormat {
    static let magic: [UInt8] = Array("LBI1".utf8)
    /// The largest plaintext a blob may have (a chunk is at most the chunker's maximum; trees are far smaller).
    public static let maxRawLength = 1 << 30

    public static func encode(_ packs: [IndexPack]) -> [UInt8] {
        var w = BinaryWriter()
        w.raw(magic)
        w.u32(UInt32(packs.count))
        for p in packs {
            w.id(p.id)
            w.raw(p.salt)
            w.i64(p.markedAt ?? 0)
            w.u32(UInt32(p.blobs.count))
            for b in p.blobs {
                w.u8(b.type.rawValue)
                w.u8(b.compressed ? 1 : 0)
                w.u32(b.offset)
                w.u32(b.length)
                w.u32(b.rawLength)
                w.id(b.id)
            }
        }
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws -> [IndexPack] {
        var r = BinaryReader(bytes, what: "index")
        guard try r.raw(4) == magic else { throw LifeboatError.corrupt("index has a bad magic number") }
        let n = Int(try r.u32())
        var packs: [IndexPack] = []
        // A pack record is at least 76 bytes: never reserve more than the bytes can hold.
        packs.reserveCapacity(min(n, bytes.count / 76))
        for _ in 0..<n {
            let id = try r.id()
            let salt = try r.raw(32)
            let marked = try r.i64()
            let count = Int(try r.u32())
            try r.need(count * 46)
            var blobs: [PackedBlob] = []
            blobs.reserveCapacity(count)
            for _ in 0..<count {
                guard let type = BlobType(rawValue: try r.u8()) else { throw LifeboatError.corrupt("index has an unknown blob type") }
                let comp = try r.u8() == 1
                let off = try r.u32(), len = try r.u32(), raw = try r.u32()
                // Every number is checked here, once, so that readers can trust them: a blob lies inside a pack
                // (after its salt, within 32-bit offsets), holds at least its tag, and expands to at most 1 GiB.
                guard Int(off) >= PackFormat.headerStart, len >= 16, UInt64(off) + UInt64(len) <= UInt64(UInt32.max),
                      Int(raw) <= IndexFormat.maxRawLength, comp || UInt64(len) == UInt64(raw) + 16 else {
                    throw LifeboatError.corrupt("index has an impossible blob entry (offset \(off), length \(len), raw length \(raw))")
                }
                blobs.append(PackedBlob(type: type, id: try r.id(), offset: off, length: len, rawLength: raw, compressed: comp))
            }
            packs.append(IndexPack(id: id, salt: salt, markedAt: marked == 0 ? nil : marked, blobs: blobs))
        }
        guard r.atEnd else { throw LifeboatError.corrupt("index has trailing bytes") }
        return packs
    }
}

/// Where a blob can be read: the answer of an index lookup.
public struct BlobLocation: Sendable, Equatable {
    public var pack: ID
    public var salt: [UInt8]
    public var blob: PackedBlob
    public init(pack: ID, salt: [UInt8], blob: PackedBlob) { self.pack = pack; self.salt = salt; self.blob = blob }
}

/// The in-memory index of all blobs: 48 bytes per blob in a sorted array, plus a small directory
/// of offsets by ID prefix, so a lookup is O(1) on average (IDs are uniformly distributed).
/// Blobs added during this run live in a small hash table until the next rebuild.
public struct MasterIndex: Sendable {
    struct Entry: Sendable {
        var id: ID
        /// Pack number; the top bit is set for tree blobs.
        var pack: UInt32
        var offset: UInt32
        var length: UInt32
        var rawLength: UInt32
    }

    public private(set) var packIDs: [ID] = []
    var packSalts: [[UInt8]] = []
    public private(set) var packMarks: [Int64?] = []
    var packNumber: [ID: UInt32] = [:]
    var entries: [Entry] = []
    var directory: [UInt32] = [0, 0]
    var directoryBits = 0
    var overlay: [ID: [Entry]] = [:]

    public init() {}

    public var blobCount: Int { entries.count + overlay.values.reduce(0) { $0 + $1.count } }
    public var packCount: Int { packIDs.count }

    /// Adds packs (from index files or new uploads). Call `rebuild()` after bulk loads.
    public mutating func add(_ pack: IndexPack, bulk: Bool = false) {
        let n: UInt32
        if let existing = packNumber[pack.id] {
            n = existing
            // A mark by prune wins over a plain listing of the same pack.
            if let m = pack.markedAt { packMarks[Int(n)] = m }
            return
        }
        n = UInt32(packIDs.count)
        packIDs.append(pack.id)
        packSalts.append(pack.salt)
        packMarks.append(pack.markedAt)
        packNumber[pack.id] = n
        for b in pack.blobs {
            let e = Entry(id: b.id, pack: n | (b.type == .tree ? 0x8000_0000 : 0), offset: b.offset,
                          length: b.length, rawLength: b.rawLength)
            if bulk { entries.append(e) } else { overlay[b.id, default: []].append(e) }
        }
    }

    /// Sorts the bulk entries, merges the overlay and rebuilds the prefix directory.
    public mutating func rebuild() {
        for (_, es) in overlay { entries.append(contentsOf: es) }
        overlay = [:]
        entries.sort { $0.id < $1.id }
        directoryBits = max(1, min(24, (entries.count / 4).bitWidthNeeded))
        let size = 1 << directoryBits
        directory = [UInt32](repeating: 0, count: size + 1)
        var i = 0
        for bucket in 0..<size {
            directory[bucket] = UInt32(i)
            while i < entries.count && Int(entries[i].id.w0 >> UInt64(64 - directoryBits)) == bucket { i += 1 }
        }
        directory[size] = UInt32(entries.count)
        entries.reserveCapacity(entries.count)
    }

    func candidates(_ id: ID) -> [Entry] {
        var out: [Entry] = overlay[id] ?? []
        if !entries.isEmpty {
            let bucket = Int(id.w0 >> UInt64(64 - directoryBits))
            var lo = Int(directory[bucket]), hi = Int(directory[bucket + 1])
            while lo < hi {
                let mid = (lo + hi) / 2
                if entries[mid].id < id { lo = mid + 1 } else { hi = mid }
            }
            while lo < entries.count && entries[lo].id == id { out.append(entries[lo]); lo += 1 }
        }
        return out
    }

    func location(_ e: Entry) -> BlobLocation {
        let n = Int(e.pack & 0x7FFF_FFFF)
        let type: BlobType = e.pack & 0x8000_0000 != 0 ? .tree : .data
        let compressed = e.length < e.rawLength &+ 16
        return BlobLocation(pack: packIDs[n], salt: packSalts[n],
                            blob: PackedBlob(type: type, id: e.id, offset: e.offset, length: e.length,
                                             rawLength: e.rawLength, compressed: compressed))
    }

    /// Where to read a blob: a copy in a live pack if there is one, else in a marked pack.
    public func lookup(_ id: ID, type: BlobType) -> BlobLocation? {
        let all = candidates(id).filter { ($0.pack & 0x8000_0000 != 0) == (type == .tree) }
        if let live = all.first(where: { packMarks[Int($0.pack & 0x7FFF_FFFF)] == nil }) { return location(live) }
        return all.first.map(location)
    }

    /// Every stored copy of a blob.
    public func lookupAll(_ id: ID) -> [BlobLocation] { candidates(id).map(location) }

    /// True when the blob is in a live (unmarked) pack: new data may be deduplicated against it.
    public func hasLive(_ id: ID, type: BlobType) -> Bool {
        candidates(id).contains { ($0.pack & 0x8000_0000 != 0) == (type == .tree) && packMarks[Int($0.pack & 0x7FFF_FFFF)] == nil }
    }

    /// All packs with their blobs, reconstructed (for prune and for writing index files).
    public func allPacks() -> [IndexPack] {
        var blobs = [[PackedBlob]](repeating: [], count: packIDs.count)
        func visit(_ e: Entry) { blobs[Int(e.pack & 0x7FFF_FFFF)].append(location(e).blob) }
        entries.forEach(visit)
        overlay.values.forEach { $0.forEach(visit) }
        return packIDs.indices.map {
            IndexPack(id: packIDs[$0], salt: packSalts[$0], markedAt: packMarks[$0],
                      blobs: blobs[$0].sorted { $0.offset < $1.offset })
        }
    }

    public func contains(pack: ID) -> Bool { packNumber[pack] != nil }

}

extension Int {
    var bitWidthNeeded: Int { self <= 1 ? 1 : Int.bitWidth - (self - 1).leadingZeroBitCount }
}
