import Foundation
import InMemoryTracing
@testable import MultiprocessingCluster
@_spi(Cluster) import Multiprocessing
import MultiprocessingServices
import Testing
import Tracing

/// Returns the trace fields the local worker process ran it with.
struct ClusterTraceProbe: MP.NamedTask {
    var x: Int
    func run() -> [String: String] { MP.TraceHeaders.current?.fields ?? [:] }
}

@Suite("Cluster tracing", .serialized)
struct ClusterTracingTests {
    @Test("a cluster apply inside a span: the pool's producer span, its fields in the row, the worker's consumer span, the local task's span")
    func apply() async throws {
        let db = try TestDatabase.shared()
        let tracer = InMemoryTracer()
        let store = try ClusterStore(url: db.url)
        defer { store.shutdown() }
        let pool = try await MP.ClusterPool(database: db.url)
        // Submitted before any worker of this test runs: the row waits, and its trace can be read.
        let submitted = withTracer(tracer) {
            withSpan("request") { _ in pool.applyAsync(ClusterTraceProbe(x: 1)) }
        }
        var stored: [String] = []
        for _ in 0..<400 where stored.isEmpty {
            stored = try await db.query(store, "SELECT trace FROM mp_cluster_tasks WHERE task = '\(ClusterTraceProbe.name)' AND trace IS NOT NULL")
            if stored.isEmpty { try await Task.sleep(for: .milliseconds(50)) }
        }
        let producer = try #require(tracer.activeSpans.first { $0.operationName == "cluster \(ClusterTraceProbe.name)" })
        let headers = MP.TraceHeaders(fields: [InMemoryTracer.traceIDKey: producer.traceID, InMemoryTracer.spanIDKey: producer.spanID])
        #expect(stored == [headers.description])

        // A worker in this process, with the same tracer: its spans are seen here.
        let service = try MP.Cluster.WorkerService(database: db.url, concurrency: 1, startMethod: .forkserver, lease: 2)
        let worker = withTracer(tracer) { Task { try await service.run() } }
        defer { worker.cancel() }
        let seen = try submitted.get(timeout: 60)
        let untraced = try await pool.apply(ClusterTraceProbe(x: 2))
        worker.cancel()
        _ = await worker.result
        pool.close()
        try await pool.join()

        #expect(untraced.isEmpty)
        let spans = tracer.finishedSpans
        let request = try #require(spans.first { $0.operationName == "request" })
        let sent = try #require(spans.first { $0.operationName == "cluster \(ClusterTraceProbe.name)" && $0.kind == .producer })
        let claimed = try #require(spans.first { $0.operationName == "cluster \(ClusterTraceProbe.name)" && $0.kind == .consumer })
        let local = try #require(spans.first { $0.operationName == "task \(ClusterTraceProbe.name)" })
        #expect(sent.parentSpanID == request.spanID)
        #expect(claimed.parentSpanID == sent.spanID)
        #expect(local.parentSpanID == claimed.spanID)
        #expect(Set([request, sent, claimed, local].map(\.traceID)).count == 1)
        #expect(seen[InMemoryTracer.spanIDKey] == local.spanID)
        #expect(claimed.attributes["mp.cluster.attempt"]?.toSpanAttribute() == .int64(1))
    }
}
