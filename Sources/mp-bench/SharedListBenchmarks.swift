import Multiprocessing

/// Issue 13's figure: a ShareableList item read plus written, beside CPython's.
enum SharedListBenchmarks {
    static func run(quick: Bool) throws -> [Metric] {
        let iterations = quick ? 200_000 : 1_000_000
        let rounds = quick ? 3 : 5
        let list = try MP.ShareableList([1, 2.5, "hello", true, nil, 6, 7, 8])
        defer { try? list.unlink() }
        var metrics: [Metric] = []
        metrics.append(Metric(name: "shareable_list_get_set_ns", value: try medianOf(rounds, warmup: 1) {
            let start = now()
            var sum = 0
            for i in 0..<iterations {
                if case .int(let value) = list[5] { sum &+= value }
                try list.set(5, to: .int(i))
            }
            let elapsed = now() - start
            guard sum != 0 else { throw BenchError("the list did not change") }
            return elapsed / Double(iterations) * 1e9
        }, higherIsBetter: false))
        let script = """
        import statistics, time
        from multiprocessing import shared_memory
        sl = shared_memory.ShareableList([1, 2.5, 'hello', True, None, 6, 7, 8])
        def run():
            s = time.perf_counter(); total = 0
            for i in range(\(iterations / 10)):
                total += sl[5]; sl[5] = i
            return (time.perf_counter() - s) / \(iterations / 10) * 1e9
        run()
        print('shareable_list_get_set_ns', statistics.median([run() for _ in range(\(rounds))]), flush=True)
        sl.shm.close(); sl.shm.unlink()
        """
        if let output = runPython(script) { metrics += parseMetrics(output, suffix: "_python", higherIsBetter: [:]) }
        return metrics
    }
}
