import Foundation

/// Totals recorded by a backup.
public struct SnapshotSummary: Codable, Sendable, Equatable {
    public var backupStart: String = ""
    public var backupEnd: String = ""
    public var filesNew = 0, filesChanged = 0, filesUnmodified = 0
    public var dirsNew = 0, dirsChanged = 0, dirsUnmodified = 0
    public var dataBlobs = 0, treeBlobs = 0
    /// Bytes of new blobs before and after compression.
    public var dataAdded: UInt64 = 0, dataAddedPacked: UInt64 = 0
    public var totalFilesProcessed = 0
    public var totalBytesProcessed: UInt64 = 0
    public var errors = 0
    public init() {}
    enum CodingKeys: String, CodingKey {
        case backupStart = "backup_start", backupEnd = "backup_end"
        case filesNew = "files_new", filesChanged = "files_changed", filesUnmodified = "files_unmodified"
        case dirsNew = "dirs_new", dirsChanged = "dirs_changed", dirsUnmodified = "dirs_unmodified"
        case dataBlobs = "data_blobs", treeBlobs = "tree_blobs"
        case dataAdded = "data_added", dataAddedPacked = "data_added_packed"
        case totalFilesProcessed = "total_files_processed", totalBytesProcessed = "total_bytes_processed"
        case errors
    }
}

/// A snapshot: the root tree of one backup, and where, when and by whom it was taken.
public struct Snapshot: Codable, Sendable, Equatable {
    /// RFC 3339 time with nanoseconds, UTC.
    public var time: String
    public var tree: ID
    public var paths: [String]
    public var hostname: String
    public var username: String
    public var uid: UInt32
    public var gid: UInt32
    public var tags: [String]
    public var parent: ID?
    public var excludes: [String]?
    public var programVersion: String
    public var summary: SnapshotSummary?
    /// For a copy made by `lifeboat copy`: the ID of the snapshot it was first copied from.
    public var original: ID? = nil
    /// nil for a backup of files; `pg-base` or `pg-wal` for a database record (`database` says more), `sqlite-snapshot`
    /// or `sqlite-wal` for an SQLite record (`sqlite` says more).
    public var kind: String? = nil
    public var database: DatabaseRecord? = nil
    /// SQLite records (`sqlite-snapshot`, `sqlite-wal`).
    public var sqlite: SQLiteRecord? = nil

    public init(time: Date, tree: ID, paths: [String], hostname: String, username: String = "",
                uid: UInt32 = 0, gid: UInt32 = 0, tags: [String] = [], parent: ID? = nil,
                excludes: [String]? = nil, programVersion: String = LifeboatVersion.string,
                summary: SnapshotSummary? = nil) {
        self.time = Timestamp.format(time)
        self.tree = tree
        self.paths = paths
        self.hostname = hostname
        self.username = username
        self.uid = uid
        self.gid = gid
        self.tags = tags
        self.parent = parent
        self.excludes = excludes
        self.programVersion = programVersion
        self.summary = summary
    }

    public var date: Date { Timestamp.parse(time) ?? Date(timeIntervalSince1970: 0) }

    /// A backup of files (what `snapshots`, `forget`, `restore` and `latest` deal with), not a database record.
    public var isFiles: Bool { kind == nil }

    enum CodingKeys: String, CodingKey {
        case time, tree, paths, hostname, username, uid, gid, tags, parent, excludes
        case programVersion = "program_version", summary, original, kind, database, sqlite
    }

    public func encoded() throws -> Data {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return try enc.encode(self)
    }

    public static func decode(_ data: Data) throws -> Snapshot {
        do { return try JSONDecoder().decode(Snapshot.self, from: data) } catch {
            throw LifeboatError.corrupt("snapshot does not decode: \(error)")
        }
    }
}

public enum LifeboatVersion {
    public static let string = "0.1.0"
}

/// RFC 3339 timestamps with nanosecond precision in UTC, e.g. `2026-11-30T06:05:22.123456789Z`.
public enum Timestamp {
    /// RFC 3339 in UTC with nanoseconds. Times outside the years 0001 to 9999 (or NaN: a hostile or broken
    /// input's arithmetic) are written as the nearest of those bounds, never trapped on.
    public static func format(_ date: Date) -> String {
        let raw = date.timeIntervalSince1970
        let t = raw.isNaN ? 0 : min(max(raw, -62_135_596_800), 253_402_300_799)
        var secs = Int64(t.rounded(.down))
        var nanos = Int64(((t - Double(secs)) * 1e9).rounded())
        if nanos >= 1_000_000_000 { secs += 1; nanos -= 1_000_000_000 }
        let (y, mo, d, h, mi, s) = civil(secs)
        func p(_ v: Int64, _ w: Int) -> String {
            let s = String(v); return String(repeating: "0", count: max(0, w - s.count)) + s
        }
        return "\(p(y, 4))-\(p(mo, 2))-\(p(d, 2))T\(p(h, 2)):\(p(mi, 2)):\(p(s, 2)).\(p(nanos, 9))Z"
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
    public static func parse(_ s: String) -> Date? {
        let b = Array(s.utf8)
        guard b.count >= 20 else { return nil }
        func num(_ r: Range<Int>) -> Int64? {
            var v: Int64 = 0
            for i in r { guard i < b.count, b[i] >= 48, b[i] <= 57 else { return nil }; v = v * 10 + Int64(b[i] - 48) }
            return v
        }
        guard let y = num(0..<4), let mo = num(5..<7), let d = num(8..<10),
              let h = num(11..<13), let mi = num(14..<16), let sec = num(17..<19),
              (1...12).contains(mo), (1...31).contains(d), (0...23).contains(h), (0...59).contains(mi), (0...60).contains(sec)
        else { return nil }
        var i = 19
        var frac = 0.0
        if i < b.count, b[i] == 46 {
            i += 1
            var scale = 0.1
            while i < b.count, b[i] >= 48, b[i] <= 57 { frac += Double(b[i] - 48) * scale; scale /= 10; i += 1 }
        }
        var offset: Int64 = 0
        if i < b.count, b[i] == 43 || b[i] == 45 {
            guard let oh = num((i + 1)..<(i + 3)), let om = num((i + 4)..<(i + 6)), oh <= 23, om <= 59 else { return nil }
            offset = (oh * 3600 + om * 60) * (b[i] == 45 ? -1 : 1)
        } else if i >= b.count || b[i] != 90 { return nil }
        let days = daysFromCivil(y, mo, d)
        let t = days * 86400 + h * 3600 + mi * 60 + sec - offset
        return Date(timeIntervalSince1970: Double(t) + frac)
    }

    // Howard Hinnant's civil-from-days algorithms.
    public static func civil(_ secs: Int64) -> (Int64, Int64, Int64, Int64, Int64, Int64) {
        var days = secs / 86400
        var rem = secs % 86400
        if rem < 0 { rem += 86400; days -= 1 }
        let z = days + 719468
        let era = (z >= 0 ? z : z - 146096) / 146097
        let doe = z - era * 146097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        let y = yoe + era * 400 + (m <= 2 ? 1 : 0)
        return (y, m, d, rem / 3600, (rem % 3600) / 60, rem % 60)
    }

    public static func daysFromCivil(_ y0: Int64, _ m: Int64, _ d: Int64) -> Int64 {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146097 + doe - 719468
    }
}
