import Foundation
import LifeboatCore
import Yams

/// A configuration problem, with the file, line and column it was found at.
public struct ConfigError: Error, CustomStringConvertible {
    public var description: String
    public init(_ file: String, _ mark: Mark?, _ message: String) {
        description = mark.map { "\(file):\($0.line):\($0.column): \(message)" } ?? "\(file): \(message)"
    }
}

/// One place a repository lives.
public struct Site: Sendable, Equatable {
    public enum Role: String, Sendable { case primary, replica }
    public var name: String
    /// Repository location as `-r` takes it.
    public var repository: String
    public var role: Role
    /// File holding the repository password.
    public var passwordFile: String?
    /// File of `KEY=VALUE` lines added to the environment when this site is opened
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `LIFEBOAT_REST_PASSWORD`, `RCLONE_CONFIG_…`).
    public var credentialsFile: String?
}

/// The site list (`sites.yaml`), shared by `replicate`, `sites status` and, later, the daemon.
///
/// ```yaml
/// sites:
///   - {name: home, repository: /srv/lifeboat/repo, password_file: /etc/lifeboat/home.pw, role: primary}
///   - name: offsite
///     repository: s3:https://s3.example.com/backups/home
///     password_file: /etc/lifeboat/offsite.pw
///     credentials_file: /etc/lifeboat/offsite.env
///     role: replica
/// replication:
///   interval: 60s            # how often --watch looks for new snapshots
///   max_backoff: 15m         # longest wait before retrying a site that failed
///   state_file: /var/lib/lifeboat/replication.json
/// ```
public struct SitesConfig: Sendable {
    public var sites: [Site]
    public var interval: Double = 60
    public var maxBackoff: Double = 900
    public var stateFile: String
    public var path: String

    public var primary: Site { sites.first { $0.role == .primary }! }
    public var replicas: [Site] { sites.filter { $0.role == .replica } }

    public static func load(_ path: String) throws -> SitesConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError(path, nil, "cannot read the sites file")
        }
        return try parse(String(decoding: data, as: UTF8.self), path: path)
    }

    public static func parse(_ text: String, path: String) throws -> SitesConfig {
        let root: Yams.Node?
        do { root = try Yams.compose(yaml: text) } catch let e as YamlError {
            throw ConfigError(path, nil, "not valid YAML: \(e)")
        }
        guard let top = root?.mapping else { throw ConfigError(path, root?.mark, "expected a mapping with `sites:`") }
        try checkKeys(top, allowed: ["sites", "replication"], path: path)
        guard let list = top["sites"]?.sequence else { throw ConfigError(path, top["sites"]?.mark ?? root?.mark, "`sites:` must be a list") }
        var sites: [Site] = []
        for item in list {
            guard let m = item.mapping else { throw ConfigError(path, item.mark, "each site is a mapping") }
            try checkKeys(m, allowed: ["name", "repository", "role", "password_file", "credentials_file"], path: path)
            func str(_ k: String, required: Bool = true) throws -> String? {
                guard let n = m[k] else {
                    if required { throw ConfigError(path, item.mark, "site needs `\(k)`") }
                    return nil
                }
                guard let s = n.string, !s.isEmpty else { throw ConfigError(path, n.mark, "`\(k)` must be a non-empty string") }
                return s
            }
            let name = try str("name")!
            guard name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." }) else {
                throw ConfigError(path, m["name"]?.mark, "site name \"\(name)\" may hold letters, digits, - _ . only")
            }
            guard !sites.contains(where: { $0.name == name }) else { throw ConfigError(path, m["name"]?.mark, "duplicate site name \"\(name)\"") }
            let roleText = try str("role")!
            guard let role = Site.Role(rawValue: roleText) else { throw ConfigError(path, m["role"]?.mark, "role must be primary or replica, not \"\(roleText)\"") }
            sites.append(Site(name: name, repository: try str("repository")!, role: role,
                              passwordFile: try str("password_file", required: false),
                              credentialsFile: try str("credentials_file", required: false)))
        }
        let primaries = sites.filter { $0.role == .primary }.count
        guard primaries == 1 else { throw ConfigError(path, top["sites"]?.mark, "exactly one site must be primary (found \(primaries))") }
        guard !sites.filter({ $0.role == .replica }).isEmpty else { throw ConfigError(path, top["sites"]?.mark, "no replica site") }
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        let home = ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()
        let stateDefault = "\(home)/.local/state/lifeboat/replication-\(String(UInt64(bitPattern: Int64(absolute.hashValueStable)), radix: 16)).json"
        var config = SitesConfig(sites: sites, stateFile: stateDefault, path: path)
        if let r = top["replication"] {
            guard let rm = r.mapping else { throw ConfigError(path, r.mark, "`replication:` must be a mapping") }
            try checkKeys(rm, allowed: ["interval", "max_backoff", "state_file"], path: path)
            if let n = rm["interval"] { config.interval = try seconds(n, path: path) }
            if let n = rm["max_backoff"] { config.maxBackoff = try seconds(n, path: path) }
            if let n = rm["state_file"] {
                guard let s = n.string, !s.isEmpty else { throw ConfigError(path, n.mark, "`state_file` must be a path") }
                config.stateFile = s
            }
        }
        return config
    }

    static func checkKeys(_ m: Yams.Node.Mapping, allowed: Set<String>, path: String) throws {
        for k in m.keys {
            guard let s = k.string, allowed.contains(s) else {
                throw ConfigError(path, k.mark, "unknown key \"\(k.string ?? "?")\" (expected one of: \(allowed.sorted().joined(separator: ", ")))")
            }
        }
    }

    static func seconds(_ n: Yams.Node, path: String) throws -> Double {
        if let i = n.int { return Double(i) }
        guard let s = n.string, let v = try? parseSeconds(s), v > 0 else {
            throw ConfigError(path, n.mark, "expected a duration such as 30s, 5m or 1h")
        }
        return v
    }
}

extension String {
    /// FNV-1a: stable across runs (Swift's hashValue is seeded per process).
    var hashValueStable: Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return Int(bitPattern: UInt(h))
    }
}

/// Reads a `KEY=VALUE` file (blank lines and `#` comments ignored; optional `export `).
public func readEnvironmentFile(_ path: String) throws -> [String: String] {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw LifeboatError.invalid("cannot read the credentials file \(path)")
    }
    var out: [String: String] = [:]
    for raw in String(decoding: data, as: UTF8.self).split(separator: "\n") {
        var line = raw.trimmingCharacters(in: .whitespaces)
        if line.isEmpty || line.hasPrefix("#") { continue }
        if line.hasPrefix("export ") { line = String(line.dropFirst(7)) }
        guard let eq = line.firstIndex(of: "=") else { throw LifeboatError.invalid("\(path): expected KEY=VALUE, got \"\(line)\"") }
        var value = String(line[line.index(after: eq)...])
        if value.count >= 2, (value.hasPrefix("\"") && value.hasSuffix("\"")) || (value.hasPrefix("'") && value.hasSuffix("'")) {
            value = String(value.dropFirst().dropLast())
        }
        out[String(line[..<eq])] = value
    }
    return out
}
