import Foundation

/// Replaces `path` with `data` crash-safely: a temporary file beside it, fsync, rename, fsync of the directory.
/// A crash leaves either the old file or the new one, never a mix. `durable: false` leaves out the fsyncs, for
/// files that are whole or absent but need not survive a crash (a cache that is fetched again).
public func writeFileAtomically(_ path: String, _ data: Data, mode: mode_t = 0o600, durable: Bool = true) throws {
    let file = try AtomicFile(path, mode: mode)
    try data.withUnsafeBytes { try file.write($0) }
    try file.commit(durable: durable)
}

/// A file written in pieces and put at its path whole (as `writeFileAtomically`): until `commit`, it is a
/// temporary file beside the path, removed if the writer is dropped.
public final class AtomicFile {
    public let path: String
    let tmp: String
    var fd: Int32

    public init(_ path: String, mode: mode_t = 0o600) throws {
        self.path = path
        // Unique in the process too: two writers of one path (two tasks) never share a temporary file. The file
        // is created, never opened through a link (O_EXCL, O_NOFOLLOW).
        tmp = "\(path).tmp-\(getpid())-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        unlink(tmp)
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else { throw LifeboatError(.io, "cannot write \(tmp): \(String(cString: strerror(errno)))") }
    }

    deinit {
        if fd >= 0 { close(fd); unlink(tmp) }
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            guard fd >= 0 else { throw LifeboatError(.io, "\(tmp) is closed") }
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let e = n < 0 ? errno : ENOSPC
                close(fd); fd = -1; unlink(tmp)
                throw LifeboatError(.io, "cannot write \(tmp): \(String(cString: strerror(e)))")
            }
            done += n
        }
    }

    public func write(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try write($0) } }

    public func commit(durable: Bool = true) throws {
        guard fd >= 0 else { throw LifeboatError(.io, "\(tmp) is closed") }
        let ok = !durable || fsync(fd) == 0
        let e = errno
        close(fd); fd = -1
        guard ok else { unlink(tmp); throw LifeboatError(.io, "cannot write \(tmp): \(String(cString: strerror(e)))") }
        guard rename(tmp, path) == 0 else {
            let e = errno
            unlink(tmp)
            throw LifeboatError(.io, "cannot write \(path): \(String(cString: strerror(e)))")
        }
        if durable { syncDirectory((path as NSString).deletingLastPathComponent) }
    }
}

/// fsync of a directory (after a file in it was created or renamed), best effort.
public func syncDirectory(_ dir: String) {
    let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if dfd >= 0 { fsync(dfd); close(dfd) }
}

/// Puts a finished (synced) temporary file at `path`, which must not exist: a hard link, then the temporary name
/// removed, because unlike rename a link fails rather than replace a file that appeared meanwhile; then the
/// directory synced. (On a file system without hard links, a rename after a last check.)
public func placeNewFile(_ tmp: String, at path: String) throws {
    if link(tmp, path) != 0 {
        let e = errno
        var st = stat()
        if (e == EPERM || e == EOPNOTSUPP || e == ENOTSUP) && lstat(path, &st) != 0 && rename(tmp, path) == 0 {
            syncDirectory((path as NSString).deletingLastPathComponent)
            return
        }
        unlink(tmp)
        throw e == EEXIST ? LifeboatError(.alreadyExists, "\(path) exists: a restore never overwrites; name a new file")
                          : LifeboatError(.io, "cannot create \(path): \(String(cString: strerror(e)))")
    }
    unlink(tmp)
    syncDirectory((path as NSString).deletingLastPathComponent)
}

/// A daemon's process ID file (`lifeboat proxy --pid-file`, `lifeboat serve --pid-file`), so that a reload or stop
/// signals this process and not every `lifeboat` on the host (`kill -HUP $(cat FILE)`).
public enum PIDFile {
    /// The process ID a file names, if it holds one.
    public static func read(_ path: String) -> Int32? {
        guard let d = FileManager.default.contents(atPath: path), d.count <= 32,
              let text = String(data: d, encoding: .utf8)?.trimmingCharacters(in: .whitespacesAndNewlines),
              let pid = Int32(text), pid > 0 else { return nil }
        return pid
    }

    /// Writes this process's ID to `path`. Refuses when the file names another process that is still running
    /// (a second instance would take over its file); a file left by a process that is gone is replaced.
    public static func create(_ path: String) throws {
        let me = getpid()
        if let other = read(path), other != me, kill(other, 0) == 0 || errno == EPERM {
            throw LifeboatError(.alreadyExists, "\(path) names process \(other), which is still running: stop it first, or give another --pid-file")
        }
        try writeFileAtomically(path, Data("\(me)\n".utf8), mode: 0o644)
    }

    /// Removes `path` if it still names this process.
    public static func remove(_ path: String) {
        if read(path) == getpid() { unlink(path) }
    }
}

/// Raises the soft limit on open descriptors to the hard limit (as Go programs do at start) and returns it.
public func raiseDescriptorLimit() -> Int {
    var l = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &l) == 0 else { return 1024 }
    if l.rlim_cur < l.rlim_max {
        var raised = l
        raised.rlim_cur = l.rlim_max
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { l = raised }
    }
    return l.rlim_cur > rlim_t(Int32.max) ? Int(Int32.max) : Int(l.rlim_cur)
}

/// A regular file's text, at most `limit` bytes of it: the first, or with `last`, the last. Never through a
/// symbolic link and never from a FIFO or device (a file another user owns and could have replaced: a server's
/// PID file, log or configuration); nil when it cannot be read as such.
public func readRegularFile(_ path: String, limit: Int, last: Bool = false) -> String? {
    let fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
    let size = Int(st.st_size)
    let want = min(max(0, size), max(0, limit))
    var bytes = [UInt8](repeating: 0, count: want)
    let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, want, off_t(last ? size - want : 0)) }
    guard n >= 0 else { return nil }
    return String(decoding: bytes.prefix(n), as: UTF8.self)
}
