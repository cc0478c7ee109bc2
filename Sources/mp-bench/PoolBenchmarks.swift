import Multiprocessing

/// The closure pool: map throughput, per-task latency, CPU speedup, beside
/// CPython's `Pool` under fork, in alternating rounds.
enum PoolBenchmarks {
    static func run(quick: Bool) throws -> [Metric] {
        // Each figure is the median of its rounds after one warm-up round, on
        // both sides: a pool's first map also pays for its shared result
        // region and for the heap growing to hold the results, once.
        let rounds = quick ? 3 : 7
        let costlyRounds = 5 // cpu_speedup: seconds per round in CPython; fewer read 1.76 once
        let mapRounds = quick ? 11 : 15 // a map takes milliseconds here: more rounds steady the median (5 quick rounds ranged 28x-49x)
        let tiny = 1_000_000 // the same map in both modes: a smaller one is dominated by the forks
        let chunk1 = quick ? 5_000 : 20_000
        let asyncTasks = quick ? 2_000 : 10_000
        let blockingCalls = quick ? 50 : 200
        let pool = try MP.Pool(processes: 2)
        defer { pool.terminate(); try? pool.join() }
        let python = PeerRounds(python: pythonScript(tiny: tiny, chunk1: chunk1, asyncTasks: asyncTasks, blockingCalls: blockingCalls,
                                                     work: quick ? 300_000 : 1_500_000))
        defer { python?.finish() }
        func cpython(_ name: String, higherIsBetter: Bool = false) -> Contender {
            Contender(name: name + "_python", higherIsBetter: higherIsBetter) { python?.measure(name) }
        }

        /// Squares of 0..<tiny per second, the results checked.
        func squaresPerSecond(_ map: () throws -> [Int]) throws -> Double {
            let start = now()
            let squares = try map()
            let elapsed = now() - start
            guard squares.count == tiny, squares[tiny - 1] == (tiny - 1) * (tiny - 1) else { throw BenchError("map results wrong") }
            return Double(tiny) / elapsed
        }
        var metrics = try alternatingRounds(mapRounds, [
            Contender(name: "pool_map_tiny_items_per_s", higherIsBetter: true) {
                try squaresPerSecond { try pool.map(0..<tiny) { $0 * $0 } }
            },
            cpython("pool_map_tiny_items_per_s", higherIsBetter: true),
        ])
        metrics += try alternatingRounds(rounds, [
            // The one-call form: a fresh pool (start, map, terminate) per round.
            Contender(name: "parallel_map_fresh_items_per_s", higherIsBetter: true) {
                try squaresPerSecond { try (0..<tiny).parallelMap(processes: 2) { $0 * $0 } }
            },
            cpython("parallel_map_fresh_items_per_s", higherIsBetter: true),
            Contender(name: "pool_map_chunk1_items_per_s", higherIsBetter: true) {
                let start = now()
                let squares = try pool.map(0..<chunk1, chunksize: 1) { $0 * $0 }
                let elapsed = now() - start
                guard squares.count == chunk1 else { throw BenchError("map results wrong") }
                return Double(chunk1) / elapsed
            },
            cpython("pool_map_chunk1_items_per_s", higherIsBetter: true),
            Contender(name: "pool_apply_async_roundtrip_us") {
                let start = now()
                let results = (0..<asyncTasks).map { i in pool.applyAsync { i * i } }
                var sum = 0
                for result in results { sum += try result.get() }
                let elapsed = now() - start
                let expected = (0..<asyncTasks).reduce(0) { $0 + $1 * $1 }
                guard sum == expected else { throw BenchError("apply_async results wrong") }
                return elapsed / Double(asyncTasks) * 1e6
            },
            cpython("pool_apply_async_roundtrip_us"),
            Contender(name: "pool_apply_blocking_us") {
                let start = now()
                for i in 0..<blockingCalls { guard try pool.apply({ i + 1 }) == i + 1 else { throw BenchError("apply wrong") } }
                return (now() - start) / Double(blockingCalls) * 1e6
            },
            cpython("pool_apply_blocking_us"),
        ])
        metrics += try alternatingRounds(costlyRounds, [
            Contender(name: "cpu_speedup_2proc", higherIsBetter: true) { try cpuSpeedup(quick: quick, pool: pool) },
            cpython("cpu_speedup_2proc", higherIsBetter: true),
        ])
        return metrics
    }

    /// A CPU-bound function: integer hashing in a loop (no memory traffic).
    static func burn(_ seed: Int, _ steps: Int) -> Int {
        var x = UInt64(truncatingIfNeeded: seed) &+ 0x9E37_79B9_7F4A_7C15
        for _ in 0..<steps {
            x ^= x >> 33
            x = x &* 0xFF51_AFD7_ED55_8CCD
            x ^= x >> 29
        }
        return Int(truncatingIfNeeded: x & 0xFFFF)
    }

    /// 8 chunks of CPU work: serial time over the pool's (2 workers) time.
    static func cpuSpeedup(quick: Bool, pool: MP.Pool) throws -> Double {
        let steps = quick ? 5_000_000 : 25_000_000
        var start = now()
        let serial = (0..<8).map { burn($0, steps) }
        let serialTime = now() - start
        start = now()
        let parallel = try pool.map(0..<8, chunksize: 1) { burn($0, steps) }
        let parallelTime = now() - start
        guard serial == parallel else { throw BenchError("parallel results differ from serial") }
        return serialTime / parallelTime
    }

    /// CPython's side, one round per request.
    static func pythonScript(tiny: Int, chunk1: Int, asyncTasks: Int, blockingCalls: Int, work: Int) -> String {
        """
        import multiprocessing as mp, sys, time
        def sq(x): return x * x
        def inc(x): return x + 1
        def burn(seed):
            x = seed
            for _ in range(\(work)):
                x = (x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
            return x & 0xFFFF
        if __name__ == '__main__':
            pool = mp.get_context('fork').Pool(2)
            def tiny():
                s = time.perf_counter(); r = pool.map(sq, range(\(tiny))); return \(tiny) / (time.perf_counter() - s)
            def fresh():
                s = time.perf_counter()
                with mp.get_context('fork').Pool(2) as fresh_pool: r = fresh_pool.map(sq, range(\(tiny)))
                return \(tiny) / (time.perf_counter() - s)
            def chunk1():
                s = time.perf_counter(); r = pool.map(sq, range(\(chunk1)), chunksize=1); return \(chunk1) / (time.perf_counter() - s)
            def async_rt():
                s = time.perf_counter(); rs = [pool.apply_async(sq, (i,)) for i in range(\(asyncTasks))]
                [r.get() for r in rs]; return (time.perf_counter() - s) / \(asyncTasks) * 1e6
            def blocking():
                s = time.perf_counter()
                for i in range(\(blockingCalls)): pool.apply(inc, (i,))
                return (time.perf_counter() - s) / \(blockingCalls) * 1e6
            def speedup():
                s = time.perf_counter(); serial = [burn(i) for i in range(8)]; t1 = time.perf_counter() - s
                s = time.perf_counter(); par = pool.map(burn, range(8), chunksize=1); t2 = time.perf_counter() - s
                return t1 / t2
            rounds = {'pool_map_tiny_items_per_s': tiny, 'parallel_map_fresh_items_per_s': fresh,
                      'pool_map_chunk1_items_per_s': chunk1, 'pool_apply_async_roundtrip_us': async_rt,
                      'pool_apply_blocking_us': blocking, 'cpu_speedup_2proc': speedup}
            print('ready', flush=True)
            for line in sys.stdin:
                name = line.strip()
                print(name, rounds[name](), flush=True)
            pool.terminate()
        """
    }
}
