import Foundation
import LifeboatCore

/// A schedule that cannot be read, with what to write instead.
public struct ScheduleError: Error, Sendable, CustomStringConvertible, Equatable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A cron expression: 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first, as Vixie
/// cron reads them: `*`, `a`, `a-b`, `*/n`, `a-b/n`, lists with commas, month and day names (JAN, MON), 7 for
/// Sunday, and the macros @hourly, @daily, @weekly, @monthly, @yearly. When both the day of the month and the
/// day of the week are restricted, a day matching either one runs (cron's rule).
public struct CronExpression: Sendable, Equatable, CustomStringConvertible {
    public let description: String
    let seconds: [Int], minutes: [Int], hours: [Int]
    let days: Set<Int>, months: Set<Int>, weekdays: Set<Int>
    let dayRestricted: Bool, weekdayRestricted: Bool

    static let macros = ["@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@weekly": "0 0 * * 0",
                         "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *"]
    static let monthNames = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    static let dayNames = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]

    public init(parsing text: String) throws(ScheduleError) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard trimmed.count <= 256 else { throw ScheduleError("a cron expression of \(trimmed.count) characters is too long") }
        let expanded = CronExpression.macros[trimmed.lowercased()] ?? trimmed
        let fields = expanded.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard fields.count == 5 || fields.count == 6 else {
            throw ScheduleError("\"\(text)\" has \(fields.count) fields: a cron expression has 5 (minute hour day month weekday) or 6 (seconds first)")
        }
        let f = fields.count == 6 ? fields : ["0"] + fields
        description = trimmed
        seconds = try CronExpression.field(f[0], "second", 0...59, names: []).sorted()
        minutes = try CronExpression.field(f[1], "minute", 0...59, names: []).sorted()
        hours = try CronExpression.field(f[2], "hour", 0...23, names: []).sorted()
        days = try CronExpression.field(f[3], "day of the month", 1...31, names: [])
        months = try CronExpression.field(f[4], "month", 1...12, names: CronExpression.monthNames, firstName: 1)
        weekdays = Set(try CronExpression.field(f[5], "day of the week", 0...7, names: CronExpression.dayNames, firstName: 0).map { $0 % 7 })
        dayRestricted = !f[3].hasPrefix("*")
        weekdayRestricted = !f[5].hasPrefix("*")
    }

    static func field(_ text: String, _ what: String, _ range: ClosedRange<Int>, names: [String], firstName: Int = 0) throws(ScheduleError) -> Set<Int> {
        func value(_ s: Substring) throws(ScheduleError) -> Int {
            if let i = names.firstIndex(of: s.uppercased()) { return i + firstName }
            guard !s.isEmpty, s.count <= 4, s.allSatisfy({ $0.isASCII && $0.isNumber }), let v = Int(s) else {
                throw ScheduleError("\(what) \"\(s)\" is not a number\(names.isEmpty ? "" : " or a name (\(names.prefix(3).joined(separator: ", ")), …)")")
            }
            guard range.contains(v) else { throw ScheduleError("\(what) \(v) is out of range \(range.lowerBound)-\(range.upperBound)") }
            return v
        }
        var out = Set<Int>()
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard !part.isEmpty else { throw ScheduleError("empty item in the \(what) field \"\(text)\"") }
            let pieces = part.split(separator: "/", omittingEmptySubsequences: false)
            guard pieces.count <= 2 else { throw ScheduleError("\(what) \"\(part)\": one / at most") }
            var step = 1
            if pieces.count == 2 {
                guard let s = Int(pieces[1]), s >= 1, s <= range.upperBound else {
                    throw ScheduleError("\(what) \"\(part)\": the step after / must be a number from 1 to \(range.upperBound)")
                }
                step = s
            }
            let base = pieces[0]
            var lo: Int, hi: Int
            if base == "*" {
                lo = range.lowerBound; hi = range.upperBound
            } else if let dash = base.firstIndex(of: "-") {
                lo = try value(base[..<dash]); hi = try value(base[base.index(after: dash)...])
                guard lo <= hi else { throw ScheduleError("\(what) range \"\(base)\" runs backwards") }
            } else {
                lo = try value(base); hi = pieces.count == 2 ? range.upperBound : lo
            }
            for v in stride(from: lo, through: hi, by: step) { out.insert(v) }
        }
        return out
    }

    /// 0 (Sunday) to 6 of a day counted from 1970-01-01, a Thursday; days before it too.
    static func weekday(ofDay day: Int64) -> Int { Int(((day % 7) + 11) % 7) }

    func dayMatches(month: Int, day: Int, weekday: Int) -> Bool {
        guard months.contains(month) else { return false }
        switch (dayRestricted, weekdayRestricted) {
        case (true, true): return days.contains(day) || weekdays.contains(weekday)
        case (true, false): return days.contains(day)
        case (false, true): return weekdays.contains(weekday)
        case (false, false): return true
        }
    }

    /// The first time after `after` that matches, in `zone`'s wall-clock time; nil if none within 9 years (such as
    /// "0 0 30 2 *"). A wall-clock time that a daylight-saving change skips runs at the change; one it repeats
    /// runs once, at its first occurrence.
    public func next(after: Date, in zone: TimeZone) -> Date? {
        let afterSecs = after.timeIntervalSince1970
        guard afterSecs.isFinite, abs(afterSecs) < 253_402_300_799 else { return nil }
        var local = Int64((afterSecs + Double(zone.secondsFromGMT(for: after))).rounded(.down)) + 1
        for _ in 0..<4 {  // a repeated hour may need a second search from further on
            guard let wall = nextLocal(from: local) else { return nil }
            if let t = CronExpression.instant(wall, in: zone), t > after { return t }
            local = wall + 1
        }
        return nil
    }

    /// The first wall-clock second (seconds since 1970 as if the zone were UTC) at or after `from` that matches.
    func nextLocal(from: Int64) -> Int64? {
        var day = from >= 0 ? from / 86400 : (from - 86399) / 86400
        var start = from - day * 86400  // second of the day to start from
        for _ in 0..<(9 * 366) {
            let (_, mo, d, _, _, _) = Timestamp.civil(day * 86400)
            if dayMatches(month: Int(mo), day: Int(d), weekday: CronExpression.weekday(ofDay: day)) {
                let h0 = Int(start / 3600), m0 = Int(start / 60 % 60), s0 = Int(start % 60)
                for h in hours where h >= h0 {
                    for m in minutes where h > h0 || m >= m0 {
                        for s in seconds where h > h0 || m > m0 || s >= s0 {
                            return day * 86400 + Int64(h * 3600 + m * 60 + s)
                        }
                    }
                }
            }
            day += 1
            start = 0
        }
        return nil
    }

    /// The longest wait between two runs over the year after `from`, in `zone`: what an RPO must cover; nil
    /// when it never runs. Day by day: within a day the runs follow the time-of-day set, between matching days
    /// the wait is from one day's last run to the next one's first; days with a daylight-saving change are
    /// walked run by run (a repeated hour adds its length to a wait).
    public func longestGap(from: Date, in zone: TimeZone) -> Double? {
        let t0 = from.timeIntervalSince1970
        guard t0.isFinite, abs(t0) < 253_402_300_000 else { return nil }
        let local0 = Int64((t0 + Double(zone.secondsFromGMT(for: from))).rounded(.down))
        let firstDay = local0 >= 0 ? local0 / 86400 : (local0 - 86399) / 86400
        let tMin = Int64(hours[0] * 3600 + minutes[0] * 60 + seconds[0])
        let tMax = Int64(hours[hours.count - 1] * 3600 + minutes[minutes.count - 1] * 60 + seconds[seconds.count - 1])
        func maxStep(_ v: [Int]) -> Int { zip(v, v.dropFirst()).map { $1 - $0 }.max() ?? 0 }
        var longest = 0.0
        if seconds.count > 1 { longest = max(longest, Double(maxStep(seconds))) }
        if minutes.count > 1 { longest = max(longest, Double(maxStep(minutes) * 60 + seconds[0] - seconds[seconds.count - 1])) }
        if hours.count > 1 {
            longest = max(longest, Double(maxStep(hours) * 3600 + minutes[0] * 60 + seconds[0] - minutes[minutes.count - 1] * 60 - seconds[seconds.count - 1]))
        }
        var previousLast: Date?
        var matchingDays = 0
        for day in firstDay..<(firstDay + 367) {
            let (_, mo, d, _, _, _) = Timestamp.civil(day * 86400)
            guard dayMatches(month: Int(mo), day: Int(d), weekday: CronExpression.weekday(ofDay: day)) else { continue }
            matchingDays += 1
            // One offset all day (no change within it, checked around the day's bounds): times are plain sums.
            let offset = zone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(day * 86400) - 54_000))
            if zone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(day * 86400) + 140_400)) == offset {
                let first = Date(timeIntervalSince1970: Double(day * 86400 + tMin - Int64(offset)))
                if let p = previousLast { longest = max(longest, first.timeIntervalSince(p)) }
                previousLast = Date(timeIntervalSince1970: Double(day * 86400 + tMax - Int64(offset)))
            } else {
                // A daylight-saving change near this day: its runs in order, each wall-clock time read with the
                // offset in force before or after the change (a skipped time runs at the change, a repeated one
                // once, the first time), without asking the zone per run.
                let before = zone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(day * 86400) - 54_000))
                let after = zone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(day * 86400) + 140_400))
                let change = zone.nextDaylightSavingTimeTransition(after: Date(timeIntervalSince1970: Double(day * 86400) - 54_000))?
                    .timeIntervalSince1970 ?? Double(day * 86400)
                for h in hours {
                    for m in minutes {
                        for sec in seconds {
                            let wall = Double(day * 86400 + Int64(h * 3600 + m * 60 + sec))
                            let early = wall - Double(before), late = wall - Double(after)
                            let t = early < change ? early : (late >= change ? late : change)
                            let run = Date(timeIntervalSince1970: t)
                            if let p = previousLast {
                                guard run > p else { continue }  // the same instant twice (skipped times), or an earlier one
                                longest = max(longest, run.timeIntervalSince(p))
                            }
                            previousLast = run
                        }
                    }
                }
            }
        }
        if matchingDays >= 2 { return longest }
        // At most one matching day a year (a yearly job, February 29th): the wait between its next runs.
        guard let a = next(after: from, in: zone) else { return nil }
        guard let b = next(after: a, in: zone) else { return 9 * 366 * 86400 }
        return max(longest, b.timeIntervalSince(a))
    }

    /// The instant a wall-clock time names in `zone`: the earlier of two in a repeated hour, the moment of the
    /// change for one in a skipped hour.
    static func instant(_ wall: Int64, in zone: TimeZone) -> Date? {
        let w = Double(wall)
        let before = zone.secondsFromGMT(for: Date(timeIntervalSince1970: w - 86400))
        let after = zone.secondsFromGMT(for: Date(timeIntervalSince1970: w + 86400))
        let candidates = Set([before, after]).map { Date(timeIntervalSince1970: w - Double($0)) }
            .filter { Double(zone.secondsFromGMT(for: $0)) == w - $0.timeIntervalSince1970 }
        if let first = candidates.min() { return first }
        // Skipped: the change happens between the wall time read with the later offset and with the earlier one.
        let lo = Date(timeIntervalSince1970: w - Double(max(before, after)))
        return zone.nextDaylightSavingTimeTransition(after: lo.addingTimeInterval(-1)) ?? Date(timeIntervalSince1970: w - Double(before))
    }
}

/// When a job runs: a cron expression in a time zone, or `every DURATION` (runs at whole multiples of the
/// duration since 1970-01-01 UTC: `every 15m` at :00, :15, :30, :45).
public enum Schedule: Sendable, Equatable, CustomStringConvertible {
    case cron(CronExpression, TimeZone)
    case every(Double)

    public static let shortestInterval: Double = 1
    public static let longestInterval: Double = 366 * 86400

    public init(parsing text: String, timeZone: TimeZone = .current) throws(ScheduleError) {
        let t = text.trimmingCharacters(in: .whitespaces)
        if t.lowercased().hasPrefix("every ") {
            let d = String(t.dropFirst(6)).trimmingCharacters(in: .whitespaces)
            guard let v = try? parseSeconds(d), v.isFinite else {
                throw ScheduleError("\"\(text)\": after `every` give a duration such as 30s, 15m, 1h or 1d")
            }
            guard (Schedule.shortestInterval...Schedule.longestInterval).contains(v) else {
                throw ScheduleError("\"\(text)\": the interval must be from 1s to 366d")
            }
            self = .every(v)
        } else {
            self = .cron(try CronExpression(parsing: t), timeZone)
        }
    }

    public var description: String {
        switch self {
        case .cron(let c, let z): return z == .current ? c.description : "\(c.description) (\(z.identifier))"
        case .every(let v): return "every \(Units.span(v).replacingOccurrences(of: " ", with: ""))"
        }
    }

    public func next(after: Date) -> Date? {
        switch self {
        case .cron(let c, let z): return c.next(after: after, in: z)
        case .every(let v):
            let t = after.timeIntervalSince1970
            guard t.isFinite, abs(t) < 253_402_300_799 else { return nil }
            return Date(timeIntervalSince1970: ((t / v).rounded(.down) + 1) * v)
        }
    }

    /// The next `count` run times after `after`.
    public func upcoming(_ count: Int, after: Date) -> [Date] {
        var out: [Date] = []
        var t = after
        while out.count < count, let n = next(after: t) { out.append(n); t = n }
        return out
    }

    /// The longest wait between two runs over the year from `from`: what an RPO must cover. nil when it never runs.
    public func longestGap(from: Date) -> Double? {
        switch self {
        case .every(let v): return v
        case .cron(let c, let z): return c.longestGap(from: from, in: z)
        }
    }
}
