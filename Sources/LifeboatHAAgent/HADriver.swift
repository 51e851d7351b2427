import Foundation
import Glibc
import LifeboatCore
import LifeboatEtcd
import LifeboatFailover
import LifeboatHA
import LifeboatHAPostgres
import Synchronization

/// What a node shows of itself (API, metrics, `ha list`): its last decision and what it was made on.
public struct HANodeStatus: Sendable, Codable, Equatable {
    public var cluster: String
    public var node: String
    public var role: String
    public var reason: String
    /// `absent`, `stopped`, `stopped-standby`, `running`, `running-standby`, `unknown`.
    public var postgres: String
    public var leader: String?
    public var timeline: UInt32?
    public var position: UInt64?
    /// Bytes behind the position the leader last published (a standby's replication lag).
    public var lagBytes: UInt64?
    public var streaming: Bool
    public var storeReachable: Bool
    public var maintenance: Bool
    public var switchover: String?
    public var failovers: Int
    public var lastFailover: Date?
    public var members: [MemberStatus]
    public var problems: [String]
    public var updated: Date
}

/// The loop of one HA node (`lifeboat ha`): every step reads the cluster from etcd and the local server, lets the
/// pure `HANode` decide, performs the store actions in order, runs the PostgreSQL ones (one at a time, in the
/// background, so that lease renewals never wait for a long `pg_basebackup` or start), and logs every change of
/// decision with its reason.
///
/// Fencing does not depend on the loop keeping up: a guard task stops a primary the moment the node's writable
/// deadline passes (the last successful lease request's send time plus `fencing.deadline`), even while the loop
/// waits on an etcd endpoint that does not answer.
public final class HADriver: Sendable {
    public let config: HAConfig
    public let store: HAStore
    public let postgres: PostgresControl
    let log: @Sendable (String) -> Void
    let clock: @Sendable () -> Double

    struct Shared {
        var node: HANode
        var status: HANodeStatus
        var lastReason = ""
        var job: Task<Void, Never>?
        /// Which job `job` is: a job that ends clears `job` only while it is still the current one (one that was
        /// cancelled must not clear its successor).
        var jobID = 0
        /// The running job rewrites the data directory (initdb, clone, rewind); `dataEpoch` counts such jobs'
        /// starts and ends, so that a probe that overlapped one is known and not decided on.
        var dataJob = false
        var dataEpoch = 0
        /// The store as the last step read it (nil: unreachable), for the peeks between steps.
        var seen: Seen?
        /// The local server may take writes (it runs as a primary, or a job is making it one).
        var maybePrimary = false
        var wake = false
        var failovers = 0
        var lastFailover: Date?
        /// A rewind finished (told to the node at the next step: the loop is the node's only writer).
        var rewound = false
        /// When the last lease renewal was sent, and the last member report published (with its time): a node that
        /// steps more often than the loop (a standby watching for the leader's expiry) writes no more often.
        var lastRenewal: Double?
        var lastPublished: (MemberStatus, Double)?
        /// The last PostgreSQL action that failed: it is not tried again before `until` (1 s, doubling to 30 s).
        var failed: (name: String, until: Double, count: Int)?
    }
    let shared: Mutex<Shared>

    public init(config: HAConfig, log: @escaping @Sendable (String) -> Void, clock: @escaping @Sendable () -> Double = monotonicSeconds) throws {
        self.config = config
        self.log = log
        self.clock = clock
        let client = try EtcdClient(endpoints: config.etcdEndpoints, timeout: max(0.5, config.settings.ttl / 6))
        store = HAStore(client: client, settings: config.settings, clock: clock)
        postgres = try PostgresControl(config: config)
        let s = config.settings
        shared = Mutex(Shared(node: HANode(settings: s), status: HANodeStatus(
            cluster: s.cluster, node: s.node, role: "starting", reason: "starting", postgres: "unknown", leader: nil, timeline: nil, position: nil,
            lagBytes: nil, streaming: false, storeReachable: false, maintenance: false, switchover: nil, failovers: 0, lastFailover: nil,
            members: [], problems: [], updated: Date())))
    }

    public var status: HANodeStatus { shared.withLock { $0.status } }

    /// Whether the node may take writes now: it holds the leader key on a lease renewed in time, and its server
    /// runs as a primary (what `GET /primary` answers).
    /// This node holds the leader key on a lease renewed in time, and its server runs as primary or is being
    /// promoted (as Patroni's /primary: a proxy routes to it while the promotion ends, clients meet a read-only
    /// server for those milliseconds rather than none).
    public func isWritablePrimary() -> Bool {
        let now = clock()
        return shared.withLock { s in
            (s.status.role == HARole.primary.rawValue || (s.status.role == HARole.promoting.rawValue && s.status.postgres.hasPrefix("running")))
                && s.status.leader == config.settings.node && s.node.mayWrite(at: now)
        }
    }

    /// Seconds left before the node's writable deadline (nil without a session).
    public func leaseRemaining() -> Double? {
        let now = clock()
        return shared.withLock { s in s.node.writableUntil.map { max(0, $0 - now) } }
    }

    /// Asks the loop to step now (an API action changed the store).
    public func wake() { shared.withLock { $0.wake = true } }

    /// Runs until cancelled; on the way out the session lease is revoked (the leader key goes at once, so a
    /// standby takes over without waiting for the TTL) after the server, if primary, was stopped.
    public func run() async {
        log("ha: node \(config.settings.node) of cluster \(config.settings.cluster) starting (ttl \(seconds(config.settings.ttl)), fencing deadline \(seconds(config.settings.fencingDeadline)))")
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.guardFencing() }
            group.addTask { await self.loop() }
            await group.next()
            group.cancelAll()
        }
        let (job, lease, primary) = shared.withLock { s in (s.job, s.node.lease, s.maybePrimary) }
        job?.cancel()
        _ = await job?.value
        if primary { log("ha: stopping: \(await postgres.fence())") }
        if let lease { try? await store.client.revoke(lease) }
        await store.client.shutdown()
        log("ha: stopped")
    }

    /// Stops the local server once the writable deadline has passed, independently of the loop.
    func guardFencing() async {
        while !Task.isCancelled {
            let now = clock()
            let due = shared.withLock { s -> Bool in
                guard s.maybePrimary else { return false }
                return !s.node.mayWrite(at: now)
            }
            if due {
                cancelJob(serverStops: true)
                let late = now - (shared.withLock { $0.node.writableUntil } ?? now)
                let what = await postgres.fence()
                log("ha: fenced by the deadline guard \(seconds(late)) after the deadline: the lease was not renewed within \(seconds(config.settings.fencingDeadline)); \(what) (in \(seconds(clock() - now)))")
                shared.withLock { $0.wake = true }
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    func loop() async {
        while !Task.isCancelled {
            let next = await step()
            // Sleep until the next step is due, or until something asks for one sooner. A node that does not lead
            // reads the store every 0.05 s meanwhile (a read, no probe of the local server) and steps at once when
            // the leader key, a switchover or maintenance changed: it sees the key expire as a watch would.
            // A read that fails (the store unreachable: it may have taken TTL/2) ends the peeks until the next step.
            var peek: Double? = clock() + Self.peekInterval
            while !Task.isCancelled {
                let woken = shared.withLock { s -> Bool in let w = s.wake; s.wake = false; return w }
                if woken || clock() >= next { break }
                if let p = peek, clock() >= p, let seen = shared.withLock({ $0.seen }), seen.leader?.holder != config.settings.node {
                    peek = clock() + Self.peekInterval
                    guard let v = await store.read().view else { peek = nil; continue }
                    if Seen(v) != seen { break }
                }
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
    }

    static let peekInterval = 0.05

    /// What a node that does not lead watches between its steps.
    struct Seen: Equatable {
        var leader: ClusterView.Leader?
        var switchover: ClusterView.Switchover?
        var maintenance: Bool
        init(_ v: ClusterView) { leader = v.leader; switchover = v.switchover; maintenance = v.maintenance }
    }

    /// One step: read, probe, decide, act. Returns when the next one is due.
    func step() async -> Double {
        let (view, problems) = await store.read()
        let before = shared.withLock { s in (s.dataJob, s.dataEpoch) }
        let probe = await postgres.probe(timeout: max(1, config.settings.ttl / 3))
        var local = probe.local
        if let up = probe.upstream, let v = view {
            local.following = v.members.values.first { $0.postgres == up }?.name
        }
        let now = clock()
        let decision = shared.withLock { s -> HADecision in
            if s.rewound { s.node.rewound(); s.rewound = false }
            s.seen = view.map(Seen.init)
            // A data directory a job was writing while it was probed (a copy whose pg_control is in but whose
            // standby.signal is not yet, a rewind half done) would pass for a former primary's.
            if before.0 || s.dataJob || s.dataEpoch != before.1 { local = LocalPostgres(state: .changing) }
            switch local.state {
            case .running(standby: false): s.maybePrimary = true
            case .running(standby: true), .absent: if s.job == nil { s.maybePrimary = false }
            default: break
            }
            return s.node.step(now: now, cluster: view, local: local)
        }

        var soon = false
        var notes: [String] = []
        let interval = config.settings.loopInterval
        for action in decision.actions {
            if Task.isCancelled { break }
            switch action {
            case .publishMember(var m):
                m.api = config.api.description
                m.postgres = connectAddress.description
                let due = shared.withLock { s in s.lastPublished.map { $0.0 != m || now - $0.1 >= interval * 0.9 } ?? true }
                guard due else { continue }
                shared.withLock { $0.lastPublished = (m, now) }
                var n = shared.withLock { $0.node }
                let r = await store.perform(.publishMember(m), node: &n)
                if let note = r.note { notes.append("publishing this member: \(note)") }
            case .fence(let why):
                cancelJob(serverStops: true)
                let t0 = clock()
                let what = await postgres.fence()
                log("ha: fenced: \(why); \(what) (in \(seconds(clock() - t0)))")
                soon = true
            case .stop(let why):
                cancelJob(serverStops: false)
                let what: String
                do {
                    try await postgres.stop(timeout: max(1, config.settings.fencingDeadline / 2))
                    what = "stopped the server cleanly (fast shutdown)"
                } catch {
                    what = "\(error); then: \(await postgres.fence())"
                }
                shared.withLock { $0.maybePrimary = false }
                log("ha: stopped for \(why): \(what)")
                soon = true
            case .setSynchronousStandbys(let names):
                do {
                    try await postgres.setSynchronousStandbys(names)
                    log("ha: synchronous standbys now \(names.isEmpty ? "none (asynchronous)" : names.joined(separator: ", "))")
                } catch { notes.append("setting the synchronous standbys: \(error)") }
            case .renewLease where shared.withLock({ s in s.lastRenewal.map { now - $0 < interval * 0.9 } ?? false }):
                continue  // renewed within this loop already
            case _ where HAStore.performs(action):
                if case .renewLease = action { shared.withLock { $0.lastRenewal = now } }
                var n = shared.withLock { $0.node }
                let r = await store.perform(action, node: &n)
                // The store reports lease outcomes into the node: keep them (the loop is the only writer).
                shared.withLock { $0.node = n }
                if case .acquireLeader = action, r.ok { soon = true; log("ha: took the leader key") }
                if case .takeInitializeKey = action, r.ok { soon = true }
                if case .startSession = action, r.ok { soon = true }
                if case .clearSync = action, r.ok { log("ha: asynchronous mode: removed the synchronous standbys' key left from synchronous mode") }
                if case .publishSync(let names) = action, r.ok { log("ha: published the synchronous standbys: \(names.isEmpty ? "none" : names.joined(separator: ", "))"); soon = true }
                if let note = r.note, !r.ok { notes.append("\(describe(action)): \(note)") }
            default:
                startJob(action, view: view)
            }
        }
        record(decision, view: view, local: local, problems: problems + notes + (probe.problem.map { [$0] } ?? []))
        let n = shared.withLock { $0.node }
        if soon { return clock() + 0.02 }
        // A node that does not lead steps (reads) more often than it writes, so that it sees the leader key expire
        // within half a second (as a watch would), whatever the loop interval.
        let leads = view?.leader?.holder == config.settings.node
        return leads ? n.nextStep(after: clock()) : min(n.nextStep(after: clock()), clock() + min(0.5, interval))
    }

    /// Where the others reach this node's PostgreSQL (its `listen`; a wildcard is replaced by this host's name).
    var connectAddress: Endpoint {
        let l = config.postgres.listen
        guard l.host == "0.0.0.0" || l.host == "::" else { return l }
        return Endpoint(host: ProcessInfo.processInfo.hostName, port: l.port)
    }

    /// Starts a PostgreSQL action in the background unless one runs; it wakes the loop when done.
    func startJob(_ action: HAAction, view: ClusterView?) {
        let name = describe(action)
        let now = clock()
        let busy = shared.withLock { s in s.job != nil || (s.failed.map { $0.name == name && now < $0.until } ?? false) }
        guard !busy else { return }
        func endpoint(of member: String) -> Endpoint? {
            view?.members[member]?.postgres.flatMap(Endpoint.parse)
        }
        let work: @Sendable () async throws -> Void
        var makesPrimary = false
        var rewritesData = false
        switch action {
        case .initdb:
            makesPrimary = true
            rewritesData = true
            work = { try await self.postgres.initdb() }
        case .clone(let from):
            guard let e = endpoint(of: from) else { log("ha: cannot copy \(from): it publishes no PostgreSQL address yet"); return }
            rewritesData = true
            work = { try await self.postgres.clone(from: e) }
        case .start:
            makesPrimary = access(config.postgres.dataDir + "/standby.signal", F_OK) != 0
            work = { try await self.postgres.start() }
        case .recover:
            work = { try await self.postgres.recover() }
        case .promote:
            makesPrimary = true
            work = {
                // The loop steps as soon as the server takes writes (the checkpoint after it runs on).
                try await self.postgres.promote { self.shared.withLock { s in s.wake = true } }
                self.shared.withLock { s in s.failovers += 1; s.lastFailover = Date() }
            }
        case .follow(let leader):
            guard let e = endpoint(of: leader) else { log("ha: cannot follow \(leader): it publishes no PostgreSQL address yet"); return }
            work = { try await self.postgres.follow(e) }
        case .rewind(let from):
            guard let e = endpoint(of: from) else { log("ha: cannot rewind from \(from): it publishes no PostgreSQL address yet"); return }
            let timeline = view?.leaderTimeline
            rewritesData = true
            work = {
                try await self.postgres.rewind(from: e, leaderTimeline: timeline)
                self.shared.withLock { $0.rewound = true }
            }
        default:
            return
        }
        log("ha: \(name)…")
        shared.withLock { s in
            s.jobID &+= 1
            let id = s.jobID
            if makesPrimary { s.maybePrimary = true }
            if rewritesData { s.dataJob = true; s.dataEpoch &+= 1 }
            s.job = Task {
                let started = self.clock()
                do {
                    try await work()
                    self.shared.withLock { $0.failed = nil }
                    self.log("ha: \(name) done in \(String(format: "%.1f", self.clock() - started))s")
                } catch is CancellationError {
                    self.log("ha: \(name) cancelled")
                } catch {
                    let wait = self.shared.withLock { s -> Double in
                        let count = s.failed?.name == name ? (s.failed?.count ?? 0) + 1 : 1
                        let wait = min(30, pow(2, Double(count - 1)))
                        s.failed = (name, self.clock() + wait, count)
                        return wait
                    }
                    self.log("ha: \(name) failed (next try in \(Int(wait))s): \(error)")
                }
                self.shared.withLock { s in
                    if s.jobID == id {
                        s.job = nil
                        if s.dataJob { s.dataJob = false; s.dataEpoch &+= 1 }
                    }
                    s.wake = true
                }
            }
        }
    }

    /// Cancels the running PostgreSQL job, if any (a fence or a stop comes first); `serverStops`: the server will
    /// take no writes after this (the deadline guard has nothing left to stop).
    func cancelJob(serverStops: Bool) {
        let job = shared.withLock { s -> Task<Void, Never>? in
            let j = s.job
            s.job = nil
            s.jobID &+= 1
            if s.dataJob { s.dataJob = false; s.dataEpoch &+= 1 }
            if serverStops { s.maybePrimary = false }
            return j
        }
        job?.cancel()
    }

    func seconds(_ s: Double) -> String { String(format: "%.2fs", s) }

    func describe(_ a: HAAction) -> String {
        switch a {
        case .startSession: return "starting a session"
        case .renewLease: return "renewing the lease"
        case .publishMember: return "publishing this member"
        case .takeInitializeKey: return "claiming the bootstrap"
        case .publishInitialized: return "recording the system identifier"
        case .initdb: return "initdb"
        case .clone(let f): return "copying \(f) (pg_basebackup)"
        case .acquireLeader: return "taking the leader key"
        case .publishLeader: return "publishing the leader's position"
        case .start: return "starting PostgreSQL"
        case .recover: return "starting PostgreSQL in recovery (no upstream)"
        case .promote: return "promoting"
        case .fence: return "fencing"
        case .stop: return "stopping"
        case .follow(let l): return "following \(l)"
        case .rewind(let f): return "rewinding from \(f) (pg_rewind)"
        case .releaseLeader: return "releasing the leader key"
        case .clearSwitchover: return "clearing the switchover"
        case .setSynchronousStandbys: return "setting the synchronous standbys"
        case .publishSync: return "publishing the synchronous standbys"
        case .clearSync: return "removing the synchronous standbys' key (asynchronous mode)"
        }
    }

    func record(_ d: HADecision, view: ClusterView?, local: LocalPostgres, problems: [String]) {
        let pgState: String
        switch local.state {
        case .absent: pgState = "absent"
        case .stopped(let standby): pgState = standby ? "stopped-standby" : "stopped"
        case .running(let standby): pgState = standby ? "running-standby" : "running"
        case .unknown: pgState = "unknown"
        case .changing: pgState = "changing"
        }
        let changed = shared.withLock { s -> Bool in
            var lag: UInt64?
            if let lp = view?.leaderPosition, let p = local.position { lag = lp > p ? lp - p : 0 }
            if view?.leader?.holder == config.settings.node { lag = 0 }
            s.status = HANodeStatus(
                cluster: config.settings.cluster, node: config.settings.node, role: d.role.rawValue, reason: d.reason, postgres: pgState,
                leader: view?.leader?.holder ?? (view == nil ? s.status.leader : nil), timeline: local.timeline, position: local.position, lagBytes: lag,
                streaming: local.streaming, storeReachable: view != nil, maintenance: view?.maintenance ?? s.status.maintenance,
                switchover: view?.switchover.map { "\($0.from) -> \($0.to)" }, failovers: s.failovers, lastFailover: s.lastFailover,
                members: view.map { $0.members.values.sorted { $0.name < $1.name } } ?? s.status.members, problems: problems, updated: Date())
            // Changes of figures alone (seconds left, bytes behind) are not news.
            let key = (d.role.rawValue + " " + d.reason).filter { !$0.isNumber }
            defer { s.lastReason = key }
            return key != s.lastReason
        }
        if changed { log("ha: role=\(d.role.rawValue) \(d.reason)") }
    }
}
