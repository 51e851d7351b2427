import Foundation
import Glibc
import LifeboatCore

/// A drill's sandbox: a fresh folder per run under the drill's `sandbox` root, marked with the PID that made it,
/// removed at the end (after every process still using it is stopped), and swept at the next start when the
/// process that made it died (SIGKILL, a crash).
public enum Sandbox {
    public static let prefix = "lifeboat-drill-"
    static let marker = ".lifeboat-drill"

    /// Creates `root/lifeboat-drill-NAME-SITE-STAMP` (mode 0700) with its marker.
    public static func create(root: String, drill: String, site: String, now: Date) throws -> String {
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o711])
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyyMMdd'T'HHmmss"
        let path = "\(root)/\(prefix)\(drill)-\(site)-\(f.string(from: now))-\(String(format: "%04x", UInt16.random(in: 0...UInt16.max)))"
        guard mkdir(path, 0o700) == 0 else { throw LifeboatError(.io, "cannot create the sandbox \(path): \(String(cString: strerror(errno)))") }
        try writeFileAtomically("\(path)/\(marker)", Data("\(getpid()) \(processStart(getpid()) ?? 0)\n".utf8))
        return path
    }

    /// Removes a sandbox: processes whose working folder or open files are inside it get SIGTERM, then SIGKILL
    /// after `grace` seconds; then the tree goes (symlinks are removed, never followed).
    public static func remove(_ path: String, grace: Double = 5) async {
        stopPostgres(in: path)
        let pids = users(of: path)
        for p in pids { kill(p, SIGTERM) }
        let end = ContinuousClock.now + .milliseconds(Int64(grace * 1000))
        while !users(of: path).isEmpty && ContinuousClock.now < end { try? await Task.sleep(for: .milliseconds(50)) }
        for p in users(of: path) { kill(p, SIGKILL) }
        try? FileManager.default.removeItem(atPath: path)
    }

    /// A PostgreSQL server whose data directory is the sandbox or a folder of it gets SIGQUIT, its
    /// immediate shutdown (SIGTERM would wait for its clients), when the PID of its postmaster.pid runs there.
    static func stopPostgres(in path: String) {
        let top = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        let dirs = [path] + top.map { path + "/" + $0 }
        for dir in dirs {
            // (The drill's user's file: read as PostgresDrill reads it, never through a link or from a FIFO.)
            guard let text = PostgresDrill.readOwned(dir + "/postmaster.pid", last: 4096),
                  let pid = text.split(separator: "\n").first.flatMap({ Int32($0.trimmingCharacters(in: .whitespaces)) }), pid > 1, pid != getpid(),
                  let cwd = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/cwd"),
                  cwd == path || cwd.hasPrefix(path + "/") else { continue }
            kill(pid, SIGQUIT)
        }
    }

    /// Sandboxes under `root` whose maker is gone (not this process, not alive with the same start time).
    public static func stale(root: String) -> [String] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: root) else { return [] }
        return names.filter { $0.hasPrefix(prefix) }.map { "\(root)/\($0)" }.filter { dir in
            guard let text = try? String(contentsOfFile: "\(dir)/\(marker)", encoding: .utf8) else { return true }
            let parts = text.split(whereSeparator: \.isWhitespace).compactMap { Int64($0) }
            guard parts.count == 2, let pid = Int32(exactly: parts[0]) else { return true }
            if pid == getpid() { return false }
            return processStart(pid) != UInt64(exactly: parts[1])
        }
    }

    /// Removes the stale sandboxes under `root`; returns them.
    public static func sweep(root: String) async -> [String] {
        let found = stale(root: root)
        for d in found { await remove(d) }
        return found
    }

    /// A process's start time in clock ticks since boot (`/proc/PID/stat` field 22), to tell a reused PID.
    static func processStart(_ pid: Int32) -> UInt64? {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = s.lastIndex(of: ")") else { return nil }
        let fields = s[s.index(after: close)...].split(separator: " ")
        return fields.count > 19 ? UInt64(fields[19]) : nil
    }

    /// Processes (other than this one) whose working folder, root or an open file is `path` or inside it.
    static func users(of path: String) -> [Int32] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        let me = getpid()
        func inside(_ link: String) -> Bool {
            guard let t = try? FileManager.default.destinationOfSymbolicLink(atPath: link) else { return false }
            return t == path || t.hasPrefix(path + "/")
        }
        var out: [Int32] = []
        for e in entries {
            guard let pid = Int32(e), pid != me, pid > 1 else { continue }
            if inside("/proc/\(pid)/cwd") || inside("/proc/\(pid)/root") { out.append(pid); continue }
            let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
            if fds.prefix(4096).contains(where: { inside("/proc/\(pid)/fd/\($0)") }) { out.append(pid) }
        }
        return out
    }
}
