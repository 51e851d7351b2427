import Foundation
import LifeboatCore
import Testing
@testable import LifeboatWAL
import LifeboatTestSupport

/// Builds WAL segments the way PostgreSQL lays them out: 8 KiB pages, a long header on the first, records 8-byte
/// aligned and split across pages with continuation headers.
struct SegmentBuilder {
    var bytes: [UInt8]
    let page = 8192
    let start: UInt64
    let tli: UInt32
    let sysid: UInt64
    var pos: Int
    var headerWritten = Set<Int>()

    init(name: String, size: Int = 1 << 20, sysid: UInt64 = 7_000_000_000_000_000_001, headerTimeline: UInt32? = nil,
         continuation: [UInt8] = []) {
        let n = WALFileName(name)!
        bytes = [UInt8](repeating: 0, count: size)
        start = SegmentSize(UInt64(size))!.start(of: n.segmentNumber(SegmentSize(UInt64(size))!)!).value
        tli = headerTimeline ?? n.timeline
        self.sysid = sysid
        pos = 0
        writeHeader(0, remaining: continuation.count)
        pos = 40
        if !continuation.isEmpty { writeData(continuation) }
    }

    mutating func put<T: FixedWidthInteger>(_ v: T, at o: Int) {
        for i in 0..<MemoryLayout<T>.size { bytes[o + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) }
    }

    mutating func writeHeader(_ p: Int, remaining: Int) {
        headerWritten.insert(p)
        put(UInt16(0xD110), at: p)
        put(UInt16((p == 0 ? 2 : 0) | (remaining > 0 ? 1 : 0)), at: p + 2)
        put(tli, at: p + 4)
        put(start + UInt64(p), at: p + 8)
        put(UInt32(remaining), at: p + 16)
        if p == 0 {
            put(sysid, at: 24)
            put(UInt32(bytes.count), at: 32)
            put(UInt32(page), at: 36)
        }
    }

    /// Writes record bytes from `pos`, starting new pages with headers that say how much of the record remains.
    mutating func writeData(_ data: [UInt8]) {
        var i = 0
        while i < data.count {
            if pos % page == 0 {
                guard pos < bytes.count else { return }
                writeHeader(pos, remaining: data.count - i)
                pos += 24
            }
            let n = min(page - pos % page, data.count - i)
            bytes.replaceSubrange(pos..<(pos + n), with: data[i..<(i + n)])
            pos += n; i += n
        }
    }

    /// One other record that ends exactly at `target` (the next record then starts there).
    mutating func pad(to target: Int) {
        pos = (pos + 7) & ~7
        var boundaries = 0
        var b = (pos / page + 1) * page
        while b < target { boundaries += 1; b += page }
        append(SegmentBuilder.other(target - pos - 24 * boundaries))
    }

    mutating func append(_ record: [UInt8]) {
        pos = (pos + 7) & ~7
        writeData(record)
    }

    /// A commit record at `time` (microseconds since 2000-01-01), with `extra` bytes of main data after the time.
    static func commit(_ micros: Int64, extra: Int = 8, info: UInt8 = 0x00) -> [UInt8] {
        let main = 8 + extra
        var r = [UInt8](repeating: 0, count: 24 + 2 + main)
        func put<T: FixedWidthInteger>(_ v: T, _ o: Int) { for k in 0..<MemoryLayout<T>.size { r[o + k] = UInt8(truncatingIfNeeded: v >> (8 * k)) } }
        put(UInt32(r.count), 0)
        r[16] = info; r[17] = 1
        r[24] = 255; r[25] = UInt8(main)
        put(micros, 26)
        return r
    }

    /// Some other record (a heap insert with a block reference), `length` bytes long.
    static func other(_ length: Int) -> [UInt8] {
        var r = [UInt8](repeating: 0xAB, count: length)
        for k in 0..<4 { r[k] = UInt8(truncatingIfNeeded: UInt32(length) >> (8 * k)) }
        r[16] = 0; r[17] = 10; r[24] = 0
        return r
    }
}

func micros(_ d: Date) -> Int64 { Int64(((d.timeIntervalSince1970 - WALSegmentInfo.postgresEpoch) * 1_000_000).rounded()) }

@Suite struct WALNameTests {
    @Test func segmentNames() {
        let n = WALFileName("00000002000000A1000000FF")!
        #expect(n.kind == .segment && n.timeline == 2 && n.log == 0xA1 && n.seg == 0xFF)
        #expect(n.segmentNumber(.default) == 0xA1 * 256 + 0xFF)
        #expect(WALFileName.segment(timeline: 2, number: 0xA1 * 256 + 0xFF, size: .default) == n.name)
        // 1 GiB segments: 4 per log; seg 4 does not exist.
        #expect(WALFileName("000000010000000000000004")!.segmentNumber(SegmentSize(1 << 30)!) == nil)
        #expect(WALFileName("000000010000000100000003")!.segmentNumber(SegmentSize(1 << 30)!) == 7)
    }

    @Test func otherKinds() {
        #expect(WALFileName("0000000A.history")?.kind == .history)
        #expect(WALFileName("0000000A.history")?.timeline == 10)
        #expect(WALFileName("000000010000000000000003.00000028.backup")?.kind == .backup)
        #expect(WALFileName("000000010000000000000003.partial")?.kind == .partial)
    }

    @Test(arguments: ["", "0000000100000000000000", "000000010000000000000003x", "00000001000000000000000g",
                      "000000010000000000000003.backup", "00000000000000000000000A", "00000000.history",
                      "000000010000000000000003.0000002.backup", "0000000100000000000000003", "../00000001000000000000000",
                      "000000010000000000000003.partialx", "0000000a0000000000000003"])
    func rejected(_ name: String) {
        #expect(WALFileName(name) == nil)
    }

    @Test func lsn() {
        #expect(LSN("16/B374D848")?.value == 0x16_B374_D848)
        #expect(LSN(0x16_B374_D848).description == "16/B374D848")
        #expect(LSN("0/0")?.value == 0)
        for bad in ["", "1", "/1", "1/", "123456789/0", "x/1", "1/2/3", "-1/0"] { #expect(LSN(bad) == nil, "\(bad)") }
    }

    @Test func segmentSizes() {
        #expect(SegmentSize(16 << 20) != nil && SegmentSize(1 << 20) != nil && SegmentSize(1 << 30) != nil)
        for bad: UInt64 in [0, 1, 512 << 10, 3 << 20, 2 << 30] { #expect(SegmentSize(bad) == nil) }
    }

    @Test func histories() throws {
        let text = "1\t0/3000158\tno recovery target specified\n\n# comment\n2\t0/5000000\tat restore point\n"
        let h = try TimelineSwitch.parse(Array(text.utf8))
        #expect(h == [TimelineSwitch(parent: 1, end: LSN(0x3000158)), TimelineSwitch(parent: 2, end: LSN(0x5000000))])
        #expect(throws: LifeboatError.self) { try TimelineSwitch.parse(Array("1 x\n".utf8)) }
        #expect(throws: LifeboatError.self) { try TimelineSwitch.parse(Array("2 0/5\n1 0/6\n".utf8)) }
        #expect(throws: LifeboatError.self) { try TimelineSwitch.parse(Array("1 0/6\n2 0/5\n".utf8)) }
        #expect(try TimelineSwitch.parse([]) == [])
    }
}

@Suite struct WALSegmentTests {
    let t0 = Date(timeIntervalSince1970: 1_764_600_000.25)

    @Test func commitTimesAndEnd() throws {
        var b = SegmentBuilder(name: "000000010000000000000003")
        b.append(SegmentBuilder.other(100))
        b.append(SegmentBuilder.commit(micros(t0)))
        // Records that cross pages, and a commit whose header is split by a page boundary.
        for _ in 0..<3 { b.append(SegmentBuilder.other(5000)) }
        b.pad(to: 8192 * 3 - 16)
        b.append(SegmentBuilder.commit(micros(t0) + 2_000_000, extra: 30))
        let lastStart = (b.pos + 7) & ~7
        b.append(SegmentBuilder.commit(micros(t0) + 1_000_000, info: 0x20))  // an abort, earlier
        let end = b.pos
        let info = try WALSegmentInfo.inspect(b.bytes, name: WALFileName("000000010000000000000003")!)
        #expect(info.systemIdentifier == 7_000_000_000_000_000_001)
        #expect(info.start == LSN(3 << 20))
        #expect(info.transactions == 3)
        #expect(abs(info.firstTime!.timeIntervalSince(t0)) < 1e-6)
        #expect(abs(info.lastTime!.timeIntervalSince(t0.addingTimeInterval(2))) < 1e-6)
        #expect(info.end == LSN(UInt64(3 << 20) + UInt64(end)))
        #expect(info.lastRecord == LSN(UInt64(3 << 20) + UInt64(lastStart)))
    }

    @Test func aContinuedRecordAtTheStartIsSkipped() throws {
        var b = SegmentBuilder(name: "000000010000000000000004", continuation: [UInt8](repeating: 0xEE, count: 9000))
        b.append(SegmentBuilder.commit(micros(t0)))
        let info = try WALSegmentInfo.inspect(b.bytes, name: WALFileName("000000010000000000000004")!)
        #expect(info.transactions == 1)
    }

    @Test func aRecordIntoTheNextSegmentEndsTheScan() throws {
        var b = SegmentBuilder(name: "000000010000000000000004")
        b.append(SegmentBuilder.commit(micros(t0)))
        let before = b.pos
        b.pos = (1 << 20) - 8192
        b.append(SegmentBuilder.other(20000))
        let info = try WALSegmentInfo.inspect(b.bytes, name: WALFileName("000000010000000000000004")!)
        #expect(info.transactions == 1)
        #expect(info.end.value >= UInt64(4 << 20) + UInt64(before))
    }

    @Test func wrongFilesAreRefused() {
        let name = WALFileName("000000010000000000000003")!
        let good = SegmentBuilder(name: name.name).bytes
        // Truncated, not a power of two.
        #expect(throws: LifeboatError.self) { try WALSegmentInfo.inspect(Array(good.prefix(1_000_000)), name: name) }
        // Renamed: the header's address is another segment's.
        #expect(throws: LifeboatError.self) { try WALSegmentInfo.inspect(good, name: WALFileName("000000010000000000000004")!) }
        // Another cluster's.
        #expect(throws: LifeboatError.self) { try WALSegmentInfo.inspect(good, name: name, expectedSystem: 42) }
        // A header from a later timeline than the name's.
        let later = SegmentBuilder(name: name.name, headerTimeline: 2).bytes
        #expect(throws: LifeboatError.self) { try WALSegmentInfo.inspect(later, name: name) }
        // An earlier timeline is fine (the first segment of a new timeline is copied from its parent).
        let copied = SegmentBuilder(name: "000000020000000000000003", headerTimeline: 1).bytes
        #expect((try? WALSegmentInfo.inspect(copied, name: WALFileName("000000020000000000000003")!)) != nil)
        // Zeroes.
        #expect(throws: LifeboatError.self) { try WALSegmentInfo.inspect([UInt8](repeating: 0, count: 1 << 20), name: name) }
        // A history file is not a segment.
        #expect(throws: LifeboatError.self) { try WALSegmentInfo.inspect(good, name: WALFileName("00000002.history")!) }
    }

    /// Damaged segments: any byte may be anything; the scan ends or goes on, never traps or reads outside.
    @Test func damagedSegmentsNeverTrap() {
        var b = SegmentBuilder(name: "000000010000000000000003")
        for i in 0..<200 { b.append(i % 3 == 0 ? SegmentBuilder.commit(micros(t0) + Int64(i)) : SegmentBuilder.other(37 + i * 13)) }
        var rng = SystemRandomNumberGenerator()
        let name = WALFileName("000000010000000000000003")!
        for _ in 0..<300 {
            var d = b.bytes
            for _ in 0..<Int.random(in: 1...40, using: &rng) {
                d[Int.random(in: 0..<min(d.count, b.pos + 64), using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            }
            _ = try? WALSegmentInfo.inspect(d, name: name)
        }
    }
}

@Suite struct WALChainTests {
    let size = SegmentSize.default
    let t0 = Date(timeIntervalSince1970: 1_764_600_000)

    func seg(_ tli: UInt32, _ n: UInt64, time: Double? = nil) -> ArchivedSegment {
        ArchivedSegment(name: WALFileName.segment(timeline: tli, number: n, size: size), timeline: tli, number: n,
                        end: LSN((n + 1) * size.bytes - 100), firstTime: time.map { t0.addingTimeInterval($0) },
                        lastTime: time.map { t0.addingTimeInterval($0 + 5) })
    }

    func backup(_ id: String, tli: UInt32 = 1, start: UInt64, stop: UInt64, at: Double) -> BaseBackupPoint {
        BaseBackupPoint(id: id, timeline: tli, start: LSN(start * size.bytes + 40), stop: LSN(stop * size.bytes + 200),
                        stopTime: t0.addingTimeInterval(at))
    }

    @Test func timelinesFollowTheirHistory() {
        var c = WALChain(size: size)
        for n in 1...5 { c.add(seg(1, UInt64(n), time: Double(n * 10))) }
        // Timeline 2 branched from 1 inside segment 4: segment 4 and later come from timeline 2.
        c.addHistory(timeline: 2, [TimelineSwitch(parent: 1, end: LSN(4 * size.bytes + 500))])
        for n in 4...6 { c.add(seg(2, UInt64(n), time: Double(n * 10 + 1))) }
        #expect(c.timeline(of: 3, on: 2) == 1)
        #expect(c.timeline(of: 4, on: 2) == 2)
        #expect(c.timeline(of: 5, on: 1) == 1)
        let r = c.run(from: 1, on: 2)
        #expect(r.hole == nil)
        #expect(r.segments.map(\.name) == ["000000010000000000000001", "000000010000000000000002", "000000010000000000000003",
                                           "000000020000000000000004", "000000020000000000000005", "000000020000000000000006"])
        #expect(c.latestTimeline(from: backup("a", start: 1, stop: 2, at: 15)) == 2)
        // A backup taken on timeline 1 after the branch point is not on timeline 2's path.
        #expect(c.latestTimeline(from: backup("b", start: 5, stop: 5, at: 52)) == 1)
    }

    @Test func aHoleIsNamedWithWhatLiesBeyond() {
        var c = WALChain(size: size)
        for n: UInt64 in [1, 2, 3, 5, 6] { c.add(seg(1, n, time: Double(n * 10))) }
        let r = c.run(from: 1, on: 1)
        #expect(r.hole == "000000010000000000000004")
        #expect(r.beyondHole == 2)
        #expect(r.segments.count == 3)
        // A run from beyond the hole has none.
        #expect(c.run(from: 5, on: 1).hole == nil)
    }

    @Test func plans() throws {
        var c = WALChain(size: size)
        for n in 1...8 { c.add(seg(1, UInt64(n), time: Double(n * 10))) }
        let b1 = backup("b1", start: 1, stop: 2, at: 22), b2 = backup("b2", start: 5, stop: 5, at: 53)
        // The newest backup that stopped before the time.
        #expect(try c.plan(.time(t0.addingTimeInterval(40)), backups: [b1, b2]).backup == b1)
        #expect(try c.plan(.time(t0.addingTimeInterval(60)), backups: [b1, b2]).backup == b2)
        #expect(try c.plan(.latest, backups: [b1, b2]).backup == b2)
        #expect(try c.plan(.lsn(LSN(6 * size.bytes)), backups: [b1, b2]).backup == b2)
        // Before the oldest backup's stop; after the newest transaction (85 s).
        #expect(throws: LifeboatError.self) { try c.plan(.time(t0.addingTimeInterval(10)), backups: [b1, b2]) }
        #expect(throws: LifeboatError.self) { try c.plan(.time(t0.addingTimeInterval(85)), backups: [b1, b2]) }
        #expect((try? c.plan(.time(t0.addingTimeInterval(84.9)), backups: [b1, b2])) != nil)
        #expect(throws: LifeboatError.self) { try c.plan(.lsn(LSN(20 * size.bytes)), backups: [b1, b2]) }
        #expect(throws: LifeboatError.self) { try c.plan(.latest, backups: []) }
    }

    /// The prefetch bound: the segment that holds the first transaction after the target, and one more (the
    /// server reads ahead); none for --latest; never past the run's end.
    @Test func lastNeededSegment() throws {
        var c = WALChain(size: size)
        // Segment n holds transactions from 10n to 10n + 5 s.
        for n in 1...8 { c.add(seg(1, UInt64(n), time: Double(n * 10))) }
        let b1 = backup("b1", start: 1, stop: 2, at: 22)
        let name = { (n: UInt64) in WALFileName.segment(timeline: 1, number: n, size: self.size) }
        #expect(try c.plan(.time(t0.addingTimeInterval(40)), backups: [b1]).lastNeeded == name(5))  // 4 ends at 45 s > 40
        #expect(try c.plan(.time(t0.addingTimeInterval(46)), backups: [b1]).lastNeeded == name(6))  // 5 holds 50–55 s
        #expect(try c.plan(.time(t0.addingTimeInterval(84)), backups: [b1]).lastNeeded == name(8))  // the last: no ninth
        #expect(try c.plan(.lsn(LSN(3 * size.bytes + 10)), backups: [b1]).lastNeeded == name(4))
        #expect(try c.plan(.latest, backups: [b1]).lastNeeded == nil)
    }

    /// Recovery to a position stops after the first record that starts at or after it: the last archived
    /// record's start is the last position that can be reached; past it (even before the last record's end), the
    /// server would end recovery without reaching the target, so the plan refuses. Without `last_record` (records
    /// of an earlier version), the segment's end bounds it.
    @Test func anLSNTargetMustBeAtOrBeforeTheLastRecordStart() throws {
        var c = WALChain(size: size)
        for n in 1...3 {
            var s = seg(1, UInt64(n), time: Double(n * 10))
            s.lastRecord = LSN(s.end.value - 60)
            c.add(s)
        }
        let b1 = backup("b1", start: 1, stop: 2, at: 22)
        let last = LSN(4 * size.bytes - 160)  // segment 3's last record
        #expect(try c.plan(.lsn(last), backups: [b1]).backup == b1)
        #expect(throws: LifeboatError.self) { try c.plan(.lsn(LSN(last.value + 1)), backups: [b1]) }
        do {
            _ = try c.plan(.lsn(LSN(last.value + 8)), backups: [b1])
        } catch {
            #expect("\(error)".contains("\(last)"))
        }
        var old = WALChain(size: size)
        for n in 1...3 { old.add(seg(1, UInt64(n), time: Double(n * 10))) }
        #expect(try old.plan(.lsn(LSN(4 * size.bytes - 101)), backups: [b1]).backup == b1)
        #expect(throws: LifeboatError.self) { try old.plan(.lsn(LSN(4 * size.bytes - 100)), backups: [b1]) }
    }

    @Test func aHoleLimitsTheRangeAndIsNamed() {
        var c = WALChain(size: size)
        for n: UInt64 in [1, 2, 3, 5, 6] { c.add(seg(1, n, time: Double(n * 10))) }
        let b = backup("b", start: 1, stop: 1, at: 12)
        #expect((try? c.plan(.time(t0.addingTimeInterval(30)), backups: [b])) != nil)
        // --latest does not stop at the hole silently.
        #expect(throws: LifeboatError.self) { try c.plan(.latest, backups: [b]) }
        do {
            _ = try c.plan(.time(t0.addingTimeInterval(55)), backups: [b])
            Issue.record("a target past a hole must be refused")
        } catch let e as LifeboatError {
            #expect(e.message.contains("000000010000000000000004"))
            #expect(e.message.contains("newest restorable time"))
        } catch { Issue.record("\(error)") }
    }

    @Test func aBackupWithoutItsWALIsNotUsed() throws {
        var c = WALChain(size: size)
        for n: UInt64 in [1, 2, 4, 5, 6] { c.add(seg(1, n, time: Double(n * 10))) }
        // b2 lacks segment 3 between its start (2) and stop (3); b1 is whole but its WAL ends at the hole.
        let b1 = backup("b1", start: 1, stop: 1, at: 12), b2 = backup("b2", start: 2, stop: 3, at: 33)
        #expect(c.reach(b2).missingForConsistency == "000000010000000000000003")
        #expect(c.reach(b1).consistent)
        #expect(throws: LifeboatError.self) { try c.plan(.latest, backups: [b2]) }
        #expect(try c.plan(.time(t0.addingTimeInterval(20)), backups: [b1, b2]).backup == b1)
    }
}

/// The fuzz target's seeds and every crashing input it ever found (fuzz/regressions/wal), replayed.
@Suite struct WALFuzzRegressionTests {
    @Test func walInputs() {
        let inputs = fuzzInputs("wal")
        #expect(!inputs.isEmpty)
        for i in inputs where i.count >= 2 {
            let body = Array(i.dropFirst(2))
            switch i[0] % 4 {
            case 0:
                var seg = [UInt8](repeating: 0, count: 1 << 20)
                for (k, b) in body.prefix(seg.count).enumerated() { seg[k] = b }
                _ = try? WALSegmentInfo.inspect(seg, name: WALFileName("000000010000000000000003")!)
            case 1: _ = try? TimelineSwitch.parse(body)
            default:
                _ = WALFileName(String(decoding: body, as: UTF8.self))
                _ = LSN(String(decoding: body, as: UTF8.self))
            }
        }
    }
}
