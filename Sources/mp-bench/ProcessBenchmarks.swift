import _CMultiprocessingBench
import Multiprocessing

/// An empty named task: what the spawn and forkserver figures start.
struct EmptyTask: MP.NamedTask {
    func run() {}
}

/// `proc_start_join_us`: start and join a process with an empty target, per
/// process; `_spawn_us` and `_forkserver_us`: the same with an empty named
/// task under those start methods (CPython's forkserver started before timing).
enum ProcessBenchmarks {
    static func run(quick: Bool) throws -> [Metric] {
        let iterations = quick ? 200 : 1_000
        let rounds = quick ? 3 : 5
        // Finding the named tasks: once per process, on first use.
        let discoveryStart = now()
        let known = MP.namedTaskNames()
        let discovery = (now() - discoveryStart) * 1e6
        guard known.contains(EmptyTask.name) else { throw BenchError("EmptyTask was not found by name") }
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
            Metric(name: "named_task_discovery_us", value: discovery, higherIsBetter: false),
            Metric(name: "proc_start_join_us", value: swift, higherIsBetter: false),
            Metric(name: "proc_start_join_us_c", value: c, higherIsBetter: false),
        ]
        // Spawn and forkserver, alternating rounds; the server's start is warm-up.
        let launched = quick ? 40 : 200
        for method in [MP.StartMethod.spawn, .forkserver] { for _ in 0..<5 { try startJoin(method) } }
        let methodFigures = try interleavedMedians(rounds, [MP.StartMethod.spawn, .forkserver].map { method in {
            let count = method == .spawn ? launched : launched * 4
            let start = now()
            for _ in 0..<count { try startJoin(method) }
            return (now() - start) / Double(count) * 1e6
        } })
        metrics += [
            Metric(name: "proc_start_join_spawn_us", value: methodFigures[0], higherIsBetter: false),
            Metric(name: "proc_start_join_forkserver_us", value: methodFigures[1], higherIsBetter: false),
        ]
        if let output = runPython(pythonScript(iterations: iterations, rounds: rounds, launched: quick ? 10 : 30)) {
            metrics += parseMetrics(output, suffix: "_python", higherIsBetter: [:])
        }
        return metrics
    }

    private static func startJoin(_ method: MP.StartMethod) throws {
        let p = MP.getContext(method).Process(target: EmptyTask())
        try p.start()
        try p.join()
        guard p.exitCode == 0 else { throw BenchError("\(method) child exited with \(String(describing: p.exitCode))") }
    }

    private static func startJoin() throws {
        let p = MP.Process {}
        try p.start()
        try p.join()
        guard p.exitCode == 0 else { throw BenchError("child exited with \(String(describing: p.exitCode))") }
    }

    private static func pythonScript(iterations: Int, rounds: Int, launched: Int) -> String {
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
            for method, count in (('spawn', \(launched)), ('forkserver', \(launched) * 2)):
                ctx = mp.get_context(method)
                for _ in range(3):  # starts the forkserver, imports in the children
                    p = ctx.Process(target=empty); p.start(); p.join()
                results = []
                for _ in range(\(rounds)):
                    start = time.perf_counter()
                    for _ in range(count):
                        p = ctx.Process(target=empty); p.start(); p.join()
                    results.append((time.perf_counter() - start) / count * 1e6)
                print('proc_start_join_%s_us' % method, statistics.median(results))
        """
    }
}
