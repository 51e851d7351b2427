import Foundation
import Glibc
import LifeboatBackends
import LifeboatCore
import LifeboatPlan
import LifeboatReplication
import LifeboatRepository
import LifeboatS3
import LifeboatSites
import LifeboatSnapshot
import LifeboatStorage

/// Where a drill's own repository goes on a site: beside the site's repository (the same server, bucket or
/// remote, reached with the same credentials), at `lifeboat-drill/DRILL/RUN`. Never the real repository.
public enum DrillRepository {
    public static func location(_ repository: String, drill: String, run: String) -> String {
        let leaf = "lifeboat-drill/\(drill)/\(run)"
        func sibling(_ path: String) -> String {
            var p = path
            // `repo/`, `repo/.`, `repo/./` all name `repo`: its sibling, never a folder inside it.
            while p.hasSuffix("/") || p.hasSuffix("/.") || p == "." { p = p == "." ? "" : String(p.dropLast(p.hasSuffix("/") ? 1 : 2)) }
            guard let slash = p.lastIndex(of: "/") else { return leaf }
            return String(p[...slash]) + leaf
        }
        if repository.hasPrefix("s3:") {
            var spec = String(repository.dropFirst(3))
            var head = ""
            if let r = spec.range(of: "://") {
                // s3:https://HOST/BUCKET/PREFIX
                let afterHost = spec[r.upperBound...].firstIndex(of: "/") ?? spec.endIndex
                head = String(spec[..<afterHost]) + "/"
                spec = afterHost < spec.endIndex ? String(spec[spec.index(after: afterHost)...]) : ""
            } else if let slash = spec.firstIndex(of: "/"), spec[..<slash].contains(".") || spec[..<slash].contains(":") {
                // s3:HOST/BUCKET/PREFIX
                head = String(spec[...slash])
                spec = String(spec[spec.index(after: slash)...])
            }
            let parts = spec.split(separator: "/", maxSplits: 1)
            let bucket = parts.first.map(String.init) ?? ""
            let prefix = parts.count > 1 ? String(parts[1]) : ""
            return "s3:" + head + bucket + "/" + (prefix.isEmpty ? leaf : sibling(prefix))
        }
        if repository.hasPrefix("rest:") {
            let url = String(repository.dropFirst(5))
            guard let r = url.range(of: "://") else { return "rest:" + sibling(url) }
            let pathStart = url[r.upperBound...].firstIndex(of: "/") ?? url.endIndex
            let path = String(url[pathStart...])
            return "rest:" + url[..<pathStart] + "/" + (path.split(separator: "/").isEmpty ? leaf : sibling(String(path.dropFirst())))
        }
        if repository.hasPrefix("rclone:") {
            let spec = String(repository.dropFirst(7))
            guard let colon = spec.firstIndex(of: ":") else { return "rclone:" + sibling(spec) }
            let path = String(spec[spec.index(after: colon)...])
            return "rclone:" + spec[...colon] + (path.isEmpty ? leaf : sibling(path))
        }
        let path = repository.hasPrefix("local:") ? String(repository.dropFirst(6)) : repository
        return (repository.hasPrefix("local:") ? "local:" : "") + sibling(path)
    }
}

/// `ransomware`: the attack is played against a drill repository beside the site's (see `DrillRepository`),
/// never against the real one. A copy of the source (its newest snapshot at the site, restored into the sandbox)
/// is backed up there, then every file of the copy is overwritten with random bytes and backed up again: the
/// mass-change detector must flag that backup. Then the attacker's next steps, with the client's credentials:
/// forget every snapshot, prune, delete every object (and on S3 every object version). The site passes only if
/// its protection (an append-only server, S3 Object Lock) kept the clean snapshot and it is found (on S3, from
/// the bucket as it was before the attack: `--s3-as-of`) and restored and verified; otherwise the site is
/// reported as unprotected.
enum Ransomware {
    static func play(drill: Drill, source: Source, site: Site, sandbox: String, env: DrillEnvironment, report: inout DrillReport) async {
        let clock = env.clock
        let runID = String(report.id.dropFirst("\(drill.name)-\(site.name)-".count))
        var drillSite = site
        drillSite.name = site.name + "-drill"
        drillSite.repository = DrillRepository.location(site.repository, drill: drill.name, run: runID.isEmpty ? PlaybookRunner.newRunID(clock()) : runID)
        drillSite.role = .primary
        drillSite.adminRepository = nil
        drillSite.adminCredentialsFile = nil
        // Locked as the site locks, for a day only: each run's repository stays until then.
        drillSite.objectLockDays = site.objectLockDays.map { _ in 1 }
        let copy = sandbox + "/copy", recovered = sandbox + "/recovered"
        report.notes.append("the attack is played against the drill repository \(RedactedLocation.text(drillSite.repository)), never against the site's")

        func step(_ name: String, _ summary: String, phase: String, _ body: (inout StepRecord) async throws -> Void) async -> Bool {
            var r = StepRecord(index: report.steps.count, name: name, kind: "drill", summary: summary, phase: phase, started: clock(), ended: clock(), result: .ok)
            do { try await body(&r) } catch {
                r.result = .failed
                r.detail = errorText(error)
            }
            r.ended = clock()
            report.steps.append(r)
            return r.result == .ok
        }

        // 1. The copy: the source's newest snapshot at the site, restored and verified (the site is only read).
        let siteActions = SiteActions(plan: env.plan, access: env.access, confine: sandbox, onlySite: site.name, before: report.declared,
                                      owner: nil, backendAction: nil)
        var original: StepRecord?
        guard await step("copy the source", "the newest snapshot of \(source.name) at \(site.name) into \(copy)", phase: "fetch", { r in
            try await siteActions.restore(["source": source.name, "target": copy], into: &r)
            original = r
        }) else { report.failures.append("the source cannot be copied from site \(site.name): \(report.steps.last?.detail ?? "")"); return }
        if let o = original {
            report.snapshot = o.facts?["snapshot"]
            report.snapshotTime = o.facts?["snapshot_time"].flatMap(Timestamp.parse)
            report.files = o.facts?["files"].flatMap(Int.init) ?? 0
            report.bytes = o.facts?["bytes"].flatMap(UInt64.init) ?? 0
            if let st = report.snapshotTime { report.rpoSeconds = max(0, report.declared.timeIntervalSince(st)) }
        }

        // 2. The drill repository, and the clean backup of the copy.
        let password: String
        let backend: any Backend
        var initialized: Repository? = nil
        do {
            password = try env.access.password(for: site)
            backend = try await env.access.backend(drillSite)
        } catch {
            report.failures.append("the drill repository cannot be reached at site \(site.name): \(errorText(error))")
            return
        }
        let tag = "source=\(source.name)"
        var clean: BackupResult?
        guard await step("back up the copy", "into the drill repository", phase: "setup", { r in
            let rp = try await Repository.initialize(backend: backend, password: password)
            initialized = rp
            var opts = BackupOptions()
            opts.paths = [copy]
            opts.tags = [tag, "lifeboat-drill"]
            opts.hostname = env.host
            opts.scanTotals = false
            let result = try await Archiver(repository: rp, options: opts).run()
            clean = result
            r.detail = "snapshot \(result.snapshotID?.short ?? "-") (clean): \(Units.count(result.snapshot.summary?.totalFilesProcessed ?? 0, "file"))"
        }), let repo = initialized, let cleanID = clean?.snapshotID, let cleanSnapshot = clean?.snapshot else {
            report.failures.append("the drill repository cannot be written at site \(site.name): \(report.steps.last?.detail ?? "")")
            return
        }

        // 3. The encryption: random bytes over every file of the copy, then the next backup.
        var encrypted = 0
        guard await step("encrypt the copy", "random bytes over every file of \(copy)", phase: "attack", { r in
            encrypted = try overwriteWithRandom(copy)
            r.detail = Units.count(encrypted, "file") + " overwritten"
        }) else { report.failures.append("the copy cannot be encrypted: \(report.steps.last?.detail ?? "")"); return }
        var flagged = false
        _ = await step("back up the encrypted copy", "with the mass-change detector against the clean snapshot", phase: "attack") { r in
            var opts = BackupOptions()
            opts.paths = [copy]
            opts.tags = [tag, "lifeboat-drill"]
            opts.hostname = env.host
            opts.scanTotals = false
            opts.parent = cleanID
            let result = try await Archiver(repository: repo, options: opts).run()
            let m = try await MassChangeDetector.compare(repo, parent: cleanSnapshot, current: result.snapshot, thresholds: env.plan.massChange)
            flagged = m.suspicious
            r.detail = "snapshot \(result.snapshotID?.short ?? "-"): \(m.description)"
            r.facts = ["suspicious": "\(m.suspicious)", "changed_share": "\(m.changedShare)", "entropy_share": "\(m.entropyShare)"]
        }
        if !flagged {
            report.failures.append("the mass-change detector did not flag the backup of the encrypted copy (\(report.steps.last?.detail ?? "")): lower mass_change thresholds")
        }

        // 4. The attacker, with the client's credentials. On S3 the point in time to recover from is the server's
        // own: the newest LastModified of the drill repository before the attack; the attack waits 1.1 s (elapsed,
        // whatever the clocks say) so that none of its delete markers shares that second (some servers keep whole
        // seconds).
        var pointInTime: Date?
        var inconclusive: [String] = []
        // The bare S3 backend (object versions), made once for the listing before the attack and the attack itself.
        var versionedBucket: S3Backend?
        if site.repository.hasPrefix("s3:") {
            do {
                guard let s3 = try await DrillBackends.s3(drillSite, access: env.access) else { throw LifeboatError.invalid("not an S3 site") }
                versionedBucket = s3
                pointInTime = try await s3.versions().map(\.lastModified).max()
                try? await Task.sleep(for: .milliseconds(1100))
            } catch {
                inconclusive.append("the drill repository's versions cannot be listed before the attack: \(errorText(error))")
            }
        }
        var tally = (deleted: 0, refused: 0)
        var firstRefusal: String?
        func attempt(_ body: () async throws -> Void) async {
            do { try await body(); tally.deleted += 1 } catch {
                tally.refused += 1
                if firstRefusal == nil { firstRefusal = errorText(error) }
            }
        }
        // A listing that fails leaves the attack unplayed: that proves nothing, so it is a failure, never a pass.
        func listed<T>(_ what: String, _ body: () async throws -> [T]) async -> [T] {
            do { return try await body() } catch {
                inconclusive.append("the attacker could not list \(what): \(errorText(error))")
                return []
            }
        }
        _ = await step("attacker: forget and prune", "every snapshot forgotten, then prune", phase: "attack") { r in
            for s in await listed("the snapshots", { try await repo.listSnapshots() }) {
                await attempt { try await repo.backend.delete(Handle(.snapshots, s.id.hex)) }
            }
            var opts = PruneOptions()
            opts.grace = 0
            let pruned = try? await Pruner(repository: repo, options: opts).run()
            r.detail = "\(tally.deleted) snapshots deleted, \(tally.refused) refused; prune: \(pruned.map { "\($0.packsDeleted) packs deleted" } ?? "refused")"
        }
        _ = await step("attacker: delete every object", "snapshots, indexes, packs, keys, config\(site.repository.hasPrefix("s3:") ? ", every object version (bypassing governance retention)" : "")", phase: "attack") { r in
            for type in [ObjectType.snapshots, .index, .data, .keys, .locks] {
                for o in await listed(type.rawValue, { try await backend.list(type) }) { await attempt { try await backend.delete(Handle(type, o.name)) } }
            }
            await attempt { try await backend.delete(.config) }
            // (An S3 site whose bucket could not be reached is already inconclusive.)
            if let s3 = versionedBucket {
                for v in await listed("the object versions", { try await s3.versions() }) where !v.deleteMarker {
                    await attempt { try await s3.deleteVersion(v, bypassGovernance: true) }
                }
            }
            r.detail = "\(tally.deleted) deletes done, \(tally.refused) refused\(firstRefusal.map { " (first refusal: \($0))" } ?? "")"
        }
        let attackEnd = clock()

        // 5. The recovery: the clean snapshot, found and restored from what the site kept.
        var recoveryAccess = env.access
        recoveryAccess.reuse = nil
        if let pointInTime { recoveryAccess.settings.s3AsOf = pointInTime }
        var recoverySite = drillSite
        recoverySite.objectLockDays = nil
        let recoveryPlan = Plan(path: env.plan.path, sites: SitesConfig(sites: [recoverySite], stateFile: "/dev/null", path: "(drill)"), sources: [source])
        let recovery = SiteActions(plan: recoveryPlan, access: recoveryAccess, confine: sandbox, onlySite: recoverySite.name, before: nil,
                                   owner: nil, backendAction: nil)
        let asOf = recoveryAccess.settings.s3AsOf.map { " as of \(Timestamp.format($0).prefix(23))Z" } ?? ""
        let restored = await step("restore the clean snapshot", "snapshot \(cleanID.short) from the drill repository\(asOf)", phase: "restore") { r in
            try await recovery.restore(["source": source.name, "target": recovered, "snapshot": cleanID.hex, "path": copy], into: &r)
        }
        if restored, !inconclusive.isEmpty {
            report.failures.append("the attack at site \(site.name) was not played in full, so the clean snapshot's survival proves nothing: " + inconclusive.joined(separator: "; "))
        } else if restored, let end = report.steps.last?.ended {
            report.rtoSeconds = end.timeIntervalSince(attackEnd)
            for (k, v) in report.steps.last?.phases ?? [:] { report.phases[k, default: 0] += v }
            report.notes.append("site \(site.name) is protected: the clean snapshot \(cleanID.short) survived the attack (\(tally.deleted) deletes done, \(tally.refused) refused)\(asOf.isEmpty ? "" : " and was read back from the bucket\(asOf)")")
            report.notes.append("the RTO runs from the end of the attack to the verified restore of the clean snapshot")
        } else if !inconclusive.isEmpty {
            report.failures.append("the attack at site \(site.name) was not played in full, so it proves nothing: " + inconclusive.joined(separator: "; "))
        } else {
            report.unprotected = true
            report.failures.append("site \(site.name) is unprotected: with the client's credentials the attacker deleted the clean snapshot (\(tally.deleted) deletes done, \(tally.refused) refused): serve it with `lifeboat serve --append-only` or use S3 Object Lock (object_lock in the site)")
        }
        if let o = report.rtoObjective, let m = report.rtoSeconds, m > o {
            report.failures.append("the RTO of \(DrillReport.span(m)) exceeds the objective of \(DrillReport.span(o))")
        }
        if let o = report.rpoObjective, let m = report.rpoSeconds, m > o {
            report.failures.append("the RPO of \(DrillReport.span(m)) exceeds the objective of \(DrillReport.span(o)): the newest snapshot at \(site.name) is too old")
        }

        // 6. What stays: a local drill repository is removed; elsewhere, through the site's admin_repository (whose
        // credentials may delete) when it has one; otherwise it stays, and the report says where.
        if drillSite.repository.hasPrefix("/") || drillSite.repository.hasPrefix("local:") {
            let path = drillSite.repository.hasPrefix("local:") ? String(drillSite.repository.dropFirst(6)) : drillSite.repository
            try? FileManager.default.removeItem(atPath: path)
            let parent = (path as NSString).deletingLastPathComponent
            rmdir(parent)
            rmdir((parent as NSString).deletingLastPathComponent)
        } else if report.unprotected != true {
            let versioned = site.repository.hasPrefix("s3:")
            var left = "the drill repository \(RedactedLocation.text(drillSite.repository)) stays: delete lifeboat-drill/ on the site with credentials that may (with an admin_repository the drill does it)"
            if let admin = site.adminRepository {
                var adminSite = site
                adminSite.repository = DrillRepository.location(admin, drill: drill.name, run: String(drillSite.repository.split(separator: "/").last ?? ""))
                adminSite.credentialsFile = site.adminCredentialsFile
                adminSite.objectLockDays = nil
                var removed = 0, refused = 0
                if let b = try? await env.access.backend(adminSite) {
                    for type in ObjectType.allCases where type != .config {
                        for o in (try? await b.list(type)) ?? [] {
                            if (try? await b.delete(Handle(type, o.name))) != nil { removed += 1 } else { refused += 1 }
                        }
                    }
                    if (try? await b.delete(.config)) != nil { removed += 1 } else { refused += 1 }
                }
                left = refused == 0 ? "the drill repository was deleted through the site's admin_repository (\(removed) objects)"
                    : "\(refused) objects of the drill repository could not be deleted through the admin_repository (a lock still holds them)"
            }
            if versioned { left += "; in a bucket with versioning, deleted objects stay as versions until a lifecycle rule on lifeboat-drill/ expires them" }
            report.notes.append(left)
        }
    }

    /// Overwrites every regular file under `root` with random bytes of the same length; returns how many.
    static func overwriteWithRandom(_ root: String) throws -> Int {
        guard let random = FileHandle(forReadingAtPath: "/dev/urandom") else { throw LifeboatError(.io, "cannot open /dev/urandom") }
        defer { try? random.close() }
        var n = 0
        let e = FileManager.default.enumerator(atPath: root)
        while let rel = e?.nextObject() as? String {
            let path = root + "/" + rel
            var st = stat()
            guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { continue }
            // As an attacker would: a read-only file is made writable first.
            if st.st_mode & S_IWUSR == 0 { chmod(path, (st.st_mode & 0o7777) | S_IWUSR) }
            let fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW)
            guard fd >= 0 else { throw LifeboatError(.io, "cannot open \(path) for writing: \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            var left = Int(st.st_size), offset: off_t = 0
            while left > 0 {
                let chunk = random.readData(ofLength: min(left, 1 << 20))
                guard !chunk.isEmpty else { throw LifeboatError(.io, "/dev/urandom gave nothing") }
                let w = chunk.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, offset) }
                guard w == chunk.count else { throw LifeboatError(.io, "cannot write \(path): \(String(cString: strerror(errno)))") }
                left -= w
                offset += off_t(w)
            }
            n += 1
        }
        return n
    }
}

/// The bare S3 backend of a site (for what the retrying, caching stack does not offer: object versions).
enum DrillBackends {
    static func s3(_ site: Site, access: SiteAccess) async throws -> S3Backend? {
        guard site.repository.hasPrefix("s3:") else { return nil }
        var environment = access.settings.environment
        if let f = site.credentialsFile { environment.merge(try readEnvironmentFile(f)) { $1 } }
        return try await BackendRegistry.make(site.repository, http: access.settings.http, environment: environment) as? S3Backend
    }
}
