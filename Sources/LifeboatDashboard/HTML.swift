import Foundation
import Glibc

/// HTML text building for the dashboard. Every string that comes from outside the code (source, site, pool and
/// backend names, errors, user names) goes through `escape`: a name like `<script>` is shown as text.
public enum HTML {
    /// `s` with `& < > " '` replaced by entities, safe in element text and in quoted attribute values.
    public static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for c in s.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            // Control characters other than tab and newline are not text a page should carry.
            case "\u{00}"..."\u{08}", "\u{0B}", "\u{0C}", "\u{0E}"..."\u{1F}", "\u{7F}": out += "\u{FFFD}"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// A path segment for a link (`/ui/sources/NAME`): every byte outside the unreserved set percent-encoded.
    public static func pathSegment(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            default:
                out += String(format: "%%%02X", b)
            }
        }
        return out
    }

    /// A duration as people read it: `45s`, `12m`, `3h 5m`, `2d 4h`.
    public static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite else { return "?" }
        let s = max(0, seconds)
        if s < 1 { return String(format: "%.2fs", s) }
        if s < 90 { return "\(Int(s.rounded()))s" }
        if s < 5400 { return "\(Int((s / 60).rounded()))m" }
        if s < 172_800 {
            let m = Int(s / 60)
            return m % 60 == 0 ? "\(m / 60)h" : "\(m / 60)h \(m % 60)m"
        }
        let h = Int(min(s, 1e12) / 3600)
        return h % 24 == 0 ? "\(h / 24)d" : "\(h / 24)d \(h % 24)h"
    }

    /// Bytes with a binary unit: `512 B`, `3.4 MiB`.
    public static func bytes(_ n: UInt64) -> String {
        if n < 1024 { return "\(n) B" }
        var v = Double(n)
        for unit in ["KiB", "MiB", "GiB", "TiB", "PiB"] {
            v /= 1024
            if v < 1024 || unit == "PiB" { return String(format: v < 10 ? "%.1f" : "%.0f", v) + " " + unit }
        }
        return "\(n) B"
    }

    /// A time as UTC `2026-12-02 15:04:05`.
    public static func time(_ d: Date) -> String {
        let s = d.timeIntervalSince1970
        guard s.isFinite, abs(s) < 1e11 else { return "?" }
        var t = time_t(s.rounded(.down))
        var tm = Glibc.tm()
        guard gmtime_r(&t, &tm) != nil else { return "?" }
        return String(format: "%04d-%02d-%02d %02d:%02d:%02d", Int(tm.tm_year) + 1900, Int(tm.tm_mon) + 1, Int(tm.tm_mday),
                      Int(tm.tm_hour), Int(tm.tm_min), Int(tm.tm_sec))
    }
}

/// An `application/x-www-form-urlencoded` body, bounded: at most `maxFields` fields of at most `maxBytes` in all.
public struct FormBody: Sendable, Equatable {
    public var fields: [String: String]

    public static let maxBytes = 16 << 10
    public static let maxFields = 32

    public enum Problem: Error, Equatable { case tooLarge, tooManyFields, notText }

    public init(_ body: [UInt8]) throws(Problem) {
        guard body.count <= FormBody.maxBytes else { throw .tooLarge }
        var f: [String: String] = [:]
        let pairs = body.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true)
        guard pairs.count <= FormBody.maxFields else { throw .tooManyFields }
        for p in pairs {
            let kv = p.split(separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false)
            guard let k = FormBody.decode(kv[0]), let v = FormBody.decode(kv.count > 1 ? kv[1] : []) else { throw .notText }
            if f[k] == nil { f[k] = v }  // the first of repeated fields counts
        }
        fields = f
    }

    public subscript(_ key: String) -> String? { fields[key] }

    /// `+` is a space, `%XX` a byte; the result must be UTF-8.
    static func decode(_ s: ArraySlice<UInt8>) -> String? {
        var out: [UInt8] = []
        out.reserveCapacity(s.count)
        var i = s.startIndex
        while i < s.endIndex {
            let b = s[i]
            if b == UInt8(ascii: "+") {
                out.append(0x20)
            } else if b == UInt8(ascii: "%") {
                guard s.distance(from: i, to: s.endIndex) >= 3, let h = hex(s[i + 1]), let l = hex(s[i + 2]) else { return nil }
                out.append(h << 4 | l)
                i += 2
            } else {
                out.append(b)
            }
            i += 1
        }
        return String(validating: out, as: UTF8.self)
    }

    static func hex(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return b - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return b - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return b - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
