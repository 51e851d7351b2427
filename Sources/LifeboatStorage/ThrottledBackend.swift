import Foundation
import Synchronization

/// A rate in bytes per second, spent by many tasks at once: a token bucket with a burst of one second's worth. A
/// caller that takes more than is there waits for it (its debt), so the average rate holds however the work is
/// split, and no caller waits longer than its own bytes need.
public final class RateLimiter: Sendable {
    public let bytesPerSecond: Double
    let state: Mutex<(tokens: Double, last: ContinuousClock.Instant)>
    let clock = ContinuousClock()

    /// - Parameter bytesPerSecond: more than 0.
    public init(bytesPerSecond: Double) {
        self.bytesPerSecond = bytesPerSecond
        state = Mutex((bytesPerSecond, ContinuousClock.now))
    }

    /// How long a caller taking `bytes` at `now` must wait (and records the taking): pure but for the state.
    public func reserve(_ bytes: Int, now: ContinuousClock.Instant) -> Duration {
        state.withLock { s in
            let elapsed = now - s.last
            let secs = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            s.tokens = min(bytesPerSecond, s.tokens + max(0, secs) * bytesPerSecond)
            s.last = now
            s.tokens -= Double(bytes)
            guard s.tokens < 0 else { return .zero }
            return .milliseconds(Int64((-s.tokens / bytesPerSecond * 1000).rounded(.up)))
        }
    }

    /// Takes `bytes`, waiting until the rate allows them.
    public func take(_ bytes: Int) async throws {
        let wait = reserve(bytes, now: clock.now)
        if wait > .zero { try await Task.sleep(for: wait) }
    }
}

/// A backend whose writes (uploads) and reads (downloads) are held to a rate: the sites' `limit_upload` and
/// `limit_download` (KiB/s) and `--limit-upload`/`--limit-download`. Listing, stat and delete are not limited.
public struct ThrottledBackend: Backend {
    public let inner: any Backend
    public let upload: RateLimiter?
    public let download: RateLimiter?

    /// Rates in KiB/s (nil: not limited).
    public init(_ inner: any Backend, uploadKiBps: Int?, downloadKiBps: Int?) {
        self.inner = inner
        upload = uploadKiBps.map { RateLimiter(bytesPerSecond: Double($0) * 1024) }
        download = downloadKiBps.map { RateLimiter(bytesPerSecond: Double($0) * 1024) }
    }

    public var location: String { inner.location }
    public var writeConcurrency: Int { inner.writeConcurrency }
    public func create() async throws { try await inner.create() }
    public func list(_ type: ObjectType) async throws -> [ObjectInfo] { try await inner.list(type) }
    public func stat(_ handle: Handle) async throws -> ObjectInfo { try await inner.stat(handle) }
    public func delete(_ handle: Handle) async throws { try await inner.delete(handle) }

    public func read(_ handle: Handle, range: Range<Int>?) async throws -> Data {
        let data = try await inner.read(handle, range: range)
        try await download?.take(data.count)
        return data
    }

    public func write(_ handle: Handle, data: Data) async throws {
        try await upload?.take(data.count)
        try await inner.write(handle, data: data)
    }

    /// The range of a limit in KiB/s (1 KiB/s to 10 GiB/s).
    public static let limitRange = 1...(10 << 20)
}
