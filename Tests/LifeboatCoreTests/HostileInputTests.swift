import Foundation
import Testing
@testable import LifeboatCore

/// Crafted tree blobs and numbers from outside: each is an error naming the problem, never a trap.
@Suite struct HostileTreeTests {
    func tree(_ nodeJSON: String) -> [UInt8] { Array("{\"nodes\":[\(nodeJSON)]}".utf8) }

    @Test(arguments: [
        #"{"name":"\ud800","type":"file"}"#,                 // lone high surrogate at the end
        #"{"name":"\ud800x","type":"file"}"#,                // high surrogate followed by a letter
        #"{"name":"\ud800\u0041","type":"file"}"#,           // high surrogate followed by a non-surrogate escape
        #"{"name":"\udc00","type":"file"}"#,                 // lone low surrogate
        #"{"name":"\ud800\ud800","type":"file"}"#,           // two high surrogates
    ])
    func loneSurrogatesAreDamage(_ node: String) {
        #expect(throws: LifeboatError.self) { try Tree.decode(tree(node)) }
    }

    @Test func validSurrogatePairDecodes() throws {
        let t = try Tree.decode(tree(#"{"name":"\ud83d\ude00","type":"file"}"#))
        #expect(t.nodes[0].nameString == "😀")
    }

    @Test func deepNestingIsDamageNotAStackOverflow() {
        let deep = String(repeating: "[", count: 200_000) + String(repeating: "]", count: 200_000)
        #expect(throws: LifeboatError.self) { try Tree.decode(tree(#"{"name":"a","type":"file","x":\#(deep)}"#)) }
        let objects = String(repeating: "{\"a\":", count: 100_000) + "1" + String(repeating: "}", count: 100_000)
        #expect(throws: LifeboatError.self) { try Tree.decode(tree(#"{"name":"a","type":"file","x":\#(objects)}"#)) }
        // Nesting a little deeper than the schema's own is still fine in skipped values.
        #expect(throws: Never.self) { try Tree.decode(tree(#"{"name":"a","type":"file","x":[[[[{"b":[1]}]]]]}"#)) }
    }

    @Test func sizesBeyondAFileOffsetAreDamage() throws {
        #expect(throws: LifeboatError.self) { try Tree.decode(tree(#"{"name":"a","type":"file","size":18446744073709551615}"#)) }
        #expect(throws: LifeboatError.self) { try Tree.decode(tree(#"{"name":"a","type":"file","size":9223372036854775808}"#)) }
        #expect(throws: LifeboatError.self) { try Tree.decode(tree(#"{"name":"a","type":"file","size":184467440737095516150}"#)) }
        let ok = try Tree.decode(tree(#"{"name":"a","type":"file","size":9223372036854775807}"#))
        #expect(ok.nodes[0].size == UInt64(Int64.max))
    }

    @Test(arguments: [
        #"{"name":"a","type":"file","mtime_ns":-9223372036854775809}"#,
        #"{"name":"a","type":"file","mode":4294967296}"#,
        #"{"name":"a","type":"file","x":}"#,
        #"{"name":"a","type":"file","x":,"y":1}"#,
        #"{"name":"a","type":"nope"}"#,
        #"{"name":"a"}"#,
        #"{"name":"a","type":"file","content":["zz"]}"#,
        #"{"name":"a","type":"file","name_b64":"!!!"}"#,
        #"{"name":"a","type":"file""#,
        #"{"name":"\"#,
    ])
    func malformedNodesAreErrors(_ node: String) {
        #expect(throws: LifeboatError.self) { try Tree.decode(tree(node)) }
    }

    /// Lookups by name search sorted names: a tree out of order or with a name twice would hide entries.
    @Test func namesOutOfOrderOrRepeatedAreDamage() {
        #expect(throws: LifeboatError.self) { try Tree.decode(tree(#"{"name":"b","type":"file"},{"name":"a","type":"file"}"#)) }
        #expect(throws: LifeboatError.self) { try Tree.decode(tree(#"{"name":"a","type":"file"},{"name":"a","type":"dir"}"#)) }
        #expect(throws: Never.self) { try Tree.decode(tree(#"{"name":"a","type":"file"},{"name":"b","type":"file"}"#)) }
    }

    @Test func extremeTimesDecode() throws {
        let t = try Tree.decode(tree(#"{"name":"a","type":"file","mtime_ns":-9223372036854775808,"atime_ns":9223372036854775807}"#))
        #expect(t.nodes[0].mtimeNs == .min)
    }
}

@Suite struct BoundsTests {
    @Test(arguments: ["1e300", "inf", "nan", "-1", "1e11", "0x10", "infinity", "9999999999999999999999s", "1e300m", ""])
    func hostileDurationsAreRejected(_ s: String) {
        #expect(throws: LifeboatError.self) { try parseSeconds(s) }
    }

    @Test func plainDurations() throws {
        #expect(try parseSeconds("90") == 90)
        #expect(try parseSeconds("1h30m") == 5400)
        #expect(try parseSeconds("2d") == 172_800)
        #expect(try parseSeconds("1.5s") == 1.5)
    }

    @Test func checksNameTheSettingAndTheRange() {
        do {
            _ = try Bounds.number("1e300", 0.001...86400, "--timeout")
            Issue.record("accepted 1e300")
        } catch let e as LifeboatError {
            #expect(e.message.contains("--timeout"))
            #expect(e.message.contains("86400"))
        } catch { Issue.record("\(error)") }
        #expect(throws: LifeboatError.self) { try Bounds.integer("99999999999999999999", 1...100, "x") as Int }
        #expect(throws: LifeboatError.self) { try Bounds.check(Double.nan, 0...1, "x") }
        #expect(throws: LifeboatError.self) { try Bounds.check(Double.infinity, 0...Double.greatestFiniteMagnitude, "x") }
        #expect((try? Bounds.environment("LB_T", 0...10, ["LB_T": "5"])) == 5)
        #expect((try? Bounds.environment("LB_T", 0...10, ["LB_T": ""])) == .some(nil))
        #expect(throws: LifeboatError.self) { try Bounds.environment("LB_T", 0...10, ["LB_T": "1e300"]) }
    }

    @Test func nanosecondsSaturate() {
        #expect(Bounds.nanoseconds(1e300) == UInt64.max)
        #expect(Bounds.nanoseconds(.infinity) == 0)
        #expect(Bounds.nanoseconds(-5) == 0)
        #expect(Bounds.nanoseconds(1.5) == 1_500_000_000)
        #expect(UInt64.max.addingClamped(1) == UInt64.max)
    }
}
