import Glibc
import Multiprocessing
import Testing

/// Runs `body` with this process as child subreaper, so orphaned descendants
/// come back to it and can be reaped here rather than by init.
func asSubreaper<T>(_ body: () throws -> T) throws -> T {
    let was = try MP.isChildSubreaper()
    try MP.setChildSubreaper(true)
    defer { try? MP.setChildSubreaper(was) }
    return try body()
}

@Suite("Lifetimes: daemons, parent death, exit handling, zombies, leaks")
struct LifetimeTests {
    @Test("at its exit a process terminates its daemonic children and joins the others")
    func exitHandlingOfChildren() throws {
        let report = TestPipe()
        // Held open by this process, so only `middle`'s exit handling can end the daemon.
        let gate = TestPipe()
        let middle = MP.Process {
            let daemon = MP.Process(daemon: true) { gate.awaitSignal() } // would wait forever
            let worker = MP.Process {
                report.write("worker-done;")
            }
            try daemon.start()
            try worker.start()
            report.write("daemon:\(daemon.pid!);")
            // Returning ends `middle`: its exit handling must terminate `daemon` and join `worker`.
        }
        try middle.start()
        try joinOrKill(middle)
        let text = report.readAll()
        #expect(middle.exitCode == 0)
        #expect(text.contains("worker-done;"))
        let daemonPid = try #require(text.split(separator: ";").first { $0.hasPrefix("daemon:") }.flatMap { Int32($0.dropFirst(7)) })
        #expect(processState(daemonPid) == nil, "the daemon was reaped by its parent's exit handling")
    }

    @Test("a daemonic child dies when its parent is SIGKILLed")
    func daemonDiesWithKilledParent() throws {
        try asSubreaper {
            let report = TestPipe()
            // Held open by this process: `middle`'s death must not end the
            // daemon's wait with end-of-file before the death signal does.
            let gate = TestPipe()
            let middle = MP.Process {
                let daemon = MP.Process(daemon: true) { gate.awaitSignal() }
                try daemon.start()
                report.write(daemon.pid!)
                try MP.kill(MP.getpid(), .kill)
            }
            try middle.start()
            let daemonPid = try #require(report.readInt32())
            try joinOrKill(middle)
            #expect(middle.exitCode == -9)
            // The daemon was re-parented to us (subreaper): it must die, and we reap it.
            let status = try waitOrKill(daemonPid, within: 10)
            #expect(status == .signaled(.kill, coreDumped: false))
        }
    }

    @Test("a non-daemonic child survives its parent's SIGKILL (an orphan, as in Python)")
    func orphanSurvives() throws {
        try asSubreaper {
            let report = TestPipe()
            let gate = TestPipe()
            let middle = MP.Process {
                let child = MP.Process { gate.awaitSignal(); MP.exit(7) }
                try child.start()
                report.write(child.pid!)
                try MP.kill(MP.getpid(), .kill)
            }
            try middle.start()
            let orphanPid = try #require(report.readInt32())
            try joinOrKill(middle)
            #expect(processState(orphanPid) != nil)
            #expect(MP.getppid() != orphanPid)
            gate.signal()
            #expect(try waitOrKill(orphanPid) == .exited(7))
        }
    }

    @Test("a daemon started from a short-lived thread does not die when that thread exits")
    func daemonFromShortLivedThread() throws {
        let gate = TestPipe()
        final class Box: @unchecked Sendable { var process: MP.Process?; var error: (any Error)? }
        let box = Box()
        var thread = pthread_t()
        let context = Unmanaged.passRetained(ThreadWork {
            let p = MP.Process(daemon: true) { gate.awaitSignal(); MP.exit(7) }
            do { try p.start() } catch { box.error = error }
            box.process = p
        }).toOpaque()
        #expect(pthread_create(&thread, nil, { context in
            Unmanaged<ThreadWork>.fromOpaque(context!).takeRetainedValue().body()
            return nil
        }, context) == 0)
        pthread_join(thread, nil) // the starting thread is gone now
        if let error = box.error { throw error }
        let p = try #require(box.process)
        #expect(p.isAlive)
        gate.signal()
        try joinOrKill(p)
        #expect(p.exitCode == 7, "the daemon must live until it finishes, not die with the thread (-9)")
    }

    @Test("activeChildren returns the live children and reaps the finished ones")
    func activeChildrenReaps() throws {
        let gate = TestPipe()
        let live = MP.Process { gate.awaitSignal() }
        let quick = MP.Process { MP.exit(3) }
        try live.start()
        try quick.start()
        let quickPid = quick.pid!
        _ = try MP.wait(for: [quick.sentinel], timeout: 20)
        let active = MP.activeChildren()
        #expect(active.contains { $0 === live })
        #expect(!active.contains { $0 === quick })
        #expect(processState(quickPid) == nil, "activeChildren reaped the finished child")
        #expect(quick.exitCode == 3)
        gate.signal()
        try joinOrKill(live)
        #expect(!MP.activeChildren().contains { $0 === live || $0 === quick })
    }

    @Test("a dropped, never-joined child is still reaped (no zombie)")
    func droppedChildIsReaped() throws {
        var pid: Int32 = 0
        var sentinel: Int32 = -1
        do {
            let p = MP.Process { MP.exit(0) }
            try p.start()
            pid = p.pid!
            sentinel = fcntl(try p.sentinel, F_DUPFD_CLOEXEC, 0)
        }
        defer { close(sentinel) }
        _ = try MP.wait(for: [sentinel], timeout: 20)
        _ = MP.activeChildren()
        #expect(processState(pid) == nil)
    }

    @Test("MP.wait() reaping a Process's child hands the exit code to the Process")
    func rawWaitKeepsExitCode() throws {
        let p = MP.Process { MP.exit(9) }
        try p.start()
        let result = try MP.wait()
        #expect(result.pid == p.pid)
        #expect(result.status == .exited(9))
        #expect(p.exitCode == 9)
        #expect(!p.isAlive)
        try p.join()
    }

    @Test("1,000 start/join cycles leave no zombie and no extra descriptor")
    func noLeaks() throws {
        let before = openDescriptorCount()
        for _ in 0..<1_000 {
            let p = MP.Process {}
            try p.start()
            try joinOrKill(p)
            #expect(p.exitCode == 0)
        }
        #expect(openDescriptorCount() == before)
        #expect(!hasAnyChild(), "every child was reaped")
    }
}

final class ThreadWork {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}
