import Foundation
import Testing
@testable import LifeboatHA

/// The HA decisions, step by step, with an injected clock (seconds) and hand-made reads of the store.
@Suite struct HANodeTests {
    static let system = "7300000000000000001"

    func settings(_ name: String) -> HASettings {
        var s = HASettings(cluster: "shop", node: name)
        s.ttl = 3
        s.fencingDeadline = 2
        s.maximumLagOnFailover = 1 << 20
        s.maximumReplicationBroken = 5
        return s
    }

    func primary(_ pos: UInt64 = 0x300_0000, tl: UInt32 = 1) -> LocalPostgres {
        LocalPostgres(state: .running(standby: false), systemIdentifier: Self.system, timeline: tl, position: pos)
    }

    func standby(_ pos: UInt64, of leader: String? = "pg1", streaming: Bool = true, tl: UInt32 = 1) -> LocalPostgres {
        LocalPostgres(state: .running(standby: true), systemIdentifier: Self.system, timeline: tl, position: pos,
                      streaming: streaming, following: leader)
    }

    func view(leader: String? = nil, lease: Int64 = 1, revision: Int64 = 10, position: UInt64? = 0x300_0000,
              members: [MemberStatus] = [], switchover: ClusterView.Switchover? = nil, maintenance: Bool = false) -> ClusterView {
        ClusterView(leader: leader.map { .init(holder: $0, lease: lease, revision: revision) }, leaderPosition: position, leaderTimeline: 1,
                    members: Dictionary(uniqueKeysWithValues: members.map { ($0.name, $0) }), initialized: Self.system,
                    switchover: switchover, maintenance: maintenance)
    }

    /// A node with a session started at `t` (lease `lease`).
    func node(_ name: String, lease: Int64 = 1, at t: Double = 0) -> HANode {
        var n = HANode(settings: settings(name))
        n.sessionStarted(lease: lease, sentAt: t)
        return n
    }

    func fences(_ d: HADecision) -> Bool { d.actions.contains { if case .fence = $0 { return true } else if case .stop = $0 { return true } else { return false } } }
    func acquires(_ d: HADecision) -> Bool { d.actions.contains { if case .acquireLeader = $0 { return true } else { return false } } }

    @Test func theLeaderRenewsPublishesAndStaysWhileRenewalsSucceed() {
        var n = node("pg1")
        var t = 0.0
        for _ in 0..<20 {
            let d = n.step(now: t, cluster: view(leader: "pg1"), local: primary())
            #expect(d.role == .primary && !fences(d))
            #expect(d.actions.contains(.renewLease))
            #expect(d.actions.contains(.publishLeader(position: 0x300_0000, timeline: 1)))
            n.renewed(sentAt: t)
            t += 1
        }
    }

    /// Renewals stop succeeding (a partition from etcd, or the store answers but the keepalive fails): the
    /// primary fences at the deadline after the last renewal it sent, before the TTL after it.
    @Test func aPrimaryFencesAtItsDeadlineWhenRenewalsStop() {
        var n = node("pg1")
        n.renewed(sentAt: 10)
        #expect(!fences(n.step(now: 11.9, cluster: nil, local: primary())))
        #expect(n.nextStep(after: 11.9) <= 12)  // the driver wakes at the deadline, not a loop later
        let d = n.step(now: 12, cluster: nil, local: primary())
        #expect(fences(d) && d.role == .fenced)
        #expect(n.settings.fencingDeadline < n.settings.ttl)
        // With the store answering but the lease not renewed, the same.
        var m = node("pg1")
        m.renewed(sentAt: 10)
        #expect(fences(m.step(now: 12.5, cluster: view(leader: "pg1"), local: primary())))
    }

    /// The deadline runs from when a renewal was sent, on the monotonic clock the driver passes: a late answer to
    /// an old request, or a wall-clock jump, never extends it.
    @Test func anOldRenewalNeverExtendsTheDeadline() {
        var n = node("pg1")
        n.renewed(sentAt: 10)
        n.renewed(sentAt: 5)  // an answer that arrived late
        #expect(n.writableUntil == 12)
        #expect(n.mayWrite(at: 11.99) && !n.mayWrite(at: 12))
    }

    /// The whole node frozen (SIGSTOP) past the TTL: its first step after it resumes fences, even though the read
    /// it holds (taken before the freeze) still names it leader.
    @Test func aFrozenPrimaryFencesOnItsFirstStepAfterResuming() {
        var n = node("pg1")
        n.renewed(sentAt: 100)
        let stale = view(leader: "pg1")
        let d = n.step(now: 100 + 30, cluster: stale, local: primary())
        #expect(fences(d))
        #expect(!acquires(d))
    }

    @Test func etcdUnreachableMeansNoPromotion() {
        var s = node("pg2")
        for t in stride(from: 0.0, to: 60, by: 1) {
            let d = s.step(now: t, cluster: nil, local: standby(0x300_0000))
            #expect(!acquires(d) && !d.actions.contains(.promote))
        }
    }

    @Test func aCaughtUpStandbyTakesAFreeLease() {
        var s = node("pg2")
        _ = s.step(now: 0, cluster: view(leader: "pg1"), local: standby(0x300_0000))
        s.renewed(sentAt: 3.9)
        let d = s.step(now: 4, cluster: view(leader: nil, position: 0x300_1000), local: standby(0x300_0000, streaming: false))
        #expect(d.actions.contains(.acquireLeader(ifRevision: nil)))
        // Holding it, it promotes; promoted, it leads.
        let p = s.step(now: 4.1, cluster: view(leader: "pg2", lease: 1), local: standby(0x300_0000, streaming: false))
        #expect(p.actions.contains(.promote) && p.role == .promoting)
        s.renewed(sentAt: 4.1)
        let l = s.step(now: 5, cluster: view(leader: "pg2", lease: 1), local: primary(0x300_2000, tl: 2))
        #expect(l.role == .primary && l.actions.contains(.publishLeader(position: 0x300_2000, timeline: 2)))
    }

    @Test func aStandbyBehindTheLimitNeverTakesTheLease() {
        var s = node("pg3")
        _ = s.step(now: 0, cluster: view(leader: "pg1"), local: standby(0x100_0000))
        let d = s.step(now: 4, cluster: view(leader: nil, position: 0x300_0000), local: standby(0x100_0000))
        #expect(!acquires(d))
        #expect(d.reason.contains("bytes behind"))
        // Its report says it is no candidate, so that nobody waits for it.
        let report = d.actions.compactMap { if case .publishMember(let m) = $0 { return m } else { return nil } }.first
        #expect(report?.candidate == false)
    }

    /// Replication broken long before the primary vanished (replay position looks fine, but the primary wrote on
    /// without it): not a candidate.
    @Test func aStandbyWhoseReplicationBrokeLongBeforeIsNoCandidate() {
        var s = node("pg3")
        _ = s.step(now: 0, cluster: view(leader: "pg1"), local: standby(0x300_0000, streaming: true))
        // Streaming stopped at 0; the leader was still seen until 20.
        for t in stride(from: 1.0, through: 20, by: 1) {
            _ = s.step(now: t, cluster: view(leader: "pg1"), local: standby(0x300_0000, streaming: false))
        }
        let d = s.step(now: 24, cluster: view(leader: nil, position: 0x300_0000), local: standby(0x300_0000, streaming: false))
        #expect(!acquires(d))
        #expect(d.reason.contains("replication"))
    }

    /// Two candidates: the one behind defers to the one ahead; at equal positions, the lower name goes first; a
    /// candidate that is gone (its member key expired) is not waited for.
    @Test func twoCandidatesDoNotBothTry() {
        let ahead = MemberStatus(name: "pg3", role: .standby, timeline: 1, position: 0x300_0800, candidate: true)
        var s = node("pg2")
        _ = s.step(now: 0, cluster: view(leader: "pg1"), local: standby(0x300_0000))
        let d = s.step(now: 4, cluster: view(leader: nil, members: [ahead]), local: standby(0x300_0000))
        #expect(!acquires(d) && d.reason.contains("pg3"))
        // The one ahead does not defer to the one behind.
        var t = node("pg3")
        _ = t.step(now: 0, cluster: view(leader: "pg1"), local: standby(0x300_0800))
        let behind = MemberStatus(name: "pg2", role: .standby, timeline: 1, position: 0x300_0000, candidate: true)
        #expect(acquires(t.step(now: 4, cluster: view(leader: nil, members: [behind]), local: standby(0x300_0800))))
        // Equal positions: pg2 < pg3.
        let equal = MemberStatus(name: "pg3", role: .standby, timeline: 1, position: 0x300_0000, candidate: true)
        #expect(acquires(s.step(now: 5, cluster: view(leader: nil, members: [equal]), local: standby(0x300_0000))))
        var u = node("pg3")
        _ = u.step(now: 0, cluster: view(leader: "pg1"), local: standby(0x300_0000))
        let equal2 = MemberStatus(name: "pg2", role: .standby, timeline: 1, position: 0x300_0000, candidate: true)
        #expect(!acquires(u.step(now: 4, cluster: view(leader: nil, members: [equal2]), local: standby(0x300_0000))))
        // A member ahead that is no candidate (behind its own limit, broken): not waited for.
        let notCandidate = MemberStatus(name: "pg3", role: .standby, timeline: 1, position: 0x300_0800, candidate: false)
        #expect(acquires(s.step(now: 6, cluster: view(leader: nil, members: [notCandidate]), local: standby(0x300_0000))))
    }

    /// The lease lost during promotion: another node's key appears while this one's server already runs as a
    /// primary; it fences at once and, stopped, rewinds before it follows.
    @Test func leaseLostDuringPromotionFencesThenRewinds() {
        var s = node("pg2")
        _ = s.step(now: 0, cluster: view(leader: "pg2"), local: standby(0x300_0000))
        s.renewed(sentAt: 0.5)
        let d = s.step(now: 1, cluster: view(leader: "pg3", lease: 7), local: primary(0x300_0100, tl: 2))
        #expect(fences(d))
        let stopped = LocalPostgres(state: .stopped(standby: false), systemIdentifier: Self.system, timeline: 2, position: 0x300_0100)
        let r = s.step(now: 2, cluster: view(leader: "pg3", lease: 7), local: stopped)
        #expect(r.actions.contains(.rewind(from: "pg3")))
        s.rewound()
        var rewound = stopped
        rewound.state = .stopped(standby: true)
        let f = s.step(now: 3, cluster: view(leader: "pg3", lease: 7), local: rewound)
        #expect(f.actions.contains(.follow("pg3")) && f.role == .standby)
    }

    /// A former primary's stopped data directory (this agent restarted, the memory is gone) still rewinds.
    @Test func aStoppedFormerPrimaryRewindsEvenAfterARestart() {
        var s = node("pg1")
        let stopped = LocalPostgres(state: .stopped(standby: false), systemIdentifier: Self.system, timeline: 1, position: 0x300_0000)
        #expect(s.step(now: 0, cluster: view(leader: "pg2", lease: 9), local: stopped).actions.contains(.rewind(from: "pg2")))
    }

    /// While a job rewrites the data directory (a copy, a rewind, initdb) the driver reports it `.changing`: no
    /// decision is taken on it (a copy whose pg_control arrived before its standby.signal once passed for a former
    /// primary and was rewound, diverging from the leader on its own timeline), nothing is started or taken, and the
    /// lease is still renewed.
    @Test func aDataDirectoryBeingRewrittenIsNotJudged() {
        var s = node("pg3")
        #expect(s.step(now: 0, cluster: view(leader: "pg2", lease: 9), local: LocalPostgres(state: .absent)).actions.contains(.clone(from: "pg2")))
        let d = s.step(now: 0.5, cluster: view(leader: "pg2", lease: 9), local: LocalPostgres(state: .changing))
        #expect(d.actions.contains(.renewLease))
        #expect(!d.actions.contains { if case .rewind = $0 { return true }; if case .follow = $0 { return true }; if case .start = $0 { return true }; return false })
        #expect(d.role == .bootstrapping)
        let copied = LocalPostgres(state: .stopped(standby: true), systemIdentifier: Self.system, timeline: 1, position: 0x300_0000)
        #expect(s.step(now: 1, cluster: view(leader: "pg2", lease: 9), local: copied).actions.contains(.follow("pg2")))
        // With no leader it is no candidate and takes nothing; the leader waits rather than let the key go.
        var t = node("pg4")
        let free = t.step(now: 0, cluster: view(leader: nil), local: LocalPostgres(state: .changing))
        #expect(!acquires(free) && !free.actions.contains(.recover))
        var l = node("pg1")
        let held = l.step(now: 0, cluster: view(leader: "pg1"), local: LocalPostgres(state: .changing))
        #expect(!held.actions.contains(.releaseLeader) && !held.actions.contains(.start))
    }

    /// The leader's server stops answering its probe (a loaded host: CI failed on this, the leader let the key
    /// go after one slow probe): the key is kept for one TTL after the last answer, then given up.
    @Test func aLeaderKeepsTheKeyThroughASlowProbeButNotForever() {
        var l = node("pg1")
        _ = l.step(now: 0, cluster: view(leader: "pg1"), local: primary())
        l.renewed(sentAt: 0)
        let slow = l.step(now: 1, cluster: view(leader: "pg1"), local: LocalPostgres(state: .unknown))
        #expect(slow.actions.contains(.renewLease) && !slow.actions.contains(.releaseLeader) && !fences(slow))
        l.renewed(sentAt: 1)
        let back = l.step(now: 2, cluster: view(leader: "pg1"), local: primary())
        #expect(back.role == .primary && !back.actions.contains(.releaseLeader))
        l.renewed(sentAt: 2)
        for t in [3.0, 4.0, 4.9] {
            let d = l.step(now: t, cluster: view(leader: "pg1"), local: LocalPostgres(state: .unknown))
            #expect(d.actions.contains(.renewLease) && !d.actions.contains(.releaseLeader), "at \(t)")
            l.renewed(sentAt: t)
        }
        #expect(l.step(now: 5.1, cluster: view(leader: "pg1"), local: LocalPostgres(state: .unknown)).actions.contains(.releaseLeader))
        // A server whose data directory is gone is given up at once.
        var m = node("pg1")
        _ = m.step(now: 0, cluster: view(leader: "pg1"), local: primary())
        m.renewed(sentAt: 0)
        #expect(m.step(now: 0.5, cluster: view(leader: "pg1"), local: LocalPostgres(state: .absent)).actions.contains(.releaseLeader))
        // A node that never heard its server answer does not hold the key on its behalf.
        var n = node("pg1")
        #expect(n.step(now: 0, cluster: view(leader: "pg1"), local: LocalPostgres(state: .unknown)).actions.contains(.releaseLeader))
    }

    /// A standby ahead of the standby that was promoted (in synchronous mode only the synchronous one may take
    /// over) cannot stream from the new leader and stays on the old timeline: after a TTL of following without
    /// streaming it is rewound; one that streams, or is on the leader's timeline, is left alone.
    @Test func aStandbyStuckOnTheOldTimelineIsRewound() {
        let v = ClusterView(leader: .init(holder: "pg2", lease: 9, revision: 10), leaderPosition: 0x300_0000, leaderTimeline: 2,
                            members: [:], initialized: Self.system)
        func rewinds(_ d: HADecision) -> Bool { d.actions.contains(.rewind(from: "pg2")) }
        var s = node("pg3")
        let stuck = standby(0x310_0000, of: "pg2", streaming: false, tl: 1)
        #expect(!rewinds(s.step(now: 0, cluster: v, local: stuck)))
        #expect(!rewinds(s.step(now: 2.9, cluster: v, local: stuck)))
        #expect(rewinds(s.step(now: 3.1, cluster: v, local: stuck)))
        #expect(s.needsRewind)
        s.rewound()
        // Started again after the rewind: a new TTL of grace before it is judged again.
        #expect(!rewinds(s.step(now: 3.5, cluster: v, local: stuck)))
        #expect(!rewinds(s.step(now: 6.0, cluster: v, local: standby(0x310_0000, of: "pg2", streaming: true, tl: 2))))
        // Streaming (the timeline switch on its way), or on the leader's timeline and only disconnected: left alone.
        var t = node("pg3")
        for x in [0.0, 2.0, 4.0, 6.0] { #expect(!rewinds(t.step(now: x, cluster: v, local: standby(0x2F0_0000, of: "pg2", streaming: true, tl: 1)))) }
        var u = node("pg3")
        for x in [0.0, 2.0, 4.0, 6.0] { #expect(!rewinds(u.step(now: x, cluster: v, local: standby(0x300_0000, of: "pg2", streaming: false, tl: 2)))) }
        // The stuck standby fetched the leader's history file (its reported timeline is the leader's) but replays
        // on the old one: rewound all the same (a CI run's t_synchronous_mode never converged on this).
        var w = node("pg3")
        var fetched = standby(0x310_0000, of: "pg2", streaming: false, tl: 2)
        fetched.replayTimeline = 1
        #expect(!rewinds(w.step(now: 0, cluster: v, local: fetched)))
        #expect(rewinds(w.step(now: 3.1, cluster: v, local: fetched)))
        // On the leader's timeline by its own account, only disconnected: left alone.
        var x = node("pg3")
        var onIt = standby(0x300_0000, of: "pg2", streaming: false, tl: 2)
        onIt.replayTimeline = 2
        for t in [0.0, 2.0, 4.0, 6.0] { #expect(!rewinds(x.step(now: t, cluster: v, local: onIt))) }
    }

    /// Every node stopped at once (a power cut) and no leader: each starts in recovery on its own WAL rather than
    /// judging itself by its last checkpoint (which would leave every node "behind" and none taking over); a former
    /// primary that recovered so, and lost the race, is rewound before it follows.
    @Test func stoppedNodesRecoverBeforeRacingAndAFormerPrimaryIsRewoundAfter() {
        var s = node("pg1")
        let crashed = LocalPostgres(state: .stopped(standby: false), systemIdentifier: Self.system, timeline: 1, position: 0x100_0000)
        let d = s.step(now: 0, cluster: view(leader: nil, position: 0x300_0000), local: crashed)
        #expect(d.actions.contains(.recover) && !acquires(d) && !d.actions.contains(.start))
        let recovered = LocalPostgres(state: .running(standby: true), systemIdentifier: Self.system, timeline: 1, position: 0x300_0100)
        #expect(acquires(s.step(now: 0.5, cluster: view(leader: nil, position: 0x300_0000), local: recovered)))
        // Another node won meanwhile: rewind, not follow.
        #expect(s.step(now: 1, cluster: view(leader: "pg2", lease: 9), local: recovered).actions.contains(.rewind(from: "pg2")))
        // Its data directory gone (moved aside after a failed rewind), it copies the leader and then follows it:
        // a fresh copy is never rewound.
        #expect(s.step(now: 1.5, cluster: view(leader: "pg2", lease: 9), local: LocalPostgres(state: .absent)).actions.contains(.clone(from: "pg2")))
        let copied = LocalPostgres(state: .stopped(standby: true), systemIdentifier: Self.system, timeline: 1, position: 0x300_0000)
        #expect(s.step(now: 2, cluster: view(leader: "pg2", lease: 9), local: copied).actions.contains(.follow("pg2")))
        // A stopped standby recovers too, and then simply follows.
        var t = node("pg3")
        let stoppedStandby = LocalPostgres(state: .stopped(standby: true), systemIdentifier: Self.system, timeline: 1, position: 0x100_0000)
        #expect(t.step(now: 0, cluster: view(leader: nil), local: stoppedStandby).actions.contains(.recover))
        #expect(t.step(now: 1, cluster: view(leader: "pg2", lease: 9), local: recovered).actions.contains(.follow("pg2")))
        // In maintenance nothing starts.
        var m = node("pg4")
        #expect(!m.step(now: 0, cluster: view(leader: nil, maintenance: true), local: crashed).actions.contains(.recover))
    }

    func syncNode(_ name: String) -> HANode {
        var st = settings(name)
        st.synchronous = true
        var n = HANode(settings: st)
        n.sessionStarted(lease: 1, sentAt: 0)
        return n
    }

    func syncActions(_ d: HADecision) -> [HAAction] {
        d.actions.filter { if case .setSynchronousStandbys = $0 { return true }; if case .publishSync = $0 { return true }; return false }
    }

    /// Synchronous mode, the leader's side: a standby is required by every commit first, published as the one that
    /// may take over only once it has flushed past the position at that change; when it goes, the key is narrowed
    /// before the configuration (never a moment where the key names a node that lacks an acknowledged commit).
    @Test func synchronousStandbysAreWidenedThenPublishedAndNarrowedThenApplied() {
        var n = syncNode("pg1")
        let members = [MemberStatus(name: "pg2", role: .standby, timeline: 1, position: 0x300_0000, candidate: true),
                       MemberStatus(name: "pg3", role: .standby, timeline: 1, position: 0x300_0000, candidate: true)]
        func primary(_ pos: UInt64, configured: [String]?, replicas: [String: UInt64]) -> LocalPostgres {
            var l = self.primary(pos)
            l.synchronousStandbys = configured
            l.replicas = replicas
            return l
        }
        var t = 0.0
        func step(_ sync: ClusterView.Sync?, _ local: LocalPostgres) -> [HAAction] {
            t += 0.5
            n.renewed(sentAt: t)
            return syncActions(n.step(now: t, cluster: ClusterView(leader: .init(holder: "pg1", lease: 1, revision: 1), leaderPosition: local.position,
                                                                    leaderTimeline: 1, members: Dictionary(uniqueKeysWithValues: members.map { ($0.name, $0) }),
                                                                    initialized: Self.system, sync: sync), local: local))
        }
        // A new leader (no key, or the old leader's): the key names it alone first, whatever its standbys.
        // (0x2FF_8000: its position at its first step as primary; a standby behind it still streams the old timeline.)
        #expect(step(nil, primary(0x2FF_8000, configured: [], replicas: ["pg2": 0x2FF_0000, "pg3": 0x2FF_8000])) == [.publishSync([])])
        #expect(step(ClusterView.Sync(leader: "pg0", standbys: ["pg2"]), primary(0x2FF_8000, configured: [], replicas: ["pg2": 0x2FF_0000, "pg3": 0x2FF_8000])) == [.publishSync([])])
        let alone = ClusterView.Sync(leader: "pg1", standbys: [])
        // No standby required yet: require the one furthest ahead (pg3).
        #expect(step(alone, primary(0x300_0000, configured: [], replicas: ["pg2": 0x2FF_0000, "pg3": 0x300_0000])) == [.setSynchronousStandbys(["pg3"])])
        // Required, but not yet past the position at the change: not published.
        #expect(step(alone, primary(0x300_1000, configured: ["pg3"], replicas: ["pg2": 0x300_1000, "pg3": 0x2FF_F000])) == [])
        // Past it: published.
        #expect(step(alone, primary(0x300_1000, configured: ["pg3"], replicas: ["pg2": 0x300_1000, "pg3": 0x300_1000])) == [.publishSync(["pg3"])])
        let published = ClusterView.Sync(leader: "pg1", standbys: ["pg3"])
        #expect(step(published, primary(0x300_2000, configured: ["pg3"], replicas: ["pg2": 0x300_2000, "pg3": 0x300_2000])) == [])
        // pg3 stops streaming: pg2 is required alongside (commits wait for both), published once it has caught up,
        // then pg3 is let go.
        #expect(step(published, primary(0x300_3000, configured: ["pg3"], replicas: ["pg2": 0x300_3000])) == [.setSynchronousStandbys(["pg3", "pg2"])])
        #expect(step(published, primary(0x300_3000, configured: ["pg3", "pg2"], replicas: ["pg2": 0x300_3000])) == [.publishSync(["pg2"])])
        let second = ClusterView.Sync(leader: "pg1", standbys: ["pg2"])
        #expect(step(second, primary(0x300_3000, configured: ["pg3", "pg2"], replicas: ["pg2": 0x300_3000])) == [.setSynchronousStandbys(["pg2"])])
        // No standby left: the key is narrowed to nobody first (nobody may take over), then commits stop waiting.
        #expect(step(second, primary(0x300_4000, configured: ["pg2"], replicas: [:])) == [.publishSync([])])
        #expect(step(ClusterView.Sync(leader: "pg1", standbys: []), primary(0x300_4000, configured: ["pg2"], replicas: [:])) == [.setSynchronousStandbys([])])
        // A value set by hand is rewritten.
        #expect(step(second, primary(0x300_4000, configured: nil, replicas: ["pg2": 0x300_4000])) == [.setSynchronousStandbys(["pg2"])])
    }

    /// A new leader does not make its commits wait for a standby still streaming the old timeline: the standby
    /// reconnects at the switch (a bench saw the first write wait 1 s for that); it is required once it has
    /// flushed past the leader's position at its first step as primary.
    @Test func aNewLeaderRequiresOnlyStandbysOnItsTimeline() {
        var n = syncNode("pg2")
        let members = [MemberStatus(name: "pg3", role: .standby, timeline: 1, position: 0x300_0000, candidate: false)]
        var t = 0.0
        func step(_ sync: ClusterView.Sync?, _ pos: UInt64, _ replicas: [String: UInt64]) -> [HAAction] {
            t += 0.5
            n.renewed(sentAt: t)
            var l = primary(pos, tl: 2)
            l.synchronousStandbys = []
            l.replicas = replicas
            return syncActions(n.step(now: t, cluster: ClusterView(leader: .init(holder: "pg2", lease: 1, revision: 1), leaderPosition: pos, leaderTimeline: 2,
                                                                    members: Dictionary(uniqueKeysWithValues: members.map { ($0.name, $0) }),
                                                                    initialized: Self.system, sync: sync), local: l))
        }
        let alone = ClusterView.Sync(leader: "pg2", standbys: [])
        #expect(step(ClusterView.Sync(leader: "pg1", standbys: ["pg2"]), 0x310_0000, ["pg3": 0x30F_0000]) == [.publishSync([])])
        // pg3 still shows the old timeline's stream, up to the switch: not required.
        #expect(step(alone, 0x310_0100, ["pg3": 0x30F_F000]) == [])
        // Reconnected on the new timeline and past the leader's first position: required.
        #expect(step(alone, 0x310_0200, ["pg3": 0x310_0200]) == [.setSynchronousStandbys(["pg3"])])
    }

    /// Synchronous mode, the standbys' side: only a node the `sync` key names may take over, however caught up
    /// the others are; a key naming no standby, nobody. No key at all (no leader ever ran in synchronous mode, as
    /// when it is turned on by restarting every node): the asynchronous rules.
    @Test func inSynchronousModeOnlyThePublishedStandbyTakesOver() {
        for (sync, pg2Takes, pg3Takes) in [(ClusterView.Sync(leader: "pg1", standbys: ["pg3"]), false, true),
                                           (ClusterView.Sync(leader: "pg1", standbys: []), false, false), (nil, true, true)] {
            for (name, takes) in [("pg2", pg2Takes), ("pg3", pg3Takes)] {
                var n = syncNode(name)
                _ = n.step(now: 0, cluster: view(leader: "pg1"), local: standby(0x300_0000))
                n.renewed(sentAt: 3.9)
                var v = view(leader: nil)
                v.sync = sync
                #expect(acquires(n.step(now: 4, cluster: v, local: standby(0x300_0000, streaming: false))) == takes)
            }
        }
        // Asynchronous mode: a leftover synchronous_standby_names is cleared, and so is a leftover key (which would
        // bind the standbys once the mode is turned on again); a leader with neither does nothing of the kind.
        var a = node("pg1")
        var l = primary()
        l.synchronousStandbys = ["pg2"]
        var leftover = view(leader: "pg1")
        leftover.sync = ClusterView.Sync(leader: "pg0", standbys: ["pg9"])
        let d = a.step(now: 0.1, cluster: leftover, local: l)
        #expect(d.actions.contains(.setSynchronousStandbys([])) && d.actions.contains(.clearSync))
        let clean = a.step(now: 0.2, cluster: view(leader: "pg1"), local: primary())
        #expect(!clean.actions.contains(.clearSync) && !clean.actions.contains(.setSynchronousStandbys([])))
    }

    /// A stale read that still names this node leader after its session was lost: no writes without a lease.
    @Test func aStaleReadDoesNotKeepAPrimaryWithoutLease() {
        var n = node("pg1")
        n.renewed(sentAt: 0)
        n.sessionLost()
        #expect(fences(n.step(now: 0.5, cluster: view(leader: "pg1"), local: primary())))
    }

    /// The agent restarted under a running primary: a key in its name on its old lease is taken over by its
    /// revision (never blindly), after writes stopped.
    @Test func aRestartedAgentTakesOverItsKeyByRevision() {
        var n = HANode(settings: settings("pg1"))
        #expect(fences(n.step(now: 0, cluster: view(leader: "pg1", lease: 5, revision: 42), local: primary())))
        let stopped = LocalPostgres(state: .stopped(standby: false), systemIdentifier: Self.system, timeline: 1, position: 0x300_0000)
        #expect(n.step(now: 0.1, cluster: view(leader: "pg1", lease: 5, revision: 42), local: stopped).actions == [.startSession])
        n.sessionStarted(lease: 6, sentAt: 0.2)
        #expect(n.step(now: 0.3, cluster: view(leader: "pg1", lease: 5, revision: 42), local: stopped).actions.contains(.acquireLeader(ifRevision: 42)))
        n.renewed(sentAt: 0.4)
        #expect(n.step(now: 0.5, cluster: view(leader: "pg1", lease: 6, revision: 43), local: stopped).actions.contains(.start))
    }

    @Test func maintenanceMeansNoAutomaticFailover() {
        var s = node("pg2")
        _ = s.step(now: 0, cluster: view(leader: "pg1"), local: standby(0x300_0000))
        #expect(!acquires(s.step(now: 4, cluster: view(leader: nil, maintenance: true), local: standby(0x300_0000))))
    }

    /// A switchover: the leader waits until the target is caught up, then fences and lets the key go; only the
    /// target takes it; it clears the switchover once it leads.
    @Test func switchoverHandsOverToTheTargetOnly() {
        let sw = ClusterView.Switchover(from: "pg1", to: "pg3")
        var p = node("pg1")
        let far = MemberStatus(name: "pg3", role: .standby, timeline: 1, position: 0x100_0000, candidate: true)
        let wait = p.step(now: 0, cluster: view(leader: "pg1", members: [far], switchover: sw), local: primary(0x300_0000))
        #expect(!fences(wait) && wait.reason.contains("behind"))
        p.renewed(sentAt: 0)
        let near = MemberStatus(name: "pg3", role: .standby, timeline: 1, position: 0x300_0000, candidate: true)
        let go = p.step(now: 1, cluster: view(leader: "pg1", members: [near], switchover: sw), local: primary(0x300_0000))
        #expect(go.actions.suffix(2) == [.stop("switchover to pg3"), .releaseLeader])
        // pg2 may not take the freed key while pg3 is live; pg3 may.
        var other = node("pg2")
        _ = other.step(now: 0, cluster: view(leader: "pg1"), local: standby(0x300_0000))
        #expect(!acquires(other.step(now: 2, cluster: view(leader: nil, members: [near], switchover: sw), local: standby(0x300_0000))))
        var target = node("pg3")
        _ = target.step(now: 0, cluster: view(leader: "pg1"), local: standby(0x300_0000))
        // …even though pg2, a live candidate at the same position, comes first by name (it defers to the target).
        let pg2 = MemberStatus(name: "pg2", role: .standby, timeline: 1, position: 0x300_0000, candidate: true)
        #expect(acquires(target.step(now: 2, cluster: view(leader: nil, members: [pg2, near], switchover: sw), local: standby(0x300_0000))))
        #expect(!acquires(other.step(now: 2, cluster: view(leader: nil, members: [pg2, near], switchover: sw), local: standby(0x300_0000))))
        #expect(target.step(now: 2.1, cluster: view(leader: "pg3", switchover: sw), local: standby(0x300_0000)).actions.contains(.clearSwitchover))
        // The target gone: the others are not held back by a stale switchover.
        #expect(acquires(other.step(now: 3, cluster: view(leader: nil, switchover: sw), local: standby(0x300_0000))))
    }

    /// The store was frozen: the leader fenced at its deadline; when the store answers again, its key (not yet
    /// expired there) still names it on its lease, but until a renewal succeeds it neither starts nor promotes.
    @Test func aLeaderPastItsDeadlineDoesNotRestartOnAStaleKey() {
        var n = node("pg1")
        _ = n.step(now: 0, cluster: view(leader: "pg1"), local: primary())
        let fenced = n.step(now: 2.5, cluster: nil, local: primary())
        #expect(fenced.role == .fenced && fenced.actions.contains(.fence(fenced.reason)))
        let stale = n.step(now: 3, cluster: view(leader: "pg1"), local: LocalPostgres(state: .stopped(standby: false), systemIdentifier: Self.system, timeline: 1, position: 0x300_0000))
        #expect(!stale.actions.contains(.start) && !stale.actions.contains(.promote))
        #expect(stale.actions.contains(.renewLease))
        let asStandby = n.step(now: 3.1, cluster: view(leader: "pg1"), local: standby(0x300_0000, of: nil))
        #expect(!asStandby.actions.contains(.promote))
        // A renewal succeeds: it starts again.
        n.renewed(sentAt: 3.2)
        #expect(n.step(now: 3.3, cluster: view(leader: "pg1"), local: LocalPostgres(state: .stopped(standby: false), systemIdentifier: Self.system, timeline: 1, position: 0x300_0000)).actions.contains(.start))
    }

    @Test func aForeignDataDirectoryRefusesToJoin() {
        var n = node("pg4")
        var local = standby(0x300_0000)
        local.systemIdentifier = "7300000000000000999"
        let d = n.step(now: 0, cluster: view(leader: "pg1"), local: local)
        #expect(d.role == .refused && d.actions.isEmpty)
        #expect(n.step(now: 1, cluster: view(leader: nil), local: local).actions.isEmpty)
    }

    /// Bootstrap: the first to take the initialize key runs initdb, starts, takes the leader key and records the
    /// system; the others wait, then clone the leader.
    @Test func bootstrapOneInitsTheOthersClone() {
        var a = node("pg1"), b = node("pg2")
        let empty = LocalPostgres(state: .absent)
        var v = ClusterView()
        #expect(a.step(now: 0, cluster: v, local: empty).actions.contains(.takeInitializeKey))
        v.bootstrapper = "pg1"
        #expect(a.step(now: 1, cluster: v, local: empty).actions.contains(.initdb))
        #expect(!b.step(now: 1, cluster: v, local: empty).actions.contains(.initdb))
        let fresh = LocalPostgres(state: .running(standby: false), systemIdentifier: Self.system, timeline: 1, position: 0x100_0000)
        a.renewed(sentAt: 1.5)
        #expect(a.step(now: 2, cluster: v, local: fresh).actions.contains(.acquireLeader(ifRevision: nil)))
        v.leader = .init(holder: "pg1", lease: 1, revision: 3)
        #expect(a.step(now: 2.5, cluster: v, local: fresh).actions.contains(.publishInitialized(Self.system)))
        v.initialized = Self.system
        #expect(b.step(now: 3, cluster: v, local: empty).actions.contains(.clone(from: "pg1")))
    }

    @Test func settingsAreChecked() throws {
        var s = HASettings(cluster: "shop", node: "pg1")
        try s.validate()
        s.fencingDeadline = s.ttl
        #expect(throws: (any Error).self) { try s.validate() }
        s = HASettings(cluster: "../x", node: "pg1")
        #expect(throws: (any Error).self) { try s.validate() }
        s = HASettings(cluster: "shop", node: String(repeating: "a", count: 64))
        #expect(throws: (any Error).self) { try s.validate() }
        s = HASettings(cluster: "shop", node: "pg1")
        s.ttl = .nan
        #expect(throws: (any Error).self) { try s.validate() }
    }
}
