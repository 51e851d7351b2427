// swift-tools-version: 6.0
import PackageDescription

let swift6: [SwiftSetting] = [.swiftLanguageMode(.v6)]
let fast: [SwiftSetting] = swift6 + [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]

let package = Package(
    name: "Lifeboat",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "lifeboat", targets: ["lifeboat"]),
        .library(name: "LifeboatSnapshot", targets: ["LifeboatSnapshot"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // C shim for the system libzstd (Debian: libzstd-dev).
        .systemLibrary(name: "CZstd", path: "Sources/CZstd", pkgConfig: "libzstd",
                       providers: [.apt(["libzstd-dev"])]),

        // Linux calls that Swift's Glibc module lacks (xattrs, O_NOATIME).
        .target(name: "CLifeboatSys"),

        // Pure domain types: IDs, errors, snapshots, trees, retention, patterns. No I/O.
        .target(name: "LifeboatCore", swiftSettings: swift6),
        // Content-defined chunking (FastCDC) over byte buffers. Pure.
        .target(name: "LifeboatChunker", swiftSettings: fast),
        // Keys, KDF, sealing, keyed content IDs.
        .target(name: "LifeboatCrypto", dependencies: [
            "LifeboatCore",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "_CryptoExtras", package: "swift-crypto"),
        ], swiftSettings: swift6),
        // Compressor: isolates the C library.
        .target(name: "LifeboatCompression", dependencies: ["CZstd"], swiftSettings: swift6),
        // Backend protocol, errors, local directory and in-memory backends.
        .target(name: "LifeboatStorage", dependencies: ["LifeboatCore"], swiftSettings: swift6),
        // Packs, index, locks, keys, the repository.
        .target(name: "LifeboatRepository", dependencies: [
            "LifeboatCore", "LifeboatChunker", "LifeboatCrypto", "LifeboatCompression", "LifeboatStorage",
        ], swiftSettings: swift6),
        // Use cases: archiver, restorer, checker, pruner, forget.
        .target(name: "LifeboatSnapshot", dependencies: ["LifeboatRepository", "CLifeboatSys"], swiftSettings: swift6),
        // The command-line interface as a library.
        .target(name: "LifeboatCommands", dependencies: [
            "LifeboatSnapshot", "CLifeboatSys",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: swift6),
        .executableTarget(name: "lifeboat", dependencies: ["LifeboatCommands", .product(name: "ArgumentParser", package: "swift-argument-parser")], swiftSettings: swift6),
        // Micro-benchmarks of the primitives and the per-chunk pipeline (bench/; release builds only).
        .executableTarget(name: "lifeboat-bench", dependencies: [
            "LifeboatChunker", "LifeboatCompression", "LifeboatCrypto",
            .product(name: "Crypto", package: "swift-crypto"),
        ], swiftSettings: swift6),

        // Test helpers: the backend conformance suite, fixtures.
        .target(name: "LifeboatTestSupport", dependencies: ["LifeboatStorage"], swiftSettings: swift6),

        .testTarget(name: "LifeboatCoreTests", dependencies: ["LifeboatCore"], swiftSettings: swift6),
        .testTarget(name: "LifeboatChunkerTests", dependencies: ["LifeboatChunker"], swiftSettings: swift6),
        .testTarget(name: "LifeboatCryptoTests", dependencies: ["LifeboatCrypto"], swiftSettings: swift6),
        .testTarget(name: "LifeboatStorageTests", dependencies: ["LifeboatStorage", "LifeboatTestSupport"], swiftSettings: swift6),
        .testTarget(name: "LifeboatRepositoryTests", dependencies: ["LifeboatRepository", "LifeboatTestSupport"], swiftSettings: swift6),
        .testTarget(name: "LifeboatSnapshotTests", dependencies: ["LifeboatSnapshot", "LifeboatTestSupport"], swiftSettings: swift6),
    ]
)
