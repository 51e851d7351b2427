import ArgumentParser
import Foundation
import Glibc
import LifeboatConfig
import LifeboatCore
import LifeboatRepository
import LifeboatSites
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

/// Opens a site's repository with its own password and credentials.
func openSite(_ site: Site, _ global: GlobalOptions) async throws -> Repository {
    var env = ProcessInfo.processInfo.environment
    if let f = site.credentialsFile { env.merge(try readEnvironmentFile(f)) { $1 } }
    let backend = try await global.backend(location: site.repository, environment: env)
    let password = try site.passwordFile.map { try readPasswordFile($0, from: "password_file of site \(site.name)") } ?? global.password(prompt: "enter password for site \(site.name): ")
    return try await Repository.open(backend: backend, password: password)
}

/// A short, single-line description of an error for logs and the state file.
func describe(_ error: any Error) -> String {
    switch error {
    case let e as LifeboatError: return e.description
    case let e as StorageError: return e.message
    default: return "\(error)"
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

    /// One pass over the replicas. Returns whether every site attempted is up to date.
    func replicatePass(_ config: SitesConfig, _ replicas: [Site], force: Bool) async throws -> Bool {
        let out = global.output
        var state = ReplicationState.load(config.stateFile)
        let primary: Repository
        do {
            primary = try await openSite(config.primary, global)
        } catch {
            out.warn("primary site \(config.primary.name): \(describe(error))")
            return false
        }
        var allOK = true
        try await withRepositoryLock(primary, .shared, "replicate (source)") {
            try await primary.loadIndex()
            let snapshots = try await primary.listSnapshots()
            for site in replicas {
                if stopRequested() { break }
                var s = state.sites[site.name] ?? SiteState()
                let now = currentTime()
                if !force && now < s.nextAttempt(interval: config.interval, maxBackoff: config.maxBackoff) { allOK = false; continue }
                s.lastAttempt = Timestamp.format(now)
                do {
                    let dst = try await openSite(site, global)
                    let report = try await withRepositoryLock(dst, .shared, "replicate") {
                        try await dst.loadIndex()
                        let copier = Copier(source: primary, destination: dst)
                        let ticker = try await copyProgress(copier, snapshots, output: out)
                        defer { ticker?.stop(out) }
                        return try await copier.copy(snapshots, shouldStop: { stopRequested() }) { from, to in
                            out.info("\(site.name): snapshot \(from.short) copied as \(to.short)")
                            out.emit(["message_type": "snapshot_copied", "site": site.name, "source": from.hex, "destination": to.hex])
                        }
                    }
                    s.snapshotsCopied = s.snapshotsCopied.addingReportingOverflow(report.copied.count).overflow ? Int.max : s.snapshotsCopied + report.copied.count
                    s.bytesSent = s.bytesSent.addingClamped(report.bytesSent)
                    if !report.stopped {
                        s.lastSuccess = Timestamp.format(currentTime())
                        s.consecutiveFailures = 0
                    }
                    out.info("\(site.name): \(report.stopped ? "stopped" : "up to date") (\(report.copied.count) copied, \(report.blobsSent) blobs, \(formatBytes(report.bytesSent)) sent)")
                    out.emit(["message_type": "site_done", "site": site.name, "snapshots_copied": report.copied.count,
                              "blobs_sent": report.blobsSent, "bytes_sent": report.bytesSent, "packs_verified": report.packsVerified,
                              "packs_recovered": report.packsRecovered, "stopped": report.stopped])
                } catch {
                    allOK = false
                    s.lastError = describe(error)
                    s.lastErrorTime = Timestamp.format(currentTime())
                    s.consecutiveFailures = s.consecutiveFailures == Int.max ? Int.max : s.consecutiveFailures + 1
                    out.warn("\(site.name): \(s.lastError!)")
                    out.emit(["message_type": "site_error", "site": site.name, "error": s.lastError!])
                }
                state.sites[site.name] = s
                try state.save(config.stateFile)
            }
        }
        return allOK
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

    func run() async throws {
        try await runCommand(global) {
            let maxLag = try self.maxLag.map { do { return try parseSeconds($0) } catch { throw LifeboatError.invalid("--max-lag: \((error as? LifeboatError)?.message ?? "\(error)")") } }
            let config = try sites.load()
            let state = ReplicationState.load(config.stateFile)
            let now = currentTime()
            let out = global.output
            var primary: Repository?
            var primarySnaps: [(id: ID, snapshot: Snapshot)] = []
            var rows: [[String: Any]] = []
            for site in [config.primary] + config.replicas {
                var row: [String: Any] = ["site": site.name, "role": site.role.rawValue, "repository": site.repository]
                let st = state.sites[site.name]
                row["last_success"] = st?.lastSuccess ?? NSNull()
                row["last_error"] = st?.lastError ?? NSNull()
                row["last_error_time"] = st?.lastErrorTime ?? NSNull()
                do {
                    let repo = try await openSite(site, global)
                    let snaps = try await repo.listSnapshots()
                    row["reachable"] = true
                    row["snapshots"] = snaps.count
                    if site.role == .primary {
                        primary = repo
                        primarySnaps = snaps
                        try await repo.loadIndex()
                        row["missing"] = 0
                        row["lag_seconds"] = 0
                        row["bytes_pending"] = 0
                        row["newest_snapshot"] = snaps.last.map { $0.snapshot.time } ?? NSNull()
                    } else if let primary {
                        let missing = Copier.missing(primarySnaps, at: snaps)
                        let (lag, oldest) = replicationLag(missing: missing.map(\.snapshot.date), now: now)
                        try await repo.loadIndex()
                        let pending = try await Copier.pendingBytes(missing.map(\.snapshot), source: primary, destination: repo)
                        row["missing"] = missing.count
                        row["missing_snapshots"] = missing.map { $0.id.hex }
                        row["lag_seconds"] = Int(lag.rounded())
                        row["oldest_missing_age_seconds"] = Int(oldest.rounded())
                        row["bytes_pending"] = pending.bytes
                        row["bytes_pending_exact"] = pending.exact
                    }
                } catch {
                    row["reachable"] = false
                    row["error"] = describe(error)
                    if site.role == .replica, primary != nil {
                        // Unreachable: everything newer than its last success is pending, as far as we know.
                        let since = st?.lastSuccess.flatMap(Timestamp.parse) ?? .distantPast
                        let missing = primarySnaps.filter { $0.snapshot.date > since }
                        row["lag_seconds"] = Int(replicationLag(missing: missing.map(\.snapshot.date), now: now).lag.rounded())
                    }
                }
                rows.append(row)
            }
            // Usable as a health check: 20 when a site cannot be reached, else 21 when a replica lags more than
            // --max-lag, else 0.
            let unreachable = rows.contains { ($0["reachable"] as? Bool) != true }
            let lagging = maxLag.map { limit in rows.contains { Double(($0["lag_seconds"] as? Int) ?? 0) > limit } } ?? false
            let code = unreachable ? ExitStatus.siteUnreachable : lagging ? ExitStatus.siteLagging : ExitStatus.ok
            if global.json {
                for r in rows { print(Output.encode(r.merging(["message_type": "site_status"]) { a, _ in a })) }
                return code
            }
            let header = ["SITE", "ROLE", "REACHABLE", "SNAPSHOTS", "MISSING", "LAG", "PENDING", "LAST SUCCESS", "LAST ERROR"]
            var table = [header]
            for r in rows {
                func v(_ k: String) -> String {
                    guard let x = r[k], !(x is NSNull) else { return "-" }
                    return (x as? CustomStringConvertible).map { "\($0)" } ?? "-"
                }
                table.append([v("site"), v("role"), (r["reachable"] as? Bool ?? false) ? "yes" : "NO", v("snapshots"), v("missing"),
                              (r["lag_seconds"] as? Int).map { Units.span(Double($0)) } ?? "-",
                              (r["bytes_pending"] as? UInt64).map(formatBytes) ?? (r["bytes_pending"] as? Int).map { formatBytes(UInt64($0)) } ?? "-",
                              v("last_success"), (r["error"] as? String) ?? (r["last_error"] as? String) ?? "-"].map { $0 })
            }
            let widths = header.indices.map { i in table.map { $0[i].count }.max() ?? 0 }
            for line in table {
                out.line(line.enumerated().map { i, c in c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }.joined(separator: "  "))
            }
            return code
        }
    }
}
