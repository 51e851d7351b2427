import Foundation
import LifeboatCore

/// How often and how patiently to retry transient storage errors.
public struct RetryPolicy: Sendable {
    /// Attempts in all, including the first.
    public var attempts: Int
    /// Delay before the first retry; it doubles each time, up to `maxDelay`, with full jitter.
    public var baseDelay: Double
    public var maxDelay: Double

    public init(attempts: Int = 6, baseDelay: Double = 0.25, maxDelay: Double = 8) {
        self.attempts = max(1, attempts)
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
    }

    /// `LIFEBOAT_RETRY=ATTEMPTS[,BASE_SECONDS[,MAX_SECONDS]]` overrides the defaults (tests use short delays);
    /// an invalid value is ignored here (the CLI rejects it at start-up through `validatedFromEnvironment`).
    public static func fromEnvironment() -> RetryPolicy {
        (try? validatedFromEnvironment()) ?? RetryPolicy()
    }

    /// `LIFEBOAT_RETRY` checked: 1 to 100 attempts, delays of 0 to 3,600 seconds (base) and 0 to 86,400 (max).
    public static func validatedFromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) throws -> RetryPolicy {
        guard let s = env["LIFEBOAT_RETRY"], !s.isEmpty else { return RetryPolicy() }
        let p = s.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard p.count <= 3 else { throw LifeboatError.invalid("LIFEBOAT_RETRY must be ATTEMPTS[,BASE_SECONDS[,MAX_SECONDS]] (got \"\(s)\")") }
        var r = RetryPolicy()
        r.attempts = try Bounds.integer(p[0], 1...100, "LIFEBOAT_RETRY's attempts")
        if p.count > 1 { r.baseDelay = try Bounds.number(p[1], 0...3600, "LIFEBOAT_RETRY's base delay") }
        if p.count > 2 { r.maxDelay = try Bounds.number(p[2], 0...86400, "LIFEBOAT_RETRY's maximum delay") }
        return r
    }

    /// The delay before retry number `n` (1-based): exponential backoff with full jitter.
    func delay(beforeRetry n: Int) -> Double {
        let cap = min(maxDelay, baseDelay * pow(2, Double(n - 1)))
        return Double.random(in: (cap / 2)...max(cap / 2, cap))
    }
}

/// The one place where storage operations are retried: wraps any backend and retries operations
/// that fail with a `.transient` error (timeouts, resets, 5xx, throttling), with exponential backoff
/// and jitter. Other errors pass through at once. Every operation of the `Backend` contract is
/// idempotent (objects are content-addressed), so a retried write or delete is safe; a delete whose
/// first attempt may have succeeded before its reply was lost counts `notFound` on a retry as done.
public struct RetryingBackend: Backend {
    public let inner: any Backend
    public let policy: RetryPolicy
    /// Called before each retry with the operation, the attempt number and the error (for logs).
    public let onRetry: @Sendable (String, Int, StorageError) -> Void

    public init(_ inner: any Backend, policy: RetryPolicy = .fromEnvironment(),
                onRetry: @escaping @Sendable (String, Int, StorageError) -> Void = { _, _, _ in }) {
        self.inner = inner
        self.policy = policy
        self.onRetry = onRetry
    }

    public var location: String { inner.location }
    public var writeConcurrency: Int { inner.writeConcurrency }

    func retrying<T: Sendable>(_ what: String, _ body: (_ attempt: Int) async throws -> T) async throws -> T {
        var attempt = 1
        while true {
            do {
                return try await body(attempt)
            } catch let e as StorageError where e.kind == .transient && attempt < policy.attempts {
                onRetry(what, attempt, e)
                try await Task.sleep(nanoseconds: Bounds.nanoseconds(policy.delay(beforeRetry: attempt)))
                attempt += 1
            } catch let e as StorageError where e.kind == .transient {
                throw StorageError(.transient, "\(e.message) (gave up after \(attempt) attempts)")
            }
        }
    }

    public func create() async throws { try await retrying("create") { _ in try await inner.create() } }
    public func list(_ type: ObjectType) async throws -> [ObjectInfo] {
        try await retrying("list \(type.rawValue)") { _ in try await inner.list(type) }
    }
    public func stat(_ handle: Handle) async throws -> ObjectInfo {
        try await retrying("stat \(handle)") { _ in try await inner.stat(handle) }
    }
    public func read(_ handle: Handle, range: Range<Int>?) async throws -> Data {
        try await retrying("read \(handle)") { _ in try await inner.read(handle, range: range) }
    }
    public func write(_ handle: Handle, data: Data) async throws {
        try await retrying("write \(handle)") { _ in try await inner.write(handle, data: data) }
    }
    public func delete(_ handle: Handle) async throws {
        try await retrying("delete \(handle)") { attempt in
            do { try await inner.delete(handle) } catch let e as StorageError where e.kind == .notFound && attempt > 1 {
                return
            }
        }
    }
}
