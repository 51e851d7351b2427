import Foundation

/// What a dashboard user may do: look, or also act (back up, drill, pause, backend actions).
public enum DashboardRole: String, Sendable, Equatable, Codable {
    case readOnly = "read-only"
    case `operator`
}

/// A logged-in browser: the cookie's secret, who it is, and the token its forms must carry (CSRF).
public struct DashboardSession: Sendable, Equatable {
    public var id: String
    public var user: String
    public var role: DashboardRole
    public var csrf: String
    public var created: Double
    public var lastSeen: Double
}

/// The sessions of one agent, in memory (a restart logs everyone out), pure: the caller passes the time and
/// keeps the table behind a lock. Bounded: at most `capacity` sessions, the least recently seen dropped first;
/// a session ends after `idle` seconds unused or `lifetime` seconds in all.
public struct SessionTable: Sendable {
    public static let cookieName = "lifeboat_session"
    public let idle: Double
    public let lifetime: Double
    public let capacity: Int
    var sessions: [String: DashboardSession] = [:]

    public init(idle: Double = 30 * 60, lifetime: Double = 12 * 3600, capacity: Int = 1000) {
        self.idle = max(1, idle)
        self.lifetime = max(1, lifetime)
        self.capacity = max(1, capacity)
    }

    public var count: Int { sessions.count }

    /// A new session for `user` (the caller has checked the password).
    public mutating func open(user: String, role: DashboardRole, now: Double) -> DashboardSession {
        expire(now: now)
        if sessions.count >= capacity, let oldest = sessions.values.min(by: { $0.lastSeen < $1.lastSeen }) {
            sessions[oldest.id] = nil
        }
        let s = DashboardSession(id: SessionTable.secret(), user: user, role: role, csrf: SessionTable.secret(), created: now, lastSeen: now)
        sessions[s.id] = s
        return s
    }

    /// The live session of cookie value `id`, marked as seen now unless `touch` is false (the live refresh, which is
    /// no sign of a user: an open tab does not keep a session alive); nil when unknown or expired (then removed).
    public mutating func lookup(_ id: String, now: Double, touch: Bool = true) -> DashboardSession? {
        guard id.utf8.count == 64, var s = sessions[id] else { return nil }
        guard now - s.lastSeen <= idle, now - s.created <= lifetime, now >= s.created else {
            sessions[id] = nil
            return nil
        }
        if touch {
            s.lastSeen = max(s.lastSeen, now)
            sessions[id] = s
        }
        return s
    }

    public mutating func close(_ id: String) { sessions[id] = nil }

    /// Every session of `user` ends (a password change, a user removed from the file).
    public mutating func close(user: String) { sessions = sessions.filter { $0.value.user != user } }

    mutating func expire(now: Double) {
        sessions = sessions.filter { now - $0.value.lastSeen <= idle && now - $0.value.created <= lifetime }
    }

    /// 32 bytes from the system's generator (getrandom), as 64 hex digits.
    static func secret() -> String {
        var g = SystemRandomNumberGenerator()
        var s = ""
        s.reserveCapacity(64)
        for _ in 0..<4 {
            let v = g.next()
            s += String(format: "%016llx", v)
        }
        return s
    }

    /// The session cookie's value in a `Cookie:` header (`a=1; lifeboat_session=…`), if it has one.
    public static func cookie(in header: String?) -> String? {
        guard let header, header.utf8.count <= 8192 else { return nil }
        for part in header.split(separator: ";") {
            let kv = part.split(separator: "=", maxSplits: 1)
            if kv.count == 2, kv[0].trimmingCharacters(in: .whitespaces) == cookieName {
                return kv[1].trimmingCharacters(in: .whitespaces)
            }
        }
        return nil
    }

    /// The `Set-Cookie` value that opens `session`: HTTP-only, same-site strict, `Secure` over TLS.
    public static func setCookie(_ session: DashboardSession, secure: Bool, lifetime: Double) -> String {
        "\(cookieName)=\(session.id); Path=/; HttpOnly; SameSite=Strict; Max-Age=\(Int(lifetime))\(secure ? "; Secure" : "")"
    }

    /// The `Set-Cookie` value that removes the cookie.
    public static func clearCookie(secure: Bool) -> String {
        "\(cookieName)=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0\(secure ? "; Secure" : "")"
    }
}
