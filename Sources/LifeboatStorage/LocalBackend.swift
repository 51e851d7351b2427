import Foundation
import Glibc

/// A repository in a local directory.
///
/// Layout: `config`, `keys/`, `index/`, `snapshots/`, `locks/`, and `data/XX/` where XX are the first
/// two hex digits of a pack's name. Writes go to a temporary file in the same folder, are fsynced,
/// renamed into place, and the folder is fsynced, so a crash leaves either nothing or the whole object.
public struct LocalBackend: Backend {
    public let root: String
    public var location: String { root }

    public init(path: String) {
        var p = path
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        root = p
    }

    public func create() async throws { try createLayout() }

    /// Creates the folder layout (idempotent).
    public func createLayout() throws {
        for dir in [root] + ObjectType.allCases.filter({ $0 != .config }).map({ "\(root)/\($0.rawValue)" }) {
            try LocalBackend.mkdirs(dir)
        }
        for i in 0..<256 {
            try LocalBackend.mkdirs("\(root)/data/\(String(format: "%02x", i))")
        }
    }

    static func mkdirs(_ path: String) throws {
        if mkdir(path, 0o700) != 0 && errno != EEXIST {
            let err = errno
            if err == ENOENT, let slash = path.lastIndex(of: "/"), slash != path.startIndex {
                try mkdirs(String(path[..<slash]))
                if mkdir(path, 0o700) == 0 || errno == EEXIST { return }
            }
            throw StorageError(.permanent, "cannot create \(path): \(String(cString: strerror(err)))")
        }
    }

    func dir(_ type: ObjectType, _ name: String) -> String {
        switch type {
        case .config: return root
        case .data: return "\(root)/data/\(name.prefix(2))"
        default: return "\(root)/\(type.rawValue)"
        }
    }

    func path(_ h: Handle) -> String {
        h.type == .config ? "\(root)/config" : "\(dir(h.type, h.name))/\(h.name)"
    }

    static func validName(_ h: Handle) -> Bool {
        if h.type == .config { return h.name == "config" }
        return !h.name.isEmpty && h.name.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) } && h.name.count >= 2
    }

    static func error(_ what: String, _ path: String, _ err: Int32) -> StorageError {
        let kind: StorageError.Kind = err == ENOENT ? .notFound : (err == EINTR || err == EAGAIN ? .transient : .permanent)
        return StorageError(kind, "\(what) \(path): \(String(cString: strerror(err)))")
    }

    public func list(_ type: ObjectType) async throws -> [ObjectInfo] {
        if type == .config {
            return (try? await stat(.config)).map { [$0] } ?? []
        }
        var dirs = ["\(root)/\(type.rawValue)"]
        if type == .data {
            dirs = (try? listDir("\(root)/data"))?.filter { $0.count == 2 }.map { "\(root)/data/\($0)" } ?? []
        }
        var out: [ObjectInfo] = []
        for d in dirs {
            let names: [String]
            do { names = try listDir(d) } catch let e as StorageError where e.kind == .notFound { continue }
            for n in names where !n.hasPrefix(".") {
                var st = Glibc.stat()
                if lstat("\(d)/\(n)", &st) == 0, (st.st_mode & S_IFMT) == S_IFREG {
                    out.append(ObjectInfo(name: n, size: Int(st.st_size)))
                }
            }
        }
        return out
    }

    func listDir(_ path: String) throws -> [String] {
        guard let d = opendir(path) else { throw LocalBackend.error("cannot list", path, errno) }
        defer { closedir(d) }
        var out: [String] = []
        while let e = readdir(d) {
            let name = withUnsafePointer(to: e.pointee.d_name) { ptr in
                ptr.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { out.append(name) }
        }
        return out
    }

    public func stat(_ handle: Handle) async throws -> ObjectInfo {
        guard LocalBackend.validName(handle) else { throw StorageError(.permanent, "invalid object name \(handle)") }
        var st = Glibc.stat()
        let p = path(handle)
        if lstat(p, &st) != 0 { throw LocalBackend.error("cannot stat", p, errno) }
        return ObjectInfo(name: handle.name, size: Int(st.st_size))
    }

    public func read(_ handle: Handle, range: Range<Int>?) async throws -> Data {
        guard LocalBackend.validName(handle) else { throw StorageError(.permanent, "invalid object name \(handle)") }
        let p = path(handle)
        let fd = open(p, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw LocalBackend.error("cannot open", p, errno) }
        defer { close(fd) }
        var st = Glibc.stat()
        if fstat(fd, &st) != 0 { throw LocalBackend.error("cannot stat", p, errno) }
        let size = Int(st.st_size)
        // No object Lifeboat writes is near 4 GiB (packs stop at 512 MiB): a larger whole-object read is a
        // planted (perhaps sparse) file, and allocating for it would fail.
        if range == nil && size > Int(UInt32.max) {
            throw StorageError(.permanent, "\(handle) is \(size) bytes, larger than any repository object: remove it")
        }
        let r = range ?? 0..<size
        guard r.lowerBound >= 0, r.upperBound <= size else {
            throw StorageError(.invalidRange, "\(handle): range \(r) is outside its \(size) bytes")
        }
        var data = Data(count: r.count)
        try data.withUnsafeMutableBytes { buf in
            var done = 0
            while done < r.count {
                let n = pread(fd, buf.baseAddress! + done, r.count - done, off_t(r.lowerBound + done))
                if n < 0 { if errno == EINTR { continue }; throw LocalBackend.error("cannot read", p, errno) }
                if n == 0 { throw StorageError(.invalidRange, "\(handle) was truncated while reading") }
                done += n
            }
        }
        return data
    }

    public func write(_ handle: Handle, data: Data) async throws {
        try await write(handle, replace: true) { sink in
            try data.withUnsafeBytes { try sink.write($0) }
        }
    }

    /// Where a streaming write puts its bytes.
    public final class Sink {
        let fd: Int32
        let path: String
        public private(set) var count = 0
        init(fd: Int32, path: String) { self.fd = fd; self.path = path }

        public func write(_ bytes: UnsafeRawBufferPointer) throws {
            var done = 0
            while done < bytes.count {
                let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
                if n < 0 { if errno == EINTR { continue }; throw LocalBackend.error("cannot write", path, errno) }
                done += n
            }
            count += bytes.count
        }
    }

    /// Writes an object from bytes that `produce` passes to the sink, with the same guarantees as
    /// `write(_:data:)`: a temporary file, fsync, rename, fsync of the folder. If `produce` throws,
    /// nothing is stored. With `replace == false` an existing object is kept and `.alreadyExists`-like
    /// `.permanent` error is thrown (the link is atomic, so two writers cannot both win).
    public func write(_ handle: Handle, replace: Bool, _ produce: (Sink) async throws -> Void) async throws {
        guard LocalBackend.validName(handle) else { throw StorageError(.permanent, "invalid object name \(handle)") }
        let d = dir(handle.type, handle.name)
        let final = path(handle)
        let tmp = "\(d)/.tmp-\(handle.name.prefix(16))-\(UInt64.random(in: 0...UInt64.max))"
        var fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if fd < 0 && errno == ENOENT {
            try LocalBackend.mkdirs(d)
            fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        }
        if fd < 0 { throw LocalBackend.error("cannot create", tmp, errno) }
        var open = true
        defer { if open { close(fd) }; unlink(tmp) }
        try await produce(Sink(fd: fd, path: tmp))
        if fsync(fd) != 0 { throw LocalBackend.error("cannot fsync", tmp, errno) }
        open = false
        if close(fd) != 0 { throw LocalBackend.error("cannot close", tmp, errno) }
        if replace {
            if rename(tmp, final) != 0 { throw LocalBackend.error("cannot rename into", final, errno) }
        } else if link(tmp, final) != 0 {
            let e = errno
            if e == EEXIST { throw StorageError(.permanent, "\(handle) already exists") }
            throw LocalBackend.error("cannot link into", final, e)
        }
        try LocalBackend.syncDir(d)
    }

    static func syncDir(_ d: String) throws {
        let dfd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd < 0 { throw LocalBackend.error("cannot open", d, errno) }
        defer { close(dfd) }
        if fsync(dfd) != 0 && errno != EINVAL { throw LocalBackend.error("cannot fsync", d, errno) }
    }

    public func delete(_ handle: Handle) async throws {
        guard LocalBackend.validName(handle) else { throw StorageError(.permanent, "invalid object name \(handle)") }
        let p = path(handle)
        if unlink(p) != 0 { throw LocalBackend.error("cannot delete", p, errno) }
        try? LocalBackend.syncDir(dir(handle.type, handle.name))
    }
}
