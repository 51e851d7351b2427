/// The error type of Lifeboat: a code that callers switch on, a message for the user
/// that says what happened and what to do, and an optional underlying cause.
public struct LifeboatError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let raw: String
        public var description: String { raw }
        /// No repository at the given location (exit code 10).
        public static let noRepository = Code(raw: "no-repository")
        /// No key opens with this password (exit code 12).
        public static let wrongPassword = Code(raw: "wrong-password")
        /// The repository is locked by another process (exit code 11).
        public static let locked = Code(raw: "locked")
        /// A stored object failed a hash, MAC or structure check.
        public static let corrupt = Code(raw: "corrupt")
        /// A named thing (snapshot, path, key, object) does not exist.
        public static let notFound = Code(raw: "not-found")
        /// Bad user input: flags, patterns, config.
        public static let invalidArgument = Code(raw: "invalid-argument")
        /// The repository already exists.
        public static let alreadyExists = Code(raw: "already-exists")
        /// Local file-system or storage failure.
        public static let io = Code(raw: "io")
        /// The repository format is newer or older than this program reads.
        public static let unsupported = Code(raw: "unsupported")
        /// The operation was interrupted (SIGINT/SIGTERM).
        public static let interrupted = Code(raw: "interrupted")
    }

    public var code: Code
    public var message: String
    public var underlying: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, underlying: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    public var description: String {
        if let underlying { return "\(message): \(underlying)" }
        return message
    }

    public static func corrupt(_ message: String) -> LifeboatError { LifeboatError(.corrupt, message) }
    public static func invalid(_ message: String) -> LifeboatError { LifeboatError(.invalidArgument, message) }
}

/// Documented process exit codes (restic-compatible where restic defines one).
public enum ExitStatus {
    public static let ok: Int32 = 0
    public static let failure: Int32 = 1
    public static let usage: Int32 = 64  // EX_USAGE, as swift-argument-parser reports bad flags
    /// Backup finished, but some source files could not be read; or restore finished with damaged files.
    public static let partial: Int32 = 3
    public static let noRepository: Int32 = 10
    public static let locked: Int32 = 11
    public static let wrongPassword: Int32 = 12
    public static let interrupted: Int32 = 130
    /// `sites status`: a site cannot be reached.
    public static let siteUnreachable: Int32 = 20
    /// `sites status --max-lag`: a replica lags more than allowed.
    public static let siteLagging: Int32 = 21
    /// `check --max-age`, `snapshots --max-age`: the newest snapshot of some host+paths group is older than
    /// allowed (or there is no snapshot at all).
    public static let snapshotTooOld: Int32 = 22
    /// `drill run`: a drill failed at some site (a step, or an objective missed).
    public static let drillFailed: Int32 = 23
    /// `playbook run`: a step failed (`--resume` runs it again from there).
    public static let playbookFailed: Int32 = 24

    public static func forError(_ error: Error) -> Int32 {
        guard let e = error as? LifeboatError else { return failure }
        switch e.code {
        case .noRepository: return noRepository
        case .locked: return locked
        case .wrongPassword: return wrongPassword
        case .interrupted: return interrupted
        default: return failure
        }
    }
}
