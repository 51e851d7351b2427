import Foundation
import LifeboatCore

/// The kinds of object a repository stores. The names are the folder names of the layout
/// (and of the restic REST protocol, so later backends can speak it).
public enum ObjectType: String, Sendable, CaseIterable, Codable {
    case config, keys, data, index, snapshots, locks
}

/// One stored object: its type and name (64 hex digits, or `config`).
public struct Handle: Hashable, Sendable, CustomStringConvertible {
    public var type: ObjectType
    public var name: String
    public init(_ type: ObjectType, _ name: String) { self.type = type; self.name = name }
    public static let config = Handle(.config, "config")
    public var description: String { type == .config ? "config" : "\(type.rawValue)/\(name)" }
}

public struct ObjectInfo: Sendable, Equatable {
    public var name: String
    public var size: Int
    public init(name: String, size: Int) { self.name = name; self.size = size }
}

/// A classified storage error. Whether an operation is retried is decided from `kind` in one place
/// (a retrying decorator), never in the backends themselves.
public struct StorageError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The object does not exist.
        case notFound
        /// The requested byte range lies outside the object.
        case invalidRange
        /// Retrying cannot help (permissions, bad request, full disk).
        case permanent
        /// Retrying may help (timeouts, resets, 5xx).
        case transient
    }
    public var kind: Kind
    public var message: String
    public init(_ kind: Kind, _ message: String) { self.kind = kind; self.message = message }
    public var description: String { message }
}

/// Where a repository's objects live.
///
/// Contract, for every implementation:
/// - `write` is atomic: readers see either no object or the whole object, never a part, even if
///   the writer crashes. When `write` returns, the object is durable. Writing a name that exists
///   replaces it (objects are content-addressed, so the bytes are the same except for `locks`).
/// - After `write` returns, `stat`, `read` and `list` see the object (read-after-write).
/// - `read` with a range returns exactly those bytes or throws `.invalidRange`; a missing object throws `.notFound`.
/// - `list` returns every complete object of a type, in no particular order, without temporary files.
/// - `delete` of a missing object throws `.notFound`.
/// - All methods may be called concurrently from many tasks.
public protocol Backend: Sendable {
    /// A human-readable location, without credentials (for messages).
    var location: String { get }
    /// Prepares an empty repository location (folders, bucket); idempotent. Called by `init` only.
    func create() async throws
    /// How many pack uploads may usefully run at once: 1 for a local disk (parallel fsyncs only
    /// contend), more for network sites where each request waits on round trips.
    var writeConcurrency: Int { get }
    func list(_ type: ObjectType) async throws -> [ObjectInfo]
    func stat(_ handle: Handle) async throws -> ObjectInfo
    func read(_ handle: Handle, range: Range<Int>?) async throws -> Data
    func write(_ handle: Handle, data: Data) async throws
    func delete(_ handle: Handle) async throws
}

extension Backend {
    public func create() async throws {}
    public var writeConcurrency: Int { 1 }

    public func read(_ handle: Handle) async throws -> Data { try await read(handle, range: nil) }

    public func exists(_ handle: Handle) async throws -> Bool {
        do { _ = try await stat(handle); return true } catch let e as StorageError where e.kind == .notFound { return false }
    }
}
