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

    @Test func followsRestartsAndRestoresAtTimes() async throws {
        let dir = tempDir("follower")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/app.db"
        var w: OpaquePointer?
        #expect(sqlite3_open(path, &w) == SQLITE_OK)
        defer { sqlite3_close(w) }
        sqlite3_busy_timeout(w, 5000)
        exec(w, "PRAGMA journal_mode=WAL")
        exec(w, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        let repo = try await Repository.initialize(backend: MemoryBackend(), password: "pw", kdf: ScryptParameters(n: 1024, r: 8, p: 1))
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
