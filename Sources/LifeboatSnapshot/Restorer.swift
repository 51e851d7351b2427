import CLifeboatSys
import Foundation
import Glibc
import LifeboatCore
import LifeboatRepository
import Synchronization

public enum OverwriteMode: String, Sendable, CaseIterable {
    /// Replace every existing entry (the default).
    case always
    /// Replace an existing file only if its size or modification time differ.
    case ifChanged = "if-changed"
    /// Leave existing entries alone.
    case never
}

public struct RestoreOptions: Sendable {
    public var includes: [String] = []
    public var excludes: [String] = []
    public var overwrite: OverwriteMode = .always
    /// Re-read every restored file and check it against the snapshot.
    public var verify = false
    /// Set owners (only possible as root; otherwise skipped silently).
    public var restoreOwnership = getuid() == 0
    public var fileWriters = max(2, ProcessInfo.processInfo.activeProcessorCount)
    public init() {}
}

public struct RestoreProgress: Sendable {
    public var filesDone = 0
    public var bytesDone: UInt64 = 0
    public var totalFiles = 0
    public var totalBytes: UInt64 = 0
    public var filesSkipped = 0
    public var filesVerified = 0
}

/// A path that could not be restored (damaged data, a hostile name, a failed system call).
public struct RestoreError: Sendable {
    public var path: String
    public var message: String
}

/// Restores a snapshot's tree into a target directory.
///
/// Safety: every entry is created relative to an open directory descriptor with `O_NOFOLLOW`, names
/// are checked (no empty names, `.`, `..`, `/` or NUL), existing entries are unlinked before being
/// replaced, so a crafted snapshot or a pre-existing symlink can never make restore write outside the target.
/// Damaged blobs do not stop the restore: the other files are restored and the damaged ones listed.
public final class Restorer: Sendable {
    let repo: Repository
    let options: RestoreOptions
    let includes: PatternSet
    let excludes: PatternSet
    let writers: AsyncSemaphore
    let state = Mutex(RestoreProgress())
    let errorList = Mutex<[RestoreError]>([])
    let hardlinks = Mutex<[HardlinkKey: BytePath]>([:])
    struct HardlinkKey: Hashable { var device: UInt64; var inode: UInt64 }
    let isRoot = getuid() == 0

    public init(repository: Repository, options: RestoreOptions) {
        repo = repository
        self.options = options
        includes = PatternSet(options.includes)
        excludes = PatternSet(options.excludes)
        writers = AsyncSemaphore(max(1, options.fileWriters))
    }

    public var progress: RestoreProgress { state.withLock { $0 } }
    public var errors: [RestoreError] { errorList.withLock { $0 } }

    func fail(_ path: BytePath, _ message: String) {
        errorList.withLock { $0.append(RestoreError(path: path.lossyString, message: message)) }
    }

    /// Finds the node at `subpath` (`/`-separated) below `tree`. Nil subpath: the root itself.
    public static func resolve(repo: Repository, tree: ID, subpath: String) async throws -> Node {
        var node = Node(name: [], type: .dir)
        node.subtree = tree
        node.mode = 0o755
        for comp in subpath.split(separator: "/") where comp != "." {
            guard node.type == .dir, let sub = node.subtree else {
                throw LifeboatError(.notFound, "\(subpath): \(node.nameString) is not a directory")
            }
            guard let next = try await repo.loadTree(sub).node(named: Array(comp.utf8)) else {
                throw LifeboatError(.notFound, "\(subpath) is not in the snapshot")
            }
            node = next
        }
        return node
    }

    /// Restores `node` (a directory: its contents; a file: the file) into `target`.
    /// `snapshotPath` is the node's path in the snapshot, for include/exclude matching.
    public func restore(node: Node, snapshotPath: String, target: String) async throws {
        try LocalDirs.makeAll(target)
        let fd = open(target, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { throw LifeboatError(.io, "cannot open the target \(target): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let base = Array(snapshotPath.utf8)
        if node.type == .dir {
            // The totals (for progress) come from a walk of the trees beside the restore, not before it.
            async let totals: Void = countTotals(node)
            try await restoreDirectory(tree: node.subtree, dirfd: fd, path: base.isEmpty ? [0x2F] : base)
            await totals
        } else {
            state.withLock { $0.totalFiles = 1; $0.totalBytes = node.size }
            try await restoreEntry(node, dirfd: fd, path: base)
        }
    }

    func countTotals(_ node: Node) async {
        // Counting needs the trees anyway; they are small next to the data.
        var stack = [node.subtree].compactMap { $0 }
        var files = 0
        var bytes: UInt64 = 0
        while let t = stack.popLast() {
            guard let tree = try? await repo.loadTree(t) else { continue }
            for n in tree.nodes {
                if let s = n.subtree { stack.append(s) } else { files += 1; bytes += n.size }
            }
        }
        let (f, b) = (files, bytes)
        state.withLock { $0.totalFiles = f; $0.totalBytes = b }
    }

    func selected(_ path: BytePath, isDir: Bool) -> (restore: Bool, descend: Bool) {
        if excludes.matches(path) { return (false, false) }
        if includes.isEmpty || includes.matches(path) { return (true, true) }
        if isDir && includes.childMayMatch(path) { return (true, true) }
        return (false, false)
    }

    func restoreDirectory(tree: ID?, dirfd: Int32, path: BytePath) async throws {
        guard let tree else { return }
        let t: Tree
        do { t = try await repo.loadTree(tree) } catch {
            fail(path, "directory contents are damaged: \(error)"); return
        }
        try await withThrowingTaskGroup(of: Void.self) { g in
            for node in t.nodes {
                let p = path.appendingComponent(node.name)
                guard Node.isSafeName(node.name) else {
                    fail(p, "refusing to restore an entry with an unsafe name"); continue
                }
                let sel = selected(p, isDir: node.type == .dir)
                if !sel.restore { continue }
                if node.type == .file && node.links <= 1 {
                    await writers.acquire()
                    g.addTask {
                        defer { self.writers.release() }
                        try await self.restoreEntry(node, dirfd: dirfd, path: p)
                    }
                } else {
                    // Directories and hard-linked files inline: the first name of an inode exists before its links.
                    try await restoreEntry(node, dirfd: dirfd, path: p)
                }
            }
            try await g.waitForAll()
        }
    }

    /// Removes whatever is at `name` (not following symlinks; directories only if empty or with `recursive`).
    func removeExisting(dirfd: Int32, name: BytePath) {
        withCPath(name) { n in
            if unlinkat(dirfd, n, 0) != 0 && errno == EISDIR { _ = unlinkat(dirfd, n, AT_REMOVEDIR) }
        }
    }

    func existing(dirfd: Int32, name: BytePath) -> stat? {
        var st = stat()
        let r = withCPath(name) { fstatat(dirfd, $0, &st, AT_SYMLINK_NOFOLLOW) }
        return r == 0 ? st : nil
    }

    func restoreEntry(_ node: Node, dirfd: Int32, path: BytePath) async throws {
        let name = node.name
        guard Node.isSafeName(name) else { fail(path, "refusing to restore an entry with an unsafe name"); return }
        let old = existing(dirfd: dirfd, name: name)
        switch node.type {
        case .dir:
            if let old, (old.st_mode & S_IFMT) != S_IFDIR {
                if options.overwrite == .never { state.withLock { $0.filesSkipped += 1 }; return }
                removeExisting(dirfd: dirfd, name: name)
            }
            if old == nil || (old!.st_mode & S_IFMT) != S_IFDIR {
                let r = withCPath(name) { mkdirat(dirfd, $0, 0o700) }
                if r != 0 && errno != EEXIST { fail(path, "cannot create directory: \(String(cString: strerror(errno)))"); return }
            }
            let fd = withCPath(name) { openat(dirfd, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            if fd < 0 { fail(path, "cannot open directory: \(String(cString: strerror(errno)))"); return }
            defer { close(fd) }
            try await restoreDirectory(tree: node.subtree, dirfd: fd, path: path)
            applyMetadata(node, fd: fd, dirfd: dirfd, path: path)
        case .file:
            try await restoreFile(node, dirfd: dirfd, path: path, old: old)
        default:
            if old != nil {
                if options.overwrite == .never { state.withLock { $0.filesSkipped += 1 }; return }
                removeExisting(dirfd: dirfd, name: name)
            }
            let r: Int32 = withCPath(name) { n in
                switch node.type {
                case .symlink: return withCPath(node.linkTarget ?? []) { symlinkat($0, dirfd, n) }
                case .fifo: return mknodat(dirfd, n, S_IFIFO | mode_t(node.mode & 0o7777), 0)
                case .chardev: return mknodat(dirfd, n, S_IFCHR | mode_t(node.mode & 0o7777), dev_t(node.rdev ?? 0))
                case .blockdev: return mknodat(dirfd, n, S_IFBLK | mode_t(node.mode & 0o7777), dev_t(node.rdev ?? 0))
                default: return 0  // sockets are not restored (as restic)
                }
            }
            if r != 0 { fail(path, "cannot create \(node.type.rawValue): \(String(cString: strerror(errno)))"); return }
            if node.type != .socket { applyMetadata(node, fd: -1, dirfd: dirfd, path: path) }
            state.withLock { $0.filesDone += 1 }
        }
    }

    func restoreFile(_ node: Node, dirfd: Int32, path: BytePath, old: stat?) async throws {
        let name = node.name
        if let old {
            switch options.overwrite {
            case .never:
                state.withLock { $0.filesSkipped += 1; $0.filesDone += 1; $0.bytesDone += node.size }
                return
            case .ifChanged:
                let mt = Int64(old.st_mtim.tv_sec) * 1_000_000_000 + Int64(old.st_mtim.tv_nsec)
                if (old.st_mode & S_IFMT) == S_IFREG && UInt64(old.st_size) == node.size && mt == node.mtimeNs {
                    state.withLock { $0.filesSkipped += 1; $0.filesDone += 1; $0.bytesDone += node.size }
                    return
                }
            case .always: break
            }
            removeExisting(dirfd: dirfd, name: name)
        }
        // Hard links: the second and later names of an inode link to the first restored one.
        let key = HardlinkKey(device: node.device, inode: node.inode)
        if node.links > 1 {
            let first: BytePath? = hardlinks.withLock { m in
                if let f = m[key] { return f }
                m[key] = path
                return nil
            }
            if let first, let rel = relativeToTarget(first, from: path) {
                let r = withCPath(rel) { src in withCPath(name) { dst in linkat(dirfd, src, dirfd, dst, 0) } }
                if r == 0 { state.withLock { $0.filesDone += 1; $0.bytesDone += node.size }; return }
            }
        }
        let fd = withCPath(name) { openat(dirfd, $0, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600) }
        if fd < 0 { fail(path, "cannot create file: \(String(cString: strerror(errno)))"); return }
        var damaged = false
        defer { close(fd) }
        var offset: off_t = 0
        let written = await Restorer.loadInOrder(node.content ?? [], repo: repo) { id, loaded -> Bool in
            let data: [UInt8]
            switch loaded {
            case .success(let d): data = d
            case .failure(let error):
                fail(path, "\(error)")
                damaged = true
                // Keep the file's length and offsets right: skip the damaged range.
                if let loc = repo.index.lookup(id, type: .data) { offset += off_t(loc.blob.rawLength) }
                return true
            }
            // Sparse files: zero runs of whole 4 KiB blocks become holes (the final ftruncate sets the size).
            let ok = data.withUnsafeBytes { buf -> Bool in
                var done = 0
                let piece = node.sparse == true ? 4096 : buf.count
                while done < buf.count {
                    let len = min(piece, buf.count - done)
                    if node.sparse == true && UnsafeRawBufferPointer(rebasing: buf[done..<(done + len)]).allSatisfy({ $0 == 0 }) {
                        done += len
                        continue
                    }
                    let n = pwrite(fd, buf.baseAddress! + done, len, offset + off_t(done))
                    if n < 0 { if errno == EINTR { continue }; return false }
                    done += n
                }
                return true
            }
            if !ok { fail(path, "cannot write: \(String(cString: strerror(errno)))"); return false }
            offset += off_t(data.count)
            state.withLock { $0.bytesDone += UInt64(data.count) }
            return true
        }
        if !written { return }
        if ftruncate(fd, off_t(node.size)) != 0 { fail(path, "cannot set the size: \(String(cString: strerror(errno)))") }
        applyMetadata(node, fd: fd, dirfd: dirfd, path: path)
        state.withLock { $0.filesDone += 1 }
        if options.verify && !damaged { await verify(node, dirfd: dirfd, path: path) }
    }

    /// Loads `ids` and hands them to `body` in order, loading up to `window` blobs ahead (so decryption and
    /// decompression of the next blobs overlap the writing of this one); stops when `body` returns false.
    static func loadInOrder(_ ids: [ID], repo: Repository, window: Int = 2,
                            _ body: (ID, Result<[UInt8], any Error>) async -> Bool) async -> Bool {
        if ids.count <= 1 {
            // Small files (nearly all of them): no task group.
            guard let id = ids.first else { return true }
            return await body(id, loadIndexed(0, id, repo).1)
        }
        // (No nested function that calls `g.addTask`: with Swift 6.3.1 -O that pattern here made every child
        // task return the first index; see docs/ARCHITECTURE.md.)
        return await withTaskGroup(of: (Int, Result<[UInt8], any Error>).self) { g in
            var launched = 0
            var ready: [Int: Result<[UInt8], any Error>] = [:]
            for i in ids.indices {
                while launched < min(ids.count, i + max(1, window)) {
                    let index = launched, id = ids[index]
                    launched += 1
                    g.addTask { await loadIndexed(index, id, repo) }
                }
                while ready[i] == nil, let next = await g.next() { ready[next.0] = next.1 }
                guard let r = ready.removeValue(forKey: i) else { return false }
                if await !body(ids[i], r) {
                    g.cancelAll()
                    return false
                }
            }
            return true
        }
    }

    static func loadIndexed(_ index: Int, _ id: ID, _ repo: Repository) async -> (Int, Result<[UInt8], any Error>) {
        do { return (index, .success(try await repo.loadBlob(.data, id))) } catch { return (index, .failure(error)) }
    }

    /// The path of `first` relative to the directory holding `from` (both are snapshot paths).
    func relativeToTarget(_ first: BytePath, from: BytePath) -> BytePath? {
        let a = first.split(separator: 0x2F).map(Array.init)
        let b = from.split(separator: 0x2F).map(Array.init)
        guard !a.isEmpty, !b.isEmpty else { return nil }
        var common = 0
        while common < a.count - 1 && common < b.count - 1 && a[common] == b[common] { common += 1 }
        let ups = Array(repeating: [UInt8]("..".utf8), count: b.count - 1 - common)
        return Array((ups + a[common...]).joined(separator: [0x2F]))
    }

    func applyMetadata(_ node: Node, fd: Int32, dirfd: Int32, path: BytePath) {
        withCPath(node.name) { n in
            if options.restoreOwnership && isRoot {
                _ = fchownat(dirfd, n, node.uid, node.gid, AT_SYMLINK_NOFOLLOW)
            }
            if node.type != .symlink {
                if fd >= 0 { _ = fchmod(fd, mode_t(node.mode)) } else { _ = fchmodat(dirfd, n, mode_t(node.mode), 0) }
            }
            if let xs = node.xattrs, fd >= 0 {
                for x in xs {
                    let r = x.value.withUnsafeBytes { lb_fsetxattr(fd, x.name, $0.baseAddress, $0.count) }
                    if r != 0 && errno != ENOTSUP && errno != EPERM { fail(path, "cannot set xattr \(x.name): \(String(cString: strerror(errno)))") }
                }
            }
            var times = [timespec(tv_sec: Int(node.atimeNs / 1_000_000_000), tv_nsec: Int(node.atimeNs % 1_000_000_000)),
                         timespec(tv_sec: Int(node.mtimeNs / 1_000_000_000), tv_nsec: Int(node.mtimeNs % 1_000_000_000))]
            if fd >= 0 { _ = futimens(fd, &times) } else { _ = utimensat(dirfd, n, &times, AT_SYMLINK_NOFOLLOW) }
        }
    }

    /// Re-reads a restored file and checks every chunk's keyed hash against the snapshot.
    func verify(_ node: Node, dirfd: Int32, path: BytePath) async {
        let fd = withCPath(node.name) { openat(dirfd, $0, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
        if fd < 0 { fail(path, "verify: cannot open: \(String(cString: strerror(errno)))"); return }
        defer { close(fd) }
        var offset: off_t = 0
        let idx = repo.index
        for id in node.content ?? [] {
            guard let loc = idx.lookup(id, type: .data) else { fail(path, "verify: blob \(id.short) is not in the index"); return }
            var buf = [UInt8](repeating: 0, count: Int(loc.blob.rawLength))
            let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, offset) }
            if n != buf.count || repo.master.blobID(buf) != id {
                fail(path, "verify: content differs from the snapshot at offset \(offset)"); return
            }
            offset += off_t(n)
        }
        var st = stat()
        if fstat(fd, &st) != 0 || UInt64(st.st_size) != node.size { fail(path, "verify: size differs from the snapshot"); return }
        state.withLock { $0.filesVerified += 1 }
    }
}

enum LocalDirs {
    static func makeAll(_ path: String) throws {
        var cur = path.hasPrefix("/") ? "" : "."
        for c in path.split(separator: "/") {
            cur += "/" + c
            if mkdir(cur, 0o755) != 0 && errno != EEXIST {
                throw LifeboatError(.io, "cannot create \(cur): \(String(cString: strerror(errno)))")
            }
        }
    }
}
