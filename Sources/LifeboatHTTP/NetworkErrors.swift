import AsyncHTTPClient
import LifeboatCore
import NIOCore
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// The socket error behind a SwiftNIO or AsyncHTTPClient error, to say it in plain words with
/// `NetworkErrorText` (shared by the HTTP transport and the proxy).
public enum NetworkErrors {
    /// The errno of a failed connect or transfer, if the error carries one.
    public static func errno(of error: any Error) -> Int32? {
        if let e = error as? IOError { return e.errnoCode }
        if let e = error as? NIOConnectionError {
            for failure in e.connectionErrors { if let io = failure.error as? IOError { return io.errnoCode } }
        }
        return nil
    }

    /// "connection refused by 127.0.0.1:8000" for an error with an errno, "connection to … timed out" for a
    /// connect timeout; nil for other errors.
    public static func describe(_ error: any Error, peer: String) -> String? {
        if let code = errno(of: error) { return NetworkErrorText.describe(errno: code, peer: peer) }
        if let e = error as? HTTPClientError, e == .connectTimeout { return NetworkErrorText.describe(errno: ETIMEDOUT, peer: peer) }
        if let e = error as? ChannelError, case .connectTimeout = e { return NetworkErrorText.describe(errno: ETIMEDOUT, peer: peer) }
        return nil
    }

    /// `host:port` of a resolved address.
    public static func peer(_ address: SocketAddress) -> String {
        NetworkErrorText.peer(host: address.ipAddress ?? "\(address)", port: address.port ?? 0)
    }
}
