import Foundation
import LifeboatCore
import LifeboatStorage
import Synchronization

/// A held lock. It refreshes itself in the background until `release()`.
public final class RepositoryLock: Sendable {
    let repo: Repository
    let current: Mutex<(id: ID, info: LockInfo)>
    let refresher: Mutex<Task<Void, Never>?> = Mutex(nil)
    /// Stale locks seen when this lock was taken (ignored; `unlock` removes them).
    public let staleLocks: Mutex<[LockEntry]> = Mutex([])

    init(repo: Repository, id: ID, info: LockInfo) {
        self.repo = repo
        current = Mutex((id, info))
    }

    /// Locks held by this process, so an interrupted process can release them before it exits.
    static let held = Mutex<[ObjectIdentifier: RepositoryLock]>([:])

    /// Releases every lock this process holds (for SIGINT/SIGTERM handlers).
    public static func releaseAll() async {
        let all = held.withLock { Array($0.values) }
        for l in all { await l.release() }
    }

    public var id: ID { current.withLock { $0.id } }

    func startRefreshing() {
        let interval = LockTiming.refreshInterval
        let task = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(nanoseconds: UInt64(interval * 1e9))
                if Task.isCancelled { return }
                guard let self else { return }
                try? await self.refresh()
            }
        }
        refresher.withLock { $0 = task }
        RepositoryLock.held.withLock { $0[ObjectIdentifier(self)] = self }
    }

    /// Writes a new lock object with a new `refreshed` time, then deletes the old one.
    public func refresh() async throws {
        var (old, info) = current.withLock { ($0.id, $0.info) }
        info.refreshed = Timestamp.format(Date())
        let new = try await repo.saveUnpacked(.locks, Array(try JSONEncoder().encode(info)))
        current.withLock { $0 = (new, info) }
        try? await repo.backend.delete(Handle(.locks, old.hex))
    }

    public func release() async {
        RepositoryLock.held.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(self)) }
        refresher.withLock { $0?.cancel(); $0 = nil }
        let id = current.withLock { $0.id }
        try? await repo.backend.delete(Handle(.locks, id.hex))
    }
}

public struct LockEntry: Sendable {
    public var id: ID
    public var info: LockInfo
    public var stale: Bool
}

extension Repository {
    /// Every lock, with its staleness. Unreadable lock objects are reported as stale with an empty info.
    public func listLocks(now: Date = Date()) async throws -> [LockEntry] {
        let host = localHostname()
        var out: [LockEntry] = []
        for o in try await backend.list(.locks) {
            guard let id = ID(hex: o.name) else { continue }
            guard let plain = try? await loadUnpacked(.locks, id),
                  let info = try? JSONDecoder().decode(LockInfo.self, from: Data(plain)) else {
                continue  // vanished while listing (refreshed or released) or unreadable
            }
            out.append(LockEntry(id: id, info: info, stale: info.isStale(now: now, staleAfter: LockTiming.staleAfter, localHostname: host)))
        }
        return out
    }

    /// Takes a lock of `kind`. A shared lock conflicts only with live exclusive locks; a prune lock with
    /// live prune and exclusive locks; an exclusive lock with every live lock. Throws `.locked` naming the holder.
    public func lock(_ kind: LockInfo.Kind, operation: String) async throws -> RepositoryLock {
        let now = Timestamp.format(Date())
        let info = LockInfo(kind: kind, created: now, refreshed: now, hostname: localHostname(),
                            username: localUsername(), pid: getpid(), operation: operation)
        let id = try await saveUnpacked(.locks, Array(try JSONEncoder().encode(info)))
        let held = RepositoryLock(repo: self, id: id, info: info)
        do {
            let others = try await listLocks().filter { $0.id != id }
            held.staleLocks.withLock { $0 = others.filter(\.stale) }
            for other in others where !other.stale {
                let conflict: Bool
                switch kind {
                case .shared: conflict = other.info.kind == .exclusive
                case .prune: conflict = other.info.kind != .shared
                case .exclusive: conflict = true
                }
                if conflict {
                    let o = other.info
                    throw LifeboatError(.locked, "the repository is locked by \(o.operation) (\(o.kind.rawValue) lock \(other.id.short)) of PID \(o.pid) on \(o.hostname) by \(o.username), since \(o.created); if that process is gone, run `lifeboat unlock`")
                }
            }
        } catch {
            await held.release()
            throw error
        }
        held.startRefreshing()
        return held
    }

    /// Removes stale locks (or all locks with `all`). Returns the removed IDs.
    public func removeLocks(all: Bool) async throws -> [ID] {
        var removed: [ID] = []
        for l in try await listLocks() where all || l.stale {
            try? await backend.delete(Handle(.locks, l.id.hex))
            removed.append(l.id)
        }
        return removed
    }
}
