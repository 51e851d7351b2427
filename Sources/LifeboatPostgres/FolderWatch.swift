import Dispatch
import Foundation

/// Wakes a waiting helper when something in a folder changes (Linux inotify: a file created, written, renamed in,
/// or touched), so that an idle helper sleeps instead of reading its folders 50 times a second. Nil when the kernel
/// refuses a watch (no inotify, or the user's watch limit reached): the caller polls instead.
final class FolderWatch: Sendable {
    private let fd: Int32

    init?(_ folder: String) {
        let fd = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
        guard fd >= 0 else { return nil }
        let mask = UInt32(IN_CREATE | IN_CLOSE_WRITE | IN_MOVED_TO | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF)
        guard inotify_add_watch(fd, folder, mask) >= 0 else { close(fd); return nil }
        self.fd = fd
    }

    deinit { close(fd) }

    /// Returns when the folder changed (events are drained, not reported), or after `timeout` seconds (at most 10).
    /// The wait blocks a Dispatch thread, never one of Swift concurrency's.
    func wait(timeout: Double) async {
        let ms = Int32(max(0, min(timeout, 10)) * 1000)
        let fd = self.fd
        await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                _ = poll(&p, 1, ms)
                var buf = [UInt8](repeating: 0, count: 4096)
                while buf.withUnsafeMutableBytes({ read(fd, $0.baseAddress, $0.count) }) > 0 {}
                cont.resume()
            }
        }
    }
}
