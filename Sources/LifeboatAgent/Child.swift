import CLifeboatSys
import Foundation
import Glibc

/// A child process in a process group of its own, so that a timeout kills it and everything it started (a hook
/// that runs `sleep`, a dump tool's helpers). Arguments go in argv; secrets go in the environment only.
struct Child: Sendable {
    let pid: pid_t
    let program: String

    struct Exit: Sendable {
        var status: Int32
        var signal: Int32?
        var timedOut: Bool
        var ok: Bool { signal == nil && status == 0 && !timedOut }
    }

    /// Starts `argv` (looked up in PATH when it has no slash) with `environment` added to this process's.
    /// `stdout`/`stderr`: descriptors for the child (nil: /dev/null).
    static func spawn(_ argv: [String], environment: [String: String] = [:], stdout: Int32? = nil, stderr: Int32? = nil) throws -> Child {
        guard let first = argv.first, !first.isEmpty else { throw ChildError("an empty command") }
        let path: String
        if first.contains("/") { path = first } else {
            guard let p = Child.which(first) else { throw ChildError("\(first): no such command in PATH") }
            path = p
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
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
        env.merge(environment) { $1 }
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { cArgs.forEach { free($0) }; cEnv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, &attr, cArgs, cEnv)
        guard rc == 0 else { throw ChildError("cannot run \(path): \(String(cString: strerror(rc)))") }
        return Child(pid: pid, program: first)
    }

    static func which(_ name: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") {
            let p = "\(dir)/\(name)"
            var st = stat()
            if access(p, X_OK) == 0, stat(p, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG { return p }
        }
        return nil
    }

    /// Waits for the child; after `timeout` seconds its whole process group gets SIGTERM, and SIGKILL 5 s later.
    func wait(timeout: Double? = nil) async -> Exit {
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
    func killGroup() { kill(-pid, SIGKILL) }
}

struct ChildError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// A pipe whose read end collects up to `limit` bytes in the background (a child's standard error, for the
/// error message), discarding the rest.
final class Capture: Sendable {
    let readFD: Int32
    let writeFD: Int32
    let limit: Int
    private let task: Task<[UInt8], Never>

    init(limit: Int = 16 << 10) throws {
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
    func closeWriter() { close(writeFD) }

    /// The last lines captured, trimmed, on one line.
    func text() async -> String {
        let bytes = await task.value
        let s = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        let lines = s.split(whereSeparator: \.isNewline).suffix(3).joined(separator: " / ")
        return String(lines.suffix(600))
    }
}

/// Runs hook commands (`/bin/sh -c`), one after another, each killed at the timeout.
enum HookRunner {
    static func run(_ commands: [String], timeout: Double, environment: [String: String], what: String) async throws {
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
func makePipe(_ fds: inout [Int32]) -> Bool {
    guard pipe(&fds) == 0 else { return false }
    _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
    _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
    return true
}
