/// One progress line for a terminal, fitted to its width so that it never wraps (a wrapped line cannot be
/// redrawn in place and scrolls): `[0:12] [#########.........]  45.2%  1234/5000 files  1.20 GiB/2.70 GiB
/// 98.00 MiB/s  ETA 0:15`. Pure: the caller passes the figures, the clock reading and the width.
public struct ProgressLine: Sendable {
    public var elapsed: Double
    /// Things counted (files, packs, snapshots): done, total if known, and their name.
    public var items: (done: Int, total: Int?, unit: String)?
    public var bytes: (done: UInt64, total: UInt64?)?

    public init(elapsed: Double, items: (done: Int, total: Int?, unit: String)? = nil, bytes: (done: UInt64, total: UInt64?)? = nil) {
        self.elapsed = elapsed
        self.items = items
        self.bytes = bytes
    }

    /// Done, from 0 to 1, by bytes when their total is known, else by items; nil when neither total is known.
    public var fraction: Double? {
        if let b = bytes, let t = b.total, t > 0 { return min(1, Double(b.done) / Double(t)) }
        if let i = items, let t = i.total, t > 0 { return min(1, Double(max(0, i.done)) / Double(t)) }
        return nil
    }

    /// Seconds left at the average rate so far; nil before any progress or without a total.
    public var eta: Double? {
        guard let f = fraction, f > 0, f < 1, elapsed.isFinite, elapsed > 0 else { return nil }
        let left = elapsed * (1 - f) / f
        return left.isFinite && left < 1e9 ? left : nil
    }

    /// Fits `width` columns (at most width - 1 characters: writing the last column makes some terminals
    /// wrap). The bar takes the room the figures leave (up to 50 cells; none below 70 columns); the weaker
    /// figures give way first, and what still does not fit is cut from the right.
    public func render(width: Int) -> String {
        let width = max(10, min(width, 1000))
        // Figures with the order they give way in when the width is short: the rate first, then the counts,
        // then the bytes; the percent and the ETA stay.
        var figures: [(text: String, keep: Int)] = []
        if let f = fraction { figures.append((Self.percent(f), 9)) }
        if let i = items { figures.append(("\(i.done)\(i.total.map { "/\($0)" } ?? "") \(i.unit)", 2)) }
        if let b = bytes {
            figures.append((Units.bytes(b.done) + (b.total.map { "/" + Units.bytes($0) } ?? ""), 3))
            if elapsed > 0.5 {
                let rate = Double(b.done) / elapsed
                if rate.isFinite && rate >= 0 && rate < 1.8e19 { figures.append((Units.bytes(UInt64(rate)) + "/s", 1)) }
            }
        }
        if let eta { figures.append(("ETA " + Units.clock(eta), 8)) }
        let clock = "[\(Units.clock(elapsed))]"
        // From 70 columns on, a bar of at least 10 cells (and 4 for its brackets and spaces) comes before the
        // weaker figures.
        let barMinimum = fraction != nil && width >= 70 ? 14 : 0
        func length(_ f: [(text: String, keep: Int)]) -> Int { clock.count + f.reduce(0) { $0 + 2 + $1.text.count } + barMinimum }
        while length(figures) >= width, let weakest = figures.indices.min(by: { figures[$0].keep < figures[$1].keep }),
              figures[weakest].keep < 8 {
            figures.remove(at: weakest)
        }
        let text = figures.map(\.text).joined(separator: "  ")
        let room = width - 1 - clock.count - text.count - 4  // spaces around the bar and its brackets
        var line = clock
        if let f = fraction, room >= 10 {
            let cells = min(room, 50)
            let full = Int((f * Double(cells)).rounded(.down))
            line += " [" + String(repeating: "#", count: full) + String(repeating: ".", count: cells - full) + "] "
        } else {
            line += " "
        }
        line += text
        return line.count < width ? line : String(line.prefix(width - 1))
    }

    static func percent(_ f: Double) -> String {
        let tenths = Int((f * 1000).rounded(.down))
        let text = "\(tenths / 10).\(tenths % 10)%"
        return String(repeating: " ", count: max(0, 6 - text.count)) + text
    }
}
