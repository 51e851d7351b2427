import Foundation

/// When a backup is suspicious (ransomware encrypting files): against its parent snapshot, the share of the
/// parent's files whose content changed (or that were replaced by new names), and the share of the changed
/// content sampled that went from ordinary to random-looking (high-entropy) bytes. Both must be reached, over a
/// parent of at least `minFiles` files.
public struct MassChangeThresholds: Sendable, Equatable, Codable {
    public var changedShare = 0.5
    public var entropyShare = 0.5
    public var minFiles = 20
    /// Bits per byte from which a sample counts as random-looking (encrypted data is close to 8).
    public var entropyBits = 7.5
    public init() {}
}

/// What the mass-change detector found in one backup.
public struct MassChangeReport: Sendable, Equatable, Codable {
    public var parentFiles = 0
    public var files = 0
    /// Files of the parent whose content changed.
    public var changed = 0
    public var added = 0
    public var removed = 0
    /// Changed (or added) files whose content was sampled, and how many of them turned random-looking.
    public var sampled = 0
    public var becameRandom = 0
    public var suspicious = false
    public init() {}

    /// Changed files, plus files replaced by others (removed and added in the same backup), over the parent's.
    public var changedShare: Double {
        parentFiles == 0 ? 0 : min(1, Double(changed + min(added, removed)) / Double(parentFiles))
    }
    public var entropyShare: Double { sampled == 0 ? 0 : Double(becameRandom) / Double(sampled) }

    public mutating func judge(_ t: MassChangeThresholds) {
        suspicious = parentFiles >= t.minFiles && changedShare >= t.changedShare && entropyShare >= t.entropyShare
    }

    public var description: String {
        String(format: "%d of %d files changed or replaced (%.0f%%); %d of %d sampled became random-looking (%.0f%%)",
               changed + min(added, removed), parentFiles, changedShare * 100, becameRandom, sampled, entropyShare * 100)
    }
}

public enum Entropy {
    /// Shannon entropy in bits per byte (0: one repeated byte; 8: uniformly random).
    public static func bitsPerByte<C: Collection>(_ bytes: C) -> Double where C.Element == UInt8 {
        guard !bytes.isEmpty else { return 0 }
        var counts = [Int](repeating: 0, count: 256)
        for b in bytes { counts[Int(b)] += 1 }
        let n = Double(bytes.count)
        var h = 0.0
        for c in counts where c > 0 {
            let p = Double(c) / n
            h -= p * log2(p)
        }
        return h
    }
}
