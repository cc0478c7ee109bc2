import CoreMetrics
import Glibc
import InMemoryTracing
import Multiprocessing
import Tracing

/// The named-task pool's tiny tasks.
struct BenchSquare: MP.NamedTask {
    var x: Int
    func run() -> Int { x * x }
}

struct BenchIncrement: MP.NamedTask {
    var x: Int
    func run() -> Int { x + 1 }
}

/// The persistent-worker pool for named tasks, beside CPython's `Pool` (its
/// default start method on Linux, fork, for the warm pool; each method for
/// the start and memory figures), in alternating rounds: ours, CPython's, ...
enum TaskPoolBenchmarks {
    static func run(quick: Bool) throws -> [Metric] {
        let rounds = quick ? 3 : 7
        let tiny = 1_000_000
        let asyncTasks = quick ? 2_000 : 10_000
        let blockingCalls = quick ? 100 : 500
        let threadItems = 100_000

        let python = PeerRounds(python: pythonScript(tiny: tiny, asyncTasks: asyncTasks, blockingCalls: blockingCalls,
                                                     threadItems: threadItems))
        defer { python?.finish() }
        let pool = try MP.TaskPool(processes: 2)
        defer { pool.terminate(); try? pool.join() }
        let threads = try MP.ThreadPool(processes: 2)
        defer { threads.terminate(); try? threads.join() }

        var contenders: [Contender] = []
        for method in MP.StartMethod.allCases {
            let name = "pool_named_start_\(method)_us"
            contenders.append(Contender(name: name) {
                let start = now()
                let pool = try MP.TaskPool(processes: 2, startMethod: method)
                guard try pool.apply(BenchSquare(x: 3)) == 9 else { throw BenchError("apply wrong") }
                let elapsed = now() - start
                pool.terminate()
                try pool.join()
                return elapsed * 1e6
            })
            contenders.append(Contender(name: name + "_python") { python?.measure(name) })
        }
        for method in MP.StartMethod.allCases {
            let name = "pool_worker_pss_kib_\(method)"
            contenders.append(Contender(name: name) {
                let pool = try MP.TaskPool(processes: 2, startMethod: method)
                defer { pool.terminate(); try? pool.join() }
                // Both workers have run a task, and sit idle.
                guard try pool.map([BenchSquare(x: 2), BenchSquare(x: 3)], chunksize: 1) == [4, 9] else { throw BenchError("map wrong") }
                let sizes = pool.workerPids.compactMap(proportionalSetKiB)
                guard sizes.count == 2 else { throw BenchError("no smaps_rollup for the workers") }
                return sizes.reduce(0, +) / 2
            })
            contenders.append(Contender(name: name + "_python") { python?.measure(name) })
        }
        contenders += [
            Contender(name: "pool_named_apply_blocking_us") {
                let start = now()
                for i in 0..<blockingCalls { guard try pool.apply(BenchIncrement(x: i)) == i + 1 else { throw BenchError("apply wrong") } }
                return (now() - start) / Double(blockingCalls) * 1e6
            },
            Contender(name: "pool_named_apply_blocking_us_python") { python?.measure("pool_named_apply_blocking_us") },
            Contender(name: "pool_named_apply_async_roundtrip_us") {
                let start = now()
                let results = (0..<asyncTasks).map { pool.applyAsync(BenchSquare(x: $0)) }
                var sum = 0
                for result in results { sum += try result.get() }
                let elapsed = now() - start
                guard sum == (0..<asyncTasks).reduce(0, { $0 + $1 * $1 }) else { throw BenchError("apply_async results wrong") }
                return elapsed / Double(asyncTasks) * 1e6
            },
            // The same round trip inside a span, every task traced by a recording
            // tracer (in memory): its span, its fields sent, the worker's context.
            Contender(name: "pool_named_apply_async_roundtrip_traced_us") {
                let tracer = InMemoryTracer()
                let start = now()
                let results = withTracer(tracer) {
                    withSpan("bench") { _ in (0..<asyncTasks).map { pool.applyAsync(BenchSquare(x: $0)) } }
                }
                var sum = 0
                for result in results { sum += try result.get() }
                let elapsed = now() - start
                guard sum == (0..<asyncTasks).reduce(0, { $0 + $1 * $1 }), tracer.finishedSpans.count == asyncTasks + 1 else {
                    throw BenchError("traced apply_async results or spans wrong")
                }
                return elapsed / Double(asyncTasks) * 1e6
            },
            // What a submission outside any trace pays for tracing: the check, a million times.
            Contender(name: "pool_tracing_untraced_check_ns") {
                let calls = 1_000_000
                var found = 0
                let start = now()
                for _ in 0..<calls where TaskSpan.begin("task BenchSquare", kind: .client) != nil { found += 1 }
                let elapsed = now() - start
                guard found == 0 else { throw BenchError("a trace outside any span") }
                return elapsed / Double(calls) * 1e9
            },
            Contender(name: "pool_named_apply_async_roundtrip_us_python") { python?.measure("pool_named_apply_async_roundtrip_us") },
            Contender(name: "pool_named_map_tiny_items_per_s", higherIsBetter: true) {
                let start = now()
                let squares = try pool.map(0..<tiny) { BenchSquare(x: $0) }
                let elapsed = now() - start
                guard squares.count == tiny, squares[tiny - 1] == (tiny - 1) * (tiny - 1) else { throw BenchError("map results wrong") }
                return Double(tiny) / elapsed
            },
            Contender(name: "pool_named_map_tiny_items_per_s_python", higherIsBetter: true) { python?.measure("pool_named_map_tiny_items_per_s") },
            // The same map, its progress watched: what a watcher costs (readings at most ten a second).
            Contender(name: "pool_named_map_tiny_watched_items_per_s", higherIsBetter: true) {
                let start = now()
                let result = pool.mapAsync((0..<tiny).map { BenchSquare(x: $0) }, chunksize: 10_000)
                let updates = result.progress!.updates
                Task { for await _ in updates {} } // ends with the map
                let squares = try result.get()
                let elapsed = now() - start
                guard squares.count == tiny else { throw BenchError("watched map results wrong") }
                return Double(tiny) / elapsed
            },
            Contender(name: "pool_named_map_tiny_unwatched_items_per_s", higherIsBetter: true) {
                let start = now()
                let squares = try pool.mapAsync((0..<tiny).map { BenchSquare(x: $0) }, chunksize: 10_000).get()
                let elapsed = now() - start
                guard squares.count == tiny else { throw BenchError("map results wrong") }
                return Double(tiny) / elapsed
            },
            // What the pool's metrics add to a task with no backend bootstrapped
            // (the no-op handlers): the calls one task makes, a million times.
            Contender(name: "pool_metrics_calls_per_task_ns") {
                let dimensions = [("pool", "task_pool")]
                let submitted = CoreMetrics.Counter(label: "mp_tasks_submitted_total", dimensions: dimensions)
                let completed = CoreMetrics.Counter(label: "mp_tasks_completed_total", dimensions: dimensions)
                let duration = CoreMetrics.Timer(label: "mp_task_duration_seconds", dimensions: dimensions)
                let wait = CoreMetrics.Timer(label: "mp_task_queue_wait_seconds", dimensions: dimensions)
                let busy = CoreMetrics.Gauge(label: "mp_workers_busy", dimensions: dimensions)
                let calls = 1_000_000
                let start = now()
                for i in 0..<calls {
                    submitted.increment(by: 1)
                    var clock = timespec()
                    clock_gettime(CLOCK_MONOTONIC, &clock)
                    wait.recordNanoseconds(Int64(clock.tv_nsec))
                    duration.recordNanoseconds(Int64(i))
                    completed.increment(by: 1)
                    busy.record(i & 1)
                    busy.record(0)
                }
                return (now() - start) / Double(calls) * 1e9
            },
            Contender(name: "thread_pool_map_items_per_s", higherIsBetter: true) {
                let start = now()
                let squares = try threads.map(0..<threadItems) { $0 * $0 }
                let elapsed = now() - start
                guard squares.count == threadItems else { throw BenchError("thread map results wrong") }
                return Double(threadItems) / elapsed
            },
            Contender(name: "thread_pool_map_items_per_s_python", higherIsBetter: true) { python?.measure("thread_pool_map_items_per_s") },
        ]
        return try alternatingRounds(rounds, contenders)
    }

    /// CPython's side, one round per request.
    static func pythonScript(tiny: Int, asyncTasks: Int, blockingCalls: Int, threadItems: Int) -> String {
        """
        import multiprocessing as mp, sys, time
        from multiprocessing.dummy import Pool as ThreadPool
        def sq(x): return x * x
        def inc(x): return x + 1
        def pss_kib(pid):
            with open('/proc/%d/smaps_rollup' % pid) as f:
                for line in f:
                    if line.startswith('Pss:'): return float(line.split()[1])
        def start(method):
            s = time.perf_counter()
            pool = mp.get_context(method).Pool(2)
            pool.apply(sq, (3,))
            t = time.perf_counter() - s
            pool.terminate(); pool.join()
            return t * 1e6
        def pss(method):
            pool = mp.get_context(method).Pool(2)
            pool.map(sq, [2, 3], 1)
            sizes = [pss_kib(p.pid) for p in pool._pool]
            pool.terminate(); pool.join()
            return sum(sizes) / len(sizes)
        if __name__ == '__main__':
            pool = mp.get_context('fork').Pool(2)
            threads = ThreadPool(2)
            def blocking():
                s = time.perf_counter()
                for i in range(\(blockingCalls)): pool.apply(inc, (i,))
                return (time.perf_counter() - s) / \(blockingCalls) * 1e6
            def async_rt():
                s = time.perf_counter(); rs = [pool.apply_async(sq, (i,)) for i in range(\(asyncTasks))]
                [r.get() for r in rs]; return (time.perf_counter() - s) / \(asyncTasks) * 1e6
            def tiny():
                s = time.perf_counter(); r = pool.map(sq, range(\(tiny))); return \(tiny) / (time.perf_counter() - s)
            def thread_map():
                s = time.perf_counter(); r = threads.map(sq, range(\(threadItems))); return \(threadItems) / (time.perf_counter() - s)
            rounds = {'pool_named_apply_blocking_us': blocking, 'pool_named_apply_async_roundtrip_us': async_rt,
                      'pool_named_map_tiny_items_per_s': tiny, 'thread_pool_map_items_per_s': thread_map}
            for method in ['fork', 'spawn', 'forkserver']:
                rounds['pool_named_start_%s_us' % method] = (lambda m: lambda: start(m))(method)
                rounds['pool_worker_pss_kib_%s' % method] = (lambda m: lambda: pss(m))(method)
            print('ready', flush=True)
            for line in sys.stdin:
                name = line.strip()
                print(name, rounds[name](), flush=True)
            pool.terminate(); threads.terminate()
        """
    }
}

/// The proportional set size of process `pid` in KiB (`Pss:` of
/// `/proc/PID/smaps_rollup`: its private pages plus its share of each
/// shared one), or nil.
func proportionalSetKiB(_ pid: Int32) -> Double? {
    let file = open("/proc/\(pid)/smaps_rollup", O_RDONLY | O_CLOEXEC)
    guard file >= 0 else { return nil }
    defer { close(file) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = read(file, &buffer, buffer.count)
        if count > 0 { bytes += buffer[0..<count]; continue }
        if count < 0 && errno == EINTR { continue }
        break
    }
    for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("Pss:") {
        return line.split(separator: " ").dropFirst().first.flatMap { Double($0) }
    }
    return nil
}
