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
