import Foundation
import Glibc
import LifeboatCore
import LifeboatFailover
import LifeboatHA
import LifeboatProcess
import LifeboatWAL

/// What an HA node does to its PostgreSQL: read its state, create it (`initdb`), copy the leader
/// (`pg_basebackup`), start, promote, stop at once (fence), follow another node, rewind (`pg_rewind`). Every
/// program runs as the configured user (`run_as`, never root) with the cluster's `bin_dir`; the replication
/// password goes from `password_file` into a password file libpq reads (`passfile`), never into argv, the server's
/// settings or the consensus store. Errors say what failed and end with the program's last lines.
public struct PostgresControl: Sendable {
    public let node: HAConfig.PostgresNode
    public let name: String
    /// The user programs run as; nil when this process already is that user.
    public let user: Child.User?
    /// The replication password (from `password_file`), if any.
    let password: String?

    public init(config: HAConfig) throws {
        node = config.postgres
        name = config.settings.node
        guard let u = Child.User(named: node.runAs) else {
            throw LifeboatError.invalid("ha.node.postgres.run_as: no user \(node.runAs) on this host (PostgreSQL never runs as root: create it, or name the user that owns the cluster)")
        }
        if getuid() == 0 {
            guard u.uid != 0 else { throw LifeboatError.invalid("ha.node.postgres.run_as: \(node.runAs) is root; PostgreSQL refuses to run as root") }
            user = u
        } else {
            guard getuid() == u.uid else { throw LifeboatError.invalid("lifeboat ha runs as root or as \(node.runAs) (the run_as user), not as uid \(getuid())") }
            user = nil
        }
        password = try node.passwordFile.map { try readPasswordFile($0, from: "ha.node.postgres.password_file") }
    }

    var dataDir: String { node.dataDir }
    /// Files of the agent's beside the data directory (never inside: pg_basebackup and pg_rewind copy that).
    public var logFile: String { dataDir + ".log" }
    var passFile: String { dataDir + ".pgpass" }
    func bin(_ program: String) -> String { node.binDir + "/" + program }

    // MARK: state

    /// What a probe learned: the state the model reads, and the address the standby's `primary_conninfo` names.
    public struct Probe: Sendable, Equatable {
        public var local: LocalPostgres
        /// `host:port` of the server a standby streams from (from `primary_conninfo`).
        public var upstream: String?
        /// Why the state is `unknown`, when it is.
        public var problem: String?
    }

    /// Reads the server's state: a live postmaster is asked (one `psql` within `timeout`), a stopped data directory
    /// is read with `pg_controldata`.
    public func probe(timeout: Double) async -> Probe {
        guard access(dataDir + "/PG_VERSION", F_OK) == 0 else { return Probe(local: LocalPostgres(state: .absent)) }
        let standbySignal = access(dataDir + "/standby.signal", F_OK) == 0
        let upstream = primaryConninfo().flatMap(Self.upstream(of:))
        if let pid = postmasterPID(), kill(pid, 0) == 0 {
            let sql = """
            SELECT pg_is_in_recovery(), system_identifier,
              CASE WHEN pg_is_in_recovery() THEN greatest(coalesce((SELECT received_tli FROM pg_stat_wal_receiver), 0), (SELECT timeline_id FROM pg_control_checkpoint()),
                     coalesce((SELECT max(('x' || substr(f, 1, 8))::bit(32)::bigint) FROM pg_ls_dir('pg_wal') f WHERE f ~ '^[0-9A-F]{8}[.]history$'), 0))
                   ELSE ('x' || substr(pg_walfile_name(pg_current_wal_flush_lsn()), 1, 8))::bit(32)::bigint END,
              CASE WHEN pg_is_in_recovery() THEN greatest(coalesce(pg_last_wal_receive_lsn(), '0/0'), coalesce(pg_last_wal_replay_lsn(), '0/0')) - '0/0'
                   ELSE pg_current_wal_flush_lsn() - '0/0' END,
              coalesce((SELECT status FROM pg_stat_wal_receiver), ''),
              current_setting('synchronous_standby_names'),
              coalesce((SELECT string_agg(application_name || '=' || (coalesce(flush_lsn, '0/0') - '0/0')::text, ',')
                        FROM pg_stat_replication WHERE state = 'streaming' AND application_name ~ '^[A-Za-z0-9._-]{1,63}$'), ''),
              CASE WHEN pg_is_in_recovery() THEN greatest(coalesce((SELECT received_tli FROM pg_stat_wal_receiver WHERE status = 'streaming'), 0),
                                                          (SELECT timeline_id FROM pg_control_checkpoint()),
                                                          (SELECT min_recovery_end_timeline FROM pg_control_recovery()),
                     coalesce((SELECT max(('x' || substr(f, 1, 8))::bit(32)::bigint) FROM pg_ls_dir('pg_wal') f WHERE f ~ '^[0-9A-F]{24}$'), 0))
                   ELSE 0 END
            FROM pg_control_system()
            """
            do {
                let rows = try await query(sql, timeout: timeout)
                guard let r = rows.first, r.count == 8 else { return Probe(local: LocalPostgres(state: .unknown), upstream: upstream, problem: "an unexpected answer to the state query") }
                let standby = r[0] == "t"
                var local = LocalPostgres(state: .running(standby: standby), systemIdentifier: r[1].isEmpty ? nil : r[1],
                                          timeline: UInt32(r[2]), position: UInt64(r[3].split(separator: ".").first ?? ""), streaming: r[4] == "streaming")
                if standby { local.replayTimeline = UInt32(r[7]).flatMap { $0 > 0 ? $0 : nil } }
                if !standby {
                    local.streaming = false
                    local.synchronousStandbys = Self.parseSynchronousStandbys(r[5])
                    for pair in r[6].split(separator: ",") {
                        let kv = pair.split(separator: "=", maxSplits: 1)
                        // application_name is what a replication client says it is: only node names count
                        // (no ',' or '=' in them, so that one client cannot pass for two).
                        if kv.count == 2, HASettings.validName(String(kv[0])), let flush = UInt64(kv[1].split(separator: ".").first ?? "") {
                            local.replicas[String(kv[0])] = flush
                        }
                    }
                }
                return Probe(local: local, upstream: standby ? upstream : nil)
            } catch {
                return Probe(local: LocalPostgres(state: .unknown), upstream: upstream, problem: "the server runs (pid \(pid)) but does not answer: \(error)")
            }
        }
        // Stopped (or crashed): the control file says the rest.
        do {
            let control = try await controlData(timeout: max(timeout, 5))
            // A standby follows the newest timeline whose history it holds (recovery_target_timeline = latest).
            let timeline = standbySignal ? [control.timeline, newestHistory()].compactMap { $0 }.max() : control.timeline
            return Probe(local: LocalPostgres(state: .stopped(standby: standbySignal), systemIdentifier: control.system,
                                              timeline: timeline, position: control.position), upstream: standbySignal ? upstream : nil)
        } catch {
            return Probe(local: LocalPostgres(state: .unknown), upstream: upstream, problem: "\(error)")
        }
    }

    /// The newest timeline with a history file in pg_wal.
    func newestHistory() -> UInt32? {
        ((try? FileManager.default.contentsOfDirectory(atPath: dataDir + "/pg_wal")) ?? []).compactMap { f -> UInt32? in
            guard f.utf8.count == 16, f.hasSuffix(".history") else { return nil }
            return UInt32(f.prefix(8), radix: 16)
        }.max()
    }

    struct Control { var system: String?; var timeline: UInt32?; var position: UInt64?; var state: String? }

    func controlData(timeout: Double) async throws -> Control {
        let out = try await run([bin("pg_controldata"), "-D", dataDir], what: "pg_controldata", timeout: timeout, environment: ["LC_ALL": "C"])
        var c = Control()
        var checkpoint: UInt64?
        var minRecovery: UInt64?
        for line in out.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let key = line[..<colon].trimmingCharacters(in: .whitespaces)
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            switch key {
            case "Database system identifier": c.system = value
            case "Latest checkpoint's TimeLineID": c.timeline = UInt32(value)
            case "Latest checkpoint location": checkpoint = LSN(value)?.value
            case "Minimum recovery ending location": minRecovery = LSN(value)?.value
            case "Database cluster state": c.state = value
            default: break
            }
        }
        c.position = [checkpoint, minRecovery].compactMap { $0 }.max()
        return c
    }

    /// `DB_IN_PRODUCTION` of the control file's `DBState` (the same in every release since 9.0).
    static let inProduction: UInt32 = 6

    /// The cluster state in a control file (what `pg_ctl promote -w` waits on): the 32-bit `state` after the
    /// system identifier (8 bytes), `pg_control_version` and `catalog_version_no`; nil when the file cannot be read
    /// or its version is not one of a release this reads (9.6 to 17: 960 to 1700), host byte order as the server
    /// writes it.
    static func clusterState(controlFile: String) -> UInt32? {
        let fd = open(controlFile, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var head = [UInt8](repeating: 0, count: 20)
        guard pread(fd, &head, 20, 0) == 20 else { return nil }
        func u32(_ at: Int) -> UInt32 { head.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt32.self) } }
        guard (960...1700).contains(u32(8)) else { return nil }
        return u32(16)
    }

    /// The postmaster's PID from postmaster.pid, only when that process belongs to `run_as`: the file is the
    /// cluster user's to write, and the agent (root) signals what it names, so a PID of anyone else's is ignored.
    func postmasterPID() -> pid_t? {
        guard let text = readRegularFile(dataDir + "/postmaster.pid", limit: 4096),
              let first = text.split(separator: "\n").first, let pid = Int32(first.trimmingCharacters(in: .whitespaces)), pid > 1,
              pid != getpid(), Self.owner(of: pid) == (user?.uid ?? getuid()) else { return nil }
        return pid
    }

    /// The user a process runs as (the owner of /proc/PID), nil when there is no such process.
    static func owner(of pid: pid_t) -> uid_t? {
        var st = stat()
        return stat("/proc/\(pid)", &st) == 0 ? st.st_uid : nil
    }

    // MARK: actions

    /// `initdb` (data checksums, for pg_rewind), the `pg_hba` lines, a start, and the replication role with its
    /// password (sent as a SCRAM verifier, so the password itself reaches neither the server's log nor argv).
    /// A failure removes what it made, so that the next try starts clean.
    public func initdb() async throws {
        try prepareDirectory()
        do {
            _ = try await run([bin("initdb"), "-D", dataDir, "--data-checksums", "-U", node.superuser, "--auth-local=peer", "--auth-host=scram-sha-256",
                               "-E", "UTF8", "--locale=C"], what: "initdb", timeout: 300, environment: ["LC_ALL": "C"])
            // The whole file, as Patroni writes it: local connections by peer, then the configured lines.
            let hba = ["local all all peer", "local replication all peer"] + (node.pgHba ?? [
                "host replication \(node.replicationUser) all scram-sha-256",
                "host postgres \(node.replicationUser) all scram-sha-256",
            ])
            try writeOwned(dataDir + "/pg_hba.conf", "# Written by lifeboat ha at bootstrap (ha.node.postgres.pg_hba)\n" + hba.joined(separator: "\n") + "\n", mode: 0o600)
            try await start(timeout: 120)
            try await createReplicationRole()
        } catch {
            await fence()
            try? FileManager.default.removeItem(atPath: dataDir)
            throw error
        }
    }

    func createReplicationRole() async throws {
        let role = node.replicationUser
        var sql = "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '\(role)') THEN CREATE ROLE \"\(role)\" WITH REPLICATION LOGIN; END IF; END $$;\n"
        if let password { sql += "ALTER ROLE \"\(role)\" WITH PASSWORD '\(SCRAM.verifier(password: password))';\n" }
        // What pg_rewind needs on its source, without being a superuser.
        for f in ["pg_ls_dir(text, boolean, boolean)", "pg_stat_file(text, boolean)", "pg_read_binary_file(text)",
                  "pg_read_binary_file(text, bigint, bigint, boolean)"] {
            sql += "GRANT EXECUTE ON FUNCTION pg_catalog.\(f) TO \"\(role)\";\n"
        }
        _ = try await query(sql, timeout: 60, viaStdin: true)
    }

    /// Copies the leader at `from` (`pg_basebackup`, WAL streamed alongside) and makes the copy its standby. The
    /// copy is made in `<data_dir>.clone` and renamed into place once complete and configured, so that the data
    /// directory is never a half copy (which a probe, or the agent after a crash, would take for a former primary's:
    /// pg_control arrives before the last WAL and standby.signal).
    public func clone(from: Endpoint) async throws {
        try prepareDirectory()
        try writePassFile()
        let parent = (dataDir as NSString).deletingLastPathComponent
        var st = stat(), up = stat()
        if stat(dataDir, &st) == 0, stat(parent.isEmpty ? "." : parent, &up) == 0, st.st_dev != up.st_dev {
            throw LifeboatError.invalid("\(dataDir) is a mount point: the copy is made beside it and renamed into place, which a mount point forbids; set data_dir to a directory under the mount point (as PostgreSQL advises too)")
        }
        let staging = dataDir + ".clone"
        // A copy an earlier run left unfinished (the agent or the machine stopped during it).
        try? FileManager.default.removeItem(atPath: staging)
        guard mkdir(staging, 0o700) == 0 else { throw LifeboatError(.io, "cannot create \(staging): \(String(cString: strerror(errno)))") }
        if let user { guard chown(staging, user.uid, user.gid) == 0 else { throw LifeboatError(.io, "cannot give \(staging) to \(user.name): \(String(cString: strerror(errno)))") } }
        do {
            _ = try await run([bin("pg_basebackup"), "-D", staging, "-h", from.host, "-p", "\(from.port)", "-U", node.replicationUser,
                               "-X", "stream", "--checkpoint=fast", "--no-password"],
                              what: "pg_basebackup from \(from)", timeout: 24 * 3600, environment: ["PGPASSFILE": passFile, "PGAPPNAME": name])
            try configureStandby(of: from, in: staging)
            // The empty directory prepareDirectory left (or made) gives way to the copy.
            guard rmdir(dataDir) == 0 || errno == ENOENT else { throw LifeboatError(.io, "cannot replace the empty \(dataDir) with the copy: \(String(cString: strerror(errno)))") }
            guard rename(staging, dataDir) == 0 else { throw LifeboatError(.io, "cannot rename the copy \(staging) to \(dataDir): \(String(cString: strerror(errno)))") }
            syncDirectory(parent)
        } catch {
            try? FileManager.default.removeItem(atPath: staging)
            throw error
        }
    }

    /// Starts the server as its data directory is (a standby when `standby.signal` is there) and waits until it
    /// accepts connections.
    public func start(timeout: Double = 600) async throws {
        try touchLog()
        try socketDirectory()
        try writeSettings()
        _ = try await run([bin("pg_ctl"), "start", "-D", dataDir, "-w", "-t", "\(Int(max(1, min(timeout, 86400))))", "-l", logFile],
                          what: "pg_ctl start", timeout: timeout + 10, tailOf: logFile)
    }

    /// The settings file every start reads (`postgresql.lifeboat.conf`, included at the end of postgresql.conf), so
    /// that pg_rewind's own recovery run and a start by hand see them too.
    func writeSettings() throws {
        let file = "postgresql.lifeboat.conf"
        let body = "# Written by lifeboat ha at every start: edit ha.node.postgres.parameters instead.\n"
            + startOptions().sorted { $0.key < $1.key }.map { "\($0.key) = '\($0.value.replacingOccurrences(of: "'", with: "''"))'" }.joined(separator: "\n") + "\n"
        try writeOwned(dataDir + "/" + file, body, mode: 0o600)
        let conf = dataDir + "/postgresql.conf"
        let text = readRegularFile(conf, limit: 16 << 20) ?? ""
        let include = "include_if_exists = '\(file)'"
        if !text.split(separator: "\n").contains(where: { $0.trimmingCharacters(in: .whitespaces) == include }) {
            try writeOwned(conf, text + (text.hasSuffix("\n") || text.isEmpty ? "" : "\n") + "# lifeboat ha: its settings (listen, replication)\n" + include + "\n", mode: 0o600)
        }
    }

    /// Starts the server in recovery with no upstream (`standby.signal`, `primary_conninfo` removed): it replays
    /// its own WAL and waits, read-only, so that its position is known.
    public func recover() async throws {
        try setStandby(upstream: nil)
        try await start()
    }

    /// The settings of every start: where it listens, what replication needs, then `parameters` over them.
    func startOptions() -> [String: String] {
        let host = node.listen.host
        var o: [String: String] = [
            "listen_addresses": host == "0.0.0.0" || host == "::" ? "*" : host, "port": "\(node.listen.port)",
            "unix_socket_directories": node.socketDirectory, "cluster_name": name,
            "wal_level": "replica", "hot_standby": "on", "wal_log_hints": "on", "max_wal_senders": "10", "max_replication_slots": "10",
            "wal_keep_size": "256MB", "hot_standby_feedback": "on", "wal_receiver_status_interval": "1s", "wal_sender_timeout": "10s",
            "wal_receiver_timeout": "10s",
        ]
        o.merge(node.parameters) { $1 }
        return o
    }

    /// Promotes the standby and waits until it takes writes (`promoted` is called then, so that the agent reports
    /// a primary at once). Then a checkpoint: until one, the control file still names the old timeline, and
    /// pg_rewind on the old primary would find "the same timeline" and rewind nothing (a rewind that finds it
    /// while the leader published a newer timeline is tried again).
    /// The wait reads the control file every 10 ms (pg_ctl's own wait looks every 100 ms).
    public func promote(promoted: @Sendable () -> Void = {}) async throws {
        _ = try await run([bin("pg_ctl"), "promote", "-D", dataDir, "-W"], what: "pg_ctl promote", timeout: 30, tailOf: logFile)
        let deadline = ContinuousClock.now + .seconds(60)
        while Self.clusterState(controlFile: dataDir + "/global/pg_control") != Self.inProduction {
            guard ContinuousClock.now < deadline else {
                throw LifeboatError(.io, "the promotion did not finish within 60 s (the control file of \(dataDir) does not say \"in production\"); see \(logFile)")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        promoted()
        _ = try await query("CHECKPOINT", timeout: 300)
    }

    /// `synchronous_standby_names` as written by `setSynchronousStandbys` (`FIRST n ("a", "b")`, or empty) to
    /// the names; nil for anything else (a value set by hand: the leader rewrites it).
    static func parseSynchronousStandbys(_ v: String) -> [String]? {
        let t = v.trimmingCharacters(in: .whitespaces)
        if t.isEmpty { return [] }
        guard t.hasPrefix("FIRST "), let open = t.firstIndex(of: "("), t.hasSuffix(")") else { return nil }
        let names = t[t.index(after: open)..<t.index(before: t.endIndex)].split(separator: ",").map {
            $0.trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        }
        guard Int(t.dropFirst(6).prefix { $0.isNumber }) == names.count, names.allSatisfy(HASettings.validName) else { return nil }
        return names
    }

    /// Every commit waits for all of `names` (`FIRST n (…)`; none: asynchronous), through ALTER SYSTEM and a reload.
    public func setSynchronousStandbys(_ names: [String]) async throws {
        guard names.allSatisfy(HASettings.validName) else { throw LifeboatError.invalid("not node names: \(names)") }
        let value = names.isEmpty ? "" : "FIRST \(names.count) (" + names.map { "\"\($0)\"" }.joined(separator: ", ") + ")"
        _ = try await query("ALTER SYSTEM SET synchronous_standby_names = '\(value)'", timeout: 10)
        _ = try await query("SELECT pg_reload_conf()", timeout: 10)
    }

    /// Stops the server now (immediate shutdown: no new transaction commits once the postmaster has the signal);
    /// after 2 s the postmaster and its children are killed. Returns what it did.
    @discardableResult
    public func fence() async -> String {
        guard let pid = postmasterPID(), kill(pid, 0) == 0 else { return "the server was not running" }
        kill(pid, SIGQUIT)
        let start = ContinuousClock.now
        while ContinuousClock.now - start < .seconds(2) {
            if kill(pid, 0) != 0 { return "stopped the server (immediate shutdown)" }
            try? await Task.sleep(for: .milliseconds(10))
        }
        for child in Self.children(of: pid) where Self.owner(of: child) == Self.owner(of: pid) { kill(child, SIGKILL) }
        kill(pid, SIGKILL)
        for _ in 0..<100 where kill(pid, 0) == 0 { try? await Task.sleep(for: .milliseconds(10)) }
        return "killed the server (it did not stop within 2 s of an immediate shutdown)"
    }

    /// Stops the server with a checkpoint (`pg_ctl stop -m fast`), for a planned change.
    public func stop(timeout: Double = 60) async throws {
        guard let pid = postmasterPID(), kill(pid, 0) == 0 else { return }
        let t = max(1, min(timeout, 3600))
        _ = try await run([bin("pg_ctl"), "stop", "-D", dataDir, "-m", "fast", "-w", "-t", "\(Int(t.rounded(.up)))"], what: "pg_ctl stop", timeout: t + 1, tailOf: logFile)
    }

    /// Makes the server a standby of `leader`: `primary_conninfo` rewritten, `standby.signal`; a running standby
    /// reloads (PostgreSQL 13 and later read `primary_conninfo` on reload), a stopped one starts.
    public func follow(_ leader: Endpoint) async throws {
        try configureStandby(of: leader)
        if let pid = postmasterPID(), kill(pid, 0) == 0 {
            _ = try await query("SELECT pg_reload_conf()", timeout: 30)
        } else {
            try await start()
        }
    }

    /// `pg_rewind` from the leader (a crashed server is first recovered by pg_rewind itself), then follows it.
    /// `leaderTimeline`: the timeline the leader published; a pg_rewind that finds the source on this node's
    /// timeline (the leader has not yet checkpointed its promotion) is an error, tried again, never a silent no-op.
    public func rewind(from leader: Endpoint, leaderTimeline: UInt32?) async throws {
        // A clean stop when it runs (a standby that recovered on its own WAL): pg_rewind takes a data directory
        // shut down in recovery as it is. A crashed one is recovered by pg_rewind in single-user mode, which
        // refuses standby mode: the signal files go first (configureStandby puts standby.signal back).
        try writePassFile()
        let conninfo = "host=\(leader.host) port=\(leader.port) user=\(node.replicationUser) dbname=postgres application_name=\(name) passfile=\(passFile)"
        // The source must answer first: a leader that died, or a link cut, is no reason to stop this server, and a
        // pg_rewind that cannot connect would count as failed and send the data directory aside for a new copy.
        // pg_isready asks the server whether it accepts connections without logging in: a server that answers but
        // refuses this login (no pg_hba.conf line for a normal connection to the database postgres) is no reason
        // to wait, pg_rewind will never pass: its failure sends the directory aside for a copy, which needs only
        // the replication connection.
        do {
            _ = try await run([bin("pg_isready"), "-t", "5", "-d", conninfo + " connect_timeout=5"],
                              what: "pg_isready on \(leader)", timeout: 10)
        } catch {
            throw LifeboatError(.io, "not rewinding from \(leader): its server does not answer (\(error)); the data directory is kept as it is; trying again")
        }
        if let pid = postmasterPID(), kill(pid, 0) == 0 {
            do { try await stop(timeout: 30) } catch { await fence() }
        }
        for f in ["standby.signal", "recovery.signal"] { try? FileManager.default.removeItem(atPath: dataDir + "/" + f) }
        let before = try await controlData(timeout: 30)
        do {
            let out = try await run([bin("pg_rewind"), "-D", dataDir, "--source-server=\(conninfo)"], what: "pg_rewind from \(leader)",
                                    timeout: 3600, environment: ["LC_ALL": "C"], mergeErrors: true)
            if out.contains("on the same timeline"), let lt = leaderTimeline, let mine = before.timeline, lt > mine {
                throw Retry(message: "pg_rewind found \(leader) still on timeline \(mine) while it published timeline \(lt): its promotion is not checkpointed yet; trying again")
            }
        } catch let r as Retry {
            throw LifeboatError(.io, r.message)
        } catch {
            guard node.recloneOnRewindFailure else { throw error }
            if Self.rewindNeverConnected(String(describing: error)) {
                // pg_isready passed, but the login did not: too many clients, a password or role refused, a time-out.
                // A new copy would log in with the same credentials; nothing was written: keep the directory, retry.
                throw LifeboatError(.io, "\(error); pg_rewind could not log in to \(leader), so nothing was changed: the data directory is kept as it is; trying again")
            }
            // The data directory is kept, renamed: the next step finds none and copies the leader anew.
            let aside = dataDir + ".rewind-failed-" + Timestamp.format(Date()).replacingOccurrences(of: ":", with: "")
            guard rename(dataDir, aside) == 0 else { throw LifeboatError(.io, "\(error); and cannot move \(dataDir) aside: \(String(cString: strerror(errno)))") }
            throw LifeboatError(.io, "\(error); the data directory was moved to \(aside) and the node copies the leader anew (set ha.node.postgres.reclone_on_rewind_failure: false to stop instead)")
        }
        try configureStandby(of: leader)
        try await start()
    }

    struct Retry: Error { var message: String }

    /// Whether a failed pg_rewind's message says it never logged in to its source, for a reason other than a
    /// pg_hba.conf refusal (which a copy over the replication connection may not meet): then it wrote nothing.
    static func rewindNeverConnected(_ message: String) -> Bool {
        let m = message.lowercased()
        guard m.contains("could not connect") || m.contains("connection to server") && m.contains("failed:") else { return false }
        return !m.contains("no pg_hba.conf entry") && !m.contains("server closed the connection unexpectedly")
    }

    // MARK: files

    /// `primary_conninfo` (no password: `passfile`) in postgresql.auto.conf, and `standby.signal`.
    func configureStandby(of leader: Endpoint, in directory: String? = nil) throws {
        try writePassFile()
        try setStandby(upstream: "host=\(leader.host) port=\(leader.port) user=\(node.replicationUser) application_name=\(name) passfile=\(passFile)", in: directory)
    }

    /// `standby.signal`, and `primary_conninfo` set to `upstream` (removed when nil), in `directory` (the data
    /// directory by default).
    func setStandby(upstream conninfo: String?, in directory: String? = nil) throws {
        let dataDir = directory ?? self.dataDir
        let path = dataDir + "/postgresql.auto.conf"
        let old = readRegularFile(path, limit: 1 << 20) ?? "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n"
        var lines = old.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            .filter { !$0.trimmingCharacters(in: .whitespaces).hasPrefix("primary_conninfo") && !$0.trimmingCharacters(in: .whitespaces).hasPrefix("primary_slot_name") }
        while lines.last == "" { lines.removeLast() }
        if let conninfo { lines.append("primary_conninfo = '\(conninfo.replacingOccurrences(of: "'", with: "''"))'") }
        try writeOwned(path, lines.joined(separator: "\n") + "\n", mode: 0o600)
        try writeOwned(dataDir + "/standby.signal", "", mode: 0o600)
        try? FileManager.default.removeItem(atPath: dataDir + "/recovery.signal")
    }

    func primaryConninfo() -> String? {
        guard let text = readRegularFile(dataDir + "/postgresql.auto.conf", limit: 1 << 20) else { return nil }
        for line in text.split(separator: "\n").reversed() {
            let t = line.trimmingCharacters(in: .whitespaces)
            guard t.hasPrefix("primary_conninfo"), let q = t.firstIndex(of: "'"), let e = t.lastIndex(of: "'"), q < e else { continue }
            return String(t[t.index(after: q)..<e]).replacingOccurrences(of: "''", with: "'")
        }
        return nil
    }

    /// `host:port` of a conninfo string (`host=… port=…`; port 5432 when absent).
    static func upstream(of conninfo: String) -> String? {
        var host: String?
        var port = "5432"
        for pair in conninfo.split(separator: " ") {
            let kv = pair.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { continue }
            if kv[0] == "host" { host = kv[1] }
            if kv[0] == "port" { port = kv[1] }
        }
        return host.map { Endpoint(host: $0, port: Int(port) ?? 5432).description }
    }

    /// The password file libpq reads (`*:*:*:USER:PASSWORD`, mode 0600, owned by `run_as`).
    func writePassFile() throws {
        guard let password else { return }
        let escaped = password.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: ":", with: "\\:")
        try writeOwned(passFile, "*:*:*:\(node.replicationUser):\(escaped)\n", mode: 0o600)
    }

    /// An empty data directory (0700) owned by `run_as`; a non-empty one is refused (never overwritten).
    func prepareDirectory() throws {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: dataDir, isDirectory: &isDir) {
            guard isDir.boolValue else { throw LifeboatError.invalid("\(dataDir) is a file, not a data directory") }
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: dataDir)) ?? []
            guard entries.isEmpty else {
                throw LifeboatError(.alreadyExists, "\(dataDir) is not empty and holds no cluster (no PG_VERSION): move it away so that the node can create or copy one")
            }
        } else {
            guard mkdir(dataDir, 0o700) == 0 else { throw LifeboatError(.io, "cannot create \(dataDir): \(String(cString: strerror(errno)))") }
        }
        chmod(dataDir, 0o700)
        if let user { guard chown(dataDir, user.uid, user.gid) == 0 else { throw LifeboatError(.io, "cannot give \(dataDir) to \(user.name): \(String(cString: strerror(errno)))") } }
    }

    /// The socket directory (0755, owned by `run_as`), made when missing.
    func socketDirectory() throws {
        let d = node.socketDirectory
        if mkdir(d, 0o755) != 0 && errno != EEXIST { throw LifeboatError(.io, "cannot create the socket directory \(d): \(String(cString: strerror(errno)))") }
        if let user { _ = chown(d, user.uid, user.gid) }
    }

    func touchLog() throws {
        if access(logFile, F_OK) != 0 { try writeOwned(logFile, "", mode: 0o600) }
        if let user { _ = chown(logFile, user.uid, user.gid) }
    }

    /// Writes a file crash-safely and gives it to `run_as`.
    func writeOwned(_ path: String, _ text: String, mode: mode_t) throws {
        try writeFileAtomically(path, Data(text.utf8), mode: mode)
        if let user { guard chown(path, user.uid, user.gid) == 0 else { throw LifeboatError(.io, "cannot give \(path) to \(user.name): \(String(cString: strerror(errno)))") } }
    }

    // MARK: programs

    /// One statement (or script) over the local socket as the superuser, within `timeout`; rows split on 0x1F.
    func query(_ sql: String, timeout: Double, viaStdin: Bool = false) async throws -> [[String]] {
        var argv = [bin("psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-F", "\u{1F}", "--no-password",
                    "-h", node.socketDirectory, "-p", "\(node.listen.port)", "-U", node.superuser, "-d", "postgres"]
        var input: [UInt8]?
        if viaStdin { input = Array(sql.utf8); argv += ["-f", "-"] } else { argv += ["-c", sql] }
        let out = try await run(argv, what: "psql", timeout: timeout, environment: ["PGAPPNAME": "lifeboat-ha", "PGCONNECT_TIMEOUT": "\(Int(max(2, timeout)))"], input: input)
        return out.split(separator: "\n", omittingEmptySubsequences: true).map { $0.split(separator: "\u{1F}", omittingEmptySubsequences: false).map(String.init) }
    }

    /// Runs a program as `run_as` within `timeout`; its output (at most 1 MiB) on success, else an error naming
    /// it with its last lines (and the server log's, for `tailOf`).
    func run(_ argv: [String], what: String, timeout: Double, environment: [String: String] = [:], input: [UInt8]? = nil,
             tailOf log: String? = nil, mergeErrors: Bool = false) async throws -> String {
        let out = try Capture(limit: 1 << 20)
        let err = try Capture(limit: 64 << 10)
        var inPipe: [Int32] = [-1, -1]
        if input != nil { guard makePipe(&inPipe) else { throw LifeboatError(.io, "cannot create a pipe for \(what)") } }
        let child: Child
        do {
            child = try Child.spawn(argv, environment: environment, stdout: out.writeFD, stderr: err.writeFD, user: user, directory: "/",
                                    stdin: input != nil ? inPipe[0] : nil)
        } catch {
            out.closeWriter(); err.closeWriter()
            if input != nil { close(inPipe[0]); close(inPipe[1]) }
            throw LifeboatError(.notFound, "\(what) cannot run: \(error) (is PostgreSQL installed in \(node.binDir)?)")
        }
        out.closeWriter(); err.closeWriter()
        if let input {
            close(inPipe[0])
            let fd = inPipe[1]
            signal(SIGPIPE, SIG_IGN)
            DispatchQueue.global().async {
                input.withUnsafeBytes { b in
                    var off = 0
                    while off < b.count {
                        let n = Glibc.write(fd, b.baseAddress! + off, b.count - off)
                        if n <= 0 { if errno == EINTR { continue }; break }
                        off += n
                    }
                }
                close(fd)
            }
        }
        let exit = await child.wait(timeout: timeout)
        var text = await out.all()
        if mergeErrors && exit.ok { text += await err.all() }
        guard exit.ok else {
            var why = await err.text(lines: 4)
            if why.isEmpty { why = String(text.split(separator: "\n").suffix(3).joined(separator: " | ")) }
            if let log, let tail = readRegularFile(log, limit: 1 << 20, last: true) {
                why += " — server log: " + tail.split(separator: "\n").suffix(3).joined(separator: " | ")
            }
            throw LifeboatError(.io, "\(what) \(exit.description)\(why.isEmpty ? "" : ": \(why)")")
        }
        return text
    }

    /// The processes whose parent is `pid` (from /proc).
    static func children(of pid: pid_t) -> [pid_t] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        return entries.compactMap { e -> pid_t? in
            guard let p = Int32(e), let stat = try? String(contentsOfFile: "/proc/\(p)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return nil }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 1 && Int32(fields[1]) == pid ? p : nil
        }
    }
}
