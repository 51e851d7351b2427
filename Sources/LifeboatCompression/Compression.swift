import CZstd
import Foundation

/// How hard to compress. `auto` is the default: zstd level 3, a good ratio at several hundred MB/s.
public enum CompressionMode: String, Sendable, Codable, CaseIterable {
    case off, fast, auto, max

    public var zstdLevel: Int32? {
        switch self {
        case .off: return nil
        case .fast: return 1
        case .auto: return 3
        case .max: return 19
        }
    }
}

public enum CompressionError: Error, CustomStringConvertible {
    case failed(String)
    public var description: String {
        switch self { case .failed(let s): return "decompression failed: \(s)" }
    }
}

/// zstd compression of blobs. Safe from any thread: compression contexts are pooled, so a blob
/// costs no context allocation, and output buffers are not zero-filled.
public enum Zstd {
    final class ContextPool: @unchecked Sendable {
        let lock = NSLock()
        var free: [OpaquePointer] = []
        func take() -> OpaquePointer {
            lock.lock(); defer { lock.unlock() }
            return free.popLast() ?? ZSTD_createCCtx()
        }
        func give(_ c: OpaquePointer) {
            lock.lock(); defer { lock.unlock() }
            if free.count < 16 { free.append(c) } else { ZSTD_freeCCtx(c) }
        }
    }
    static let pool = ContextPool()

    /// Compresses `input`; returns nil when compression is off or would not shrink the data.
    public static func compress(_ input: UnsafeRawBufferPointer, mode: CompressionMode) -> [UInt8]? {
        guard let level = mode.zstdLevel, input.count > 0 else { return nil }
        // Output must be smaller than the input to be worth keeping: a buffer of input.count - 1 bytes suffices;
        // zstd reports an error when it does not fit.
        let cap = input.count - 1
        if cap <= 0 { return nil }
        let ctx = pool.take()
        defer { pool.give(ctx) }
        var failed = false
        let out = [UInt8](unsafeUninitializedCapacity: cap) { buf, count in
            let n = ZSTD_compressCCtx(ctx, buf.baseAddress, cap, input.baseAddress, input.count, level)
            if ZSTD_isError(n) != 0 { failed = true; count = 0 } else { count = n }
        }
        return failed ? nil : out
    }

    /// Decompresses `input` that must expand to exactly `rawLength` bytes.
    public static func decompress(_ input: UnsafeRawBufferPointer, rawLength: Int) throws -> [UInt8] {
        // `rawLength` comes from a repository object, which a hostile writer controls: check it against the
        // frame before allocating, so a 20-byte object cannot make us reserve gigabytes.
        try checkExpansion(input, rawLength: rawLength)
        var error: String? = nil
        let out = [UInt8](unsafeUninitializedCapacity: rawLength) { buf, count in
            let n = ZSTD_decompress(buf.baseAddress, rawLength, input.baseAddress, input.count)
            if ZSTD_isError(n) != 0 {
                error = String(cString: ZSTD_getErrorName(n)); count = 0
            } else if n != rawLength {
                error = "expected \(rawLength) bytes, got \(n)"; count = 0
            } else {
                count = n
            }
        }
        if let error { throw CompressionError.failed(error) }
        return out
    }

    /// The most any input may expand to: zstd's best case (a run-length block of 128 KiB costs 4 bytes, so about
    /// 32,768:1) bounded by 1 GiB, the largest object Lifeboat ever writes.
    public static let maxExpansion = 32_768
    public static let maxRawLength = 1 << 30

    /// Throws unless `rawLength` is plausible for `input`: not negative, within `maxRawLength` and the best
    /// ratio zstd achieves, and equal to the content size the frame declares (when it declares one).
    public static func checkExpansion(_ input: UnsafeRawBufferPointer, rawLength: Int) throws {
        guard rawLength >= 0, rawLength <= maxRawLength else {
            throw CompressionError.failed("declared size \(rawLength) is out of range")
        }
        let (bound, overflow) = input.count.multipliedReportingOverflow(by: maxExpansion)
        guard overflow || rawLength <= bound + 64 else {
            throw CompressionError.failed("declared size \(rawLength) is impossible for \(input.count) compressed bytes")
        }
        let declared = ZSTD_getFrameContentSize(input.baseAddress, input.count)
        // ZSTD_CONTENTSIZE_ERROR is (0ULL - 2) and ZSTD_CONTENTSIZE_UNKNOWN (0ULL - 1) in zstd.h.
        if declared == UInt64.max - 1 { throw CompressionError.failed("not a zstd frame") }
        if declared != UInt64.max && declared != UInt64(rawLength) {
            throw CompressionError.failed("the frame holds \(declared) bytes, the object declares \(rawLength)")
        }
    }
}
