import Foundation
import LifeboatBackends
import LifeboatCore
import LifeboatRepository
import LifeboatS3
import LifeboatSites
import LifeboatStorage

/// How to open the sites of a sites file: each with its own password file and credentials file, over the
/// backend settings of the caller (the CLI's options, the agent's plan).
public struct SiteAccess: Sendable {
    public var settings: BackendSettings
    /// Hears of each retried request, per site.
    public var onRetry: @Sendable (_ site: String, _ what: String, _ attempt: Int, _ error: StorageError) -> Void
    /// The password of a site without `password_file` (the CLI asks on the terminal or reads its own options).
    public var password: @Sendable (Site) throws -> String
    /// Where opened repositories come from instead (the agent's cache: keys unlocked once, not one scrypt per job).
    public var reuse: (@Sendable (Site) async throws -> Repository)?

    public init(settings: BackendSettings,
                onRetry: @escaping @Sendable (String, String, Int, StorageError) -> Void = { _, _, _, _ in },
                password: @escaping @Sendable (Site) throws -> String) {
        self.settings = settings
        self.onRetry = onRetry
        self.password = password
    }

    /// A site's repository: from `reuse` when set, else opened.
    public func open(_ site: Site) async throws -> Repository {
        if let reuse { return try await reuse(site) }
        return try await openNew(site)
    }

    /// Opens a site's repository for deletes: through `admin_repository` with `admin_credentials_file` when the
    /// site has them (it refuses deletes otherwise), else as `openNew`.
    public func openAdmin(_ site: Site) async throws -> Repository {
        guard let admin = site.adminRepository else { return try await openNew(site) }
        var s = site
        s.repository = admin
        s.credentialsFile = site.adminCredentialsFile
        s.objectLockDays = nil
        return try await openNew(s)
    }

    /// Opens a site's repository: its credentials file's `KEY=VALUE` lines join the environment for this site only.
    public func openNew(_ site: Site) async throws -> Repository {
        try await Repository.open(backend: try await backend(site), password: try password(for: site))
    }

    /// A site's backend, as `openNew` reaches it (credentials, Object Lock, limits), without opening the repository.
    public func backend(_ site: Site) async throws -> any Backend {
        var s = settings
        if let f = site.credentialsFile { s.environment.merge(try readEnvironmentFile(f)) { $1 } }
        if let days = site.objectLockDays {
            s.objectLock = ObjectLock(days: days, mode: site.objectLockMode == "compliance" ? .compliance : .governance)
        }
        // The site's own limits, else the caller's (the CLI's --limit-upload/--limit-download).
        s.limitUpload = site.limitUpload ?? s.limitUpload
        s.limitDownload = site.limitDownload ?? s.limitDownload
        let name = site.name, onRetry = self.onRetry
        return try await BackendRegistry.open(site.repository, settings: s) { onRetry(name, $0, $1, $2) }
    }

    /// A site's password: its `password_file`, else what `password` gives.
    public func password(for site: Site) throws -> String {
        try site.passwordFile.map { try readPasswordFile($0, from: "password_file of site \(site.name)") } ?? password(site)
    }
}

/// A short, single-line description of an error for logs, the state file and status records.
public func errorText(_ error: any Error) -> String {
    switch error {
    case let e as LifeboatError: return e.description
    case let e as StorageError: return e.message
    default: return "\(error)"
    }
}
