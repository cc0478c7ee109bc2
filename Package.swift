// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "swift-multiprocessing",
    products: [
        .library(name: "Multiprocessing", targets: ["Multiprocessing"]),
        .executable(name: "mp-examples", targets: ["mp-examples"]),
        .executable(name: "mp-bench", targets: ["mp-bench"]),
    ],
    dependencies: [
        // Errno and FileDescriptor: the typed errno and descriptor vocabulary of the platform layer.
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        // Command lines of the two executables (`mp-examples [list|NAME]`, `mp-bench [--quick] [--json FILE]`).
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // The few Linux calls Swift's Glibc module cannot reach (prctl, pidfd_open, gettid via syscall),
        // the child-side Swift-concurrency executor (swiftcall hooks), and the raw-C benchmark floors.
        .target(name: "CMultiprocessing"),
        .target(
            name: "Multiprocessing",
            dependencies: [
                "CMultiprocessing",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "mp-examples",
            dependencies: [
                "Multiprocessing",
                "CMultiprocessing",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "mp-bench",
            dependencies: [
                "Multiprocessing",
                "CMultiprocessing",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .testTarget(
            name: "MultiprocessingTests",
            dependencies: ["Multiprocessing", "CMultiprocessing"],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
