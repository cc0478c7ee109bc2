import Multiprocessing

/// A ShareableList item read plus written, beside CPython's, in alternating rounds.
enum SharedListBenchmarks {
    static func run(quick: Bool) throws -> [Metric] {
        let iterations = quick ? 200_000 : 1_000_000
        let rounds = quick ? 3 : 5
        let list = try MP.ShareableList([1, 2.5, "hello", true, nil, 6, 7, 8])
        defer { try? list.unlink() }
        let python = PeerRounds(python: """
            import sys, time
            from multiprocessing import shared_memory
            sl = shared_memory.ShareableList([1, 2.5, 'hello', True, None, 6, 7, 8])
            def run():
                s = time.perf_counter(); total = 0
                for i in range(\(iterations / 10)):
                    total += sl[5]; sl[5] = i
                return (time.perf_counter() - s) / \(iterations / 10) * 1e9
            print('ready', flush=True)
            for line in sys.stdin:
                print(line.strip(), run(), flush=True)
            sl.shm.close(); sl.shm.unlink()
            """)
        defer { python?.finish() }
        return try alternatingRounds(rounds, [
            Contender(name: "shareable_list_get_set_ns") {
                let start = now()
                var sum = 0
                for i in 0..<iterations {
                    if case .int(let value) = list[5] { sum &+= value }
                    try list.set(5, to: .int(i))
                }
                let elapsed = now() - start
                guard sum != 0 else { throw BenchError("the list did not change") }
                return elapsed / Double(iterations) * 1e9
            },
            Contender(name: "shareable_list_get_set_ns_python") { python?.measure("shareable_list_get_set_ns") },
        ])
    }
}
