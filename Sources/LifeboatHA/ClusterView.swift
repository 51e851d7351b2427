import Foundation

/// What the consensus store holds about a cluster at one read (one etcd revision).
public struct ClusterView: Sendable, Equatable {
    /// The leader key: who holds it, under which lease, at which modification revision.
    public struct Leader: Sendable, Equatable {
        public var holder: String
        public var lease: Int64
        public var revision: Int64
        public init(holder: String, lease: Int64, revision: Int64) { self.holder = holder; self.lease = lease; self.revision = revision }
    }

    /// A planned handover: the leader gives up its key once `to` is caught up, and only `to` may take it.
    public struct Switchover: Sendable, Equatable {
        public var from: String
        public var to: String
        public init(from: String, to: String) { self.from = from; self.to = to }
    }

    /// Synchronous mode: the standbys that hold every acknowledged commit of `leader`, the only nodes that may take
    /// over from it (the `sync` key).
    public struct Sync: Sendable, Equatable, Codable {
        public var leader: String
        public var standbys: [String]
        public init(leader: String, standbys: [String]) { self.leader = leader; self.standbys = standbys }
    }

    public var leader: Leader?
    public var sync: Sync?
    /// The last WAL position (flush LSN) and timeline the leader published; they stay after it vanishes.
    public var leaderPosition: UInt64?
    public var leaderTimeline: UInt32?
    /// Each live member's own report (its key carries its lease: a member that stops reporting vanishes).
    public var members: [String: MemberStatus] = [:]
    /// The database system identifier once the cluster is bootstrapped (the `initialize` key's value then).
    public var initialized: String?
    /// The node bootstrapping it (the `initialize` key's holder before that).
    public var bootstrapper: String?
    public var switchover: Switchover?
    /// No automatic failover while set (`lifeboat ha pause`).
    public var maintenance = false

    public init(leader: Leader? = nil, leaderPosition: UInt64? = nil, leaderTimeline: UInt32? = nil, members: [String: MemberStatus] = [:],
                initialized: String? = nil, bootstrapper: String? = nil, switchover: Switchover? = nil, maintenance: Bool = false,
                sync: Sync? = nil) {
        self.leader = leader; self.sync = sync; self.leaderPosition = leaderPosition; self.leaderTimeline = leaderTimeline; self.members = members
        self.initialized = initialized; self.bootstrapper = bootstrapper; self.switchover = switchover; self.maintenance = maintenance
    }
}

/// One member's report of itself, as it publishes it.
public struct MemberStatus: Sendable, Equatable, Codable {
    public var name: String
    public var role: HARole
    public var timeline: UInt32?
    /// Its WAL position: the flush LSN of a primary, the newest received or replayed one of a standby.
    public var position: UInt64?
    /// Whether it would take the lease now if it were free (caught up, replication not broken, failover allowed).
    public var candidate: Bool
    /// Where its API and its PostgreSQL listen (`host:port`).
    public var api: String?
    public var postgres: String?

    public init(name: String, role: HARole, timeline: UInt32? = nil, position: UInt64? = nil, candidate: Bool = false,
                api: String? = nil, postgres: String? = nil) {
        self.name = name; self.role = role; self.timeline = timeline; self.position = position; self.candidate = candidate
        self.api = api; self.postgres = postgres
    }
}

/// What a node is, as it reports it.
public enum HARole: String, Sendable, Codable, Equatable {
    case primary, standby, promoting, fenced, bootstrapping, stopped, refused
}

/// The node's PostgreSQL as the agent sees it at one moment.
public struct LocalPostgres: Sendable, Equatable {
    public enum State: Sendable, Equatable {
        /// No data directory (or an empty one).
        case absent
        /// A data directory, the server down; `standby`: it starts as a standby (`standby.signal`).
        case stopped(standby: Bool)
        /// The server answers; `standby`: in recovery.
        case running(standby: Bool)
        /// The server does not answer and its state cannot be read.
        case unknown
        /// A job of the agent rewrites the data directory (initdb, a copy, a rewind): what it holds says nothing
        /// until the job ends, so no decision is taken on it.
        case changing
    }

    public var state: State
    public var systemIdentifier: String?
    public var timeline: UInt32?
    /// The WAL position (see `MemberStatus.position`; of a stopped server, where its last checkpoint ended).
    public var position: UInt64?
    /// A standby's WAL receiver is streaming from its primary.
    public var streaming = false
    /// The node a standby's `primary_conninfo` names.
    public var following: String?
    /// A primary's `synchronous_standby_names`, as the names it requires (nil: a value the agent did not write).
    public var synchronousStandbys: [String]? = []
    /// A primary's streaming standbys (`pg_stat_replication`): name (application_name) and flushed position.
    public var replicas: [String: UInt64] = [:]
    /// A running standby's own timeline: its WAL receiver's while it streams, else its last restartpoint's; never
    /// raised by a history file it fetched (`timeline` is: a standby holding the history of a timeline that forked
    /// before its position cannot follow it, and still reports it).
    public var replayTimeline: UInt32?

    public init(state: State, systemIdentifier: String? = nil, timeline: UInt32? = nil, position: UInt64? = nil,
                streaming: Bool = false, following: String? = nil) {
        self.state = state; self.systemIdentifier = systemIdentifier; self.timeline = timeline; self.position = position
        self.streaming = streaming; self.following = following
    }

    /// A primary taking writes.
    public var isWritablePrimary: Bool { state == .running(standby: false) }
}
