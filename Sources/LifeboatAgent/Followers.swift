import Foundation
import LifeboatCore
import LifeboatPlan
import LifeboatReplication
import LifeboatSQLite
import Logging

/// The followers of continuous SQLite sources: one long-running task each, started with the agent and on a reload
/// that adds the source, stopped when the source goes or changes and when the agent stops (storing what they
/// copied first). A follower that fails is started again after a backoff (1 s doubling to 60 s); its failure is
/// alerted once, and once when it stores again.
struct FollowerHandle {
    var kind: SourceKind
    var site: String
    var control: FollowerControl
    var task: Task<Void, Never>
}

extension Agent {
    /// Starts and stops followers to match the plan.
    func syncFollowers() {
        var wanted: [String: (Source, String)] = [:]
        for s in plan.sources {
            if case .sqliteContinuous = s.kind { wanted[s.name] = (s, Agent.target(of: s, in: plan).name) }
        }
        var stopped: [String: Task<Void, Never>] = [:]
        for (name, f) in followers where wanted[name].map({ $0.0.kind != f.kind || $0.1 != f.site }) ?? true {
            f.control.requestStop()
            stopped[name] = f.task
            followers[name] = nil
            logger.info("follower stopped", metadata: ["source": "\(name)"])
        }
        for (name, (source, site)) in wanted where followers[name] == nil {
            guard case .sqliteContinuous(let path, let interval) = source.kind else { continue }
            let control = FollowerControl()
            // A changed source's old follower stores what it copied first: two followers never write one history.
            let previous = stopped[name]
            let task = Task {
                await previous?.value
                await self.follow(source: name, path: path, interval: interval, site: site, control: control)
            }
            followers[name] = FollowerHandle(kind: source.kind, site: site, control: control, task: task)
            logger.info("follower started", metadata: ["source": "\(name)", "database": "\(path)", "site": "\(site)"])
        }
    }

    /// Asks every follower to stop and waits for them until `deadline`.
    func stopFollowers(deadline: ContinuousClock.Instant) async {
        for f in followers.values { f.control.requestStop() }
        while followers.values.contains(where: { $0.control.isRunning }) && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        for f in followers.values where f.control.isRunning { f.task.cancel() }
    }

    nonisolated func follow(source: String, path: String, interval: Double, site: String, control: FollowerControl) async {
        var backoff = 1.0
        let logger = self.logger
        while !control.stopRequested && !Task.isCancelled {
            do {
                guard let s = await plan.sites.sites.first(where: { $0.name == site }) else { return }
                let repo = try await repository(s)
                var o = SQLiteFollower.Options()
                o.interval = interval
                o.poll = min(0.05, interval / 4)
                // The schedule takes the snapshots (the source's backup job); a new generation takes its own.
                o.snapshotInterval = .infinity
                let follower = SQLiteFollower(path: path, store: SQLiteStore(repo: repo, tags: [SourceBackup.tag(source)]), options: o)
                let meta: Logger.Metadata = ["source": "\(source)", "database": "\(path)"]
                try await follower.run(control: control) { [self] e in
                    switch e {
                    case .generation(let g, let why): logger.info("sqlite generation begins", metadata: meta.merging(["generation": "\(g)", "reason": "\(why)"]) { a, _ in a })
                    case .resumed(let g, let seq): logger.info("sqlite follower continues", metadata: meta.merging(["generation": "\(g)", "record": "\(seq)"]) { a, _ in a })
                    case .snapshot(let id, _, let bytes): logger.info("sqlite snapshot stored", metadata: meta.merging(["snapshot": "\(id.short)", "bytes": "\(bytes)"]) { a, _ in a })
                    case .shipped(_, _, let n, let bytes, _):
                        self.metrics.sqliteShipped(source: source, transactions: n, bytes: bytes)
                        Task { await self.followerStored(source: source, site: site) }
                    case .checkpoint, .synced: break
                    case .retrying(let why): logger.warning("sqlite follower cannot store, trying again", metadata: meta.merging(["error": "\(why)"]) { a, _ in a })
                    }
                }
                return
            } catch {
                let why = errorText(error)
                logger.error("sqlite follower failed", metadata: ["source": "\(source)", "error": "\(why)", "retry_in": "\(Int(backoff)) s"])
                await followerFailed(source: source, site: site, error: error)
                let until = ContinuousClock.now + .milliseconds(Int64(backoff * 1000))
                while ContinuousClock.now < until && !control.stopRequested && !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(100))
                }
                backoff = min(backoff * 2, 60)
            }
        }
    }

    func followerFailed(source: String, site: String, error: any Error) {
        failed("follow:\(source)", event: .failure, source: source, site: site, error: error,
               message: "the follower of \(source) (continuous SQLite) fails: \(errorText(error))")
    }

    func followerStored(source: String, site: String) {
        guard conditions?["fail:follow:\(source)"] != nil || down[site] != nil else { return }
        succeeded("follow:\(source)", event: .failure, source: source, site: site, message: "the follower of \(source) stores again")
    }

    /// The followers' progress as each source's newest copy at its site: everything committed before `syncedAt`
    /// is stored there (an idle database is up to date, though its newest record is old).
    func observeFollowers() {
        for (name, f) in followers {
            guard let t = f.control.syncedAt else { continue }
            let key = "\(name)@\(f.site)"
            var o = observations[key] ?? SiteObservation(source: name, site: f.site, newest: nil, checked: clock())
            guard (o.newest ?? .distantPast) < t else { continue }
            o.newest = t
            o.checked = clock()
            observations[key] = o
            observedAt[key] = listingTicket()
            // Persisted now and then (the state database is not written every second).
            if clock().timeIntervalSince(persisted[key] ?? .distantPast) >= 10 {
                persisted[key] = clock()
                try? store.observe(o)
            }
        }
    }
}
