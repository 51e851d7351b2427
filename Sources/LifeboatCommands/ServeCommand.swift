import ArgumentParser
import Foundation
import LifeboatCore
import LifeboatServer

/// `lifeboat serve`: a repository server speaking the restic REST protocol (v1 and v2), with the
/// option names of restic's rest-server.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the repositories under a folder over HTTP(S) with the restic REST protocol.",
        discussion: """
        Lifeboat clients use it with -r rest:https://USER:PASS@HOST:PORT/REPO, restic clients with \
        -r rest:https://USER:PASS@HOST:PORT/REPO too. Users come from an htpasswd file with bcrypt \
        entries (htpasswd -B); without one the server refuses to start unless --no-auth is given.

        \(Examples.serve)
        """)

    @Option(help: "Folder holding the repositories.") var path: String
    @Option(help: "Address to listen on: HOST:PORT (port 0 picks a free port).") var listen = "127.0.0.1:8000"
    @Flag(help: "Serve HTTPS (needs --tls-cert and --tls-key).") var tls = false
    @Option(name: .customLong("tls-cert"), help: "PEM certificate chain for --tls.") var tlsCert: String?
    @Option(name: .customLong("tls-key"), help: "PEM private key for --tls.") var tlsKey: String?
    @Option(name: .customLong("htpasswd-file"), help: "htpasswd file with bcrypt entries (default: PATH/.htpasswd).") var htpasswdFile: String?
    @Flag(name: .customLong("no-auth"), help: "Serve without authentication (trusted networks only).") var noAuth = false
    @Flag(name: .customLong("private-repos"), help: "Each user may use only the repositories under /USER/.") var privateRepos = false
    @Flag(name: .customLong("append-only"), help: "Refuse deletes and overwrites of everything but lock files.") var appendOnly = false
    @Option(name: .customLong("max-size"), help: "Refuse writes once the folder holds this many bytes.") var maxSize: Int?
    @Flag(help: "Serve Prometheus metrics at /metrics.") var prometheus = false
    @Flag(name: .customLong("prometheus-no-auth"), help: "Serve /metrics without authentication.") var prometheusNoAuth = false
    @Flag(name: .customLong("no-verify-upload"), help: "Do not check that uploads match their names (SHA-256).") var noVerifyUpload = false
    @Option(name: .customLong("idle-timeout"), help: "Close a connection idle, or whose request makes no progress, for this many seconds.")
    var idleTimeout: Double = 60
    @Option(name: .customLong("header-timeout"), help: "Answer 408 and close when a request's line and headers take longer than this many seconds.")
    var headerTimeout: Double = 10
    @Option(name: .customLong("max-connections"), help: "Connections served at once; more are answered 503 and closed.")
    var maxConnections: Int = 1000
    @Option(name: .customLong("pid-file"), help: "Write the process ID here while serving (for `kill -TERM $(cat FILE)`).") var pidFile: String?
    @Flag(help: "Log every request.") var verbose = false
    @Flag(help: "Print the listening URL as a JSON line.") var json = false

    func run() async throws {
        do {
            var options = ServeOptions(path: path)
            var isDir: ObjCBool = false
            if !FileManager.default.fileExists(atPath: options.path, isDirectory: &isDir) {
                try FileManager.default.createDirectory(atPath: options.path, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o700])
            } else if !isDir.boolValue {
                throw ServeError("--path \(options.path) is not a folder")
            }
            if !noAuth {
                let file = htpasswdFile ?? "\(options.path)/.htpasswd"
                guard FileManager.default.fileExists(atPath: file) else {
                    throw ServeError("no htpasswd file at \(file): create one with `htpasswd -B -c \(file) USER`, or pass --no-auth")
                }
                options.htpasswd = try Htpasswd(path: file)
            } else if privateRepos {
                throw ServeError("--private-repos needs authentication: drop --no-auth")
            }
            options.privateRepos = privateRepos
            options.appendOnly = appendOnly
            if let maxSize, maxSize < 0 { throw ServeError("--max-size \(maxSize) is negative: give a number of bytes") }
            options.maxSize = maxSize
            options.prometheus = prometheus
            options.prometheusNoAuth = prometheusNoAuth
            options.verifyUploads = !noVerifyUpload
            var listenOptions = ListenOptions()
            (listenOptions.host, listenOptions.port) = try ListenOptions.parse(listen)
            listenOptions.limits.idleTimeout = idleTimeout
            listenOptions.limits.headerTimeout = headerTimeout
            listenOptions.limits.maxConnections = maxConnections
            try listenOptions.limits.validate()
            if !tls && (tlsCert != nil || tlsKey != nil) {
                throw ServeError("--tls-cert and --tls-key are used only with --tls: add --tls to serve HTTPS (or drop them to serve plain HTTP)")
            }
            if tls {
                guard let tlsCert, let tlsKey else { throw ServeError("--tls needs --tls-cert and --tls-key") }
                listenOptions.tlsCert = tlsCert
                listenOptions.tlsKey = tlsKey
            }
            let json = self.json
            let servedPath = options.path
            let mode = [appendOnly ? "append-only" : nil, privateRepos ? "private repositories" : nil,
                        noAuth ? "no authentication" : nil].compactMap { $0 }
            // SIGTERM/SIGINT: stop accepting, let the requests in progress finish, exit 0; a second signal exits at once.
            gracefulStop = "finishing the requests in progress"
            if let pidFile {
                do { try PIDFile.create(pidFile) } catch { throw fatal("\(error)") }
            }
            defer { if let pidFile { PIDFile.remove(pidFile) } }
            try await runServer(options, listen: listenOptions, logLevel: verbose ? .info : .warning) { url in
                let line = json ? Output.encode(["message_type": "serving", "url": url, "path": servedPath])
                    : "serving \(servedPath) on \(url)" + (mode.isEmpty ? "" : " (\(mode.joined(separator: ", ")))")
                FileHandle.standardOutput.write(Data((line + "\n").utf8))
            }
        } catch let e as ServeError {
            throw fatal(e.description)
        } catch let e as ExitCode {
            throw e
        } catch {
            throw fatal("cannot serve: \(error)")
        }
    }
}
