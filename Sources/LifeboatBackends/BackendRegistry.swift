import Foundation
import LifeboatCore
import LifeboatHTTP
import LifeboatREST
import LifeboatRepository
import LifeboatS3
import LifeboatStorage

/// How remote backends are reached: HTTP settings, retries, the metadata cache, S3 Object Lock, and the
/// environment credentials are read from (a site's credentials file is merged into it).
public struct BackendSettings: Sendable {
    public var http: HTTPOptions
    public var retry: RetryPolicy
    public var objectLock: ObjectLock?
    /// Keep a local copy of remote metadata (indexes, snapshots, keys) under `cacheDir`.
    public var cache = true
    public var cacheDir: String?
    public var environment: [String: String]
    /// Bandwidth limits in KiB/s (`--limit-upload`/`--limit-download`, a site's `limit_upload`/`limit_download`).
    public var limitUpload: Int?
    public var limitDownload: Int?
    /// Open S3 repositories as they were at this time, read-only (`--s3-as-of`).
    public var s3AsOf: Date? = nil

    public init(http: HTTPOptions, retry: RetryPolicy, objectLock: ObjectLock? = nil, cache: Bool = true, cacheDir: String? = nil,
                environment: [String: String] = ProcessInfo.processInfo.environment, limitUpload: Int? = nil, limitDownload: Int? = nil) {
        self.http = http; self.retry = retry; self.objectLock = objectLock; self.cache = cache; self.cacheDir = cacheDir
        self.environment = environment
        self.limitUpload = limitUpload; self.limitDownload = limitDownload
    }
}

/// The backend registry: turns a repository location (`PATH`, `local:`, `s3:`, `rest:`, `rclone:`) into a
/// backend, shared by the CLI and the agent.
public enum BackendRegistry {
    /// The bare backend for `location`.
    public static func make(_ location: String, http: HTTPOptions = .fromEnvironment(), objectLock: ObjectLock? = nil, s3AsOf: Date? = nil,
                            environment: [String: String] = ProcessInfo.processInfo.environment) async throws -> any Backend {
        func rest(_ prefix: String) -> String? { location.hasPrefix(prefix) ? String(location.dropFirst(prefix.count)) : nil }
        if objectLock != nil && !location.hasPrefix("s3:") {
            throw LifeboatError.invalid("--s3-object-lock-days applies to s3: repositories only")
        }
        if s3AsOf != nil && !location.hasPrefix("s3:") {
            throw LifeboatError.invalid("--s3-as-of applies to s3: repositories only (a bucket with versioning or Object Lock)")
        }
        do {
            if let p = rest("local:") { return LocalBackend(path: p) }
            if let s = rest("s3:") { return try S3Backend.make(s, options: http, objectLock: objectLock, asOf: s3AsOf, environment: environment) }
            if let u = rest("rest:") { return try RESTBackend.make(url: u, options: http, environment: environment) }
            if let r = rest("rclone:") { return try await RcloneBackend.make(r, options: http, environment: environment) }
        } catch let e as S3Error {
            throw LifeboatError.invalid(e.description)
        }
        if let colon = location.firstIndex(of: ":"), !location.hasPrefix("/"), !location.hasPrefix("."),
           location[..<colon].allSatisfy({ $0.isLetter }) && location[..<colon].count > 1 {
            throw LifeboatError.invalid("unknown repository scheme \"\(location[..<colon]):\": use a path, local:, s3:, rest: or rclone:")
        }
        return LocalBackend(path: location)
    }

    /// The backend for `location` as commands use it: retried on transient failures (`onRetry` hears of each
    /// retry), and, for remote stores, with the metadata cache in front.
    public static func open(_ location: String, settings: BackendSettings,
                            onRetry: @escaping @Sendable (_ what: String, _ attempt: Int, _ error: StorageError) -> Void) async throws -> any Backend {
        let remote = try await make(location, http: settings.http, objectLock: settings.objectLock, s3AsOf: settings.s3AsOf,
                                    environment: settings.environment)
        // "read config failed (attempt 1): http://… answered 500", not "…: read config: http://… answered 500":
        // backends name the operation in their messages too.
        let retrying = RetryingBackend(remote, policy: settings.retry) { what, attempt, error in
            var e = error
            if e.message.hasPrefix(what + ": ") { e.message = String(e.message.dropFirst(what.count + 2)) }
            onRetry(what, attempt, e)
        }
        // Limits apply to what crosses the network (or reaches the disk), not to the cache's hits.
        let limited: any Backend = settings.limitUpload == nil && settings.limitDownload == nil ? retrying
            : ThrottledBackend(retrying, uploadKiBps: settings.limitUpload, downloadKiBps: settings.limitDownload)
        // A point in time is read once: its listings must not prune the cache of the present.
        if remote is LocalBackend || !settings.cache || settings.s3AsOf != nil { return limited }
        return CachingBackend(limited, cacheRoot: settings.cacheDir ?? CachingBackend.defaultRoot())
    }
}
