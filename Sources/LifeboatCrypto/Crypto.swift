import Crypto
import _CryptoExtras
import Foundation
import LifeboatCore

// SymmetricKey is an immutable value (its storage is never mutated after init); swift-crypto 4 declares
// it Sendable. This package pins swift-crypto 3.x, which does not yet say so.
extension SymmetricKey: @retroactive @unchecked Sendable {}

/// The repository's secret keys, stored encrypted under each password in `keys/`.
public struct MasterKey: Sendable {
    /// Input keying material for per-object AES-256-GCM subkeys.
    public let encryption: SymmetricKey
    /// Key of the HMAC-SHA-256 that names blobs by their plaintext.
    public let mac: SymmetricKey

    public init(encryption: SymmetricKey, mac: SymmetricKey) {
        self.encryption = encryption
        self.mac = mac
    }

    public static func random() -> MasterKey {
        MasterKey(encryption: SymmetricKey(size: .bits256), mac: SymmetricKey(size: .bits256))
    }

    /// Keyed content ID of a blob's plaintext: HMAC-SHA-256 under the MAC key.
    public func blobID<D: DataProtocol>(_ data: D) -> ID {
        let code = HMAC<SHA256>.authenticationCode(for: data, using: mac)
        return code.withUnsafeBytes { ID(raw: $0) }
    }

    /// The subkey for one sealed object or pack, from the master encryption key and a random salt.
    public func subkey(salt: some ContiguousBytes) -> SymmetricKey {
        let saltBytes = salt.withUnsafeBytes { Array($0) }
        return HKDF<SHA256>.deriveKey(inputKeyMaterial: encryption, salt: saltBytes,
                                      info: Array("lifeboat v1 object".utf8), outputByteCount: 32)
    }

    /// A 256-entry gear table for the chunker, derived from a per-repository chunker secret.
    public static func gearTable(seed: [UInt8]) -> [UInt64] {
        let key = SymmetricKey(data: seed)
        var table = [UInt64]()
        table.reserveCapacity(256)
        var block: UInt32 = 0
        while table.count < 256 {
            var counter = block.bigEndian
            let mac = HMAC<SHA256>.authenticationCode(for: Data(bytes: &counter, count: 4), using: key)
            let bytes = Array(mac)
            for j in 0..<4 {
                var v: UInt64 = 0
                for k in 0..<8 { v = v << 8 | UInt64(bytes[j * 8 + k]) }
                table.append(v)
            }
            block += 1
        }
        return table
    }
}

/// Authenticated encryption with AES-256-GCM in a way that makes nonce reuse impossible by construction:
/// every sealed object or pack has its own random 256-bit salt, its key is HKDF(master, salt), and
/// within it nonces are a counter (0 for the pack header or a single object, i+1 for blob i).
public enum Seal {
    public static let saltSize = 32
    public static let tagSize = 16

    static func nonce(_ counter: UInt64) -> AES.GCM.Nonce {
        var bytes = [UInt8](repeating: 0, count: 12)
        for i in 0..<8 { bytes[4 + i] = UInt8(truncatingIfNeeded: counter >> UInt64(56 - 8 * i)) }
        return try! AES.GCM.Nonce(data: bytes)
    }

    /// Seals `plaintext` with `key` and nonce `counter`: returns ciphertext followed by the 16-byte tag.
    public static func seal<D: DataProtocol>(_ plaintext: D, key: SymmetricKey, counter: UInt64) -> Data {
        var out = Data(capacity: plaintext.count + tagSize)
        seal(plaintext, key: key, counter: counter, appendingTo: &out)
        return out
    }

    /// Seals and appends ciphertext and tag to `out` (packs: no intermediate buffer per blob).
    public static func seal<D: DataProtocol>(_ plaintext: D, key: SymmetricKey, counter: UInt64, appendingTo out: inout Data) {
        let box = try! AES.GCM.seal(plaintext, using: key, nonce: nonce(counter))
        out.append(box.ciphertext)
        out.append(box.tag)
    }

    /// Opens ciphertext+tag; throws a corrupt error when authentication fails.
    public static func open<D: DataProtocol>(_ sealed: D, key: SymmetricKey, counter: UInt64) throws -> Data where D.Index == Int {
        guard sealed.count >= tagSize else { throw LifeboatError.corrupt("sealed data is too short") }
        let split = sealed.startIndex + sealed.count - tagSize
        do {
            let box = try AES.GCM.SealedBox(nonce: nonce(counter), ciphertext: sealed[sealed.startIndex..<split],
                                            tag: sealed[split..<sealed.endIndex])
            return try AES.GCM.open(box, using: key)
        } catch {
            throw LifeboatError.corrupt("authentication failed: the data was modified or the key is wrong")
        }
    }

    /// Seals a whole object: `salt(32) || ciphertext || tag(16)`.
    public static func sealObject(_ plaintext: Data, master: MasterKey) -> Data {
        let salt = randomBytes(saltSize)
        let key = master.subkey(salt: salt)
        var out = Data(salt)
        out.append(seal(plaintext, key: key, counter: 0))
        return out
    }

    public static func openObject(_ sealed: Data, master: MasterKey) throws -> Data {
        guard sealed.count >= saltSize + tagSize else { throw LifeboatError.corrupt("object is too short (\(sealed.count) bytes)") }
        let salt = sealed.prefix(saltSize)
        let key = master.subkey(salt: Array(salt))
        return try open(Data(sealed.dropFirst(saltSize)), key: key, counter: 0)
    }

    public static func randomBytes(_ n: Int) -> [UInt8] {
        var g = SystemRandomNumberGenerator()
        return (0..<n).map { _ in UInt8.random(in: 0...255, using: &g) }
    }
}

/// SHA-256 of stored bytes: the name of every object but `config`.
public func sha256ID<D: DataProtocol>(_ data: D) -> ID {
    let digest = SHA256.hash(data: data)
    return digest.withUnsafeBytes { ID(raw: $0) }
}

/// SHA-256 over bytes given in pieces (a file streamed blob by blob).
public struct StreamingSHA256 {
    var hasher = SHA256()
    public init() {}
    public mutating func update(_ bytes: [UInt8]) { hasher.update(data: bytes) }
    public func finalize() -> ID { hasher.finalize().withUnsafeBytes { ID(raw: $0) } }
}

/// scrypt parameters. The default, N = 2^15, r = 8, p = 3, is one of OWASP's equivalent minimums
/// (same work as N = 2^17, p = 1: about 0.4 s here) with 32 MiB of memory instead of 128 MiB, so a
/// backup's peak memory is not dominated by opening the key.
public struct ScryptParameters: Codable, Sendable, Equatable {
    public var n: Int
    public var r: Int
    public var p: Int
    public static let `default` = ScryptParameters(n: 1 << 15, r: 8, p: 3)
    public init(n: Int, r: Int, p: Int) { self.n = n; self.r = r; self.p = p }

    /// Reads `N,r,p` from `LIFEBOAT_KDF_PARAMS` (for tests only: cheap parameters make tests fast); an invalid
    /// value is ignored here (the CLI rejects it at start-up through `validatedFromEnvironment`).
    public static func fromEnvironment() -> ScryptParameters {
        (try? validatedFromEnvironment()) ?? .default
    }

    public static func validatedFromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) throws -> ScryptParameters {
        guard let s = env["LIFEBOAT_KDF_PARAMS"], !s.isEmpty else { return .default }
        let parts = s.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 3 else { throw LifeboatError.invalid("LIFEBOAT_KDF_PARAMS must be N,r,p (got \"\(s)\")") }
        let p = ScryptParameters(n: try Bounds.integer(parts[0], 2...(1 << 20), "LIFEBOAT_KDF_PARAMS's N"),
                                 r: try Bounds.integer(parts[1], 1...32, "LIFEBOAT_KDF_PARAMS's r"),
                                 p: try Bounds.integer(parts[2], 1...16, "LIFEBOAT_KDF_PARAMS's p"))
        if let problem = p.problem { throw LifeboatError.invalid("LIFEBOAT_KDF_PARAMS: \(problem)") }
        return p
    }

    /// scrypt's memory is 128·N·r bytes and its work N·r·p. A key file is repository content that anybody
    /// with write access can add, so opening one must not cost more than this: 256 MiB and 2^23 (about ten
    /// times the default, some 5 s here).
    public static let maxMemoryFactor = 1 << 21
    public static let maxWork = 1 << 23

    /// Why these parameters are unusable, or nil.
    public var problem: String? {
        guard n > 1, n & (n - 1) == 0, n <= 1 << 22 else { return "N must be a power of two up to 2^22 (got \(n))" }
        guard (1...32).contains(r), (1...16).contains(p) else { return "r must be 1…32 and p 1…16 (got r=\(r), p=\(p))" }
        guard n * r <= ScryptParameters.maxMemoryFactor else {
            return "N·r = \(n * r) needs \((n * r) >> 13) MiB, more than the limit of 256 MiB"
        }
        guard n * r * p <= ScryptParameters.maxWork else { return "N·r·p = \(n * r * p) is above the limit of 2^23" }
        return nil
    }

    /// Relative cost, to try cheap keys first.
    public var cost: Int { n &* r &* p }
}

/// A key file (`keys/<id>`): the master key sealed under a key derived from one password.
public struct KeyFile: Codable, Sendable {
    public var version: Int = 1
    public var created: String
    public var hostname: String
    public var username: String
    public var kdf: String = "scrypt"
    public var scrypt: ScryptParameters
    public var salt: String
    /// Base64 of AES-256-GCM(key = scrypt(password, salt), nonce = 0) of the master key JSON.
    public var data: String

    struct Payload: Codable {
        var encryption: String
        var mac: String
    }

    /// Seals `master` under `password`. The key-encryption key is fresh (new salt), so nonce 0 is never reused.
    public static func create(master: MasterKey, password: String, parameters: ScryptParameters,
                              hostname: String, username: String, now: Date) throws -> KeyFile {
        let salt = Seal.randomBytes(32)
        let kek = try deriveKey(password: password, salt: salt, parameters: parameters)
        let payload = Payload(encryption: master.encryption.withUnsafeBytes { Data($0).base64EncodedString() },
                              mac: master.mac.withUnsafeBytes { Data($0).base64EncodedString() })
        let plain = try JSONEncoder().encode(payload)
        let sealed = Seal.seal(plain, key: kek, counter: 0)
        return KeyFile(created: Timestamp.format(now), hostname: hostname, username: username,
                       scrypt: parameters, salt: Data(salt).base64EncodedString(), data: sealed.base64EncodedString())
    }

    /// Opens the master key; throws `.wrongPassword` when the password does not fit.
    public func open(password: String) throws -> MasterKey {
        guard kdf == "scrypt" else { throw LifeboatError(.corrupt, "key file names an unknown KDF \"\(kdf.prefix(40))\"") }
        guard let salt = Data(base64Encoded: salt), let sealed = Data(base64Encoded: data) else {
            throw LifeboatError(.corrupt, "key file is malformed (salt or data is not base64)")
        }
        guard sealed.count > Seal.tagSize, sealed.count < 4096 else {
            throw LifeboatError(.corrupt, "key file holds \(sealed.count) sealed bytes, not a master key")
        }
        let kek = try KeyFile.deriveKey(password: password, salt: Array(salt), parameters: scrypt)
        guard let plain = try? Seal.open(sealed, key: kek, counter: 0) else {
            throw LifeboatError(.wrongPassword, "wrong password")
        }
        guard let p = try? JSONDecoder().decode(Payload.self, from: plain),
              let e = Data(base64Encoded: p.encryption), let m = Data(base64Encoded: p.mac), e.count == 32, m.count == 32 else {
            throw LifeboatError(.corrupt, "key file payload is malformed")
        }
        return MasterKey(encryption: SymmetricKey(data: e), mac: SymmetricKey(data: m))
    }

    static func deriveKey(password: String, salt: [UInt8], parameters: ScryptParameters) throws -> SymmetricKey {
        if let problem = parameters.problem {
            throw LifeboatError(.corrupt, "key file has unusable scrypt parameters: \(problem)")
        }
        guard (16...64).contains(salt.count) else { throw LifeboatError(.corrupt, "key file has a salt of \(salt.count) bytes") }
        do {
            return try KDF.Scrypt.deriveKey(from: Array(password.utf8), salt: salt, outputByteCount: 32,
                                            rounds: parameters.n, blockSize: parameters.r, parallelism: parameters.p)
        } catch {
            throw LifeboatError(.io, "scrypt failed (not enough memory?)", underlying: error)
        }
    }
}
