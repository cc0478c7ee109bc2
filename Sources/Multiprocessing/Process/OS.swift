import Glibc
import _CMultiprocessingRuntime
import _CMultiprocessingSync
import MultiprocessingPlatform

extension MP {
    /// What `fork()` returns: which side of the fork this is.
    public enum ForkResult: Hashable, Sendable {
        /// In the parent, with the new child's pid.
        case parent(child: Int32)
        /// In the child.
        case child
    }

    /// A reaped (or changed) child: its pid and decoded status.
    public struct WaitResult: Hashable, Sendable, CustomStringConvertible {
        public let pid: Int32
        public let status: ExitStatus
        public var description: String { "(pid: \(pid), status: \(status.rawValue) \(status))" }
    }

    /// Options of ``MP/waitpid(_:options:)``.
    public struct WaitOptions: OptionSet, Hashable, Sendable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }
        /// `WNOHANG`: return nil at once if no child has changed state.
        public static let noHang = WaitOptions(rawValue: WNOHANG)
        /// `WUNTRACED`: also report stopped children.
        public static let untraced = WaitOptions(rawValue: WUNTRACED)
        /// `WCONTINUED`: also report continued children.
        public static let continued = WaitOptions(rawValue: WCONTINUED)
    }

    /// Python's `os.fork()`: stdio is flushed first (so buffered output is not
    /// printed twice), and the child's library state (children, locks, Swift
    /// concurrency) is made usable in the child.
    ///
    /// ```swift
    /// switch try MP.fork() {
    /// case .child: print("child", MP.getpid()); MP.exit(0)
    /// case .parent(let pid): print("parent of", pid, try MP.waitpid(pid)!)
    /// }
    /// ```
    ///
    /// A raw fork child that falls off its branch goes on running the rest of
    /// the program, as in Python; end it with ``MP/exit(_:)`` or
    /// ``MP/runAndExit(_:)``, which never run the parent's `atexit` handlers.
    /// An error thrown out of top-level code in the child is Swift's fatal
    /// error (SIGILL), not Python's exit status 1: prefer ``MP/fork(_:)``,
    /// whose child body may throw.
    public static func fork() throws(OSError) -> ForkResult {
        let parent = Sys.getpid
        let pid = try Runtime.forkFlushingStdio()
        if pid == 0 {
            cmp_child_after_fork(0, parent, Runtime.exitGuard)
            Runtime.shared.afterForkInChild(process: nil, parentPid: parent)
            return .child
        }
        return .parent(child: pid)
    }

    /// `os.fork()` with the child's code as a closure: the child runs `child`
    /// and exits as a Python child does (0 when it returns; `n` after
    /// ``MP/exit(_:)`` or a thrown ``MP/ExitRequest``; an uncaught error is
    /// printed to stderr and exits 1, status 256 to ``MP/wait()``). It never
    /// returns into the parent's code. Returns the child's pid, in the parent.
    ///
    /// ```swift
    /// let pid = try MP.fork { try work() }     // the child may throw
    /// print(try MP.waitpid(pid)!.status)
    /// ```
    public static func fork(_ child: () throws -> Void) throws(OSError) -> Int32 {
        switch try fork() {
        case .child: runAndExit(child)
        case .parent(let pid): return pid
        }
    }

    /// Python's `os.wait()`: blocks until any child ends, reaps it and returns
    /// its pid and status. A child that belongs to an ``MP/Process`` keeps its
    /// exit code: the process object learns it from here.
    public static func wait() throws(OSError) -> WaitResult {
        try waitpid(-1, options: [])!
    }

    /// Python's `os.waitpid(pid, options)`; returns nil when `.noHang` finds no change.
    public static func waitpid(_ pid: Int32, options: WaitOptions = []) throws(OSError) -> WaitResult? {
        var raw: Int32 = 0
        let reaped = try Sys.waitpid(pid, &raw, options.rawValue)
        if reaped == 0 { return nil }
        let status = ExitStatus(rawValue: raw)
        if status.exitCode != nil { Runtime.shared.reapedElsewhere(pid: reaped, status: status) }
        return WaitResult(pid: reaped, status: status)
    }

    /// Python's `os.getpid()`.
    public static func getpid() -> Int32 { Sys.getpid }

    /// Python's `os.getppid()`.
    public static func getppid() -> Int32 { Sys.getppid }

    /// Python's `os.kill(pid, sig)`.
    public static func kill(_ pid: Int32, _ signal: Signal) throws(OSError) {
        try Sys.kill(pid, signal.rawValue)
    }

    /// Python's `os.cpu_count()` / `multiprocessing.cpu_count()`: processors online.
    public static func cpuCount() -> Int { max(1, Sys.onlineCPUs) }

    /// Python's `os.sched_setaffinity(pid, cpus)`: the CPUs `pid` (0: the
    /// calling thread) may run on. An empty set or a CPU that is not online
    /// throws (`EINVAL`).
    public static func schedSetAffinity(_ pid: Int32, _ cpus: Set<Int>) throws(OSError) {
        guard !cpus.isEmpty, cpus.allSatisfy({ $0 >= 0 && $0 <= Int(Int32.max) }) else {
            throw OSError("sched_setaffinity", errno: .invalidArgument)
        }
        try Sys.setAffinity(pid, cpus.sorted().map { Int32($0) })
    }

    /// Python's `os.sched_getaffinity(pid)`: the CPUs `pid` (0: the calling thread) may run on.
    public static func schedGetAffinity(_ pid: Int32 = 0) throws(OSError) -> Set<Int> {
        Set(try Sys.affinity(pid).map(Int.init))
    }

    /// Python 3.13's `process_cpu_count()`: the CPUs this process may use,
    /// which is what to size a pool by. The smaller of its affinity mask
    /// (`taskset`, `sched_setaffinity`) and its cgroup's CPU quota (a
    /// container's `--cpus`, cgroup v2 `cpu.max`, rounded up), and never more
    /// than ``cpuCount()``. (CPython counts the affinity mask only.)
    public static func processCpuCount() -> Int {
        var count = cpuCount()
        if let affinity = Sys.affinityCPUs { count = min(count, affinity) }
        if let quota = Sys.cgroupCPUQuota { count = min(count, quota) }
        return max(1, count)
    }

    /// Linux's `PR_SET_CHILD_SUBREAPER`: orphaned descendants are re-parented
    /// to this process instead of to init, so it can reap them.
    public static func setChildSubreaper(_ on: Bool) throws(OSError) { try Sys.setChildSubreaper(on) }

    /// Whether this process is a child subreaper.
    public static func isChildSubreaper() throws(OSError) -> Bool { try Sys.isChildSubreaper() }

    /// Python's `sys.exit(code)` inside a child, `exit(code)` in the main process.
    ///
    /// In a forked child (an ``MP/Process`` or a raw ``MP/fork()`` child) it
    /// ends the child's own children as Python does, flushes stdio and leaves
    /// with `_exit`, so the parent's `atexit` handlers never run twice. In the
    /// main process it calls `exit`, which joins non-daemon children and
    /// terminates daemonic ones.
    public static func exit(_ code: Int32 = 0) -> Never {
        Runtime.shared.exitProcess(code)
    }

    /// Runs `body` as the rest of this process's life, then exits: 0 when it
    /// returns, 1 after printing an uncaught error to stderr (Python's
    /// behaviour for an uncaught exception, status 256 to `os.wait`).
    public static func runAndExit(_ body: () throws -> Void) -> Never {
        do {
            try body()
        } catch let request as ExitRequest {
            exit(request.code)
        } catch {
            Runtime.reportUncaught(error, processName: nil)
            exit(1)
        }
        exit(0)
    }

    /// Thrown from a process target to end it with `code`: Python's `raise SystemExit(code)`.
    public struct ExitRequest: Swift.Error, Hashable, Sendable {
        public let code: Int32
        public init(_ code: Int32) { self.code = code }
    }

    /// Whether Dispatch can run work in this process.
    ///
    /// Threads do not survive `fork`: in a child forked from a parent whose
    /// Dispatch had started threads, `DispatchQueue.global()` and
    /// `DispatchGroup.wait` never complete. Swift concurrency (`Task`, task
    /// groups, `Task.sleep`) keeps working in children started by this library,
    /// which give it a child-local executor; Dispatch does not. Check this in
    /// library code that may run in a child and needs Dispatch.
    public static var isDispatchUsable: Bool {
        !(Runtime.shared.isForkedChild && cmp_dispatch_is_multithreaded() == 1)
    }
}
