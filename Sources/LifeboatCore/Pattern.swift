/// A restic-style path pattern for `--exclude` and `--include`.
///
/// Components are separated by `/`; each component is a shell glob (`*`, `?`, `[a-z]`, `[!x]`, `\` escapes),
/// and `**` matches any number of components. A pattern that starts with `/` is anchored at the root;
/// any other pattern may match at any depth (`*.log` matches `/a/b/x.log`). A pattern that matches a
/// directory matches everything below it.
public struct PathPattern: Sendable, Equatable, CustomStringConvertible {
    public let text: String
    let anchored: Bool
    let parts: [[UInt8]]

    public init(_ text: String) {
        self.text = text
        var t = text
        anchored = t.hasPrefix("/")
        while t.hasSuffix("/") && t.count > 1 { t.removeLast() }
        parts = t.split(separator: "/", omittingEmptySubsequences: true).map { Array($0.utf8) }
    }

    public var description: String { text }

    /// The pattern that matches exactly this absolute path (glob characters escaped).
    public static func literal(_ path: String) -> String {
        var out = ""
        for ch in path {
            if ch == "*" || ch == "?" || ch == "[" || ch == "\\" { out.append("\\") }
            out.append(ch)
        }
        return out
    }

    static func components(_ path: [UInt8]) -> [ArraySlice<UInt8>] {
        path.split(separator: 0x2F, omittingEmptySubsequences: true)
    }

    /// True when `path` (absolute, `/`-separated) or one of its parent directories matches.
    public func matches(_ path: [UInt8]) -> Bool {
        let comps = PathPattern.components(path)
        if parts.isEmpty { return false }
        if anchored { return matchPrefix(ArraySlice(parts), comps[...]) }
        for start in comps.indices where matchPrefix(ArraySlice(parts), comps[start...]) { return true }
        return false
    }

    public func matches(_ path: String) -> Bool { matches(Array(path.utf8)) }

    /// True when some path below the directory `dir` could match (used to decide whether to descend).
    public func childMayMatch(_ dir: [UInt8]) -> Bool {
        if !anchored { return true }
        let comps = PathPattern.components(dir)
        // Walk pattern parts against the directory components; the directory must be a prefix of a match.
        return prefixCompatible(ArraySlice(parts), comps[...])
    }

    /// Pattern parts match a leading run of the components (the rest of the path lies below a match).
    private func matchPrefix(_ p: ArraySlice<[UInt8]>, _ c: ArraySlice<ArraySlice<UInt8>>) -> Bool {
        guard let first = p.first else { return true }
        if first == Array("**".utf8) {
            let rest = p.dropFirst()
            if rest.isEmpty { return true }
            var i = c.startIndex
            while i <= c.endIndex {
                if matchPrefix(rest, c[i...]) { return true }
                i += 1
            }
            return false
        }
        guard let comp = c.first else { return false }
        return PathPattern.glob(first[...], comp) && matchPrefix(p.dropFirst(), c.dropFirst())
    }

    private func prefixCompatible(_ p: ArraySlice<[UInt8]>, _ c: ArraySlice<ArraySlice<UInt8>>) -> Bool {
        guard let comp = c.first else { return true }
        guard let first = p.first else { return true }  // directory is below a full match
        if first == Array("**".utf8) { return true }
        return PathPattern.glob(first[...], comp) && prefixCompatible(p.dropFirst(), c.dropFirst())
    }

    /// Shell glob match of one component.
    public static func glob(_ pattern: ArraySlice<UInt8>, _ name: ArraySlice<UInt8>) -> Bool {
        var p = pattern.startIndex, n = name.startIndex
        var starP = -1, starN = -1
        while n < name.endIndex {
            if p < pattern.endIndex {
                let c = pattern[p]
                if c == 0x2A { starP = p; starN = n; p += 1; continue }  // *
                if c == 0x3F { p += 1; n += 1; continue }  // ?
                if c == 0x5B, let (ok, next) = matchClass(pattern, p, name[n]) {  // [
                    if ok { p = next; n += 1; continue }
                } else {
                    var lit = c
                    var next = p + 1
                    if c == 0x5C, p + 1 < pattern.endIndex { lit = pattern[p + 1]; next = p + 2 }
                    if lit == name[n] { p = next; n += 1; continue }
                }
            }
            if starP >= 0 { p = starP + 1; starN += 1; n = starN; continue }
            return false
        }
        while p < pattern.endIndex, pattern[p] == 0x2A { p += 1 }
        return p == pattern.endIndex
    }

    /// Matches a `[...]` class at `p`; returns nil when the bracket is not closed (then it is a literal).
    static func matchClass(_ pattern: ArraySlice<UInt8>, _ p: Int, _ ch: UInt8) -> (Bool, Int)? {
        var i = p + 1
        var negate = false
        if i < pattern.endIndex, pattern[i] == 0x21 || pattern[i] == 0x5E { negate = true; i += 1 }
        var matched = false
        var first = true
        while i < pattern.endIndex {
            var c = pattern[i]
            if c == 0x5D && !first { return (matched != negate, i + 1) }
            first = false
            if c == 0x5C, i + 1 < pattern.endIndex { i += 1; c = pattern[i] }
            if i + 2 < pattern.endIndex, pattern[i + 1] == 0x2D, pattern[i + 2] != 0x5D {
                if ch >= c && ch <= pattern[i + 2] { matched = true }
                i += 3
            } else {
                if ch == c { matched = true }
                i += 1
            }
        }
        return nil
    }
}

/// A set of include or exclude patterns.
public struct PatternSet: Sendable {
    public var patterns: [PathPattern]
    public init(_ patterns: [String]) { self.patterns = patterns.map(PathPattern.init) }
    public var isEmpty: Bool { patterns.isEmpty }
    public func matches(_ path: [UInt8]) -> Bool { patterns.contains { $0.matches(path) } }
    public func childMayMatch(_ dir: [UInt8]) -> Bool { patterns.contains { $0.childMayMatch(dir) } }
}
