import Foundation
import LifeboatCore

/// Selects snapshots by host, tags and paths, as `--host`, `--tag` and `--path` do.
public struct SnapshotFilter: Sendable {
    public var hosts: [String] = []
    /// Each element is a comma-separated set of tags that must all be present; any element may match.
    public var tags: [String] = []
    public var paths: [String] = []

    public init(hosts: [String] = [], tags: [String] = [], paths: [String] = []) {
        self.hosts = hosts; self.tags = tags; self.paths = paths
    }

    /// Database records (`kind`) never match: file commands do not see them.
    public func matches(_ s: Snapshot) -> Bool {
        guard s.isFiles else { return false }
        if !hosts.isEmpty && !hosts.contains(s.hostname) { return false }
        if !tags.isEmpty {
            let ok = tags.contains { set in
                set.split(separator: ",").allSatisfy { s.tags.contains(String($0)) }
            }
            if !ok { return false }
        }
        if !paths.isEmpty && !paths.allSatisfy({ s.paths.contains($0) }) { return false }
        return true
    }
}

extension Repository {
    /// Resolves `latest` (newest snapshot matching the filter) or a unique ID prefix.
    public func findSnapshot(_ ref: String, filter: SnapshotFilter = SnapshotFilter()) async throws -> (id: ID, snapshot: Snapshot) {
        if ref == "latest" {
            let all = try await listSnapshots().filter { filter.matches($0.snapshot) }
            guard let last = all.last else { throw LifeboatError(.notFound, "no snapshot matches the filter") }
            return last
        }
        let id = try await snapshotID(prefix: ref)
        return (id, try await loadSnapshot(id))
    }

    /// The snapshot whose ID starts with `ref`, from the listing alone (so that a damaged snapshot can be named,
    /// for `forget`).
    public func snapshotID(prefix ref: String) async throws -> ID {
        guard !ref.isEmpty, ref.count <= 64, ref.utf8.allSatisfy({ ID.nibble($0) != nil }) else {
            throw LifeboatError.invalid("\"\(ref.prefix(80))\" is not a snapshot ID or \"latest\"")
        }
        let lower = ref.lowercased()
        let matches = try await backend.list(.snapshots).filter { $0.name.hasPrefix(lower) }
        guard !matches.isEmpty else { throw LifeboatError(.notFound, "no snapshot with ID \(ref)") }
        guard matches.count == 1, let id = ID(hex: matches[0].name) else {
            throw LifeboatError.invalid("snapshot prefix \(ref) is ambiguous (\(matches.count) snapshots); give more digits")
        }
        return id
    }
}
