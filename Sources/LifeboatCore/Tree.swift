import Foundation

/// The kind of a file-system entry.
public enum NodeType: String, Codable, Sendable {
    case file, dir, symlink, fifo, chardev, blockdev, socket
}

/// An extended attribute: a name and raw value.
public struct ExtendedAttribute: Codable, Sendable, Equatable {
    public var name: String
    public var value: [UInt8]
    public init(name: String, value: [UInt8]) { self.name = name; self.value = value }
    enum CodingKeys: String, CodingKey { case name, value }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        guard let d = Data(base64Encoded: try c.decode(String.self, forKey: .value)) else {
            throw DecodingError.dataCorruptedError(forKey: .value, in: c, debugDescription: "bad base64")
        }
        value = Array(d)
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(Data(value).base64EncodedString(), forKey: .value)
    }
}

/// One entry of a directory listing with its full metadata.
///
/// Names and symlink targets are raw bytes: Linux file names need not be UTF-8.
/// In JSON they are written as `name` when they are valid UTF-8 and as `name_b64` otherwise.
public struct Node: Codable, Sendable, Equatable {
    public var name: [UInt8]
    public var type: NodeType
    /// Permission and special bits (`st_mode & 0o7777`).
    public var mode: UInt32 = 0
    public var uid: UInt32 = 0
    public var gid: UInt32 = 0
    public var user: String? = nil
    public var group: String? = nil
    public var mtimeNs: Int64 = 0
    public var atimeNs: Int64 = 0
    public var ctimeNs: Int64 = 0
    public var inode: UInt64 = 0
    public var device: UInt64 = 0
    public var links: UInt64 = 1
    public var size: UInt64 = 0
    public var rdev: UInt64? = nil
    public var linkTarget: [UInt8]? = nil
    public var xattrs: [ExtendedAttribute]? = nil
    /// Data blob IDs, in order, for regular files.
    public var content: [ID]? = nil
    /// Tree blob ID, for directories.
    public var subtree: ID? = nil
    /// Set when the source file had holes; restore recreates them.
    public var sparse: Bool? = nil

    public init(name: [UInt8], type: NodeType) { self.name = name; self.type = type }

    public var nameString: String { String(decoding: name, as: UTF8.self) }

    enum CodingKeys: String, CodingKey {
        case name, name_b64, type, mode, uid, gid, user, group
        case mtime_ns, atime_ns, ctime_ns, inode, device, links, size, rdev
        case linktarget, linktarget_b64, xattrs, content, subtree, sparse
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try Node.decodeBytes(c, .name, .name_b64) ?? []
        type = try c.decode(NodeType.self, forKey: .type)
        mode = try c.decodeIfPresent(UInt32.self, forKey: .mode) ?? 0
        uid = try c.decodeIfPresent(UInt32.self, forKey: .uid) ?? 0
        gid = try c.decodeIfPresent(UInt32.self, forKey: .gid) ?? 0
        user = try c.decodeIfPresent(String.self, forKey: .user)
        group = try c.decodeIfPresent(String.self, forKey: .group)
        mtimeNs = try c.decodeIfPresent(Int64.self, forKey: .mtime_ns) ?? 0
        atimeNs = try c.decodeIfPresent(Int64.self, forKey: .atime_ns) ?? 0
        ctimeNs = try c.decodeIfPresent(Int64.self, forKey: .ctime_ns) ?? 0
        inode = try c.decodeIfPresent(UInt64.self, forKey: .inode) ?? 0
        device = try c.decodeIfPresent(UInt64.self, forKey: .device) ?? 0
        links = try c.decodeIfPresent(UInt64.self, forKey: .links) ?? 1
        size = try c.decodeIfPresent(UInt64.self, forKey: .size) ?? 0
        rdev = try c.decodeIfPresent(UInt64.self, forKey: .rdev)
        linkTarget = try Node.decodeBytes(c, .linktarget, .linktarget_b64)
        xattrs = try c.decodeIfPresent([ExtendedAttribute].self, forKey: .xattrs)
        content = try c.decodeIfPresent([ID].self, forKey: .content)
        subtree = try c.decodeIfPresent(ID.self, forKey: .subtree)
        sparse = try c.decodeIfPresent(Bool.self, forKey: .sparse)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try Node.encodeBytes(&c, name, .name, .name_b64)
        try c.encode(type, forKey: .type)
        try c.encode(mode, forKey: .mode)
        try c.encode(uid, forKey: .uid)
        try c.encode(gid, forKey: .gid)
        try c.encodeIfPresent(user, forKey: .user)
        try c.encodeIfPresent(group, forKey: .group)
        try c.encode(mtimeNs, forKey: .mtime_ns)
        try c.encode(atimeNs, forKey: .atime_ns)
        try c.encode(ctimeNs, forKey: .ctime_ns)
        try c.encode(inode, forKey: .inode)
        try c.encode(device, forKey: .device)
        try c.encode(links, forKey: .links)
        try c.encode(size, forKey: .size)
        try c.encodeIfPresent(rdev, forKey: .rdev)
        if let linkTarget { try Node.encodeBytes(&c, linkTarget, .linktarget, .linktarget_b64) }
        try c.encodeIfPresent(xattrs, forKey: .xattrs)
        try c.encodeIfPresent(content, forKey: .content)
        try c.encodeIfPresent(subtree, forKey: .subtree)
        try c.encodeIfPresent(sparse, forKey: .sparse)
    }

    static func decodeBytes(_ c: KeyedDecodingContainer<CodingKeys>, _ plain: CodingKeys, _ b64: CodingKeys) throws -> [UInt8]? {
        if let s = try c.decodeIfPresent(String.self, forKey: plain) { return Array(s.utf8) }
        if let s = try c.decodeIfPresent(String.self, forKey: b64) {
            guard let d = Data(base64Encoded: s) else {
                throw DecodingError.dataCorruptedError(forKey: b64, in: c, debugDescription: "bad base64")
            }
            return Array(d)
        }
        return nil
    }

    static func encodeBytes(_ c: inout KeyedEncodingContainer<CodingKeys>, _ bytes: [UInt8], _ plain: CodingKeys, _ b64: CodingKeys) throws {
        if let s = String(validatingUTF8Bytes: bytes) {
            try c.encode(s, forKey: plain)
        } else {
            try c.encode(Data(bytes).base64EncodedString(), forKey: b64)
        }
    }

    /// A name is safe to create in a directory: not empty, not `.` or `..`, no `/` and no NUL.
    public static func isSafeName(_ name: [UInt8]) -> Bool {
        if name.isEmpty || name == [0x2E] || name == [0x2E, 0x2E] { return false }
        return !name.contains(0x2F) && !name.contains(0)
    }
}

extension String {
    /// Decodes bytes as UTF-8 only when they are valid and round-trip exactly.
    public init?(validatingUTF8Bytes bytes: [UInt8]) {
        guard let s = String(validating: bytes, as: UTF8.self) else { return nil }
        self = s
    }
}

/// A directory listing: nodes sorted by name bytes. Its JSON encoding is deterministic,
/// so the same directory always yields the same tree blob and the same tree ID.
public struct Tree: Codable, Sendable, Equatable {
    public var nodes: [Node]
    public init(nodes: [Node]) {
        self.nodes = nodes.sorted { $0.name.lexicographicallyPrecedes($1.name) }
    }

    public func node(named name: [UInt8]) -> Node? {
        // Nodes are sorted: binary search.
        var lo = 0, hi = nodes.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if nodes[mid].name == name { return nodes[mid] }
            if nodes[mid].name.lexicographicallyPrecedes(name) { lo = mid + 1 } else { hi = mid }
        }
        return nil
    }
}
