import Foundation
import LifeboatHTTP
import LifeboatREST
import LifeboatS3
import LifeboatServer
import LifeboatStorage
import LifeboatTestSupport
import Synchronization
import Testing

/// Starts `lifeboat serve`'s server in this process on a free loopback port.
func startServer(_ options: ServeOptions) async throws -> (url: String, task: Task<Void, Error>) {
    let (stream, cont) = AsyncStream<String>.makeStream()
    var listen = ListenOptions()
    listen.port = 0
    let task = Task { try await runServer(options, listen: listen) { cont.yield($0) } }
    for await url in stream { return (url, task) }
    throw ServeError("server did not start")
}

func tempDir(_ tag: String) -> String {
    let d = FileManager.default.temporaryDirectory.appendingPathComponent("lb-\(tag)-\(UUID().uuidString)").path
    try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}

func sha256Hex(_ d: Data) -> String { SigV4Signer.sha256Hex(d) }

@Suite struct RESTTests {
    @Test func conformanceAgainstServe() async throws {
        let dir = tempDir("serve")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var o = ServeOptions(path: dir)
        o.verifyUploads = false
        let (url, task) = try await startServer(o)
        defer { task.cancel() }
        let b = try RESTBackend.make(url: url + "repo")
        try await b.create()
        try await BackendConformance.run(b)
    }

    @Test func authAppendOnlyAndNames() async throws {
        let dir = tempDir("serve-auth")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // bcrypt of "secret" (cost 4), Apache's $2y$ spelling.
        let htpasswd = try Htpasswd(text: "alice:$2y$04$bt.bDtA1uFzErhuMJjrQ/.VHmsVv.5.QfuzgDU0zON4k1M0d/2EKK\nbob:$2y$04$bt.bDtA1uFzErhuMJjrQ/.VHmsVv.5.QfuzgDU0zON4k1M0d/2EKK\n")
        #expect(htpasswd.verify(user: "alice", password: "secret"))
        #expect(!htpasswd.verify(user: "alice", password: "wrong"))
        var o = ServeOptions(path: dir)
        o.htpasswd = htpasswd
        o.appendOnly = true
        o.privateRepos = true
        o.prometheus = true
        let (url, task) = try await startServer(o)
        defer { task.cancel() }
        let origin = String(url.dropLast())
        let host = origin.replacingOccurrences(of: "http://", with: "")

        // No credentials, wrong password, another user's repository.
        let anon = try RESTBackend.make(url: "\(origin)/alice/r")
        await #expect(throws: StorageError.self) { try await anon.create() }
        let wrong = try RESTBackend.make(url: "http://alice:nope@\(host)/alice/r")
        await #expect(throws: StorageError.self) { try await wrong.create() }
        let bobInAlice = try RESTBackend.make(url: "http://bob:secret@\(host)/alice/r")
        await #expect(throws: StorageError.self) { try await bobInAlice.create() }

        let alice = try RESTBackend.make(url: "http://alice:secret@\(host)/alice/r")
        try await alice.create()
        let data = Data("hello".utf8)
        let name = sha256Hex(data)
        try await alice.write(Handle(.snapshots, name), data: data)
        #expect(try await alice.read(Handle(.snapshots, name)) == data)
        // A body that does not match its name is refused.
        await #expect(throws: StorageError.self) { try await alice.write(Handle(.snapshots, String(repeating: "0", count: 64)), data: data) }
        // Append-only: no delete, no overwrite; lock files may come and go.
        await #expect(throws: StorageError.self) { try await alice.delete(Handle(.snapshots, name)) }
        await #expect(throws: StorageError.self) { try await alice.write(Handle(.snapshots, name), data: data) }
        try await alice.write(Handle(.locks, name), data: data)
        try await alice.delete(Handle(.locks, name))
        #expect(try await alice.list(.snapshots).map(\.name) == [name])

        // Path traversal and hostile names never reach the file system.
        let t = try AsyncHTTPTransport(origin: origin)
        let auth = "Basic " + Data("alice:secret".utf8).base64EncodedString()
        for target in ["/alice/../bob/config", "/alice/%2e%2e/config", "/alice/.hidden/config", "/alice/r/data/..%2f..%2fx",
                       "/alice/r/snapshots/../../../etc/passwd", "/alice//r/config"] {
            let r = try await t.send(HTTPRequestSpec(method: "GET", target: target, headers: [("Authorization", auth)]))
            #expect(r.status == 400 || r.status == 403 || r.status == 404, "\(target) gave \(r.status)")
        }
        let m = try await t.send(HTTPRequestSpec(method: "GET", target: "/metrics", headers: [("Authorization", auth)]))
        let text = String(decoding: m.body, as: UTF8.self)
        #expect(text.contains("lifeboat_serve_requests_total{repo=\"alice/r\",method=\"POST\",type=\"snapshots\",code=\"200\"} 1"))
        #expect(text.contains("lifeboat_serve_written_bytes_total{repo=\"alice/r\",type=\"snapshots\"} 5"))
        #expect(text.contains("lifeboat_serve_errors_total{repo=\"alice/r\"}"))
        await t.shutdown()
    }

    @Test func maxSize() async throws {
        let dir = tempDir("serve-max")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var o = ServeOptions(path: dir)
        o.maxSize = 1000
        let (url, task) = try await startServer(o)
        defer { task.cancel() }
        let b = try RESTBackend.make(url: url + "r")
        try await b.create()
        let small = Data(repeating: 1, count: 600)
        try await b.write(Handle(.data, sha256Hex(small)), data: small)
        let more = Data(repeating: 2, count: 600)
        await #expect(throws: StorageError.self) { try await b.write(Handle(.data, sha256Hex(more)), data: more) }
        try await b.delete(Handle(.data, sha256Hex(small)))
        try await b.write(Handle(.data, sha256Hex(more)), data: more)
    }
}

/// The hardening of issue 11: credentials, quota, metrics, error bodies.
@Suite struct ServeHardeningTests {
    /// bcrypt of "secret" (cost 4), Apache's $2y$ spelling.
    static let secret = "$2y$04$bt.bDtA1uFzErhuMJjrQ/.VHmsVv.5.QfuzgDU0zON4k1M0d/2EKK"

    static func basic(_ credentials: Data) -> String { "Basic " + credentials.base64EncodedString() }

    @Test func credentialsWithNulAreRefused() async throws {
        let h = try Htpasswd(text: "alice:\(Self.secret)\n")
        #expect(h.verify(user: "alice", password: "secret"))
        #expect(!h.verify(user: "alice", password: "secret\u{0}junk"))
        #expect(!h.verify(user: "alice\u{0}x", password: "secret"))

        let dir = tempDir("serve-nul")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var o = ServeOptions(path: dir)
        o.htpasswd = h
        let (url, task) = try await startServer(o)
        defer { task.cancel() }
        let t = try AsyncHTTPTransport(origin: String(url.dropLast()))
        func status(_ credentials: Data) async throws -> Int {
            try await t.send(HTTPRequestSpec(method: "POST", target: "/r?create=true",
                                             headers: [("Authorization", Self.basic(credentials))])).status
        }
        #expect(try await status(Data("alice:secret".utf8) + [0] + Data("junk".utf8)) == 401)
        #expect(try await status(Data("alice".utf8) + [0] + Data(":secret".utf8)) == 401)
        #expect(try await status(Data("alice:secret".utf8)) == 200)
        await t.shutdown()
    }

    /// An unknown user costs one bcrypt check, against a stand-in hash of the file's cost, as a known one does.
    @Test func unknownUsersCostABcryptCheck() throws {
        let checked = Mutex<[String]>([])
        let h = try Htpasswd(text: "alice:\(Self.secret)\n") { _, hash in
            checked.withLock { $0.append(hash) }
            return false
        }
        #expect(!h.verify(user: "mallory", password: "guess"))
        #expect(!h.verify(user: "alice", password: "guess"))
        let hashes = checked.withLock { $0 }
        #expect(hashes.count == 2, "one bcrypt check each, known or not")
        #expect(hashes.first?.hasPrefix("$2b$04$") == true, "the stand-in has the cost of the file's hashes")
        #expect(hashes.first != hashes.last)
        #expect(throws: ServeError.self) { try Htpasswd(text: "bob:$2y$xx$abc\n") }
    }

    /// Five concurrent 9 MB uploads against a 30 MB quota: room is reserved before writing, so three fit and two
    /// are refused, never all five.
    @Test func quotaHoldsUnderConcurrentUploads() async throws {
        let dir = tempDir("serve-quota")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var o = ServeOptions(path: dir)
        o.maxSize = 30_000_000
        let (url, task) = try await startServer(o)
        defer { task.cancel() }
        let b = try RESTBackend.make(url: url + "r")
        try await b.create()
        let stored = await withTaskGroup(of: Bool.self) { g in
            for i in 0..<5 {
                g.addTask {
                    let data = Data(repeating: UInt8(i + 1), count: 9_000_000)
                    do { try await b.write(Handle(.data, sha256Hex(data)), data: data); return true } catch { return false }
                }
            }
            var n = 0
            for await ok in g where ok { n += 1 }
            return n
        }
        #expect(stored == 3)
        #expect(RepositoryServerUsage.bytes(under: dir) <= 30_000_000)
        // Deleting gives the room back.
        let first = try await b.list(.data)
        try await b.delete(Handle(.data, first[0].name))
        let data = Data(repeating: 9, count: 9_000_000)
        try await b.write(Handle(.data, sha256Hex(data)), data: data)
    }

    @Test func metricsShowOnlyWhatTheCallerMaySee() async throws {
        let dir = tempDir("serve-metrics")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var o = ServeOptions(path: dir)
        o.htpasswd = try Htpasswd(text: "alice:\(Self.secret)\nbob:\(Self.secret)\n")
        o.privateRepos = true
        o.prometheus = true
        o.prometheusNoAuth = true
        let (url, task) = try await startServer(o)
        defer { task.cancel() }
        let host = url.replacingOccurrences(of: "http://", with: "").dropLast()
        for user in ["alice", "bob"] {
            let r = try RESTBackend.make(url: "http://\(user):secret@\(host)/\(user)/repo")
            try await r.create()
            let data = Data(user.utf8)
            try await r.write(Handle(.snapshots, sha256Hex(data)), data: data)
        }
        // Bob tries alice's repository: refused, and counted under no repository name.
        let intruder = try RESTBackend.make(url: "http://bob:secret@\(host)/alice/secret-project")
        await #expect(throws: StorageError.self) { try await intruder.create() }

        let t = try AsyncHTTPTransport(origin: "http://\(host)")
        func metrics(_ user: String?) async throws -> String {
            let headers = user.map { [("Authorization", Self.basic(Data("\($0):secret".utf8)))] } ?? []
            return String(decoding: try await t.send(HTTPRequestSpec(method: "GET", target: "/metrics", headers: headers)).body, as: UTF8.self)
        }
        let alice = try await metrics("alice")
        #expect(alice.contains("lifeboat_serve_requests_total{repo=\"alice/repo\",method=\"POST\",type=\"snapshots\",code=\"200\"} 1"))
        #expect(!alice.contains("bob/repo") && !alice.contains("secret-project"))
        let bob = try await metrics("bob")
        #expect(bob.contains("repo=\"bob/repo\"") && !bob.contains("alice"))
        let anonymous = try await metrics(nil)
        #expect(!anonymous.contains("repo="))
        #expect(anonymous.contains("lifeboat_serve_requests_total{method=\"POST\",type=\"snapshots\",code=\"200\"} 2"))
        #expect(anonymous.contains("lifeboat_serve_written_bytes_total{type=\"snapshots\"} 8"))
        await t.shutdown()
    }

    /// 404 and 500 answers say what went wrong, never where the server keeps its files.
    @Test func errorBodiesHoldNoServerPaths() async throws {
        let dir = tempDir("serve-paths")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (url, task) = try await startServer(ServeOptions(path: dir))
        defer { task.cancel() }
        let t = try AsyncHTTPTransport(origin: String(url.dropLast()))
        #expect(try await t.send(HTTPRequestSpec(method: "POST", target: "/r?create=true")).status == 200)
        let missing = try await t.send(HTTPRequestSpec(method: "GET", target: "/r/data/" + String(repeating: "ab", count: 32)))
        #expect(missing.status == 404)
        let head = try await t.send(HTTPRequestSpec(method: "HEAD", target: "/r/keys/" + String(repeating: "cd", count: 32)))
        #expect(head.status == 404)
        // A repository that cannot be created (a file stands where its folder would go): 500.
        _ = FileManager.default.createFile(atPath: "\(dir)/blocked", contents: Data("x".utf8))
        let blocked = try await t.send(HTTPRequestSpec(method: "POST", target: "/blocked?create=true"))
        #expect(blocked.status == 500)
        // An upload into a data folder that is a file: 500.
        try FileManager.default.removeItem(atPath: "\(dir)/r/data/ab")
        _ = FileManager.default.createFile(atPath: "\(dir)/r/data/ab", contents: Data("x".utf8))
        let data = Data((0..<1000).map { _ in UInt8.random(in: 0...255) })
        var name = sha256Hex(data)
        name = "ab" + name.dropFirst(2)
        let upload = try await t.send(HTTPRequestSpec(method: "POST", target: "/r/data/\(name)", body: data))
        #expect(upload.status >= 400)
        for r in [missing, blocked, upload] {
            let body = String(decoding: r.body, as: UTF8.self)
            #expect(!body.contains(dir) && !body.contains("/tmp") && !body.contains("/r/"), "\(r.status): \(body)")
        }
        await t.shutdown()
    }
}

enum RepositoryServerUsage {
    /// Bytes of the regular files under `dir`.
    static func bytes(under dir: String) -> Int {
        guard let e = FileManager.default.enumerator(atPath: dir) else { return 0 }
        var total = 0
        while let p = e.nextObject() as? String {
            if let a = try? FileManager.default.attributesOfItem(atPath: "\(dir)/\(p)"), a[.type] as? FileAttributeType == .typeRegular {
                total += (a[.size] as? Int) ?? 0
            }
        }
        return total
    }
}

/// `Range` headers as a table: every form, huge numbers, garbage. nil means 416.
@Suite struct RangeTests {
    @Test func rangeTable() {
        let max = "9223372036854775807"          // Int.max
        let huge = "99999999999999999999999999"   // beyond Int.max
        let cases: [(String, Int, Range<Int>?)] = [
            ("bytes=0-9", 100, 0..<10),
            ("bytes=10-19", 100, 10..<20),
            ("bytes=90-200", 100, 90..<100),
            ("bytes=99-99", 100, 99..<100),
            ("bytes=0-99", 100, 0..<100),
            ("bytes=0-", 100, 0..<100),
            ("bytes=42-", 100, 42..<100),
            ("bytes=-10", 100, 90..<100),
            ("bytes=-100", 100, 0..<100),
            ("bytes=-1000", 100, 0..<100),
            ("BYTES=0-0", 100, 0..<1),
            (" bytes=1-2 ", 100, 1..<3),
            // The crash of issue 11 and its relatives: never overflow, clamp.
            ("bytes=0-\(max)", 100, 0..<100),
            ("bytes=0-\(huge)", 100, 0..<100),
            ("bytes=50-\(max)", 100, 50..<100),
            ("bytes=-\(max)", 100, 0..<100),
            ("bytes=-\(huge)", 100, 0..<100),
            ("bytes=\(max)-", 100, nil),
            ("bytes=\(max)-\(max)", 100, nil),
            ("bytes=\(huge)-\(huge)", 100, nil),
            ("bytes=0-\(max)", Int.max, 0..<Int.max),
            ("bytes=\(max)-", Int.max, nil),
            ("bytes=-\(max)", Int.max, 0..<Int.max),
            // Unsatisfiable.
            ("bytes=100-", 100, nil),
            ("bytes=100-200", 100, nil),
            ("bytes=20-10", 100, nil),
            ("bytes=-0", 100, nil),
            ("bytes=0-0", 0, nil),
            ("bytes=-5", 0, nil),
            ("bytes=0-", 0, nil),
            // Garbage and unsupported forms.
            ("", 100, nil),
            ("bytes=", 100, nil),
            ("bytes=-", 100, nil),
            ("bytes=--5", 100, nil),
            ("bytes=5", 100, nil),
            ("bytes=a-b", 100, nil),
            ("bytes=+1-5", 100, nil),
            ("bytes=-+5", 100, nil),
            ("bytes=1-+5", 100, nil),
            ("bytes=-1-5", 100, nil),
            ("bytes=1 -5", 100, nil),
            ("bytes=0x10-20", 100, nil),
            ("bytes=1-5,7-9", 100, nil),
            ("bytes=0-1,", 100, nil),
            ("items=0-5", 100, nil),
            ("bytes 0-5", 100, nil),
            ("bytes=\u{0660}-\u{0669}", 100, nil),   // Arabic-Indic digits are not ASCII digits
            ("bytes=１-２", 100, nil),                   // nor are fullwidth ones
        ]
        for (spec, size, want) in cases {
            #expect(RepositoryServer.parseRange(spec, size: size) == want, "\(spec) on \(size) bytes")
        }
    }
}

@Suite struct RcloneTests {
    @Test func conformanceThroughRclone() async throws {
        let dir = tempDir("rclone")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let b = try await RcloneBackend.make("\(dir)/repo")
        try await b.create()
        try await BackendConformance.run(b)
        // The objects land in the same layout as a local repository.
        let data = Data("x".utf8)
        try await b.write(Handle(.data, sha256Hex(data)), data: data)
        #expect(FileManager.default.fileExists(atPath: "\(dir)/repo/data/\(sha256Hex(data).prefix(2))/\(sha256Hex(data))"))
        await b.transport.shutdown()
    }
}
