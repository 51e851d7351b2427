import Foundation
import LifeboatHTTP
import LifeboatStorage

/// `rclone:REMOTE:PATH`: starts `rclone serve restic --stdio REMOTE:PATH` and speaks the REST protocol
/// to it over HTTP/2 on its standard input and output, which reaches every rclone remote (Azure Blob,
/// Google Cloud Storage, B2, SFTP, WebDAV, …). `LIFEBOAT_RCLONE_PROGRAM` names another rclone binary;
/// `LIFEBOAT_RCLONE_ARGS` adds arguments (space-separated) before `serve`.
public enum RcloneBackend {
    public static func make(_ remote: String, options: HTTPOptions = .fromEnvironment(),
                            environment env: [String: String] = ProcessInfo.processInfo.environment) async throws -> RESTBackend {
        guard remote.contains(":") || remote.hasPrefix("/") else {
            throw StorageError(.permanent, "invalid rclone location \"\(remote)\": use rclone:REMOTE:PATH (a remote from `rclone config`) or rclone:/local/path")
        }
        let program = env["LIFEBOAT_RCLONE_PROGRAM"] ?? findInPath("rclone", env["PATH"] ?? "/usr/bin:/bin")
        guard let program else {
            throw StorageError(.permanent, "rclone is not installed (Debian: apt-get install rclone), or set LIFEBOAT_RCLONE_PROGRAM")
        }
        guard FileManager.default.isExecutableFile(atPath: program) else {
            throw StorageError(.permanent, "the rclone program \(program) does not exist or is not executable (LIFEBOAT_RCLONE_PROGRAM)")
        }
        let extra = (env["LIFEBOAT_RCLONE_ARGS"] ?? "").split(separator: " ").map(String.init)
        let transport = try await PipeHTTP2Transport(executable: program, arguments: extra + ["serve", "restic", "--stdio", remote],
                                                     name: "rclone", options: options, environment: env)
        return RESTBackend(transport: transport, basePath: "", location: "rclone:\(remote)")
    }

    static func findInPath(_ name: String, _ path: String) -> String? {
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}
