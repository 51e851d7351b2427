import ArgumentParser
import Foundation
import LifeboatCore
import LifeboatRepository
import LifeboatSnapshot

struct SnapshotsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "snapshots", abstract: "List snapshots.", discussion: Examples.snapshots)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var filter: FilterOptions
    @Option(name: .customLong("latest"), help: "Only the newest N snapshots per host and paths.") var latest: Int?
    @Option(name: .customLong("max-age"), help: "Exit 22 when the newest snapshot of some host and paths is older than this (e.g. 26h, 2d).")
    var maxAge: String?
    @Flag(name: .customLong("records"), help: "List the database records (archived WAL, base backups, SQLite snapshots and WAL) instead of file snapshots.")
    var records = false

    func run() async throws {
        try await runCommand(global) {
            if records { return try await listRecords() }
            if let latest, latest < 1 { throw LifeboatError.invalid("--latest \(latest): give a count of 1 or more") }
            let maxAge = try parseMaxAge(self.maxAge)
            let repo = try await global.open()
            var snaps = try await repo.listSnapshots().filter { filter.filter.matches($0.snapshot) }
            let ages = maxAge.map { Freshness.groups(snaps, maxAge: $0, now: currentTime()) }
            if let latest {
                var byGroup: [GroupBy.Key: Int] = [:]
                snaps = snaps.reversed().filter { s in
                    let k = GroupBy.Key(host: s.snapshot.hostname, paths: s.snapshot.paths)
                    byGroup[k, default: 0] += 1
                    return byGroup[k]! <= latest
                }.reversed()
            }
            defer { if let ages, let maxAge { reportAges(ages, maxAge: maxAge, output: global.output) } }
            if global.json {
                // One object per line (JSON lines, as every --json output).
                for s in snaps {
                    print(Output.encode(snapshotJSON(s.id, s.snapshot).merging(["message_type": "snapshot"]) { a, _ in a }))
                }
                return ages.map(ageStatus) ?? 0
            }
            print("ID        Time                 Host             Tags          Paths")
            print(String(repeating: "-", count: 78))
            for (id, s) in snaps {
                let time = String(s.time.prefix(19)).replacingOccurrences(of: "T", with: " ")
                let host = s.hostname.padding(toLength: 16, withPad: " ", startingAt: 0)
                let tags = s.tags.joined(separator: ",").padding(toLength: 13, withPad: " ", startingAt: 0)
                print("\(id.short)  \(time)  \(host) \(tags) \(s.paths.first ?? "")")
                for p in s.paths.dropFirst() { print(String(repeating: " ", count: 62) + p) }
            }
            print(String(repeating: "-", count: 78))
            print(Units.count(snaps.count, "snapshot"))
            return ages.map(ageStatus) ?? 0
        }
    }
}

extension SnapshotsCommand {
    /// Records are not files: what they hold is listed instead of paths.
    func listRecords() async throws -> Int32 {
        let repo = try await global.open()
        let recs = try await repo.listSnapshots().filter { !$0.snapshot.isFiles }
        if global.json {
            for s in recs { print(Output.encode(snapshotJSON(s.id, s.snapshot).merging(["message_type": "record"]) { a, _ in a })) }
            return 0
        }
        var rows = [["ID", "Time", "Kind", "System", "Holds"]]
        for (id, s) in recs {
            let time = String(s.time.prefix(19)).replacingOccurrences(of: "T", with: " ")
            if let q = s.sqlite {
                let holds = s.kind == "sqlite-snapshot" ? "generation \(q.generation), \(q.pages) pages" : "generation \(q.generation) record \(q.seq): \(q.transactions ?? 0) transactions"
                rows.append([id.short, time, s.kind ?? "", q.database, holds])
                continue
            }
            let db = s.database
            let files = db?.files ?? []
            let holds = s.kind == "pg-base" ? "WAL \(db?.startLSN ?? "?") to \(db?.stopLSN ?? "?"), timeline \(db?.timeline ?? 0)"
                : files.count == 1 ? files[0].name : "\(files.first?.name ?? "-") … \(files.last?.name ?? "-") (\(files.count) files)"
            rows.append([id.short, time, s.kind ?? "", db?.system ?? "-", holds])
        }
        print(StatusCommand.table(rows), terminator: "")
        print(Units.count(recs.count, "record"))
        return 0
    }
}

struct LsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List files in a snapshot.", discussion: Examples.ls)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var filter: FilterOptions
    @Argument(help: "Snapshot ID, prefix or latest.") var snapshot: String
    @Argument(help: "Only this directory (or file) and below.") var dir: String?
    @Flag(name: .shortAndLong, help: "Long listing with mode, owner, size and time.") var long = false
    @Flag(name: .customLong("recursive"), help: "With a directory, list everything below it.") var recursive = false

    func run() async throws {
        try await runCommand(global) {
            let repo = try await global.open()
            return try await withRepositoryLock(repo, .shared, "ls", readOnly: global) {
            try await repo.loadIndex()
            let (id, snap) = try await repo.findSnapshot(snapshot, filter: filter.filter)
            if global.json { print(Output.encode(snapshotJSON(id, snap).merging(["struct_type": "snapshot", "message_type": "snapshot"]) { a, _ in a })) }
            else if !global.quiet { print("snapshot \(id.short) of \(snap.paths) at \(snap.time) by \(snap.username)@\(snap.hostname):") }
            let prefix = dir.map { absolutePath($0).lossy } ?? "/"
            try await walkTree(repo, snap.tree) { path, node in
                let inScope = prefix == "/" || path == prefix || path.hasPrefix(prefix + "/")
                let above = prefix.hasPrefix(path + "/")
                if inScope {
                    let direct = recursive || dir == nil || path == prefix || path.dropFirst(prefix.count + 1).contains("/") == false
                    if direct {
                        if global.json { print(Output.encode(nodeJSON(path, node).merging(["message_type": "node"]) { a, _ in a })) }
                        else if long {
                            let t = Timestamp.format(Date(timeIntervalSince1970: Double(node.mtimeNs) / 1e9)).prefix(19).replacingOccurrences(of: "T", with: " ")
                            print("\(modeString(node)) \((node.user ?? String(node.uid)).padding(toLength: 8, withPad: " ", startingAt: 0)) \((node.group ?? String(node.gid)).padding(toLength: 8, withPad: " ", startingAt: 0)) \(String(node.size).leftPad(12)) \(t) \(path)\(node.linkTarget.map { " -> " + String(decoding: $0, as: UTF8.self) } ?? "")")
                        } else { print(path) }
                    }
                    return recursive || dir == nil || path == prefix
                }
                return above
            }
            return 0
            }
        }
    }
}

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}

struct FindCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "find", abstract: "Find files by name pattern in snapshots.", discussion: Examples.find)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var filter: FilterOptions
    @Argument(help: "Glob patterns matched against names (or paths, if they contain /).") var patterns: [String]
    @Option(name: .customLong("snapshot"), help: "Only these snapshots (repeatable).") var snapshots: [String] = []

    func run() async throws {
        try await runCommand(global) {
            let repo = try await global.open()
            return try await withRepositoryLock(repo, .shared, "find", readOnly: global) {
            try await repo.loadIndex()
            var snaps = try await repo.listSnapshots().filter { filter.filter.matches($0.snapshot) }
            if !snapshots.isEmpty {
                var chosen: [(id: ID, snapshot: Snapshot)] = []
                for s in snapshots { chosen.append(try await repo.findSnapshot(s, filter: filter.filter)) }
                snaps = chosen
            }
            let pats = patterns.map(PathPattern.init)
            var found = 0
            for (id, snap) in snaps {
                var hits: [(String, Node)] = []
                try await walkTree(repo, snap.tree) { path, node in
                    let name = node.name
                    if pats.contains(where: { $0.text.contains("/") ? $0.matches(path) : PathPattern.glob(Array($0.text.utf8)[...], name[...]) }) {
                        hits.append((path, node))
                    }
                    return true
                }
                found += hits.count
                if hits.isEmpty { continue }
                if global.json {
                    print(Output.encode(["message_type": "matches", "snapshot": id.hex, "hits": hits.count, "matches": hits.map { nodeJSON($0.0, $0.1) }]))
                } else {
                    print("Found matching entries in snapshot \(id.short) from \(snap.time.prefix(19))")
                    for (p, n) in hits { print("  \(modeString(n)) \(String(n.size).leftPad(10)) \(p)") }
                }
            }
            if found == 0 && !global.json { print("no matches") }
            return 0
            }
        }
    }
}

struct DiffCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "diff", abstract: "Show what changed between two snapshots.", discussion: Examples.diff)
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The older snapshot: ID, prefix or latest.") var first: String
    @Argument(help: "The newer snapshot: ID, prefix or latest.") var second: String

    func run() async throws {
        try await runCommand(global) {
            let repo = try await global.open()
            return try await withRepositoryLock(repo, .shared, "diff", readOnly: global) {
            try await repo.loadIndex()
            let a = try await repo.findSnapshot(first), b = try await repo.findSnapshot(second)
            let stats = try await SnapshotDiff.compare(repo, from: a.snapshot.tree, to: b.snapshot.tree) { change in
                if global.json {
                    print(Output.encode(["message_type": "change", "path": change.path, "modifier": change.modifier.rawValue]))
                } else {
                    print("\(change.modifier.rawValue)    \(change.path)")
                }
            }
            if global.json {
                print(Output.encode(["message_type": "statistics", "source_snapshot": a.id.hex, "target_snapshot": b.id.hex,
                                     "added": stats.added, "removed": stats.removed, "changed": stats.changed]))
            } else if !global.quiet {
                print("\nFiles: \(stats.added) new, \(stats.removed) removed, \(stats.changed) changed")
            }
            return 0
            }
        }
    }
}
