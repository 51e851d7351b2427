// Micro-benchmarks of Lifeboat's primitives and of the whole per-chunk pipeline, one core each.
// Usage: lifeboat-bench [--json] [SAMPLE_FILE]   (build with -c release; debug figures mean nothing)
import Foundation
import LifeboatChunker
import LifeboatCompression
import LifeboatCore
import LifeboatCrypto
import Crypto

let args = CommandLine.arguments.dropFirst()
let json = args.contains("--json")
let sampleFile = args.first { !$0.hasPrefix("--") }

/// Mixed sample data: the given file (repeated to 256 MiB) or seeded pseudo-random text and binary.
func sample() -> [UInt8] {
    let size = 256 << 20
    if let f = sampleFile, let d = FileManager.default.contents(atPath: f), !d.isEmpty {
        var out = [UInt8](); out.reserveCapacity(size)
        while out.count < size { out += d.prefix(size - out.count) }
        return out
    }
    var s: UInt64 = 42
    func next() -> UInt64 { s &+= 0x9E3779B97F4A7C15; var z = s; z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) &* 0x94D049BB133111EB; return z ^ (z >> 31) }
    let words = "func let var return if else for while struct class import public data error index buffer".split(separator: " ").map { Array($0.utf8) }
    var out = [UInt8](); out.reserveCapacity(size)
    while out.count < size {
        if next() % 2 == 0 {
            for _ in 0..<8192 { out += words[Int(next() % UInt64(words.count))]; out.append(next() % 9 == 0 ? 10 : 32) }
        } else {
            for _ in 0..<8192 { withUnsafeBytes(of: next()) { out += $0 } }
        }
    }
    return Array(out.prefix(size))
}

let data = sample()
var results: [(String, Double)] = []

@MainActor func measure(_ name: String, bytes: Int, repeat n: Int = 1, _ body: () -> Void) {
    body()  // warm up
    let start = DispatchTime.now().uptimeNanoseconds
    for _ in 0..<n { body() }
    let secs = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    let mbs = Double(bytes * n) / secs / 1e6
    results.append((name, mbs))
    if !json { print(name.padding(toLength: 44, withPad: " ", startingAt: 0) + String(format: "%8.0f MB/s", mbs)) }
}

let gear = MasterKey.gearTable(seed: [UInt8](repeating: 7, count: 32))
let cdc = FastCDC(parameters: .default, gear: gear)
var chunks: [Range<Int>] = []
measure("chunker (FastCDC, avg 1 MiB)", bytes: data.count) {
    chunks = []
    data.withUnsafeBytes { raw in
        var pos = 0
        while pos < raw.count {
            let cut = cdc.boundary(UnsafeRawBufferPointer(rebasing: raw[pos...]), final: true)!
            chunks.append(pos..<(pos + cut)); pos += cut
        }
    }
}
let master = MasterKey.random()
measure("HMAC-SHA-256 (blob IDs)", bytes: data.count) {
    data.withUnsafeBytes { raw in for r in chunks { _ = master.blobID(UnsafeRawBufferPointer(rebasing: raw[r])) } }
}
measure("SHA-256 (pack names)", bytes: data.count) { _ = sha256ID(data) }
let key = SymmetricKey(size: .bits256)
measure("AES-256-GCM seal", bytes: data.count) {
    data.withUnsafeBytes { raw in for (i, r) in chunks.enumerated() { _ = Seal.seal(UnsafeRawBufferPointer(rebasing: raw[r]), key: key, counter: UInt64(i + 1)) } }
}
for mode in [CompressionMode.fast, .auto] {
    measure("zstd \(mode.rawValue) (level \(mode.zstdLevel!))", bytes: data.count) {
        data.withUnsafeBytes { raw in for r in chunks { _ = Zstd.compress(UnsafeRawBufferPointer(rebasing: raw[r]), mode: mode) } }
    }
}
var compressed: [[UInt8]] = []
data.withUnsafeBytes { raw in compressed = chunks.map { Zstd.compress(UnsafeRawBufferPointer(rebasing: raw[$0]), mode: .auto) ?? Array(raw[$0]) } }
measure("zstd decompress", bytes: data.count) {
    for (i, c) in compressed.enumerated() where c.count < chunks[i].count {
        _ = c.withUnsafeBytes { try! Zstd.decompress($0, rawLength: chunks[i].count) }
    }
}
for mode in [CompressionMode.fast, .auto] {
    measure("pipeline: chunk+MAC+zstd \(mode.rawValue)+seal", bytes: data.count) {
        data.withUnsafeBytes { raw in
            var pos = 0
            var i = 0
            while pos < raw.count {
                let cut = cdc.boundary(UnsafeRawBufferPointer(rebasing: raw[pos...]), final: true)!
                let piece = UnsafeRawBufferPointer(rebasing: raw[pos..<(pos + cut)])
                _ = master.blobID(piece)
                if let z = Zstd.compress(piece, mode: mode) { _ = z.withUnsafeBytes { Seal.seal($0, key: key, counter: UInt64(i + 1)) } }
                else { _ = Seal.seal(piece, key: key, counter: UInt64(i + 1)) }
                pos += cut; i += 1
            }
        }
    }
}
if json {
    let obj = Dictionary(uniqueKeysWithValues: results.map { ($0.0, ($0.1 * 10).rounded() / 10) })
    let d = try! JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])
    print(String(decoding: d, as: UTF8.self))
}
