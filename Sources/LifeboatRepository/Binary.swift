import Foundation
import LifeboatCore

/// Little-endian binary writer for the pack header and index formats.
struct BinaryWriter {
    var bytes: [UInt8] = []
    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    mutating func id(_ v: ID) { bytes.append(contentsOf: v.bytes) }
    mutating func raw(_ v: [UInt8]) { bytes.append(contentsOf: v) }
}

/// Little-endian binary reader; every read is bounds-checked and throws `.corrupt` past the end.
struct BinaryReader {
    let bytes: [UInt8]
    var pos = 0
    let what: String
    init(_ bytes: [UInt8], what: String) { self.bytes = bytes; self.what = what }

    mutating func need(_ n: Int) throws {
        if n < 0 || pos + n > bytes.count { throw LifeboatError.corrupt("\(what) is truncated") }
    }
    mutating func u8() throws -> UInt8 { try need(1); defer { pos += 1 }; return bytes[pos] }
    mutating func u32() throws -> UInt32 {
        try need(4); defer { pos += 4 }
        return UInt32(bytes[pos]) | UInt32(bytes[pos + 1]) << 8 | UInt32(bytes[pos + 2]) << 16 | UInt32(bytes[pos + 3]) << 24
    }
    mutating func u64() throws -> UInt64 {
        let lo = UInt64(try u32()); let hi = UInt64(try u32()); return lo | hi << 32
    }
    mutating func i64() throws -> Int64 { Int64(bitPattern: try u64()) }
    mutating func id() throws -> ID { try need(32); defer { pos += 32 }; return ID(bytes: bytes[pos..<(pos + 32)]) }
    mutating func raw(_ n: Int) throws -> [UInt8] { try need(n); defer { pos += n }; return Array(bytes[pos..<(pos + n)]) }
    var atEnd: Bool { pos == bytes.count }
}
