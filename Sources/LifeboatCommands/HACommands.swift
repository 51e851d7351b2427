import ArgumentParser
import Foundation
import LifeboatCore
import LifeboatEtcd
import LifeboatHA
import LifeboatHAAgent
import LifeboatHTTP

/// `lifeboat ha`: high availability of PostgreSQL on etcd (docs/HA.md).
struct HACommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ha",
        abstract: "High availability of PostgreSQL on etcd: leader election, failover, fencing, switchover.",
        discussion: """
        One `lifeboat ha run` per database node, each with the cluster's `ha:` section (in lifeboat.yaml or a file \
        of its own) and its own `node:` block. See docs/HA.md.

        Exit codes of `ha list`: 0 the cluster has a leader, 1 it has none or etcd cannot be reached.
        """,
        subcommands: [HARunCommand.self, HAListCommand.self, HASwitchoverCommand.self, HAPauseCommand.self, HAResumeCommand.self])
}

struct HAConfigOption: ParsableArguments {
    @Option(name: .customLong("config"), help: "lifeboat.yaml with an `ha:` section, or a file with its keys at the top (env LIFEBOAT_HA_CONFIG).")
    var config: String?
    @Flag(help: "Print JSON lines.") var json = false

    func load() throws -> HAConfig {
        guard let path = config ?? ProcessInfo.processInfo.environment["LIFEBOAT_HA_CONFIG"] else {
            throw fatal("give --config FILE (or LIFEBOAT_HA_CONFIG)")
        }
        do { return try HAConfig.load(path) } catch { throw fatal("\(error)") }
    }

    func store(_ c: HAConfig) throws -> HAStore {
        do {
            return HAStore(client: try EtcdClient(endpoints: c.etcdEndpoints, timeout: max(1, c.settings.ttl / 3)), settings: c.settings)
        } catch { throw fatal("\(error)") }
    }
}

struct HARunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run this node: hold or follow the leader lease, promote, fence, serve the REST API.",
        discussion: """
        Stops on SIGTERM or SIGINT: a primary is stopped first, then the session lease is revoked, so that a \
        caught-up standby takes over at once rather than after the TTL.

        \(Examples.haRun)
        """)
    @OptionGroup var options: HAConfigOption
    @Flag(help: "Check the configuration and exit.") var check = false

    func run() async throws {
        let c = try options.load()
        if check {
            print("configuration ok: cluster \(c.settings.cluster), node \(c.settings.node), ttl \(String(format: "%.1f", c.settings.ttl))s, fencing deadline \(String(format: "%.1f", c.settings.fencingDeadline))s")
            return
        }
        let json = options.json
        let log: @Sendable (String) -> Void = { line in
            let text = json ? Output.encode(["message_type": "event", "time": Timestamp.format(Date()), "message": line])
                : "\(Timestamp.format(Date())) \(line)"
            FileHandle.standardOutput.write(Data((text + "\n").utf8))
        }
        let driver: HADriver
        let api: HAAPI
        do {
            driver = try HADriver(config: c, log: log)
            api = try HAAPI(driver: driver)
        } catch { throw fatal("\(error)") }
        gracefulStop = "stopping: the server is stopped if primary, then the lease is released"
        let listen = c.api
        try await withThrowingTaskGroup(of: Void.self) { g in
            g.addTask {
                do { try await api.run { log("ha: API listening on \($0)") } } catch {
                    log("ha: the API cannot listen on \(listen): \(error)")
                    throw error
                }
            }
            g.addTask { await driver.run() }
            g.addTask {
                while !stopRequested() && !Task.isCancelled { try? await Task.sleep(for: .milliseconds(50)) }
            }
            _ = try await g.next()
            g.cancelAll()
        }
    }
}

struct HAListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "The cluster's members: role, timeline, position, lag.",
                                                    discussion: "\(Examples.haList)")
    @OptionGroup var options: HAConfigOption

    func run() async throws {
        let c = try options.load()
        let store = try options.store(c)
        let (view, problems) = await store.read()
        await store.client.shutdown()
        let report = HAClusterReport(view: view, cluster: c.settings.cluster, problems: problems)
        if options.json {
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys]
            var o = (try? JSONSerialization.jsonObject(with: e.encode(report))) as? [String: Any] ?? [:]
            o["message_type"] = "ha_cluster"
            print(Output.encode(o))
        } else {
            guard view != nil else { throw fatal("etcd cannot be reached at \(c.etcdEndpoints.joined(separator: ", "))") }
            var rows: [[String]] = [["MEMBER", "ROLE", "LEADER", "TIMELINE", "POSITION", "LAG", "CANDIDATE", "POSTGRES", "API"]]
            for m in report.members {
                rows.append([m.name, m.role, m.leader ? "*" : "", m.timeline.map(String.init) ?? "-", m.position ?? "-",
                             m.lagBytes.map { Units.bytes($0) } ?? "-", m.candidate ? "yes" : "no", m.postgres ?? "-", m.api ?? "-"])
            }
            var out = "cluster \(report.cluster)"
            out += report.leader.map { ", leader \($0)" } ?? ", NO LEADER"
            if let t = report.leaderTimeline { out += ", timeline \(t)" }
            if let s = report.synchronous { out += ", synchronous standbys: \(s.isEmpty ? "none (no failover possible)" : s.joined(separator: ", "))" }
            if report.maintenance { out += ", PAUSED (no automatic failover)" }
            if let s = report.switchover { out += ", switchover \(s) under way" }
            print(out)
            print(StatusCommand.table(rows), terminator: "")
            for p in problems { print("warning: \(p)") }
        }
        if report.leader == nil { throw ArgumentParser.ExitCode(ExitStatus.failure) }
    }
}

/// Calls an action on the node's own API (with the token), as `curl -X POST -H 'Authorization: Bearer …'` would.
func callHAAPI(_ c: HAConfig, method: String, path: String) async throws -> String {
    guard let tokenFile = c.tokenFile else { throw fatal("actions need a token: set ha.node.token_file (or agent.token_file)") }
    let token: String
    do { token = try readPasswordFile(tokenFile, from: "ha.node.token_file") } catch { throw fatal("\(error)") }
    let host = c.api.host == "0.0.0.0" ? "127.0.0.1" : c.api.host == "::" ? "::1" : c.api.host
    let origin = "http://\(host.contains(":") ? "[\(host)]" : host):\(c.api.port)"
    var o = HTTPOptions()
    o.connectTimeout = 5
    o.readTimeout = 30
    let t = try AsyncHTTPTransport(origin: origin, options: o)
    defer { Task { await t.shutdown() } }
    let r: HTTPResponseSpec
    do {
        r = try await t.send(HTTPRequestSpec(method: method, target: path, headers: [("Authorization", "Bearer \(token)")], body: Data()))
    } catch { throw fatal("the node's API at \(origin) cannot be reached (is `lifeboat ha run` running?): \(error)") }
    let text = String(decoding: r.body.prefix(4096), as: UTF8.self)
    guard r.status == 200 else { throw fatal("the node refused: \(text.trimmingCharacters(in: .whitespacesAndNewlines))") }
    let o2 = (try? JSONSerialization.jsonObject(with: r.body)) as? [String: Any]
    return (o2?["result"] as? String) ?? text
}

struct HASwitchoverCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchover",
        abstract: "Hand the leader role to another node once it is caught up.",
        discussion: """
        The leader stops taking writes and releases its key only when NODE is within maximum_lag_on_failover \
        bytes; NODE promotes, the old leader is rewound and follows it. Waits until NODE leads, or --timeout \
        (then the request is withdrawn and the exit status is 1).

        \(Examples.haSwitchover)
        """)
    @OptionGroup var options: HAConfigOption
    @Option(help: "The node that should lead.") var to: String
    @Option(help: "How long to wait for the new leader (seconds).") var timeout: Double = 120

    func run() async throws {
        let c = try options.load()
        guard timeout.isFinite, (1...86400).contains(timeout) else { throw fatal("--timeout must be between 1 and 86400 seconds") }
        // It goes into the request's query as it is: a node name only (no '&', '#', space or '/').
        guard HASettings.validName(to) else { throw fatal("--to \"\(to.prefix(80))\" is not a node name (1 to 63 letters, digits, '-', '_' or '.')") }
        let store = try options.store(c)
        defer { Task { await store.client.shutdown() } }
        let start = ContinuousClock.now
        // A target that is a member but not yet a standby that could take over (still rewinding or copying, as
        // right after another switchover) is waited for; anything else is refused by the node at once.
        while ContinuousClock.now - start < .seconds(timeout) {
            let (v, _) = await store.read()
            guard let m = v?.members[to], v?.leader?.holder != to, m.role != .standby || !m.candidate else { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        let said = try await callHAAPI(c, method: "POST", path: "/switchover?to=\(to)")
        print(said)
        while ContinuousClock.now - start < .seconds(timeout) {
            let (v, _) = await store.read()
            if let l = v?.leader?.holder, l == to, v?.members[to]?.role == .primary {
                print("\(to) leads (timeline \(v?.members[to]?.timeline.map(String.init) ?? "?")) after \(String(format: "%.1f", Double((ContinuousClock.now - start).components.seconds)))s")
                return
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        _ = try? await callHAAPI(c, method: "DELETE", path: "/switchover")
        throw fatal("\(to) did not take over within \(Int(timeout))s; the switchover request was withdrawn")
    }
}

struct HAPauseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pause", abstract: "Maintenance: no automatic failover until `ha resume`.",
                                                    discussion: "\(Examples.haPause)")
    @OptionGroup var options: HAConfigOption
    func run() async throws { print(try await callHAAPI(try options.load(), method: "POST", path: "/pause")) }
}

struct HAResumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "resume", abstract: "End maintenance: automatic failover again.",
                                                    discussion: "\(Examples.haResume)")
    @OptionGroup var options: HAConfigOption
    func run() async throws { print(try await callHAAPI(try options.load(), method: "POST", path: "/resume")) }
}
