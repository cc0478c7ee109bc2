import Dispatch
import Distributed
import Glibc
import Multiprocessing

/// The benchmark's actor: a counter in a host process.
distributed actor BenchCounter: MP.PlaceableActor {
    typealias ActorSystem = MP.ActorSystem
    var value = 0
    init(actorSystem: MP.ActorSystem) { self.actorSystem = actorSystem }
    distributed func increment() -> Int {
        value += 1
        return value
    }
}

/// Distributed actors in another process, beside a manager proxy call of
/// ours and, when Ray is installed (`pip install ray`), Ray's actor on the
/// same machine, in alternating rounds.
enum ActorBenchmarks {
    static func run(quick: Bool) throws -> [Metric] {
        let rounds = quick ? 3 : 7
        let calls = quick ? 2_000 : 10_000
        let pipelined = quick ? 10_000 : 50_000
        let places = quick ? 10 : 30
        let pairs = quick ? 2_000 : 10_000

        let host = try MP.ActorSystem.shared.host(in: .newProcess(.forkserver))
        defer { host.shutdown() }
        let counter = try blocking { try await host.place(BenchCounter.self) }
        let manager = try MP.Manager()
        defer { manager.shutdown() }
        let dict: MP.DictProxy<String, Int> = try manager.dict()
        let ray = PeerRounds(python: rayScript(calls: calls, pipelined: pipelined, places: places))
        defer { ray?.finish() }

        return try alternatingRounds(rounds, [
            Contender(name: "actor_call_roundtrip_us") {
                try blocking {
                    let start = now()
                    for _ in 0..<calls { _ = try await counter.increment() }
                    return (now() - start) / Double(calls) * 1e6
                }
            },
            // The host's own round trip, no actor run: what the transport costs of a call.
            Contender(name: "actor_host_ping_us") {
                try blocking {
                    let start = now()
                    for _ in 0..<calls { _ = try await host.actorCount() }
                    return (now() - start) / Double(calls) * 1e6
                }
            },
            Contender(name: "actor_call_roundtrip_us_ray") { ray?.measure("actor_call_roundtrip_us") },
            // Many calls outstanding, as Ray's figure is taken (`ray.get` of a
            // list of calls): every call sent at once, then all awaited.
            Contender(name: "actor_calls_per_s", higherIsBetter: true) {
                try blocking {
                    let start = now()
                    try await withThrowingTaskGroup(of: Int.self) { group in
                        for _ in 0..<(pipelined / 10) { group.addTask { try await counter.increment() } }
                        try await group.waitForAll()
                    }
                    return Double(pipelined / 10) / (now() - start)
                }
            },
            // Another shape of many outstanding: 64 callers, each awaiting its calls in turn.
            Contender(name: "actor_calls_per_s_64_callers", higherIsBetter: true) {
                try blocking {
                    let start = now()
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        for _ in 0..<64 {
                            group.addTask { for _ in 0..<(pipelined / 64) { _ = try await counter.increment() } }
                        }
                        try await group.waitForAll()
                    }
                    return Double(pipelined / 64 * 64) / (now() - start)
                }
            },
            Contender(name: "actor_calls_per_s_ray", higherIsBetter: true) { ray?.measure("actor_calls_per_s") },
            // A new host under forkserver, an actor placed in it, and its first call.
            Contender(name: "actor_place_first_call_ms") {
                try blocking {
                    var total = 0.0
                    for _ in 0..<places {
                        let start = now()
                        let fresh = try MP.ActorSystem.shared.host(in: .newProcess(.forkserver))
                        let placed = try await fresh.place(BenchCounter.self)
                        guard try await placed.increment() == 1 else { throw BenchError("a fresh actor counted wrong") }
                        total += now() - start
                        fresh.shutdown()
                    }
                    return total / Double(places) * 1e3
                }
            },
            Contender(name: "actor_place_first_call_ms_ray") { ray?.measure("actor_place_first_call_ms") },
            // The reference: a manager proxy's call (a set and a get, per pair, halved).
            Contender(name: "actor_manager_proxy_call_us") {
                let start = now()
                for i in 0..<pairs {
                    try dict.set("k", i)
                    _ = try dict["k"]
                }
                return (now() - start) / Double(pairs * 2) * 1e6
            },
        ])
    }

    /// Runs `body` on Swift's executor and waits here for it (rounds are plain calls).
    static func blocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var outcome: Result<T, any Error>?
        Task {
            do { outcome = .success(try await body()) } catch { outcome = .failure(error) }
            done.signal()
        }
        done.wait()
        return try outcome!.get()
    }

    /// Ray's actor, as its documentation shows one (`@ray.remote class`),
    /// on a local Ray started with the machine's CPUs; nil rounds when Ray is missing.
    static func rayScript(calls: Int, pipelined: Int, places: Int) -> String {
        """
        import signal, sys, time
        try:
            import ray
        except ImportError:
            sys.exit(0)
        signal.alarm(120)  # a Ray that cannot start ends this peer, not the benchmark
        ray.init(include_dashboard=False, log_to_driver=False, logging_level='ERROR')

        @ray.remote
        class Counter:
            def __init__(self):
                self.value = 0
            def increment(self):
                self.value += 1
                return self.value

        counter = Counter.remote()
        ray.get(counter.increment.remote())
        def roundtrip():
            s = time.perf_counter()
            for _ in range(\(calls) // 10):
                ray.get(counter.increment.remote())
            return (time.perf_counter() - s) / (\(calls) // 10) * 1e6
        def per_second():
            s = time.perf_counter()
            ray.get([counter.increment.remote() for _ in range(\(pipelined) // 10)])
            return (\(pipelined) // 10) / (time.perf_counter() - s)
        def place():
            total = 0.0
            for _ in range(max(1, \(places) // 10)):
                s = time.perf_counter()
                fresh = Counter.remote()
                ray.get(fresh.increment.remote())
                total += time.perf_counter() - s
                ray.kill(fresh)
            return total / max(1, \(places) // 10) * 1e3
        rounds = {'actor_call_roundtrip_us': roundtrip, 'actor_calls_per_s': per_second, 'actor_place_first_call_ms': place}
        signal.alarm(0)
        print('ready', flush=True)
        for line in sys.stdin:
            name = line.strip()
            if name not in rounds: break
            print(name, rounds[name](), flush=True)
        ray.shutdown()
        """
    }
}
