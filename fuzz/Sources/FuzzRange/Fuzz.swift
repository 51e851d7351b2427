import LifeboatCore

/// HTTP `Range` headers against object sizes, and durations and numbers as users type them.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard bytes.count >= 4 else { return 0 }
    let objectSize = Int(bytes[0]) << 24 | Int(bytes[1]) << 16 | Int(bytes[2]) << 8 | Int(bytes[3])
    let text = String(decoding: bytes.dropFirst(4), as: UTF8.self)
    if let r = HTTPRange.parse(text, size: objectSize) { precondition(r.lowerBound >= 0 && r.upperBound <= objectSize && !r.isEmpty) }
    _ = try? parseSeconds(text)
    _ = try? Bounds.number(text, 0...86400, "x")
    _ = try? Bounds.integer(text, 1...100, "x") as Int
    return 0
}
