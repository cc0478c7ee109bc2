import Glibc
import _CMultiprocessingRuntime
import _CMultiprocessingSync
import Synchronization
import MultiprocessingPlatform

/// What a forked ``MP/Process`` child does, from the fork to `_exit`.
enum ChildBootstrap {
    /// Tests only: the next forked child stalls before it reports (as one
    /// stuck on a runtime lock would); reset in the parent after each fork.
    nonisolated(unsafe) static var stallForTesting = false

    /// `crashLabel`: the process's name as a C string, made by the parent
    /// before the fork (building it in the child would cost page faults).
    /// `report`: the write end of the pipe on which the parent waits to
    /// hear that this child got past the after-fork phase (``MP/forkStartTimeout``); -1 when it does not wait.
    static func run(_ process: MP.Process, parentPid: Int32, daemon: Bool, crashLabel: [CChar], report: Int32) -> Never {
        // A daemon dies with its parent, even a SIGKILLed one (PR_SET_PDEATHSIG);
        // signal mask, concurrency hooks and the exit guard are reset here too.
        cmp_child_after_fork(daemon ? 1 : 0, parentPid, Runtime.exitGuard)
        Runtime.shared.afterForkInChild(process: process, parentPid: parentPid)
        // A crash (fatalError, an index out of range) says which process it was.
        crashLabel.withUnsafeBufferPointer { cmp_child_name_crashes($0.baseAddress) } // the array lives until _exit
        if stallForTesting { Sys.pauseForever() }
        // Past the phase where a lock held at the fork can stop us: say so
        // (a plain write of a stack byte: nothing of the runtime's).
        if report >= 0 {
            Sys.poke(report)
            Sys.close(report)
        }
        var code: Int32 = 0
        do {
            try process.run()
        } catch let request as MP.ExitRequest {
            code = request.code
        } catch {
            Runtime.reportUncaught(error, processName: process.name)
            code = 1
        }
        Runtime.shared.exitProcess(code)
    }
}

/// The bound and the count of ``ChildBootstrap``'s after-fork report.
enum ForkWatchdog {
    /// The bound's bits; 0: off.
    private static let bits = Atomic<UInt64>((1.0).bitPattern)
    static let restarts = Atomic<Int>(0)

    static var timeout: Double? {
        get {
            let raw = bits.load(ordering: .relaxed)
            return raw == 0 ? nil : Double(bitPattern: raw)
        }
        set { bits.store(newValue?.bitPattern ?? 0, ordering: .relaxed) }
    }
}

extension MP {
    /// Seconds a forked child (a closure ``MP/Process``, a closure ``MP/Pool``
    /// worker) may take to get past the after-fork phase before it is killed
    /// and forked again (default 1). In a busy multithreaded program a forked
    /// child can hang there on a Swift runtime lock another thread held at the
    /// fork; this is what notices it. A start that hangs three times in a row
    /// throws ``MP/Error/Code/startFailed``.
    ///
    /// The wait costs a fork start one more wake-up of the parent (60-100 µs
    /// of a 550-700 µs start and join here). `nil` turns the watchdog off: a
    /// start returns at once, as before, and a child stuck at the fork hangs
    /// where it is.
    public static var forkStartTimeout: Double? {
        get { ForkWatchdog.timeout }
        set {
            if let newValue { precondition(newValue > 0 && newValue.isFinite, "forkStartTimeout must be a positive number of seconds or nil, not \(newValue)") }
            ForkWatchdog.timeout = newValue
        }
    }

    /// Forked children killed and forked again because they did not get past
    /// the after-fork phase within ``forkStartTimeout`` (since the program started).
    public static var forkRestarts: Int { ForkWatchdog.restarts.load(ordering: .relaxed) }
}

extension ForkWatchdog {
    /// Forks the child of `process` and waits until it reports that it got
    /// past the after-fork phase. A child of a busy multithreaded program
    /// can hang there on a Swift runtime lock (a metadata or conformance
    /// cache) that another thread held at the fork, before any line of the
    /// user's code; no library can take those locks first. One that has not
    /// reported within ``MP/forkStartTimeout`` is killed, reaped, counted
    /// (``MP/forkRestarts``), logged, and forked again, up to three times in all.
    static func fork(_ process: MP.Process, _ request: StartRequest) throws(MP.Error) -> pid_t {
        let parentPid = Sys.getpid
        let crashLabel = Swift.Array(process.name.utf8CString)
        let watched = timeout
        let bound = watched ?? 0
        for attempt in 1...3 {
            let report: (read: Int32, write: Int32)
            if watched == nil {
                report = (-1, -1)
            } else {
                do { report = try Sys.pipe() } catch { throw .system(error) }
            }
            let child: () -> Never = {
                ChildBootstrap.run(process, parentPid: parentPid, daemon: request.daemon, crashLabel: crashLabel, report: report.write)
            }
            let pid: Int32
            do {
                // PR_SET_PDEATHSIG fires when the forking *thread* ends: a daemon
                // started from a short-lived thread is forked by a thread that
                // lives as long as the process.
                if request.daemon && !request.forkOnCurrentThread && Sys.gettid != parentPid {
                    pid = try ForkerThread.shared().fork(child)
                } else {
                    pid = try Runtime.forkFlushingStdio()
                    if pid == 0 { child() }
                }
            } catch {
                if watched != nil {
                    Sys.close(report.read)
                    Sys.close(report.write)
                }
                throw .system(error)
            }
            ChildBootstrap.stallForTesting = false
            guard watched != nil else { return pid }
            Sys.close(report.write)
            // Readable: the report, or end-of-file (the child died; its end is seen by join).
            let reported = (try? Sys.pollReadable(report.read, until: .after(validSeconds: bound))) ?? true
            Sys.close(report.read)
            if reported { return pid }
            try? Sys.kill(pid, SIGKILL)
            var status: Int32 = 0
            _ = try? Sys.waitpid(pid, &status, 0)
            restarts.add(1, ordering: .relaxed)
            LibraryLog.log(.warning, "\(process.name): forked child \(pid) did not get past the after-fork phase within \(bound) s (a runtime lock held by another thread at the fork); killed, forking again (attempt \(attempt + 1) of 3)")
        }
        throw .startTimedOut(name: process.name, seconds: bound)

    }
}
