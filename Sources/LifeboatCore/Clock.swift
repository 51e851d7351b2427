import Foundation

/// "Now", unless `LIFEBOAT_NOW` (RFC 3339 or Unix seconds) injects a clock for tests and drills.
public func currentTime(environment env: [String: String] = ProcessInfo.processInfo.environment) -> Date {
    if let s = env["LIFEBOAT_NOW"], let d = currentTimeOverride(s) { return d }
    return Date()
}

/// The time `LIFEBOAT_NOW` names (RFC 3339, or Unix seconds from 1970 to 9999), or nil if it names none.
public func currentTimeOverride(_ s: String) -> Date? {
    if let t = try? Bounds.number(s, 0...253_402_300_799, "LIFEBOAT_NOW") { return Date(timeIntervalSince1970: t) }
    return Timestamp.parse(s)
}
