import CLifeboatSys
import Foundation
import Glibc
import LifeboatCore

/// A child process in a process group of its own, so that a timeout kills it and everything it started (a hook
/// that runs `sleep`, a dump tool's helpers). Arguments go in argv; secrets go in the environment only.
public struct Child: Sendable {
    public let pid: pid_t
    public let program: String

    public struct Exit: Sendable {
        public var status: Int32
        public var signal: Int32?
        public var timedOut: Bool
        public var ok: Bool { signal == nil && status == 0 && !timedOut }
        public var description: String {
            timedOut ? "was killed at its timeout" : signal.map { "was killed by signal \($0)" } ?? "failed with exit status \(status)"
        }
    }

    /// A user a child runs as: its IDs and home (from the password database).
    public struct User: Sendable, Equatable {
        public var name: String
        public var uid: uid_t
        public var gid: gid_t
        public var home: String

        public init?(named name: String) {
            guard let pw = getpwnam(name) else { return nil }
            self.name = name
            uid = pw.pointee.pw_uid
            gid = pw.pointee.pw_gid
            home = String(cString: pw.pointee.pw_dir)
        }
    }

    /// Starts `argv` (looked up in PATH when it has no slash) with `environment` added to this process's.
    /// `stdout`/`stderr`: descriptors for the child (nil: /dev/null). `user`: run as that user (through
    /// util-linux `setpriv`, with its groups and home; the caller must be root), without this process's secrets
    /// (`isSecret`: passwords, tokens, keys in its environment stay here). `directory`: its working folder.
    public static func spawn(_ argv: [String], environment: [String: String] = [:], stdout: Int32? = nil, stderr: Int32? = nil,
                             user: User? = nil, directory: String? = nil, stdin: Int32? = nil) throws -> Child {
        try spawn(argv, environment: environment, stdout: stdout, stderr: stderr, user: user, directory: directory, stdin: stdin, scrub: false)
    }

    /// Whether an environment variable's name says it holds a secret (LIFEBOAT_PASSWORD, AWS_SECRET_ACCESS_KEY,
    /// PGPASSWORD, REDISCLI_AUTH, MYSQL_PWD, *_TOKEN, …).
    public static func isSecret(_ name: String) -> Bool {
        let n = name.uppercased()
        return ["PASSWORD", "PASSWD", "SECRET", "TOKEN", "CREDENTIAL", "PRIVATE"].contains { n.contains($0) }
            || n.hasSuffix("_AUTH") || n.hasSuffix("_PWD") || n.hasSuffix("_PASS") || n.hasSuffix("_KEY")
    }

    static func spawn(_ argv: [String], environment: [String: String], stdout: Int32?, stderr: Int32?,
                      user: User?, directory: String?, stdin: Int32?, scrub: Bool) throws -> Child {
        guard let first = argv.first, !first.isEmpty else { throw ChildError("an empty command") }
        if let user {
            guard getuid() == 0 || getuid() == user.uid else { throw ChildError("cannot run \(first) as \(user.name): only root can change user") }
            guard let setpriv = Child.which("setpriv") else { throw ChildError("cannot run \(first) as \(user.name): setpriv (util-linux) is not in PATH") }
            var env = environment
            env["HOME"] = user.home
            env["USER"] = user.name
            env["LOGNAME"] = user.name
            return try spawn([setpriv, "--reuid=\(user.uid)", "--regid=\(user.gid)", "--init-groups", "--"] + argv, environment: env,
                             stdout: stdout, stderr: stderr, user: nil, directory: directory, stdin: stdin, scrub: true)
        }
        let path: String
        if first.contains("/") { path = first } else {
            guard let p = Child.which(first) else { throw ChildError("\(first): no such command in PATH") }
            path = p
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let directory { _ = lb_spawn_chdir(&actions, directory) }
        if let stdin { posix_spawn_file_actions_adddup2(&actions, stdin, 0) } else { posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0) }
        if let stdout { posix_spawn_file_actions_adddup2(&actions, stdout, 1) } else { posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0) }
        if let stderr { posix_spawn_file_actions_adddup2(&actions, stderr, 2) } else { posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0) }
        // Nothing else of the agent's: not its listening socket, its database or other jobs' pipes.
        _ = lb_spawn_close_from(&actions, 3)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        posix_spawnattr_setpgroup(&attr, 0)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigdefault(&attr, &all)
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attr, &none)
        var env = ProcessInfo.processInfo.environment
        if scrub { env = env.filter { !isSecret($0.key) } }
        env.merge(environment) { $1 }
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { cArgs.forEach { free($0) }; cEnv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, &attr, cArgs, cEnv)
        guard rc == 0 else { throw ChildError("cannot run \(path): \(String(cString: strerror(rc)))") }
        return Child(pid: pid, program: first)
    }

    public static func which(_ name: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") {
            let p = "\(dir)/\(name)"
            var st = stat()
            if access(p, X_OK) == 0, stat(p, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG { return p }
        }
        return nil
    }

    /// Waits for the child; after `timeout` seconds its whole process group gets SIGTERM, and SIGKILL 5 s later.
    public func wait(timeout: Double? = nil) async -> Exit {
        let start = ContinuousClock.now
        var timedOut = false
        var termSent: ContinuousClock.Instant?
        while true {
            var st: Int32 = 0
            let r = waitpid(pid, &st, WNOHANG)
            if r == pid {
                let sig = st & 0x7f
                if sig == 0 { return Exit(status: (st >> 8) & 0xff, signal: nil, timedOut: timedOut) }
                return Exit(status: 128 + sig, signal: sig, timedOut: timedOut)
            }
            if r < 0 && errno != EINTR { return Exit(status: 255, signal: nil, timedOut: timedOut) }
            let elapsed = ContinuousClock.now - start
            // The job was cancelled (the agent stops): the child goes with it.
            if Task.isCancelled && termSent == nil && !timedOut {
                timedOut = true
                kill(-pid, SIGKILL)
            }
            if let timeout, !timedOut, elapsed > .milliseconds(Int64(min(timeout, 1e9) * 1000)) {
                timedOut = true
                kill(-pid, SIGTERM)
                termSent = .now
            }
            if let t = termSent, ContinuousClock.now - t > .seconds(5) {
                kill(-pid, SIGKILL)
                termSent = nil
            }
            try? await Task.sleep(for: .milliseconds(elapsed < .seconds(1) ? 5 : 50))
        }
    }

    /// Kills the whole group now (the job was cancelled).
    public func killGroup() { kill(-pid, SIGKILL) }
}

public struct ChildError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// A pipe whose read end collects up to `limit` bytes in the background (a child's standard error, for the
/// error message), discarding the rest.
public final class Capture: Sendable {
    public let readFD: Int32
    public let writeFD: Int32
    public let limit: Int
    private let task: Task<[UInt8], Never>

    public init(limit: Int = 16 << 10) throws {
        var fds: [Int32] = [0, 0]
        guard makePipe(&fds) else { throw ChildError("cannot create a pipe: \(String(cString: strerror(errno)))") }
        readFD = fds[0]
        writeFD = fds[1]
        self.limit = limit
        let fd = fds[0]
        // The reading blocks: on a Dispatch thread, never on one of Swift concurrency's.
        task = Task {
            await withCheckedContinuation { (cont: CheckedContinuation<[UInt8], Never>) in
                DispatchQueue.global().async {
                    var kept: [UInt8] = []
                    var buf = [UInt8](repeating: 0, count: 4096)
                    while true {
                        let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                        if n < 0 && errno == EINTR { continue }
                        if n <= 0 { break }
                        kept += buf[0..<n]
                        if kept.count > limit { kept.removeFirst(kept.count - limit) }
                    }
                    close(fd)
                    cont.resume(returning: kept)
                }
            }
        }
    }

    /// Closes this process's write end (after the spawn) so that the reader sees the end when the child exits.
    public func closeWriter() { close(writeFD) }

    /// Everything captured (the last `limit` bytes), as it came.
    public func all() async -> String { String(decoding: await task.value, as: UTF8.self) }

    /// The last lines captured, trimmed, on one line.
    public func text(lines count: Int = 3) async -> String {
        let bytes = await task.value
        let s = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        let lines = s.split(whereSeparator: \.isNewline).suffix(count).joined(separator: " / ")
        return String(lines.suffix(count * 200))
    }
}

/// Runs hook commands (`/bin/sh -c`), one after another, each killed at the timeout.
public enum HookRunner {
    public static func run(_ commands: [String], timeout: Double, environment: [String: String], what: String) async throws {
        for c in commands {
            let capture = try Capture()
            let child: Child
            do {
                child = try Child.spawn(["/bin/sh", "-c", c], environment: environment, stdout: capture.writeFD, stderr: capture.writeFD)
            } catch {
                capture.closeWriter()
                throw ChildError("\(what) hook \"\(c)\": \(error)")
            }
            capture.closeWriter()
            let exit = await child.wait(timeout: timeout)
            let out = await capture.text()
            if exit.timedOut {
                throw ChildError("\(what) hook \"\(c)\" did not finish within \(Int(timeout)) s and was killed\(out.isEmpty ? "" : ": \(out)")")
            }
            if !exit.ok {
                throw ChildError("\(what) hook \"\(c)\" failed with \(exit.signal.map { "signal \($0)" } ?? "exit status \(exit.status)")\(out.isEmpty ? "" : ": \(out)")")
            }
        }
    }
}

/// A pipe whose ends are closed on exec (children get only what they are given as 0, 1, 2).
public func makePipe(_ fds: inout [Int32]) -> Bool {
    guard pipe(&fds) == 0 else { return false }
    _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
    _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
    return true
}

/// Reads up to `max` bytes on a Dispatch thread (a blocking read never holds one of Swift concurrency's threads).
public func blockingRead(_ fd: Int32, max: Int, what: String) async throws -> [UInt8] {
    try await withCheckedThrowingContinuation { (cont: CheckedContinuation<[UInt8], any Error>) in
        DispatchQueue.global().async {
            var b = [UInt8](repeating: 0, count: max)
            while true {
                let n = b.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, max) }
                if n >= 0 { b.removeLast(max - n); cont.resume(returning: b); return }
                if errno != EINTR { cont.resume(throwing: LifeboatError(.io, "cannot read \(what): \(String(cString: strerror(errno)))")); return }
            }
        }
    }
}
