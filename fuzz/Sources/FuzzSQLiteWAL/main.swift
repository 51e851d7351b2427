import LifeboatSQLiteWAL

/// SQLite WAL files as the follower reads them (header, then frames scanned up to the last whole transaction) and
/// the frame logs a restore reads from a repository. The first byte chooses; the rest is the input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let first = bytes.first else { return 0 }
    let body = Array(bytes.dropFirst())
    if first % 2 == 0 {
        guard let h = try? SQLiteWALHeader.parse(body) else { return 0 }
        let s = body.withUnsafeBytes { WALScan.scan(UnsafeRawBufferPointer(rebasing: $0[32...]), header: h, firstFrame: 1, checksum: h.checksum) }
        precondition(s.bytes == s.frames * h.frameSize && s.bytes <= body.count - 32 && s.commits.count <= s.frames)
    } else if let log = try? FrameLog.decode(body) {
        var pages = 0
        for t in log.transactions { log.forEachPage(of: t) { n, page in precondition(n >= 1 && page.count == log.pageSize); pages += 1 } }
        precondition(pages == log.frameCount)
    }
    return 0
}
