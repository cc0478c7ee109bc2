import Testing
import Foundation
import Dispatch
import PostgresNIO
@testable import MultiprocessingCluster
@_spi(Cluster) import Multiprocessing

// The cluster pool against a real PostgreSQL started by the tests
// (initdb into a temporary folder, a Unix socket), with workers that are
// forked copies of this test program in worker mode.

struct ClusterSquare: MP.NamedTask {
    var x: Int
    func run() -> Int { x * x }
}

struct ClusterAdd: MP.NamedTask {
    var a: Int
    var b: Int
    func run() -> Int { a + b }
}

struct ClusterBoom: Error, CustomStringConvertible { var description: String { "boom on purpose" } }

struct ClusterFails: MP.NamedTask {
    func run() throws -> Int { throw ClusterBoom() }
}

/// Throws for every x that ends in 7 (per-task outcomes inside a packed row).
struct ThrowsOnSevens: MP.NamedTask {
    var x: Int
    func run() throws -> Int {
        if x % 10 == 7 { throw ClusterBoom() }
        return x * 2
    }
}

/// Returns the pid of the cluster worker running it (its local process's parent), after a while.
struct WhoRuns: MP.NamedTask {
    var milliseconds: Int
    func run() async throws -> Int32 {
        try await Task.sleep(for: .milliseconds(milliseconds))
        return getppid()
    }
}

/// A result of `count` bytes (larger ones do not fit a notification).
struct Bytes: MP.NamedTask {
    var count: Int
    func run() -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0) } }
}

/// Hangs on its first attempt (leaving a marker), returns on the next.
struct HangsFirstTime: MP.NamedTask {
    var marker: String
    func run() async throws -> Int {
        if FileManager.default.fileExists(atPath: marker) { return 7 }
        _ = FileManager.default.createFile(atPath: marker, contents: Data("\(getpid())".utf8))
        while true { try await Task.sleep(for: .seconds(60)) }
    }
}

/// Kills the local worker process running it, on every attempt.
/// Squares x, except that x = 13 kills the local process running it (a poison input among healthy ones of the same task).
struct SquareUnlessThirteen: MP.NamedTask {
    var x: Int
    func run() -> Int {
        if x == 13 { kill(getpid(), SIGKILL) }
        return x * x
    }
}

struct KillsItsWorker: MP.NamedTask {
    func run() -> Int {
        kill(getpid(), SIGKILL)
        return 0
    }
}

/// Takes a while (for restarts and graceful stops).
struct Slow: MP.NamedTask {
    var x: Int
    var milliseconds: Int
    func run() async throws -> Int {
        try await Task.sleep(for: .milliseconds(milliseconds))
        return x
    }
}

/// One throwaway PostgreSQL for the suite.
enum TestDatabase {
    nonisolated(unsafe) static var server: MP.Cluster.LocalPostgres?
    static let lock = NSLock()

    static func shared() throws -> MP.Cluster.LocalPostgres {
        try lock.withLock {
            if let server { return server }
            let started = try MP.Cluster.LocalPostgres()
            server = started
            atexit { TestDatabase.server?.remove() }
            return started
        }
    }
}

/// A worker: a forked copy of this program in worker mode.
func startWorker(_ url: String, concurrency: Int = 1, lease: Double = 2) throws -> MP.Process {
    let worker = MP.Process(name: "cluster-worker") {
        try await MP.Cluster.runWorker(database: url, concurrency: concurrency, startMethod: .forkserver, lease: lease)
    }
    try worker.start()
    return worker
}

/// Allocates and touches `mebibytes` MiB.
struct ClusterAllocate: MP.NamedTask {
    var mebibytes: Int
    func run() -> Int { [UInt8](repeating: 1, count: mebibytes << 20).count >> 20 }
}

/// A worker whose local processes run under `limits`.
func startLimitedWorker(_ url: String, limits: MP.WorkerLimits) throws -> MP.Process {
    let worker = MP.Process(name: "cluster-worker-limited") {
        try await MP.Cluster.runWorker(database: url, concurrency: 1, startMethod: .forkserver, lease: 2, limits: limits)
    }
    try worker.start()
    return worker
}

func stopWorker(_ worker: MP.Process) throws {
    guard worker.isAlive else { return }
    try worker.terminate() // graceful: SIGTERM
    if try worker.join(timeout: 20) { return }
    Issue.record("worker \(worker.pid ?? -1) did not stop within 20 s of SIGTERM: killed")
    try worker.kill()
    try worker.join()
}

@Suite("Cluster pool on PostgreSQL", .serialized, .enabled(if: MP.Cluster.LocalPostgres.isAvailable, "needs PostgreSQL's server programs"))
struct ClusterTests {
    @Test("apply, applyAsync, map in chunks, starmap, imap in order and unordered, with two workers")
    func basics() async throws {
        let db = try TestDatabase.shared()
        let workers = try (0..<2).map { _ in try startWorker(db.url) }
        defer { for worker in workers { try? stopWorker(worker) } }
        let pool = try await MP.ClusterPool(database: db.url)
        #expect(try await pool.apply(ClusterSquare(x: 7)) == 49)
        let asyncResults = (0..<20).map { pool.applyAsync(ClusterSquare(x: $0)) }
        #expect(try asyncResults.map { try $0.get(timeout: 60) } == (0..<20).map { $0 * $0 })
        let many = (0..<10_000).map { ClusterSquare(x: $0) }
        #expect(try await pool.map(many, chunksize: 1_000) == (0..<10_000).map { $0 * $0 })
        #expect(try await pool.starmap([(1, 2), (3, 4)], ClusterAdd.init) == [3, 7])
        var ordered: [Int] = []
        for try await value in pool.imap((0..<50).map { ClusterSquare(x: $0) }, chunksize: 5, bufferSize: 3) { ordered.append(value) }
        #expect(ordered == (0..<50).map { $0 * $0 })
        var unordered: [Int] = []
        for try await value in pool.imapUnordered((0..<50).map { ClusterSquare(x: $0) }, chunksize: 5) { unordered.append(value) }
        #expect(unordered.sorted() == (0..<50).map { $0 * $0 })
        pool.close()
        try await pool.join()
        #expect(try await rowCount(db, pool: pool.id) == 0, "join removes the pool's rows")
    }

    @Test("a burst of applyAsync travels in few rows, and each task keeps its own outcome")
    func packedRows() async throws {
        let db = try TestDatabase.shared()
        let workers = try (0..<2).map { _ in try startWorker(db.url) }
        defer { for worker in workers { try? stopWorker(worker) } }
        let pool = try await MP.ClusterPool(database: db.url)
        _ = try await pool.apply(ThrowsOnSevens(x: 0)) // both workers have beaten by now (they did before the pool opened)
        let rowsBefore = pool.insertedRows
        let results = (0..<2_000).map { pool.applyAsync(ThrowsOnSevens(x: $0)) }
        var failures = 0
        for (x, result) in results.enumerated() {
            if x % 10 == 7 {
                await #expect(throws: MP.Error.taskFailed(type: "ClusterBoom", description: "boom on purpose")) {
                    try await result.value
                }
                failures += 1
            } else {
                #expect(try await result.value == x * 2)
            }
        }
        #expect(failures == 200)
        let rows = pool.insertedRows - rowsBefore
        #expect(rows < 2_000 / 4, "2,000 tasks in \(rows) rows")
        pool.close()
        try await pool.join()
    }

    @Test("long tasks spread over the workers: none holds more rows than it has processes")
    func longTasksSpread() async throws {
        let db = try TestDatabase.shared()
        let workers = try (0..<2).map { _ in try startWorker(db.url) }
        defer { for worker in workers { try? stopWorker(worker) } }
        let store = try ClusterStore(url: db.url)
        defer { store.shutdown() }
        try await db.untilSlots(store, 2)
        let pool = try await MP.ClusterPool(database: db.url)
        let runners = try await pool.map((0..<4).map { _ in WhoRuns(milliseconds: 400) }, chunksize: 1)
        #expect(Set(runners) == Set(workers.compactMap(\.pid)), "each worker ran some: \(runners)")
        #expect(runners.filter { $0 == runners[0] }.count == 2)
        pool.close()
        try await pool.join()
    }

    @Test("small results come in their notification, large ones by query: each arrives once, whole")
    func resultSizes() async throws {
        let db = try TestDatabase.shared()
        let worker = try startWorker(db.url)
        defer { try? stopWorker(worker) }
        let pool = try await MP.ClusterPool(database: db.url)
        for count in [0, 1, 4_000, ClusterStore.resultInNotification, 20_000, 300_000] {
            let bytes = try await pool.apply(Bytes(count: count))
            #expect(bytes == (0..<count).map { UInt8(truncatingIfNeeded: $0) }, "\(count) bytes")
        }
        let many = try await pool.map((0..<200).map { Bytes(count: $0 * 50) }, chunksize: 1)
        #expect(many.map(\.count) == (0..<200).map { $0 * 50 })
        pool.close()
        try await pool.join()
        #expect(try await rowCount(db, pool: pool.id) == 0)
    }

    @Test("a pool and a worker given postgres-nio configurations instead of URLs")
    func configurations() async throws {
        let db = try TestDatabase.shared()
        let configuration = PostgresClient.Configuration(unixSocketPath: "\(db.directory)/.s.PGSQL.\(db.port)", username: "mp",
                                                         password: nil, database: "postgres")
        let worker = MP.Process(name: "cluster-worker") {
            try await MP.Cluster.runWorker(database: configuration, concurrency: 1, startMethod: .forkserver, lease: 2)
        }
        try worker.start()
        defer { try? stopWorker(worker) }
        let pool = try await MP.ClusterPool(database: configuration)
        #expect(try await pool.map((0..<10).map { ClusterSquare(x: $0) }) == (0..<10).map { $0 * $0 })
        pool.close()
        try await pool.join()
        var wrong = configuration
        wrong.username = "nobody"
        wrong.options.connectTimeout = .seconds(2)
        do {
            _ = try await MP.ClusterPool(database: wrong)
            Issue.record("a configuration with an unknown user was accepted")
        } catch {
            guard case .database = error else { Issue.record("unexpected \(error)"); return }
        }
    }

    @Test("a pool's notification payload is the id as PostgreSQL writes it (what SQL sends)")
    func notificationPayload() async throws {
        let db = try TestDatabase.shared()
        let store = try ClusterStore(url: db.url)
        defer { store.shutdown() }
        let pool = UUID()
        let written = try await db.query(store, "SELECT '\(pool.uuidString)'::uuid::text")
        #expect(written == [ClusterStore.payload(for: pool)])
    }

    @Test("a malformed row fails as unrunnable with a clear error; the worker goes on")
    func malformedRow() async throws {
        let db = try TestDatabase.shared()
        let store = try ClusterStore(url: db.url)
        defer { store.shutdown() }
        try await store.migrate()
        let worker = try startWorker(db.url)
        defer { try? stopWorker(worker) }
        let pool = UUID()
        try await store.openPool(pool, build: _NamedTaskChunks.build)
        try await store.insert([.init(seq: 0, task: ClusterSquare.name, payload: [1, 0, 0, 0, 9, 9], items: 1, maxAttempts: 3, retryErrors: false)],
                               pool: pool, build: _NamedTaskChunks.build)
        var finished: [ClusterStore.Finished] = []
        for _ in 0..<200 where finished.isEmpty {
            finished = try await store.finished(pool)
            if finished.isEmpty { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(finished.first?.state == "failed")
        #expect(finished.first?.errorType == "MP.Error.unrunnable")
        #expect(finished.first?.error?.contains("malformed") == true, "\(finished.first?.error ?? "no error")")
        #expect(finished.first?.attempt == 1, "not retried")
        try await store.closePool(pool)
        let own = try await MP.ClusterPool(database: db.url)
        #expect(try await own.apply(ClusterSquare(x: 6)) == 36)
        own.close()
        try await own.join()
    }

    @Test("a task that throws fails with its type and description, once")
    func taskThrows() async throws {
        let db = try TestDatabase.shared()
        let worker = try startWorker(db.url)
        defer { try? stopWorker(worker) }
        let pool = try await MP.ClusterPool(database: db.url)
        await #expect(throws: MP.Error.taskFailed(type: "ClusterBoom", description: "boom on purpose")) {
            try await pool.apply(ClusterFails())
        }
        pool.close()
        try await pool.join()
    }

    @Test("a worker's limits: a task over its memory cap fails once, with the limit in its error; the others complete")
    func limits() async throws {
        let db = try TestDatabase.shared()
        let worker = try startLimitedWorker(db.url, limits: MP.WorkerLimits(memory: 128 << 20))
        defer { try? stopWorker(worker) }
        let pool = try await MP.ClusterPool(database: db.url)
        let big = pool.applyAsync(ClusterAllocate(mebibytes: 1024))
        let small = (0..<5).map { _ in pool.applyAsync(ClusterAllocate(mebibytes: 4)) }
        let error = #expect(throws: MP.Error.self) { try big.get(timeout: 60) }
        #expect(error?.code == .taskFailed)
        #expect(error?.message.contains("memory limit of 128 MiB exceeded") == true, "\(String(describing: error))")
        #expect(try small.map { try $0.get(timeout: 60) } == [4, 4, 4, 4, 4])
        pool.close()
        try await pool.join()
    }

    @Test("the status view: workers, tasks by state, the last minute, from a known workload; a database with no cluster is an error")
    func status() async throws {
        let db = try TestDatabase.shared()
        let worker = try startWorker(db.url, concurrency: 2)
        defer { try? stopWorker(worker) }
        let pool = try await MP.ClusterPool(database: db.url)
        let mapped = pool.mapAsync((0..<40).map { ClusterSquare(x: $0) }, chunksize: 10)
        #expect(try await mapped.value.count == 40)
        // The map's progress: every task, and ended.
        let reading = try #require(mapped.progress).snapshot
        #expect(reading.completed == 40 && reading.total == 40 && reading.isFinished, "\(reading)")
        let streamed = pool.imap((0..<7).map { ClusterSquare(x: $0) }, chunksize: 3)
        var count = 0
        for try await _ in streamed { count += 1 }
        #expect(count == 7 && streamed.progress.snapshot.completed == 7 && streamed.progress.snapshot.total == 7)
        await #expect(throws: MP.Error.self) { try await pool.apply(ClusterFails()) }
        // Each worker sends its last minute with its heartbeat, every third of a lease.
        try await Task.sleep(for: .seconds(1))
        let status = try await MP.Cluster.status(database: db.url)
        let me = try #require(status.workers.first { $0.pid == worker.pid })
        #expect(me.isLive && me.concurrency == 2 && me.lateResults == 0)
        #expect(me.build == _NamedTaskChunks.build)
        #expect(status.pools >= 1)
        // 48 tasks finished in the last minute (40, 7, and 1), 1 of them failed (a task that
        // throws finishes its row as done, with its error inside).
        #expect(me.finishedLastMinute == 48 && me.failedLastMinute == 1, "\(status)")
        #expect(status.tasksLastMinute >= 48 && status.failedTasksLastMinute >= 1)
        #expect(status.failedRows == 0)
        #expect(status.expiredLeases == 0)
        let text = status.rendered()
        #expect(text.contains("workers: "), "\(text)")
        #expect(text.contains(" \(worker.pid ?? -1) "), "\(text)")
        #expect(text.contains("tasks: queued "))
        #expect(text.contains("last minute: "))
        pool.close()
        try await pool.join()

        let empty = db.url.replacingOccurrences(of: "/postgres?", with: "/template1?")
        await #expect(throws: MP.Error.self) { try await MP.Cluster.status(database: empty) }
        do {
            _ = try await MP.Cluster.status(database: empty)
        } catch {
            #expect(error.code == .database)
            #expect(error.message.contains("no swift-multiprocessing cluster at"), "\(error)")
        }
    }

    @Test("a worker SIGKILLed mid-task: the task completes on the other worker after the lease")
    func workerKilled() async throws {
        let db = try TestDatabase.shared()
        let marker = "/tmp/mp-cluster-marker-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        defer { try? FileManager.default.removeItem(atPath: marker) }
        let first = try startWorker(db.url, lease: 2)
        defer { try? stopWorker(first) }
        let pool = try await MP.ClusterPool(database: db.url)
        let result = pool.applyAsync(HangsFirstTime(marker: marker))
        // The first worker runs it (the marker appears), then dies.
        var waited = 0
        while !FileManager.default.fileExists(atPath: marker) && waited < 600 {
            try await Task.sleep(for: .milliseconds(50))
            waited += 1
        }
        #expect(FileManager.default.fileExists(atPath: marker))
        let second = try startWorker(db.url, lease: 2)
        defer { try? stopWorker(second) }
        try first.kill()
        try await first.join()
        let killed = ContinuousClock.now
        #expect(try await result.value == 7)
        let recovery = ContinuousClock.now - killed
        #expect(recovery < .seconds(10), "recovered within the lease and a poll: \(recovery)")
        pool.close()
        try await pool.join()
    }

    @Test("a task that kills every worker fails after its last attempt with a clear error")
    func killsEveryWorker() async throws {
        let db = try TestDatabase.shared()
        let worker = try startWorker(db.url)
        defer { try? stopWorker(worker) }
        let pool = try await MP.ClusterPool(database: db.url, maxAttempts: 2)
        do {
            _ = try await pool.apply(KillsItsWorker())
            Issue.record("a task that kills its worker succeeded")
        } catch {
            guard error.code == .workerDied else { Issue.record("unexpected \(error)"); return }
            #expect(error.message.contains("was lost 2 time(s)"), "\(error)")
            #expect(error.message.contains("died"), "\(error)")
        }
        #expect(try await pool.apply(ClusterSquare(x: 3)) == 9, "the worker goes on")
        pool.close()
        try await pool.join()
    }

    // Reproduction before (issue 20): after repeated worker restarts the
    // table held 37 rows, 35 silent for more than three leases: only a
    // worker that had lived 30 s removed them.
    @Test("workers silent for three leases leave mp_cluster_workers within seconds, removed by a live worker or a pool")
    func silentWorkersForgotten() async throws {
        let db = try TestDatabase.shared()
        let store = try ClusterStore(url: db.url)
        defer { store.shutdown() }
        try await store.migrate()
        let ghosts = ["ghost-a", "ghost-b"]
        for ghost in ghosts {
            _ = try await db.query(store, """
                INSERT INTO mp_cluster_workers (id, build, host, pid, concurrency, lease, heartbeat)
                VALUES ('\(ghost)', 'old-build', 'gone', 1, 1, 1, now() - interval '10 seconds') RETURNING id
                """)
        }
        let worker = try startWorker(db.url)
        defer { try? stopWorker(worker) }
        let pool = try await MP.ClusterPool(database: db.url)
        #expect(try await pool.apply(ClusterSquare(x: 5)) == 25)
        var left = ghosts
        for _ in 0..<100 where !left.isEmpty {
            left = try await db.query(store, "SELECT id FROM mp_cluster_workers WHERE id LIKE 'ghost-%'")
            if !left.isEmpty { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(left.isEmpty, "still registered: \(left)")
        let live = try await db.query(store, "SELECT id FROM mp_cluster_workers WHERE pid = \(worker.pid ?? -1)")
        #expect(live.count == 1, "the live worker stays registered")
        pool.close()
        try await pool.join()
    }

    // Reproduction before (issue 20): up to 128 tasks shared a row, and a
    // lost worker counted an attempt against all of them: with a worker
    // killed about once a second, 99 and 256 of 5,000 healthy tasks failed
    // with workerLost in two runs.
    @Test("a task that kills its worker, packed among healthy ones: the row is split until it is alone; only it fails")
    func poisonIsolated() async throws {
        let db = try TestDatabase.shared()
        let worker = try startWorker(db.url)
        defer { try? stopWorker(worker) }
        let pool = try await MP.ClusterPool(database: db.url, maxAttempts: 2)
        #expect(try await pool.apply(ClusterSquare(x: 2)) == 4) // the worker is known: rows are packed
        let rowsBefore = pool.insertedRows
        // A burst of one task, packed into rows of tens of tasks, the poison input among them.
        let results = (0..<300).map { pool.applyAsync(SquareUnlessThirteen(x: $0)) }
        let poison = results[13]
        var healthyFailed = 0
        for (x, result) in results.enumerated() where x != 13 {
            if (try? await result.value) != x * x { healthyFailed += 1 }
        }
        #expect(healthyFailed == 0, "\(healthyFailed) healthy tasks failed")
        do {
            _ = try await poison.value
            Issue.record("the task that kills its worker succeeded")
        } catch {
            guard error.code == .workerDied else { Issue.record("unexpected \(error)"); return }
            #expect(error.message.contains("was lost 2 time(s)"), "only the task alone in its row counts attempts: \(error)")
        }
        #expect(pool.insertedRows - rowsBefore > 1, "the poison's row was split")
        pool.close()
        try await pool.join()
    }

    @Test("cluster workers SIGKILLed about once a second under a load of small tasks: no healthy task fails")
    func killsUnderLoad() async throws {
        let db = try TestDatabase.shared()
        var workers = try (0..<2).map { _ in try startWorker(db.url, lease: 1) }
        defer { for worker in workers { try? stopWorker(worker) } }
        // Two attempts: before, a packed row lost twice failed every task in it.
        let pool = try await MP.ClusterPool(database: db.url, maxAttempts: 2)
        _ = try await pool.apply(ClusterSquare(x: 1))
        let results = (0..<600).map { _ in pool.applyAsync(WhoRuns(milliseconds: 15)) }
        for round in 0..<6 {
            try await Task.sleep(for: .milliseconds(700))
            let victim = workers.remove(at: round % 2)
            try victim.kill()
            try await victim.join()
            workers.insert(try startWorker(db.url, lease: 1), at: round % 2)
        }
        var failed = 0
        for result in results {
            do { _ = try await result.value } catch { failed += 1 }
        }
        #expect(failed == 0, "\(failed) of 600 healthy tasks failed")
        pool.close()
        try await pool.join()
    }

    @Test("fencing: a result from a worker whose lease passed to another attempt is refused")
    func fencing() async throws {
        let db = try TestDatabase.shared()
        let store = try ClusterStore(url: db.url)
        defer { store.shutdown() }
        try await store.migrate()
        let pool = UUID()
        let build = "fencing-test-\(UUID().uuidString)"
        try await store.openPool(pool, build: build)
        try await store.insert([.init(seq: 0, task: ClusterSquare.name, payload: try bundle([ClusterSquare(x: 2)]),
                                      items: 1, maxAttempts: 3, retryErrors: false)], pool: pool, build: build)
        let first = try await store.claim(owner: "worker-a", build: build, limit: 10, lease: 0.2)
        #expect(first.count == 1)
        try await Task.sleep(for: .milliseconds(400))
        #expect(try await store.reapExpired() >= 1)
        try await Task.sleep(for: .milliseconds(150)) // past the retry's backoff (0.1 s after attempt 1... 0.2 s)
        var second: [ClusterStore.Claimed] = []
        for _ in 0..<20 where second.isEmpty {
            second = try await store.claim(owner: "worker-b", build: build, limit: 10, lease: 30)
            if second.isEmpty { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(second.first?.attempt == 2)
        let late = try await store.record([.init(id: first[0].id, attempt: first[0].attempt, result: [1], failure: nil)], owner: "worker-a")
        #expect(late.isEmpty, "worker-a's late result is refused")
        let current = try await store.record([.init(id: second[0].id, attempt: second[0].attempt, result: [2], failure: nil)], owner: "worker-b")
        #expect(current == [second[0].id])
        let again = try await store.record([.init(id: second[0].id, attempt: second[0].attempt, result: [3], failure: nil)], owner: "worker-b")
        #expect(again.isEmpty, "recorded once")
        let finished = try await store.finished(pool)
        #expect(finished.map(\.result) == [[2]])
        try await store.closePool(pool)
    }

    @Test("a worker claims only tasks of its own build")
    func buildIdentity() async throws {
        let db = try TestDatabase.shared()
        let store = try ClusterStore(url: db.url)
        defer { store.shutdown() }
        try await store.migrate()
        let pool = UUID()
        try await store.openPool(pool, build: "another-build")
        try await store.insert([.init(seq: 0, task: ClusterSquare.name, payload: try bundle([ClusterSquare(x: 2)]),
                                      items: 1, maxAttempts: 3, retryErrors: false)], pool: pool, build: "another-build")
        let worker = try startWorker(db.url)
        defer { try? stopWorker(worker) }
        // The worker serves a task of its own build meanwhile, so it has polled.
        let own = try await MP.ClusterPool(database: db.url)
        #expect(try await own.apply(ClusterSquare(x: 5)) == 25)
        let rows = try await db.query(store, "SELECT state FROM mp_cluster_tasks WHERE pool = '\(pool.uuidString)'")
        #expect(rows == ["queued"])
        try await store.closePool(pool)
        own.close()
        try await own.join()
    }

    @Test("terminate cancels queued and running tasks; nothing stays claimed")
    func terminate() async throws {
        let db = try TestDatabase.shared()
        let worker = try startWorker(db.url)
        defer { try? stopWorker(worker) }
        let pool = try await MP.ClusterPool(database: db.url)
        let results = (0..<6).map { pool.applyAsync(Slow(x: $0, milliseconds: 30_000)) }
        // Wait until the worker holds some.
        let store = try ClusterStore(url: db.url)
        defer { store.shutdown() }
        let running = try await db.untilRunning(store, pool: pool.id)
        #expect(!running.isEmpty)
        await pool.terminate()
        for result in results {
            await #expect(throws: MP.Error.cancelled) { try await result.value }
        }
        try await pool.join()
        #expect(try await rowCount(db, pool: pool.id) == 0)
        // The worker stopped the cancelled tasks and serves others at once.
        let next = try await MP.ClusterPool(database: db.url)
        #expect(try await next.apply(ClusterSquare(x: 4)) == 16)
        next.close()
        try await next.join()
    }

    @Test("PostgreSQL restarted mid-run: the pool and the workers reconnect; nothing lost, nothing twice")
    func databaseRestart() async throws {
        let db = try TestDatabase.shared()
        let workers = try (0..<2).map { _ in try startWorker(db.url) }
        defer { for worker in workers { try? stopWorker(worker) } }
        let pool = try await MP.ClusterPool(database: db.url)
        let tasks = (0..<60).map { Slow(x: $0, milliseconds: 50) }
        let mapped = pool.mapAsync(tasks, chunksize: 2)
        try await Task.sleep(for: .milliseconds(300))
        try db.restart()
        #expect(try await mapped.value == Array(0..<60))
        #expect(try await pool.apply(ClusterSquare(x: 6)) == 36)
        pool.close()
        try await pool.join()
    }

    @Test("SIGTERM: a worker finishes its running task, records it, and exits 0")
    func gracefulStop() async throws {
        let db = try TestDatabase.shared()
        let worker = try startWorker(db.url, lease: 5)
        let pool = try await MP.ClusterPool(database: db.url)
        let result = pool.applyAsync(Slow(x: 42, milliseconds: 1_500))
        let store = try ClusterStore(url: db.url)
        defer { store.shutdown() }
        #expect(try await !db.untilRunning(store, pool: pool.id).isEmpty, "the worker holds the task before SIGTERM")
        try worker.terminate()
        #expect(try await result.value == 42)
        #expect(try worker.join(timeout: 20))
        #expect(worker.exitCode == 0)
        pool.close()
        try await pool.join()
    }

    @Test("bad input: a malformed URL, an unreachable database, bad arguments")
    func badInput() async throws {
        await #expect(throws: MP.Error.invalidArgument("'http://x' is not a postgres:// URL")) {
            _ = try await MP.ClusterPool(database: "http://x")
        }
        do {
            _ = try await MP.ClusterPool(database: "postgres://mp@localhost:1/postgres?host=/nonexistent")
            Issue.record("an unreachable database was accepted")
        } catch {
            guard case .database = error else { Issue.record("unexpected \(error)"); return }
        }
        await #expect(throws: MP.Error.invalidArgument("maxAttempts must be at least 1 (got 0)")) {
            _ = try await MP.ClusterPool(database: "postgres://mp@localhost/postgres", maxAttempts: 0)
        }
        await #expect(throws: MP.Error.invalidArgument("lease must be at least 1 s (got 0.5)")) {
            try await MP.Cluster.runWorker(database: "postgres://mp@localhost/postgres", lease: 0.5)
        }
        // TCP from a child forked from a Dispatch-using parent: refused at
        // once with what to do, not a connect timeout.
        await withCheckedContinuation { continuation in DispatchQueue.global().async { continuation.resume() } }
        let child = MP.Process {
            do {
                _ = try await MP.ClusterPool(database: "postgres://mp@127.0.0.1:5/postgres")
                MP.exit(1)
            } catch {
                guard let failure = error as? MP.Error, failure.code == .invalidArgument,
                      failure.message.contains("forked from one that used Dispatch") else { MP.exit(2) }
                MP.exit(42)
            }
        }
        try child.start()
        if !(try child.join(timeout: 20)) {
            try child.kill()
            try await child.join()
        }
        #expect(child.exitCode == 42)
        let db = try TestDatabase.shared()
        let pool = try await MP.ClusterPool(database: db.url)
        #expect(throws: MP.Error.invalidArgument("chunksize must be at least 1 (got 0)")) {
            _ = try pool.map([ClusterSquare(x: 1)], chunksize: 0)
        }
        await #expect(throws: MP.Error.invalidArgument("join() needs close() or terminate() first, as in Python")) {
            try await pool.join()
        }
        pool.close()
        #expect(throws: MP.Error.closed) { _ = try pool.apply(ClusterSquare(x: 1)) }
        try await pool.join()
    }
}

/// One row's payload: the tasks as one part.
func bundle<T: MP.NamedTask>(_ tasks: [T]) throws -> [UInt8] {
    ClusterBundle.encode([.init(items: tasks.count, payload: try _NamedTaskChunks.encode(tasks))])
}

func rowCount(_ db: MP.Cluster.LocalPostgres, pool: UUID) async throws -> Int {
    let store = try ClusterStore(url: db.url)
    defer { store.shutdown() }
    return try await db.query(store, "SELECT id::text FROM mp_cluster_tasks WHERE pool = '\(pool.uuidString)'").count
}

extension MP.Cluster.LocalPostgres {
    /// Waits (bounded, 20 s) until a worker holds one of `pool`'s rows; their states.
    func untilRunning(_ store: ClusterStore, pool: UUID) async throws -> [String] {
        var running: [String] = []
        for _ in 0..<400 where running.isEmpty {
            running = try await query(store, "SELECT state FROM mp_cluster_tasks WHERE pool = '\(pool.uuidString)' AND state = 'running'")
            if running.isEmpty { try await Task.sleep(for: .milliseconds(50)) }
        }
        return running
    }

    /// The first column of every row of `sql`, as text.
    /// Waits (up to 20 s) until live workers of this build have `count` slots in all.
    func untilSlots(_ store: ClusterStore, _ count: Int) async throws {
        for _ in 0..<400 {
            // (The tables may not exist yet: the first worker makes them.)
            if (try? await store.slots(build: _NamedTaskChunks.build)) == count { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        Issue.record("the workers did not register \(count) slots within 20 s")
    }

    func query(_ store: ClusterStore, _ sql: String) async throws -> [String] {
        let rows = try await store.client.query(PostgresQuery(unsafeSQL: sql), logger: ClusterStore.logger)
        var values: [String] = []
        for try await value in rows.decode(String.self) { values.append(value) }
        return values
    }
}

@Suite("Cluster rows: packing and malformed bytes")
struct ClusterBundleTests {
    @Test("parts and outcomes round-trip")
    func roundTrip() throws {
        let parts: [ClusterBundle.Part] = [.init(items: 1, payload: [1, 2, 3]), .init(items: 40, payload: []), .init(items: 2, payload: [0])]
        let decoded = try ClusterBundle.decodeParts(ClusterBundle.encode(parts))
        #expect(decoded.map(\.items) == [1, 40, 2])
        #expect(decoded.map(\.payload) == [[1, 2, 3], [], [0]])
        let outcomes: [ClusterBundle.PartOutcome] = [.results([9]), .threw(type: "E", description: "a\u{0}b"), .unrunnable("why"), .threw(type: "", description: "")]
        #expect(try ClusterBundle.decodeOutcomes(ClusterBundle.encode(outcomes)) == outcomes)
    }

    @Test("truncated, oversized, stray and unknown bytes are refused with a clear error")
    func malformed() throws {
        let good = ClusterBundle.encode([ClusterBundle.Part(items: 1, payload: [1, 2, 3])])
        for bytes in [[], [1, 0], Array(good.dropLast()), good + [0], [1, 0, 0, 0, 1, 0, 0, 0, 255, 255, 255, 255]] as [[UInt8]] {
            #expect(throws: ClusterBundle.Malformed.self) { try ClusterBundle.decodeParts(bytes) }
        }
        #expect(throws: ClusterBundle.Malformed.self) { try ClusterBundle.decodeOutcomes([1, 0, 0, 0, 7, 0, 0, 0, 0]) }
        do {
            _ = try ClusterBundle.decodeParts([1, 0, 0, 0, 1, 0, 0, 0, 255, 255, 255, 255])
        } catch {
            #expect(error.description.contains("claims 4294967295 bytes"), "\(error)")
        }
    }

    @Test("a done-notification's payload: the pool, and for a small result its row and bytes")
    func notificationParsing() {
        #expect(ClusterStore.parseDone("abc").pool == "abc")
        #expect(ClusterStore.parseDone("abc").row == nil)
        let parsed = ClusterStore.parseDone("abc:42:AAEC\n/w==")
        #expect(parsed.pool == "abc")
        #expect(parsed.row?.seq == 42)
        #expect(parsed.row?.result == [0, 1, 2, 255])
        #expect(ClusterStore.parseDone("abc:x:AAEC").row == nil, "a malformed seq is ignored (the row is collected by query)")
        #expect(ClusterStore.parseDone("abc:1:%%%").row == nil)
        #expect(ClusterStore.parseDone("").pool == "")
    }

    @Test("a row's failure reaches each of its parts; a done row's parts get their own outcomes")
    func rowOutcomes() throws {
        let lost = ClusterStore.Finished(seq: 0, state: "failed", result: nil, errorType: "MP.Error.workerLost", error: "gone", attempt: 3)
        #expect(MP.ClusterPool.outcomes(of: lost, parts: 2).map { try? $0.get() } == [nil, nil])
        let done = ClusterStore.Finished(seq: 1, state: "done", result: ClusterBundle.encode([.results([1]), .threw(type: "T", description: "d")]),
                                         errorType: nil, error: nil, attempt: 1)
        let outcomes = MP.ClusterPool.outcomes(of: done, parts: 2)
        #expect(try outcomes[0].get() == [1])
        #expect(throws: MP.Error.taskFailed(type: "T", description: "d")) { try outcomes[1].get() }
        let mismatched = MP.ClusterPool.outcomes(of: done, parts: 3)
        #expect(mismatched.count == 3)
        #expect(throws: MP.Error.self) { try mismatched[2].get() }
    }
}
