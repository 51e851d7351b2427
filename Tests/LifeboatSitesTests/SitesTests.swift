import Foundation
import LifeboatSites
import Testing

@Suite struct SitesConfigTests {
    let good = """
    sites:
      - {name: home, repository: /srv/repo, password_file: /etc/pw, role: primary}
      - name: offsite
        repository: s3:https://s3.example.com/b/p
        credentials_file: /etc/offsite.env
        role: replica
    replication:
      interval: 30s
      max_backoff: 10m
      state_file: /tmp/state.json
    """

    @Test func parsesSitesAndReplicationSettings() throws {
        let c = try SitesConfig.parse(good, path: "sites.yaml")
        #expect(c.primary.name == "home")
        #expect(c.replicas.map(\.name) == ["offsite"])
        #expect(c.replicas[0].credentialsFile == "/etc/offsite.env")
        #expect(c.interval == 30 && c.maxBackoff == 600 && c.stateFile == "/tmp/state.json")
    }

    @Test func errorsNameLineAndColumn() {
        func problem(_ text: String) -> String {
            do { _ = try SitesConfig.parse(text, path: "s.yaml"); return "" } catch { return "\(error)" }
        }
        #expect(problem(good.replacingOccurrences(of: "credentials_file", with: "credential_file")).hasPrefix("s.yaml:5:"))
        #expect(problem(good.replacingOccurrences(of: "role: replica", with: "role: primary")).contains("exactly one site must be primary"))
        #expect(problem(good.replacingOccurrences(of: "name: offsite", with: "name: home")).contains("duplicate site name"))
        #expect(problem(good.replacingOccurrences(of: "interval: 30s", with: "interval: soon")).hasPrefix("s.yaml:8:13:"))
        #expect(problem("sites: [").contains("not valid YAML"))
    }

    @Test func lagAndBackoff() {
        let now = Date(timeIntervalSince1970: 10_000)
        let (lag, oldest) = replicationLag(missing: [Date(timeIntervalSince1970: 9_000), Date(timeIntervalSince1970: 6_400)], now: now)
        #expect(lag == 1_000 && oldest == 3_600)
        #expect(replicationLag(missing: [], now: now).lag == 0)
        var s = SiteState()
        s.lastAttempt = "2026-01-01T00:00:00Z"
        #expect(s.nextAttempt(interval: 60, maxBackoff: 900) == .distantPast)
        s.consecutiveFailures = 3
        #expect(s.nextAttempt(interval: 60, maxBackoff: 900).timeIntervalSince1970 == 1_767_225_600 + 240)
        s.consecutiveFailures = 10
        #expect(s.nextAttempt(interval: 60, maxBackoff: 900).timeIntervalSince1970 == 1_767_225_600 + 900)
    }

    @Test func stateFileRoundTrip() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("lb-state-\(UUID().uuidString)/s.json").path
        var st = ReplicationState()
        st.sites["a"] = SiteState()
        st.sites["a"]!.lastError = "boom"
        try st.save(path)
        #expect(ReplicationState.load(path).sites["a"]?.lastError == "boom")
        #expect(ReplicationState.load("/nonexistent/x.json").sites.isEmpty)
    }

    @Test func environmentFile() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("lb-env-\(UUID().uuidString)").path
        try "# creds\nexport AWS_ACCESS_KEY_ID=abc\nAWS_SECRET_ACCESS_KEY='s e c'\n\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try readEnvironmentFile(path) == ["AWS_ACCESS_KEY_ID": "abc", "AWS_SECRET_ACCESS_KEY": "s e c"])
    }
}
