import ArgumentParser
import Foundation
import Multiprocessing
import MultiprocessingCluster

/// `mp-cluster`: what an operator of a cluster runs.
@main
struct ClusterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mp-cluster",
        abstract: "Looks after a swift-multiprocessing cluster.",
        subcommands: [StatusCommand.self]
    )
}

/// `mp-cluster status --database URL [--watch] [--interval S]`.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Shows the cluster's workers, its tasks by state, the last minute's throughput and failures.",
        discussion: "Reads only: it creates nothing in the database."
    )

    @Option(help: "The PostgreSQL URL the pools and workers use (postgres://user:password@host:5432/db?sslmode=...).")
    var database: String

    @Flag(help: "Refresh until interrupted (Ctrl-C).")
    var watch = false

    @Option(help: "Seconds between refreshes with --watch.")
    var interval: Double = 2

    func validate() throws {
        guard interval >= 0.2 else { throw ValidationError("--interval must be at least 0.2 s (got \(interval))") }
    }

    func run() async throws {
        let terminal = isatty(STDOUT_FILENO) == 1
        repeat {
            let status = try await MP.Cluster.status(database: database)
            let stamp = ISO8601DateFormatter().string(from: Date())
            if watch && terminal {
                // Home and clear, then the snapshot: one screen, redrawn in place.
                print("\u{1B}[H\u{1B}[2J", terminator: "")
            }
            if watch { print("\(stamp)") }
            print(status.rendered())
            if watch && !terminal { print("") }
            fflush(nil)
            if watch { try await Task.sleep(for: .seconds(interval)) }
        } while watch
    }
}
