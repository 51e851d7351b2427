import AsyncHTTPClient
import Foundation
import LifeboatCore
import LifeboatHTTP
import LifeboatPlan
import LifeboatProcess
import NIOCore

/// One alert: an event of Lifeboat (docs/AGENT.md lists them), about a source and/or a site.
public struct Alert: Sendable, Equatable {
    public var event: AlertEvent
    public var source: String?
    public var site: String?
    public var message: String
    public var time: Date
    /// The end of a condition alerted before (an RPO back within its objective, lag back under max_lag).
    public var resolved = false

    public init(_ event: AlertEvent, source: String? = nil, site: String? = nil, message: String, time: Date, resolved: Bool = false) {
        self.event = event; self.source = source; self.site = site; self.message = message; self.time = time; self.resolved = resolved
    }

    /// The webhook's JSON body.
    public var json: [String: Any] {
        var o: [String: Any] = ["event": event.rawValue, "message": message, "time": Timestamp.format(time), "resolved": resolved,
                                "host": localHostnameForAlerts]
        if let source { o["source"] = source }
        if let site { o["site"] = site }
        return o
    }
}

let localHostnameForAlerts: String = {
    var buf = [CChar](repeating: 0, count: 256)
    guard gethostname(&buf, 255) == 0 else { return "localhost" }
    return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}()

/// A job's life as healthchecks-style targets hear of it.
public enum JobPing: Sendable { case start, success, failure(String) }

/// Sends alerts to the plan's targets without ever blocking a job: each target has a bounded queue (the oldest
/// alerts are dropped and counted when a target stays unreachable) and a worker that delivers in order. Webhooks
/// are retried with backoff (1 s, 2 s, … up to 5 tries); commands are killed at 30 s.
public final class AlertDispatcher: Sendable {
    struct Queue: Sendable {
        let target: AlertTarget
        let continuation: AsyncStream<Delivery>.Continuation
    }
    enum Delivery: Sendable { case alert(Alert); case ping(job: String, JobPing) }

    let queues: [Queue]
    let tasks: [Task<Void, Never>]
    let log: @Sendable (String) -> Void
    let counters: Counters
    let recent: RecentEvents?

    /// Deliveries per target index: sent, failed (after retries), dropped (queue full).
    public final class Counters: Sendable {
        let values = Mutex<[String: Int]>([:])
        func add(_ key: String) { values.withLock { $0[key, default: 0] += 1 } }
        public var snapshot: [String: Int] { values.withLock { $0 } }
    }

    public init(targets: [AlertTarget], retryBase: Double = 1, recent: RecentEvents? = nil, log: @escaping @Sendable (String) -> Void) {
        var queues: [Queue] = []
        var tasks: [Task<Void, Never>] = []
        let counters = Counters()
        for t in targets {
            let (stream, cont) = AsyncStream<Delivery>.makeStream(bufferingPolicy: .bufferingNewest(1000))
            queues.append(Queue(target: t, continuation: cont))
            tasks.append(Task {
                for await d in stream {
                    let ok = await AlertDispatcher.deliver(d, to: t, retryBase: retryBase, log: log)
                    counters.add(ok ? "sent" : "failed")
                }
            })
        }
        self.queues = queues
        self.tasks = tasks
        self.log = log
        self.counters = counters
        self.recent = recent
    }

    /// Queues an alert for every target whose `on` names its event (no `on`: every event; healthchecks targets
    /// take job pings, and failures as pings).
    public func send(_ alert: Alert) {
        recent?.record(alert)
        for q in queues where q.target.kind != .healthchecks && (q.target.on.isEmpty || q.target.on.contains(alert.event)) {
            if case .dropped = q.continuation.yield(.alert(alert)) { counters.add("dropped") }
        }
    }

    public func ping(job: String, _ ping: JobPing) {
        for q in queues where q.target.kind == .healthchecks {
            if case .dropped = q.continuation.yield(.ping(job: job, ping)) { counters.add("dropped") }
        }
    }

    /// Stops taking alerts and waits (at most `timeout`) for the queued ones to go out; then gives up on the rest.
    public func finish(timeout: Double) async {
        for q in queues { q.continuation.finish() }
        let tasks = self.tasks
        let timer = Task {
            try? await Task.sleep(for: .milliseconds(Int64(timeout * 1000)))
            for t in tasks { t.cancel() }
        }
        for t in tasks { await t.value }
        timer.cancel()
    }

    static func deliver(_ d: Delivery, to target: AlertTarget, retryBase: Double, log: @Sendable (String) -> Void) async -> Bool {
        switch (target.kind, d) {
        case (.webhook, .alert(let a)):
            let body = (try? JSONSerialization.data(withJSONObject: a.json, options: [.sortedKeys])) ?? Data()
            return await post(target.url ?? "", body: body, contentType: "application/json", tries: 5, retryBase: retryBase,
                              what: "webhook alert \(a.event.rawValue)", log: log)
        case (.healthchecks, .ping(let job, let p)):
            let base = (target.url ?? "").hasSuffix("/") ? String((target.url ?? "").dropLast()) : (target.url ?? "")
            let (url, body): (String, String) = switch p {
            case .start: (base + "/start", job)
            case .success: (base, job)
            case .failure(let why): (base + "/fail", "\(job): \(why)")
            }
            return await post(url, body: Data(body.prefix(10_000).utf8), contentType: "text/plain; charset=utf-8", tries: 3,
                              retryBase: retryBase, what: "healthchecks ping", log: log)
        case (.command, .alert(let a)):
            let argv = (target.command ?? []).map {
                $0.replacingOccurrences(of: "{event}", with: a.event.rawValue + (a.resolved ? "_resolved" : ""))
                    .replacingOccurrences(of: "{source}", with: a.source ?? "")
                    .replacingOccurrences(of: "{site}", with: a.site ?? "")
                    .replacingOccurrences(of: "{message}", with: a.message)
                    .replacingOccurrences(of: "{time}", with: Timestamp.format(a.time))
            }
            do {
                let capture = try Capture()
                let child = try Child.spawn(argv, environment: ["LIFEBOAT_EVENT": a.event.rawValue], stdout: capture.writeFD, stderr: capture.writeFD)
                capture.closeWriter()
                let exit = await child.wait(timeout: 30)
                let out = await capture.text()
                if !exit.ok {
                    log("alert command \(argv.first ?? "") \(exit.timedOut ? "was killed after 30 s" : "failed with exit status \(exit.status)")\(out.isEmpty ? "" : ": \(out)")")
                    return false
                }
                return true
            } catch {
                log("alert command \(argv.first ?? ""): \(error)")
                return false
            }
        default:
            return true
        }
    }

    /// POSTs with retries; the URL is logged without its path (it may hold a token).
    static func post(_ url: String, body: Data, contentType: String, tries: Int, retryBase: Double, what: String,
                     log: @Sendable (String) -> Void) async -> Bool {
        let shown = URL(string: url).map { "\($0.scheme ?? "http")://\($0.host ?? "")\($0.port.map { ":\($0)" } ?? "")/…" } ?? "the URL"
        var last = ""
        for attempt in 1...tries {
            var req = HTTPClientRequest(url: url)
            req.method = .POST
            req.headers.add(name: "Content-Type", value: contentType)
            req.headers.add(name: "User-Agent", value: "lifeboat-agent")
            req.body = .bytes(ByteBuffer(bytes: body))
            do {
                let resp = try await HTTPClient.shared.execute(req, timeout: .seconds(10))
                _ = try? await resp.body.collect(upTo: 64 << 10)
                if (200..<300).contains(resp.status.code) { return true }
                last = "\(shown) answered \(resp.status.code)"
                if (400..<500).contains(resp.status.code) && resp.status.code != 429 { break }
            } catch {
                let host = URL(string: url)?.host ?? "", port = URL(string: url)?.port ?? (url.hasPrefix("https") ? 443 : 80)
                last = NetworkErrors.describe(error, peer: NetworkErrorText.peer(host: host, port: port)) ?? "\(shown): \(error)"
            }
            if attempt < tries {
                try? await Task.sleep(for: .milliseconds(Int64(retryBase * pow(2, Double(attempt - 1)) * 1000)))
                if Task.isCancelled { break }
            }
        }
        log("\(what) not delivered: \(last)")
        return false
    }
}

import Synchronization

/// The newest alerts, whether or not a target takes them (the dashboard's recent events): at most `capacity`,
/// the oldest dropped first; in memory only.
public final class RecentEvents: Sendable {
    let items = Mutex<[Alert]>([])
    public let capacity: Int
    public init(capacity: Int = 500) { self.capacity = max(1, capacity) }

    let recorded = Mutex(0)

    public func record(_ a: Alert) {
        items.withLock {
            if $0.count >= capacity { $0.removeFirst($0.count - capacity + 1) }
            $0.append(a)
        }
        recorded.withLock { $0 &+= 1 }
    }

    /// How many were recorded since the start (the live refresh watches it).
    public var count: Int { recorded.withLock { $0 } }

    /// Newest first, at most `limit`, those `matching`.
    public func newest(_ limit: Int, matching: (Alert) -> Bool = { _ in true }) -> [Alert] {
        Array(items.withLock { $0 }.reversed().lazy.filter(matching).prefix(max(0, limit)))
    }
}
