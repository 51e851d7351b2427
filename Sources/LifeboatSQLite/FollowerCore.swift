import Foundation
import Glibc
import LifeboatCore
import LifeboatSQLiteWAL

/// The history of the WAL cannot be followed any more (the database file replaced, the WAL restarted out of
/// turn): the follower starts a new generation.
struct HistoryBroken: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// One read-only descriptor per database file for the whole process, shared by every follower of it and never
/// closed: POSIX drops every lock a process holds on a file when it closes any descriptor of it, and connections of
/// this process (another generation's follower, a snapshot, SQLite's own descriptors kept for reuse) may hold
/// locks on it; freeing those would let an application's last connection delete the WAL under a reader. The cost
/// is one descriptor per distinct database followed; a file deleted since (an application that replaced its
/// database) is closed when its last follower lets it go, so that its space is freed.
final class HeldFiles: @unchecked Sendable {
    static let shared = HeldFiles()
    private let lock = NSLock()
    private var open: [String: Int32] = [:]
    private var users: [Int32: Int] = [:]

    func descriptor(path: String, dev: UInt, ino: ino_t) throws -> Int32 {
        lock.lock(); defer { lock.unlock() }
        if let fd = open["\(dev):\(ino)"] { users[fd, default: 0] += 1; return fd }
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw LifeboatError(.io, "cannot open \(path): \(String(cString: strerror(errno)))") }
        var st = stat()
        // Whatever file was opened, its descriptor is not closed either (it may be locked elsewhere in the
        // process): kept under that file's identity, or left open in the rare race that opened one held already.
        guard fstat(fd, &st) == 0 else { throw LifeboatError(.io, "cannot read \(path): \(String(cString: strerror(errno)))") }
        let key = "\(UInt(st.st_dev)):\(st.st_ino)"
        if open[key] == nil { open[key] = fd }
        guard UInt(st.st_dev) == dev, st.st_ino == ino else {
            throw LifeboatError(.io, "\(path) was replaced while it was opened; the follower starts again")
        }
        users[fd, default: 0] += 1
        return fd
    }

    /// A follower is done with `fd`: closed only when nobody follows it and its file has no name any more.
    func release(_ fd: Int32) {
        lock.lock(); defer { lock.unlock() }
        let n = (users[fd] ?? 1) - 1
        users[fd] = max(0, n)
        var st = stat()
        guard n <= 0, fstat(fd, &st) == 0, st.st_nlink == 0 else { return }
        open = open.filter { $0.value != fd }
        users[fd] = nil
        close(fd)
    }
}

/// Follows one SQLite database's WAL, synchronously, on one thread (`SQLiteFollower` drives it from a queue).
///
/// How no transaction is missed: connection `reader` always holds a read transaction, so SQLite cannot restart
/// the WAL over frames not yet copied (a restart needs every frame in the database file and no reader on the
/// WAL's frames, and a checkpoint cannot copy past the oldest reader's snapshot; a reader that began with every
/// frame in the file, on read mark 0, keeps any newer frame out of it). A read begun without the write lock is
/// made whole at once (`catchUp`). The follower's own checkpoint is the only time that transaction ends:
/// connection `writer` takes the write lock (`BEGIN IMMEDIATE`) so that nothing new is written, the rest of the
/// WAL is copied, the read transaction ends, a passive checkpoint runs, a new read transaction begins, and the
/// write lock is let go. The next writer may then restart the WAL (a new header, new salts), which the follower
/// takes as the continuation of the history. The database file replaced is a broken history.
final class FollowerCore {
    let dbPath: String
    let walPath: String
    let reader: SQLiteConnection
    let writer: SQLiteConnection
    var walFD: Int32 = -1
    var walIno: ino_t = 0
    let dbIdentity: (dev: UInt, ino: ino_t)
    /// The database file, read for pages: from `HeldFiles`, never closed (see there).
    let dbFD: Int32
    /// The `-shm` file, read for SQLite's count of commits (`walIndex`): from `HeldFiles` too, when first needed.
    var shmFD: Int32 = -1

    /// The current cycle's header (nil: no WAL, or an empty one), the last one seen, the next frame to copy, and
    /// the running checksum before it.
    var header: SQLiteWALHeader?
    var lastHeader: SQLiteWALHeader?
    var nextFrame = 1
    var checksum = WALChecksum(0, 0)
    /// The database size in pages after the last transaction copied (0: not known yet).
    var pages: UInt32 = 0
    /// The frames of a cycle that the follower's own checkpoint put into the database file whole (`checkpoint`):
    /// from then on the file holds them, and nothing newer while the read transaction that began after it lasts
    /// (a checkpoint cannot write past the oldest reader, and one that reads only the file blocks it), so a
    /// snapshot reads those pages from the file. Their frames in the WAL may be overwritten at any moment by a
    /// writer that restarts the log.
    var backfilled: (cycle: WALCycle, frames: Int)?
    /// Transactions copied and not shipped: finished logs (a log covers one cycle) and the one being filled.
    var done: [FrameLogBuilder] = []
    var filling: FrameLogBuilder?
    /// Frames are read in pieces of about this many bytes: after a restart the file keeps its size and the old
    /// cycle's frames, which the scan stops at; one piece is read to find that out, not the whole file.
    var readPiece = 256 << 10
    var buffer: [UInt8] = []
    let debug = ProcessInfo.processInfo.environment["LIFEBOAT_SQLITE_DEBUG"] != nil

    init(path: String, busyTimeoutMillis: Int32) throws {
        dbPath = path
        walPath = path + "-wal"
        var st = stat()
        guard stat(path, &st) == 0 else { throw LifeboatError(.notFound, "the SQLite database \(path) does not exist: \(String(cString: strerror(errno)))") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw LifeboatError.invalid("\(path) is not a regular file") }
        dbIdentity = (UInt(st.st_dev), st.st_ino)
        dbFD = try HeldFiles.shared.descriptor(path: path, dev: dbIdentity.dev, ino: dbIdentity.ino)
        do {
            let r = try SQLiteConnection(path: path, busyTimeoutMillis: busyTimeoutMillis)
            writer = try SQLiteConnection(path: path, busyTimeoutMillis: 200)
            reader = r
        } catch {
            HeldFiles.shared.release(dbFD)  // (deinit does not run for a core that never was whole)
            throw error
        }
        // The WAL is what is followed: a database in another journal mode is switched to WAL, as Litestream does
        // (it stays so; applications need not change).
        let mode = try reader.text("PRAGMA journal_mode")?.lowercased()
        if mode != "wal" {
            let now = try reader.text("PRAGMA journal_mode=WAL")?.lowercased()
            guard now == "wal" else {
                throw LifeboatError.invalid("the SQLite database \(path) is in journal mode \(mode ?? "?") and cannot be switched to WAL (\(now ?? "?")): continuous replication follows the WAL")
            }
        }
        // This process never checkpoints by itself: only the follower's own checkpoint, at the moment it chooses.
        try reader.exec("PRAGMA wal_autocheckpoint=0")
        try writer.exec("PRAGMA wal_autocheckpoint=0")
        try beginRead()
        try readHeader()
    }

    deinit {
        if walFD >= 0 { close(walFD) }
        _ = try? reader.exec("ROLLBACK")
        reader.close()
        writer.close()
        HeldFiles.shared.release(dbFD)
        if shmFD >= 0 { HeldFiles.shared.release(shmFD) }
    }

    func beginRead() throws {
        try reader.exec("BEGIN")
        _ = try reader.text("SELECT count(*) FROM sqlite_master")
    }

    var pageSize: Int { header?.pageSize ?? lastHeader?.pageSize ?? dbPageSize() }

    /// The page size in the database header (offset 16; 1 means 65536).
    func dbPageSize() -> Int {
        var b = [UInt8](repeating: 0, count: 2)
        guard pread(dbFD, &b, 2, 16) == 2 else { return 4096 }
        let v = Int(b[0]) << 8 | Int(b[1])
        let size = v == 1 ? 65536 : v
        return validPageSize(size) ? size : 4096
    }

    /// The database file's size in pages.
    func dbPages() -> UInt32 {
        var st = stat()
        guard stat(dbPath, &st) == 0 else { return 0 }
        return UInt32(clamping: Int(st.st_size) / pageSize)
    }

    /// Opens the WAL file when it appears (or appears anew), and reads its header.
    func readHeader() throws {
        var st = stat()
        guard stat(dbPath, &st) == 0, UInt(st.st_dev) == dbIdentity.dev, st.st_ino == dbIdentity.ino else {
            throw HistoryBroken("the database file \(dbPath) was replaced or removed")
        }
        if walFD >= 0 {
            var w = stat()
            if stat(walPath, &w) != 0 || w.st_ino != walIno { close(walFD); walFD = -1 }
        }
        if walFD < 0 {
            walFD = open(walPath, O_RDONLY | O_CLOEXEC)
            guard walFD >= 0 else { return noWAL() }
            var w = stat()
            fstat(walFD, &w)
            walIno = w.st_ino
        }
        var w = stat()
        fstat(walFD, &w)
        guard w.st_size >= SQLiteWALHeader.size else { return noWAL() }
        guard let h = walHeaderInFile() else { return }  // being written
        if h == header { return }
        // A restart (new salts; SQLite makes them random for a connection that never restarted the WAL before).
        // While the read transaction is held, SQLite restarts the WAL only once every frame is in the database
        // and none is read from the WAL, and the follower copied every frame before it let the read go: so a new
        // header continues the history. Only the page size must stay.
        if let old = header ?? lastHeader, h.pageSize != old.pageSize {
            throw HistoryBroken("the WAL of \(dbPath) changed its page size from \(old.pageSize) to \(h.pageSize)")
        }
        closeCycle()
        header = h
        nextFrame = 1
        checksum = h.checksum
    }

    /// The WAL is gone or empty: it was checkpointed whole and truncated (which the read transaction allows only
    /// when every frame was copied); the next header starts the next cycle.
    func noWAL() {
        if header != nil {
            closeCycle()
            lastHeader = header
            header = nil
        }
    }

    func closeCycle() {
        if let f = filling, !f.isEmpty { done.append(f) }
        filling = nil
        if header != nil { lastHeader = header }
    }

    /// Copies the whole transactions written since the last call, up to the end of the log as it is written now
    /// (the first frame that is not valid, or the file's end): every transaction committed before the call is
    /// copied when it returns. Returns how many.
    ///
    /// The log is read in pieces of `readPiece` bytes; a piece that ends inside a transaction is read again from
    /// that transaction's first frame, and a transaction longer than a piece is read in a piece grown to hold it
    /// (the application made it: its size is the WAL's, not a hostile input's).
    @discardableResult
    func poll(now: Date) throws -> Int {
        try readHeader()
        guard let h = header, walFD >= 0 else { return 0 }
        var total = 0
        let fs = h.frameSize
        var piece = max(fs, readPiece - readPiece % fs)
        while true {
            let offset = SQLiteWALHeader.size + (nextFrame - 1) * fs
            var st = stat()
            fstat(walFD, &st)
            let avail = Int(st.st_size) - offset
            guard avail >= fs else { return total }
            let want = min(avail - avail % fs, piece)
            if buffer.count < want { buffer = [UInt8](repeating: 0, count: want) }
            let n = buffer.withUnsafeMutableBytes { pread(walFD, $0.baseAddress!, want, off_t(offset)) }
            guard n >= fs else { return total }
            let got = n - n % fs
            let scanned = buffer.withUnsafeBytes { b in
                WALScan.scan(UnsafeRawBufferPointer(rebasing: b[0..<got]), header: h, firstFrame: nextFrame, checksum: checksum)
            }
            if debug { FileHandle.standardError.write(Data("poll: offset \(offset) size \(st.st_size) got \(got) valid \(scanned.validFrames) scanned \(scanned.frames) frames \(scanned.commits.count) commits\n".utf8)) }
            if scanned.frames > 0 {
                if filling == nil { filling = FrameLogBuilder(header: h, firstFrame: nextFrame, checksum: checksum) }
                // Stamped after the read: a transaction seen by it committed before this moment (a stamp taken
                // before the read could precede the commit of a transaction that landed in between).
                let ms = Int64((currentTime().timeIntervalSince1970 * 1000).rounded(.up))
                buffer.withUnsafeBytes { b in filling!.append(UnsafeRawBufferPointer(rebasing: b[0..<scanned.bytes]), scan: scanned, timeMillis: ms) }
                nextFrame += scanned.frames
                checksum = scanned.checksum
                pages = scanned.commits.last!.pages
                total += scanned.commits.count
            }
            // A frame that is not valid: the end of the log as written now (an unfinished transaction, the old
            // cycle's tail, a frame being written). Else every frame read was valid and the file may hold more.
            if scanned.validFrames * fs < got || got >= avail - avail % fs { return total }
            // The piece ended inside a transaction: read on from its first frame, in a piece that holds it whole.
            if scanned.frames == 0 { piece = min(piece * 2, avail - avail % fs) }
        }
    }

    /// Bytes copied and not shipped.
    var pendingBytes: Int { done.reduce(0) { $0 + $1.bytes.count } + (filling?.bytes.count ?? 0) }

    /// Takes what is copied and not shipped: one log per cycle, oldest first.
    func take() -> [FrameLogBuilder] {
        var out = done
        if let f = filling, !f.isEmpty { out.append(f) }
        done = []
        filling = nil
        return out
    }

    /// The follower's checkpoint (see the type's comment). False when an application holds the write lock: the
    /// checkpoint waits for a later turn. Returns the passive checkpoint's counts when it ran.
    ///
    /// Before the read transaction is taken again (while the write lock still holds every writer off, so that the
    /// WAL cannot restart), the checkpoint's count of frames in the log is compared with the frames copied: a log
    /// that holds more than was copied is read again, and if the copy still falls short the history is broken
    /// (a new generation begins with a snapshot) rather than frames lost at the next restart.
    func checkpoint(now: Date) throws -> (log: Int, done: Int)? {
        guard try writer.exec("BEGIN IMMEDIATE", busyOK: true) else { return nil }
        defer { _ = try? writer.exec("ROLLBACK") }
        try poll(now: now)
        try reader.exec("COMMIT")
        let r = reader.checkpointPassive()
        if let r, r.log > 0, r.log != copiedFrames {
            try poll(now: now)
            if r.log != copiedFrames {
                try beginRead()
                throw HistoryBroken("the follower copied \(copiedFrames) frames of the WAL of \(dbPath), which holds \(r.log)")
            }
        }
        if let r, r.log > 0, r.done >= r.log, let h = header { backfilled = (h.cycle, r.log) }
        try beginRead()
        return r
    }

    /// Frames of the current cycle copied (0 with no WAL).
    var copiedFrames: Int { header == nil ? 0 : nextFrame - 1 }

    /// Lets go of the read transaction without the write lock, for at most `window` seconds, when an application
    /// has held the write lock for a while without writing: that is a checkpoint of its own (RESTART or TRUNCATE)
    /// waiting for readers, which would otherwise wait out its busy timeout.
    ///
    /// Then: the same cycle goes on once the rest of it is copied (`catchUp`). A log restarted or emptied goes on
    /// in its next cycle when SQLite's count of commits (its shared index) did not move since the follower copied
    /// every frame the index counted: the application's checkpoint restarted the log and nothing was committed
    /// in between, so nothing was lost. Otherwise the history is broken (a new generation begins with a
    /// snapshot, as Litestream does).
    func yieldToCheckpointer(now: Date, window: Double = 0.2) throws {
        try poll(now: now)
        let before = header
        // SQLite's index, when it counts no frame that was not copied.
        let index = walIndex().flatMap { Int($0.mxFrame) == copiedFrames && $0.salts == before?.cycle ? $0 : nil }
        var st = stat()
        let size = walFD >= 0 && fstat(walFD, &st) == 0 ? Int(st.st_size) : 0
        try reader.exec("COMMIT")
        let end = Date().addingTimeInterval(window)
        while Date() < end {
            var w = stat()
            if stat(walPath, &w) != 0 || Int(w.st_size) < size || w.st_ino != walIno { break }
            usleep(5000)
        }
        try beginRead()
        if let before, try catchUp(before) { return }
        if let a = index, let b = walIndex(), b.commits == a.commits {
            // (The read began before `b`: no commit came before it, so it sits where nothing is left to copy.)
            try poll(now: currentTime())
            return
        }
        throw HistoryBroken("the application checkpointed the WAL itself (RESTART or TRUNCATE) while the follower let go of its read transaction, and committed meanwhile")
    }

    /// After a read transaction that began without the write lock (the follower started, or let go for an
    /// application's checkpoint), copies the rest of the log and makes sure that cycle `expected` still holds it;
    /// false when it does not (what was written meanwhile may be lost: a new generation).
    ///
    /// Such a read may sit on SQLite's read mark 0 (every frame already in the database file), which keeps
    /// checkpoints from copying more but does not keep the next writer from restarting the log: frames committed
    /// while the follower held no read, and put into the file by an application's checkpoint, would be
    /// overwritten before the follower read them. A restart writes the WAL's header before any frame of its own,
    /// so the same header after the poll proves that every frame the poll read was the cycle's own and that the
    /// copy reached the read's end; from then on the frames a restart overwrites were copied (a reader on mark 0
    /// keeps newer frames out of the file, and a restart needs them all there).
    func catchUp(_ expected: SQLiteWALHeader) throws -> Bool {
        try poll(now: currentTime())
        var w = stat()
        return header == expected && stat(walPath, &w) == 0 && w.st_ino == walIno && walHeaderInFile() == expected
    }

    /// SQLite's shared WAL index header, read through a descriptor of the `-shm` file from `HeldFiles`, never
    /// closed: SQLite's read marks are POSIX locks on that file, and closing any descriptor of it would free the
    /// follower's own read lock (the application's checkpoints then ran past it: found by the tests).
    func walIndex() -> WALIndexHeader? {
        if shmFD < 0 {
            let path = dbPath + "-shm"
            var st = stat()
            guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG,
                  let fd = try? HeldFiles.shared.descriptor(path: path, dev: UInt(st.st_dev), ino: st.st_ino) else { return nil }
            shmFD = fd
        }
        return WALIndexHeader.read(fd: shmFD)
    }

    /// The header of the open WAL file as it is now (nil: none, or one being written).
    func walHeaderInFile() -> SQLiteWALHeader? {
        var b = [UInt8](repeating: 0, count: SQLiteWALHeader.size)
        guard walFD >= 0, pread(walFD, &b, b.count, 0) == b.count else { return nil }
        return try? SQLiteWALHeader.parse(b)
    }

    /// The frames of the current cycle up to the position (for a snapshot): the newest frame of each page.
    func pageMap() throws -> [UInt32: off_t] {
        guard let h = header, walFD >= 0, nextFrame > 1 else { return [:] }
        var map: [UInt32: off_t] = [:]
        var fh = [UInt8](repeating: 0, count: 4)
        let first = backfilled.map { $0.cycle == h.cycle ? $0.frames + 1 : 1 } ?? 1
        guard first < nextFrame else { return [:] }
        for f in first..<nextFrame {
            let off = off_t(SQLiteWALHeader.size + (f - 1) * h.frameSize)
            guard pread(walFD, &fh, 4, off) == 4 else { throw LifeboatError(.io, "cannot read frame \(f) of \(walPath): \(String(cString: strerror(errno)))") }
            let pgno = UInt32(fh[0]) << 24 | UInt32(fh[1]) << 16 | UInt32(fh[2]) << 8 | UInt32(fh[3])
            map[pgno] = off + off_t(SQLiteWALHeader.frameHeaderSize)
        }
        return map
    }

    /// Whether the WAL continues a stored record: same cycle, and its frames up to the record's last one carry the
    /// record's checksum. If so, the position moves there and the rest of the log is copied (`catchUp`: the read
    /// began without the write lock).
    func resume(at r: SQLiteRecord) throws -> Bool {
        guard let h = header, h.cycle.description == r.cycle, h.pageSize == r.pageSize, let want = WALChecksum(hex: r.checksum) else { return false }
        if r.lastFrame == 0 {
            guard want == h.checksum else { return false }
            nextFrame = 1; checksum = h.checksum; pages = r.pages
            return try catchUp(h)
        }
        let need = r.lastFrame * h.frameSize
        var st = stat()
        fstat(walFD, &st)
        guard Int(st.st_size) >= SQLiteWALHeader.size + need, need <= 1 << 31 else { return false }
        var buf = [UInt8](repeating: 0, count: need)
        guard buf.withUnsafeMutableBytes({ pread(walFD, $0.baseAddress!, need, off_t(SQLiteWALHeader.size)) }) == need else { return false }
        let s = buf.withUnsafeBytes { WALScan.scan($0, header: h, firstFrame: 1, checksum: h.checksum) }
        guard s.frames == r.lastFrame, s.checksum == want else { return false }
        nextFrame = r.lastFrame + 1; checksum = want; pages = r.pages
        filling = nil; done = []
        return try catchUp(h)
    }
}

/// The header of SQLite's shared WAL index (the `-shm` file; native byte order, two copies that a writer updates
/// one after the other): its count of commits and of frames, and the salts of the log's cycle. Read only as a
/// hint that is checked: both copies equal and initialised, else nil.
struct WALIndexHeader: Equatable {
    var commits: UInt32
    var mxFrame: UInt32
    var salts: WALCycle

    /// (`fd` must never be closed by a process using SQLite on the database: see `FollowerCore.walIndex`.)
    static func read(fd: Int32) -> WALIndexHeader? {
        var b = [UInt8](repeating: 0, count: 96)
        for _ in 0..<3 {
            guard pread(fd, &b, 96, 0) == 96 else { return nil }
            if let h = parse(b) { return h }
        }
        return nil
    }

    static func parse(_ b: [UInt8]) -> WALIndexHeader? {
        guard b.count >= 96, b[0..<48].elementsEqual(b[48..<96]) else { return nil }
        func u32(_ o: Int) -> UInt32 { b[o..<o + 4].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) } }  // native order
        // iVersion 3007000, isInit 1; the salts are the WAL header's bytes, big-endian as stored there.
        guard u32(0) == 3_007_000, b[12] == 1 else { return nil }
        func be32(_ o: Int) -> UInt32 { UInt32(b[o]) << 24 | UInt32(b[o + 1]) << 16 | UInt32(b[o + 2]) << 8 | UInt32(b[o + 3]) }
        return WALIndexHeader(commits: u32(8), mxFrame: u32(16), salts: WALCycle(salt1: be32(32), salt2: be32(36)))
    }
}
