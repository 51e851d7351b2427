import Testing
@testable import LifeboatChunker

struct SplitMix { var s: UInt64; mutating func next() -> UInt64 { s &+= 0x9E3779B97F4A7C15; var z = s; z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) &* 0x94D049BB133111EB; return z ^ (z >> 31) } }

func gear(_ seed: UInt64) -> [UInt64] { var r = SplitMix(s: seed); return (0..<256).map { _ in r.next() } }
func randomBytes(_ n: Int, seed: UInt64) -> [UInt8] { var r = SplitMix(s: seed); return (0..<n).map { _ in UInt8(truncatingIfNeeded: r.next()) } }

func chunks(_ data: [UInt8], _ cdc: FastCDC, sizeHint: Int? = nil) throws -> [[UInt8]] {
    var c = StreamChunker(cdc: cdc, sizeHint: sizeHint)
    var pos = 0
    var out: [[UInt8]] = []
    while let chunk = try c.next(read: { buf in
        let n = min(buf.count, data.count - pos, 100_000)  // short reads on purpose
        buf.copyBytes(from: data[pos..<(pos + n)])
        pos += n
        return n
    }) { out.append(chunk) }
    return out
}

@Suite struct ChunkerTests {
    let params = ChunkerParameters(min: 16 * 1024, avg: 64 * 1024, max: 256 * 1024)

    @Test func sizesWithinBoundsAndLossless() throws {
        let data = randomBytes(4_000_000, seed: 1)
        let cs = try chunks(data, FastCDC(parameters: params, gear: gear(7)))
        #expect(Array(cs.joined()) == data)
        for c in cs.dropLast() { #expect(c.count >= params.min && c.count <= params.max) }
        let avg = data.count / cs.count
        #expect(avg > params.avg / 2 && avg < params.avg * 2, "average \(avg)")
    }

    @Test func wrongSizeHintGrowsTheBuffer() throws {
        let data = randomBytes(2_000_000, seed: 5)
        let cdc = FastCDC(parameters: params, gear: gear(7))
        let hinted = try chunks(data, cdc, sizeHint: 10)
        #expect(hinted == (try chunks(data, cdc)), "a file that grew after stat chunks the same")
        #expect(Array(try chunks(data, cdc, sizeHint: 5_000_000).joined()) == data)
    }

    @Test func boundariesStayPutAfterInsertion() throws {
        let data = randomBytes(3_000_000, seed: 2)
        var edited = data
        edited.insert(contentsOf: Array("inserted bytes".utf8), at: 100_000)
        let cdc = FastCDC(parameters: params, gear: gear(7))
        let a = Set(try chunks(data, cdc)), b = Set(try chunks(edited, cdc))
        let shared = a.intersection(b).count
        #expect(shared >= a.count - 3, "only chunks near the insertion change: \(shared) of \(a.count) shared")
    }

    @Test func keyedGearChangesBoundaries() throws {
        let data = randomBytes(2_000_000, seed: 3)
        let a = try chunks(data, FastCDC(parameters: params, gear: gear(1))).map(\.count)
        let b = try chunks(data, FastCDC(parameters: params, gear: gear(2))).map(\.count)
        #expect(a != b)
    }

    @Test func zerosAndEmpty() throws {
        let cdc = FastCDC(parameters: params, gear: gear(9))
        #expect(try chunks([], cdc).isEmpty)
        let z = try chunks([UInt8](repeating: 0, count: 1_000_000), cdc)
        #expect(z.reduce(0) { $0 + $1.count } == 1_000_000)
        #expect(ChunkerParameters(min: 10, avg: 100, max: 50).problem != nil)
    }
}
