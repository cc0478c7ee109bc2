import Dispatch
import Glibc
import ArgumentParser
import Multiprocessing
import MultiprocessingCluster

/// `mp-cluster-examples`: the cluster pool on one machine, and the pieces to
/// try it by hand in several terminals (a throwaway server, workers, a pool).
@main
struct ClusterExamplesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mp-cluster-examples",
        abstract: "The named-task pool on PostgreSQL: a tour on one machine, or its parts one terminal each.",
        discussion: """
            With no subcommand, starts a throwaway PostgreSQL, two workers and a pool, and prints \
            what the pool computed. By hand: 'postgres' in one terminal prints a URL; 'worker URL' \
            in two more; 'pool URL' in a fourth.
            """,
        subcommands: [Tour.self, Postgres.self, Worker.self, Pool.self],
        defaultSubcommand: Tour.self
    )

    struct Tour: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A throwaway server, two workers and a pool, on this machine.")
        func run() async throws {
            MP.setLineBufferedOutput()   // lines appear as printed, also into a pipe
            try await tour()
        }
    }

    struct Postgres: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Starts a throwaway PostgreSQL, prints its URL, and removes it on Ctrl-C or SIGTERM.")
        @Option(help: "Also listen on this TCP address (for workers in other namespaces or machines).")
        var listen: String?

        func run() async throws {
            let database = try MP.Cluster.LocalPostgres(listenAddress: listen)
            defer { database.remove() }
            print(database.tcpURL ?? database.url)
            print("(Ctrl-C stops and removes it)")
            fflush(nil)
            await firstSignal(of: [SIGINT, SIGTERM])
        }
    }

    struct Worker: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Serves the cluster's tasks until SIGTERM or Ctrl-C.")
        @Argument(help: "The database's URL.") var url: String
        @Option(help: "Local worker processes (default: the CPUs this process may use).") var concurrency: Int?

        func run() async throws {
            MP.logToStderr(level: .info)
            // Ctrl-C stops it as SIGTERM does: it claims nothing more, hands back what it holds, and returns.
            onSignal(SIGINT) { MP.Cluster.stopWorkers() }
            try await MP.Cluster.runWorker(database: url, concurrency: concurrency, startMethod: .forkserver)
        }
    }

    struct Pool: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Applies and maps cubes on the cluster's workers.")
        @Argument(help: "The database's URL.") var url: String
        func run() async throws { try await usePool(database: url) }
    }
}

/// Returns when one of `signals` arrives (their default action, ending the
/// program, is replaced for good).
func firstSignal(of signals: [Int32]) async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let once = DispatchSemaphore(value: 1)
        for number in signals {
            onSignal(number) { if once.wait(timeout: .now()) == .success { continuation.resume() } }
        }
    }
}

/// Runs `action` each time `number` arrives, instead of the signal's default
/// action: Dispatch watches it on a queue of its own.
func onSignal(_ number: Int32, perform action: @escaping @Sendable () -> Void) {
    signal(number, SIG_IGN)
    let source = DispatchSource.makeSignalSource(signal: number, queue: signalQueue)
    source.setEventHandler(handler: action)
    source.resume()
    signalQueue.sync { signalSources.append(source) }
}

private let signalQueue = DispatchQueue(label: "signals")
/// The sources of ``onSignal(_:perform:)``, kept for the rest of the program (on `signalQueue`).
nonisolated(unsafe) private var signalSources: [any DispatchSourceSignal] = []
