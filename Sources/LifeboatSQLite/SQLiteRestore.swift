import Foundation
import Glibc
import GRDBSQLite
import LifeboatCore
import LifeboatRepository
import LifeboatSnapshot
import LifeboatSQLiteWAL

/// Restores an SQLite database to a point in time: the plan's snapshot written to a temporary file beside the
/// target, the transactions of its WAL records applied in order up to the target time, the file cut to the size
/// of the last one, synced, checked with `PRAGMA integrity_check`, then renamed into place. The target must not
/// exist: a restore never overwrites a database.
public enum SQLiteRestore {
    public struct Result: Sendable {
        public var snapshot: ID
        public var generation: String
        public var records: Int
        public var transactions: Int
        /// When the newest transaction restored was seen committed (the snapshot's time when none was applied).
        public var restoredTo: Date
        public var bytes: Int
        public var integrity: String
    }

    /// At most this many pages (a bound for what a hostile record may ask to write: 64 TiB at 64 KiB pages).
    static let maxPages: UInt32 = 1 << 30

    public static func run(_ plan: SQLiteCatalog.RestorePlan, store: SQLiteStore, target: String) async throws -> Result {
        let target = URL(fileURLWithPath: target).standardizedFileURL.path
        var st = stat()
        guard lstat(target, &st) != 0 else { throw LifeboatError(.alreadyExists, "\(target) exists: a restore never overwrites a database; name a new file") }
        let dir = (target as NSString).deletingLastPathComponent
        let tmp = dir + "/." + (target as NSString).lastPathComponent + ".lifeboat-restore-\(getpid())"
        let fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw LifeboatError(.io, "cannot create \(tmp): \(String(cString: strerror(errno)))") }
        var keep = false
        defer {
            close(fd)
            if !keep { unlink(tmp); unlink(tmp + "-wal"); unlink(tmp + "-shm") }
        }
        let snap = plan.snapshot
        let pageSize = snap.record.pageSize
        // The snapshot, blob by blob.
        let node = try await store.file(of: snap)
        guard node.size == UInt64(snap.record.pages) * UInt64(pageSize) else {
            throw LifeboatError.corrupt("SQLite snapshot \(snap.id.short) holds \(node.size) bytes, and its record says \(snap.record.pages) pages of \(pageSize)")
        }
        var off = 0
        for id in node.content ?? [] {
            let b = try await store.repo.loadBlob(.data, id)
            guard off + b.count <= Int(node.size) else { throw LifeboatError.corrupt("SQLite snapshot \(snap.id.short) is longer than its node says") }
            try writeAll(fd, b, at: off, to: tmp)
            off += b.count
        }
        guard off == Int(node.size) else { throw LifeboatError.corrupt("SQLite snapshot \(snap.id.short) holds \(off) bytes, and its node says \(node.size)") }
        // The WAL records, each continuing where the one before ended.
        var pages = snap.record.pages
        var cycle = snap.record.cycle
        var nextFrame = snap.record.lastFrame + 1
        var applied = 0
        var restoredTo = snap.date
        let untilMillis = plan.until.map { Int64(($0.timeIntervalSince1970 * 1000).rounded(.down)) }
        var used = 0
        records: for item in plan.wal {
            let r = item.record
            guard r.pageSize == pageSize else { throw LifeboatError.corrupt("SQLite WAL record \(item.id.short) has pages of \(r.pageSize) bytes, and the snapshot \(pageSize)") }
            guard (r.cycle == cycle && r.firstFrame == nextFrame) || (r.cycle != cycle && r.firstFrame == 1) else {
                throw LifeboatError.corrupt("SQLite WAL record \(item.id.short) (number \(r.seq)) starts at frame \(r.firstFrame) of cycle \(r.cycle), and the one before ended at frame \(nextFrame - 1) of cycle \(cycle): the chain is broken there; restore to \(Timestamp.format(restoredTo)) or from another site")
            }
            let bytes = try await RecordIO.load(try await store.file(of: item), repo: store.repo, max: 1 << 30)
            let log: FrameLog
            do { log = try FrameLog.decode(bytes, maxPages: maxPages) } catch {
                throw LifeboatError.corrupt("SQLite WAL record \(item.id.short): \(error); restore to \(Timestamp.format(restoredTo)) or from another site")
            }
            guard log.pageSize == pageSize, log.cycle.description == r.cycle, log.firstFrame == r.firstFrame, log.lastFrame == r.lastFrame else {
                throw LifeboatError.corrupt("SQLite WAL record \(item.id.short) holds frames \(log.firstFrame)–\(log.lastFrame) of cycle \(log.cycle), and its record says \(r.firstFrame)–\(r.lastFrame) of \(r.cycle)")
            }
            used += 1
            for t in log.transactions {
                if let u = untilMillis, t.timeMillis > u { break records }
                try log.forEachPage(of: t) { pgno, page in
                    let n = pwrite(fd, page.baseAddress!, page.count, off_t(Int(pgno - 1) * pageSize))
                    guard n == page.count else { throw LifeboatError(.io, "cannot write \(tmp): \(String(cString: strerror(errno)))") }
                }
                pages = t.pages
                applied += 1
                restoredTo = Date(timeIntervalSince1970: Double(t.timeMillis) / 1000)
            }
            cycle = r.cycle
            nextFrame = r.lastFrame + 1
        }
        let size = Int(pages) * pageSize
        guard ftruncate(fd, off_t(size)) == 0, fsync(fd) == 0 else { throw LifeboatError(.io, "cannot finish \(tmp): \(String(cString: strerror(errno)))") }
        let check = try integrityCheck(tmp)
        guard check == "ok" else { throw LifeboatError.corrupt("the restored database fails PRAGMA integrity_check: \(check)") }
        keep = true
        try placeNewFile(tmp, at: target)
        return Result(snapshot: snap.id, generation: plan.generation, records: used, transactions: applied, restoredTo: restoredTo,
                      bytes: size, integrity: check)
    }

    static func writeAll(_ fd: Int32, _ b: [UInt8], at: Int, to path: String) throws {
        var done = 0
        while done < b.count {
            let n = b.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, b.count - done, off_t(at + done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw LifeboatError(.io, "cannot write \(path): \(String(cString: strerror(errno)))") }
            done += n
        }
    }

    /// `PRAGMA integrity_check` of a database file ("ok", or the first problems).
    public static func integrityCheck(_ path: String) throws -> String {
        let c = try SQLiteConnection(path: path, busyTimeoutMillis: 5000)
        let rows = try c.texts("PRAGMA integrity_check")
        return rows.prefix(5).joined(separator: "; ")
    }
}
