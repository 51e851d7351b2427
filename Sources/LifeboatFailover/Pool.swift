import Foundation

/// How a pool spreads connections.
public enum PoolMode: String, Sendable {
    /// All traffic to the best healthy backend by priority (primary, then standbys).
    case failover
    /// Active-active: smooth weighted round robin over healthy backends.
    case roundRobin = "round-robin"
    /// Active-active: the healthy backend with the fewest connections per unit of weight.
    case leastConnections = "least-connections"
}

/// Whether a recovered, better backend takes traffic back by itself.
public enum Failback: String, Sendable { case manual, auto }

/// A change of the serving backend in a failover pool.
public struct Switch: Sendable, Equatable {
    public var old: String?
    public var new: String?
    public var reason: String
    public init(old: String?, new: String?, reason: String) { self.old = old; self.new = new; self.reason = reason }
}

/// One backend as the pool sees it.
public struct PoolMember: Sendable, Equatable {
    /// Stable across configuration reloads while the backend keeps its name and address; never reused in a pool.
    public var id: Int
    /// What makes a backend the same one across reloads (its name and address).
    public var key: String
    public var name: String
    public var priority: Int
    public var weight: Int
    public var health: BackendHealth
    public var connections = 0
    var currentWeight = 0

    public init(id: Int = 0, key: String? = nil, name: String, priority: Int, weight: Int, health: BackendHealth) {
        self.id = id
        self.key = key ?? name
        self.name = name
        self.priority = priority
        self.weight = max(1, weight)
        self.health = health
    }
}

/// Backend selection and failover decisions of one pool: pure, driven by the health state machine.
///
/// In `failover` mode one backend serves (`active`). It changes only when the active backend stops taking
/// traffic (then the best healthy backend by priority takes over), when an operator promotes another,
/// or, with `failback: auto`, when a backend of better priority is up again. With `failback: manual` a
/// recovered old primary stays idle until an operator promotes it, so a flapping node never takes traffic
/// back by itself and two nodes never both believe they are primary because of the proxy.
public struct PoolState: Sendable {
    public let mode: PoolMode
    public let failback: Failback
    public var members: [PoolMember]
    public private(set) var active: Int?

    public init(mode: PoolMode, failback: Failback, members: [PoolMember]) {
        self.mode = mode
        self.failback = failback
        self.members = members
        if mode == .failover { active = PoolState.best(members, excluding: []) }
    }

    static func best(_ m: [PoolMember], excluding: Set<Int>) -> Int? {
        m.indices.filter { m[$0].health.acceptsTraffic && !excluding.contains($0) }
            .min { (m[$0].priority, $0) < (m[$1].priority, $1) }
    }

    public func index(of name: String) -> Int? { members.firstIndex { $0.name == name } }
    public func index(id: Int) -> Int? { members.firstIndex { $0.id == id } }

    /// What a backend is in a reloaded configuration.
    public struct MemberSpec: Sendable {
        public var key: String, name: String, priority: Int, weight: Int
        public init(key: String, name: String, priority: Int, weight: Int) {
            self.key = key; self.name = name; self.priority = priority; self.weight = weight
        }
    }

    /// The pool after a configuration reload. A backend with the same key (name and address) keeps its ID,
    /// health, operator flags and connection count; a new one starts up with a fresh ID (from `nextID`). The
    /// serving backend of a failover pool stays if it is still there and accepts traffic (no switch just because
    /// the file was re-read); otherwise the best healthy one takes over and the switch is returned.
    public func reloaded(mode: PoolMode, failback: Failback, fall: Int, rise: Int, specs: [MemberSpec],
                         nextID: inout Int, now: Date) -> (PoolState, Switch?) {
        let kept = specs.map { spec -> PoolMember in
            if var m = self.members.first(where: { $0.key == spec.key }) {
                m.name = spec.name
                m.priority = spec.priority
                m.weight = max(1, spec.weight)
                m.health.setThresholds(fall: fall, rise: rise)
                return m
            }
            nextID += 1
            return PoolMember(id: nextID, key: spec.key, name: spec.name, priority: spec.priority, weight: spec.weight,
                              health: BackendHealth(fall: fall, rise: rise, now: now))
        }
        var next = PoolState(mode: mode, failback: failback, members: kept)
        guard mode == .failover else { return (next, nil) }
        let oldActive = active.map { self.members[$0] }
        if let o = oldActive, let i = next.index(id: o.id), next.members[i].health.acceptsTraffic {
            next.active = i
            return (next, next.reconcile(reason: "reload"))
        }
        if oldActive?.id == next.active.map({ next.members[$0].id }) { return (next, nil) }
        return (next, Switch(old: oldActive?.name, new: next.activeName, reason: "reload"))
    }
    public var activeName: String? { active.map { members[$0].name } }

    /// Re-decides the serving backend after health or operator changes (failover mode).
    public mutating func reconcile(reason: String = "health") -> Switch? {
        guard mode == .failover else { return nil }
        let old = active
        if let a = active, members[a].health.acceptsTraffic {
            guard failback == .auto, let b = PoolState.best(members, excluding: []),
                  members[b].priority < members[a].priority else { return nil }
            active = b
            return Switch(old: members[a].name, new: members[b].name, reason: "failback")
        }
        active = PoolState.best(members, excluding: [])
        if active == old { return nil }
        return Switch(old: old.map { members[$0].name }, new: active.map { members[$0].name }, reason: reason)
    }

    /// An operator makes `name` the serving backend now (failover mode; it must accept traffic).
    public mutating func promote(_ name: String) -> Switch? {
        guard mode == .failover, let i = index(of: name), members[i].health.acceptsTraffic, active != i else { return nil }
        let old = active
        active = i
        return Switch(old: old.map { members[$0].name }, new: name, reason: "promote")
    }

    /// The backend for a new connection, skipping those that already refused this connection.
    public mutating func pick(excluding: Set<Int> = []) -> Int? {
        switch mode {
        case .failover:
            if let a = active, !excluding.contains(a), members[a].health.acceptsTraffic { return a }
            return PoolState.best(members, excluding: excluding)
        case .roundRobin:
            // Smooth weighted round robin (as nginx): even spread, weights respected.
            let ok = members.indices.filter { members[$0].health.acceptsTraffic && !excluding.contains($0) }
            guard !ok.isEmpty else { return nil }
            let total = ok.reduce(0) { $0 + members[$1].weight }
            for i in ok { members[i].currentWeight += members[i].weight }
            let chosen = ok.max { (members[$0].currentWeight, -$0) < (members[$1].currentWeight, -$1) }!
            members[chosen].currentWeight -= total
            return chosen
        case .leastConnections:
            let ok = members.indices.filter { members[$0].health.acceptsTraffic && !excluding.contains($0) }
            return ok.min {
                (Double(members[$0].connections) / Double(members[$0].weight), $0) < (Double(members[$1].connections) / Double(members[$1].weight), $1)
            }
        }
    }
}
