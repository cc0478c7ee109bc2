import Glibc
@testable import Multiprocessing
import Testing

nonisolated(unsafe) var initializationsInThisProcess = 0

struct PoolBoom: Error, CustomStringConvertible { var description: String { "boom" } }

@Suite("Pool")
struct PoolTests {
    @Test("map keeps order, for fixed-width and Codable results, any chunk size")
    func mapOrder() throws {
        try MP.Pool.with(processes: 2) { (pool: MP.Pool) throws -> Void in
            #expect(try pool.map(0..<10_000) { $0 * $0 } == (0..<10_000).map { $0 * $0 })
            #expect(try pool.map(["a", "bb", "ccc"], chunksize: 1) { $0.count } == [1, 2, 3])
            #expect(try pool.map(0..<50, chunksize: 7) { "item \($0)" } == (0..<50).map { "item \($0)" })
            #expect(try pool.map(Set([3]), chunksize: 1) { $0 + 1 } == [4])
            #expect(try pool.map([Int]()) { $0 } == [])
            #expect(try pool.starmap([(1, 2), (3, 4)]) { $0 + $1 } == [3, 7])
            #expect(throws: MP.Error.invalidArgument("chunksize must be at least 1 (got 0)")) { _ = try pool.map(0..<3, chunksize: 0) { $0 } }
        }
    }

    @Test("map does not serialize its inputs: workers read them from the inherited copy")
    func inheritedInputs() throws {
        final class NotCodable { let value: Int; init(_ value: Int) { self.value = value } }
        let inputs = (0..<100).map { NotCodable($0) }
        #expect(try inputs.parallelMap(processes: 2) { $0.value * 2 } == (0..<100).map { $0 * 2 })
    }

    @Test("applyAsync: get, wait, ready, successful, callbacks; apply blocks")
    func applyAsync() throws {
        try MP.Pool.with(processes: 2) { (pool: MP.Pool) throws -> Void in
            let seen = try MP.Value(0)
            let gate = TestPipe()
            let slow = pool.applyAsync({ () -> Int in gate.awaitSignal(); return 7 }, callback: { seen.store($0) })
            #expect(!slow.ready)
            #expect(throws: MP.Error.notReady) { _ = try slow.successful }
            #expect(throws: MP.Error.resultTimeout) { _ = try slow.get(timeout: 0.05) }
            #expect(slow.wait(timeout: 0.01) == false)
            gate.signal()
            #expect(try slow.get(timeout: 20) == 7)
            #expect(slow.ready)
            #expect(try slow.successful)
            #expect(seen.load() == 7) // the callback ran before get returned
            #expect(try pool.apply { MP.getpid() } != MP.getpid())
            let results = (0..<200).map { i in pool.applyAsync { i * 3 } }
            #expect(try results.map { try $0.get(timeout: 20) } == (0..<200).map { $0 * 3 })
        }
    }

    @Test("a throwing task fails its own result with the error's type and description")
    func thrownErrors() throws {
        try MP.Pool.with(processes: 2) { (pool: MP.Pool) throws -> Void in
            let errors = try MP.Value(0)
            let failing = pool.applyAsync({ () throws -> Int in throw PoolBoom() }, errorCallback: { _ in errors.add(1) })
            let fine = pool.applyAsync { 5 }
            #expect(throws: MP.Error.taskFailed(type: "PoolBoom", description: "boom")) { _ = try failing.get(timeout: 20) }
            #expect(try !failing.successful)
            #expect(errors.load() == 1)
            #expect(try fine.get(timeout: 20) == 5)
            #expect(throws: MP.Error.taskFailed(type: "PoolBoom", description: "boom")) {
                _ = try pool.map(0..<10, chunksize: 1) { (i: Int) throws -> Int in if i == 4 { throw PoolBoom() }; return i }
            }
        }
    }

    @Test("a worker killed mid-task fails that task with workerDied; the pool goes on")
    func workerKilled() throws {
        try MP.Pool.with(processes: 2) { (pool: MP.Pool) throws -> Void in
            let killed = pool.applyAsync { () -> Int in kill(getpid(), SIGKILL); return 0 }
            let crashed = pool.applyAsync { () -> Int in exit(3) }
            #expect(performing: { _ = try killed.get(timeout: 20) }, throws: diedOf("was killed by SIGKILL"))
            #expect(performing: { _ = try crashed.get(timeout: 20) }, throws: diedOf("exited with 3"))
            // In map, the chunk of the dead worker fails the map; the pool stays usable.
            #expect(performing: {
                _ = try pool.map(0..<8, chunksize: 1) { (i: Int) -> Int in if i == 3 { kill(getpid(), SIGKILL) }; return i }
            }, throws: diedOf("was killed by SIGKILL"))
            #expect(try pool.map(0..<100) { $0 + 1 } == Swift.Array(1...100))
            #expect(try pool.apply { 42 } == 42)
        }
    }

    @Test("tasks with results in shared memory report in batches: nothing lost at exit, rotation or death")
    func quietCompletions() async throws {
        let pool = try MP.Pool(processes: 2, maxTasksPerChild: 40)
        let pool2 = try MP.Pool(processes: 2)
        // A lost completion would leave a stream waiting: terminate fails it instead.
        let watchdog = Task.detached { try await Task.sleep(for: .seconds(20)); pool.terminate(); pool2.terminate() }
        defer {
            watchdog.cancel()
            for each in [pool, pool2] { each.terminate(); try? each.join() } // no worker outlives the test
        }
        // 5,000 one-item chunks: workers mark them done in shared memory and
        // report every 0.2 ms; each worker exits after 40 of them.
        #expect(try pool.mapAsync(0..<5_000, chunksize: 1) { $0 * 3 }.get(timeout: 20) == (0..<5_000).map { $0 * 3 })
        var streamed: [Double] = []
        for try await value in pool.imap(0..<3_000, { Double($0) / 2 }) { streamed.append(value) }
        #expect(streamed == (0..<3_000).map { Double($0) / 2 })

        // The task whose worker dies fails; the ones it finished before count as done.
        #expect(performing: {
            _ = try pool2.mapAsync(0..<2_000, chunksize: 1) { (i: Int) -> Int in if i == 1_500 { kill(getpid(), SIGKILL) }; return i }.get(timeout: 20)
        }, throws: diedOf("was killed by SIGKILL"))
        #expect(try pool2.mapAsync(0..<2_000, chunksize: 1) { $0 }.get(timeout: 20) == Swift.Array(0..<2_000))
        var prefix: [Int] = []
        do {
            for try await value in pool2.imap(0..<2_000, { (i: Int) -> Int in if i == 1_500 { kill(getpid(), SIGKILL) }; return i }) {
                prefix.append(value)
            }
            Issue.record("imap finished although a worker died")
        } catch {
            #expect(diedOf("was killed by SIGKILL")(error))
        }
        #expect(prefix == Swift.Array(0..<prefix.count) && prefix.count <= 1_500, "imap yields an in-order prefix, then throws")
    }

    @Test("initializer runs once per worker before its first task; maxTasksPerChild rotates workers")
    func initializerAndMaxTasks() throws {
        let pool = try MP.Pool(processes: 2, initializer: { initializationsInThisProcess += 1 }, maxTasksPerChild: 2)
        let seen = try pool.map(0..<12, chunksize: 1) { _ in [MP.getpid(), Int32(initializationsInThisProcess)] }
        pool.close()
        try pool.join()
        #expect(seen.allSatisfy { $0[1] == 1 }, "the initializer ran exactly once in each worker, before its tasks")
        let perWorker = Dictionary(grouping: seen.map { $0[0] }, by: { $0 }).mapValues(\.count)
        #expect(perWorker.values.allSatisfy { $0 <= 2 })
        #expect(perWorker.count >= 6)
        #expect(initializationsInThisProcess == 0, "never in the parent")

        let broken = try MP.Pool(processes: 2, initializer: { throw PoolBoom() })
        #expect(throws: MP.Error.initializerFailed(type: "PoolBoom", description: "boom")) { _ = try broken.apply { 1 } }
        broken.terminate()
        try broken.join()
    }

    @Test("imap keeps order, imapUnordered does not need to; async map")
    func streams() async throws {
        let pool = try MP.Pool(processes: 2)
        var ordered: [Int] = []
        for try await value in pool.imap(0..<20, { $0 * 2 }) { ordered.append(value) }
        #expect(ordered == (0..<20).map { $0 * 2 })
        var unordered: [Int] = []
        for try await value in pool.imapUnordered(0..<20, chunksize: 3, { $0 }) { unordered.append(value) }
        #expect(unordered.sorted() == Swift.Array(0..<20))
        #expect(try await pool.map(0..<10) { $0 } == Swift.Array(0..<10))
        #expect(try await pool.apply { 9 } == 9)
        pool.terminate()
        try await pool.join()
    }

    @Test("the scoped form ends every worker, even with tasks still running")
    func scopedFormCleansUp() throws {
        let gate = TestPipe()
        var workers: [Int32] = []
        let pending = try MP.Pool.with(processes: 2) { (pool: MP.Pool) throws -> MP.AsyncResult<Int> in
            let stuck = pool.applyAsync { () -> Int in gate.awaitSignal(); return 1 }
            while MP.activeChildren().isEmpty { sched_yield() }
            workers = MP.activeChildren().compactMap(\.pid)
            return stuck
        }
        #expect(!workers.isEmpty)
        #expect(workers.allSatisfy { processState($0) == nil }, "no worker left running or unreaped")
        #expect(MP.activeChildren().isEmpty)
        #expect(throws: MP.Error.terminated) { _ = try pending.get(timeout: 20) }
    }

    @Test("close, join and terminate: misuse, pending results, no process left behind")
    func lifecycle() throws {
        let pool = try MP.Pool(processes: 2)
        #expect(throws: MP.Error.invalidArgument("join() needs close() or terminate() first")) { try pool.join() }
        let gate = TestPipe()
        let stuck = pool.applyAsync { () -> Int in gate.awaitSignal(); return 1 }
        while MP.activeChildren().isEmpty { sched_yield() }
        let workers = MP.activeChildren().compactMap(\.pid)
        pool.terminate()
        try pool.join()
        #expect(throws: MP.Error.terminated) { _ = try stuck.get(timeout: 20) }
        #expect(throws: MP.Error.terminated) { _ = try pool.apply { 1 } }
        #expect(workers.allSatisfy { processState($0) == nil }, "terminated workers were reaped")

        let closing = try MP.Pool(processes: 1)
        let last = closing.applyAsync { 3 }
        closing.close()
        #expect(throws: MP.Error.poolClosed) { _ = try closing.apply { 1 } }
        try closing.join()
        #expect(try last.get() == 3)
        #expect(throws: MP.Error.invalidArgument("processes must be at least 1 (got 0)")) { _ = try MP.Pool(processes: 0) }
    }
}

/// Matches a `.workerDied` error naming a pool worker and how it ended.
func diedOf(_ how: String) -> (any Error) -> Bool {
    { error in
        guard let error = error as? MP.Error, error.code == .workerDied else { return false }
        return error.message.hasPrefix("the worker running the task died: PoolWorker-") && error.message.hasSuffix(how)
    }
}

@Suite("A pool's join(timeout:) (Python 3.14)")
struct PoolJoinTimeoutTests {
    @Test("a pool's join(timeout:) returns false while a task runs, true once the workers exited")
    func poolJoinTimeout() throws {
        let gate = try MP.Event()
        let pool = try MP.Pool(processes: 1)
        let waiting = pool.applyAsync { () -> Bool in (try? gate.wait(timeout: 30)) ?? false }
        pool.close()
        #expect(try pool.join(timeout: 0.05) == false)
        #expect(try pool.join(timeout: -1) == false, "a negative timeout waits not at all")
        try gate.set()
        #expect(try waiting.get(timeout: 20) == true)
        #expect(try pool.join(timeout: 20) == true)
        let open = try MP.Pool(processes: 1)
        #expect(throws: MP.Error.invalidArgument("join() needs close() or terminate() first")) { try open.join(timeout: 0) }
        open.terminate()
        try open.join()
    }
}
