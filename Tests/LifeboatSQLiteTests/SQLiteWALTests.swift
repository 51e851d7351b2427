import Foundation
import GRDBSQLite
import LifeboatCore
import LifeboatSQLiteWAL
import LifeboatTestSupport
import Testing

/// A database in WAL mode with `rows` committed transactions still in its WAL (no checkpoint), and its WAL bytes.
func walWithRows(_ rows: Int, dir: String) throws -> (db: OpaquePointer, path: String, wal: [UInt8]) {
    let path = dir + "/t.db"
    var db: OpaquePointer?
    #expect(sqlite3_open(path, &db) == SQLITE_OK)
    for sql in ["PRAGMA journal_mode=WAL", "PRAGMA wal_autocheckpoint=0", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"] {
        #expect(sqlite3_exec(db, sql, nil, nil, nil) == SQLITE_OK)
    }
    for i in 0..<rows {
        #expect(sqlite3_exec(db, "INSERT INTO t (v) VALUES ('row \(i) \(String(repeating: "x", count: 300))')", nil, nil, nil) == SQLITE_OK)
    }
    let wal = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path + "-wal")))
    return (db!, path, wal)
}

func tempDir(_ name: String) -> String {
    let d = NSTemporaryDirectory() + "\(name)-\(UUID().uuidString)"
    try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}

@Suite struct SQLiteWALTests {
    @Test func headerAndScanOfARealWAL() throws {
        let dir = tempDir("sqlitewal")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (db, _, wal) = try walWithRows(20, dir: dir)
        defer { sqlite3_close(db) }
        let h = try SQLiteWALHeader.parse(wal)
        #expect(h.pageSize == 4096)
        let frames = wal.count - 32
        #expect(frames % h.frameSize == 0)
        let s = wal.withUnsafeBytes { WALScan.scan(UnsafeRawBufferPointer(rebasing: $0[32...]), header: h, firstFrame: 1, checksum: h.checksum) }
        // CREATE TABLE and 20 inserts: 21 transactions, every frame taken.
        #expect(s.commits.count == 21)
        #expect(s.frames == frames / h.frameSize)
        #expect(s.commits.last!.frame == s.frames)

        // Cut in the middle of the last frame: the last transaction is left for later, not half taken.
        let cut = Array(wal[32..<(wal.count - 100)])
        let s2 = cut.withUnsafeBytes { WALScan.scan($0, header: h, firstFrame: 1, checksum: h.checksum) }
        #expect(s2.commits.count == 20)
        #expect(s2.frames < s.frames)
        // A flipped byte in frame 3's page: the scan stops before frame 3's transaction.
        var bad = Array(wal[32...])
        bad[2 * h.frameSize + 24 + 100] ^= 0xff
        let s3 = bad.withUnsafeBytes { WALScan.scan($0, header: h, firstFrame: 1, checksum: h.checksum) }
        #expect(s3.frames < 3)
        // Frames of another cycle (other salts) are not this cycle's.
        var other = h
        other.salt1 &+= 1
        let s4 = wal.withUnsafeBytes { WALScan.scan(UnsafeRawBufferPointer(rebasing: $0[32...]), header: other, firstFrame: 1, checksum: h.checksum) }
        #expect(s4.frames == 0)
        // Continuing from the middle with the checksum reached there takes the rest.
        let mid = s.commits[9]
        let head = Array(wal[32..<(32 + mid.frame * h.frameSize)])
        let sh = head.withUnsafeBytes { WALScan.scan($0, header: h, firstFrame: 1, checksum: h.checksum) }
        let tail = Array(wal[(32 + mid.frame * h.frameSize)...])
        let st = tail.withUnsafeBytes { WALScan.scan($0, header: h, firstFrame: mid.frame + 1, checksum: sh.checksum) }
        #expect(sh.commits.count + st.commits.count == 21)
        #expect(st.checksum == s.checksum)
    }

    @Test func headerRejectsDamage() throws {
        let dir = tempDir("sqlitewal")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (db, _, wal) = try walWithRows(1, dir: dir)
        defer { sqlite3_close(db) }
        let header = Array(wal[0..<32])
        #expect(throws: SQLiteWALError.self) { try SQLiteWALHeader.parse(Array(header[0..<31])) }
        for (offset, why) in [(0, "magic"), (5, "version"), (10, "page size"), (17, "checksum")] {
            var b = header
            b[offset] ^= 0x40
            #expect(throws: SQLiteWALError.self, "a damaged \(why)") { try SQLiteWALHeader.parse(b) }
        }
    }

    @Test func frameLogRoundTripAndDamage() throws {
        let dir = tempDir("sqlitewal")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (db, _, wal) = try walWithRows(12, dir: dir)
        defer { sqlite3_close(db) }
        let h = try SQLiteWALHeader.parse(wal)
        var b = FrameLogBuilder(header: h, firstFrame: 1, checksum: h.checksum)
        // Two polls: the first 5 transactions at time 1000, the rest at 2000.
        let all = wal.withUnsafeBytes { WALScan.scan(UnsafeRawBufferPointer(rebasing: $0[32...]), header: h, firstFrame: 1, checksum: h.checksum) }
        let split = all.commits[4].frame
        let first = Array(wal[32..<(32 + split * h.frameSize)])
        let s1 = first.withUnsafeBytes { WALScan.scan($0, header: h, firstFrame: 1, checksum: h.checksum) }
        first.withUnsafeBytes { b.append($0, scan: s1, timeMillis: 1000) }
        let rest = Array(wal[(32 + split * h.frameSize)...])
        let s2 = rest.withUnsafeBytes { WALScan.scan($0, header: h, firstFrame: split + 1, checksum: s1.checksum) }
        rest.withUnsafeBytes { b.append($0, scan: s2, timeMillis: 2000) }
        #expect(b.transactions == 13)
        #expect(b.lastFrame == all.frames)
        #expect(b.checksumAfter == all.checksum)
        let log = try FrameLog.decode(b.bytes)
        #expect(log.transactions.count == 13)
        #expect(log.transactions.map(\.timeMillis) == Array(repeating: 1000, count: 5) + Array(repeating: 2000, count: 8))
        #expect(log.checksumAfter == all.checksum)
        #expect(log.lastFrame == all.frames)
        #expect(log.transactions.last!.pages == all.commits.last!.pages)

        func damaged(_ f: (inout [UInt8]) -> Void) -> [UInt8] { var x = b.bytes; f(&x); return x }
        let cases: [(String, [UInt8])] = [
            ("magic", damaged { $0[0] = 0 }),
            ("version", damaged { $0[11] = 2 }),
            ("page size", damaged { $0[14] = 0x11 }),
            ("flags", damaged { $0[19] |= 4 }),
            ("first frame 0", damaged { for k in 28..<32 { $0[k] = 0 } }),
            ("transaction count too large", damaged { $0[40] = 0x7f }),
            ("one transaction more than held", damaged { $0[43] += 1 }),
            ("frame count beyond the bytes", damaged { $0[48 + 8] = 0x10 }),
            ("cut short", Array(b.bytes.dropLast(10))),
            ("trailing bytes", b.bytes + [0, 0, 0]),
            ("a page byte flipped", damaged { $0[48 + 12 + 24 + 7] ^= 1 }),
            ("a salt changed", damaged { $0[48 + 12 + 8] ^= 1 }),
            ("a commit size in a middle frame", damaged { $0[48 + 12 + 7] = 1 }),
            ("page number 0", damaged { for k in 0..<4 { $0[48 + 12 + k] = 0 } }),
        ]
        for (why, bytes) in cases {
            #expect(throws: SQLiteWALError.self, "\(why)") { try FrameLog.decode(bytes) }
        }
        // Every prefix fails cleanly (no trap).
        for n in stride(from: 0, to: b.bytes.count, by: 997) { _ = try? FrameLog.decode(Array(b.bytes[0..<n])) }
    }
}

/// The fuzz target's seeds and every crashing input it ever found (fuzz/regressions/sqlitewal), replayed.
@Suite struct SQLiteWALFuzzRegressionTests {
    @Test func sqliteWALInputs() {
        let inputs = fuzzInputs("sqlitewal")
        #expect(inputs.count >= 2)
        var decoded = 0
        for i in inputs where !i.isEmpty {
            let body = Array(i.dropFirst())
            if i[0] % 2 == 0 {
                if let h = try? SQLiteWALHeader.parse(body) {
                    let s = body.withUnsafeBytes { WALScan.scan(UnsafeRawBufferPointer(rebasing: $0[32...]), header: h, firstFrame: 1, checksum: h.checksum) }
                    #expect(s.bytes <= body.count - 32)
                    decoded += 1
                }
            } else if (try? FrameLog.decode(body)) != nil {
                decoded += 1
            }
        }
        #expect(decoded >= 2)  // the seeds are valid
    }
}
