import Foundation
import LifeboatFailover
import Testing
@testable import LifeboatHA

@Suite struct HAConfigTests {
    /// The issue's example, as a section of lifeboat.yaml.
    static let example = """
    ha:
      cluster: shop
      etcd: {endpoints: ["http://etcd1.internal:2379", "http://etcd2.internal:2379", "http://etcd3.internal:2379"]}
      ttl: 10s
      maximum_lag_on_failover: 1MB
      synchronous: false
      node:
        name: pg1
        api: 0.0.0.0:8008
        postgres: {bin_dir: /usr/lib/postgresql/15/bin, data_dir: /var/lib/postgresql/15/main, listen: pg1.internal:5432,
                   replication_user: replicator, password_file: /etc/lifeboat/replicator.pw}
        fencing: {watchdog: false, deadline: 7s}
    """

    @Test func theIssueExampleParses() throws {
        let c = try HAConfig.parse(Self.example, path: "lifeboat.yaml")
        #expect(c.settings.cluster == "shop" && c.settings.node == "pg1")
        #expect(c.settings.ttl == 10 && c.settings.fencingDeadline == 7 && c.settings.maximumLagOnFailover == 1 << 20)
        #expect(c.etcdEndpoints.count == 3 && !c.synchronous && !c.watchdog)
        #expect(c.api == Endpoint(host: "0.0.0.0", port: 8008))
        #expect(c.postgres.listen == Endpoint(host: "pg1.internal", port: 5432) && c.postgres.dataDir == "/var/lib/postgresql/15/main")
        #expect(c.postgres.passwordFile == "/etc/lifeboat/replicator.pw" && c.postgres.runAs == "postgres")
        // Defaults: the deadline at 70% of the TTL, replication broken for at most 3 TTLs (30 s at least).
        let minimal = try HAConfig.parse("""
        cluster: c
        etcd: {endpoints: [http://127.0.0.1:2379]}
        ttl: 3s
        node: {name: n1, api: 127.0.0.1:8008, postgres: {data_dir: /srv/pg, listen: 127.0.0.1:5432}}
        """, path: "ha.yaml")
        #expect(abs(minimal.settings.fencingDeadline - 2.1) < 1e-9 && minimal.settings.maximumReplicationBroken == 30)
    }

    /// Each mistake is named with its line and column, before anything starts.
    @Test func errorsHaveLineAndColumn() {
        func error(_ replace: String, with: String) -> String {
            let text = Self.example.replacingOccurrences(of: replace, with: with)
            #expect(text != Self.example)
            do { _ = try HAConfig.parse(text, path: "f.yaml"); return "" } catch { return "\(error)" }
        }
        #expect(error("deadline: 7s", with: "deadline: 10s").hasPrefix("f.yaml:12:"))       // not before the lease expires
        #expect(error("deadline: 7s", with: "deadline: 1s").contains("a third of"))
        #expect(error("ttl: 10s", with: "ttl: 1e300").hasPrefix("f.yaml:4:"))
        #expect(error("ttl: 10s", with: "ttl: 1s").contains("out of range"))
        #expect(error("1MB", with: "lots").hasPrefix("f.yaml:5:"))
        #expect(error("1MB", with: "99999999999TB").contains("maximum_lag_on_failover"))
        #expect(error("\"http://etcd2.internal:2379\"", with: "\"etcd2:2379\"").hasPrefix("f.yaml:3:"))
        #expect(error("name: pg1", with: "name: ../pg1").hasPrefix("f.yaml:8:"))
        #expect(error("cluster: shop", with: "cluster: \"a b\"").hasPrefix("f.yaml:2:"))
        #expect(error("synchronous: false", with: "synchronus: false").contains("synchronus"))
        #expect(error("data_dir: /var/lib/postgresql/15/main", with: "data_dir: relative").contains("absolute"))
        #expect(error("listen: pg1.internal:5432", with: "listen: pg1.internal").contains("HOST:PORT"))
        #expect(error("api: 0.0.0.0:8008", with: "api: 0.0.0.0:99999").contains("HOST:PORT"))
    }

    /// The PostgreSQL keys the driver needs: settings in a file (anything printable, never the ones the agent
    /// owns), pg_hba lines one per entry, the socket beside the data directory, the token for actions.
    @Test func postgresSettings() throws {
        let c = try HAConfig.parse("""
        ha:
          cluster: c
          etcd: {endpoints: [http://127.0.0.1:2379]}
          synchronous: true
          node:
            name: n1
            api: 127.0.0.1:8008
            postgres: {data_dir: /srv/pg, listen: 127.0.0.1:5432, parameters: {log_line_prefix: "%m [%p] 'x' ", max_connections: 50},
                       pg_hba: ["host all all 10.0.0.0/8 trust"], reclone_on_rewind_failure: false}
        agent: {token_file: /etc/lifeboat/agent.token}
        """, path: "lifeboat.yaml")
        #expect(c.postgres.parameters == ["log_line_prefix": "%m [%p] 'x' ", "max_connections": "50"])
        #expect(c.postgres.pgHba == ["host all all 10.0.0.0/8 trust"] && !c.postgres.recloneOnRewindFailure)
        #expect(c.postgres.socketDirectory == "/srv/pg.run" && c.tokenFile == "/etc/lifeboat/agent.token")
        #expect(c.synchronous && c.settings.synchronous)
        func error(_ postgres: String) -> String {
            do {
                _ = try HAConfig.parse("""
                cluster: c
                etcd: {endpoints: [http://127.0.0.1:2379]}
                node: {name: n1, api: 127.0.0.1:8008, postgres: {listen: 127.0.0.1:5432, \(postgres)}}
                """, path: "f.yaml")
                return ""
            } catch { return "\(error)" }
        }
        #expect(error("data_dir: /srv/pg, parameters: {port: 5433}").contains("set by the agent"))
        #expect(error("data_dir: /srv/pg, parameters: {primary_conninfo: x}").contains("set by the agent"))
        for directive in ["include", "include_if_exists", "include_dir", "hba_file", "config_file", "ident_file"] {
            #expect(error("data_dir: /srv/pg, parameters: {\(directive): /etc/shadow}").contains("another file"), "\(directive)")
        }
        #expect(error("data_dir: /srv/pg, parameters: {\"a;b\": x}").contains("not a PostgreSQL setting name"))
        #expect(error("data_dir: /srv/pg, parameters: {work_mem: \"1\\n2\"}").contains("one line"))
        #expect(error("data_dir: /srv/pg, pg_hba: [\"host all\\nall\"]").contains("one line per entry"))
        #expect(error("data_dir: /srv/pg, socket_dir: relative").contains("socket_dir"))
        #expect(error("data_dir: \"/srv/\(String(repeating: "d", count: 90))\"").contains("socket_dir"))
        #expect(error("data_dir: /srv/pg, superuser: \"a b\"").contains("superuser"))
        #expect(error("data_dir: /srv/pg").isEmpty)
    }

    @Test func sizes() {
        #expect(HAConfig.parseSize("1048576") == 1 << 20)
        #expect(HAConfig.parseSize("1MB") == 1 << 20 && HAConfig.parseSize("16MiB") == 16 << 20 && HAConfig.parseSize("512kB") == 512 << 10)
        #expect(HAConfig.parseSize("1GB") == 1 << 30 && HAConfig.parseSize("0") == 0)
        for bad in ["", "MB", "-1MB", "1.5MB", "1 PB", "18446744073709551616", "2000000TB", "1e3"] { #expect(HAConfig.parseSize(bad) == nil, "\(bad)") }
    }
}
