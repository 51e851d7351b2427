import Foundation
import Testing
@testable import LifeboatCore

@Suite struct IDTests {
    @Test func hexRoundTrip() {
        let hex = "00ff10a0b1c2d3e4f5061728394a5b6c7d8e9fa0b1c2d3e4f5061728394a5b6c"
        let id = ID(hex: hex)!
        #expect(id.hex == hex)
        #expect(id.bytes.count == 32)
        #expect(ID(bytes: id.bytes) == id)
        #expect(ID(hex: "zz") == nil)
        #expect(ID(hex: String(hex.dropLast())) == nil)
    }
}

@Suite struct TreeTests {
    @Test func deterministicAndNonUTF8Names() throws {
        var a = Node(name: [0x66, 0xFF, 0xFE], type: .file)
        a.content = [ID.zero]
        a.xattrs = [ExtendedAttribute(name: "user.x", value: [0, 1, 2])]
        var b = Node(name: Array("b".utf8), type: .symlink)
        b.linkTarget = [0x2E, 0x2E, 0x80]
        let t1 = Tree(nodes: [b, a]), t2 = Tree(nodes: [a, b])
        #expect(t1.encoded() == t2.encoded())
        let decoded = try Tree.decode(Data(t1.encoded()))
        #expect(decoded == t1)
        #expect(String(decoding: t1.encoded(), as: UTF8.self).contains("name_b64"))
    }

    /// The hand-written canonical encoder agrees with Foundation's sorted-keys encoder, byte for byte.
    @Test func canonicalEncodingMatchesFoundation() throws {
        var n = Node(name: Array("we\"ird/\\ name\n\t\u{1}\u{8}\u{c}\r é 🚀".utf8), type: .file)
        n.mode = 0o4755; n.uid = 1000; n.gid = 100; n.user = "ü\"ser"; n.group = "grp"
        n.mtimeNs = -5; n.atimeNs = 1_700_000_000_123_456_789; n.ctimeNs = 3; n.inode = .max; n.device = 77; n.links = 2
        n.size = 12345; n.content = [ID.zero, ID(hex: String(repeating: "af", count: 32))!]; n.sparse = true
        n.xattrs = [ExtendedAttribute(name: "user.a", value: [0, 255, 10])]
        var d = Node(name: Array("dir".utf8), type: .dir); d.subtree = ID.zero
        var l = Node(name: [0xC3, 0x28], type: .symlink); l.linkTarget = [0xFF, 0x2F]
        var c = Node(name: Array("dev".utf8), type: .chardev); c.rdev = 259
        let tree = Tree(nodes: [n, d, l, c])
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let foundation = try enc.encode(tree)
        #expect(String(decoding: tree.encoded(), as: UTF8.self) == String(decoding: foundation, as: UTF8.self))
        #expect(try Tree.decode(Data(tree.encoded())) == tree)
        // The reader takes any valid JSON of the schema: pretty-printed, other key order, unknown keys.
        enc.outputFormatting = [.prettyPrinted]
        var pretty = String(decoding: try enc.encode(tree), as: UTF8.self)
        pretty = pretty.replacingOccurrences(of: "\"nodes\" :", with: "\"future\" : {\"a\": [1, null, true]}, \"nodes\" :")
        #expect(try Tree.decode(Data(pretty.utf8)) == tree)
        let bytes = tree.encoded()
        for cut in [1, 10, bytes.count / 2, bytes.count - 1] {
            #expect(throws: LifeboatError.self) { _ = try Tree.decode(Array(bytes.prefix(cut))) }
        }
        #expect(throws: LifeboatError.self) { _ = try Tree.decode(Array("{\"nodes\":[{\"name\":\"x\"}]}".utf8)) }
    }

    @Test func safeNames() {
        #expect(Node.isSafeName(Array("ok".utf8)))
        for bad in ["", ".", "..", "a/b", "/"] { #expect(!Node.isSafeName(Array(bad.utf8))) }
        #expect(!Node.isSafeName([0x61, 0x00]))
    }
}

@Suite struct TimestampTests {
    @Test func roundTrip() {
        let d = Date(timeIntervalSince1970: 1_700_000_000.5)
        let s = Timestamp.format(d)
        #expect(s == "2023-11-14T22:13:20.500000000Z")
        #expect(Timestamp.parse(s)!.timeIntervalSince1970 == 1_700_000_000.5)
        #expect(Timestamp.parse("2023-11-14T23:13:20+01:00")!.timeIntervalSince1970 == 1_700_000_000)
        #expect(Timestamp.parse("garbage") == nil)
    }
}

@Suite struct PatternTests {
    @Test func globs() {
        #expect(PathPattern("*.log").matches("/var/log/x.log"))
        #expect(!PathPattern("*.log").matches("/var/log/x.txt"))
        #expect(PathPattern("/var/log").matches("/var/log/x.txt"))
        #expect(!PathPattern("/log").matches("/var/log/x.txt"))
        #expect(PathPattern("node_modules").matches("/a/node_modules/b/c"))
        #expect(PathPattern("/a/**/c").matches("/a/b/x/c"))
        #expect(PathPattern("/a/**/c").matches("/a/c"))
        #expect(PathPattern("f[0-9]?").matches("/x/f1a"))
        #expect(!PathPattern("f[!0-9]").matches("/x/f1"))
        #expect(PathPattern("/a/b/*.txt").childMayMatch(Array("/a".utf8)))
        #expect(!PathPattern("/a/b/*.txt").childMayMatch(Array("/c".utf8)))
    }
}

@Suite struct RetentionTests {
    let utc = TimeZone(identifier: "UTC")!
    func items(_ times: [String], tags: [[String]] = []) -> [RetentionItem] {
        times.enumerated().map { RetentionItem(time: Timestamp.parse($1)!, tags: $0 < tags.count ? tags[$0] : []) }
    }

    /// Golden case: daily snapshots over 40 days with keep-daily 7 and keep-weekly 4.
    @Test func dailyWeeklyGolden() {
        var times: [String] = []
        for d in 1...40 {
            let date = Date(timeIntervalSince1970: 1_704_067_200 + Double(d - 1) * 86400 + 3600)  // 2024-01-01 01:00Z + d
            times.append(Timestamp.format(date))
        }
        let ds = Retention.apply(items(times), policy: RetentionPolicy(daily: 7, weekly: 4), timeZone: utc)
        let kept = ds.filter(\.keep).map { String(times[$0.index].prefix(10)) }.sorted()
        // Last 7 days, plus the newest of each of the 4 newest weeks (Sundays close ISO weeks).
        #expect(kept == ["2024-01-21", "2024-01-28", "2024-02-03", "2024-02-04", "2024-02-05", "2024-02-06",
                         "2024-02-07", "2024-02-08", "2024-02-09"])
        let newest = ds.first { times[$0.index].hasPrefix("2024-02-09") }!
        #expect(newest.reasons == ["daily snapshot", "weekly snapshot"])
        let sunday = ds.first { times[$0.index].hasPrefix("2024-01-28") }!
        #expect(sunday.reasons == ["weekly snapshot"])
    }

    @Test func lastTagsWithin() {
        let times = ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z", "2024-01-04T00:00:00Z"]
        let ds = Retention.apply(items(times, tags: [["keep", "x"], [], [], []]),
                                 policy: RetentionPolicy(last: 1, within: CalendarDuration(days: 1), tags: [["keep"]]), timeZone: utc)
        #expect(ds.map(\.keep) == [true, false, true, true])
        #expect(ds[0].reasons == ["has tags keep"])
        #expect(ds[3].reasons == ["within 1d", "last snapshot"])
        #expect(ds[2].reasons == ["within 1d"])
    }

    @Test func unlimitedAndDurations() throws {
        let times = (1...5).map { "2024-0\($0)-01T00:00:00Z" }
        let ds = Retention.apply(items(times), policy: RetentionPolicy(monthly: -1), timeZone: utc)
        #expect(ds.allSatisfy { $0.keep })
        #expect(try CalendarDuration(parsing: "1y2m3d4h") == CalendarDuration(years: 1, months: 2, days: 3, hours: 4))
        #expect(throws: LifeboatError.self) { try CalendarDuration(parsing: "5x") }
        #expect(try parseSeconds("1h30m") == 5400)
        #expect(try parseSeconds("0s") == 0)
    }
}

@Suite struct SpellingTests {
    @Test func closeWordsAreSuggested() {
        let commands = ["init", "backup", "snapshots", "ls", "diff", "restore", "dump", "find", "stats", "check",
                        "forget", "prune", "repair", "unlock", "key", "copy", "replicate", "sites", "serve", "proxy", "version"]
        #expect(closestMatch("snapshot", among: commands) == "snapshots")
        #expect(closestMatch("restroe", among: commands) == "restore")
        #expect(closestMatch("bakup", among: commands) == "backup")
        #expect(closestMatch("Prune", among: commands) == "prune")
        #expect(closestMatch("lss", among: commands) == "ls")
        #expect(closestMatch("xyzzy", among: commands) == nil)
        #expect(closestMatch("", among: commands) == nil)
        #expect(closestMatch(String(repeating: "a", count: 10_000), among: commands) == nil)
    }
}

@Suite struct UnitsTests {
    @Test func spansHaveUnits() {
        #expect(Units.span(0) == "0s")
        #expect(Units.span(45.9) == "45s")
        #expect(Units.span(713) == "11m 53s")
        #expect(Units.span(3600) == "1h 00m")
        #expect(Units.span(7199) == "1h 59m")
        #expect(Units.span(90_000) == "1d 1h")
        #expect(Units.span(-5) == "0s")
        #expect(Units.span(.nan) == "unknown")
        #expect(Units.span(.infinity) == "unknown")
        #expect(Units.span(1e300) == "unknown")
        #expect(Units.span(-1e19) == "unknown")
        #expect(Units.span(-.infinity) == "unknown")
    }

    @Test func bytesInBinaryUnits() {
        #expect(Units.bytes(0) == "0 B")
        #expect(Units.bytes(1023) == "1023 B")
        #expect(Units.bytes(1536) == "1.50 KiB")
        #expect(Units.bytes(UInt64.max).hasSuffix("PiB"))
    }

    @Test func clockReadings() {
        #expect(Units.clock(7) == "0:07")
        #expect(Units.clock(3723) == "1:02:03")
        #expect(Units.clock(-1) == "--:--")
    }
}

@Suite struct NetworkErrorTextTests {
    @Test func namesThePeerAndTheCause() {
        #expect(NetworkErrorText.describe(errno: ECONNREFUSED, peer: "127.0.0.1:8000").hasPrefix("connection refused by 127.0.0.1:8000"))
        #expect(NetworkErrorText.describe(errno: ETIMEDOUT, peer: "10.0.0.1:443").hasPrefix("connection to 10.0.0.1:443 timed out"))
        #expect(NetworkErrorText.describe(errno: ECONNRESET, peer: "h:1") == "connection reset by h:1")
        // Unknown numbers still name the peer, with the system's words.
        #expect(NetworkErrorText.describe(errno: 9999, peer: "h:1").hasPrefix("connection to h:1 failed: "))
    }

    @Test func ipv6PeersInBrackets() {
        #expect(NetworkErrorText.peer(host: "::1", port: 80) == "[::1]:80")
        #expect(NetworkErrorText.peer(host: "[::1]", port: 80) == "[::1]:80")
        #expect(NetworkErrorText.peer(host: "example.com", port: 443) == "example.com:443")
    }
}

@Suite struct ProgressLineTests {
    let line = ProgressLine(elapsed: 12, items: (1234, 5000, "files"), bytes: (1_288_490_188, 2_899_102_924))

    @Test func fitsEveryWidth() {
        // Never as wide as the terminal (the last column wraps on some), whatever the width; no newline.
        for width in [0, 1, 9, 10, 20, 40, 60, 80, 120, 200, 5000] {
            let text = line.render(width: width)
            #expect(text.count < max(10, min(width, 1000)), "width \(width): \(text.count) characters")
            #expect(!text.contains("\n"))
        }
    }

    @Test func showsPercentRateAndETA_andABarWhenThereIsRoom() {
        let wide = line.render(width: 120)
        #expect(wide.hasPrefix("[0:12] ["))
        #expect(wide.contains(" 44.4%"))
        #expect(wide.contains("1234/5000 files"))
        #expect(wide.contains("1.20 GiB/2.70 GiB"))
        #expect(wide.contains("102.40 MiB/s"))
        #expect(wide.contains("ETA 0:15"))
        // Narrower: the rate and the counts give way first; the percent and the ETA stay; the bar takes what is left.
        let mid = line.render(width: 60)
        #expect(mid.contains("ETA 0:15") && mid.contains("44.4%") && !mid.contains("/s") && !mid.contains("files"))
        #expect(line.render(width: 30) == "[0:12]  44.4%  ETA 0:15")
    }

    @Test func barCellsFollowTheFraction() throws {
        let half = ProgressLine(elapsed: 1, items: (1, 2, "x")).render(width: 80)
        let parts = half.split(separator: "[")
        try #require(parts.count == 2, "\(half)")
        let bar = parts[1].prefix { $0 != "]" }
        #expect(bar.count >= 10 && bar.filter { $0 == "#" }.count * 2 == bar.count, "\(half)")
    }

    @Test func unknownTotalsGiveNoPercentNoBarNoETA() {
        let scanning = ProgressLine(elapsed: 3, items: (10, nil, "files"), bytes: (4096, nil))
        #expect(scanning.fraction == nil && scanning.eta == nil)
        let text = scanning.render(width: 100)
        #expect(!text.contains("%") && !text.contains("ETA") && !text.contains("#"))
        #expect(text.contains("10 files"))
    }

    @Test func hostileFiguresDoNotTrap() {
        let odd = ProgressLine(elapsed: .nan, items: (Int.max, 1, "x"), bytes: (UInt64.max, 1))
        _ = odd.render(width: 80)
        #expect(odd.fraction == 1)
        #expect(ProgressLine(elapsed: .infinity, items: (-5, 10, "x")).render(width: 80).contains("0.0%"))
        #expect(ProgressLine(elapsed: 0, bytes: (0, 0)).fraction == nil)
    }
}

@Suite struct TimestampRangeTests {
    @Test func fieldsOutOfRangeAreNotTimes() {
        #expect(Timestamp.parse("2026-19-45T99:00:00Z") == nil)
        #expect(Timestamp.parse("2026-12-01T24:00:00Z") == nil)
        #expect(Timestamp.parse("2026-12-01T06:60:00Z") == nil)
        #expect(Timestamp.parse("2026-12-01T06:00:00+24:00") == nil)
        #expect(Timestamp.parse("2026-00-01T06:00:00Z") == nil)
        #expect(Timestamp.parse("2026-12-01T06:00:60Z") != nil)  // a leap second
        #expect(Timestamp.parse("2026-12-01T06:00:00.5+01:30") != nil)
    }

    @Test func formatNeverTraps() {
        #expect(Timestamp.format(Date(timeIntervalSince1970: .nan)) == "1970-01-01T00:00:00.000000000Z")
        #expect(Timestamp.format(Date(timeIntervalSince1970: 1e300)).hasPrefix("9999-12-31T23:59:59"))
        #expect(Timestamp.format(Date(timeIntervalSince1970: -1e300)).hasPrefix("0001-01-01T00:00:00"))
        #expect(Timestamp.format(Date(timeIntervalSince1970: Double(Int64.max))).hasPrefix("9999-"))
    }
}
