import _CMultiprocessingBench
import Multiprocessing

/// `proc_start_join_us`: start and join a process with an empty target, per process.
enum ProcessBenchmarks {
    static func run(quick: Bool) throws -> [Metric] {
        let iterations = quick ? 200 : 1_000
        let rounds = quick ? 3 : 5
        // Warm up: page in the fork path, create the runtime state.
        for _ in 0..<50 { try startJoin() }
        _ = cmp_bench_raw_fork_exit_wait_us(50)
        let figures = try interleavedMedians(rounds, [{
            let start = now()
            for _ in 0..<iterations { try startJoin() }
            return (now() - start) / Double(iterations) * 1e6
        }, { cmp_bench_raw_fork_exit_wait_us(Int32(iterations)) }])
        let (swift, c) = (figures[0], figures[1])
        var metrics = [
            Metric(name: "proc_start_join_us", value: swift, higherIsBetter: false),
            Metric(name: "proc_start_join_us_c", value: c, higherIsBetter: false),
        ]
        if let output = runPython(pythonScript(iterations: iterations, rounds: rounds)) {
            metrics += parseMetrics(output, suffix: "_python", higherIsBetter: [:])
        }
        return metrics
    }

    private static func startJoin() throws {
        let p = MP.Process {}
        try p.start()
        try p.join()
        guard p.exitCode == 0 else { throw BenchError("child exited with \(String(describing: p.exitCode))") }
    }

    private static func pythonScript(iterations: Int, rounds: Int) -> String {
        """
        import multiprocessing as mp, statistics, time
        def empty():
            pass
        if __name__ == '__main__':
            ctx = mp.get_context('fork')
            for _ in range(50):
                p = ctx.Process(target=empty); p.start(); p.join()
            results = []
            for _ in range(\(rounds)):
                start = time.perf_counter()
                for _ in range(\(iterations)):
                    p = ctx.Process(target=empty); p.start(); p.join()
                results.append((time.perf_counter() - start) / \(iterations) * 1e6)
            print('proc_start_join_us', statistics.median(results))
        """
    }
}
