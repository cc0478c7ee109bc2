import Glibc
import Multiprocessing
import MultiprocessingCluster

/// A tiny named task for the cluster's figures.
struct ClusterTiny: MP.NamedTask {
    var x: Int
    func run() -> Int { x &+ 1 }
}

/// The recovery figure's task: on its first attempt it writes the pid of the
/// cluster worker running it (the parent of its local process) to `marker`
/// and sleeps past any patience; on the next attempt it returns at once.
struct ClusterNap: MP.NamedTask {
    var marker: String
    func run() async throws -> Int {
        if access(marker, F_OK) == 0 { return 1 }
        let fd = open(marker, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        if fd >= 0 {
            let text = "\(getppid())"
            _ = text.withCString { write(fd, $0, strlen($0)) }
            close(fd)
        }
        try await Task.sleep(for: .seconds(3600))
        return 0
    }
}

/// Issue 12's figures: the cluster pool with two workers on this machine and
/// a throwaway PostgreSQL on it too. (For scale, from the issue: Ray's
/// `ray.util.multiprocessing.Pool` on a local 2-CPU cluster here ran 674
/// tiny `apply_async` tasks/s and a blocking `apply` in 3.2 ms.)
enum ClusterBenchmarks {
    static func run(quick: Bool) async throws -> [Metric] {
        guard MP.Cluster.LocalPostgres.isAvailable else {
            print("cluster: PostgreSQL's server programs are not installed: no cluster figures")
            return []
        }
        // The recovery figure SIGKILLs a worker: its local processes (and the
        // database server pg_ctl daemonizes) are orphans, adopted here rather
        // than by init, and reaped before this group ends: none is left behind.
        try MP.setChildSubreaper(true)
        let metrics = try await measure(quick: quick)
        let deadline = now() + 20
        while now() < deadline {
            do {
                if try MP.waitpid(-1, options: .noHang) == nil { try await Task.sleep(for: .milliseconds(10)) }
            } catch {
                break // ECHILD: no child left
            }
        }
        return metrics
    }

    private static func measure(quick: Bool) async throws -> [Metric] {
        let database = try MP.Cluster.LocalPostgres()
        defer { database.remove() }
        let url = database.url
        func worker(lease: Double) throws -> MP.Process {
            let process = MP.Process(name: "mp-bench-cluster-worker") {
                try await MP.Cluster.runWorker(database: url, concurrency: 1, startMethod: .forkserver, lease: lease)
            }
            try process.start()
            return process
        }
        var workers = [try worker(lease: 2), try worker(lease: 2)]
        defer {
            for process in workers {
                try? process.kill()
                try? process.join()
            }
        }
        let pool = try await MP.ClusterPool(database: url)
        _ = try await pool.apply(ClusterTiny(x: 0)) // the workers are up
        var metrics: [Metric] = []

        let count = quick ? 2_000 : 20_000
        var rates: [Double] = []
        for _ in 0..<(quick ? 3 : 5) {
            let start = now()
            let results = (0..<count).map { pool.applyAsync(ClusterTiny(x: $0)) }
            for result in results { _ = try await result.value }
            rates.append(Double(count) / (now() - start))
        }
        rates.sort()
        metrics.append(Metric(name: "cluster_tasks_per_s", value: rates[rates.count / 2], higherIsBetter: true,
                              low: rates.first, high: rates.last, rounds: rates.count))

        // Five rounds of blocking applies (60 each quick, 200 in full): the
        // median of each round, and the median of those with their spread.
        // Twenty applies, as before, swung 1.3-2.2 ms between runs.
        var roundMedians: [Double] = []
        for _ in 0..<5 {
            var latencies: [Double] = []
            for _ in 0..<(quick ? 60 : 200) {
                let start = now()
                _ = try await pool.apply(ClusterTiny(x: 1))
                latencies.append((now() - start) * 1e3)
            }
            roundMedians.append(latencies.sorted()[latencies.count / 2])
        }
        roundMedians.sort()
        metrics.append(Metric(name: "cluster_apply_latency_ms", value: roundMedians[2], higherIsBetter: false,
                              low: roundMedians.first, high: roundMedians.last, rounds: 5))

        // The worker running a task is SIGKILLed; the other records its result.
        let marker = "/tmp/mp-bench-cluster-\(getpid())"
        unlink(marker)
        defer { unlink(marker) }
        let result = pool.applyAsync(ClusterNap(marker: marker))
        var runner: Int32 = 0
        for _ in 0..<600 where runner == 0 {
            try await Task.sleep(for: .milliseconds(10))
            let fd = open(marker, O_RDONLY)
            guard fd >= 0 else { continue }
            var buffer = [UInt8](repeating: 0, count: 32)
            let count = read(fd, &buffer, 32)
            close(fd)
            runner = count > 0 ? Int32(String(decoding: buffer[..<count], as: UTF8.self)) ?? 0 : 0
        }
        guard let index = workers.firstIndex(where: { $0.pid == runner }) else {
            throw BenchError("cluster: the recovery task did not start on a worker")
        }
        let victim = workers.remove(at: index)
        try victim.kill()
        try await victim.join()
        let killed = now()
        _ = try await result.value
        let recovery = now() - killed
        metrics.append(Metric(name: "cluster_recovery_s", value: recovery, higherIsBetter: false))
        pool.close()
        try await pool.join()
        return metrics
    }
}
