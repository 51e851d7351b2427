import Foundation
import LifeboatWAL

/// What a node's driver does for a decision, in order. The driver reports the outcome of the session actions
/// (`sessionStarted`, `renewed`, `sessionLost`) and of `rewind` (`rewound`), then reads the cluster again.
public enum HAAction: Sendable, Equatable {
    /// Grant a lease (this node's session): its member key and, when it leads, the leader key live on it.
    case startSession
    /// Keep the session's lease alive (keepalive); the driver reports `renewed` with the time it sent the request.
    case renewLease
    /// Write this node's report under its session lease.
    case publishMember(MemberStatus)
    /// Create the `initialize` key in this node's name, only if absent: the winner bootstraps the cluster.
    case takeInitializeKey
    /// Record the bootstrapped cluster's system identifier in the `initialize` key.
    case publishInitialized(String)
    /// Create the data directory (`initdb`).
    case initdb
    /// Copy the leader (`pg_basebackup`) and start as its standby.
    case clone(from: String)
    /// Put the leader key on this node's session lease: only if absent (`ifRevision` nil) or only if it is still
    /// at that modification revision (a key in this node's name left by a former run of it).
    case acquireLeader(ifRevision: Int64?)
    /// Publish the leader's WAL position and timeline.
    case publishLeader(position: UInt64, timeline: UInt32)
    /// Synchronous mode: require these standbys' acknowledgement for every commit (`synchronous_standby_names =
    /// 'FIRST n (…)'`, all of them; empty: none).
    case setSynchronousStandbys([String])
    /// Synchronous mode: publish which standbys hold every acknowledged commit (the `sync` key, written only while
    /// the leader key is this node's).
    case publishSync([String])
    /// Asynchronous mode: remove a `sync` key left from a synchronous period (only while the leader key is this
    /// node's), so that it does not bind the standbys when the mode is turned on again.
    case clearSync
    /// Start PostgreSQL as its data directory is (a primary's starts as primary).
    case start
    /// Start PostgreSQL in recovery with no upstream (`standby.signal`, no `primary_conninfo`): it replays its own
    /// WAL to the end, so that its position is known and it can take part in a race for the free key. A stopped
    /// server's control file only gives its last checkpoint, which would make every node of a cluster that
    /// stopped at once look behind, and none take over.
    case recover
    /// Promote the standby (`pg_promote()`).
    case promote
    /// Stop taking writes now (stop the server at once), for the reason given.
    case fence(String)
    /// Stop the server cleanly (a checkpoint, every standby sent the last WAL) for a planned handover; the driver
    /// falls back to `fence` if that does not end in time.
    case stop(String)
    /// Make the server a standby of the named node (`primary_conninfo`, `standby.signal`), restarted.
    case follow(String)
    /// `pg_rewind` from the named node, then make the data directory its standby as `follow` does (the driver
    /// reports `rewound`).
    case rewind(from: String)
    /// Delete the leader key if it is still this node's.
    case releaseLeader
    /// Delete the switchover key (the handover is done).
    case clearSwitchover
}

/// One step's decision: the role the node reports, what to do, and why (logged with every change).
public struct HADecision: Sendable, Equatable {
    public var role: HARole
    public var actions: [HAAction]
    public var reason: String
}

/// The decisions of one HA node: pure, driven by what the consensus store holds (`ClusterView`), what the local
/// PostgreSQL is (`LocalPostgres`), the outcome of its own lease requests, and a monotonic clock the caller
/// passes in (a wall-clock jump changes nothing).
///
/// Safety rests on two rules. A node takes writes only while it holds the leader key on a lease whose last
/// renewal it sent less than `fencingDeadline` ago; past that it fences (stops the server), before etcd, which
/// counts the TTL from when that renewal arrived, can let the key expire. And a node becomes primary only after
/// its create-if-absent (or compare-revision) write of the leader key succeeded: etcd lets one writer win.
/// Which standby may try is the second half: caught up with the last position the old primary published, its
/// replication not broken for long before the primary vanished, no live candidate further ahead.
public struct HANode: Sendable {
    public let settings: HASettings
    /// The session lease (etcd lease ID), while the node has one.
    public private(set) var lease: Int64?
    /// Until when (monotonic seconds) the node may take writes: the send time of the last lease request that
    /// succeeded plus the fencing deadline.
    public private(set) var writableUntil: Double?
    /// When the node last saw a leader key, and last saw its WAL receiver streaming.
    public private(set) var leaderLastSeen: Double?
    public private(set) var lastStreaming: Double?
    /// When the local server last answered a probe.
    public private(set) var lastAnswered: Double?
    /// The leader this standby follows and since when (a standby that never streams from it may be ahead of it).
    public private(set) var following: (leader: String, since: Double)?
    /// Synchronous mode: the leader's flush position when it last widened `synchronous_standby_names`; a standby
    /// added then holds every acknowledged commit once it has flushed past it.
    public private(set) var syncWidenedAt: UInt64?
    /// The leader's flush position at its first step as a writable primary: a standby has switched to this
    /// leader's timeline once it flushed past it (before that, pg_stat_replication can show it streaming the old
    /// timeline up to the switch, then reconnecting, and commits made to wait for it would wait that long).
    public private(set) var leadingFrom: UInt64?
    /// The node ran as primary and stopped: it is rewound before it follows another.
    public private(set) var needsRewind = false
    /// The server was started in recovery on its own WAL (`recover`): it streams from nobody by design, so the
    /// replication-broken rule does not apply; its position (its WAL's end) is judged against the old leader's.
    public private(set) var recoveredAlone = false
    /// Why the node refuses to take part (a cluster that is not its own); nil while it takes part.
    public private(set) var refused: String?

    public init(settings: HASettings) { self.settings = settings }

    // MARK: outcomes reported by the driver

    /// A lease was granted; `sentAt`: when the grant request was sent (its TTL runs from when etcd received it).
    public mutating func sessionStarted(lease: Int64, sentAt: Double) {
        self.lease = lease
        writableUntil = sentAt + settings.fencingDeadline
    }

    /// A keepalive of the session lease succeeded; `sentAt`: when it was sent.
    public mutating func renewed(sentAt: Double) {
        guard lease != nil else { return }
        writableUntil = max(writableUntil ?? sentAt, sentAt + settings.fencingDeadline)
    }

    /// The lease is gone (expired or revoked): the next step starts a session, and a primary fences.
    public mutating func sessionLost() {
        lease = nil
        writableUntil = nil
    }

    /// `pg_rewind` finished: the data directory can follow the new leader.
    public mutating func rewound() { needsRewind = false }

    /// Whether the node may take writes at `now` (a lease, and its deadline not passed).
    public func mayWrite(at now: Double) -> Bool { lease != nil && (writableUntil.map { now < $0 } ?? false) }

    /// When the driver must step again even if nothing is heard: the next loop, or the fencing deadline if sooner.
    public func nextStep(after now: Double) -> Double {
        let loop = now + settings.loopInterval
        guard let w = writableUntil, w > now else { return loop }
        return min(loop, w)
    }

    // MARK: the decision

    public mutating func step(now: Double, cluster: ClusterView?, local: LocalPostgres) -> HADecision {
        if local.streaming { lastStreaming = now }
        if case .running = local.state { lastAnswered = now }
        let me = settings.node
        if let refused { return HADecision(role: .refused, actions: [], reason: refused) }
        let writable = local.isWritablePrimary
        let mayWrite = self.mayWrite(at: now)

        // A primary takes writes only on a live lease whose deadline has not passed, whatever else holds.
        if writable && !mayWrite {
            let why: String
            if lease == nil {
                why = "the server runs as a primary and this node holds no lease (the agent started or lost its session): stopping writes until it takes the leader key"
            } else if cluster == nil {
                why = "the consensus store cannot be reached and the lease was not renewed within \(format(settings.fencingDeadline)): stopping writes before it can expire elsewhere"
            } else {
                why = "the lease was not renewed within \(format(settings.fencingDeadline)) (the node or its link to the store stalled): stopping writes before it can expire elsewhere"
            }
            return fence(why)
        }

        // Unreachable store: nobody is promoted from here; a primary renews until its deadline.
        guard let c = cluster else {
            let actions: [HAAction] = lease != nil ? [.renewLease] : []
            if writable {
                return HADecision(role: .primary, actions: actions, reason: "the consensus store cannot be reached: renewing; writes stop in \(format((writableUntil ?? now) - now)) unless a renewal succeeds")
            }
            return HADecision(role: role(of: local), actions: actions, reason: "the consensus store cannot be reached: no failover decision until it answers")
        }

        if c.leader?.holder != me { leadingFrom = nil }

        // A cluster that is not this node's.
        if let sys = c.initialized, let mine = local.systemIdentifier, sys != mine {
            let why = "the cluster \(settings.cluster) is database system \(sys), and this node's data directory is system \(mine): it does not join (remove the data directory to clone it anew, or fix ha.cluster)"
            refused = why
            return HADecision(role: .refused, actions: [], reason: why)
        }

        guard lease != nil else {
            return HADecision(role: role(of: local), actions: [.startSession], reason: "starting a session with the consensus store")
        }
        var actions: [HAAction] = [.renewLease, .publishMember(report(now: now, c, local))]

        // Bootstrap: the first node to take the initialize key creates (or adopts) the database.
        if c.initialized == nil {
            return bootstrap(now: now, c, local, actions)
        }

        if let l = c.leader {
            leaderLastSeen = now
            if l.holder == me {
                guard l.lease == lease else {
                    // The key in this node's name on another lease: left by a former run of this agent, still
                    // alive, so nobody else leads. Taken over only if it did not change since this read.
                    actions.append(.acquireLeader(ifRevision: l.revision))
                    return HADecision(role: role(of: local), actions: actions, reason: "taking over the leader key left by this node's former session (revision \(l.revision))")
                }
                return lead(now: now, c, local, actions)
            }
            // Another node leads.
            if writable {
                return fence("node \(l.holder) holds the leader key and this node's server runs as a primary")
            }
            switch local.state {
            case .absent:
                // A copy of the leader never needs a rewind, whatever this node was before.
                needsRewind = false
                recoveredAlone = false
                actions.append(.clone(from: l.holder))
                return HADecision(role: .bootstrapping, actions: actions, reason: "copying the leader \(l.holder) (pg_basebackup)")
            case .unknown:
                return HADecision(role: .stopped, actions: actions, reason: "the local server does not answer; waiting")
            case .changing:
                return HADecision(role: role(of: local), actions: actions, reason: "waiting for the job on the data directory to end (leader \(l.holder))")
            case .stopped(standby: false):
                // A former primary's data directory (fenced, or found so after a restart): it may hold WAL the
                // new leader never had.
                needsRewind = true
                actions.append(.rewind(from: l.holder))
                return HADecision(role: .fenced, actions: actions, reason: "rewinding from the leader \(l.holder) before following it (this node was primary)")
            case .stopped(standby: true), .running(standby: true):
                if needsRewind {
                    // A former primary recovered on its own WAL (no leader then): it may hold WAL the leader never had.
                    actions.append(.rewind(from: l.holder))
                    return HADecision(role: .fenced, actions: actions, reason: "rewinding from the leader \(l.holder) before following it (this node was primary)")
                }
                recoveredAlone = false
                if local.state != .running(standby: true) || local.following != l.holder {
                    actions.append(.follow(l.holder))
                    return HADecision(role: .standby, actions: actions, reason: "following the leader \(l.holder)")
                }
                if following?.leader != l.holder { following = (l.holder, now) }
                // A standby that received WAL the new leader never had (ahead of the standby promoted: in synchronous
                // mode only the synchronous one may take over) cannot stream from it: it stays on the old timeline.
                // After a TTL of following without streaming it is rewound (pg_rewind finds nothing to undo when it
                // was not ahead), as Patroni checks a replica's timeline against the leader's history. Its own
                // timeline counts, not the newest history file it holds: it fetches the leader's and still cannot
                // follow it.
                if let lt = c.leaderTimeline, let t = local.replayTimeline ?? local.timeline, t < lt, !local.streaming,
                   now - max(lastStreaming ?? -.infinity, following?.since ?? now) >= settings.ttl {
                    needsRewind = true
                    following = nil
                    actions.append(.rewind(from: l.holder))
                    return HADecision(role: .standby, actions: actions, reason: "on timeline \(t), behind the leader's \(lt), and not streaming from \(l.holder) for \(format(settings.ttl)): rewinding (it may hold WAL the leader never had)")
                }
                return HADecision(role: .standby, actions: actions, reason: "standby of \(l.holder)")
            case .running(standby: false):
                return fence("node \(l.holder) holds the leader key")  // (writable: handled above)
            }
        }

        // No leader: the old one's lease expired, or it let the key go.
        if c.maintenance {
            return HADecision(role: role(of: local), actions: actions, reason: "no leader, and the cluster is in maintenance: no automatic failover")
        }
        if case .stopped(let standby) = local.state, !settings.noFailover {
            if !standby { needsRewind = true }
            recoveredAlone = true
            actions.append(.recover)
            return HADecision(role: role(of: local), actions: actions, reason: "no leader: starting the server in recovery to learn how far its WAL goes")
        }
        if let why = ineligible(now: now, c, local, racing: true) {
            return HADecision(role: role(of: local), actions: actions, reason: "no leader; not taking the lease: \(why)")
        }
        actions.append(.acquireLeader(ifRevision: nil))
        return HADecision(role: role(of: local), actions: actions, reason: "no leader; taking the lease (position \(local.position.map { LSN($0).description } ?? "?"), the old leader's \(c.leaderPosition.map { LSN($0).description } ?? "unknown"))")
    }

    /// The leader's step: keep the server a writable primary, publish its position, hand over on a switchover.
    mutating func lead(now: Double, _ c: ClusterView, _ local: LocalPostgres, _ base: [HAAction]) -> HADecision {
        var actions = base
        let me = settings.node
        recoveredAlone = false
        if c.switchover?.to == me { actions.append(.clearSwitchover) }
        // The key is still in this node's name, but its lease may be expiring (renewals failed): no start or
        // promotion until a renewal succeeds.
        guard mayWrite(at: now) else {
            return HADecision(role: role(of: local), actions: actions, reason: "holding the leader key, but the lease was not renewed within \(format(settings.fencingDeadline)): not taking writes until a renewal succeeds")
        }
        switch local.state {
        case .running(standby: false):
            needsRewind = false
            if leadingFrom == nil { leadingFrom = local.position ?? 0 }
            if let p = local.position, let t = local.timeline { actions.append(.publishLeader(position: p, timeline: t)) }
            actions += synchronousActions(c, local)
            if let sw = c.switchover, sw.from == me, sw.to != me {
                guard let target = c.members[sw.to], target.candidate else {
                    return HADecision(role: .primary, actions: actions, reason: "switchover to \(sw.to) waits: it is not a live candidate")
                }
                let behind = (local.position ?? 0) > (target.position ?? 0) ? (local.position ?? 0) - (target.position ?? 0) : 0
                guard behind <= settings.maximumLagOnFailover else {
                    return HADecision(role: .primary, actions: actions, reason: "switchover to \(sw.to) waits: it is \(behind) bytes behind")
                }
                needsRewind = true
                actions.append(.stop("switchover to \(sw.to)"))
                actions.append(.releaseLeader)
                return HADecision(role: .fenced, actions: actions, reason: "switchover: stopping writes and handing the leader key to \(sw.to)")
            }
            return HADecision(role: .primary, actions: actions, reason: "leader")
        case .running(standby: true):
            actions.append(.promote)
            return HADecision(role: .promoting, actions: actions, reason: "holding the leader key: promoting")
        case .stopped:
            actions.append(.start)
            return HADecision(role: .promoting, actions: actions, reason: "holding the leader key: starting the server")
        case .changing:
            return HADecision(role: .promoting, actions: actions, reason: "holding the leader key: waiting for the job on the data directory to end")
        case .unknown where lastAnswered.map({ now - $0 < settings.ttl }) ?? false:
            // A server that answered a moment ago and now does not is slow (a loaded host) more often than dead:
            // the key is kept (no other node may write meanwhile) for one TTL, as a leader whose loop stalled would
            // keep it; a server still silent after that is given up.
            return HADecision(role: role(of: local), actions: actions, reason: "holding the leader key; the local server does not answer (for \(format(now - (lastAnswered ?? now)))): given up if it still does not after \(format(settings.ttl))")
        case .absent, .unknown:
            actions.append(.releaseLeader)
            return HADecision(role: .stopped, actions: actions, reason: "holding the leader key without a working server: giving it up")
        }
    }

    mutating func bootstrap(now: Double, _ c: ClusterView, _ local: LocalPostgres, _ base: [HAAction]) -> HADecision {
        var actions = base
        let me = settings.node
        guard let b = c.bootstrapper else {
            actions.append(.takeInitializeKey)
            return HADecision(role: .bootstrapping, actions: actions, reason: "the cluster is not initialized: claiming its bootstrap")
        }
        guard b == me else {
            return HADecision(role: .bootstrapping, actions: actions, reason: "waiting for \(b) to bootstrap the cluster")
        }
        let leads = c.leader?.holder == me && c.leader?.lease == lease
        switch local.state {
        case .absent:
            guard mayWrite(at: now) else { return HADecision(role: .bootstrapping, actions: actions, reason: "bootstrapping: waiting for a lease renewal before initdb") }
            actions.append(.initdb)
            return HADecision(role: .bootstrapping, actions: actions, reason: "bootstrapping: initdb")
        case .stopped:
            guard mayWrite(at: now) else { return HADecision(role: .bootstrapping, actions: actions, reason: "bootstrapping: waiting for a lease renewal before starting the server") }
            actions.append(.start)
            return HADecision(role: .bootstrapping, actions: actions, reason: "bootstrapping: starting the server")
        case .running(let standby):
            if !leads {
                actions.append(.acquireLeader(ifRevision: nil))
                return HADecision(role: .bootstrapping, actions: actions, reason: "bootstrapping: taking the leader key")
            }
            if standby {
                actions.append(.promote)
                return HADecision(role: .promoting, actions: actions, reason: "bootstrapping from a standby's data directory: promoting")
            }
            if let sys = local.systemIdentifier { actions.append(.publishInitialized(sys)) }
            return HADecision(role: .primary, actions: actions, reason: "bootstrapped: system \(local.systemIdentifier ?? "?")")
        case .unknown:
            return HADecision(role: .bootstrapping, actions: actions, reason: "bootstrapping: the server does not answer")
        case .changing:
            return HADecision(role: .bootstrapping, actions: actions, reason: "bootstrapping: waiting for the job on the data directory to end")
        }
    }

    /// Why this node may not take a free leader key (nil: it may). `racing`: also defer to a live candidate
    /// further ahead, and to a switchover's target (a node's published `candidate` leaves those two out, so that
    /// two nodes never defer to each other).
    func ineligible(now: Double, _ c: ClusterView, _ local: LocalPostgres, racing: Bool) -> String? {
        let me = settings.node
        if settings.noFailover { return "this node never takes over (no_failover)" }
        switch local.state {
        case .absent: return "no data directory"
        case .unknown: return "the local server does not answer"
        case .changing: return "a job is rewriting its data directory"
        default: break
        }
        guard let pos = local.position else { return "its WAL position is not known" }
        if let t = c.leaderTimeline, let mine = local.timeline, mine < t {
            return "it is on timeline \(mine), the leader was on \(t)"
        }
        if let lead = c.leaderPosition, lead > pos, lead - pos > settings.maximumLagOnFailover {
            return "it is \(lead - pos) bytes behind the old leader's last position \(LSN(lead).description) (limit \(settings.maximumLagOnFailover))"
        }
        if case .running(standby: true) = local.state, !recoveredAlone {
            let reference = leaderLastSeen ?? now
            guard let s = lastStreaming, s >= reference - settings.maximumReplicationBroken else {
                let since = lastStreaming.map { "\(format(now - $0)) ago" } ?? "not since this agent started"
                return "its replication was last streaming \(since), more than \(format(settings.maximumReplicationBroken)) before the leader vanished"
            }
        }
        // No `sync` key: no leader ever ran in synchronous mode (a sync-mode leader publishes one as it starts to
        // lead, before any commit waits for a standby), so no commit was acknowledged synchronously and the
        // asynchronous rules apply (as Patroni does). Without this, turning synchronous mode on by restarting every
        // node, the leader last, leaves a cluster nobody may lead.
        if settings.synchronous, let sync = c.sync, sync.leader != me {
            guard sync.standbys.contains(me) else {
                return "synchronous mode: only \(sync.standbys.isEmpty ? "no node" : sync.standbys.joined(separator: ", ")) may take over (the standbys that hold every acknowledged commit)"
            }
        }
        guard racing else { return nil }
        if let sw = c.switchover, c.members[sw.to] != nil {
            // Only the target takes the key, and it defers to nobody (the others defer to it).
            return sw.to == me ? nil : "a switchover to \(sw.to) is under way"
        }
        let ahead = c.members.values.filter { m in
            m.name != me && m.candidate && (m.timeline ?? 0) >= (local.timeline ?? 0)
                && ((m.position ?? 0) > pos || ((m.position ?? 0) == pos && m.name < me))
        }
        if let best = ahead.max(by: { ($0.position ?? 0, $1.name) < ($1.position ?? 0, $0.name) }) {
            return "\(best.name) is a candidate at \(LSN(best.position ?? 0).description) (this node: \(LSN(pos).description))"
        }
        return nil
    }

    /// The leader's management of synchronous replication. The `sync` key names the standbys that hold every
    /// acknowledged commit (only they may take over); `synchronous_standby_names` makes every commit wait for all
    /// of them. Narrowing the set is published first, then applied; widening is applied first (commits then wait for
    /// the old and the new standbys), published only once each new standby has flushed past the position at the
    /// change, then the old ones are let go. So at every moment each node in the key holds every acknowledged commit.
    mutating func synchronousActions(_ c: ClusterView, _ local: LocalPostgres) -> [HAAction] {
        let me = settings.node
        let configured = local.synchronousStandbys
        guard settings.synchronous else {
            return (c.sync == nil ? [] : [.clearSync]) + (configured == [] ? [] : [.setSynchronousStandbys([])])
        }
        // A new leader: the key names it alone first (nobody else may take over), before any of its commits waits
        // for a standby; the key the old leader left names standbys that need not hold this leader's commits.
        guard c.sync?.leader == me else { return [.publishSync([])] }
        let published = c.sync?.standbys ?? []
        let streaming = Set(local.replicas.keys)
        // Eligible standbys: live members that stream from this node and may fail over.
        let healthy = local.replicas.filter { name, flushed in
            name != me && HASettings.validName(name) && c.members[name].map { $0.role == .standby } ?? false
                && flushed >= (leadingFrom ?? 0)
        }
        // Keep the published ones that still stream; else one already required (a change under way is not
        // restarted for another standby that overtook it); else the standby furthest ahead.
        var desired = published.filter { streaming.contains($0) && healthy[$0] != nil }
        if desired.isEmpty, let pending = (configured ?? []).first(where: { healthy[$0] != nil }) { desired = [pending] }
        if desired.isEmpty, let best = healthy.max(by: { ($0.value, $1.key) < ($1.value, $0.key) }) { desired = [best.key] }
        if Set(desired) == Set(published) {
            // Published as wanted: narrow the configuration to it once the key says so.
            syncWidenedAt = nil
            return configured.map(Set.init) == Set(desired) ? [] : [.setSynchronousStandbys(desired)]
        }
        let added = desired.filter { !published.contains($0) }
        if added.isEmpty {
            // Only removals: publish the smaller set first (always safe), then stop waiting for the others.
            return [.publishSync(desired)]
        }
        // Widening: every commit waits for the published and the new standbys together…
        let both = published + added.filter { !published.contains($0) }
        if configured.map(Set.init) != Set(both) {
            syncWidenedAt = local.position
            return [.setSynchronousStandbys(both)]
        }
        // …and the new ones are published once they hold everything up to the change.
        guard let mark = syncWidenedAt ?? local.position, added.allSatisfy({ (local.replicas[$0] ?? 0) >= mark }) else { return [] }
        return [.publishSync(desired)]
    }

    /// This node's report: its role, position and whether it is a candidate.
    func report(now: Double, _ c: ClusterView, _ local: LocalPostgres) -> MemberStatus {
        MemberStatus(name: settings.node, role: role(of: local), timeline: local.timeline, position: local.position,
                     candidate: ineligible(now: now, c, local, racing: false) == nil)
    }

    func role(of local: LocalPostgres) -> HARole {
        switch local.state {
        case .running(standby: false): return .primary
        case .running(standby: true): return .standby
        case .stopped(standby: false) where needsRewind, .changing where needsRewind: return .fenced
        case .absent, .changing: return .bootstrapping
        default: return .stopped
        }
    }

    mutating func fence(_ why: String) -> HADecision {
        needsRewind = true
        return HADecision(role: .fenced, actions: [.fence(why)], reason: why)
    }

    func format(_ s: Double) -> String { String(format: "%.1fs", s) }
}
