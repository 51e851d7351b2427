import Dispatch
import Foundation

/// Wakes a waiting helper when something in a folder changes (Linux inotify: a file created, renamed in, or
/// touched; not a close after writing, which a waiting wal-push's look at helper.lock makes every 10 ms), so that
/// an idle helper sleeps instead of reading its folders 50 times a second. Nil when the kernel refuses a watch (no
/// inotify, or the user's watch limit reached): the caller polls instead.
final class FolderWatch: Sendable {
    private let fd: Int32

    init?(_ folder: String) {
        let fd = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
        guard fd >= 0 else { return nil }
        let mask = UInt32(IN_CREATE | IN_MOVED_TO | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF)
        guard inotify_add_watch(fd, folder, mask) >= 0 else { close(fd); return nil }
        self.fd = fd
    }

    deinit { close(fd) }

    /// Returns when something changed in the folder, or after `timeout` seconds (at most 10): true when one of the
    /// changes was to a file named `called` or ending in `.want` (a wal-push call's request), false for others (the
    /// lock file a waiting wal-push opens, the helper's own acknowledgements) and for a time-out. The wait blocks a
    /// Dispatch worker thread (libdispatch starts another while one blocks), not the calling task's.
    func wait(timeout: Double) async -> Bool {
        let ms = Int32(max(0, min(timeout, 10)) * 1000)
        let fd = self.fd
        return await withCheckedContinuation { (cont: CheckedContinuation<Bool, Never>) in
            DispatchQueue.global().async {
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                _ = poll(&p, 1, ms)
                var news = false
                var buf = [UInt8](repeating: 0, count: 4096)
                while true {
                    let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                    guard n > 0 else { break }
                    if Self.announcesCall(buf[0..<n]) { news = true }
                }
                cont.resume(returning: news)
            }
        }
    }

    /// Whether a read of inotify events names `called` or a `.want` file. Each event is a 16-byte header (wd, mask,
    /// cookie, len, host order) and a NUL-padded name of `len` bytes; a record that overruns the read ends it.
    static func announcesCall(_ events: ArraySlice<UInt8>) -> Bool {
        var i = events.startIndex
        while events.endIndex - i >= 16 {
            let len = events[(i + 12)..<(i + 16)].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
            guard len <= UInt32(events.endIndex - i - 16) else { return false }
            let name = events[(i + 16)..<(i + 16 + Int(len))].prefix { $0 != 0 }
            if name.elementsEqual("called".utf8) || name.count > 5 && name.suffix(5).elementsEqual(".want".utf8) { return true }
            i += 16 + Int(len)
        }
        return false
    }
}
