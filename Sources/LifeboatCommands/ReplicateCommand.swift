import ArgumentParser
import Foundation
import Glibc
import LifeboatConfig
import LifeboatCore
import LifeboatReplication
import LifeboatRepository
import LifeboatSites
import LifeboatAgent
import LifeboatPlan
import LifeboatSnapshot
import LifeboatStorage

/// The sites file option shared by `replicate` and `sites status`.
struct SitesFileOptions: ParsableArguments {
    @Option(name: .customLong("config"), help: "The sites file (or LIFEBOAT_SITES; default /etc/lifeboat/sites.yaml).")
    var config: String?

    func load() throws -> SitesConfig {
        let path = config ?? ProcessInfo.processInfo.environment["LIFEBOAT_SITES"] ?? "/etc/lifeboat/sites.yaml"
        do { return try SitesConfig.load(path) } catch let e as ConfigError { throw LifeboatError.invalid(e.description) }
    }
}

struct ReplicateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replicate",
        abstract: "Bring every replica site up to date with the primary (see `sites status`).",
        discussion: """
        Copies the primary's snapshots that a replica lacks (as `copy` does: verified, resumable). A site that fails \
        is retried with exponential backoff while the others go on. With --watch it keeps polling the primary until \
        SIGINT/SIGTERM, which finishes the current object, keeps what was copied and exits 0.

        \(Examples.replicate)
        """)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var sites: SitesFileOptions
    @Flag(help: "Keep replicating as new snapshots appear.") var watch = false
    @Option(help: "Only these sites (repeatable).") var site: [String] = []

    func run() async throws {
        gracefulStop = "stopping after the current object"
        try await runCommand(global) {
            let config = try sites.load()
            // One replicate per sites file at a time: two would copy the same snapshots twice.
            let lockPath = config.stateFile + ".lock"
            try FileManager.default.createDirectory(atPath: (lockPath as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            let lockFD = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            guard lockFD >= 0, flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
                throw LifeboatError(.locked, "another `lifeboat replicate` is running for \(config.path) (lock \(lockPath))")
            }
            defer { close(lockFD) }
            for s in site where !config.replicas.contains(where: { $0.name == s }) {
                throw LifeboatError.invalid("no replica site named \"\(s)\" in \(config.path)")
            }
            let replicas = config.replicas.filter { site.isEmpty || site.contains($0.name) }
            if !watch {
                return try await replicatePass(config, replicas, force: true) ? 0 : ExitStatus.failure
            }
            let out = global.output
            out.info("watching \(config.primary.name) every \(Int(config.interval)) s for \(replicas.map(\.name).joined(separator: ", "))")
            while !stopRequested() {
                _ = try await replicatePass(config, replicas, force: false)
                let until = Date().addingTimeInterval(config.interval)
                while !stopRequested() && Date() < until { try await Task.sleep(nanoseconds: 100_000_000) }
            }
            out.info("stopped")
            return 0
        }
    }

    /// One pass over the replicas, printed as it goes. Returns whether every site attempted is up to date.
    func replicatePass(_ config: SitesConfig, _ replicas: [Site], force: Bool) async throws -> Bool {
        let out = global.output
        let replicator = Replicator(config: config, access: try global.siteAccess())
        return try await replicator.pass(replicas, force: force, shouldStop: { stopRequested() }, willCopy: { _, copier, snapshots in
            let ticker = await copyProgress(copier, snapshots, output: out)
            return ticker.map { t in { t.stop(out) } }
        }) { event in
            switch event {
            case .primaryFailed(let site, let error):
                out.warn("primary site \(site): \(error)")
            case .snapshotCopied(let site, let from, let to):
                out.info("\(site): snapshot \(from.short) copied as \(to.short)")
                out.emit(["message_type": "snapshot_copied", "site": site, "source": from.hex, "destination": to.hex])
            case .siteDone(let site, let report):
                out.info("\(site): \(report.stopped ? "stopped" : "up to date") (\(report.copied.count) copied, \(Units.count(report.blobsSent, "blob")), \(formatBytes(report.bytesSent)) sent)")
                out.emit(["message_type": "site_done", "site": site, "snapshots_copied": report.copied.count,
                          "blobs_sent": report.blobsSent, "bytes_sent": report.bytesSent, "packs_verified": report.packsVerified,
                          "packs_recovered": report.packsRecovered, "stopped": report.stopped])
            case .siteFailed(let site, let error):
                out.warn("\(site): \(error)")
                out.emit(["message_type": "site_error", "site": site, "error": error])
            case .staleLocks(let site, let locks):
                for l in locks {
                    out.warn("warning: \(site): stale lock \(l.id.short) of \(l.info.operation) by PID \(l.info.pid) on \(l.info.hostname) (refreshed \(l.info.refreshed)) is ignored; `lifeboat unlock` removes it")
                }
            }
        }
    }
}

struct SitesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "sites", abstract: "Sites of the sites file.",
                                                    subcommands: [SitesStatusCommand.self])
}

struct SitesStatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "For each site: reachable, snapshots present and missing against the primary, lag, bytes pending, last error.",
        discussion: "Lag is the age of the newest primary snapshot the site does not have yet (0 when it has them all). "
            + "LIFEBOAT_NOW (RFC 3339 or Unix seconds) sets the clock.\n\n" + Examples.sitesStatus)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var sites: SitesFileOptions
    @Option(name: .customLong("max-lag"), help: "Exit 21 when a replica's lag is longer than this (e.g. 15m, 2h).")
    var maxLag: String?
    @Flag(name: .customLong("agent"), help: "Ask the agent of the plan file (--config, or LIFEBOAT_CONFIG) instead of opening the sites: its API, else its database.")
    var fromAgent = false

    func run() async throws {
        try await runCommand(global) {
            let maxLag = try self.maxLag.map { do { return try parseSeconds($0) } catch { throw LifeboatError.invalid("--max-lag: \((error as? LifeboatError)?.message ?? "\(error)")") } }
            let rows: [SiteStatus]
            if fromAgent {
                let path = sites.config ?? ProcessInfo.processInfo.environment["LIFEBOAT_CONFIG"] ?? Plan.defaultPath
                let plan: Plan
                do { plan = try Plan.load(path) } catch let e as ConfigError { throw LifeboatError.invalid(e.description) }
                rows = try await AgentClient.status(of: plan).siteStatusRows(plan)
            } else {
                let config = try sites.load()
                rows = await SitesStatus.collect(config, state: ReplicationState.load(config.stateFile), now: currentTime(),
                                                 access: try global.siteAccess())
            }
            let code = SitesStatus.exitStatus(rows, maxLag: maxLag)
            let out = global.output
            if global.json {
                for r in rows { print(Output.encode(Output.object(r).merging(["message_type": "site_status"]) { a, _ in a })) }
                return code
            }
            let header = ["SITE", "ROLE", "REACHABLE", "SNAPSHOTS", "MISSING", "LAG", "PENDING", "LAST SUCCESS", "LAST ERROR"]
            var table = [header]
            for r in rows {
                table.append([r.site, r.role, r.reachable ? "yes" : "NO", r.snapshots.map(String.init) ?? "-", r.missing.map(String.init) ?? "-",
                              r.lagSeconds.map { Units.span(Double($0)) } ?? "-", r.bytesPending.map(formatBytes) ?? "-",
                              r.lastSuccess ?? "-", r.error ?? r.lastError ?? "-"])
            }
            let widths = header.indices.map { i in table.map { $0[i].count }.max() ?? 0 }
            for line in table {
                out.line(line.enumerated().map { i, c in c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }.joined(separator: "  "))
            }
            return code
        }
    }
}
