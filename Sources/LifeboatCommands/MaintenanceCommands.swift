import ArgumentParser
import Foundation
import LifeboatCore
import LifeboatCrypto
import LifeboatRepository
import LifeboatSnapshot
import LifeboatStorage

struct CheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "check", abstract: "Check the repository for errors.", discussion: Examples.check)
    @OptionGroup var global: GlobalOptions
    @Flag(name: .customLong("read-data"), help: "Read all pack data and verify every blob.") var readData = false
    @Option(name: .customLong("read-data-subset"), help: "Read a subset: N/T or P%.") var subset: String?
    @Option(name: .customLong("max-age"), help: "Exit 22 when the newest snapshot of some host and paths is older than this (e.g. 26h, 2d).")
    var maxAge: String?

    func run() async throws {
        try await runCommand(global) {
            let out = global.output
            let maxAge = try parseMaxAge(self.maxAge)
            let repo = try await global.open()
            return try await withRepositoryLock(repo, .shared, "check", readOnly: global) {
                var opts = CheckOptions()
                if let subset { opts.readData = try ReadDataSubset(parsing: subset) } else if readData { opts.readData = .all }
                let checker = Checker(repository: repo, options: opts)
                let start = Date()
                let ticker = Ticker(output: out) {
                    let p = checker.progress
                    return (ProgressLine(elapsed: Date().timeIntervalSince(start), items: (p.done, p.total, "packs read")),
                            ["message_type": "status", "packs_done": p.done, "total_packs": p.total])
                }
                let report = try await checker.run()
                ticker.stop(out)
                for i in report.issues { out.warn(i.description) }
                for (id, reasons) in report.damagedSnapshots.sorted(by: { $0.key < $1.key }) {
                    out.warn("snapshot \(id.short) is damaged: \(reasons.prefix(10).joined(separator: "; "))\(reasons.count > 10 ? "; ..." : "")")
                }
                out.info("checked \(Units.count(report.snapshots, "snapshot")), \(Units.count(report.trees, "tree")), \(Units.count(report.packs, "pack")), \(Units.count(report.blobs, "blob"))\(report.duplicateBlobs > 0 ? " (\(report.duplicateBlobs) stored twice)" : "")\(opts.readData != nil ? "; read \(Units.count(report.packsRead, "pack")) (\(formatBytes(report.bytesRead)))" : "")")
                out.emit(["message_type": "summary", "errors": report.errors, "warnings": report.issues.count - report.errors,
                          "snapshots": report.snapshots, "trees": report.trees, "packs": report.packs, "packs_read": report.packsRead, "duplicate_blobs": report.duplicateBlobs,
                          "bytes_read": report.bytesRead, "issues": report.issues.map { ["severity": $0.severity.rawValue, "object": $0.object, "message": $0.message] },
                          "damaged_snapshots": report.damagedSnapshots.map { ["id": $0.key.hex, "reasons": $0.value] }])
                var ages: [GroupAge] = []
                if let maxAge {
                    ages = Freshness.groups(try await repo.listSnapshots().filter(\.snapshot.isFiles), maxAge: maxAge, now: currentTime())
                    reportAges(ages, maxAge: maxAge, output: out)
                }
                if report.errors > 0 {
                    out.line("Fatal: repository contains errors")
                    return ExitStatus.failure
                }
                out.line("no errors were found")
                return maxAge == nil ? 0 : ageStatus(ages)
            }
        }
    }
}

struct StatsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stats", abstract: "Show sizes: restored size and deduplicated raw data.", discussion: Examples.stats)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var filter: FilterOptions
    @Argument(help: "Snapshots (default: all).") var snapshots: [String] = []
    enum Mode: String, ExpressibleByArgument, CaseIterable { case restoreSize = "restore-size", rawData = "raw-data" }
    @Option(name: .customLong("mode"), help: "restore-size: files and the bytes a restore writes; raw-data: the deduplicated data, before and after compression. (--json prints both.)")
    var mode: Mode = .restoreSize

    func run() async throws {
        try await runCommand(global) {
            let repo = try await global.open()
            return try await withRepositoryLock(repo, .shared, "stats", readOnly: global) {
            try await repo.loadIndex()
            var snaps = try await repo.listSnapshots().filter { filter.filter.matches($0.snapshot) }
            if !snapshots.isEmpty {
                snaps = []
                for s in snapshots { snaps.append(try await repo.findSnapshot(s, filter: filter.filter)) }
            }
            let st = try await RepositoryStats.compute(snaps, repository: repo)
            if global.json {
                var o: [String: Any] = ["message_type": "stats", "mode": mode.rawValue, "compression_ratio": st.compressionRatio, "dedup_ratio": st.dedupRatio]
                if let d = try? JSONEncoder().encode(st), let fields = try? JSONSerialization.jsonObject(with: d) as? [String: Any] {
                    o.merge(fields) { a, _ in a }
                }
                print(Output.encode(o))
            } else if mode == .restoreSize {
                print("Snapshots processed:   \(st.snapshots)")
                print("Total file count:      \(st.files)")
                print("Total restore size:    \(formatBytes(st.restoreSize))")
            } else {
                print("Snapshots processed:   \(st.snapshots)")
                print("Unique data blobs:     \(st.blobs)")
                print("Deduplicated raw size: \(formatBytes(st.rawSize))")
                print("Stored (compressed):   \(formatBytes(st.storedSize))")
                print("Repository packs:      \(formatBytes(st.packBytes))")
                if st.rawSize > 0 { print(String(format: "Deduplication ratio:   %.2fx, compression ratio %.2fx", st.dedupRatio, st.compressionRatio)) }
            }
            return 0
            }
        }
    }
}

struct ForgetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "forget", abstract: "Remove snapshots by a retention policy (and optionally prune).", discussion: Examples.forget)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var filter: FilterOptions
    @Argument(help: "Snapshot IDs to remove explicitly.") var ids: [String] = []
    @Option(name: [.customShort("l"), .customLong("keep-last")], help: "Keep the newest N snapshots.") var keepLast = 0
    @Option(name: [.customShort("H"), .customLong("keep-hourly")], help: "Keep the newest snapshot of each of the last N hours that have one.") var keepHourly = 0
    @Option(name: [.customShort("d"), .customLong("keep-daily")], help: "Keep the newest snapshot of each of the last N days that have one.") var keepDaily = 0
    @Option(name: [.customShort("w"), .customLong("keep-weekly")], help: "Keep the newest snapshot of each of the last N weeks that have one.") var keepWeekly = 0
    @Option(name: [.customShort("m"), .customLong("keep-monthly")], help: "Keep the newest snapshot of each of the last N months that have one.") var keepMonthly = 0
    @Option(name: [.customShort("y"), .customLong("keep-yearly")], help: "Keep the newest snapshot of each of the last N years that have one.") var keepYearly = 0
    @Option(name: .customLong("keep-within"), help: "Keep snapshots within this span of the newest, e.g. 1y2m3d4h.") var keepWithin: String?
    @Option(name: .customLong("keep-tag"), help: "Keep snapshots with these tags (a,b = both).") var keepTags: [String] = []
    @Option(name: [.customShort("g"), .customLong("group-by")], help: "Apply the policy to each group of snapshots with the same host, paths and/or tags (a comma list).") var groupBy = "host,paths"
    @Flag(name: [.customShort("n"), .customLong("dry-run")], help: "Show what would be removed; remove nothing.") var dryRun = false
    @Flag(name: .customLong("prune"), help: "Then run prune (with --max-unused and --grace) to free the space of the removed snapshots.") var prune = false
    @Option(name: .customLong("max-unused"), help: "With --prune: tolerated unused space, a percentage (5%) or 'unlimited'.") var maxUnused = "5%"
    @Option(name: .customLong("grace"), help: "With --prune: how long marked packs wait before deletion (e.g. 1h; 0s when no backup runs).") var grace = "1h"

    func run() async throws {
        try await runCommand(global) {
            let out = global.output
            let repo = try await global.open()
            let removed: Int = try await withRepositoryLock(repo, .shared, "forget") {
                if !ids.isEmpty {
                    var n = 0
                    for i in ids {
                        // By the listing: a damaged snapshot can be removed by its ID too.
                        let id = i == "latest" ? try await repo.findSnapshot(i, filter: filter.filter).id : try await repo.snapshotID(prefix: i)
                        if !dryRun { try await repo.delete(Handle(.snapshots, id.hex)) }
                        out.line("removed snapshot \(id.short)\(dryRun ? " (dry run)" : "")")
                        out.emit(["message_type": "removed", "id": id.hex, "dry_run": dryRun])
                        n += 1
                    }
                    return n
                }
                let policy = RetentionPolicy(last: keepLast, hourly: keepHourly, daily: keepDaily, weekly: keepWeekly,
                                             monthly: keepMonthly, yearly: keepYearly,
                                             within: try keepWithin.map { try CalendarDuration(parsing: $0) },
                                             tags: keepTags.map { $0.split(separator: ",").map(String.init) })
                guard !policy.isEmpty else {
                    throw LifeboatError.invalid("no policy given: use --keep-last, --keep-daily, ... or name snapshot IDs")
                }
                let snaps = try await repo.listSnapshots().filter { filter.filter.matches($0.snapshot) }
                let groups = Forget.plan(snaps, policy: policy, groupBy: try GroupBy(parsing: groupBy))
                var jsonGroups: [[String: Any]] = []
                for g in groups {
                    out.line("snapshots for \(g.key):")
                    out.line("keep \(g.keep.count) snapshots:")
                    for k in g.keep { out.line("  \(k.id.short)  \(k.snapshot.time.prefix(19))  \(k.reasons.joined(separator: ", "))") }
                    if !g.remove.isEmpty {
                        out.line("remove \(g.remove.count) snapshots\(dryRun ? " (dry run)" : ""):")
                        for r in g.remove { out.line("  \(r.id.short)  \(r.snapshot.time.prefix(19))") }
                    }
                    jsonGroups.append(["group": g.key,
                                       "keep": g.keep.map { ["id": $0.id.hex, "time": $0.snapshot.time, "reasons": $0.reasons] as [String: Any] },
                                       "remove": g.remove.map { ["id": $0.id.hex, "time": $0.snapshot.time] }])
                }
                out.emit(["message_type": "forget", "dry_run": dryRun, "groups": jsonGroups])
                return dryRun ? 0 : try await Forget.execute(groups, repo: repo)
            }
            if prune && !dryRun {
                out.info("\(Units.count(removed, "snapshot")) removed; pruning")
                try await PruneCommand.prune(repo: repo, maxUnused: maxUnused, grace: grace, dryRun: false, out: out)
            }
            return 0
        }
    }
}

struct PruneCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "prune", abstract: "Remove unreferenced data (two-phase, safe alongside backups).", discussion: Examples.prune)
    @OptionGroup var global: GlobalOptions
    @Option(name: .customLong("max-unused"), help: "Tolerated unused space: a percentage (5%) or 'unlimited'.") var maxUnused = "5%"
    @Option(name: .customLong("grace"), help: "How long marked packs wait before deletion (e.g. 1h; 0s when no backup runs).") var grace = "1h"
    @Flag(name: [.customShort("n"), .customLong("dry-run")], help: "Show what would be marked, repacked and deleted; change nothing.") var dryRun = false

    func run() async throws {
        try await runCommand(global) {
            let repo = try await global.open()
            try await PruneCommand.prune(repo: repo, maxUnused: maxUnused, grace: grace, dryRun: dryRun, out: global.output)
            return 0
        }
    }

    static func prune(repo: Repository, maxUnused: String, grace: String, dryRun: Bool, out: Output) async throws {
        var opts = PruneOptions()
        if maxUnused == "unlimited" { opts.maxUnused = 1 } else {
            guard maxUnused.hasSuffix("%"), let v = Double(maxUnused.dropLast()), v >= 0, v <= 100 else {
                throw LifeboatError.invalid("invalid --max-unused \"\(maxUnused)\": use a percentage like 5% or unlimited")
            }
            opts.maxUnused = v / 100
        }
        opts.grace = try parseSeconds(grace)
        opts.dryRun = dryRun
        // LIFEBOAT_NOW sets the clock (tests, drills): marks and grace periods are judged by it.
        let r = try await Pruner(repository: repo, options: opts, now: { currentTime() }).run()
        out.info("\(r.snapshots) snapshots; \(formatBytes(r.unusedBytes)) unused of \(formatBytes(r.totalBytes)) in live packs")
        for line in pruneSummary(r, dryRun: dryRun, grace: opts.grace) { out.line(line) }
        for n in r.notes { out.warn(n) }
        let pending = r.pending
        out.emit(["message_type": "prune", "dry_run": dryRun, "snapshots": r.snapshots, "packs_marked": r.packsMarked,
                  "packs_unmarked": r.packsUnmarked, "packs_deleted": r.packsDeleted, "packs_repacked": r.packsRepacked,
                  "packs_waiting": r.packsWaiting, "bytes_deleted": r.bytesDeleted, "bytes_repacked": r.bytesRepacked,
                  "pending_packs": pending.packs, "pending_bytes": pending.bytes,
                  "free_from": pending.freeFrom.map(Timestamp.format) ?? NSNull(), "free_by": pending.freeBy.map(Timestamp.format) ?? NSNull(),
                  "held_by_locks": pending.heldByLocks,
                  "unused_bytes": r.unusedBytes, "total_bytes": r.totalBytes, "passes": r.passes])
    }

    /// What a prune freed now, what it left marked, and when that becomes free (in UTC).
    static func pruneSummary(_ r: PruneReport, dryRun: Bool, grace: Double) -> [String] {
        // Rounded up to the minute: a prune run "after 07:22" is never too early.
        func when(_ d: Date) -> String {
            let up = Date(timeIntervalSince1970: (d.timeIntervalSince1970 / 60).rounded(.up) * 60)
            return String(Timestamp.format(up).prefix(16)).replacingOccurrences(of: "T", with: " ") + " UTC"
        }
        var lines = ["\(dryRun ? "would free" : "freed") now: \(formatBytes(r.bytesDeleted)) (\(r.packsDeleted) pack\(r.packsDeleted == 1 ? "" : "s") deleted)"
            + (r.packsRepacked > 0 ? "; \(r.packsRepacked) pack\(r.packsRepacked == 1 ? "" : "s") repacked (\(formatBytes(r.bytesRepacked)) copied)" : "")]
        if r.packsUnmarked > 0 { lines.append("unmarked \(r.packsUnmarked) pack\(r.packsUnmarked == 1 ? "" : "s") that snapshots need again") }
        let p = r.pending
        if p.packs == 0 {
            lines.append("nothing is left marked")
        } else if let from = p.freeFrom, let by = p.freeBy {
            var text = "\(dryRun ? "would leave" : "marked") for deletion: \(formatBytes(p.bytes)) in \(p.packs) pack\(p.packs == 1 ? "" : "s"); "
            text += by.timeIntervalSince(from) < 60 ? "a prune run after \(when(by)) frees \(p.packs == 1 ? "it" : "them")"
                : "a prune run after \(when(from)) frees the first, after \(when(by)) all"
            text += " (grace period \(Units.span(grace)), see `lifeboat prune --help`)"
            if p.heldByLocks { text += "; some also wait for a running backup, copy or restore to end" }
            lines.append(text)
        }
        return lines
    }
}

struct UnlockCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "unlock", abstract: "Remove stale locks (or all with --remove-all).", discussion: Examples.unlock)
    @OptionGroup var global: GlobalOptions
    @Flag(name: .customLong("remove-all"), help: "Remove live locks too: only when no other lifeboat process uses the repository.") var removeAll = false

    func run() async throws {
        try await runCommand(global) {
            let repo = try await global.open()
            let locks = try await repo.listLocks()
            for l in locks where !l.stale && !removeAll {
                global.output.info("lock \(l.id.short) is live: \(l.info.operation) by PID \(l.info.pid) on \(l.info.hostname), refreshed \(l.info.refreshed)")
            }
            let removed = try await repo.removeLocks(all: removeAll)
            global.output.line("removed \(removed.count) \(removeAll ? "" : "stale ")locks")
            global.output.emit(["message_type": "unlock", "removed": removed.map(\.hex)])
            return 0
        }
    }
}

struct KeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "key", abstract: "Manage the repository's keys (passwords).",
                                                    subcommands: [KeyList.self, KeyAdd.self, KeyRemove.self, KeyPasswd.self])
}

func newPassword(_ file: String?, _ global: GlobalOptions) throws -> String {
    if let file { return try readPasswordFile(file, from: "--new-password-file") }
    if let p = ProcessInfo.processInfo.environment["LIFEBOAT_NEW_PASSWORD"], !p.isEmpty { return p }
    guard isatty(0) != 0 else { throw LifeboatError.invalid("give the new password with --new-password-file or LIFEBOAT_NEW_PASSWORD (there is no terminal to ask on)") }
    let p = try promptPassword("enter new password: ")
    guard try promptPassword("enter password again: ") == p, !p.isEmpty else { throw LifeboatError.invalid("passwords do not match") }
    return p
}

import Glibc

struct KeyList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List keys.", discussion: Examples.keyList)
    @OptionGroup var global: GlobalOptions
    func run() async throws {
        try await runCommand(global) {
            let repo = try await global.open()
            let keys = try await repo.listKeys()
            if global.json {
                for k in keys {
                    var o: [String: Any] = ["message_type": "key", "id": k.id.hex, "current": k.id == repo.keyID]
                    if let kf = k.key { o["userName"] = kf.username; o["hostName"] = kf.hostname; o["created"] = kf.created }
                    if let p = k.problem { o["problem"] = p }
                    print(Output.encode(o))
                }
            } else {
                print(" ID        User        Host                 Created")
                for k in keys {
                    guard let kf = k.key else { print(" \(k.id.short)  (\(k.problem ?? "unreadable"))"); continue }
                    print("\(k.id == repo.keyID ? "*" : " ")\(k.id.short)  \(kf.username.padding(toLength: 10, withPad: " ", startingAt: 0))  \(kf.hostname.padding(toLength: 20, withPad: " ", startingAt: 0)) \(kf.created.prefix(19))")
                }
            }
            return 0
        }
    }
}

struct KeyAdd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "add", abstract: "Add a key (a new password).", discussion: Examples.keyAdd)
    @OptionGroup var global: GlobalOptions
    @Option(name: .customLong("new-password-file"), help: "File holding the new password (or LIFEBOAT_NEW_PASSWORD; else asked on the terminal).") var newPasswordFile: String?
    func run() async throws {
        try await runCommand(global) {
            let repo = try await global.open()
            let id = try await repo.addKey(password: try newPassword(newPasswordFile, global))
            global.output.line("saved new key \(id.short)")
            global.output.emit(["message_type": "key_added", "id": id.hex])
            return 0
        }
    }
}

struct KeyRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "remove", abstract: "Remove a key (not the one in use).", discussion: Examples.keyRemove)
    @OptionGroup var global: GlobalOptions
    @Argument(help: "ID (or unique prefix) of the key to remove, as `key list` shows it.") var id: String
    func run() async throws {
        try await runCommand(global) {
            let repo = try await global.open()
            let matches = try await repo.listKeys().filter { $0.id.hex.hasPrefix(id.lowercased()) }
            guard matches.count == 1 else {
                throw LifeboatError(matches.isEmpty ? .notFound : .invalidArgument, matches.isEmpty ? "no key \(id)" : "key prefix \(id) is ambiguous")
            }
            try await repo.removeKey(matches[0].id)
            global.output.line("removed key \(matches[0].id.short)")
            global.output.emit(["message_type": "key_removed", "id": matches[0].id.hex])
            return 0
        }
    }
}

struct KeyPasswd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "passwd", abstract: "Change the password of the key in use.", discussion: Examples.keyPasswd)
    @OptionGroup var global: GlobalOptions
    @Option(name: .customLong("new-password-file"), help: "File holding the new password (or LIFEBOAT_NEW_PASSWORD; else asked on the terminal).") var newPasswordFile: String?
    func run() async throws {
        try await runCommand(global) {
            let repo = try await global.open()
            let id = try await repo.addKey(password: try newPassword(newPasswordFile, global))
            try await repo.backend.delete(Handle(.keys, repo.keyID.hex))
            global.output.line("saved new key \(id.short), removed \(repo.keyID.short)")
            global.output.emit(["message_type": "key_changed", "id": id.hex, "removed": repo.keyID.hex])
            return 0
        }
    }
}
