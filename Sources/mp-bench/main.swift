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

    func run() throws {
        var metrics: [Metric] = []
        metrics += try ProcessBenchmarks.run(quick: quick)
        metrics += try CommBenchmarks.run(quick: quick)
        metrics += try WireBenchmarks.run(quick: quick)
        metrics += try PoolBenchmarks.run(quick: quick)
        printTable(metrics)
        if let json { try writeJSON(metrics, to: json) }
    }
}

BenchCommand.main()
