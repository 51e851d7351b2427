import Foundation
import LifeboatCore
import LifeboatCrypto
import LifeboatRepository
import LifeboatStorage
import LifeboatWAL
import Testing
@testable import LifeboatPostgres

/// A segment file with a valid first page and nothing after it (1 MiB segments).
func segmentFile(_ dir: String, _ name: String, system: UInt64 = 77, fill: UInt8 = 0) throws -> WALInput {
    let n = WALFileName(name)!
    let size = SegmentSize(1 << 20)!
    var b = [UInt8](repeating: fill, count: 1 << 20)
    func put<T: FixedWidthInteger>(_ v: T, _ o: Int) { for k in 0..<MemoryLayout<T>.size { b[o + k] = UInt8(truncatingIfNeeded: v >> (8 * k)) } }
    for o in 0..<40 { b[o] = 0 }
    put(UInt16(0xD110), 0); put(UInt16(2), 2); put(n.timeline, 4)
    put(size.start(of: n.segmentNumber(size)!).value, 8)
    put(system, 24); put(UInt32(1 << 20), 32); put(UInt32(8192), 36)
    b[40] = 0; b[41] = 0; b[42] = 0; b[43] = 0
    let path = dir + "/" + name
    try Data(b).write(to: URL(fileURLWithPath: path))
    return WALInput(path: path, name: n)
}

@Suite struct WALStoreTests {
    func repo() async throws -> Repository {
        try await Repository.initialize(backend: MemoryBackend(), password: "pw", kdf: ScryptParameters(n: 1024, r: 8, p: 1))
    }
    func folder() -> String {
        let d = NSTemporaryDirectory() + "walstore-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    @Test func pushFetchAndTheCatalog() async throws {
        let r = try await repo(), d = folder()
        defer { try? FileManager.default.removeItem(atPath: d) }
        let store = WALStore(repo: r)
        let a = try segmentFile(d, "000000010000000000000001", fill: 1), b = try segmentFile(d, "000000010000000000000002", fill: 2)
        let res = try await store.push([a, b], system: nil, known: nil)
        #expect(res.stored.map(\.name) == [a.name.name, b.name.name])
        var catalogs = try await WALStore.catalogs(r)
        #expect(Array(catalogs.keys) == ["77"])
        let c = catalogs["77"]!
        #expect(c.files.count == 2)
        #expect(c.chain.run(from: 1, on: 1).segments.count == 2)
        // File commands do not see records.
        #expect(try await r.listSnapshots().allSatisfy { !SnapshotFilter().matches($0.snapshot) })
        // The same bytes again: nothing new; other bytes under the same name: refused.
        let again = try await store.push([a], system: nil, known: c)
        #expect(again.record == nil && again.alreadyArchived == [a.name.name])
        let other = try segmentFile(folder(), "000000010000000000000001", fill: 9)
        await #expect(throws: LifeboatError.self) { try await store.push([other], system: nil, known: c) }
        // Another cluster's segment is refused against this archive.
        let foreign = try segmentFile(folder(), "000000010000000000000003", system: 78)
        await #expect(throws: LifeboatError.self) { try await store.push([foreign], system: nil, known: c) }
        // Fetch: same bytes, checked.
        try await store.fetch(b.name.name, catalog: c, to: d + "/out")
        #expect(FileManager.default.contents(atPath: d + "/out") == FileManager.default.contents(atPath: b.path))
        await #expect(throws: LifeboatError.self) { try await store.fetch("000000010000000000000009", catalog: c, to: d + "/x") }
        catalogs = try await WALStore.catalogs(r)
        #expect(catalogs["77"]!.conflicts.isEmpty)
        // A record whose checksum (or size) is not the bytes': nothing at the path, no temporary left.
        for bad in ["sha", "size"] {
            var e = c.files[b.name.name]!
            if bad == "sha" { e.file.sha256 = String(repeating: "0", count: 64) } else { e.file.size -= 1 }
            await #expect(throws: LifeboatError.self) { try await store.fetch(e, to: d + "/bad") }
            #expect(try FileManager.default.contentsOfDirectory(atPath: d).filter { $0.hasPrefix("bad") }.isEmpty)
        }
    }

    /// A file archived before whose data the index no longer has (a lost pack, the index repaired) is stored again
    /// on its next push instead of being acknowledged, and fetched from the new copy.
    @Test func aRepushOfAFileWhoseDataWentStoresItAgain() async throws {
        let r = try await repo(), d = folder()
        defer { try? FileManager.default.removeItem(atPath: d) }
        let store = WALStore(repo: r)
        let a = try segmentFile(d, "000000010000000000000001", fill: 3)
        _ = try await store.push([a], system: nil, known: nil)
        try await r.loadIndex()
        var c = try await WALStore.catalogs(r)["77"]!
        #expect(try await store.push([a], system: nil, known: c).alreadyArchived == [a.name.name])
        for f in try await r.backend.list(.index) { try await r.backend.delete(Handle(.index, f.name)) }
        for f in try await r.backend.list(.data) { try await r.backend.delete(Handle(.data, f.name)) }
        try await r.loadIndex()
        let again = try await store.push([a], system: nil, known: c)
        #expect(again.alreadyArchived.isEmpty && again.stored.map(\.name) == [a.name.name])
        c = try await WALStore.catalogs(r)["77"]!
        try await store.fetch(a.name.name, catalog: c, to: d + "/back")
        #expect(FileManager.default.contents(atPath: d + "/back") == FileManager.default.contents(atPath: a.path))
    }

    /// A spool folder the user names is shared ground: one subfolder per cluster; the default is the data
    /// directory's own.
    @Test func spoolsOfTwoClustersNeverMix() {
        let none: [String: String] = [:]
        #expect(Spool.root(option: nil, environment: none, system: "77", directory: "/pg/a") == "/pg/a/lifeboat-spool")
        #expect(Spool.root(option: "/var/spool/lb", environment: none, system: "77", directory: "/pg/a") == "/var/spool/lb/77")
        #expect(Spool.root(option: "/var/spool/lb", environment: none, system: "78", directory: "/pg/b") == "/var/spool/lb/78")
        #expect(Spool.root(option: nil, environment: ["LIFEBOAT_SPOOL": "s"], system: "77", directory: "/pg/a") == "/pg/a/s/77")
        #expect(Spool.root(option: "/x", environment: none, system: nil, directory: "/") == "/x")
        #expect(Spool.root(option: "/x", environment: none, system: "../../etc", directory: "/") == "/x")
    }

    /// restore_command's fast path: with the helper's marker, a prefetched segment is moved by the shell and noted
    /// as requested; without the marker, or without the file, the fallback (wal-fetch) runs with %f and %p.
    @Test func restoreCommandTakesFromTheSpoolOnlyWithAHelper() throws {
        let d = folder()
        defer { try? FileManager.default.removeItem(atPath: d) }
        let spool = Spool(root: d + "/lifeboat-spool")
        try spool.prepare()
        try FileManager.default.createDirectory(atPath: d + "/pg_wal", withIntermediateDirectories: true)
        var name = "000000010000000000000005"
        let command = Spool.restoreCommand(fetch: ["touch", "fallback"])
        func run() -> Int32 {
            // As PostgreSQL expands it: %f, %p, %% ; run in the data directory through the shell.
            let text = command.replacingOccurrences(of: "%f", with: name).replacingOccurrences(of: "%p", with: "pg_wal/RECOVERYXLOG")
                .replacingOccurrences(of: "%%", with: "%")
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/sh")
            p.arguments = ["-c", text]
            p.currentDirectoryURL = URL(fileURLWithPath: d)
            try? p.run()
            p.waitUntilExit()
            return p.terminationStatus
        }
        try Data("seg".utf8).write(to: URL(fileURLWithPath: spool.fetch + "/" + name))
        // No helper yet: the fallback runs (and would start one); the spool keeps the file.
        #expect(run() == 0)
        #expect(FileManager.default.fileExists(atPath: d + "/fallback"))
        #expect(FileManager.default.fileExists(atPath: spool.fetch + "/" + name))
        try FileManager.default.removeItem(atPath: d + "/fallback")
        try writeFileAtomically(spool.helperMarker, Data())
        #expect(run() == 0)
        #expect(FileManager.default.contents(atPath: d + "/pg_wal/RECOVERYXLOG") == Data("seg".utf8))
        #expect(!FileManager.default.fileExists(atPath: spool.fetch + "/" + name))
        #expect(spool.requested() == name)
        #expect(!FileManager.default.fileExists(atPath: d + "/fallback"))
        // The file gone: the fallback again.
        #expect(run() == 0)
        #expect(FileManager.default.fileExists(atPath: d + "/fallback"))
        try FileManager.default.removeItem(atPath: d + "/fallback")
        // A history file is copied (PostgreSQL asks for it twice); a note that cannot be written fails nothing.
        name = "00000002.history"
        try Data("1\t0/3000000\tno recovery target specified\n".utf8).write(to: URL(fileURLWithPath: spool.fetch + "/" + name))
        #expect(run() == 0 && run() == 0)
        #expect(FileManager.default.fileExists(atPath: spool.fetch + "/" + name))
        #expect(FileManager.default.contents(atPath: d + "/pg_wal/RECOVERYXLOG") == FileManager.default.contents(atPath: spool.fetch + "/" + name))
        try FileManager.default.removeItem(atPath: spool.fetch + "/requested")
        try FileManager.default.createDirectory(atPath: spool.fetch + "/requested", withIntermediateDirectories: true)
        name = "000000010000000000000006"
        try Data("six".utf8).write(to: URL(fileURLWithPath: spool.fetch + "/" + name))
        #expect(run() == 0)
        #expect(FileManager.default.contents(atPath: d + "/pg_wal/RECOVERYXLOG") == Data("six".utf8))
        #expect(!FileManager.default.fileExists(atPath: d + "/fallback"))
    }

    @Test func badFilesStoreNothing() async throws {
        let r = try await repo(), d = folder()
        defer { try? FileManager.default.removeItem(atPath: d) }
        let store = WALStore(repo: r)
        let good = try segmentFile(d, "000000010000000000000001")
        // Truncated: not a segment size. The batch fails as a whole and no record is written.
        let short = d + "/000000010000000000000002"
        try Data(count: 1000).write(to: URL(fileURLWithPath: short))
        await #expect(throws: LifeboatError.self) {
            try await store.push([good, WALInput(path: short, name: WALFileName("000000010000000000000002")!)], system: nil, known: nil)
        }
        #expect(try await r.listSnapshots().isEmpty)
        // A renamed segment (its header says segment 1).
        let renamed = d + "/000000010000000000000005"
        try FileManager.default.copyItem(atPath: good.path, toPath: renamed)
        await #expect(throws: LifeboatError.self) {
            try await store.push([WALInput(path: renamed, name: WALFileName("000000010000000000000005")!)], system: nil, known: nil)
        }
        #expect(throws: LifeboatError.self) { try WALInput(path: d + "/RECOVERYXLOG") }
    }

    @Test func historiesAreKeptInTheRecord() async throws {
        let r = try await repo(), d = folder()
        defer { try? FileManager.default.removeItem(atPath: d) }
        let store = WALStore(repo: r)
        let s = try segmentFile(d, "000000010000000000000001")
        try Data("1\t0/1000100\tno recovery target specified\n".utf8).write(to: URL(fileURLWithPath: d + "/00000002.history"))
        _ = try await store.push([s, WALInput(path: d + "/00000002.history", name: WALFileName("00000002.history")!)], system: nil, known: nil)
        let c = try await WALStore.catalogs(r)["77"]!
        #expect(c.chain.histories[2] == [TimelineSwitch(parent: 1, end: LSN(0x1000100))])
        #expect(c.chain.timeline(of: 1, on: 2) == 1 && c.chain.timeline(of: 16, on: 2) == 2)
        // `pg timeline` names where timeline 2 left timeline 1.
        let t2 = ArchiveReport(c).timelines.first { $0.timeline == 2 }
        #expect(t2?.parent == 1 && t2?.branchedAt == "0/1000100")
    }
}

@Suite struct WALRetentionTests {
    @Test func keptBackupsKeepTheirWALAndNothingOlder() async throws {
        let r = try await Repository.initialize(backend: MemoryBackend(), password: "pw", kdf: ScryptParameters(n: 1024, r: 8, p: 1))
        let d = NSTemporaryDirectory() + "walret-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: d) }
        let store = WALStore(repo: r)
        for n in 1...6 {
            _ = try await store.push([try segmentFile(d, WALFileName.segment(timeline: 1, number: UInt64(n), size: SegmentSize(1 << 20)!), fill: UInt8(n))],
                                     system: nil, known: nil)
        }
        try Data("1\t0/100000\tx\n".utf8).write(to: URL(fileURLWithPath: d + "/00000002.history"))
        _ = try await store.push([WALInput(path: d + "/00000002.history", name: WALFileName("00000002.history")!)], system: 77, known: nil)
        func base(_ start: Int, _ at: TimeInterval) async throws -> ID {
            var s = Snapshot(time: Date(timeIntervalSince1970: at), tree: try await r.saveTree(Tree(nodes: [])).id, paths: ["/data"], hostname: "h")
            try await r.flush()
            var db = DatabaseRecord(system: "77", segmentSize: 1 << 20)
            db.timeline = 1; db.startLSN = LSN(UInt64(start) << 20 + 40).description; db.stopLSN = LSN(UInt64(start) << 20 + 400).description
            db.stopTime = Timestamp.format(Date(timeIntervalSince1970: at)); db.label = "x"
            s.kind = "pg-base"; s.database = db
            return try await r.saveSnapshot(s)
        }
        let b1 = try await base(2, 1_700_000_000), b2 = try await base(5, 1_700_086_400)
        let c = try await WALStore.catalogs(r)["77"]!
        #expect(c.files["00000002.history"] != nil, "\(c.files.keys.sorted())")
        let plan = WALRetention.plan(c, policy: RetentionPolicy(last: 1))
        #expect(plan.keep.map(\.id) == [b2] && plan.removeBackups.map(\.id) == [b1])
        #expect(plan.oldestNeeded == "000000010000000000000005")
        #expect(Set(plan.removeRecords.flatMap(\.names)) == Set((1...4).map { WALFileName.segment(timeline: 1, number: UInt64($0), size: SegmentSize(1 << 20)!) }))
        _ = try await WALRetention.execute(plan, repo: r)
        let after = try await WALStore.catalogs(r)["77"]!
        #expect(after.backups.map(\.id) == [b2])
        #expect(Set(after.files.keys) == ["000000010000000000000005", "000000010000000000000006", "00000002.history"])
        #expect(try after.chain.plan(.latest, backups: after.points).backup.id == b2.short)
        // Keeping both keeps everything from the older one's start.
        #expect(WALRetention.plan(c, policy: RetentionPolicy(last: 2)).removeRecords.flatMap(\.names) == ["000000010000000000000001"])
    }
}

@Suite struct FolderWatchTests {
    /// A wal-push call's request (a `.want` renamed in, `called` touched) is news; a waiting wal-push's look at the
    /// lock, or the helper's own acknowledgements, are not.
    @Test func onlyACallsRequestWakesTheHelperWithNews() async throws {
        let d = NSTemporaryDirectory() + "lifeboat-watch-\(UInt64.random(in: 0...UInt64.max))"
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: d) }
        let watch = try #require(FolderWatch(d))
        let lock = open(d + "/helper.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        close(lock)
        _ = await watch.wait(timeout: 0.05)  // the lock's creation
        close(open(d + "/helper.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600))
        try writeFileAtomically(d + "/000000010000000000000001.ok", Data())
        #expect(await watch.wait(timeout: 0.2) == false)
        try writeFileAtomically(d + "/000000010000000000000002.want", Data("/x".utf8))
        #expect(await watch.wait(timeout: 10) == true)
        close(open(d + "/called", O_WRONLY | O_CREAT | O_CLOEXEC, 0o600))
        #expect(await watch.wait(timeout: 10) == true)
    }

    /// Event records as the kernel writes them, and hostile ones: a length past the read ends the scan.
    @Test func eventRecordsAreReadWithinTheirBounds() {
        func event(_ name: String, pad: Int = 0) -> [UInt8] {
            let bytes = Array(name.utf8) + [UInt8](repeating: 0, count: 1 + pad)
            var h = [UInt8](repeating: 0, count: 16)
            withUnsafeBytes(of: UInt32(bytes.count)) { for (i, b) in $0.enumerated() { h[12 + i] = b } }
            return h + bytes
        }
        #expect(FolderWatch.announcesCall(ArraySlice(event("helper.lock", pad: 3) + event("called"))))
        #expect(FolderWatch.announcesCall(ArraySlice(event("x.ok") + event("000000010000000000000002.want", pad: 2))))
        #expect(!FolderWatch.announcesCall(ArraySlice(event("helper.lock") + event("a.ok") + event(".want.tmp"))))
        #expect(!FolderWatch.announcesCall(ArraySlice(event(".want"))))
        var overrun = event("called")
        overrun[12] = 200
        #expect(!FolderWatch.announcesCall(ArraySlice(overrun)))
        #expect(!FolderWatch.announcesCall(ArraySlice(event("called").prefix(10))))
        #expect(!FolderWatch.announcesCall([]))
        // A slice that does not start at 0 (as a read into part of a buffer).
        let both = event("junk") + event("called")
        #expect(FolderWatch.announcesCall(both[event("junk").count...]))
    }
}
