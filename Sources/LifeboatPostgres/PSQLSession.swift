import Foundation
import LifeboatCore
import LifeboatProcess

/// One `psql` session held open over pipes: the non-exclusive backup API needs `pg_backup_start` and
/// `pg_backup_stop` in the same session. Connection settings come as libpq's environment (PGHOST, PGPORT, PGUSER,
/// PGPASSFILE…), never in argv; rows come back unaligned, fields separated by a unit separator (0x1F).
public final class PSQLSession: @unchecked Sendable {
    let child: Child
    let input: Int32
    let output: Int32
    let errors: Capture
    var buffer: [UInt8] = []
    static let marker = "__lifeboat_end_of_reply__"

    public init(environment: [String: String], psql: String = "psql", user: Child.User? = nil) throws {
        var inPipe: [Int32] = [0, 0], outPipe: [Int32] = [0, 0]
        guard makePipe(&inPipe), makePipe(&outPipe) else { throw LifeboatError(.io, "cannot create pipes for psql") }
        errors = try Capture()
        do {
            child = try Child.spawn([psql, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-F", "\u{1F}", "--no-password"],
                                    environment: environment.merging(["PGAPPNAME": "lifeboat"]) { a, _ in a },
                                    stdout: outPipe[1], stderr: errors.writeFD, user: user, stdin: inPipe[0])
        } catch {
            [inPipe[0], inPipe[1], outPipe[0], outPipe[1]].forEach { close($0) }
            throw LifeboatError(.io, "cannot start psql: \(error)")
        }
        close(inPipe[0]); close(outPipe[1]); errors.closeWriter()
        input = inPipe[1]; output = outPipe[0]
        signal(SIGPIPE, SIG_IGN)
    }

    /// Runs one statement and returns its rows, each split into fields. A failure (psql exits on the first error:
    /// ON_ERROR_STOP) throws with psql's message.
    public func query(_ sql: String, timeout: Double = 3600) async throws -> [[String]] {
        let text = sql.trimmingCharacters(in: .whitespacesAndNewlines)
        let script = (text.hasSuffix(";") ? text : text + ";") + "\n\\echo \(PSQLSession.marker)\n"
        let bytes = Array(script.utf8)
        let written = bytes.withUnsafeBytes { Glibc.write(input, $0.baseAddress, $0.count) }
        guard written == bytes.count else { throw await failure("cannot send a query to psql") }
        var rows: [[String]] = []
        let deadline = ContinuousClock.now + .seconds(timeout)
        while true {
            if let nl = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[..<nl], as: UTF8.self)
                buffer.removeSubrange(...nl)
                if line == PSQLSession.marker { return rows }
                rows.append(line.split(separator: "\u{1F}", omittingEmptySubsequences: false).map(String.init))
                guard rows.count <= 100_000 else { throw LifeboatError(.io, "psql returned more than 100,000 rows") }
                continue
            }
            guard ContinuousClock.now < deadline else { throw LifeboatError(.io, "psql did not answer within \(Int(timeout)) s") }
            let more = try await blockingRead(output, max: 64 << 10, what: "psql's output")
            if more.isEmpty { throw await failure("psql ended") }
            buffer += more
            guard buffer.count <= 64 << 20 else { throw LifeboatError(.io, "psql's reply exceeds 64 MiB") }
        }
    }

    func failure(_ what: String) async -> LifeboatError {
        close(input)
        let exit = await child.wait(timeout: 10)
        let text = await errors.text(lines: 4)
        return LifeboatError(.io, "\(what) (\(exit.description))\(text.isEmpty ? "" : ": \(text)")")
    }

    /// Ends the session (psql reads end of input and exits); the server ends a backup still running.
    public func end() async {
        Glibc.close(input)
        _ = await child.wait(timeout: 30)
        Glibc.close(output)
    }
}
