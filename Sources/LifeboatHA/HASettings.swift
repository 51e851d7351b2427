import Foundation
import LifeboatCore

/// What one node of an HA cluster decides by: the shared settings of the cluster (`ha:` in lifeboat.yaml) and
/// the node's own name. Times are seconds.
public struct HASettings: Sendable, Equatable {
    /// The cluster's name: the prefix of every key in the consensus store (`/lifeboat/ha/<cluster>/…`).
    public var cluster: String
    /// This node's name, unique in the cluster.
    public var node: String
    /// The leader lease's time to live: a primary that dies is replaced after at most this long.
    public var ttl: Double = 10
    /// A primary stops taking writes once this long has passed since it last sent a lease renewal that succeeded
    /// (shorter than `ttl`, so that it has stopped before the lease can expire anywhere: etcd counts the TTL from
    /// when it received that renewal, which is later).
    public var fencingDeadline: Double = 7
    /// A standby more than this many bytes of WAL behind the last position the old primary published may not
    /// take over.
    public var maximumLagOnFailover: UInt64 = 1 << 20
    /// A standby whose replication was broken for longer than this before the old primary vanished may not take
    /// over (its position says nothing about what the primary wrote meanwhile).
    public var maximumReplicationBroken: Double = 30
    /// Never takes the lease (a node for reads or backups only).
    public var noFailover = false
    /// Synchronous replication managed: commits wait for the standbys in the `sync` key, and only they may take
    /// over, so that no acknowledged commit is lost.
    public var synchronous = false

    public init(cluster: String, node: String) {
        self.cluster = cluster
        self.node = node
    }

    /// How often the leader renews its lease and every node reads the cluster: a third of the TTL.
    public var loopInterval: Double { ttl / 3 }

    /// Names: letters, digits, `-`, `_`, `.`, 1 to 63 bytes (they become etcd keys and PostgreSQL
    /// `application_name`s).
    public static func validName(_ s: String) -> Bool {
        (1...63).contains(s.utf8.count) && s.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2D || c == 0x5F || c == 0x2E
        } && s != "." && s != ".."
    }

    /// Every bound the decisions rely on; the error names the setting and what it must be.
    public func validate() throws {
        guard Self.validName(cluster) else { throw LifeboatError.invalid("ha.cluster \"\(cluster.prefix(80))\": use 1 to 63 letters, digits, '-', '_' or '.'") }
        guard Self.validName(node) else { throw LifeboatError.invalid("ha.node.name \"\(node.prefix(80))\": use 1 to 63 letters, digits, '-', '_' or '.'") }
        guard ttl.isFinite, (2...3600).contains(ttl) else { throw LifeboatError.invalid("ha.ttl must be between 2s and 1h (got \(ttl)s)") }
        guard fencingDeadline.isFinite, fencingDeadline >= ttl / 3, fencingDeadline <= ttl * 0.9 else {
            throw LifeboatError.invalid("ha.node.fencing.deadline must lie between a third of ha.ttl and 90% of it (\(ttl / 3)s to \(ttl * 0.9)s; got \(fencingDeadline)s): the primary must stop taking writes before its lease can expire elsewhere, and renew at least twice before")
        }
        guard maximumReplicationBroken.isFinite, (0...86400 * 7).contains(maximumReplicationBroken) else {
            throw LifeboatError.invalid("ha.maximum_replication_broken must be between 0s and 7 days (got \(maximumReplicationBroken)s)")
        }
        guard maximumLagOnFailover <= 1 << 50 else { throw LifeboatError.invalid("ha.maximum_lag_on_failover must be at most 1 PiB") }
    }
}
