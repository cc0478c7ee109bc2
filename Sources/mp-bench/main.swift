import ArgumentParser
import Multiprocessing

/// `mp-bench`: this library side by side with CPython and raw C, in one run.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mp-bench",
        abstract: "Measures swift-multiprocessing against CPython's multiprocessing and raw C, and prints the ratios."
    )

    @Flag(help: "Fewer iterations: a quick look, not a figure to publish.")
    var quick = false

    @Option(help: "Also write the figures as one JSON object {\"metric_name\": number} to this file.")
    var json: String?

    @Option(help: "Run only these groups (repeatable): process, comm, connection, wire, pool, taskpool, cluster, scaling, limits, actors.")
    var only: [Group] = []

    enum Group: String, ExpressibleByArgument, CaseIterable {
        case process, comm, connection, wire, pool, taskpool, cluster, scaling, limits, actors
    }

    func run() throws {
        let groups = only.isEmpty ? Group.allCases : only
        var metrics: [Metric] = []
        for group in Group.allCases where groups.contains(group) {
            metrics += try inFreshProcess(group)
        }
        printTable(metrics)
        if let json { try writeJSON(metrics, to: json) }
    }

    /// Runs a group in a child forked from this (still idle) process, as
    /// CPython's side runs in a fresh interpreter: a group's figures do not
    /// depend on the heap and page tables earlier groups left behind (the
    /// pool's map, which forks per map, read 28x CPython after the other
    /// groups and 31-49x alone).
    func inFreshProcess(_ group: Group) throws -> [Metric] {
        let (receiver, sender) = try MP.Pipe(duplex: false, maxMessageSize: 1 << 20)
        let quick = self.quick
        let child = MP.Process(name: "mp-bench-\(group.rawValue)") { () async throws in
            receiver.close()
            let metrics: [Metric]
            switch group {
            case .process: metrics = try ProcessBenchmarks.run(quick: quick)
            case .comm: metrics = try CommBenchmarks.run(quick: quick)
            case .connection: metrics = try ConnectionBenchmarks.run(quick: quick)
            case .wire: metrics = try WireBenchmarks.run(quick: quick)
            case .pool: metrics = try PoolBenchmarks.run(quick: quick)
            case .taskpool: metrics = try TaskPoolBenchmarks.run(quick: quick)
            case .cluster: metrics = try await ClusterBenchmarks.run(quick: quick)
            case .scaling: metrics = try ScalingBenchmarks.run(quick: quick)
            case .limits: metrics = try LimitsBenchmarks.run(quick: quick)
            case .actors: metrics = try ActorBenchmarks.run(quick: quick)
            }
            try sender.send(metrics)
        }
        try child.start()
        sender.close()
        let received = Result { () throws(MP.Error) in try receiver.recv([Metric].self) }
        try? child.join()
        do {
            return try received.get()
        } catch {
            throw BenchError("the \(group.rawValue) group failed (\(child.exitStatus.map { "\($0)" } ?? "no exit status")): \(error)")
        }
    }
}

BenchCommand.main()
