import Foundation
import Synchronization

/// An in-memory backend for tests. Fulfils the whole `Backend` contract.
public final class MemoryBackend: Backend {
    private let objects = Mutex<[Handle: Data]>([:])
    public let location = "memory:"

    public init() {}

    public func list(_ type: ObjectType) async throws -> [ObjectInfo] {
        objects.withLock { $0.filter { $0.key.type == type }.map { ObjectInfo(name: $0.key.name, size: $0.value.count) } }
    }

    public func stat(_ handle: Handle) async throws -> ObjectInfo {
        guard let d = objects.withLock({ $0[handle] }) else { throw StorageError(.notFound, "\(handle) does not exist") }
        return ObjectInfo(name: handle.name, size: d.count)
    }

    public func read(_ handle: Handle, range: Range<Int>?) async throws -> Data {
        guard let d = objects.withLock({ $0[handle] }) else { throw StorageError(.notFound, "\(handle) does not exist") }
        guard let range else { return d }
        guard range.lowerBound >= 0, range.upperBound <= d.count else {
            throw StorageError(.invalidRange, "\(handle): range \(range) is outside its \(d.count) bytes")
        }
        return d.subdata(in: range)
    }

    public func write(_ handle: Handle, data: Data) async throws {
        objects.withLock { $0[handle] = data }
    }

    public func delete(_ handle: Handle) async throws {
        let removed = objects.withLock { $0.removeValue(forKey: handle) }
        if removed == nil { throw StorageError(.notFound, "\(handle) does not exist") }
    }

    /// Test hook: change stored bytes behind the repository's back.
    public func tamper(_ handle: Handle, _ change: (inout Data) -> Void) {
        objects.withLock { if var d = $0[handle] { change(&d); $0[handle] = d } }
    }
}
