import Foundation
import CLifeboatSys
import Glibc
import LifeboatChunker
import LifeboatCore
import LifeboatRepository
import Synchronization

/// What to back up and how.
public struct BackupOptions: Sendable {
    public var paths: [String] = []
    public var excludes: [String] = []
    public var excludeCaches = false
    public var oneFileSystem = false
    public var tags: [String] = []
    public var hostname: String = localHostname()
    /// Parent snapshot: files whose size, mtime, ctime and inode are unchanged are not read again.
    public var parent: ID? = nil
    public var time: Date = Date()
    /// Concurrent file readers.
    public var fileReaders = max(2, ProcessInfo.processInfo.activeProcessorCount)
    /// Count files and bytes ahead of the backup for a progress bar's percentage and ETA
    /// (costs a second walk; off when nobody watches the progress).
    public var scanTotals = true
    /// Runs after every blob and the index are stored and before the snapshot is saved, with the snapshot and the
    /// files that could not be read: it may add to the snapshot (a database's backup record), or throw to save none.
    public var finish: (@Sendable (Snapshot, [SourceError]) async throws -> Snapshot)? = nil
    public init() {}
}

/// Live counters of a running backup (read by progress displays).
public struct BackupProgress: Sendable {
    public var filesDone = 0
    public var dirsDone = 0
    public var bytesDone: UInt64 = 0
    public var totalFiles = 0
    public var totalBytes: UInt64 = 0
    public var scanFinished = false
    public var errors = 0
    public var currentFile = ""
}

/// A file that changed while it was read: it is stored as read, with the size of what was read.
struct FileChangedError: Error, CustomStringConvertible {
    var sizeBefore: UInt64
    var bytesRead: UInt64
    var description: String {
        sizeBefore == bytesRead
            ? "changed while being read: stored as read (\(bytesRead) bytes); back it up again for a consistent copy (a live database's files: back up its dump instead, see the README's Databases section)"
            : "changed while being read: stored the \(bytesRead) bytes read (its size was \(sizeBefore) when the backup began); back it up again for a consistent copy (a live database's files: back up its dump instead, see the README's Databases section)"
    }
}

/// A source file that could not be read.
public struct SourceError: Sendable {
    public var path: String
    public var message: String
    /// The file was gone by the time it was read (deleted during the backup).
    public var vanished = false
    /// The file changed while it was read (what was read is stored).
    public var changed = false
}

public struct BackupResult: Sendable {
    public var snapshotID: ID?
    public var snapshot: Snapshot
    public var errors: [SourceError]
}

/// Bounded concurrency: at most `limit` permits out at once; waiters queue in order.
/// `release` is synchronous, so a finishing task frees its permit without scheduling another task.
final class AsyncSemaphore: Sendable {
    struct State: ~Copyable {
        var available: Int
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state: Mutex<State>
    init(_ limit: Int) { state = Mutex(State(available: limit)) }

    func acquire() async {
        if tryAcquire() { return }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.available > 0 { s.available -= 1; return true }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    /// Takes a permit only if one is free now (never waits: safe for recursive work).
    func tryAcquire() -> Bool {
        state.withLock { s -> Bool in
            if s.available > 0 { s.available -= 1; return true }
            return false
        }
    }

    func release() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.waiters.isEmpty { s.available += 1; return nil }
            return s.waiters.removeFirst()
        }
        next?.resume()
    }
}

/// Backs up files into a repository: walks the paths, chunks files, stores blobs and trees, and
/// writes the snapshot only after all its data and index are durable.
///
/// Concurrency: the walk is depth-first in one task; file contents are read by up to `fileReaders`
/// tasks, and within a file the next chunk is read while earlier ones are hashed, compressed and sealed.
/// The walker waits for a free reader before starting a file (back-pressure), so memory is bounded
/// by readers × (2 × maximum chunk size) plus the open packs.
public final class Archiver: Sendable {
    let repo: Repository
    let options: BackupOptions
    let excludes: PatternSet
    let names = NameCache()
    let readers: AsyncSemaphore
    /// Extra directory walkers: a subdirectory gets its own task when a permit is free, else it is
    /// walked inline (so nested directories can never deadlock waiting for permits).
    let walkers: AsyncSemaphore
    let hardlinks = Mutex<[HardlinkKey: [ID]]>([:])
    let progressState = Mutex(BackupProgress())
    let summaryState = Mutex(SnapshotSummary())
    let errorList = Mutex<[SourceError]>([])
    struct HardlinkKey: Hashable { var device: UInt64; var inode: UInt64 }

    public init(repository: Repository, options: BackupOptions) {
        repo = repository
        self.options = options
        excludes = PatternSet(options.excludes)
        readers = AsyncSemaphore(max(1, options.fileReaders))
        walkers = AsyncSemaphore(max(1, options.fileReaders / 2))
    }

    public var progress: BackupProgress { progressState.withLock { $0 } }

    func recordError(_ path: BytePath, _ error: Error) {
        var e = SourceError(path: path.lossyString, message: "\(error)")
        e.vanished = (error as? FileError)?.errno == ENOENT
        e.changed = error is FileChangedError
        errorList.withLock { $0.append(e) }
        progressState.withLock { $0.errors += 1 }
    }

    /// A virtual directory of the snapshot's path structure (`/home/user/x` → home → user → x).
    final class VirtualDir {
        var children: [BytePath: VirtualDir] = [:]
        var isTarget = false
    }

    // MARK: - Running

    public func run() async throws -> BackupResult {
        let start = Date()
        let targets = options.paths.map(absolutePath)
        guard !targets.isEmpty else { throw LifeboatError.invalid("no paths to back up") }
        for t in targets {
            do { _ = try lstatPath(t) } catch { throw LifeboatError.invalid("cannot back up \(t.lossyString): \(error)") }
        }
        let root = VirtualDir()
        for t in targets {
            var d = root
            for c in t.split(separator: 0x2F) {
                if d.isTarget { break }
                let next = d.children[Array(c)] ?? VirtualDir()
                d.children[Array(c)] = next
                d = next
            }
            d.isTarget = true
            d.children = [:]
        }

        var parentTree: Tree? = nil
        if let p = options.parent {
            let snap = try await repo.loadSnapshot(p)
            parentTree = try? await repo.loadTree(snap.tree)
        }

        let scanner = options.scanTotals ? Task.detached { [self] in await self.scan(targets) } : nil
        defer { scanner?.cancel() }

        let rootTree: ID
        if root.isTarget {
            // Backing up "/" itself: the root tree is the real root directory's listing.
            let device = try lstatPath([0x2F]).device
            let parentRoot = try await options.parent.asyncMap { try await repo.loadSnapshot($0).tree }
            rootTree = try await archiveDirectory(path: [0x2F], parent: parentTree, parentID: parentRoot,
                                                  device: device, skipContents: false)
        } else {
            rootTree = try await archiveVirtual(root, path: [0x2F], parent: parentTree)
        }
        try await repo.flush()

        var summary = summaryState.withLock { $0 }
        let stats = repo.writeStats
        summary.backupStart = Timestamp.format(start)
        summary.backupEnd = Timestamp.format(Date())
        summary.dataBlobs = stats.dataBlobs
        summary.treeBlobs = stats.treeBlobs
        summary.dataAdded = stats.bytesAdded
        summary.dataAddedPacked = stats.bytesPacked
        let errors = errorList.withLock { $0 }
        summary.errors = errors.count
        let p = progress
        summary.totalFilesProcessed = p.filesDone
        summary.totalBytesProcessed = p.bytesDone

        var snap = Snapshot(time: options.time, tree: rootTree, paths: targets.map(\.lossyString).sorted(),
                            hostname: options.hostname, username: localUsername(), uid: getuid(), gid: getgid(),
                            tags: options.tags, parent: options.parent,
                            excludes: options.excludes.isEmpty ? nil : options.excludes, summary: summary)
        snap.summary = summary
        if let finish = options.finish { snap = try await finish(snap, errors) }
        let id = repo.dryRun ? nil : try await repo.saveSnapshot(snap)
        return BackupResult(snapshotID: id, snapshot: snap, errors: errors)
    }

    /// Backs up a stream (`--stdin`) as one file named `name` in the snapshot root. `read` may block (the CLI's
    /// standard input); `finish` runs after the end of the stream and before the snapshot is saved (a failing
    /// dump command fails the backup).
    public func runStream(name: String, read: @escaping @Sendable (UnsafeMutableRawBufferPointer) throws -> Int,
                          finish: @Sendable () throws -> Void = {}) async throws -> BackupResult {
        try await runStream(name: name, readAsync: { max in
            var b = [UInt8](repeating: 0, count: max)
            let n = try b.withUnsafeMutableBytes { try read($0) }
            b.removeLast(max - n)
            return b
        }, finish: { try finish() })
    }

    /// The same with a read that waits without holding a thread (the agent: a dump command's pipe read on a
    /// thread of its own). `readAsync(max)` returns up to `max` bytes, none at the end.
    public func runStream(name: String, readAsync: @Sendable (Int) async throws -> [UInt8],
                          finish: @Sendable () async throws -> Void = {}) async throws -> BackupResult {
        let start = Date()
        guard Node.isSafeName(Array(name.utf8)) else { throw LifeboatError.invalid("invalid --stdin-filename \"\(name)\": give a plain file name (no \"/\", not empty, \".\" or \"..\"); it is stored as /NAME in the snapshot") }
        var chunker = StreamChunker(cdc: repo.chunker)
        var content: [ID] = []
        var size: UInt64 = 0
        // The chunker reads synchronously, at most `window` bytes per chunk: the staging buffer holds that much
        // (or the rest of the stream) before each call, so its reads never wait.
        let window = StreamChunker.fullSize(repo.chunker)
        var staged: [UInt8] = []
        var taken = 0
        var ended = false
        while true {
            while !ended && staged.count - taken < window {
                let more = try await readAsync(min(1 << 20, window))
                if more.isEmpty { ended = true; break }
                if taken >= window { staged.removeFirst(taken); taken = 0 }  // amortized: one move per window
                staged += more
            }
            let chunk = try staged.withUnsafeBytes { src -> [UInt8]? in
                try chunker.next(read: { buf in
                    let n = min(buf.count, src.count - taken)
                    if n > 0 { buf.baseAddress!.copyMemory(from: src.baseAddress! + taken, byteCount: n) }
                    taken += n
                    return n
                })
            }
            guard let chunk else { break }
            content.append(try await repo.saveBlob(.data, chunk).id)
            size += UInt64(chunk.count)
            progressState.withLock { $0.bytesDone = size }
        }
        try await finish()
        var node = Node(name: Array(name.utf8), type: .file)
        node.mode = 0o644
        node.uid = getuid(); node.gid = getgid()
        node.user = names.user(node.uid); node.group = names.group(node.gid)
        let now = Int64(Date().timeIntervalSince1970 * 1e9)
        node.mtimeNs = now; node.atimeNs = now; node.ctimeNs = now
        node.size = size
        node.content = content
        let tree = try await repo.saveTree(Tree(nodes: [node]))
        try await repo.flush()
        var summary = SnapshotSummary()
        let stats = repo.writeStats
        summary.backupStart = Timestamp.format(start)
        summary.backupEnd = Timestamp.format(Date())
        summary.filesNew = 1
        summary.dataBlobs = stats.dataBlobs; summary.treeBlobs = stats.treeBlobs
        summary.dataAdded = stats.bytesAdded; summary.dataAddedPacked = stats.bytesPacked
        summary.totalFilesProcessed = 1; summary.totalBytesProcessed = size
        let snap = Snapshot(time: options.time, tree: tree.id, paths: ["/" + name], hostname: options.hostname,
                            username: localUsername(), uid: getuid(), gid: getgid(), tags: options.tags, summary: summary)
        let id = repo.dryRun ? nil : try await repo.saveSnapshot(snap)
        return BackupResult(snapshotID: id, snapshot: snap, errors: [])
    }

    // MARK: - Scanning (totals for the progress bar)

    func scan(_ targets: [BytePath]) async {
        var files = 0
        var bytes: UInt64 = 0
        var stack = targets
        while let p = stack.popLast() {
            if Task.isCancelled { return }
            guard let info = try? lstatPath(p) else { continue }
            if info.type == .dir {
                for n in (try? readDirectory(p)) ?? [] {
                    let c = p.appendingComponent(n)
                    if !excludes.matches(c) { stack.append(c) }
                }
            } else {
                files += 1
                if info.type == .file { bytes = bytes.addingClamped(info.size) }
            }
            if files % 1000 == 0 {
                let (f, b) = (files, bytes)
                progressState.withLock { $0.totalFiles = f; $0.totalBytes = b }
            }
        }
        let (f, b) = (files, bytes)
        progressState.withLock { $0.totalFiles = f; $0.totalBytes = b; $0.scanFinished = true }
    }

    // MARK: - Walking

    func archiveVirtual(_ dir: VirtualDir, path: BytePath, parent: Tree?) async throws -> ID {
        var nodes: [Node] = []
        for (name, child) in dir.children.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            let childPath = path.appendingComponent(name)
            let parentNode = parent?.node(named: name)
            if child.isTarget {
                let info = try lstatPath(childPath)
                let device = info.device
                if let n = try await archiveEntry(name: name, path: childPath, info: info, parent: parentNode, device: device) {
                    nodes.append(n)
                }
            } else {
                let info = try lstatPath(childPath)
                var node = try makeNode(name: name, path: childPath, info: info, names: names)
                let sub = try? await parentNode?.subtree.asyncMap { try await repo.loadTree($0) }
                node.subtree = try await archiveVirtual(child, path: childPath, parent: sub ?? nil)
                nodes.append(node)
            }
        }
        return try await repo.saveTree(Tree(nodes: nodes)).id
    }

    /// Archives one entry; nil when it is excluded or unreadable.
    func archiveEntry(name: BytePath, path: BytePath, info: FileInfo, parent: Node?, device: UInt64) async throws -> Node? {
        var node: Node
        do { node = try makeNode(name: name, path: path, info: info, names: names) } catch {
            recordError(path, error); return nil
        }
        switch info.type {
        case .dir:
            let crossing = options.oneFileSystem && info.device != device
            let parentTree = parent?.type == .dir ? try? await parent?.subtree.asyncMap({ try await repo.loadTree($0) }) : nil
            node.subtree = try await archiveDirectory(path: path, parent: parentTree ?? nil, parentID: parent?.subtree,
                                                      device: device, skipContents: crossing)
            let isNew = parent?.subtree == nil
            summaryState.withLock {
                if isNew { $0.dirsNew += 1 } else if parent?.subtree == node.subtree { $0.dirsUnmodified += 1 } else { $0.dirsChanged += 1 }
            }
            progressState.withLock { $0.dirsDone += 1 }
        case .file:
            return try await archiveFile(node: node, path: path, info: info, parent: parent)
        default:
            progressState.withLock { $0.filesDone += 1 }
        }
        return node
    }

    func archiveDirectory(path: BytePath, parent: Tree?, parentID: ID?, device: UInt64, skipContents: Bool) async throws -> ID {
        var names: [BytePath] = []
        if !skipContents {
            do { names = try readDirectory(path) } catch { recordError(path, error) }
        }
        if options.excludeCaches, names.contains(Array("CACHEDIR.TAG".utf8)), isCacheDirTag(path.appendingComponent(Array("CACHEDIR.TAG".utf8))) {
            names = [Array("CACHEDIR.TAG".utf8)]
        }
        let entries = names.filter { !excludes.matches(path.appendingComponent($0)) }
        let nodes: [Node] = try await withThrowingTaskGroup(of: (Int, Node?).self) { g in
            var slots = [Node?](repeating: nil, count: entries.count)
            for (i, name) in entries.enumerated() {
                let p = path.appendingComponent(name)
                let info: FileInfo
                do { info = try lstatPath(p) } catch { recordError(p, error); continue }
                let parentNode = parent?.node(named: name)
                if info.type == .file {
                    await readers.acquire()
                    g.addTask {
                        defer { self.readers.release() }
                        return (i, try await self.archiveEntry(name: name, path: p, info: info, parent: parentNode, device: device))
                    }
                } else if info.type == .dir && walkers.tryAcquire() {
                    g.addTask {
                        defer { self.walkers.release() }
                        return (i, try await self.archiveEntry(name: name, path: p, info: info, parent: parentNode, device: device))
                    }
                } else {
                    slots[i] = try await archiveEntry(name: name, path: p, info: info, parent: parentNode, device: device)
                }
            }
            for try await (i, n) in g { slots[i] = n }
            return slots.compactMap { $0 }
        }
        // Unchanged directory: the parent's tree, already stored, is this tree (no encoding or hashing).
        if let parent, let parentID, parent.nodes == nodes, repo.index.hasLive(parentID, type: .tree) {
            return parentID
        }
        return try await repo.saveTree(Tree(nodes: nodes)).id
    }

    func isCacheDirTag(_ path: BytePath) -> Bool {
        let sig = Array("Signature: 8a477f597d28d172789f06886806bc55".utf8)
        let fd = withCPath(path) { open($0, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
        if fd < 0 { return false }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: sig.count)
        return read(fd, &buf, sig.count) == sig.count && buf == sig
    }

    // MARK: - Files

    func archiveFile(node base: Node, path: BytePath, info: FileInfo, parent: Node?) async throws -> Node? {
        var node = base
        progressState.withLock { $0.currentFile = path.lossyString }
        defer { progressState.withLock { $0.filesDone += 1 } }
        // Unchanged since the parent snapshot: reuse its content list without reading.
        if let p = parent, p.type == .file, p.size == info.size, p.mtimeNs == info.mtimeNs, p.ctimeNs == info.ctimeNs,
           p.inode == info.inode, let content = p.content {
            let idx = repo.index
            if content.allSatisfy({ idx.hasLive($0, type: .data) }) {
                node.content = content
                summaryState.withLock { $0.filesUnmodified += 1 }
                progressState.withLock { $0.bytesDone = $0.bytesDone.addingClamped(info.size) }
                return node
            }
        }
        let key = HardlinkKey(device: info.device, inode: info.inode)
        if info.st.st_nlink > 1, let content = hardlinks.withLock({ $0[key] }) {
            node.content = content
            summaryState.withLock { $0.filesUnmodified += 1 }
            progressState.withLock { $0.bytesDone = $0.bytesDone.addingClamped(info.size) }
            return node
        }
        let fd = withCPath(path) { open($0, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | lb_o_noatime()) }
        let realFd = fd >= 0 ? fd : withCPath(path) { open($0, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
        if realFd < 0 { recordError(path, fileError("cannot open", path)); return nil }
        defer { close(realFd) }
        do {
            let (content, bytesRead) = try await readContent(fd: realFd, path: path, size: Int(info.size))
            node.content = content
            // The snapshot records what was read: a file that grew or shrank while being read gets the size of
            // the bytes stored (restore, `--verify` and `dump` rely on size and content agreeing), and the
            // change is reported (exit code 3), as it is when the file's times changed during the read.
            var after = stat()
            let changedTimes = fstat(realFd, &after) == 0
                && (nanoseconds(after.st_mtim) != info.mtimeNs || nanoseconds(after.st_ctim) != info.ctimeNs)
            if bytesRead != node.size || changedTimes {
                let was = node.size
                node.size = bytesRead
                recordError(path, FileChangedError(sizeBefore: was, bytesRead: bytesRead))
            }
        } catch let e as FileError {
            recordError(path, e); return nil
        } catch {
            throw error
        }
        if info.st.st_nlink > 1 { hardlinks.withLock { $0[key] = node.content } }
        summaryState.withLock { if parent == nil { $0.filesNew += 1 } else { $0.filesChanged += 1 } }
        return node
    }

    /// Reads a file in chunks; for large files keeps up to two chunks in flight while reading the next.
    /// Returns the blob IDs and the number of bytes read (which differs from `size` if the file changed).
    func readContent(fd: Int32, path: BytePath, size: Int) async throws -> ([ID], UInt64) {
        var chunker = StreamChunker(cdc: repo.chunker, sizeHint: size)
        let repo = self.repo
        let read: (UnsafeMutableRawBufferPointer) throws -> Int = { buf in
            while true {
                let r = Glibc.read(fd, buf.baseAddress, buf.count)
                if r >= 0 { return r }
                if errno != EINTR { throw fileError("cannot read", path) }
            }
        }
        if size < 2 * repo.chunker.parameters.min {
            // Small files (nearly all of them): one or two chunks, no child tasks.
            var ids: [ID] = []
            var total: UInt64 = 0
            while let chunk = try chunker.next(read: read) {
                progressState.withLock { $0.bytesDone += UInt64(chunk.count) }
                total += UInt64(chunk.count)
                ids.append(try await repo.saveBlob(.data, chunk).id)
            }
            return (ids, total)
        }
        return try await withThrowingTaskGroup(of: (Int, ID).self) { g in
            var ids: [ID] = []
            var total: UInt64 = 0
            var inflight = 0
            var n = 0
            while let chunk = try chunker.next(read: read) {
                if inflight >= 2, let (i, id) = try await g.next() { ids[i] = id; inflight -= 1 }
                let i = n
                n += 1
                ids.append(.zero)
                total += UInt64(chunk.count)
                progressState.withLock { $0.bytesDone += UInt64(chunk.count) }
                g.addTask { (i, try await repo.saveBlob(.data, chunk).id) }
                inflight += 1
            }
            for try await (i, id) in g { ids[i] = id }
            return (ids, total)
        }
    }
}

extension Optional {
    /// `map` with an async transform.
    public func asyncMap<T>(_ f: (Wrapped) async throws -> T) async rethrows -> T? {
        guard let v = self else { return nil }
        return try await f(v)
    }
}
