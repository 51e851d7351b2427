import Foundation
import LifeboatCore
import LifeboatCrypto
import LifeboatRepository
import LifeboatStorage
import Synchronization

public struct CheckOptions: Sendable {
    /// Read and verify pack data: nil (structure only), or a subset selector.
    public var readData: ReadDataSubset? = nil
    public init() {}
}

/// Which packs `check --read-data-subset` reads.
public enum ReadDataSubset: Sendable, Equatable {
    case all
    /// Part `n` of `total` (1-based), by the pack ID's first 32 bits (the first byte alone gave nothing to
    /// parts above 256).
    case part(Int, Int)
    /// A random percentage of the packs.
    case percent(Double)

    public init(parsing s: String) throws {
        if s.hasSuffix("%"), let p = Double(s.dropLast()), p > 0, p <= 100 { self = .percent(p); return }
        let parts = s.split(separator: "/")
        if parts.count == 2, let n = Int(parts[0]), let t = Int(parts[1]), t > 0, t <= 1 << 20, n >= 1, n <= t { self = .part(n, t); return }
        throw LifeboatError.invalid("invalid --read-data-subset \"\(s)\": use N/T (e.g. 1/5) or P% (e.g. 10%)")
    }

    func includes(_ pack: ID) -> Bool {
        switch self {
        case .all: return true
        case .part(let n, let t): return Int(pack.w0 >> 32) % t == n - 1
        case .percent(let p): return Double.random(in: 0..<100) < p
        }
    }
}

/// A problem `check` found.
public struct CheckIssue: Sendable, CustomStringConvertible {
    public enum Severity: String, Sendable { case error, warning }
    public var severity: Severity
    public var object: String
    public var message: String
    public var description: String { "\(severity.rawValue): \(object): \(message)" }
}

public struct CheckReport: Sendable {
    public var issues: [CheckIssue] = []
    /// Snapshots that reference damaged or missing data, with the short reason.
    public var damagedSnapshots: [ID: [String]] = [:]
    public var snapshots = 0, trees = 0, packs = 0, packsRead = 0, blobs = 0
    public var bytesRead: UInt64 = 0
    /// Blobs stored in more than one live pack (harmless; prune repacks them away).
    public var duplicateBlobs = 0
    public var errors: Int { issues.filter { $0.severity == .error }.count }
}

/// Verifies a repository: index, packs present, snapshots and trees readable, every referenced blob
/// indexed; with read-data, every pack's hash, header and every blob's authentication and keyed hash.
/// It names each damaged object and the snapshots that depend on it.
public final class Checker: Sendable {
    let repo: Repository
    let options: CheckOptions
    let progressState = Mutex((done: 0, total: 0))

    public init(repository: Repository, options: CheckOptions) {
        repo = repository
        self.options = options
    }

    public var progress: (done: Int, total: Int) { progressState.withLock { $0 } }

    public func run() async throws -> CheckReport {
        var report = CheckReport()
        var issues: [CheckIssue] = []
        // Snapshots first, then the index (see Pruner): a backup finishing in between is seen consistently.
        let snapIssues = Mutex<[CheckIssue]>([])
        let snaps = try await repo.listSnapshots { id, error in
            snapIssues.withLock { $0.append(CheckIssue(severity: .error, object: "snapshots/\(id.hex)", message: "\(error)")) }
        }
        try await repo.loadIndex { id, error in
            issues.append(CheckIssue(severity: .error, object: "index/\(id.hex)", message: "\(error)"))
        }
        let index = repo.index
        report.blobs = index.blobCount
        var seen = Set<ID>()
        for p in index.allPacks() where p.markedAt == nil {
            for b in p.blobs where !seen.insert(b.id).inserted { report.duplicateBlobs += 1 }
        }
        let stored = Dictionary(try await repo.backend.list(.data).map { ($0.name, $0.size) }, uniquingKeysWith: { a, _ in a })
        var badBlobs = Set<ID>()
        var missingPacks = Set<ID>()
        for pack in index.allPacks() {
            if let size = stored[pack.id.hex] {
                if size != pack.packSize {
                    issues.append(CheckIssue(severity: .error, object: "data/\(pack.id.hex)", message: "size \(size) differs from the index (\(pack.packSize)): truncated or damaged"))
                    missingPacks.insert(pack.id)
                }
            } else if pack.markedAt == nil {
                issues.append(CheckIssue(severity: .error, object: "data/\(pack.id.hex)", message: "pack is in the index but missing from storage"))
                missingPacks.insert(pack.id)
            }
        }
        for name in stored.keys {
            guard let id = ID(hex: name), index.contains(pack: id) else {
                issues.append(CheckIssue(severity: .warning, object: "data/\(name)", message: "pack is not in any index (left by an interrupted backup; prune removes it)"))
                continue
            }
        }
        report.packs = stored.count

        // Read data, while the snapshots' trees are walked at the same time.
        let missing = missingPacks
        async let structural = walkTrees(snaps, index: index, missingPacks: missing, badBlobs: [])
        if let subset = options.readData {
            // Packs marked by prune hold no data a snapshot needs (else prune unmarks them) and may vanish: skip them.
            let packs = index.allPacks().filter { $0.markedAt == nil && stored[$0.id.hex] != nil && !missingPacks.contains($0.id) && subset.includes($0.id) }
            progressState.withLock { $0 = (0, packs.count) }
            let results = await boundedMap(packs, width: 4) { p -> ([CheckIssue], Set<ID>, Int) in
                let r = await self.readPack(p)
                self.progressState.withLock { $0.done += 1 }
                return r
            }
            for (i, b, n) in results {
                issues += i
                badBlobs.formUnion(b)
                report.bytesRead += UInt64(n)
            }
            report.packsRead = packs.count
        }
        var walk = try await structural
        // Blobs found damaged by reading: walk again (trees are cached) to name the snapshots that need them.
        if !badBlobs.isEmpty { walk = try await walkTrees(snaps, index: index, missingPacks: missingPacks, badBlobs: badBlobs) }
        issues += snapIssues.withLock { $0 } + walk.issues
        report.snapshots = snaps.count
        report.trees = walk.trees
        report.damagedSnapshots = walk.damaged
        report.issues = issues
        return report
    }

    /// Walks every snapshot's trees once (each tree is visited once, whatever the number of snapshots
    /// sharing it): trees must decode and hold safe names; every file's blobs must be indexed in a present
    /// pack and not be among `badBlobs`. Returns the issues and, per damaged snapshot, why.
    func walkTrees(_ snaps: [(id: ID, snapshot: Snapshot)], index: MasterIndex, missingPacks: Set<ID>,
                   badBlobs: Set<ID>) async throws -> (issues: [CheckIssue], damaged: [ID: [String]], trees: Int) {
        var memo: [ID: Set<String>] = [:]
        var issues: [CheckIssue] = []
        func damage(_ t: ID) async -> Set<String> {
            if let m = memo[t] { return m }
            memo[t] = []  // a cycle in a crafted repository ends here
            var reasons = Set<String>()
            let tree: Tree
            do { tree = try await repo.loadTree(t) } catch {
                issues.append(CheckIssue(severity: .error, object: "tree \(t.hex)", message: "\(error)"))
                reasons.insert("tree \(t.short) is damaged")
                memo[t] = reasons
                return reasons
            }
            for n in tree.nodes {
                if !Node.isSafeName(n.name) {
                    issues.append(CheckIssue(severity: .error, object: "tree \(t.hex)", message: "entry with an unsafe name \(String(reflecting: n.nameString))"))
                }
                if let s = n.subtree { reasons.formUnion(await damage(s)) }
                for b in n.content ?? [] {
                    let locs = index.lookupAll(b).filter { $0.blob.type == .data }
                    if locs.isEmpty || locs.allSatisfy({ missingPacks.contains($0.pack) }) || badBlobs.contains(b) {
                        issues.append(CheckIssue(severity: .error, object: "blob \(b.hex)", message: "data of \(n.nameString) is \(locs.isEmpty ? "missing from the index" : "damaged or missing")"))
                        reasons.insert("file \(n.nameString) is damaged")
                    }
                }
            }
            memo[t] = reasons
            return reasons
        }
        var damaged: [ID: [String]] = [:]
        for (sid, snap) in snaps {
            let r = await damage(snap.tree)
            if !r.isEmpty { damaged[sid] = r.sorted() }
        }
        return (issues, damaged, memo.count)
    }

    /// Reads a pack, verifies its hash, header, index agreement and every blob.
    func readPack(_ p: IndexPack) async -> ([CheckIssue], Set<ID>, Int) {
        let obj = "data/\(p.id.hex)"
        let data: Data
        do { data = try await repo.backend.read(Handle(.data, p.id.hex)) } catch {
            return ([CheckIssue(severity: .error, object: obj, message: "cannot read: \(error)")], Set(p.blobs.map(\.id)), 0)
        }
        var issues: [CheckIssue] = []
        var bad = Set<ID>()
        if sha256ID(data) != p.id {
            issues.append(CheckIssue(severity: .error, object: obj, message: "SHA-256 of the pack does not match its name: the file is damaged"))
        }
        if let header = try? PackFormat.parseHeader(data, master: repo.master) {
            if header.blobs.count != p.blobs.count || Set(header.blobs.map(\.id)) != Set(p.blobs.map(\.id)) {
                issues.append(CheckIssue(severity: .error, object: obj, message: "pack header and index disagree"))
            }
        } else {
            issues.append(CheckIssue(severity: .error, object: obj, message: "pack header is damaged"))
        }
        for b in p.blobs {
            let start = Int(b.offset), end = start + Int(b.length)
            guard end <= data.count else { bad.insert(b.id); continue }
            do {
                try repo.verifyBlob(data[start..<end], location: BlobLocation(pack: p.id, salt: p.salt, blob: b))
            } catch {
                bad.insert(b.id)
                issues.append(CheckIssue(severity: .error, object: obj, message: "\(error)"))
            }
        }
        return (issues, bad, data.count)
    }
}
