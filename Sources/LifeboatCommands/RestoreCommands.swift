import ArgumentParser
import Foundation
import Synchronization
import Glibc
import LifeboatCore
import LifeboatRepository
import LifeboatSnapshot

struct RestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "restore", abstract: "Restore a snapshot (or a part of it) into a directory.", discussion: Examples.restore)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var filter: FilterOptions
    @Argument(help: "SNAPSHOT[:SUBPATH]: an ID, prefix or latest, optionally with a path inside it.") var snapshot: String
    @Option(name: [.short, .customLong("target")], help: "Directory to restore into.") var target: String
    @Option(name: [.short, .customLong("include")], help: "Restore only paths matching (repeatable).") var includes: [String] = []
    @Option(name: [.short, .customLong("exclude")], help: "Do not restore paths matching (repeatable).") var excludes: [String] = []
    @Flag(name: .customLong("verify"), help: "Re-read every restored file and check it against the snapshot.") var verify = false
    @Option(name: .customLong("overwrite"), help: "Existing files: always, if-changed, never.") var overwrite = "always"

    func run() async throws {
        try await runCommand(global) {
            guard let mode = OverwriteMode(rawValue: overwrite) else {
                throw LifeboatError.invalid("invalid --overwrite \"\(overwrite)\": use always, if-changed or never")
            }
            let out = global.output
            let repo = try await global.open()
            return try await withRepositoryLock(repo, .shared, "restore", readOnly: global) {
                try await repo.loadIndex()
                let (ref, sub) = splitSnapshotRef(snapshot)
                let (id, snap) = try await repo.findSnapshot(ref, filter: filter.filter)
                let node = try await Restorer.resolve(repo: repo, tree: snap.tree, subpath: sub, snapshot: (id, snap))
                var opts = RestoreOptions()
                opts.includes = includes
                opts.excludes = excludes
                opts.verify = verify
                opts.overwrite = mode
                let restorer = Restorer(repository: repo, options: opts)
                out.info("restoring snapshot \(id.short) of \(snap.paths) at \(snap.time) to \(target)")
                let start = Date()
                let ticker = Ticker(output: out) {
                    let p = restorer.progress
                    return (ProgressLine(elapsed: Date().timeIntervalSince(start), items: (p.filesDone, p.totalFiles, "files"),
                                         bytes: (p.bytesDone, p.totalBytes)),
                            ["message_type": "status", "files_restored": p.filesDone, "total_files": p.totalFiles,
                             "bytes_restored": p.bytesDone, "total_bytes": p.totalBytes, "seconds_elapsed": Date().timeIntervalSince(start)])
                }
                let subPath = sub.split(separator: "/").joined(separator: "/")
                do {
                    try await restorer.restore(node: node, snapshotPath: subPath.isEmpty ? "" : "/" + subPath, target: target)
                } catch { ticker.stop(out); throw error }
                ticker.stop(out)
                let p = restorer.progress
                let errors = restorer.errors
                for e in errors { out.warn("error: \(e.path): \(e.message)") }
                out.info("restored \(p.filesDone) files, \(formatBytes(p.bytesDone)) in \(formatDuration(Date().timeIntervalSince(start)))\(p.filesSkipped > 0 ? ", \(p.filesSkipped) skipped" : "")\(verify ? ", \(p.filesVerified) verified" : ""); \(p.packReads) pack reads")
                out.emit(["message_type": "summary", "files_restored": p.filesDone, "files_skipped": p.filesSkipped,
                          "files_verified": p.filesVerified, "bytes_restored": p.bytesDone, "total_files": p.totalFiles,
                          "seconds_elapsed": Date().timeIntervalSince(start), "error_count": errors.count, "pack_reads": p.packReads,
                          "errors": errors.map { ["path": $0.path, "message": $0.message] }])
                return errors.isEmpty ? 0 : ExitStatus.partial
            }
        }
    }
}

struct DumpCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dump", abstract: "Write a file from a snapshot to stdout (a directory as tar).", discussion: Examples.dump)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var filter: FilterOptions
    @Argument(help: "Snapshot ID, prefix or latest.") var snapshot: String
    @Argument(help: "Path of a file (written as is) or directory (written as tar) inside the snapshot.") var path: String

    func run() async throws {
        try await runCommand(global) {
            let repo = try await global.open()
            return try await withRepositoryLock(repo, .shared, "dump", readOnly: global) {
            try await repo.loadIndex()
            let (id, snap) = try await repo.findSnapshot(snapshot, filter: filter.filter)
            let node = try await Restorer.resolve(repo: repo, tree: snap.tree, subpath: path, snapshot: (id, snap))
            let w = StdoutWriter()
            if node.type == .file {
                try await writeContent(repo, node, path: path, to: w)
            } else if node.type == .dir {
                let tar = TarWriter(out: w)
                let base = node.name.isEmpty ? "" : node.nameString
                if !base.isEmpty { try tar.header(path: base + "/", node: node) }
                try await dumpTree(repo, node.subtree, prefix: base, tar: tar)
                try tar.finish()
            } else {
                throw LifeboatError.invalid("\(path) is a \(node.type.rawValue), not a file or directory")
            }
            for e in DumpCommand.problems.withLock({ $0 }) { global.output.warn("error: \(e)") }
            return DumpCommand.problems.withLock { $0.isEmpty } ? 0 : ExitStatus.partial
            }
        }
    }

    /// Problems met while dumping (damaged data, unsafe names): reported at the end, exit code 3.
    static let problems = Mutex<[String]>([])

    /// Writes exactly `node.size` bytes: the file's blobs in order, a damaged blob as zeros of its length (so
    /// that a tar stream stays in step with the sizes in its headers), cut or padded to the recorded size.
    func writeContent(_ repo: Repository, _ node: Node, path: String, to w: StdoutWriter) async throws {
        var left = node.size
        for id in node.content ?? [] where left > 0 {
            var data: [UInt8]
            do { data = try await repo.loadBlob(.data, id) } catch {
                DumpCommand.problems.withLock { $0.append("\(path): \(error)") }
                let len = repo.index.lookup(id, type: .data).map { UInt64($0.blob.rawLength) } ?? left
                data = [UInt8](repeating: 0, count: Int(min(len, left, 1 << 30)))
            }
            if UInt64(data.count) > left { data.removeLast(data.count - Int(left)) }
            try w.write(data)
            left -= UInt64(data.count)
        }
        if left > 0 {
            DumpCommand.problems.withLock { $0.append("\(path): the stored content is \(left) bytes shorter than the recorded size; padded with zeros") }
            while left > 0 {
                let n = Int(min(left, 1 << 20))
                try w.write([UInt8](repeating: 0, count: n))
                left -= UInt64(n)
            }
        }
    }

    func dumpTree(_ repo: Repository, _ tree: ID?, prefix: String, tar: TarWriter) async throws {
        guard let tree else { return }
        let t: Tree
        do { t = try await repo.loadTree(tree) } catch {
            DumpCommand.problems.withLock { $0.append("\(prefix.isEmpty ? "/" : prefix): directory contents are damaged: \(error)") }
            return
        }
        for n in t.nodes {
            guard Node.isSafeName(n.name) else {
                DumpCommand.problems.withLock { $0.append("\(prefix)/\(n.nameString): an entry with an unsafe name is left out") }
                continue
            }
            let p = prefix.isEmpty ? n.nameString : prefix + "/" + n.nameString
            switch n.type {
            case .dir:
                try tar.header(path: p + "/", node: n)
                try await dumpTree(repo, n.subtree, prefix: p, tar: tar)
            case .file:
                try tar.header(path: p, node: n)
                try await writeContent(repo, n, path: p, to: tar.out)
                try tar.pad(n.size)
            default:
                try tar.header(path: p, node: n)
            }
        }
    }
}

final class StdoutWriter {
    func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { buf in
            var done = 0
            while done < buf.count {
                let n = Glibc.write(1, buf.baseAddress! + done, buf.count - done)
                if n < 0 { if errno == EINTR { continue }; throw LifeboatError(.io, "cannot write to standard output") }
                done += n
            }
        }
    }
}

/// A POSIX tar (ustar with pax headers for long names and large files).
final class TarWriter {
    let out: StdoutWriter
    init(out: StdoutWriter) { self.out = out }

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

    func header(path: String, node n: Node) throws {
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

    func pad(_ size: UInt64) throws {
        let r = Int(size % 512)
        if r != 0 { try out.write([UInt8](repeating: 0, count: 512 - r)) }
    }

    func finish() throws { try out.write([UInt8](repeating: 0, count: 1024)) }
}
