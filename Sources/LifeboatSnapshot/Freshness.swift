import Foundation
import LifeboatCore

/// The newest snapshot of one host+paths group and its age: what `check --max-age` and
/// `snapshots --max-age` judge, and what a health check or the agent reports.
public struct GroupAge: Sendable, Codable, Equatable {
    public var host: String
    public var paths: [String]
    public var latestID: ID
    public var latestTime: Date
    /// Seconds between the newest snapshot and `now` (negative when the snapshot is in the future: clock skew).
    public var ageSeconds: Double
    /// Whether the age passes the limit, or the snapshot is dated further in the future than clocks drift
    /// (`future`): its age cannot be judged, and a health check must not pass on it for years.
    public var stale: Bool
    public var future: Bool

    enum CodingKeys: String, CodingKey {
        case host, paths, latestID = "latest_id", latestTime = "latest_time", ageSeconds = "age_seconds", stale, future
    }
}

public enum Freshness {
    /// One entry per host+paths group (sorted by host, then paths), with its newest snapshot and whether that
    /// one is older than `maxAge` seconds at `now` (or dated more than `futureTolerance` ahead of it). Pure: the
    /// clock is passed in.
    /// How far in the future a snapshot may be dated (a host whose clock runs ahead) before it counts as stale.
    public static let futureTolerance: Double = 300

    public static func groups(_ snaps: [(id: ID, snapshot: Snapshot)], maxAge: Double, now: Date) -> [GroupAge] {
        var newest: [GroupBy.Key: (id: ID, snapshot: Snapshot)] = [:]
        for s in snaps {
            let key = GroupBy.Key(host: s.snapshot.hostname, paths: s.snapshot.paths)
            if let cur = newest[key], cur.snapshot.date >= s.snapshot.date { continue }
            newest[key] = s
        }
        return newest.sorted { ($0.key.host, $0.key.paths.joined(separator: "\0")) < ($1.key.host, $1.key.paths.joined(separator: "\0")) }
            .map { key, s in
                let age = now.timeIntervalSince(s.snapshot.date)
                let future = age < -futureTolerance
                return GroupAge(host: key.host, paths: key.paths, latestID: s.id, latestTime: s.snapshot.date,
                                ageSeconds: age, stale: age > maxAge || future, future: future)
            }
    }
}

extension GroupBy {
    /// A host and its paths: the group restic and Lifeboat use for `--latest`, parents and ages.
    public struct Key: Hashable, Sendable {
        public var host: String
        public var paths: [String]
        public init(host: String, paths: [String]) { self.host = host; self.paths = paths }
    }
}
