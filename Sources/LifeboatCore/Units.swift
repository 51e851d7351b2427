import Foundation

/// Sizes and spans of time as people read them, shared by the CLI's text output and the agent's logs.
public enum Units {
    /// `1 snapshot`, `2 snapshots` (`plural` for nouns that do not take an s).
    public static func count(_ n: Int, _ noun: String, plural: String? = nil) -> String {
        "\(n) \(n == 1 ? noun : plural ?? noun + "s")"
    }

    /// `512 B`, `1.50 KiB`, `6.22 GiB` (powers of 1024, as restic prints).
    public static func bytes(_ b: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var v = Double(b)
        var i = 0
        while v >= 1024 && i < units.count - 1 { v /= 1024; i += 1 }
        return i == 0 ? "\(b) B" : String(format: "%.2f %@", v, units[i])
    }

    /// A span with its units: `45s`, `11m 53s`, `2h 05m`, `3d 4h`; negative or unknown spans (a clock
    /// that went back, NaN) are `0s` and `unknown`.
    public static func span(_ seconds: Double) -> String {
        guard seconds.isFinite, abs(seconds) < 1e12 else { return "unknown" }
        let t = max(0, Int(seconds.rounded(.down)))
        switch t {
        case ..<60: return "\(t)s"
        case ..<3600: return "\(t / 60)m \(String(format: "%02d", t % 60))s"
        case ..<86_400: return "\(t / 3600)h \(String(format: "%02d", t / 60 % 60))m"
        default: return "\(t / 86_400)d \(t / 3600 % 24)h"
        }
    }

    /// A clock reading for elapsed time and ETAs on progress lines: `0:07`, `12:30`, `1:02:03`.
    public static func clock(_ s: Double) -> String {
        guard s.isFinite, s >= 0, s < 1e12 else { return "--:--" }
        let t = Int(s)
        return t >= 3600 ? String(format: "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60) : String(format: "%d:%02d", t / 60, t % 60)
    }
}
