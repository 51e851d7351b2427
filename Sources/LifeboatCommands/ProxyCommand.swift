import ArgumentParser
import Foundation
import LifeboatCore
import LifeboatFailover
import LifeboatHTTP
import LifeboatProxy
import NIOCore
import Synchronization

struct ProxyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proxy",
        abstract: "A health-checked TCP proxy that moves traffic to a healthy backend on its own.",
        discussion: """
        Each pool listens on one address and forwards TCP to its backends: failover (the best healthy backend by \
        priority; failback manual or auto), round-robin or least-connections. A connection that a backend refuses \
        is retried on the next healthy one before any byte is forwarded. See docs/FAILOVER.md for the configuration.

        \(Examples.proxy)
        """)
    @Option(name: .customLong("config"), help: "The proxy configuration (YAML).") var config: String
    @Flag(help: "Check the configuration and exit.") var check = false
    @Flag(help: "Print events as JSON lines.") var json = false
    @Option(name: .customLong("pid-file"), help: "Write the process ID here while running (for `kill -HUP $(cat FILE)`: reload).") var pidFile: String?

    /// SIGHUPs received (each asks for a reload).

    func run() async throws {
        let cfg: ProxyConfig
        do { cfg = try ProxyConfig.load(config) } catch { throw fatal("\(error)") }
        if check {
            print("configuration ok: \(Units.count(cfg.pools.count, "pool")), \(Units.count(cfg.pools.reduce(0) { $0 + $1.backends.count }, "backend"))")
            return
        }
        let json = self.json
        let log: ProxyLog = { line in
            let text = json ? Output.encode(["message_type": "event", "time": Timestamp.format(Date()), "message": line])
                : "\(Timestamp.format(Date())) \(line)"
            FileHandle.standardOutput.write(Data((text + "\n").utf8))
        }
        let server = ProxyServer(config: cfg, log: log)
        let admin: AdminServer?
        if let listen = cfg.adminListen {
            do { admin = try AdminServer(server: server, listen: listen, tokenFile: cfg.adminTokenFile) } catch { throw fatal("\(error)") }
        } else {
            admin = nil
        }

        // SIGHUP: reload. SIGTERM/SIGINT: stop accepting, drain, exit 0 (a second signal exits at once).
        // Installed before "listening" is logged: a reload sent as soon as the proxy says it is ready must not
        // kill it (SIGHUP's default action).
        gracefulStop = "draining connections"
        let hup = countHangups()
        defer { hup.cancel() }

        if let pidFile {
            do { try PIDFile.create(pidFile) } catch { throw fatal("\(error)") }
        }
        defer { if let pidFile { PIDFile.remove(pidFile) } }
        let bound: [SocketAddress?]
        do { bound = try await server.start() } catch { throw fatal("cannot listen: \(error)") }
        for (pool, address) in zip(cfg.pools, bound) {
            log("pool \(pool.name) listening on \(address.map(NetworkErrors.peer) ?? pool.listen.description) (\(pool.mode.rawValue), \(Units.count(pool.backends.count, "backend")))")
        }

        let path = config
        try await withThrowingTaskGroup(of: Void.self) { g in
            g.addTask { await HealthChecker().run(server) }
            if let admin {
                g.addTask { try await admin.run { log("admin API listening on \($0)") } }
            }
            g.addTask {
                var current = cfg
                var seen = 0
                while !stopRequested() {
                    try await Task.sleep(nanoseconds: 50_000_000)
                    let n = hangups.load(ordering: .relaxed)
                    guard n != seen else { continue }
                    seen = n
                    current = await ProxyCommand.reload(server, from: path, current: current, log: log)
                }
                log("draining \(server.openConnections) connections (at most \(Duration.seconds(current.drainTimeout)))")
                let forced = await server.drain(timeout: current.drainTimeout) { stopSignals.load(ordering: .relaxed) > 1 }
                log(forced == 0 ? "stopped: every connection finished" : "stopped: closed \(forced) connections still open")
            }
            try await g.next()
            g.cancelAll()
        }
    }

    /// Re-reads the configuration; on any error the running one stays in force and the error is logged.
    static func reload(_ server: ProxyServer, from path: String, current: ProxyConfig, log: ProxyLog) async -> ProxyConfig {
        let next: ProxyConfig
        do { next = try ProxyConfig.load(path) } catch {
            log("reload failed, the running configuration stays: \(error)")
            return current
        }
        if next.adminListen != current.adminListen || next.adminTokenFile != current.adminTokenFile {
            log("reload: changes to admin take effect at the next start")
        }
        do {
            let summary = try await server.reload(next)
            log("reloaded \(path): \(summary)")
            var taken = next
            taken.adminListen = current.adminListen
            taken.adminTokenFile = current.adminTokenFile
            return taken
        } catch {
            log("reload failed, the running configuration stays: cannot listen: \(error)")
            return current
        }
    }
}
