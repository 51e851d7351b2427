import Foundation
import LifeboatCore
import LifeboatRepository

/// The mass-change detector: compares a new snapshot with its parent, counting the files whose content changed
/// or that were replaced, and sampling the changed content (the first blob of up to `sampleLimit` files, old and
/// new) for bytes that turned random-looking. Only subtrees that differ are read.
public enum MassChangeDetector {
    /// A sample shorter than this says nothing about randomness (the entropy of n bytes is at most log2 n).
    static let minimumSample = 1024

    public static func compare(_ repo: Repository, parent: Snapshot, current: Snapshot, thresholds: MassChangeThresholds,
                               sampleLimit: Int = 256) async throws -> MassChangeReport {
        var report = MassChangeReport()
        report.files = current.summary?.totalFilesProcessed ?? 0
        var parentFiles = parent.summary?.totalFilesProcessed
        var samples: [(old: ID?, new: ID)] = []
        var seen = 0
        var rng = SystemRandomNumberGenerator()
        // Reservoir sampling: every changed file has the same chance of being read, wherever it is in the tree.
        func offer(_ old: ID?, _ new: ID) {
            seen += 1
            if samples.count < sampleLimit { samples.append((old, new)) } else {
                let j = Int.random(in: 0..<seen, using: &rng)
                if j < sampleLimit { samples[j] = (old, new) }
            }
        }
        var countedParent = 0
        func countFiles(_ tree: ID?) async throws -> Int {
            guard let tree else { return 0 }
            var n = 0
            for node in try await repo.loadTree(tree).nodes {
                if node.type == .file { n += 1 } else if node.type == .dir { n += try await countFiles(node.subtree) }
            }
            return n
        }
        func walk(_ ta: ID?, _ tb: ID?, depth: Int) async throws {
            if ta == tb { return }
            guard depth < 512 else { throw LifeboatError(.corrupt, "the snapshot's trees are nested deeper than 512 levels") }
            let na = try await ta.asyncMap { try await repo.loadTree($0).nodes } ?? []
            let nb = try await tb.asyncMap { try await repo.loadTree($0).nodes } ?? []
            let ma = Dictionary(na.map { ($0.name, $0) }, uniquingKeysWith: { x, _ in x })
            let mb = Dictionary(nb.map { ($0.name, $0) }, uniquingKeysWith: { x, _ in x })
            for (name, y) in mb {
                let x = ma[name]
                if y.type == .dir {
                    try await walk(x?.type == .dir ? x?.subtree : nil, y.subtree, depth: depth + 1)
                    if let x, x.type == .file { report.removed += 1 }
                    continue
                }
                guard y.type == .file else { continue }
                switch x {
                case let x? where x.type == .file:
                    if x.content != y.content {
                        report.changed += 1
                        if let first = y.content?.first, y.size >= UInt64(minimumSample) { offer(x.content?.first, first) }
                    }
                default:
                    report.added += 1
                    if let first = y.content?.first, y.size >= UInt64(minimumSample) { offer(nil, first) }
                    if let x, x.type == .dir { report.removed += try await countFiles(x.subtree) }
                }
            }
            for (name, x) in ma where mb[name] == nil {
                if x.type == .file { report.removed += 1 } else if x.type == .dir { report.removed += try await countFiles(x.subtree) }
            }
        }
        try await walk(parent.tree, current.tree, depth: 0)
        if parentFiles == nil {
            countedParent = try await countFiles(parent.tree)
            parentFiles = countedParent
        }
        report.parentFiles = parentFiles ?? 0
        for s in samples {
            let new = try await repo.loadBlob(.data, s.new)
            guard new.count >= minimumSample else { continue }
            report.sampled += 1
            let bitsNew = Entropy.bitsPerByte(new.prefix(65536))
            guard bitsNew >= thresholds.entropyBits else { continue }
            // Content that was random-looking before (a compressed archive rewritten) is not a sign.
            if let old = s.old, let o = try? await repo.loadBlob(.data, old), o.count >= minimumSample,
               Entropy.bitsPerByte(o.prefix(65536)) >= thresholds.entropyBits {
                continue
            }
            report.becameRandom += 1
        }
        report.judge(thresholds)
        return report
    }
}
