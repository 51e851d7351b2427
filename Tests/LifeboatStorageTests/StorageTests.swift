import Foundation
import Testing
import LifeboatStorage
import LifeboatTestSupport

@Suite struct BackendConformanceTests {
    @Test func memoryBackend() async throws {
        try await BackendConformance.run(MemoryBackend())
    }

    @Test func localBackend() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lb-conf-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let b = LocalBackend(path: dir)
        try b.createLayout()
        try await BackendConformance.run(b)
        // No temporary files are left behind.
        let leftovers = FileManager.default.enumerator(atPath: dir)!.compactMap { $0 as? String }.filter { $0.contains(".tmp-") }
        #expect(leftovers.isEmpty)
    }

    @Test func throttledBackend() async throws {
        // The decorator passes the contract (with limits high enough not to slow the suite).
        try await BackendConformance.run(ThrottledBackend(MemoryBackend(), uploadKiBps: 1 << 20, downloadKiBps: 1 << 20))
    }

    @Test func rateLimiterHoldsTheAverageRate() {
        let r = RateLimiter(bytesPerSecond: 1000)
        let t0 = ContinuousClock.now
        // A burst of one second's worth is free; beyond it, each byte waits its turn.
        #expect(r.reserve(1000, now: t0) == .zero)
        #expect(r.reserve(500, now: t0) == .milliseconds(500))
        #expect(r.reserve(500, now: t0) == .milliseconds(1000))
        // Time pays the debt back: 1 s later the debt is 0 and 500 more wait 0.5 s.
        #expect(r.reserve(500, now: t0 + .seconds(1)) == .milliseconds(500))
        // A long pause refills no more than the burst.
        #expect(r.reserve(1000, now: t0 + .seconds(100)) == .zero)
        #expect(r.reserve(1, now: t0 + .seconds(100)) == .milliseconds(1))
    }

    @Test func localRejectsHostileNames() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lb-host-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let b = LocalBackend(path: dir)
        try b.createLayout()
        for name in ["../../etc/passwd", "ab/../cd", "", "ZZ"] {
            await #expect(throws: StorageError.self) { try await b.write(Handle(.snapshots, name), data: Data([1])) }
        }
    }
}

/// A backend that fails the first `failures` calls of each operation with a transient error.
final class FlakyBackend: Backend, @unchecked Sendable {
    let inner = MemoryBackend()
    let lock = NSLock()
    var remaining: Int
    var calls = 0
    init(failures: Int) { remaining = failures }
    var location: String { "flaky" }
    func trip() throws {
        lock.lock(); defer { lock.unlock() }
        calls += 1
        if remaining > 0 { remaining -= 1; throw StorageError(.transient, "injected") }
    }
    func list(_ type: ObjectType) async throws -> [ObjectInfo] { try trip(); return try await inner.list(type) }
    func stat(_ h: Handle) async throws -> ObjectInfo { try trip(); return try await inner.stat(h) }
    func read(_ h: Handle, range: Range<Int>?) async throws -> Data { try trip(); return try await inner.read(h, range: range) }
    func write(_ h: Handle, data: Data) async throws { try trip(); try await inner.write(h, data: data) }
    func delete(_ h: Handle) async throws { try await inner.delete(h); try trip() }
}

@Suite struct RetryTests {
    @Test func retriesTransientErrorsThenSucceeds() async throws {
        let flaky = FlakyBackend(failures: 2)
        let b = RetryingBackend(flaky, policy: RetryPolicy(attempts: 3, baseDelay: 0.001, maxDelay: 0.01))
        let h = Handle(.data, String(repeating: "ab", count: 32))
        try await b.write(h, data: Data([1, 2, 3]))
        #expect(flaky.calls == 3)
        #expect(try await b.list(.data).map(\.name) == [h.name])
        #expect(try await b.read(h) == Data([1, 2, 3]))
    }

    @Test func givesUpAfterTheLastAttempt() async throws {
        let flaky = FlakyBackend(failures: 10)
        let b = RetryingBackend(flaky, policy: RetryPolicy(attempts: 3, baseDelay: 0.001, maxDelay: 0.01))
        await #expect(throws: StorageError.self) { _ = try await b.list(.data) }
        #expect(flaky.calls == 3)
    }

    @Test func notFoundIsNotRetried() async throws {
        let flaky = FlakyBackend(failures: 0)
        let b = RetryingBackend(flaky, policy: RetryPolicy(attempts: 5, baseDelay: 0.001, maxDelay: 0.01))
        await #expect(throws: StorageError.self) { _ = try await b.stat(Handle(.data, String(repeating: "cd", count: 32))) }
        #expect(flaky.calls == 1)
    }

    @Test func deleteWhoseReplyWasLostCountsAsDone() async throws {
        // The first delete removes the object but reports a transient failure; the retry sees notFound.
        let flaky = FlakyBackend(failures: 0)
        let h = Handle(.data, String(repeating: "ef", count: 32))
        try await flaky.inner.write(h, data: Data([9]))
        flaky.remaining = 1
        let b = RetryingBackend(flaky, policy: RetryPolicy(attempts: 3, baseDelay: 0.001, maxDelay: 0.01))
        try await b.delete(h)
        #expect(try await b.list(.data).isEmpty)
    }
}
