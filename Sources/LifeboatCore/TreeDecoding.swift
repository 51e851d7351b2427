import Foundation

/// A fast reader for tree JSON (the decoding side of `CanonicalJSON`). It accepts any valid JSON
/// object of the tree schema (keys in any order, whitespace, escapes, unknown keys skipped), not only
/// the canonical bytes. Foundation's decoder cost a quarter of a restore's CPU time.
struct TreeReader {
    let b: UnsafeRawBufferPointer
    var i = 0

    init(_ b: UnsafeRawBufferPointer) { self.b = b }

    func fail(_ what: String) -> LifeboatError { LifeboatError.corrupt("tree does not decode: \(what) at byte \(i)") }

    mutating func ws() { while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 } }

    mutating func expect(_ c: UInt8) throws {
        ws()
        guard i < b.count, b[i] == c else { throw fail("expected '\(Character(UnicodeScalar(c)))'") }
        i += 1
    }

    /// Consumes `c` if it is next.
    mutating func take(_ c: UInt8) -> Bool {
        ws()
        if i < b.count, b[i] == c { i += 1; return true }
        return false
    }

    mutating func string() throws -> [UInt8] {
        try expect(0x22)
        var out: [UInt8] = []
        let start = i
        // Fast path: no escapes.
        while i < b.count, b[i] != 0x22, b[i] != 0x5C { i += 1 }
        guard i < b.count else { throw fail("unterminated string") }
        out.append(contentsOf: UnsafeRawBufferPointer(rebasing: b[start..<i]))
        while b[i] != 0x22 {
            if b[i] == 0x5C {
                guard i + 1 < b.count else { throw fail("bad escape") }
                let e = b[i + 1]
                i += 2
                switch e {
                case 0x22, 0x5C, 0x2F: out.append(e)
                case 0x62: out.append(0x08)
                case 0x66: out.append(0x0C)
                case 0x6E: out.append(0x0A)
                case 0x72: out.append(0x0D)
                case 0x74: out.append(0x09)
                case 0x75:
                    var scalar = try hex4()
                    if scalar >= 0xD800 && scalar < 0xDC00 {
                        // A high surrogate must be followed by an escaped low one; anything else is damage
                        // (the encoder writes names that are not valid UTF-8 as name_b64, never as surrogates).
                        guard i + 1 < b.count, b[i] == 0x5C, b[i + 1] == 0x75 else { throw fail("lone UTF-16 surrogate") }
                        i += 2
                        let low = try hex4()
                        guard low >= 0xDC00 && low < 0xE000 else { throw fail("lone UTF-16 surrogate") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let u = Unicode.Scalar(scalar) else { throw fail("bad \\u escape (lone surrogate?)") }
                    out.append(contentsOf: Array(String(Character(u)).utf8))
                default: throw fail("bad escape")
                }
            } else {
                out.append(b[i]); i += 1
            }
            guard i < b.count else { throw fail("unterminated string") }
        }
        i += 1
        return out
    }

    mutating func hex4() throws -> UInt32 {
        guard i + 4 <= b.count else { throw fail("bad \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            guard let n = ID.nibble(b[i]) else { throw fail("bad \\u escape") }
            v = v << 4 | UInt32(n); i += 1
        }
        return v
    }

    mutating func text() throws -> String { String(decoding: try string(), as: UTF8.self) }

    mutating func int64() throws -> Int64 {
        ws()
        let neg = i < b.count && b[i] == 0x2D
        if neg { i += 1 }
        let v = try digits()
        if neg {
            guard v <= UInt64(Int64.max) + 1 else { throw fail("number too small") }
            return v == UInt64(Int64.max) + 1 ? .min : -Int64(v)
        }
        guard v <= UInt64(Int64.max) else { throw fail("number too large") }
        return Int64(v)
    }

    mutating func uint64() throws -> UInt64 {
        ws()
        return try digits()
    }

    /// One or more decimal digits, without overflow.
    mutating func digits() throws -> UInt64 {
        var v: UInt64 = 0
        let start = i
        while i < b.count, b[i] >= 0x30, b[i] <= 0x39 {
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(UInt64(b[i] - 0x30))
            if o1 || o2 { throw fail("number too large") }
            v = a; i += 1
        }
        guard i > start else { throw fail("expected a number") }
        return v
    }

    mutating func uint32() throws -> UInt32 {
        let v = try uint64()
        guard v <= UInt64(UInt32.max) else { throw fail("number too large") }
        return UInt32(v)
    }

    mutating func bool() throws -> Bool {
        ws()
        if b.count - i >= 4, b[i] == 0x74 { i += 4; return true }
        if b.count - i >= 5, b[i] == 0x66 { i += 5; return false }
        throw fail("expected a boolean")
    }

    mutating func id() throws -> ID {
        let s = try string()
        guard let id = s.withUnsafeBufferPointer({ ID(hex: String(decoding: $0, as: UTF8.self)) }) else { throw fail("bad ID") }
        return id
    }

    mutating func base64() throws -> [UInt8] {
        guard let d = Data(base64Encoded: Data(try string())) else { throw fail("bad base64") }
        return Array(d)
    }

    /// Nesting allowed in values the reader skips (unknown keys). The tree schema itself nests five deep, so
    /// a deeper value is damage or an attack (200,000 brackets would otherwise exhaust the stack).
    static let maxSkipDepth = 32

    /// Skips any JSON value.
    mutating func skip(depth: Int = 0) throws {
        ws()
        guard i < b.count else { throw fail("unexpected end") }
        guard depth < TreeReader.maxSkipDepth else { throw fail("values nested deeper than \(TreeReader.maxSkipDepth) levels") }
        switch b[i] {
        case 0x22: _ = try string()
        case 0x7B:
            i += 1
            if take(0x7D) { return }
            repeat { _ = try string(); try expect(0x3A); try skip(depth: depth + 1) } while take(0x2C)
            try expect(0x7D)
        case 0x5B:
            i += 1
            if take(0x5D) { return }
            repeat { try skip(depth: depth + 1) } while take(0x2C)
            try expect(0x5D)
        default:
            let start = i
            while i < b.count, ![0x2C, 0x7D, 0x5D, 0x20, 0x0A, 0x0D, 0x09].contains(b[i]) { i += 1 }
            guard i > start else { throw fail("expected a value") }
        }
    }

    /// Iterates the members of an object.
    mutating func object(_ member: (inout TreeReader, [UInt8]) throws -> Void) throws {
        try expect(0x7B)
        if take(0x7D) { return }
        repeat {
            let k = try string()
            try expect(0x3A)
            try member(&self, k)
        } while take(0x2C)
        try expect(0x7D)
    }

    mutating func array(_ element: (inout TreeReader) throws -> Void) throws {
        ws()
        if b.count - i >= 4, b[i] == 0x6E { i += 4; return }  // null
        try expect(0x5B)
        if take(0x5D) { return }
        repeat { try element(&self) } while take(0x2C)
        try expect(0x5D)
    }

    mutating func node() throws -> Node {
        var n = Node(name: [], type: .file)
        var sawType = false, sawName = false
        try object { r, key in
            switch String(decoding: key, as: UTF8.self) {
            case "name": n.name = try r.string(); sawName = true
            case "name_b64": n.name = try r.base64(); sawName = true
            case "type":
                guard let t = NodeType(rawValue: try r.text()) else { throw r.fail("unknown node type") }
                n.type = t; sawType = true
            case "mode": n.mode = try r.uint32()
            case "uid": n.uid = try r.uint32()
            case "gid": n.gid = try r.uint32()
            case "user": n.user = try r.text()
            case "group": n.group = try r.text()
            case "mtime_ns": n.mtimeNs = try r.int64()
            case "atime_ns": n.atimeNs = try r.int64()
            case "ctime_ns": n.ctimeNs = try r.int64()
            case "inode": n.inode = try r.uint64()
            case "device": n.device = try r.uint64()
            case "links": n.links = try r.uint64()
            case "size":
                // Sizes are file offsets (off_t) everywhere they are used.
                n.size = try r.uint64()
                guard n.size <= UInt64(Int64.max) else { throw r.fail("file size \(n.size) is out of range") }
            case "rdev": n.rdev = try r.uint64()
            case "linktarget": n.linkTarget = try r.string()
            case "linktarget_b64": n.linkTarget = try r.base64()
            case "sparse": n.sparse = try r.bool()
            case "subtree": n.subtree = try r.id()
            case "content":
                var ids: [ID] = []
                try r.array { ids.append(try $0.id()) }
                n.content = ids
            case "xattrs":
                var xs: [ExtendedAttribute] = []
                try r.array { r in
                    var name = "", value: [UInt8] = []
                    try r.object { r, k in
                        switch String(decoding: k, as: UTF8.self) {
                        case "name": name = try r.text()
                        case "value": value = try r.base64()
                        default: try r.skip()
                        }
                    }
                    xs.append(ExtendedAttribute(name: name, value: value))
                }
                n.xattrs = xs
            default: try r.skip()
            }
        }
        guard sawType, sawName else { throw fail("a node lacks its name or type") }
        return n
    }

    mutating func tree() throws -> Tree {
        var nodes: [Node] = []
        try object { r, key in
            if key.elementsEqual("nodes".utf8) {
                try r.array { nodes.append(try $0.node()) }
            } else {
                try r.skip()
            }
        }
        ws()
        guard i == b.count else { throw fail("trailing bytes") }
        // Lookups by name (restore SNAPSHOT:PATH, the parent of a backup) search sorted names: a crafted tree
        // with names out of order or repeated would hide entries from them, so it is damage.
        for k in nodes.indices.dropFirst() where !nodes[k - 1].name.lexicographicallyPrecedes(nodes[k].name) {
            throw LifeboatError.corrupt("tree does not decode: entry names are out of order or repeated at \"\(nodes[k].nameString)\"")
        }
        var t = Tree(nodes: [])
        t.nodes = nodes
        return t
    }
}

extension Tree {
    /// Decodes a tree blob.
    public static func decode<D: ContiguousBytes>(_ data: D) throws -> Tree {
        try data.withUnsafeBytes { raw in
            var r = TreeReader(raw)
            return try r.tree()
        }
    }
}
