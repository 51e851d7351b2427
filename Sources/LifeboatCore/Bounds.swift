import Foundation

/// Range checks for numbers that come from outside: command-line options, environment variables and
/// configuration files. Every such number is checked here before any arithmetic or conversion uses it,
/// so that `1e300`, `inf`, `nan` or a 20-digit integer is a clear error instead of a trap later on.
public enum Bounds {
    /// The longest duration any setting may have: 100 years. Durations become nanoseconds (`UInt64`) for
    /// `Task.sleep` and seconds (`Int`) for dates; both hold far more than this.
    public static let maxSeconds: Double = 100 * 365.25 * 86400

    /// `value` if it is finite and within `range`; otherwise an `.invalid` error naming `what`.
    public static func check(_ value: Double, _ range: ClosedRange<Double>, _ what: String, unit: String = "seconds") throws -> Double {
        guard value.isFinite, range.contains(value) else {
            throw LifeboatError.invalid("\(what) must be between \(format(range.lowerBound)) and \(format(range.upperBound)) \(unit) (got \(format(value)))")
        }
        return value
    }

    /// `value` if it is within `range`; otherwise an `.invalid` error naming `what`.
    public static func check<I: FixedWidthInteger>(_ value: I, _ range: ClosedRange<I>, _ what: String) throws -> I {
        guard range.contains(value) else {
            throw LifeboatError.invalid("\(what) must be between \(range.lowerBound) and \(range.upperBound) (got \(value))")
        }
        return value
    }

    /// Parses a decimal integer (no sign other than `-`, no exponent) within `range`.
    public static func integer<I: FixedWidthInteger>(_ text: String, _ range: ClosedRange<I>, _ what: String) throws -> I {
        guard let v = I(text.trimmingCharacters(in: .whitespaces)) else {
            throw LifeboatError.invalid("\(what) must be an integer between \(range.lowerBound) and \(range.upperBound) (got \"\(text)\")")
        }
        return try check(v, range, what)
    }

    /// Parses a number (seconds unless `unit` says otherwise) within `range`.
    public static func number(_ text: String, _ range: ClosedRange<Double>, _ what: String, unit: String = "seconds") throws -> Double {
        guard let v = Double(text.trimmingCharacters(in: .whitespaces)) else {
            throw LifeboatError.invalid("\(what) must be a number between \(format(range.lowerBound)) and \(format(range.upperBound)) \(unit) (got \"\(text)\")")
        }
        return try check(v, range, what, unit: unit)
    }

    /// The environment variable `name` as a number within `range`: nil when unset or empty.
    public static func environment(_ name: String, _ range: ClosedRange<Double>, unit: String = "seconds",
                                   _ env: [String: String] = ProcessInfo.processInfo.environment) throws -> Double? {
        guard let s = env[name], !s.isEmpty else { return nil }
        return try number(s, range, name, unit: unit)
    }

    /// The environment variable `name` as an integer within `range`: nil when unset or empty.
    public static func environmentInt(_ name: String, _ range: ClosedRange<Int>,
                                      _ env: [String: String] = ProcessInfo.processInfo.environment) throws -> Int? {
        guard let s = env[name], !s.isEmpty else { return nil }
        return try integer(s, range, name)
    }

    /// Nanoseconds for `Task.sleep`, saturating instead of trapping (for values already checked, and as a
    /// last line of defence for values computed from them).
    public static func nanoseconds(_ seconds: Double) -> UInt64 {
        guard seconds.isFinite, seconds > 0 else { return 0 }
        let ns = seconds * 1e9
        return ns >= 1.8e19 ? UInt64.max : UInt64(ns)
    }

    static func format(_ v: Double) -> String {
        if v.isFinite, v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return "\(v)"
    }
}

extension UInt64 {
    /// Sum that stops at `UInt64.max` instead of trapping (totals of sizes read from a repository).
    @inlinable public func addingClamped(_ other: UInt64) -> UInt64 {
        let (r, o) = addingReportingOverflow(other)
        return o ? .max : r
    }
}
