import Foundation
import LifeboatCore

/// What a WAL segment says of itself: its first page's long header, checked against its name, and the times of the
/// transactions it ends (commits and aborts, which are what `recovery_target_time` stops at).
///
/// The layouts are PostgreSQL's (`access/xlog_internal.h`, `access/xlogrecord.h`, `access/xact.h`), in the byte order
/// of the machine that wrote them (little-endian here). Nothing in a segment is trusted: lengths are range-checked,
/// a page whose address is not its own ends the scan (the unused, recycled rest of a segment), and the scan never
/// reads past the buffer.
public struct WALSegmentInfo: Sendable, Equatable {
    public var magic: UInt16
    public var timeline: UInt32
    public var systemIdentifier: UInt64
    public var segmentSize: SegmentSize
    public var blockSize: UInt32
    /// Where the segment starts (from its name, equal to its first page's address).
    public var start: LSN
    /// The end of the last whole record that starts in this segment (its start when none does).
    public var end: LSN
    /// Where the last whole record that starts in this segment starts (nil when none does). Recovery to a
    /// position stops after the first record that starts at or after it, so that is the last position reachable.
    public var lastRecord: LSN?
    /// The first and last commit or abort times in the segment, if any.
    public var firstTime: Date?
    public var lastTime: Date?
    public var transactions: Int

    public static let pageHeaderShort = 24, pageHeaderLong = 40, recordHeader = 24
    static let flagContinuation: UInt16 = 0x0001, flagLongHeader: UInt16 = 0x0002
    /// PostgreSQL's epoch for TimestampTz: 2000-01-01 00:00:00 UTC.
    public static let postgresEpoch: TimeInterval = 946_684_800

    public static func time(microseconds: Int64) -> Date {
        Date(timeIntervalSince1970: postgresEpoch + Double(microseconds) / 1_000_000)
    }

    /// Checks a segment file's bytes against its name and reads its header and commit times.
    /// `expected`: the system identifier and segment size of the cluster the archive holds, when known.
    public static func inspect(_ bytes: [UInt8], name: WALFileName, expectedSystem: UInt64? = nil) throws -> WALSegmentInfo {
        try bytes.withUnsafeBytes { try inspect(raw: $0, name: name, expectedSystem: expectedSystem) }
    }

    /// `inspect` on raw bytes (not generic: it reads every record header of a 16 MiB segment, and an unspecialised
    /// collection costs more than compressing it).
    public static func inspect(raw bytes: UnsafeRawBufferPointer, name: WALFileName, expectedSystem: UInt64? = nil) throws -> WALSegmentInfo {
        guard name.kind == .segment || name.kind == .partial else {
            throw LifeboatError.invalid("\(name) is a \(name.kind.rawValue) file, not a WAL segment")
        }
        let n = bytes.count
        guard let size = SegmentSize(UInt64(n)) else {
            throw LifeboatError.invalid("WAL segment \(name) has \(n) bytes: a segment is a power of two from 1 MiB to 1 GiB (a partly written or truncated file?)")
        }
        // Callers check their offsets; a read outside the bytes anyway (a bug) gives 0, never memory beyond them.
        func u16(_ o: Int) -> UInt16 { o >= 0 && o <= n - 2 ? UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: o, as: UInt16.self)) : 0 }
        func u32(_ o: Int) -> UInt32 { o >= 0 && o <= n - 4 ? UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: o, as: UInt32.self)) : 0 }
        func u64(_ o: Int) -> UInt64 { o >= 0 && o <= n - 8 ? UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: o, as: UInt64.self)) : 0 }
        let magic = u16(0), info = u16(2), tli = u32(4), pageAddress = u64(8)
        let sysid = u64(24), segSize = u32(32), blockSize = u32(36)
        guard info & flagLongHeader != 0, UInt64(segSize) == size.bytes, magic >= 0xD000 else {
            throw LifeboatError.invalid("\(name) is not a WAL segment: its first page has no valid long header (a file of \(n) bytes that PostgreSQL did not write?)")
        }
        guard blockSize >= 1024, blockSize <= 65536, blockSize & (blockSize - 1) == 0 else {
            throw LifeboatError.invalid("WAL segment \(name): block size \(blockSize) in its header is not a power of two from 1 KiB to 64 KiB")
        }
        guard let number = name.segmentNumber(size) else {
            throw LifeboatError.invalid("WAL segment \(name): the name's last digits exceed what a log holds with \(size.bytes >> 20) MiB segments")
        }
        let start = size.start(of: number)
        guard pageAddress == start.value else {
            throw LifeboatError.invalid("WAL segment \(name) holds the WAL of \(LSN(pageAddress)), not \(start): it was written under another name (renamed or copied by hand?)")
        }
        guard tli != 0, tli <= name.timeline else {
            throw LifeboatError.invalid("WAL segment \(name): its header's timeline \(tli) is not the name's (\(name.timeline)) or an earlier one")
        }
        if let expectedSystem, expectedSystem != sysid {
            throw LifeboatError.invalid("WAL segment \(name) comes from the database system \(sysid), but this archive holds system \(expectedSystem): two clusters must not share one archive (give each its own --cluster or repository)")
        }
        var out = WALSegmentInfo(magic: magic, timeline: tli, systemIdentifier: sysid, segmentSize: size, blockSize: blockSize,
                                 start: start, end: start, firstTime: nil, lastTime: nil, transactions: 0)
        out.scan(bytes, u16: u16, u32: u32, u64: u64)
        return out
    }

    /// Walks the records that start in this segment. A record is a 24-byte header (total length, xid, previous
    /// record, info, resource manager, CRC) and its body, 8-byte aligned, split across pages after each page header.
    mutating func scan(_ bytes: UnsafeRawBufferPointer, u16: (Int) -> UInt16, u32: (Int) -> UInt32, u64: (Int) -> UInt64) {
        let n = bytes.count
        let page = Int(blockSize)
        // Whether page `p` (its offset) is a page of this segment, written by this cluster.
        func pageValid(_ p: Int) -> Bool {
            p + WALSegmentInfo.pageHeaderShort <= n && u16(p) == magic && u64(p + 8) == start.value &+ UInt64(p)
        }
        func headerLength(_ p: Int) -> Int { p == 0 ? WALSegmentInfo.pageHeaderLong : WALSegmentInfo.pageHeaderShort }
        // Skips `count` bytes of record data from `pos`, across page headers. nil when a page is invalid or the
        // segment ends first (the record continues in the next segment).
        func advance(_ pos: Int, by count: Int) -> Int? {
            var pos = pos, left = count
            while left > 0 {
                if pos % page == 0 {
                    guard pageValid(pos) else { return nil }
                    pos += headerLength(pos)
                }
                let room = page - pos % page
                let step = min(room, left)
                pos += step; left -= step
                if pos >= n && left > 0 { return nil }
            }
            return pos
        }
        // Reads `count` bytes of record data from `pos` (for the few small fields needed).
        func read(_ pos: Int, _ count: Int) -> [UInt8]? {
            var out: [UInt8] = []
            out.reserveCapacity(count)
            var pos = pos
            while out.count < count {
                if pos % page == 0 {
                    guard pageValid(pos) else { return nil }
                    pos += headerLength(pos)
                }
                guard pos < n else { return nil }
                guard pos >= 0 else { return nil }
                out.append(bytes[pos]); pos += 1
            }
            return out
        }
        func le<T: FixedWidthInteger>(_ b: [UInt8], _ o: Int, _: T.Type) -> T {
            var v: T = 0
            for i in 0..<MemoryLayout<T>.size { v |= T(b[o + i]) << (8 * i) }
            return v
        }

        var pos = WALSegmentInfo.pageHeaderLong
        // The first page may begin with the rest of a record from the previous segment.
        if u16(2) & WALSegmentInfo.flagContinuation != 0 {
            let rest = Int(u32(16))
            guard let p = advance(pos, by: rest) else { return }
            pos = p
        }
        let maxRecord = 1 << 30
        var records = 0
        while pos < n, records < n / WALSegmentInfo.recordHeader {
            pos = (pos + 7) & ~7
            if pos >= n { break }
            if pos % page == 0 {
                guard pageValid(pos) else { break }
                pos += headerLength(pos)
            }
            // The header: read in place when it lies within the page (nearly always), else gathered across it.
            let total: Int, info: UInt8, rmid: UInt8
            if pos % page + WALSegmentInfo.recordHeader <= page, pos + WALSegmentInfo.recordHeader <= n {
                total = Int(u32(pos)); info = bytes[pos + 16]; rmid = bytes[pos + 17]  // (pos + 24 <= n)
            } else {
                guard let head = read(pos, WALSegmentInfo.recordHeader) else { break }
                total = Int(le(head, 0, UInt32.self)); info = head[16]; rmid = head[17]
            }
            guard total >= WALSegmentInfo.recordHeader, total <= maxRecord else { break }  // zeroes: the end of the WAL
            let recordStart = pos
            // RM_XACT_ID = 1: commit (0x00), abort (0x20), commit prepared (0x30), abort prepared (0x40).
            if rmid == 1, [0x00, 0x20, 0x30, 0x40].contains(info & 0x70), let t = transactionTime(recordStart, total, read) {
                if firstTime == nil || t < firstTime! { firstTime = t }
                if lastTime == nil || t > lastTime! { lastTime = t }
                transactions += 1
            }
            guard let next = advance(recordStart, by: total) else { break }
            pos = next
            end = LSN(start.value &+ UInt64(pos))
            lastRecord = LSN(start.value &+ UInt64(recordStart))
            records += 1
        }
    }

    /// A transaction record's time: the first eight bytes of its main data, which is the record's last
    /// `length` bytes; the length is in the block headers after the record header (`XLR_BLOCK_ID_DATA_SHORT` 255 +
    /// one byte, `XLR_BLOCK_ID_DATA_LONG` 254 + four bytes; origin 253 and top-level xid 252 come first).
    func transactionTime(_ start: Int, _ total: Int, _ read: (Int, Int) -> [UInt8]?) -> Date? {
        let headerBytes = min(total, WALSegmentInfo.recordHeader + 16)
        guard let h = read(start, headerBytes) else { return nil }
        var i = WALSegmentInfo.recordHeader
        var mainLength: Int? = nil
        while i < h.count, mainLength == nil {
            switch h[i] {
            case 255: guard i + 1 < h.count else { return nil }; mainLength = Int(h[i + 1])
            case 254:
                guard i + 4 < h.count else { return nil }
                mainLength = Int(h[i + 1]) | Int(h[i + 2]) << 8 | Int(h[i + 3]) << 16 | Int(h[i + 4]) << 24
            case 253: i += 3
            case 252: i += 5
            default: return nil  // a block reference: not a plain transaction record
            }
        }
        guard let mainLength, mainLength >= 8, mainLength <= total - WALSegmentInfo.recordHeader else { return nil }
        // The main data's offset in record-data bytes, then mapped to the segment by skipping page headers.
        guard let t = readRecordBytes(start, offset: total - mainLength, count: 8, read) else { return nil }
        var v: Int64 = 0
        for k in 0..<8 { v |= Int64(t[k]) << (8 * k) }
        // A time before 2000 or after 2200 is not a commit time this archive can hold.
        guard v > 0, v < 6_311_390_400_000_000 else { return nil }
        return WALSegmentInfo.time(microseconds: v)
    }

    /// Reads `count` bytes at `offset` bytes of record data after `start` (page headers skipped).
    func readRecordBytes(_ start: Int, offset: Int, count: Int, _ read: (Int, Int) -> [UInt8]?) -> [UInt8]? {
        let page = Int(blockSize)
        var pos = start, left = offset
        while left > 0 {
            if pos % page == 0 { pos += pos == 0 ? WALSegmentInfo.pageHeaderLong : WALSegmentInfo.pageHeaderShort }
            let step = min(page - pos % page, left)
            pos += step; left -= step
        }
        return read(pos, count)
    }
}
