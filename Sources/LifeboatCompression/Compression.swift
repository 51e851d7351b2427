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

/// zstd compression of blobs. Stateless: safe from any thread.
public enum Zstd {
    /// Compresses `input`; returns nil when compression is off or would not shrink the data.
    public static func compress(_ input: UnsafeRawBufferPointer, mode: CompressionMode) -> [UInt8]? {
        guard let level = mode.zstdLevel, input.count > 0 else { return nil }
        let bound = ZSTD_compressBound(input.count)
        var out = [UInt8](repeating: 0, count: bound)
        let n = out.withUnsafeMutableBytes { dst in
            ZSTD_compress(dst.baseAddress, bound, input.baseAddress, input.count, level)
        }
        if ZSTD_isError(n) != 0 || n >= input.count { return nil }
        out.removeSubrange(n...)
        return out
    }

    /// Decompresses `input` that must expand to exactly `rawLength` bytes.
    public static func decompress(_ input: UnsafeRawBufferPointer, rawLength: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: rawLength)
        let n = out.withUnsafeMutableBytes { dst in
            ZSTD_decompress(dst.baseAddress, rawLength, input.baseAddress, input.count)
        }
        if ZSTD_isError(n) != 0 {
            throw CompressionError.failed(String(cString: ZSTD_getErrorName(n)))
        }
        guard n == rawLength else { throw CompressionError.failed("expected \(rawLength) bytes, got \(n)") }
        return out
    }
}
