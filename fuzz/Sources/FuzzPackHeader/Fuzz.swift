import Foundation
import LifeboatRepository

/// A pack's trailer and its decrypted header entries (the part after authentication, where numbers are read):
/// the first 8 bytes give a pack size, the rest is the header's plaintext.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard bytes.count >= 8 else { return 0 }
    let packSize = bytes[0..<8].reduce(0) { $0 << 8 | Int($1) } & Int.max
    _ = try? PackFormat.headerLength(tail: bytes.suffix(4), packSize: packSize)
    let plain = Array(bytes.dropFirst(8))
    _ = try? PackFormat.entries(plain, dataEnd: packSize)
    return 0
}
