import Foundation

/// A retention policy, with restic's semantics: snapshots are walked newest first and
/// each rule keeps the newest snapshot of each of its last N buckets (hours, days, ...).
/// A count of -1 means "unlimited".
public struct RetentionPolicy: Sendable, Equatable {
    public var last = 0, hourly = 0, daily = 0, weekly = 0, monthly = 0, yearly = 0
    /// Keep every snapshot taken within this span of the newest snapshot of its group.
    public var within: CalendarDuration? = nil
    /// Keep snapshots that carry all tags of any of these sets.
    public var tags: [[String]] = []

    public init(last: Int = 0, hourly: Int = 0, daily: Int = 0, weekly: Int = 0, monthly: Int = 0,
                yearly: Int = 0, within: CalendarDuration? = nil, tags: [[String]] = []) {
        self.last = last; self.hourly = hourly; self.daily = daily; self.weekly = weekly
        self.monthly = monthly; self.yearly = yearly; self.within = within; self.tags = tags
    }

    public var isEmpty: Bool {
        last == 0 && hourly == 0 && daily == 0 && weekly == 0 && monthly == 0 && yearly == 0
            && within == nil && tags.isEmpty
    }
}

/// What retention decided for one snapshot, and why.
public struct RetentionDecision: Sendable, Equatable {
    public var index: Int
    public var keep: Bool
    public var reasons: [String]
}

public struct RetentionItem: Sendable {
    public var time: Date
    public var tags: [String]
    public init(time: Date, tags: [String]) { self.time = time; self.tags = tags }
}

public enum Retention {
    /// Applies `policy` to one group of snapshots. Returns one decision per input item, in input order.
    /// Pure: the time zone decides bucket boundaries and is injected.
    public static func apply(_ items: [RetentionItem], policy: RetentionPolicy, timeZone: TimeZone) -> [RetentionDecision] {
        var cal = Calendar(identifier: .iso8601)
        cal.timeZone = timeZone
        let order = items.indices.sorted { items[$0].time > items[$1].time || (items[$0].time == items[$1].time && $0 < $1) }
        struct Rule { var name: String; var count: Int; var key: (Date) -> Int; var last: Int? }
        func comps(_ d: Date) -> DateComponents {
            cal.dateComponents([.year, .month, .day, .hour, .weekOfYear, .yearForWeekOfYear], from: d)
        }
        var counter = 0
        var rules: [Rule] = [
            Rule(name: "last snapshot", count: policy.last, key: { _ in counter += 1; return counter }, last: nil),
            Rule(name: "hourly snapshot", count: policy.hourly, key: { let c = comps($0); return ((c.year! * 100 + c.month!) * 100 + c.day!) * 100 + c.hour! }, last: nil),
            Rule(name: "daily snapshot", count: policy.daily, key: { let c = comps($0); return (c.year! * 100 + c.month!) * 100 + c.day! }, last: nil),
            Rule(name: "weekly snapshot", count: policy.weekly, key: { let c = comps($0); return c.yearForWeekOfYear! * 100 + c.weekOfYear! }, last: nil),
            Rule(name: "monthly snapshot", count: policy.monthly, key: { let c = comps($0); return c.year! * 100 + c.month! }, last: nil),
            Rule(name: "yearly snapshot", count: policy.yearly, key: { comps($0).year! }, last: nil),
        ]
        let newest = order.first.map { items[$0].time }
        var decisions = items.indices.map { RetentionDecision(index: $0, keep: false, reasons: []) }
        for i in order {
            let item = items[i]
            var reasons: [String] = []
            for set in policy.tags where !set.isEmpty && set.allSatisfy({ item.tags.contains($0) }) {
                reasons.append("has tags \(set.joined(separator: ","))")
            }
            if let within = policy.within, let newest, item.time >= within.subtract(from: newest, calendar: cal) {
                reasons.append("within \(within)")
            }
            for r in rules.indices where rules[r].count != 0 {
                let k = rules[r].key(item.time)
                if rules[r].last != k {
                    rules[r].last = k
                    if rules[r].count > 0 { rules[r].count -= 1 }
                    reasons.append(rules[r].name)
                }
            }
            decisions[i] = RetentionDecision(index: i, keep: !reasons.isEmpty, reasons: reasons)
        }
        return decisions
    }
}

/// A calendar span as restic writes it for `--keep-within`: `1y2m3d4h` (years, months, days, hours).
public struct CalendarDuration: Sendable, Equatable, CustomStringConvertible {
    public var years = 0, months = 0, days = 0, hours = 0

    public init(years: Int = 0, months: Int = 0, days: Int = 0, hours: Int = 0) {
        self.years = years; self.months = months; self.days = days; self.hours = hours
    }

    public init(parsing s: String) throws {
        var num = ""
        var seen = false
        for ch in s {
            if ch.isASCII, ch.isNumber { num.append(ch); continue }
            guard let v = Int(num) else { throw LifeboatError.invalid("invalid duration \"\(s)\": expected e.g. 1y2m3d4h") }
            switch ch {
            case "y": years = v
            case "m": months = v
            case "d": days = v
            case "h": hours = v
            default: throw LifeboatError.invalid("invalid duration \"\(s)\": unknown unit \"\(ch)\" (use y, m, d, h)")
            }
            num = ""; seen = true
        }
        guard num.isEmpty, seen else { throw LifeboatError.invalid("invalid duration \"\(s)\": expected e.g. 1y2m3d4h") }
    }

    public func subtract(from date: Date, calendar: Calendar) -> Date {
        var c = DateComponents()
        c.year = -years; c.month = -months; c.day = -days; c.hour = -hours
        return calendar.date(byAdding: c, to: date) ?? date
    }

    public var description: String {
        var s = ""
        if years != 0 { s += "\(years)y" }
        if months != 0 { s += "\(months)m" }
        if days != 0 { s += "\(days)d" }
        if hours != 0 || s.isEmpty { s += "\(hours)h" }
        return s
    }
}

/// Parses a span of time in seconds: `90s`, `15m`, `2h`, `1d`, `1h30m`, or a bare number of seconds.
public func parseSeconds(_ s: String) throws -> Double {
    guard !s.isEmpty else { throw LifeboatError.invalid("invalid duration: it is empty (expected e.g. 90s, 15m, 2h)") }
    let v = try parseSecondsValue(s)
    guard v.isFinite, v >= 0, v <= Bounds.maxSeconds else {
        throw LifeboatError.invalid("invalid duration \"\(s)\": it must be between 0 and 100 years")
    }
    return v
}

/// What `parseSeconds` reads, before its range check (for messages that say a value is out of range).
public func parseSecondsValue(_ s: String) throws -> Double {
    // Plain decimal numbers only: Double("inf"), Double("nan") and Double("0x10") parse, but are not durations.
    if !s.isEmpty, s.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == "." || $0 == "e" || $0 == "E" || $0 == "-" || $0 == "+") }),
       let v = Double(s) { return v }
    var total = 0.0
    var num = ""
    for ch in s {
        if (ch.isASCII && ch.isNumber) || ch == "." { num.append(ch); continue }
        guard let v = Double(num) else { throw LifeboatError.invalid("invalid duration \"\(s)\": expected e.g. 90s, 15m, 2h") }
        switch ch {
        case "s": total += v
        case "m": total += v * 60
        case "h": total += v * 3600
        case "d": total += v * 86400
        default: throw LifeboatError.invalid("invalid duration \"\(s)\": unknown unit \"\(ch)\" (use s, m, h, d)")
        }
        num = ""
    }
    guard num.isEmpty else { throw LifeboatError.invalid("invalid duration \"\(s)\": a number needs a unit") }
    return total
}
