import Foundation
import LifeboatCore
import Yams

/// A problem in a configuration file, with the file, line and column it was found at.
public struct ConfigError: Error, CustomStringConvertible {
    public var description: String
    public init(_ file: String, _ mark: Mark?, _ message: String) {
        description = mark.map { "\(file):\($0.line):\($0.column): \(message)" } ?? "\(file): \(message)"
    }
}

/// Typed, validated reads from a YAML document; every failure names the position of the offending node.
/// Shared by the sites file and the proxy configuration (and, later, the daemon's).
public struct YAMLReader: Sendable {
    public let path: String
    public init(path: String) { self.path = path }

    /// Parses `text`, which must be a mapping at the top.
    public func document(_ text: String, describedAs what: String) throws -> (Yams.Node.Mapping, Yams.Node?) {
        let root: Yams.Node?
        do { root = try Yams.compose(yaml: text) } catch {
            throw ConfigError(path, nil, "not valid YAML: \(error)")
        }
        guard let top = root?.mapping else { throw ConfigError(path, root?.mark, "expected a mapping with \(what)") }
        return (top, root)
    }

    public func error(_ node: Yams.Node?, _ message: String) -> ConfigError { ConfigError(path, node?.mark, message) }

    /// Rejects keys other than `allowed`, at the unknown key's position.
    public func keys(_ m: Yams.Node.Mapping, _ allowed: [String]) throws {
        for k in m.keys where !allowed.contains(k.string ?? "") {
            throw ConfigError(path, k.mark, "unknown key \"\(k.string ?? "?")\" (expected one of: \(allowed.sorted().joined(separator: ", ")))")
        }
    }

    public func mapping(_ n: Yams.Node, _ what: String) throws -> Yams.Node.Mapping {
        guard let m = n.mapping else { throw error(n, "\(what) must be a mapping") }
        return m
    }

    /// A non-empty string; a missing required key is reported at `owner`.
    public func string(_ m: Yams.Node.Mapping, _ k: String, required: Bool = false, owner: Yams.Node? = nil) throws -> String? {
        guard let n = m[k] else {
            if required { throw error(owner, "missing `\(k)`") }
            return nil
        }
        guard n.scalar != nil, let s = n.string, !s.isEmpty else { throw error(n, "`\(k)` must be a non-empty string") }
        return s
    }

    public func strings(_ m: Yams.Node.Mapping, _ k: String) throws -> [String]? {
        guard let n = m[k] else { return nil }
        guard let seq = n.sequence, !seq.isEmpty else { throw error(n, "`\(k)` must be a list of strings") }
        return try seq.map { e in
            guard e.scalar != nil, let s = e.string else { throw error(e, "`\(k)` must be a list of strings") }
            return s
        }
    }

    public func int(_ m: Yams.Node.Mapping, _ k: String, _ range: ClosedRange<Int>) throws -> Int? {
        guard let n = m[k] else { return nil }
        guard let v = n.int, range.contains(v) else { throw error(n, "`\(k)` must be an integer in \(range.lowerBound)…\(range.upperBound)") }
        return v
    }

    public func bool(_ m: Yams.Node.Mapping, _ k: String) throws -> Bool? {
        guard let n = m[k] else { return nil }
        guard let v = n.bool else { throw error(n, "`\(k)` must be true or false") }
        return v
    }

    public func enumValue<E: RawRepresentable>(_ m: Yams.Node.Mapping, _ k: String, _ type: E.Type) throws -> E? where E.RawValue == String {
        guard let s = try string(m, k) else { return nil }
        guard let v = E(rawValue: s) else { throw error(m[k], "`\(k)`: unknown value \"\(s)\"") }
        return v
    }

    /// A positive duration in seconds: `100ms`, `30s`, `5m`, `1h30m`, `2d` or a bare number of seconds, within
    /// `range` (default: 1 ms to 365 days). `1e300`, `inf` and `nan` are errors here, not traps later.
    public func duration(_ m: Yams.Node.Mapping, _ k: String,
                         _ range: ClosedRange<Double> = 0.001...(365 * 86400)) throws -> Double? {
        guard let n = m[k] else { return nil }
        guard let s = n.string, let v = parseDurationValue(s) else {
            throw error(n, "`\(k)` must be a duration such as 100ms, 30s, 5m or 1h")
        }
        guard v.isFinite, range.contains(v) else {
            throw error(n, "`\(k)`: \(s) is out of range: give a duration from \(describeSeconds(range.lowerBound)) to \(describeSeconds(range.upperBound))")
        }
        return v
    }
}

/// Seconds in `100ms`, or in what `parseSeconds` reads (`90`, `30s`, `1h30m`, `2d`).
public func parseDuration(_ s: String) -> Double? {
    let t = s.trimmingCharacters(in: .whitespaces)
    if t.hasSuffix("ms") {
        guard let v = try? parseSeconds(String(t.dropLast(2))) else { return nil }
        return v / 1000
    }
    return try? parseSeconds(t)
}

/// The number of seconds `s` spells (`100ms`, `90`, `1h30m`, `1e300`), in range or not; nil if it is not a duration
/// at all. Callers check the range.
public func parseDurationValue(_ s: String) -> Double? {
    let t = s.trimmingCharacters(in: .whitespaces)
    guard !t.isEmpty else { return nil }
    if t.hasSuffix("ms") { return (try? parseSecondsValue(String(t.dropLast(2)))).map { $0 / 1000 } }
    return try? parseSecondsValue(t)
}

/// `100ms`, `30s`, `5m`, `2h` or `3d`, for messages about durations.
public func describeSeconds(_ v: Double) -> String {
    if v < 1 { return "\(Int((v * 1000).rounded()))ms" }
    for (unit, size) in [("d", 86400.0), ("h", 3600.0), ("m", 60.0)] where v >= size && v.truncatingRemainder(dividingBy: size) == 0 {
        return "\(Int(v / size))\(unit)"
    }
    return v == v.rounded() ? "\(Int(v))s" : "\(v)s"
}
