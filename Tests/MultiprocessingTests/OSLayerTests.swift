import Glibc
import Multiprocessing
import Testing

@Suite("The os layer")
struct OSLayerTests {
    @Test("fork returns .child in the child and the child's pid in the parent")
    func forkSides() throws {
        let parentPid = MP.getpid()
        let report = TestPipe()
        switch try MP.fork() {
        case .child:
            report.write("\(MP.getppid() == parentPid) \(MP.getpid() != parentPid)")
            MP.exit(0)
        case .parent(let child):
            #expect(child > 0)
            let text = report.readAll()
            #expect(text == "true true")
            #expect(try waitOrKill(child) == .exited(0))
        }
    }

    @Test("an uncaught error in a raw fork child: status 256, printed to stderr")
    func uncaughtInRawChild() throws {
        struct PythonException: Error, CustomStringConvertible { var description: String { "抛出异常状态" } }
        let stderrPipe = TestPipe()
        switch try MP.fork() {
        case .child:
            dup2(stderrPipe.writeEnd, STDERR_FILENO)
            MP.runAndExit { throw PythonException() }
        case .parent(let child):
            let text = stderrPipe.readAll()
            let status = try waitOrKill(child)
            #expect(status.rawValue == 256)
            #expect(status == .exited(1))
            #expect(text == "PythonException: 抛出异常状态\n")
        }
    }

    @Test("wait() returns the pid and raw status, like os.wait()")
    func waitAny() throws {
        guard case .parent(let child) = try MP.fork() else { MP.exit(2) }
        let result = try MP.wait()
        #expect(result.pid == child)
        #expect(result.status.rawValue == 512)
        #expect(result.status.exitCode == 2)
    }

    @Test("waitpid decodes signals, stops and continues; noHang returns nil")
    func waitpidDecoding() throws {
        let gate = TestPipe()
        guard case .parent(let child) = try MP.fork() else {
            gate.awaitSignal()
            MP.exit(0)
        }
        #expect(try MP.waitpid(child, options: .noHang) == nil)
        try MP.kill(child, .stop)
        #expect(try MP.waitpid(child, options: .untraced)?.status == .stopped(.stop))
        try MP.kill(child, .continue)
        #expect(try MP.waitpid(child, options: .continued)?.status == .continued)
        try MP.kill(child, .kill)
        let status = try #require(try MP.waitpid(child)).status
        #expect(status == .signaled(.kill, coreDumped: false))
        #expect(status.rawValue == 9)
        #expect(status.exitCode == -9)
    }

    @Test("raw statuses round-trip through ExitStatus")
    func statusRoundTrip() {
        for raw: Int32 in [0, 256, 512, 0xff00, 9, 15, 0x86, 0x137f, 0xffff] {
            #expect(MP.ExitStatus(rawValue: raw).rawValue == raw)
        }
        #expect(MP.ExitStatus(rawValue: 0x86) == .signaled(.abort, coreDumped: true))
        #expect(MP.Signal.terminate.description == "SIGTERM")
        #expect(MP.Signal(rawValue: 40).description == "signal 40")
    }

    @Test("failures carry errno: kill of no process, waitpid of a non-child")
    func typedErrors() throws {
        #expect(throws: MP.OSError("kill", errno: .noSuchProcess)) { try MP.kill(999_999_999, .terminate) }
        #expect(throws: MP.OSError("waitpid", errno: .noChildProcess)) { _ = try MP.waitpid(1) }
        #expect(throws: MP.OSError("kill", errno: .invalidArgument)) { try MP.kill(MP.getpid(), MP.Signal(rawValue: 12345)) }
    }

    @Test("getpid, getppid and cpuCount")
    func identities() {
        #expect(MP.getpid() == getpid())
        #expect(MP.getppid() == getppid())
        #expect(MP.cpuCount() == Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        #expect(MP.cpuCount() >= 1)
    }
}

@Suite("CPU affinity: processCpuCount, schedSetAffinity, schedGetAffinity")
struct AffinityTests {
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
}
