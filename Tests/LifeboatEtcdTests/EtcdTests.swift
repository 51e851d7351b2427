import Foundation
import Glibc
import Testing
@testable import LifeboatEtcd
import LifeboatHA
@testable import LifeboatHAPostgres
import LifeboatProcess
import LifeboatTestSupport

/// A one-member etcd (Debian's etcd-server) on free loopback ports, with its own data directory, for one test.
final class EtcdServer {
    let process: Process
    let port: Int
    let dir: String
    var endpoint: String { "http://127.0.0.1:\(port)" }

    init() throws {
        dir = NSTemporaryDirectory() + "etcd-test-\(UUID().uuidString)"
        var port = 0
        for _ in 0..<3 {
            port = EtcdServer.freePort()
            let peer = EtcdServer.freePort()
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/etcd")
            p.arguments = ["--name", "t", "--data-dir", dir + "/\(port)", "--listen-client-urls", "http://127.0.0.1:\(port)",
                           "--advertise-client-urls", "http://127.0.0.1:\(port)", "--listen-peer-urls", "http://127.0.0.1:\(peer)",
                           "--initial-advertise-peer-urls", "http://127.0.0.1:\(peer)", "--initial-cluster", "t=http://127.0.0.1:\(peer)"]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            if EtcdServer.waitHealthy(port, while: p) {
                self.port = port
                process = p
                return
            }
            p.terminate()
            p.waitUntilExit()
        }
        throw EtcdError(.unreachable, "etcd did not start (3 tries, last port \(port)): apt-get install etcd-server")
    }

    static func freePort() -> Int { freeLoopbackPort() }

    /// Waits (at most 30 s) until `/health` answers true; false when the process exits first or time runs out.
    static func waitHealthy(_ port: Int, while process: Process) -> Bool {
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            // (curl: Foundation on Linux reads no http URL without FoundationNetworking.)
            let curl = Process()
            curl.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
            curl.arguments = ["-s", "-m", "2", "http://127.0.0.1:\(port)/health"]
            let out = Pipe()
            curl.standardOutput = out
            curl.standardError = FileHandle.nullDevice
            if (try? curl.run()) != nil {
                let d = out.fileHandleForReading.readDataToEndOfFile()
                curl.waitUntilExit()
                if String(decoding: d, as: UTF8.self).contains("\"health\":\"true\"") { return true }
            }
            guard process.isRunning else { return false }
            usleep(100_000)
        }
        return false
    }

    func stop() {
        if process.isRunning { process.terminate(); process.waitUntilExit() }
        try? FileManager.default.removeItem(atPath: dir)
    }

    deinit { stop() }
}

@Suite struct HAKeysTests {
    let keys = HAKeys(cluster: "shop")

    func kv(_ name: String, _ value: String, lease: Int64 = 0, rev: Int64 = 5) -> EtcdKV {
        EtcdKV(key: keys.prefix + name, value: Array(value.utf8), modRevision: rev, lease: lease)
    }

    @Test func aReadBecomesAView() {
        let member = #"{"name":"pg2","role":"standby","timeline":1,"position":50331648,"candidate":true}"#
        let (v, problems) = keys.view([
            kv("leader", "pg1", lease: 77, rev: 9), kv("optime/leader", #"{"position":50331648,"timeline":1}"#),
            kv("members/pg2", member), kv("initialize", "7300000000000000001"), kv("switchover", #"{"from":"pg1","to":"pg2"}"#),
            kv("maintenance", ""), EtcdKV(key: "/lifeboat/ha/other/leader", value: Array("x".utf8), lease: 1),
        ])
        #expect(problems.isEmpty)
        #expect(v.leader == .init(holder: "pg1", lease: 77, revision: 9))
        #expect(v.leaderPosition == 50331648 && v.leaderTimeline == 1)
        #expect(v.members["pg2"]?.candidate == true && v.members["pg2"]?.position == 50331648)
        #expect(v.initialized == "7300000000000000001" && v.bootstrapper == nil)
        #expect(v.switchover == .init(from: "pg1", to: "pg2"))
        #expect(v.maintenance)
        #expect(keys.view([kv("initialize", "pg3")]).view.bootstrapper == "pg3")
    }

    /// Anything a writer of the prefix can put there: left out, named, never trusted.
    @Test func hostileValuesAreLeftOutAndNamed() {
        let (v, problems) = keys.view([
            kv("leader", "pg1"),  // no lease: a key that never expires would pin a leader forever
            kv("optime/leader", #"{"position":-1,"timeline":1}"#),
            kv("members/pg2", #"{"name":"pg9","role":"standby","candidate":true}"#),  // names another node
            kv("members/../x", #"{"name":"../x","role":"standby","candidate":true}"#),
            kv("members/pg3", #"{"name":"pg3","role":"emperor","candidate":true}"#),
            kv("initialize", "rm -rf /"),
            kv("switchover", #"{"from":"pg1"}"#),
            kv("members/pg4", String(repeating: "x", count: 70_000)),
            kv("sync", #"{"leader":"pg1","standbys":["a b"]}"#),
        ])
        #expect(v.leader == nil && v.leaderPosition == nil && v.members.isEmpty && v.initialized == nil && v.bootstrapper == nil && v.switchover == nil)
        #expect(v.sync == nil)
        #expect(problems.count == 9)
        #expect(keys.view([kv("sync", #"{"leader":"pg1","standbys":["pg2"]}"#)]).view.sync == .init(leader: "pg1", standbys: ["pg2"]))
    }

    @Test func prefixEnds() {
        #expect(EtcdClient.prefixEnd("/a/") == Array("/a0".utf8))
        #expect(EtcdClient.prefixEnd("") == [0])
    }
}

/// Against a real etcd 3.4 through its JSON gateway.
@Suite(.serialized) struct EtcdClientTests {
    @Test func conditionalWritesLeasesAndRanges() async throws {
        let server = try EtcdServer()
        defer { server.stop() }
        let c = try EtcdClient(endpoints: [server.endpoint], timeout: 2)
        let lease = try await c.grant(ttl: 30)
        #expect(lease.ttl == 30)
        #expect(try await c.createIfAbsent("/t/leader", Array("a".utf8), lease: lease.id))
        #expect(try await !c.createIfAbsent("/t/leader", Array("b".utf8), lease: lease.id))
        let r = try await c.range(prefix: "/t/")
        #expect(r.kvs.count == 1 && r.kvs[0].value == Array("a".utf8) && r.kvs[0].lease == lease.id)
        let rev = r.kvs[0].modRevision
        #expect(try await !c.putIfRevision("/t/leader", Array("c".utf8), lease: lease.id, revision: rev + 100))
        #expect(try await c.putIfRevision("/t/leader", Array("c".utf8), lease: lease.id, revision: rev))
        #expect(try await !c.deleteIfValue("/t/leader", expected: Array("a".utf8)))
        #expect(try await c.keepAlive(lease.id) == 30)
        // A key outside the prefix is not read.
        try await c.put("/t0", Array("x".utf8))
        #expect(try await c.range(prefix: "/t/").kvs.map(\.key) == ["/t/leader"])
        // Revoked: the key goes with the lease, and a keepalive says so.
        try await c.revoke(lease.id)
        #expect(try await c.keepAlive(lease.id) == 0)
        #expect(try await c.range(prefix: "/t/").kvs.isEmpty)
        await c.shutdown()
    }

    /// Settings that never went through `validate()` (a NaN or huge TTL) start a session with a bounded TTL, no trap.
    @Test func anUncheckedTTLIsBounded() async throws {
        let server = try EtcdServer()
        defer { server.stop() }
        let c = try EtcdClient(endpoints: [server.endpoint], timeout: 2)
        for ttl in [Double.nan, .infinity, 1e300, -5] {
            var s = HASettings(cluster: "x", node: "n1")
            s.ttl = ttl
            var n = HANode(settings: s)
            let r = await HAStore(client: c, settings: s).perform(.startSession, node: &n)
            #expect(r.ok && n.lease != nil, "ttl \(ttl): \(r.note ?? "")")
        }
        await c.shutdown()
    }

    /// The first endpoint is dead: the second answers, and is asked first from then on.
    @Test func aDeadEndpointIsPassedOver() async throws {
        let server = try EtcdServer()
        defer { server.stop() }
        let c = try EtcdClient(endpoints: ["http://127.0.0.1:\(EtcdServer.freePort())", server.endpoint], timeout: 1)
        _ = try await c.grant(ttl: 5)
        #expect(c.current.withLock { $0 } == 1)
        let dead = try EtcdClient(endpoints: ["http://127.0.0.1:\(EtcdServer.freePort())"], timeout: 1)
        await #expect(throws: EtcdError.self) { _ = try await dead.range(prefix: "/") }
        #expect(throws: (any Error).self) { _ = try EtcdClient(endpoints: ["file:///etc/passwd"], timeout: 1) }
        #expect(throws: (any Error).self) { _ = try EtcdClient(endpoints: [], timeout: 1) }
        await c.shutdown()
        await dead.shutdown()
    }

    /// Two nodes see a free leader key and both try: exactly one wins; the loser's model then follows the winner.
    /// The winner stops renewing: its key expires with its lease, and the other takes over.
    @Test func twoNodesRaceOneWinsAndAnExpiredLeaseFreesTheKey() async throws {
        let server = try EtcdServer()
        defer { server.stop() }
        func settings(_ n: String) -> HASettings {
            var s = HASettings(cluster: "race", node: n)
            s.ttl = 2
            s.fencingDeadline = 1.5
            return s
        }
        let c = try EtcdClient(endpoints: [server.endpoint], timeout: 2)
        let a = HAStore(client: c, settings: settings("pg1")), b = HAStore(client: c, settings: settings("pg2"))
        var na = HANode(settings: a.settings), nb = HANode(settings: b.settings)
        let sa = await a.perform(.startSession, node: &na), sb = await b.perform(.startSession, node: &nb)
        #expect(sa.ok && sb.ok && na.lease != nil && nb.lease != nil)
        try await c.put(a.keys.initialize, Array("7300000000000000001".utf8))
        let (ca, cb) = (na, nb)
        async let wa: Bool = { var n = ca; return await a.perform(.acquireLeader(ifRevision: nil), node: &n).ok }()
        async let wb: Bool = { var n = cb; return await b.perform(.acquireLeader(ifRevision: nil), node: &n).ok }()
        let (ra, rb) = await (wa, wb)
        #expect(ra != rb)
        let winner = ra ? "pg1" : "pg2"
        let view = await a.read().view
        #expect(view?.leader?.holder == winner)
        #expect(view?.initialized == "7300000000000000001")
        // Only the leader's position is published; the other's write changes nothing.
        var (wn, ln) = ra ? (na, nb) : (nb, na)
        let (ws, ls) = ra ? (a, b) : (b, a)
        let pw = await ws.perform(.publishLeader(position: 0x500_0000, timeline: 1), node: &wn)
        let pl = await ls.perform(.publishLeader(position: 0x100, timeline: 1), node: &ln)
        #expect(pw.ok && !pl.ok)
        #expect(await a.read().view?.leaderPosition == 0x500_0000)
        // The winner's lease (2 s) is not renewed: the key vanishes.
        let deadline = Date().addingTimeInterval(15)
        var gone = false
        while Date() < deadline {
            if await a.read().view?.leader == nil { gone = true; break }
            try await Task.sleep(nanoseconds: 200_000_000)
        }
        #expect(gone)
        await c.shutdown()
    }
}

@Suite struct PostgresControlTests {
    /// PostgreSQL's stored SCRAM-SHA-256 form, against a verifier computed independently (Python's hashlib:
    /// PBKDF2-HMAC-SHA-256 with 4096 iterations, then the RFC 5802 keys) for RFC 7677's password and salt.
    @Test func scramVerifierMatchesAnIndependentComputation() throws {
        let salt = try #require(Data(base64Encoded: "W22ZaJ0SNY7soEsUEjb6gQ=="))
        #expect(SCRAM.verifier(password: "pencil", salt: Array(salt)) ==
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=")
        // A random salt each time: two verifiers of one password differ.
        #expect(SCRAM.verifier(password: "pencil") != SCRAM.verifier(password: "pencil"))
    }

    /// A pg_rewind that never logged in keeps the data directory (a copy would meet the same refusal); a pg_hba
    /// refusal, or a failure after connecting, sends it aside for a copy.
    @Test func aRewindThatNeverLoggedInKeepsTheDataDirectory() {
        let head = "pg_rewind from pg2:5432 exited with status 1: pg_rewind: error: "
        for kept in ["connection to server at \"10.0.0.2\", port 5432 failed: FATAL:  sorry, too many clients already",
                     "connection to server at \"10.0.0.2\", port 5432 failed: FATAL:  password authentication failed for user \"replicator\"",
                     "connection to server at \"10.0.0.2\", port 5432 failed: FATAL:  role \"replicator\" does not exist",
                     "connection to server at \"10.0.0.2\", port 5432 failed: timeout expired",
                     "could not connect to server: Connection refused"] {
            #expect(PostgresControl.rewindNeverConnected(head + kept), "\(kept)")
        }
        for aside in ["connection to server at \"10.0.0.2\", port 5432 failed: FATAL:  no pg_hba.conf entry for host \"10.0.0.1\", user \"replicator\", database \"postgres\", no encryption",
                      "could not find common ancestor of the source and target cluster's timelines",
                      "error while fetching files: server closed the connection unexpectedly",
                      "timed out after 3600 s", ""] {
            #expect(!PostgresControl.rewindNeverConnected(head + aside), "\(aside)")
        }
    }

    @Test func synchronousStandbyNamesReadBackOnlyAsWritten() {
        #expect(PostgresControl.parseSynchronousStandbys("") == [])
        #expect(PostgresControl.parseSynchronousStandbys("FIRST 2 (\"pg2\", \"pg3\")") == ["pg2", "pg3"])
        #expect(PostgresControl.parseSynchronousStandbys("FIRST 1 (pg2)") == ["pg2"])
        for handMade in ["*", "pg2", "ANY 1 (pg2, pg3)", "FIRST 3 (pg2)", "FIRST 1 (\"a b\")", "FIRST 1 (pg2"] {
            #expect(PostgresControl.parseSynchronousStandbys(handMade) == nil, "\(handMade)")
        }
    }

    /// postmaster.pid is the cluster user's to write; the agent (root) signals what it names only when that
    /// process is the cluster user's: a PID of root's (the agent itself, init) is ignored, never signalled.
    @Test(.enabled(if: getuid() == 0 && Child.User(named: "postgres") != nil && Child.which("setpriv") != nil))
    func postmasterPIDMustBeTheClusterUsers() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lb-pgctl-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = try HAConfig.parse("""
        cluster: c
        etcd: {endpoints: [http://127.0.0.1:2379]}
        node: {name: n1, api: 127.0.0.1:8008, postgres: {data_dir: \(dir), listen: 127.0.0.1:5432}}
        """, path: "ha.yaml")
        let control = try PostgresControl(config: config)
        for foreign in ["\(getpid())", "1", "0", "-5", "99999999999", "x"] {
            try foreign.write(toFile: dir + "/postmaster.pid", atomically: true, encoding: .utf8)
            #expect(control.postmasterPID() == nil, "\(foreign)")
        }
        #expect(await control.fence() == "the server was not running")
        let sleeper = try Child.spawn(["sleep", "30"], user: Child.User(named: "postgres"))
        defer { sleeper.killGroup() }
        // setpriv execs sleep in place: the PID is the postgres user's once it has.
        for _ in 0..<200 where PostgresControl.owner(of: sleeper.pid) != Child.User(named: "postgres")?.uid { try await Task.sleep(for: .milliseconds(10)) }
        try "\(sleeper.pid)\n".write(toFile: dir + "/postmaster.pid", atomically: true, encoding: .utf8)
        #expect(control.postmasterPID() == sleeper.pid)
    }

    @Test func upstreamAndPositions() {
        #expect(PostgresControl.upstream(of: "host=10.0.0.2 port=5433 user=r application_name=pg1 passfile=/x") == "10.0.0.2:5433")
        #expect(PostgresControl.upstream(of: "host=pg1 user=r") == "pg1:5432")
        #expect(PostgresControl.upstream(of: "user=r") == nil)
    }
}
