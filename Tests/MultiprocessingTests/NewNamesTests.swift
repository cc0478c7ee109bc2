import Testing
@testable import Multiprocessing
#if canImport(Glibc)
import Glibc
#endif

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
        #expect(throws: MP.PoolError.invalidArgument("join() needs close() or terminate() first")) { try open.join(timeout: 0) }
        open.terminate()
        try open.join()
    }
}
