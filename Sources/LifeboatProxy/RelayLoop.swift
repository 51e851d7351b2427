import CLifeboatSys
import Foundation
import LifeboatCore
import Synchronization

/// Monotonic time in nanoseconds (CLOCK_MONOTONIC), for the relay's timers.
@inline(__always) func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// The proxy's data plane: one thread with its own epoll instance, which accepts, connects and relays.
///
/// Why not SwiftNIO (which the proxy used before, and which the admin API and health checks still use): a relayed
/// connection is two sockets and a few reads and writes, and NIO's channel machinery (pipelines, futures, a
/// bootstrap per backend connection, an epoll re-registration at each interest change, address look-ups on every
/// new channel) doubled the proxy's CPU time per new connection against HAProxy's (168 µs against 70 µs, about 40
/// system calls against 20). This loop registers each socket once, edge-triggered, remembers readiness itself, and
/// reads and writes through one scratch buffer.
///
/// Everything a loop owns (sockets, connections, timers) is touched only on its thread; other threads hand it work
/// with `execute`, which wakes it through an eventfd.
final class RelayLoop: @unchecked Sendable {
    /// What an epoll event's registration belongs to.
    enum Owner {
        case listener(RelayListener)
        case client(RelayConnection)
        case backend(RelayConnection)
    }
    struct Slot {
        var tag: UInt32
        var owner: Owner
    }

    let index: Int
    let epfd: Int32
    let wakeFD: Int32
    private let inbox = Mutex<[@Sendable (RelayLoop) -> Void]>([])

    // Loop-confined state.
    /// Registrations by file descriptor. The tag (in the event's upper 32 bits) tells a stale event for a closed
    /// descriptor from one for a new socket that reuses the number.
    private var slots: [Slot?] = []
    private var nextTag: UInt32 = 1
    private var timers = TimerHeap()
    /// Connections that stopped relaying with bytes still to move (their read budget ran out), run again after the
    /// next poll so one fast connection cannot starve the others.
    private var ready: [RelayConnection] = []
    var connections: [Int: RelayConnection] = [:]
    private var nextConnectionID = 0
    /// The buffer every read goes into first.
    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: RelayLoop.scratchSize, alignment: 16)
    static let scratchSize = 64 * 1024

    init(index: Int) {
        self.index = index
        epfd = epoll_create1(Int32(EPOLL_CLOEXEC))
        wakeFD = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        var ev = epoll_event()
        ev.events = EPOLLIN.rawValue
        ev.data.u64 = UInt64.max
        _ = epoll_ctl(epfd, EPOLL_CTL_ADD, wakeFD, &ev)
    }

    /// Sockets the relay holds open (clients and backends, all loops).
    static let sockets = Atomic<Int>(0)

    /// How many sockets the relay may hold: the descriptor limit less a reserve for everything else in the process
    /// (the admin API, health checks, hooks, logging, and libdispatch, which aborts the process when it cannot open
    /// a file). At start-up the soft limit is raised to the hard one, as servers usually do. Past the budget a new
    /// client is accepted and closed at once (counted as refused), so the process never runs out of descriptors
    /// through the relay.
    static let socketBudget: Int = {
        let soft = raiseDescriptorLimit()
        let reserve = min(1024, max(32, soft / 8))
        return max(0, soft - reserve)
    }()

    /// The loops of the process, one per core (at most 8), started on first use.
    static let all: [RelayLoop] = {
        _ = socketBudget
        let n = max(1, min(8, ProcessInfo.processInfo.activeProcessorCount))
        return (0..<n).map { i in
            let loop = RelayLoop(index: i)
            let t = Thread { loop.run() }
            t.name = "lifeboat-relay-\(i)"
            t.start()
            return loop
        }
    }()

    /// False if the loop could not get its epoll instance or eventfd (descriptors exhausted at start-up).
    var usable: Bool { epfd >= 0 && wakeFD >= 0 }

    /// Runs `body` on the loop's thread, soon.
    func execute(_ body: @escaping @Sendable (RelayLoop) -> Void) {
        let wasEmpty = inbox.withLock { q in
            q.append(body)
            return q.count == 1
        }
        if wasEmpty {
            var one: UInt64 = 1
            _ = write(wakeFD, &one, 8)
        }
    }

    // MARK: - Registration

    /// Registers `fd` for `events` (edge-triggered for connections) on behalf of `owner`.
    @discardableResult
    func register(_ fd: Int32, events: UInt32, owner: Owner) -> Bool {
        guard fd >= 0 else { return false }
        let tag = nextTag
        nextTag = nextTag == UInt32.max ? 1 : nextTag + 1
        if Int(fd) >= slots.count { slots.append(contentsOf: repeatElement(nil, count: Int(fd) - slots.count + 64)) }
        slots[Int(fd)] = Slot(tag: tag, owner: owner)
        var ev = epoll_event()
        ev.events = events
        ev.data.u64 = UInt64(tag) << 32 | UInt64(UInt32(bitPattern: fd))
        if epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0 {
            slots[Int(fd)] = nil
            return false
        }
        return true
    }

    /// Forgets `fd` (closing it removes it from epoll; a listener shared with other loops is removed explicitly).
    func unregister(_ fd: Int32, remove: Bool = false) {
        guard fd >= 0, Int(fd) < slots.count else { return }
        slots[Int(fd)] = nil
        if remove {
            var ev = epoll_event()
            _ = epoll_ctl(epfd, EPOLL_CTL_DEL, fd, &ev)
        }
    }

    func newConnectionID() -> Int {
        nextConnectionID += 1
        return nextConnectionID
    }

    // MARK: - Timers, deadlines and the ready list

    /// Runs `action` on this loop at `deadline` (monotonic ns), or at the next turn if that has passed. For the
    /// loop's own housekeeping; a connection's waits go through `setDeadline`, which holds nothing once it closes.
    func schedule(at deadline: UInt64, _ action: @escaping () -> Void) {
        timers.push(deadline, action)
    }

    /// When each connection that waits for a time (a connect timeout, the end of a blackhole fault, its next
    /// shaped write) wants `deadlineReached`: one entry per connection, dropped when it closes, so memory follows
    /// the open connections whatever the timeouts.
    private var deadlines: [Int: UInt64] = [:]
    /// The earliest of `deadlines` (or earlier: a removed entry only makes the next sweep early).
    private var nextSweep = UInt64.max
    /// Backend host names being resolved off the loop (bounded).
    var resolving = 0
    /// When this loop last logged that the socket budget turned clients away (monotonic ns).
    var lastBudgetLog: UInt64 = 0

    func setDeadline(_ id: Int, _ deadline: UInt64?) {
        guard let deadline else {
            deadlines[id] = nil
            return
        }
        deadlines[id] = deadline
        if deadline < nextSweep { nextSweep = deadline }
    }

    private func sweep(now: UInt64) {
        guard now >= nextSweep else { return }
        let due = deadlines.filter { $0.value <= now }.map(\.key)
        for id in due {
            deadlines[id] = nil
            connections[id]?.deadlineReached(now: now)
        }
        nextSweep = deadlines.values.min() ?? UInt64.max
    }

    func markReady(_ c: RelayConnection) {
        guard !c.queued else { return }
        c.queued = true
        ready.append(c)
    }

    // MARK: - The loop

    private func run() {
        guard usable else { return }
        let capacity = 256
        let events = UnsafeMutablePointer<epoll_event>.allocate(capacity: capacity)
        while true {
            var timeout: Int32 = -1
            if !ready.isEmpty {
                timeout = 0
            } else if let next = min(timers.nextDeadline ?? UInt64.max, nextSweep) as UInt64?, next != UInt64.max {
                let now = monotonicNanoseconds()
                // Rounded up to the millisecond, at most a minute (a later deadline is re-checked then).
                timeout = next <= now ? 0 : Int32(min(60_000, (next - now + 999_999) / 1_000_000))
            }
            let n = epoll_wait(epfd, events, Int32(capacity), timeout)
            if n < 0 { continue }  // EINTR
            for i in 0..<Int(n) {
                let ev = events[i]
                if ev.data.u64 == UInt64.max {
                    var v: UInt64 = 0
                    _ = read(wakeFD, &v, 8)
                    runInbox()
                    continue
                }
                let fd = Int32(bitPattern: UInt32(truncatingIfNeeded: ev.data.u64))
                let tag = UInt32(truncatingIfNeeded: ev.data.u64 >> 32)
                guard fd >= 0, Int(fd) < slots.count, let slot = slots[Int(fd)], slot.tag == tag else { continue }
                switch slot.owner {
                case .listener(let l): l.acceptAll(on: self)
                case .client(let c): c.event(ev.events, client: true)
                case .backend(let c): c.event(ev.events, client: false)
                }
            }
            if !timers.isEmpty || nextSweep != UInt64.max {
                let now = monotonicNanoseconds()
                while let action = timers.popDue(now: now) { action() }
                sweep(now: now)
            }
            if !ready.isEmpty {
                let batch = ready
                ready = []
                for c in batch {
                    c.queued = false
                    c.pump()
                }
            }
        }
    }

    private func runInbox() {
        let work = inbox.withLock { q -> [@Sendable (RelayLoop) -> Void] in
            let w = q
            q = []
            return w
        }
        for body in work { body(self) }
    }
}

/// A binary min-heap of timer actions by deadline; equal deadlines run in the order they were scheduled (a shaped
/// connection's writes keep their order).
struct TimerHeap {
    private var items: [(deadline: UInt64, seq: UInt64, action: () -> Void)] = []
    private var seq: UInt64 = 0

    var isEmpty: Bool { items.isEmpty }
    var nextDeadline: UInt64? { items.first?.deadline }

    private func less(_ a: Int, _ b: Int) -> Bool {
        items[a].deadline < items[b].deadline || (items[a].deadline == items[b].deadline && items[a].seq < items[b].seq)
    }

    mutating func push(_ deadline: UInt64, _ action: @escaping () -> Void) {
        seq += 1
        items.append((deadline, seq, action))
        var i = items.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            guard less(i, p) else { break }
            items.swapAt(i, p)
            i = p
        }
    }

    /// The earliest action if it is due.
    mutating func popDue(now: UInt64) -> (() -> Void)? {
        guard let first = items.first, first.deadline <= now else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < items.count, less(l, m) { m = l }
                if r < items.count, less(r, m) { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return first.action
    }
}
