import Glibc
import _CMultiprocessingBench
import Multiprocessing

/// An empty named task: what the spawn and forkserver figures start.
struct EmptyTask: MP.NamedTask {
    func run() {}
}

/// `proc_start_join_us`: start and join a process with an empty target, per
/// process, beside the raw C floor; `_spawn_us` and `_forkserver_us`: the
/// same with an empty named task under those start methods (CPython's
/// forkserver started before timing); `_spawn_small_us`: spawn from
/// `mp-spawn-small`, a program that imports only Multiprocessing. Every
/// figure in alternating rounds with CPython's.
enum ProcessBenchmarks {
    static func run(quick: Bool) throws -> [Metric] {
        let iterations = quick ? 200 : 1_000
        let rounds = quick ? 3 : 7
        let launched = quick ? 20 : 60
        // Finding the named tasks: once per process, on first use.
        let discoveryStart = now()
        let known = MP.namedTaskNames()
        let discovery = (now() - discoveryStart) * 1e6
        guard known.contains(EmptyTask.name) else { throw BenchError("EmptyTask was not found by name") }
        // Warm up: page in the fork path, create the runtime state, start the forkserver.
        for _ in 0..<50 { try startJoin() }
        _ = cmp_bench_raw_fork_exit_wait_us(50)
        for method in [MP.StartMethod.spawn, .forkserver] { for _ in 0..<5 { try startJoin(method) } }

        let python = PeerRounds(python: pythonScript(iterations: iterations, launched: launched))
        defer { python?.finish() }
        let small = smallSpawner(count: launched)
        defer { small?.finish() }
        if small == nil {
            print("note: mp-spawn-small is not built beside mp-bench (swift build -c release --product mp-spawn-small): no proc_start_join_spawn_small_us")
        }
        var metrics = [Metric(name: "named_task_discovery_us", value: discovery, higherIsBetter: false)]
        if let value = small?.measure("named_task_discovery_small_us") {
            metrics.append(Metric(name: "named_task_discovery_small_us", value: value, higherIsBetter: false))
        }
        metrics += try alternatingRounds(rounds, [
            Contender(name: "proc_start_join_us") {
                let start = now()
                for _ in 0..<iterations { try startJoin() }
                return (now() - start) / Double(iterations) * 1e6
            },
            Contender(name: "proc_start_join_us_c") { cmp_bench_raw_fork_exit_wait_us(Int32(iterations)) },
            Contender(name: "proc_start_join_us_python") { python?.measure("proc_start_join_us") },
            Contender(name: "proc_start_join_spawn_us") { try perStart(.spawn, launched) },
            Contender(name: "proc_start_join_spawn_small_us") { small?.measure("proc_start_join_spawn_small_us") },
            Contender(name: "proc_start_join_spawn_us_python") { python?.measure("proc_start_join_spawn_us") },
            Contender(name: "proc_start_join_forkserver_us") { try perStart(.forkserver, launched * 4) },
            Contender(name: "proc_start_join_forkserver_us_python") { python?.measure("proc_start_join_forkserver_us") },
        ])
        // The small program's counterpart is CPython's spawn, the same rounds.
        if let spawnPython = metrics.first(where: { $0.name == "proc_start_join_spawn_us_python" }),
           metrics.contains(where: { $0.name == "proc_start_join_spawn_small_us" }) {
            metrics.append(Metric(name: "proc_start_join_spawn_small_us_python", value: spawnPython.value, higherIsBetter: false,
                                  low: spawnPython.low, high: spawnPython.high, rounds: spawnPython.rounds))
        }
        return metrics
    }

    /// `mp-spawn-small` beside this executable, as a peer of the rounds; nil when it is not built.
    private static func smallSpawner(count: Int) -> PeerRounds? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard length > 0 else { return nil }
        let own = String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let helper = own.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/") + "/mp-spawn-small"
        guard access(helper, X_OK) == 0 else { return nil }
        return PeerRounds(arguments: [helper, String(count)])
    }

    private static func perStart(_ method: MP.StartMethod, _ count: Int) throws -> Double {
        let start = now()
        for _ in 0..<count { try startJoin(method) }
        return (now() - start) / Double(count) * 1e6
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

    /// CPython's side, one round per request: fork, spawn or forkserver.
    private static func pythonScript(iterations: Int, launched: Int) -> String {
        """
        import multiprocessing as mp, sys, time
        def empty():
            pass
        def round_of(method, count):
            ctx = mp.get_context(method)
            start = time.perf_counter()
            for _ in range(count):
                p = ctx.Process(target=empty); p.start(); p.join()
            return (time.perf_counter() - start) / count * 1e6
        if __name__ == '__main__':
            counts = {'proc_start_join_us': ('fork', \(iterations)),
                      'proc_start_join_spawn_us': ('spawn', \(launched)),
                      'proc_start_join_forkserver_us': ('forkserver', \(launched) * 2)}
            for method, _ in counts.values():
                for _ in range(3):  # starts the forkserver, imports in the children
                    round_of(method, 1)
            print('ready', flush=True)
            for line in sys.stdin:
                name = line.strip()
                method, count = counts[name]
                print(name, round_of(method, count), flush=True)
        """
    }
}
