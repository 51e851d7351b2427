import Foundation
import Glibc

/// The password in the first line of `path`; `source` names where the path came from (`--password-file`,
/// `LIFEBOAT_PASSWORD_FILE`, a site's `password_file`), so that an error says what to fix.
public func readPasswordFile(_ path: String, from source: String = "--password-file") throws -> String {
    guard !path.isEmpty else {
        throw LifeboatError.invalid("\(source) is empty: give the path of a file that holds the password")
    }
    // A password file is one line: refuse to read a large file (a wrong path to a disk image, a device) whole.
    if let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? UInt64, size > 65_536 {
        throw LifeboatError.invalid("the password file \(path) (from \(source)) is \(size) bytes: a password file holds one line; check the path")
    }
    guard let d = FileManager.default.contents(atPath: path) else {
        var isDir: ObjCBool = false
        let why = !FileManager.default.fileExists(atPath: path, isDirectory: &isDir) ? "it does not exist"
            : isDir.boolValue ? "it is a directory" : "this user (uid \(getuid())) may not read it"
        throw LifeboatError.invalid("cannot read the password file \(path) (from \(source)): \(why)")
    }
    var s = String(decoding: d, as: UTF8.self)
    if let nl = s.firstIndex(where: { $0 == "\n" || $0 == "\r\n" }) { s = String(s[..<nl]) }
    guard !s.isEmpty else { throw LifeboatError.invalid("the password file \(path) (from \(source)) is empty: put the password on its first line") }
    return s
}

