import Foundation
import LifeboatStorage

/// A failed conformance expectation.
public struct ConformanceFailure: Error, CustomStringConvertible {
    public var description: String
}

/// The backend contract, as one suite that every backend must pass (see `Backend`'s doc comment).
/// It needs an empty backend and leaves it empty.
public enum BackendConformance {
    static func expect(_ cond: Bool, _ what: String) throws {
        if !cond { throw ConformanceFailure(description: what) }
    }

    static func expectNotFound(_ what: String, _ body: () async throws -> Void) async throws {
        do {
            try await body()
            throw ConformanceFailure(description: "\(what): expected notFound, got success")
        } catch let e as StorageError {
            try expect(e.kind == .notFound, "\(what): expected notFound, got \(e.kind)")
        }
    }

    public static func run(_ b: any Backend) async throws {
        let name = String(repeating: "ab", count: 32)
        let name2 = String(repeating: "cd", count: 32)
        let payload = Data((0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })

        for type in ObjectType.allCases where type != .config {
            try expect(try await b.list(type).isEmpty, "a new backend lists no \(type.rawValue)")
        }
        try await expectNotFound("stat of a missing object") { _ = try await b.stat(Handle(.data, name)) }
        try await expectNotFound("read of a missing object") { _ = try await b.read(Handle(.data, name)) }
        try await expectNotFound("delete of a missing object") { try await b.delete(Handle(.data, name)) }
        try expect(try await !b.exists(Handle.config), "no config yet")

        // Write, read back, ranges.
        for type in ObjectType.allCases {
            let h = type == .config ? Handle.config : Handle(type, name)
            try await b.write(h, data: payload)
            try expect(try await b.read(h) == payload, "\(h): read returns what was written")
            try expect(try await b.stat(h).size == payload.count, "\(h): stat gives the size")
            try expect(try await b.read(h, range: 10..<20) == payload.subdata(in: 10..<20), "\(h): ranged read")
            try expect(try await b.read(h, range: 0..<0) == Data(), "\(h): empty range")
            do {
                _ = try await b.read(h, range: payload.count - 5..<payload.count + 5)
                throw ConformanceFailure(description: "\(h): a range past the end must fail")
            } catch let e as StorageError {
                try expect(e.kind == .invalidRange, "\(h): a range past the end is invalidRange, got \(e.kind)")
            }
            let listed = try await b.list(type)
            try expect(listed == [ObjectInfo(name: h.name, size: payload.count)], "\(h): listed once with its size, got \(listed)")
        }

        // Overwrite replaces.
        let h = Handle(.locks, name2)
        try await b.write(h, data: Data([1, 2, 3]))
        try await b.write(h, data: Data([4, 5]))
        try expect(try await b.read(h) == Data([4, 5]), "overwrite replaces the object")

        // Concurrent writes of distinct objects all land.
        try await withThrowingTaskGroup(of: Void.self) { g in
            for i in 0..<32 {
                g.addTask {
                    let n = String(format: "%064x", i + 1000)
                    try await b.write(Handle(.data, n), data: Data(repeating: UInt8(i), count: 1000 + i))
                }
            }
            try await g.waitForAll()
        }
        let packs = try await b.list(.data)
        try expect(packs.count == 33, "33 data objects after concurrent writes, got \(packs.count)")
        for i in 0..<32 {
            let n = String(format: "%064x", i + 1000)
            try expect(try await b.read(Handle(.data, n)) == Data(repeating: UInt8(i), count: 1000 + i), "concurrent write \(i)")
            try await b.delete(Handle(.data, n))
        }

        // Delete everything; the backend ends empty.
        for type in ObjectType.allCases {
            for o in try await b.list(type) { try await b.delete(Handle(type, o.name)) }
            try expect(try await b.list(type).isEmpty, "\(type.rawValue) is empty after deletes")
        }
        try await expectNotFound("read after delete") { _ = try await b.read(Handle(.data, name)) }
    }
}
