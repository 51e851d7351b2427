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
