import Foundation
import LifeboatConfig
import LifeboatCore
import Yams

/// A recovery procedure as code (`playbooks/*.yaml`): ordered steps, run by hand (`lifeboat playbook run`) and by
/// drills, so that the procedure that is drilled is the one that will be used. Parsing checks the whole file
/// before anything runs: unknown keys and actions, types, ranges, and every `{variable}` defined.
public struct Playbook: Sendable {
    public var path: String
    public var name: String
    /// The source it recovers (the default of a `restore` step's `source`).
    public var source: String?
    /// Variables the file defines (`{name}` in any string); `--var` and a drill add or override them.
    public var variables: [String: String]
    public var steps: [PlaybookStep]
    /// Steps that always run at the end, after a failure too (stop a server the steps started).
    public var cleanup: [PlaybookStep]

    /// Variables every run defines: the restore target (`{sandbox}`), a free loopback TCP port, the snapshot and
    /// site restored from, the source, the run's ID and the playbook's directory.
    public static let builtIns = ["sandbox", "port", "snapshot", "site", "source", "run_id", "playbook_dir"]

    public init(path: String, name: String, source: String?, variables: [String: String], steps: [PlaybookStep], cleanup: [PlaybookStep]) {
        self.path = path; self.name = name; self.source = source; self.variables = variables; self.steps = steps; self.cleanup = cleanup
    }

    /// `extra`: variables defined by the caller (a drill's `variables`, `--var`).
    public static func load(_ path: String, extra: Set<String> = []) throws -> Playbook {
        var st = stat()
        if stat(path, &st) == 0, st.st_size > 1 << 20 {
            throw ConfigError(path, nil, "the file is \(st.st_size) bytes: a playbook is text of at most 1 MiB")
        }
        guard let data = FileManager.default.contents(atPath: path) else { throw ConfigError(path, nil, "cannot read the playbook") }
        return try parse(String(decoding: data, as: UTF8.self), path: path, extra: extra)
    }

    /// Parses and checks a playbook. `extra` names variables the caller will define (`--var`); a `{name}` that is
    /// neither built in, defined in the file nor extra is an error at its line and column.
    public static func parse(_ text: String, path: String, extra: Set<String> = []) throws -> Playbook {
        let y = YAMLReader(path: path)
        let (top, root) = try y.document(text, describedAs: "`name:` and `steps:`")
        try y.keys(top, ["name", "source", "description", "variables", "steps", "cleanup"])
        var book = Playbook(path: path, name: try y.string(top, "name") ?? ((path as NSString).lastPathComponent as NSString).deletingPathExtension,
                            source: try y.string(top, "source"), variables: [:], steps: [], cleanup: [])
        if let v = top["variables"] {
            let m = try y.mapping(v, "`variables:`")
            for (k, val) in m {
                guard let name = k.string, name.count <= 64, !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                    throw y.error(k, "a variable name holds letters, digits and _ only (at most 64)")
                }
                guard !builtIns.contains(name) else { throw y.error(k, "`\(name)` is a built-in variable: choose another name") }
                guard val.scalar != nil, let s = val.string else { throw y.error(val, "variable `\(name)` must be a string") }
                book.variables[name] = s
            }
        }
        guard let list = top["steps"]?.sequence, !list.isEmpty else {
            throw y.error(top["steps"] ?? root, "`steps:` must be a non-empty list of steps")
        }
        guard list.count <= 1000 else { throw y.error(top["steps"], "a playbook has at most 1,000 steps") }
        for (i, n) in list.enumerated() { book.steps.append(try step(n, index: i + 1, y)) }
        if let c = top["cleanup"] {
            guard let seq = c.sequence else { throw y.error(c, "`cleanup:` must be a list of steps") }
            for (i, n) in seq.enumerated() { book.cleanup.append(try step(n, index: i + 1, y)) }
        }
        let names = book.steps.map(\.name)
        if let dup = names.first(where: { n in names.filter { $0 == n }.count > 1 }),
           let s = book.steps.last(where: { $0.name == dup }) {
            throw ConfigError(path, nil, "\(s.location.line > 0 ? "line \(s.location.line): " : "")two steps are named \"\(dup)\": step names must differ (a resumed run starts from one by name)")
        }
        // Every variable used is defined, now and not half-way through a recovery.
        let defined = Set(builtIns).union(book.variables.keys).union(extra)
        for s in book.steps + book.cleanup {
            for (text, node) in s.templates {
                switch Template.variables(in: text) {
                case .failure(let e): throw ConfigError(path, node, "step \"\(s.name)\": \(e.description)")
                case .success(let used):
                    for u in used where !defined.contains(u) {
                        throw ConfigError(path, node, "step \"\(s.name)\": undefined variable {\(u)} (defined: \(defined.sorted().joined(separator: ", ")); add it under `variables:` or pass --var \(u)=…)")
                    }
                }
            }
        }
        return book
    }

    static func step(_ node: Yams.Node, index: Int, _ y: YAMLReader) throws -> PlaybookStep {
        let m = try y.mapping(node, "each step")
        let actions = ["run", "check", "lifeboat", "manual"]
        try y.keys(m, ["name", "timeout", "retries", "retry_delay", "within", "interval", "run_as", "with", "confirmed_in_drills"] + actions)
        let given = actions.filter { m[$0] != nil }
        guard given.count == 1 else {
            throw y.error(node, given.isEmpty ? "step \(index): say what it does: run, check, lifeboat or manual" : "step \(index): one of \(given.joined(separator: ", ")), not several")
        }
        let name = try y.string(m, "name") ?? "step \(index)"
        guard name.count <= 200 else { throw y.error(m["name"], "a step name has at most 200 characters") }
        var marks: [(String, Mark?)] = []
        func command(_ key: String) throws -> PlaybookStep.Command {
            let n = m[key]!
            if n.sequence != nil {
                let argv = try y.strings(m, key)!
                marks += argv.map { ($0, n.mark) }
                return .argv(argv)
            }
            let s = try y.string(m, key)!
            marks.append((s, n.mark))
            return .shell(s)
        }
        var step = PlaybookStep(name: name, action: .manual("", confirmedInDrills: false), location: Location(y.path, node))
        step.timeout = try y.duration(m, "timeout", 0.001...(7 * 86400)) ?? step.timeout
        step.retries = try y.int(m, "retries", 0...100) ?? 0
        step.retryDelay = try y.duration(m, "retry_delay", 0.001...3600) ?? step.retryDelay
        step.runAs = try y.string(m, "run_as")
        if let u = step.runAs, u.isEmpty || u.count > 32 || !u.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." }) {
            throw y.error(m["run_as"], "`run_as`: \"\(u)\" is not a user name")
        }
        switch given[0] {
        case "run":
            step.action = .run(try command("run"))
        case "check":
            let within = try y.duration(m, "within", 0.001...86400) ?? 60
            step.action = .check(try command("check"), within: within, interval: try y.duration(m, "interval", 0.01...3600) ?? 1)
            if m["timeout"] == nil { step.timeout = min(step.timeout, within) }
        case "lifeboat":
            guard let a = try y.enumValue(m, "lifeboat", PlaybookStep.BuiltIn.self) else { throw y.error(m["lifeboat"], "`lifeboat` needs an action") }
            var args: [String: String] = [:]
            if let w = m["with"] {
                let wm = try y.mapping(w, "`with:`")
                try y.keys(wm, a.arguments)
                for (k, v) in wm {
                    guard v.scalar != nil, let s = v.string else { throw y.error(v, "`\(k.string ?? "?")` must be a string") }
                    args[k.string ?? ""] = s
                    marks.append((s, v.mark))
                }
            }
            if a == .restore {
                // What a restore takes unless the step says otherwise: the run's source, snapshot, site and sandbox.
                for (k, v) in PlaybookStep.restoreDefaults where args[k] == nil { args[k] = v }
            }
            for r in a.required where args[r] == nil { throw y.error(node, "step \"\(name)\": `lifeboat: \(a.rawValue)` needs `with: {\(r): …}`") }
            step.action = .lifeboat(a, args)
        default:
            let text = try y.string(m, "manual")!
            marks.append((text, m["manual"]?.mark))
            step.action = .manual(text, confirmedInDrills: try y.bool(m, "confirmed_in_drills") ?? false)
        }
        if m["within"] != nil || m["interval"] != nil, case .check = step.action {} else if m["within"] != nil || m["interval"] != nil {
            throw y.error(m["within"] ?? m["interval"], "step \"\(name)\": `within` and `interval` apply to `check` steps only")
        }
        if m["with"] != nil, case .lifeboat = step.action {} else if m["with"] != nil {
            throw y.error(m["with"], "step \"\(name)\": `with` applies to `lifeboat` steps only")
        }
        if m["confirmed_in_drills"] != nil, case .manual = step.action {} else if m["confirmed_in_drills"] != nil {
            throw y.error(m["confirmed_in_drills"], "step \"\(name)\": `confirmed_in_drills` applies to `manual` steps only")
        }
        step.templates = marks
        return step
    }
}

/// One step of a playbook.
public struct PlaybookStep: Sendable {
    public enum Command: Sendable, Equatable {
        /// `/bin/sh -c TEXT`.
        case shell(String)
        case argv([String])
    }
    /// What Lifeboat does itself in a step.
    public enum BuiltIn: String, Sendable, CaseIterable {
        /// Restores the source's newest snapshot (or `snapshot`) from `site` into `target`, then verifies every file.
        case restore
        /// A replication pass now.
        case replicate
        case disableBackend = "disable-backend", enableBackend = "enable-backend", promoteBackend = "promote-backend"

        public var arguments: [String] {
            switch self {
            case .restore: ["source", "snapshot", "site", "target", "path", "port"]
            case .replicate: ["site"]
            case .disableBackend, .enableBackend, .promoteBackend: ["pool", "backend"]
            }
        }
        public var required: [String] {
            switch self {
            case .restore, .replicate: []
            case .disableBackend, .enableBackend, .promoteBackend: ["pool", "backend"]
            }
        }
    }
    public enum Action: Sendable {
        case run(Command)
        /// A command that must succeed within `within`, tried every `interval`.
        case check(Command, within: Double, interval: Double)
        case lifeboat(BuiltIn, [String: String])
        /// An instruction for a person, who confirms it; a drill takes it as confirmed only when the file says so.
        case manual(String, confirmedInDrills: Bool)

        public var kind: String {
            switch self {
            case .run: "run"
            case .check: "check"
            case .lifeboat(let a, _): "lifeboat \(a.rawValue)"
            case .manual: "manual"
            }
        }
    }
    /// A restore step's arguments when it does not give them.
    public static let restoreDefaults = ["source": "{source}", "snapshot": "{snapshot}", "site": "{site}", "target": "{sandbox}", "port": "{port}"]

    public var name: String
    public var action: Action
    /// A single try's time limit (a `check`: each try's, within its deadline).
    public var timeout: Double = 300
    public var retries = 0
    public var retryDelay: Double = 1
    /// The user the command runs as (a drill's `run_as` otherwise).
    public var runAs: String?
    public var location: Location
    /// Every string of the step that may hold `{variables}`, with where it was written.
    var templates: [(String, Mark?)] = []

    public init(name: String, action: Action, location: Location) { self.name = name; self.action = action; self.location = location }

    /// The step with every `{variable}` replaced (variables are checked when the playbook is parsed).
    public func resolved(_ vars: [String: String]) -> PlaybookStep {
        var s = self
        func r(_ t: String) -> String { Template.render(t, vars) }
        func rc(_ c: Command) -> Command {
            switch c { case .shell(let t): .shell(r(t)); case .argv(let a): .argv(a.map(r)) }
        }
        switch action {
        case .run(let c): s.action = .run(rc(c))
        case .check(let c, let w, let i): s.action = .check(rc(c), within: w, interval: i)
        case .lifeboat(let a, let args): s.action = .lifeboat(a, args.mapValues(r))
        case .manual(let t, let c): s.action = .manual(r(t), confirmedInDrills: c)
        }
        return s
    }

    /// One line for a dry run, a timeline and the audit log.
    public var summary: String {
        switch action {
        case .run(let c): "run \(c.text)\(retries > 0 ? " (retries \(retries))" : "")"
        case .check(let c, let w, _): "check \(c.text) (within \(describeSeconds(w)))"
        case .lifeboat(let a, let args): "lifeboat \(a.rawValue)" + (args.isEmpty ? "" : " " + args.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
        case .manual(let t, _): "manual: \(t)"
        }
    }
}

extension PlaybookStep.Command {
    public var text: String {
        switch self {
        case .shell(let s): s
        case .argv(let a): a.map { $0.contains(" ") || $0.isEmpty ? "'\($0)'" : $0 }.joined(separator: " ")
        }
    }
}

/// `{name}` substitution. A template is `{name}` with a name of letters, digits and `_` (at most 64), not right
/// after a `$`: so shell text keeps its meaning (`${HOME}`, `{ cmd; }`, `awk '{print $1}'` stay as written).
/// `{{` writes a literal `{` (for a literal `{name}`); any other brace is literal as it is.
public enum Template {
    public struct Problem: Error, CustomStringConvertible { public var description: String }

    enum Piece { case text(String), variable(String) }

    static func pieces(_ text: String) -> [Piece] {
        var out: [Piece] = []
        var lit = ""
        let s = Array(text.unicodeScalars)
        var i = 0
        func isName(_ c: Unicode.Scalar) -> Bool { c.isASCII && (CharacterSet.alphanumerics.contains(c) || c == "_") }
        while i < s.count {
            let c = s[i]
            if c == "{" {
                if i + 1 < s.count && s[i + 1] == "{" { lit += "{"; i += 2; continue }
                if i > 0 && s[i - 1] == "$" { lit += "{"; i += 1; continue }
                var j = i + 1
                while j < s.count && j - i <= 65 && isName(s[j]) { j += 1 }
                if j > i + 1 && j - i - 1 <= 64 && j < s.count && s[j] == "}" {
                    if !lit.isEmpty { out.append(.text(lit)); lit = "" }
                    var name = ""
                    name.unicodeScalars.append(contentsOf: s[(i + 1)..<j])
                    out.append(.variable(name))
                    i = j + 1
                    continue
                }
                lit += "{"
                i += 1
            } else if c == "}" && i + 1 < s.count && s[i + 1] == "}" {
                lit += "}"
                i += 2
            } else {
                lit.unicodeScalars.append(c)
                i += 1
            }
        }
        if !lit.isEmpty { out.append(.text(lit)) }
        return out
    }

    /// The variables `text` uses, in order.
    public static func variables(in text: String) -> Result<[String], Problem> {
        .success(pieces(text).compactMap { if case .variable(let n) = $0 { return n } else { return nil } })
    }

    /// Replaces each `{name}` by its value (an unknown one stays as written; parsing has refused it already).
    public static func render(_ text: String, _ vars: [String: String]) -> String {
        pieces(text).map { p in
            switch p { case .text(let t): t; case .variable(let n): vars[n] ?? "{\(n)}" }
        }.joined()
    }
}
