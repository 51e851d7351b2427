import Foundation
import LifeboatCore
import LifeboatDrill
import LifeboatFailover
import LifeboatHTTP
import LifeboatPlan
import LifeboatProxy
import Logging

/// The plan's `proxy:` section run inside the agent: the pools listen, health checks run, a switch is an alert
/// (`switch`), the proxy's admin endpoints answer under the agent's API (`/proxy/status`, `/proxy/pools/…`), its
/// metrics join the agent's, a reload reloads the pools, and a stop drains them.
public final class AgentProxy: Sendable {
    public let server: ProxyServer
    public let admin: AdminServer
    let config: ProxyConfig

    /// `onSwitch` hears each switch line ("pool web: switch primary -> standby (health)").
    public init(config: ProxyConfig, logger: Logger, onSwitch: @escaping @Sendable (String) -> Void) {
        self.config = config
        server = ProxyServer(config: config) { line in
            logger.info("proxy", metadata: ["event": "\(line)"])
            if line.contains(": switch ") { onSwitch(line) }
        }
        admin = AdminServer(embeddedIn: server)
    }

    /// Binds the pools' listeners; then health checks run until `drain`.
    public func start(logger: Logger) async throws {
        let bound = try await server.start()
        for (pool, address) in zip(config.pools, bound) {
            logger.info("proxy pool listening", metadata: ["pool": "\(pool.name)", "address": "\(address.map(NetworkErrors.peer) ?? pool.listen.description)",
                                                           "mode": "\(pool.mode.rawValue)"])
        }
    }

    /// Health checks, until the task is cancelled.
    public func runHealthChecks() async { await HealthChecker().run(server) }

    public func reload(_ next: ProxyConfig, logger: Logger) async {
        do {
            let summary = try await server.reload(next)
            logger.info("proxy reloaded", metadata: ["summary": "\(summary)"])
        } catch {
            logger.error("proxy reload failed, its pools stay as they were: \(error)")
        }
    }

    /// Stops accepting and lets connections finish (at most the proxy's drain_timeout).
    public func drain(logger: Logger) async {
        let forced = await server.drain(timeout: config.drainTimeout)
        logger.info("proxy drained", metadata: ["closed_at_timeout": "\(forced)"])
    }

    public var metrics: String { ProxyMetrics.render(server.pools) }

    /// A pool as a drill sees it: the backend serving, each backend's state.
    public static func view(_ proxy: AgentProxy?, pool: String) throws -> PoolView {
        guard let proxy else { throw LifeboatError(.notFound, "the agent runs no proxy (the plan has no proxy section)") }
        guard let p = proxy.server.pools.first(where: { $0.config.name == pool }) else { throw LifeboatError(.notFound, "no pool \(pool)") }
        let st = p.status().state
        return PoolView(active: st.activeName, backends: st.members.map {
            PoolView.Member(name: $0.name, state: $0.health.state.rawValue, disabled: $0.health.disabled)
        })
    }

    /// A playbook's backend action on the agent's own pools.
    public static func act(_ proxy: AgentProxy?, _ action: PlaybookStep.BuiltIn, pool: String, backend: String) throws -> String {
        guard let proxy else { throw LifeboatError(.notFound, "the agent runs no proxy (the plan has no proxy section)") }
        guard let p = proxy.server.pools.first(where: { $0.config.name == pool }) else { throw LifeboatError(.notFound, "no pool \(pool)") }
        switch action {
        case .disableBackend, .enableBackend:
            guard p.setFlags(backend, disabled: action == .disableBackend, draining: action == .enableBackend ? false : nil) else {
                throw LifeboatError(.notFound, "no backend \(backend) in pool \(pool)")
            }
            return "\(pool)/\(backend) \(action == .disableBackend ? "disabled" : "enabled")"
        case .promoteBackend:
            guard p.config.mode == .failover else { throw LifeboatError.invalid("promote applies to failover pools, and \(pool) is not one") }
            guard p.promote(backend) != nil else { throw LifeboatError(.notFound, "backend \(backend) of pool \(pool) cannot be promoted (unknown or not healthy)") }
            return "\(pool) now serves from \(backend)"
        default:
            throw LifeboatError.invalid("\(action.rawValue) is not a backend action")
        }
    }
}
