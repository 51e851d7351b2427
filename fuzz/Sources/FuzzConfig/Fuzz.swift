import Foundation
import LifeboatFailover
import LifeboatPlan
import LifeboatSites

/// Any text as a sites file, a proxy configuration, a playbook (then resolved) and a plan file (then checked and previewed, which runs its
/// schedules), as a PostgreSQL DSN file, and its first line as a cron expression: a configuration or an error with
/// line:column, never a trap.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    _ = try? SitesConfig.parse(text, path: "fuzz.yaml")
    _ = try? ProxyConfig.parse(text, path: "fuzz.yaml")
    _ = try? PostgresDSN.environment(text)
    if let book = try? Playbook.parse(text, path: "fuzz.yaml") {
        for step in book.steps + book.cleanup { _ = step.resolved(["sandbox": "/s", "port": "1"]).summary }
    }
    _ = Template.render(text, ["a": "b"])
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    if let plan = try? Plan.parse(text, path: "fuzz.yaml", timeZone: TimeZone(identifier: "Europe/Berlin") ?? .current) {
        _ = PlanCheck.diagnose(plan, now: now) { _ in nil }
        _ = PlanCheck.preview(plan, now: now)
    }
    if let line = text.split(separator: "\n").first, let s = try? Schedule(parsing: String(line), timeZone: TimeZone(identifier: "America/New_York") ?? .current) {
        _ = s.upcoming(3, after: now)
        _ = s.longestGap(from: now)
    }
    return 0
}
