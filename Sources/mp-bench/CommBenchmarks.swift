import _CMultiprocessingBench
import Multiprocessing

/// Issue 3's figures: queue and pipe throughput, pipe bandwidth, lock latency,
/// contended shared-value increments.
enum CommBenchmarks {
    static func run(quick: Bool) throws -> [Metric] {
        let queueItems = quick ? 100_000 : 500_000
        let pipeItems = quick ? 100_000 : 500_000
        let bandwidthMessages = quick ? 128 : 512
        let lockIterations = quick ? 2_000_000 : 10_000_000
        let increments = quick ? 50_000 : 200_000
        let rounds = quick ? 3 : 5

        var metrics: [Metric] = []
        metrics.append(Metric(name: "queue_small_msgs_per_s", value: try medianOf(rounds) { try queueThroughput(queueItems) }, higherIsBetter: true))
        let pipe = try interleavedMedians(rounds, [{ try pipeThroughput(pipeItems) }, { cmp_bench_socketpair_small_msgs_per_s(pipeItems) }])
        metrics.append(Metric(name: "pipe_small_msgs_per_s", value: pipe[0], higherIsBetter: true))
        metrics.append(Metric(name: "pipe_small_msgs_per_s_c", value: pipe[1], higherIsBetter: true))
        let bandwidth = try interleavedMedians(rounds * 2 - 1, [{ try pipeBandwidth(bandwidthMessages) }, { cmp_bench_socketpair_bandwidth_MBps(bandwidthMessages, 1 << 20) }])
        metrics.append(Metric(name: "pipe_bytes_bw_MBps", value: bandwidth[0], higherIsBetter: true))
        metrics.append(Metric(name: "pipe_bytes_bw_MBps_c", value: bandwidth[1], higherIsBetter: true))
        let lock = try interleavedMedians(rounds, [{ try lockLatency(lockIterations) }, { cmp_bench_robust_mutex_ns(lockIterations) }])
        metrics.append(Metric(name: "lock_uncontended_ns", value: lock[0], higherIsBetter: false))
        metrics.append(Metric(name: "lock_uncontended_ns_c", value: lock[1], higherIsBetter: false))
        metrics.append(Metric(name: "value_increment_contended_per_s", value: try medianOf(rounds) { try contendedIncrements(increments) }, higherIsBetter: true))

        let better = ["queue_small_msgs_per_s": true, "pipe_small_msgs_per_s": true, "pipe_bytes_bw_MBps": true,
                      "value_increment_contended_per_s": true, "lock_uncontended_ns": false]
        if let output = runPython(pythonScript(queueItems: queueItems, pipeItems: pipeItems, bandwidthMessages: bandwidthMessages,
                                               lockIterations: lockIterations / 10, increments: increments, rounds: rounds)) {
            metrics += parseMetrics(output, suffix: "_python", higherIsBetter: better)
        }
        if let output = runPython(fasterFifoScript(items: queueItems, rounds: rounds)) {
            metrics += parseMetrics(output, suffix: "_fasterfifo", higherIsBetter: better)
        }
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

    static func pythonScript(queueItems: Int, pipeItems: Int, bandwidthMessages: Int, lockIterations: Int, increments: Int, rounds: Int) -> String {
        """
        import multiprocessing as mp, statistics, time
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
            for name, f in [('queue_small_msgs_per_s', queue_rate), ('pipe_small_msgs_per_s', pipe_rate),
                            ('pipe_bytes_bw_MBps', pipe_bw), ('lock_uncontended_ns', lock_ns),
                            ('value_increment_contended_per_s', value_rate)]:
                print(name, statistics.median([f() for _ in range(\(rounds))]), flush=True)
        """
    }

    /// faster-fifo's Queue (a C ring buffer in shared memory), when it is installed.
    static func fasterFifoScript(items: Int, rounds: Int) -> String {
        """
        import multiprocessing as mp, statistics, time
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
            print('queue_small_msgs_per_s', statistics.median([rate() for _ in range(\(rounds))]))
        """
    }
}
