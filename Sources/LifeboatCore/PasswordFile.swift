import Foundation
import Glibc

/// The password in the first line of `path`; `source` names where the path came from (`--password-file`,
/// `LIFEBOAT_PASSWORD_FILE`, a site's `password_file`), so that an error says what to fix. Only a regular file
/// or a pipe (`<(pass show …)`) is read, and at most 64 KiB of it: a wrong path to a device or a disk image is
/// refused, not read to its end.
public func readPasswordFile(_ path: String, from source: String = "--password-file") throws -> String {
    guard !path.isEmpty else {
        throw LifeboatError.invalid("\(source) is empty: give the path of a file that holds the password")
    }
    func fail(_ why: String) -> LifeboatError { LifeboatError.invalid("cannot read the password file \(path) (from \(source)): \(why)") }
    let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
    guard fd >= 0 else {
        let e = errno
        throw fail(e == ENOENT ? "it does not exist" : e == EACCES ? "this user (uid \(getuid())) may not read it" : String(cString: strerror(e)))
    }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0 else { throw fail(String(cString: strerror(errno))) }
    switch st.st_mode & S_IFMT {
    case S_IFREG, S_IFIFO: break
    case S_IFDIR: throw fail("it is a directory")
    default: throw fail("it is not a regular file (a device?)")
    }
    // Blocking reads from here (a pipe's writer may be slow); O_NONBLOCK only kept open() from hanging on a FIFO.
    _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
    let limit = 65_536
    var bytes: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while bytes.count <= limit {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 { if errno == EINTR { continue }; throw fail(String(cString: strerror(errno))) }
        if n == 0 { break }
        bytes += buf[0..<n]
    }
    guard bytes.count <= limit else {
        throw LifeboatError.invalid("the password file \(path) (from \(source)) is longer than 64 KiB: a password file holds one line; check the path")
    }
    var s = String(decoding: bytes, as: UTF8.self)
    if let nl = s.firstIndex(where: { $0 == "\n" || $0 == "\r\n" }) { s = String(s[..<nl]) }
    guard !s.isEmpty else { throw LifeboatError.invalid("the password file \(path) (from \(source)) is empty: put the password on its first line") }
    return s
}

/// Whether two secrets (tokens) are equal, in a time that depends on their length only: a client cannot learn a
/// token byte by byte from how fast a wrong one is refused.
public func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var d: UInt8 = 0
    for i in 0..<a.count { d |= a[i] ^ b[i] }
    return d == 0
}
