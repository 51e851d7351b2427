import Foundation
import Glibc
import LifeboatCore
import LifeboatPlan
import LifeboatReplication
import LifeboatRepository
import LifeboatSites
import LifeboatSnapshot
import LifeboatStorage

/// `from-kit`: recovery from nothing but the recovery kit. The kit names a site's repository and where its
/// password and credentials lived; from there the agent's own backup (source `lifeboat-agent`) gives back the
/// plan file, and the rebuilt plan restores the source. Nothing of this host's configuration is used.
enum FromKit {
    struct Lines: Equatable {
        var repository: String
        var passwordFile: String
        var credentialsFile: String?
        /// Where the agent staged its backup (the plan file is `lifeboat.yaml` in it), and the plan's path.
        var staging: String
        var planPath: String
    }

    /// Reads the kit's rebuild section (`export LIFEBOAT_REPOSITORY=… LIFEBOAT_PASSWORD_FILE=…`, the credentials
    /// line, the `install … lifeboat.yaml` line) as a person would type it.
    static func parse(_ kit: String) throws -> Lines {
        var repo: String?, pw: String?, creds: String?, staging: String?, planPath: String?
        for raw in kit.split(whereSeparator: \.isNewline) {
            let line = String(raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
                .trimmingCharacters(in: .whitespaces)
            let words = shellWords(line)
            if words.first == "export" {
                for w in words.dropFirst() {
                    if w.hasPrefix("LIFEBOAT_REPOSITORY=") { repo = String(w.dropFirst("LIFEBOAT_REPOSITORY=".count)) }
                    if w.hasPrefix("LIFEBOAT_PASSWORD_FILE=") { pw = String(w.dropFirst("LIFEBOAT_PASSWORD_FILE=".count)) }
                }
            } else if words.starts(with: ["set", "-a;", "."]), words.count >= 4 {
                creds = words[3].hasSuffix(";") ? String(words[3].dropLast()) : words[3]
            } else if words.first == "install", words.count >= 6, words[4].hasSuffix("/lifeboat.yaml"), words[4].hasPrefix("/tmp/lifeboat-self") {
                staging = String(words[4].dropFirst("/tmp/lifeboat-self".count).dropLast("/lifeboat.yaml".count))
                planPath = words[5]
            }
        }
        guard let repo, let pw, let staging, let planPath else {
            throw LifeboatError.invalid("the recovery kit has no rebuild section (export LIFEBOAT_REPOSITORY=… LIFEBOAT_PASSWORD_FILE=…, install … lifeboat.yaml …)")
        }
        return Lines(repository: repo, passwordFile: pw, credentialsFile: creds, staging: staging, planPath: planPath)
    }

    /// Words of a shell line: blanks split, single quotes (with `'\''`) and double quotes group.
    static func shellWords(_ line: String) -> [String] {
        var out: [String] = []
        var cur = "", inWord = false
        var it = line.makeIterator()
        while let c = it.next() {
            switch c {
            case " ", "\t":
                if inWord { out.append(cur); cur = ""; inWord = false }
            case "'":
                inWord = true
                while let d = it.next(), d != "'" { cur.append(d) }
            case "\"":
                inWord = true
                while let d = it.next(), d != "\"" { cur.append(d) }
            case "\\":
                inWord = true
                if let d = it.next() { cur.append(d) }
            default:
                inWord = true
                cur.append(c)
            }
        }
        if inWord { out.append(cur) }
        return out
    }

    static func rebuild(site: Site, sandbox: String, env: DrillEnvironment, into steps: inout [StepRecord]) async -> Result<Plan, LifeboatError> {
        var r = StepRecord(index: 0, name: "read the recovery kit", kind: "drill", summary: "the kit for site \(site.name)", phase: "setup",
                           started: env.clock(), ended: env.clock(), result: .ok)
        func fail(_ e: any Error) -> Result<Plan, LifeboatError> {
            r.ended = env.clock()
            r.result = .failed
            r.detail = "\(e)"
            steps.append(r)
            return .failure(e as? LifeboatError ?? LifeboatError(.io, "\(e)"))
        }
        guard let kitSource = env.kit else { return fail(LifeboatError.invalid("no recovery kit can be made here")) }
        let lines: Lines
        do { lines = try parse(try await kitSource(site)) } catch { return fail(error) }
        r.detail = "repository \(RedactedLocation.text(lines.repository)), password file \(lines.passwordFile)"
        r.ended = env.clock()
        steps.append(r)

        r = StepRecord(index: 0, name: "restore the agent's own backup", kind: "drill", summary: "source \(RecoveryKitNames.selfSource) from the kit's site",
                       phase: "setup", started: env.clock(), ended: env.clock(), result: .ok)
        let kitSite = Site(name: site.name, repository: lines.repository, role: .primary, passwordFile: lines.passwordFile, credentialsFile: lines.credentialsFile)
        let target = sandbox + "/kit"
        var access = env.access
        access.reuse = nil
        let actions = SiteActions(plan: Plan(path: lines.planPath, sites: SitesConfig(sites: [kitSite], stateFile: "/dev/null", path: "(kit)"), sources: []),
                                  access: access, confine: sandbox, onlySite: site.name, before: nil, owner: nil, backendAction: nil)
        do {
            try await actions.restore(["source": RecoveryKitNames.selfSource, "target": target], into: &r)
        } catch {
            return fail(LifeboatError(.notFound, "the agent's own backup cannot be restored from the kit's site: \(error) (the agent backs it up on agent.self_backup)"))
        }
        r.ended = env.clock()
        steps.append(r)

        r = StepRecord(index: 0, name: "rebuild the plan", kind: "drill", summary: "lifeboat.yaml from the agent's backup", phase: "setup",
                       started: env.clock(), ended: env.clock(), result: .ok)
        let file = target + lines.staging + "/lifeboat.yaml"
        do {
            guard let data = FileManager.default.contents(atPath: file) else { throw LifeboatError(.notFound, "the agent's backup holds no \(lines.staging)/lifeboat.yaml") }
            let plan = try Plan.parse(String(decoding: data, as: UTF8.self), path: lines.planPath)
            guard plan.sites.sites.contains(where: { $0.name == site.name && $0.repository == lines.repository }) else {
                throw LifeboatError.invalid("the rebuilt plan has no site \(site.name) at the kit's repository")
            }
            r.detail = "\(Units.count(plan.sources.count, "source")), \(Units.count(plan.sites.sites.count, "site"))"
            r.ended = env.clock()
            steps.append(r)
            return .success(plan)
        } catch {
            return fail(error)
        }
    }
}

/// Names the kit uses (the agent module defines the kit itself; a drill only reads it).
public enum RecoveryKitNames {
    public static let selfSource = "lifeboat-agent"
}

/// A location with any `user:password@` taken out, for reports.
enum RedactedLocation {
    static func text(_ s: String) -> String {
        guard let at = s.firstIndex(of: "@"), let scheme = s.range(of: "://"), scheme.upperBound < at else { return s }
        return String(s[..<scheme.upperBound]) + "***" + String(s[at...])
    }
}

/// `corruption`: a sandbox copy of a site's repository has bytes flipped in some of its packs; a full check
/// (`check --read-data`) of the copy must name every damaged pack, and the snapshots that need it. The site
/// itself is only read.
enum Corruption {
    static func play(site: Site, sandbox: String, env: DrillEnvironment, report: inout DrillReport, packsToDamage: Int = 3) async {
        let clock = env.clock
        var r = StepRecord(index: 0, name: "copy the site's repository", kind: "drill", summary: "site \(site.name) into \(sandbox)/repository",
                           phase: "fetch", started: clock(), ended: clock(), result: .ok)
        let copy = LocalBackend(path: sandbox + "/repository")
        var packs: [ObjectInfo] = []
        do {
            let src = try await env.access.openNew(site).backend
            try await copy.create()
            var bytes = 0, objects = 0
            for type in ObjectType.allCases where type != .locks {
                let names = type == .config ? [ObjectInfo(name: "config", size: 0)] : try await src.list(type)
                for o in names {
                    let h = type == .config ? Handle.config : Handle(type, o.name)
                    let data = try await src.read(h, range: nil)
                    try await copy.write(h, data: data)
                    bytes += data.count
                    objects += 1
                }
                if type == .data { packs = names }
            }
            r.detail = "\(Units.count(objects, "object")), \(Units.bytes(UInt64(bytes)))"
        } catch {
            r.result = .failed
            r.detail = "\(error)"
        }
        r.ended = clock()
        report.steps.append(r)
        report.phases["fetch"] = r.seconds
        guard r.result == .ok else { report.failures.append("the site's repository cannot be copied: \(r.detail ?? "")"); return }
        guard !packs.isEmpty else { report.failures.append("site \(site.name) holds no pack to damage"); return }

        r = StepRecord(index: 0, name: "flip bytes in packs", kind: "drill", summary: "", phase: "setup", started: clock(), ended: clock(), result: .ok)
        var damaged: [String] = []
        do {
            for p in packs.shuffled().prefix(packsToDamage) where p.size > 0 {
                var data = try await copy.read(Handle(.data, p.name), range: nil)
                // The listing's size is the site's word; the bytes read are what counts (an empty pack has nothing to flip).
                guard !data.isEmpty else { continue }
                // The middle of the pack: inside a blob (the header is at its end).
                let at = data.startIndex + data.count / 3
                data[at] ^= 0xFF
                try await copy.delete(Handle(.data, p.name))
                try await copy.write(Handle(.data, p.name), data: data)
                damaged.append(p.name)
            }
            r.summary = "one byte in each of \(Units.count(damaged.count, "pack"))"
            r.detail = damaged.map { String($0.prefix(16)) }.joined(separator: ", ")
        } catch {
            r.result = .failed
            r.detail = "\(error)"
        }
        r.ended = clock()
        report.steps.append(r)
        guard r.result == .ok else { report.failures.append("the copy cannot be damaged: \(r.detail ?? "")"); return }

        r = StepRecord(index: 0, name: "check --read-data", kind: "drill", summary: "every pack of the damaged copy read and verified", phase: "verify",
                       started: clock(), ended: clock(), result: .ok)
        do {
            let password = try site.passwordFile.map { try readPasswordFile($0, from: "password_file of site \(site.name)") } ?? env.access.password(site)
            let repo = try await Repository.open(backend: copy, password: password)
            var opts = CheckOptions()
            opts.readData = .all
            let check = try await Checker(repository: repo, options: opts).run()
            let text = check.issues.map(\.description).joined(separator: "\n")
            let missed = damaged.filter { !text.contains($0) }
            let snapshots = check.damagedSnapshots.keys.map(\.short).sorted()
            r.detail = "\(Units.count(check.errors, "error")); damaged packs named: \(damaged.count - missed.count) of \(damaged.count); snapshots affected: \(snapshots.isEmpty ? "none" : snapshots.joined(separator: ", "))"
            if !missed.isEmpty {
                r.result = .failed
                report.failures.append("check --read-data did not name the damaged pack\(missed.count == 1 ? "" : "s") \(missed.map { String($0.prefix(16)) }.joined(separator: ", "))")
            }
            report.notes.append("snapshots that need a damaged pack: \(snapshots.isEmpty ? "none (the damaged blobs are not used)" : snapshots.joined(separator: ", "))")
        } catch {
            r.result = .failed
            report.failures.append("the check of the damaged copy could not run: \(error)")
            r.detail = "\(error)"
        }
        r.ended = clock()
        report.steps.append(r)
        report.phases["verify"] = r.seconds
    }
}
