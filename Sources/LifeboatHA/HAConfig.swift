import Foundation
import LifeboatConfig
import LifeboatCore
import LifeboatFailover
import Yams

/// The `ha:` section (of lifeboat.yaml, or a file of its own): the cluster's shared settings and this node's block.
/// Everything is checked when the file is read, each error with its line and column.
public struct HAConfig: Sendable, Equatable {
    public struct PostgresNode: Sendable, Equatable {
        public var binDir = "/usr/lib/postgresql/15/bin"
        public var dataDir: String
        /// Where this node's PostgreSQL listens for the others and for clients.
        public var listen: Endpoint
        public var replicationUser = "replicator"
        /// The replication user's password, in a file (never in this file, argv or the store).
        public var passwordFile: String?
        /// The operating-system user PostgreSQL runs as.
        public var runAs = "postgres"
        /// The database superuser the agent connects as over the local socket (peer authentication as `run_as`).
        public var superuser = "postgres"
        /// Where the server's Unix socket lives (default: `<data_dir>.run`, beside the data directory: never inside
        /// it, where pg_rewind would try to copy the socket, and never shared by two nodes on one host).
        public var socketDir: String?
        /// Server settings given on its command line (`-c name=value`) at every start, over the agent's own
        /// (`wal_level`, `hot_standby`, `wal_log_hints`, `max_wal_senders`, `wal_keep_size`, …).
        public var parameters: [String: String] = [:]
        /// Lines appended to `pg_hba.conf` when this node bootstraps the cluster (`initdb`); the default lets the
        /// replication user replicate and rewind from anywhere with a password (scram-sha-256).
        public var pgHba: [String]? = nil
        /// When `pg_rewind` fails (the old primary's WAL is gone), move the data directory aside (kept, renamed
        /// `<data_dir>.rewind-failed-<time>`) and copy the leader anew; false: stay stopped and say so.
        public var recloneOnRewindFailure = true
        /// The socket directory in force.
        public var socketDirectory: String { socketDir ?? dataDir + ".run" }
    }

    public var settings: HASettings
    public var etcdEndpoints: [String]
    /// `synchronous_standby_names` managed: no acknowledged write is lost (not built yet: docs/HA.md).
    public var synchronous = false
    /// This node's API (`/primary`, `/replica`, `/health`, `/cluster`).
    public var api: Endpoint
    public var postgres: PostgresNode
    /// Linux softdog for a stuck agent (validated; not used yet).
    public var watchdog = false
    /// The token that actions on the API need (switchover, maintenance): `node.token_file`, else the agent's
    /// `agent.token_file` when the section sits in lifeboat.yaml.
    public var tokenFile: String?

    public static let ttlRange: ClosedRange<Double> = 2...3600

    public static func load(_ path: String) throws -> HAConfig {
        guard let data = FileManager.default.contents(atPath: path) else { throw ConfigError(path, nil, "cannot read the file") }
        return try parse(String(decoding: data, as: UTF8.self), path: path)
    }

    /// A file whose top has `ha:` (lifeboat.yaml, whose other sections are read by their own parsers) or is the
    /// section itself.
    public static func parse(_ text: String, path: String) throws -> HAConfig {
        let y = YAMLReader(path: path)
        let (top, root) = try y.document(text, describedAs: "`ha:`")
        if let ha = top["ha"] {
            var c = try parse(try y.mapping(ha, "`ha:`"), owner: ha, reader: y)
            if c.tokenFile == nil, let a = top["agent"]?.mapping { c.tokenFile = try y.string(a, "token_file") }
            return c
        }
        return try parse(top, owner: root, reader: y)
    }

    public static func parse(_ m: Yams.Node.Mapping, owner: Yams.Node?, reader y: YAMLReader) throws -> HAConfig {
        try y.keys(m, ["cluster", "etcd", "ttl", "maximum_lag_on_failover", "maximum_replication_broken", "synchronous", "node"])
        let cluster = try y.string(m, "cluster", required: true, owner: owner)!
        guard HASettings.validName(cluster) else { throw y.error(m["cluster"], "`cluster`: \"\(cluster.prefix(80))\": use 1 to 63 letters, digits, '-', '_' or '.'") }
        guard let e = m["etcd"] else { throw y.error(owner, "`etcd: {endpoints: [http://HOST:2379, …]}` is required") }
        let em = try y.mapping(e, "`etcd:`")
        try y.keys(em, ["endpoints"])
        guard let endpoints = try y.strings(em, "endpoints"), (1...16).contains(endpoints.count) else {
            throw y.error(em["endpoints"] ?? e, "`etcd.endpoints` must list 1 to 16 addresses such as http://etcd1:2379")
        }
        for (i, s) in endpoints.enumerated() {
            guard validEndpoint(s) else {
                throw y.error(em["endpoints"]?.sequence?[i] ?? em["endpoints"], "`etcd.endpoints`: \"\(s.prefix(100))\" is not http://HOST:PORT")
            }
        }
        guard let n = m["node"] else { throw y.error(owner, "`node:` (this host's name, api and postgres) is required") }
        let nm = try y.mapping(n, "`node:`")
        try y.keys(nm, ["name", "api", "postgres", "fencing", "no_failover", "token_file"])
        let name = try y.string(nm, "name", required: true, owner: n)!
        guard HASettings.validName(name) else { throw y.error(nm["name"], "`name`: \"\(name.prefix(80))\": use 1 to 63 letters, digits, '-', '_' or '.'") }

        var s = HASettings(cluster: cluster, node: name)
        s.ttl = try y.duration(m, "ttl", ttlRange) ?? s.ttl
        s.fencingDeadline = s.ttl * 0.7
        s.maximumReplicationBroken = try y.duration(m, "maximum_replication_broken", 0...(7 * 86400)) ?? max(30, 3 * s.ttl)
        if let l = m["maximum_lag_on_failover"] {
            guard let text = l.string ?? l.int.map(String.init), let v = parseSize(text), v <= 1 << 50 else {
                throw y.error(l, "`maximum_lag_on_failover` must be a size such as 1MB, 16MB or 1048576 (bytes), at most 1PB")
            }
            s.maximumLagOnFailover = v
        }
        s.noFailover = try y.bool(nm, "no_failover") ?? false
        var watchdog = false
        if let f = nm["fencing"] {
            let fm = try y.mapping(f, "`fencing:`")
            try y.keys(fm, ["watchdog", "deadline"])
            watchdog = try y.bool(fm, "watchdog") ?? false
            if let d = try y.duration(fm, "deadline", 0.001...3600) {
                guard d >= s.ttl / 3, d <= s.ttl * 0.9 else {
                    throw y.error(fm["deadline"], "`fencing.deadline` must lie between a third of `ttl` and 90% of it (\(describeSeconds(s.ttl / 3)) to \(describeSeconds(s.ttl * 0.9))): the primary must stop taking writes before its lease can expire elsewhere")
                }
                s.fencingDeadline = d
            }
        }
        do { try s.validate() } catch { throw y.error(owner, "\(error)") }

        let api = try y.endpoint(nm, "api", owner: n)
        guard let p = nm["postgres"] else { throw y.error(n, "`postgres: {data_dir: …, listen: HOST:PORT}` is required") }
        let pm = try y.mapping(p, "`postgres:`")
        try y.keys(pm, ["bin_dir", "data_dir", "listen", "replication_user", "password_file", "run_as", "superuser", "socket_dir",
                         "parameters", "pg_hba", "reclone_on_rewind_failure"])
        let dataDir = try y.string(pm, "data_dir", required: true, owner: p)!
        guard dataDir.hasPrefix("/"), dataDir != "/" else { throw y.error(pm["data_dir"], "`data_dir` must be an absolute path (not /)") }
        var pg = PostgresNode(dataDir: dataDir, listen: try y.endpoint(pm, "listen", owner: p))
        if let b = try y.string(pm, "bin_dir") {
            guard b.hasPrefix("/") else { throw y.error(pm["bin_dir"], "`bin_dir` must be an absolute path") }
            pg.binDir = b
        }
        if let u = try y.string(pm, "replication_user") {
            guard HASettings.validName(u) else { throw y.error(pm["replication_user"], "`replication_user`: \"\(u.prefix(80))\" is not a plain role name") }
            pg.replicationUser = u
        }
        pg.passwordFile = try y.string(pm, "password_file")
        if let r = try y.string(pm, "run_as") {
            guard HASettings.validName(r) else { throw y.error(pm["run_as"], "`run_as`: \"\(r.prefix(80))\" is not a user name") }
            pg.runAs = r
        }
        if let u = try y.string(pm, "superuser") {
            guard HASettings.validName(u) else { throw y.error(pm["superuser"], "`superuser`: \"\(u.prefix(80))\" is not a plain role name") }
            pg.superuser = u
        }
        if let d = try y.string(pm, "socket_dir") {
            guard d.hasPrefix("/"), d.utf8.count <= 80, plainSetting(d) else {
                throw y.error(pm["socket_dir"], "`socket_dir` must be an absolute path of at most 80 plain characters (a socket's path is limited to 107 bytes)")
            }
            pg.socketDir = d
        } else if dataDir.utf8.count > 76 || !plainSetting(dataDir) {
            throw y.error(pm["data_dir"], "`data_dir` is long or holds unusual characters: give `socket_dir:` (an absolute path of at most 80 plain characters) for the server's socket")
        }
        if let params = pm["parameters"] {
            let map = try y.mapping(params, "`parameters:`")
            for (k, v) in map {
                guard let name = k.string, name.utf8.count <= 63, !name.isEmpty,
                      name.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5F || $0 == 0x2E }) else {
                    throw y.error(k, "`parameters`: \"\(k.string?.prefix(80) ?? "?")\" is not a PostgreSQL setting name")
                }
                // Values go into a settings file, single quotes doubled: anything printable on one line.
                guard let value = v.string ?? v.int.map(String.init), value.utf8.count <= 1024,
                      value.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7F }) else {
                    throw y.error(v, "`parameters.\(name)`: give a value on one line, at most 1024 bytes, without control characters")
                }
                guard !["port", "listen_addresses", "unix_socket_directories", "data_directory", "primary_conninfo", "cluster_name"].contains(name) else {
                    throw y.error(k, "`parameters.\(name)` is set by the agent from `listen`, `socket_dir`, `data_dir` and the cluster")
                }
                // Directives and file locations, not settings: they would make the server read other files.
                guard !["include", "include_if_exists", "include_dir", "config_file", "hba_file", "ident_file"].contains(name) else {
                    throw y.error(k, "`parameters.\(name)` is not a setting the agent passes on (it would make the server read another file)")
                }
                pg.parameters[name] = value
            }
        }
        pg.recloneOnRewindFailure = try y.bool(pm, "reclone_on_rewind_failure") ?? true
        if let lines = try y.strings(pm, "pg_hba") {
            for (i, l) in lines.enumerated() where l.contains("\n") || l.contains("\r") || l.utf8.count > 1024 {
                throw y.error(pm["pg_hba"]?.sequence?[i] ?? pm["pg_hba"], "`pg_hba`: one line per entry, at most 1024 bytes")
            }
            pg.pgHba = lines
        }
        var tokenFile: String?
        if let t = try y.string(nm, "token_file") {
            guard t.hasPrefix("/") else { throw y.error(nm["token_file"], "`token_file` must be an absolute path") }
            tokenFile = t
        }
        s.synchronous = try y.bool(m, "synchronous") ?? false
        return HAConfig(settings: s, etcdEndpoints: endpoints, synchronous: s.synchronous, api: api,
                        postgres: pg, watchdog: watchdog, tokenFile: tokenFile)
    }

    /// A path that PostgreSQL's settings and libpq's connection strings take as it is (no quoting needed).
    public static func plainSetting(_ s: String) -> Bool {
        s.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || " .,:/_-=*@%()".utf8.contains(c)
        }
    }

    /// An etcd endpoint: `http(s)://HOST[:PORT]`, nothing else (no path, query or credentials).
    public static func validEndpoint(_ s: String) -> Bool {
        guard let u = URL(string: s), u.scheme == "http" || u.scheme == "https", u.host != nil else { return false }
        return (u.path.isEmpty || u.path == "/") && u.query == nil && u.user == nil
    }

    /// Bytes in `1048576`, `512kB`, `1MB`, `16MiB`, `1GB`: units as PostgreSQL reads them (kB, MB, GB, TB are
    /// powers of 1024; KiB, MiB, GiB, TiB too); nil for anything else or past 2^60.
    public static func parseSize(_ text: String) -> UInt64? {
        let t = text.trimmingCharacters(in: .whitespaces)
        let digits = t.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty, digits.count <= 19, let n = UInt64(digits) else { return nil }
        let unit = t.dropFirst(digits.count).trimmingCharacters(in: .whitespaces)
        let shifts: [String: UInt64] = ["": 0, "B": 0, "kB": 10, "KB": 10, "KiB": 10, "MB": 20, "MiB": 20, "GB": 30, "GiB": 30, "TB": 40, "TiB": 40]
        guard let shift = shifts[unit] else { return nil }
        guard n <= (UInt64(1) << 60) >> shift else { return nil }
        return n << shift
    }
}
