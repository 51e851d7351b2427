import ArgumentParser
import Foundation
import Glibc
import LifeboatAgent
import LifeboatConfig
import LifeboatCore
import LifeboatDrill
import LifeboatPlan
import LifeboatReplication
import LifeboatRepository
import Logging

struct DrillCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drill", abstract: "Prove recovery: run the plan's drills, list them, show their reports.",
        subcommands: [DrillRunCommand.self, DrillListCommand.self, DrillReportCommand.self])
}

struct DrillRunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a drill of the plan now: from each site on its own, restore into a sandbox, verify, run the playbook.",
        discussion: """
        Declares a disaster now (T), then at each site of the drill's `from` (or --site) plays its scenario in a \
        fresh folder under its sandbox: restore (the newest snapshot before T, every file verified against the \
        snapshot, the database engine's own check), the playbook's steps, its cleanup. RTO is T to the end of the \
        last step; RPO is T minus the restored snapshot's time; both are compared with the source's objectives. \
        Reports (JSON, Markdown, HTML) go to drills/ beside agent.state and into the agent's state database. \
        A ransomware drill attacks a drill repository beside each site's (lifeboat-drill/NAME/RUN) and passes \
        when one site's protection (append-only server, S3 Object Lock) kept the clean snapshot. \
        Exit status: 0 when every site passed (ransomware: one site), 23 when not (the report says why), 1 on an error.

        \(Examples.drillRun)
        """)
    @OptionGroup var file: PlanFileOptions
    @Argument(help: "The drill's name (drills: in the plan).") var name: String
    @Option(name: .customLong("site"), help: "Drill only this site (repeatable; default: the drill's `from`).") var sites: [String] = []
    @Flag(help: "Keep the sandbox afterwards (its path is in the report).") var keep = false

    func run() async throws {
        let plan = try file.load()
        guard let drill = plan.drills.first(where: { $0.name == name }) else {
            throw fatal("the plan \(plan.path) has no drill \(name) (drills: \(plan.drills.map(\.name).joined(separator: ", ")))")
        }
        for s in sites where !drill.targets.contains(s) { throw fatal("drill \(name) drills \(drill.targets.joined(separator: ", ")); not \(s)") }
        let logger = Logger(label: "lifeboat.drill") { _ in LineLogHandler(json: false) }
        let access: SiteAccess
        do { access = try AgentCommand.siteAccess(logger: logger) } catch { throw fatal(errorText(error)) }
        let full = RecoveryKit.withSelfBackup(plan)
        var env = DrillEnvironment(plan: full, access: access, reports: Agent.reportDirectory(plan), host: localHostname())
        env.keep = keep
        env.audit = AuditLog(path: Agent.auditLogPath(plan))
        env.kit = { site in await Agent.kit(full, site: site, access: access) }
        env.backend = { action, pool, backend in try await DrillRunCommand.agentAction(plan, action, pool: pool, backend: backend) }
        env.pool = { pool in try await DrillRunCommand.agentPool(plan, pool) }
        let json = file.json
        // Sandboxes a killed run left behind go first.
        for d in await Sandbox.sweep(root: drill.sandbox) { FileHandle.standardError.write(Data("removed the sandbox of an interrupted drill: \(d)\n".utf8)) }
        let reports = await DrillRunner.run(drill, sites: sites.isEmpty ? nil : sites, env: env)
        let store = try? StateStore(path: plan.agent.state)
        for r in reports {
            do { try store?.saveDrill(r) } catch { FileHandle.standardError.write(Data("warning: \(errorText(error))\n".utf8)) }
            if json {
                var o = (try? JSONSerialization.jsonObject(with: Data(r.json().utf8))) as? [String: Any] ?? [:]
                o["message_type"] = "drill_report"
                print(Output.encode(o))
            } else {
                print(DrillRunCommand.summary(r, reports: env.reports))
            }
        }
        if store == nil { FileHandle.standardError.write(Data("warning: the agent's state database \(plan.agent.state) cannot be opened: the reports are in \(env.reports) only\n".utf8)) }
        let passed = DrillRunner.passed(drill, reports)
        if drill.scenario == .ransomware && !json {
            let kept = reports.filter(\.passed).map(\.site), open = reports.filter { $0.unprotected == true }.map(\.site)
            print(passed ? "drill \(drill.name) PASSED: the clean snapshot survived the attack at \(kept.joined(separator: ", "))\(open.isEmpty ? "" : "; unprotected: \(open.joined(separator: ", "))")"
                         : "drill \(drill.name) FAILED: no site kept the clean snapshot through the attack")
        }
        if !passed { throw ArgumentParser.ExitCode(ExitStatus.drillFailed) }
    }

    static func summary(_ r: DrillReport, reports: String) -> String {
        func objective(_ m: Double?, _ o: Double?) -> String {
            guard let o else { return DrillReport.span(m) }
            return "\(DrillReport.span(m)) (objective \(DrillReport.span(o))\(m.map { $0 <= o ? ", met" : ", MISSED" } ?? ""))"
        }
        var out = "drill \(r.drill) at \(r.site): \(r.passed ? "PASSED" : "FAILED")  RTO \(objective(r.rtoSeconds, r.rtoObjective))  RPO \(objective(r.rpoSeconds, r.rpoObjective))\n"
        for s in r.steps {
            out += String(format: "  %-4@ %-32@ %8.3f s  %@\n", s.result.rawValue as NSString, String(s.name.prefix(32)) as NSString, s.seconds,
                          String((s.detail ?? "").prefix(200)) as NSString)
        }
        for f in r.failures { out += "  failed: \(f)\n" }
        out += "  report: \(reports)/\(r.id).md (.html, .json)"
        return out
    }

    /// A proxy pool's state through the running agent's API (`GET /proxy/status`).
    static func agentPool(_ plan: Plan, _ pool: String) async throws -> PoolView {
        let body: [UInt8]
        do { body = try await AgentClient.request(post: false, "/proxy/status", settings: plan.agent) } catch {
            throw LifeboatError(.io, "the agent's API does not answer for pool \(pool): \(error)")
        }
        guard let o = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any], let pools = o["pools"] as? [[String: Any]],
              let p = pools.first(where: { $0["name"] as? String == pool }) else {
            throw LifeboatError(.notFound, "the agent's proxy has no pool \(pool)")
        }
        let members = (p["backends"] as? [[String: Any]] ?? []).compactMap { b -> PoolView.Member? in
            guard let name = b["name"] as? String else { return nil }
            return PoolView.Member(name: name, state: b["state"] as? String ?? "unknown", disabled: b["disabled"] as? Bool ?? false)
        }
        return PoolView(active: p["active"] as? String, backends: members)
    }

    /// A playbook's backend action through the running agent's API.
    static func agentAction(_ plan: Plan, _ action: PlaybookStep.BuiltIn, pool: String, backend: String) async throws -> String {
        let verb = switch action { case .disableBackend: "disable"; case .enableBackend: "enable"; default: "promote" }
        func seg(_ s: String) -> String { s.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? s }
        let path = action == .promoteBackend ? "/proxy/pools/\(seg(pool))/promote/\(seg(backend))" : "/proxy/pools/\(seg(pool))/backends/\(seg(backend))/\(verb)"
        do {
            _ = try await AgentClient.request(post: true, path, settings: plan.agent)
            return "\(pool)/\(backend): \(verb) done by the agent"
        } catch {
            throw LifeboatError(.io, "the agent could not \(verb) \(pool)/\(backend): \(error)")
        }
    }
}

struct DrillListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List the plan's drills with their last result at each site (from the agent's state database).",
        discussion: Examples.drillList)
    @OptionGroup var file: PlanFileOptions

    func run() async throws {
        let plan = try file.load()
        let latest = (try? StateStore(readingFrom: plan.agent.state).latestDrills()) ?? []
        var rows: [[String]] = [["DRILL", "SOURCE", "SCENARIO", "SITE", "SCHEDULE", "LAST RUN", "RESULT", "RTO", "RPO"]]
        for d in plan.drills {
            for site in d.targets {
                let r = latest.first { $0.drill == d.name && $0.site == site }
                if file.json {
                    var o: [String: Any] = ["message_type": "drill", "drill": d.name, "source": d.source, "scenario": d.scenario.rawValue, "site": site,
                                            "schedule": d.scheduleText ?? NSNull()]
                    if let r { o["last_run"] = Timestamp.format(r.declared); o["passed"] = r.passed; o["report"] = r.id
                        o["rto_seconds"] = r.rtoSeconds ?? NSNull(); o["rpo_seconds"] = r.rpoSeconds ?? NSNull() }
                    print(Output.encode(o))
                }
                rows.append([d.name, d.source, d.scenario.rawValue, site, d.scheduleText ?? "by hand", r.map { Timestamp.format($0.declared) } ?? "never",
                             r.map { $0.passed ? "passed" : "FAILED" } ?? "-", DrillReport.span(r?.rtoSeconds), DrillReport.span(r?.rpoSeconds)])
            }
        }
        if !file.json { print(StatusCommand.table(rows), terminator: "") }
    }
}

struct DrillReportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report", abstract: "Print a drill's newest report at each site (or one report by its ID) as Markdown, HTML or JSON.",
        discussion: Examples.drillReport)
    @OptionGroup var file: PlanFileOptions
    @Argument(help: "A drill's name, or a report's ID.") var what: String
    @Option(help: "md, html or json (default md).") var format = "md"

    func run() async throws {
        guard ["md", "html", "json"].contains(format) else { throw fatal("--format: md, html or json, not \(format)") }
        let plan = try file.load()
        let store: StateStore
        do { store = try StateStore(readingFrom: plan.agent.state) } catch { throw fatal(errorText(error)) }
        var reports: [DrillReport] = []
        do {
            if let r = try store.drillReport(id: what) { reports = [r] } else { reports = try store.latestDrills().filter { $0.drill == what } }
        } catch { throw fatal(errorText(error)) }
        guard !reports.isEmpty else { throw fatal("no report of a drill or with an ID \(what) in \(plan.agent.state): run `lifeboat drill run \(what)`") }
        for r in reports {
            switch format {
            case "html": print(r.html(), terminator: "")
            case "json": print(r.json())
            default: print(r.markdown())
            }
        }
    }
}

struct PlaybookCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "playbook", abstract: "Recovery procedures as code: check a playbook, show its steps, run it (and resume it).",
        subcommands: [PlaybookLintCommand.self, PlaybookRunCommand.self])
}

struct VariableOptions: ParsableArguments {
    @Option(name: .customLong("var"), help: "NAME=VALUE: a variable for {NAME} (repeatable).") var vars: [String] = []

    func parsed() throws -> [String: String] {
        var out: [String: String] = [:]
        for v in vars {
            guard let eq = v.firstIndex(of: "="), eq != v.startIndex else { throw fatal("--var \(v): give NAME=VALUE") }
            out[String(v[..<eq])] = String(v[v.index(after: eq)...])
        }
        return out
    }
}

struct PlaybookLintCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lint",
        abstract: "Check a playbook without running it: keys, actions, durations, and every {variable} defined.",
        discussion: "Exit status 0 when it is sound, 1 with file:line:column and the reason otherwise.\n\n\(Examples.playbookLint)")
    @Argument(help: "The playbook (YAML).") var path: String
    @OptionGroup var vars: VariableOptions
    @Flag(help: "Print one JSON object per line.") var json = false

    func run() throws {
        do {
            let book = try Playbook.parse(try PlaybookRunCommand.read(path), path: path, extra: Set(try vars.parsed().keys))
            if json {
                print(Output.encode(["message_type": "playbook", "path": path, "name": book.name, "steps": book.steps.count, "cleanup": book.cleanup.count]))
            } else {
                print("\(path): \(book.name): \(Units.count(book.steps.count, "step")), \(Units.count(book.cleanup.count, "cleanup step")): no problem found")
            }
        } catch let e as ConfigError {
            if json { print(Output.encode(["message_type": "diagnostic", "severity": "error", "message": e.description])) }
            else { FileHandle.standardError.write(Data("\(e.description)\n".utf8)) }
            throw ArgumentParser.ExitCode(ExitStatus.failure)
        }
    }
}

struct PlaybookRunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a playbook's steps in order (or show them with --dry-run), logging each to the audit log.",
        discussion: """
        A playbook with an error is refused before its first step. Each step is written to the audit log (JSON \
        lines: audit.jsonl beside agent.state, or --audit-log) with its start, end, output tail and result; the \
        first failed step stops the run, cleanup steps run whatever happened, and a timeline is printed. \
        --resume RUN_ID runs a failed run again from its failed step, with the variables it had. Manual steps \
        ask on the terminal (or take --confirm STEP). Exit status: 0 when every step succeeded, 24 when one \
        failed, 1 on an error.

        \(Examples.playbookRun)
        """)
    @OptionGroup var file: PlanFileOptions
    @Argument(help: "The playbook (YAML).") var path: String
    @OptionGroup var vars: VariableOptions
    @Flag(name: .customLong("dry-run"), help: "Print each step with its variables resolved; run nothing.") var dryRun = false
    @Option(help: "Resume this run (its ID is printed at its start and in the audit log) from its failed step.") var resume: String?
    @Option(help: "{sandbox}: where restore steps write (default: none; a step that needs it fails).") var target: String?
    @Option(help: "{site}: the site restores read from (default: the plan's primary).") var site: String?
    @Option(help: "{snapshot}: the snapshot restores take (default: latest).") var snapshot: String?
    @Option(help: "{source}: the source restores take (default: the playbook's `source`).") var source: String?
    @Option(name: .customLong("audit-log"), help: "The audit log (default: audit.jsonl beside agent.state).") var auditLog: String?
    @Option(name: .customLong("confirm"), help: "Take this manual step as confirmed (repeatable).") var confirmed: [String] = []

    static func read(_ path: String) throws -> String {
        var st = stat()
        if stat(path, &st) == 0, st.st_size > 1 << 20 { throw ConfigError(path, nil, "the file is \(st.st_size) bytes: a playbook is text of at most 1 MiB") }
        guard let d = FileManager.default.contents(atPath: path) else { throw ConfigError(path, nil, "cannot read the playbook") }
        return String(decoding: d, as: UTF8.self)
    }

    func run() async throws {
        let extra = try vars.parsed()
        let book: Playbook
        do { book = try Playbook.parse(try PlaybookRunCommand.read(path), path: path, extra: Set(extra.keys)) } catch let e as ConfigError {
            FileHandle.standardError.write(Data("\(e.description)\nnothing was run\n".utf8))
            throw ArgumentParser.ExitCode(ExitStatus.failure)
        }
        let plan = try file.load()
        let audit = AuditLog(path: auditLog ?? Agent.auditLogPath(plan))
        var variables = book.variables.merging(extra) { $1 }
        var start = 0
        let id: String
        if let resume {
            let found: (playbook: String, variables: [String: String], steps: [String: StepRecord])?
            do { found = try audit.run(resume) } catch { throw fatal(errorText(error)) }
            guard let found else { throw fatal("no run \(resume) in the audit log \(audit.path)") }
            variables = found.variables.merging(extra) { $1 }
            guard let failed = book.steps.firstIndex(where: { found.steps[$0.name]?.result != .ok }) else {
                throw fatal("run \(resume) finished every step already: nothing to resume")
            }
            start = failed
            id = resume
            FileHandle.standardError.write(Data("resuming run \(id) at step \(failed + 1) (\(book.steps[failed].name))\n".utf8))
        } else {
            id = PlaybookRunner.newRunID(currentTime())
            variables["sandbox"] = target.map { URL(fileURLWithPath: $0).standardizedFileURL.path } ?? ""
            variables["port"] = "\(PlaybookRunner.freePort())"
            variables["snapshot"] = snapshot ?? "latest"
            variables["site"] = site ?? plan.sites.primary.name
            variables["source"] = source ?? book.source ?? ""
            variables["run_id"] = id
            variables["playbook_dir"] = (URL(fileURLWithPath: path).standardizedFileURL.path as NSString).deletingLastPathComponent
        }
        if dryRun {
            print("playbook \(book.name) (\(path)), run \(id)\(resume == nil ? "" : ", resumed at step \(start + 1)"):")
            for (i, s) in book.steps.enumerated() where i >= start { print("  \(i + 1). \(s.name): \(s.resolved(variables).summary)") }
            for (i, s) in book.cleanup.enumerated() { print("  cleanup \(i + 1). \(s.name): \(s.resolved(variables).summary)") }
            return
        }
        let logger = Logger(label: "lifeboat.playbook") { _ in LineLogHandler(json: false) }
        let access: SiteAccess
        do { access = try AgentCommand.siteAccess(logger: logger) } catch { throw fatal(errorText(error)) }
        var runner = PlaybookRunner(playbook: book, variables: variables, actions: PlaybookRunner.actions(plan: plan, access: access) { a, p, b in
            try await DrillRunCommand.agentAction(plan, a, pool: p, backend: b)
        })
        runner.audit = audit
        let confirmed = Set(self.confirmed)
        runner.confirm = { text in
            if confirmed.contains(text) { return true }
            guard isatty(0) != 0 else { return false }
            FileHandle.standardError.write(Data("MANUAL STEP: \(text)\nType yes when it is done: ".utf8))
            return readLine()?.trimmingCharacters(in: .whitespaces).lowercased() == "yes"
        }
        let json = file.json
        runner.onStep = { r in
            if json {
                var o = AuditLog.record(r, run: id)
                o["message_type"] = "playbook_step"
                print(Output.encode(o))
            } else {
                print("\(r.result == .ok ? "ok  " : r.result == .failed ? "FAIL" : "skip") \(r.index). \(r.name) (\(String(format: "%.3f", r.seconds)) s)\(r.detail.map { ": \($0)" } ?? "")")
            }
        }
        if !json { print("run \(id): playbook \(book.name), \(Units.count(book.steps.count - start, "step"))\(start > 0 ? " from step \(start + 1)" : "")") }
        let run = await runner.run(id: id, from: start, resumed: resume != nil)
        if json {
            print(Output.encode(["message_type": "playbook_summary", "run_id": id, "ok": run.ok, "failed_step": run.failedStep.map { $0 as Any } ?? NSNull()]))
        } else {
            print("\ntimeline of run \(id):")
            let t0 = run.steps.first?.started ?? currentTime()
            var rows: [[String]] = [["#", "STEP", "START", "SECONDS", "RESULT"]]
            for s in run.steps {
                rows.append(["\(s.index)", String(s.name.prefix(40)), String(format: "+%.3f", s.started.timeIntervalSince(t0)), String(format: "%.3f", s.seconds), s.result.rawValue])
            }
            print(StatusCommand.table(rows), terminator: "")
            if let f = run.failedStep { print("failed at step \"\(f)\"; fix the cause, then: lifeboat playbook run \(path) --resume \(id)") }
        }
        if !run.ok { throw ArgumentParser.ExitCode(ExitStatus.playbookFailed) }
    }
}
