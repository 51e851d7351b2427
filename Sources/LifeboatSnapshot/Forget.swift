import Foundation
import LifeboatCore
import LifeboatRepository
import LifeboatStorage

/// How `forget` groups snapshots before applying the policy (restic's `--group-by`).
public struct GroupBy: Sendable, Equatable {
    public var host = true, paths = true, tags = false
    public init(host: Bool = true, paths: Bool = true, tags: Bool = false) { self.host = host; self.paths = paths; self.tags = tags }
    public init(parsing s: String) throws {
        host = false; paths = false; tags = false
        for p in s.split(separator: ",") {
            switch p {
            case "host": host = true
            case "paths": paths = true
            case "tags": tags = true
            default: throw LifeboatError.invalid("invalid --group-by \"\(p)\": use host, paths, tags")
            }
        }
    }
    func key(_ s: Snapshot) -> String {
        var parts: [String] = []
        if host { parts.append("host \(s.hostname)") }
        if paths { parts.append("paths [\(s.paths.joined(separator: ", "))]") }
        if tags { parts.append("tags [\(s.tags.sorted().joined(separator: ","))]") }
        return parts.joined(separator: ", ")
    }
}

public struct ForgetGroup: Sendable {
    public var key: String
    public var keep: [(id: ID, snapshot: Snapshot, reasons: [String])]
    public var remove: [(id: ID, snapshot: Snapshot)]
}

public enum Forget {
    /// Decides which snapshots to keep, per group. Pure apart from the input list.
    public static func plan(_ snaps: [(id: ID, snapshot: Snapshot)], policy: RetentionPolicy, groupBy: GroupBy,
                            timeZone: TimeZone = .current) -> [ForgetGroup] {
        var groups: [String: [(id: ID, snapshot: Snapshot)]] = [:]
        for s in snaps { groups[groupBy.key(s.snapshot), default: []].append(s) }
        return groups.keys.sorted().map { key in
            let members = groups[key]!
            let decisions = Retention.apply(members.map { RetentionItem(time: $0.snapshot.date, tags: $0.snapshot.tags) },
                                            policy: policy, timeZone: timeZone)
            var g = ForgetGroup(key: key, keep: [], remove: [])
            for d in decisions {
                let m = members[d.index]
                if d.keep { g.keep.append((m.id, m.snapshot, d.reasons)) } else { g.remove.append(m) }
            }
            g.keep.sort { $0.snapshot.date > $1.snapshot.date }
            g.remove.sort { $0.snapshot.date > $1.snapshot.date }
            return g
        }
    }

    /// Deletes the snapshots the plan removes.
    public static func execute(_ groups: [ForgetGroup], repo: Repository) async throws -> Int {
        var n = 0
        for g in groups {
            for r in g.remove {
                try await repo.delete(Handle(.snapshots, r.id.hex))
                n += 1
            }
        }
        return n
    }
}
