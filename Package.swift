// swift-tools-version: 6.1
import PackageDescription

let swift6: [SwiftSetting] = [.swiftLanguageMode(.v6)]
let fast: [SwiftSetting] = swift6 + [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]

let package = Package(
    name: "Lifeboat",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "lifeboat", targets: ["lifeboat"]),
        .library(name: "LifeboatSnapshot", targets: ["LifeboatSnapshot"]),
        // For the fuzz package (fuzz/): the parsers' modules.
        .library(name: "LifeboatCore", targets: ["LifeboatCore"]),
        .library(name: "LifeboatRepository", targets: ["LifeboatRepository"]),
        .library(name: "LifeboatSites", targets: ["LifeboatSites"]),
        .library(name: "LifeboatFailover", targets: ["LifeboatFailover"]),
        .library(name: "LifeboatPlan", targets: ["LifeboatPlan"]),
        .library(name: "LifeboatWAL", targets: ["LifeboatWAL"]),
        .library(name: "LifeboatHA", targets: ["LifeboatHA"]),
        .library(name: "LifeboatSQLiteWAL", targets: ["LifeboatSQLiteWAL"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // Networking, only in the remote-site modules (never in the core).
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-http2", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth", from: "2.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        // The agent: its state database and its metrics.
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
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
        // HTTP transports for remote backends: AsyncHTTPClient (HTTP/1.1, TLS) and HTTP/2 over a
        // child process's pipes (rclone). Maps network failures to StorageError kinds.
        .target(name: "LifeboatHTTP", dependencies: [
            "LifeboatStorage", "LifeboatCore",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOFoundationCompat", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOHTTP2", package: "swift-nio-http2"),
        ], swiftSettings: swift6),
        // Client backends that speak the restic REST protocol v2 (rest: and rclone:).
        .target(name: "LifeboatREST", dependencies: ["LifeboatHTTP", "LifeboatStorage"], swiftSettings: swift6),
        // The S3 backend: AWS Signature Version 4, listing, ranged reads, object lock.
        .target(name: "LifeboatS3", dependencies: [
            "LifeboatCore", "LifeboatHTTP", "LifeboatStorage",
            .product(name: "Crypto", package: "swift-crypto"),
        ], swiftSettings: swift6),
        // `lifeboat serve`: the REST-protocol repository server (Hummingbird).
        .target(name: "LifeboatServer", dependencies: [
            "LifeboatStorage",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "HummingbirdTLS", package: "hummingbird"),
            .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
            .product(name: "Crypto", package: "swift-crypto"),
            // Imported directly (channel handlers, TLS, logging), not only through Hummingbird.
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swift6),
        // YAML configuration reading with file:line:column errors (sites file, proxy configuration).
        .target(name: "LifeboatConfig", dependencies: ["LifeboatCore", .product(name: "Yams", package: "Yams")], swiftSettings: swift6),
        // Sites (sites.yaml), replication state and lag: what replicate and sites status share.
        .target(name: "LifeboatSites", dependencies: ["LifeboatCore", "LifeboatConfig", .product(name: "Yams", package: "Yams")], swiftSettings: swift6),
        // The plan file (lifeboat.yaml): sources, schedules (cron), retention, objectives, checks, alerts; its
        // validation against the world, and the preview of what the agent will do.
        .target(name: "LifeboatPlan", dependencies: [
            "LifeboatCore", "LifeboatConfig", "LifeboatSites", "LifeboatFailover", "LifeboatHA", .product(name: "Yams", package: "Yams"),
        ], swiftSettings: swift6),
        // Failover: health state machine and pool selection (pure), proxy config.
        .target(name: "LifeboatFailover", dependencies: ["LifeboatConfig", .product(name: "Yams", package: "Yams")], swiftSettings: swift6),
        // `lifeboat proxy`: the TCP proxy on SwiftNIO, health checks, hooks.
        .target(name: "LifeboatProxy", dependencies: [
            "LifeboatFailover", "LifeboatConfig", "LifeboatCore", "LifeboatHTTP", "CLifeboatSys",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Hummingbird", package: "hummingbird"),
        ], swiftSettings: swift6),
        // The backend registry: repository locations to backends, with retries and the metadata cache.
        .target(name: "LifeboatBackends", dependencies: [
            "LifeboatCore", "LifeboatStorage", "LifeboatRepository", "LifeboatHTTP", "LifeboatREST", "LifeboatS3",
        ], swiftSettings: swift6),
        // Replication and site status over the sites file: what `replicate`, `sites status` and the agent share.
        .target(name: "LifeboatReplication", dependencies: [
            "LifeboatCore", "LifeboatBackends", "LifeboatSites", "LifeboatSnapshot", "LifeboatRepository", "LifeboatStorage", "LifeboatS3",
        ], swiftSettings: swift6),
        // PostgreSQL's WAL as files: segment names, headers and transaction times, timeline histories, the chain of
        // an archive and the plan of a point-in-time recovery. Pure.
        .target(name: "LifeboatWAL", dependencies: ["LifeboatCore"], swiftSettings: swift6),
        // The HA decisions (leader lease, fencing, failover candidates) and the `ha:` section: pure, no networking,
        // no processes.
        .target(name: "LifeboatHA", dependencies: ["LifeboatCore", "LifeboatConfig", "LifeboatFailover", "LifeboatWAL", .product(name: "Yams", package: "Yams")], swiftSettings: swift6),
        // etcd v3 through its JSON gateway (EtcdClient), the HA cluster's keys (HAKeys) and store actions (HAStore).
        .target(name: "LifeboatEtcd", dependencies: ["LifeboatHA", "LifeboatHTTP", "LifeboatCore"], swiftSettings: swift6),
        // What an HA node does to its PostgreSQL: state, initdb, pg_basebackup, start, promote, fence, follow,
        // pg_rewind, run as the cluster's user.
        .target(name: "LifeboatHAPostgres", dependencies: [
            "LifeboatHA", "LifeboatProcess", "LifeboatFailover", "LifeboatWAL", "LifeboatCore", .product(name: "Crypto", package: "swift-crypto"),
        ], swiftSettings: swift6),
        // `lifeboat ha`: the loop around the decision model (etcd + PostgreSQL), the fencing guard, the REST API,
        // metrics, the operator's actions.
        .target(name: "LifeboatHAAgent", dependencies: [
            "LifeboatHA", "LifeboatEtcd", "LifeboatHAPostgres", "LifeboatFailover", "LifeboatWAL", "LifeboatCore",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
        ], swiftSettings: swift6),
        // PostgreSQL continuous archiving into a repository: wal-push (and its helper), wal-fetch (and its prefetch),
        // base backups through the backup API (psql), point-in-time restore, the catalog of records.
        .target(name: "LifeboatPostgres", dependencies: [
            "LifeboatWAL", "LifeboatSnapshot", "LifeboatRepository", "LifeboatStorage", "LifeboatChunker", "LifeboatCrypto", "LifeboatProcess", "LifeboatCore",
        ], swiftSettings: swift6),
        // SQLite's WAL as bytes: headers, frames and their checksums, the frame logs Lifeboat stores, the catalog of
        // a database's records and the plan of a point-in-time restore. Pure.
        .target(name: "LifeboatSQLiteWAL", dependencies: ["LifeboatCore"], swiftSettings: swift6),
        // SQLite continuous replication: the follower (read transaction, frames copied at commits, its own
        // checkpoints, generations), the records in a repository, point-in-time restore, retention.
        .target(name: "LifeboatSQLite", dependencies: [
            "LifeboatSQLiteWAL", "LifeboatSnapshot", "LifeboatRepository", "LifeboatStorage", "LifeboatCore",
            .product(name: "GRDBSQLite", package: "GRDB.swift"),
        ], swiftSettings: swift6),
        // Child processes: own process group, timeouts, captured output, another user (hooks, dumps, playbooks).
        .target(name: "LifeboatProcess", dependencies: ["LifeboatCore", "CLifeboatSys"], swiftSettings: swift6),
        // Proof of recovery: playbooks (run, audit log, resume), drills per site in a sandbox (restore, site-loss,
        // corruption, from-kit), verification of restored trees, the engines' checks, reports.
        .target(name: "LifeboatDrill", dependencies: [
            "LifeboatDashboard",
            "LifeboatPlan", "LifeboatProcess", "LifeboatReplication", "LifeboatSnapshot", "LifeboatRepository", "LifeboatSites",
            "LifeboatStorage", "LifeboatCore", "LifeboatConfig", "LifeboatBackends", "LifeboatS3", "LifeboatFailover", "LifeboatSQLite", "LifeboatSQLiteWAL",
            "LifeboatPostgres", "LifeboatWAL", "CLifeboatSys",
            .product(name: "GRDB", package: "GRDB.swift"),
        ], swiftSettings: swift6),
        // The web dashboard's pages, sessions and forms: pure (no server), rendered from plain values.
        .target(name: "LifeboatDashboard", swiftSettings: swift6),
        // `lifeboat agent`: runs the plan (scheduler, jobs, state database, alerts, metrics, local API).
        .target(name: "LifeboatAgent", dependencies: [
            "LifeboatDrill", "LifeboatPostgres", "LifeboatSQLite", "LifeboatProcess", "LifeboatPlan", "LifeboatReplication", "LifeboatSnapshot", "LifeboatBackends", "LifeboatRepository", "LifeboatCore",
            "LifeboatDashboard", "LifeboatSites", "LifeboatServer", "LifeboatProxy", "LifeboatFailover", "LifeboatConfig", "LifeboatStorage", "LifeboatHTTP", "CLifeboatSys",
            "LifeboatHA", "LifeboatHAAgent",
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "HummingbirdTLS", package: "hummingbird"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ], swiftSettings: swift6),
        // The command-line interface as a library.
        .target(name: "LifeboatCommands", dependencies: [
            "LifeboatSnapshot", "CLifeboatSys", "LifeboatBackends", "LifeboatReplication", "LifeboatPlan", "LifeboatAgent", "LifeboatPostgres", "LifeboatWAL", "LifeboatSQLite", "LifeboatSQLiteWAL", "LifeboatDrill", "LifeboatProcess", "LifeboatS3", "LifeboatServer", "LifeboatSites", "LifeboatProxy", "LifeboatFailover", "LifeboatConfig", "LifeboatHTTP",
            "LifeboatHA", "LifeboatEtcd", "LifeboatHAAgent",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
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

        .testTarget(name: "LifeboatCoreTests", dependencies: ["LifeboatCore", "LifeboatTestSupport"], swiftSettings: swift6),
        .testTarget(name: "LifeboatChunkerTests", dependencies: ["LifeboatChunker"], swiftSettings: swift6),
        .testTarget(name: "LifeboatCryptoTests", dependencies: ["LifeboatCrypto"], swiftSettings: swift6),
        .testTarget(name: "LifeboatStorageTests", dependencies: ["LifeboatStorage", "LifeboatTestSupport"], swiftSettings: swift6),
        .testTarget(name: "LifeboatRepositoryTests", dependencies: ["LifeboatRepository", "LifeboatTestSupport"], swiftSettings: swift6),
        .testTarget(name: "LifeboatRemoteTests", dependencies: [
            "LifeboatREST", "LifeboatS3", "LifeboatServer", "LifeboatHTTP", "LifeboatTestSupport", "LifeboatCore",
        ], swiftSettings: swift6),
        .testTarget(name: "LifeboatFailoverTests", dependencies: ["LifeboatFailover"], swiftSettings: swift6),
        .testTarget(name: "LifeboatProxyTests", dependencies: ["LifeboatProxy", "LifeboatFailover", "LifeboatTestSupport"], swiftSettings: swift6),
        .testTarget(name: "LifeboatAgentTests", dependencies: ["LifeboatAgent", "LifeboatDrill", "LifeboatProcess", "LifeboatPlan", "LifeboatCore", "LifeboatSnapshot", "LifeboatSites",
                                                           "LifeboatBackends", "LifeboatStorage", "LifeboatReplication", .product(name: "Logging", package: "swift-log")], swiftSettings: swift6),
        .testTarget(name: "LifeboatDrillTests", dependencies: ["LifeboatDrill", "LifeboatPlan", "LifeboatProcess", "LifeboatCore"], swiftSettings: swift6),
        .testTarget(name: "LifeboatDashboardTests", dependencies: ["LifeboatDashboard"], swiftSettings: swift6),
        .testTarget(name: "LifeboatHATests", dependencies: ["LifeboatHA", "LifeboatFailover"], swiftSettings: swift6),
        .testTarget(name: "LifeboatEtcdTests", dependencies: ["LifeboatEtcd", "LifeboatHA", "LifeboatHAPostgres", "LifeboatHAAgent", "LifeboatProcess", "LifeboatTestSupport"], swiftSettings: swift6),
        .testTarget(name: "LifeboatWALTests", dependencies: ["LifeboatWAL", "LifeboatCore", "LifeboatTestSupport"], swiftSettings: swift6),
        .testTarget(name: "LifeboatPostgresTests", dependencies: ["LifeboatPostgres", "LifeboatWAL", "LifeboatRepository", "LifeboatStorage", "LifeboatCrypto", "LifeboatCore"], swiftSettings: swift6),
        .testTarget(name: "LifeboatSQLiteTests", dependencies: [
            "LifeboatSQLite", "LifeboatSQLiteWAL", "LifeboatRepository", "LifeboatStorage", "LifeboatCrypto", "LifeboatCore", "LifeboatTestSupport",
            .product(name: "GRDBSQLite", package: "GRDB.swift"),
        ], swiftSettings: swift6),
        .testTarget(name: "LifeboatPlanTests", dependencies: ["LifeboatPlan", "LifeboatCore", "LifeboatTestSupport"], swiftSettings: swift6),
        .testTarget(name: "LifeboatReplicationTests", dependencies: [
            "LifeboatReplication", "LifeboatBackends", "LifeboatSites", "LifeboatSnapshot", "LifeboatRepository", "LifeboatStorage",
            "LifeboatCrypto", "LifeboatCore",
        ], swiftSettings: swift6),
        .testTarget(name: "LifeboatSitesTests", dependencies: ["LifeboatSites", "LifeboatTestSupport"], swiftSettings: swift6),
        .testTarget(name: "LifeboatSnapshotTests", dependencies: ["LifeboatSnapshot", "LifeboatChunker", "LifeboatTestSupport"], swiftSettings: swift6),
    ]
)
