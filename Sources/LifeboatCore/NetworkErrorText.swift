import Glibc

/// Failed connections in plain words, named by the peer: "connection refused by 127.0.0.1:8000", instead of
/// the nested texts network libraries give ("connection reset (error set): Connection refused (errno: 111)").
/// Used by the remote backends, `sites status`, `replicate` and the proxy's log and `/status` alike.
public enum NetworkErrorText {
    /// What a socket error number means for a connection to `peer` (`host:port`), with the next step where
    /// there is one.
    public static func describe(errno code: Int32, peer: String) -> String {
        switch code {
        case ECONNREFUSED: return "connection refused by \(peer) (is the server running and listening on that port?)"
        case ETIMEDOUT: return "connection to \(peer) timed out (the host is down, or a firewall drops the packets)"
        case EHOSTUNREACH, EHOSTDOWN: return "no route to \(peer) (the host is down or unreachable)"
        case ENETUNREACH, ENETDOWN: return "network unreachable for \(peer) (check this host's network and routes)"
        case ECONNRESET: return "connection reset by \(peer)"
        case EPIPE: return "connection closed by \(peer) while sending"
        case ECONNABORTED: return "connection to \(peer) aborted"
        case EADDRNOTAVAIL: return "cannot connect to \(peer): address not available (no free local port, or no local address to reach it from)"
        case EMFILE, ENFILE: return "cannot connect to \(peer): too many open files in this process (raise LimitNOFILE / ulimit -n)"
        case EACCES, EPERM: return "connection to \(peer) not permitted (a local firewall rule?)"
        default: return "connection to \(peer) failed: \(String(cString: strerror(code)))"
        }
    }

    /// `host:port`, with IPv6 addresses in brackets.
    public static func peer(host: String, port: Int) -> String {
        host.contains(":") && !host.hasPrefix("[") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}
