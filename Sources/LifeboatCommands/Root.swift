import ArgumentParser
import CLifeboatSys
import Dispatch
import Foundation
import Glibc
import LifeboatCore
import LifeboatDrill
import LifeboatRepository
import Synchronization

nonisolated(unsafe) var signalSources: [DispatchSourceSignal] = []
/// Signals received; commands that stop gracefully (copy, replicate, serve, proxy) poll it.
let stopSignals = Atomic<Int>(0)
/// Set by commands that stop gracefully on the first SIGINT/SIGTERM instead of exiting (finish the current
/// object, drain connections): what to print then.
nonisolated(unsafe) var gracefulStop: String?

/// SIGHUPs received: each asks a daemon (proxy, agent) to reload.
let hangups = Atomic<Int>(0)

/// Counts SIGHUPs in `hangups` instead of dying of them (SIGHUP's default); cancel the source to stop.
func countHangups() -> DispatchSourceSignal {
    signal(SIGHUP, SIG_IGN)
    let hup = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
    hup.setEventHandler { hangups.add(1, ordering: .relaxed) }
    hup.resume()
    return hup
}

/// Whether a graceful stop was asked for.
func stopRequested() -> Bool { stopSignals.load(ordering: .relaxed) > 0 }

/// On SIGINT or SIGTERM: release the repository locks this process holds, then exit with 130.
/// (Data already uploaded stays; the next backup reuses it.)
func installInterruptHandlers() {
    for sig in [SIGINT, SIGTERM] {
        signal(sig, SIG_IGN)
        let src = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        src.setEventHandler {
            // On a terminal, end the progress line (and the ^C echo) first; in a log, no blank line.
            let newline = isatty(2) != 0 ? "\n" : ""
            if let message = gracefulStop, stopSignals.add(1, ordering: .relaxed).newValue == 1 {
                FileHandle.standardError.write(Data("\(newline)\(message) (signal again to stop at once)\n".utf8))
                return
            }
            FileHandle.standardError.write(Data("\(newline)interrupted: releasing locks\n".utf8))
            Task {
                // A drill's changes to the proxy (a disabled backend, a crashed one) are undone first.
                await DrillUndo.runAll()
                await RepositoryLock.releaseAll()
                exit(ExitStatus.interrupted)
            }
        }
        src.resume()
        signalSources.append(src)
    }
}

/// The `lifeboat` command: dispatches to subcommands only.
public struct LifeboatCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "lifeboat",
        abstract: "Disaster recovery for self-hosted services: deduplicated, compressed, encrypted backups.",
        discussion: """
        GLOBAL OPTIONS (for every command that opens a repository, before or after its name):
          -r, --repo <repo>
                Repository: PATH, s3:https://HOST/BUCKET/PREFIX, rest:https://HOST/PATH
                or rclone:REMOTE:PATH (or LIFEBOAT_REPOSITORY).
          --password-file <file>
                File holding the password (or LIFEBOAT_PASSWORD_FILE;
                LIFEBOAT_PASSWORD also works).
          --json
                One JSON object per line, each with a message_type (docs/JSON.md).
          -q, --quiet
                Print only errors and results.
          --cacert <file>, --timeout <seconds>, --no-cache, --cache-dir <dir>
                Remote repositories: extra CA certificates, stall timeout, metadata
                cache (or LIFEBOAT_CACERT, LIFEBOAT_TIMEOUT, LIFEBOAT_CACHE_DIR).
          --limit-upload <KiB/s>, --limit-download <KiB/s>
                Bandwidth limits (or LIFEBOAT_LIMIT_UPLOAD, LIFEBOAT_LIMIT_DOWNLOAD;
                sites: limit_upload, limit_download).
          --no-lock
                Read-only commands take no lock (for read-only media).
          --s3-as-of <time>
                Read an S3 repository as it was at TIME (RFC 3339 or Unix seconds),
                from object versions: what deletes hid since comes back. Read-only.

        EXIT CODES: 0 ok, 1 failure, 3 backup/restore finished but some files could not be read or restored, \
        10 no repository at the location, 11 repository locked, 12 wrong password, 20 a site cannot be reached \
        (sites status), 21 a replica lags more than --max-lag (sites status), 22 a snapshot is older than \
        --max-age (check, snapshots) or an RPO is missed (status), 23 a drill failed (drill run), 24 a playbook step \
        failed (playbook run), 64 usage error, 130 interrupted.

        \(Examples.root)
        """,
        version: LifeboatVersion.string,
        subcommands: [
            InitCommand.self, BackupCommand.self, SnapshotsCommand.self, LsCommand.self, DiffCommand.self,
            RestoreCommand.self, DumpCommand.self, FindCommand.self, StatsCommand.self, CheckCommand.self,
            ForgetCommand.self, PruneCommand.self, RepairCommand.self, UnlockCommand.self, KeyCommand.self, CopyCommand.self,
            ReplicateCommand.self, SitesCommand.self, ServeCommand.self, ProxyCommand.self, ConfigCommand.self, PlanCommand.self,
            AgentCommand.self, StatusCommand.self, RecoveryKitCommand.self, DrillCommand.self, PlaybookCommand.self, PostgresCommand.self, SQLiteCommand.self, DatabaseCommand.self, HACommand.self,
            CompletionCommand.self, VersionCommand.self,
        ]
    )
    public init() {}
}

/// `lifeboat completion bash|zsh|fish`: the shell completion script, generated from the argument parser.
struct CompletionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "completion",
        abstract: "Print a shell completion script (bash, zsh or fish).",
        discussion: Examples.completion)
    enum Shell: String, ExpressibleByArgument, CaseIterable { case bash, zsh, fish }
    @Argument(help: "The shell: bash, zsh or fish.") var shell: Shell

    func run() throws {
        let kind: CompletionShell = switch shell { case .bash: .bash; case .zsh: .zsh; case .fish: .fish }
        print(LifeboatCommand.completionScript(for: kind), terminator: "")
    }
}

struct VersionCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Print the version.", discussion: Examples.version)
    @Flag(help: "Print one JSON object with message_type \"version\".") var json = false
    func run() async throws {
        if json {
            print(Output.encode(["message_type": "version", "version": LifeboatVersion.string, "repository_format": 1]))
        } else {
            print("lifeboat \(LifeboatVersion.string) (repository format 1)")
        }
    }
}

extension LifeboatCommand {
    /// "unknown command 'snapshot': did you mean 'snapshots'?" for a mistyped command or subcommand (nil when the
    /// words name commands, or nothing close is known: the parser's own message then stands).
    static func unknownCommandHint(_ args: [String]) -> String? {
        var command: any ParsableCommand.Type = LifeboatCommand.self
        var path = ["lifeboat"]
        var skipValue = false
        for word in args {
            // Global options may sit between the words (`-r REPO key lst`): skip them and their values.
            if skipValue { skipValue = false; continue }
            if globalOptionsWithValue.contains(word) { skipValue = true; continue }
            if word.hasPrefix("-") && (globalFlags.contains(word) || globalOptionsWithValue.contains { word.hasPrefix($0 + "=") }) { continue }
            let subs = command.configuration.subcommands
            guard !subs.isEmpty, !word.hasPrefix("-") else { return nil }
            let names = subs.compactMap { $0.configuration.commandName } + ["help"]
            if word == "help" { return nil }
            if let next = subs.first(where: { $0.configuration.commandName == word }) {
                command = next
                path.append(word)
                continue
            }
            guard let guess = closestMatch(word, among: names) else { return nil }
            return "\(path.joined(separator: " ")): unknown command '\(word)': did you mean '\(guess)'? (see '\(path.joined(separator: " ")) --help')"
        }
        return nil
    }

    /// Moves global options written before the subcommand to after it (and after `key`'s own subcommand).
    static let globalOptionsWithValue: Set<String> = ["-r", "--repo", "--password-file", "--cacert", "--timeout", "--s3-object-lock-days", "--s3-object-lock-mode", "--s3-as-of", "--cache-dir"]
    static let globalFlags: Set<String> = ["--json", "-q", "--quiet", "--no-cache", "--no-lock"]

    public static func movingGlobalOptions(_ args: [String]) -> [String] {
        let withValue = globalOptionsWithValue
        let flags = globalFlags
        var globals: [String] = []
        var i = 0
        while i < args.count {
            let a = args[i]
            if withValue.contains(a), i + 1 < args.count { globals += [a, args[i + 1]]; i += 2; continue }
            if withValue.contains(where: { a.hasPrefix($0 + "=") }) || flags.contains(a) { globals.append(a); i += 1; continue }
            break
        }
        guard !globals.isEmpty, i < args.count else { return args }
        var rest = Array(args[i...])
        var at = 1
        // A command with subcommands (`pg restore`, `sqlite replicate`, `key add`): the options go after both names.
        if rest.count > 1, let group = LifeboatCommand.configuration.subcommands.first(where: { $0.configuration.commandName == rest[0] }),
           group.configuration.subcommands.contains(where: { $0.configuration.commandName == rest[1] }) { at = 2 }
        rest.insert(contentsOf: globals, at: at)
        return rest
    }
}

extension LifeboatCommand {
    /// Parses `arguments`, runs the chosen subcommand, and exits with its status.
    public static func run(arguments: [String]) async {
        let args = movingGlobalOptions(arguments)
        // One line at a time whatever standard output is (a pipe, a file, journald): a wrapper that reads
        // `backup --json` or `replicate --watch > log` sees each line when it happens, not at exit.
        lb_line_buffer_stdout()
        lb_tune_malloc()
        installInterruptHandlers()
        if let hint = unknownCommandHint(args) {
            FileHandle.standardError.write(Data((hint + "\n").utf8))
            Glibc.exit(ExitStatus.usage)
        }
        do {
            var command = try await asyncParseAsRoot(args)
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}
