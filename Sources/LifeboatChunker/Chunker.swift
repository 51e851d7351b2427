/// Parameters of the content-defined chunker. Stored in the repository config.
public struct ChunkerParameters: Sendable, Equatable, Codable {
    public var min: Int
    public var avg: Int
    public var max: Int

    public static let `default` = ChunkerParameters(min: 512 * 1024, avg: 1024 * 1024, max: 8 * 1024 * 1024)

    public init(min: Int, avg: Int, max: Int) {
        self.min = min; self.avg = avg; self.max = max
    }

    /// Nil when valid; otherwise the reason.
    public var problem: String? {
        if avg <= 0 || avg & (avg - 1) != 0 { return "the average chunk size must be a power of two" }
        if min < 64 { return "the minimum chunk size must be at least 64 bytes" }
        if !(min < avg && avg < max) { return "chunk sizes must satisfy min < avg < max" }
        if max > 64 * 1024 * 1024 { return "the maximum chunk size must not exceed 64 MiB" }
        return nil
    }
}

/// FastCDC boundary detection with normalized chunking (level 2) and a keyed gear table.
///
/// The gear table is derived from a per-repository secret, so chunk boundaries (and thus chunk
/// sizes) of the same data differ between repositories and leak nothing across them.
/// The hash of a position depends only on the 64 bytes before it, so an insertion moves
/// only the boundaries next to it.
public struct FastCDC: Sendable {
    public let parameters: ChunkerParameters
    let gear: [UInt64]
    let maskS: UInt64
    let maskL: UInt64

    /// - Parameter gear: 256 pseudo-random 64-bit values (from the repository's chunker key).
    public init(parameters: ChunkerParameters, gear: [UInt64]) {
        precondition(gear.count == 256, "the gear table has 256 entries")
        precondition(parameters.problem == nil, parameters.problem ?? "")
        self.parameters = parameters
        self.gear = gear
        let bits = UInt64(parameters.avg.trailingZeroBitCount)
        // High bits of the gear hash depend on the most bytes: take the mask from the top.
        func mask(_ n: UInt64) -> UInt64 { n >= 64 ? ~0 : ((1 << n) - 1) << (64 - n) }
        maskS = mask(bits + 2)
        maskL = mask(bits > 2 ? bits - 2 : 1)
    }

    /// Length of the next chunk at the start of `buffer`, or nil if `buffer` is shorter than the
    /// maximum chunk and more data may follow (`final == false`).
    public func boundary(_ buffer: UnsafeRawBufferPointer, final: Bool) -> Int? {
        let len = buffer.count
        if len == 0 { return final ? 0 : nil }
        if len <= parameters.min { return final ? len : nil }
        let n = Swift.min(len, parameters.max)
        let normal = Swift.min(parameters.avg, n)
        var hash: UInt64 = 0
        var i = parameters.min
        let bytes = buffer.bindMemory(to: UInt8.self)
        return gear.withUnsafeBufferPointer { g -> Int? in
            while i < normal {
                hash = (hash &<< 1) &+ g[Int(bytes[i])]
                if hash & maskS == 0 { return i + 1 }
                i += 1
            }
            while i < n {
                hash = (hash &<< 1) &+ g[Int(bytes[i])]
                if hash & maskL == 0 { return i + 1 }
                i += 1
            }
            if n == parameters.max || final { return n }
            return nil
        }
    }
}

/// Splits a byte stream into content-defined chunks with a bounded buffer: memory stays at
/// the maximum chunk size plus one read window whatever the length of the stream, and small
/// streams (most files) get a buffer just large enough, without zero-filling it.
public struct StreamChunker {
    let cdc: FastCDC
    var buffer: [UInt8]
    var start = 0
    var end = 0
    var eof = false

    /// - Parameter sizeHint: the expected stream length (a file's size), to size the first buffer.
    public init(cdc: FastCDC, sizeHint: Int? = nil) {
        self.cdc = cdc
        let full = StreamChunker.fullSize(cdc)
        let first = sizeHint.map { Swift.min(full, Swift.max(64 * 1024, $0 + 1)) } ?? full
        buffer = StreamChunker.uninitialized(first)
    }

    /// A boundary is always found within `max` bytes; one more read window keeps reads large.
    /// (Also the most one call of `next` reads.)
    public static func fullSize(_ cdc: FastCDC) -> Int { cdc.parameters.max + 1 << 20 }

    static func uninitialized(_ n: Int) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: n) { _, count in count = n }
    }

    /// Returns the next chunk, reading more with `read` (which fills a buffer and returns the count, 0 at end).
    public mutating func next(read: (UnsafeMutableRawBufferPointer) throws -> Int) throws -> [UInt8]? {
        while true {
            let available = end - start
            if available > 0 {
                let cut = buffer.withUnsafeBytes { raw in
                    cdc.boundary(UnsafeRawBufferPointer(rebasing: raw[start..<end]), final: eof)
                }
                if let cut, cut > 0 {
                    let chunk = Array(buffer[start..<(start + cut)])
                    start += cut
                    return chunk
                }
            }
            if eof { return nil }
            // Compact, grow if full (the stream is longer than the hint), and fill.
            if start > 0 {
                if available > 0 {
                    buffer.withUnsafeMutableBytes { raw in
                        _ = memmoveBytes(raw, from: start, count: available)
                    }
                }
                end = available; start = 0
            }
            if end == buffer.count {
                var bigger = StreamChunker.uninitialized(StreamChunker.fullSize(cdc))
                bigger.withUnsafeMutableBytes { dst in buffer.withUnsafeBytes { dst.copyMemory(from: $0) } }
                buffer = bigger
            }
            let n = try buffer.withUnsafeMutableBytes { raw in
                try read(UnsafeMutableRawBufferPointer(rebasing: raw[end...]))
            }
            if n == 0 { eof = true } else { end += n }
        }
    }
}

@inline(__always)
func memmoveBytes(_ raw: UnsafeMutableRawBufferPointer, from: Int, count: Int) -> Int {
    raw.baseAddress!.copyMemory(from: raw.baseAddress! + from, byteCount: count)
    return count
}
