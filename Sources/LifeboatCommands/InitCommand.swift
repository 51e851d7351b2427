import ArgumentParser
import Foundation
import LifeboatChunker
import LifeboatCompression
import LifeboatCore
import LifeboatRepository

struct InitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "init", abstract: "Create a new repository.", discussion: Examples.`init`)
    @OptionGroup var global: GlobalOptions
    @Option(name: .customLong("chunk-min"), help: "Minimum chunk size in bytes.") var chunkMin = ChunkerParameters.default.min
    @Option(name: .customLong("chunk-avg"), help: "Average chunk size in bytes (a power of two).") var chunkAvg = ChunkerParameters.default.avg
    @Option(name: .customLong("chunk-max"), help: "Maximum chunk size in bytes.") var chunkMax = ChunkerParameters.default.max
    @Option(name: .customLong("compression"), help: "Default compression: off, fast, auto, max.") var compression = "auto"
    @Option(name: .customLong("pack-size"), help: "Target pack size in MiB.") var packSizeMiB = RepositoryConfig.defaultPackSize >> 20
    @Option(name: .customLong("copy-chunker-params-from"), help: "Chunk and name data like this repository (for replicas: copies then skip what is present).")
    var copyChunkerParamsFrom: String?
    @Option(name: .customLong("from-password-file"), help: "Password file of --copy-chunker-params-from (default: the new repository's).")
    var fromPasswordFile: String?

    func run() async throws {
        try await runCommand(global) {
            guard let mode = CompressionMode(rawValue: compression) else {
                throw LifeboatError.invalid("invalid --compression \"\(compression)\": use off, fast, auto or max")
            }
            var opts = InitOptions()
            opts.chunker = ChunkerParameters(min: chunkMin, avg: chunkAvg, max: chunkMax)
            opts.compression = mode
            opts.packSize = try Bounds.check(packSizeMiB, 1...512, "--pack-size (MiB)") << 20
            if let from = copyChunkerParamsFrom {
                let src = try await SourceRepositoryOptions.open(global, location: from, passwordFile: fromPasswordFile)
                opts.chunker = src.config.chunker
                opts.chunkerSeed = Data(base64Encoded: src.config.chunkerSeed).map { Array($0) }
                opts.blobIDKey = src.master.mac
            }
            let backend = try await global.backend()
            let pw = try global.password(confirm: true, prompt: "enter password for new repository: ")
            let repo = try await Repository.initialize(backend: backend, password: pw, options: opts)
            global.output.line("created lifeboat repository \(repo.config.id.prefix(10)) at \(backend.location)")
            global.output.line("Please note that knowledge of your password is required to access the repository. Losing your password means that your data is irrecoverably lost.")
            global.output.emit(["message_type": "initialized", "id": repo.config.id, "repository": backend.location])
            return 0
        }
    }
}
