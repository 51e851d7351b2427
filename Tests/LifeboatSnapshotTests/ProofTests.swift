import Foundation
import Testing
import LifeboatCore
import LifeboatCrypto
import LifeboatRepository
import LifeboatStorage
@testable import LifeboatSnapshot

/// The mass-change detector and the verification of restored trees, on real archives of real folders.
@Suite struct ProofTests {
    func repo() async throws -> Repository {
        try await Repository.initialize(backend: MemoryBackend(), password: "pw", kdf: ScryptParameters(n: 1024, r: 8, p: 1))
    }
    func backup(_ repo: Repository, _ path: String, parent: ID? = nil) async throws -> (ID, Snapshot) {
        var o = BackupOptions()
        o.paths = [path]
        o.parent = parent
        let r = try await Archiver(repository: repo, options: o).run()
        return (r.snapshotID!, r.snapshot)
    }
    func text(_ i: Int) -> Data { Data((0..<200).map { "line \($0) of file \(i): nothing random here\n" }.joined().utf8) }

    @Test func entropyOfOrdinaryAndRandomBytes() {
        #expect(Entropy.bitsPerByte([UInt8](repeating: 7, count: 4096)) == 0)
        #expect(Entropy.bitsPerByte([UInt8]("the quick brown fox jumps over the lazy dog ".utf8)) < 5)
        let random = (0..<65536).map { _ in UInt8.random(in: 0...255) }
        #expect(Entropy.bitsPerByte(random) > 7.9)
        #expect(Entropy.bitsPerByte([UInt8]()) == 0)
    }

    @Test func thresholdsJudge() {
        var r = MassChangeReport()
        r.parentFiles = 100; r.changed = 60; r.sampled = 10; r.becameRandom = 9
        r.judge(MassChangeThresholds())
        #expect(r.suspicious)
        r.changed = 5
        r.judge(MassChangeThresholds())
        #expect(!r.suspicious, "5% changed is ordinary")
        r.changed = 60; r.becameRandom = 1
        r.judge(MassChangeThresholds())
        #expect(!r.suspicious, "a mass rewrite that stays text is not ransomware")
        r.parentFiles = 10; r.changed = 10; r.becameRandom = 10
        r.judge(MassChangeThresholds())
        #expect(!r.suspicious, "below min_files nothing is judged")
        // Files replaced under new names (renamed .enc copies, originals deleted) count as changed.
        var renamed = MassChangeReport()
        renamed.parentFiles = 40; renamed.added = 40; renamed.removed = 40; renamed.sampled = 40; renamed.becameRandom = 40
        renamed.judge(MassChangeThresholds())
        #expect(renamed.suspicious && renamed.changedShare == 1)
    }

    @Test func detectorFlagsEncryptionNotAnEdit() async throws {
        let repo = try await repo()
        let dir = tempDir("mass")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for i in 0..<30 { try text(i).write(to: URL(fileURLWithPath: "\(dir)/f\(i).txt")) }
        let (id1, s1) = try await backup(repo, dir)
        // An ordinary change: two files edited, one added.
        try (text(0) + Data("edited\n".utf8)).write(to: URL(fileURLWithPath: "\(dir)/f0.txt"))
        try (text(1) + Data("edited\n".utf8)).write(to: URL(fileURLWithPath: "\(dir)/f1.txt"))
        try text(99).write(to: URL(fileURLWithPath: "\(dir)/new.txt"))
        let (id2, s2) = try await backup(repo, dir, parent: id1)
        let ordinary = try await MassChangeDetector.compare(repo, parent: s1, current: s2, thresholds: MassChangeThresholds())
        #expect(ordinary.changed == 2 && ordinary.added == 1 && ordinary.parentFiles == 30)
        #expect(!ordinary.suspicious, "\(ordinary.description)")
        // Ransomware: every file overwritten with random bytes of its size.
        for i in 0..<30 {
            let n = text(i).count
            try Data((0..<n).map { _ in UInt8.random(in: 0...255) }).write(to: URL(fileURLWithPath: "\(dir)/f\(i).txt"))
        }
        let (_, s3) = try await backup(repo, dir, parent: id2)
        let encrypted = try await MassChangeDetector.compare(repo, parent: s2, current: s3, thresholds: MassChangeThresholds())
        #expect(encrypted.suspicious, "\(encrypted.description)")
        #expect(encrypted.changed == 30 && encrypted.becameRandom == encrypted.sampled && encrypted.sampled > 0)
    }

    @Test func verifierNamesEveryDifference() async throws {
        let repo = try await repo()
        let src = tempDir("verify-src"), dst = tempDir("verify-dst")
        defer { try? FileManager.default.removeItem(atPath: src); try? FileManager.default.removeItem(atPath: dst) }
        try FileManager.default.createDirectory(atPath: src + "/d", withIntermediateDirectories: true)
        try text(1).write(to: URL(fileURLWithPath: src + "/d/a.txt"))
        try Data((0..<300_000).map { _ in UInt8.random(in: 0...255) }).write(to: URL(fileURLWithPath: src + "/d/b.bin"))
        try FileManager.default.createSymbolicLink(atPath: src + "/d/link", withDestinationPath: "a.txt")
        let (_, snap) = try await backup(repo, src)
        try await repo.flush()
        let root = try await Restorer.resolve(repo: repo, tree: snap.tree, subpath: "/")
        let restorer = Restorer(repository: repo, options: RestoreOptions())
        try await restorer.restore(node: root, snapshotPath: "/", target: dst)
        let clean = try await RestoreVerifier(repository: repo).verify(node: root, target: dst)
        #expect(clean.ok, "\(clean.problems)")
        #expect(clean.files == 2 && clean.bytes > 300_000)
        // Tampered: one byte of content (same size and times), a mode, a link target, a missing file.
        let base = dst + src + "/d"
        var b = try Data(contentsOf: URL(fileURLWithPath: base + "/b.bin"))
        let attrs = try FileManager.default.attributesOfItem(atPath: base + "/b.bin")
        b[150_000] ^= 1
        try b.write(to: URL(fileURLWithPath: base + "/b.bin"))
        try FileManager.default.setAttributes([.modificationDate: attrs[.modificationDate]!], ofItemAtPath: base + "/b.bin")
        chmod(base + "/a.txt", 0o600)
        try FileManager.default.removeItem(atPath: base + "/link")
        try FileManager.default.createSymbolicLink(atPath: base + "/link", withDestinationPath: "/etc/passwd")
        let bad = try await RestoreVerifier(repository: repo).verify(node: root, target: dst)
        let text = bad.problems.joined(separator: "\n")
        #expect(!bad.ok)
        #expect(text.contains("b.bin: content differs from the snapshot at offset"), "\(text)")
        #expect(text.contains("a.txt: mode 600, the snapshot has"), "\(text)")
        #expect(text.contains("link: symlink target differs"), "\(text)")
        try FileManager.default.removeItem(atPath: base + "/a.txt")
        let missing = try await RestoreVerifier(repository: repo).verify(node: root, target: dst)
        #expect(missing.problems.contains { $0.contains("a.txt: missing") }, "\(missing.problems)")
    }
}
