import CLifeboatSys
import Foundation
import Glibc
import LifeboatCore
import LifeboatRepository
import LifeboatStorage
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
    /// Pack reads in flight (nil: one per core on a local disk, six on a remote site). Memory is bounded by
    /// this many ranges of at most `maxRead` bytes.
    public var packReaders: Int? = nil
    /// A batch ends after this many files or `batchBytes` of data: the plan of a batch (files, their blobs and
    /// offsets) is what restore keeps in memory besides the packs being read, and one batch's data is written
    /// while the next is planned.
    public var batchFiles = 4096
    public var batchBytes = 64 << 20
    /// From a remote site every batch reads each pack it touches once more, and requests are what cost there:
    /// batches are large (the plan holds about 200 bytes per file and 100 per blob: 50,000 files ≈ 15 MiB).
    public var remoteBatchFiles = 50_000
    public var remoteBatchBytes = 1 << 30
    public init() {}
}

public struct RestoreProgress: Sendable {
    public var filesDone = 0
    public var bytesDone: UInt64 = 0
    public var totalFiles = 0
    public var totalBytes: UInt64 = 0
    public var filesSkipped = 0
    public var filesVerified = 0
    /// Ranged reads issued to the repository for file data.
    public var packReads = 0
}

/// A path that could not be restored (damaged data, a hostile name, a failed system call).
public struct RestoreError: Sendable {
    public var path: String
    public var message: String
}

/// Restores a snapshot's tree into a target directory, reading packs rather than blobs.
///
/// Two steps per batch of files, as restic's restorer does:
/// 1. **Plan** (a walk of the trees): directories, links and special files are created; each regular file is
///    created empty at its final size, and where each of its blobs goes (file, offset) is recorded.
/// 2. **Data**: the blobs of the batch are grouped by pack; neighbouring blobs of a pack are fetched with one
///    ranged read (at most `maxRead` bytes), several reads at a time, and each blob is opened (authenticated,
///    decompressed, checked against its ID) once and written to every place that needs it. A remote site thus
///    answers a few requests per pack instead of one per blob. A file gets its metadata (and `--verify`) as soon
///    as its last blob is written; directories get theirs at the end, deepest first.
///
/// Safety: entries are created relative to open directory descriptors with `O_NOFOLLOW`; files are opened again
/// for their data with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` from the target, so a symlink planted
/// anywhere on the way is never followed; names are checked (no empty names, `.`, `..`, `/` or NUL); existing
/// entries are unlinked before being replaced. Damaged blobs do not stop the restore: the other files are
/// restored and the damaged ones listed, with every other byte of them at its right offset.
public final class Restorer: Sendable {
    let repo: Repository
    let options: RestoreOptions
    let includes: PatternSet
    let excludes: PatternSet
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
    }

    public var progress: RestoreProgress { state.withLock { $0 } }
    public var errors: [RestoreError] { errorList.withLock { $0 } }

    func fail(_ path: BytePath, _ message: String) {
        errorList.withLock { $0.append(RestoreError(path: path.lossyString, message: message)) }
    }

    /// Finds the node at `subpath` (`/`-separated) below `tree`. Nil subpath: the root itself. `snapshot`
    /// (the snapshot's ID and record) lets an error say which snapshot it looked in: `latest` is not a name
    /// the user can look up afterwards.
    public static func resolve(repo: Repository, tree: ID, subpath: String,
                               snapshot: (id: ID, snapshot: Snapshot)? = nil) async throws -> Node {
        let which = snapshot.map { s in
            "snapshot \(s.id.short) (\(s.snapshot.time.prefix(19).replacingOccurrences(of: "T", with: " ")), host \(s.snapshot.hostname), "
                + "paths \(s.snapshot.paths.joined(separator: ", ")))"
        } ?? "the snapshot"
        let hint = snapshot.map { "; see what it holds with `lifeboat ls \($0.id.short)`" } ?? ""
        var node = Node(name: [], type: .dir)
        node.subtree = tree
        node.mode = 0o755
        for comp in subpath.split(separator: "/") where comp != "." {
            guard node.type == .dir, let sub = node.subtree else {
                throw LifeboatError(.notFound, "\(subpath) is not in \(which): \(node.nameString) is not a directory there\(hint)")
            }
            guard let next = try await repo.loadTree(sub).node(named: Array(comp.utf8)) else {
                throw LifeboatError(.notFound, "\(subpath) is not in \(which)\(hint)")
            }
            node = next
        }
        return node
    }

    /// What the walk collects: files to fill (this batch) and directories to finish at the end.
    struct Plan {
        var files: [FileJob] = []
        var bytes = 0
        /// The batch being written while this one is planned.
        var writing: Task<Void, Error>? = nil
        /// This batch's limits: on a local disk small at first, so that writing starts early, doubling up to the
        /// options'; on a remote site the options' from the start, since every batch reads the packs it touches
        /// once more (requests, not bytes, cost there).
        var limitFiles = 256
        var limitBytes = 4 << 20
        /// Directories in walk order (parents first), with their paths relative to the target.
        var directories: [(rel: BytePath, path: BytePath, node: Node)] = []
    }

    struct FileJob: Sendable {
        var rel: BytePath
        var path: BytePath
        var node: Node
        /// Where each blob goes; blobs whose place cannot be known are left out (and reported).
        var placements: [(id: ID, offset: UInt64, location: BlobLocation)]
        /// Some of its content is known to be missing already (no verification then).
        var damaged: Bool
    }

    /// Restores `node` (a directory: its contents; a file: the file) into `target`.
    /// `snapshotPath` is the node's path in the snapshot, for include/exclude matching.
    public func restore(node: Node, snapshotPath: String, target: String) async throws {
        try LocalDirs.makeAll(target)
        let fd = open(target, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { throw LifeboatError(.io, "cannot open the target \(target): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let base = Array(snapshotPath.utf8)
        let index = repo.index
        var plan = Plan()
        if repo.backend.writeConcurrency > 1 { plan.limitFiles = options.remoteBatchFiles; plan.limitBytes = options.remoteBatchBytes }
        if node.type == .dir {
            // The totals (for progress) come from a walk of the trees beside the restore, not before it.
            async let totals: Void = countTotals(node)
            do {
                try await restoreDirectory(tree: node.subtree, dirfd: fd, path: base.isEmpty ? [0x2F] : base, rel: [],
                                           root: fd, index: index, plan: &plan)
                try await startBatch(&plan, root: fd)
                try await plan.writing?.value
            } catch {
                plan.writing?.cancel()
                _ = try? await plan.writing?.value  // the descriptors it uses must outlive it
                throw error
            }
            finishDirectories(plan.directories, root: fd)
            await totals
        } else {
            state.withLock { $0.totalFiles = 1; $0.totalBytes = node.size }
            try await restoreEntry(node, dirfd: fd, path: base, rel: node.name, root: fd, index: index, plan: &plan)
            try await writeData(plan.files, root: fd)
        }
    }

    /// Hands the planned files to a background write (after the previous batch's write has finished), so that the
    /// walk creating the next batch's files overlaps the reading and writing of this one.
    func startBatch(_ plan: inout Plan, root: Int32) async throws {
        let files = plan.files
        plan.files = []
        plan.bytes = 0
        plan.limitFiles = min(plan.limitFiles * 2, max(plan.limitFiles, options.batchFiles))
        plan.limitBytes = min(plan.limitBytes * 2, max(plan.limitBytes, options.batchBytes))
        try await plan.writing?.value
        plan.writing = files.isEmpty ? nil : Task { try await self.writeData(files, root: root) }
    }

    func countTotals(_ node: Node) async {
        // Counting needs the trees anyway; they are small next to the data.
        var stack = [node.subtree].compactMap { $0 }
        var files = 0
        var bytes: UInt64 = 0
        while let t = stack.popLast() {
            guard let tree = try? await repo.loadTree(t) else { continue }
            for n in tree.nodes {
                if let s = n.subtree { stack.append(s) } else { files += 1; bytes = bytes.addingClamped(n.size) }
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

    // MARK: - Plan: the walk

    func restoreDirectory(tree: ID?, dirfd: Int32, path: BytePath, rel: BytePath, root: Int32, index: MasterIndex,
                          plan: inout Plan) async throws {
        guard let tree else { return }
        let t: Tree
        do { t = try await repo.loadTree(tree) } catch {
            fail(path, "directory contents are damaged: \(error)"); return
        }
        for node in t.nodes {
            let p = path.appendingComponent(node.name)
            guard Node.isSafeName(node.name) else {
                fail(p, "refusing to restore an entry with an unsafe name"); continue
            }
            if !selected(p, isDir: node.type == .dir).restore { continue }
            let r = rel.isEmpty ? node.name : rel.appendingComponent(node.name)
            try await restoreEntry(node, dirfd: dirfd, path: p, rel: r, root: root, index: index, plan: &plan)
            if plan.files.count >= plan.limitFiles || plan.bytes >= plan.limitBytes {
                try await startBatch(&plan, root: root)
            }
        }
    }

    /// Removes whatever is at `name` (not following symlinks; directories only if empty).
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

    func restoreEntry(_ node: Node, dirfd: Int32, path: BytePath, rel: BytePath, root: Int32, index: MasterIndex,
                      plan: inout Plan) async throws {
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
            plan.directories.append((rel, path, node))
            try await restoreDirectory(tree: node.subtree, dirfd: fd, path: path, rel: rel, root: root, index: index, plan: &plan)
        case .file:
            planFile(node, dirfd: dirfd, path: path, rel: rel, old: old, index: index, plan: &plan)
        default:
            if old != nil {
                if options.overwrite == .never { state.withLock { $0.filesSkipped += 1 }; return }
                removeExisting(dirfd: dirfd, name: name)
            }
            let r: Int32 = withCPath(name) { n in
                switch node.type {
                case .symlink: return withCPath(node.linkTarget ?? []) { symlinkat($0, dirfd, n) }
                case .fifo: return mknodat(dirfd, n, S_IFIFO | mode_t(node.mode & 0o7777), 0)
                case .chardev: return mknodat(dirfd, n, S_IFCHR | mode_t(node.mode & 0o7777), dev_t(truncatingIfNeeded: node.rdev ?? 0))
                case .blockdev: return mknodat(dirfd, n, S_IFBLK | mode_t(node.mode & 0o7777), dev_t(truncatingIfNeeded: node.rdev ?? 0))
                default: return 0  // sockets are not restored (as restic)
                }
            }
            if r != 0 { fail(path, "cannot create \(node.type.rawValue): \(String(cString: strerror(errno)))"); return }
            if node.type != .socket { applyMetadata(node, fd: -1, dirfd: dirfd, path: path) }
            state.withLock { $0.filesDone += 1 }
        }
    }

    /// Creates the file (empty, at its final size) and records where its blobs go.
    func planFile(_ node: Node, dirfd: Int32, path: BytePath, rel: BytePath, old: stat?, index: MasterIndex, plan: inout Plan) {
        let name = node.name
        if let old {
            switch options.overwrite {
            case .never:
                state.withLock { $0.filesSkipped += 1; $0.filesDone += 1; $0.bytesDone = $0.bytesDone.addingClamped(node.size) }
                return
            case .ifChanged:
                if (old.st_mode & S_IFMT) == S_IFREG && UInt64(old.st_size) == node.size && nanoseconds(old.st_mtim) == node.mtimeNs {
                    state.withLock { $0.filesSkipped += 1; $0.filesDone += 1; $0.bytesDone = $0.bytesDone.addingClamped(node.size) }
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
            if let first, let relLink = relativeToTarget(first, from: path) {
                let r = withCPath(relLink) { src in withCPath(name) { dst in linkat(dirfd, src, dirfd, dst, 0) } }
                if r == 0 { state.withLock { $0.filesDone += 1; $0.bytesDone = $0.bytesDone.addingClamped(node.size) }; return }
            }
        }
        let fd = withCPath(name) { openat(dirfd, $0, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600) }
        if fd < 0 { fail(path, "cannot create file: \(String(cString: strerror(errno)))"); return }
        defer { close(fd) }
        if ftruncate(fd, off_t(node.size)) != 0 { fail(path, "cannot set the size: \(String(cString: strerror(errno)))"); return }
        let (placed, problems) = Restorer.placements(of: node, index: index)
        for p in problems { fail(path, p) }
        plan.files.append(FileJob(rel: rel, path: path, node: node, placements: placed, damaged: !problems.isEmpty))
        plan.bytes += placed.reduce(0) { $0 + Int($1.location.blob.rawLength) }
    }

    /// Where each blob of a file goes. Offsets are the sums of the blobs' lengths from the index; a blob the
    /// index does not know has no known length, so the blobs before it are placed from the start and those
    /// after the last unknown one from the end (the file's size is known): nothing is written at a wrong
    /// offset. Returns the placements and a message per blob that cannot be restored.
    static func placements(of node: Node, index: MasterIndex) -> ([(id: ID, offset: UInt64, location: BlobLocation)], [String]) {
        let content = node.content ?? []
        let locs = content.map { index.lookup($0, type: .data) }
        var placed: [(id: ID, offset: UInt64, location: BlobLocation)] = []
        var problems: [String] = []
        var offset: UInt64 = 0
        var k = 0
        while k < content.count, let loc = locs[k] {
            placed.append((content[k], offset, loc))
            offset = offset.addingClamped(UInt64(loc.blob.rawLength))
            k += 1
        }
        if k == content.count {
            if offset != node.size { problems.append("the stored content is \(offset) bytes, the recorded size \(node.size)") }
            return (placed, problems)
        }
        // From the end, back to the last blob the index does not know.
        var tail: [(id: ID, offset: UInt64, location: BlobLocation)] = []
        var end = node.size
        var j = content.count - 1
        var tailOK = true
        while j > k, let loc = locs[j] {
            let len = UInt64(loc.blob.rawLength)
            if len > end { tailOK = false; break }
            end -= len
            tail.append((content[j], end, loc))
            j -= 1
        }
        // Lengths that do not add up to the size (the head would overlap the tail): trust only the head.
        if !tailOK || end < offset { tail = []; end = node.size }
        let unknown = (k...j).filter { locs[$0] == nil }
        let stranded = (k...j).filter { locs[$0] != nil }.count + (tailOK ? 0 : content.count - 1 - j)
        problems.append("\(unknown.count) of its \(content.count) blobs (\(unknown.prefix(3).map { content[$0].short }.joined(separator: ", "))\(unknown.count > 3 ? ", …" : "")) are not in the index; bytes \(offset)..<\(end) are left as zeros\(stranded > 0 ? " (\(stranded) blobs between them cannot be placed)" : "") (run `lifeboat repair index`, then `lifeboat check`)")
        return (placed + tail.reversed(), problems)
    }

    // MARK: - Data: packs, read in runs

    typealias Run = BlobRun<(file: Int, offset: UInt64)>

    /// The runs of reads a batch needs (see `BlobRuns`).
    static func runs(_ files: [FileJob]) -> [Run] {
        var wanted: [(location: BlobLocation, target: (file: Int, offset: UInt64))] = []
        for (f, job) in files.enumerated() { for p in job.placements { wanted.append((p.location, (f, p.offset))) } }
        return BlobRuns.group(wanted)
    }

    /// Writes the data of the planned files and finishes each (metadata, verification) when its last blob is in.
    func writeData(_ files: [FileJob], root: Int32) async throws {
        guard !files.isEmpty else { return }
        let table = FileTable(files: files, root: root)
        // Files with nothing to read are complete already.
        for (i, f) in files.enumerated() where f.placements.isEmpty { finishFile(i, files, table) }
        let runs = Restorer.runs(files)
        let width = max(1, options.packReaders ?? (repo.backend.writeConcurrency <= 1
            ? ProcessInfo.processInfo.activeProcessorCount : 6))
        let failed = await boundedMap(runs, width: width) { run -> Error? in
            do { try await self.restoreRun(run, files, table); return nil } catch { return error }
        }
        table.closeAll()
        // Only an interruption or a lost lock stops the restore; damage was reported per file.
        if let stop = failed.compactMap({ $0 }).first(where: { ($0 as? LifeboatError)?.code == .locked || $0 is CancellationError }) {
            throw stop
        }
    }

    func restoreRun(_ run: Run, _ files: [FileJob], _ table: FileTable) async throws {
        try Task.checkCancellation()
        try repo.checkFence()
        let ok = await BlobRuns.read(run, from: repo) { b, result in
            switch result {
            case .success(let plain): for t in b.targets { write(plain, to: t.file, at: t.offset, files, table) }
            case .failure(let error) where error is CancellationError: break
            case .failure(let error): await recover(b, files, table, "\(error)")
            }
        }
        try Task.checkCancellation()
        if ok { state.withLock { $0.packReads += 1 } }
    }

    /// A blob whose copy could not be read or opened: another copy the index knows may still serve; only when
    /// none does is every file that needs it named.
    func recover(_ b: Run.Blob, _ files: [FileJob], _ table: FileTable, _ message: String) async {
        if let plain = try? await repo.loadBlob(.data, b.location.blob.id) {
            for t in b.targets { write(plain, to: t.file, at: t.offset, files, table) }
            return
        }
        damage(b, files, table, message)
    }

    func damage(_ b: Run.Blob, _ files: [FileJob], _ table: FileTable, _ message: String) {
        for t in b.targets {
            fail(files[t.file].path, message)
            if table.placed(t.file, damaged: true) { finishFile(t.file, files, table) }
        }
    }

    func write(_ plain: [UInt8], to file: Int, at offset: UInt64, _ files: [FileJob], _ table: FileTable) {
        let job = files[file]
        guard let fd = table.acquire(file) else {
            fail(job.path, "cannot open to write: \(String(cString: strerror(errno)))")
            if table.placed(file, damaged: true) { finishFile(file, files, table) }
            return
        }
        let sparse = job.node.sparse == true
        let ok = plain.withUnsafeBytes { buf -> Bool in
            var done = 0
            let piece = sparse ? 4096 : max(1, buf.count)
            while done < buf.count {
                let len = min(piece, buf.count - done)
                // Sparse files: zero runs of whole 4 KiB blocks stay holes (the file was created at its size).
                if sparse && UnsafeRawBufferPointer(rebasing: buf[done..<(done + len)]).allSatisfy({ $0 == 0 }) {
                    done += len
                    continue
                }
                let n = pwrite(fd, buf.baseAddress! + done, len, off_t(offset) + off_t(done))
                if n < 0 { if errno == EINTR { continue }; return false }
                done += n
            }
            return true
        }
        table.release(file)
        if !ok { fail(job.path, "cannot write: \(String(cString: strerror(errno)))") }
        state.withLock { $0.bytesDone = $0.bytesDone.addingClamped(UInt64(plain.count)) }
        if table.placed(file, damaged: !ok) { finishFile(file, files, table) }
    }

    /// The file's last blob is in: metadata, then verification.
    func finishFile(_ file: Int, _ files: [FileJob], _ table: FileTable) {
        let job = files[file]
        if let fd = table.acquire(file) {
            applyMetadata(job.node, fd: fd, dirfd: -1, path: job.path)
            if options.verify && !table.isDamaged(file) { verify(job.node, fd: fd, path: job.path) }
            table.release(file)
        } else {
            fail(job.path, "cannot open to finish: \(String(cString: strerror(errno)))")
        }
        table.close(file)
        state.withLock { $0.filesDone += 1 }
    }

    /// Applies directories' metadata, deepest first (their times would change while their contents are written).
    func finishDirectories(_ dirs: [(rel: BytePath, path: BytePath, node: Node)], root: Int32) {
        for d in dirs.reversed() {
            let fd = FileTable.openBeneath(root, d.rel, O_RDONLY | O_DIRECTORY)
            if fd < 0 { fail(d.path, "cannot open directory to set its metadata: \(String(cString: strerror(errno)))"); continue }
            applyMetadata(d.node, fd: fd, dirfd: -1, path: d.path)
            close(fd)
        }
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

    /// Owner, mode, extended attributes and times. With an open descriptor, everything goes through it;
    /// otherwise (symlinks, special files) through the name in `dirfd`, never following a symlink.
    func applyMetadata(_ node: Node, fd: Int32, dirfd: Int32, path: BytePath) {
        var times = [Restorer.timespec(node.atimeNs), Restorer.timespec(node.mtimeNs)]
        if fd >= 0 {
            if options.restoreOwnership && isRoot { _ = fchown(fd, node.uid, node.gid) }
            _ = fchmod(fd, mode_t(node.mode & 0o7777))
            for x in node.xattrs ?? [] {
                let r = x.value.withUnsafeBytes { lb_fsetxattr(fd, x.name, $0.baseAddress, $0.count) }
                if r != 0 && errno != ENOTSUP && errno != EPERM { fail(path, "cannot set xattr \(x.name): \(String(cString: strerror(errno)))") }
            }
            _ = futimens(fd, &times)
            return
        }
        withCPath(node.name) { n in
            if options.restoreOwnership && isRoot { _ = fchownat(dirfd, n, node.uid, node.gid, AT_SYMLINK_NOFOLLOW) }
            if node.type != .symlink { _ = fchmodat(dirfd, n, mode_t(node.mode & 0o7777), 0) }
            _ = utimensat(dirfd, n, &times, AT_SYMLINK_NOFOLLOW)
        }
    }

    /// Nanoseconds since the epoch as a `timespec` (negative times round towards the past, as the kernel wants).
    static func timespec(_ ns: Int64) -> Glibc.timespec {
        let (q, r) = ns.quotientAndRemainder(dividingBy: 1_000_000_000)
        return r < 0 ? Glibc.timespec(tv_sec: Int(q - 1), tv_nsec: Int(r + 1_000_000_000)) : Glibc.timespec(tv_sec: Int(q), tv_nsec: Int(r))
    }

    /// Re-reads a restored file and checks every chunk's keyed hash against the snapshot.
    func verify(_ node: Node, fd: Int32, path: BytePath) {
        var offset: UInt64 = 0
        let idx = repo.index
        for id in node.content ?? [] {
            guard let loc = idx.lookup(id, type: .data) else { fail(path, "verify: blob \(id.short) is not in the index"); return }
            // The blob cannot be longer than what is left of the file (this also bounds the buffer).
            guard UInt64(loc.blob.rawLength) <= node.size - min(node.size, offset) else {
                fail(path, "verify: content differs from the snapshot at offset \(offset)"); return
            }
            // …nor than any chunk (the index is a hostile writer's word too).
            guard UInt64(loc.blob.rawLength) <= RestoreVerifier.maxBlobLength else {
                fail(path, "verify: the index says blob \(id.short) holds \(loc.blob.rawLength) bytes, more than any chunk (64 MiB)"); return
            }
            var buf = [UInt8](repeating: 0, count: Int(loc.blob.rawLength))
            let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset)) }
            if n != buf.count || repo.master.blobID(buf) != id {
                fail(path, "verify: content differs from the snapshot at offset \(offset)"); return
            }
            offset += UInt64(n)
        }
        var st = stat()
        if fstat(fd, &st) != 0 || UInt64(st.st_size) != node.size { fail(path, "verify: size differs from the snapshot"); return }
        state.withLock { $0.filesVerified += 1 }
    }
}

/// The files of one batch while their data is written: how many blobs each still waits for, whether any was
/// damaged, and a bounded cache of open descriptors (a file's blobs arrive from many packs, in any order).
final class FileTable: Sendable {
    struct Entry { var remaining: Int; var damaged = false; var fd: Int32 = -1; var users = 0; var lastUse: UInt64 = 0 }
    struct State { var entries: [Entry]; var open = Set<Int>(); var tick: UInt64 = 0 }
    let state: Mutex<State>
    let rels: [BytePath]
    let root: Int32
    /// Descriptors kept open at most (20,000 is the usual limit per process; this leaves room for the rest).
    static let maxOpen = 256

    init(files: [Restorer.FileJob], root: Int32) {
        state = Mutex(State(entries: files.map { Entry(remaining: $0.placements.count, damaged: $0.damaged) }))
        rels = files.map(\.rel)
        self.root = root
    }

    /// An open descriptor (read-write) for file `i`, opened beneath the target without following symlinks.
    func acquire(_ i: Int) -> Int32? {
        let fd: Int32? = state.withLock { s in
            s.tick += 1
            if s.entries[i].fd >= 0 {
                s.entries[i].users += 1
                s.entries[i].lastUse = s.tick
                return s.entries[i].fd
            }
            if s.open.count >= FileTable.maxOpen { FileTable.evict(&s) }
            let fd = FileTable.openBeneath(root, rels[i], O_RDWR)
            if fd < 0 { return nil }
            s.entries[i].fd = fd
            s.entries[i].users = 1
            s.entries[i].lastUse = s.tick
            s.open.insert(i)
            return fd
        }
        return fd
    }

    func release(_ i: Int) { state.withLock { $0.entries[i].users -= 1 } }

    /// Counts one placement of file `i` as done; true when it was the last.
    func placed(_ i: Int, damaged: Bool) -> Bool {
        state.withLock { s in
            if damaged { s.entries[i].damaged = true }
            s.entries[i].remaining -= 1
            return s.entries[i].remaining == 0
        }
    }

    func isDamaged(_ i: Int) -> Bool { state.withLock { $0.entries[i].damaged } }

    func close(_ i: Int) {
        state.withLock { s in
            if s.entries[i].fd >= 0 { Glibc.close(s.entries[i].fd); s.entries[i].fd = -1; s.open.remove(i) }
        }
    }

    func closeAll() {
        state.withLock { s in
            for i in s.open { Glibc.close(s.entries[i].fd); s.entries[i].fd = -1 }
            s.open = []
        }
    }

    /// Closes the least recently used descriptor nobody is writing through.
    static func evict(_ s: inout State) {
        var victim = -1
        for i in s.open where s.entries[i].users == 0 {
            if victim < 0 || s.entries[i].lastUse < s.entries[victim].lastUse { victim = i }
        }
        if victim >= 0 { Glibc.close(s.entries[victim].fd); s.entries[victim].fd = -1; s.open.remove(victim) }
    }

    /// Opens `rel` (a path below `root`) with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, or, on kernels
    /// without it, component by component with `O_NOFOLLOW`. `rel` empty: `root` itself (duplicated).
    static func openBeneath(_ root: Int32, _ rel: BytePath, _ flags: Int32) -> Int32 {
        if rel.isEmpty { return fcntl(root, F_DUPFD_CLOEXEC, 0) }
        let fd = withCPath(rel) { lb_open_beneath(root, $0, flags | O_NOFOLLOW | O_CLOEXEC, 0) }
        // Kernels before 5.6 (ENOSYS) and seccomp profiles that refuse the call (EPERM) get the same walk by hand.
        if fd >= 0 || (errno != ENOSYS && errno != EPERM) { return fd }
        var dir = fcntl(root, F_DUPFD_CLOEXEC, 0)
        let parts = rel.split(separator: 0x2F).map(Array.init)
        for (k, part) in parts.enumerated() {
            let last = k == parts.count - 1
            let next = withCPath(part) { openat(dir, $0, (last ? flags : O_RDONLY | O_DIRECTORY) | O_NOFOLLOW | O_CLOEXEC) }
            let e = errno
            Glibc.close(dir)
            if next < 0 { errno = e; return -1 }
            dir = next
        }
        return dir
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
