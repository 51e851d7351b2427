import Foundation
import Testing
import LifeboatCore
import LifeboatCrypto
import LifeboatRepository
import LifeboatStorage
@testable import LifeboatSnapshot

func tempDir(_ tag: String) -> String {
    let d = FileManager.default.temporaryDirectory.appendingPathComponent("lb-\(tag)-\(UUID().uuidString)").path
    try! FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}

@Suite struct RestoreSafetyTests {
    /// A crafted snapshot with hostile names never makes restore write outside its target.
    @Test func hostileNamesStayInsideTarget() async throws {
        let repo = try await Repository.initialize(backend: MemoryBackend(), password: "pw", kdf: ScryptParameters(n: 1024, r: 8, p: 1))
        let base = tempDir("hostile")
        defer { try? FileManager.default.removeItem(atPath: base) }
        let target = base + "/target"
        let payload = try await repo.saveBlob(.data, Array("pwned".utf8)).id
        func file(_ name: [UInt8]) -> Node {
            var n = Node(name: name, type: .file); n.content = [payload]; n.size = 5; n.mode = 0o644; return n
        }
        var link = Node(name: Array("escape".utf8), type: .symlink)
        link.linkTarget = Array(base.utf8)
        var viaLink = Node(name: Array("escape".utf8), type: .dir)  // a second "escape" entry: a dir through the symlink
        viaLink.mode = 0o755
        viaLink.subtree = try await repo.saveTree(Tree(nodes: [file(Array("through-link".utf8))])).id
        let hostile: [Node] = [file(Array("..".utf8)), file(Array("../outside".utf8)), file(Array("/etc-like".utf8)),
                               file(Array("a/b".utf8)), file([0x61, 0x00, 0x62]), file([]), file(Array(".".utf8)),
                               file(Array("fine".utf8)), link, viaLink]
        var root = Node(name: [], type: .dir)
        root.subtree = try await repo.saveTree(Tree(nodes: hostile)).id
        try await repo.flush()
        let restorer = Restorer(repository: repo, options: RestoreOptions())
        try await restorer.restore(node: root, snapshotPath: "", target: target)
        let outside = try FileManager.default.contentsOfDirectory(atPath: base)
        #expect(outside == ["target"], "nothing created beside the target: \(outside)")
        #expect(FileManager.default.fileExists(atPath: target + "/fine"))
        #expect(restorer.errors.count >= 6, "each hostile name is reported: \(restorer.errors.map(\.path))")
        // The second "escape" entry replaced the symlink with a real directory instead of following it.
        var isDir: ObjCBool = false
        #expect(FileManager.default.fileExists(atPath: target + "/escape/through-link", isDirectory: &isDir))
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: target + "/escape")) == nil)
    }
}

@Suite struct ArchiverTests {
    @Test func sameDirectorySameTreeID() async throws {
        let repo = try await Repository.initialize(backend: MemoryBackend(), password: "pw", kdf: ScryptParameters(n: 1024, r: 8, p: 1))
        let src = tempDir("arch")
        defer { try? FileManager.default.removeItem(atPath: src) }
        try Data("x".utf8).write(to: URL(fileURLWithPath: src + "/a"))
        var o = BackupOptions(); o.paths = [src]
        let r1 = try await Archiver(repository: repo, options: o).run()
        let r2 = try await Archiver(repository: repo, options: o).run()
        // The source directory's subtree is identical (the parents of a temp dir change as other tests run).
        let n1 = try await Restorer.resolve(repo: repo, tree: r1.snapshot.tree, subpath: src)
        let n2 = try await Restorer.resolve(repo: repo, tree: r2.snapshot.tree, subpath: src)
        #expect(n1.subtree != nil && n1.subtree == n2.subtree)
        #expect(r1.snapshotID != nil && r1.snapshotID != r2.snapshotID)
    }

    @Test func forgetPlanGroupsByHostAndPaths() {
        func snap(_ host: String, _ t: String) -> (id: ID, snapshot: Snapshot) {
            (ID(bytes: Seal.randomBytes(32)), Snapshot(time: Timestamp.parse(t)!, tree: .zero, paths: ["/p"], hostname: host))
        }
        let snaps = [snap("a", "2024-01-01T00:00:00Z"), snap("a", "2024-01-02T00:00:00Z"), snap("b", "2024-01-01T00:00:00Z")]
        let groups = Forget.plan(snaps, policy: RetentionPolicy(last: 1), groupBy: GroupBy(), timeZone: TimeZone(identifier: "UTC")!)
        #expect(groups.count == 2)
        #expect(groups[0].keep.count == 1 && groups[0].remove.count == 1)
        #expect(groups[0].keep[0].snapshot.time.hasPrefix("2024-01-02"))
        #expect(groups[1].keep.count == 1 && groups[1].remove.isEmpty)
    }
}
