import Dispatch
import Foundation
import GRDBSQLite
import LifeboatCore
import LifeboatCrypto
import LifeboatRepository
import LifeboatSQLiteWAL
import LifeboatStorage
import Synchronization
import Testing
@testable import LifeboatSQLite

/// The follower against a real SQLite database written by another connection, into an in-memory repository; then
/// restores compared with the database.
@Suite struct FollowerTests {
    func exec(_ db: OpaquePointer?, _ sql: String) { #expect(sqlite3_exec(db, sql, nil, nil, nil) == SQLITE_OK, "\(sql)") }
    func count(_ path: String) -> Int {
        var db: OpaquePointer?
        sqlite3_open(path, &db)
        defer { sqlite3_close(db) }
        var st: OpaquePointer?
        sqlite3_prepare_v2(db, "SELECT count(*) FROM t", -1, &st, nil)
        defer { sqlite3_finalize(st) }
        return sqlite3_step(st) == SQLITE_ROW ? Int(sqlite3_column_int64(st, 0)) : -1
    }
    /// A database in WAL mode with table t, its writing connection, and an in-memory repository.
    func setUp(_ name: String) async throws -> (dir: String, path: String, writer: OpaquePointer?, repo: Repository) {
        let dir = tempDir(name)
        let path = dir + "/app.db"
        var w: OpaquePointer?
        #expect(sqlite3_open(path, &w) == SQLITE_OK)
        sqlite3_busy_timeout(w, 5000)
        exec(w, "PRAGMA journal_mode=WAL")
        exec(w, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        let repo = try await Repository.initialize(backend: MemoryBackend(), password: "pw", kdf: ScryptParameters(n: 1024, r: 8, p: 1))
        return (dir, path, w, repo)
    }

    @Test func followsRestartsAndRestoresAtTimes() async throws {
        let (dir, path, w, repo) = try await setUp("follower")
        defer { sqlite3_close(w); try? FileManager.default.removeItem(atPath: dir) }
        var o = SQLiteFollower.Options()
        o.interval = 0.1
        o.poll = 0.01
        o.checkpointPages = 50  // restarts of the WAL, often
        let follower = SQLiteFollower(path: path, store: SQLiteStore(repo: repo), options: o)
        let stop = Mutex(false)
        let control = FollowerControl()
        let checkpoints = Mutex(0)
        let task = Task {
            try await follower.run(shouldStop: { stop.withLock { $0 } }, control: control) { e in
                if case .checkpoint(let log, let done) = e, done == log { checkpoints.withLock { $0 += 1 } }
            }
        }
        // Wait for the first snapshot, then write in three bursts, noting a time after each is stored.
        while control.syncedAt == nil { try await Task.sleep(for: .milliseconds(10)) }
        var marks: [(Date, Int)] = []
        var n = 0
        for _ in 0..<3 {
            for _ in 0..<200 { n += 1; exec(w, "INSERT INTO t (v) VALUES ('\(String(repeating: "x", count: n % 700))')") }
            let committed = currentTime()
            while (control.syncedAt ?? .distantPast) <= committed { try await Task.sleep(for: .milliseconds(10)) }
            marks.append((currentTime(), n))
            try await Task.sleep(for: .milliseconds(20))
        }
        stop.withLock { $0 = true }
        try await task.value
        let catalog = try #require(try await SQLiteStore(repo: repo).catalog(follower.path))
        #expect(catalog.generations.count == 1)
        #expect(checkpoints.withLock { $0 } >= 2)  // the WAL restarted under the follower, and the history went on
        for (k, (time, rows)) in marks.enumerated() {
            let target = dir + "/restored\(k).db"
            let r = try await SQLiteRestore.run(try catalog.plan(.time(time)), store: SQLiteStore(repo: repo), target: target)
            #expect(r.integrity == "ok")
            #expect(count(target) == rows)
        }
        // An existing target is refused.
        await #expect(throws: LifeboatError.self) {
            _ = try await SQLiteRestore.run(try catalog.plan(.latest), store: SQLiteStore(repo: repo), target: dir + "/restored0.db")
        }
    }
}

extension FollowerTests {
    /// A transaction committed between a turn's start and its read is stored by that turn, whose `synced` can only
    /// say "through" the turn's start: once the application is quiet, a later `synced` says it is stored (the CLI's
    /// log is how a script learns that what it committed is safe; CI saw a script wait for that in vain).
    @Test func aQuietTurnAfterAStoreSaysEverythingIsStored() async throws {
        let (dir, path, w, repo) = try await setUp("follower-synced")
        defer { sqlite3_close(w); try? FileManager.default.removeItem(atPath: dir) }
        var o = SQLiteFollower.Options()
        o.interval = 0.1
        o.poll = 0.01
        let follower = SQLiteFollower(path: path, store: SQLiteStore(repo: repo), options: o)
        let stop = Mutex(false)
        let control = FollowerControl()
        // (time a store was seen, newest `through` said after it)
        let seen = Mutex<(shipped: Date?, through: Date?)>((nil, nil))
        let task = Task {
            try await follower.run(shouldStop: { stop.withLock { $0 } }, control: control) { e in
                switch e {
                case .shipped: seen.withLock { $0 = (currentTime(), nil) }
                case .synced(let t): seen.withLock { if $0.shipped != nil { $0.through = t } }
                default: break
                }
            }
        }
        while control.syncedAt == nil { try await Task.sleep(for: .milliseconds(10)) }
        exec(w, "INSERT INTO t (v) VALUES ('one')")
        let deadline = ContinuousClock.now + .seconds(30)
        var ok = false
        while ContinuousClock.now < deadline {
            let s = seen.withLock { $0 }
            if let shipped = s.shipped, let through = s.through, through > shipped { ok = true; break }
            try await Task.sleep(for: .milliseconds(10))
        }
        stop.withLock { $0 = true }
        try await task.value
        #expect(ok, "no sqlite_synced after the store said it (seen: \(seen.withLock { $0 }))")
    }
}

/// A follower started again (each new generation) opens the database anew: nothing of the old one stays open.
@Suite struct FollowerDescriptorTests {
    func open(_ path: String) -> Int {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return fds.filter { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + $0)) == path }.count
    }

    @Test func coresCloseTheDatabaseWhenReleased() throws {
        let dir = tempDir("follower-fds")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (db, path, _) = try walWithRows(3, dir: dir)
        // SQLite itself may keep a closed connection's descriptor for reuse while another connection of the
        // process holds a lock on the file (POSIX locks die with any descriptor): a constant, never a growth.
        _ = try FollowerCore(path: path, busyTimeoutMillis: 100)
        let settled = open(path)
        for _ in 0..<10 { _ = try FollowerCore(path: path, busyTimeoutMillis: 100) }
        #expect(open(path) == settled)
        // The database replaced (deleted under its name): once no core follows it, its descriptor goes and
        // its space is freed.
        do {
            let core = try FollowerCore(path: path, busyTimeoutMillis: 100)
            _ = core
            sqlite3_close(db)
            unlink(path); unlink(path + "-wal"); unlink(path + "-shm")
        }
        #expect(open(path + " (deleted)") == 0)
        // A core that cannot start (no such file) leaves nothing open either.
        #expect(throws: LifeboatError.self) { _ = try FollowerCore(path: dir + "/none.db", busyTimeoutMillis: 100) }
    }
}

/// The core's copy of the WAL, its checkpoint and its snapshots, driven by hand against a real database.
@Suite struct FollowerCoreTests {
    func exec(_ db: OpaquePointer?, _ sql: String) { #expect(sqlite3_exec(db, sql, nil, nil, nil) == SQLITE_OK, "\(sql)") }
    func walFrames(_ path: String, pageSize: Int = 4096) -> Int {
        let size = (try? FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int) ?? 0
        return max(0, size - 32) / (24 + pageSize)
    }

    /// A database of `rows` rows in WAL mode and a core following it, for `body`; everything removed after.
    func withCore(_ rows: Int, _ body: (OpaquePointer, String, FollowerCore) throws -> Void) throws {
        let dir = tempDir("follower-core")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (db, path, _) = try walWithRows(rows, dir: dir)
        defer { sqlite3_close(db) }
        try body(db, path, try FollowerCore(path: path, busyTimeoutMillis: 1000))
    }

    /// A poll copies every transaction committed before it, whatever its pieces: transactions that straddle the
    /// end of a piece and one longer than a piece (a piece of 3 frames here). Before, a piece that ended inside a
    /// transaction ended the poll, and the follower's checkpoint then let SQLite restart the log over frames
    /// never copied: restores missed transactions or were malformed (FollowerTests, 1 run in 10 under load).
    @Test func aPollReadsPastPiecesThatEndInsideATransaction() throws {
        try withCore(0) { db, path, core in
            core.readPiece = 3 * (24 + 4096)
            for i in 0..<20 { exec(db, "INSERT INTO t (v) VALUES ('\(i) \(String(repeating: "y", count: 1500))')") }
            exec(db, "INSERT INTO t (v) VALUES ('\(String(repeating: "z", count: 40_000))')")  // 10 overflow pages, one transaction
            exec(db, "INSERT INTO t (v) VALUES ('after')")
            let n = try core.poll(now: Date())
            #expect(n == 23)  // CREATE TABLE, 20 rows, the long row, the last one
            #expect(core.copiedFrames == walFrames(path))
            let logs = core.take()
            #expect(logs.reduce(0) { $0 + $1.transactions } == 23)
            // Nothing new: nothing more.
            #expect(try core.poll(now: Date()) == 0)
        }
    }

    /// The follower's checkpoint compares the frames it copied with those the log holds before it lets go of its
    /// read transaction: a log it cannot follow (a frame damaged on disk past the copy) is a broken history (a new
    /// generation), never a restart of the log over frames not copied.
    @Test func aCheckpointThatCopiedLessThanTheLogHoldsBreaksTheHistory() throws {
        try withCore(3) { db, path, core in
            try core.poll(now: Date())
            let copied = core.copiedFrames
            for i in 0..<3 { exec(db, "INSERT INTO t (v) VALUES ('more \(i)')") }
            // A byte of the first new frame's page changed on disk: SQLite's index still counts the frame, the
            // follower's scan stops before it.
            let fd = open(path + "-wal", O_RDWR)
            #expect(fd >= 0)
            var b: UInt8 = 0x5a
            #expect(pwrite(fd, &b, 1, off_t(32 + copied * (24 + 4096) + 24 + 100)) == 1)
            close(fd)
            #expect(throws: HistoryBroken.self) { _ = try core.checkpoint(now: Date()) }
            #expect(core.copiedFrames == copied)
        }
    }

    /// A read begun without the write lock (the follower started, or let go for an application's checkpoint) may
    /// sit on read mark 0, which does not keep the next writer from restarting the log: what was committed while
    /// the follower held no read, and put into the file by an application's checkpoint, is copied at once
    /// (`catchUp`), before a restart can overwrite it. Before, the next poll came after the restart and the
    /// transaction was lost without a word.
    @Test func aReadBegunWithoutTheWriteLockCatchesUpBeforeARestart() throws {
        try withCore(3) { db, path, core in
            let n0 = try core.poll(now: Date())
            let h = try #require(core.header)
            try core.reader.exec("COMMIT")
            exec(db, "INSERT INTO t (v) VALUES ('while away')")
            exec(db, "PRAGMA wal_checkpoint(PASSIVE)")  // every frame in the file: a new read takes mark 0
            try core.beginRead()
            #expect(try core.catchUp(h))
            exec(db, "INSERT INTO t (v) VALUES ('after')")  // restarts the log over 'while away'
            try core.poll(now: Date())
            #expect(core.header != h)
            #expect(core.take().reduce(0) { $0 + $1.transactions } == n0 + 2)
        }
    }

    /// A restart that came before the follower caught up: what it overwrote is unknown, so the history is broken.
    @Test func aRestartBeforeTheCatchUpIsNoContinuation() throws {
        try withCore(3) { db, path, core in
            try core.poll(now: Date())
            let h = try #require(core.header)
            try core.reader.exec("COMMIT")
            exec(db, "INSERT INTO t (v) VALUES ('while away')")
            exec(db, "PRAGMA wal_checkpoint(PASSIVE)")
            try core.beginRead()
            exec(db, "INSERT INTO t (v) VALUES ('restart')")
            #expect(try core.catchUp(h) == false)
        }
    }

    /// An application's own TRUNCATE checkpoint waits for the follower's read: the follower lets go, the log is
    /// emptied, and since nothing was committed meanwhile (SQLite's count of commits did not move) the history
    /// goes on in the next cycle, without a new generation and its snapshot.
    @Test func anApplicationsTruncateWithNothingCommittedContinuesTheHistory() throws {
        try withCore(3) { db, path, core in
            let n0 = try core.poll(now: Date())
            let result = Mutex("")
            let done = DispatchSemaphore(value: 0)
            DispatchQueue.global().async {
                var c: OpaquePointer?
                sqlite3_open(path, &c)
                sqlite3_busy_timeout(c, 20_000)
                var st: OpaquePointer?
                sqlite3_prepare_v2(c, "PRAGMA wal_checkpoint(TRUNCATE)", -1, &st, nil)
                let rc = sqlite3_step(st)
                let busy = sqlite3_column_int(st, 0)
                sqlite3_finalize(st)
                sqlite3_close(c)
                result.withLock { $0 = "\(rc) \(busy)" }
                done.signal()
            }
            // The checkpoint holds the write lock while it waits for the follower's read.
            let deadline = Date().addingTimeInterval(20)
            while try core.writer.exec("BEGIN IMMEDIATE", busyOK: true), Date() < deadline {
                try core.writer.exec("ROLLBACK")
                usleep(5000)
            }
            try core.yieldToCheckpointer(now: Date(), window: 10)
            done.wait()
            #expect(result.withLock { $0 } == "\(SQLITE_ROW) 0")
            #expect(core.header == nil)  // emptied
            exec(db, "INSERT INTO t (v) VALUES ('next cycle')")
            try core.poll(now: Date())
            #expect(core.header != nil)
            #expect(core.take().reduce(0) { $0 + $1.transactions } == n0 + 1)
        }
    }

    /// What that decision reads: SQLite's shared index counts commits, and a checkpoint that restarts or empties
    /// the log does not count as one.
    @Test func theSharedIndexCountsCommitsNotRestarts() throws {
        try withCore(2) { db, path, core in
            let a = try #require(core.walIndex())
            #expect(a.salts == core.header?.cycle)
            exec(db, "INSERT INTO t (v) VALUES ('one more')")
            let b = try #require(core.walIndex())
            #expect(b.commits == a.commits &+ 1 && b.mxFrame > a.mxFrame)
            try core.reader.exec("COMMIT")
            exec(db, "PRAGMA wal_checkpoint(TRUNCATE)")
            let c = try #require(core.walIndex())
            #expect(c.commits == b.commits && c.mxFrame == 0)
            // Damage: the two copies differ, or the version is not SQLite's: no header.
            var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path + "-shm")).prefix(96))
            #expect(WALIndexHeader.parse(bytes) == c)
            bytes[20] ^= 1
            #expect(WALIndexHeader.parse(bytes) == nil)
            #expect(WALIndexHeader.parse([UInt8](repeating: 0, count: 96)) == nil)
            #expect(WALIndexHeader.parse([]) == nil)
            #expect(WALIndexHeader.parse([UInt8](repeating: 0xff, count: 95)) == nil)
            // Any bytes with two equal copies (a hostile or stray file): numbers taken as they are, no trap.
            var rng = SystemRandomNumberGenerator()
            for _ in 0..<1000 {
                var x = (0..<48).map { _ in UInt8.random(in: 0...255, using: &rng) }
                x[0..<4] = [0x18, 0xe2, 0x2d, 0x00]  // 3007000, little-endian
                x[12] = 1
                let h = try #require(WALIndexHeader.parse(x + x + [UInt8](repeating: 7, count: 40)))
                #expect(h.salts.salt1 == UInt32(x[32]) << 24 | UInt32(x[33]) << 16 | UInt32(x[34]) << 8 | UInt32(x[35]))
            }
        }
    }

    /// Reading SQLite's index never frees the follower's read lock (a POSIX lock on the `-shm` file, dropped by
    /// closing any descriptor of it): another process's TRUNCATE checkpoint still cannot run past the follower.
    /// (Once it did: restores were malformed.)
    @Test func readingTheIndexKeepsTheFollowersReadLock() throws {
        try withCore(3) { db, path, core in
            try core.poll(now: Date())
            exec(db, "INSERT INTO t (v) VALUES ('after the read began')")
            for _ in 0..<3 { #expect(core.walIndex() != nil) }
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
            p.arguments = ["-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1], timeout=0.2).execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchone()[0])", path]
            let out = Pipe()
            p.standardOutput = out
            try p.run()
            p.waitUntilExit()
            let busy = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(busy.trimmingCharacters(in: .whitespacesAndNewlines) == "1", "the checkpoint of another process was not held off by the follower's read")
            try core.poll(now: Date())
            #expect(core.header != nil && core.copiedFrames == walFrames(path))
        }
    }

    /// A log truncated under a snapshot (an application's TRUNCATE checkpoint) is a broken history that the
    /// follower starts again from, not an I/O error that stops it.
    @Test func aLogTruncatedUnderASnapshotBreaksTheHistory() throws {
        try withCore(5) { db, path, core in
            try core.poll(now: Date())
            _ = core.take()
            #expect(try !core.pageMap().isEmpty)
            var source = try core.pageSource()
            defer { source.close() }
            #expect(truncate(path + "-wal", 32) == 0)
            var buf = [UInt8](repeating: 0, count: 1 << 20)
            #expect(throws: HistoryBroken.self) {
                while try buf.withUnsafeMutableBytes({ try source.read(into: $0) }) > 0 {}
            }
        }
    }

    /// After the follower's own checkpoint put every frame into the database file, a snapshot reads those pages
    /// from the file (a writer may restart the log over their frames at any moment), and only newer frames from
    /// the log; a frame whose header no longer carries the snapshot's cycle stops the snapshot as a broken history.
    @Test func snapshotsReadBackfilledPagesFromTheFileAndNoticeARestart() throws {
        try withCore(5) { db, path, core in
            let r = try #require(try core.checkpoint(now: Date()))
            #expect(r.log > 0 && r.done == r.log && core.copiedFrames == r.log)
            #expect(try core.pageMap().isEmpty)  // everything is in the file
            exec(db, "INSERT INTO t (v) VALUES ('new')")  // restarts the log (every frame was in the file)
            try core.poll(now: Date())
            _ = core.take()
            let map = try core.pageMap()
            #expect(!map.isEmpty && map.count <= core.copiedFrames)
            var source = try core.pageSource()
            defer { source.close() }
            // A frame's salts changed under the snapshot (as a restart would write them): the read stops.
            let fd = open(path + "-wal", O_RDWR)
            var junk: [UInt8] = [1, 2, 3, 4]
            #expect(pwrite(fd, &junk, 4, map.values.min()! - 16) == 4)
            close(fd)
            var buf = [UInt8](repeating: 0, count: 1 << 20)
            #expect(throws: HistoryBroken.self) {
                while try buf.withUnsafeMutableBytes({ try source.read(into: $0) }) > 0 {}
            }
        }
    }
}
