import ArgumentParser

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

    @Option(help: "Run only these groups (repeatable): process, comm, wire, pool.")
    var only: [Group] = []

    enum Group: String, ExpressibleByArgument, CaseIterable {
        case process, comm, wire, pool
    }

    func run() throws {
        let groups = only.isEmpty ? Group.allCases : only
        var metrics: [Metric] = []
        if groups.contains(.process) { metrics += try ProcessBenchmarks.run(quick: quick) }
        if groups.contains(.comm) { metrics += try CommBenchmarks.run(quick: quick) }
        if groups.contains(.wire) { metrics += try WireBenchmarks.run(quick: quick) }
        if groups.contains(.pool) { metrics += try PoolBenchmarks.run(quick: quick) }
        printTable(metrics)
        if let json { try writeJSON(metrics, to: json) }
    }
}

BenchCommand.main()
