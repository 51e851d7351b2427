import ArgumentParser
import Foundation
import LifeboatConfig
import LifeboatCore
import LifeboatAgent
import LifeboatPlan

/// The plan file option of `config validate` and `plan` (and later the agent).
struct PlanFileOptions: ParsableArguments {
    @Option(name: .customLong("config"), help: "The plan file (or LIFEBOAT_CONFIG; default /etc/lifeboat/lifeboat.yaml).")
    var config: String?
    @Flag(help: "Print one JSON object per line instead of text.") var json = false

    var path: String { config ?? ProcessInfo.processInfo.environment["LIFEBOAT_CONFIG"] ?? Plan.defaultPath }

    /// The plan, or the exit after printing why it cannot be read (file:line:column).
    func load() throws -> Plan {
        do { return try Plan.load(path) } catch let e as ConfigError {
            if json {
                print(Output.encode(["message_type": "diagnostic", "severity": "error", "message": e.description]))
            } else {
                FileHandle.standardError.write(Data("\(e.description)\n".utf8))
            }
            throw ArgumentParser.ExitCode(ExitStatus.failure)
        }
    }
}

struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "config", abstract: "Work with the plan file (lifeboat.yaml).",
                                                    subcommands: [ConfigValidateCommand.self])
}

struct ConfigValidateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check the plan file: its form, schedules against objectives, and the files it names.",
        discussion: """
        Errors (exit 1) stop the agent from starting or from taking a reload: unknown keys, bad values, cron \
        expressions that do not parse or never run, a source naming no site, an RPO shorter than the longest wait \
        between the source's runs, a password, credentials or DSN file that cannot be read. Warnings (exit 0) say \
        what is missing, such as a source without objectives. Each finding names the file, line and column.

        \(Examples.configValidate)
        """)
    @OptionGroup var file: PlanFileOptions

    func run() throws {
        let plan = try file.load()
        let findings = PlanCheck.diagnose(plan, now: currentTime())
        let errors = findings.filter { $0.severity == .error }.count
        for d in findings {
            if file.json {
                print(Output.encode(["message_type": "diagnostic", "severity": d.severity.rawValue, "location": d.location, "message": d.message]))
            } else {
                FileHandle.standardError.write(Data("\(d)\n".utf8))
            }
        }
        let summary = "\(Units.count(plan.sources.count, "source")), \(Units.count(plan.sites.sites.count, "site")), \(Units.count(plan.alerts.count, "alert target"))"
        if file.json {
            print(Output.encode(["message_type": "validated", "ok": errors == 0, "errors": errors, "warnings": findings.count - errors,
                                 "sources": plan.sources.count, "sites": plan.sites.sites.count]))
        } else {
            print(errors == 0 ? "configuration ok: \(summary)" : "configuration has \(Units.count(errors, "error")): \(summary)")
        }
        if errors > 0 { throw ArgumentParser.ExitCode(ExitStatus.failure) }
    }
}

struct PlanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Show what the agent will do: each job, its next runs, sites and objectives.",
        discussion: """
        For every source: its schedule and next three runs (in the plan's time zone), the sites it writes to, its \
        RPO and RTO, and whether the schedule can meet the RPO (the longest wait between runs in the coming year \
        must not pass it); then the check and prune jobs. With an agent running (agent.listen), what a reload \
        would change: jobs and sites added, removed or changed. Exits 1 when a schedule cannot meet its RPO. \
        LIFEBOAT_NOW (RFC 3339 or Unix seconds) sets the clock.

        \(Examples.plan)
        """)
    @OptionGroup var file: PlanFileOptions

    func run() async throws {
        let plan = try file.load()
        let now = currentTime()
        let jobs = PlanCheck.preview(plan, now: now)
        if file.json {
            for j in jobs {
                print(Output.encode(["message_type": "job", "kind": j.kind.rawValue, "name": j.name, "schedule": j.schedule,
                                     "next": j.next.map(Timestamp.format), "sites": j.sites, "rpo_seconds": j.rpo.map { $0 as Any } ?? NSNull(),
                                     "rto_seconds": j.rto.map { $0 as Any } ?? NSNull(), "longest_gap_seconds": j.longestGap.map { $0 as Any } ?? NSNull(),
                                     "meets_rpo": j.meetsRPO.map { $0 as Any } ?? NSNull()]))
            }
        } else {
            let local = DateFormatter()
            local.dateFormat = "yyyy-MM-dd HH:mm:ss zzz"
            for j in jobs {
                print("\(j.kind.rawValue) \(j.name): \(j.schedule)")
                print("  next:       \(j.next.isEmpty ? "never" : j.next.map { local.string(from: $0) }.joined(separator: ", "))")
                print("  sites:      \(j.sites.joined(separator: ", "))")
                if j.kind == .backup {
                    let objectives = j.rpo.map { "rpo \(Units.span($0))" } ?? "no rpo"
                    let rto = j.rto.map { ", rto \(Units.span($0))" } ?? ""
                    let verdict: String
                    switch (j.meetsRPO, j.longestGap) {
                    case (true?, let g?): verdict = "met by the schedule (longest wait \(Units.span(g)))"
                    case (false?, let g?): verdict = "NOT met: the longest wait between runs is \(Units.span(g))"
                    case (false?, nil): verdict = "NOT met: the schedule never runs"
                    default: verdict = "not measured"
                    }
                    print("  objectives: \(objectives)\(rto): \(verdict)")
                }
            }
        }
        // With an agent running this plan's API: what a reload would change.
        if let body = try? await AgentClient.get("/status", settings: plan.agent, timeout: 3),
           let running = try? AgentAPI.decoder().decode(AgentStatus.self, from: Data(body)) {
            let changes = PlanChange.between(running: running, next: RecoveryKit.withSelfBackup(plan))
            if file.json {
                for c in changes { print(Output.encode(["message_type": "change", "change": c.kind.rawValue, "subject": c.subject, "detail": c.detail])) }
            } else {
                let since = running.agentStarted.map { " (running since \(Timestamp.format($0)))" } ?? ""
                print(changes.isEmpty ? "\nthe running agent\(since) has this plan: a reload changes nothing"
                                      : "\na reload of the running agent\(since) would change:\n" + changes.map { "  \($0)" }.joined(separator: "\n"))
            }
        }
        if jobs.contains(where: { $0.meetsRPO == false }) { throw ArgumentParser.ExitCode(ExitStatus.failure) }
    }
}
