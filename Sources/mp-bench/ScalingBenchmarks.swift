import Multiprocessing

/// How cost grows: the task pool's throughput of tiny tasks and its
/// workers' memory for 1, 2, 4 and 8 workers, and a map's time from 10^3 to
/// 10^7 items, beside CPython's `Pool` under the same start method (fork),
/// in alternating rounds. Most of its time is CPython's 10^7-item map.
enum ScalingBenchmarks {
    static let workerCounts = [1, 2, 4, 8]
    static let mapSizes = [1_000, 10_000, 100_000, 1_000_000, 10_000_000]

    static func run(quick: Bool) throws -> [Metric] {
        let rounds = quick ? 3 : 5
        let tasks = quick ? 5_000 : 20_000
        let python = PeerRounds(python: pythonScript(tasks: tasks))
        defer { python?.finish() }
        var pools: [MP.TaskPool] = []
        defer { for pool in pools { pool.terminate(); try? pool.join() } }
        var contenders: [Contender] = []
        for workers in workerCounts {
            let pool = try MP.TaskPool(processes: workers, startMethod: .fork)
            // Every worker up and warm before the rounds.
            _ = try pool.map((0..<(workers * 4)).map { BenchSquare(x: $0) }, chunksize: 1)
            let rate = "scaling_tasks_per_s_workers_\(workers)", memory = "scaling_pss_kib_workers_\(workers)"
            contenders += [
                Contender(name: rate, higherIsBetter: true) {
                    let start = now()
                    let results = (0..<tasks).map { pool.applyAsync(BenchSquare(x: $0)) }
                    for result in results { _ = try result.get() }
                    return Double(tasks) / (now() - start)
                },
                Contender(name: rate + "_python", higherIsBetter: true) { python?.measure(rate) },
                Contender(name: memory) { pool.workerPids.compactMap(proportionalSetKiB).reduce(0, +) },
                Contender(name: memory + "_python") { python?.measure(memory) },
            ]
            pools.append(pool)
        }
        let mapPool = try MP.TaskPool(processes: 2, startMethod: .fork)
        pools.append(mapPool)
        for size in mapSizes {
            let name = "scaling_map_ms_items_\(size)"
            contenders += [
                Contender(name: name) {
                    let start = now()
                    let squares = try mapPool.map(0..<size) { BenchSquare(x: $0) }
                    let elapsed = now() - start
                    guard squares.count == size else { throw BenchError("map results wrong") }
                    return elapsed * 1e3
                },
                Contender(name: name + "_python") { python?.measure(name) },
            ]
        }
        return try alternatingRounds(rounds, contenders)
    }

    static func pythonScript(tasks: Int) -> String {
        """
        import multiprocessing as mp, sys, time
        def sq(x): return x * x
        def pss_kib(pid):
            with open('/proc/%d/smaps_rollup' % pid) as f:
                for line in f:
                    if line.startswith('Pss:'): return float(line.split()[1])
        if __name__ == '__main__':
            ctx = mp.get_context('fork')
            pools = {n: ctx.Pool(n) for n in \(workerCounts)}
            for n, pool in pools.items(): pool.map(sq, range(n * 4), 1)
            map_pool = ctx.Pool(2)
            def rate(n):
                pool = pools[n]
                s = time.perf_counter(); rs = [pool.apply_async(sq, (i,)) for i in range(\(tasks))]
                [r.get() for r in rs]; return \(tasks) / (time.perf_counter() - s)
            def memory(n):
                return sum(pss_kib(p.pid) for p in pools[n]._pool)
            def map_ms(size):
                s = time.perf_counter(); r = map_pool.map(sq, range(size)); return (time.perf_counter() - s) * 1e3
            rounds = {}
            for n in \(workerCounts):
                rounds['scaling_tasks_per_s_workers_%d' % n] = (lambda n: lambda: rate(n))(n)
                rounds['scaling_pss_kib_workers_%d' % n] = (lambda n: lambda: memory(n))(n)
            for size in \(mapSizes):
                rounds['scaling_map_ms_items_%d' % size] = (lambda size: lambda: map_ms(size))(size)
            print('ready', flush=True)
            for line in sys.stdin:
                name = line.strip()
                print(name, rounds[name](), flush=True)
            for pool in list(pools.values()) + [map_pool]: pool.terminate()
        """
    }
}
