import Crypto
import Foundation
import LifeboatHTTP

/// AWS credentials.
public struct AWSCredentials: Sendable {
    public var accessKeyID: String
    public var secretAccessKey: String
    public var sessionToken: String?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }
}

/// AWS Signature Version 4 for S3 requests (header-based signing, signed payload hash).
///
/// Reference: "Authenticating Requests: Using the Authorization Header (AWS Signature Version 4)".
public struct SigV4Signer: Sendable {
    public var credentials: AWSCredentials
    public var region: String
    public var service = "s3"

    public init(credentials: AWSCredentials, region: String) {
        self.credentials = credentials
        self.region = region
    }

    static func hex<D: Sequence>(_ d: D) -> String where D.Element == UInt8 {
        var s = ""
        s.reserveCapacity(64)
        for b in d { s += String(format: "%02x", b) }
        return s
    }

    public static func sha256Hex(_ data: Data) -> String { hex(SHA256.hash(data: data)) }

    static func hmac(_ key: SymmetricKey, _ s: String) -> SymmetricKey {
        SymmetricKey(data: Data(HMAC<SHA256>.authenticationCode(for: Data(s.utf8), using: key)))
    }

    /// `20130524T000000Z` and `20130524` for a date.
    public static func timestamps(_ date: Date) -> (amzDate: String, day: String) {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC")!
        let c = cal.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        let day = String(format: "%04d%02d%02d", c.year!, c.month!, c.day!)
        return (day + String(format: "T%02d%02d%02dZ", c.hour!, c.minute!, c.second!), day)
    }

    /// The canonical query string: parameters sorted by name, names and values URI-encoded.
    static func canonicalQuery(_ query: String) -> String {
        guard !query.isEmpty else { return "" }
        let pairs = query.split(separator: "&").map { p -> (String, String) in
            let kv = p.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let k = String(kv[0]).removingPercentEncoding ?? String(kv[0])
            let v = kv.count > 1 ? (String(kv[1]).removingPercentEncoding ?? String(kv[1])) : ""
            return (percentEncode(k), percentEncode(v))
        }
        return pairs.sorted { $0.0 == $1.0 ? $0.1 < $1.1 : $0.0 < $1.0 }.map { "\($0.0)=\($0.1)" }.joined(separator: "&")
    }

    /// Signs a request: adds `x-amz-date`, `x-amz-content-sha256`, the session token if any, and
    /// `Authorization`. `target` is the already-encoded path and query; `host` is the Host header.
    public func sign(method: String, host: String, target: String, headers: [(String, String)], body: Data?, date: Date = Date())
        -> [(String, String)] {
        let (amzDate, day) = SigV4Signer.timestamps(date)
        let payloadHash = SigV4Signer.sha256Hex(body ?? Data())
        var all = headers
        all.append(("host", host))
        all.append(("x-amz-date", amzDate))
        all.append(("x-amz-content-sha256", payloadHash))
        if let t = credentials.sessionToken { all.append(("x-amz-security-token", t)) }

        var canonical: [String: String] = [:]
        for (k, v) in all {
            let name = k.lowercased()
            let value = v.split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(separator: " ")
            canonical[name] = canonical[name].map { $0 + "," + value } ?? value
        }
        let names = canonical.keys.sorted()
        let signedHeaders = names.joined(separator: ";")
        let path: String
        let query: String
        if let q = target.firstIndex(of: "?") {
            path = String(target[..<q])
            query = String(target[target.index(after: q)...])
        } else {
            path = target
            query = ""
        }
        let canonicalRequest = [
            method, path.isEmpty ? "/" : path, SigV4Signer.canonicalQuery(query),
            names.map { "\($0):\(canonical[$0]!)\n" }.joined(), signedHeaders, payloadHash,
        ].joined(separator: "\n")
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = ["AWS4-HMAC-SHA256", amzDate, scope,
                            SigV4Signer.sha256Hex(Data(canonicalRequest.utf8))].joined(separator: "\n")
        var key = SymmetricKey(data: Data("AWS4\(credentials.secretAccessKey)".utf8))
        for part in [day, region, service, "aws4_request"] { key = SigV4Signer.hmac(key, part) }
        let signature = SigV4Signer.hex(HMAC<SHA256>.authenticationCode(for: Data(stringToSign.utf8), using: key))
        var out = all.filter { $0.0.lowercased() != "host" }
        out.append(("Authorization",
                    "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope), SignedHeaders=\(signedHeaders), Signature=\(signature)"))
        return out
    }
}

/// Where credentials and the region come from, in the order the AWS tools use: the environment
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`),
/// then `~/.aws/credentials` and `~/.aws/config` for the profile `AWS_PROFILE` (default `default`).
public enum AWSConfig {
    public static func credentials(environment env: [String: String] = ProcessInfo.processInfo.environment) throws -> AWSCredentials {
        if let id = env["AWS_ACCESS_KEY_ID"], !id.isEmpty, let secret = env["AWS_SECRET_ACCESS_KEY"], !secret.isEmpty {
            return AWSCredentials(accessKeyID: id, secretAccessKey: secret, sessionToken: env["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 })
        }
        let profile = env["AWS_PROFILE"] ?? "default"
        let file = env["AWS_SHARED_CREDENTIALS_FILE"] ?? "\(env["HOME"] ?? NSHomeDirectory())/.aws/credentials"
        if let text = try? String(contentsOfFile: file, encoding: .utf8) {
            let section = ini(text)[profile] ?? [:]
            if let id = section["aws_access_key_id"], let secret = section["aws_secret_access_key"] {
                return AWSCredentials(accessKeyID: id, secretAccessKey: secret, sessionToken: section["aws_session_token"])
            }
        }
        throw S3Error.noCredentials(profile: profile, file: file)
    }

    public static func region(environment env: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let r = env["AWS_REGION"] ?? env["AWS_DEFAULT_REGION"], !r.isEmpty { return r }
        let profile = env["AWS_PROFILE"] ?? "default"
        let file = env["AWS_CONFIG_FILE"] ?? "\(env["HOME"] ?? NSHomeDirectory())/.aws/config"
        if let text = try? String(contentsOfFile: file, encoding: .utf8) {
            let sections = ini(text)
            if let r = (sections[profile == "default" ? "default" : "profile \(profile)"] ?? sections[profile])?["region"] { return r }
        }
        return "us-east-1"
    }

    /// A minimal INI reader: `[section]` and `key = value` lines; `#` and `;` start comments.
    static func ini(_ text: String) -> [String: [String: String]] {
        var out: [String: [String: String]] = [:]
        var current = ""
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                current = line.dropFirst().dropLast().trimmingCharacters(in: .whitespaces)
                continue
            }
            guard let eq = line.firstIndex(of: "=") else { continue }
            out[current, default: [:]][line[..<eq].trimmingCharacters(in: .whitespaces).lowercased()] =
                line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
        }
        return out
    }
}
