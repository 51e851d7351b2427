/// Runs `body` over `items` with at most `width` at once and returns the results in the input's order.
/// (One helper instead of nested functions calling `addTask`, a pattern Swift 6.3.1 miscompiled under -O.)
public func boundedMap<T: Sendable, R: Sendable>(_ items: [T], width: Int,
                                                 _ body: @escaping @Sendable (T) async -> R) async -> [R] {
    await withTaskGroup(of: (Int, R).self) { g in
        var results = [R?](repeating: nil, count: items.count)
        var launched = 0
        let w = max(1, width)
        while launched < min(w, items.count) {
            let i = launched, item = items[i]
            g.addTask { (i, await body(item)) }
            launched += 1
        }
        while let (i, r) = await g.next() {
            results[i] = r
            if launched < items.count {
                let j = launched, item = items[j]
                g.addTask { (j, await body(item)) }
                launched += 1
            }
        }
        return results.map { $0! }
    }
}
