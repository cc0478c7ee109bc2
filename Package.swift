// swift-tools-version:6.3
import PackageDescription

// The platform is Linux with glibc (pidfds, epoll, clone3, memfd, robust
// process-shared mutexes): every source imports Glibc unconditionally.
// Tools 6.3: the code uses `nonisolated(nonsending)` and `@section`/`@used`.

let package = Package(
    name: "swift-multiprocessing",
    products: [
        .library(name: "Multiprocessing", targets: ["Multiprocessing"]),
        // The named-task pool on many machines through PostgreSQL: its own
        // product, so a program that does not use it builds no NIO.
        .library(name: "MultiprocessingCluster", targets: ["MultiprocessingCluster"]),
        // The task pool and a manager's server as swift-service-lifecycle
        // services: apart, so the core builds no ServiceLifecycle.
        .library(name: "MultiprocessingServices", targets: ["MultiprocessingServices"]),
        // The tour: every Python tutorial program, translated. Builds no NIO.
        .executable(name: "mp-examples", targets: ["mp-examples"]),
        // The cluster's tour, and its parts one terminal each (a throwaway
        // PostgreSQL, workers, a pool): apart, because it builds NIO.
        .executable(name: "mp-cluster-examples", targets: ["mp-cluster-examples"]),
        // The operators' command: `mp-cluster status --database URL [--watch]`.
        .executable(name: "mp-cluster", targets: ["mp-cluster"]),
        .executable(name: "mp-bench", targets: ["mp-bench"]),
        // mp-bench's small program: spawn from a binary that maps only the core library.
        .executable(name: "mp-spawn-small", targets: ["mp-spawn-small"]),
        .executable(name: "mp-forksafety", targets: ["mp-forksafety"]),
    ],
    dependencies: [
        // Errno and FileDescriptor: the typed errno and descriptor vocabulary of the platform layer.
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        // HMAC (SHA-256, and MD5 for CPython 3.11 peers) in the authentication
        // handshake of MP.Listener and MP.Client: CPython's, byte for byte.
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        // The Swift ecosystem's logging API, for the library's lifecycle events
        // (Python's multiprocessing.get_logger / log_to_stderr); silent by default.
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        // Services started and stopped with a ServiceGroup (graceful shutdown on
        // SIGTERM), for MultiprocessingServices and the cluster's worker; postgres-nio
        // already builds it.
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        // The Swift ecosystem's metrics API: the pools' counters and timers
        // (tasks, failures by reason, durations, workers), silent unless the
        // program bootstraps a backend. CoreMetrics has no dependencies.
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        // The Swift ecosystem's tracing API: a task submitted inside a span runs in a
        // child span in the worker (the context travels with the task, W3C
        // traceparent in the cluster's rows); silent unless a tracer is bootstrapped.
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.7.3"),
        // Command lines of the two executables (`mp-examples [list|NAME]`, `mp-bench [--quick] [--json FILE]`).
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // PostgreSQL's wire protocol (queries, LISTEN/NOTIFY, a connection pool)
        // for the cluster pool only: the core module never imports it.
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        // postgres-nio's event loops; the cluster makes its own per process (see ClusterStore).
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        // TLS to the database (`sslmode=` in the cluster's URL); postgres-nio already builds it.
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
    ],
    targets: [
        // The thin C shim of the platform layer: one wrapper per Linux call Swift's Glibc module
        // cannot reach (raw syscalls, variadic prctl/fcntl, CMSG and CPU_SET macros, epoll_event).
        .target(name: "_CMultiprocessingShims"),
        // The runtime pieces that must be C: the after-fork lock registry, a forked child's first
        // steps and crash naming, the child-side executor for Swift concurrency, named-task
        // discovery, the forkserver's clone3 repair, a launched child's start.
        .target(name: "_CMultiprocessingRuntime"),
        // The synchronisation algorithms that need C: robust process-shared mutexes, futexes,
        // atomics on shared memory, the queue's ring.
        .target(name: "_CMultiprocessingSync"),
        // The raw-C floors of mp-bench; no user's binary links them.
        .target(name: "_CMultiprocessingBench", dependencies: ["_CMultiprocessingSync"]),
        // The platform layer: one wrapper per system call (one errno rule), OSError,
        // deadlines, fork-safe locks, the descriptor watcher. Package-internal:
        // the library and the cluster use it; users never import it.
        .target(
            name: "MultiprocessingPlatform",
            dependencies: [
                "_CMultiprocessingShims",
                "_CMultiprocessingRuntime",
                "_CMultiprocessingSync",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .target(
            name: "Multiprocessing",
            dependencies: [
                "MultiprocessingPlatform",
                "_CMultiprocessingRuntime",
                "_CMultiprocessingSync",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .target(
            name: "MultiprocessingServices",
            dependencies: [
                "Multiprocessing",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .target(
            name: "MultiprocessingCluster",
            dependencies: [
                "Multiprocessing",
                "MultiprocessingPlatform",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "mp-examples",
            dependencies: [
                "Multiprocessing",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "mp-cluster",
            dependencies: [
                "Multiprocessing",
                "MultiprocessingCluster",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "mp-cluster-examples",
            dependencies: [
                "Multiprocessing",
                "MultiprocessingCluster",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "mp-bench",
            dependencies: [
                "Multiprocessing",
                "MultiprocessingCluster",
                "_CMultiprocessingBench",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "mp-spawn-small",
            dependencies: ["Multiprocessing"],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // Counts hung children per start method in a program whose threads
        // are busy in Foundation, Dispatch, Swift concurrency, malloc, stdio.
        .executableTarget(
            name: "mp-forksafety",
            dependencies: [
                "Multiprocessing",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // Network namespaces as machines, for the tests that cross a network.
        .target(name: "NetworkLab", path: "Tests/NetworkLab", swiftSettings: [.swiftLanguageMode(.v6)]),
        .testTarget(
            name: "MultiprocessingTests",
            dependencies: ["Multiprocessing", "MultiprocessingPlatform", "NetworkLab",
                           .product(name: "MetricsTestKit", package: "swift-metrics"),
                           .product(name: "InMemoryTracing", package: "swift-distributed-tracing")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .testTarget(
            name: "MultiprocessingClusterTests",
            dependencies: ["MultiprocessingCluster", "Multiprocessing", "MultiprocessingPlatform", "MultiprocessingServices", "NetworkLab",
                           .product(name: "PostgresNIO", package: "postgres-nio"),
                           .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                           .product(name: "MetricsTestKit", package: "swift-metrics"),
                           .product(name: "InMemoryTracing", package: "swift-distributed-tracing")],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
