import Foundation
import Testing
@testable import LifeboatDashboard

@Suite struct HTMLTests {
    @Test func escapesMarkupQuotesAndControlCharacters() {
        #expect(HTML.escape("<script>alert('x')</script>") == "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;")
        #expect(HTML.escape("a\"b&c") == "a&quot;b&amp;c")
        #expect(HTML.escape("tab\tnew\nline") == "tab\tnew\nline")
        #expect(HTML.escape("nul\u{0}esc\u{1B}") == "nul\u{FFFD}esc\u{FFFD}")
        #expect(HTML.escape("héllo ✓") == "héllo ✓")
    }

    @Test func pathSegmentsEncodeEverythingButUnreserved() {
        #expect(HTML.pathSegment("web-files_1.x~") == "web-files_1.x~")
        #expect(HTML.pathSegment("a/b c&\"<") == "a%2Fb%20c%26%22%3C")
        #expect(HTML.pathSegment("é") == "%C3%A9")
    }

    @Test func durationsAndSizes() {
        #expect(HTML.duration(0.5) == "0.50s")
        #expect(HTML.duration(45) == "45s")
        #expect(HTML.duration(600) == "10m")
        #expect(HTML.duration(3 * 3600 + 300) == "3h 5m")
        #expect(HTML.duration(2 * 86400 + 4 * 3600) == "2d 4h")
        #expect(HTML.duration(.infinity) == "?")
        #expect(HTML.duration(-5) == "0.00s")
        #expect(HTML.duration(1e300) != "")
        #expect(HTML.bytes(512) == "512 B")
        #expect(HTML.bytes(3 * 1024 * 1024 + 400_000) == "3.4 MiB")
        #expect(HTML.bytes(UInt64.max).hasSuffix("PiB"))
    }
}

@Suite struct FormTests {
    @Test func decodesURLEncodedFields() throws {
        let f = try FormBody(Array("user=al%C3%AFce&password=a+b%26c&csrf=&user=second".utf8))
        #expect(f["user"] == "alïce")
        #expect(f["password"] == "a b&c")
        #expect(f["csrf"] == "")
        #expect(f["missing"] == nil)
    }

    @Test func refusesBadAndOversizedBodies() {
        #expect(throws: FormBody.Problem.notText) { try FormBody(Array("a=%zz".utf8)) }
        #expect(throws: FormBody.Problem.notText) { try FormBody(Array("a=%4".utf8)) }
        #expect(throws: FormBody.Problem.notText) { try FormBody(Array("a=%".utf8)) }
        #expect(throws: FormBody.Problem.notText) { try FormBody(Array("a=%FF".utf8)) }
        #expect(throws: FormBody.Problem.tooLarge) { try FormBody([UInt8](repeating: 0x61, count: FormBody.maxBytes + 1)) }
        #expect(throws: FormBody.Problem.tooManyFields) { try FormBody(Array((0...FormBody.maxFields).map { "f\($0)=1" }.joined(separator: "&").utf8)) }
        #expect((try? FormBody([]))?.fields.isEmpty == true)
    }
}

@Suite struct SessionTests {
    @Test func sessionsExpireWhenIdleOrOld() throws {
        var t = SessionTable(idle: 100, lifetime: 1000, capacity: 10)
        let s = t.open(user: "alice", role: .readOnly, now: 0)
        #expect(s.id.count == 64 && s.csrf.count == 64 && s.id != s.csrf)
        #expect(t.lookup(s.id, now: 50)?.user == "alice")
        #expect(t.lookup(s.id, now: 149)?.role == .readOnly)  // seen at 50: idle counts from there
        #expect(t.lookup(s.id, now: 250) == nil)  // idle 101 s
        #expect(t.lookup(s.id, now: 260) == nil)  // and gone
        var u = SessionTable(idle: 100, lifetime: 150, capacity: 10)
        let o = u.open(user: "bob", role: .operator, now: 0)
        #expect(u.lookup(o.id, now: 90) != nil)
        #expect(u.lookup(o.id, now: 151) == nil)  // lifetime over, though seen 61 s ago
    }

    @Test func unknownForgedAndClockSkewedCookiesOpenNothing() {
        var t = SessionTable()
        let s = t.open(user: "alice", role: .operator, now: 1000)
        #expect(t.lookup(String(repeating: "0", count: 64), now: 1000) == nil)
        #expect(t.lookup(s.id + "0", now: 1000) == nil)
        #expect(t.lookup("", now: 1000) == nil)
        #expect(t.lookup(s.id, now: 10) == nil)  // the clock went back before the session began
        t.close(user: "alice")
        #expect(t.count == 0)
    }

    @Test func theTableIsBounded() {
        var t = SessionTable(capacity: 3)
        let first = t.open(user: "a", role: .readOnly, now: 0)
        let second = t.open(user: "b", role: .readOnly, now: 1)
        _ = t.lookup(first.id, now: 2)  // first is now the more recently seen
        _ = t.open(user: "c", role: .readOnly, now: 3)
        _ = t.open(user: "d", role: .readOnly, now: 4)
        #expect(t.count == 3)
        #expect(t.lookup(second.id, now: 5) == nil)
        #expect(t.lookup(first.id, now: 5) != nil)
    }

    @Test func cookiesAreFoundAndSetSafely() {
        #expect(SessionTable.cookie(in: "a=1; lifeboat_session=abc; b=2") == "abc")
        #expect(SessionTable.cookie(in: "lifeboat_sessionx=abc") == nil)
        #expect(SessionTable.cookie(in: nil) == nil)
        #expect(SessionTable.cookie(in: String(repeating: "x", count: 9000)) == nil)
        var t = SessionTable()
        let s = t.open(user: "a", role: .operator, now: 0)
        let c = SessionTable.setCookie(s, secure: true, lifetime: 3600)
        #expect(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure") && c.hasPrefix("lifeboat_session=\(s.id);"))
        #expect(!SessionTable.setCookie(s, secure: false, lifetime: 3600).contains("Secure"))
        #expect(SessionTable.clearCookie(secure: false).contains("Max-Age=0"))
    }
}

@Suite struct OverviewTests {
    static func model(rpo: Double, failedDrill: Bool = false, name: String = "web") -> OverviewModel {
        let t = Date(timeIntervalSince1970: 1_800_000_000)
        return OverviewModel(
            plan: "/etc/lifeboat/lifeboat.yaml", time: t,
            services: [.init(name: name, kind: "files", paused: false, running: false, rpoObjective: 3600, rtoObjective: 600, measuredRTO: 120,
                             sites: [.init(site: "local", rpoSeconds: rpo, newest: t, lastError: nil),
                                     .init(site: "<b>s3</b>", rpoSeconds: 60, newest: t, lastError: "timed out <img src=x>")],
                             lastBackup: .init(started: t, result: "success", duration: 12, bytes: 1 << 20, error: nil),
                             lastDrill: .init(name: "weekly", site: "local", passed: !failedDrill, declared: t, rtoSeconds: 120, rpoSeconds: 30))],
            sites: [.init(name: "local", role: "primary", reachable: true, lagSeconds: nil, bytesPending: nil, lastError: nil),
                    .init(name: "offsite", role: "replica", reachable: false, lagSeconds: 7200, bytesPending: 5 << 20, lastError: "connection refused")],
            pools: [.init(name: "db", active: "pg1", backends: [.init(name: "pg1", state: "up", disabled: false), .init(name: "pg2", state: "down", disabled: true)])],
            problems: [])
    }

    @Test func objectiveStates() {
        #expect(ObjectiveState.of(100, objective: 3600) == .ok)
        #expect(ObjectiveState.of(2880, objective: 3600) == .near)
        #expect(ObjectiveState.of(3601, objective: 3600) == .breached)
        #expect(ObjectiveState.of(nil, objective: 3600) == .unknown)
        #expect(ObjectiveState.of(10, objective: nil) == .unknown)
        #expect(ObjectiveState.of(.nan, objective: 3600) == .unknown)
        #expect(ObjectiveState.of(10, objective: 0) == .unknown)
    }

    @Test func aBreachTurnsTheRowRed() {
        let ok = DashboardPages.overview(Self.model(rpo: 100), viewer: Viewer(user: "a", role: .readOnly, csrf: "c"))
        #expect(ok.contains("<tr class=\"ok\" data-service=\"web\">"))
        #expect(ok.contains("id=\"verdict\">Every objective met"))
        let near = DashboardPages.overview(Self.model(rpo: 3000), viewer: Viewer(user: "a", role: .readOnly, csrf: "c"))
        #expect(near.contains("<tr class=\"near\" data-service=\"web\">"))
        let red = DashboardPages.overview(Self.model(rpo: 4000), viewer: Viewer(user: "a", role: .readOnly, csrf: "c"))
        #expect(red.contains("<tr class=\"breached\" data-service=\"web\">"))
        #expect(red.contains("1 of 1 service outside its objectives"))
        let drill = DashboardPages.overview(Self.model(rpo: 100, failedDrill: true), viewer: Viewer(user: "a", role: .readOnly, csrf: "c"))
        #expect(drill.contains("<tr class=\"breached\" data-service=\"web\">"))
    }

    @Test func namesFromOutsideAreText() {
        let page = DashboardPages.overview(Self.model(rpo: 100, name: "<script>alert(1)</script>"), viewer: Viewer(user: "<i>u</i>", role: .operator, csrf: "\"c"))
        #expect(!page.contains("<script>"))
        #expect(!page.contains("<b>s3</b>"))
        #expect(!page.contains("<img"))
        #expect(!page.contains("<i>u</i>"))
        #expect(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"))
        #expect(page.contains("target=%3Cscript%3Ealert%281%29%3C%2Fscript%3E"))
        #expect(page.contains("value=\"&quot;c\""))
    }

    @Test func onlyOperatorsSeeActions() {
        let ro = DashboardPages.overview(Self.model(rpo: 100), viewer: Viewer(user: "a", role: .readOnly, csrf: "c"))
        #expect(!ro.contains("/ui/confirm"))
        let op = DashboardPages.overview(Self.model(rpo: 100), viewer: Viewer(user: "a", role: .operator, csrf: "c"))
        #expect(op.contains("/ui/confirm?action=backup&amp;target=web"))
        #expect(op.contains("/ui/confirm?action=enable&amp;target=db/pg2"))
        #expect(op.contains("name=\"csrf\" value=\"c\""))
        let bearer = DashboardPages.overview(Self.model(rpo: 100), viewer: Viewer(user: "token", role: .operator, csrf: nil))
        #expect(!bearer.contains("/logout"))
    }

    @Test func problemsAreSaidAndThePageStillRenders() {
        var m = Self.model(rpo: 100)
        m.problems = ["the state database is busy"]
        let page = DashboardPages.overview(m, viewer: Viewer(user: "a", role: .readOnly, csrf: "c"))
        #expect(page.contains("Could not read everything"))
        #expect(page.contains("the state database is busy"))
        #expect(page.contains("id=\"services\""))
    }

    @Test func aHundredServicesStayUnder200kB() {
        var m = Self.model(rpo: 100)
        let s = m.services[0]
        m.services = (0..<100).map { i in var x = s; x.name = "service-\(i)"; x.sites += [.init(site: "third", rpoSeconds: 10, newest: nil, lastError: nil)]; return x }
        let page = DashboardPages.overview(m, viewer: Viewer(user: "a", role: .operator, csrf: String(repeating: "c", count: 64)))
        #expect(page.utf8.count < 200_000)
    }
}

@Suite struct SitesAndFailoverTests {
    let viewer = Viewer(user: "a", role: .operator, csrf: "c")
    let readOnly = Viewer(user: "r", role: .readOnly, csrf: "c")

    @Test func sitesShowReachabilityProtectionAndEscapedErrors() {
        let m = SitesModel(time: Date(timeIntervalSince1970: 1_800_000_000), sites: [
            .init(name: "home", role: "primary", kind: "local", reachable: true, lagSeconds: nil, bytesPending: nil, snapshotsMissing: 0,
                  scrubCoverage: 0.42, lastError: nil, protection: nil),
            .init(name: "vault", role: "replica", kind: "s3", reachable: false, lagSeconds: 7200, bytesPending: 1 << 30, snapshotsMissing: 3,
                  scrubCoverage: 7, lastError: "<script>x</script>", protection: "S3 Object Lock, compliance mode, 30 days"),
        ], problems: [])
        let page = DashboardPages.sites(m, viewer: viewer)
        #expect(page.contains("<tr class=\"ok\" data-site=\"home\">"))
        #expect(page.contains("<tr class=\"breached\" data-site=\"vault\">"))
        #expect(page.contains("S3 Object Lock, compliance mode, 30 days"))
        #expect(page.contains("42%") && page.contains("100%"))  // a coverage out of range is clamped
        #expect(page.contains("&lt;script&gt;x&lt;/script&gt;") && !page.contains("<script>"))
        #expect(page.contains("1.0 GiB"))
    }

    @Test func failoverShowsPoolsBackendsAndOperatorActions() {
        let t = Date(timeIntervalSince1970: 1_800_000_000)
        let m = FailoverModel(time: t, pools: [.init(
            name: "db", listen: "127.0.0.1:5432", mode: "failover", active: "pg1", switches: 2, lastSwitch: t, connectionsTotal: 10, refusedTotal: 1,
            backends: [
                .init(name: "pg1", address: "10.0.0.1:5432", state: "up", since: t, disabled: false, draining: false, priority: 1, connections: 3,
                      lastCheckOK: true, lastCheckLatency: 0.0021, lastCheckDetail: "HTTP 200", checkFailures: 0, fault: nil),
                .init(name: "pg2", address: "10.0.0.2:5432", state: "down", since: t, disabled: true, draining: false, priority: 2, connections: 0,
                      lastCheckOK: false, lastCheckLatency: nil, lastCheckDetail: "<b>refused</b>", checkFailures: 7, fault: "blackhole"),
            ])])
        let page = DashboardPages.failover(m, viewer: viewer)
        #expect(page.contains("<tr class=\"ok\" data-backend=\"pg1\">") && page.contains("serving"))
        #expect(page.contains("<tr class=\"unknown\" data-backend=\"pg2\">"))
        #expect(page.contains("in 2.1 ms"))
        #expect(page.contains("disabled, fault: blackhole"))
        #expect(page.contains("&lt;b&gt;refused&lt;/b&gt;"))
        #expect(page.contains("action=enable&amp;target=db/pg2") && page.contains("action=promote&amp;target=db/pg2"))
        #expect(!page.contains("action=promote&amp;target=db/pg1"))  // the serving backend is not offered
        #expect(!DashboardPages.failover(m, viewer: readOnly).contains("/ui/confirm"))
        #expect(DashboardPages.failover(FailoverModel(time: t, pools: []), viewer: viewer).contains("runs no proxy pool"))
    }
}

@Suite struct ServicePageTests {
    @Test func theRPOStepsFallAtEachSuccess() {
        let from = Date(timeIntervalSince1970: 0), to = Date(timeIntervalSince1970: 100)
        let p = Chart.rpoSteps(successes: [Date(timeIntervalSince1970: -10), Date(timeIntervalSince1970: 40), Date(timeIntervalSince1970: 70)], from: from, to: to)
        #expect(p.map(\.1) == [10, 50, 0, 30, 0, 30])
        #expect(p.first!.0 == from && p.last!.0 == to)
        // The first backup in the window starts the line; none at all draws none (a success after the end does
        // not count).
        #expect(Chart.rpoSteps(successes: [Date(timeIntervalSince1970: 30)], from: from, to: to).map(\.1) == [0, 70])
        #expect(Chart.rpoSteps(successes: [], from: from, to: to).isEmpty)
        #expect(Chart.rpoSteps(successes: [Date(timeIntervalSince1970: 200)], from: from, to: to).isEmpty)
    }

    @Test func chartsAreBoundedAndEscaped() {
        let from = Date(timeIntervalSince1970: 0), to = Date(timeIntervalSince1970: 100)
        let svg = Chart.svg(id: "x\"y", title: "<t>", from: from, to: to,
                            bars: [(Date(timeIntervalSince1970: 50), .infinity, true), (Date(timeIntervalSince1970: 60), -5, false), (Date(timeIntervalSince1970: 500), 1, true)],
                            limit: 10, label: { "\(Int($0))" })
        #expect(svg.hasPrefix("<svg id=\"x&quot;y\"") && svg.contains("&lt;t&gt;") && svg.hasSuffix("</svg>"))
        #expect(svg.components(separatedBy: "<rect").count == 3)  // the bar after the window is left out
        #expect(!svg.contains("nan") && !svg.contains("inf"))
        #expect(svg.contains("class=\"limit\""))
    }

    @Test func theServicePageShowsTimelinesDrillsAndFailures() {
        let m0 = OverviewTests.model(rpo: 100)
        let now = m0.time
        var backups: [ServiceModel.Backup] = []
        for i in 0..<200 {
            let ok = i % 50 != 7
            let started = now.addingTimeInterval(-Double(i) * 3600)
            backups.append(ServiceModel.Backup(started: started, duration: 12, bytes: 1 << 20, ok: ok, result: ok ? "success" : "failure",
                                               error: ok ? nil : "disk <full>"))
        }
        let m = ServiceModel(service: m0.services[0], time: now, backups: backups + [.init(started: now.addingTimeInterval(-40 * 86400), duration: 1, bytes: 1, ok: true, result: "success", error: nil)],
                             drills: [m0.services[0].lastDrill!], problems: [])
        let page = DashboardPages.service(m, viewer: Viewer(user: "a", role: .operator, csrf: "c"))
        #expect(page.contains("200 backups, 4 failed"))
        #expect(page.contains("id=\"durations\"") && page.contains("id=\"sizes\"") && page.contains("id=\"rpo\""))
        #expect(page.contains("disk &lt;full&gt;"))
        #expect(page.contains("weekly"))
        #expect(page.contains("action=backup&amp;target=web"))
        #expect(page.utf8.count < 200_000)
    }
}

@Suite struct LiveAndHoldingsTests {
    let op = Viewer(user: "a", role: .operator, csrf: "c")

    @Test func theDigestChangesWithEventsNotWithTheClock() {
        let a = OverviewTests.model(rpo: 100)
        #expect(a.liveDigest.count == 16)
        #expect(OverviewTests.model(rpo: 200).liveDigest == a.liveDigest)  // seconds ticking, still green
        #expect(OverviewTests.model(rpo: 3000).liveDigest != a.liveDigest)  // amber
        #expect(OverviewTests.model(rpo: 4000).liveDigest != OverviewTests.model(rpo: 3000).liveDigest)  // red
        #expect(OverviewTests.model(rpo: 100, failedDrill: true).liveDigest != a.liveDigest)
        var b = a
        b.services[0].running = true
        #expect(b.liveDigest != a.liveDigest)
        b = a
        b.services[0].lastBackup!.started = a.time.addingTimeInterval(60)
        #expect(b.liveDigest != a.liveDigest)
        b = a
        b.pools[0].active = "pg2"
        #expect(b.liveDigest != a.liveDigest)
        b = a
        b.sites[1].reachable = true
        #expect(b.liveDigest != a.liveDigest)
        // What could not be read counts by its words, not only by how many problems there are.
        b = a; b.problems = ["site s3 does not answer"]
        var c = a; c.problems = ["the state database is busy"]
        #expect(b.liveDigest != c.liveDigest)
    }

    @Test func livePagesLoadTheScriptAndCarryTheirDigest() {
        let m = OverviewTests.model(rpo: 100)
        let page = DashboardPages.overview(m, viewer: op, live: m.liveDigest)
        #expect(page.contains("<script src=\"/ui/live.js\" defer></script>"))
        #expect(page.contains("<main data-live=\"\(m.liveDigest)\">"))
        let plain = DashboardPages.overview(m, viewer: op)
        #expect(!plain.contains("<script") && plain.contains("<main>"))
        // Pages that are not watched (login, confirmations, messages) load no script.
        #expect(!DashboardPages.login(error: nil, tokenAccepted: true, usersAccepted: false).contains("<script"))
        #expect(!DashboardPages.confirm(what: "x", action: "backup", target: "web", viewer: op).contains("<script"))
        #expect(DashboardPages.liveScript.contains("new EventSource('/ui/events')") && DashboardPages.liveScript.contains("X-Lifeboat-Live"))
    }

    @Test func theLiveRefreshDoesNotKeepASessionAlive() {
        var t = SessionTable(idle: 100, lifetime: 1000)
        let s = t.open(user: "a", role: .readOnly, now: 0)
        #expect(t.lookup(s.id, now: 90, touch: false) != nil)
        #expect(t.lookup(s.id, now: 150, touch: false) == nil)  // not seen by the user since 0
        let u = t.open(user: "b", role: .readOnly, now: 0)
        #expect(t.lookup(u.id, now: 90) != nil)
        #expect(t.lookup(u.id, now: 150, touch: false) != nil)  // seen at 90
    }

    func service(pointInTime: Bool) -> ServiceModel {
        let m0 = OverviewTests.model(rpo: 100)
        let t = m0.time
        var m = ServiceModel(service: m0.services[0], time: t, backups: [], drills: [
            .init(name: "weekly", site: "local", passed: false, declared: t, rtoSeconds: 30, rpoSeconds: 5, report: "2026-12-01T00-00-00Z-weekly-local")], problems: [])
        m.pointInTime = pointInTime
        m.holdings = [
            .init(site: "local", listed: t, count: 25,
                  copies: (0..<20).map { .init(id: String(format: "%08x", $0), time: t.addingTimeInterval(-Double($0) * 3600), kind: pointInTime ? "pg-base" : "files", bytes: 3 << 30, added: 5 << 20) },
                  walRecords: pointInTime ? 120 : nil, windows: pointInTime ? [(t.addingTimeInterval(-86400), t)] : [],
                  problems: ["timeline 1: 1 WAL segment(s) missing <x>"]),
            .init(site: "<b>s3</b>", listed: nil, count: 0, copies: [], walRecords: nil, windows: [], problems: []),
        ]
        m.events = [.init(time: t, kind: "rpo_breach", site: "local", message: "RPO of <web> breached", resolved: false),
                    .init(time: t.addingTimeInterval(-60), kind: "switch", site: nil, message: "pool db: pg1 -> pg2", resolved: true)]
        m.drillNames = ["weekly", "<evil>"]
        return m
    }

    @Test func theServicePageListsCopiesRangesEventsAndDrillReports() {
        let page = DashboardPages.service(service(pointInTime: false), viewer: op)
        #expect(page.contains("Copies at each site"))
        #expect(page.contains("25 snapshots") && page.contains("and 5 older") && page.contains("3.0 GiB") && page.contains("5.0 MiB"))
        #expect(page.contains("&lt;b&gt;s3&lt;/b&gt; <span class=\"muted\">not listed since the agent started"))
        #expect(!page.contains("Restorable to any time"))
        #expect(page.contains("missing &lt;x&gt;"))
        #expect(page.contains("<b>rpo_breach</b> at local: <span class=\"error\">RPO of &lt;web&gt; breached</span>"))
        #expect(page.contains("<b>switch (resolved)</b>"))
        #expect(page.contains("href=\"/ui/drills/2026-12-01T00-00-00Z-weekly-local\">report</a>"))
        #expect(page.contains("action=drill&amp;target=weekly\">Run the drill weekly now</a>"))
        #expect(page.contains("action=drill&amp;target=%3Cevil%3E\">Run the drill &lt;evil&gt; now</a>"))
        #expect(!DashboardPages.service(service(pointInTime: false), viewer: Viewer(user: "r", role: .readOnly, csrf: "c")).contains("action=drill"))
        let pitr = DashboardPages.service(service(pointInTime: true), viewer: op)
        #expect(pitr.contains("25 base backups, 120 WAL records"))
        #expect(pitr.contains("Restorable to any time from <b>"))
        #expect(pitr.contains("No restorable range at this site yet") == false)  // the unlisted site says it was not listed
    }

    @Test func theFailoverPageShowsTheHACluster() {
        let t = Date(timeIntervalSince1970: 1_800_000_000)
        let c = FailoverModel.Cluster(name: "shop", storeReachable: true, leader: "pg1", maintenance: true, switchover: nil, members: [
            .init(name: "pg1", role: "primary", leader: true, timeline: 3, position: "0/3000060", lagBytes: 0, candidate: false, synchronous: false),
            .init(name: "pg2", role: "standby", leader: false, timeline: 3, position: "0/3000000", lagBytes: 96, candidate: true, synchronous: true),
            .init(name: "<pg3>", role: "stopped", leader: false, timeline: 2, position: nil, lagBytes: nil, candidate: false, synchronous: false),
        ], problems: ["pg3: <down>"])
        let page = DashboardPages.failover(FailoverModel(time: t, pools: [], cluster: c), viewer: op)
        #expect(page.contains("HA cluster shop") && page.contains("Leader: <b>pg1</b>") && page.contains("maintenance"))
        #expect(page.contains("<tr class=\"ok\" data-member=\"pg2\">") && page.contains("<span class=\"tag\">sync</span>") && page.contains("96 B"))
        #expect(page.contains("<tr class=\"breached\" data-member=\"&lt;pg3&gt;\">") && page.contains("pg3: &lt;down&gt;"))
        let down = DashboardPages.failover(FailoverModel(time: t, pools: [], clusterError: "the node's API at 127.0.0.1:8008 <refused>"), viewer: op)
        #expect(down.contains("id=\"cluster-error\"") && down.contains("&lt;refused&gt;"))
        #expect(!DashboardPages.failover(FailoverModel(time: t, pools: []), viewer: op).contains("HA cluster"))
    }
}
