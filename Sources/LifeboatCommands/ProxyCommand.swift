import ArgumentParser
import Foundation
import LifeboatCore
import LifeboatFailover
import LifeboatProxy
import NIOCore

struct ProxyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proxy",
        abstract: "A health-checked TCP proxy that moves traffic to a healthy backend on its own.",
        discussion: """
        Each pool listens on one address and forwards TCP to its backends: failover (the best healthy backend by \
        priority; failback manual or auto), round-robin or least-connections. A connection that a backend refuses \
        is retried on the next healthy one before any byte is forwarded. See docs/FAILOVER.md for the configuration.
        """)
    @Option(name: .customLong("config"), help: "The proxy configuration (YAML).") var config: String
    @Flag(help: "Check the configuration and exit.") var check = false
    @Flag(help: "Print events as JSON lines.") var json = false

    func run() async throws {
        let cfg: ProxyConfig
        do { cfg = try ProxyConfig.load(config) } catch {
            FileHandle.standardError.write(Data("Fatal: \(error)\n".utf8))
            throw ExitCode(ExitStatus.failure)
        }
        if check {
            print("configuration ok: \(cfg.pools.count) pools, \(cfg.pools.reduce(0) { $0 + $1.backends.count }) backends")
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
            do { admin = try AdminServer(pools: server.pools, listen: listen, tokenFile: cfg.adminTokenFile) } catch {
                FileHandle.standardError.write(Data("Fatal: \(error)\n".utf8))
                throw ExitCode(ExitStatus.failure)
            }
        } else {
            admin = nil
        }

        let channels: [any Channel]
        do { channels = try await server.start() } catch {
            FileHandle.standardError.write(Data("Fatal: cannot listen: \(error)\n".utf8))
            throw ExitCode(ExitStatus.failure)
        }
        for (pool, ch) in zip(cfg.pools, channels) {
            log("pool \(pool.name) listening on \(ch.localAddress.map { "\($0)" } ?? pool.listen.description) (\(pool.mode.rawValue), \(pool.backends.count) backends)")
        }
        try await withThrowingTaskGroup(of: Void.self) { g in
            g.addTask { await HealthChecker(pools: server.pools).run() }
            if let admin {
                g.addTask { try await admin.run { log("admin API listening on \($0)") } }
            }
            try await g.next()
        }
    }
}
