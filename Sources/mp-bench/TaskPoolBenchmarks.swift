import Multiprocessing

/// The named-task pool's tiny tasks.
struct BenchSquare: MP.NamedTask {
    var x: Int
    func run() -> Int { x * x }
}

struct BenchIncrement: MP.NamedTask {
    var x: Int
    func run() -> Int { x + 1 }
}

/// Issue 10's figures: the persistent-worker pool for named tasks, beside
/// CPython's `Pool` (its default start method on Linux, fork, for the warm
/// pool; each method for the start figures).
enum TaskPoolBenchmarks {
    static func run(quick: Bool) throws -> [Metric] {
        let rounds = quick ? 3 : 7
        let mapRounds = quick ? 7 : 15
        let tiny = 1_000_000
        let asyncTasks = quick ? 2_000 : 10_000
        let blockingCalls = quick ? 100 : 500
        let starts = quick ? 3 : 7
        var metrics: [Metric] = []

        for method in MP.StartMethod.allCases {
            metrics.append(Metric(name: "pool_named_start_\(method)_us", value: try medianOf(starts, warmup: 1) {
                let start = now()
                let pool = try MP.TaskPool(processes: 2, startMethod: method)
                guard try pool.apply(BenchSquare(x: 3)) == 9 else { throw BenchError("apply wrong") }
                let elapsed = now() - start
                pool.terminate()
                try pool.join()
                return elapsed * 1e6
            }, higherIsBetter: false))
        }

        let pool = try MP.TaskPool(processes: 2)
        defer { pool.terminate(); try? pool.join() }
        metrics.append(Metric(name: "pool_named_apply_blocking_us", value: try medianOf(rounds, warmup: 1) {
            let start = now()
            for i in 0..<blockingCalls { guard try pool.apply(BenchIncrement(x: i)) == i + 1 else { throw BenchError("apply wrong") } }
            return (now() - start) / Double(blockingCalls) * 1e6
        }, higherIsBetter: false))
        metrics.append(Metric(name: "pool_named_apply_async_roundtrip_us", value: try medianOf(rounds, warmup: 1) {
            let start = now()
            let results = (0..<asyncTasks).map { pool.applyAsync(BenchSquare(x: $0)) }
            var sum = 0
            for result in results { sum += try result.get() }
            let elapsed = now() - start
            guard sum == (0..<asyncTasks).reduce(0, { $0 + $1 * $1 }) else { throw BenchError("apply_async results wrong") }
            return elapsed / Double(asyncTasks) * 1e6
        }, higherIsBetter: false))
        metrics.append(Metric(name: "pool_named_map_tiny_items_per_s", value: try medianOf(mapRounds, warmup: 1) {
            let start = now()
            let squares = try pool.map(0..<tiny) { BenchSquare(x: $0) }
            let elapsed = now() - start
            guard squares.count == tiny, squares[tiny - 1] == (tiny - 1) * (tiny - 1) else { throw BenchError("map results wrong") }
            return Double(tiny) / elapsed
        }, higherIsBetter: true))

        let threadItems = 100_000
        let threads = try MP.ThreadPool(processes: 2)
        defer { threads.terminate(); try? threads.join() }
        metrics.append(Metric(name: "thread_pool_map_items_per_s", value: try medianOf(rounds, warmup: 1) {
            let start = now()
            let squares = try threads.map(0..<threadItems) { $0 * $0 }
            let elapsed = now() - start
            guard squares.count == threadItems else { throw BenchError("thread map results wrong") }
            return Double(threadItems) / elapsed
        }, higherIsBetter: true))

        let better = ["pool_named_map_tiny_items_per_s": true, "thread_pool_map_items_per_s": true]
        if let output = runPython(pythonScript(tiny: tiny, asyncTasks: asyncTasks, blockingCalls: blockingCalls,
                                               rounds: rounds, mapRounds: mapRounds, starts: starts)) {
            metrics += parseMetrics(output, suffix: "_python", higherIsBetter: better)
        }
        return metrics
    }

    static func pythonScript(tiny: Int, asyncTasks: Int, blockingCalls: Int, rounds: Int, mapRounds: Int, starts: Int) -> String {
        """
        import multiprocessing as mp, statistics, time
        def sq(x): return x * x
        def inc(x): return x + 1
        def start(method):
            s = time.perf_counter()
            pool = mp.get_context(method).Pool(2)
            pool.apply(sq, (3,))
            t = time.perf_counter() - s
            pool.terminate(); pool.join()
            return t * 1e6
        if __name__ == '__main__':
            for method in ['fork', 'spawn', 'forkserver']:
                start(method)
                print('pool_named_start_%s_us' % method, statistics.median([start(method) for _ in range(\(starts))]), flush=True)
            pool = mp.get_context('fork').Pool(2)
            def blocking():
                s = time.perf_counter()
                for i in range(\(blockingCalls)): pool.apply(inc, (i,))
                return (time.perf_counter() - s) / \(blockingCalls) * 1e6
            def async_rt():
                s = time.perf_counter(); rs = [pool.apply_async(sq, (i,)) for i in range(\(asyncTasks))]
                [r.get() for r in rs]; return (time.perf_counter() - s) / \(asyncTasks) * 1e6
            def tiny():
                s = time.perf_counter(); r = pool.map(sq, range(\(tiny))); return \(tiny) / (time.perf_counter() - s)
            for name, f, rounds in [('pool_named_apply_blocking_us', blocking, \(rounds)), ('pool_named_apply_async_roundtrip_us', async_rt, \(rounds)),
                                    ('pool_named_map_tiny_items_per_s', tiny, \(mapRounds))]:
                f()
                print(name, statistics.median([f() for _ in range(rounds)]), flush=True)
            pool.terminate()
            from multiprocessing.dummy import Pool as ThreadPool
            threads = ThreadPool(2)
            def thread_map():
                s = time.perf_counter(); r = threads.map(sq, range(100000)); return 100000 / (time.perf_counter() - s)
            thread_map()
            print('thread_pool_map_items_per_s', statistics.median([thread_map() for _ in range(\(rounds))]), flush=True)
            threads.terminate()
        """
    }
}
