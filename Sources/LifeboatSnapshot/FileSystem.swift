import Foundation
import CLifeboatSys
import Glibc
import LifeboatCore

/// Byte paths: Linux names need not be UTF-8, so paths are handled as bytes everywhere.
public typealias BytePath = [UInt8]

extension Array where Element == UInt8 {
    /// Joins a directory path and a name with one `/`.
    func appendingComponent(_ name: [UInt8]) -> [UInt8] {
        if self.last == 0x2F { return self + name }
        return self + [0x2F] + name
    }
    var lossyString: String { String(decoding: self, as: UTF8.self) }
}

func withCPath<R>(_ path: BytePath, _ body: (UnsafePointer<CChar>) throws -> R) rethrows -> R {
    var z = path
    z.append(0)
    return try z.withUnsafeBufferPointer { try $0.baseAddress!.withMemoryRebound(to: CChar.self, capacity: z.count) { try body($0) } }
}

/// A file-system error with the path and the system's reason.
public struct FileError: Error, Sendable, CustomStringConvertible {
    public var path: String
    public var operation: String
    public var errno: Int32
    public var description: String { "\(operation) \(path): \(String(cString: strerror(errno)))" }
}

func fileError(_ op: String, _ path: BytePath, _ e: Int32 = errno) -> FileError {
    FileError(path: path.lossyString, operation: op, errno: e)
}

/// What `lstat` says of a path.
struct FileInfo {
    var st: stat

    var type: NodeType {
        switch st.st_mode & S_IFMT {
        case S_IFREG: return .file
        case S_IFDIR: return .dir
        case S_IFLNK: return .symlink
        case S_IFIFO: return .fifo
        case S_IFCHR: return .chardev
        case S_IFBLK: return .blockdev
        default: return .socket
        }
    }
    var size: UInt64 { UInt64(st.st_size) }
    var device: UInt64 { UInt64(st.st_dev) }
    var inode: UInt64 { UInt64(st.st_ino) }
    var mtimeNs: Int64 { nanoseconds(st.st_mtim) }
    var ctimeNs: Int64 { nanoseconds(st.st_ctim) }
    var atimeNs: Int64 { nanoseconds(st.st_atim) }
    var isSparse: Bool { st.st_blocks * 512 < st.st_size }
}

func lstatPath(_ path: BytePath) throws -> FileInfo {
    var st = stat()
    let r = withCPath(path) { lstat($0, &st) }
    if r != 0 { throw fileError("cannot lstat", path) }
    return FileInfo(st: st)
}

/// Names in a directory (without `.` and `..`), sorted bytewise.
func readDirectory(_ path: BytePath) throws -> [BytePath] {
    guard let d = withCPath(path, { opendir($0) }) else { throw fileError("cannot open directory", path) }
    defer { closedir(d) }
    var out: [BytePath] = []
    errno = 0
    while let e = readdir(d) {
        let name: BytePath = withUnsafeBytes(of: e.pointee.d_name) { raw in
            let len = strnlen(raw.baseAddress!.assumingMemoryBound(to: CChar.self), raw.count)
            return Array(raw.prefix(len))
        }
        if name == [0x2E] || name == [0x2E, 0x2E] { continue }
        out.append(name)
    }
    return out.sorted { $0.lexicographicallyPrecedes($1) }
}

func readLink(_ path: BytePath) throws -> BytePath {
    var buf = [UInt8](repeating: 0, count: 4096)
    let n = withCPath(path) { p in buf.withUnsafeMutableBytes { readlink(p, $0.baseAddress!.assumingMemoryBound(to: CChar.self), 4096) } }
    if n < 0 { throw fileError("cannot read link", path) }
    return Array(buf[0..<n])
}

/// Extended attributes of a path (not following symlinks). Unsupported file systems give none.
func readXattrs(_ path: BytePath) -> [ExtendedAttribute] {
    withCPath(path) { p -> [ExtendedAttribute] in
        let size = lb_llistxattr(p, nil, 0)
        if size <= 0 { return [] }
        var names = [CChar](repeating: 0, count: size)
        let n = lb_llistxattr(p, &names, size)
        if n <= 0 { return [] }
        var out: [ExtendedAttribute] = []
        var start = 0
        for i in 0..<n where names[i] == 0 {
            let name = String(decoding: names[start..<i].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            start = i + 1
            let vsize = lb_lgetxattr(p, name, nil, 0)
            if vsize < 0 { continue }
            var value = [UInt8](repeating: 0, count: vsize)
            let got = vsize == 0 ? 0 : lb_lgetxattr(p, name, &value, vsize)
            if got < 0 { continue }
            out.append(ExtendedAttribute(name: name, value: Array(value.prefix(got))))
        }
        return out.sorted { $0.name < $1.name }
    }
}

/// Caches uid → user name and gid → group name.
final class NameCache: Sendable {
    private let users = Mutex<[UInt32: String]>([:])
    private let groups = Mutex<[UInt32: String]>([:])

    func user(_ uid: UInt32) -> String? {
        if let u = users.withLock({ $0[uid] }) { return u.isEmpty ? nil : u }
        var name = ""
        var pw = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buf = [CChar](repeating: 0, count: 4096)
        if getpwuid_r(uid, &pw, &buf, buf.count, &result) == 0, result != nil { name = String(cString: pw.pw_name) }
        users.withLock { $0[uid] = name }
        return name.isEmpty ? nil : name
    }

    func group(_ gid: UInt32) -> String? {
        if let g = groups.withLock({ $0[gid] }) { return g.isEmpty ? nil : g }
        var name = ""
        var gr = Glibc.group()
        var result: UnsafeMutablePointer<Glibc.group>?
        var buf = [CChar](repeating: 0, count: 4096)
        if getgrgid_r(gid, &gr, &buf, buf.count, &result) == 0, result != nil { name = String(cString: gr.gr_name) }
        groups.withLock { $0[gid] = name }
        return name.isEmpty ? nil : name
    }
}

import Synchronization

/// Builds a node's metadata from `lstat` (and xattrs, link target); content is filled in by the caller.
func makeNode(name: BytePath, path: BytePath, info: FileInfo, names: NameCache) throws -> Node {
    var n = Node(name: name, type: info.type)
    n.mode = UInt32(info.st.st_mode & 0o7777)
    n.uid = info.st.st_uid
    n.gid = info.st.st_gid
    n.user = names.user(n.uid)
    n.group = names.group(n.gid)
    n.mtimeNs = info.mtimeNs
    // Listing a directory updates its atime: record mtime instead so unchanged directories keep their tree ID.
    n.atimeNs = info.type == .dir ? info.mtimeNs : info.atimeNs
    n.ctimeNs = info.ctimeNs
    n.inode = info.inode
    n.device = info.device
    n.links = UInt64(info.st.st_nlink)
    if info.type == .file { n.size = info.size }
    if info.type == .chardev || info.type == .blockdev { n.rdev = UInt64(info.st.st_rdev) }
    if info.type == .symlink { n.linkTarget = try readLink(path) }
    let x = readXattrs(path)
    if !x.isEmpty { n.xattrs = x }
    if info.type == .file && info.isSparse && info.size > 0 { n.sparse = true }
    return n
}

/// Converts a user-given path to an absolute, normalized byte path (no `.`/`..`, no trailing slash).
public func absolutePath(_ path: String) -> BytePath {
    var p = Array(path.utf8)
    if p.first != 0x2F {
        var buf = [CChar](repeating: 0, count: 4096)
        if getcwd(&buf, 4096) != nil { p = Array(String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).utf8).appendingComponent(p) }
    }
    var out: [BytePath] = []
    for c in p.split(separator: 0x2F, omittingEmptySubsequences: true) {
        if c.elementsEqual([0x2E]) { continue }
        if c.elementsEqual([0x2E, 0x2E]) { _ = out.popLast(); continue }
        out.append(Array(c))
    }
    return [0x2F] + Array(out.joined(separator: [0x2F]))
}

/// Nanoseconds since the epoch, clamped to Int64 (a file dated after the year 2262, which anybody who can
/// write in a backed-up folder can create with `touch`, must not crash the backup).
func nanoseconds(_ t: timespec) -> Int64 {
    let (m, o1) = Int64(t.tv_sec).multipliedReportingOverflow(by: 1_000_000_000)
    let (s, o2) = m.addingReportingOverflow(Int64(t.tv_nsec))
    if o1 || o2 { return t.tv_sec < 0 ? .min : .max }
    return s
}
