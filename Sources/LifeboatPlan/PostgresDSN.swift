import Foundation
import LifeboatCore

/// A PostgreSQL connection string (URI `postgresql://user:password@host:port/db?param=value`, or libpq's
/// `key=value` form) turned into libpq's environment variables, so that the password never reaches argv.
public enum PostgresDSN {
    static let variables = [
        "host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT", "dbname": "PGDATABASE", "user": "PGUSER",
        "password": "PGPASSWORD", "passfile": "PGPASSFILE", "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT",
        "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY", "connect_timeout": "PGCONNECT_TIMEOUT", "application_name": "PGAPPNAME",
        "options": "PGOPTIONS", "target_session_attrs": "PGTARGETSESSIONATTRS", "service": "PGSERVICE",
    ]

    public static func environment(_ dsn: String) throws -> [String: String] {
        let text = dsn.trimmingCharacters(in: .whitespacesAndNewlines)
        var pairs: [(String, String)] = []
        if text.hasPrefix("postgresql://") || text.hasPrefix("postgres://") {
            let rest = text[text.range(of: "://")!.upperBound...]
            let (main, query) = rest.firstIndex(of: "?").map { (rest[..<$0], rest[rest.index(after: $0)...]) } ?? (rest, "")
            let (authority, db) = main.firstIndex(of: "/").map { (main[..<$0], main[main.index(after: $0)...]) } ?? (main, "")
            var hostPart = authority
            if let at = authority.lastIndex(of: "@") {
                let cred = authority[..<at]
                hostPart = authority[authority.index(after: at)...]
                if let colon = cred.firstIndex(of: ":") {
                    pairs.append(("user", try decode(cred[..<colon])))
                    pairs.append(("password", try decode(cred[cred.index(after: colon)...])))
                } else if !cred.isEmpty {
                    pairs.append(("user", try decode(cred)))
                }
            }
            if !hostPart.isEmpty {
                if hostPart.hasPrefix("["), let end = hostPart.firstIndex(of: "]") {
                    pairs.append(("host", String(hostPart[hostPart.index(after: hostPart.startIndex)..<end])))
                    let after = hostPart[hostPart.index(after: end)...]
                    if after.hasPrefix(":") { pairs.append(("port", String(after.dropFirst()))) }
                } else if let colon = hostPart.lastIndex(of: ":") {
                    pairs.append(("host", try decode(hostPart[..<colon])))
                    pairs.append(("port", String(hostPart[hostPart.index(after: colon)...])))
                } else {
                    pairs.append(("host", try decode(hostPart)))
                }
            }
            if !db.isEmpty { pairs.append(("dbname", try decode(db))) }
            for item in query.split(separator: "&") where !item.isEmpty {
                guard let eq = item.firstIndex(of: "=") else { throw LifeboatError.invalid("the PostgreSQL DSN has a parameter without a value") }
                pairs.append((try decode(item[..<eq]), try decode(item[item.index(after: eq)...])))
            }
        } else {
            var i = text.startIndex
            func skipSpace() { while i < text.endIndex, text[i].isWhitespace { i = text.index(after: i) } }
            while true {
                skipSpace()
                if i == text.endIndex { break }
                guard let eq = text[i...].firstIndex(of: "=") else { throw LifeboatError.invalid("the PostgreSQL DSN is neither a postgresql:// URI nor key=value pairs") }
                let key = text[i..<eq].trimmingCharacters(in: .whitespaces)
                i = text.index(after: eq)
                skipSpace()
                var value = ""
                if i < text.endIndex, text[i] == "'" {
                    i = text.index(after: i)
                    var closed = false
                    while i < text.endIndex {
                        let c = text[i]
                        i = text.index(after: i)
                        if c == "\\", i < text.endIndex { value.append(text[i]); i = text.index(after: i); continue }
                        if c == "'" { closed = true; break }
                        value.append(c)
                    }
                    guard closed else { throw LifeboatError.invalid("the PostgreSQL DSN has an unterminated quoted value") }
                } else {
                    while i < text.endIndex, !text[i].isWhitespace {
                        if text[i] == "\\", text.index(after: i) < text.endIndex { i = text.index(after: i) }
                        value.append(text[i]); i = text.index(after: i)
                    }
                }
                pairs.append((key, value))
            }
        }
        var env: [String: String] = [:]
        for (k, v) in pairs {
            guard let name = variables[k] else {
                // Only a plain word is named: anything else may be a piece of a password.
                guard k.count <= 40, k.allSatisfy({ $0.isASCII && ($0.isLetter || $0 == "_") }) else {
                    throw LifeboatError.invalid("the PostgreSQL DSN does not parse as key=value pairs (a parameter name is not a word)")
                }
                throw LifeboatError.invalid("the PostgreSQL DSN has the parameter \"\(k)\", which Lifeboat does not pass on (it knows: \(variables.keys.sorted().joined(separator: ", ")))")
            }
            env[name] = v
        }
        guard !env.isEmpty else { throw LifeboatError.invalid("the PostgreSQL DSN is empty") }
        return env
    }

    static func decode(_ s: Substring) throws -> String {
        guard let d = String(s).removingPercentEncoding else { throw LifeboatError.invalid("the PostgreSQL DSN has a bad %-escape") }
        return d
    }
}
