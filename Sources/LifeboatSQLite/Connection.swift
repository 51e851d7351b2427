import Foundation
import GRDBSQLite
import LifeboatCore

/// One SQLite connection through the C API: what the follower needs (statements without results, one row of
/// text, checkpoints) and nothing else. Not thread-safe: one thread uses it at a time.
final class SQLiteConnection {
    let handle: OpaquePointer
    let path: String

    init(path: String, readOnly: Bool = false, busyTimeoutMillis: Int32 = 5000) throws {
        var h: OpaquePointer?
        let flags = (readOnly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &h, flags, nil)
        guard rc == SQLITE_OK, let h else {
            let why = h.map { String(cString: sqlite3_errmsg($0)) } ?? "error \(rc)"
            if let h { sqlite3_close_v2(h) }
            throw LifeboatError(.io, "cannot open the SQLite database \(path): \(why)")
        }
        handle = h
        self.path = path
        sqlite3_busy_timeout(h, busyTimeoutMillis)
        sqlite3_extended_result_codes(h, 1)
    }

    private var closed = false
    /// Closes the connection now (deinit does otherwise).
    func close() {
        if !closed { sqlite3_close_v2(handle); closed = true }
    }
    deinit { close() }

    var lastError: String { String(cString: sqlite3_errmsg(handle)) }

    /// Runs statements that return no rows; `busyOK` turns SQLITE_BUSY into `false` instead of an error.
    @discardableResult
    func exec(_ sql: String, busyOK: Bool = false) throws -> Bool {
        let rc = sqlite3_exec(handle, sql, nil, nil, nil)
        if rc == SQLITE_OK { return true }
        if busyOK && (rc & 0xff == SQLITE_BUSY || rc & 0xff == SQLITE_LOCKED) { return false }
        throw LifeboatError(.io, "SQLite database \(path): \(sql.prefix(40)): \(lastError)")
    }

    /// The first column of the first row as text.
    func text(_ sql: String) throws -> String? {
        var stmt: OpaquePointer?
        guard sqlite3_prepare_v2(handle, sql, -1, &stmt, nil) == SQLITE_OK, let stmt else {
            throw LifeboatError(.io, "SQLite database \(path): \(sql.prefix(40)): \(lastError)")
        }
        defer { sqlite3_finalize(stmt) }
        let rc = sqlite3_step(stmt)
        if rc == SQLITE_ROW { return sqlite3_column_text(stmt, 0).map { String(cString: $0) } }
        if rc == SQLITE_DONE { return nil }
        throw LifeboatError(.io, "SQLite database \(path): \(sql.prefix(40)): \(lastError)")
    }

    /// Every row's first column as text.
    func texts(_ sql: String) throws -> [String] {
        var stmt: OpaquePointer?
        guard sqlite3_prepare_v2(handle, sql, -1, &stmt, nil) == SQLITE_OK, let stmt else {
            throw LifeboatError(.io, "SQLite database \(path): \(sql.prefix(40)): \(lastError)")
        }
        defer { sqlite3_finalize(stmt) }
        var out: [String] = []
        while true {
            let rc = sqlite3_step(stmt)
            if rc == SQLITE_DONE { return out }
            guard rc == SQLITE_ROW else { throw LifeboatError(.io, "SQLite database \(path): \(sql.prefix(40)): \(lastError)") }
            out.append(sqlite3_column_text(stmt, 0).map { String(cString: $0) } ?? "")
            if out.count >= 100 { return out }
        }
    }

    /// A passive checkpoint: (frames in the log, frames checkpointed), or nil when it could not run (busy).
    func checkpointPassive() -> (log: Int, done: Int)? {
        var log: Int32 = 0, done: Int32 = 0
        let rc = sqlite3_wal_checkpoint_v2(handle, nil, SQLITE_CHECKPOINT_PASSIVE, &log, &done)
        return rc == SQLITE_OK ? (Int(log), Int(done)) : nil
    }
}
