import Glibc
import MetricsTestKit
@testable import Multiprocessing
import Testing

@Suite("Metrics", .serialized)
struct MetricsTests {
    @Test("a known workload's counts: submitted, completed, failed by reason, durations, waits, workers")
    func taskPool() throws {
        let metrics = TestMetrics()
        PoolMetrics.factoryForTesting = metrics
        defer { PoolMetrics.factoryForTesting = nil }
        let pool = try MP.TaskPool(processes: 2, startMethod: .forkserver)
        defer { try? finish(pool) }
        for i in 0..<10 { #expect(try pool.apply(Square(x: i)) == i * i) }
        #expect(throws: MP.Error.self) { try pool.apply(SquareButSeven(x: 7)) }
        #expect(throws: MP.Error.self) { try pool.apply(Stubborn(seconds: 30), timeout: 0.3) }
        #expect(try pool.map((0..<20).map { Square(x: $0) }, chunksize: 5).count == 20)
        let dimensions = [("pool", "task_pool")]
        #expect(try metrics.expectCounter("mp_tasks_submitted_total", dimensions).totalValue == 32)
        #expect(try metrics.expectCounter("mp_tasks_completed_total", dimensions).totalValue == 30)
        #expect(try metrics.expectCounter("mp_tasks_failed_total", dimensions + [("reason", "error")]).totalValue == 1)
        #expect(try metrics.expectCounter("mp_tasks_failed_total", dimensions + [("reason", "timeout")]).totalValue == 1)
        #expect(try metrics.expectCounter("mp_tasks_failed_total", dimensions + [("reason", "worker_died")]).totalValue == 0)
        // One run time per order a worker reported: 10 applies, the one that threw, 4 chunks.
        #expect(try metrics.expectTimer("mp_task_duration_seconds", dimensions).values.count == 15)
        #expect(try metrics.expectTimer("mp_task_queue_wait_seconds", dimensions).values.count == 16)
        #expect(try metrics.expectCounter("mp_workers_started_total", dimensions).totalValue == 3)
        #expect(try metrics.expectCounter("mp_workers_replaced_total", dimensions).totalValue == 1)
        let busy = try metrics.expectGauge("mp_workers_busy", dimensions)
        #expect(busy.values.contains { $0 >= 1 } && busy.values.allSatisfy { $0 >= 0 && $0 <= 2 })
    }
}
