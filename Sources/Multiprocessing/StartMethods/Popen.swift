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
/// the handle of the started child. One type per method (``ForkPopen``,
/// ``SpawnPopen``, ``ForkServerPopen``), chosen by the context through
/// ``MP/StartMethod/popen``; ``MP/Process`` uses them alike, and so do the
/// task pool's workers and a manager's server, which are processes.
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
    /// Checks, launches, and opens the sentinel: the one start of every method.
    static func start(_ process: MP.Process, _ request: StartRequest) throws(MP.Error) -> Self {
        try check(process)
        let pid = try launch(process, request)
        return Self(pid: pid, sentinel: (try? Sys.pidfdOpen(pid)) ?? -1)
    }

    /// CPython's `poll()`: reaps the child if it has ended (or, `blocking`,
    /// when it ends) and returns its status; nil while it runs. `ECHILD`
    /// (reaped behind our back) throws.
    func poll(blocking: Bool = false) throws(MP.OSError) -> MP.ExitStatus? {
        var raw: Int32 = 0
        var reaped = try Sys.waitpid(pid, &raw, WNOHANG)
        if reaped == 0 && blocking { reaped = try Sys.waitpid(pid, &raw, 0) }
        return reaped == pid ? MP.ExitStatus(rawValue: raw) : nil
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

extension MP.StartMethod {
    /// The ``Popen`` type of this method.
    var popen: any Popen.Type {
        switch self {
        case .fork: return ForkPopen.self
        case .spawn: return SpawnPopen.self
        case .forkserver: return ForkServerPopen.self
        }
    }
}

/// CPython's `popen_fork`: the child is a copy of this process and runs the
/// process object's target (a closure, a subclass's `run()`, a named task).
struct ForkPopen: Popen {
    static let method = MP.StartMethod.fork
    let pid: pid_t
    let sentinel: Int32

    static func check(_ process: MP.Process) throws(MP.Error) {
        if process.needsChildExecutors && !ChildExecutors.isAvailable {
            throw .concurrencyUnavailable(name: process.name)
        }
        try process.checkNamedTask()
    }

    static func launch(_ process: MP.Process, _ request: StartRequest) throws(MP.Error) -> pid_t {
        try ForkWatchdog.fork(process, request)
    }
}

/// A start method whose child is a fresh program told what to run by a
/// ``LaunchMessage``: spawn and forkserver, which differ only in who makes
/// the child.
protocol LaunchingPopen: Popen {
    /// Starts a child that reads `message`; its pid.
    static func launch(_ message: LaunchMessage, daemon: Bool) throws(MP.Error) -> pid_t
}

extension LaunchingPopen {
    static func check(_ process: MP.Process) throws(MP.Error) { try process.checkLaunchable(method) }

    static func launch(_ process: MP.Process, _ request: StartRequest) throws(MP.Error) -> pid_t {
        do {
            let message = try LaunchMessage(process, daemon: request.daemon, method: method)
            defer { message.close() }
            return try launch(message, daemon: request.daemon)
        } catch {
            throw .task(error)
        }
    }
}

/// CPython's `popen_spawn_posix`: `posix_spawn` of `/proc/self/exe`, which
/// runs the named task from the library's `.init_array` hook.
struct SpawnPopen: LaunchingPopen {
    static let method = MP.StartMethod.spawn
    let pid: pid_t
    let sentinel: Int32

    static func launch(_ message: LaunchMessage, daemon: Bool) throws(MP.Error) -> pid_t {
        try Spawner.spawn(message.descriptors, daemon: daemon)
    }
}

/// CPython's `popen_forkserver`: the forkserver (a fresh, single-threaded
/// copy of the program) clones the child, which runs the named task.
struct ForkServerPopen: LaunchingPopen {
    static let method = MP.StartMethod.forkserver
    let pid: pid_t
    let sentinel: Int32

    static func launch(_ message: LaunchMessage, daemon: Bool) throws(MP.Error) -> pid_t {
        try ForkServerClient.launch(message.descriptors)
    }
}
