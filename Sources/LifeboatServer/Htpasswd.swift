import Crypto
import Foundation
import HummingbirdBcrypt
import Synchronization

/// Users and bcrypt password hashes from an Apache-style htpasswd file (`htpasswd -B`).
///
/// Successful checks are remembered for a minute (as a SHA-256 of the password, never the password)
/// so that a client's many requests do not each pay for bcrypt.
public final class Htpasswd: Sendable {
    let entries: [String: String]
    let cache = Mutex<[String: (digest: Data, until: Date)]>([:])
    public var users: [String] { entries.keys.sorted() }

    public convenience init(path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ServeError("cannot read the htpasswd file \(path)")
        }
        try self.init(text: String(decoding: data, as: UTF8.self), source: path)
    }

    public init(text: String, source: String = "htpasswd") throws {
        var e: [String: String] = [:]
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let colon = line.firstIndex(of: ":") else {
                throw ServeError("\(source):\(n + 1): expected user:hash")
            }
            let user = String(line[..<colon])
            var hash = String(line[line.index(after: colon)...])
            guard hash.hasPrefix("$2y$") || hash.hasPrefix("$2b$") || hash.hasPrefix("$2a$") else {
                throw ServeError("\(source):\(n + 1): user \(user) has no bcrypt hash; create entries with `htpasswd -B`")
            }
            // $2y$ (Apache) and $2b$ (OpenBSD) are the same algorithm.
            if hash.hasPrefix("$2y$") { hash = "$2b$" + hash.dropFirst(4) }
            e[user] = hash
        }
        entries = e
    }

    /// Whether `password` is right for `user`.
    public func verify(user: String, password: String) -> Bool {
        guard let hash = entries[user] else { return false }
        let digest = Data(SHA256.hash(data: Data("\(user)\u{0}\(password)".utf8)))
        let now = Date()
        if cache.withLock({ c in c[user].map { $0.digest == digest && $0.until > now } ?? false }) { return true }
        guard Bcrypt.verify(password, hash: hash) else { return false }
        cache.withLock { $0[user] = (digest, now.addingTimeInterval(60)) }
        return true
    }
}

/// A configuration or start-up problem of the server.
public struct ServeError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
