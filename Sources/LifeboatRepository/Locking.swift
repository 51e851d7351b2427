import Foundation
import LifeboatCore
import LifeboatStorage
import Synchronization

/// The lifetime of a held lock, as a pure state machine over an injected clock (unit-tested).
///
/// Other processes consider a lock stale `staleAfter` seconds after its last refresh. The holder stops trusting
/// its lock much earlier, at half that time (`usableUntil`): by then a refresh has failed several times in a row
/// (or the process was suspended), and the work the lock protects is fenced off (`Repository.checkFence`) long
/// before anyone may remove the lock and sweep what the work still needs.
public struct LockLease: Sendable, Equatable {
    public let refreshInterval: TimeInterval
    public let staleAfter: TimeInterval
    public private(set) var lastRefresh: Date
    public private(set) var lastFailure: String?

    public init(refreshedAt: Date, refreshInterval: TimeInterval = LockTiming.refreshInterval, staleAfter: TimeInterval = LockTiming.staleAfter) {
        self.lastRefresh = refreshedAt
        // A refresh must come well before the lease stops being usable (half the stale time), whatever the settings.
        self.refreshInterval = min(refreshInterval, staleAfter / 4)
        self.staleAfter = staleAfter
    }

    /// True when, at `now`, other processes may already have considered this lock stale: a refresh then cannot
    /// make it good again (a prune may have swept in between), and the work it protected must stop for good.
    public func wasStale(at now: Date) -> Bool { now.timeIntervalSince(lastRefresh) >= staleAfter }

    /// The last moment the holder may rely on the lock.
    public var usableUntil: Date { lastRefresh.addingTimeInterval(staleAfter / 2) }

    public func isUsable(at now: Date) -> Bool { now < usableUntil }

    public mutating func refreshed(at now: Date) { lastRefresh = now; lastFailure = nil }
    public mutating func refreshFailed(_ why: String) { lastFailure = why }

    /// When to try the next refresh: on schedule, or soon after a failure (several tries fit before `usableUntil`).
    public func nextAttempt(after now: Date) -> Date {
        if lastFailure == nil { return max(now, lastRefresh.addingTimeInterval(refreshInterval)) }
        let retry = max(0.01, min(refreshInterval, staleAfter / 20))
        return now.addingTimeInterval(retry)
    }
}

/// Fences off writes and deletes once a lock that protects them can no longer be relied on. Shared by a
/// repository handle and the handles derived from it (`Repository.with`).
public final class LockFence: Sendable {
    let leases = Mutex<[ObjectIdentifier: (lease: LockLease, lost: String?)]>([:])
    let clock: @Sendable () -> Date
    public init(clock: @escaping @Sendable () -> Date = { Date() }) { self.clock = clock }

    /// Records a lease; once a lease is lost it stays lost.
    func update(_ key: ObjectIdentifier, _ lease: LockLease, lost: String? = nil) {
        leases.withLock { l in
            let previous = l[key].flatMap { $0.lost }
            l[key] = (lease, lost ?? previous)
        }
    }
    func remove(_ key: ObjectIdentifier) { _ = leases.withLock { $0.removeValue(forKey: key) } }

    /// Throws if any lock held through this handle is lost or has gone too long without a refresh.
    public func check() throws {
        let now = clock()
        let problem = leases.withLock { l -> String? in
            for (_, v) in l {
                if let lost = v.lost { return lost }
                if !v.lease.isUsable(at: now) {
                    return "the repository lock was last refreshed at \(Timestamp.format(v.lease.lastRefresh))\(v.lease.lastFailure.map { " (refresh failed: \($0))" } ?? "")"
                }
            }
            return nil
        }
        if let problem {
            throw LifeboatError(.locked, "stopped: \(problem); others may soon consider the lock stale, so nothing more is written or deleted. Run the command again")
        }
    }
}

/// A held lock. It refreshes itself in the background until `release()`; if refreshing keeps failing, the
/// repository's fence stops the work before the lock could look stale to anyone else.
public final class RepositoryLock: Sendable {
    let repo: Repository
    let current: Mutex<(id: ID, info: LockInfo, lease: LockLease)>
    let refresher: Mutex<Task<Void, Never>?> = Mutex(nil)
    /// Stale locks seen when this lock was taken (ignored; `unlock` removes them).
    public let staleLocks: Mutex<[LockEntry]> = Mutex([])

    init(repo: Repository, id: ID, info: LockInfo, at: Date) {
        self.repo = repo
        current = Mutex((id, info, LockLease(refreshedAt: at)))
    }

    /// Locks held by this process, so an interrupted process can release them before it exits.
    static let held = Mutex<[ObjectIdentifier: RepositoryLock]>([:])

    /// Releases every lock this process holds (for SIGINT/SIGTERM handlers).
    public static func releaseAll() async {
        let all = held.withLock { Array($0.values) }
        for l in all { await l.release() }
    }

    public var id: ID { current.withLock { $0.id } }
    public var lease: LockLease { current.withLock { $0.lease } }

    func startRefreshing() {
        repo.fence.update(ObjectIdentifier(self), lease)
        let task = Task { [weak self] in
            while !Task.isCancelled {
                guard let lease = self?.lease else { return }
                let wait = lease.nextAttempt(after: Date()).timeIntervalSinceNow
                try? await Task.sleep(nanoseconds: Bounds.nanoseconds(wait))
                if Task.isCancelled { return }
                guard let self else { return }
                do {
                    try await self.refresh()
                } catch {
                    let why = (error as? LifeboatError)?.message ?? (error as? StorageError)?.message ?? "\(error)"
                    let l = self.current.withLock { c -> LockLease in c.lease.refreshFailed(why); return c.lease }
                    self.repo.fence.update(ObjectIdentifier(self), l)
                }
            }
        }
        refresher.withLock { $0 = task }
        RepositoryLock.held.withLock { $0[ObjectIdentifier(self)] = self }
    }

    /// Writes a new lock object with a new `refreshed` time, then deletes the old one.
    public func refresh() async throws {
        let now = Date()
        var (old, info, lease) = current.withLock { ($0.id, $0.info, $0.lease) }
        // Too late: the lock could have been seen as stale (a suspended process, a long outage). The fence stays
        // closed for good, whatever later refreshes do.
        if lease.wasStale(at: now) {
            repo.fence.update(ObjectIdentifier(self), lease, lost: "the repository lock went \(Int(now.timeIntervalSince(lease.lastRefresh))) s without a refresh (others consider it stale after \(Int(lease.staleAfter)) s)")
            return
        }
        info.refreshed = Timestamp.format(now)
        let new = try await repo.saveUnpacked(.locks, Array(try JSONEncoder().encode(info)))
        let renewed = current.withLock { c -> LockLease in
            c.id = new; c.info = info; c.lease.refreshed(at: now)
            return c.lease
        }
        // If our lock object is already gone, someone removed it (`unlock --remove-all`) and may have swept since.
        var removedByOthers = false
        do { try await repo.backend.delete(Handle(.locks, old.hex)) } catch let e as StorageError where e.kind == .notFound {
            removedByOthers = true
        } catch {}
        repo.fence.update(ObjectIdentifier(self), renewed, lost: removedByOthers ? "the repository lock was removed by another process (`lifeboat unlock`?)" : nil)
    }

    /// Stops the refresher, waits until it has stopped (a refresh in flight must not write a new lock object
    /// after this one is removed), then removes the lock object.
    public func release() async {
        RepositoryLock.held.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(self)) }
        let task = refresher.withLock { t -> Task<Void, Never>? in defer { t = nil }; return t }
        task?.cancel()
        await task?.value
        repo.fence.remove(ObjectIdentifier(self))
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
        let at = Date()
        let now = Timestamp.format(at)
        let info = LockInfo(kind: kind, created: now, refreshed: now, hostname: localHostname(),
                            username: localUsername(), pid: getpid(), operation: operation)
        let id = try await saveUnpacked(.locks, Array(try JSONEncoder().encode(info)))
        let held = RepositoryLock(repo: self, id: id, info: info, at: at)
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

    /// Runs `body` holding a lock of `kind`, released afterwards whatever happens; `staleLocks` hears of the
    /// stale locks seen (and ignored) when it was taken.
    public func withLock<T>(_ kind: LockInfo.Kind, operation: String, staleLocks: ([LockEntry]) -> Void = { _ in },
                            _ body: () async throws -> T) async throws -> T {
        let lock = try await self.lock(kind, operation: operation)
        staleLocks(lock.staleLocks.withLock { $0 })
        do {
            let r = try await body()
            await lock.release()
            return r
        } catch {
            await lock.release()
            throw error
        }
    }

    /// Removes stale locks (or all locks with `all`). Returns the removed IDs.
    /// Removes the locks that processes of this host left when they died (their PID is gone): always safe,
    /// unlike stale locks of other hosts, which only `unlock` removes.
    public func removeDeadLocalLocks() async throws -> [LockEntry] {
        let host = localHostname()
        var removed: [LockEntry] = []
        for l in try await listLocks() where l.stale && l.info.hostname == host && l.info.pid > 0 && kill(l.info.pid, 0) != 0 && errno == ESRCH {
            try? await backend.delete(Handle(.locks, l.id.hex))
            removed.append(l)
        }
        return removed
    }

    public func removeLocks(all: Bool) async throws -> [ID] {
        var removed: [ID] = []
        for l in try await listLocks() where all || l.stale {
            try? await backend.delete(Handle(.locks, l.id.hex))
            removed.append(l.id)
        }
        return removed
    }
}
