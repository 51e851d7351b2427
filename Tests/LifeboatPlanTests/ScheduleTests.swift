import Foundation
import Testing
import LifeboatCore
@testable import LifeboatPlan

func utc(_ s: String) -> Date { Timestamp.parse(s)! }
let berlin = TimeZone(identifier: "Europe/Berlin")!
let utcZone = TimeZone(identifier: "UTC")!

@Suite struct CronParsingTests {
    @Test(arguments: [
        ("* * * *", "4 fields"), ("* * * * * * *", "7 fields"), ("60 * * * *", "out of range"), ("* 24 * * *", "out of range"),
        ("* * 0 * *", "out of range"), ("* * * 13 *", "out of range"), ("* * * * 8", "out of range"), ("5-1 * * * *", "backwards"),
        ("*/0 * * * *", "step"), ("*/x * * * *", "step"), ("a * * * *", "not a number"), ("1,,2 * * * *", "empty item"),
        ("1/2/3 * * * *", "one /"), ("99999 * * * *", "not a number"), ("-1 * * * *", "not a number"),
    ])
    func refused(_ c: (String, String)) {
        do {
            _ = try CronExpression(parsing: c.0)
            Issue.record("\(c.0) was accepted")
        } catch {
            #expect(error.description.contains(c.1), "\(c.0): \(error.description)")
        }
    }

    @Test func namesMacrosAndSunday7() throws {
        let a = try CronExpression(parsing: "0 9 * jan-mar MON-FRI")
        #expect(a.months == [1, 2, 3] && a.weekdays == [1, 2, 3, 4, 5])
        #expect(try CronExpression(parsing: "0 0 * * 7").weekdays == [0])
        #expect(try CronExpression(parsing: "@daily").next(after: utc("2026-12-01T10:00:00Z"), in: utcZone) == utc("2026-12-02T00:00:00Z"))
        #expect(try CronExpression(parsing: "@hourly").next(after: utc("2026-12-01T10:00:00Z"), in: utcZone) == utc("2026-12-01T11:00:00Z"))
        #expect(throws: ScheduleError.self) { try CronExpression(parsing: "@fortnightly") }
    }

    @Test func scheduleText() throws {
        #expect(try Schedule(parsing: "every 10m") == .every(600))
        #expect(throws: ScheduleError.self) { try Schedule(parsing: "every") }
        #expect(throws: ScheduleError.self) { try Schedule(parsing: "every 0s") }
        #expect(throws: ScheduleError.self) { try Schedule(parsing: "every 400d") }
        #expect(throws: ScheduleError.self) { try Schedule(parsing: "every 1e300s") }
        #expect(throws: ScheduleError.self) { try Schedule(parsing: String(repeating: "1,", count: 200) + "1 * * * *") }
    }
}

@Suite struct NextRunTests {
    func next(_ expr: String, _ after: String, _ zone: TimeZone = utcZone) throws -> Date? {
        try CronExpression(parsing: expr).next(after: utc(after), in: zone)
    }

    @Test func basics() throws {
        #expect(try next("*/15 * * * *", "2026-12-01T10:07:00Z") == utc("2026-12-01T10:15:00Z"))
        #expect(try next("*/15 * * * *", "2026-12-01T10:15:00Z") == utc("2026-12-01T10:30:00Z"))  // strictly after
        #expect(try next("*/15 * * * *", "2026-12-01T23:59:30Z") == utc("2026-12-02T00:00:00Z"))
        #expect(try next("*/10 * * * * *", "2026-12-01T10:00:05Z") == utc("2026-12-01T10:00:10Z"))  // seconds first
        #expect(try next("0 9 * * MON-FRI", "2026-12-04T10:00:00Z") == utc("2026-12-07T09:00:00Z"))  // Friday → Monday
    }

    @Test func monthEndsAndLeapDays() throws {
        #expect(try next("0 0 31 * *", "2026-01-31T00:00:00Z") == utc("2026-03-31T00:00:00Z"))  // February has no 31st
        #expect(try next("0 0 29 2 *", "2025-03-01T00:00:00Z") == utc("2028-02-29T00:00:00Z"))
        #expect(try next("0 0 29 2 *", "2096-03-01T00:00:00Z") == utc("2104-02-29T00:00:00Z"))  // 2100 is no leap year
        #expect(try next("0 0 30 2 *", "2026-01-01T00:00:00Z") == nil)
        #expect(try next("0 0 31 4 *", "2026-01-01T00:00:00Z") == nil)
    }

    @Test func dayOfMonthOrDayOfWeek() throws {
        // Both restricted: the 13th or a Friday. 2026-12-04 is a Friday, 2026-12-13 a Sunday.
        #expect(try next("0 0 13 * 5", "2026-12-01T00:00:00Z") == utc("2026-12-04T00:00:00Z"))
        #expect(try next("0 0 13 * 5", "2026-12-11T00:00:00Z") == utc("2026-12-13T00:00:00Z"))
        // Only the day of the month restricted.
        #expect(try next("0 0 13 * *", "2026-12-01T00:00:00Z") == utc("2026-12-13T00:00:00Z"))
    }

    @Test func daylightSavingSpringForward() throws {
        // Europe/Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC); 02:30 does not exist that day.
        #expect(try next("30 2 * * *", "2026-03-28T12:00:00Z", berlin) == utc("2026-03-29T01:00:00Z"))
        #expect(try next("30 2 * * *", "2026-03-29T01:00:00Z", berlin) == utc("2026-03-30T00:30:00Z"))
        #expect(try next("30 1 * * *", "2026-03-28T12:00:00Z", berlin) == utc("2026-03-29T00:30:00Z"))
        #expect(try next("30 3 * * *", "2026-03-28T12:00:00Z", berlin) == utc("2026-03-29T01:30:00Z"))
    }

    @Test func daylightSavingFallBack() throws {
        // 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00 UTC); 02:00-02:59 happen twice. A job there runs once.
        #expect(try next("30 2 * * *", "2026-10-24T12:00:00Z", berlin) == utc("2026-10-25T00:30:00Z"))
        #expect(try next("30 2 * * *", "2026-10-25T00:30:00Z", berlin) == utc("2026-10-26T01:30:00Z"))
        // Every quarter hour: after 02:45 CEST comes 03:00 CET, an hour and a quarter later.
        #expect(try next("*/15 * * * *", "2026-10-25T00:45:00Z", berlin) == utc("2026-10-25T02:00:00Z"))
        // Started during the second pass of the repeated hour: those wall-clock times have run; next is 03:00 CET.
        #expect(try next("*/15 * * * *", "2026-10-25T01:20:00Z", berlin) == utc("2026-10-25T02:00:00Z"))
    }

    @Test func everyIsAnchoredAt1970() throws {
        let s = Schedule.every(600)
        #expect(s.next(after: utc("2026-12-01T10:07:00Z")) == utc("2026-12-01T10:10:00Z"))
        #expect(s.next(after: utc("2026-12-01T10:10:00Z")) == utc("2026-12-01T10:20:00Z"))
        #expect(s.upcoming(3, after: utc("2026-12-01T10:07:00Z")) == [utc("2026-12-01T10:10:00Z"), utc("2026-12-01T10:20:00Z"), utc("2026-12-01T10:30:00Z")])
        #expect(s.next(after: Date(timeIntervalSince1970: .nan)) == nil)
    }

    @Test func longestGapIsWhatAnRPOMustCover() throws {
        let weekdays = try Schedule(parsing: "0 3 * * 1-5", timeZone: utcZone)
        #expect(weekdays.longestGap(from: utc("2026-12-01T00:00:00Z")) == Double(3 * 86400))
        #expect(try Schedule(parsing: "*/15 * * * *", timeZone: utcZone).longestGap(from: utc("2026-12-01T00:00:00Z")) == 900)
        #expect(try Schedule(parsing: "0 0 30 2 *", timeZone: utcZone).longestGap(from: utc("2026-12-01T00:00:00Z")) == nil)
        #expect(Schedule.every(3600).longestGap(from: Date()) == 3600)
        // The autumn change repeats an hour: a quarter-hourly job in Berlin then waits 1h 15m once a year.
        let quarter = try Schedule(parsing: "*/15 * * * *", timeZone: berlin)
        #expect(quarter.longestGap(from: utc("2026-10-01T00:00:00Z")) == 4500)
        #expect(try Schedule(parsing: "*/15 * * * *", timeZone: utcZone).longestGap(from: utc("2026-10-01T00:00:00Z")) == 900)
        // Once a year, and on February 29th only.
        #expect(try Schedule(parsing: "@yearly", timeZone: utcZone).longestGap(from: utc("2026-12-01T00:00:00Z")) == 365 * 86400)
        #expect(try Schedule(parsing: "0 0 29 2 *", timeZone: utcZone).longestGap(from: utc("2026-12-01T00:00:00Z")) == (366 + 3 * 365) * 86400)
        // Between hours: 09:30 and 17:45 daily.
        #expect(try Schedule(parsing: "30,45 9,17 * * *", timeZone: utcZone).longestGap(from: utc("2026-12-01T00:00:00Z")) == (24 * 3600 - 8 * 3600 - 15 * 60))
    }

    @Test func hostileTimesDoNotTrap() throws {
        let c = try CronExpression(parsing: "* * * * *")
        #expect(c.next(after: Date(timeIntervalSince1970: .infinity), in: utcZone) == nil)
        #expect(c.next(after: Date(timeIntervalSince1970: -1e300), in: utcZone) == nil)
        #expect(c.next(after: utc("9999-12-31T23:59:00Z"), in: utcZone) != nil || true)
    }
}
