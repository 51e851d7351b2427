import Foundation
import LifeboatCore
import LifeboatRepository
import LifeboatWAL

/// The local spool of `wal-push --async` and `wal-fetch`: a folder (default `lifeboat-spool` in the data directory,
/// the working directory PostgreSQL gives both commands) with `push/` and `fetch/`.
///
/// `push/` holds no WAL: only requests (`NAME.want`, the file's absolute path), acknowledgements (`NAME.ok`, written
/// after the record holding the file is durable in the repository) and failures (`NAME.error`, the message), plus
/// the helper's lock. So a killed helper or command loses nothing: a file without `.ok` is pushed again (a file
/// already archived with the same bytes is acknowledged without a second copy), and PostgreSQL keeps every segment
/// until its archive_command succeeds. A spool that cannot be written (a full disk) makes wal-push fail, and
/// PostgreSQL retries; nothing is ever acknowledged that is not in the repository.
///
/// `fetch/` holds segments fetched ahead of PostgreSQL's requests (whole files, renamed into place when complete).
public struct Spool: Sendable {
    public let root: String
    public var push: String { root + "/push" }
    public var fetch: String { root + "/fetch" }
    public init(root: String) { self.root = root }

    /// The spool's folder: `option` (--spool), else `LIFEBOAT_SPOOL`, else `lifeboat-spool` in the working folder
    /// (the data directory, one cluster's own). A folder given by the user may be shared by several clusters,
    /// whose files have the same names: it gets a subfolder per cluster (`system`, from pg_control), so that one
    /// cluster's acknowledgement or prefetched segment never answers another's.
    public static func root(option: String?, environment: [String: String], system: String?, directory: String) -> String {
        let absolute = { (p: String) in p.hasPrefix("/") ? p : directory + "/" + p }
        guard let given = option ?? environment["LIFEBOAT_SPOOL"], !given.isEmpty else { return absolute("lifeboat-spool") }
        guard let system, !system.isEmpty, system.allSatisfy(\.isNumber) else { return absolute(given) }
        return absolute(given) + "/" + system
    }

    public func prepare() throws {
        // (The folder a user names holds one folder per cluster: it may not exist yet either.)
        for d in [(root as NSString).deletingLastPathComponent, root, push, fetch] where mkdir(d, 0o700) != 0 && errno != EEXIST {
            throw LifeboatError(.io, "cannot create the spool folder \(d): \(String(cString: strerror(errno)))")
        }
    }

    public enum Ack: Equatable, Sendable { case ok, failed(String) }

    public func ack(_ name: String) -> Ack? {
        if access(push + "/" + name + ".ok", F_OK) == 0 { return .ok }
        if let d = FileManager.default.contents(atPath: push + "/" + name + ".error") {
            return .failed(String(decoding: d.prefix(4096), as: UTF8.self))
        }
        return nil
    }

    /// Asks the helper for a file (also one that archive_status does not list).
    public func want(_ name: String, path: String) throws {
        try writeFileAtomically(push + "/" + name + ".want", Data(path.utf8))
    }

    public func wants() -> [WALInput] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: push)) ?? []
        return names.compactMap { f -> WALInput? in
            guard f.hasSuffix(".want"), let n = WALFileName(String(f.dropLast(5))),
                  let d = FileManager.default.contents(atPath: push + "/" + f), d.count <= 4096 else { return nil }
            return WALInput(path: String(decoding: d, as: UTF8.self), name: n)
        }
    }

    /// Acknowledges files (durable: fsync of each file and of the folder before any caller sees them).
    public func acknowledge(_ names: [String]) throws {
        for n in names {
            try writeFileAtomically(push + "/" + n + ".ok", Data())
            unlink(push + "/" + n + ".error")
            unlink(push + "/" + n + ".want")
        }
    }

    public func fail(_ name: String, _ message: String) {
        try? writeFileAtomically(push + "/" + name + ".error", Data(message.utf8))
        unlink(push + "/" + name + ".want")
    }

    public func clear(_ name: String) {
        unlink(push + "/" + name + ".error")
    }

    /// Marks a call of `wal-push --async` (the helper lives while they come: see `PushHelper.idle`).
    public func noteCall() {
        let fd = open(push + "/called", O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        _ = futimens(fd, nil)
        close(fd)
    }

    /// When `wal-push --async` was last called (wall-clock seconds), if ever.
    public func lastCall() -> Double? {
        var st = stat()
        guard stat(push + "/called", &st) == 0 else { return nil }
        return Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9
    }

    /// Takes an acknowledgement (wal-push returns 0 on it; a retry of the same file is acknowledged again, as the
    /// archive already holds it).
    public func consume(_ name: String) { unlink(push + "/" + name + ".ok") }

    /// Acknowledgements nobody took (files pushed ahead that PostgreSQL never asked for) go after `age` seconds once
    /// PostgreSQL no longer lists the file as ready.
    public func sweep(walDirectory: String, age: Double = 600) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: push)) ?? []
        let now = Date().timeIntervalSince1970
        for f in names where f.hasSuffix(".ok") {
            let n = String(f.dropLast(3))
            var st = stat()
            guard stat(push + "/" + f, &st) == 0, now - Double(st.st_mtim.tv_sec) > age else { continue }
            if access(walDirectory + "/archive_status/" + n + ".ready", F_OK) != 0 { unlink(push + "/" + f) }
        }
    }

    /// The lock of the helper of `folder` (`push` or `fetch`): a descriptor holding an exclusive flock, or nil when
    /// another process holds it.
    public func lockHelper(_ folder: String) -> Int32? {
        let fd = open(folder + "/helper.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return nil }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 { close(fd); return nil }
        return fd
    }

    public func helperRunning(_ folder: String) -> Bool {
        guard let fd = lockHelper(folder) else { return true }
        close(fd)
        return false
    }

    /// The files PostgreSQL has ready to archive (`archive_status/*.ready`), timeline histories first (as
    /// PostgreSQL's archiver orders them), then by name.
    public static func ready(walDirectory: String) -> [WALInput] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: walDirectory + "/archive_status")) ?? []
        return names.compactMap { f -> WALInput? in
            guard f.hasSuffix(".ready"), let n = WALFileName(String(f.dropLast(6))) else { return nil }
            return WALInput(path: walDirectory + "/" + n.name, name: n)
        }.sorted { ($0.name.kind == .history ? 0 : 1, $0.name.name) < ($1.name.kind == .history ? 0 : 1, $1.name.name) }
    }

    // MARK: fetch

    /// Moves a prefetched file into place; removes prefetched segments older than it on its timeline.
    public func take(_ name: String, to path: String) -> Bool {
        let p = fetch + "/" + name
        guard access(p, F_OK) == 0 else { return false }
        if rename(p, path) != 0 {
            guard let d = FileManager.default.contents(atPath: p), (try? writeFileAtomically(path, d)) != nil else { return false }
            unlink(p)
        }
        dropBefore(name)
        return true
    }

    /// Removes the prefetched segments of `name`'s timeline that come before it (PostgreSQL has gone past them).
    public func dropBefore(_ name: String) {
        guard let n = WALFileName(name), n.kind == .segment else { return }
        for f in (try? FileManager.default.contentsOfDirectory(atPath: fetch)) ?? [] {
            if let o = WALFileName(f), o.kind == .segment, o.timeline == n.timeline, o.name < name { unlink(fetch + "/" + f) }
        }
    }

    /// The `restore_command` of a restored cluster: a segment the fetch helper has placed in the spool is moved
    /// into place by the shell and `mv` (a few milliseconds, where a start of this program costs tens: PostgreSQL
    /// waits for every call during replay), and noted as the last request so that the helper fetches further;
    /// anything else (the first call, a miss, a probe for a file the archive lacks) runs `fetch`, the words of
    /// `lifeboat pg wal-fetch` with its options, already quoted for the shell; without `fetch` (a copy whose spool
    /// holds all its WAL), a miss means "not in the archive" (exit 1). `spool` is relative to the data directory
    /// (restore_command runs there) and must not need quoting.
    /// The fast path is taken only while `fetch/helper` exists: `wal-fetch` writes it when it starts the helper,
    /// the helper removes it when it exits, so the helper is started by the first call and again by the first call
    /// after it stopped, and no call waits for a repository open that could have happened earlier.
    public static func restoreCommand(fetch: [String]?, spool: String = "lifeboat-spool") -> String {
        let f = spool + "/fetch"
        let miss = fetch.map { "exec " + ($0 + ["%f", "%p"]).joined(separator: " ") } ?? "exit 1"
        // PostgreSQL replaces %f and %p, and %% by %.
        // A history file is copied, not moved: PostgreSQL asks for it more than once. The note for the helper
        // may fail (a full disk): the file is in place all the same.
        return "if [ -f \(f)/helper ] && [ -f \(f)/%f ] && { case %f in *.history) cp \(f)/%f %p;; *) mv -f \(f)/%f %p;; esac; }; "
            + "then printf %%s %f 2>/dev/null >\(f)/requested; exit 0; else \(miss); fi"
    }

    /// Whether a fetch helper was started (and has not exited): see `restoreCommand`.
    public var helperMarker: String { fetch + "/helper" }

    public func prefetched() -> Set<String> {
        Set(((try? FileManager.default.contentsOfDirectory(atPath: fetch)) ?? []).filter { WALFileName($0) != nil })
    }
}

/// The long-lived helper of `wal-push --async`: the repository opened once, files pushed in batches (one record,
/// one index, one lock per batch) as soon as PostgreSQL marks them ready, so that archive_command usually finds its
/// acknowledgement waiting. Exits after `idle` seconds without a call of `wal-push --async` (so that a helper whose
/// cluster stopped archiving, or archives with another tool now, stops pushing), or when `stop` says so.
public struct PushHelper: Sendable {
    public var store: WALStore
    public var spool: Spool
    public var walDirectory: String
    public var system: UInt64?
    public var batchFiles = 16
    public var batchBytes = 256 << 20
    public var idle: Double = 60
    public init(store: WALStore, spool: Spool, walDirectory: String, system: UInt64?) {
        self.store = store; self.spool = spool; self.walDirectory = walDirectory; self.system = system
    }

    public func run(stop: @Sendable () -> Bool, log: @Sendable (String) -> Void) async throws {
        var catalog: WALCatalog? = nil
        var loaded = false
        let started = Date().timeIntervalSince1970
        var backoff = 0.05
        // The index as loaded now (read again here, so that a prune since the caller's load is seen).
        var indexNames: Set<String>? = Set(try await store.repo.backend.list(.index).map(\.name))
        try await store.repo.loadIndex()
        var acknowledged = Set<String>()
        // Between batches the folders are read again at once after a wal-push call (it touches `called` after
        // writing its request), else after a pause that grows from 20 ms to 1 s while nothing is found: PostgreSQL
        // calls wal-push as soon as it marks a file ready, so a call is the news. The helper sleeps on an inotify
        // watch of push/ (woken by the touch), or looks at `called` every 20 ms where the kernel refuses a watch.
        // Reading archive_status and the spool 50 times a second cost an idle helper 2.9% of a core.
        let watch = FolderWatch(spool.push)
        var seenCall = spool.lastCall()
        var pause = 0.02
        var nextScan = ContinuousClock.now
        var swept = ContinuousClock.now - .seconds(3600)
        while !stop() {
            let call = spool.lastCall()
            if call == seenCall && ContinuousClock.now < nextScan {
                if let watch {
                    let left = nextScan - ContinuousClock.now
                    // A call's request is news even when its touch left `called`'s time as it was (file times
                    // move by the kernel's tick): the folders are read at once.
                    if await watch.wait(timeout: Double(left.components.seconds) + Double(left.components.attoseconds) / 1e18) {
                        nextScan = .now
                    }
                } else {
                    try? await Task.sleep(for: .milliseconds(20))
                }
                continue
            }
            seenCall = call
            if !loaded {
                let all = try await WALStore.catalogs(store.repo)
                catalog = system.flatMap { all[String($0)] } ?? (all.count == 1 ? all.values.first : nil)
                loaded = true
            }
            // Old acknowledgements go after 10 minutes: looked for every 10 s.
            if ContinuousClock.now - swept > .seconds(10) {
                spool.sweep(walDirectory: walDirectory)
                swept = .now
            }
            // Wanted files always (a retry asks again); ready ones not when this helper acknowledged them already
            // (PostgreSQL renames .ready to .done just after the call that took the acknowledgement).
            var seen = Set<String>()
            let ready = Spool.ready(walDirectory: walDirectory).filter { !acknowledged.contains($0.name.name) }
            let candidates = (spool.wants() + ready).filter { seen.insert($0.name.name).inserted }
            // No call for `idle` seconds: whatever is ready is not this helper's to push (archiving was turned off,
            // or another tool archives now), and a call would start a helper again. (Wall-clock times: a clock jump
            // ends a helper early, which costs one start, or keeps it up to one more `idle`.)
            if Date().timeIntervalSince1970 - max(started, spool.lastCall() ?? started) > idle { return }
            // At most `batchFiles` files and `batchBytes` bytes (one file at least): a batch is held in memory.
            var todo: [WALInput] = []
            var bytes = 0
            for c in candidates where todo.count < batchFiles && spool.ack(c.name.name) == nil {
                var st = stat()
                let size = stat(c.path, &st) == 0 ? max(0, Int(st.st_size)) : 0
                if !todo.isEmpty, bytes + size > batchBytes { break }
                todo.append(c); bytes += size
            }
            if todo.isEmpty {
                nextScan = .now + .seconds(pause)
                pause = min(pause * 2, 1)
                continue
            }
            pause = 0.02
            nextScan = .now
            do {
                let r = try await push(todo, catalog: catalog, indexNames: indexNames)
                catalog = r.catalog
                indexNames = r.indexNames
                if catalog == nil { loaded = false }  // the cluster's first record: read the catalog from the listing
                try spool.acknowledge(r.done)
                if acknowledged.count > 100_000 { acknowledged.removeAll() }
                acknowledged.formUnion(r.done)
                log("archived \(r.done.count) file(s): \(r.done.first ?? "")\(r.done.count > 1 ? " … \(r.done.last!)" : "")")
                backoff = 0.05
            } catch {
                // The repository failed (network, lock, disk): every file of the batch fails this time; the next
                // archive_command call retries. The catalog is read again (another writer may have moved on).
                let message = "\(error)"
                let wanted = Set(spool.wants().map(\.name.name))
                for t in todo where wanted.contains(t.name.name) { spool.fail(t.name.name, message) }
                log("archiving failed: \(message)")
                loaded = false
                try? await Task.sleep(for: .seconds(backoff))
                backoff = min(backoff * 2, 5)
            }
        }
    }

    struct ReadFailure: Error { var text: String }

    /// Pushes a batch; a file that fails its own checks (name, size, header) fails alone, with its reason.
    /// The repository's index is loaded once; when a batch finds that index files have gone since (a prune or an
    /// index rebuild ran between batches), it is read again, so that no new record refers to a blob pruned meanwhile.
    func push(_ todo: [WALInput], catalog: WALCatalog?, indexNames: Set<String>?) async throws -> (done: [String], catalog: WALCatalog?, indexNames: Set<String>?) {
        var good: [WALStore.Read] = []
        let expected = system ?? catalog.flatMap { UInt64($0.system) }
        // Read once (checked here, stored from these bytes), as many at a time as the store compresses.
        let reads = try await tryBoundedMap(todo, width: store.width) { t in
            Result { try WALStore.read(t, expectedSystem: expected) }.mapError { ReadFailure(text: "\($0)") }
        }
        for (t, r) in zip(todo, reads) {
            switch r {
            case .success(let read): good.append(read)
            case .failure(let message): spool.fail(t.name.name, message.text)
            }
        }
        guard !good.isEmpty else { return ([], catalog, indexNames) }
        let store = self.store, system = self.system, before = indexNames
        let (result, names) = try await store.repo.withLock(.shared, operation: "wal-push") { () -> (WALStore.PushResult, Set<String>) in
            let now = Set(try await store.repo.backend.list(.index).map(\.name))
            if let before, !before.isSubset(of: now) { try await store.repo.loadIndex() }
            let r = try await store.store(good, system: system, known: catalog)
            return (r, Set(try await store.repo.backend.list(.index).map(\.name)))
        }
        var c = catalog
        if let id = result.record { c?.noteArchived(record: id, files: result.stored, at: currentTime()) }
        return (result.stored.map(\.name) + result.alreadyArchived, c, names)
    }
}

extension Spool {
    /// The last file PostgreSQL asked `wal-fetch` for: the fetch helper keeps the segments after it in the spool.
    public func request(_ name: String) { try? writeFileAtomically(fetch + "/requested", Data(name.utf8), durable: false) }
    public func requested() -> String? {
        FileManager.default.contents(atPath: fetch + "/requested").map { String(decoding: $0.prefix(64), as: UTF8.self) }
    }

    /// The names the archive held when the fetch helper last listed it, and how old that listing is: a miss is
    /// answered from it ("not in the archive") without opening the repository while it is fresh.
    public func manifest(maxAge: Double) -> Set<String>? {
        let p = fetch + "/manifest"
        var st = stat()
        guard stat(p, &st) == 0, Date().timeIntervalSince1970 - Double(st.st_mtim.tv_sec) <= maxAge,
              let d = FileManager.default.contents(atPath: p) else { return nil }
        return Set(String(decoding: d, as: UTF8.self).split(separator: "\n").map(String.init))
    }

    /// The last segment the replay needs (`pg restore` writes it for a target before the end): the fetch helper
    /// fetches nothing after it on its timeline.
    public func writeUntil(_ name: String) throws { try writeFileAtomically(fetch + "/until", Data(name.utf8), durable: false) }
    public func until() -> WALFileName? {
        FileManager.default.contents(atPath: fetch + "/until").flatMap { WALFileName(String(decoding: $0.prefix(64), as: UTF8.self)) }
    }

    public func writeManifest(_ names: [String]) { try? writeFileAtomically(fetch + "/manifest", Data(names.sorted().joined(separator: "\n").utf8), durable: false) }

}

/// The long-lived helper of `wal-fetch`: the repository opened once, the segments after the last one PostgreSQL
/// asked for fetched into the spool (at most `depth` waiting), and the archive's listing kept in the spool so that
/// PostgreSQL's probes for files that do not exist (the next timeline's history, the segment after the end) are
/// answered without a repository open. Exits after `idle` seconds without a new request.
public struct FetchHelper: Sendable {
    public var store: WALStore
    public var spool: Spool
    public var system: String?
    public var depth = 16
    public var idle: Double = 30
    public init(store: WALStore, spool: Spool, system: String?) { self.store = store; self.spool = spool; self.system = system }

    /// The listing for probes, only when every record could be read (else a miss is no proof of absence).
    func publish(_ c: WALCatalog) {
        if c.unreadable == 0 { spool.writeManifest(Array(c.files.keys)) } else { unlink(spool.fetch + "/manifest") }
    }

    /// `inRecovery`: whether the server still recovers (its recovery.signal or standby.signal is there); once it
    /// has promoted, the helper removes what it fetched ahead and exits.
    public func run(stop: @Sendable () -> Bool, inRecovery: @Sendable () -> Bool = { true },
                    log: @Sendable (String) -> Void) async throws {
        var catalog = try WALCatalog.select(try await WALStore.catalogs(store.repo), system: system)
        var listed = ContinuousClock.now
        publish(catalog)
        var last: String? = nil
        var lastChange = ContinuousClock.now
        let until = spool.until()
        var failures = 0
        defer {
            unlink(spool.helperMarker)
            if !inRecovery() { spool.prefetched().forEach { unlink(spool.fetch + "/" + $0) } }
        }
        while !stop() && inRecovery() {
            let req = spool.requested()
            if req != last, let r = req, WALFileName(r) != nil {
                last = req; lastChange = .now
                // The shell's fast path (see `restoreCommand`) moves files without dropping those skipped.
                spool.dropBefore(r)
            }
            if ContinuousClock.now - lastChange > .seconds(idle) { return }
            // (A request being written may read empty: the last whole one holds.)
            guard let r = last, let file = WALFileName(r), file.kind == .segment, let number = file.segmentNumber(catalog.size) else {
                try? await Task.sleep(for: .milliseconds(20)); continue
            }
            let have = spool.prefetched()
            var ahead = (1...max(1, depth)).map { WALFileName.segment(timeline: file.timeline, number: number + UInt64($0), size: catalog.size) }
            if let u = until, u.kind == .segment, u.timeline == file.timeline { ahead.removeAll { $0 > u.name } }
            var todo = ahead.filter { !have.contains($0) && catalog.files[$0] != nil }
            // Names the catalog lacks may have been archived since: list again (and read the index again, which
            // describes their data), at most every 2 s.
            if ahead.contains(where: { catalog.files[$0] == nil }) && ContinuousClock.now - listed > .seconds(2) {
                let fresh = try WALCatalog.select(try await WALStore.catalogs(store.repo), system: catalog.system)
                listed = .now
                if fresh.files.count != catalog.files.count { try await store.repo.loadIndex() }
                catalog = fresh
                publish(catalog)
                todo = ahead.filter { !have.contains($0) && catalog.files[$0] != nil }
            }
            if todo.isEmpty { try? await Task.sleep(for: .milliseconds(20)); continue }
            // In order, two at a time: the next one PostgreSQL needs comes first.
            let store = self.store, spool = self.spool, c = catalog
            var failed = false
            for chunk in stride(from: 0, to: todo.count, by: 2).map({ Array(todo[$0..<min($0 + 2, todo.count)]) }) {
                let errors = await boundedMap(chunk, width: 2) { n -> String? in
                    do { try await store.fetch(n, catalog: c, to: spool.fetch + "/" + n); return nil } catch { return "\(n): \(error)" }
                }
                for case let e? in errors { failed = true; if failures < 20 { log("prefetch failed: \(e)") } }
                if failed || spool.requested() != last { break }
            }
            // A failing fetch (wal-fetch itself will report it when PostgreSQL asks) is retried after a pause.
            if failed {
                failures += 1
                try? await Task.sleep(for: .seconds(min(5, Double(failures))))
            } else {
                failures = 0
            }
        }
    }
}
