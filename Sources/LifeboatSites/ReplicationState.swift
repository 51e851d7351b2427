import Foundation
import Glibc
import LifeboatCore

/// What `replicate` remembers per site between runs, for `sites status` and for backoff.
public struct SiteState: Codable, Sendable, Equatable {
    public var lastAttempt: String?
    public var lastSuccess: String?
    public var lastError: String?
    public var lastErrorTime: String?
    public var consecutiveFailures = 0
    public var snapshotsCopied = 0
    public var bytesSent: UInt64 = 0

    enum CodingKeys: String, CodingKey {
        case lastAttempt = "last_attempt", lastSuccess = "last_success", lastError = "last_error"
        case lastErrorTime = "last_error_time", consecutiveFailures = "consecutive_failures"
        case snapshotsCopied = "snapshots_copied", bytesSent = "bytes_sent"
    }
    public init() {}

    /// When this site may be tried again: exponential backoff after failures, capped.
    public func nextAttempt(interval: Double, maxBackoff: Double) -> Date {
        guard consecutiveFailures > 0, let t = lastAttempt.flatMap(Timestamp.parse) else { return .distantPast }
        let wait = min(maxBackoff, interval * pow(2, Double(consecutiveFailures - 1)))
        return t.addingTimeInterval(wait)
    }
}

/// The state file: one JSON object, replaced atomically (temporary file, fsync, rename).
public struct ReplicationState: Codable, Sendable {
    public var sites: [String: SiteState] = [:]
    public init() {}

    public static func load(_ path: String) -> ReplicationState {
        guard let d = FileManager.default.contents(atPath: path),
              let s = try? JSONDecoder().decode(ReplicationState.self, from: d) else { return ReplicationState() }
        return s
    }

    public func save(_ path: String) throws {
        let dir = (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .prettyPrinted]
        try writeFileAtomically(path, try enc.encode(self))
    }
}

/// Replication lag of a site: the age of the newest primary snapshot the site does not have yet
/// (0 when it has them all), and the age of the oldest one it lacks.
public func replicationLag(missing: [Date], now: Date) -> (lag: Double, oldest: Double) {
    guard let newest = missing.max(), let oldest = missing.min() else { return (0, 0) }
    return (max(0, now.timeIntervalSince(newest)), max(0, now.timeIntervalSince(oldest)))
}

