import LifeboatWAL

/// WAL segments as an archive receives them (any bytes under a valid name), timeline histories, file names and
/// positions. The first byte chooses; a segment is the input laid over a 1 MiB segment whose first page header is
/// valid unless the second byte says otherwise, so that the record scan is reached.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard bytes.count >= 2 else { return 0 }
    let body = Array(bytes.dropFirst(2))
    switch bytes[0] % 4 {
    case 0:
        let name = WALFileName("000000010000000000000003")!
        var seg = [UInt8](repeating: 0, count: 1 << 20)
        if bytes[1] & 1 == 0 {
            func put<T: FixedWidthInteger>(_ v: T, _ o: Int) { for k in 0..<MemoryLayout<T>.size { seg[o + k] = UInt8(truncatingIfNeeded: v >> (8 * k)) } }
            put(UInt16(0xD110), 0); put(UInt16(2 | UInt16(bytes[1] >> 7)), 2); put(UInt32(1), 4); put(UInt64(3 << 20), 8)
            put(UInt32(body.count), 16); put(UInt64(42), 24); put(UInt32(1 << 20), 32); put(UInt32(8192), 36)
            // The input after the long header, and again as the next pages (with valid headers) for longer inputs.
            var at = 40
            var i = 0
            while i < body.count && at < seg.count {
                if at % 8192 == 0 {
                    put(UInt16(0xD110), at); put(UInt32(1), at + 4); put(UInt64(3 << 20) + UInt64(at), at + 8)
                    at += 24
                    continue
                }
                seg[at] = body[i]; at += 1; i += 1
            }
        } else {
            for (i, b) in body.prefix(seg.count).enumerated() { seg[i] = b }
        }
        if let info = try? WALSegmentInfo.inspect(seg, name: name) {
            precondition(info.end >= info.start && info.end.value <= info.start.value + (1 << 20))
        }
    case 1:
        _ = try? TimelineSwitch.parse(body)
    case 2:
        let text = String(decoding: body, as: UTF8.self)
        if let n = WALFileName(text), let number = n.segmentNumber(.default), n.kind == .segment {
            precondition(WALFileName.segment(timeline: n.timeline, number: number, size: .default) == text)
        }
        if let l = LSN(text) { precondition(LSN(l.description) == l) }
    default:
        // Chains: segments present or not by the input's bits, plans to every kind of target.
        var chain = WALChain(size: .default)
        for (i, b) in body.prefix(64).enumerated() where b & 1 == 1 {
            chain.add(ArchivedSegment(name: WALFileName.segment(timeline: 1 + UInt32(b >> 6), number: UInt64(i), size: .default),
                                      timeline: 1 + UInt32(b >> 6), number: UInt64(i), end: LSN(UInt64(i + 1) << 24 - 1)))
        }
        if body.count > 1 { chain.addHistory(timeline: 2, [TimelineSwitch(parent: 1, end: LSN(UInt64(body[0] % 64) << 24))]) }
        let b = BaseBackupPoint(id: "b", timeline: 1, start: LSN(UInt64(bytes[1] % 64) << 24), stop: LSN(UInt64(bytes[1] % 64 + 1) << 24), stopTime: .init(timeIntervalSince1970: 0))
        _ = try? chain.plan(.latest, backups: [b])
        _ = try? chain.plan(.lsn(LSN(UInt64(bytes[1]) << 22)), backups: [b])
        _ = try? chain.plan(.time(.init(timeIntervalSince1970: Double(bytes[1]))), backups: [b])
    }
    return 0
}
