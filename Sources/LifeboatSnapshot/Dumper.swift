import Foundation
import Glibc
import LifeboatCore
import LifeboatRepository

/// Where `Dumper` writes: standard output for `lifeboat dump`, a file or a pipe for the agent.
public protocol ByteSink: AnyObject {
    func write(_ bytes: [UInt8]) throws
}

/// A file descriptor as a sink (every byte written, EINTR retried).
public final class FileDescriptorSink: ByteSink {
    let fd: Int32
    let name: String
    public init(fd: Int32, name: String) { self.fd = fd; self.name = name }

    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { buf in
            guard let base = buf.baseAddress else { return }
            var done = 0
            while done < buf.count {
                let n = Glibc.write(fd, base + done, buf.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw LifeboatError(.io, "cannot write to \(name): \(String(cString: strerror(errno)))")
                }
                done += n
            }
        }
    }
}

/// Writes a file of a snapshot as it is, or a directory as a tar stream (`lifeboat dump`). Damage is contained:
/// a damaged blob is written as zeros of its length (so that a tar stream stays in step with the sizes in its
/// headers), a damaged directory is left empty, an entry with an unsafe name is left out; each is named in the
/// problems `dump` returns.
public final class Dumper {
    let repo: Repository
    let sink: ByteSink
    var problems: [String] = []

    public init(repository: Repository, sink: ByteSink) {
        repo = repository
        self.sink = sink
    }

    /// Dumps `node` (found at `path`); returns the problems met, empty when everything was intact.
    public func dump(_ node: Node, path: String) async throws -> [String] {
        problems = []
        switch node.type {
        case .file:
            try await writeContent(node, path: path)
        case .dir:
            let tar = TarWriter(out: sink)
            let base = node.name.isEmpty ? "" : node.nameString
            if !base.isEmpty { try tar.header(path: base + "/", node: node) }
            try await dumpTree(node.subtree, prefix: base, tar: tar)
            try tar.finish()
        default:
            throw LifeboatError.invalid("\(path) is a \(node.type.rawValue), not a file or directory")
        }
        return problems
    }

    /// Writes exactly `node.size` bytes: the file's blobs in order, a damaged blob as zeros of its length, cut
    /// or padded to the recorded size.
    func writeContent(_ node: Node, path: String) async throws {
        var left = node.size
        for id in node.content ?? [] where left > 0 {
            var data: [UInt8]
            do { data = try await repo.loadBlob(.data, id) } catch {
                problems.append("\(path): \(error)")
                let len = repo.index.lookup(id, type: .data).map { UInt64($0.blob.rawLength) } ?? left
                data = [UInt8](repeating: 0, count: Int(min(len, left, 1 << 30)))
            }
            if UInt64(data.count) > left { data.removeLast(data.count - Int(left)) }
            try sink.write(data)
            left -= UInt64(data.count)
        }
        if left > 0 {
            problems.append("\(path): the stored content is \(left) bytes shorter than the recorded size; padded with zeros")
            while left > 0 {
                let n = Int(min(left, 1 << 20))
                try sink.write([UInt8](repeating: 0, count: n))
                left -= UInt64(n)
            }
        }
    }

    func dumpTree(_ tree: ID?, prefix: String, tar: TarWriter) async throws {
        guard let tree else { return }
        let t: Tree
        do { t = try await repo.loadTree(tree) } catch {
            problems.append("\(prefix.isEmpty ? "/" : prefix): directory contents are damaged: \(error)")
            return
        }
        for n in t.nodes {
            guard Node.isSafeName(n.name) else {
                problems.append("\(prefix)/\(n.nameString): an entry with an unsafe name is left out")
                continue
            }
            let p = prefix.isEmpty ? n.nameString : prefix + "/" + n.nameString
            switch n.type {
            case .dir:
                try tar.header(path: p + "/", node: n)
                try await dumpTree(n.subtree, prefix: p, tar: tar)
            case .file:
                try tar.header(path: p, node: n)
                try await writeContent(n, path: p)
                try tar.pad(n.size)
            default:
                try tar.header(path: p, node: n)
            }
        }
    }
}

/// A POSIX tar (ustar with pax headers for long names and large files).
public final class TarWriter {
    let out: ByteSink
    public init(out: ByteSink) { self.out = out }

    func octal(_ v: UInt64, _ width: Int) -> [UInt8] {
        let s = String(v, radix: 8)
        return Array((String(repeating: "0", count: max(0, width - 1 - s.count)) + s).utf8) + [0]
    }

    func block(name: [UInt8], mode: UInt32, uid: UInt32, gid: UInt32, size: UInt64, mtime: Int64, type: UInt8,
               link: [UInt8], user: String, group: String) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 512)
        func put(_ off: Int, _ bytes: [UInt8], _ max: Int) { for (i, b) in bytes.prefix(max).enumerated() { h[off + i] = b } }
        put(0, name, 100)
        put(100, octal(UInt64(mode & 0o7777), 8), 8)
        put(108, octal(UInt64(uid), 8), 8)
        put(116, octal(UInt64(gid), 8), 8)
        put(124, octal(min(size, 0o77777777777), 12), 12)
        put(136, octal(UInt64(max(0, mtime)), 12), 12)
        put(148, Array(repeating: 0x20, count: 8), 8)
        h[156] = type
        put(157, link, 100)
        put(257, Array("ustar\0".utf8), 6)
        put(263, Array("00".utf8), 2)
        put(265, Array(user.utf8), 32)
        put(297, Array(group.utf8), 32)
        let sum = h.reduce(0) { $0 + UInt64($1) }
        put(148, octal(sum, 7) + [0x20], 8)
        return h
    }

    public func header(path: String, node n: Node) throws {
        let name = Array(path.utf8)
        let link = n.linkTarget ?? []
        let type: UInt8 = switch n.type {
        case .file: 0x30
        case .symlink: 0x32
        case .chardev: 0x33
        case .blockdev: 0x34
        case .dir: 0x35
        case .fifo: 0x36
        case .socket: 0x30
        }
        let size = n.type == .file ? n.size : 0
        if name.count > 99 || link.count > 99 || size > 0o77777777777 {
            var pax: [UInt8] = []
            func rec(_ k: String, _ v: [UInt8]) {
                let body = Array(" \(k)=".utf8) + v + [0x0A]
                var len = body.count + 1
                while String(len).count + body.count != len { len = String(len).count + body.count }
                pax += Array(String(len).utf8) + body
            }
            rec("path", name)
            if !link.isEmpty { rec("linkpath", link) }
            rec("size", Array(String(size).utf8))
            try out.write(block(name: Array("PaxHeader".utf8), mode: 0o644, uid: 0, gid: 0, size: UInt64(pax.count), mtime: 0,
                                type: 0x78, link: [], user: "", group: ""))
            try out.write(pax)
            try pad(UInt64(pax.count))
        }
        try out.write(block(name: name, mode: n.mode, uid: n.uid, gid: n.gid, size: size, mtime: n.mtimeNs / 1_000_000_000,
                            type: type, link: link, user: n.user ?? "", group: n.group ?? ""))
    }

    public func pad(_ size: UInt64) throws {
        let r = Int(size % 512)
        if r != 0 { try out.write([UInt8](repeating: 0, count: 512 - r)) }
    }

    public func finish() throws { try out.write([UInt8](repeating: 0, count: 1024)) }
}
