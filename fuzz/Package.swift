// swift-tools-version: 6.1
// Fuzz targets for Lifeboat's parsers (libFuzzer through `-sanitize=fuzzer`). Built and run by `make fuzz`
// (fuzz/run.sh); the crashing inputs found are kept in fuzz/regressions/ and replayed by the unit tests.
import PackageDescription

let fuzz: [SwiftSetting] = [.swiftLanguageMode(.v6), .unsafeFlags(["-parse-as-library"])]

let package = Package(
    name: "LifeboatFuzz",
    platforms: [.macOS(.v14)],
    dependencies: [.package(name: "Lifeboat", path: "..")],
    targets: [
        .executableTarget(name: "FuzzTree", dependencies: [.product(name: "LifeboatCore", package: "Lifeboat")], swiftSettings: fuzz),
        .executableTarget(name: "FuzzIndex", dependencies: [.product(name: "LifeboatRepository", package: "Lifeboat")], swiftSettings: fuzz),
        .executableTarget(name: "FuzzPackHeader", dependencies: [.product(name: "LifeboatRepository", package: "Lifeboat")], swiftSettings: fuzz),
        .executableTarget(name: "FuzzObject", dependencies: [.product(name: "LifeboatRepository", package: "Lifeboat")], swiftSettings: fuzz),
        .executableTarget(name: "FuzzConfig", dependencies: [
            .product(name: "LifeboatSites", package: "Lifeboat"), .product(name: "LifeboatFailover", package: "Lifeboat"),
            .product(name: "LifeboatPlan", package: "Lifeboat"),
        ], swiftSettings: fuzz),
        .executableTarget(name: "FuzzWAL", dependencies: [.product(name: "LifeboatWAL", package: "Lifeboat")], swiftSettings: fuzz),
        .executableTarget(name: "FuzzSQLiteWAL", dependencies: [.product(name: "LifeboatSQLiteWAL", package: "Lifeboat")], swiftSettings: fuzz),
        .executableTarget(name: "FuzzRange", dependencies: [.product(name: "LifeboatCore", package: "Lifeboat")], swiftSettings: fuzz),
    ]
)
