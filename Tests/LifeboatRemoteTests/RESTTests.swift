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
