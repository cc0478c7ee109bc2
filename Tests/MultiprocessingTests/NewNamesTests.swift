import Testing
@testable import Multiprocessing
import Glibc

@Suite("Names from Python 3.13-3.14: interrupt, processCpuCount, a pool's join(timeout:)")
struct NewNamesTests {
    @Test("interrupt() sends SIGINT: -2 under every start method", arguments: MP.StartMethod.allCases)
    func interrupt(method: MP.StartMethod) throws {
        let started = try MP.Event(), gate = try MP.Event()
        // A forked child keeps its parent's SIGINT handler (the test runner
        // may install one when run directly): it restores the default, as a
        // program that wants `interrupt()` to end its children would.
        let p = method == .fork
            ? MP.Process { signal(SIGINT, SIG_DFL); try started.set(); _ = try gate.wait(timeout: 60) }
            : MP.getContext(method).Process(target: WaitForGate(started: started, gate: gate))
        try p.start()
        #expect(try started.wait(timeout: 20))
        try p.interrupt()
        try joinOrKill(p)
        #expect(p.exitCode == -SIGINT)
        try p.interrupt() // a no-op once it ended
    }

    @Test("processCpuCount is at most cpuCount and follows the affinity mask")
    func processCpuCount() throws {
        #expect(MP.processCpuCount() >= 1)
        #expect(MP.processCpuCount() <= MP.cpuCount())
        let (mine, theirs) = try MP.Pipe()
        let child = MP.Process {
            try MP.schedSetAffinity(0, [0])
            try theirs.send(MP.processCpuCount())
            try theirs.send(MP.schedGetAffinity())
        }
        try child.start()
        #expect(try mine.recv(Int.self) == 1)
        #expect(try mine.recv(Set<Int>.self) == [0])
        try joinOrKill(child)
        #expect(child.exitCode == 0)
    }

    @Test("schedSetAffinity refuses an empty set, a negative CPU and a CPU that is not there")
    func affinityMisuse() throws {
        #expect(throws: MP.OSError("sched_setaffinity", errno: .invalidArgument)) { try MP.schedSetAffinity(0, []) }
        #expect(throws: MP.OSError("sched_setaffinity", errno: .invalidArgument)) { try MP.schedSetAffinity(0, [-1]) }
        #expect(throws: MP.OSError("sched_setaffinity", errno: .invalidArgument)) { try MP.schedSetAffinity(0, [100_000]) }
        #expect(try MP.schedGetAffinity().count == MP.processCpuCount() || MP.processCpuCount() < MP.cpuCount())
    }

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

@Suite("RawValue, RawArray, recvBytes(into:)")
struct RawSharedStateTests {
    @Test("RawValue and RawArray are shared with a forked child, without a lock")
    func rawShared() throws {
        let value = try MP.RawValue(0)
        let array = try MP.RawArray(repeating: 0.0, count: 4)
        let child = MP.Process {
            value.value = 42
            for index in array.indices { array[index] = Double(index) * 1.5 }
        }
        try child.start()
        try joinOrKill(child)
        #expect(value.value == 42)
        #expect(array.snapshot == [0, 1.5, 3, 4.5])
        #expect(try MP.RawArray([1, 2, 3]).reduce(0, +) == 6)
        #expect(throws: MP.Error.invalidArgument("array count must be >= 0 (got -1)")) { try MP.RawArray(repeating: 0, count: -1) }
    }

    @Test("RawValue and RawArray cross into a spawned child as a named task's arguments")
    func rawCrossing() throws {
        let value = try MP.RawValue(Int64(0))
        let array = try MP.RawArray(repeating: Int32(0), count: 3)
        let child = MP.getContext(.spawn).Process(target: FillRaw(value: value, array: array))
        try child.start()
        try joinOrKill(child)
        #expect(child.exitCode == 0)
        #expect(value.value == 7)
        #expect(array.snapshot == [1, 2, 3])
    }

    @Test("recvBytes(into:) fills a buffer at an offset; a short buffer gets BufferTooShort with the whole message")
    func receiveInto() throws {
        let (a, b) = try MP.Pipe()
        try b.sendBytes(Array("hello".utf8))
        var buffer = [UInt8](repeating: 0, count: 8)
        #expect(try a.recvBytes(into: &buffer, offset: 2) == 5)
        #expect(buffer == [0, 0] + Array("hello".utf8) + [0])
        try b.sendBytes(Array("too long for it".utf8))
        #expect(throws: MP.Error.bufferTooShort(Array("too long for it".utf8))) { try a.recvBytes(into: &buffer) }
        #expect(throws: MP.Error.invalidArgument("offset 9 is outside the buffer of 8 bytes")) { try a.recvBytes(into: &buffer, offset: 9) }
    }
}

struct FillRaw: MP.NamedTask {
    var value: MP.RawValue<Int64>
    var array: MP.RawArray<Int32>
    func run() {
        value.value = 7
        for index in array.indices { array[index] = Int32(index + 1) }
    }
}

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
