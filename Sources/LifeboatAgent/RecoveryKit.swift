import Foundation
import LifeboatCore
import LifeboatPlan
import LifeboatReplication
import LifeboatRepository
import LifeboatSites

/// Recovery from nothing: the agent backs up its own plan and state database to every site (the source
/// `lifeboat-agent`, never a password or credentials file), and `lifeboat recovery-kit` writes the one page to keep
/// offline: each site and how to reach it, its repository ID and key fingerprints, where every secret lived, and the
/// commands that rebuild the host and restore every source.
public enum RecoveryKit {
    /// The name of the agent's own source.
    public static let selfSource = "lifeboat-agent"

    /// The folder the agent's own backup is staged in (a copy of the plan file and of the state database).
    public static func stagingDirectory(_ plan: Plan) -> String {
        ((plan.agent.state as NSString).deletingLastPathComponent as NSString).appendingPathComponent("self-backup")
    }

    /// The agent's own source: the staging folder, on `agent.self_backup` (default every hour), keeping 24 hourly
    /// and 30 daily copies.
    public static func selfBackupSource(_ plan: Plan) -> Source {
        let policy = RetentionPolicy(last: 0, hourly: 24, daily: 30, weekly: 0, monthly: 0, yearly: 0)
        return Source(name: selfSource, kind: .files(paths: [stagingDirectory(plan)], exclude: []), schedule: plan.agent.selfBackup,
                      scheduleText: plan.agent.selfBackupText, retention: policy, objectives: nil, hooks: nil, sites: [],
                      location: Location(file: plan.path), scheduleLocation: Location(file: plan.path),
                      rpoLocation: nil)
    }

    /// The plan as the agent runs it: with its own source (unless the plan names a source so, which
    /// `config validate` refuses).
    public static func withSelfBackup(_ plan: Plan) -> Plan {
        guard !plan.sources.contains(where: { $0.name == selfSource }) else { return plan }
        var p = plan
        p.sources.append(selfBackupSource(plan))
        return p
    }

    /// Stages the agent's own backup: the plan file as it is, and a consistent copy of the state database.
    public static func stage(_ plan: Plan, store: StateStore) throws {
        let dir = stagingDirectory(plan)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        guard let text = FileManager.default.contents(atPath: plan.path) else {
            throw LifeboatError(.io, "cannot read the plan file \(plan.path) to back it up")
        }
        try writeFileAtomically(dir + "/lifeboat.yaml", text)
        let copy = dir + "/agent.db"
        try? FileManager.default.removeItem(atPath: copy)
        try store.copy(to: copy)
    }

    /// What one site told when it was opened for the kit.
    public struct SiteFacts: Sendable {
        public var site: Site
        public var repositoryID: String?
        public var keyIDs: [String] = []
        public var snapshots: Int?
        public var newest: [String: Date] = [:]
        public var error: String?
    }

    /// Opens each site (with its own password file) for its repository ID, key IDs and newest snapshots.
    public static func gather(_ plan: Plan, access: SiteAccess) async -> [SiteFacts] {
        var out: [SiteFacts] = []
        for site in plan.sites.sites {
            var f = SiteFacts(site: site)
            do {
                let repo = try await access.open(site)
                f.repositoryID = repo.config.id
                f.keyIDs = try await repo.listKeys().map { $0.id.hex }
                let snaps = try await repo.listSnapshots()
                f.snapshots = snaps.count
                for s in snaps {
                    for t in s.snapshot.tags where t.hasPrefix("source=") {
                        let name = String(t.dropFirst(7))
                        f.newest[name] = max(f.newest[name] ?? s.snapshot.date, s.snapshot.date)
                    }
                }
            } catch {
                f.error = errorText(error)
            }
            out.append(f)
        }
        return out
    }

    /// A repository location without credentials (`rest:https://user:pass@host/…` loses `user:pass@`).
    public static func redacted(_ location: String) -> String {
        guard let scheme = location.range(of: "://"), let at = location[scheme.upperBound...].firstIndex(of: "@"),
              !location[scheme.upperBound..<at].contains("/") else { return location }
        return String(location[..<scheme.upperBound]) + "…@" + String(location[location.index(after: at)...])
    }

    static func quote(_ s: String) -> String {
        s.allSatisfy({ $0.isLetter || $0.isNumber || "/._-:=+@,".contains($0) }) ? s : "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// The kit, as Markdown text.
    public static func render(_ plan: Plan, sites: [SiteFacts], now: Date, host: String) -> String {
        var o = "# Lifeboat recovery kit: \(host)\n\n"
        o += "Written \(Timestamp.format(now)) from \(plan.path). Keep it offline (printed, or on a medium away from this host): it holds no\n"
        o += "secret, but it says where every secret lived. Any one site below restores everything.\n\n"
        o += "## 1. Sites\n\n| site | role | repository | repository ID | keys | snapshots | reached |\n|---|---|---|---|---|---|---|\n"
        for f in sites {
            o += "| \(f.site.name) | \(f.site.role.rawValue) | `\(redacted(f.site.repository))` | \(f.repositoryID.map { "`\($0)`" } ?? "?") | "
            o += "\(f.keyIDs.isEmpty ? "?" : f.keyIDs.map { "`\($0.prefix(16))`" }.joined(separator: " ")) | \(f.snapshots.map(String.init) ?? "?") | "
            o += "\(f.error.map { "NO: \($0.replacingOccurrences(of: "|", with: "/"))" } ?? "yes") |\n"
        }
        o += "\nThe repository ID is in each repository's `config`; a key ID is the SHA-256 of its key file (`lifeboat key list`).\n"
        o += "Check both before you trust a copy: a repository with another ID is another repository.\n\n"
        o += "## 2. Secrets (where they lived; bring them from your password manager or safe)\n\n"
        var secrets: [(String, String)] = []
        for s in plan.sites.sites {
            if let f = s.passwordFile { secrets.append((f, "password of site \(s.name)")) }
            if let f = s.credentialsFile { secrets.append((f, "credentials of site \(s.name) (KEY=VALUE lines)")) }
        }
        for s in plan.sources {
            switch s.kind {
            case .postgres(let f), .postgresArchive(let f): secrets.append((f, "PostgreSQL connection (DSN) of source \(s.name)"))
            case .redis(let t): if let f = t.passwordFile { secrets.append((f, "Redis password of source \(s.name)")) }
            case .mariadb(let f, _): secrets.append((f, "MariaDB client defaults file of source \(s.name)"))
            default: break
            }
        }
        if let f = plan.agent.tokenFile { secrets.append((f, "the agent API's bearer token")) }
        if let f = plan.agent.users { secrets.append((f, "the agent API's users (htpasswd)")) }
        if let f = plan.agent.tlsKey { secrets.append((f, "the agent API's TLS key")) }
        for (path, what) in secrets { o += "* `\(path)`: \(what)\n" }
        if secrets.isEmpty { o += "* (none named in the plan)\n" }
        let site = sites.first { $0.error == nil }?.site ?? plan.sites.primary
        let repo = quote(site.repository), pw = quote(site.passwordFile ?? "/etc/lifeboat/\(site.name).pw")
        let creds = site.credentialsFile.map { "set -a; . \(quote($0)); set +a   # the site's credentials\n" } ?? ""
        o += "\n## 3. Rebuild this host (from site \(site.name); any other site works the same with its own password)\n\n```sh\n"
        o += "# Install Lifeboat, put the secrets above back in place (mode 0600), then:\n\(creds)"
        o += "export LIFEBOAT_REPOSITORY=\(repo) LIFEBOAT_PASSWORD_FILE=\(pw)\n"
        o += "lifeboat snapshots --latest 1                     # the site answers and the password opens it\n"
        o += "lifeboat restore latest --tag source=\(selfSource) --target /tmp/lifeboat-self\n"
        o += "install -D -m 0600 /tmp/lifeboat-self\(stagingDirectory(plan))/lifeboat.yaml \(quote(plan.path))\n"
        o += "install -D -m 0600 /tmp/lifeboat-self\(stagingDirectory(plan))/agent.db \(quote(plan.agent.state))\n```\n\n"
        o += "## 4. Restore every source\n\n```sh\n"
        for s in plan.sources {
            let newest = sites.compactMap { $0.newest[s.name] }.max().map { " (newest copy: \(Timestamp.format($0)))" } ?? ""
            o += "# \(s.name): \(s.kind.name)\(newest)\(s.objectives?.rto.map { "; RTO \(Units.span($0))" } ?? "")\n"
            let tag = "--tag source=\(s.name)"
            switch s.kind {
            case .files:
                o += "lifeboat restore latest \(tag) --target /\n"
            case .postgres:
                o += "lifeboat dump latest \(tag) /\(s.name).pgdump > /tmp/\(s.name).pgdump\n"
                o += "pg_restore --clean --if-exists --create --dbname postgres /tmp/\(s.name).pgdump   # as the postgres user\n"
            case .postgresArchive:
                o += "lifeboat pg restore --latest --target /var/lib/postgresql/restored   # or --time T; then, as postgres: pg_ctl -D … start\n"
            case .mariadb(let defaults, _):
                o += "lifeboat dump latest \(tag) /\(s.name).sql | mariadb --defaults-extra-file=\(quote(defaults))\n"
            case .sqliteContinuous(let path, _):
                o += "lifeboat sqlite restore \(quote(path)) --latest --target \(quote(path)).restored && mv \(quote(path)).restored \(quote(path))   # or --time T; with its writers stopped\n"
            case .sqlite(let path):
                o += "lifeboat dump latest \(tag) /\(s.name).sqlite > \(quote(path)).restored && mv \(quote(path)).restored \(quote(path))   # with its writers stopped\n"
            case .redis:
                o += "lifeboat dump latest \(tag) /\(s.name).rdb > /var/lib/redis/dump.rdb   # with the server stopped; redis-check-rdb it, then start it\n"
            case .command(let argv):
                o += "lifeboat dump latest \(tag) /\(s.name) > /tmp/\(s.name).out   # the output of: \(argv.map(quote).joined(separator: " "))\n"
            }
        }
        o += "# Everything the plan names is back: check it, then start the agent (systemctl enable --now lifeboat-agent)\n"
        o += "lifeboat config validate --config \(quote(plan.path))\n"
        o += "```\n\nThen check `lifeboat status`: every source's RPO at every site.\n"
        return o
    }
}
