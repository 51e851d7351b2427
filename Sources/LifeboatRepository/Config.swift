import Foundation
import LifeboatChunker
import LifeboatCompression
import LifeboatCore
import Crypto

/// The repository config (`config`), sealed with the master key.
public struct RepositoryConfig: Codable, Sendable, Equatable {
    /// The repository format version this program writes and reads.
    public static let currentVersion = 1

    public var version: Int
    /// Random 32-byte repository ID (hex).
    public var id: String
    public var chunker: ChunkerParameters
    /// Base64 of the 32-byte secret that keys the chunker's gear table.
    public var chunkerSeed: String
    /// Default compression for new blobs.
    public var compression: CompressionMode
    /// Target pack size in bytes.
    public var packSize: Int

    enum CodingKeys: String, CodingKey {
        case version, id, chunker, chunkerSeed = "chunker_seed", compression, packSize = "pack_size"
    }

    /// 8 MiB: as fast as 16 MiB here, and three packs in flight cost 24 MiB less peak memory.
    public static let defaultPackSize = 8 * 1024 * 1024
}

/// Options for `init`.
public struct InitOptions: Sendable {
    public var chunker: ChunkerParameters = .default
    public var compression: CompressionMode = .auto
    public var packSize: Int = RepositoryConfig.defaultPackSize
    /// Reuse another repository's chunker secret and sizes so that both chunk data identically.
    public var chunkerSeed: [UInt8]? = nil
    /// Reuse another repository's blob-ID (MAC) key so that both name blobs and trees identically:
    /// copies between them skip what is present by ID and keep trees unchanged. Encryption keys stay separate.
    public var blobIDKey: SymmetricKey? = nil
    public init() {}
}
