import Foundation
import LifeboatCore
import LifeboatDashboard

/// One step as it ran: of a playbook (by hand or in a drill) or of the drill itself.
public struct StepRecord: Sendable, Codable, Equatable {
    public enum Result: String, Sendable, Codable { case ok, failed, skipped }
    /// 1-based position in the playbook's steps (0: a step of the drill itself; cleanup steps count on).
    public var index: Int
    public var name: String
    public var kind: String
    /// The step as it was run, variables replaced.
    public var summary: String
    /// What the time counts towards: fetch, restore, verify, integrity, playbook, cleanup, setup.
    public var phase: String
    public var started: Date
    public var ended: Date
    public var result: Result
    public var attempts = 1
    /// Why it failed, or what it found.
    public var detail: String?
    /// The last lines the command wrote.
    public var output: String?
    /// Parts of the step's time (a restore: fetch, restore, verify, integrity), in seconds.
    public var phases: [String: Double]?
    /// What it learned (a restore: the snapshot, its time, files and bytes).
    public var facts: [String: String]?

    public var seconds: Double { ended.timeIntervalSince(started) }

    public init(index: Int, name: String, kind: String, summary: String, phase: String, started: Date, ended: Date, result: Result) {
        self.index = index; self.name = name; self.kind = kind; self.summary = summary; self.phase = phase
        self.started = started; self.ended = ended; self.result = result
    }
}

/// What one drill run at one site proved: the disaster declared at `declared`, the steps, the measured RTO and
/// RPO beside the objectives, and every reason it failed, in plain words.
public struct DrillReport: Sendable, Codable, Equatable {
    public var id: String
    public var drill: String
    public var source: String
    public var site: String
    public var scenario: String
    public var host: String
    /// T: when the disaster was declared (the RTO runs from here).
    public var declared: Date
    public var finished: Date
    public var passed: Bool
    public var rtoSeconds: Double?
    public var rpoSeconds: Double?
    public var rtoObjective: Double?
    public var rpoObjective: Double?
    public var snapshot: String?
    public var snapshotTime: Date?
    /// Seconds per phase (fetch, restore, verify, integrity, playbook, overhead).
    public var phases: [String: Double] = [:]
    public var steps: [StepRecord] = []
    public var failures: [String] = []
    public var notes: [String] = []
    public var sandbox: String?
    public var kept = false
    public var files = 0
    public var bytes: UInt64 = 0
    /// Ransomware drills: true when the site's protection did not keep the clean snapshot through the attack.
    public var unprotected: Bool?
    /// node-crash: requests through the pool, those that failed after the crash, seconds until the proxy switched.
    public var requests: Int?
    public var failedRequests: Int?
    public var switchSeconds: Double?

    public init(id: String, drill: String, source: String, site: String, scenario: String, host: String, declared: Date) {
        self.id = id; self.drill = drill; self.source = source; self.site = site; self.scenario = scenario; self.host = host
        self.declared = declared; finished = declared; passed = false
    }

    public static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.dateEncodingStrategy = .iso8601
        e.outputFormatting = [.sortedKeys]
        return e
    }
    public static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        d.dateDecodingStrategy = .iso8601
        return d
    }

    public func json() -> String { (try? String(decoding: DrillReport.encoder().encode(self), as: UTF8.self)) ?? "{}" }

    public static func span(_ v: Double?) -> String {
        guard let v else { return "-" }
        return v < 10 ? String(format: "%.2f s", v) : Units.span(v)
    }

    func verdict(_ measured: Double?, _ objective: Double?) -> String {
        guard let objective else { return "no objective" }
        guard let measured else { return "not measured" }
        return measured <= objective ? "met" : "MISSED"
    }

    public func markdown() -> String {
        var o = "# Drill \(drill) at site \(site): \(passed ? "PASSED" : "FAILED")\(unprotected == true ? " (the site is unprotected)" : "")\n\n"
        o += "Source \(source), scenario \(scenario), on \(host). Disaster declared \(Timestamp.format(declared)); done \(Timestamp.format(finished)).\n\n"
        o += "| | measured | objective | |\n|---|---|---|---|\n"
        o += "| RTO | \(DrillReport.span(rtoSeconds)) | \(DrillReport.span(rtoObjective)) | \(verdict(rtoSeconds, rtoObjective)) |\n"
        o += "| RPO | \(DrillReport.span(rpoSeconds)) | \(DrillReport.span(rpoObjective)) | \(verdict(rpoSeconds, rpoObjective)) |\n\n"
        if let s = snapshot { o += "Restored snapshot \(s)\(snapshotTime.map { " of \(Timestamp.format($0))" } ?? ""): \(Units.count(files, "file")), \(Units.bytes(bytes)).\n\n" }
        if !failures.isEmpty { o += "## What failed\n\n" + failures.map { "* \($0)\n" }.joined() + "\n" }
        if !notes.isEmpty { o += "## Notes\n\n" + notes.map { "* \($0)\n" }.joined() + "\n" }
        if !phases.isEmpty {
            o += "## Where the time went\n\n| phase | seconds |\n|---|---|\n"
            for (k, v) in phases.sorted(by: { $0.value > $1.value }) { o += "| \(k) | \(String(format: "%.3f", v)) |\n" }
            o += "\n"
        }
        o += "## Timeline\n\n| # | step | phase | start (+s) | seconds | result | detail |\n|---|---|---|---|---|---|---|\n"
        for s in steps {
            let detail = (s.detail ?? s.output ?? "").replacingOccurrences(of: "|", with: "/").replacingOccurrences(of: "\n", with: " ")
            o += "| \(s.index) | \(s.name.replacingOccurrences(of: "|", with: "/")) | \(s.phase) | \(String(format: "%.3f", s.started.timeIntervalSince(declared))) | "
            o += "\(String(format: "%.3f", s.seconds)) | \(s.result.rawValue) | \(String(detail.prefix(300))) |\n"
        }
        return o
    }

    /// A self-contained page (no script, no outside asset): the verdict, RTO and RPO beside the objectives, the
    /// failures, and the timeline as bars on the drill's time axis.
    public func html() -> String {
        func e(_ s: String) -> String { HTML.escape(s) }
        let total = max(0.001, finished.timeIntervalSince(declared))
        var o = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Drill \(e(drill)) at \(e(site))</title><style>"
        o += "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}"
        o += "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}.pass{color:#176f2c}.fail{color:#b3261e}"
        o += ".bar{position:relative;height:14px;background:#eee;width:400px}.bar span{position:absolute;height:14px;background:#4a7bd0}"
        o += ".bar span.failed{background:#b3261e}</style></head><body>"
        o += "<h1>Drill \(e(drill)) at site \(e(site)): <span class=\"\(passed ? "pass" : "fail")\">\(passed ? "PASSED" : "FAILED")</span></h1>"
        o += "<p>Source \(e(source)), scenario \(e(scenario)), on \(e(host)). Disaster declared \(e(Timestamp.format(declared))); done \(e(Timestamp.format(finished))).</p>"
        o += "<table><tr><th></th><th>measured</th><th>objective</th><th></th></tr>"
        for (n, m, obj) in [("RTO", rtoSeconds, rtoObjective), ("RPO", rpoSeconds, rpoObjective)] {
            let v = verdict(m, obj)
            o += "<tr><th>\(n)</th><td>\(e(DrillReport.span(m)))</td><td>\(e(DrillReport.span(obj)))</td><td class=\"\(v == "MISSED" ? "fail" : "pass")\">\(v)</td></tr>"
        }
        o += "</table>"
        if let s = snapshot { o += "<p>Restored snapshot \(e(s))\(snapshotTime.map { " of \(e(Timestamp.format($0)))" } ?? ""): \(e(Units.count(files, "file"))), \(e(Units.bytes(bytes))).</p>" }
        if !failures.isEmpty { o += "<h2>What failed</h2><ul>" + failures.map { "<li class=\"fail\">\(e($0))</li>" }.joined() + "</ul>" }
        if !notes.isEmpty { o += "<h2>Notes</h2><ul>" + notes.map { "<li>\(e($0))</li>" }.joined() + "</ul>" }
        o += "<h2>Timeline</h2><table><tr><th>#</th><th>step</th><th>phase</th><th>when</th><th>seconds</th><th>result</th><th>detail</th></tr>"
        for s in steps {
            let left = max(0, min(100, s.started.timeIntervalSince(declared) / total * 100))
            let width = max(0.5, min(100 - left, s.seconds / total * 100))
            o += "<tr><td>\(s.index)</td><td>\(e(s.name))<br><small>\(e(String(s.summary.prefix(200))))</small></td><td>\(e(s.phase))</td>"
            o += "<td><div class=\"bar\"><span class=\"\(s.result == .failed ? "failed" : "")\" style=\"left:\(String(format: "%.2f", left))%;width:\(String(format: "%.2f", width))%\"></span></div></td>"
            o += "<td>\(String(format: "%.3f", s.seconds))</td><td class=\"\(s.result == .failed ? "fail" : "pass")\">\(s.result.rawValue)</td>"
            o += "<td>\(e(String((s.detail ?? s.output ?? "").prefix(500))))</td></tr>"
        }
        o += "</table></body></html>\n"
        return o
    }

    /// Writes the JSON, Markdown and HTML reports into `directory` (crash-safe), named by the report's ID.
    public func write(to directory: String) throws -> [String] {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        var written: [String] = []
        for (ext, text) in [("json", json() + "\n"), ("md", markdown()), ("html", html())] {
            let p = "\(directory)/\(id).\(ext)"
            try writeFileAtomically(p, Data(text.utf8))
            written.append(p)
        }
        return written
    }
}
