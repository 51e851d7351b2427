import LifeboatCore

/// A position in PostgreSQL's write-ahead log, written as PostgreSQL writes it (`16/B374D848`).
public struct LSN: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var value: UInt64
    public init(_ value: UInt64) { self.value = value }
    public static func < (a: LSN, b: LSN) -> Bool { a.value < b.value }

    public var description: String {
        String(value >> 32, radix: 16, uppercase: true) + "/" + String(value & 0xFFFF_FFFF, radix: 16, uppercase: true)
    }

    /// `X/Y` with one to eight hexadecimal digits on each side; nil for anything else.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, (1...8).contains(parts[0].count), (1...8).contains(parts[1].count),
              let hi = UInt64(parts[0], radix: 16), let lo = UInt64(parts[1], radix: 16) else { return nil }
        value = hi << 32 | lo
    }
}

/// A segment size: a power of two from 1 MiB to 1 GiB (initdb's `--wal-segsize`).
public struct SegmentSize: Hashable, Sendable {
    public let bytes: UInt64
    public static let `default` = SegmentSize(checked: 16 << 20)
    init(checked: UInt64) { bytes = checked }
    public init?(_ bytes: UInt64) {
        guard bytes >= 1 << 20, bytes <= 1 << 30, bytes & (bytes - 1) == 0 else { return nil }
        self.bytes = bytes
    }
    /// Segments per 4 GiB "log" (the middle eight digits of a segment's name).
    public var perLog: UInt64 { 0x1_0000_0000 / bytes }
    public func segment(of lsn: LSN) -> UInt64 { lsn.value / bytes }
    public func start(of segment: UInt64) -> LSN { LSN(segment &* bytes) }
}

/// The name of a file of the WAL archive, as PostgreSQL passes it to `archive_command` (`%f`).
public struct WALFileName: Hashable, Sendable, Comparable, CustomStringConvertible {
    public enum Kind: String, Sendable, Codable {
        /// `000000010000000000000003`: a segment.
        case segment
        /// `00000002.history`: the history of a timeline (which timeline it branched from, where).
        case history
        /// `000000010000000000000003.00000028.backup`: a base backup's history file.
        case backup
        /// `000000010000000000000003.partial`: the last, incomplete segment of a timeline a promotion ended.
        case partial
    }
    public let name: String
    public let kind: Kind
    public let timeline: UInt32
    /// For every kind but `history`: the middle and last eight digits.
    public let log: UInt32
    public let seg: UInt32

    public var description: String { name }
    public static func < (a: WALFileName, b: WALFileName) -> Bool { a.name < b.name }

    /// Parses a file name; nil unless it is exactly one of the four kinds (upper-case hexadecimal digits, as
    /// PostgreSQL writes them). The timeline may not be 0.
    public init?(_ name: String) {
        let b = Array(name.utf8)
        func hex(_ r: Range<Int>) -> UInt32? {
            guard r.upperBound <= b.count else { return nil }
            var v: UInt32 = 0
            for i in r {
                let c = b[i]
                let d: UInt32
                switch c {
                case 48...57: d = UInt32(c - 48)
                case 65...70: d = UInt32(c - 55)
                default: return nil
                }
                v = v << 4 | d
            }
            return v
        }
        guard b.count >= 8, let tli = hex(0..<8), tli != 0 else { return nil }
        if b.count == 16, name.hasSuffix(".history") {
            self.name = name; kind = .history; timeline = tli; log = 0; seg = 0
            return
        }
        guard b.count >= 24, let l = hex(8..<16), let s = hex(16..<24) else { return nil }
        let rest = String(decoding: b[24...], as: UTF8.self)
        let k: Kind
        if rest.isEmpty {
            k = .segment
        } else if rest == ".partial" {
            k = .partial
        } else if b.count == 40, rest.hasSuffix(".backup"), b[24] == 46, hex(25..<33) != nil {
            k = .backup
        } else {
            return nil
        }
        self.name = name; kind = k; timeline = tli; log = l; seg = s
    }

    /// The segment's number in the log (its start divided by the segment size); nil when the name's last eight
    /// digits exceed what a log holds at this segment size (a name from a cluster of another segment size).
    public func segmentNumber(_ size: SegmentSize) -> UInt64? {
        guard kind != .history, UInt64(seg) < size.perLog else { return nil }
        return UInt64(log) * size.perLog + UInt64(seg)
    }

    /// The name of segment `number` of `timeline`.
    public static func segment(timeline: UInt32, number: UInt64, size: SegmentSize) -> String {
        func h(_ v: UInt64) -> String {
            let s = String(v, radix: 16, uppercase: true)
            return String(repeating: "0", count: max(0, 8 - s.count)) + s
        }
        return h(UInt64(timeline)) + h((number / size.perLog) & 0xFFFF_FFFF) + h(number % size.perLog)
    }

    public static func history(_ timeline: UInt32) -> String {
        let s = String(timeline, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 8 - s.count)) + s + ".history"
    }
}

/// A timeline's switch from its parent, as a `.history` file records it: timeline `parent` ended at `end`.
public struct TimelineSwitch: Hashable, Sendable {
    public var parent: UInt32
    public var end: LSN
    public init(parent: UInt32, end: LSN) { self.parent = parent; self.end = end }

    /// The lines of a history file: `parentTLI<TAB>switchpoint<TAB>reason`, comments after `#`, blank lines.
    /// Parents must increase and switch points may not go back; anything else is an error naming the line.
    public static func parse(_ bytes: [UInt8]) throws -> [TimelineSwitch] {
        guard bytes.count <= 1 << 20 else { throw LifeboatError.corrupt("timeline history of \(bytes.count) bytes (at most 1 MiB)") }
        var out: [TimelineSwitch] = []
        var lineNumber = 0
        for raw in bytes.split(separator: 10, omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = String(decoding: raw, as: UTF8.self)
            let content = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let fields = content.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            if fields.isEmpty { continue }
            guard fields.count >= 2, let tli = UInt32(fields[0]), tli > 0, let lsn = LSN(String(fields[1])) else {
                throw LifeboatError.corrupt("timeline history line \(lineNumber) is not \"TIMELINE SWITCHPOINT [REASON]\"")
            }
            if let last = out.last, tli <= last.parent || lsn < last.end {
                throw LifeboatError.corrupt("timeline history line \(lineNumber): timelines must increase and switch points may not go back")
            }
            out.append(TimelineSwitch(parent: tli, end: lsn))
        }
        return out
    }
}
