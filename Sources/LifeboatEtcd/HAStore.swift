import Foundation
import Glibc
import LifeboatCore
import LifeboatHA

/// The keys of one HA cluster in etcd (docs/HA.md, "Keys") and how a read of them becomes a `ClusterView`. Pure:
/// what etcd holds is outside input (any writer of the prefix can put anything there), so every value is checked;
/// one that does not parse is left out and named in `problems`, never trusted.
public struct HAKeys: Sendable {
    public let prefix: String
    public init(cluster: String) { prefix = "/lifeboat/ha/\(cluster)/" }

    public var leader: String { prefix + "leader" }
    public var optime: String { prefix + "optime/leader" }
    public var initialize: String { prefix + "initialize" }
    public var switchover: String { prefix + "switchover" }
    public var maintenance: String { prefix + "maintenance" }
    public var sync: String { prefix + "sync" }
    public func member(_ name: String) -> String { prefix + "members/" + name }

    /// A member's report or an optime: at most this many bytes.
    static let maxValue = 64 << 10

    struct Optime: Codable { var position: UInt64; var timeline: UInt32 }
    struct SwitchoverValue: Codable { var from: String; var to: String }

    public func view(_ kvs: [EtcdKV]) -> (view: ClusterView, problems: [String]) {
        var v = ClusterView()
        var problems: [String] = []
        let decoder = JSONDecoder()
        for kv in kvs where kv.key.hasPrefix(prefix) {
            let name = String(kv.key.dropFirst(prefix.count))
            let text = String(decoding: kv.value, as: UTF8.self)
            guard kv.value.count <= Self.maxValue else { problems.append("\(kv.key): a value of \(kv.value.count) bytes, left out"); continue }
            switch name {
            case "leader":
                guard HASettings.validName(text), kv.lease != 0 else { problems.append("\(kv.key): \"\(text.prefix(80))\" is not a node name on a lease, left out"); continue }
                v.leader = .init(holder: text, lease: kv.lease, revision: kv.modRevision)
            case "optime/leader":
                guard let o = try? decoder.decode(Optime.self, from: Data(kv.value)) else { problems.append("\(kv.key): not a position and timeline, left out"); continue }
                v.leaderPosition = o.position
                v.leaderTimeline = o.timeline
            case "initialize":
                if !text.isEmpty, text.utf8.count <= 20, text.allSatisfy(\.isASCII), UInt64(text) != nil {
                    v.initialized = text
                } else if HASettings.validName(text) {
                    v.bootstrapper = text
                } else {
                    problems.append("\(kv.key): \"\(text.prefix(80))\" is neither a system identifier nor a node name, left out")
                }
            case "switchover":
                guard let s = try? decoder.decode(SwitchoverValue.self, from: Data(kv.value)), HASettings.validName(s.from), HASettings.validName(s.to) else {
                    problems.append("\(kv.key): not a switchover, left out"); continue
                }
                v.switchover = .init(from: s.from, to: s.to)
            case "maintenance":
                v.maintenance = true
            case "sync":
                guard let s = try? decoder.decode(ClusterView.Sync.self, from: Data(kv.value)), HASettings.validName(s.leader),
                      s.standbys.count <= 16, s.standbys.allSatisfy(HASettings.validName) else {
                    problems.append("\(kv.key): not a synchronous-standby record, left out"); continue
                }
                v.sync = s
            default:
                if name.hasPrefix("members/") {
                    let member = String(name.dropFirst("members/".count))
                    guard HASettings.validName(member), let m = try? decoder.decode(MemberStatus.self, from: Data(kv.value)), m.name == member else {
                        problems.append("\(kv.key): not a member report of \(member.prefix(80)), left out"); continue
                    }
                    v.members[member] = m
                }
            }
        }
        return (v, problems)
    }

    func encode<T: Encodable>(_ value: T) -> [UInt8] { (try? [UInt8](JSONEncoder().encode(value))) ?? [] }
}

/// Monotonic seconds (CLOCK_MONOTONIC): what deadlines are measured in, unmoved by wall-clock changes.
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// The node's dealings with etcd: one read per step, and the store actions of a decision, each outcome reported to
/// the node with the time its request was sent. PostgreSQL actions are not here (`performs` says which are).
public struct HAStore: Sendable {
    public let client: EtcdClient
    public let keys: HAKeys
    public let settings: HASettings
    let clock: @Sendable () -> Double

    public init(client: EtcdClient, settings: HASettings, clock: @escaping @Sendable () -> Double = monotonicSeconds) {
        self.client = client
        self.settings = settings
        keys = HAKeys(cluster: settings.cluster)
        self.clock = clock
    }

    /// The cluster as etcd holds it now, or nil when no endpoint answered (the model then decides without it).
    public func read() async -> (view: ClusterView?, problems: [String]) {
        guard let r = try? await client.range(prefix: keys.prefix) else { return (nil, ["etcd cannot be reached"]) }
        let (v, p) = keys.view(r.kvs)
        return (v, r.more ? p + ["more than 1000 keys under \(keys.prefix): the rest was not read"] : p)
    }

    /// Whether an action is the store's (the rest are the PostgreSQL driver's).
    public static func performs(_ a: HAAction) -> Bool {
        switch a {
        case .startSession, .renewLease, .publishMember, .takeInitializeKey, .publishInitialized, .acquireLeader, .publishLeader,
             .releaseLeader, .clearSwitchover, .publishSync, .clearSync:
            return true
        case .initdb, .clone, .start, .recover, .promote, .fence, .stop, .follow, .rewind, .setSynchronousStandbys:
            return false
        }
    }

    /// Performs a store action; returns false when a conditional write lost (or etcd did not answer), with why.
    @discardableResult
    public func perform(_ action: HAAction, node: inout HANode) async -> (ok: Bool, note: String?) {
        let me = settings.node
        do {
            switch action {
            case .startSession:
                let sent = clock()
                let ttl = settings.ttl.isFinite ? Int(min(max(settings.ttl, 2), 3600).rounded(.up)) : 10
                let g = try await client.grant(ttl: ttl)
                node.sessionStarted(lease: g.id, sentAt: sent)
                return (true, nil)
            case .renewLease:
                guard let lease = node.lease else { return (false, "no session") }
                let sent = clock()
                if try await client.keepAlive(lease) > 0 {
                    node.renewed(sentAt: sent)
                    return (true, nil)
                }
                node.sessionLost()
                return (false, "the session lease expired")
            case .publishMember(let m):
                guard let lease = node.lease else { return (false, "no session") }
                try await client.put(keys.member(me), keys.encode(m), lease: lease)
            case .takeInitializeKey:
                let won = try await client.createIfAbsent(keys.initialize, Array(me.utf8))
                return (won, won ? nil : "another node is bootstrapping")
            case .publishInitialized(let system):
                let ok = try await client.putIfValue(keys.initialize, Array(system.utf8), expected: Array(me.utf8))
                return (ok, ok ? nil : "the initialize key is no longer this node's")
            case .acquireLeader(let revision):
                guard let lease = node.lease else { return (false, "no session") }
                let won: Bool
                if let revision {
                    won = try await client.putIfRevision(keys.leader, Array(me.utf8), lease: lease, revision: revision)
                } else {
                    won = try await client.createIfAbsent(keys.leader, Array(me.utf8), lease: lease)
                }
                return (won, won ? nil : "another node took the leader key first")
            case .publishLeader(let position, let timeline):
                // Only while the leader key is this node's: a late write of a former leader changes nothing.
                let ok = try await client.putIf(keys.optime, keys.encode(HAKeys.Optime(position: position, timeline: timeline)),
                                                guardKey: keys.leader, holds: Array(me.utf8))
                return (ok, ok ? nil : "the leader key is no longer this node's")
            case .publishSync(let standbys):
                let ok = try await client.putIf(keys.sync, keys.encode(ClusterView.Sync(leader: me, standbys: standbys)),
                                                guardKey: keys.leader, holds: Array(me.utf8))
                return (ok, ok ? nil : "the leader key is no longer this node's")
            case .clearSync:
                let ok = try await client.deleteIf(keys.sync, guardKey: keys.leader, holds: Array(me.utf8))
                return (ok, ok ? nil : "the leader key is no longer this node's")
            case .releaseLeader:
                _ = try await client.deleteIfValue(keys.leader, expected: Array(me.utf8))
            case .clearSwitchover:
                try await client.delete(keys.switchover)
            case .initdb, .clone, .start, .recover, .promote, .fence, .stop, .follow, .rewind, .setSynchronousStandbys:
                return (false, "not a store action")
            }
            return (true, nil)
        } catch {
            return (false, "\(error)")
        }
    }
}
