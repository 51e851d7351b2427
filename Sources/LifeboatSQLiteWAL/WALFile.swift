/// SQLite's write-ahead log, read as bytes (https://www.sqlite.org/fileformat.html#the_write_ahead_log).
///
/// A WAL file is a 32-byte header and frames; a frame is a 24-byte header and one page. A frame belongs to the
/// log's current cycle when its salts equal the header's, and is valid when its checksum (a running sum seeded by
/// the header's) matches; a transaction is the frames up to a commit frame (one whose "database size" is not 0).
/// SQLite restarts the log after a full checkpoint: a new header (salt-1 plus one, a new salt-2) and frames from
/// the start of the file again, the old cycle's tail left behind with the old salts. Nothing here trusts the file:
/// every number is checked before use, and a frame that is not valid ends the scan there.

/// What is wrong with bytes that should be a WAL header.
public struct SQLiteWALError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// A page size SQLite allows: a power of two from 512 to 65536.
public func validPageSize(_ n: Int) -> Bool { n >= 512 && n <= 65536 && n & (n - 1) == 0 }

/// A running WAL checksum (the pair of 32-bit sums).
public struct WALChecksum: Sendable, Hashable, CustomStringConvertible {
    public var s1: UInt32
    public var s2: UInt32
    public init(_ s1: UInt32, _ s2: UInt32) { self.s1 = s1; self.s2 = s2 }
    public var description: String { hex8(s1) + hex8(s2) }
    public init?(hex: String) {
        guard hex.utf8.count == 16, let a = UInt32(hex.prefix(8), radix: 16), let b = UInt32(hex.suffix(8), radix: 16) else { return nil }
        s1 = a; s2 = b
    }

    /// Adds `bytes` (a multiple of 8) to the sums; `bigEndian` is the log's word order (magic 0x377f0683).
    public mutating func add(_ bytes: UnsafeRawBufferPointer, bigEndian: Bool) {
        var a = s1, b = s2
        var i = 0
        let n = bytes.count & ~7
        while i < n {
            let x = bytes.loadUnaligned(fromByteOffset: i, as: UInt32.self)
            let y = bytes.loadUnaligned(fromByteOffset: i + 4, as: UInt32.self)
            let w0 = bigEndian ? UInt32(bigEndian: x) : UInt32(littleEndian: x)
            let w1 = bigEndian ? UInt32(bigEndian: y) : UInt32(littleEndian: y)
            a = a &+ w0 &+ b
            b = b &+ w1 &+ a
            i += 8
        }
        s1 = a; s2 = b
    }
}

func hex8(_ v: UInt32) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: 8 - s.count) + s
}

@inline(__always) func be32(_ p: UnsafeRawBufferPointer, _ at: Int) -> UInt32 {
    UInt32(bigEndian: p.loadUnaligned(fromByteOffset: at, as: UInt32.self))
}

/// The 32-byte header of a WAL file.
public struct SQLiteWALHeader: Sendable, Equatable {
    public static let size = 32
    public static let frameHeaderSize = 24
    /// Checksums in big-endian words (magic 0x377f0683) or little-endian ones (0x377f0682).
    public var bigEndian: Bool
    public var pageSize: Int
    public var checkpointSequence: UInt32
    public var salt1: UInt32
    public var salt2: UInt32
    /// The header's own checksum, which seeds the first frame's.
    public var checksum: WALChecksum

    public var frameSize: Int { Self.frameHeaderSize + pageSize }

    /// The header at the start of `bytes` (at least 32 of them), checked: magic, version 3007000, page size, checksum.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws -> SQLiteWALHeader {
        guard bytes.count >= size else { throw SQLiteWALError("the WAL header is \(bytes.count) bytes, not 32") }
        let magic = be32(bytes, 0)
        guard magic == 0x377f_0682 || magic == 0x377f_0683 else { throw SQLiteWALError("the WAL header's magic number is \(hex8(magic)), not 377f0682 or 377f0683") }
        let version = be32(bytes, 4)
        guard version == 3_007_000 else { throw SQLiteWALError("the WAL format version is \(version), not 3007000") }
        let page = be32(bytes, 8)
        guard page <= 65536, validPageSize(Int(page)) else { throw SQLiteWALError("the WAL header's page size \(page) is not a power of two from 512 to 65536") }
        let big = magic & 1 == 1
        var c = WALChecksum(0, 0)
        c.add(UnsafeRawBufferPointer(rebasing: bytes[0..<24]), bigEndian: big)
        let stored = WALChecksum(be32(bytes, 24), be32(bytes, 28))
        guard c == stored else { throw SQLiteWALError("the WAL header's checksum does not match (a torn or foreign file)") }
        return SQLiteWALHeader(bigEndian: big, pageSize: Int(page), checkpointSequence: be32(bytes, 12),
                               salt1: be32(bytes, 16), salt2: be32(bytes, 20), checksum: stored)
    }

    public static func parse(_ bytes: [UInt8]) throws -> SQLiteWALHeader {
        try bytes.withUnsafeBytes { b in try parse(b) }
    }

    /// The cycle this header starts: its salts (every frame of the cycle carries them).
    public var cycle: WALCycle { WALCycle(salt1: salt1, salt2: salt2) }
}

/// One cycle of a WAL file, named by its salts.
public struct WALCycle: Sendable, Hashable, CustomStringConvertible {
    public var salt1: UInt32
    public var salt2: UInt32
    public init(salt1: UInt32, salt2: UInt32) { self.salt1 = salt1; self.salt2 = salt2 }
    public var description: String { hex8(salt1) + hex8(salt2) }
    public init?(hex: String) {
        guard hex.utf8.count == 16, let a = UInt32(hex.prefix(8), radix: 16), let b = UInt32(hex.suffix(8), radix: 16) else { return nil }
        salt1 = a; salt2 = b
    }
}

/// Scans frames after a known position of a cycle: the whole transactions found (up to the last valid commit
/// frame), never a partial one.
public struct WALScan: Sendable, Equatable {
    /// Frames taken (a multiple of whole transactions), from the position scanned.
    public var frames: Int
    /// The checksum after the last frame taken.
    public var checksum: WALChecksum
    /// The frames that end a transaction (1-based frame numbers of the cycle) and the database size in pages after each.
    public var commits: [(frame: Int, pages: UInt32)]
    /// Bytes taken (frames × frame size).
    public var bytes: Int
    /// Frames that passed every check, those after the last commit frame included: when every frame scanned is
    /// valid, the scan ran out of bytes (a transaction may go on past them), not into the end of the log.
    public var validFrames = 0

    public static func == (a: WALScan, b: WALScan) -> Bool {
        a.frames == b.frames && a.checksum == b.checksum && a.bytes == b.bytes && a.validFrames == b.validFrames
            && a.commits.map(\.frame) == b.commits.map(\.frame) && a.commits.map(\.pages) == b.commits.map(\.pages)
    }

    /// Scans `bytes`, which start at frame `firstFrame` (1-based) of the cycle `header` starts, whose running
    /// checksum before that frame is `checksum` (the header's for frame 1). Stops at the first frame of another
    /// cycle, with a wrong checksum, or cut short; what follows the last commit frame is left for a later scan.
    public static func scan(_ bytes: UnsafeRawBufferPointer, header: SQLiteWALHeader, firstFrame: Int, checksum: WALChecksum,
                            maxPages: UInt32 = UInt32.max) -> WALScan {
        let fs = header.frameSize
        var sum = checksum
        var taken = WALScan(frames: 0, checksum: checksum, commits: [], bytes: 0)
        var i = 0
        var off = 0
        while off + fs <= bytes.count {
            let pgno = be32(bytes, off)
            let pages = be32(bytes, off + 4)
            guard be32(bytes, off + 8) == header.salt1, be32(bytes, off + 12) == header.salt2 else { break }
            guard pgno >= 1, pgno <= maxPages, pages <= maxPages else { break }
            var s = sum
            s.add(UnsafeRawBufferPointer(rebasing: bytes[off..<(off + 8)]), bigEndian: header.bigEndian)
            s.add(UnsafeRawBufferPointer(rebasing: bytes[(off + 24)..<(off + fs)]), bigEndian: header.bigEndian)
            guard s == WALChecksum(be32(bytes, off + 16), be32(bytes, off + 20)) else { break }
            sum = s
            i += 1
            off += fs
            taken.validFrames = i
            if pages != 0 {
                taken.frames = i
                taken.checksum = sum
                taken.bytes = off
                taken.commits.append((firstFrame + i - 1, pages))
            }
        }
        return taken
    }
}
