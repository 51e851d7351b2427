import Crypto
import Foundation
import Testing
import LifeboatCore
@testable import LifeboatCrypto

@Suite struct CryptoTests {
    @Test func sealedObjectDetectsEveryFlippedBit() throws {
        let master = MasterKey.random()
        let plain = Data("the quick brown fox jumps over the lazy dog".utf8)
        let sealed = Seal.sealObject(plain, master: master)
        #expect(try Seal.openObject(sealed, master: master) == plain)
        for i in 0..<sealed.count {
            for bit in [0, 3, 7] {
                var bad = sealed
                bad[i] ^= UInt8(1 << bit)
                #expect(throws: LifeboatError.self) { try Seal.openObject(bad, master: master) }
            }
        }
        #expect(throws: LifeboatError.self) { try Seal.openObject(sealed, master: MasterKey.random()) }
        #expect(throws: LifeboatError.self) { try Seal.openObject(sealed.prefix(20), master: master) }
    }

    @Test func sameplaintextDifferentCiphertext() {
        let master = MasterKey.random()
        let p = Data(repeating: 7, count: 100)
        #expect(Seal.sealObject(p, master: master) != Seal.sealObject(p, master: master))
    }

    @Test func knownAnswers() throws {
        // SHA-256("abc") (FIPS 180-2).
        #expect(sha256ID(Data("abc".utf8)).hex == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        // HMAC-SHA-256, RFC 4231 test case 2.
        let m = MasterKey(encryption: SymmetricKey(size: .bits256), mac: SymmetricKey(data: Data("Jefe".utf8)))
        #expect(m.blobID(Data("what do ya want for nothing?".utf8)).hex == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        // AES-256-GCM, NIST test case 13 (zero key, zero IV, empty plaintext): tag 530f8afbc74536b9a963b4f1c4cb738b.
        let sealed = Seal.seal(Data(), key: SymmetricKey(data: Data(repeating: 0, count: 32)), counter: 0)
        #expect(sealed.map { String(format: "%02x", $0) }.joined() == "530f8afbc74536b9a963b4f1c4cb738b")
    }

    @Test func keyFileWrongPassword() throws {
        let master = MasterKey.random()
        let kf = try KeyFile.create(master: master, password: "right", parameters: ScryptParameters(n: 1024, r: 8, p: 1),
                                    hostname: "h", username: "u", now: Date())
        let opened = try kf.open(password: "right")
        #expect(opened.blobID(Data([1])) == master.blobID(Data([1])))
        #expect {
            try kf.open(password: "wrong")
        } throws: { ($0 as? LifeboatError)?.code == .wrongPassword }
    }

    @Test func gearTableIsKeyed() {
        let a = MasterKey.gearTable(seed: [UInt8](repeating: 1, count: 32))
        #expect(a.count == 256 && Set(a).count == 256)
        #expect(a != MasterKey.gearTable(seed: [UInt8](repeating: 2, count: 32)))
    }
}
