/// A frame log: the WAL frames of whole transactions as Lifeboat stores them (FORMAT.md, "SQLite records"), each
/// transaction with the time it was seen committed, so that a restore can stop between any two of them.
///
///     header, 48 bytes: "LBSQLWAL", then big-endian u32s: version (1), page size, flags (bit 0: the log's
///                       checksums are big-endian), salt-1, salt-2, first frame number, checksum (2 words)
///                       before the first frame, transaction count, 0
///     per transaction:  time (i64, milliseconds since 1970), frame count (u32), the frames as the WAL holds them
///
/// The frames keep their headers, so that the decoder checks the same salts and running checksum SQLite does.
public struct FrameLog: Sendable {
    public static let magic: [UInt8] = Array("LBSQLWAL".utf8)
    public static let headerSize = 48
    /// At most this many transactions in one log (a bound for hostile input; the follower ships far fewer).
    public static let maxTransactions = 1 << 22

    public var pageSize: Int
    public var bigEndian: Bool
    public var cycle: WALCycle
    public var firstFrame: Int
    public var checksumBefore: WALChecksum
    /// Each transaction: when it was seen, its frames (where in the log's bytes they start, how many).
    public var transactions: [Transaction]
    public var bytes: [UInt8]

    public struct Transaction: Sendable, Equatable {
        /// Milliseconds since 1970.
        public var timeMillis: Int64
        public var offset: Int
        public var frames: Int
        /// The database size in pages after it.
        public var pages: UInt32
    }

    public var frameSize: Int { 24 + pageSize }
    public var frameCount: Int { transactions.reduce(0) { $0 + $1.frames } }
    public var lastFrame: Int { firstFrame + frameCount - 1 }

    /// The checksum after the last frame (the position a follower continues from).
    public var checksumAfter: WALChecksum {
        guard let t = transactions.last else { return checksumBefore }
        return bytes.withUnsafeBytes { b in
            let off = t.offset + (t.frames - 1) * frameSize
            return WALChecksum(be32(b, off + 16), be32(b, off + 20))
        }
    }

    /// Calls `body` with each page of transaction `t`: its number and its bytes.
    public func forEachPage(of t: Transaction, _ body: (UInt32, UnsafeRawBufferPointer) throws -> Void) rethrows {
        try bytes.withUnsafeBytes { b in
            for k in 0..<t.frames {
                let off = t.offset + k * frameSize
                try body(be32(b, off), UnsafeRawBufferPointer(rebasing: b[(off + 24)..<(off + frameSize)]))
            }
        }
    }

    /// Decodes and checks a stored log: the header, every transaction's bounds, and each frame's salts, page
    /// number and running checksum. Anything else is an error naming what is wrong; nothing is trusted.
    public static func decode(_ bytes: [UInt8], maxPages: UInt32 = UInt32.max) throws -> FrameLog {
        do {
            return try bytes.withUnsafeBytes { b -> FrameLog in
                guard b.count >= headerSize, Array(b[0..<8]) == magic else { throw SQLiteWALError("not a Lifeboat SQLite frame log (no LBSQLWAL header)") }
                guard be32(b, 8) == 1 else { throw SQLiteWALError("frame log version \(be32(b, 8)) is not known (this Lifeboat reads version 1)") }
                let page = Int(be32(b, 12))
                guard validPageSize(page) else { throw SQLiteWALError("the frame log's page size \(page) is not a power of two from 512 to 65536") }
                let flags = be32(b, 16)
                guard flags & ~1 == 0 else { throw SQLiteWALError("the frame log has unknown flags \(flags)") }
                let cycle = WALCycle(salt1: be32(b, 20), salt2: be32(b, 24))
                let first = Int(be32(b, 28))
                guard first >= 1 else { throw SQLiteWALError("the frame log starts at frame 0") }
                let before = WALChecksum(be32(b, 32), be32(b, 36))
                let count = Int(be32(b, 40))
                guard count <= maxTransactions else { throw SQLiteWALError("the frame log says it holds \(count) transactions (at most \(maxTransactions))") }
                let big = flags & 1 == 1
                let fs = 24 + page
                var sum = before
                var off = headerSize
                var txs: [Transaction] = []
                txs.reserveCapacity(min(count, b.count / (12 + fs) + 1))
                for n in 0..<count {
                    guard off + 12 <= b.count else { throw SQLiteWALError("the frame log is cut short in transaction \(n + 1) of \(count)") }
                    let time = Int64(bitPattern: UInt64(be32(b, off)) << 32 | UInt64(be32(b, off + 4)))
                    let frames = Int(be32(b, off + 8))
                    off += 12
                    guard frames >= 1, frames <= (b.count - off) / fs else {
                        throw SQLiteWALError("transaction \(n + 1) of the frame log says it has \(frames) frames, and \(b.count - off) bytes are left")
                    }
                    var pages: UInt32 = 0
                    for k in 0..<frames {
                        let f = off + k * fs
                        let pgno = be32(b, f), size = be32(b, f + 4)
                        guard pgno >= 1, pgno <= maxPages else { throw SQLiteWALError("frame \(first + txs.reduce(0) { $0 + $1.frames } + k) names page \(pgno)") }
                        guard (size != 0) == (k == frames - 1), size <= maxPages else {
                            throw SQLiteWALError("transaction \(n + 1) of the frame log does not end with its commit frame, and only there")
                        }
                        guard be32(b, f + 8) == cycle.salt1, be32(b, f + 12) == cycle.salt2 else {
                            throw SQLiteWALError("a frame of transaction \(n + 1) carries other salts than the log's cycle \(cycle)")
                        }
                        sum.add(UnsafeRawBufferPointer(rebasing: b[f..<(f + 8)]), bigEndian: big)
                        sum.add(UnsafeRawBufferPointer(rebasing: b[(f + 24)..<(f + fs)]), bigEndian: big)
                        guard sum == WALChecksum(be32(b, f + 16), be32(b, f + 20)) else {
                            throw SQLiteWALError("a frame of transaction \(n + 1) does not match its checksum")
                        }
                        pages = size
                    }
                    txs.append(Transaction(timeMillis: time, offset: off, frames: frames, pages: pages))
                    off += frames * fs
                }
                guard off == b.count else { throw SQLiteWALError("the frame log has \(b.count - off) bytes after its last transaction") }
                return FrameLog(pageSize: page, bigEndian: big, cycle: cycle, firstFrame: first, checksumBefore: before,
                                transactions: txs, bytes: bytes)
            }
        }
    }
}

/// Builds a frame log from transactions copied out of a WAL file.
public struct FrameLogBuilder: Sendable {
    public private(set) var bytes: [UInt8]
    public private(set) var transactions = 0
    public private(set) var frames = 0
    public let header: SQLiteWALHeader
    public let firstFrame: Int
    public let checksumBefore: WALChecksum
    public private(set) var firstTimeMillis: Int64?
    public private(set) var lastTimeMillis: Int64?
    /// The database size in pages after the last transaction, and the checksum after its last frame.
    public private(set) var pages: UInt32 = 0
    public private(set) var checksumAfter: WALChecksum

    public init(header: SQLiteWALHeader, firstFrame: Int, checksum: WALChecksum) {
        self.header = header; self.firstFrame = firstFrame; checksumBefore = checksum; checksumAfter = checksum
        bytes = FrameLog.magic
        for v in [1, UInt32(header.pageSize), header.bigEndian ? 1 : 0, header.salt1, header.salt2, UInt32(firstFrame),
                  checksum.s1, checksum.s2, 0, 0] as [UInt32] { putBE32(&bytes, v) }
    }

    public var lastFrame: Int { firstFrame + frames - 1 }
    public var isEmpty: Bool { transactions == 0 }

    /// Appends the frames of whole transactions, as `WALScan` found them in `wal` (frames from this builder's next
    /// frame on), each stamped with `timeMillis`.
    public mutating func append(_ wal: UnsafeRawBufferPointer, scan: WALScan, timeMillis: Int64) {
        let fs = header.frameSize
        var start = 0
        for c in scan.commits {
            let end = c.frame - (firstFrame + frames) + 1  // frames of this transaction
            putBE32(&bytes, UInt32(truncatingIfNeeded: UInt64(bitPattern: timeMillis) >> 32))
            putBE32(&bytes, UInt32(truncatingIfNeeded: UInt64(bitPattern: timeMillis)))
            putBE32(&bytes, UInt32(end))
            bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: wal[(start * fs)..<((start + end) * fs)]))
            start += end
            frames += end
            transactions += 1
            pages = c.pages
        }
        if !scan.commits.isEmpty {
            checksumAfter = scan.checksum
            if firstTimeMillis == nil { firstTimeMillis = timeMillis }
            lastTimeMillis = timeMillis
        }
        bytes.withUnsafeMutableBytes { b in b.storeBytes(of: UInt32(transactions).bigEndian, toByteOffset: 40, as: UInt32.self) }
    }
}

func putBE32(_ out: inout [UInt8], _ v: UInt32) {
    out.append(UInt8(v >> 24)); out.append(UInt8(v >> 16 & 0xff)); out.append(UInt8(v >> 8 & 0xff)); out.append(UInt8(v & 0xff))
}
