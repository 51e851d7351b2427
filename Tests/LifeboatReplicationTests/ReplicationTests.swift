import Foundation
import Synchronization
import Testing
import LifeboatBackends
import LifeboatCore
import LifeboatCrypto
import LifeboatRepository
import LifeboatReplication
import LifeboatSites
import LifeboatSnapshot
import LifeboatStorage

/// The replication loop and `sites status` as the library runs them (the CLI and the agent only print them),
/// on local sites in a temporary folder and an injected clock.
@Suite(.serialized) struct ReplicationTests {
    let dir: String
    init() throws {
        dir = NSTemporaryDirectory() + "lifeboat-repl-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try "pw\n".write(toFile: dir + "/pw", atomically: true, encoding: .utf8)
    }

    func makeRepo(_ name: String) async throws -> Repository {
        try await Repository.initialize(backend: LocalBackend(path: dir + "/" + name), password: "pw",
                                        kdf: ScryptParameters(n: 1024, r: 8, p: 1))
    }

    func backUp(_ repo: Repository, _ text: String) async throws {
        let src = dir + "/src"
        try FileManager.default.createDirectory(atPath: src, withIntermediateDirectories: true)
        try text.write(toFile: src + "/f.txt", atomically: true, encoding: .utf8)
        var o = BackupOptions()
        o.paths = [src]
        try await repo.loadIndex()
        _ = try await Archiver(repository: repo, options: o).run()
    }

    func config(replica: String) throws -> SitesConfig {
        try SitesConfig.parse("""
        sites:
          - {name: home, repository: \(dir)/home, password_file: \(dir)/pw, role: primary}
          - {name: copy, repository: \(replica), password_file: \(dir)/pw, role: replica}
        replication: {interval: 10s, max_backoff: 1m, state_file: \(dir)/state.json}
        """, path: "sites.yaml")
    }

    var access: SiteAccess {
        SiteAccess(settings: BackendSettings(http: .fromEnvironment(), retry: RetryPolicy(attempts: 1), environment: [:]),
                   password: { site in throw LifeboatError.invalid("no password for \(site.name)") })
    }

    @Test func aPassCopiesWhatIsMissing_andTheNextSendsNothing() async throws {
        let home = try await makeRepo("home")
        _ = try await makeRepo("copy")
        try await backUp(home, "one")
        try await backUp(home, "two")
        let cfg = try config(replica: dir + "/copy")
        let events = Mutex<[String]>([])
        let record: @Sendable (ReplicationEvent) -> Void = { e in
            switch e {
            case .snapshotCopied(let site, _, _): events.withLock { $0.append("copied \(site)") }
            case .siteDone(let site, let r): events.withLock { $0.append("done \(site) \(r.copied.count) \(r.blobsSent > 0)") }
            case .siteFailed(let site, let error): events.withLock { $0.append("failed \(site) \(error)") }
            case .primaryFailed(let site, _): events.withLock { $0.append("primary failed \(site)") }
            case .staleLocks: break
            }
        }
        let now = Date(timeIntervalSince1970: 2_000_000_000)
        let r = Replicator(config: cfg, access: access, clock: { now })
        #expect(try await r.pass(force: true, events: record))
        #expect(events.withLock { $0 } == ["copied copy", "copied copy", "done copy 2 true"])
        let state = ReplicationState.load(cfg.stateFile)
        #expect(state.sites["copy"]?.lastSuccess == Timestamp.format(now))
        #expect(state.sites["copy"]?.snapshotsCopied == 2)

        events.withLock { $0 = [] }
        #expect(try await r.pass(force: true, events: record))
        #expect(events.withLock { $0 } == ["done copy 0 false"])

        let rows = await SitesStatus.collect(cfg, state: state, now: now, access: access)
        #expect(rows.map(\.site) == ["home", "copy"])
        #expect(rows.allSatisfy { $0.reachable })
        #expect(rows[1].missing == 0 && rows[1].lagSeconds == 0 && rows[1].bytesPending == 0)
        #expect(SitesStatus.exitStatus(rows, maxLag: 60) == ExitStatus.ok)
    }

    @Test func aFailingReplicaIsNamed_remembered_andBackedOff() async throws {
        let home = try await makeRepo("home")
        try await backUp(home, "one")
        // No repository at the replica's location.
        let cfg = try config(replica: dir + "/nowhere")
        let failures = Mutex<[String]>([])
        let t0 = Date(timeIntervalSince1970: 2_000_000_000)
        let clock = Mutex(t0)
        let r = Replicator(config: cfg, access: access, clock: { clock.withLock { $0 } })
        let record: @Sendable (ReplicationEvent) -> Void = { if case .siteFailed(let s, let e) = $0 { failures.withLock { $0.append("\(s): \(e)") } } }
        #expect(try await r.pass(force: false, events: record) == false)
        #expect(failures.withLock { $0.count } == 1)
        #expect(failures.withLock { $0[0] }.hasPrefix("copy: "))
        var state = ReplicationState.load(cfg.stateFile)
        #expect(state.sites["copy"]?.consecutiveFailures == 1)
        #expect(state.sites["copy"]?.lastError != nil)
        // Within the backoff (10 s after one failure) the site is not tried again, unless forced.
        clock.withLock { $0 = t0.addingTimeInterval(5) }
        #expect(try await r.pass(force: false, events: record) == false)
        #expect(failures.withLock { $0.count } == 1)
        #expect(try await r.pass(force: true, events: record) == false)
        #expect(failures.withLock { $0.count } == 2)
        state = ReplicationState.load(cfg.stateFile)
        #expect(state.sites["copy"]?.consecutiveFailures == 2)

        // sites status: the unreachable replica is named with its error; the health check says 20.
        let rows = await SitesStatus.collect(cfg, state: state, now: t0.addingTimeInterval(3600), access: access)
        #expect(rows[1].reachable == false && rows[1].error != nil)
        #expect((rows[1].lagSeconds ?? 0) >= 3600)
        #expect(SitesStatus.exitStatus(rows, maxLag: nil) == ExitStatus.siteUnreachable)
    }

    @Test func laggingIs21_andTheRecordKeepsEveryKey() throws {
        var a = SiteStatus(site: "a", role: "primary", repository: "/a", reachable: true)
        a.lagSeconds = 0
        var b = SiteStatus(site: "b", role: "replica", repository: "/b", reachable: true)
        b.lagSeconds = 3600
        #expect(SitesStatus.exitStatus([a, b], maxLag: 60) == ExitStatus.siteLagging)
        #expect(SitesStatus.exitStatus([a, b], maxLag: 7200) == ExitStatus.ok)
        #expect(SitesStatus.exitStatus([a, b], maxLag: nil) == ExitStatus.ok)
        let o = try JSONSerialization.jsonObject(with: try JSONEncoder().encode(b)) as? [String: Any]
        #expect(o?.keys.sorted() == ["bytes_pending", "bytes_pending_exact", "error", "lag_seconds", "last_error", "last_error_time",
                                     "last_success", "missing", "missing_snapshots", "newest_snapshot", "oldest_missing_age_seconds",
                                     "reachable", "repository", "role", "site", "snapshots"])
    }
}
