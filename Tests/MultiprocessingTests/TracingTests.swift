import Glibc
import InMemoryTracing
@testable import Multiprocessing
import Testing
import Tracing

/// Returns the trace fields the worker ran it with.
struct TraceProbe: MP.NamedTask {
    let x: Int
    func run() -> [String: String] { MP.TraceHeaders.current?.fields ?? [:] }
}

/// Throws, inside a trace.
struct TraceProbeFails: MP.NamedTask {
    struct Refused: Error, CustomStringConvertible { var description: String { "refused" } }
    func run() throws -> Int { throw Refused() }
}

/// The fields an order submitted from inside the worker would carry on
/// (a pool's worker is daemonic and starts no pool of its own; a process it
/// runs in, such as a manager's server, would).
struct TraceRelay: MP.NamedTask {
    func run() -> [String: String] { TaskSpan.begin("relay", kind: .client)?.headers.fields ?? [:] }
}

/// A registered type that answers with the trace fields it was called in.
struct TraceEcho: MP.ManagedObject {
    enum Call: Codable, Sendable { case fields, fail }
    struct Refused: Error {}
    mutating func handle(_ call: Call) throws -> [String: String] {
        if case .fail = call { throw Refused() }
        return MP.TraceHeaders.current?.fields ?? [:]
    }
}

@Suite("Tracing", .serialized)
struct TracingTests {
    @Test("a task applied inside a span: a child span in the parent, its context in the worker",
          arguments: [MP.StartMethod.fork, .spawn, .forkserver])
    func taskPoolApply(method: MP.StartMethod) throws {
        let tracer = InMemoryTracer()
        let pool = try MP.TaskPool(processes: 1, startMethod: method)
        defer { try? finish(pool) }
        let seen = try withTracer(tracer) {
            try withSpan("request") { _ in try pool.apply(TraceProbe(x: 1)) }
        }
        let spans = tracer.finishedSpans
        let request = try #require(spans.first { $0.operationName == "request" })
        let task = try #require(spans.first { $0.operationName == "task \(TraceProbe.name)" })
        #expect(task.traceID == request.traceID)
        #expect(task.parentSpanID == request.spanID)
        #expect(task.kind == .client)
        // The worker ran it in the task span's context, fields as the tracer injected them.
        #expect(seen[InMemoryTracer.traceIDKey] == task.traceID)
        #expect(seen[InMemoryTracer.spanIDKey] == task.spanID)
        let pid = try #require(task.attributes["mp.worker.pid"]?.toSpanAttribute())
        #expect(pid != .int64(Int64(getpid())))
        #expect(task.attributes["mp.task.run_seconds"] != nil)
        #expect(task.status == nil && task.errors.isEmpty)
    }

    @Test("outside a span nothing is sent, nothing started; the next traced task is not confused with it")
    func untraced() throws {
        let tracer = InMemoryTracer()
        let pool = try MP.TaskPool(processes: 1, startMethod: .forkserver)
        defer { try? finish(pool) }
        let (plain, traced, after) = try withTracer(tracer) {
            (try pool.apply(TraceProbe(x: 1)),
             try withSpan("request") { _ in try pool.apply(TraceProbe(x: 2)) },
             try pool.apply(TraceProbe(x: 3)))
        }
        #expect(plain.isEmpty && after.isEmpty)
        #expect(!traced.isEmpty)
        #expect(tracer.finishedSpans.map(\.operationName).sorted() == ["request", "task \(TraceProbe.name)"])
    }

    @Test("a map's chunks and an imap's chunks each get a span under the caller's; every item ran in its chunk's")
    func maps() async throws {
        let tracer = InMemoryTracer()
        let pool = try MP.TaskPool(processes: 2, startMethod: .forkserver)
        defer { try? finish(pool) }
        let (mapped, streamed) = try await withTracer(tracer) {
            try await withSpan("request") { _ in
                let mapped = try await pool.map((0..<8).map { TraceProbe(x: $0) }, chunksize: 4)
                var streamed: [[String: String]] = []
                for try await fields in pool.imap((0..<3).map { TraceProbe(x: $0) }) { streamed.append(fields) }
                return (mapped, streamed)
            }
        }
        let spans = tracer.finishedSpans
        let request = try #require(spans.first { $0.operationName == "request" })
        let chunks = spans.filter { $0.operationName == "map \(TraceProbe.name)" }
        let items = spans.filter { $0.operationName == "imap \(TraceProbe.name)" }
        #expect(chunks.count == 2 && items.count == 3)
        #expect((chunks + items).allSatisfy { $0.parentSpanID == request.spanID && $0.traceID == request.traceID })
        #expect(Set(mapped.map { $0[InMemoryTracer.spanIDKey] ?? "" }) == Set(chunks.map(\.spanID)))
        #expect(Set(streamed.map { $0[InMemoryTracer.spanIDKey] ?? "" }) == Set(items.map(\.spanID)))
        #expect(chunks.allSatisfy { $0.attributes["mp.task.count"]?.toSpanAttribute() == .int64(4) })
    }

    @Test("a task that throws: its span records the error")
    func failure() throws {
        let tracer = InMemoryTracer()
        let pool = try MP.TaskPool(processes: 1, startMethod: .forkserver)
        defer { try? finish(pool) }
        withTracer(tracer) {
            withSpan("request") { _ in
                #expect(throws: MP.Error.self) { try pool.apply(TraceProbeFails()) }
            }
        }
        let task = try #require(tracer.finishedSpans.first { $0.operationName == "task \(TraceProbeFails.name)" })
        #expect(task.status?.code == .error)
        #expect(task.errors.count == 1)
        #expect("\(task.errors.first?.error ?? MP.Error.cancelled)".contains("refused"))
    }

    @Test("a worker without a tracer passes the trace on to what it submits")
    func relay() throws {
        let tracer = InMemoryTracer()
        let pool = try MP.TaskPool(processes: 1, startMethod: .spawn)
        defer { try? finish(pool) }
        let seen = try withTracer(tracer) { try withSpan("request") { _ in try pool.apply(TraceRelay()) } }
        let task = try #require(tracer.finishedSpans.first { $0.operationName == "task \(TraceRelay.name)" })
        #expect(seen[InMemoryTracer.spanIDKey] == task.spanID)
        #expect(seen[InMemoryTracer.traceIDKey] == task.traceID)
    }

    @Test("a manager call inside a span: a client span, served in a child span whose context the object sees")
    func managerCall() async throws {
        let tracer = InMemoryTracer()
        let key = Swift.Array("tracing".utf8)
        let server = try withTracer(tracer) { () throws(MP.Error) in try MP.Manager.server(address: .tcp(host: "127.0.0.1", port: 0), authkey: key) }
        let serving = Task { try await server.serve() }
        defer { server.stop() }
        let manager = try MP.Manager.connect(address: server.address, authkey: key)
        let echo = try manager.register(TraceEcho())
        let untraced = try await echo.call(.fields)
        let seen = try withTracer(tracer) {
            try withSpan("request") { _ in
                #expect(throws: MP.Error.self) { try echo.call(.fail) }
                return try echo.call(.fields)
            }
        }
        server.stop()
        _ = await serving.result
        #expect(untraced.isEmpty)
        let spans = tracer.finishedSpans
        let request = try #require(spans.first { $0.operationName == "request" })
        let clients = spans.filter { $0.operationName == "manager objectCall" && $0.kind == .client }
        let servers = spans.filter { $0.operationName == "manager objectCall" && $0.kind == .server }
        #expect(clients.count == 2 && servers.count == 2)
        #expect(clients.allSatisfy { $0.parentSpanID == request.spanID && $0.traceID == request.traceID })
        for server in servers {
            #expect(clients.contains { $0.spanID == server.parentSpanID })
        }
        // The failed call's spans both record the error; the object saw its server span.
        #expect(clients.filter { $0.status?.code == .error }.count == 1)
        #expect(servers.filter { $0.status?.code == .error }.count == 1)
        let served = try #require(servers.first { $0.status == nil })
        #expect(seen[InMemoryTracer.spanIDKey] == served.spanID)
    }

    @Test("a manager in its own process, with no tracer: the object sees the client span's fields")
    func managerProcess() throws {
        let tracer = InMemoryTracer()
        try MP.Manager.with(startMethod: .forkserver) { manager in
            let echo = try manager.register(TraceEcho())
            let seen = try withTracer(tracer) { try withSpan("request") { _ in try echo.call(.fields) } }
            let client = try #require(tracer.finishedSpans.first { $0.operationName == "manager objectCall" })
            #expect(seen[InMemoryTracer.spanIDKey] == client.spanID)
            #expect(seen[InMemoryTracer.traceIDKey] == client.traceID)
        }
    }

    @Test("trace header lines: written sorted, read back; malformed ones refused")
    func headerLines() {
        let headers = MP.TraceHeaders(fields: ["traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "congo=t61rcWkgMzE"])
        #expect(headers.description == "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\ntracestate: congo=t61rcWkgMzE")
        #expect(MP.TraceHeaders(headerLines: headers.description) == headers)
        #expect(headers.traceparent == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        #expect(MP.TraceHeaders(headerLines: "no colon here") == nil)
        #expect(MP.TraceHeaders(headerLines: ": empty name") == nil)
        #expect(MP.TraceHeaders(headerLines: "") == nil)
        #expect(MP.TraceHeaders.current == nil)
    }
}
