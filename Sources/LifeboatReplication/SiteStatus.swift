import Foundation
import LifeboatCore
import LifeboatRepository
import LifeboatSites
import LifeboatSnapshot

/// One site as `sites status` reports it (one JSON object per site; every key is present, null when it does
/// not apply: `newest_snapshot` to the primary, `missing_snapshots`, `bytes_pending_exact` to replicas).
public struct SiteStatus: Sendable, Codable, Equatable {
    public var site: String
    public var role: String
    public var repository: String
    public var reachable: Bool
    /// Why the site could not be reached or read (nil when it was).
    public var error: String?
    public var snapshots: Int?
    /// Primary snapshots this site lacks, and their IDs.
    public var missing: Int?
    public var missingSnapshots: [String]?
    /// Age of the newest primary snapshot the site lacks (0 when it has them all), and of the oldest one.
    public var lagSeconds: Int?
    public var oldestMissingAgeSeconds: Int?
    /// Stored bytes the site would receive to catch up; exact when the site names data like the primary.
    public var bytesPending: UInt64?
    public var bytesPendingExact: Bool?
    public var newestSnapshot: String?
    public var lastSuccess: String?
    public var lastError: String?
    public var lastErrorTime: String?

    public init(site: String, role: String, repository: String, reachable: Bool) {
        self.site = site; self.role = role; self.repository = repository; self.reachable = reachable
    }

    enum CodingKeys: String, CodingKey {
        case site, role, repository, reachable, error, snapshots, missing, missingSnapshots = "missing_snapshots"
        case lagSeconds = "lag_seconds", oldestMissingAgeSeconds = "oldest_missing_age_seconds", bytesPending = "bytes_pending"
        case bytesPendingExact = "bytes_pending_exact", newestSnapshot = "newest_snapshot", lastSuccess = "last_success"
        case lastError = "last_error", lastErrorTime = "last_error_time"
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(site, forKey: .site); try c.encode(role, forKey: .role); try c.encode(repository, forKey: .repository)
        try c.encode(reachable, forKey: .reachable); try c.encode(error, forKey: .error); try c.encode(snapshots, forKey: .snapshots)
        try c.encode(missing, forKey: .missing); try c.encode(missingSnapshots, forKey: .missingSnapshots)
        try c.encode(lagSeconds, forKey: .lagSeconds); try c.encode(oldestMissingAgeSeconds, forKey: .oldestMissingAgeSeconds)
        try c.encode(bytesPending, forKey: .bytesPending); try c.encode(bytesPendingExact, forKey: .bytesPendingExact)
        try c.encode(newestSnapshot, forKey: .newestSnapshot); try c.encode(lastSuccess, forKey: .lastSuccess)
        try c.encode(lastError, forKey: .lastError); try c.encode(lastErrorTime, forKey: .lastErrorTime)
    }
}

public enum SitesStatus {
    /// Opens every site (primary first) and compares it with the primary: reachable, snapshots present and
    /// missing, lag at `now`, bytes pending, and what the state file remembers of the last run. A site that
    /// cannot be opened is reported with its error; an unreachable replica's lag counts from its last success.
    public static func collect(_ config: SitesConfig, state: ReplicationState, now: Date, access: SiteAccess) async -> [SiteStatus] {
        var primary: Repository?
        var primarySnaps: [(id: ID, snapshot: Snapshot)] = []
        var rows: [SiteStatus] = []
        for site in [config.primary] + config.replicas {
            var row = SiteStatus(site: site.name, role: site.role.rawValue, repository: site.repository, reachable: false)
            let st = state.sites[site.name]
            row.lastSuccess = st?.lastSuccess
            row.lastError = st?.lastError
            row.lastErrorTime = st?.lastErrorTime
            do {
                let repo = try await access.open(site)
                let snaps = try await repo.listSnapshots()
                row.reachable = true
                row.snapshots = snaps.count
                if site.role == .primary {
                    primary = repo
                    primarySnaps = snaps
                    try await repo.loadIndex()
                    row.missing = 0
                    row.lagSeconds = 0
                    row.bytesPending = 0
                    row.newestSnapshot = snaps.last?.snapshot.time
                } else if let primary {
                    let missing = Copier.missing(primarySnaps, at: snaps)
                    let (lag, oldest) = replicationLag(missing: missing.map(\.snapshot.date), now: now)
                    try await repo.loadIndex()
                    let pending = try await Copier.pendingBytes(missing.map(\.snapshot), source: primary, destination: repo)
                    row.missing = missing.count
                    row.missingSnapshots = missing.map { $0.id.hex }
                    row.lagSeconds = Int(lag.rounded())
                    row.oldestMissingAgeSeconds = Int(oldest.rounded())
                    row.bytesPending = pending.bytes
                    row.bytesPendingExact = pending.exact
                }
            } catch {
                row.reachable = false
                row.error = errorText(error)
                if site.role == .replica, primary != nil {
                    // Unreachable: everything newer than its last success is pending, as far as we know.
                    let since = st?.lastSuccess.flatMap(Timestamp.parse) ?? .distantPast
                    let missing = primarySnaps.filter { $0.snapshot.date > since }
                    row.lagSeconds = Int(replicationLag(missing: missing.map(\.snapshot.date), now: now).lag.rounded())
                }
            }
            rows.append(row)
        }
        return rows
    }

    /// The exit status of a health check over `rows`: 20 when a site cannot be reached, else 21 when a replica
    /// lags more than `maxLag` seconds, else 0.
    public static func exitStatus(_ rows: [SiteStatus], maxLag: Double?) -> Int32 {
        if rows.contains(where: { !$0.reachable }) { return ExitStatus.siteUnreachable }
        if let maxLag, rows.contains(where: { Double($0.lagSeconds ?? 0) > maxLag }) { return ExitStatus.siteLagging }
        return ExitStatus.ok
    }
}
