import Testing
@testable import Multiprocessing
import Glibc

@Suite("ThreadPool (multiprocessing.dummy)", .serialized)
struct ThreadPoolTests {
    @Test("apply, applyAsync, map, starmap, imap, imapUnordered on threads")
    func api() async throws {
        let pool = try MP.Dummy.Pool(processes: 4)
        #expect(try await pool.apply { 6 * 7 } == 42)
        #expect(try pool.applyAsync { "x" }.get(timeout: 10) == "x")
        #expect(try await pool.map(0..<1000) { $0 * $0 } == (0..<1000).map { $0 * $0 })
        #expect(try pool.starmap([(1, 2), (3, 4)]) { $0 + $1 } == [3, 7])
        var ordered: [Int] = []
        for try await value in pool.imap(0..<20, { $0 + 1 }) { ordered.append(value) }
        #expect(ordered == Array(1...20))
        var unordered: [Int] = []
        for try await value in pool.imapUnordered(0..<20, { $0 + 1 }) { unordered.append(value) }
        #expect(unordered.sorted() == Array(1...20))
        struct Oops: Error {}
        #expect(throws: MP.Error.taskFailed(type: "Oops", description: "Oops()")) { try pool.applyAsync { () throws -> Int in throw Oops() }.get() }
        pool.close()
        #expect(throws: MP.Error.poolClosed) { try pool.applyAsync { 1 }.get() }
        #expect(try pool.join(timeout: 10))
    }

    @Test("blocking tasks run in parallel on the threads (I/O-bound work)")
    func parallelBlocking() throws {
        try MP.ThreadPool.with(processes: 8) { pool in
            var start = timespec(), end = timespec()
            clock_gettime(CLOCK_MONOTONIC, &start)
            _ = try pool.map(0..<8, chunksize: 1) { _ in usleep(200_000) }
            clock_gettime(CLOCK_MONOTONIC, &end)
            let elapsed = Double(end.tv_sec - start.tv_sec) + Double(end.tv_nsec - start.tv_nsec) / 1e9
            #expect(elapsed < 1.0, "8 sleeps of 0.2 s on 8 threads took \(elapsed) s")
        }
    }

    @Test("terminate fails the queued tasks instead of leaving them waiting")
    func terminateFailsQueued() throws {
        let pool = try MP.ThreadPool(processes: 1)
        let gate = StartFlag(), started = StartFlag()
        let running = pool.applyAsync { started.set(); _ = gate.wait(10); return 1 }
        let queued = pool.applyAsync { 2 }
        #expect(started.wait(10))
        pool.terminate()
        #expect(throws: MP.Error.terminated) { try queued.get(timeout: 5) }
        gate.set()
        #expect(try running.get(timeout: 10) == 1)
        #expect(try pool.join(timeout: 10))
    }
}
