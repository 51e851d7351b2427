import Foundation

/// HTTP `Range` headers (RFC 9110, section 14.1.2), for servers of repository objects.
public enum HTTPRange {
    /// The byte range `spec` asks of an object of `size` bytes: `bytes=A-B` (B clamped to the end), `bytes=A-` or
    /// `bytes=-N` (the last N bytes). Nil for anything else, for several ranges, and for a range that cannot be
    /// satisfied (A at or past the end, N = 0, an empty object). Every number is parsed without overflow:
    /// `bytes=0-9223372036854775807` is the whole object, and 20-digit numbers are simply too large.
    public static func parse(_ spec: String, size: Int) -> Range<Int>? {
        guard size > 0 else { return nil }
        let s = spec.trimmingCharacters(in: .whitespaces)
        guard s.count <= 200, s.lowercased().hasPrefix("bytes=") else { return nil }
        let body = s.dropFirst(6)
        guard !body.contains(","), let dash = body.firstIndex(of: "-") else { return nil }
        // No blanks inside the range (RFC 9110 has none): "bytes=1 -5" is refused like any other malformed one.
        let first = String(body[..<dash])
        let last = String(body[body.index(after: dash)...])
        if first.isEmpty {
            // Suffix: the last N bytes (all of them if N exceeds the size).
            guard let n = number(last), n > 0 else { return nil }
            return max(0, size - min(n, size))..<size
        }
        guard let a = number(first), a < size else { return nil }
        if last.isEmpty { return a..<size }
        guard let b = number(last), b >= a else { return nil }
        return a..<(min(b, size - 1) + 1)
    }

    /// Decimal digits only; values above Int.max saturate (they are past any object's end anyway).
    static func number(_ s: String) -> Int? {
        guard !s.isEmpty, s.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        var v = 0
        for d in s.utf8 {
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (r, o2) = m.addingReportingOverflow(Int(d - 0x30))
            if o1 || o2 { return Int.max }
            v = r
        }
        return v
    }
}
