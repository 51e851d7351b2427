import Foundation
import LifeboatHTTP
@testable import LifeboatS3
import LifeboatCore
import LifeboatStorage
import LifeboatTestSupport
import Testing

@Suite struct SigV4Tests {
    let signer = SigV4Signer(credentials: AWSCredentials(accessKeyID: "AKIAIOSFODNN7EXAMPLE",
                                                         secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
                             region: "us-east-1")
    let date = Date(timeIntervalSince1970: 1_369_353_600)  // 2013-05-24T00:00:00Z

    func signature(_ headers: [(String, String)]) -> String {
        let auth = headers.first { $0.0 == "Authorization" }!.1
        return String(auth[auth.range(of: "Signature=")!.upperBound...])
    }

    /// The examples of AWS's "Signature Calculations for the Authorization Header" page.
    @Test func getObjectExample() {
        let h = signer.sign(method: "GET", host: "examplebucket.s3.amazonaws.com", target: "/test.txt",
                            headers: [("Range", "bytes=0-9")], body: nil, date: date)
        #expect(signature(h) == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
        #expect(h.first { $0.0 == "Authorization" }!.1.contains("SignedHeaders=host;range;x-amz-content-sha256;x-amz-date"))
    }

    @Test func putObjectExample() {
        let h = signer.sign(method: "PUT", host: "examplebucket.s3.amazonaws.com", target: "/test%24file.text",
                            headers: [("Date", "Fri, 24 May 2013 00:00:00 GMT"), ("x-amz-storage-class", "REDUCED_REDUNDANCY")],
                            body: Data("Welcome to Amazon S3.".utf8), date: date)
        #expect(signature(h) == "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")
    }

    @Test func listObjectsExample() {
        let h = signer.sign(method: "GET", host: "examplebucket.s3.amazonaws.com", target: "/?max-keys=2&prefix=J",
                            headers: [], body: nil, date: date)
        #expect(signature(h) == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")
    }

    @Test func getLifecycleExample() {
        let h = signer.sign(method: "GET", host: "examplebucket.s3.amazonaws.com", target: "/?lifecycle",
                            headers: [], body: nil, date: date)
        #expect(signature(h) == "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543")
    }

    @Test func credentialsFromProfile() throws {
        let dir = tempDir("aws")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "[default]\naws_access_key_id = A\naws_secret_access_key = B\n\n[backup]\naws_access_key_id=C\naws_secret_access_key=D\naws_session_token=T\n"
            .write(toFile: "\(dir)/credentials", atomically: true, encoding: .utf8)
        try "[profile backup]\nregion = eu-west-3\n".write(toFile: "\(dir)/config", atomically: true, encoding: .utf8)
        let env = ["AWS_SHARED_CREDENTIALS_FILE": "\(dir)/credentials", "AWS_CONFIG_FILE": "\(dir)/config", "AWS_PROFILE": "backup"]
        let c = try AWSConfig.credentials(environment: env)
        #expect(c.accessKeyID == "C" && c.secretAccessKey == "D" && c.sessionToken == "T")
        #expect(AWSConfig.region(environment: env) == "eu-west-3")
        #expect(AWSConfig.region(environment: env.merging(["AWS_REGION": "us-west-2"]) { $1 }) == "us-west-2")
        #expect(throws: S3Error.self) { _ = try AWSConfig.credentials(environment: ["AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"]) }
    }
}

/// A moto S3 server on a free loopback port, for the duration of a test.
final class MotoServer {
    let process: Process
    let port: Int

    /// A port the kernel says is free (a random one could be taken: moto then exits at once), and up to three
    /// tries when moto still exits before it listens (another process took the port in between).
    init() throws {
        var port = 0
        for _ in 0..<3 {
            port = MotoServer.freePort()
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["moto_server", "-H", "127.0.0.1", "-p", "\(port)"]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            if MotoServer.waitListening(port, while: p) {
                self.port = port
                process = p
                return
            }
            p.terminate()
        }
        throw StorageError(.permanent, "moto_server did not start (3 tries, last port \(port)): install it with pip install 'moto[server]'")
    }

    static func freePort() -> Int { freeLoopbackPort() }

    /// Waits (at most 30 s) until the port accepts connections; false when the process exits first or time runs out.
    static func waitListening(_ port: Int, while process: Process) -> Bool {
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = in_port_t(UInt16(port).bigEndian)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            let ok = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
            close(fd)
            if ok { return true }
            guard process.isRunning else { return false }
            usleep(100_000)
        }
        return false
    }

    /// moto ignores SIGTERM when started from a test process, so it is killed.
    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
        // The pyenv shim may have forked the real server: kill whatever serves our port.
        let pkill = Process()
        pkill.executableURL = URL(fileURLWithPath: "/usr/bin/pkill")
        pkill.arguments = ["-9", "-f", "moto_server -H 127.0.0.1 -p \(port)$"]
        try? pkill.run()
        pkill.waitUntilExit()
    }

    deinit { stop() }

    var env: [String: String] { ["AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"] }
}

@Suite(.serialized) struct S3BackendTests {
    @Test func conformanceAgainstMoto() async throws {
        let moto = try MotoServer()
        defer { moto.stop() }
        let b = try S3Backend.make("http://127.0.0.1:\(moto.port)/conformance/some/prefix", environment: moto.env)
        try await b.create()
        try await BackendConformance.run(b)
        // More than one page of listing (S3 returns 1000 keys per page).
        let many = (0..<1100).map { String(format: "%064x", $0) }
        try await withThrowingTaskGroup(of: Void.self) { g in
            for chunk in stride(from: 0, to: many.count, by: 100) {
                g.addTask { for n in many[chunk..<min(chunk + 100, many.count)] { try await b.write(Handle(.index, n), data: Data([1])) } }
            }
            try await g.waitForAll()
        }
        #expect(Set(try await b.list(.index).map(\.name)) == Set(many))
    }

    @Test func clearErrors() async throws {
        let moto = try MotoServer()
        defer { moto.stop() }
        let missing = try S3Backend.make("http://127.0.0.1:\(moto.port)/no-such-bucket/x", environment: moto.env)
        do {
            _ = try await missing.stat(.config)
            Issue.record("expected an error")
        } catch let e as StorageError {
            #expect(e.message.contains("does not exist"))
        }
        // Nothing listens on port 1: a transient error that names the cause.
        let down = try S3Backend.make("http://127.0.0.1:1/b/x", environment: moto.env)
        do {
            _ = try await down.list(.snapshots)
            Issue.record("expected an error")
        } catch let e as StorageError {
            #expect(e.kind == .transient)
            #expect(e.message.contains("connect"))
        }
    }

    @Test func objectLock() async throws {
        let moto = try MotoServer()
        defer { moto.stop() }
        let b = try S3Backend.make("http://127.0.0.1:\(moto.port)/locked/repo", objectLock: ObjectLock(days: 1, mode: .compliance), environment: moto.env)
        try await b.create()
        let data = Data("snapshot".utf8)
        let h = Handle(.snapshots, SigV4Signer.sha256Hex(data))
        try await b.write(h, data: data)
        // The object carries its retention.
        let t = try AsyncHTTPTransport(origin: "http://127.0.0.1:\(moto.port)")
        let signer = SigV4Signer(credentials: AWSCredentials(accessKeyID: "test", secretAccessKey: "test"), region: "us-east-1")
        let target = "/locked/repo/snapshots/\(h.name)"
        let head = try await t.send(HTTPRequestSpec(method: "HEAD", target: target,
                                                    headers: signer.sign(method: "HEAD", host: "127.0.0.1:\(moto.port)", target: target, headers: [], body: nil)))
        #expect(head.header("x-amz-object-lock-mode") == "COMPLIANCE")
        #expect(head.header("x-amz-object-lock-retain-until-date") != nil)
        // Lock files are not retained, so they can be removed.
        try await b.write(Handle(.locks, h.name), data: data)
        try await b.delete(Handle(.locks, h.name))
        await t.shutdown()
    }
}

/// `--s3-as-of`: what a ListObjectVersions answer says each key was at a point in time.
@Suite struct S3VersionTests {
    let page = """
    <?xml version="1.0" encoding="UTF-8"?>
    <ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><IsTruncated>true</IsTruncated>
    <NextKeyMarker>r/snapshots/cc</NextKeyMarker><NextVersionIdMarker>v9</NextVersionIdMarker>
    <DeleteMarker><Key>r/snapshots/aa</Key><VersionId>m1</VersionId><IsLatest>true</IsLatest><LastModified>2026-12-01T10:00:05.000Z</LastModified></DeleteMarker>
    <Version><Key>r/snapshots/aa</Key><VersionId>v1</VersionId><IsLatest>false</IsLatest><LastModified>2026-12-01T10:00:01.000Z</LastModified><Size>120</Size></Version>
    <Version><Key>r/snapshots/bb</Key><VersionId>v3</VersionId><IsLatest>true</IsLatest><LastModified>2026-12-01T10:00:09.000Z</LastModified><Size>7</Size></Version>
    <Version><Key>r/snapshots/bb</Key><VersionId>v2</VersionId><IsLatest>false</IsLatest><LastModified>2026-12-01T10:00:02.000Z</LastModified><Size>5</Size></Version>
    <Version><Key>r/snapshots/cc</Key><VersionId>null</VersionId><LastModified>2026-12-01T10:00:00.000Z</LastModified><Size>1</Size></Version>
    <Version><Key>r/x</Key><VersionId>bad</VersionId><LastModified>yesterday</LastModified><Size>1</Size></Version>
    <Version><Key>r/y</Key><VersionId>bad</VersionId><LastModified>2026-12-01T10:00:00Z</LastModified><Size>-4</Size></Version>
    </ListVersionsResult>
    """

    @Test func parsesVersionsAndMarkersInOrder() {
        let p = S3Backend.parseVersions(page)
        #expect(p.entries.map(\.versionID) == ["m1", "v1", "v3", "v2", "null"], "null is the name of a pre-versioning version")
        #expect(p.entries.map(\.deleteMarker) == [true, false, false, false, false])
        #expect(p.entries[1].size == 120)
        #expect(p.truncated)
        #expect(p.next?.key == "r/snapshots/cc" && p.next?.version == "v9")
    }

    @Test func interleavedEntriesKeepTheirOrder() {
        func v(_ id: String) -> String { "<Version><Key>k</Key><VersionId>\(id)</VersionId><LastModified>2026-12-01T10:00:00Z</LastModified><Size>1</Size></Version>" }
        func m(_ id: String) -> String { "<DeleteMarker><Key>k</Key><VersionId>\(id)</VersionId><LastModified>2026-12-01T10:00:00Z</LastModified></DeleteMarker>" }
        let p = S3Backend.parseVersions("<ListVersionsResult>" + v("1") + m("2") + m("3") + v("4") + v("5") + m("6") + "</ListVersionsResult>")
        #expect(p.entries.map(\.versionID) == ["1", "2", "3", "4", "5", "6"])
        #expect(p.entries.map(\.deleteMarker) == [false, true, true, false, false, true])
        #expect(!p.truncated && p.next == nil)
        // Cut short: the open entry is left out, the others stay.
        #expect(S3Backend.parseVersions(v("1") + "<Version><Key>k</Key>").entries.count == 1)
    }

    @Test func resolvesEachKeyAtAPointInTime() {
        let entries = S3Backend.parseVersions(page).entries
        func at(_ s: String) -> [String: String] {
            S3Backend.resolve(entries, asOf: Timestamp.parse(s)!).mapValues { $0.versionID ?? "null" }
        }
        // Before the delete marker, aa is there; after it, gone. bb is v2 until v3 is written.
        #expect(at("2026-12-01T10:00:04Z") == ["r/snapshots/aa": "v1", "r/snapshots/bb": "v2", "r/snapshots/cc": "null"])
        #expect(at("2026-12-01T10:00:10Z") == ["r/snapshots/bb": "v3", "r/snapshots/cc": "null"])
        #expect(at("2026-12-01T10:00:00.5Z") == ["r/snapshots/cc": "null"])
        #expect(at("2026-11-30T00:00:00Z").isEmpty)
    }

    @Test func aKeysVersionsSplitAcrossPagesFoldToTheSameAnswer() {
        let all = S3Backend.parseVersions(page).entries
        let t = Timestamp.parse("2026-12-01T10:00:04Z")!
        for cut in 0...all.count {
            var best: [String: ObjectVersion] = [:]
            S3Backend.keepNewest(Array(all[..<cut]), asOf: t, in: &best)
            S3Backend.keepNewest(Array(all[cut...]), asOf: t, in: &best)
            #expect(best.filter { !$0.value.deleteMarker } == S3Backend.resolve(all, asOf: t), "cut at \(cut)")
        }
    }

    @Test func aMarkerAndAVersionInTheSameSecondTheServerListsFirstWins() {
        let t = Timestamp.parse("2026-12-01T10:00:00Z")!
        let marker = ObjectVersion(key: "k", versionID: "m", deleteMarker: true, lastModified: t, size: 0)
        let version = ObjectVersion(key: "k", versionID: "v", deleteMarker: false, lastModified: t, size: 3)
        #expect(S3Backend.resolve([marker, version], asOf: t).isEmpty)
        #expect(S3Backend.resolve([version, marker], asOf: t)["k"]?.versionID == "v")
    }

    @Test func pointInTimeIsReadOnly() async throws {
        let b = S3Backend(transport: try AsyncHTTPTransport(origin: "http://127.0.0.1:1", options: HTTPOptions()), host: "127.0.0.1:1",
                          bucket: "b", prefix: "r", pathStyle: true,
                          signer: SigV4Signer(credentials: AWSCredentials(accessKeyID: "a", secretAccessKey: "b"), region: "us-east-1"),
                          asOf: Date(timeIntervalSince1970: 1_700_000_000))
        #expect(b.location.contains("as of 2023-11-14T22:13:20.000Z"))
        await #expect(throws: StorageError.self) { try await b.write(Handle(.data, String(repeating: "a", count: 64)), data: Data([1])) }
        await #expect(throws: StorageError.self) { try await b.delete(.config) }
    }
}
