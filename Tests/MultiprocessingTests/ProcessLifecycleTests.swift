import Glibc
import Foundation
@testable import Multiprocessing
import Testing

@Suite("Process lifecycle and exit codes")
struct ProcessLifecycleTests {
    @Test("an empty target exits with 0 and is reaped by join")
    func startJoin() throws {
        let p = MP.Process {}
        #expect(p.pid == nil)
        #expect(p.exitCode == nil)
        #expect(!p.isAlive)
        try p.start()
        let pid = try #require(p.pid)
        #expect(pid > 0 && pid != MP.getpid())
        try joinOrKill(p)
        #expect(p.exitCode == 0)
        #expect(p.exitStatus == .exited(0))
        #expect(!p.isAlive)
        #expect(processState(pid) == nil, "joined child must be reaped")
    }

    @Test("exit(n), MP.exit(n) and ExitRequest(n) set the exit code to n")
    func exitCodes() throws {
        let viaExit = MP.Process { exit(3) }
        let viaMPExit = MP.Process { MP.exit(4) }
        let viaRequest = MP.Process { throw MP.ExitRequest(5) }
        for p in [viaExit, viaMPExit, viaRequest] { try p.start() }
        for p in [viaExit, viaMPExit, viaRequest] { try joinOrKill(p) }
        #expect(viaExit.exitCode == 3)
        #expect(viaMPExit.exitCode == 4)
        #expect(viaRequest.exitCode == 5)
    }

    @Test("death by signal N gives exit code -N")
    func signalExitCodes() throws {
        let selfKilled = MP.Process { try MP.kill(MP.getpid(), .kill) }
        try selfKilled.start()
        try joinOrKill(selfKilled)
        #expect(selfKilled.exitCode == -9)
        #expect(selfKilled.exitStatus == .signaled(.kill, coreDumped: false))
    }

    @Test("a throwing target prints the error with the process name to stderr and exits with 1")
    func throwingTarget() throws {
        struct Boom: Error, CustomStringConvertible { var description: String { "the target failed" } }
        let stderrPipe = TestPipe()
        let p = MP.Process(name: "thrower") {
            dup2(stderrPipe.writeEnd, STDERR_FILENO)
            throw Boom()
        }
        try p.start()
        let text = stderrPipe.readAll()
        try joinOrKill(p)
        #expect(p.exitCode == 1)
        #expect(text.contains("Process thrower:"))
        #expect(text.contains("Boom: the target failed"))
    }

    @Test("join(timeout:) returns false for a running child; terminate gives -15")
    func timedJoinAndTerminate() throws {
        let gate = TestPipe()
        let p = MP.Process { gate.awaitSignal() }
        try p.start()
        #expect(p.isAlive)
        #expect(try p.join(timeout: 0.05) == false)
        #expect(p.exitCode == nil)
        try p.terminate()
        try joinOrKill(p)
        #expect(p.exitCode == -15)
        #expect(!p.isAlive)
        try p.terminate() // after the end: a no-op, like Python
        try p.kill()
        #expect(p.exitCode == -15)
    }

    @Test("a signal arriving during join(timeout:) resumes the wait, it is not an error")
    func interruptedTimedJoin() throws {
        let previous = signal(SIGUSR1) { _ in } // a handler that returns: poll sees EINTR
        // Test-runner threads block most signals; let this one through here.
        var usr1 = sigset_t(), old = sigset_t()
        sigemptyset(&usr1)
        sigaddset(&usr1, SIGUSR1)
        pthread_sigmask(SIG_UNBLOCK, &usr1, &old)
        defer {
            pthread_sigmask(SIG_SETMASK, &old, nil)
            signal(SIGUSR1, previous)
        }
        let gate = TestPipe()
        let p = MP.Process { gate.awaitSignal() }
        try p.start()
        defer {
            gate.signal()
            try? joinOrKill(p)
        }
        let joiner = pthread_self()
        let interrupter = Thread { usleep(20_000); pthread_kill(joiner, SIGUSR1) }
        interrupter.start()
        let started = MonotonicClockForTests.now()
        #expect(try p.join(timeout: 0.2) == false)
        #expect(MonotonicClockForTests.now() - started >= 0.19, "the wait went on after the signal")
    }

    @Test("kill sends SIGKILL")
    func killGivesMinus9() throws {
        let gate = TestPipe()
        let p = MP.Process { gate.awaitSignal() }
        try p.start()
        try p.kill()
        try joinOrKill(p)
        #expect(p.exitCode == -9)
    }

    @Test("the sentinel is a pidfd that becomes readable when the child ends")
    func sentinel() throws {
        let gate = TestPipe()
        let p = MP.Process { gate.awaitSignal() }
        #expect(throws: MP.Error.notStarted(name: p.name)) { _ = try p.sentinel }
        try p.start()
        let sentinel = try p.sentinel
        #expect(try MP.wait(for: [sentinel], timeout: 0).isEmpty)
        gate.signal()
        #expect(try MP.wait(for: [sentinel], timeout: 20) == [sentinel])
        #expect(processState(p.pid!) == "Z", "readable sentinel: exited, not yet reaped")
        try joinOrKill(p)
        #expect(p.exitCode == 0)
    }

    @Test("async join suspends until the child ends")
    func asyncJoin() async throws {
        let gate = TestPipe()
        let p = MP.Process { gate.awaitSignal(); MP.exit(6) }
        try p.start()
        async let joined: Void = p.join()
        gate.signal()
        try await joined
        #expect(p.exitCode == 6)
    }

    @Test("a cancelled async join throws .cancelled and leaves the child joinable")
    func asyncJoinCancelled() async throws {
        let gate = TestPipe()
        let p = MP.Process { gate.awaitSignal() }
        try p.start()
        let waiter = Task { try await p.join() }
        waiter.cancel()
        await #expect(throws: MP.Error.cancelled) { try await waiter.value }
        #expect(p.isAlive)
        gate.signal()
        try joinOrKill(p)
        #expect(p.exitCode == 0)
    }

    @Test("two tasks may await the same child")
    func twoAsyncJoiners() async throws {
        let gate = TestPipe()
        let p = MP.Process { gate.awaitSignal() }
        try p.start()
        async let first: Void = p.join()
        async let second: Void = p.join()
        gate.signal()
        _ = try await (first, second)
        #expect(p.exitCode == 0)
    }

    @Test("close releases the process; afterwards operations throw .closed")
    func close() throws {
        let gate = TestPipe()
        let p = MP.Process(name: "closable") { gate.awaitSignal() }
        try p.start()
        #expect(throws: MP.Error.stillRunning(name: "closable")) { try p.close() }
        gate.signal()
        try joinOrKill(p)
        try p.close()
        try p.close() // twice is fine, like Python
        #expect(throws: MP.Error.closed(name: "closable")) { try p.join() }
        #expect(throws: MP.Error.closed(name: "closable")) { try p.start() }
        #expect(throws: MP.Error.closed(name: "closable")) { _ = try p.sentinel }
        #expect(throws: MP.Error.closed(name: "closable")) { try p.terminate() }
        #expect(p.pid == nil)
        #expect(p.description.contains("closed"))
    }
}

@Suite("Process misuse")
struct ProcessMisuseTests {
    @Test("starting twice throws .alreadyStarted")
    func startTwice() throws {
        let p = MP.Process(name: "twice") {}
        try p.start()
        #expect(throws: MP.Error.alreadyStarted(name: "twice")) { try p.start() }
        try joinOrKill(p)
        #expect(throws: MP.Error.alreadyStarted(name: "twice")) { try p.start() }
    }

    @Test("join, terminate and kill before start throw .notStarted")
    func beforeStart() throws {
        let p = MP.Process(name: "unstarted") {}
        #expect(throws: MP.Error.notStarted(name: "unstarted")) { try p.join() }
        #expect(throws: MP.Error.notStarted(name: "unstarted")) { try p.join(timeout: 1) }
        #expect(throws: MP.Error.notStarted(name: "unstarted")) { try p.terminate() }
        #expect(throws: MP.Error.notStarted(name: "unstarted")) { try p.kill() }
    }

    @Test("a negative or NaN timeout throws .negativeTimeout")
    func negativeTimeout() throws {
        let p = MP.Process {}
        try p.start()
        #expect(throws: MP.Error.negativeTimeout(-1)) { try p.join(timeout: -1) }
        #expect(throws: MP.Error.self) { try p.join(timeout: .nan) }
        #expect(throws: MP.Error.negativeTimeout(-0.5)) { _ = try MP.wait(for: [0], timeout: -0.5) }
        try joinOrKill(p)
    }

    @Test("setting daemon after start throws .daemonAfterStart")
    func daemonAfterStart() throws {
        let p = MP.Process(name: "late-daemon") {}
        try p.setDaemon(true)
        try p.setDaemon(false)
        try p.start()
        #expect(throws: MP.Error.daemonAfterStart(name: "late-daemon")) { try p.setDaemon(true) }
        try joinOrKill(p)
        #expect(!p.daemon)
    }

    @Test("a process joining itself gets .joinSelf (checked in the child)")
    func joinSelf() throws {
        let p = MP.Process(name: "selfish") {
            do {
                try MP.currentProcess().join()
                MP.exit(10)
            } catch {
                MP.exit(error as? MP.Error == .joinSelf(name: "selfish") ? 42 : 11)
            }
        }
        try p.start()
        try joinOrKill(p)
        #expect(p.exitCode == 42)
    }

    @Test("a child cannot join or signal a sibling it did not start: .notParent")
    func notParent() throws {
        let gate = TestPipe()
        let sibling = MP.Process(name: "sibling") { gate.awaitSignal() }
        try sibling.start()
        let p = MP.Process {
            do { try sibling.join(); MP.exit(10) } catch { if error as? MP.Error != .notParent(name: "sibling") { MP.exit(13) } }
            do { try sibling.terminate(); MP.exit(11) } catch { if error as? MP.Error != .notParent(name: "sibling") { MP.exit(14) } }
            MP.exit(sibling.isAlive ? 12 : 42)
        }
        try p.start()
        try joinOrKill(p)
        #expect(p.exitCode == 42)
        #expect(sibling.isAlive)
        gate.signal()
        try joinOrKill(sibling)
    }

    @Test("a daemonic process may not start children: .daemonCannotHaveChildren")
    func daemonHasNoChildren() throws {
        let p = MP.Process(name: "daemonic", daemon: true) {
            do {
                try MP.Process {}.start()
                MP.exit(10)
            } catch {
                MP.exit(error as? MP.Error == .daemonCannotHaveChildren(name: "daemonic") ? 42 : 11)
            }
        }
        try p.start()
        try joinOrKill(p)
        #expect(p.exitCode == 42)
    }

    @Test("errors read clearly")
    func messages() {
        #expect(MP.Error.daemonAfterStart(name: "p").description == "cannot set daemon on 'p': process has already started")
        #expect(MP.Error.negativeTimeout(-2).description == "timeout must not be negative (got -2.0)")
        #expect(MP.Error.system(MP.OSError("fork", errno: .resourceTemporarilyUnavailable)).description
            == "fork failed: Resource temporarily unavailable (errno 11)")
    }
}

@Suite("interrupt(): Python 3.14's SIGINT to a child")
struct InterruptTests {
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
}
