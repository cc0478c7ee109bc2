import Foundation
import Glibc
import Logging
import MetricsTestKit
import Multiprocessing
@testable import MultiprocessingCluster
import MultiprocessingPlatform
import MultiprocessingServices
import ServiceLifecycle
import Testing

/// A program whose `ServiceGroup` runs a task pool and a cluster worker
/// (started by spawn: a fresh program, as a server is). It writes its pool
/// workers' pids and then, once the group has returned, the outcome of the
/// pool task that was running at SIGTERM, into `report`.
struct ServiceGroupProgram: MP.NamedTask {
    var database: String
    var report: String

    func run() async throws {
        let pool = try MP.TaskPool(processes: 1, startMethod: .forkserver)
        let running = pool.applyAsync(Slow(x: 7, milliseconds: 1_500))
        let worker = try MP.Cluster.WorkerService(database: database, concurrency: 1, startMethod: .forkserver, lease: 5)
        let group = ServiceGroup(services: [MP.TaskPoolService(pool, shutdownGrace: 20), worker],
                                 gracefulShutdownSignals: [.sigterm], logger: Logger(label: "test"))
        Self.append(report, "pids \(pool.workerPids.map(String.init).joined(separator: " "))\n")
        try await group.run()
        let outcome = (try? running.get(timeout: 0)).map { "pool task \($0)" } ?? "pool task lost"
        Self.append(report, outcome + "\n")
    }

    static func append(_ path: String, _ text: String) {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        _ = text.withCString { write(fd, $0, strlen($0)) }
        close(fd)
    }
}

@Suite("Service lifecycle", .serialized, .enabled(if: MP.Cluster.LocalPostgres.isAvailable, "needs PostgreSQL's server programs"))
struct ServiceLifecycleTests {
    /// Waits for `task` at most `seconds`; one still running then fails the
    /// test and is cancelled (a service's way to stop at once).
    static func finish(_ task: Task<Void, any Error>, within seconds: Double,
                       sourceLocation: SourceLocation = #_sourceLocation) async throws {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask { _ = await task.result; return true }
            group.addTask { try? await Task.sleep(for: .seconds(seconds)); return false }
            if await group.next() == false {
                Issue.record("the service did not stop within \(seconds) s", sourceLocation: sourceLocation)
                task.cancel()
            }
            group.cancelAll()
        }
        try await task.value
    }

    @Test("a ServiceGroup with a task pool and a cluster worker: SIGTERM finishes what runs, hands back the rest, and every process exits")
    func sigterm() async throws {
        let db = try TestDatabase.shared()
        let report = "/tmp/mp-service-group-\(getpid())"
        unlink(report)
        defer { unlink(report) }
        let pool = try await MP.ClusterPool(database: db.url)
        let tasks = (0..<3).map { pool.applyAsync(Slow(x: $0, milliseconds: 1_000)) }
        let program = MP.getContext(.spawn).Process(name: "service-group", target: ServiceGroupProgram(database: db.url, report: report))
        try program.start()
        let store = try ClusterStore(url: db.url)
        defer { store.shutdown() }
        #expect(try await !db.untilRunning(store, pool: pool.id).isEmpty, "the group's worker holds a task before SIGTERM")
        try program.terminate()
        if try !program.join(timeout: 30) {
            Issue.record("the program did not stop within 30 s of SIGTERM: killed")
            try program.kill()
            try await program.join()
        }
        #expect(program.exitCode == 0)
        let lines = (Sys.readSmallFile(report) ?? "").split(separator: "\n")
        #expect(lines.last == "pool task 7", "the pool task running at SIGTERM finished: \(lines)")
        let pids = lines.first { $0.hasPrefix("pids ") }?.split(separator: " ").dropFirst().compactMap { Int32($0) } ?? []
        #expect(!pids.isEmpty)
        for pid in pids { #expect(kill(pid, 0) != 0, "pool worker \(pid) has exited") }
        // Nothing lost: what the group's worker did not finish was handed back,
        // and another worker completes it.
        let worker = try startWorker(db.url)
        defer { try? stopWorker(worker) }
        for (index, task) in tasks.enumerated() { #expect(try task.get(timeout: 60) == index) }
        pool.close()
        try await pool.join()
    }

    @Test("cancellation stops a task pool service at once; a manager service stops on graceful shutdown")
    func cancellationAndManager() async throws {
        let pool = try MP.TaskPool(processes: 1, startMethod: .forkserver)
        let long = pool.applyAsync(Slow(x: 1, milliseconds: 30_000))
        let service = MP.TaskPoolService(pool)
        let started = ContinuousClock.now
        let running = Task { try await service.run() }
        try await Task.sleep(for: .milliseconds(200))
        running.cancel()
        try await Self.finish(running, within: 30)
        #expect(ContinuousClock.now - started < .seconds(10))
        #expect(throws: MP.Error.self) { try long.get(timeout: 5) }
        #expect(pool.workerPids.isEmpty)

        let server = try MP.Manager.server(address: .tcp(host: "127.0.0.1", port: 0), authkey: Array("key".utf8))
        let group = ServiceGroup(services: [MP.ManagerService(server)], logger: Logger(label: "test"))
        let serving = Task { try await group.run() }
        let manager = try MP.Manager.connect(address: server.address, authkey: Array("key".utf8))
        let dict: MP.DictProxy<String, Int> = try manager.dict([:])
        try dict.set("answer", 42)
        #expect(try dict.get("answer") == 42)
        await group.triggerGracefulShutdown()
        try await Self.finish(serving, within: 30)
        #expect(throws: MP.Error.self) { try MP.Manager.connect(address: server.address, authkey: Array("key".utf8)) }
    }
}

@Suite("Cluster metrics", .serialized, .enabled(if: MP.Cluster.LocalPostgres.isAvailable, "needs PostgreSQL's server programs"))
struct ClusterMetricsTests {
    @Test("a worker counts the rows it claims and the leases it renews, and times its database round trips")
    func worker() async throws {
        let metrics = TestMetrics()
        WorkerMetrics.factoryForTesting = metrics
        defer { WorkerMetrics.factoryForTesting = nil }
        let db = try TestDatabase.shared()
        let service = try MP.Cluster.WorkerService(database: db.url, concurrency: 1, startMethod: .forkserver, lease: 1)
        let running = Task { try await service.run() }
        let pool = try await MP.ClusterPool(database: db.url)
        #expect(try await pool.apply(Slow(x: 5, milliseconds: 1_200)) == 5)
        #expect(try await pool.map((0..<6).map { ClusterSquare(x: $0) }, chunksize: 2) == [0, 1, 4, 9, 16, 25])
        pool.close()
        try await pool.join()
        running.cancel()
        try? await running.value
        #expect(try metrics.expectCounter("mp_cluster_rows_claimed_total").totalValue >= 4)
        #expect(try metrics.expectCounter("mp_cluster_leases_renewed_total").totalValue >= 1, "a 1.2 s task under a 1 s lease")
        #expect(try metrics.expectCounter("mp_cluster_late_results_total").totalValue == 0)
        let roundTrips = try metrics.expectTimer("mp_cluster_database_roundtrip_seconds").values
        #expect(roundTrips.count >= 3 && roundTrips.allSatisfy { $0 > 0 && $0 < 10_000_000_000 })
    }
}
