import ArgumentParser
import CLifeboatSys
import Foundation
import Glibc
import LifeboatCompression
import LifeboatBackends
import LifeboatCore
import LifeboatReplication
import LifeboatCrypto
import LifeboatHTTP
import LifeboatRepository
import LifeboatS3
import LifeboatSites
import LifeboatSnapshot
import LifeboatStorage
import Synchronization

/// Options every repository command takes.
public struct GlobalOptions: ParsableArguments {
    @Option(name: [.customShort("r"), .customLong("repo")], help: "Repository location (or LIFEBOAT_REPOSITORY): PATH, local:PATH, s3:https://HOST/BUCKET/PREFIX, s3:BUCKET/PREFIX, rest:https://USER:PASS@HOST:PORT/PATH or rclone:REMOTE:PATH.")
    var repo: String?

    @Option(name: .customLong("cacert"), help: "PEM file of extra CA certificates to trust for HTTPS (or LIFEBOAT_CACERT).")
    var cacert: String?

    @Option(name: .customLong("timeout"), help: "Seconds without data from a remote site before a request fails and is retried (default 60, or LIFEBOAT_TIMEOUT).")
    var timeout: Double?

    @Flag(name: .customLong("no-cache"), help: "Do not use the local metadata cache of remote repositories.")
    var noCache = false

    @Option(name: .customLong("cache-dir"), help: "Folder of the metadata cache (or LIFEBOAT_CACHE_DIR; default ~/.cache/lifeboat).")
    var cacheDir: String?

    @Option(name: .customLong("s3-object-lock-days"), help: "S3: protect written objects (not locks) with Object Lock for N days.")
    var objectLockDays: Int?

    @Option(name: .customLong("s3-object-lock-mode"), help: "S3 Object Lock mode: governance (default) or compliance.")
    var objectLockMode: String = "governance"

    @Option(name: .customLong("s3-as-of"), help: "S3: open the repository as the bucket was at TIME (RFC 3339 or Unix seconds), from object versions, read-only: what deletes hid since comes back.")
    var s3AsOf: String?

    @Option(name: .customLong("password-file"), help: "File holding the password (or LIFEBOAT_PASSWORD_FILE; LIFEBOAT_PASSWORD also works).")
    var passwordFile: String?

    @Option(name: .customLong("limit-upload"), help: "Limit uploads to a repository to this many KiB/s (or LIFEBOAT_LIMIT_UPLOAD).")
    var limitUpload: Int?

    @Option(name: .customLong("limit-download"), help: "Limit downloads from a repository to this many KiB/s (or LIFEBOAT_LIMIT_DOWNLOAD).")
    var limitDownload: Int?

    @Flag(help: "Print one JSON object per line instead of text.")
    var json = false

    @Flag(name: .shortAndLong, help: "Print only errors and results.")
    var quiet = false

    @Flag(name: .customLong("no-lock"), help: "Read-only commands: take no lock (for read-only media; a concurrent prune may then remove what is being read).")
    var noLock = false

    public init() {}

    var env: [String: String] { ProcessInfo.processInfo.environment }

    func repositoryLocation() throws -> String {
        guard let r = repo ?? env["LIFEBOAT_REPOSITORY"], !r.isEmpty else {
            throw LifeboatError.invalid("no repository given: use -r/--repo or set LIFEBOAT_REPOSITORY")
        }
        return r
    }

    /// How backends are reached, from the options and the environment (validated: out-of-range numbers are
    /// refused with their name).
    func backendSettings() throws -> BackendSettings {
        try GlobalOptions.validateEnvironment(env)
        var http = try HTTPOptions.validatedFromEnvironment(env)
        if let cacert { http.caCertFile = cacert }
        if let timeout { http.readTimeout = try Bounds.check(timeout, HTTPOptions.timeoutRange, "--timeout") }
        var lock: ObjectLock? = nil
        if let days = objectLockDays {
            _ = try Bounds.check(days, 1...36500, "--s3-object-lock-days")
            guard let mode = ObjectLock.Mode(rawValue: objectLockMode.uppercased()) else {
                throw LifeboatError.invalid("invalid --s3-object-lock-mode \"\(objectLockMode)\": use governance or compliance")
            }
            lock = ObjectLock(days: days, mode: mode)
        }
        var settings = BackendSettings(http: http, retry: try RetryPolicy.validatedFromEnvironment(env), objectLock: lock,
                                       cache: !noCache, cacheDir: cacheDir, environment: env,
                                       limitUpload: try GlobalOptions.limit(limitUpload, env["LIFEBOAT_LIMIT_UPLOAD"], "--limit-upload", "LIFEBOAT_LIMIT_UPLOAD"),
                                       limitDownload: try GlobalOptions.limit(limitDownload, env["LIFEBOAT_LIMIT_DOWNLOAD"], "--limit-download", "LIFEBOAT_LIMIT_DOWNLOAD"))
        settings.s3AsOf = try pointInTime()
        return settings
    }

    /// `--s3-as-of`: an RFC 3339 time or Unix seconds, not in the future.
    func pointInTime() throws -> Date? {
        guard let s = s3AsOf else { return nil }
        guard let t = Timestamp.parse(s) ?? (try? Bounds.number(s, 0...253_402_300_799, "--s3-as-of")).map({ Date(timeIntervalSince1970: $0) }) else {
            throw LifeboatError.invalid("invalid --s3-as-of \"\(s)\": use RFC 3339 (2026-12-01T06:00:00Z) or Unix seconds")
        }
        guard t <= currentTime().addingTimeInterval(60) else {
            throw LifeboatError.invalid("--s3-as-of \(s) is in the future: the bucket's past is all there is to read")
        }
        return t
    }

    /// A bandwidth limit in KiB/s from an option or else its environment variable, range-checked with its name.
    static func limit(_ option: Int?, _ variable: String?, _ optionName: String, _ variableName: String) throws -> Int? {
        if let option { return try Bounds.check(option, ThrottledBackend.limitRange, optionName) }
        guard let v = variable, !v.isEmpty else { return nil }
        guard let n = Int(v) else { throw LifeboatError.invalid("\(variableName) must be a whole number of KiB/s (got \"\(v)\")") }
        return try Bounds.check(n, ThrottledBackend.limitRange, variableName)
    }

    /// The backend for `location` (default: the repository option), wrapped in the retry decorator and,
    /// for remote sites, the metadata cache.
    /// `readOnly`: a repository only read (copy's source): Object Lock, which applies to writes, is left out.
    func backend(location: String? = nil, readOnly: Bool = false) async throws -> any Backend {
        let out = output
        var settings = try backendSettings()
        if readOnly { settings.objectLock = nil }
        return try await BackendRegistry.open(try location ?? repositoryLocation(), settings: settings) { what, attempt, error in
            out.warn("\(what) failed (attempt \(attempt)): \(error.message); retrying")
        }
    }

    /// How `replicate` and `sites status` open the sites of a sites file: these options, each site's own password
    /// and credentials files; a site without a password file gets the repository password (asked on a terminal).
    func siteAccess() throws -> SiteAccess {
        let out = output
        let file = passwordFile, env = self.env
        return SiteAccess(settings: try backendSettings(), onRetry: { site, what, attempt, error in
            out.warn("\(site): \(what) failed (attempt \(attempt)): \(error.message); retrying")
        }, password: { site in try GlobalOptions.password(file: file, environment: env, prompt: "enter password for site \(site.name): ") })
    }

    /// Rejects `LIFEBOAT_*` numbers that are out of range, with the variable's name, before anything uses them
    /// (the library's non-throwing readers fall back to defaults). `backend()` reads the HTTP and retry settings
    /// through their validating readers itself.
    static func validateEnvironment(_ env: [String: String]) throws {
        _ = try ScryptParameters.validatedFromEnvironment(env)
        try LockTiming.validateEnvironment(env)
        if let s = env["LIFEBOAT_NOW"], !s.isEmpty, currentTimeOverride(s) == nil {
            throw LifeboatError.invalid("LIFEBOAT_NOW must be an RFC 3339 time or Unix seconds between 1970 and 9999 (got \"\(s)\")")
        }
    }

    func password(confirm: Bool = false, prompt: String = "enter password for repository: ") throws -> String {
        try GlobalOptions.password(file: passwordFile, environment: env, confirm: confirm, prompt: prompt)
    }

    /// The password from --password-file, LIFEBOAT_PASSWORD_FILE, LIFEBOAT_PASSWORD, else asked on the terminal.
    static func password(file passwordFile: String?, environment env: [String: String], confirm: Bool = false,
                         prompt: String) throws -> String {
        if let f = passwordFile { return try readPasswordFile(f, from: "--password-file") }
        if let f = env["LIFEBOAT_PASSWORD_FILE"] { return try readPasswordFile(f, from: "LIFEBOAT_PASSWORD_FILE") }
        if let p = env["LIFEBOAT_PASSWORD"] { return p }
        guard isatty(0) != 0 else {
            throw LifeboatError.invalid("no password given: use --password-file, LIFEBOAT_PASSWORD_FILE or LIFEBOAT_PASSWORD")
        }
        let p = try promptPassword(prompt)
        if confirm {
            guard try promptPassword("enter password again: ") == p else { throw LifeboatError.invalid("passwords do not match") }
        }
        guard !p.isEmpty else { throw LifeboatError.invalid("an empty password is not allowed") }
        return p
    }

    /// Opens the repository named by the options.
    func open(compression: String? = nil, dryRun: Bool = false) async throws -> Repository {
        let b = try await backend()
        let pw = try password()
        var mode: CompressionMode? = nil
        if let c = compression {
            guard let m = CompressionMode(rawValue: c) else { throw LifeboatError.invalid("invalid --compression \"\(c)\": use off, fast, auto or max") }
            mode = m
        }
        let repo = try await Repository.open(backend: b, password: pw, compression: mode, dryRun: dryRun)
        let out = output
        repo.onDamage { out.warn("warning: \($0)") }
        return repo
    }

    var output: Output { Output(json: json, quiet: quiet) }
}

func promptPassword(_ prompt: String) throws -> String {
    FileHandle.standardError.write(Data(prompt.utf8))
    var old = termios()
    tcgetattr(0, &old)
    var noecho = old
    noecho.c_lflag &= ~tcflag_t(ECHO)
    tcsetattr(0, TCSANOW, &noecho)
    defer { tcsetattr(0, TCSANOW, &old); FileHandle.standardError.write(Data("\n".utf8)) }
    guard let line = readLine(strippingNewline: true) else { throw LifeboatError.invalid("no password entered") }
    return line
}

/// Whether a progress bar stands on the terminal's last line: a line printed meanwhile clears it first (the
/// bar is drawn again on the next tick), so that text never runs on after the bar.
/// Drawing the bar and printing a line take the same lock, so that neither lands in the middle of the other.
/// Its value: whether a bar stands on the last line.
let progressBar = Mutex<Bool>(false)

/// Clears the bar (if one is shown), then runs `body` (a print) before any bar is drawn again.
func withProgressBarCleared(_ body: () -> Void = {}) {
    progressBar.withLock { shown in
        if shown { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)); shown = false }
        body()
    }
}

func clearProgressBar() { withProgressBarCleared() }

/// Prints results as text or JSON lines; progress goes to stderr only on a terminal.
struct Output: Sendable {
    var json: Bool
    var quiet: Bool

    func line(_ s: String) {
        if !json { withProgressBarCleared { print(s) } }
    }

    func info(_ s: String) {
        if !json && !quiet { withProgressBarCleared { print(s) } }
    }

    func emit(_ object: [String: Any]) {
        guard json else { return }
        print(Output.encode(object))
    }

    /// An Encodable record as a dictionary (to add a message_type); empty if it does not encode to an object.
    static func object(_ value: some Encodable) -> [String: Any] {
        guard let d = try? JSONEncoder().encode(value), let o = try? JSONSerialization.jsonObject(with: d) as? [String: Any] else { return [:] }
        return o
    }

    static func encode(_ object: Any) -> String {
        guard let d = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) else { return "{}" }
        return String(decoding: d, as: UTF8.self)
    }

    func warn(_ s: String) {
        withProgressBarCleared {
            if json {
                FileHandle.standardError.write(Data((Output.encode(["message_type": "error", "message": s]) + "\n").utf8))
            } else {
                FileHandle.standardError.write(Data((s + "\n").utf8))
            }
        }
    }

    var showsProgressBar: Bool { !json && !quiet && isatty(2) != 0 }
}

/// Prints `Fatal: message` on stderr and returns the exit to throw (status 1), for commands that take no
/// repository options (`serve`, `proxy`).
func fatal(_ message: String) -> ArgumentParser.ExitCode {
    FileHandle.standardError.write(Data("Fatal: \(message)\n".utf8))
    return ArgumentParser.ExitCode(ExitStatus.failure)
}

/// Runs `body`, mapping errors to documented exit codes and clear messages.
func runCommand(_ global: GlobalOptions, _ body: () async throws -> Int32) async throws {
    let code: Int32
    do {
        code = try await body()
    } catch let e as LifeboatError {
        global.output.warn("Fatal: \(e.description)")
        throw ArgumentParser.ExitCode(ExitStatus.forError(e))
    } catch let e as StorageError {
        global.output.warn("Fatal: storage: \(e.message)")
        throw ArgumentParser.ExitCode(ExitStatus.failure)
    } catch let e as ArgumentParser.ExitCode {
        throw e
    } catch {
        global.output.warn("Fatal: \(error)")
        throw ArgumentParser.ExitCode(ExitStatus.failure)
    }
    if code != 0 { throw ArgumentParser.ExitCode(code) }
}

/// Periodically renders progress on stderr (TTY) or as JSON status lines.
final class StopFlag: Sendable {
    let value = Atomic<Bool>(false)
}

final class Ticker: Sendable {
    let task: Task<Void, Never>
    /// Set under the bar's lock by `stop`: a tick already under way then draws nothing.
    let stopped = StopFlag()
    init(output: Output, interval: Double = 0.25, render: @escaping @Sendable () -> (line: ProgressLine, json: [String: Any])) {
        let bar = output.showsProgressBar
        let json = output.json && !output.quiet
        let stopped = self.stopped
        task = Task {
            var ticks = 0
            while !Task.isCancelled {
                try? await Task.sleep(nanoseconds: Bounds.nanoseconds(interval))
                if Task.isCancelled { break }
                ticks += 1
                let r = render()
                if bar {
                    // Redrawn in place, fitted to the terminal's width as it is now (it may have been resized).
                    let columns = Int(lb_terminal_columns(2))
                    let text = "\r\u{1B}[K" + r.line.render(width: columns > 0 ? columns : 80)
                    progressBar.withLock { shown in
                        guard !stopped.value.load(ordering: .relaxed) else { return }
                        FileHandle.standardError.write(Data(text.utf8))
                        shown = true
                    }
                } else if json && ticks % 4 == 0 && !r.json.isEmpty {
                    print(Output.encode(r.json))
                }
            }
        }
    }
    func stop(_ output: Output) {
        task.cancel()
        withProgressBarCleared { stopped.value.store(true, ordering: .relaxed) }
    }
}

func formatBytes(_ b: UInt64) -> String { Units.bytes(b) }

/// `--max-age 26h` in seconds (nil when not given).
func parseMaxAge(_ text: String?) throws -> Double? {
    guard let text else { return nil }
    do {
        let s = try parseSeconds(text)
        guard s > 0 else { throw LifeboatError.invalid("give a span longer than 0") }
        return s
    } catch { throw LifeboatError.invalid("--max-age \(text): \((error as? LifeboatError)?.message ?? "\(error)")") }
}

/// Says which host+paths groups have no snapshot younger than `--max-age` (stderr as text; one `snapshot_age`
/// object per group with --json), and that there is none at all when the repository (or filter) has none.
func reportAges(_ ages: [GroupAge], maxAge: Double, output: Output) {
    if ages.isEmpty { output.warn("no snapshots: nothing is younger than --max-age \(Units.span(maxAge))") }
    for g in ages {
        output.emit(["message_type": "snapshot_age", "host": g.host, "paths": g.paths, "latest_id": g.latestID.hex,
                     "latest_time": Timestamp.format(g.latestTime), "age_seconds": Int(g.ageSeconds.rounded()),
                     "max_age_seconds": Int(maxAge.rounded()), "stale": g.stale, "future": g.future])
        if g.future && !output.json {
            output.warn("dated in the future: the newest snapshot of \(g.host) [\(g.paths.joined(separator: ", "))] is \(g.latestID.short), \(Units.span(-g.ageSeconds)) ahead of this host's clock; its age cannot be judged (check the clocks, or back up again)")
        } else if g.stale && !output.json {
            output.warn("too old: the newest snapshot of \(g.host) [\(g.paths.joined(separator: ", "))] is \(g.latestID.short), \(Units.span(g.ageSeconds)) old (--max-age \(Units.span(maxAge)))")
        }
    }
}

/// 22 when some group is stale or there is no snapshot at all, else 0.
func ageStatus(_ ages: [GroupAge]) -> Int32 {
    ages.isEmpty || ages.contains(where: \.stale) ? ExitStatus.snapshotTooOld : 0
}

func formatDuration(_ s: Double) -> String { Units.clock(s) }


/// Snapshot filter options shared by snapshots, forget, restore's `latest`, and more.
struct FilterOptions: ParsableArguments {
    @Option(name: .customLong("host"), help: "Only snapshots of this host (repeatable).")
    var hosts: [String] = []
    @Option(name: .customLong("tag"), help: "Only snapshots with these tags (a,b = both; repeat for either).")
    var tags: [String] = []
    @Option(name: .customLong("path"), help: "Only snapshots with this path (repeatable).")
    var paths: [String] = []

    var filter: SnapshotFilter {
        SnapshotFilter(hosts: hosts, tags: tags, paths: paths.map { absolutePath($0).lossy })
    }
}

extension Array where Element == UInt8 {
    var lossy: String { String(decoding: self, as: UTF8.self) }
}

func snapshotJSON(_ id: ID, _ s: Snapshot) -> [String: Any] {
    var o: [String: Any] = ["id": id.hex, "short_id": id.short, "time": s.time, "tree": s.tree.hex, "paths": s.paths,
                            "hostname": s.hostname, "username": s.username, "tags": s.tags]
    if let p = s.parent { o["parent"] = p.hex }
    if let sum = s.summary, let d = try? JSONEncoder().encode(sum), let obj = try? JSONSerialization.jsonObject(with: d) {
        o["summary"] = obj
    }
    if let k = s.kind { o["kind"] = k }
    if let db = s.database { o["database"] = Output.object(db) }
    if let q = s.sqlite { o["sqlite"] = Output.object(q) }
    return o
}

/// Runs `body` while holding a repository lock; releases it on every path.
///
/// Read-only commands pass `readOnly` (their options): with `--no-lock` they take no lock, and when the lock
/// cannot be written because the repository is on read-only media (or the credentials may only read), they
/// warn and go on without one, as nothing they do can damage the repository.
func withRepositoryLock<T>(_ repo: Repository, _ kind: LockInfo.Kind, _ operation: String, readOnly: GlobalOptions? = nil,
                           _ body: () async throws -> T) async throws -> T {
    // A point in time is read-only: no lock can be written there, and none is needed.
    if let g = readOnly, g.noLock || g.s3AsOf != nil { return try await body() }
    var started = false
    do {
        return try await repo.withLock(kind, operation: operation, staleLocks: { stale in
            for l in stale {
                FileHandle.standardError.write(Data("warning: stale lock \(l.id.short) of \(l.info.operation) by PID \(l.info.pid) on \(l.info.hostname) (refreshed \(l.info.refreshed)) is ignored; `lifeboat unlock` removes it\n".utf8))
            }
        }) {
            started = true
            return try await body()
        }
    } catch let e as StorageError where !started && readOnly != nil && e.kind == .permanent {
        // A read-only command on read-only media: go on without a lock.
        readOnly?.output.warn("warning: cannot create a lock (\(e.message)); the repository looks read-only, so \(operation) goes on without one")
        return try await body()
    }
}

/// Splits `SNAPSHOT[:SUBPATH]`.
func splitSnapshotRef(_ s: String) -> (String, String) {
    guard let c = s.firstIndex(of: ":") else { return (s, "") }
    return (String(s[..<c]), String(s[s.index(after: c)...]))
}

/// Walks a tree depth-first, calling `visit` with each node's path (`/a/b`) in name order.
func walkTree(_ repo: Repository, _ tree: ID, path: String = "", _ visit: (String, Node) async throws -> Bool) async throws {
    let t = try await repo.loadTree(tree)
    for n in t.nodes {
        let p = path + "/" + n.nameString
        let descend = try await visit(p, n)
        if descend, let s = n.subtree { try await walkTree(repo, s, path: p, visit) }
    }
}

func nodeJSON(_ path: String, _ n: Node) -> [String: Any] {
    var o: [String: Any] = ["path": path, "name": n.nameString, "type": n.type.rawValue, "mode": n.mode,
                            "uid": n.uid, "gid": n.gid, "size": n.size, "mtime": Timestamp.format(Date(timeIntervalSince1970: Double(n.mtimeNs) / 1e9)),
                            "struct_type": "node"]
    if let u = n.user { o["user"] = u }
    if let g = n.group { o["group"] = g }
    if let l = n.linkTarget { o["linktarget"] = String(decoding: l, as: UTF8.self) }
    return o
}

func modeString(_ n: Node) -> String {
    let t: Character = switch n.type {
    case .dir: "d"
    case .symlink: "L"
    case .fifo: "p"
    case .chardev: "c"
    case .blockdev: "b"
    case .socket: "S"
    case .file: "-"
    }
    var s = String(t)
    let chars: [Character] = ["r", "w", "x"]
    for i in (0..<9).reversed() { s.append(n.mode & (1 << UInt32(i)) != 0 ? chars[(8 - i) % 3] : "-") }
    return s
}
