import Foundation
import LifeboatFailover
import Testing

func at(_ s: Double) -> Date { Date(timeIntervalSince1970: s) }
func ok(_ t: Double) -> BackendHealth.CheckResult { .init(ok: true, latency: 0.001, detail: "ok", at: at(t)) }
func bad(_ t: Double) -> BackendHealth.CheckResult { .init(ok: false, latency: 0.5, detail: "timeout", at: at(t)) }

@Suite struct HealthTests {
    @Test func fallAndRise() {
        var h = BackendHealth(fall: 2, rise: 3, now: at(0))
        #expect(h.state == .up)
        var changed = h.record(bad(1))
        #expect(!changed)
        changed = h.record(bad(2))
        #expect(changed && h.state == .down && h.since == at(2))
        _ = h.record(ok(3)); _ = h.record(ok(4))
        changed = h.record(bad(5))
        #expect(!changed && h.state == .down, "a failure resets the rise count")
        _ = h.record(ok(6))
        changed = h.record(ok(7))
        #expect(!changed)
        changed = h.record(ok(8))
        #expect(changed && h.state == .up && h.since == at(8))
    }

    @Test func passiveDetectionIsImmediate() {
        var h = BackendHealth(fall: 3, rise: 2, now: at(0))
        var changed = h.connectionFailed(at: at(1))
        #expect(changed && h.state == .down)
        changed = h.connectionFailed(at: at(2))
        #expect(!changed)
        changed = h.record(ok(3))
        #expect(!changed)
        changed = h.record(ok(4))
        #expect(changed && h.state == .up)
    }

    @Test func disabledAndDrainingTakeNoTraffic() {
        var h = BackendHealth(fall: 1, rise: 1, now: at(0))
        #expect(h.acceptsTraffic)
        h.disabled = true
        #expect(!h.acceptsTraffic)
        h.disabled = false; h.draining = true
        #expect(!h.acceptsTraffic)
    }
}

@Suite struct PoolTests {
    func pool(_ mode: PoolMode, _ failback: Failback = .manual, weights: [Int] = [1, 1, 1]) -> PoolState {
        PoolState(mode: mode, failback: failback, members: [
            PoolMember(name: "primary", priority: 1, weight: weights[0], health: BackendHealth(fall: 2, rise: 2, now: at(0))),
            PoolMember(name: "standby", priority: 2, weight: weights[1], health: BackendHealth(fall: 2, rise: 2, now: at(0))),
            PoolMember(name: "third", priority: 3, weight: weights[2], health: BackendHealth(fall: 2, rise: 2, now: at(0))),
        ])
    }

    @Test func failoverAndManualFailback() {
        var p = pool(.failover)
        var picked = p.pick()
        #expect(p.activeName == "primary" && picked == 0)
        p.members[0].health.connectionFailed(at: at(1))
        var sw = p.reconcile()
        #expect(sw == Switch(old: "primary", new: "standby", reason: "health"))
        picked = p.pick()
        #expect(picked == 1)
        p.members[0].health.record(ok(2)); p.members[0].health.record(ok(3))
        #expect(p.members[0].health.state == .up)
        sw = p.reconcile()
        #expect(sw == nil, "manual failback: the recovered primary stays idle")
        picked = p.pick()
        #expect(picked == 1)
        sw = p.promote("primary")
        #expect(sw == Switch(old: "standby", new: "primary", reason: "promote"))
        picked = p.pick()
        #expect(picked == 0)
    }

    @Test func autoFailback() {
        var p = pool(.failover, .auto)
        p.members[0].health.connectionFailed(at: at(1))
        _ = p.reconcile()
        p.members[0].health.record(ok(2))
        var sw = p.reconcile()
        #expect(sw == nil, "not before rise checks")
        p.members[0].health.record(ok(3))
        sw = p.reconcile()
        #expect(sw == Switch(old: "standby", new: "primary", reason: "failback"))
    }

    @Test func allDownAndConnectRetry() {
        var p = pool(.failover)
        // The active backend refused this connection: the next one by priority, before any byte moves.
        let a = p.pick(excluding: [0]), b = p.pick(excluding: [0, 1]), c = p.pick(excluding: [0, 1, 2])
        #expect(a == 1 && b == 2 && c == nil)
        for i in 0..<3 { p.members[i].health.connectionFailed(at: at(1)) }
        let sw = p.reconcile()
        #expect(sw == Switch(old: "primary", new: nil, reason: "health"))
        let none = p.pick()
        #expect(none == nil)
    }

    @Test func weightedRoundRobin() {
        var p = pool(.roundRobin, weights: [3, 1, 1])
        var counts = [0, 0, 0]
        var sequence: [Int] = []
        for _ in 0..<50 { let i = p.pick()!; counts[i] += 1; sequence.append(i) }
        #expect(counts == [30, 10, 10])
        #expect(!sequence.prefix(5).allSatisfy { $0 == 0 }, "smooth: the heavy backend is interleaved")
        p.members[1].health.connectionFailed(at: at(1))
        for _ in 0..<20 { let i = p.pick(); #expect(i != 1) }
    }

    @Test func leastConnections() {
        var p = pool(.leastConnections, weights: [2, 1, 1])
        p.members[0].connections = 3; p.members[1].connections = 1; p.members[2].connections = 2
        var i = p.pick()
        #expect(i == 1)
        p.members[1].connections = 2
        i = p.pick()
        #expect(i == 0, "3 per 2 weight beats 2 per 1")
        p.members[0].health.disabled = true
        i = p.pick()
        #expect(i == 1)
    }
}

@Suite struct ReloadTests {
    func specs(_ names: [(String, String, Int)]) -> [PoolState.MemberSpec] {
        names.map { .init(key: "\($0.0) \($0.1)", name: $0.0, priority: $0.2, weight: 1) }
    }

    @Test func keptBackendsKeepStateAndTheServingOneStays() {
        var next = 0
        let empty = PoolState(mode: .failover, failback: .manual, members: [])
        var (p, sw) = empty.reloaded(mode: .failover, failback: .manual, fall: 2, rise: 2,
                                     specs: specs([("primary", "a:1", 1), ("standby", "b:1", 2)]), nextID: &next, now: at(0))
        #expect(sw == Switch(old: nil, new: "primary", reason: "reload"), "from nothing serving to the primary")
        #expect(p.activeName == "primary" && p.members.map(\.id) == [1, 2])
        // The primary fails; the standby serves; the operator drains nothing; connections are open.
        p.members[0].health.connectionFailed(at: at(1))
        _ = p.reconcile()
        p.members[1].connections = 5
        p.members[0].health.record(ok(2)); p.members[0].health.record(ok(3))
        // Reload: a third backend, the standby gets a better priority, thresholds change.
        (p, sw) = p.reloaded(mode: .failover, failback: .manual, fall: 3, rise: 1,
                             specs: specs([("primary", "a:1", 1), ("standby", "b:1", 1), ("third", "c:1", 3)]),
                             nextID: &next, now: at(4))
        #expect(sw == nil, "re-reading the file is no reason to switch")
        #expect(p.activeName == "standby" && p.members[1].connections == 5 && p.members[1].priority == 1)
        #expect(p.members.map(\.id) == [1, 2, 3] && p.members[0].health.since == at(3))
        #expect(p.members[0].health.fall == 3 && p.members[2].health.state == .up)
    }

    @Test func removedOrMovedServingBackendSwitches() {
        var next = 0
        let empty = PoolState(mode: .failover, failback: .manual, members: [])
        var (p, _) = empty.reloaded(mode: .failover, failback: .manual, fall: 2, rise: 2,
                                    specs: specs([("primary", "a:1", 1), ("standby", "b:1", 2)]), nextID: &next, now: at(0))
        var sw: Switch?
        // Same name, new address: a different server, so a new ID and fresh state.
        (p, sw) = p.reloaded(mode: .failover, failback: .manual, fall: 2, rise: 2,
                             specs: specs([("primary", "z:9", 1), ("standby", "b:1", 2)]), nextID: &next, now: at(1))
        #expect(p.members.map(\.id) == [3, 2])
        #expect(sw == Switch(old: "primary", new: "primary", reason: "reload"))
        (p, sw) = p.reloaded(mode: .failover, failback: .manual, fall: 2, rise: 2,
                             specs: specs([("standby", "b:1", 2)]), nextID: &next, now: at(2))
        #expect(sw == Switch(old: "primary", new: "standby", reason: "reload") && p.members.map(\.id) == [2])
        (p, sw) = p.reloaded(mode: .roundRobin, failback: .manual, fall: 2, rise: 2,
                             specs: specs([("standby", "b:1", 2)]), nextID: &next, now: at(3))
        #expect(sw == nil && p.active == nil)
    }

    @Test func histogramBuckets() {
        var h = LatencyHistogram(bounds: [0.01, 0.1, 1])
        for v in [0.005, 0.01, 0.05, 0.5, 3] { h.observe(v) }
        #expect(h.count == 5 && abs(h.sum - 3.565) < 1e-9)
        #expect(h.cumulative.map(\.count) == [2, 3, 4, 5])
        #expect(h.cumulative.last!.le.isInfinite)
    }
}

@Suite struct ProxyConfigTests {
    let example = """
    admin:
      listen: 127.0.0.1:9901
      token_file: /etc/lifeboat/admin.token
    pools:
      - name: db
        listen: 127.0.0.1:6432
        mode: failover
        failback: manual
        check: {type: tcp, interval: 100ms, timeout: 500ms, fall: 2, rise: 2}
        backends:
          - {name: primary, address: 127.0.0.1:5432, priority: 1}
          - {name: standby, address: "[::1]:5433", priority: 2}
        hooks:
          on_switch: ["/usr/local/bin/promote.sh", "{new}", "{old}"]
    """

    @Test func theIssueExampleParses() throws {
        let c = try ProxyConfig.parse(example, path: "p.yaml")
        #expect(c.adminListen == Endpoint(host: "127.0.0.1", port: 9901))
        let db = c.pools[0]
        #expect(db.mode == .failover && db.failback == .manual)
        #expect(db.check.interval == 0.1 && db.check.timeout == 0.5 && db.check.fall == 2)
        #expect(db.backends[1].address == Endpoint(host: "::1", port: 5433))
        #expect(db.onSwitch == ["/usr/local/bin/promote.sh", "{new}", "{old}"])
    }

    /// A check sent elsewhere than the traffic (HAProxy's `check port`/`addr`): per pool, and per backend over it.
    @Test func checkTargetsOverride() throws {
        let c = try ProxyConfig.parse(example.replacingOccurrences(of: "check: {type: tcp,", with: "check: {type: http, path: /primary, port: 8008,")
            .replacingOccurrences(of: "{name: standby, address: \"[::1]:5433\", priority: 2}",
                                  with: "{name: standby, address: \"[::1]:5433\", priority: 2, check_port: 8009, check_address: 10.0.0.9}"),
            path: "p.yaml")
        let db = c.pools[0]
        #expect(db.backends[0].checkTarget(db.check) == Endpoint(host: "127.0.0.1", port: 8008))
        #expect(db.backends[1].checkTarget(db.check) == Endpoint(host: "10.0.0.9", port: 8009))
        // Without an override, the check goes where the traffic goes.
        let plain = try ProxyConfig.parse(example, path: "p.yaml").pools[0]
        #expect(plain.backends[1].checkTarget(plain.check) == Endpoint(host: "::1", port: 5433))
        func problem(_ text: String) -> String {
            do { _ = try ProxyConfig.parse(text, path: "p.yaml"); return "" } catch { return "\(error)" }
        }
        #expect(problem(example.replacingOccurrences(of: "check: {type: tcp,", with: "check: {type: tcp, port: 70000,")).hasPrefix("p.yaml:9:"))
        #expect(problem(example.replacingOccurrences(of: "priority: 1}", with: "priority: 1, check_address: \"a b\"}")).contains("check_address"))
    }

    @Test func errorsHaveLineAndColumn() {
        func problem(_ text: String) -> String {
            do { _ = try ProxyConfig.parse(text, path: "p.yaml"); return "" } catch { return "\(error)" }
        }
        #expect(problem(example.replacingOccurrences(of: "failback: manual", with: "fallback: manual")).hasPrefix("p.yaml:8:5: unknown key \"fallback\""))
        #expect(problem(example.replacingOccurrences(of: "127.0.0.1:5432", with: "127.0.0.1:99999")).hasPrefix("p.yaml:11:"))
        #expect(problem(example.replacingOccurrences(of: "127.0.0.1:6432", with: "127.0.0.1:9901")).contains("admin already uses"))
        #expect(problem(example.replacingOccurrences(of: "interval: 100ms", with: "interval: fast")).hasPrefix("p.yaml:9:"))
        #expect(problem(example.replacingOccurrences(of: "mode: failover", with: "mode: random")).contains("unknown value"))
        #expect(problem("pools: []").contains("non-empty"))
    }

    /// Durations that used to pass validation and trap later (at SIGTERM, or on a SIGHUP reload of a running proxy).
    @Test func durationsOutOfRangeHaveLineAndColumn() {
        func problem(_ text: String) -> String {
            do { _ = try ProxyConfig.parse(text, path: "p.yaml"); return "" } catch { return "\(error)" }
        }
        for bad in ["1e300", "inf", "nan", "1e11", "-1", "0", "1e300s", "99999999999d", "0.0001ms", "2d"] {
            let interval = problem(example.replacingOccurrences(of: "interval: 100ms", with: "interval: \"\(bad)\""))
            #expect(interval.hasPrefix("p.yaml:9:"), "interval \(bad): \(interval)")
            let timeout = problem(example.replacingOccurrences(of: "timeout: 500ms", with: "timeout: \(bad)"))
            #expect(timeout.hasPrefix("p.yaml:9:"), "timeout \(bad): \(timeout)")
            let drain = problem("drain_timeout: \(bad)\n" + example)
            #expect(drain.hasPrefix("p.yaml:1:16: "), "drain_timeout \(bad): \(drain)")
            let hook = problem(example + "\n      timeout: \(bad)")
            #expect(hook.hasPrefix("p.yaml:15:16: "), "hooks.timeout \(bad): \(hook)")
        }
        #expect(problem("drain_timeout: 1e300\n" + example).contains("out of range: give a duration from 1ms to 1d"))
        // The bounds themselves are accepted.
        #expect(problem("drain_timeout: 1d\n" + example) == "")
        #expect(problem("drain_timeout: 1ms\n" + example) == "")
        #expect(problem(example.replacingOccurrences(of: "timeout: 500ms", with: "timeout: 1h")) == "")
        #expect(problem(example.replacingOccurrences(of: "interval: 100ms", with: "interval: 1d")) == "")
    }

    @Test func loopbackIsAnAddressNotAName() {
        for ip in ["127.0.0.1", "127.1.2.3", "127.255.255.254", "::1", "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1"] {
            #expect(Endpoint.isLoopback(ip: ip), "\(ip)")
        }
        for host in ["127.evil.example", "127.0.0.1.nip.io", "127.1", "0x7f.0.0.1", "localhost", "0.0.0.0", "::", "128.0.0.1",
                     "10.0.0.1", "::2", "::ffff:10.0.0.1", "fe80::1", "", "127.0.0.1 ", " 127.0.0.1"] {
            #expect(!Endpoint.isLoopback(ip: host), "\(host)")
        }
    }
}
