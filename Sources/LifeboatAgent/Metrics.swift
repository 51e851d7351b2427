import Foundation
import LifeboatDrill
import Prometheus

/// The agent's Prometheus metrics (swift-prometheus): per source and site the last success, the current RPO and
/// its objective; per job its last duration, bytes, files and errors, runs by result and its start delay;
/// replication lag; scrub coverage. Gauges that describe "now" (RPO ages) are set from the status at each scrape.
public final class AgentMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()

    public init(started: Date) {
        gauge("agent_start_time", "seconds", "When the agent started (Unix time).").set(to: started.timeIntervalSince1970)
    }

    func descriptor(_ name: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "lifeboat", metricName: name, unitName: unit, helpText: help)
    }
    func gauge(_ name: String, _ unit: String, _ help: String, _ labels: [(String, String)] = []) -> Gauge {
        registry.makeGauge(descriptor: descriptor(name, unit, help), labels: labels)
    }

    /// A job's end.
    public func jobFinished(_ run: RunRecord, delay: Double?) {
        let job = [("job", run.job)]
        registry.makeCounter(descriptor: descriptor("job_runs", "total", "Job runs by result."),
                             labels: job + [("result", run.result.rawValue)]).increment()
        if let d = run.duration { gauge("job_last_duration", "seconds", "How long the job's last run took.", job).set(to: d) }
        if run.result == .success || run.result == .warning {
            gauge("job_last_success", "timestamp_seconds", "When the job last succeeded (Unix time).", job).set(to: run.finished?.timeIntervalSince1970 ?? 0)
            gauge("job_last_bytes", "bytes", "Bytes the job's last successful run read (backups) or sent (replication).", job).set(to: Double(run.bytes))
            gauge("job_last_files", "files", "Files the job's last successful run read.", job).set(to: Double(run.files))
        }
        gauge("job_last_errors", "errors", "Errors (unreadable files, failed sites) in the job's last run.", job).set(to: Double(run.errors))
        if let delay { gauge("job_start_delay", "seconds", "How late the job's last scheduled start was (scheduler delay plus its fixed jitter).", job).set(to: delay) }
    }

    /// A continuous SQLite source's follower stored a WAL record.
    public func sqliteShipped(source: String, transactions: Int, bytes: Int) {
        let l = [("source", source)]
        registry.makeCounter(descriptor: descriptor("sqlite_transactions", "total", "Transactions a continuous SQLite source's follower stored."), labels: l).increment(by: Int64(transactions))
        registry.makeCounter(descriptor: descriptor("sqlite_wal", "bytes_total", "WAL bytes a continuous SQLite source's follower stored."), labels: l).increment(by: Int64(bytes))
    }

    /// The state of now, from the status: RPO per source and site, objectives, lag, coverage.
    public func update(_ status: AgentStatus) {
        for s in status.sources {
            let source = [("source", s.name)]
            if let o = s.rpoObjectiveSeconds { gauge("source_rpo_objective", "seconds", "The source's recovery point objective.", source).set(to: o) }
            if let o = s.rtoObjectiveSeconds { gauge("source_rto_objective", "seconds", "The source's recovery time objective.", source).set(to: o) }
            gauge("source_paused", "", "1 while the source's schedule is paused.", source).set(to: s.paused ? 1 : 0)
            for site in s.sites {
                let l = source + [("site", site.site)]
                gauge("source_rpo", "seconds", "Age of the source's newest snapshot at the site (the current RPO); since the agent started when there is none.", l)
                    .set(to: site.rpoSeconds)
                if let t = site.newestSnapshot { gauge("source_newest_snapshot", "timestamp_seconds", "Time of the source's newest snapshot at the site.", l).set(to: t.timeIntervalSince1970) }
                if let t = site.lastSuccess { gauge("source_last_success", "timestamp_seconds", "When a backup of the source last reached the site (Unix time).", l).set(to: t.timeIntervalSince1970) }
            }
        }
        for site in status.sites {
            let l = [("site", site.site)]
            if let lag = site.lagSeconds { gauge("replication_lag", "seconds", "Age of the oldest snapshot of the primary that the replica lacks (0: up to date).", l).set(to: lag) }
            if let n = site.snapshotsMissing { gauge("replication_snapshots_pending", "", "Snapshots of the primary the replica lacks.", l).set(to: Double(n)) }
            if let n = site.bytesPending { gauge("replication_pending", "bytes", "Bytes (as stored) the replica still needs from the primary.", l).set(to: Double(n)) }
            gauge("site_up", "", "1 if the agent's last contact with the site succeeded.", l).set(to: site.reachable ? 1 : 0)
            if let c = site.scrubCoverage { gauge("scrub_coverage", "ratio", "Part of the site's packs read by checks in the current coverage cycle.", l).set(to: c) }
        }
        gauge("jobs_running", "", "Jobs running now.").set(to: Double(status.running.count))
    }

    /// A drill's last run at a site (`lifeboat_drill_*{drill,site}`).
    public func drill(_ r: DrillReport) {
        let l = [("drill", r.drill), ("site", r.site)]
        gauge("drill_last_run", "timestamp_seconds", "When the drill last ran at the site (the disaster it declared, Unix time).", l).set(to: r.declared.timeIntervalSince1970)
        gauge("drill_passed", "", "1 when the drill's last run at the site passed, 0 when it failed.", l).set(to: r.passed ? 1 : 0)
        // A failed run measured no recovery: its RTO is the time it ran until it failed.
        gauge("drill_rto", "seconds", "The recovery time the drill's last run measured (until it failed, when it failed).", l)
            .set(to: r.rtoSeconds ?? r.finished.timeIntervalSince(r.declared))
        if let rpo = r.rpoSeconds { gauge("drill_rpo", "seconds", "The data-loss window the drill's last run measured (disaster time minus the restored snapshot's).", l).set(to: rpo) }
    }

    public func render() -> String { registry.emitToString() }
}
