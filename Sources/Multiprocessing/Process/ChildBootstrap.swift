#if canImport(Glibc)
import Glibc
#endif
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
    /// throws ``MP/ProcessError/startTimedOut(name:seconds:)``.
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
