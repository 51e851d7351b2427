/// The candidate closest to `word` by edit distance (insertions, deletions, substitutions and swaps of neighbours),
/// if it is close enough to be what was meant: at most 1 edit for words up to 4 letters, else at most 2. For "did
/// you mean" hints on mistyped commands.
public func closestMatch(_ word: String, among candidates: [String]) -> String? {
    let w = Array(word.lowercased().prefix(64))
    let limit = w.count <= 4 ? 1 : 2
    var best: (String, Int)?
    for c in candidates {
        let d = editDistance(w, Array(c.lowercased().prefix(64)))
        if d <= limit, best == nil || d < best!.1 { best = (c, d) }
    }
    return best?.0
}

/// Optimal string alignment distance between two short strings.
func editDistance(_ a: [Character], _ b: [Character]) -> Int {
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var d = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
    for i in 0...a.count { d[i][0] = i }
    for j in 0...b.count { d[0][j] = j }
    for i in 1...a.count {
        for j in 1...b.count {
            let cost = a[i - 1] == b[j - 1] ? 0 : 1
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] { d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1) }
        }
    }
    return d[a.count][b.count]
}
