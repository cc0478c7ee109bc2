import Testing
import Foundation
import NIOPosix
import PostgresNIO
@testable import MultiprocessingCluster
@_spi(Cluster) import Multiprocessing

/// What a listener heard, in order, and on which thread.
private final class Heard: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [(channel: String, payload: String)] = []
    private var offLoop = 0

    func add(_ channel: String, _ payload: String) {
        let onLoop = MultiThreadedEventLoopGroup.currentEventLoop != nil
        lock.withLock {
            entries.append((channel, payload))
            if !onLoop && !payload.isEmpty { offLoop += 1 } // "look now" comes from the listening task
        }
    }

    func count(_ channel: String, _ payload: String) -> Int {
        lock.withLock { entries.filter { $0.channel == channel && $0.payload == payload }.count }
    }

    /// Notifications (not "look now") handed over on a thread that is not an event loop's.
    var handedOffLoop: Int { lock.withLock { offLoop } }

    /// Waits (bounded) until `channel` heard `payload` at least `times` times.
    func wait(for channel: String, _ payload: String, times: Int = 1, seconds: Double = 20) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while count(channel, payload) < times {
            guard Date() < deadline else {
                Issue.record("\(channel) did not hear \"\(payload)\" \(times) time(s) within \(seconds) s")
                throw CancellationError()
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }
}

@Suite("Cluster store: listening and deadlines", .serialized,
       .enabled(if: MP.Cluster.LocalPostgres.isAvailable, "needs PostgreSQL's server programs"))
struct ClusterStoreTests {
    /// The backends whose last statement was a `LISTEN` on one of this test's channels.
    func listeningBackends(_ store: ClusterStore) async throws -> Int64 {
        let rows = try await store.client.query(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN \"mp_test_listen_%'", logger: ClusterStore.logger)
        for try await count in rows.decode(Int64.self) { return count }
        return -1
    }

    @Test("one connection listens on all the channels; each notification reaches its channel on the event loop; after a restart each hears \"look now\"; cancelled, it stops listening")
    func listening() async throws {
        let db = try TestDatabase.shared()
        let store = try ClusterStore(url: db.url)
        let sender = try ClusterStore(url: db.url)
        defer {
            store.shutdown()
            sender.shutdown()
        }
        let heard = Heard()
        let channels = ["mp_test_listen_a", "mp_test_listen_b"]
        let ended = Flag()
        let listener = Task {
            await store.listen(channels) { heard.add($0, $1) }
            ended.set(true)
        }
        // A wait that fails part-way must not leave the listener reconnecting for ever.
        defer { listener.cancel() }
        // Connected: each channel is told to look now.
        for channel in channels { try await heard.wait(for: channel, "") }
        #expect(try await listeningBackends(sender) == 1, "one connection for both channels")

        try await sender.client.query("SELECT pg_notify('mp_test_listen_a', 'one'), pg_notify('mp_test_listen_b', 'two')",
                                      logger: ClusterStore.logger)
        try await heard.wait(for: "mp_test_listen_a", "one")
        try await heard.wait(for: "mp_test_listen_b", "two")
        #expect(heard.count("mp_test_listen_a", "two") == 0 && heard.count("mp_test_listen_b", "one") == 0,
                "each notification reaches its own channel's handler only")
        #expect(heard.handedOffLoop == 0, "handed over on the connection's event loop, with no task between")

        // The server restarts: the connection is cut, the listener comes back and says so.
        try db.restart()
        for channel in channels { try await heard.wait(for: channel, "", times: 2, seconds: 30) }
        try await sender.client.query("SELECT pg_notify('mp_test_listen_a', 'three')", logger: ClusterStore.logger)
        try await heard.wait(for: "mp_test_listen_a", "three", seconds: 30)

        // Cancelled: the task ends and its connection (back in the pool) no longer listens.
        listener.cancel()
        let deadline = Date().addingTimeInterval(10)
        while !ended.value && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(ended.value, "the listening task ended within 10 s of its cancellation")
        #expect(try await listeningBackends(sender) == 0)
    }
}

@Suite("Cluster deadlines")
struct ClusterDeadlineTests {
    @Test("withDeadline: a quick operation's value and error pass through; a stuck one fails with the message at its deadline, and is cancelled")
    func deadlines() async throws {
        #expect(try await withDeadline(5, "late") { 42 } == 42)
        await #expect(throws: MP.Error.invalidArgument("inner")) {
            try await withDeadline(5, "late") { () async throws -> Int in throw MP.Error.invalidArgument("inner") }
        }
        // An operation that waits for ever (until cancelled): the caller goes on at the deadline.
        let (stream, release) = AsyncStream<Void>.makeStream()
        defer { release.finish() }
        let sawCancellation = Flag()
        let start = Date()
        await #expect(throws: MP.Error.database("the query took too long")) {
            try await withDeadline(0.3, "the query took too long") { () async throws -> Int in
                for await _ in stream {}
                sawCancellation.set(Task.isCancelled)
                return 0
            }
        }
        let elapsed = Date().timeIntervalSince(start)
        #expect(elapsed >= 0.29 && elapsed < 5, "failed after \(elapsed) s, for a deadline of 0.3 s")
        let deadline = Date().addingTimeInterval(5)
        while !sawCancellation.value && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(sawCancellation.value, "the abandoned operation was cancelled")
    }
}

private final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var seen = false
    func set(_ value: Bool) { lock.withLock { seen = seen || value } }
    var value: Bool { lock.withLock { seen } }
}

/// What a worker's local submission handed over.
private final class Outcomes: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [Result<[UInt8], _NamedTaskChunks.Failure>] = []
    func add(_ value: Result<[UInt8], _NamedTaskChunks.Failure>) { lock.withLock { values.append(value) } }
    var all: [Result<[UInt8], _NamedTaskChunks.Failure>] { lock.withLock { values } }

    func waitForOne(seconds: Double = 30) async throws -> Result<[UInt8], _NamedTaskChunks.Failure> {
        let deadline = Date().addingTimeInterval(seconds)
        while all.isEmpty {
            guard Date() < deadline else {
                Issue.record("no outcome within \(seconds) s")
                throw CancellationError()
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(all.count == 1, "handed over once")
        return all[0]
    }
}

@Suite("Cluster worker: a row's parts on the local pool")
struct ClusterSubmissionTests {
    @Test("a part's outcome is handed over once when ready: results, a thrown error, an unknown task at once, a cancelled run")
    func whenReady() async throws {
        let pool = try MP.TaskPool(processes: 1, startMethod: .forkserver)
        defer {
            pool.terminate()
            try? pool.join()
        }
        func submit<T: MP.NamedTask>(_ tasks: [T]) throws -> (_NamedTaskChunks.Submission, Outcomes) {
            let submission = _NamedTaskChunks.submit(name: T.name, payload: try _NamedTaskChunks.encode(tasks), on: pool)
            let outcomes = Outcomes()
            submission.whenReady { outcomes.add($0) }
            return (submission, outcomes)
        }

        let (_, squares) = try submit([ClusterSquare(x: 3), ClusterSquare(x: 4)])
        guard case .success(let bytes) = try await squares.waitForOne() else {
            Issue.record("squares failed: \(squares.all)")
            return
        }
        #expect(try _NamedTaskChunks.decodeResults(ClusterSquare.self, from: bytes) == [9, 16])

        let (_, fails) = try submit([ClusterFails()])
        guard case .failure(.taskFailed(let type, let description)) = try await fails.waitForOne() else {
            Issue.record("a throwing task: \(fails.all)")
            return
        }
        #expect(type.hasSuffix("ClusterBoom") && description == "boom on purpose", "\(type): \(description)")

        // An unknown name fails before anything runs: the handler has run when whenReady returns.
        let unknown = _NamedTaskChunks.submit(name: "NoSuchTask", payload: [], on: pool)
        let heard = Outcomes()
        unknown.whenReady { heard.add($0) }
        guard case .failure(.unrunnable(let why))? = heard.all.first else {
            Issue.record("an unknown task: \(heard.all)")
            return
        }
        #expect(why.contains("NoSuchTask"), "\(why)")

        let (slow, slowOutcome) = try submit([Slow(x: 1, milliseconds: 60_000)])
        slow.cancel()
        guard case .failure(.cancelled) = try await slowOutcome.waitForOne() else {
            Issue.record("a cancelled run: \(slowOutcome.all)")
            return
        }
        #expect(try await pool.apply(ClusterSquare(x: 5)) == 25, "the pool goes on after the cancelled run")
    }
}
