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
}
