import Foundation
import Glibc
import LifeboatCore
import LifeboatCrypto
import LifeboatStorage
import Synchronization

/// A local cache of a remote repository's metadata: index files, snapshots, and the packs that hold
/// trees. With it, `snapshots`, `ls`, `diff`, incremental backups and `check` without `--read-data`
/// download each of these objects once, not on every run.
///
/// Every object is named by the SHA-256 of its bytes, so a cached copy is verified against its name
/// the first time a process uses it; a copy that does not match is thrown away and fetched again.
/// Listings always come from the remote site (they are what tells which objects exist), and a listing
/// evicts cached objects of that type that are gone. Writes go to the site first, then to the cache.
/// The cache is a plain folder: deleting it at any time loses nothing.
///
/// Layout: `DIR/<SHA-256 of the location, 16 hex digits>/{index,snapshots,data}/NAME`.
public final class CachingBackend: Backend, Sendable {
    public let inner: any Backend
    public let directory: String
    /// Packs whose reads are cached (the tree packs); set by `Repository.loadIndex`.
    let cachedPacks = Mutex<Set<String>>([])
    /// Names verified by this process.
    let verified = Mutex<Set<String>>([])
    let counters = Mutex<(hits: Int, misses: Int)>((0, 0))

    public init(_ inner: any Backend, cacheRoot: String) {
        self.inner = inner
        let key = sha256ID(Data(inner.location.utf8)).hex.prefix(16)
        directory = "\(cacheRoot)/\(key)"
    }

    /// `LIFEBOAT_CACHE_DIR`, else `$XDG_CACHE_HOME/lifeboat`, else `~/.cache/lifeboat`.
    public static func defaultRoot(environment env: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let d = env["LIFEBOAT_CACHE_DIR"], !d.isEmpty { return d }
        if let x = env["XDG_CACHE_HOME"], !x.isEmpty { return "\(x)/lifeboat" }
        return "\(env["HOME"] ?? NSHomeDirectory())/.cache/lifeboat"
    }

    public var location: String { inner.location }
    public var writeConcurrency: Int { inner.writeConcurrency }
    public var stats: (hits: Int, misses: Int) { counters.withLock { $0 } }

    public func setCachedPacks(_ names: Set<String>) { cachedPacks.withLock { $0 = names } }

    /// Keeps a copy of a tree pack this process has just written.
    public func storeTreePack(_ name: String, _ data: Data) {
        let h = Handle(.data, name)
        store(h, data)
        cachedPacks.withLock { _ = $0.insert(name) }
        verified.withLock { _ = $0.insert(h.description) }
    }

    func cacheable(_ h: Handle) -> Bool {
        switch h.type {
        case .index, .snapshots: return true
        case .data: return cachedPacks.withLock { $0.contains(h.name) }
        default: return false
        }
    }

    func path(_ h: Handle) -> String { "\(directory)/\(h.type.rawValue)/\(h.name)" }

    public func create() async throws { try await inner.create() }

    public func list(_ type: ObjectType) async throws -> [ObjectInfo] {
        let items = try await inner.list(type)
        if type == .index || type == .snapshots || type == .data {
            let present = Set(items.map(\.name))
            let dir = "\(directory)/\(type.rawValue)"
            for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where !present.contains(name) {
                unlink("\(dir)/\(name)")
            }
        }
        return items
    }

    public func stat(_ handle: Handle) async throws -> ObjectInfo { try await inner.stat(handle) }

    public func read(_ handle: Handle, range: Range<Int>?) async throws -> Data {
        guard cacheable(handle) else { return try await inner.read(handle, range: range) }
        // A ranged read of a copy verified in this process reads just that range: a restore loads thousands of
        // trees from a few cached tree packs, and reading a whole pack per tree cost seconds of system time.
        if let range, verified.withLock({ $0.contains(handle.description) }), let part = cachedRange(handle, range) {
            counters.withLock { $0.hits += 1 }
            return part
        }
        if let data = cached(handle) {
            counters.withLock { $0.hits += 1 }
            return try slice(data, range, handle)
        }
        counters.withLock { $0.misses += 1 }
        let whole = try await inner.read(handle, range: nil)
        if sha256ID(whole).hex == handle.name {
            store(handle, whole)
            verified.withLock { _ = $0.insert(handle.description) }
        }
        return try slice(whole, range, handle)
    }

    func slice(_ data: Data, _ range: Range<Int>?, _ h: Handle) throws -> Data {
        guard let range else { return data }
        guard range.lowerBound >= 0, range.upperBound <= data.count else {
            throw StorageError(.invalidRange, "\(h): range \(range) is outside its \(data.count) bytes")
        }
        return data.subdata(in: range)
    }

    /// `range` of a cached copy (already verified in this process), or nil if the file is gone or too short.
    func cachedRange(_ h: Handle, _ range: Range<Int>) -> Data? {
        guard range.lowerBound >= 0, !range.isEmpty else { return nil }
        let fd = open(path(h), O_RDONLY | O_CLOEXEC)
        if fd < 0 { return nil }
        defer { close(fd) }
        var data = Data(count: range.count)
        let ok = data.withUnsafeMutableBytes { buf -> Bool in
            var done = 0
            while done < range.count {
                let n = pread(fd, buf.baseAddress! + done, range.count - done, off_t(range.lowerBound + done))
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return false }
                done += n
            }
            return true
        }
        return ok ? data : nil
    }

    /// The cached copy, if there is one that matches its name.
    func cached(_ h: Handle) -> Data? {
        let p = path(h)
        guard let data = FileManager.default.contents(atPath: p) else { return nil }
        if verified.withLock({ $0.contains(h.description) }) { return data }
        guard sha256ID(data).hex == h.name else {
            unlink(p)
            return nil
        }
        verified.withLock { _ = $0.insert(h.description) }
        return data
    }

    /// Best effort: a cache that cannot be written only costs downloads.
    func store(_ h: Handle, _ data: Data) {
        let dir = "\(directory)/\(h.type.rawValue)"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let tmp = "\(dir)/.tmp-\(h.name.prefix(16))-\(UInt64.random(in: 0...UInt64.max))"
        guard FileManager.default.createFile(atPath: tmp, contents: data, attributes: [.posixPermissions: 0o600]) else { return }
        if rename(tmp, path(h)) != 0 { unlink(tmp) }
    }

    public func write(_ handle: Handle, data: Data) async throws {
        try await inner.write(handle, data: data)
        if handle.type == .index || handle.type == .snapshots { store(handle, data) }
    }

    public func delete(_ handle: Handle) async throws {
        unlink(path(handle))
        try await inner.delete(handle)
    }
}
