import LifeboatRepository

/// The framing of unpacked objects (config, index, snapshots, locks) after decryption, zstd included: a declared
/// size never makes the decoder allocate more than the frame can hold.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    _ = try? Repository.decodeObjectFraming(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
