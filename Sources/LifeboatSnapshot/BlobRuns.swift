import Foundation
import LifeboatCore
import LifeboatRepository
import LifeboatStorage

/// Neighbouring blobs of one pack, read with one ranged request, with what each blob is wanted for.
public struct BlobRun<Target: Sendable>: Sendable {
    public struct Blob: Sendable {
        public var location: BlobLocation
        public var targets: [Target]
    }
    public var pack: ID
    public var start: Int
    public var end: Int
    public var blobs: [Blob]
}

/// Reading blobs by the pack rather than one by one: what makes a restore, a check or a copy from a remote site
/// cost a few requests per pack instead of one per blob.
public enum BlobRuns {
    /// Neighbouring blobs are read together when the gap between them is at most this.
    public static let maxGap = 256 * 1024
    /// The longest single read.
    public static let maxRead = 16 * 1024 * 1024

    /// Groups wanted blobs into runs: by pack (in the order each pack is first wanted), then by offset, merging
    /// neighbours separated by at most `maxGap` bytes into reads of at most `maxRead` bytes. A blob wanted
    /// several times is read once, with all its targets.
    public static func group<T: Sendable>(_ wanted: [(location: BlobLocation, target: T)]) -> [BlobRun<T>] {
        var packOrder: [ID] = []
        var byPack: [ID: [ID: BlobRun<T>.Blob]] = [:]
        for w in wanted {
            let pack = w.location.pack
            if byPack[pack] == nil { packOrder.append(pack); byPack[pack] = [:] }
            byPack[pack]![w.location.blob.id, default: BlobRun<T>.Blob(location: w.location, targets: [])].targets.append(w.target)
        }
        var out: [BlobRun<T>] = []
        for pack in packOrder {
            let blobs = byPack[pack]!.values.sorted { $0.location.blob.offset < $1.location.blob.offset }
            // The open run is the last of `out`, extended in place (a copy of it would make every append copy
            // its blobs: quadratic in the blobs of a run).
            var open = false
            for b in blobs {
                let s = Int(b.location.blob.offset), e = s + Int(b.location.blob.length)
                if open, let last = out.indices.last, s >= out[last].end, s - out[last].end <= maxGap, e - out[last].start <= maxRead {
                    out[last].end = e
                    out[last].blobs.append(b)
                } else {
                    out.append(BlobRun(pack: pack, start: s, end: e, blobs: [b]))
                    open = true
                }
            }
        }
        return out
    }

    /// Reads one run and hands each blob to `body`, opened (authenticated, decompressed, checked against its
    /// ID) or with the error that kept it from opening. Returns false if the read itself failed (every blob is
    /// then handed over with that error).
    @discardableResult
    public static func read<T: Sendable>(_ run: BlobRun<T>, from repo: Repository,
                                         _ body: (BlobRun<T>.Blob, Result<[UInt8], any Error>) async -> Void) async -> Bool {
        let data: Data
        do {
            data = try await repo.backend.read(Handle(.data, run.pack.hex), range: run.start..<run.end)
        } catch is CancellationError {
            for b in run.blobs { await body(b, .failure(CancellationError())) }
            return false
        } catch {
            let e = LifeboatError.corrupt("pack \(run.pack.short) cannot be read: \((error as? StorageError)?.message ?? "\(error)")")
            for b in run.blobs { await body(b, .failure(e)) }
            return false
        }
        for b in run.blobs {
            let s = Int(b.location.blob.offset) - run.start, e = s + Int(b.location.blob.length)
            do {
                guard s >= 0, e <= data.count else { throw LifeboatError.corrupt("pack \(run.pack.short) is shorter than the index says") }
                await body(b, .success(try repo.openBlob(data[(data.startIndex + s)..<(data.startIndex + e)], location: b.location)))
            } catch {
                await body(b, .failure(error))
            }
        }
        return true
    }
}
