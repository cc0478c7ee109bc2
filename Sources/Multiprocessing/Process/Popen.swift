import Glibc
import MultiprocessingPlatform

/// What a start needs besides the process object.
struct StartRequest {
    /// Python's `daemon`: the child dies with its parent (`PR_SET_PDEATHSIG`).
    var daemon: Bool
    /// The caller vouches that this thread lives as long as the child may
    /// (a pool's own thread), so a daemon needs no hand-off to the forker thread.
    var forkOnCurrentThread: Bool
}

/// CPython's `Popen` (`popen_fork`, `popen_spawn_posix`,
/// `popen_forkserver`): how a child is started under one start method, and
/// the handle of the started child. ``MP/Process`` owns this interface; the
/// one type per method (`ForkPopen`, `SpawnPopen`, `ForkServerPopen`) lives
/// with the start methods, which register how a method finds its type at
/// start-up (``PopenTypes``), so this layer never names them. The task
/// pool's workers and a manager's server are processes, and start alike.
///
/// Each type writes only what differs, its checks and its launch; the
/// rest (opening the sentinel, polling, waiting, signalling, closing) is
/// written once, here, because under every method the child is this
/// process's own child (the forkserver clones with `CLONE_PARENT`).
protocol Popen: Sendable {
    /// The start method this type implements.
    static var method: MP.StartMethod { get }
    /// Refuses a process this method cannot start, before anything is done.
    static func check(_ process: MP.Process) throws(MP.Error)
    /// Starts the child that runs `process` (CPython's `_launch`); its pid.
    static func launch(_ process: MP.Process, _ request: StartRequest) throws(MP.Error) -> pid_t

    /// The child's pid.
    var pid: pid_t { get }
    /// Python's `sentinel`: a pidfd, readable once the child has ended; -1
    /// on a kernel without pidfds (then ``poll()`` is polled).
    var sentinel: Int32 { get }
    init(pid: pid_t, sentinel: Int32)
}

extension Popen {
    /// Launches and opens the sentinel: the one start of every method (the
    /// caller ran ``check(_:)`` first, before the process changed state).
    static func start(_ process: MP.Process, _ request: StartRequest) throws(MP.Error) -> Self {
        let pid = try launch(process, request)
        return Self(pid: pid, sentinel: (try? Sys.pidfdOpen(pid)) ?? -1)
    }

    /// CPython's `poll()`: reaps the child if it has ended (or, `blocking`,
    /// when it ends) and returns its status; nil while it runs. `ECHILD`
    /// (reaped behind our back) throws.
    /// What the child used comes with its status (`wait4`).
    func poll(blocking: Bool = false) throws(MP.OSError) -> (MP.ExitStatus, Sys.Usage)? {
        var raw: Int32 = 0
        var reaped = try Sys.wait4(pid, &raw, WNOHANG)
        if reaped.pid == 0 && blocking { reaped = try Sys.wait4(pid, &raw, 0) }
        return reaped.pid == pid ? (MP.ExitStatus(rawValue: raw), reaped.usage) : nil
    }

    /// CPython's `wait(timeout)`, without the reaping: whether the child
    /// ended before `deadline` (nil: waits for it).
    func wait(until deadline: Deadline?) throws(MP.OSError) -> Bool {
        guard sentinel >= 0 else { return false } // no pidfd: the caller polls
        return try Sys.pollReadable(sentinel, until: deadline)
    }

    /// Suspends, blocking no thread, until the child has ended.
    func wait() async throws(FDWatcher.WaitError) {
        guard sentinel >= 0 else { return }
        try await FDWatcher.readable(sentinel)
    }

    /// Sends `signal` through the sentinel (no pid-reuse race), or by pid
    /// without one. A child that has ended but is not reaped yet is not an error.
    func send(_ signal: MP.Signal) throws(MP.OSError) {
        do throws(MP.OSError) {
            if sentinel >= 0 { try Sys.pidfdSendSignal(sentinel, signal.rawValue) } else { try Sys.kill(pid, signal.rawValue) }
        } catch where error.errno == .noSuchProcess {
            return
        }
    }

    /// Python's `close()`: releases the sentinel.
    func close() {
        if sentinel >= 0 { Sys.close(sentinel) }
    }
}

/// How a start method finds its ``Popen`` type: set once at start-up by the
/// start methods' layer (the library's entry hook, before `main`), read by
/// every `start()`. A hook, not a reference: processes sit below the start
/// methods that launch them.
enum PopenTypes {
    nonisolated(unsafe) static var resolve: ((MP.StartMethod) -> any Popen.Type)?

    static func forMethod(_ method: MP.StartMethod) -> any Popen.Type {
        guard let resolve else { preconditionFailure("the start methods did not register (the library's entry hook did not run)") }
        return resolve(method)
    }
}
