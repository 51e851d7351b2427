import Foundation
import Glibc
import LifeboatCore

/// A lock object (`locks/<id>`): who holds the repository, since when, for what.
///
/// Kinds: `shared` (backup, restore, check, forget: any number at once), `prune` (one at a time;
/// does not block shared locks: prune is two-phase and safe alongside backups), `exclusive`
/// (blocks everything; for future format migrations).
public struct LockInfo: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable { case shared, prune, exclusive }
    public var kind: Kind
    /// When the lock was first taken (stays the same across refreshes).
    public var created: String
    /// When the lock was last refreshed.
    public var refreshed: String
    public var hostname: String
    public var username: String
    public var pid: Int32
    public var operation: String

    public var createdDate: Date { Timestamp.parse(created) ?? .distantPast }
    public var refreshedDate: Date { Timestamp.parse(refreshed) ?? .distantPast }

    /// A refresh time further ahead than this is not a clock skew but a damaged or hostile lock file (one that
    /// says "refreshed in the year 9999" would otherwise never go stale).
    public static let maxFutureSkew: TimeInterval = 3600

    /// Stale: its process is gone on this host, or it was not refreshed for `staleAfter` seconds, or its refresh
    /// time is more than `maxFutureSkew` ahead of ours.
    public func isStale(now: Date, staleAfter: TimeInterval, localHostname: String) -> Bool {
        let age = now.timeIntervalSince(refreshedDate)
        if age > staleAfter || age < -LockInfo.maxFutureSkew { return true }
        if hostname == localHostname && pid > 0 && kill(pid, 0) != 0 && errno == ESRCH { return true }
        return false
    }
}

/// How often held locks are refreshed, and when an unrefreshed lock counts as stale.
public enum LockTiming {
    public static var refreshInterval: TimeInterval {
        (try? Bounds.environment("LIFEBOAT_LOCK_REFRESH", 0.01...3600)).flatMap { $0 } ?? 60
    }
    public static var staleAfter: TimeInterval {
        (try? Bounds.environment("LIFEBOAT_LOCK_STALE", 0.01...(7 * 86400))).flatMap { $0 } ?? 300
    }

    /// Throws if `LIFEBOAT_LOCK_REFRESH` or `LIFEBOAT_LOCK_STALE` is set to something out of range.
    public static func validateEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) throws {
        _ = try Bounds.environment("LIFEBOAT_LOCK_REFRESH", 0.01...3600, env)
        _ = try Bounds.environment("LIFEBOAT_LOCK_STALE", 0.01...(7 * 86400), env)
    }
}

public func localHostname() -> String {
    var buf = [CChar](repeating: 0, count: 256)
    gethostname(&buf, 255)
    return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

public func localUsername() -> String {
    if let u = ProcessInfo.processInfo.environment["USER"] { return u }
    guard let pw = getpwuid(getuid()) else { return "" }
    return String(cString: pw.pointee.pw_name)
}
