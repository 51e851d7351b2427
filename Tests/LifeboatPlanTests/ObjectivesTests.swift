import Foundation
import Testing
@testable import LifeboatPlan

@Suite struct CatchUpTests {
    let quarter = try! Schedule(parsing: "*/15 * * * *", timeZone: utcZone)

    @Test func aRunMissedWhileDownRunsOnceAtStart() {
        // Last run 10:00, the agent was down until 11:07: 10:15 … 11:00 were missed; one run is due now.
        #expect(CatchUp.isDue(quarter, lastRun: utc("2026-12-01T10:00:00Z"), now: utc("2026-12-01T11:07:00Z")))
        // Nothing missed yet: 10:15 has not come.
        #expect(!CatchUp.isDue(quarter, lastRun: utc("2026-12-01T10:00:00Z"), now: utc("2026-12-01T10:14:59Z")))
        #expect(CatchUp.isDue(quarter, lastRun: utc("2026-12-01T10:00:00Z"), now: utc("2026-12-01T10:15:00Z")))
        // Never run: due at once.
        #expect(CatchUp.isDue(quarter, lastRun: nil, now: utc("2026-12-01T10:00:00Z")))
        // A schedule that never runs is never due (config validate refuses it anyway).
        #expect(!CatchUp.isDue(try! Schedule(parsing: "0 0 30 2 *", timeZone: utcZone), lastRun: utc("2026-01-01T00:00:00Z"), now: utc("2030-01-01T00:00:00Z")))
    }
}

@Suite struct RPOWatchTests {
    @Test func breachAlertsOnce_andClearsOnce() {
        var w = RPOWatch(objective: 1800)
        let snap = utc("2026-12-01T10:00:00Z")
        #expect(w.observe(newest: snap, now: utc("2026-12-01T10:20:00Z")) == nil)
        #expect(w.observe(newest: snap, now: utc("2026-12-01T10:30:00Z")) == nil)  // at the objective: still met
        #expect(w.observe(newest: snap, now: utc("2026-12-01T10:30:01Z")) == .breached(age: 1801, objective: 1800))
        #expect(w.breached)
        #expect(w.observe(newest: snap, now: utc("2026-12-01T11:00:00Z")) == nil)  // still breached: no second alert
        #expect(w.observe(newest: utc("2026-12-01T11:00:00Z"), now: utc("2026-12-01T11:00:05Z")) == .cleared(age: 5, objective: 1800))
        #expect(!w.breached)
        #expect(w.observe(newest: utc("2026-12-01T11:00:00Z"), now: utc("2026-12-01T11:10:00Z")) == nil)
    }

    @Test func noSnapshotIsABreach_andAClockBehindIsAgeZero() {
        var w = RPOWatch(objective: 60)
        #expect(w.observe(newest: nil, now: utc("2026-12-01T10:00:00Z")) == .breached(age: nil, objective: 60))
        #expect(w.observe(newest: nil, now: utc("2026-12-01T10:05:00Z")) == nil)
        // A snapshot dated after "now" (a host clock ahead): its age is 0, the objective is met.
        #expect(RPOWatch.age(newest: utc("2026-12-01T10:10:00Z"), now: utc("2026-12-01T10:05:00Z")) == 0)
        #expect(w.observe(newest: utc("2026-12-01T10:10:00Z"), now: utc("2026-12-01T10:05:00Z")) == .cleared(age: 0, objective: 60))
    }
}
