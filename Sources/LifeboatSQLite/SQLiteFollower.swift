import Dispatch
import Foundation
import LifeboatCore
import LifeboatSQLiteWAL

/// Continuous replication of one SQLite database into a repository, as Litestream does: the WAL's new
/// transactions are copied as they are committed (polled every `poll` seconds, each stamped with the time it was
/// seen), shipped as a WAL record at most every `interval` seconds, the WAL checkpointed by the follower when it
/// grows past `checkpointPages`, and the whole database stored as a snapshot every `snapshotInterval` seconds and
/// whenever a new generation begins. Started again, it continues the newest generation when the WAL still holds
/// what its last record ended with, else it begins a new one.
public struct SQLiteFollower: Sendable {
    public struct Options: Sendable, Equatable {
        public var interval: Double = 1
        public var poll: Double = 0.05
        public var checkpointPages = 1000
        public var snapshotInterval: Double = 3600
        public var busyTimeoutMillis: Int32 = 5000
        /// Copied and not yet stored: past this, copying waits (the WAL grows on disk instead of memory here).
        public var maxPendingBytes = 64 << 20
        public init() {}
    }

    public enum Event: Sendable {
        case generation(String, reason: String)
        case resumed(generation: String, seq: Int)
        case snapshot(ID, generation: String, bytes: Int)
        case shipped(ID, seq: Int, transactions: Int, bytes: Int, newest: Date)
        case checkpoint(log: Int, done: Int)
        /// After a store: every transaction committed before `through` (the start of the read that copied the
        /// newest one stored) is in the repository. A transaction's own time is when a read saw it, which may be
        /// later than its commit; so "stored up to T" is said by this event, not by a record's newest time.
        case synced(through: Date)
        /// Shipping or copying failed; the follower tries again (what is copied is kept).
        case retrying(String)
    }

    public let path: String
    public let store: SQLiteStore
    public var options: Options

    public init(path: String, store: SQLiteStore, options: Options = Options()) {
        self.path = URL(fileURLWithPath: path).standardizedFileURL.path
        self.store = store
        self.options = options
    }

    /// Runs until `shouldStop` says so (or the task is cancelled); what was copied is shipped before it returns.
    public func run(shouldStop: @escaping @Sendable () -> Bool = { false }, control: FollowerControl? = nil,
                    events: @escaping @Sendable (Event) -> Void = { _ in }) async throws {
        let queue = DispatchQueue(label: "lifeboat.sqlite.\(path)")
        var reason = "the follower started"
        var lastBreak: ContinuousClock.Instant?
        control?.setRunning(true)
        defer { control?.setRunning(false) }
        let stop: @Sendable () -> Bool = { shouldStop() || control?.stopRequested == true }
        while !stop() && !Task.isCancelled {
            do {
                try await follow(queue: queue, firstReason: reason, shouldStop: stop, control: control, events: events)
                return
            } catch let b as HistoryBroken {
                // Broken again at once (a WAL the follower cannot read to its end): a pause, not a busy loop.
                let now = ContinuousClock.now
                if let last = lastBreak, now - last < .seconds(1) { try? await Task.sleep(for: .seconds(1)) }
                lastBreak = now
                reason = b.description
            } catch {
                control?.failed("\(error)")
                throw error
            }
        }
    }

    func follow(queue: DispatchQueue, firstReason: String, shouldStop: @escaping @Sendable () -> Bool, control: FollowerControl?,
                events: @escaping @Sendable (Event) -> Void) async throws {
        let core = try await onQueue(queue) { try CoreBox(FollowerCore(path: path, busyTimeoutMillis: options.busyTimeoutMillis)) }
        // Continue the newest generation, or begin one.
        var generation = ""
        var seq = 0
        if let c = try await store.catalog(path), let g = c.ordered.last(where: { $0.start != nil }) {
            let last = g.lastSeq.flatMap { g.wal[$0] }?.record ?? g.snapshots.last!.record
            let continues = g.missing(from: g.snapshots.last!.record.seq).count == 0
            if continues, try await onQueue(queue, { try core.value.resume(at: last) }) {
                generation = g.name
                seq = (g.lastSeq ?? (g.snapshots.last!.record.seq - 1)) + 1
                events(.resumed(generation: generation, seq: seq))
            }
        }
        var lastSnapshot = Date.distantPast
        if generation.isEmpty {
            generation = Self.newGeneration()
            events(.generation(generation, reason: firstReason))
            let id = try await snapshot(core, queue: queue, generation: generation, seq: 0, fresh: true, events: events)
            if control?.snapshotWanted == true { control?.snapshotDone(.success(id)) }
            lastSnapshot = currentTime()
        } else {
            lastSnapshot = currentTime()
        }
        var lastShip = currentTime()
        var failing = false
        var lastFrames = -1
        var lastGrowth = currentTime()
        var quietDone = -1
        var lastYield = Date.distantPast
        var confirm = false
        /// Stores logs as the next WAL records, in order, until one fails: how many were stored, and the failure.
        func storeLogs(_ logs: [FrameLogBuilder]) async -> (Int, (any Error)?) {
            for (k, log) in logs.enumerated() {
                do {
                    let id = try await store.saveWAL(log, database: path, generation: generation, seq: seq)
                    events(.shipped(id, seq: seq, transactions: log.transactions, bytes: log.bytes.count,
                                    newest: Date(timeIntervalSince1970: Double(log.lastTimeMillis ?? 0) / 1000)))
                    seq += 1
                } catch { return (k, error) }
            }
            return (logs.count, nil)
        }
        do {
            while true {
                let stopping = shouldStop() || Task.isCancelled
                let now = currentTime()
                // (Not past maxPendingBytes: what is copied is shipped first, and the WAL read at the next turn.)
                let (pending, framesInCycle, polled) = try await onQueue(queue) { () -> (Int, Int, Bool) in
                    let c = core.value
                    let room = c.pendingBytes < options.maxPendingBytes
                    if room { try c.poll(now: now) }
                    return (c.pendingBytes, c.header == nil ? 0 : c.nextFrame - 1, room)
                }
                if framesInCycle != lastFrames { lastFrames = framesInCycle; lastGrowth = now }
                var checkpointed = false
                // Past checkpointPages, or quiet for a second with frames in the WAL: an application waiting in a
                // checkpoint of its own (RESTART, TRUNCATE) waits for readers, and writes nothing meanwhile.
                // (Once per quiet spell when it copied every frame into the database; again each second if not.)
                let quiet = framesInCycle > 0 && now.timeIntervalSince(lastGrowth) >= 1 && !(framesInCycle == quietDone)
                if !stopping && !failing && (framesInCycle >= options.checkpointPages || quiet) {
                    let r = try await onQueue(queue, { try core.value.checkpoint(now: currentTime()) })
                    if let r { events(.checkpoint(log: r.log, done: r.done)) }
                    if quiet {
                        lastGrowth = now
                        quietDone = r.map { $0.done >= $0.log ? framesInCycle : -1 } ?? -1
                        // The write lock held for a second with nothing written: an application's own checkpoint
                        // waiting for this reader (at most once every 10 s).
                        if r == nil && now.timeIntervalSince(lastYield) >= 10 {
                            lastYield = now
                            try await onQueue(queue) { try core.value.yieldToCheckpointer(now: now) }
                        }
                    }
                    checkpointed = true
                }
                var shippedNow = false
                if pending > 0 && (stopping || checkpointed || now.timeIntervalSince(lastShip) >= (failing ? max(options.interval, 5) : options.interval)) {
                    shippedNow = true
                    // The interval runs from this turn's poll: a slow store does not stretch it.
                    lastShip = now
                    let logs = try await onQueue(queue) { core.value.take() }
                    let (shipped, error) = await storeLogs(logs)
                    failing = error != nil
                    if let error {
                        control?.failed("\(error)")
                        // Kept, in order, for the next turn.
                        let rest = Array(logs[shipped...])
                        try await onQueue(queue) { core.value.done = rest + core.value.done }
                        events(.retrying("\(error)"))
                        if stopping { throw error }
                    }
                }
                // Nothing copied is waiting: every transaction committed before this turn's poll is stored.
                let waiting = shippedNow || checkpointed ? try await onQueue(queue) { core.value.pendingBytes } : pending
                // (A turn that did not read the WAL says nothing: what was committed since the last read is not
                // copied.)
                if shippedNow { confirm = true }
                if !failing && waiting == 0 && polled {
                    control?.synced(now)
                    // Said after each store, once more at the first turn after it that copied nothing, and after a
                    // checkpoint (the quiet one a second after writes stop): a transaction committed between a
                    // turn's start and its read is stored by that turn, which can only say "through" its start;
                    // a later turn says the rest.
                    if confirm || checkpointed { events(.synced(through: now)) }
                    confirm = shippedNow
                }
                // Stopping: once the WAL was read to its end and what it held is shipped.
                if stopping && polled { return }
                let asked = control?.snapshotWanted == true
                if !failing && (asked || currentTime().timeIntervalSince(lastSnapshot) >= options.snapshotInterval) {
                    if waiting > 0 {
                        lastShip = .distantPast  // ship first, then the snapshot, at the next turn
                    } else {
                        do {
                            let id = try await snapshot(core, queue: queue, generation: generation, seq: seq, fresh: false, events: events)
                            control?.snapshotDone(.success(id))
                        } catch {
                            control?.snapshotDone(.failure(LifeboatError(.io, "the snapshot failed: \(error)")))
                            if error is HistoryBroken { throw error }
                            control?.failed("\(error)")
                            failing = true
                        }
                        lastSnapshot = currentTime()
                    }
                }
                try? await Task.sleep(nanoseconds: UInt64(max(0.005, options.poll) * 1e9))
            }
        } catch let broken as HistoryBroken {
            // What was copied before the break is history still: stored, then the new generation begins.
            _ = await storeLogs((try? await onQueue(queue) { core.value.take() }) ?? [])
            throw broken
        }
    }

    /// A snapshot at the current position. `fresh` (a generation's first): everything in the WAL is copied first
    /// and goes into the snapshot only; otherwise nothing may be waiting to be shipped.
    @discardableResult
    func snapshot(_ core: CoreBox, queue: DispatchQueue, generation: String, seq: Int, fresh: Bool, events: @Sendable (Event) -> Void) async throws -> ID {
        var source = try await onQueue(queue) { () -> PageSource in
            if fresh {
                // The follower's checkpoint first when it can run (the database file then holds the WAL's frames
                // and stays so, and a restart of the log cannot change what the snapshot reads), then the rest.
                _ = try core.value.checkpoint(now: currentTime())
                try core.value.poll(now: currentTime())
                _ = core.value.take()
            }
            guard core.value.pendingBytes == 0 else { throw LifeboatError(.io, "internal: a snapshot was asked for with transactions not yet shipped; it waits") }
            return try core.value.pageSource()
        }
        defer { source.close() }
        let id = try await store.saveSnapshot(&source, database: path, generation: generation, seq: seq, time: currentTime())
        events(.snapshot(id, generation: generation, bytes: Int(source.pages) * source.pageSize))
        return id
    }

    static func newGeneration() -> String {
        let v = UInt64.random(in: 0...UInt64.max)
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }
}

/// The follower's core crosses to its queue in this box; only that queue touches it.
final class CoreBox: @unchecked Sendable {
    let value: FollowerCore
    init(_ v: FollowerCore) { value = v }
}

func onQueue<T: Sendable>(_ q: DispatchQueue, _ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { c in
        q.async { c.resume(with: Result { try body() }) }
    }
}
