import Foundation
import Glibc
import LifeboatCore
import LifeboatRepository

/// What a verification of a restored tree found.
public struct VerifyReport: Sendable, Codable, Equatable {
    public var files = 0
    public var directories = 0
    public var others = 0
    public var bytes: UInt64 = 0
    /// How many entries differ from the snapshot, and the first few, each named (at most 100 kept).
    public var mismatches = 0
    public var problems: [String] = []
    public init() {}
    public var ok: Bool { mismatches == 0 }

    mutating func fail(_ path: String, _ what: String) {
        mismatches += 1
        if problems.count < 100 { problems.append("\(path): \(what)") }
    }
}

/// Checks a restored tree against its snapshot, entry by entry, without following a symlink: every entry is
/// there with its type, size, permission bits and modification time (owner too when `ownership`), every
/// symlink with its target, and every file's content hashes to the snapshot's blob IDs, chunk by chunk. Entries
/// the target has beyond the snapshot's are not looked at.
public struct RestoreVerifier: Sendable {
    /// The largest chunk any chunker setting makes (ChunkerParameters allows at most 64 MiB).
    static let maxBlobLength: UInt64 = 64 << 20
    public let repository: Repository
    public var ownership: Bool
    public var concurrency = 4

    public init(repository: Repository, ownership: Bool = getuid() == 0) {
        self.repository = repository
        self.ownership = ownership
    }

    /// Verifies the directory `node` (a snapshot's root, or a subtree) restored into `target`.
    public func verify(node: Node, target: String) async throws -> VerifyReport {
        let fd = open(target, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { throw LifeboatError(.io, "cannot open the restored tree \(target): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var report = VerifyReport()
        if node.type == .dir { try await directory(node.subtree, fd: fd, path: "", depth: 0, &report) }
        else { await entry(node, dirfd: fd, path: "/" + node.nameString, depth: 0, &report) }
        return report
    }

    func directory(_ tree: ID?, fd: Int32, path: String, depth: Int, _ report: inout VerifyReport) async throws {
        guard let tree else { return }
        guard depth < 512 else { report.fail(path, "nested deeper than 512 levels"); return }
        let nodes = try await repository.loadTree(tree).nodes
        // Files in groups, each group's content hashed in parallel; directories one after another.
        var files: [Node] = []
        for n in nodes {
            if n.type == .file { files.append(n); continue }
            await entry(n, dirfd: fd, path: path + "/" + n.nameString, depth: depth, &report)
        }
        var start = 0
        while start < files.count {
            let group = files[start..<min(files.count, start + concurrency * 4)]
            start += group.count
            let results = await withTaskGroup(of: (Int, [String], UInt64).self) { g in
                var next = group.startIndex
                var out: [(Int, [String], UInt64)] = []
                func add() {
                    let i = next, n = files[i]
                    g.addTask { let (p, b) = self.file(n, dirfd: fd, path: path + "/" + n.nameString); return (i, p, b) }
                    next += 1
                }
                while next < group.endIndex && next - group.startIndex < concurrency { add() }
                while let r = await g.next() {
                    out.append(r)
                    if next < group.endIndex { add() }
                }
                return out.sorted { $0.0 < $1.0 }
            }
            for (_, problems, bytes) in results {
                report.files += 1
                report.bytes += bytes
                for p in problems { report.fail(String(p.prefix(while: { $0 != "\u{0}" })), String(p.drop(while: { $0 != "\u{0}" }).dropFirst())) }
            }
        }
    }

    func entry(_ n: Node, dirfd: Int32, path: String, depth: Int, _ report: inout VerifyReport) async {
        var st = stat()
        guard withCPath(n.name, { fstatat(dirfd, $0, &st, AT_SYMLINK_NOFOLLOW) }) == 0 else { report.fail(path, "missing (\(String(cString: strerror(errno))))"); return }
        let type = st.st_mode & S_IFMT
        switch n.type {
        case .dir:
            guard type == S_IFDIR else { report.fail(path, "not a directory"); return }
            report.directories += 1
            let sub = withCPath(n.name) { openat(dirfd, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            guard sub >= 0 else { report.fail(path, "cannot open: \(String(cString: strerror(errno)))"); return }
            do { try await directory(n.subtree, fd: sub, path: path, depth: depth + 1, &report) } catch {
                report.fail(path, "its tree cannot be read from the repository: \(error)")
            }
            close(sub)
            metadata(n, st, path, &report)
        case .symlink:
            guard type == S_IFLNK else { report.fail(path, "not a symlink"); return }
            report.others += 1
            var buf = [UInt8](repeating: 0, count: 4096)
            let len = withCPath(n.name) { name in buf.withUnsafeMutableBytes { readlinkat(dirfd, name, $0.baseAddress!, $0.count) } }
            if len < 0 || Array(buf[0..<max(0, len)]) != (n.linkTarget ?? []) { report.fail(path, "symlink target differs from the snapshot") }
        case .file:
            let (problems, bytes) = file(n, dirfd: dirfd, path: path)
            report.files += 1
            report.bytes += bytes
            for p in problems { report.fail(path, String(p.drop(while: { $0 != "\u{0}" }).dropFirst())) }
        default:
            let want: mode_t = switch n.type { case .fifo: S_IFIFO; case .chardev: S_IFCHR; case .blockdev: S_IFBLK; default: S_IFSOCK }
            report.others += 1
            if type != want { report.fail(path, "not a \(n.type.rawValue)") }
        }
    }

    func metadata(_ n: Node, _ st: stat, _ path: String, _ report: inout VerifyReport) {
        if mode_t(n.mode & 0o7777) != st.st_mode & 0o7777 {
            report.fail(path, String(format: "mode %o, the snapshot has %o", st.st_mode & 0o7777, n.mode & 0o7777))
        }
        let mtime = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
        if mtime != n.mtimeNs { report.fail(path, "modification time differs from the snapshot") }
        if ownership && (st.st_uid != n.uid || st.st_gid != n.gid) { report.fail(path, "owner \(st.st_uid):\(st.st_gid), the snapshot has \(n.uid):\(n.gid)") }
    }

    /// A file's problems ("path\0what") and its size; its content re-read and hashed chunk by chunk.
    func file(_ n: Node, dirfd: Int32, path: String) -> ([String], UInt64) {
        var out: [String] = []
        func fail(_ what: String) { out.append(path + "\u{0}" + what) }
        let fd = withCPath(n.name) { openat(dirfd, $0, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
        guard fd >= 0 else {
            fail(errno == ELOOP ? "a symlink, not a file" : errno == ENOENT ? "missing" : "cannot open: \(String(cString: strerror(errno)))")
            return (out, 0)
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { fail("not a regular file"); return (out, 0) }
        guard UInt64(st.st_size) == n.size else { fail("size \(st.st_size), the snapshot has \(n.size)"); return (out, UInt64(st.st_size)) }
        var r = VerifyReport()
        metadata(n, st, path, &r)
        out += r.problems.map { $0.replacingOccurrences(of: path + ": ", with: path + "\u{0}") }
        let index = repository.index
        var offset: UInt64 = 0
        for id in n.content ?? [] {
            guard let loc = index.lookup(id, type: .data) else { fail("blob \(id.short) is not in the index"); return (out, n.size) }
            let len = UInt64(loc.blob.rawLength)
            guard len <= n.size - min(n.size, offset) else { fail("content differs from the snapshot at offset \(offset)"); return (out, n.size) }
            // The index's word on a blob's length is a hostile writer's too: no chunk is larger than 64 MiB.
            guard len <= RestoreVerifier.maxBlobLength else {
                fail("the index says blob \(id.short) holds \(len) bytes, more than any chunk (64 MiB): the index is damaged"); return (out, n.size)
            }
            var buf = [UInt8](repeating: 0, count: Int(len))
            let got = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset)) }
            if got != buf.count || repository.master.blobID(buf) != id { fail("content differs from the snapshot at offset \(offset)"); return (out, n.size) }
            offset += len
        }
        if offset != n.size { fail("content differs from the snapshot: its chunks hold \(offset) of \(n.size) bytes") }
        return (out, n.size)
    }
}
