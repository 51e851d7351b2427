import LifeboatCore
import LifeboatRepository

/// Any bytes as an index file's plaintext: packs and blobs, or an error; what decodes can be indexed and looked up.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let packs = try? IndexFormat.decode(Array(UnsafeBufferPointer(start: data, count: size))) else { return 0 }
    var idx = MasterIndex()
    for p in packs { idx.add(p, bulk: true); _ = p.packSize }
    idx.rebuild()
    for p in packs { for b in p.blobs { _ = idx.lookup(b.id, type: b.type) } }
    _ = idx.allPacks()
    return 0
}
