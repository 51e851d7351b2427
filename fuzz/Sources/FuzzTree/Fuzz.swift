import LifeboatCore

/// Any bytes given to the tree decoder: a decoded tree or a thrown error, never a trap or a hang.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    if let t = try? Tree.decode(Array(bytes)) {
        // What decodes must survive what restore and ls do with it.
        for n in t.nodes { _ = Node.isSafeName(n.name); _ = n.nameString; _ = t.node(named: n.name) }
        _ = t.encoded()
    }
    return 0
}
