import Foundation
import Testing
import LifeboatConfig
import LifeboatCore
@testable import LifeboatPlan

@Suite struct PlaybookTests {
    func parse(_ text: String, extra: Set<String> = []) throws -> Playbook { try Playbook.parse(text, path: "pb.yaml", extra: extra) }
    func error(_ text: String) -> String {
        do { _ = try parse(text); return "" } catch { return "\(error)" }
    }

    @Test func stepsAndDefaults() throws {
        let b = try parse("""
            name: restore shop
            source: shop
            variables: {db: shop}
            steps:
              - {name: restore, lifeboat: restore}
              - {name: start, run: ["pg_ctl", "-D", "{sandbox}/pg", "-o", "-p {port}"], timeout: 30s, retries: 2, run_as: postgres}
              - {name: ready, check: "pg_isready -p {port}", within: 20s, interval: 500ms}
              - {name: tell, manual: "Point the app at port {port}", confirmed_in_drills: true}
            cleanup:
              - {name: stop, run: "pg_ctl -D {sandbox}/pg stop"}
            """)
        #expect(b.name == "restore shop" && b.source == "shop" && b.steps.count == 4 && b.cleanup.count == 1)
        guard case .lifeboat(.restore, let args) = b.steps[0].action else { Issue.record("restore"); return }
        #expect(args == PlaybookStep.restoreDefaults, "a restore takes the run's source, snapshot, site and sandbox")
        #expect(b.steps[1].timeout == 30 && b.steps[1].retries == 2 && b.steps[1].runAs == "postgres")
        let r = b.steps[1].resolved(["sandbox": "/s", "port": "5433"])
        guard case .run(.argv(let argv)) = r.action else { Issue.record("argv"); return }
        #expect(argv == ["pg_ctl", "-D", "/s/pg", "-o", "-p 5433"])
        guard case .check(_, let within, let interval) = b.steps[2].action else { Issue.record("check"); return }
        #expect(within == 20 && interval == 0.5 && b.steps[2].timeout == 20)
    }

    @Test func errorsHaveLineAndColumn() {
        #expect(error("steps:\n  - {name: a, run: \"echo {nope}\"}\n").contains("pb.yaml:2:20: step \"a\": undefined variable {nope}"))
        #expect(error("steps:\n  - name: a\n    reboot: now\n").contains("pb.yaml:3:5: unknown key \"reboot\""))
        #expect(error("steps:\n  - {name: a, run: x, check: y}\n").contains("one of run, check, not several"))
        #expect(error("steps:\n  - {name: a}\n").contains("say what it does"))
        #expect(error("steps:\n  - {lifeboat: promote-backend, with: {pool: p}}\n").contains("needs `with: {backend: …}`"))
        #expect(error("steps:\n  - {lifeboat: launch}\n").contains("unknown value \"launch\""))
        #expect(error("steps:\n  - {run: x, timeout: 99999d}\n").contains("out of range"))
        #expect(error("steps:\n  - {run: x, within: 5s}\n").contains("apply to `check` steps only"))
        #expect(error("steps:\n  - {name: a, run: x}\n  - {name: a, run: y}\n").contains("two steps are named \"a\""))
        #expect(error("variables: {sandbox: x}\nsteps:\n  - {run: x}\n").contains("built-in variable"))
        #expect(error("steps: []\n").contains("non-empty list"))
        // Shell text keeps its braces: ${HOME}, { cmd; }, awk programs.
        #expect(error("steps:\n  - {run: \"echo ${HOME} { true; } {a b}; awk '{print $1}' {\"}\n") == "")
        #expect(error("steps:\n  - {run: x, run_as: \"root; rm\"}\n").contains("not a user name"))
        // --var defines what the file does not.
        #expect((try? parse("steps:\n  - {run: \"echo {who}\"}\n", extra: ["who"])) != nil)
    }

    @Test func templates() {
        #expect(Template.render("a {x} {{literal}} }} {y}", ["x": "1", "y": "2"]) == "a 1 {literal} } 2")
        #expect((try? Template.variables(in: "{a}{b_2}{{c}}").get()) == ["a", "b_2"])
        #expect((try? Template.variables(in: "} ${x} { y } {").get()) == [])
        #expect((try? Template.variables(in: "{" + String(repeating: "x", count: 65) + "}").get()) == [])
        #expect(Template.render("${x} {x}", ["x": "1"]) == "${x} 1")
        // Values are not templates again: a value holding braces stays as it is.
        #expect(Template.render("{x}", ["x": "{y}"]) == "{y}")
    }

    @Test func drillsInThePlan() throws {
        let head = """
            sites:
              - {name: home, repository: /srv/r, role: primary}
              - {name: usb, repository: /mnt/r, role: replica}
            sources:
              - {name: www, paths: [/srv/www], schedule: "*/15 * * * *"}
            """
        let plan = try Plan.parse(head + """

            drills:
              - {name: d1, source: www, sandbox: /var/tmp/drills, schedule: "0 5 * * 1", run_as: postgres, playbook: pb/www.yaml}
              - {name: d2, source: www, scenario: site-loss, sandbox: /var/tmp/drills}
            mass_change: {changed_files: 30%, high_entropy: 0.6, min_files: 50}
            """, path: "/etc/lifeboat/lifeboat.yaml")
        #expect(plan.drills.map(\.name) == ["d1", "d2"])
        #expect(plan.drills[0].from == ["home", "usb"] && plan.drills[0].playbook == "/etc/lifeboat/pb/www.yaml" && plan.drills[0].schedule != nil)
        #expect(plan.drills[1].from == ["usb"], "site-loss drills the replicas")
        #expect(plan.massChange.changedShare == 0.3 && plan.massChange.entropyShare == 0.6 && plan.massChange.minFiles == 50)
        func bad(_ tail: String) -> String {
            do { _ = try Plan.parse(head + "\n" + tail, path: "p.yaml"); return "" } catch { return "\(error)" }
        }
        #expect(bad("drills:\n  - {name: x, source: nope, sandbox: /d}").contains("no source named \"nope\""))
        #expect(bad("drills:\n  - {name: x, source: www, sandbox: d}").contains("absolute folder"))
        #expect(bad("drills:\n  - {name: x, source: www, sandbox: /}").contains("absolute folder"))
        #expect(bad("drills:\n  - {name: x, source: www, sandbox: /a/../b}").contains("absolute folder"))
        #expect(bad("drills:\n  - {name: x, source: www, sandbox: /d, scenario: site-loss, from: [home]}").contains("leave the primary home out"))
        #expect(bad("drills:\n  - {name: x, source: www, sandbox: /d, from: [mars]}").contains("no site named \"mars\""))
        #expect(bad("drills:\n  - {name: x, source: www, sandbox: /d, scenario: tornado}").contains("unknown value \"tornado\""))
        #expect(bad("drills:\n  - {name: x, source: www, sandbox: /d}\n  - {name: x, source: www, sandbox: /d}").contains("duplicate drill name"))
        #expect(bad("mass_change: {changed_files: 150%}").contains("at most 100%"))
        #expect(bad("mass_change: {entropy_bits: 9}").contains("from 1 to 8"))
    }

    @Test func nodeCrashDrillsNameAPoolWithAChaosBackend() throws {
        let head = """
            sites:
              - {name: home, repository: /srv/r, role: primary}
              - {name: usb, repository: /mnt/r, role: replica}
            sources:
              - {name: www, paths: [/srv/www], schedule: "*/15 * * * *"}
            proxy:
              pools:
                - name: web
                  listen: 127.0.0.1:8080
                  backends:
                    - {name: a, address: 127.0.0.1:8081, chaos: true}
                    - {name: b, address: 127.0.0.1:8082, priority: 2}
                - name: calm
                  listen: 127.0.0.1:9080
                  backends: [{name: c, address: 127.0.0.1:9081}]

            """
        let plan = try Plan.parse(head + """
            drills:
              - {name: crash, source: www, scenario: node-crash, pool: web, crash: "kill -STOP $(cat /run/a.pid)", recover: [kill, -CONT, "1"],
                 sandbox: /var/tmp/d, clients: {interval: 20ms, duration: 30s, timeout: 250ms, send: "PING\\r\\n"}}
            """, path: "p.yaml")
        let d = plan.drills[0]
        #expect(d.pool == "web" && d.targets == ["pool:web"] && d.from.isEmpty)
        #expect(d.crash == ["/bin/sh", "-c", "kill -STOP $(cat /run/a.pid)"] && d.recover == ["kill", "-CONT", "1"])
        #expect(d.clients.interval == 0.02 && d.clients.duration == 30 && d.clients.timeout == 0.25 && d.clients.send == "PING\r\n")
        func bad(_ tail: String) -> String {
            do { _ = try Plan.parse(head + tail, path: "p.yaml"); return "" } catch { return "\(error)" }
        }
        #expect(bad("drills:\n  - {name: x, source: www, sandbox: /d, scenario: node-crash, pool: mars, crash: 'true'}").contains("no proxy pool named \"mars\""))
        #expect(bad("drills:\n  - {name: x, source: www, sandbox: /d, scenario: node-crash, pool: calm, crash: 'true'}").contains("no backend marked `chaos: true`"))
        #expect(bad("drills:\n  - {name: x, source: www, sandbox: /d, scenario: node-crash, pool: web}").contains("missing `crash`"))
        #expect(bad("drills:\n  - {name: x, source: www, sandbox: /d, scenario: node-crash}").contains("missing `pool`"))
        #expect(bad("drills:\n  - {name: x, source: www, sandbox: /d, pool: web}").contains("`pool` belongs to node-crash drills"))
        #expect(bad("drills:\n  - {name: x, source: www, sandbox: /d, scenario: node-crash, pool: web, crash: 'true', clients: {interval: 0s}}").contains("interval"))
        #expect(bad("drills:\n  - {name: x, source: www, sandbox: /d, scenario: node-crash, pool: web, crash: 'true', clients: {duration: 1e300}}").contains("out of range"))
    }
}
