import Glibc
import _CMultiprocessingRuntime
import _CMultiprocessingSync
import MultiprocessingPlatform

/// Per-process library state: the current process object, the children this
/// process started and has not reaped yet, and the exit handling.
///
/// Reset in a forked child (``afterForkInChild(process:parentPid:)``): the
/// parent's children are not the child's, and its threads do not exist
/// there. Its lock, like every library lock, is reset by the after-fork
/// registry (``ForkSafeLock``).
final class Runtime: @unchecked Sendable {
    static let shared = Runtime()

    /// `argv[0]` of this process, for the command line of the helpers and
    /// children it starts from a fresh program (`ps` shows it).
    static let programName: String = CommandLine.arguments.first ?? "swift-multiprocessing"

    let lock = ForkSafeLock()
    private var currentProcess: MP.Process
    /// In a child: the parent's process object (a copy) and pid.
    private var parentObject: MP.Process?
    private var parentPid: Int32 = 0
    private var counter = 0
    /// Started and not yet reaped, in start order. Holding them keeps every
    /// child reapable (no zombies) even when the user drops the object.
    private var children: [MP.Process] = []
    private var atexitInstalled = false
    private(set) var isForkedChild = false
    /// A spawned or forkserver child: ends like a forked one (`_exit` after
    /// its own exit handling), not through the C library's `exit`.
    private(set) var isLaunchedChild = false
    /// Started on first use, per process; a child starts its own.
    private var forker: ForkerThread?

    private init() {
        currentProcess = MP.Process(mainProcess: ())
        LibraryLog.processName = { Runtime.shared.current.name }
    }

    var current: MP.Process { lock.withLock { currentProcess } }

    var parentProcess: MP.ParentProcess? {
        let found = lock.withLock { () -> (MP.Process, Int32)? in
            guard let parentObject else { return nil }
            return (parentObject, parentPid)
        }
        return found.map { MP.ParentProcess(name: $0.0.name, pid: $0.1) }
    }

    /// The process's long-lived forking thread, started on first use.
    func forkerThread() throws(MP.OSError) -> ForkerThread {
        try lock.withLock { () throws(MP.OSError) -> ForkerThread in
            if let forker { return forker }
            let started = try ForkerThread()
            forker = started
            return started
        }
    }

    /// The identity of a new process object: the current identity plus the next count.
    func nextIdentity() -> [Int] {
        lock.withLock {
            counter += 1
            return currentProcess.identity + [counter]
        }
    }

    // MARK: children

    func register(_ process: MP.Process) {
        lock.withLock { children.append(process) }
        installExitHandling()
    }

    /// At normal exit of the main process: end the children (CPython's rule),
    /// then let the resource tracker clean up. Installed once, on first need.
    func installExitHandling() {
        let install = lock.withLock { () -> Bool in
            defer { atexitInstalled = true }
            return !atexitInstalled && !isForkedChild
        }
        if install {
            Sys.atExit {
                Runtime.shared.finishChildren()
                for handler in Runtime.shared.lock.withLock({ Runtime.shared.exitHandlers }) { handler() }
            }
        }
    }

    private var exitHandlers: [@Sendable () -> Void] = []

    /// Runs `handler` at the normal exit of this (main) process, after its
    /// children were ended (the resource tracker's clean-up registers here).
    func atExit(_ handler: @escaping @Sendable () -> Void) {
        lock.withLock { exitHandlers.append(handler) }
        installExitHandling()
    }

    /// Hooks a child (forked or launched) runs as it ends, after its own
    /// children: what a layer above started in it, such as a forkserver,
    /// goes with it. A forked child inherits the hooks of its parent.
    private var childExitHooks: [@Sendable () -> Void] = []

    func atChildExit(_ hook: @escaping @Sendable () -> Void) {
        lock.withLock { childExitHooks.append(hook) }
    }

    func unregister(_ process: MP.Process) {
        lock.withLock { children.removeAll { $0 === process } }
    }

    /// A raw `wait`/`waitpid` reaped `pid`: hand its status to its process object.
    func reapedElsewhere(pid: Int32, status: MP.ExitStatus) {
        let owner = lock.withLock { children.first { $0.startedPid == pid } }
        owner?.recordReaped(status: status)
    }

    /// Python's `active_children()`: reaps the finished children and returns the live ones.
    func activeChildren() -> [MP.Process] {
        let snapshot = lock.withLock { children }
        return snapshot.filter { $0.pollAlive() }
    }

    /// Python's `_exit_function`: terminate daemonic children, then join every child.
    func finishChildren() {
        for child in activeChildren() where child.daemon {
            try? child.terminate()
        }
        for child in activeChildren() {
            try? child.join()
        }
    }

    // MARK: fork

    /// `fork()` after flushing stdio, so output buffered in the parent is not
    /// printed again by the child.
    static func forkFlushingStdio() throws(MP.OSError) -> pid_t {
        ChildExecutors.prepare
        Sys.flushStdio()
        return try Sys.fork()
    }

    /// Makes the library usable in a freshly forked child, after
    /// `cmp_child_after_fork` (single-threaded here). `process` is the
    /// `MP.Process` the child runs, or nil after a raw `MP.fork()`.
    ///
    /// Every page a child writes, and every page of code it runs, is a page
    /// fault: this writes as little as it can and leaves the rest to first use.
    func afterForkInChild(process: MP.Process?, parentPid: Int32) {
        isForkedChild = true
        if !children.isEmpty {
            for child in children { child.closeInheritedDescriptor() }
            children = []
        }
        forker = nil // its thread is gone
        if let process {
            parentObject = currentProcess
            self.parentPid = parentPid
            currentProcess = process
            counter = 0
        }
    }

    /// Makes this fresh process (spawned, or forked by the forkserver) the
    /// child `process` of `parentPid`. Unlike a fork, nothing of the parent
    /// is here: the runtime is new, and exits as a main process does (its
    /// exit handling ends its own children).
    func becomeLaunchedChild(process: MP.Process, parentPid: Int32, parentName: String) {
        lock.withLock {
            isLaunchedChild = true
            parentObject = MP.Process(launchedAs: parentName, identity: [], daemon: false, parentPid: 0)
            self.parentPid = parentPid
            currentProcess = process
            counter = 0
        }
    }

    /// `exit(n)` in a forked child lands here (see `cmp_child_after_fork`).
    static let exitGuard: @convention(c) (Int32, UnsafeMutableRawPointer?) -> Void = { status, _ in
        Runtime.shared.exitProcess(status)
    }

    /// Raises if the current process may not start children.
    func checkMayStartChildren() throws(MP.Error) {
        let current = self.current
        if current.daemon { throw .daemonCannotHaveChildren(name: current.name) }
    }

    // MARK: exit

    /// Ends this process with `code` (see ``MP/exit(_:)``).
    func exitProcess(_ code: Int32) -> Never {
        if isLaunchedChild {
            // What `exit` would run of ours (children, then the exit handlers),
            // without the C library's destructors and the runtime's teardown:
            // a child that ran one task has nothing else to finish.
            finishChildren()
            for handler in lock.withLock({ exitHandlers }) { handler() }
            for hook in lock.withLock({ childExitHooks }) { hook() }
            cmp_child_exit(code)
        }
        if isForkedChild {
            if lock.withLock({ !children.isEmpty }) { finishChildren() }
            for hook in lock.withLock({ childExitHooks }) { hook() }
            cmp_child_exit(code)
        }
        Sys.exitNormally(code)
    }

    /// Prints an uncaught error to stderr, Python-style.
    static func reportUncaught(_ error: any Swift.Error, processName: String?) {
        Sys.flushStdio()
        var text = ""
        if let processName { text += "Process \(processName):\n" }
        text += "\(type(of: error)): \(error)\n"
        Sys.writeBestEffort(STDERR_FILENO, text)
    }
}

extension MP {
    /// Python's `multiprocessing.current_process()`: `MainProcess` in the main
    /// process, the running ``MP/Process`` object in a child.
    public static func currentProcess() -> Process { Runtime.shared.current }

    /// Python's `multiprocessing.parent_process()`: nil in the main process.
    public static func parentProcess() -> ParentProcess? { Runtime.shared.parentProcess }

    /// Python's `multiprocessing.active_children()`: the live children of this
    /// process; finished ones are reaped as a side effect.
    public static func activeChildren() -> [Process] { Runtime.shared.activeChildren() }

    /// The parent of the current process, as seen from a child.
    public struct ParentProcess: Hashable, Sendable, CustomStringConvertible {
        /// The parent's process name (`MainProcess` for the main process).
        public let name: String
        /// The parent's pid.
        public let pid: Int32
        /// Whether the parent still runs (it is still this process's parent).
        public var isAlive: Bool { Sys.getppid == pid }
        public var description: String {
            "<_ParentProcess name='\(name)' parent=None \(isAlive ? "started" : "stopped")>"
        }
    }
}
