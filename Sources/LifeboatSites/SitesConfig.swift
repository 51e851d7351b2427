import Foundation
import LifeboatCore
import LifeboatConfig
import Yams

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
    /// Bandwidth limits for this site in KiB/s (`limit_upload`, `limit_download`).
    public var limitUpload: Int? = nil
    public var limitDownload: Int? = nil
    /// For a site that refuses deletes (an append-only server, S3 Object Lock): where deletes go instead (the
    /// server's path without append-only, or a location whose credentials may delete), with its own credentials
    /// file. The same repository, so the same password.
    public var adminRepository: String? = nil
    public var adminCredentialsFile: String? = nil
    /// S3 Object Lock on what is written to this site: days and mode ("governance" or "compliance").
    public var objectLockDays: Int? = nil
    public var objectLockMode: String? = nil
}

extension Site {
    public init(name: String, repository: String, role: Role, passwordFile: String?, credentialsFile: String?) {
        self.init(name: name, repository: repository, role: role, passwordFile: passwordFile, credentialsFile: credentialsFile,
                  limitUpload: nil, limitDownload: nil, adminRepository: nil, adminCredentialsFile: nil)
    }
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
///     limit_upload: 2048       # KiB/s (also limit_download)
///     object_lock: {days: 30, mode: governance}   # S3 Object Lock on what is written
///     admin_repository: s3:https://s3.example.com/backups/home   # where deletes (prune) go, with
///     admin_credentials_file: /etc/lifeboat/offsite-admin.env    # credentials allowed to delete
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

    public init(sites: [Site], stateFile: String, path: String) { self.sites = sites; self.stateFile = stateFile; self.path = path }

    public var primary: Site { sites.first { $0.role == .primary }! }
    public var replicas: [Site] { sites.filter { $0.role == .replica } }

    public static func load(_ path: String) throws -> SitesConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError(path, nil, "cannot read the sites file")
        }
        return try parse(String(decoding: data, as: UTF8.self), path: path)
    }

    public static func parse(_ text: String, path: String) throws -> SitesConfig {
        let y = YAMLReader(path: path)
        let (top, root) = try y.document(text, describedAs: "`sites:`")
        try y.keys(top, ["sites", "replication"])
        return try parse(top, root: root, reader: y)
    }

    /// The `sites:` and `replication:` sections of a mapping (the sites file's, or the plan file's: its other
    /// keys are the caller's to check; `replicationKeys` are further keys its `replication:` may hold).
    public static func parse(_ top: Yams.Node.Mapping, root: Yams.Node?, reader y: YAMLReader, replicationKeys: [String] = []) throws -> SitesConfig {
        let path = y.path
        guard let list = top["sites"]?.sequence else { throw y.error(top["sites"] ?? root, "`sites:` must be a list") }
        var sites: [Site] = []
        for item in list {
            let m = try y.mapping(item, "each site")
            try y.keys(m, ["name", "repository", "role", "password_file", "credentials_file", "limit_upload", "limit_download",
                           "admin_repository", "admin_credentials_file", "object_lock"])
            let name = try y.string(m, "name", required: true, owner: item)!
            guard name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." }) else {
                throw y.error(m["name"], "site name \"\(name)\" may hold letters, digits, - _ . only")
            }
            guard !sites.contains(where: { $0.name == name }) else { throw y.error(m["name"], "duplicate site name \"\(name)\"") }
            guard let role = try y.enumValue(m, "role", Site.Role.self) else { throw y.error(item, "missing `role` (primary or replica)") }
            sites.append(Site(name: name, repository: try y.string(m, "repository", required: true, owner: item)!, role: role,
                              passwordFile: try y.string(m, "password_file"),
                              credentialsFile: try y.string(m, "credentials_file"),
                              limitUpload: try y.int(m, "limit_upload", 1...(10 << 20)),
                              limitDownload: try y.int(m, "limit_download", 1...(10 << 20)),
                              adminRepository: try y.string(m, "admin_repository"),
                              adminCredentialsFile: try y.string(m, "admin_credentials_file")))
            if m["admin_credentials_file"] != nil && m["admin_repository"] == nil {
                throw y.error(m["admin_credentials_file"], "site \(name): admin_credentials_file without admin_repository")
            }
            if let l = m["object_lock"] {
                let lm = try y.mapping(l, "`object_lock:`")
                try y.keys(lm, ["days", "mode"])
                sites[sites.count - 1].objectLockDays = try y.int(lm, "days", 1...36500)
                guard sites[sites.count - 1].objectLockDays != nil else { throw y.error(l, "site \(name): object_lock needs `days`") }
                if let mode = try y.string(lm, "mode") {
                    guard ["governance", "compliance"].contains(mode) else { throw y.error(lm["mode"], "`mode`: governance or compliance") }
                    sites[sites.count - 1].objectLockMode = mode
                }
                guard sites[sites.count - 1].repository.hasPrefix("s3:") else { throw y.error(l, "site \(name): object_lock applies to s3: repositories only") }
            }
        }
        let primaries = sites.filter { $0.role == .primary }.count
        guard primaries == 1 else { throw y.error(top["sites"], "exactly one site must be primary (found \(primaries))") }
        guard !sites.filter({ $0.role == .replica }).isEmpty else { throw y.error(top["sites"], "no replica site") }
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        let home = ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()
        let stateDefault = "\(home)/.local/state/lifeboat/replication-\(String(UInt64(bitPattern: Int64(absolute.hashValueStable)), radix: 16)).json"
        var config = SitesConfig(sites: sites, stateFile: stateDefault, path: path)
        if let r = top["replication"] {
            let rm = try y.mapping(r, "`replication:`")
            try y.keys(rm, ["interval", "max_backoff", "state_file"] + replicationKeys)
            config.interval = try y.duration(rm, "interval") ?? config.interval
            config.maxBackoff = try y.duration(rm, "max_backoff") ?? config.maxBackoff
            config.stateFile = try y.string(rm, "state_file") ?? config.stateFile
        }
        return config
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
