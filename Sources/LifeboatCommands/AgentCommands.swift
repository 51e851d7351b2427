import ArgumentParser
import Foundation
import LifeboatAgent
import LifeboatBackends
import LifeboatCore
import LifeboatHTTP
import LifeboatPlan
import LifeboatReplication
import LifeboatRepository
import LifeboatStorage
import Logging
import Synchronization

struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run the plan: scheduled backups, retention, replication, prune and checks, with objectives, alerts, metrics and an API.",
        discussion: """
        Reads the plan file (see docs/PLAN.md and docs/AGENT.md), refuses to start when `config validate` finds an \
        error, and runs until SIGTERM or SIGINT: then it starts nothing new, lets running jobs finish (at most \
        --stop-timeout, then cancels them and releases their locks) and exits 0. SIGHUP reloads the plan; a plan \
        with errors keeps the running one, and the log says why. Logs go to standard error as logfmt (--json: JSON lines).

        \(Examples.agent)
        """)
    @OptionGroup var file: PlanFileOptions
    @Option(name: .customLong("stop-timeout"), help: "On SIGTERM, how long running jobs may take to finish (default 60s).") var stopTimeout = "60s"
    @Option(name: .customLong("pid-file"), help: "Write the process ID here while running (for `kill -HUP $(cat FILE)`: reload).") var pidFile: String?

    static let apiFailed = Atomic<Bool>(false)

    func run() async throws {
        let timeout: Double
        do { timeout = try Bounds.check(try parseSeconds(stopTimeout), 0...86400, "--stop-timeout") } catch { throw fatal("\(error)") }
        let plan = try file.load()
        let findings = PlanCheck.diagnose(plan, now: currentTime())
        var handler = LineLogHandler(json: file.json)
        handler.logLevel = ProcessInfo.processInfo.environment["LIFEBOAT_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
        let h = handler
        let logger = Logger(label: "lifeboat.agent") { _ in h }
        for d in findings { d.severity == .error ? logger.error("\(d)") : logger.warning("\(d)") }
        guard !findings.contains(where: { $0.severity == .error }) else {
            throw fatal("the plan \(plan.path) has errors (above); the agent does not start. `lifeboat config validate` lists them")
        }
        let store: StateStore
        let access: SiteAccess
        do {
            store = try StateStore(path: plan.agent.state)
            access = try AgentCommand.siteAccess(logger: logger)
        } catch { throw fatal(errorText(error)) }
        let agent: Agent
        let api: AgentAPI
        do {
            agent = try Agent(plan: plan, store: store, access: access, logger: logger)
            api = try AgentAPI(agent: agent, settings: plan.agent)
        } catch { throw fatal(errorText(error)) }

        gracefulStop = "stopping: no new jobs; running jobs finish"
        let hup = countHangups()
        defer { hup.cancel() }
        if let pidFile {
            do { try PIDFile.create(pidFile) } catch { throw fatal("\(error)") }
        }
        defer { if let pidFile { PIDFile.remove(pidFile) } }

        let path = file.path
        let listen = plan.agent.listen
        try await withThrowingTaskGroup(of: Void.self) { g in
            g.addTask {
                do {
                    try await api.run { logger.info("API listening", metadata: ["address": "\($0)"]) }
                } catch {
                    // Without its API the agent cannot be watched or driven: it stops (and says why).
                    logger.critical("the API cannot listen on \(listen): \(error); stopping")
                    AgentCommand.apiFailed.store(true, ordering: .relaxed)
                    await agent.stop()
                }
            }
            g.addTask {
                // Signals: a stop ends the loop; a hangup reloads (a bad plan keeps the running one).
                var seen = 0
                while !stopRequested() && !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(50))
                    let n = hangups.load(ordering: .relaxed)
                    guard n != seen else { continue }
                    seen = n
                    await agent.reload(from: path)
                }
                await agent.stop()
            }
            try await agent.run(stopTimeout: timeout)
            g.cancelAll()
        }
        if AgentCommand.apiFailed.load(ordering: .relaxed) { throw ArgumentParser.ExitCode(ExitStatus.failure) }
    }

    /// How the agent reaches its sites: the environment's HTTP and retry settings, each site's own password and
    /// credentials files (a site without a password file cannot be opened unattended).
    static func siteAccess(logger: Logger) throws -> SiteAccess {
        let env = ProcessInfo.processInfo.environment
        try GlobalOptions.validateEnvironment(env)
        let settings = BackendSettings(http: try HTTPOptions.validatedFromEnvironment(env), retry: try RetryPolicy.validatedFromEnvironment(env),
                                       environment: env,
                                       limitUpload: try GlobalOptions.limit(nil, env["LIFEBOAT_LIMIT_UPLOAD"], "", "LIFEBOAT_LIMIT_UPLOAD"),
                                       limitDownload: try GlobalOptions.limit(nil, env["LIFEBOAT_LIMIT_DOWNLOAD"], "", "LIFEBOAT_LIMIT_DOWNLOAD"))
        return SiteAccess(settings: settings, onRetry: { site, what, attempt, error in
            logger.warning("retrying", metadata: ["site": "\(site)", "what": "\(what)", "attempt": "\(attempt)", "error": "\(error.message)"])
        }, password: { site in
            if let f = env["LIFEBOAT_PASSWORD_FILE"] { return try readPasswordFile(f, from: "LIFEBOAT_PASSWORD_FILE") }
            throw LifeboatError.invalid("site \(site.name) has no password_file: the agent cannot ask for a password")
        })
    }
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show every source of the plan: newest snapshot and current RPO per site against the objective, next run, last error.",
        discussion: """
        Asks the running agent (agent.listen, with agent.token_file when set); when none answers, reads the agent's \
        state database (agent.state). Exit status: 0 when every RPO is met, 22 when some source's newest snapshot \
        at some site is older than its RPO (or there is none), 1 when neither the agent nor its database can be read.

        \(Examples.status)
        """)
    @OptionGroup var file: PlanFileOptions

    func run() async throws {
        let plan = try file.load()
        let status: AgentStatus
        do { status = try await AgentClient.status(of: plan) } catch { throw fatal(errorText(error)) }
        if file.json {
            let data = (try? AgentAPI.encoder().encode(status)) ?? Data("{}".utf8)
            var o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
            o["message_type"] = "agent_status"
            o["objectives_met"] = status.objectivesMet
            print(Output.encode(o))
        } else {
            print(StatusCommand.render(status))
        }
        if !status.objectivesMet { throw ArgumentParser.ExitCode(ExitStatus.snapshotTooOld) }
    }

    static func render(_ s: AgentStatus) -> String {
        func t(_ d: Date?) -> String { d.map { Timestamp.format($0) } ?? "-" }
        var rows: [[String]] = [["SOURCE", "SITE", "NEWEST SNAPSHOT", "RPO", "OBJECTIVE", "MET", "NEXT RUN", "LAST ERROR"]]
        for src in s.sources {
            for (i, site) in src.sites.enumerated() {
                rows.append([i == 0 ? src.name + (src.paused ? " (paused)" : src.running ? " (running)" : "") : "", site.site, t(site.newestSnapshot),
                             site.newestSnapshot == nil ? "none" : Units.span(site.rpoSeconds), src.rpoObjectiveSeconds.map(Units.span) ?? "-",
                             site.meetsRPO.map { $0 ? "yes" : "NO" } ?? "-", i == 0 ? t(src.nextRun) : "",
                             String((site.lastError ?? (i == 0 ? src.lastError : nil) ?? "").prefix(80))])
            }
        }
        var out = "plan \(s.plan), \(s.origin == "agent" ? "agent running since \(t(s.agentStarted))" : "no agent answers: from its database")\n"
        out += table(rows)
        var jobs: [[String]] = [["JOB", "SCHEDULE", "NEXT RUN", "LAST RUN", "RESULT"]]
        for j in s.jobs {
            jobs.append([j.job + (j.paused ? " (paused)" : j.running ? " (running)" : ""), j.schedule, t(j.nextRun), t(j.lastRun?.started), j.lastRun?.result.rawValue ?? "-"])
        }
        out += "\n" + table(jobs)
        var sites: [[String]] = [["SITE", "ROLE", "REACHABLE", "LAG", "MISSING", "SCRUB COVERAGE", "LAST ERROR"]]
        for x in s.sites {
            sites.append([x.site, x.role, x.reachable ? "yes" : "NO", x.lagSeconds.map(Units.span) ?? "-", x.snapshotsMissing.map { "\($0)" } ?? "-",
                          x.scrubCoverage.map { String(format: "%.0f%%", $0 * 100) } ?? "-", String((x.lastError ?? "").prefix(80))])
        }
        out += "\n" + table(sites)
        return out.hasSuffix("\n") ? String(out.dropLast()) : out
    }

    static func table(_ rows: [[String]]) -> String {
        let widths = (0..<(rows.first?.count ?? 0)).map { c in rows.map { $0[c].count }.max() ?? 0 }
        return rows.map { r in
            // Trailing blanks only: a continuation row starts with an empty column.
            String(r.enumerated().map { i, v in i == r.count - 1 ? v : v.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ").reversed().drop { $0 == " " }.reversed())
        }.joined(separator: "\n") + "\n"
    }
}

struct RecoveryKitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recovery-kit",
        abstract: "Write the one page to keep offline: sites, key fingerprints, where secrets lived, how to rebuild and restore.",
        discussion: """
        Opens every site of the plan (with its own password file) for its repository ID, key IDs and newest \
        snapshots, and writes Markdown: the sites and how to reach them (locations without credentials), where every \
        password, credentials, DSN and token file lived (never their contents), the commands that restore the \
        agent's own backup (its plan and state database, the source lifeboat-agent) and then every source. Exit \
        status 20 when a site could not be opened (the kit is still written, and says so).

        \(Examples.recoveryKit)
        """)
    @OptionGroup var file: PlanFileOptions
    @Option(name: [.short, .customLong("output")], help: "Write the kit to this file (mode 0600) instead of standard output.") var output: String?

    func run() async throws {
        let plan = try file.load()
        let logger = Logger(label: "lifeboat.recovery-kit") { _ in LineLogHandler(json: false) }
        let access: SiteAccess
        do { access = try AgentCommand.siteAccess(logger: logger) } catch { throw fatal(errorText(error)) }
        let sites = await RecoveryKit.gather(plan, access: access)
        let text = RecoveryKit.render(RecoveryKit.withSelfBackup(plan), sites: sites, now: currentTime(), host: localHostname())
        if let output {
            do { try writeFileAtomically(output, Data(text.utf8)) } catch { throw fatal("cannot write \(output): \(error)") }
            let reached = sites.filter { $0.error == nil }.count
            FileHandle.standardError.write(Data("wrote \(output): \(Units.count(plan.sites.sites.count, "site")), \(reached) reached, \(Units.count(plan.sources.count, "source"))\n".utf8))
        } else {
            print(text, terminator: "")
        }
        for f in sites where f.error != nil {
            FileHandle.standardError.write(Data("warning: site \(f.site.name) could not be opened: \(f.error!)\n".utf8))
        }
        if sites.contains(where: { $0.error != nil }) { throw ArgumentParser.ExitCode(ExitStatus.siteUnreachable) }
    }
}
