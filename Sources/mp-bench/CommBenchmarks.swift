import _CMultiprocessingBench
import Multiprocessing

/// Queue and pipe throughput, pipe bandwidth, lock latency, contended
/// shared-value increments: ours, the raw C floor and CPython's (and
/// faster-fifo's queue when installed) in alternating rounds.
enum CommBenchmarks {
    static func run(quick: Bool) throws -> [Metric] {
        let queueItems = quick ? 100_000 : 500_000
        let pipeItems = quick ? 300_000 : 500_000 // 100,000 (0.15 s a round) swung 0.87-1.01x C between quick runs
        let bandwidthMessages = quick ? 128 : 512
        let lockIterations = quick ? 2_000_000 : 10_000_000
        let increments = quick ? 50_000 : 200_000
        let rounds = quick ? 3 : 5

        let python = PeerRounds(python: pythonScript(queueItems: queueItems, pipeItems: pipeItems, bandwidthMessages: bandwidthMessages,
                                                     lockIterations: lockIterations / 10, increments: increments))
        defer { python?.finish() }
        let fasterFifo = PeerRounds(python: fasterFifoScript(items: queueItems))
        defer { fasterFifo?.finish() }
        var metrics = try alternatingRounds(rounds, [
            Contender(name: "queue_small_msgs_per_s", higherIsBetter: true) { try queueThroughput(queueItems) },
            Contender(name: "queue_small_msgs_per_s_python", higherIsBetter: true) { python?.measure("queue_small_msgs_per_s") },
            Contender(name: "queue_small_msgs_per_s_fasterfifo", higherIsBetter: true) { fasterFifo?.measure("queue_small_msgs_per_s") },
            Contender(name: "pipe_small_msgs_per_s", higherIsBetter: true) { try pipeThroughput(pipeItems) },
            Contender(name: "pipe_small_msgs_per_s_c", higherIsBetter: true) { cmp_bench_socketpair_small_msgs_per_s(pipeItems) },
            Contender(name: "pipe_small_msgs_per_s_python", higherIsBetter: true) { python?.measure("pipe_small_msgs_per_s") },
            Contender(name: "pipe_bytes_bw_MBps", higherIsBetter: true) { try pipeBandwidth(bandwidthMessages) },
            Contender(name: "pipe_bytes_bw_MBps_c", higherIsBetter: true) { cmp_bench_socketpair_bandwidth_MBps(bandwidthMessages, 1 << 20) },
            Contender(name: "pipe_bytes_bw_MBps_python", higherIsBetter: true) { python?.measure("pipe_bytes_bw_MBps") },
            Contender(name: "lock_uncontended_ns") { try lockLatency(lockIterations) },
            Contender(name: "lock_uncontended_ns_c") { cmp_bench_robust_mutex_ns(lockIterations) },
            Contender(name: "lock_uncontended_ns_python") { python?.measure("lock_uncontended_ns") },
            Contender(name: "value_increment_contended_per_s", higherIsBetter: true) { try contendedIncrements(increments) },
            Contender(name: "value_increment_contended_per_s_python", higherIsBetter: true) { python?.measure("value_increment_contended_per_s") },
        ])
        metrics += try SharedListBenchmarks.run(quick: quick)
        return metrics
    }

    /// A producer process puts `count` Ints; this process gets them all.
    static func queueThroughput(_ count: Int) throws -> Double {
        let queue = try MP.Queue<Int>()
        let start = now()
        let producer = MP.Process { for i in 0..<count { try queue.put(i) } }
        try producer.start()
        var sum = 0
        for _ in 0..<count { sum += try queue.get() }
        let elapsed = now() - start
        try producer.join()
        guard sum == count * (count - 1) / 2, producer.exitCode == 0 else { throw BenchError("queue lost or duplicated items") }
        return Double(count) / elapsed
    }

    /// A child sends `count` Ints one way over a pipe.
    static func pipeThroughput(_ count: Int) throws -> Double {
        let (reader, writer) = try MP.Pipe(duplex: false)
        let start = now()
        let sender = MP.Process { for i in 0..<count { try writer.send(i) } }
        try sender.start()
        writer.close()
        var sum = 0
        for _ in 0..<count { sum += try reader.recv(Int.self) }
        let elapsed = now() - start
        try sender.join()
        guard sum == count * (count - 1) / 2 else { throw BenchError("pipe lost messages") }
        return Double(count) / elapsed
    }

    /// A child sends `messages` messages of 1 MiB; MB (1e6 bytes) per second.
    static func pipeBandwidth(_ messages: Int) throws -> Double {
        let size = 1 << 20
        let payload = [UInt8](repeating: 7, count: size)
        let (reader, writer) = try MP.Pipe(duplex: false)
        let start = now()
        let sender = MP.Process { for _ in 0..<messages { try writer.sendBytes(payload) } }
        try sender.start()
        writer.close()
        var total = 0
        for _ in 0..<messages { total += try reader.recvBytes().count }
        let elapsed = now() - start
        try sender.join()
        guard total == messages * size else { throw BenchError("pipe lost bytes") }
        return Double(total) / 1e6 / elapsed
    }

    static func lockLatency(_ iterations: Int) throws -> Double {
        let lock = try MP.Lock()
        let start = now()
        for _ in 0..<iterations {
            try lock.acquire()
            try lock.release()
        }
        return (now() - start) / Double(iterations) * 1e9
    }

    /// Two processes, `count` locked increments each; the total is checked.
    static func contendedIncrements(_ count: Int) throws -> Double {
        let value = try MP.Value(0)
        let start = now()
        let workers = (0..<2).map { _ in MP.Process { for _ in 0..<count { try value.withLock { $0 += 1 } } } }
        for worker in workers { try worker.start() }
        for worker in workers { try worker.join() }
        let elapsed = now() - start
        guard value.value == 2 * count else { throw BenchError("contended increments lost updates: \(value.value)") }
        return Double(2 * count) / elapsed
    }

    /// CPython's side, one round per request.
    static func pythonScript(queueItems: Int, pipeItems: Int, bandwidthMessages: Int, lockIterations: Int, increments: Int) -> String {
        """
        import multiprocessing as mp, sys, time
        ctx = mp.get_context('fork')
        def producer(q, n):
            for i in range(n): q.put(i)
        def sender(c, n):
            for i in range(n): c.send(i)
        def bulk(c, n, payload):
            for _ in range(n): c.send_bytes(payload)
        def incr(v, n):
            for _ in range(n):
                with v.get_lock(): v.value += 1
        def queue_rate():
            q = ctx.Queue(); start = time.perf_counter()
            p = ctx.Process(target=producer, args=(q, \(queueItems))); p.start()
            s = 0
            for _ in range(\(queueItems)): s += q.get()
            elapsed = time.perf_counter() - start; p.join()
            return \(queueItems) / elapsed
        def pipe_rate():
            r, w = ctx.Pipe(); start = time.perf_counter()
            p = ctx.Process(target=sender, args=(w, \(pipeItems))); p.start(); w.close()
            for _ in range(\(pipeItems)): r.recv()
            elapsed = time.perf_counter() - start; p.join()
            return \(pipeItems) / elapsed
        def pipe_bw():
            r, w = ctx.Pipe(); payload = b'7' * (1 << 20); start = time.perf_counter()
            p = ctx.Process(target=bulk, args=(w, \(bandwidthMessages), payload)); p.start(); w.close()
            total = 0
            for _ in range(\(bandwidthMessages)): total += len(r.recv_bytes())
            elapsed = time.perf_counter() - start; p.join()
            return total / 1e6 / elapsed
        def lock_ns():
            l = ctx.Lock(); start = time.perf_counter()
            for _ in range(\(lockIterations)): l.acquire(); l.release()
            return (time.perf_counter() - start) / \(lockIterations) * 1e9
        def value_rate():
            v = ctx.Value('l', 0); start = time.perf_counter()
            ps = [ctx.Process(target=incr, args=(v, \(increments))) for _ in range(2)]
            for p in ps: p.start()
            for p in ps: p.join()
            elapsed = time.perf_counter() - start
            assert v.value == 2 * \(increments)
            return 2 * \(increments) / elapsed
        if __name__ == '__main__':
            rounds = {'queue_small_msgs_per_s': queue_rate, 'pipe_small_msgs_per_s': pipe_rate,
                      'pipe_bytes_bw_MBps': pipe_bw, 'lock_uncontended_ns': lock_ns,
                      'value_increment_contended_per_s': value_rate}
            print('ready', flush=True)
            for line in sys.stdin:
                name = line.strip()
                print(name, rounds[name](), flush=True)
        """
    }

    /// faster-fifo's Queue (a C ring buffer in shared memory), when it is
    /// installed (otherwise the script fails before `ready`: no column).
    static func fasterFifoScript(items: Int) -> String {
        """
        import multiprocessing as mp, sys, time
        from faster_fifo import Queue
        ctx = mp.get_context('fork')
        def producer(q, n):
            for i in range(n): q.put(i)
        def rate():
            q = Queue(1 << 24); start = time.perf_counter()
            p = ctx.Process(target=producer, args=(q, \(items))); p.start()
            s = 0
            for _ in range(\(items)): s += q.get()
            elapsed = time.perf_counter() - start; p.join()
            return \(items) / elapsed
        if __name__ == '__main__':
            print('ready', flush=True)
            for line in sys.stdin:
                print(line.strip(), rate(), flush=True)
        """
    }
}
