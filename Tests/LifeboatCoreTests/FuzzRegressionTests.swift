import Foundation
import Testing
import LifeboatCore
import LifeboatTestSupport

@Suite struct FuzzRegressionTests {
    @Test func treeInputs() {
        let inputs = fuzzInputs("tree")
        #expect(!inputs.isEmpty)
        for i in inputs { _ = try? Tree.decode(i) }
    }

    @Test func rangeInputs() {
        for i in fuzzInputs("range") where i.count >= 4 {
            let size = Int(i[0]) << 24 | Int(i[1]) << 16 | Int(i[2]) << 8 | Int(i[3])
            let text = String(decoding: i.dropFirst(4), as: UTF8.self)
            if let r = HTTPRange.parse(text, size: size) { #expect(r.lowerBound >= 0 && r.upperBound <= size && !r.isEmpty) }
            _ = try? parseSeconds(text)
        }
    }

    @Test(arguments: [
        ("bytes=0-9223372036854775807", 100, 0..<100),
        ("bytes=0-99999999999999999999999", 100, 0..<100),
        ("bytes=10-19", 100, 10..<20),
        ("bytes=90-", 100, 90..<100),
        ("bytes=-10", 100, 90..<100),
        ("bytes=-9223372036854775807", 100, 0..<100),
        ("bytes=-99999999999999999999", 100, 0..<100),
        ("BYTES=0-0", 100, 0..<1),
    ])
    func rangesThatFit(_ spec: String, _ size: Int, _ expected: Range<Int>) {
        #expect(HTTPRange.parse(spec, size: size) == expected)
    }

    @Test(arguments: ["bytes=100-", "bytes=100-200", "bytes=5-4", "bytes=-0", "bytes=0-1,5-6", "bytes=a-b", "bytes=-", "bytes=1",
                      "items=0-1", "", "bytes=9223372036854775807-", "bytes=+1-2", "bytes=-+1", "bytes= - "])
    func rangesThatDoNot(_ spec: String) {
        #expect(HTTPRange.parse(spec, size: 100) == nil)
        #expect(HTTPRange.parse("bytes=0-1", size: 0) == nil)
    }
}
