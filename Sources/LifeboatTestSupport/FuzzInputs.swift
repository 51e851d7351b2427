import Foundation

/// The seeds and every crashing input `make fuzz` found for the fuzz target `name` (fuzz/seeds/NAME and
/// fuzz/regressions/NAME), for the unit tests that replay them.
public func fuzzInputs(_ name: String, file: String = #filePath) -> [[UInt8]] {
    // Sources/LifeboatTestSupport/FuzzInputs.swift → the package root.
    let root = URL(fileURLWithPath: file).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    var out: [[UInt8]] = []
    for dir in ["fuzz/seeds/\(name)", "fuzz/regressions/\(name)"] {
        let d = root.appendingPathComponent(dir)
        for f in ((try? FileManager.default.contentsOfDirectory(atPath: d.path)) ?? []).sorted() where !f.hasPrefix(".") {
            if let data = FileManager.default.contents(atPath: d.appendingPathComponent(f).path) { out.append(Array(data)) }
        }
    }
    return out
}
