import Foundation
import LifeboatCore
import LifeboatSQLiteWAL
import Testing

@Suite struct SQLiteCatalogTests {
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    func record(_ kind: String, gen: String, seq: Int, at: Double, last: Double? = nil, db: String = "/srv/app.db") -> (id: ID, snapshot: Snapshot) {
        var r = SQLiteRecord(database: db, generation: gen, seq: seq, pageSize: 4096, cycle: "0000000100000002",
                             firstFrame: kind == "sqlite-wal" ? seq * 10 + 1 : 0, lastFrame: kind == "sqlite-wal" ? seq * 10 + 10 : 0,
                             checksum: "0000000000000000", pages: 3)
        if kind == "sqlite-wal" {
            r.transactions = 4
            r.firstTime = Timestamp.format(t0 + at)
            r.lastTime = Timestamp.format(t0 + (last ?? at + 0.9))
        }
        var s = Snapshot(time: t0 + (last ?? at), tree: ID(w0: 1, w1: 2, w2: 3, w3: 4), paths: [db], hostname: "h")
        s.kind = kind
        s.sqlite = r
        return (ID(w0: UInt64(seq), w1: UInt64(at * 1000), w2: UInt64(kind.count), w3: UInt64(gen.hashValue.magnitude)), s)
    }

    let genA = "00000000000000aa", genB = "00000000000000bb"

    @Test func plansByTime() throws {
        let recs = [record("sqlite-snapshot", gen: genA, seq: 0, at: 0)] + (0..<5).map { record("sqlite-wal", gen: genA, seq: $0, at: Double($0 + 1)) }
            + [record("sqlite-snapshot", gen: genA, seq: 3, at: 3.95)]
        let c = try #require(SQLiteCatalog.build(recs)["h:/srv/app.db"])
        let p = try c.plan(.time(t0 + 2.5))
        #expect(p.snapshot.record.seq == 0)
        #expect(p.wal.map(\.record.seq) == [0, 1])  // record 2 begins at 3 s, after the target
        let q = try c.plan(.time(t0 + 4.5))
        #expect(q.snapshot.record.seq == 3)  // the later snapshot, then records 3 (and 4 begins at 5 s)
        #expect(q.wal.map(\.record.seq) == [3])
        let l = try c.plan(.latest)
        #expect(l.wal.map(\.record.seq) == [3, 4])
        #expect(throws: LifeboatError.self) { try c.plan(.time(t0 - 1)) }
        do { _ = try c.plan(.time(t0 - 1)) } catch let e as LifeboatError {
            #expect(e.message.contains("nearest restorable time"))
        }
        #expect(abs(c.generations[genA]!.end!.timeIntervalSince(t0 + 5.9)) < 0.001)
    }

    @Test func holesAreNamed() throws {
        let recs = [record("sqlite-snapshot", gen: genA, seq: 0, at: 0)] + [0, 1, 3, 4].map { record("sqlite-wal", gen: genA, seq: $0, at: Double($0 + 1)) }
        let c = try #require(SQLiteCatalog.build(recs)["h:/srv/app.db"])
        #expect(c.generations[genA]!.missing(from: 0) == (1, 2))
        // Before the hole: fine. At or past it: an error naming record 2 and where the chain stops.
        #expect(try c.plan(.time(t0 + 2.5)).wal.count == 2)
        #expect(throws: LifeboatError.self) { try c.plan(.time(t0 + 4.5)) }
        do { _ = try c.plan(.latest) } catch let e as LifeboatError {
            #expect(e.message.contains("WAL record 2"))
            #expect(e.message.contains(Timestamp.format(t0 + 2.9)))
        }
    }

    @Test func generationsFollowEachOther() throws {
        let recs = [record("sqlite-snapshot", gen: genA, seq: 0, at: 0), record("sqlite-wal", gen: genA, seq: 0, at: 1),
                    record("sqlite-snapshot", gen: genB, seq: 0, at: 10), record("sqlite-wal", gen: genB, seq: 0, at: 11)]
        let c = try #require(SQLiteCatalog.build(recs)["h:/srv/app.db"])
        #expect(try c.plan(.time(t0 + 5)).generation == genA)
        #expect(try c.plan(.time(t0 + 10.5)).generation == genB)
        #expect(try c.plan(.latest).generation == genB)
    }

    @Test func hostileNumbersCostNothing() throws {
        // A record numbered 2^31 - 1 (a hostile writer's): one hole of two billion, counted, not listed.
        var far = record("sqlite-wal", gen: genA, seq: 1, at: 1)
        far.snapshot.sqlite!.seq = Int(Int32.max)
        var many = record("sqlite-wal", gen: genA, seq: 0, at: 0.5)
        many.snapshot.sqlite!.transactions = Int.max
        let c = try #require(SQLiteCatalog.build([record("sqlite-snapshot", gen: genA, seq: 0, at: 0), far, many, record("sqlite-wal", gen: genA, seq: 0, at: 0.2)])["h:/srv/app.db"])
        let g = c.generations[genA]!
        #expect(g.missing(from: 0) == (Int(Int32.max) - 1, 1))
        #expect(c.invalid.count == 1)  // Int.max transactions
        #expect(throws: LifeboatError.self) { try c.plan(.latest) }
    }

    @Test func invalidMetadataIsSetAside() throws {
        var bad = record("sqlite-wal", gen: genA, seq: 1, at: 1)
        bad.snapshot.sqlite!.pageSize = 1000
        var bad2 = record("sqlite-wal", gen: "zz", seq: 2, at: 2)
        bad2.snapshot.sqlite!.seq = -5
        let c = try #require(SQLiteCatalog.build([record("sqlite-snapshot", gen: genA, seq: 0, at: 0), bad, bad2])["h:/srv/app.db"])
        #expect(c.invalid.count == 2)
        #expect(c.generations[genA]!.wal.isEmpty)
    }
}
