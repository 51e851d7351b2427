import Crypto
import Foundation
import HummingbirdBcrypt
import Synchronization

/// Users and bcrypt password hashes from an Apache-style htpasswd file (`htpasswd -B`).
///
/// Successful checks are remembered for a minute (as a SHA-256 of the password, never the password)
/// so that a client's many requests do not each pay for bcrypt.
///
/// An unknown user costs what a known one does: the password is checked against a stand-in hash of the
/// highest cost in the file, so the time of an answer does not tell which users exist. Credentials holding a
/// NUL are refused before bcrypt, which would read `secret\0junk` as `secret`.
public final class Htpasswd: Sendable {
    let entries: [String: String]
    /// Checked for unknown users; never matches a password a client can send (NUL is refused first).
    let standIn: String
    let bcryptVerify: @Sendable (String, String) -> Bool
    let cache = Mutex<[String: (digest: Data, until: Date)]>([:])
    public var users: [String] { entries.keys.sorted() }

    public convenience init(path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ServeError("cannot read the htpasswd file \(path)")
        }
        try self.init(text: String(decoding: data, as: UTF8.self), source: path)
    }

    /// `verify` is bcrypt's check of (password, hash), replaceable in tests to count the checks.
    public init(text: String, source: String = "htpasswd",
                verify: @escaping @Sendable (String, String) -> Bool = { Bcrypt.verify($0, hash: $1) }) throws {
        var e: [String: String] = [:]
        var cost: UInt8 = 4
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
            guard let c = Htpasswd.cost(of: hash) else {
                throw ServeError("\(source):\(n + 1): user \(user) has a damaged bcrypt hash (cost 04 to 31 expected after $2y$)")
            }
            cost = max(cost, c)
            // $2y$ (Apache) and $2b$ (OpenBSD) are the same algorithm.
            if hash.hasPrefix("$2y$") { hash = "$2b$" + hash.dropFirst(4) }
            e[user] = hash
        }
        entries = e
        bcryptVerify = verify
        var salt = [UInt8](repeating: 0, count: 16)
        for i in salt.indices { salt[i] = UInt8.random(in: 0...255) }
        standIn = Bcrypt.hash("stand-in \(Data(salt).base64EncodedString())", cost: cost)
    }

    /// The cost in `$2b$NN$…`, if it is a valid one.
    static func cost(of hash: String) -> UInt8? {
        let u = Array(hash.utf8)
        guard u.count > 7, u[6] == UInt8(ascii: "$"), let c = UInt8(String(decoding: u[4..<6], as: UTF8.self)),
              (4...31).contains(c) else { return nil }
        return c
    }

    /// Whether `password` is right for `user`.
    public func verify(user: String, password: String) -> Bool {
        guard !user.utf8.contains(0), !password.utf8.contains(0) else { return false }
        guard let hash = entries[user] else {
            _ = bcryptVerify(password, standIn)
            return false
        }
        let digest = Data(SHA256.hash(data: Data("\(user)\u{0}\(password)".utf8)))
        let now = Date()
        if cache.withLock({ c in c[user].map { $0.digest == digest && $0.until > now } ?? false }) { return true }
        guard bcryptVerify(password, hash) else { return false }
        cache.withLock { $0[user] = (digest, now.addingTimeInterval(60)) }
        return true
    }
}

/// A configuration or start-up problem of the server.
public struct ServeError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
