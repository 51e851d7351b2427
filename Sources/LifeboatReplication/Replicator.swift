import Foundation
import LifeboatCore
import LifeboatRepository
import LifeboatSites
import LifeboatSnapshot

/// What a replication pass tells its caller as it goes (the CLI prints them, the agent logs and counts them).
public enum ReplicationEvent: Sendable {
    /// The primary could not be opened or read: nothing was attempted.
    case primaryFailed(site: String, error: String)
    case snapshotCopied(site: String, source: ID, destination: ID)
    /// A replica is up to date (or stopped on request: `report.stopped`).
    case siteDone(site: String, report: CopyReport)
    /// A replica failed; it is retried with backoff while the others go on.
    case siteFailed(site: String, error: String)
    /// Stale locks seen (and ignored) at a site.
    case staleLocks(site: String, locks: [LockEntry])
}

/// Where a replicator keeps its per-site state (last success, last error, failures for backoff).
public struct ReplicationStateStorage: Sendable {
    public var load: @Sendable () -> ReplicationState
    public var save: @Sendable (ReplicationState) throws -> Void

    public init(load: @escaping @Sendable () -> ReplicationState, save: @escaping @Sendable (ReplicationState) throws -> Void) {
        self.load = load
        self.save = save
    }

    /// A JSON file replaced atomically (`replication.state_file`: `replicate` and `sites status`).
    public static func file(_ path: String) -> ReplicationStateStorage {
        ReplicationStateStorage(load: { ReplicationState.load(path) }, save: { try $0.save(path) })
    }
}

/// Brings replica sites up to date with the primary, one pass at a time, remembering per site in the state
/// file when it last succeeded, its last error and its failures (for backoff and `sites status`).
public struct Replicator: Sendable {
    public let config: SitesConfig
    public let access: SiteAccess
    /// "Now" for attempts, successes and backoff (LIFEBOAT_NOW in tests and drills).
    public let clock: @Sendable () -> Date
    /// Where the per-site state is kept: the sites file's state file, or the agent's database.
    public let storage: ReplicationStateStorage

    public init(config: SitesConfig, access: SiteAccess, storage: ReplicationStateStorage? = nil,
                clock: @escaping @Sendable () -> Date = { currentTime() }) {
        self.config = config
        self.access = access
        self.storage = storage ?? .file(config.stateFile)
        self.clock = clock
    }

    /// One pass over `replicas` (all of the file's when empty). A site still in its backoff is skipped unless
    /// `force`. `willCopy` is called before each site's copy (for a progress display) and may return a
    /// function to call when it ends. Returns whether every replica attempted is up to date.
    public func pass(_ replicas: [Site]? = nil, force: Bool, shouldStop: @escaping @Sendable () -> Bool = { false },
                     willCopy: (Site, Copier, [(id: ID, snapshot: Snapshot)]) async throws -> (() -> Void)? = { _, _, _ in nil },
                     events: @escaping @Sendable (ReplicationEvent) -> Void) async throws -> Bool {
        var state = storage.load()
        let primary: Repository
        do {
            primary = try await access.open(config.primary)
        } catch {
            events(.primaryFailed(site: config.primary.name, error: errorText(error)))
            return false
        }
        var allOK = true
        let primaryName = config.primary.name
        try await primary.withLock(.shared, operation: "replicate (source)", staleLocks: { if !$0.isEmpty { events(.staleLocks(site: primaryName, locks: $0)) } }) {
            // Snapshots first, then the index: a backup writes its index before its snapshot, so every snapshot
            // listed has its data in the index loaded next (the other order missed a backup finishing in between:
            // "tree blob … is not in the index", seen with the agent's backups and replication running together).
            let snapshots = try await primary.listSnapshots()
            try await primary.loadIndex()
            for site in replicas ?? config.replicas {
                if shouldStop() { break }
                var s = state.sites[site.name] ?? SiteState()
                let now = clock()
                if !force && now < s.nextAttempt(interval: config.interval, maxBackoff: config.maxBackoff) { allOK = false; continue }
                s.lastAttempt = Timestamp.format(now)
                do {
                    let dst = try await access.open(site)
                    let name = site.name
                    let report = try await dst.withLock(.shared, operation: "replicate", staleLocks: { if !$0.isEmpty { events(.staleLocks(site: name, locks: $0)) } }) {
                        try await dst.loadIndex()
                        let copier = Copier(source: primary, destination: dst)
                        let done = try await willCopy(site, copier, snapshots)
                        defer { done?() }
                        return try await copier.copy(snapshots, shouldStop: shouldStop) { from, to in
                            events(.snapshotCopied(site: name, source: from, destination: to))
                        }
                    }
                    s.snapshotsCopied = s.snapshotsCopied.addingReportingOverflow(report.copied.count).overflow ? Int.max : s.snapshotsCopied + report.copied.count
                    s.bytesSent = s.bytesSent.addingClamped(report.bytesSent)
                    if !report.stopped {
                        s.lastSuccess = Timestamp.format(clock())
                        s.consecutiveFailures = 0
                    }
                    events(.siteDone(site: site.name, report: report))
                } catch {
                    allOK = false
                    let text = errorText(error)
                    s.lastError = text
                    s.lastErrorTime = Timestamp.format(clock())
                    s.consecutiveFailures = s.consecutiveFailures == Int.max ? Int.max : s.consecutiveFailures + 1
                    events(.siteFailed(site: site.name, error: text))
                }
                state.sites[site.name] = s
                try storage.save(state)
            }
        }
        return allOK
    }
}
